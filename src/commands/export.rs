//! `arca export`: render a snapshot as CSV or JSON tables, settings and
//! attachments in ZIP file(s), and record the export in the repository
//! (format-spec.md §15, README "Export").
//!
//! Everything streams: a file's chunks are read and decrypted ahead in
//! parallel (a bounded window, rayon) on one thread while this one parses
//! and writes into the ZIP, so memory is bounded by the window and the
//! largest record, never by a table.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::backend::FileKind;
use crate::commands::{check_interrupt, format_time, Progress};
use crate::error::{Error, Result};
use crate::export::infer::TableStats;
use crate::export::json::{self, Shape, Splitter};
use crate::export::readme::{self, ReadmeInfo, TableOut};
use crate::export::zipout::{stored_by_name, EntrySpec, Fit, ZipOut};
use crate::export::{self as ex, Category, Source, SrcFile, TableSpec};
use crate::format::exportrec::{ExportFile, ExportFormat, ExportRecord};
use crate::format::snapshot::Snapshot;
use crate::format::tree::NodeKind;
use crate::format::{limits, BlobKind, ObjectType};
use crate::id::{BlobId, FileId, SnapshotId};
use crate::repository::{IndexedRepository, Repository};

/// Bytes of chunks read ahead of the writer (decoded in one parallel window,
/// and as much again queued): enough to keep every core decrypting and
/// decompressing while the writer deflates, whatever the chunk size.
const READ_AHEAD_BYTES: usize = 4 << 20;

/// Chunks per read-ahead window for the repository's average chunk size.
fn read_ahead(repo: &IndexedRepository) -> usize {
    (READ_AHEAD_BYTES / repo.config().chunker.avg.max(1) as usize).clamp(2, 64)
}
/// Rows are handed to the ZIP writer in batches of about this size: the
/// unit a split part is checked against.
const BATCH: usize = 64 << 10;

/// What to export.
pub struct ExportOptions {
    /// Output format.
    pub format: ExportFormat,
    /// Tables or paths to export (`--include`); everything when empty.
    pub include: Vec<String>,
    /// Categories to export; every one when empty.
    pub categories: Vec<Category>,
    /// The ZIP file (with `split`, the parts are named after it).
    pub output: PathBuf,
    /// Largest part.
    pub split: Option<u64>,
    /// Encrypt entries with AES-256 under this password.
    pub password: Option<Zeroizing<String>>,
    /// Deflate level: 0 stores, 1 fastest, 9 smallest.
    pub level: u32,
}

/// One file written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WrittenFile {
    /// Path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
}

/// One table written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WrittenTable {
    /// Table name.
    pub name: String,
    /// Category name.
    pub category: &'static str,
    /// Entry names in the ZIP.
    pub entries: Vec<String>,
    /// Data rows.
    pub rows: u64,
    /// Columns.
    pub columns: usize,
}

/// What an export did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportReport {
    /// The export record's id.
    pub record: String,
    /// Snapshot exported.
    pub snapshot: String,
    /// Account.
    pub account: String,
    /// Files written.
    pub files: Vec<WrittenFile>,
    /// Tables written.
    pub tables: Vec<WrittenTable>,
    /// Attachments written.
    pub attachments: u64,
    /// Bytes of source data read (every pass).
    pub bytes_read: u64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
}

pub(crate) fn collect_files(
    repo: &IndexedRepository,
    tree: &BlobId,
    prefix: &str,
    out: &mut Vec<SrcFile>,
) -> Result<()> {
    check_interrupt()?;
    for node in repo.read_tree(tree)?.nodes {
        let name = String::from_utf8_lossy(&node.name);
        let path = if prefix.is_empty() {
            name.into_owned()
        } else {
            format!("{prefix}/{name}")
        };
        match node.kind {
            NodeKind::Dir { tree } => collect_files(repo, &tree, &path, out)?,
            NodeKind::File { chunks } => out.push(SrcFile {
                path,
                size: node.size,
                chunks,
            }),
            _ => {}
        }
    }
    Ok(())
}

/// Reads a file's chunks in order, decrypting ahead in parallel.
struct ChunkReader {
    rx: Receiver<Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Turns an I/O error from a [`ChunkReader`] back into the engine's error.
pub(crate) fn unwrap_io(e: std::io::Error, what: &str) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(err) = inner.downcast::<Error>() {
                return *err;
            }
        }
        return Error::Invalid(format!("{what}: read failed"));
    }
    Error::Invalid(format!("{what}: {e}"))
}

pub(crate) struct Ctx<'a> {
    pub(crate) repo: &'a IndexedRepository,
    pub(crate) progress: &'a dyn Progress,
    pub(crate) bytes_read: u64,
}

impl Ctx<'_> {
    /// Runs `f` over a reader of `file`'s content.
    pub(crate) fn with_reader<T>(
        &mut self,
        file: &SrcFile,
        f: &mut dyn FnMut(&mut (dyn Read + Send)) -> Result<T>,
    ) -> Result<T> {
        let repo = self.repo;
        let progress = self.progress;
        self.bytes_read += file.size;
        let window = read_ahead(repo);
        std::thread::scope(|s| {
            let (tx, rx) = sync_channel::<Result<Vec<u8>>>(window);
            s.spawn(move || {
                for w in file.chunks.chunks(window) {
                    if check_interrupt().is_err() {
                        let _ = tx.send(Err(Error::Interrupted));
                        return;
                    }
                    let got: Vec<Result<Vec<u8>>> = w
                        .par_iter()
                        .map(|c| repo.read_blob(c, BlobKind::Data))
                        .collect();
                    for g in got {
                        if let Ok(b) = &g {
                            progress.inc(b.len() as u64);
                        }
                        let stop = g.is_err();
                        if tx.send(g).is_err() || stop {
                            return;
                        }
                    }
                }
            });
            let mut r = ChunkReader {
                rx,
                buf: Vec::new(),
                pos: 0,
            };
            f(&mut r)
        })
    }
}

pub(crate) fn read_all(
    r: &mut dyn Read,
    path: &str,
    f: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| unwrap_io(e, path))?;
        if n == 0 {
            return Ok(());
        }
        f(&buf[..n])?;
    }
}

/// A `Read` that also keeps what it read, so the raw bytes of each CSV
/// record can be copied out unchanged.
pub(crate) struct Tee<'a> {
    pub(crate) inner: &'a mut (dyn Read + Send),
    pub(crate) raw: Rc<RefCell<Raw>>,
}

#[derive(Default)]
pub(crate) struct Raw {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`.
    base: u64,
}

impl Raw {
    /// Bytes from stream offset `from` to `to`.
    pub(crate) fn slice(&self, from: u64, to: u64) -> &[u8] {
        let a = (from - self.base) as usize;
        let b = (to - self.base) as usize;
        &self.buf[a..b]
    }
    /// Forgets bytes before `upto` once enough piled up (draining on every
    /// record would move the buffer's tail each time).
    pub(crate) fn release(&mut self, upto: u64) {
        let n = (upto - self.base) as usize;
        if n > (1 << 20) {
            self.buf.drain(..n);
            self.base = upto;
        }
    }
}

impl Read for Tee<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.raw.borrow_mut().buf.extend_from_slice(&out[..n]);
        Ok(n)
    }
}

/// Collects rows and hands them to the ZIP in batches.
struct Batcher {
    buf: Vec<u8>,
}

impl Batcher {
    fn push(&mut self, z: &mut ZipOut, row: &[u8]) -> Result<Fit> {
        if !self.buf.is_empty() && self.buf.len() + row.len() > BATCH {
            let fit = z.write_record(&self.buf)?;
            self.buf.clear();
            if fit == Fit::Restart {
                return Ok(Fit::Restart);
            }
        }
        self.buf.extend_from_slice(row);
        Ok(Fit::Ok)
    }
    fn flush(&mut self, z: &mut ZipOut) -> Result<Fit> {
        if self.buf.is_empty() {
            return Ok(Fit::Ok);
        }
        let fit = z.write_record(&self.buf)?;
        self.buf.clear();
        Ok(fit)
    }
}

/// Appends one CSV row (RFC 4180): a field is quoted when it holds a
/// comma, a quote, CR or LF, or starts or ends with a space (which some
/// readers trim), quotes doubled; rows end with CRLF as in RFC 4180.
pub fn csv_row<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = &'a str>) {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let quote = f.bytes().any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
            || f.starts_with(' ')
            || f.ends_with(' ');
        if quote {
            out.push(b'"');
            for b in f.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(f.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn json_escape_into(out: &mut Vec<u8>, s: &str) {
    // serde_json writes a &str as a quoted, escaped JSON string.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A CSV reader's error: a read error keeps its kind (corrupt data,
/// interrupted), anything else is a bad file.
pub(crate) fn csv_error(e: csv::Error, path: &str) -> Error {
    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
        if let csv::ErrorKind::Io(io) = e.into_kind() {
            return unwrap_io(io, path);
        }
        return Error::Invalid(format!("{path}: read failed"));
    }
    Error::Invalid(format!("{path}: not valid CSV: {e}"))
}

/// A message from the CSV parser thread to the writer.
enum CsvMsg {
    /// The bytes that start the entry (and every piece of it).
    Header(Vec<u8>),
    /// Whole rows, about [`BATCH`] bytes.
    Rows(Vec<u8>),
}

/// Parses a CSV stream: statistics, and the entry's bytes as messages
/// (the raw bytes for CSV, one JSON object per row for JSON). Stops early,
/// without error, when the writer hangs up.
fn parse_csv(
    r: &mut (dyn Read + Send),
    path: &str,
    format: ExportFormat,
    tx: &SyncSender<CsvMsg>,
) -> Result<TableStats> {
    let raw = Rc::new(RefCell::new(Raw::default()));
    let tee = Tee {
        inner: r,
        raw: raw.clone(),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(tee);
    let mut rec = csv::ByteRecord::new();
    let mut stats = TableStats::default();
    let mut header: Vec<String> = Vec::new();
    let mut first = true;
    let mut batch: Vec<u8> = Vec::with_capacity(BATCH + (4 << 10));
    let mut start = 0u64;
    let hung_up = |_| Error::Interrupted;
    loop {
        let more = rdr
            .read_byte_record(&mut rec)
            .map_err(|e| csv_error(e, path))?;
        if !more {
            break;
        }
        let end = rdr.position().byte();
        if first {
            first = false;
            header = rec
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            if let Some(h) = header.first_mut() {
                if let Some(x) = h.strip_prefix('\u{feff}') {
                    *h = x.to_string();
                }
            }
            stats = TableStats::with_header(&header);
            let head = match format {
                ExportFormat::Csv => raw.borrow().slice(start, end).to_vec(),
                ExportFormat::Json => Vec::new(),
            };
            if tx.send(CsvMsg::Header(head)).is_err() {
                return Ok(stats);
            }
            start = end;
            continue;
        }
        stats.rows += 1;
        for (i, f) in rec.iter().enumerate() {
            stats.observe(i, &String::from_utf8_lossy(f));
        }
        match format {
            ExportFormat::Csv => batch.extend_from_slice(raw.borrow().slice(start, end)),
            ExportFormat::Json => {
                batch.push(b'{');
                for (i, f) in rec.iter().enumerate() {
                    if i > 0 {
                        batch.push(b',');
                    }
                    match header.get(i) {
                        Some(h) => json_escape_into(&mut batch, h),
                        None => json_escape_into(&mut batch, &format!("column_{}", i + 1)),
                    }
                    batch.push(b':');
                    json_escape_into(&mut batch, &String::from_utf8_lossy(f));
                }
                batch.extend_from_slice(b"}\n");
            }
        }
        raw.borrow_mut().release(end);
        start = end;
        if batch.len() >= BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH + (4 << 10)));
            if tx.send(CsvMsg::Rows(full)).is_err() {
                return Ok(stats);
            }
        }
    }
    if first && tx.send(CsvMsg::Header(Vec::new())).is_err() {
        return Ok(stats);
    }
    if format == ExportFormat::Csv {
        // Whatever follows the last record (blank lines) is kept.
        let b = raw.borrow();
        let total = b.base + b.buf.len() as u64;
        if total > start {
            batch.extend_from_slice(b.slice(start, total));
        }
    }
    if !batch.is_empty() {
        tx.send(CsvMsg::Rows(batch)).map_err(hung_up)?;
    }
    Ok(stats)
}

/// Writes a CSV source as a table (raw bytes for CSV, JSON Lines for JSON)
/// and returns its statistics. Parsing runs on its own thread, so that it
/// overlaps with deflate on this one.
fn write_csv_table(
    cx: &mut Ctx,
    z: &mut ZipOut,
    file: &SrcFile,
    format: ExportFormat,
    spec: &mut EntrySpec,
) -> Result<TableStats> {
    loop {
        let (fit, stats) = cx.with_reader(file, &mut |r| {
            std::thread::scope(|s| {
                let (tx, rx) = sync_channel::<CsvMsg>(4);
                let parser = s.spawn(move || parse_csv(r, &file.path, format, &tx));
                let mut fit = Fit::Ok;
                let written = (|| -> Result<()> {
                    for m in rx.iter() {
                        match m {
                            CsvMsg::Header(h) => {
                                spec.header = Some(h);
                                z.begin(spec.clone())?;
                            }
                            CsvMsg::Rows(b) => {
                                if z.write_record(&b)? == Fit::Restart {
                                    fit = Fit::Restart;
                                    return Ok(());
                                }
                            }
                        }
                    }
                    Ok(())
                })();
                // Hang up first: a parser blocked on a full channel stops.
                drop(rx);
                let stats = parser
                    .join()
                    .map_err(|_| Error::Invalid(format!("{}: CSV parser panicked", file.path)))?;
                written?;
                if fit == Fit::Restart {
                    return Ok((fit, TableStats::default()));
                }
                Ok((fit, stats?))
            })
        })?;
        if fit == Fit::Ok {
            return Ok(stats);
        }
        *spec = z.retry_spec(spec.clone());
    }
}

/// A table found in a JSON source: its member, name, columns.
struct SubTable {
    member: Option<String>,
    name: String,
    index: HashMap<String, usize>,
    stats: TableStats,
}

fn json_shape(path: &str) -> Shape {
    if ex::is_json_lines(path) {
        Shape::Lines
    } else {
        Shape::Document
    }
}

/// Called with each JSON record: its member name and raw bytes.
pub(crate) type RecordFn<'a> = dyn FnMut(&Option<String>, &[u8]) -> Result<Fit> + 'a;

/// Feeds every record of `files` to `f`.
pub(crate) fn each_record(cx: &mut Ctx, files: &[SrcFile], f: &mut RecordFn) -> Result<Fit> {
    for file in files {
        let fit = cx.with_reader(file, &mut |r| {
            let mut sp = Splitter::new(json_shape(&file.path), &file.path);
            let mut fit = Fit::Ok;
            read_all(r, &file.path, &mut |data| {
                if fit == Fit::Restart {
                    return Ok(());
                }
                sp.feed(data, &mut |(k, rec)| {
                    if fit == Fit::Ok {
                        fit = f(&k, &rec)?;
                    }
                    Ok(())
                })
            })?;
            if fit == Fit::Ok {
                sp.finish()?;
            }
            Ok(fit)
        })?;
        if fit == Fit::Restart {
            return Ok(Fit::Restart);
        }
    }
    Ok(Fit::Ok)
}

/// Pass 1 over a JSON source: the tables it holds and their columns, and
/// the files that hold no records.
fn scan_json(
    cx: &mut Ctx,
    t: &TableSpec,
    files: &[SrcFile],
    by_member: bool,
) -> Result<(Vec<SubTable>, Vec<SrcFile>)> {
    let mut subs: Vec<SubTable> = Vec::new();
    let mut flat = Vec::new();
    let mut no_records = Vec::new();
    for file in files {
        let mut seen = 0u64;
        let _ = each_record(cx, std::slice::from_ref(file), &mut |k, rec| {
            seen += 1;
            let i = match subs.iter().position(|s| &s.member == k) {
                Some(i) => i,
                None => {
                    subs.push(SubTable {
                        member: k.clone(),
                        name: String::new(),
                        index: HashMap::new(),
                        stats: TableStats::default(),
                    });
                    subs.len() - 1
                }
            };
            let s = &mut subs[i];
            json::flatten(rec, &mut flat)?;
            s.stats.rows += 1;
            for (col, v) in &flat {
                let ci = match s.index.get(col) {
                    Some(ci) => *ci,
                    None => {
                        let ci = s.stats.add_column(col);
                        s.index.insert(col.clone(), ci);
                        ci
                    }
                };
                s.stats.observe(ci, v);
            }
            Ok(Fit::Ok)
        })?;
        if seen == 0 {
            no_records.push(file.clone());
        }
    }
    let n = subs.len();
    for s in &mut subs {
        s.name = match (&s.member, by_member, n) {
            (Some(m), true, _) => m.clone(),
            (Some(m), false, n) if n > 1 => format!("{}-{m}", t.name),
            _ => t.name.clone(),
        };
    }
    Ok((subs, no_records))
}

/// Pass 2: writes one table of a JSON source.
fn write_json_table(
    cx: &mut Ctx,
    z: &mut ZipOut,
    files: &[SrcFile],
    sub: &SubTable,
    format: ExportFormat,
    mut spec: EntrySpec,
) -> Result<Vec<String>> {
    let ncols = sub.stats.columns.len();
    let header = match format {
        ExportFormat::Csv => {
            let mut h = Vec::new();
            csv_row(&mut h, sub.stats.columns.iter().map(|c| c.name.as_str()));
            h
        }
        ExportFormat::Json => Vec::new(),
    };
    spec.header = Some(header);
    loop {
        z.begin(spec.clone())?;
        let mut batch = Batcher { buf: Vec::new() };
        let mut flat = Vec::new();
        let mut row: Vec<String> = vec![String::new(); ncols];
        let mut line = Vec::new();
        let mut fit = each_record(cx, files, &mut |k, rec| {
            if k != &sub.member {
                return Ok(Fit::Ok);
            }
            match format {
                ExportFormat::Csv => {
                    json::flatten(rec, &mut flat)?;
                    for v in row.iter_mut() {
                        v.clear();
                    }
                    for (col, v) in flat.drain(..) {
                        if let Some(i) = sub.index.get(&col) {
                            row[*i] = v;
                        }
                    }
                    line.clear();
                    csv_row(&mut line, row.iter().map(String::as_str));
                    batch.push(z, &line)
                }
                ExportFormat::Json => {
                    line.clear();
                    json::compact(rec, &mut line);
                    line.push(b'\n');
                    batch.push(z, &line)
                }
            }
        })?;
        if fit == Fit::Ok {
            fit = batch.flush(z)?;
        }
        if fit == Fit::Ok {
            return Ok(z.end());
        }
        spec = z.retry_spec(spec);
    }
}

fn write_whole(
    cx: &mut Ctx,
    z: &mut ZipOut,
    file: &SrcFile,
    mut spec: EntrySpec,
) -> Result<Vec<String>> {
    loop {
        z.begin(spec.clone())?;
        let fit = cx.with_reader(file, &mut |r| {
            let mut fit = Fit::Ok;
            read_all(r, &file.path, &mut |data| {
                if fit == Fit::Ok {
                    fit = z.write_record(data)?;
                }
                Ok(())
            })?;
            Ok(fit)
        })?;
        if fit == Fit::Ok {
            return Ok(z.end());
        }
        spec = z.retry_spec(spec);
    }
}

fn zip_time(secs: i64) -> zip::DateTime {
    use chrono::{Datelike, Timelike};
    chrono::DateTime::from_timestamp(secs, 0)
        .and_then(|t| {
            zip::DateTime::from_date_and_time(
                u16::try_from(t.year()).ok()?,
                t.month() as u8,
                t.day() as u8,
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
            )
            .ok()
        })
        .unwrap_or_default()
}

/// The export folder (and default file stem): `<account>-export-<date>`.
pub fn folder_name(snapshot: &Snapshot) -> String {
    let date = chrono::DateTime::from_timestamp(snapshot.time, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "unknown-date".into());
    let account: String = snapshot
        .account
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("{account}-export-{date}")
}

/// Exports snapshot `id` and records the export in the repository.
pub fn export(
    repo: &IndexedRepository,
    id: &SnapshotId,
    snap: &Snapshot,
    opts: &ExportOptions,
    progress: &dyn Progress,
) -> Result<ExportReport> {
    repo.check_features(crate::format::config::Operation::Read)?;
    let started = std::time::Instant::now();
    let mut files = Vec::new();
    collect_files(repo, &snap.tree, "", &mut files)?;
    let plan = ex::plan(files);
    let cats: Vec<Category> = if opts.categories.is_empty() {
        Category::ALL.to_vec()
    } else {
        Category::ALL
            .into_iter()
            .filter(|c| opts.categories.contains(c))
            .collect()
    };
    let inc = &opts.include;
    for name in inc {
        let found = plan.tables.iter().any(|t| t.matches(name))
            || plan.attachments.iter().any(|a| a.matches(name))
            || name == "settings.json";
        if !found {
            return Err(Error::MissingPath(PathBuf::from(name)));
        }
    }
    let tables: Vec<&TableSpec> = plan
        .tables
        .iter()
        .filter(|t| {
            cats.contains(&t.category) && (inc.is_empty() || inc.iter().any(|n| t.matches(n)))
        })
        .collect();
    let attachments: Vec<&ex::Attachment> = plan
        .attachments
        .iter()
        .filter(|a| {
            cats.contains(&Category::Attachments)
                && (inc.is_empty() || inc.iter().any(|n| a.matches(n)))
        })
        .collect();
    let total: u64 = tables
        .iter()
        .map(|t| match t.source {
            Source::Csv(_) => t.source_bytes(),
            Source::Json { .. } => 2 * t.source_bytes(),
        })
        .chain(attachments.iter().map(|a| a.file.size))
        .chain(plan.settings.iter().map(|s| s.size))
        .sum();
    progress.set_total(total);
    progress.message("exporting");

    let folder = folder_name(snap);
    let mut z = ZipOut::create(
        &opts.output,
        opts.split,
        opts.password.clone(),
        zip_time(snap.time),
    )?;
    z.set_level(opts.level);
    let mut cx = Ctx {
        repo,
        progress,
        bytes_read: 0,
    };
    let ext = match opts.format {
        ExportFormat::Csv => "csv",
        ExportFormat::Json => "jsonl",
    };
    let mut outs: Vec<TableOut> = Vec::new();
    let mut att_out = Vec::new();
    for t in &tables {
        check_interrupt()?;
        let base = EntrySpec {
            source_size: t.source_bytes(),
            ..EntrySpec::default()
        };
        match &t.source {
            Source::Csv(f) => {
                let mut spec = EntrySpec {
                    name: format!("{folder}/{}.{ext}", t.name),
                    ..base
                };
                let stats = write_csv_table(&mut cx, &mut z, f, opts.format, &mut spec)?;
                outs.push(TableOut {
                    name: t.name.clone(),
                    entries: z.end(),
                    category: t.category,
                    source: f.path.clone(),
                    stats,
                });
            }
            Source::Json { files, by_member } => {
                let (subs, no_records) = scan_json(&mut cx, t, files, *by_member)?;
                let source = match files.as_slice() {
                    [one] => one.path.clone(),
                    many => format!(
                        "{} JSON files ({} … {})",
                        many.len(),
                        many[0].path,
                        many[many.len() - 1].path
                    ),
                };
                // Files without records (not tables) are kept as they are.
                for f in &no_records {
                    let spec = EntrySpec {
                        name: format!("{folder}/{}", f.path),
                        source_size: f.size,
                        ..EntrySpec::default()
                    };
                    let names = write_whole(&mut cx, &mut z, f, spec)?;
                    att_out.push((names, f.size));
                }
                for sub in &subs {
                    if *by_member
                        && !inc.is_empty()
                        && !inc.iter().any(|n| {
                            n == &sub.name
                                || n == &t.name
                                || n.trim_end_matches(&format!(".{ext}")) == sub.name
                        })
                    {
                        continue;
                    }
                    let spec = EntrySpec {
                        name: format!("{folder}/{}.{ext}", sub.name),
                        ..base.clone()
                    };
                    let entries = write_json_table(&mut cx, &mut z, files, sub, opts.format, spec)?;
                    outs.push(TableOut {
                        name: sub.name.clone(),
                        entries,
                        category: t.category,
                        source: source.clone(),
                        stats: sub.stats.clone(),
                    });
                }
            }
        }
    }
    if let Some(s) = &plan.settings {
        let spec = EntrySpec {
            name: format!("{folder}/settings.json"),
            source_size: s.size,
            ..EntrySpec::default()
        };
        write_whole(&mut cx, &mut z, s, spec)?;
    }
    for a in &attachments {
        check_interrupt()?;
        let spec = EntrySpec {
            name: format!("{folder}/{}", a.out),
            source_size: a.file.size,
            stored: stored_by_name(&a.out),
            ..EntrySpec::default()
        };
        let names = write_whole(&mut cx, &mut z, &a.file, spec)?;
        att_out.push((names, a.file.size));
    }
    // Sub-second time, so that exports listed in order of time keep the
    // order they were made in (two exports can finish in one second).
    let (now, now_nanos) = {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (d.as_secs() as i64, d.subsec_nanos())
    };
    let info = ReadmeInfo {
        account: snap.account.clone(),
        kind: plan.kind.name(),
        snapshot: id.to_hex(),
        snapshot_time: format_time(snap.time, snap.nanos),
        export_time: format_time(now, 0),
        format: opts.format,
        categories: cats.clone(),
        tables: outs.clone(),
        settings: plan.settings.is_some(),
        attachments: att_out.clone(),
        split: opts.split,
        include: opts.include.clone(),
    };
    let text = readme::render(&info);
    z.begin(EntrySpec {
        name: format!("{folder}/README.txt"),
        source_size: text.len() as u64,
        ..EntrySpec::default()
    })?;
    // README.txt is one record: it goes whole into the last part.
    if z.write_record(text.as_bytes())? == Fit::Restart {
        z.begin(EntrySpec {
            name: format!("{folder}/README.txt"),
            ..EntrySpec::default()
        })?;
        let _ = z.write_record(text.as_bytes())?;
    }
    z.end();
    check_interrupt()?;
    let written = z.commit()?;

    let record = ExportRecord {
        time: now,
        nanos: now_nanos,
        snapshot: *id,
        account: snap.account.clone(),
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        format: opts.format,
        encrypted: opts.password.is_some(),
        split_size: opts.split.unwrap_or(0),
        categories: cats.iter().map(|c| c.name().to_string()).collect(),
        tables: outs.iter().map(|t| t.name.clone()).collect(),
        attachments: att_out.len() as u64,
        attachment_bytes: att_out.iter().map(|a| a.1).sum(),
        files: written
            .iter()
            .map(|(p, size)| ExportFile {
                name: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size: *size,
            })
            .collect(),
    };
    record.validate()?;
    let rid = repo.write_object(FileKind::Export, ObjectType::Export, &record.encode())?;
    Ok(ExportReport {
        record: rid.to_hex(),
        snapshot: id.to_hex(),
        account: snap.account.clone(),
        files: written
            .into_iter()
            .map(|(path, size)| WrittenFile { path, size })
            .collect(),
        tables: outs
            .iter()
            .map(|t| WrittenTable {
                name: t.name.clone(),
                category: t.category.name(),
                entries: t.entries.clone(),
                rows: t.stats.rows,
                columns: t.stats.columns.len(),
            })
            .collect(),
        attachments: att_out.len() as u64,
        bytes_read: cx.bytes_read,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// An export record with its id, for `arca exports`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportListing {
    /// The record's id.
    pub id: String,
    /// Time, RFC 3339.
    pub time_rfc3339: String,
    /// The record.
    #[serde(flatten)]
    pub record: ExportRecord,
}

/// Lists export records, oldest first, optionally of one account.
pub fn list(repo: &Repository, account: Option<&str>) -> Result<Vec<ExportListing>> {
    let mut out = Vec::new();
    for l in repo.backend().list(FileKind::Export)? {
        let id = FileId::from_hex(&l.name).map_err(|_| {
            Error::corrupt(format!("exports/{}", l.name), "not an export file name")
        })?;
        let body = repo.read_object(
            FileKind::Export,
            ObjectType::Export,
            &l.name,
            limits::MAX_EXPORT_FILE,
        )?;
        let record = ExportRecord::decode(&body, &format!("export {id}"))?;
        if account.is_some_and(|a| a != record.account) {
            continue;
        }
        out.push(ExportListing {
            id: id.to_hex(),
            time_rfc3339: format_time(record.time, record.nanos),
            record,
        });
    }
    out.sort_by(|a, b| {
        (a.record.time, a.record.nanos, &a.id).cmp(&(b.record.time, b.record.nanos, &b.id))
    });
    Ok(out)
}

/// The default output path: `<account>-export-<date>.zip` in `dir`.
pub fn default_output(dir: &Path, snapshot: &Snapshot) -> PathBuf {
    dir.join(format!("{}.zip", folder_name(snapshot)))
}
