//! Writing the export's ZIP file(s): optional AES-256 (WinZip AE-2)
//! entries, ZIP64 when sizes need it, and splitting into parts that are
//! each a complete archive.
//!
//! Nothing appears under a final name until [`ZipOut::commit`]: parts are
//! written as `NAME.partial` and renamed at the end; dropping an uncommitted
//! `ZipOut` removes them.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use zeroize::Zeroizing;
use zip::write::SimpleFileOptions;
use zip::{AesMode, CompressionMethod, ZipWriter};

use crate::error::{Error, Result};

/// Room kept in a part for compressed bytes still inside the deflate
/// encoder and its buffers (zlib's window and pending buffer and flate2's
/// buffer are each at most 64 KiB).
const ENCODER_SLACK: u64 = 256 << 10;
/// Central directory bytes per entry beyond its name: 46 fixed, ZIP64
/// extra field 28, AES extra field 11, with room to spare.
const CD_ENTRY: u64 = 128;
/// End of central directory records (ZIP64 record 56, locator 20, classic
/// 22) with room to spare.
const CD_END: u64 = 160;
/// Smallest part size accepted: well above the slack above, so that parts
/// hold data rather than reserve.
pub const MIN_SPLIT: u64 = 1 << 20;
/// Entries start as ZIP64 when their source is at least this large: the
/// zip writer must know before an entry outgrows 4 GiB, and CSV turned into
/// JSON Lines repeats the header in every row (stockflow tables grow 1.5 to
/// 3 times; 8 times leaves room for narrow tables with long names).
pub const LARGE_SOURCE: u64 = 512 << 20;

/// Extensions of formats that are already compressed: stored, not deflated.
const STORED_EXT: &[&str] = &[
    "jpg", "jpeg", "png", "gif", "webp", "zip", "gz", "bz2", "xz", "zst", "7z", "rar", "docx",
    "xlsx", "pptx", "odt", "ods", "mp3", "mp4", "mov", "avi", "pdf",
];

/// Whether a file of this name is stored rather than deflated.
pub fn stored_by_name(name: &str) -> bool {
    name.rsplit_once('.')
        .map(|(_, e)| STORED_EXT.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// A file writer that counts every byte accepted, so the part's size is
/// known while an entry is being written.
struct Counting {
    f: BufWriter<File>,
    pos: u64,
    high: Arc<AtomicU64>,
    /// Where the archive ends: past the last byte written, or where an
    /// aborted entry began. `SeekFrom::End` is taken from here, so that the
    /// zip writer puts the central directory over an aborted entry instead
    /// of after it (it would keep the dead bytes in the part).
    end: Arc<AtomicU64>,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.f.write(buf)?;
        self.pos += n as u64;
        self.high.fetch_max(self.pos, Ordering::Relaxed);
        self.end.fetch_max(self.pos, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.f.flush()
    }
}

impl Seek for Counting {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        // The zip writer seeks back only to patch a header (and then
        // returns to the end) or to drop an aborted entry: either way the
        // part ends where the last seek lands until more is written.
        let to = match to {
            SeekFrom::End(d) => SeekFrom::Start(
                self.end
                    .load(Ordering::Relaxed)
                    .checked_add_signed(d)
                    .ok_or_else(|| std::io::Error::other("seek before the start"))?,
            ),
            other => other,
        };
        self.pos = self.f.seek(to)?;
        self.high.store(self.pos, Ordering::Relaxed);
        Ok(self.pos)
    }
}

struct Part {
    zip: ZipWriter<Counting>,
    high: Arc<AtomicU64>,
    end: Arc<AtomicU64>,
    tmp: PathBuf,
    entries: usize,
    cd_reserve: u64,
}

/// How an entry is written.
#[derive(Clone, Debug, Default)]
pub struct EntrySpec {
    /// Name inside the ZIP (with its folder).
    pub name: String,
    /// Bytes repeated at the start of every piece of a split table (its
    /// header row); `None` for files cut at byte boundaries.
    pub header: Option<Vec<u8>>,
    /// Name pieces `stem.001.ext` (tables) or `name.001` (other files) from
    /// the start: set when the entry was found not to fit in one part.
    pub pieces: bool,
    /// Size of the source, to decide on ZIP64 ahead.
    pub source_size: u64,
    /// Store (already compressed formats) instead of deflating.
    pub stored: bool,
}

/// The answer to writing a record.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub enum Fit {
    /// Written.
    Ok,
    /// The entry was removed: it does not fit where it started. Write it
    /// again from its first record with the spec [`ZipOut::retry_spec`]
    /// gives.
    Restart,
}

struct Current {
    spec: EntrySpec,
    /// Where the entry's data began in its part, and how many source bytes
    /// went in since: the compression seen so far.
    start: u64,
    raw: u64,
    piece: u32,
    /// Records written in the current piece.
    records: u64,
    names: Vec<String>,
}

/// The ZIP output of one export.
pub struct ZipOut {
    final_path: PathBuf,
    split: Option<u64>,
    password: Option<Zeroizing<String>>,
    mtime: zip::DateTime,
    level: u32,
    done: Vec<PathBuf>,
    part: Option<Part>,
    cur: Option<Current>,
    /// The last entry must restart in a new part (it did not fit after
    /// other entries).
    rotate: bool,
    /// With `rotate`: the entry will not fit a part either; cut it.
    pieces_next: bool,
    committed: bool,
}

/// The final name of part `n` (1-based) of an export to `path` split into
/// parts: `dir/stem.part-001.zip`.
pub fn part_path(path: &Path, n: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    path.with_file_name(format!("{stem}.part-{n:03}.zip"))
}

fn partial(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn zerr(path: &Path, e: zip::result::ZipError) -> Error {
    match e {
        zip::result::ZipError::Io(io) => Error::io(path, io),
        other => Error::Invalid(format!("{}: {other}", path.display())),
    }
}

/// The name of piece `n` of an entry: `dir/orders.csv` → `dir/orders.002.csv`
/// for tables, `dir/photo.png` → `dir/photo.png.002` for other files.
pub fn piece_name(name: &str, n: u32, table: bool) -> String {
    let (dir, file) = match name.rsplit_once('/') {
        Some((d, f)) => (format!("{d}/"), f),
        None => (String::new(), name),
    };
    match file.rsplit_once('.') {
        Some((stem, ext)) if table && !stem.is_empty() => format!("{dir}{stem}.{n:03}.{ext}"),
        _ => format!("{dir}{file}.{n:03}"),
    }
}

impl ZipOut {
    /// Starts an export to `path` (`path` itself, or its parts with
    /// `split`). The first file is created at once, so an unwritable
    /// destination fails before any data is read.
    pub fn create(
        path: &Path,
        split: Option<u64>,
        password: Option<Zeroizing<String>>,
        mtime: zip::DateTime,
    ) -> Result<Self> {
        if let Some(s) = split {
            if s < MIN_SPLIT {
                return Err(Error::Invalid(format!(
                    "--split-size must be at least {MIN_SPLIT} bytes (1MiB)"
                )));
            }
        }
        let mut z = ZipOut {
            final_path: path.to_path_buf(),
            split,
            password,
            mtime,
            level: DEFAULT_LEVEL,
            done: Vec::new(),
            part: None,
            cur: None,
            rotate: false,
            pieces_next: false,
            committed: false,
        };
        z.open_part()?;
        Ok(z)
    }

    /// Sets the deflate level: 0 stores, 1 is fastest, 9 smallest.
    pub fn set_level(&mut self, level: u32) {
        self.level = level.min(9);
    }

    fn final_name(&self, n: usize) -> PathBuf {
        match self.split {
            Some(_) => part_path(&self.final_path, n),
            None => self.final_path.clone(),
        }
    }

    fn open_part(&mut self) -> Result<()> {
        let n = self.done.len() + 1;
        let fin = self.final_name(n);
        let tmp = partial(&fin);
        // Named by the file the user asked for: the `.partial` name is ours.
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(&fin, e))?;
        let high = Arc::new(AtomicU64::new(0));
        let end = Arc::new(AtomicU64::new(0));
        let w = Counting {
            f: BufWriter::with_capacity(1 << 20, f),
            pos: 0,
            high: high.clone(),
            end: end.clone(),
        };
        self.part = Some(Part {
            zip: ZipWriter::new(w),
            high,
            end,
            tmp,
            entries: 0,
            cd_reserve: CD_END,
        });
        Ok(())
    }

    fn close_part(&mut self) -> Result<()> {
        let Some(p) = self.part.take() else {
            return Ok(());
        };
        let mut w = p.zip.finish().map_err(|e| zerr(&p.tmp, e))?;
        // An aborted entry at the end leaves stale bytes past the central
        // directory: cut them off.
        let end = w.pos;
        w.f.flush().map_err(|e| Error::io(&p.tmp, e))?;
        let f =
            w.f.into_inner()
                .map_err(|e| Error::io(&p.tmp, e.into_error()))?;
        f.set_len(end).map_err(|e| Error::io(&p.tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&p.tmp, e))?;
        self.done.push(p.tmp);
        Ok(())
    }

    fn options(&self, spec: &EntrySpec) -> SimpleFileOptions {
        let mut o = SimpleFileOptions::default()
            .last_modified_time(self.mtime)
            .unix_permissions(0o644)
            .large_file(spec.source_size >= LARGE_SOURCE);
        o = if spec.stored || self.level == 0 {
            o.compression_method(CompressionMethod::Stored)
        } else {
            o.compression_method(CompressionMethod::Deflated)
                .compression_level(Some(i64::from(self.level)))
        };
        o
    }

    fn start(&mut self, name: &str, spec: &EntrySpec) -> Result<()> {
        let opts = self.options(spec);
        let pw = self.password.clone();
        let Some(p) = self.part.as_mut() else {
            return Err(Error::Invalid("export already finished".into()));
        };
        let r = match &pw {
            Some(pw) => p
                .zip
                .start_file(name, opts.with_aes_encryption(AesMode::Aes256, pw)),
            None => p.zip.start_file(name, opts),
        };
        r.map_err(|e| zerr(&p.tmp, e))?;
        p.entries += 1;
        p.cd_reserve += CD_ENTRY + name.len() as u64;
        if let Some(h) = &spec.header {
            p.zip.write_all(h).map_err(|e| Error::io(&p.tmp, e))?;
        }
        Ok(())
    }

    /// Starts an entry.
    pub fn begin(&mut self, spec: EntrySpec) -> Result<()> {
        if self.rotate {
            self.rotate = false;
            self.pieces_next = false;
            self.close_part()?;
            self.open_part()?;
        }
        let name = if spec.pieces {
            piece_name(&spec.name, 1, spec.header.is_some())
        } else {
            spec.name.clone()
        };
        self.start(&name, &spec)?;
        let start = self
            .part
            .as_ref()
            .map_or(0, |p| p.high.load(Ordering::Relaxed));
        self.cur = Some(Current {
            spec,
            start,
            raw: 0,
            piece: 1,
            records: 0,
            names: vec![name],
        });
        Ok(())
    }

    fn over_budget(&self, next: u64) -> bool {
        let (Some(limit), Some(p)) = (self.split, &self.part) else {
            return false;
        };
        p.high.load(Ordering::Relaxed) + ENCODER_SLACK + p.cd_reserve + next > limit
    }

    /// Writes a record (bytes that stay together in one piece: a table row,
    /// or a block of a file).
    pub fn write_record(&mut self, rec: &[u8]) -> Result<Fit> {
        let Some(cur) = self.cur.as_ref() else {
            return Err(Error::Invalid("no entry started".into()));
        };
        if self.over_budget(rec.len() as u64) {
            let alone = self.part.as_ref().is_some_and(|p| p.entries == 1);
            if !alone {
                // Started after other entries: move it to a part of its own,
                // in pieces at once when, compressing as it did so far, it
                // would not fit in an empty part either (saves a third read).
                let written = self
                    .part
                    .as_ref()
                    .map_or(0, |p| p.high.load(Ordering::Relaxed))
                    .saturating_sub(cur.start);
                let projected = if cur.raw > 0 {
                    written as f64 / cur.raw as f64 * cur.spec.source_size as f64
                } else {
                    0.0
                };
                let room = self
                    .split
                    .unwrap_or(u64::MAX)
                    .saturating_sub(ENCODER_SLACK + CD_END);
                self.pieces_next = projected > room as f64;
                self.abort()?;
                self.rotate = true;
                return Ok(Fit::Restart);
            }
            if cur.records > 0 {
                if !cur.spec.pieces {
                    // Alone and still too big: cut it into pieces.
                    self.abort()?;
                    return Ok(Fit::Restart);
                }
                self.next_piece()?;
            }
            // Otherwise a single record larger than a part: written whole.
        }
        let (Some(p), Some(cur)) = (self.part.as_mut(), self.cur.as_mut()) else {
            return Err(Error::Invalid("no entry started".into()));
        };
        p.zip.write_all(rec).map_err(|e| Error::io(&p.tmp, e))?;
        cur.records += 1;
        cur.raw += rec.len() as u64;
        Ok(Fit::Ok)
    }

    fn next_piece(&mut self) -> Result<()> {
        self.close_part()?;
        self.open_part()?;
        let Some(mut cur) = self.cur.take() else {
            return Ok(());
        };
        cur.piece += 1;
        cur.records = 0;
        let name = piece_name(&cur.spec.name, cur.piece, cur.spec.header.is_some());
        self.start(&name, &cur.spec)?;
        cur.names.push(name);
        self.cur = Some(cur);
        Ok(())
    }

    fn abort(&mut self) -> Result<()> {
        self.cur = None;
        if let Some(p) = self.part.as_mut() {
            p.zip.abort_file().map_err(|e| zerr(&p.tmp, e))?;
            p.entries -= 1;
            // The writer now stands where the aborted entry began: the
            // archive ends there (the dead bytes after it are cut off when
            // the part is closed).
            p.end
                .store(p.high.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The spec to write an entry again with after [`Fit::Restart`]: in
    /// pieces when it was alone in its part.
    pub fn retry_spec(&self, mut spec: EntrySpec) -> EntrySpec {
        if !self.rotate || self.pieces_next {
            spec.pieces = true;
        }
        spec
    }

    /// Ends the current entry; returns the names it was written under.
    pub fn end(&mut self) -> Vec<String> {
        self.cur.take().map(|c| c.names).unwrap_or_default()
    }

    /// Finishes the last part and renames every part to its final name.
    /// Returns the final paths and sizes.
    pub fn commit(mut self) -> Result<Vec<(PathBuf, u64)>> {
        self.close_part()?;
        let mut out = Vec::new();
        for (i, tmp) in self.done.iter().enumerate() {
            let fin = if self.done.len() == 1 && self.split.is_some() {
                // One part is enough: still named as a part, so that the
                // name says how the export was asked for.
                part_path(&self.final_path, 1)
            } else {
                self.final_name(i + 1)
            };
            std::fs::rename(tmp, &fin).map_err(|e| Error::io(&fin, e))?;
            let size = std::fs::metadata(&fin)
                .map_err(|e| Error::io(&fin, e))?
                .len();
            out.push((fin, size));
        }
        self.committed = true;
        Ok(out)
    }
}

/// Default deflate level. Measured on stockflow orders.csv (60 MB): level
/// 1 writes 30 % of the input at 104 MB/s, level 6 24 % at 39 MB/s (zlib);
/// deflate is 60 % of an export's CPU. Exports are written once and
/// downloaded, so the smaller output is the default; `--compression 1`
/// trades it for speed.
pub const DEFAULT_LEVEL: u32 = 6;

impl Drop for ZipOut {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Some(p) = self.part.take() {
            let tmp = p.tmp.clone();
            drop(p);
            let _ = std::fs::remove_file(tmp);
        }
        for p in &self.done {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(piece_name("a/orders.csv", 2, true), "a/orders.002.csv");
        assert_eq!(piece_name("a/b/photo.png", 1, false), "a/b/photo.png.001");
        assert_eq!(piece_name("README", 3, true), "README.003");
        assert_eq!(
            part_path(Path::new("/x/acme.zip"), 7),
            PathBuf::from("/x/acme.part-007.zip")
        );
        assert!(stored_by_name("x/Scan.PDF"));
        assert!(!stored_by_name("orders.csv"));
    }

    fn read_names(p: &Path) -> Vec<String> {
        let z = zip::ZipArchive::new(File::open(p).unwrap());
        let z = z.unwrap();
        z.file_names().map(str::to_string).collect()
    }

    #[test]
    fn split_plan_keeps_entries_whole_and_cuts_only_oversized_ones() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t.zip");
        let mut z =
            ZipOut::create(&path, Some(MIN_SPLIT * 2), None, zip::DateTime::default()).unwrap();
        // Random-ish bytes do not compress: sizes are predictable.
        let mut seed = 0u64;
        let mut block = |n: usize| -> Vec<u8> {
            seed += 1;
            crate::testutil::noise(n, seed)
        };
        let mut write = |z: &mut ZipOut, name: &str, blocks: usize| {
            let mut spec = EntrySpec {
                name: name.into(),
                header: Some(b"h\n".to_vec()),
                stored: true,
                ..EntrySpec::default()
            };
            loop {
                z.begin(spec.clone()).unwrap();
                let mut restarted = false;
                for _ in 0..blocks {
                    if z.write_record(&block(64 << 10)).unwrap() == Fit::Restart {
                        restarted = true;
                        break;
                    }
                }
                if !restarted {
                    return z.end();
                }
                spec = z.retry_spec(spec);
            }
        };
        assert_eq!(write(&mut z, "d/a.csv", 15), vec!["d/a.csv"]); // 960 KiB
        assert_eq!(write(&mut z, "d/b.csv", 20), vec!["d/b.csv"]); // 1.25 MiB: next part
        let c = write(&mut z, "d/c.csv", 80); // 5 MiB: cut into pieces
        assert!(c.len() >= 3, "{c:?}");
        assert_eq!(c[0], "d/c.001.csv");
        let files = z.commit().unwrap();
        assert!(files.len() >= 4);
        for (f, size) in &files {
            assert!(*size <= MIN_SPLIT * 2, "{} is {size}", f.display());
        }
        // The aborted start of b.csv was cut off the first part.
        assert!(files[0].1 < 15 * (64 << 10) + 2048, "{}", files[0].1);
        assert_eq!(read_names(&files[0].0), vec!["d/a.csv"]);
        assert_eq!(read_names(&files[1].0), vec!["d/b.csv"]);
        assert_eq!(read_names(&files[2].0), vec!["d/c.001.csv"]);
        assert!(!d.path().read_dir().unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")));
    }

    #[test]
    fn zip64_entries_read_back() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t.zip");
        let mut z = ZipOut::create(
            &path,
            None,
            Some(Zeroizing::new("pw".to_string())),
            zip::DateTime::default(),
        )
        .unwrap();
        z.begin(EntrySpec {
            name: "big.csv".into(),
            source_size: LARGE_SOURCE,
            ..EntrySpec::default()
        })
        .unwrap();
        assert_eq!(z.write_record(b"a,b\n1,2\n").unwrap(), Fit::Ok);
        z.end();
        z.commit().unwrap();
        let mut a = zip::ZipArchive::new(File::open(&path).unwrap()).unwrap();
        let mut f = a.by_name_decrypt("big.csv", b"pw").unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).unwrap();
        assert_eq!(s, "a,b\n1,2\n");
        // And 7-Zip, where present, reads the ZIP64 + AES entry too.
        if let Ok(o) = std::process::Command::new("7z")
            .args(["t", "-ppw"])
            .arg(&path)
            .output()
        {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
    }

    #[test]
    fn dropped_output_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("t.zip");
        let mut z = ZipOut::create(&path, None, None, zip::DateTime::default()).unwrap();
        z.begin(EntrySpec {
            name: "a".into(),
            ..EntrySpec::default()
        })
        .unwrap();
        assert_eq!(z.write_record(b"x").unwrap(), Fit::Ok);
        drop(z);
        assert_eq!(d.path().read_dir().unwrap().count(), 0);
    }
}
