//! `arca diff --records`: which rows of a CSV table changed between two
//! snapshots, matched by the table's first column (its key).
//!
//! Both versions are parsed as they stream from the repository, but only
//! the rows that touch a chunk the other version does not have are kept
//! (a key hash, a row hash and the key's bytes): a row that lies inside a
//! chunk both versions share is the same row in both. That holds when the
//! parser enters the chunk in the same state on both sides (not inside a
//! quoted field); a digest of the skipped rows per shared chunk proves it,
//! and when the digests differ the table is compared again row by row
//! without skipping. Rows are then matched by key: the same key with the
//! same fields is unchanged (it moved or sat on a chunk boundary), with
//! other fields changed; a key on one side only was added or removed. Keys
//! that repeat are matched as multisets.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::commands::browse::{lookup, Item};
use crate::commands::export::{unwrap_io, Ctx};
use crate::commands::NoProgress;
use crate::error::{Error, Result};
use crate::export::SrcFile;
use crate::format::tree::NodeKind;
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// How many example keys each kind of change lists.
pub const EXAMPLES: usize = 5;

/// The row changes of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TableDiff {
    /// The file's path.
    pub path: String,
    /// The key column (the header's first name in the newer version).
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

/// Whether `path` names a CSV table.
pub fn is_table(path: &str) -> bool {
    path.rsplit('.')
        .next()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        && path.contains('.')
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

/// Compares the table at `path` in the trees `old` and `new` (both must
/// hold it as a file).
pub fn table_diff(
    repo: &IndexedRepository,
    old: &BlobId,
    new: &BlobId,
    path: &str,
) -> Result<TableDiff> {
    table_diff_within(repo, old, new, path, ROW_BUDGET)
}

/// [`table_diff`] with `budget` rows per version and pass.
pub fn table_diff_within(
    repo: &IndexedRepository,
    old: &BlobId,
    new: &BlobId,
    path: &str,
    budget: usize,
) -> Result<TableDiff> {
    let a = file_at(repo, old, path)?;
    let b = file_at(repo, new, path)?;
    let (sa, sb): (HashSet<BlobId>, HashSet<BlobId>) = (
        a.chunks.iter().copied().collect(),
        b.chunks.iter().copied().collect(),
    );
    // The two versions parse at once, on threads of their own: each waits
    // on chunks that the thread pool decodes, so neither may block a
    // worker of that pool.
    let both = |skip: bool, part: Part| -> Result<(Side, Side)> {
        std::thread::scope(|s| {
            let x = s.spawn(|| parse(repo, &a, skip.then_some(&sb), part));
            let y = parse(repo, &b, skip.then_some(&sa), part);
            let x = x
                .join()
                .map_err(|_| Error::Invalid(format!("{path}: the comparison failed")))?;
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
                out.path = path.to_string();
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

/// Parses `file`; rows inside a chunk of `shared` are only counted in that
/// chunk's digest (every row is kept when `shared` is `None`).
fn parse(
    repo: &IndexedRepository,
    file: &SrcFile,
    shared: Option<&HashSet<BlobId>>,
    part: Part,
) -> Result<Side> {
    let mut cx = Ctx {
        repo,
        progress: &NoProgress,
        bytes_read: 0,
    };
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
            // Keys are for showing: a very long one is cut.
            let shown = &k[..k.len().min(usize::from(u16::MAX))];
            let (Ok(key_at), Ok(seq)) = (u32::try_from(side.keys.len()), u32::try_from(seq)) else {
                return Err(Error::Invalid(format!(
                    "{}: too many rows to compare record by record",
                    file.path
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
        }
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
    use crate::commands::backup::{backup, BackupOptions};
    use crate::testutil::{csv_row_changes as reference, small_chunk_repo};

    fn snap(repo: &IndexedRepository, dir: &std::path::Path, table: &[u8]) -> BlobId {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("t.csv"), table).unwrap();
        backup(
            repo,
            &BackupOptions {
                paths: vec![dir.to_path_buf()],
                account: "acme".into(),
                ..BackupOptions::default()
            },
            &NoProgress,
        )
        .unwrap()
        .snapshot
        .tree
    }

    fn row(id: u64, qty: u64) -> String {
        format!("{id},product {id} of a long enough name,{qty},\"note, with comma\"\n")
    }

    #[test]
    fn rows_added_removed_changed_and_moved() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = small_chunk_repo(&tmp.path().join("cache")).unwrap();
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
        let p = table_diff_within(&repo, &old, &new, "t.csv", 300).unwrap();
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
                let d = table_diff_within(&repo, &old, &new, "t.csv", budget).unwrap();
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

    #[test]
    fn tables_are_csv_files() {
        assert!(is_table("orders.csv"));
        assert!(is_table("a/B.CSV"));
        assert!(!is_table("csv"));
        assert!(!is_table("settings.json"));
    }
}
