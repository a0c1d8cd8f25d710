//! The local index: a RocksDB cache mapping blob id to its place in a pack
//! (format-spec.md §12 "Local cache"). The repository is the truth; this is
//! rebuilt from index files, or from pack trailers by `repair index`.
//!
//! Keys: `b` ‖ blob id → pack id [32] ‖ kind u8 ‖ offset u32 ‖ length u32 ‖
//! raw length u32 [‖ base id [32] ‖ depth u8 for a delta, kind byte 3]
//! (the blob's canonical copy); `P` ‖ pack id ‖ blob id → the
//! same value (every blob of every pack, for iterating by pack); `p` ‖ pack
//! id → pack length u64; `i` ‖ index file name → empty (the index files
//! already absorbed); `m` ‖ "repo" → repository id.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rocksdb::{Options, WriteBatch, DB};

use crate::error::{Error, Result};
use crate::format::indexfile::PackListing;
use crate::format::pack::{BlobEntry, DeltaRef};
use crate::format::{limits, BlobKind, BLOB_KIND_DELTA};
use crate::id::{BlobId, FileId, PackId, RepoId, SnapshotId};

/// Bumped when the cache's key layout changes; a cache with another schema
/// is wiped and rebuilt.
const SCHEMA: &[u8] = b"arca-cache-4";
/// Blob entries per RocksDB write batch when absorbing an index file: about
/// 1.6 MB of batch, under the 4 MiB memtable.
const WRITE_BATCH_BLOBS: usize = 8192;
/// How many cache instances may be open at once (one per concurrent process
/// on this host; RocksDB allows one writer per directory).
const SLOTS: usize = 8;

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// The pack.
    pub pack: PackId,
    /// The blob's entry in that pack.
    pub entry: BlobEntry,
}

/// An open cache instance.
pub struct IndexCache {
    db: DB,
    dir: PathBuf,
}

fn blob_key(id: &BlobId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = b'b';
    k[1..].copy_from_slice(&id.0);
    k
}

/// Key of the epoch counter ([`IndexCache::epoch`]).
const EPOCH_KEY: &[u8] = b"e";

fn usable_key(id: &SnapshotId) -> [u8; 33] {
    let mut k = [b'v'; 33];
    k[1..].copy_from_slice(id.as_bytes());
    k
}

fn pack_key(id: &PackId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = b'p';
    k[1..].copy_from_slice(&id.0);
    k
}

fn pack_blob_key(pack: &PackId, id: &BlobId) -> [u8; 65] {
    let mut k = [0u8; 65];
    k[0] = b'P';
    k[1..33].copy_from_slice(&pack.0);
    k[33..].copy_from_slice(&id.0);
    k
}

fn encode_location(pack: &PackId, e: &BlobEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(78);
    v.extend_from_slice(&pack.0);
    v.push(e.kind_byte());
    v.extend_from_slice(&e.offset.to_le_bytes());
    v.extend_from_slice(&e.length.to_le_bytes());
    v.extend_from_slice(&e.raw_length.to_le_bytes());
    if let Some(d) = &e.delta {
        v.extend_from_slice(&d.base.0);
        v.push(d.depth);
    }
    v
}

fn decode_location(id: &BlobId, v: &[u8]) -> Result<Location> {
    let delta_entry = v.get(32) == Some(&BLOB_KIND_DELTA);
    if v.len() != if delta_entry { 78 } else { 45 } {
        return Err(Error::Cache(format!(
            "entry for blob {id} has length {}",
            v.len()
        )));
    }
    let u = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    let mut p = [0u8; 32];
    p.copy_from_slice(&v[..32]);
    let (kind, delta) = if delta_entry {
        let mut b = [0u8; 32];
        b.copy_from_slice(&v[45..77]);
        let depth = v[77];
        if depth == 0 || depth > limits::MAX_DELTA_DEPTH {
            return Err(Error::Cache(format!("blob {id}: delta depth {depth}")));
        }
        (
            BlobKind::Data,
            Some(DeltaRef {
                base: BlobId(b),
                depth,
            }),
        )
    } else {
        let kind = BlobKind::from_u8(v[32]).map_err(|e| Error::Cache(e.to_string()))?;
        (kind, None)
    };
    Ok(Location {
        pack: FileId(p),
        entry: BlobEntry {
            kind,
            id: *id,
            offset: u(33),
            length: u(37),
            raw_length: u(41),
            delta,
        },
    })
}

fn decode_pack(k: &[u8], v: &[u8]) -> Result<(PackId, u64)> {
    if k.len() != 33 || v.len() != 8 {
        return Err(Error::Cache("malformed pack entry".into()));
    }
    let mut id = [0u8; 32];
    id.copy_from_slice(&k[1..]);
    let mut l = [0u8; 8];
    l.copy_from_slice(v);
    Ok((FileId(id), u64::from_le_bytes(l)))
}

/// Table files the cache may have at open before they are merged.
const MAX_TABLE_FILES: usize = 64;

impl IndexCache {
    /// Opens the first free cache slot for repository `repo` under `root`,
    /// wiping a slot that belongs to another repository or schema.
    pub fn open(root: &Path, repo: &RepoId) -> Result<Self> {
        let base = root.join(repo.to_hex());
        std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
        let mut last = None;
        for slot in 0..SLOTS {
            let dir = base.join(format!("index.{slot}"));
            match Self::open_dir(&dir, repo) {
                Ok(c) => return Ok(c),
                Err(Error::Cache(m)) if m.to_lowercase().contains("lock") => last = Some(m),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Cache(format!(
            "all {SLOTS} cache slots under {} are in use: {}",
            base.display(),
            last.unwrap_or_default()
        )))
    }

    fn options() -> Result<Options> {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_max_open_files(256);
        o.set_keep_log_file_num(2);
        // Memory caps, whatever the repository's size: a 4 MiB memtable
        // (entries are ~80 bytes: 50,000 per flush) and a 4 MiB block cache.
        o.set_write_buffer_size(4 << 20);
        o.set_max_write_buffer_number(2);
        let mut t = rocksdb::BlockBasedOptions::default();
        t.set_block_cache(&rocksdb::Cache::new_lru_cache(4 << 20)?);
        t.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&t);
        Ok(o)
    }

    fn open_dir(dir: &Path, repo: &RepoId) -> Result<Self> {
        let db = DB::open(&Self::options()?, dir)?;
        // Each command that writes leaves a small table file behind (its
        // log, flushed when the next command opens the cache), and RocksDB
        // moves such files down a level without merging them, so they pile
        // up: every open reads each one, and a year of backups would leave
        // thousands. Merged into one when they pass a bound: 64 files
        // cost about 1 ms more at an open than a few, and the merge about
        // 40 ms per 2 MB of cache, once in some 60 commands.
        if db.live_files()?.len() > MAX_TABLE_FILES {
            // Forced: the small files sit on the last level, which a
            // manual compaction otherwise leaves as it is.
            let mut c = rocksdb::CompactOptions::default();
            c.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            db.compact_range_opt::<&[u8], &[u8]>(None, None, &c);
        }
        let ok = db.get(b"mrepo")?.as_deref() == Some(&repo.0[..])
            && db.get(b"mschema")?.as_deref() == Some(SCHEMA);
        let cache = IndexCache {
            db,
            dir: dir.to_path_buf(),
        };
        if ok {
            return Ok(cache);
        }
        let cache = cache.wipe()?;
        cache.db.put(b"mrepo", repo.0)?;
        cache.db.put(b"mschema", SCHEMA)?;
        Ok(cache)
    }

    /// Deletes every entry (keeps the repository binding if `repo` given).
    pub fn wipe(self) -> Result<Self> {
        let dir = self.dir.clone();
        drop(self.db);
        DB::destroy(&Options::default(), &dir)?;
        let db = DB::open(&Self::options()?, &dir)?;
        Ok(IndexCache { db, dir })
    }

    /// Removes every blob, pack and index-file entry, keeping the binding.
    pub fn clear(&self) -> Result<()> {
        let mut b = WriteBatch::default();
        for prefix in [b'b', b'p', b'i', b'P', b'v'] {
            b.delete_range([prefix], [prefix + 1]);
        }
        b.put(EPOCH_KEY, (self.epoch()? + 1).to_le_bytes());
        self.db.write(b)?;
        Ok(())
    }

    /// The cache's epoch: it grows whenever an entry is removed or a blob's
    /// canonical copy changes, the two things that can make a blob listed
    /// before unusable now (format-spec.md §12).
    pub fn epoch(&self) -> Result<u64> {
        Ok(match self.db.get_pinned(EPOCH_KEY)? {
            Some(v) => u64::from_le_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| Error::corrupt("index cache", "epoch is not 8 bytes"))?,
            ),
            None => 0,
        })
    }

    /// Records that every chunk of snapshot `id` was usable (listed, with
    /// its delta chain) at `epoch`.
    pub fn mark_usable(&self, id: &SnapshotId, epoch: u64) -> Result<()> {
        self.db.put(usable_key(id), epoch.to_le_bytes())?;
        Ok(())
    }

    /// Whether every chunk of snapshot `id` is known usable: it was marked
    /// so in the current epoch.
    pub fn is_usable(&self, id: &SnapshotId) -> Result<bool> {
        let epoch = self.epoch()?;
        Ok(self
            .db
            .get_pinned(usable_key(id))?
            .is_some_and(|v| v.as_ref() == epoch.to_le_bytes()))
    }

    /// The directory of this cache instance.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `id` is stored, if the cache knows it.
    pub fn get(&self, id: &BlobId) -> Result<Option<Location>> {
        match self.db.get_pinned(blob_key(id))? {
            Some(v) => Ok(Some(decode_location(id, &v)?)),
            None => Ok(None),
        }
    }

    /// True when the cache knows `id`.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let k = blob_key(id);
        if !self.db.key_may_exist(k) {
            return Ok(false);
        }
        Ok(self.db.get_pinned(k)?.is_some())
    }

    /// The length of pack `id`, if the cache knows it.
    pub fn pack_length(&self, id: &PackId) -> Result<Option<u64>> {
        match self.db.get_pinned(pack_key(id))? {
            Some(v) => Ok(Some(decode_pack(&pack_key(id), &v)?.1)),
            None => Ok(None),
        }
    }

    /// True when the cache knows pack `id`.
    pub fn has_pack(&self, id: &PackId) -> Result<bool> {
        Ok(self.db.get_pinned(pack_key(id))?.is_some())
    }

    /// Records the packs of one index file, then the file as absorbed. The
    /// entries go in batches of bounded size (a write batch is held whole
    /// in memory and in the memtable); the absorbed marker goes last, so a
    /// process stopped half way absorbs the file again, which is harmless.
    pub fn add_index_file(&self, name: &str, packs: &[PackListing]) -> Result<()> {
        let mut b = WriteBatch::default();
        let mut n = 0usize;
        let mut replaced = false;
        for p in packs {
            b.put(pack_key(&p.id), p.length.to_le_bytes());
            for e in &p.blobs {
                let v = encode_location(&p.id, e);
                // The canonical copy of a blob stored twice is the one with
                // the shorter chain: a whole copy never depends on a base
                // that an interrupted prune may have deleted.
                let old = if self.db.key_may_exist(blob_key(&e.id)) {
                    self.get(&e.id)?
                } else {
                    None
                };
                let keep_old = e.delta.is_some()
                    && old
                        .as_ref()
                        .is_some_and(|old| old.entry.chain_depth() < e.chain_depth());
                if !keep_old {
                    if old.is_some_and(|o| encode_location(&o.pack, &o.entry) != v) {
                        // Another copy becomes canonical: deltas built on
                        // this blob may no longer find their base at the
                        // depth they expect. The epoch grows in the same
                        // batch as the first such change, never after it.
                        if !replaced {
                            replaced = true;
                            b.put(EPOCH_KEY, (self.epoch()? + 1).to_le_bytes());
                        }
                    }
                    b.put(blob_key(&e.id), &v);
                }
                b.put(pack_blob_key(&p.id, &e.id), &v);
                n += 1;
                if n % WRITE_BATCH_BLOBS == 0 {
                    self.db.write(std::mem::take(&mut b))?;
                }
            }
        }
        let mut k = vec![b'i'];
        k.extend_from_slice(name.as_bytes());
        b.put(k, []);
        self.db.write(b)?;
        Ok(())
    }

    /// Names of the index files absorbed so far.
    pub fn seen_index_files(&self) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        for kv in self.db.prefix_iterator(b"i") {
            let (k, _) = kv?;
            if k.first() != Some(&b'i') {
                break;
            }
            out.insert(String::from_utf8_lossy(&k[1..]).into_owned());
        }
        Ok(out)
    }

    /// Every known pack and its length.
    pub fn packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut out = Vec::new();
        for kv in self.db.prefix_iterator(b"p") {
            let (k, v) = kv?;
            if k.first() != Some(&b'p') {
                break;
            }
            out.push(decode_pack(&k, &v)?);
        }
        Ok(out)
    }

    /// Calls `f` with every pack (in pack id order) and all its blobs. Holds
    /// one pack's entries in memory at a time.
    pub fn for_each_pack(
        &self,
        mut f: impl FnMut(PackId, u64, Vec<BlobEntry>) -> Result<()>,
    ) -> Result<()> {
        for kv in self.db.prefix_iterator(b"p") {
            let (k, v) = kv?;
            if k.first() != Some(&b'p') {
                break;
            }
            let (pack, length) = decode_pack(&k, &v)?;
            let blobs = self.pack_blobs(&pack)?;
            f(pack, length, blobs)?;
        }
        Ok(())
    }

    /// Calls `f` with every pack and its length, without its blobs.
    pub fn for_each_pack_length(&self, mut f: impl FnMut(PackId, u64) -> Result<()>) -> Result<()> {
        for kv in self.db.prefix_iterator(b"p") {
            let (k, v) = kv?;
            if k.first() != Some(&b'p') {
                break;
            }
            let (pack, length) = decode_pack(&k, &v)?;
            f(pack, length)?;
        }
        Ok(())
    }

    /// Every blob entry of one pack, in offset order.
    pub fn pack_blobs(&self, pack: &PackId) -> Result<Vec<BlobEntry>> {
        let mut prefix = vec![b'P'];
        prefix.extend_from_slice(&pack.0);
        let mut out = Vec::new();
        for kv in self.db.prefix_iterator(&prefix) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            if k.len() != 65 {
                return Err(Error::Cache("malformed pack blob key".into()));
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[33..]);
            out.push(decode_location(&BlobId(id), &v)?.entry);
        }
        out.sort_by_key(|e| e.offset);
        Ok(out)
    }

    /// Calls `f` with every known blob location.
    pub fn for_each_blob(&self, mut f: impl FnMut(Location) -> Result<()>) -> Result<()> {
        for kv in self.db.prefix_iterator(b"b") {
            let (k, v) = kv?;
            if k.first() != Some(&b'b') {
                break;
            }
            if k.len() != 33 {
                return Err(Error::Cache("malformed blob key".into()));
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[1..]);
            f(decode_location(&BlobId(id), &v)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_table_files_left_by_each_command_do_not_pile_up() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId([1; 32]);
        let files = |c: &IndexCache| c.db.live_files().unwrap().len();
        let mut most = 0;
        for i in 0..200u8 {
            // One command: open, record a snapshot, close.
            let c = IndexCache::open(dir.path(), &repo).unwrap();
            most = most.max(files(&c));
            c.mark_usable(&FileId([i; 32]), c.epoch().unwrap()).unwrap();
        }
        let c = IndexCache::open(dir.path(), &repo).unwrap();
        assert!(most <= MAX_TABLE_FILES + 1, "{most} table files at an open");
        for i in 0..200u8 {
            assert!(c.is_usable(&FileId([i; 32])).unwrap());
        }
    }

    #[test]
    fn add_get_and_slots() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId([1; 32]);
        let c = IndexCache::open(dir.path(), &repo).unwrap();
        let e = BlobEntry {
            kind: BlobKind::Data,
            id: BlobId([2; 32]),
            offset: 8,
            length: 100,
            raw_length: 60,
            delta: None,
        };
        let d = BlobEntry {
            id: BlobId([5; 32]),
            offset: 108,
            delta: Some(DeltaRef {
                base: e.id,
                depth: 1,
            }),
            ..e
        };
        let p = PackListing {
            id: FileId([3; 32]),
            length: 500,
            blobs: vec![e, d],
        };
        c.add_index_file("abc", &[p]).unwrap();
        assert_eq!(c.get(&e.id).unwrap().unwrap().entry, e);
        assert_eq!(c.get(&d.id).unwrap().unwrap().entry, d);
        assert!(c.contains(&e.id).unwrap());
        assert!(!c.contains(&BlobId([9; 32])).unwrap());
        assert!(c.seen_index_files().unwrap().contains("abc"));
        assert_eq!(c.packs().unwrap(), vec![(FileId([3; 32]), 500)]);
        assert_eq!(c.pack_blobs(&FileId([3; 32])).unwrap(), vec![e, d]);
        assert!(c.pack_blobs(&FileId([4; 32])).unwrap().is_empty());

        // A second instance while the first is open takes the next slot.
        let c2 = IndexCache::open(dir.path(), &repo).unwrap();
        assert_ne!(c.dir(), c2.dir());

        c.clear().unwrap();
        assert!(c.get(&e.id).unwrap().is_none());
        assert!(c.seen_index_files().unwrap().is_empty());
    }

    #[test]
    fn usable_marks_last_until_a_copy_changes_or_entries_go() {
        let dir = tempfile::tempdir().unwrap();
        let c = IndexCache::open(dir.path(), &RepoId([1; 32])).unwrap();
        let whole = |id: u8, offset: u32| BlobEntry {
            kind: BlobKind::Data,
            id: BlobId([id; 32]),
            offset,
            length: 100,
            raw_length: 60,
            delta: None,
        };
        let pack = |p: u8, blobs: Vec<BlobEntry>| PackListing {
            id: FileId([p; 32]),
            length: 500,
            blobs,
        };
        let snap: SnapshotId = FileId([7; 32]);
        c.add_index_file("one", &[pack(3, vec![whole(2, 8)])])
            .unwrap();
        let e0 = c.epoch().unwrap();
        assert!(!c.is_usable(&snap).unwrap(), "nothing marked yet");
        c.mark_usable(&snap, e0).unwrap();
        assert!(c.is_usable(&snap).unwrap());
        // New blobs, and the same copy listed again, change nothing.
        c.add_index_file("two", &[pack(4, vec![whole(5, 8)])])
            .unwrap();
        c.add_index_file("one-again", &[pack(3, vec![whole(2, 8)])])
            .unwrap();
        assert_eq!(c.epoch().unwrap(), e0);
        assert!(c.is_usable(&snap).unwrap());
        // Another copy of blob 2 becomes canonical: the mark is void.
        c.add_index_file("three", &[pack(6, vec![whole(2, 8)])])
            .unwrap();
        assert!(c.epoch().unwrap() > e0);
        assert!(!c.is_usable(&snap).unwrap());
        // Marked again, then every entry goes: void again.
        let e1 = c.epoch().unwrap();
        c.mark_usable(&snap, e1).unwrap();
        assert!(c.is_usable(&snap).unwrap());
        c.clear().unwrap();
        assert!(c.epoch().unwrap() > e1);
        assert!(!c.is_usable(&snap).unwrap());
        // A mark made in an older epoch does not count.
        c.mark_usable(&snap, e1).unwrap();
        assert!(!c.is_usable(&snap).unwrap());
    }
}
