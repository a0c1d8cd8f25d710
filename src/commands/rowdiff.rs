//! `arca diff --records`: which records of each table changed between two
//! snapshots, matched by key: a CSV table's first column, a JSON record's
//! `_id` (or `id`). Tables are those `export` names.
//!
//! CSV: both versions are parsed as they stream from the repository, but
//! only the rows that touch a chunk the other version does not have are
//! kept (a key hash, a row hash and the key's bytes): a row that lies
//! inside a chunk both versions share is the same row in both. That holds
//! when the parser enters the chunk in the same state on both sides (not
//! inside a quoted field); a digest of the skipped rows per shared chunk
//! proves it, and when the digests differ the table is compared again row
//! by row without skipping.
//!
//! JSON: a file with the same path and chunks on both sides holds the same
//! records and is not read; the records of the other files are kept.
//!
//! Rows are then matched by key: the same key with the same content is
//! unchanged (it moved, or sat on a chunk boundary), with other content
//! changed; a key on one side only was added or removed. Keys that repeat
//! are matched as multisets. Over [`ROW_BUDGET`] rows a version, the table
//! is compared in passes over partitions of the key hashes.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::commands::browse::{lookup, Item};
use crate::commands::export::{collect_files, each_record, unwrap_io, Ctx};
use crate::commands::NoProgress;
use crate::error::{Error, Result};
use crate::export::zipout::Fit;
use crate::export::{plan, Source, SrcFile, TableSpec};
use crate::format::tree::NodeKind;
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// How many example keys each kind of change lists.
pub const EXAMPLES: usize = 5;

/// The row changes of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableDiff {
    /// The table, as `export` names it (a CSV file's path, a JSON app).
    pub table: String,
    /// The key: a CSV header's first name (in the newer version), or the
    /// JSON records' `_id` or `id` field.
    pub key: String,
    /// Whether the header row changed.
    pub header_changed: bool,
    /// Rows whose key is only in the newer version.
    pub added: u64,
    /// Rows whose key is only in the older version.
    pub removed: u64,
    /// Rows whose key is in both with other fields.
    pub changed: u64,
    /// Up to [`EXAMPLES`] keys of added rows, in file order of the newer.
    pub added_keys: Vec<String>,
    /// Up to [`EXAMPLES`] keys of removed rows.
    pub removed_keys: Vec<String>,
    /// Up to [`EXAMPLES`] keys of changed rows.
    pub changed_keys: Vec<String>,
    /// Rows parsed and kept for matching, both versions (the rest sat in
    /// shared chunks).
    pub rows_compared: u64,
    /// Passes over the two versions (more than 1 for tables over
    /// [`ROW_BUDGET`] rows).
    pub passes: u64,
}

fn file_at(repo: &IndexedRepository, tree: &BlobId, path: &str) -> Result<SrcFile> {
    match lookup(repo, tree, path)? {
        Item::Leaf {
            path,
            node:
                crate::format::tree::Node {
                    size,
                    kind: NodeKind::File { chunks },
                    ..
                },
        } => Ok(SrcFile { path, size, chunks }),
        _ => Err(Error::Invalid(format!("{path} is not a file"))),
    }
}

/// Rows one version may keep in one pass (24 bytes each, plus its key):
/// a larger table is compared in passes, each over the keys of one hash
/// partition, so memory stays near 100 MB whatever the table's size.
pub const ROW_BUDGET: usize = 2 << 20;

/// Compares the CSV table at `path` in the trees `old` and `new` (both
/// must hold it as a file).
pub fn table_diff(
    repo: &IndexedRepository,
    old: &BlobId,
    new: &BlobId,
    path: &str,
) -> Result<TableDiff> {
    let a = file_at(repo, old, path)?;
    let b = file_at(repo, new, path)?;
    compare(
        repo,
        path,
        Version::Csv(Some(&a)),
        Version::Csv(Some(&b)),
        ROW_BUDGET,
    )
}

/// The record changes of every table (as `export` names them: a CSV file,
/// a JSON app, the audit log) whose content differs between the trees
/// `old` and `new`, in table order; a table on one side only has all its
/// records added or removed.
pub fn record_changes(
    repo: &IndexedRepository,
    old: &BlobId,
    new: &BlobId,
) -> Result<Vec<TableDiff>> {
    record_changes_within(repo, old, new, ROW_BUDGET)
}

/// [`record_changes`] with `budget` rows per version and pass.
pub fn record_changes_within(
    repo: &IndexedRepository,
    old: &BlobId,
    new: &BlobId,
    budget: usize,
) -> Result<Vec<TableDiff>> {
    let tables = |tree: &BlobId| -> Result<Vec<TableSpec>> {
        let mut files = Vec::new();
        collect_files(repo, tree, "", &mut files)?;
        Ok(plan(files).tables)
    };
    let (ta, tb) = (tables(old)?, tables(new)?);
    let mut names: Vec<&str> = ta.iter().chain(&tb).map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let (a, b) = (source_of(&ta, name), source_of(&tb, name));
        let d = match (a, b) {
            (Some(Source::Csv(x)), Some(Source::Csv(y))) if x.chunks == y.chunks => continue,
            (Some(Source::Csv(_)) | None, Some(Source::Csv(_)) | None) => compare(
                repo,
                name,
                Version::Csv(csv_of(a)),
                Version::Csv(csv_of(b)),
                budget,
            )?,
            // A table that changed its kind has no records to match.
            (Some(Source::Csv(_)), Some(Source::Json { .. }))
            | (Some(Source::Json { .. }), Some(Source::Csv(_))) => continue,
            _ => {
                // JSON records: files with the same path and chunks hold
                // the same records.
                let (fa, fb) = (json_files(a), json_files(b));
                let (ca, cb) = (changed_files(fa, fb), changed_files(fb, fa));
                if ca.is_empty() && cb.is_empty() {
                    continue;
                }
                compare(repo, name, Version::Json(&ca), Version::Json(&cb), budget)?
            }
        };
        out.push(d);
    }
    Ok(out)
}

fn source_of<'t>(tables: &'t [TableSpec], name: &str) -> Option<&'t Source> {
    tables.iter().find(|t| t.name == name).map(|t| &t.source)
}

fn csv_of(s: Option<&Source>) -> Option<&SrcFile> {
    match s {
        Some(Source::Csv(f)) => Some(f),
        _ => None,
    }
}

fn json_files(s: Option<&Source>) -> &[SrcFile] {
    match s {
        Some(Source::Json { files, .. }) => files,
        _ => &[],
    }
}

/// The files of `v` that `other` does not hold with the same path and
/// chunks (those hold the same records).
fn changed_files(v: &[SrcFile], other: &[SrcFile]) -> Vec<SrcFile> {
    let by_path: HashMap<&str, &[BlobId]> = other
        .iter()
        .map(|f| (f.path.as_str(), f.chunks.as_slice()))
        .collect();
    v.iter()
        .filter(|f| by_path.get(f.path.as_str()) != Some(&f.chunks.as_slice()))
        .cloned()
        .collect()
}

/// What one version of a table is read from.
#[derive(Clone, Copy)]
enum Version<'a> {
    /// A CSV file (absent: the table is not on this side).
    Csv(Option<&'a SrcFile>),
    /// The JSON files to read (those the other side does not share).
    Json(&'a [SrcFile]),
}

fn chunk_set(v: Version) -> HashSet<BlobId> {
    match v {
        Version::Csv(Some(f)) => f.chunks.iter().copied().collect(),
        _ => HashSet::new(),
    }
}

fn read(
    repo: &IndexedRepository,
    v: Version,
    label: &str,
    shared: Option<&HashSet<BlobId>>,
    part: Part,
) -> Result<Side> {
    match v {
        Version::Csv(Some(f)) => parse(repo, f, shared, part),
        Version::Csv(None) => Ok(Side::default()),
        Version::Json(files) => parse_json(repo, files, label, part),
    }
}

/// Compares two versions of the table `label`, in as many passes as
/// `budget` rows per version and pass need.
fn compare(
    repo: &IndexedRepository,
    label: &str,
    a: Version,
    b: Version,
    budget: usize,
) -> Result<TableDiff> {
    let (sa, sb) = (chunk_set(a), chunk_set(b));
    // The two versions parse at once, on threads of their own: each waits
    // on chunks that the thread pool decodes, so neither may block a
    // worker of that pool.
    let both = |skip: bool, part: Part| -> Result<(Side, Side)> {
        std::thread::scope(|s| {
            let x = s.spawn(|| read(repo, a, label, skip.then_some(&sb), part));
            let y = read(repo, b, label, skip.then_some(&sa), part);
            let x = x
                .join()
                .map_err(|_| Error::Invalid(format!("{label}: the comparison failed")))?;
            Ok((x?, y?))
        })
    };
    // All passes over `parts` partitions, or how many partitions a pass
    // that went over its budget says are needed.
    let passes = |parts: u64| -> Result<std::result::Result<TableDiff, u64>> {
        let mut out = TableDiff::default();
        let mut found = Vec::new();
        for index in 0..parts {
            let part = Part {
                index,
                of: parts,
                budget,
            };
            let (mut va, mut vb) = both(true, part)?;
            if va.digests != vb.digests {
                // A shared chunk split into rows differently on the two sides.
                (va, vb) = both(false, part)?;
            }
            if let Some(est) = [&va, &vb].iter().filter_map(|v| v.over).max() {
                // As many passes as the estimate needs, with room to spare.
                return Ok(Err((parts * est).div_ceil(budget as u64) + 1));
            }
            matched(&mut out, va, vb, &mut found);
        }
        out.passes = parts;
        Ok(Ok(out))
    };
    let mut parts = 1u64;
    loop {
        match passes(parts)? {
            Ok(mut out) => {
                out.table = label.to_string();
                return Ok(out);
            }
            Err(more) => parts = more,
        }
    }
}

/// Which keys one pass keeps: those whose hash falls in partition `index`
/// of `of`, up to `budget` rows.
#[derive(Clone, Copy)]
struct Part {
    index: u64,
    of: u64,
    budget: usize,
}

/// A row kept for matching (24 bytes: tables of many rows stay small).
#[derive(Clone, Copy)]
struct Row {
    key: u64,
    fields: u64,
    /// The row's place in its file, for examples in file order.
    seq: u32,
    /// Where its key starts in [`Side::keys`] (a u16 length, then bytes).
    key_at: u32,
}

#[derive(Default)]
struct Side {
    header: Vec<Vec<u8>>,
    rows: Vec<Row>,
    keys: Vec<u8>,
    /// Set when the pass went over its budget: the rows the partition
    /// would hold in all, estimated from the bytes parsed so far.
    over: Option<u64>,
    /// The JSON field that keyed the records (`_id` or `id`).
    key_name: Option<&'static str>,
    /// Per shared chunk: rows skipped inside it, and the sum of their hashes.
    digests: HashMap<BlobId, (u64, u64)>,
}

fn hash_fields(rec: &csv::ByteRecord) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for f in rec.iter() {
        f.hash(&mut h);
    }
    h.finish()
}

fn hash_key(k: &[u8]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    k.hash(&mut h);
    h.finish()
}

/// A reading context that reports no progress.
fn quiet(repo: &IndexedRepository) -> Ctx<'_> {
    Ctx {
        repo,
        progress: &NoProgress,
        bytes_read: 0,
    }
}

/// Parses `file`; rows inside a chunk of `shared` are only counted in that
/// chunk's digest (every row is kept when `shared` is `None`).
fn parse(
    repo: &IndexedRepository,
    file: &SrcFile,
    shared: Option<&HashSet<BlobId>>,
    part: Part,
) -> Result<Side> {
    let mut cx = quiet(repo);
    // Chunk ends, to place each row.
    let mut ends = Vec::with_capacity(file.chunks.len());
    let mut at = 0u64;
    for c in &file.chunks {
        let loc = cx.repo.cache().get(c)?.ok_or_else(|| {
            Error::corrupt(
                format!("chunk {} of {}", c.to_hex(), file.path),
                "no pack holds it (run `arca check`)",
            )
        })?;
        at += u64::from(loc.entry.raw_length);
        ends.push(at);
    }
    let mut side = Side::default();
    cx.with_reader(file, &mut |r| {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(r);
        let mut rec = csv::ByteRecord::new();
        let mut ci = 0usize;
        let mut seq = 0u64;
        loop {
            let start = rdr.position().byte();
            let more = rdr
                .read_byte_record(&mut rec)
                .map_err(|e| csv_err(e, &file.path))?;
            if !more {
                return Ok(());
            }
            let end = rdr.position().byte();
            if seq == 0 {
                side.header = rec.iter().map(<[u8]>::to_vec).collect();
                seq = 1;
                continue;
            }
            seq += 1;
            let k = rec.get(0).unwrap_or_default();
            let key = hash_key(k);
            if key % part.of != part.index {
                continue;
            }
            let fields = hash_fields(&rec);
            while ci < ends.len() && ends[ci] <= start {
                ci += 1;
            }
            let chunk_start = if ci == 0 { 0 } else { ends[ci - 1] };
            let inside = ci < ends.len() && start >= chunk_start && end <= ends[ci];
            if let (Some(sh), true) = (shared, inside) {
                if sh.contains(&file.chunks[ci]) {
                    let d = side.digests.entry(file.chunks[ci]).or_default();
                    d.0 += 1;
                    d.1 = d.1.wrapping_add(fields);
                    continue;
                }
            }
            if side.rows.len() >= part.budget {
                let est = side.rows.len() as u64 * file.size.max(1) / end.max(1);
                side.over = Some(est.max(part.budget as u64 + 1));
                return Ok(());
            }
            push_row(&mut side, key, fields, seq, k, &file.path)?;
        }
    })?;
    Ok(side)
}

/// Keeps a row for matching.
fn push_row(side: &mut Side, key: u64, fields: u64, seq: u64, k: &[u8], label: &str) -> Result<()> {
    // Keys are for showing: a very long one is cut.
    let shown = &k[..k.len().min(usize::from(u16::MAX))];
    let (Ok(key_at), Ok(seq)) = (u32::try_from(side.keys.len()), u32::try_from(seq)) else {
        return Err(Error::Invalid(format!(
            "{label}: too many rows to compare record by record"
        )));
    };
    side.rows.push(Row {
        key,
        fields,
        seq,
        key_at,
    });
    side.keys
        .extend_from_slice(&(shown.len() as u16).to_le_bytes());
    side.keys.extend_from_slice(shown);
    Ok(())
}

/// The fields that identify a JSON record, read without building the rest.
#[derive(serde::Deserialize)]
struct Ids<'a> {
    #[serde(rename = "_id", default, borrow)]
    underscore: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    id: Option<&'a serde_json::value::RawValue>,
}

/// Reads the records of JSON `files`, keyed by `_id` (or `id`) within the
/// member that holds them; a record with neither is keyed by its bytes.
fn parse_json(
    repo: &IndexedRepository,
    files: &[SrcFile],
    label: &str,
    part: Part,
) -> Result<Side> {
    let mut cx = quiet(repo);
    let mut side = Side::default();
    let mut seq = 0u64;
    let mut key = Vec::new();
    let _fit = each_record(&mut cx, files, &mut |member, rec| {
        if side.over.is_some() {
            return Ok(Fit::Ok);
        }
        seq += 1;
        let ids: Ids = serde_json::from_slice(rec)
            .map_err(|e| Error::Invalid(format!("{label}: a record is not a JSON object: {e}")))?;
        // Records of different members (users, groups) never match.
        key.clear();
        if let Some(m) = member {
            key.extend_from_slice(m.as_bytes());
        }
        key.push(0);
        let shown = match (ids.underscore, ids.id) {
            (Some(v), _) | (None, Some(v)) => {
                side.key_name = Some(if ids.underscore.is_some() {
                    "_id"
                } else {
                    "id"
                });
                let t = v.get();
                let t = t
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(t);
                key.extend_from_slice(t.as_bytes());
                t
            }
            // Without an id a record can only be added or removed.
            (None, None) => {
                key.extend_from_slice(rec);
                "(no id)"
            }
        };
        let kh = hash_key(&key);
        if kh % part.of != part.index {
            return Ok(Fit::Ok);
        }
        if side.rows.len() >= part.budget {
            // No byte count here to estimate from: twice the partitions.
            side.over = Some(part.budget as u64 * 2);
            return Ok(Fit::Ok);
        }
        push_row(&mut side, kh, hash_key(rec), seq, shown.as_bytes(), label)?;
        Ok(Fit::Ok)
    })?;
    Ok(side)
}

fn csv_err(e: csv::Error, path: &str) -> Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => unwrap_io(io, path),
        other => Error::Invalid(format!("{path}: not readable as CSV: {other:?}")),
    }
}

/// Matches the rows of one pass by key and adds what changed to `d`;
/// `found` keeps the first changes in file order for the examples.
fn matched(d: &mut TableDiff, mut a: Side, mut b: Side, found: &mut Vec<(u32, u8, String)>) {
    let key = |s: &Side, r: &Row| {
        let at = r.key_at as usize;
        let len = usize::from(u16::from_le_bytes([s.keys[at], s.keys[at + 1]]));
        String::from_utf8_lossy(&s.keys[at + 2..at + 2 + len]).into_owned()
    };
    if d.key.is_empty() {
        d.key = b
            .header
            .first()
            .or(a.header.first())
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .or_else(|| b.key_name.or(a.key_name).map(str::to_string))
            .unwrap_or_default();
        d.header_changed = a.header != b.header;
    }
    d.rows_compared += (a.rows.len() + b.rows.len()) as u64;
    a.rows.sort_unstable_by_key(|r| (r.key, r.fields, r.seq));
    b.rows.sort_unstable_by_key(|r| (r.key, r.fields, r.seq));
    let (a, b) = (&a, &b);
    let (na, nb) = (a.rows.len(), b.rows.len());
    let ra = |x: usize| &a.rows[x];
    let rb = |y: usize| &b.rows[y];
    // (seq, kind, key) of the changes, kinds 0 added, 1 removed, 2 changed.
    let mut note = |seq: u32, kind: u8, k: &dyn Fn() -> String| {
        if found.iter().filter(|f| f.1 == kind).count() < EXAMPLES
            || found.iter().any(|f| f.1 == kind && f.0 > seq)
        {
            found.push((seq, kind, k()));
            found.sort_unstable();
            let mut seen = [0usize; 3];
            found.retain(|f| {
                seen[f.1 as usize] += 1;
                seen[f.1 as usize] <= EXAMPLES
            });
        }
    };
    let (mut i, mut j) = (0, 0);
    while i < na || j < nb {
        let k = match (i < na, j < nb) {
            (true, true) => ra(i).key.min(rb(j).key),
            (true, false) => ra(i).key,
            _ => rb(j).key,
        };
        let i2 = i + (i..na).take_while(|&x| ra(x).key == k).count();
        let j2 = j + (j..nb).take_while(|&y| rb(y).key == k).count();
        // Rows with equal fields cancel; the rest are changes.
        let (mut lo, mut ln) = (Vec::new(), Vec::new());
        let (mut x, mut y) = (i, j);
        while x < i2 || y < j2 {
            if x < i2 && y < j2 && ra(x).fields == rb(y).fields {
                x += 1;
                y += 1;
            } else if x < i2 && (y == j2 || ra(x).fields < rb(y).fields) {
                lo.push(x);
                x += 1;
            } else {
                ln.push(y);
                y += 1;
            }
        }
        let both = lo.len().min(ln.len());
        for (n, &y) in ln.iter().enumerate() {
            let r = rb(y);
            note(r.seq, if n < both { 2 } else { 0 }, &|| key(b, r));
        }
        for &x in &lo[both..] {
            let r = ra(x);
            note(r.seq, 1, &|| key(a, r));
        }
        d.changed += both as u64;
        d.added += (ln.len() - both) as u64;
        d.removed += (lo.len() - both) as u64;
        i = i2;
        j = j2;
    }
    d.added_keys.clear();
    d.removed_keys.clear();
    d.changed_keys.clear();
    for (_, kind, k) in found.iter() {
        match kind {
            0 => d.added_keys.push(k.clone()),
            1 => d.removed_keys.push(k.clone()),
            _ => d.changed_keys.push(k.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{
        backup_tree as snap_dir, csv_row_changes as reference, seeded_small_chunk_repo,
        small_chunk_repo,
    };

    fn snap(repo: &IndexedRepository, dir: &std::path::Path, table: &[u8]) -> BlobId {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("t.csv"), table).unwrap();
        snap_dir(repo, dir)
    }

    fn only(mut v: Vec<TableDiff>) -> TableDiff {
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    fn row(id: u64, qty: u64) -> String {
        format!("{id},product {id} of a long enough name,{qty},\"note, with comma\"\n")
    }

    #[test]
    fn rows_added_removed_changed_and_moved() {
        let tmp = tempfile::tempdir().unwrap();
        // Fixed keys, so fixed chunk boundaries: how many rows sit in
        // chunks both versions share depends on them (with random keys,
        // 1,574 to 6,348 of the 10,000 rows were compared over 120 runs).
        let repo = seeded_small_chunk_repo(&tmp.path().join("cache"), 1).unwrap();
        let mut a = String::from("id,name,qty,note\n");
        for id in 1..=5000 {
            a.push_str(&row(id, id % 7));
        }
        let mut b = String::from("id,name,qty,note\n");
        for id in 1..=5000 {
            match id {
                7 | 3000 | 100 => {}
                10 | 2000 | 4999 => b.push_str(&row(id, 99)),
                2500 => {
                    b.push_str(&row(id, id % 7));
                    b.push_str(&row(9000, 1));
                }
                _ => b.push_str(&row(id, id % 7)),
            }
        }
        b.push_str(&row(100, 100 % 7)); // moved, unchanged
        for id in 5001..=5003 {
            b.push_str(&row(id, 0));
        }
        let old = snap(&repo, &tmp.path().join("a"), a.as_bytes());
        let new = snap(&repo, &tmp.path().join("b"), b.as_bytes());
        let d = table_diff(&repo, &old, &new, "t.csv").unwrap();
        assert_eq!((d.added, d.removed, d.changed), (4, 2, 3), "{d:?}");
        assert_eq!(d.added_keys, ["9000", "5001", "5002", "5003"]);
        assert_eq!(d.removed_keys, ["7", "3000"]);
        assert_eq!(d.changed_keys, ["10", "2000", "4999"]);
        assert_eq!(
            (d.key.as_str(), d.header_changed, d.passes),
            ("id", false, 1)
        );
        // Most rows sat in chunks both versions share, and were not kept.
        assert!(d.rows_compared < 5000, "{d:?}");
        assert_eq!(
            (d.added, d.removed, d.changed),
            reference(a.as_bytes(), b.as_bytes())
        );

        // A budget of 300 rows per pass gives the same answer in passes.
        let p = only(record_changes_within(&repo, &old, &new, 300).unwrap());
        assert!(p.passes > 1, "{p:?}");
        assert_eq!(
            (
                &p.added_keys,
                &p.removed_keys,
                &p.changed_keys,
                p.added,
                p.removed,
                p.changed
            ),
            (
                &d.added_keys,
                &d.removed_keys,
                &d.changed_keys,
                d.added,
                d.removed,
                d.changed
            )
        );
        // Nothing changed: nothing reported, and only the rows on chunk
        // ends were kept.
        let same = table_diff(&repo, &new, &new, "t.csv").unwrap();
        assert_eq!((same.added, same.removed, same.changed), (0, 0, 0));
        assert!(same.rows_compared < 100, "{same:?}");
    }

    /// Quoted fields that hold newlines, repeated keys and rows that
    /// straddle chunk ends, against a whole-table reference.
    #[test]
    fn matches_a_whole_table_reference_on_awkward_tables() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = small_chunk_repo(&tmp.path().join("cache")).unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let make = |rnd: &mut dyn FnMut(u64) -> u64, rows: u64, edit: bool| {
            let mut t = String::from("key,text\n");
            for i in 0..rows {
                if edit && rnd(40) == 0 {
                    continue; // removed
                }
                let key = i % (rows - 50); // some keys repeat
                let text = if i % 97 == 0 {
                    format!("\"multi\nline \"\"{i}\"\"\n{}\"", "x".repeat(300))
                } else if edit && rnd(30) == 0 {
                    format!("edited {i}")
                } else {
                    format!("row {i} {}", "y".repeat((i % 50) as usize))
                };
                t.push_str(&format!("{key},{text}\n"));
                if edit && rnd(50) == 0 {
                    t.push_str(&format!("{},new\n", 100_000 + i));
                }
            }
            t
        };
        for round in 0..3 {
            let a = make(&mut rnd, 3000, false);
            let b = make(&mut rnd, 3000, true);
            let dir = tmp.path().join(format!("r{round}"));
            let old = snap(&repo, &dir.join("a"), a.as_bytes());
            let new = snap(&repo, &dir.join("b"), b.as_bytes());
            let want = reference(a.as_bytes(), b.as_bytes());
            assert!(want.0 > 0 && want.1 > 0 && want.2 > 0, "{want:?}");
            for budget in [ROW_BUDGET, 500] {
                let d = only(record_changes_within(&repo, &old, &new, budget).unwrap());
                assert_eq!(
                    (d.added, d.removed, d.changed),
                    want,
                    "round {round}, budget {budget}"
                );
            }
        }
    }

    /// The same bytes read as rows on one side and as one quoted field on
    /// the other: the shared chunks' digests differ and the table is
    /// compared without skipping.
    #[test]
    fn shared_chunks_parsed_differently_fall_back_to_every_row() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = small_chunk_repo(&tmp.path().join("cache")).unwrap();
        let body: String = (2..4000)
            .map(|i| format!("{i},value {i} {}\n", "z".repeat(i % 40)))
            .collect();
        let a = format!("k,v\n1,\"{body}\"\n");
        let b = format!("k,v\n{body}");
        let old = snap(&repo, &tmp.path().join("a"), a.as_bytes());
        let new = snap(&repo, &tmp.path().join("b"), b.as_bytes());
        let d = table_diff(&repo, &old, &new, "t.csv").unwrap();
        assert_eq!((d.added, d.removed, d.changed), (3998, 1, 0), "{d:?}");
        assert_eq!(d.rows_compared, 3999);
    }

    fn rec(id: &str, status: &str) -> String {
        format!(
            r#"{{"_id":"{id}","Name":"N {id}","_status":"{status}","comments":[{{"id":"c-{id}","text":"x"}}]}}"#
        )
    }

    fn write_all(dir: &std::path::Path, files: &[(&str, String)]) {
        let _ = std::fs::remove_dir_all(dir);
        for (p, body) in files {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
    }

    #[test]
    fn json_records_are_matched_by_id_across_pages() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = small_chunk_repo(&tmp.path().join("cache")).unwrap();
        let page = |recs: &[String]| format!("[\n{}\n]\n", recs.join(",\n"));
        let events = |n: u32| {
            let ev: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"id":"ev_{i}","action":"item.update"}}"#))
                .collect();
            format!("{{\"file\":1,\"events\":[\n{}\n]}}\n", ev.join(",\n"))
        };
        let p1: Vec<String> = (1..=50).map(|i| rec(&format!("Pk{i}"), "Open")).collect();
        let p2: Vec<String> = (51..=100).map(|i| rec(&format!("Pk{i}"), "Open")).collect();
        let settings = ("settings.json", "{}".to_string());
        let dir = tmp.path().join("src");
        write_all(
            &dir,
            &[
                ("apps/CRM/records/page-00001.json", page(&p1)),
                ("apps/CRM/records/page-00002.json", page(&p2)),
                ("apps/Other/records/page-00001.json", page(&p1[..3])),
                ("audit-logs/audit-log-000001.json", events(20)),
                settings.clone(),
            ],
        );
        let old = snap_dir(&repo, &dir);
        // Page 1: Pk7 changed, Pk1 moved to page 2 unchanged; page 2: Pk60
        // removed; page 3: Pk500 added; one more audit event; Other as is.
        let mut q1 = p1.clone();
        q1[6] = rec("Pk7", "Closed");
        let moved = q1.remove(0);
        let mut q2 = p2.clone();
        q2.retain(|r| !r.contains("\"Pk60\""));
        q2.push(moved);
        write_all(
            &dir,
            &[
                ("apps/CRM/records/page-00001.json", page(&q1)),
                ("apps/CRM/records/page-00002.json", page(&q2)),
                (
                    "apps/CRM/records/page-00003.json",
                    page(&[rec("Pk500", "Open")]),
                ),
                ("apps/Other/records/page-00001.json", page(&p1[..3])),
                ("audit-logs/audit-log-000001.json", events(21)),
                settings,
            ],
        );
        let new = snap_dir(&repo, &dir);
        let v = record_changes(&repo, &old, &new).unwrap();
        let got: Vec<(&str, &str, u64, u64, u64)> = v
            .iter()
            .map(|d| {
                (
                    d.table.as_str(),
                    d.key.as_str(),
                    d.added,
                    d.removed,
                    d.changed,
                )
            })
            .collect();
        assert_eq!(got.len(), 2, "{v:?}");
        assert_eq!(got, [("CRM", "_id", 1, 1, 1), ("audit-log", "id", 1, 0, 0)]);
        assert_eq!(
            (&v[0].added_keys, &v[0].removed_keys, &v[0].changed_keys),
            (
                &vec!["Pk500".to_string()],
                &vec!["Pk60".to_string()],
                &vec!["Pk7".to_string()]
            )
        );
        assert_eq!(v[1].added_keys, ["ev_20"]);
        // Only the files that changed were read: not the Other app's.
        assert_eq!(v[0].rows_compared, (50 + 50) + (49 + 50 + 1));
        // A small budget gives the same counts in more passes.
        let p = record_changes_within(&repo, &old, &new, 7).unwrap();
        assert!(p[0].passes > 1, "{p:?}");
        let counts = |v: &[TableDiff]| -> Vec<(u64, u64, u64)> {
            v.iter().map(|d| (d.added, d.removed, d.changed)).collect()
        };
        assert_eq!(counts(&p), counts(&v));
    }
}
