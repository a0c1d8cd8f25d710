//! The local index: a RocksDB cache mapping blob id to its place in a pack
//! (format-spec.md §12 "Local cache"). The repository is the truth; this is
//! rebuilt from index files, or from pack trailers by `repair index`.
//!
//! Keys: `b` ‖ blob id → pack id [32] ‖ kind u8 ‖ offset u32 ‖ length u32 ‖
//! raw length u32 [‖ base id [32] ‖ depth u8 for a delta, kind byte 3]
//! (the blob's canonical copy); `P` ‖ pack id ‖ blob id → the
//! same value (every blob of every pack, for iterating by pack); `p` ‖ pack
//! id → pack length u64; `i` ‖ index file name → empty (the index files
//! already absorbed); `e` → epoch; `v` ‖ root tree id → epoch (the tree's
//! chunks were all usable then); `m` ‖ "repo" → repository id.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{RwLock, RwLockReadGuard};

use rocksdb::{Options, WriteBatch, DB};

use crate::error::{Error, Result};
use crate::format::indexfile::PackListing;
use crate::format::pack::{BlobEntry, DeltaRef};
use crate::format::{limits, BlobKind, BLOB_KIND_DELTA};
use crate::id::{BlobId, FileId, PackId, RepoId};

/// Bumped when the cache's key layout changes; a cache with another schema
/// is wiped and rebuilt.
const SCHEMA: &[u8] = b"arca-cache-5";
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
///
/// Opened read-only, which writes nothing to the disk: a command that finds
/// the cache current and changes nothing (a backup of an unchanged source,
/// a restore) skips the log replay, manifest and options files that a
/// writable open writes and syncs. The first write reopens it writable
/// ([`IndexCache::writable`]); the slot's lock file keeps other processes
/// out either way.
pub struct IndexCache {
    /// Reads take it with `read_recursive`, so that a reader never waits
    /// behind the reopen while it holds it already; only the reopen takes it
    /// exclusively. A thread must not start a write while it holds it (in
    /// a `for_each_*` callback).
    db: RwLock<DB>,
    writable: AtomicBool,
    dir: PathBuf,
    /// This process's claim on the slot: an exclusive `flock` on
    /// `index.<slot>.lock`, held as long as the cache is open.
    _slot: File,
    /// Why the database was found damaged at open and made anew (to be
    /// filled from the repository's index files).
    rebuilt: Option<String>,
}

fn blob_key(id: &BlobId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = b'b';
    k[1..].copy_from_slice(&id.0);
    k
}

/// Key of the epoch counter ([`IndexCache::epoch`]).
const EPOCH_KEY: &[u8] = b"e";

fn usable_key(tree: &BlobId) -> [u8; 33] {
    let mut k = [b'v'; 33];
    k[1..].copy_from_slice(&tree.0);
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

/// Whether RocksDB refused to open a database because it is damaged (a
/// corrupt or cut file, a table file gone), rather than because another
/// process holds it or the device is full: a cache in that state is made
/// anew.
fn damaged(e: &rocksdb::Error) -> bool {
    match e.kind() {
        rocksdb::ErrorKind::Corruption => true,
        rocksdb::ErrorKind::IOError => e.as_ref().contains("No such file or directory"),
        _ => false,
    }
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
            let lock = base.join(format!("index.{slot}.lock"));
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock)
                .map_err(|e| Error::io(&lock, e))?;
            // Without the lock file's claim (a file system that refuses
            // `flock`), the database is opened writable at once, and
            // RocksDB's own lock keeps other processes out, as before.
            let claimed =
                match rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                    Ok(()) => true,
                    Err(rustix::io::Errno::WOULDBLOCK) => {
                        last = Some(format!("{} is held by another process", lock.display()));
                        continue;
                    }
                    Err(_) => false,
                };
            let dir = base.join(format!("index.{slot}"));
            match Self::open_dir(&dir, repo, f, claimed) {
                Ok(c) => return Ok(c),
                // RocksDB's own lock: a process that does not take the
                // slot's lock file (an older arca) has the database open.
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
        // RocksDB's own text log: only the lines it writes at open. Debian's
        // build keeps assertions, and once a write to that log failed (a
        // full device) the next line logged, at close, aborted the process
        // instead of letting the error through as exit 15.
        o.set_log_level(rocksdb::LogLevel::Header);
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

    fn open_dir(dir: &Path, repo: &RepoId, slot: File, claimed: bool) -> Result<Self> {
        // Read-only when there is a database and the slot is claimed: a
        // damaged database, or none, is left to the writable open, which
        // creates it or reports why not.
        let ro = if claimed && dir.join("CURRENT").is_file() && !has_log(dir) {
            DB::open_for_read_only(&Self::options()?, dir, false).ok()
        } else {
            None
        };
        let cache = match ro {
            Some(db) => IndexCache {
                db: RwLock::new(db),
                writable: AtomicBool::new(false),
                dir: dir.to_path_buf(),
                _slot: slot,
                rebuilt: None,
            },
            None => {
                let (db, rebuilt) = match Self::open_writable(dir, &Self::options()?) {
                    Ok(db) => (db, None),
                    Err(e) if damaged(&e) => {
                        // A cache, rebuilt from the repository: what it
                        // held is not lost, only the time to read it again.
                        std::fs::remove_dir_all(dir).map_err(|io| Error::io(dir, io))?;
                        (DB::open(&Self::options()?, dir)?, Some(e.into_string()))
                    }
                    Err(e) => return Err(e.into()),
                };
                IndexCache {
                    db: RwLock::new(db),
                    writable: AtomicBool::new(true),
                    dir: dir.to_path_buf(),
                    _slot: slot,
                    rebuilt,
                }
            }
        };
        let ok = {
            let db = cache.db();
            db.get(b"mrepo")?.as_deref() == Some(&repo.0[..])
                && db.get(b"mschema")?.as_deref() == Some(SCHEMA)
        };
        if ok {
            return Ok(cache);
        }
        let rebuilt = cache.rebuilt.clone();
        let mut cache = cache.wipe()?;
        cache.rebuilt = rebuilt;
        {
            let db = cache.db();
            db.put(b"mrepo", repo.0)?;
            db.put(b"mschema", SCHEMA)?;
        }
        Ok(cache)
    }

    /// Opens the database at `dir` for writing, merging its table files
    /// first if they piled up.
    fn open_writable(dir: &Path, options: &Options) -> std::result::Result<DB, rocksdb::Error> {
        let db = DB::open(options, dir)?;
        // Each command that writes leaves a small table file behind (its
        // log, flushed when the next writable open replays it), and RocksDB
        // moves such files down a level without merging them, so they pile
        // up: every open reads each one, and a year of backups would leave
        // thousands. Merged into one when they pass a bound: 64 files
        // cost about 1 ms more at an open than a few, and the merge about
        // 40 ms per 2 MB of cache, once in some 60 writing commands.
        if db.live_files()?.len() > MAX_TABLE_FILES {
            // Forced: the small files sit on the last level, which a
            // manual compaction otherwise leaves as it is.
            let mut c = rocksdb::CompactOptions::default();
            c.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            db.compact_range_opt::<&[u8], &[u8]>(None, None, &c);
        }
        Ok(db)
    }

    /// The database, for reading.
    fn db(&self) -> RwLockReadGuard<'_, DB> {
        self.db.read_recursive()
    }

    /// The database, reopened writable first if it is read-only. Must not
    /// be called while this thread holds [`Self::db`].
    fn writable(&self) -> Result<RwLockReadGuard<'_, DB>> {
        if !self.writable.load(Ordering::Acquire) {
            let mut g = self.db.write();
            if !self.writable.load(Ordering::Acquire) {
                // The read-only instance stays open (and usable) until the
                // writable one is: a failed reopen leaves the cache as it was.
                let rw = Self::open_writable(&self.dir, &Self::options()?)?;
                drop(std::mem::replace(&mut *g, rw));
                self.writable.store(true, Ordering::Release);
            }
        }
        Ok(self.db())
    }

    /// Why the database was found damaged at open and made anew, if it
    /// was: the repository's index files fill it again.
    pub fn rebuilt(&self) -> Option<&str> {
        self.rebuilt.as_deref()
    }

    /// Whether the database is open writable (it is after the first write).
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// Deletes every entry (keeps the repository binding if `repo` given).
    pub fn wipe(self) -> Result<Self> {
        let dir = self.dir.clone();
        // The same open file, so the slot stays claimed throughout.
        let slot = self._slot.try_clone().map_err(|e| Error::io(&dir, e))?;
        // Nothing worth flushing: it is destroyed next.
        self.writable.store(false, Ordering::Release);
        drop(self);
        DB::destroy(&Options::default(), &dir)?;
        let db = DB::open(&Self::options()?, &dir)?;
        Ok(IndexCache {
            db: RwLock::new(db),
            writable: AtomicBool::new(true),
            dir,
            _slot: slot,
            rebuilt: None,
        })
    }

    /// Removes every blob, pack and index-file entry, keeping the binding.
    pub fn clear(&self) -> Result<()> {
        let mut b = WriteBatch::default();
        for prefix in [b'b', b'p', b'i', b'P', b'v'] {
            b.delete_range([prefix], [prefix + 1]);
        }
        b.put(EPOCH_KEY, (self.epoch()? + 1).to_le_bytes());
        self.writable()?.write(b)?;
        Ok(())
    }

    /// The cache's epoch: it grows whenever an entry is removed or a blob's
    /// canonical copy changes, the two things that can make a blob listed
    /// before unusable now (format-spec.md §12).
    pub fn epoch(&self) -> Result<u64> {
        epoch_in(&self.db())
    }
    /// Records that every chunk under root tree `tree` was usable (listed,
    /// with its delta chain) at `epoch`. Writes nothing when it is marked so
    /// already (a backup where nothing changed keeps its parent's tree).
    pub fn mark_usable(&self, tree: &BlobId, epoch: u64) -> Result<()> {
        if self.usable_at(tree)? == Some(epoch) {
            return Ok(());
        }
        self.writable()?
            .put(usable_key(tree), epoch.to_le_bytes())?;
        Ok(())
    }

    fn usable_at(&self, tree: &BlobId) -> Result<Option<u64>> {
        Ok(self
            .db()
            .get_pinned(usable_key(tree))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_le_bytes)))
    }

    /// Whether every chunk under root tree `tree` is known usable: it was
    /// marked so in the current epoch.
    pub fn is_usable(&self, tree: &BlobId) -> Result<bool> {
        let epoch = self.epoch()?;
        Ok(self.usable_at(tree)? == Some(epoch))
    }

    /// The directory of this cache instance.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `id` is stored, if the cache knows it.
    pub fn get(&self, id: &BlobId) -> Result<Option<Location>> {
        get_in(&self.db(), id)
    }

    /// True when the cache knows `id`.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let k = blob_key(id);
        let db = self.db();
        if !db.key_may_exist(k) {
            return Ok(false);
        }
        let found = db.get_pinned(k)?.is_some();
        Ok(found)
    }

    /// The length of pack `id`, if the cache knows it.
    pub fn pack_length(&self, id: &PackId) -> Result<Option<u64>> {
        match self.db().get_pinned(pack_key(id))? {
            Some(v) => Ok(Some(decode_pack(&pack_key(id), &v)?.1)),
            None => Ok(None),
        }
    }

    /// True when the cache knows pack `id`.
    pub fn has_pack(&self, id: &PackId) -> Result<bool> {
        Ok(self.db().get_pinned(pack_key(id))?.is_some())
    }

    /// Records the packs of one index file, then the file as absorbed. The
    /// entries go in batches of bounded size (a write batch is held whole
    /// in memory and in the memtable); the absorbed marker goes last, so a
    /// process stopped half way absorbs the file again, which is harmless.
    pub fn add_index_file(&self, name: &str, packs: &[PackListing]) -> Result<()> {
        let db = self.writable()?;
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
                let old = if db.key_may_exist(blob_key(&e.id)) {
                    get_in(&db, &e.id)?
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
                            b.put(EPOCH_KEY, (epoch_in(&db)? + 1).to_le_bytes());
                        }
                    }
                    b.put(blob_key(&e.id), &v);
                }
                b.put(pack_blob_key(&p.id, &e.id), &v);
                n += 1;
                if n % WRITE_BATCH_BLOBS == 0 {
                    db.write(std::mem::take(&mut b))?;
                }
            }
        }
        let mut k = vec![b'i'];
        k.extend_from_slice(name.as_bytes());
        b.put(k, []);
        db.write(b)?;
        Ok(())
    }

    /// Names of the index files absorbed so far.
    pub fn seen_index_files(&self) -> Result<HashSet<String>> {
        let mut out = HashSet::new();
        for kv in self.db().prefix_iterator(b"i") {
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
        for kv in self.db().prefix_iterator(b"p") {
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
        let db = self.db();
        for kv in db.prefix_iterator(b"p") {
            let (k, v) = kv?;
            if k.first() != Some(&b'p') {
                break;
            }
            let (pack, length) = decode_pack(&k, &v)?;
            let blobs = pack_blobs_in(&db, &pack)?;
            f(pack, length, blobs)?;
        }
        Ok(())
    }

    /// Calls `f` with every pack and its length, without its blobs.
    pub fn for_each_pack_length(&self, mut f: impl FnMut(PackId, u64) -> Result<()>) -> Result<()> {
        for kv in self.db().prefix_iterator(b"p") {
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
        pack_blobs_in(&self.db(), pack)
    }

    /// Calls `f` with every known blob location.
    pub fn for_each_blob(&self, mut f: impl FnMut(Location) -> Result<()>) -> Result<()> {
        for kv in self.db().prefix_iterator(b"b") {
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

impl Drop for IndexCache {
    /// A writable cache leaves its writes in table files, not in its log:
    /// a read-only open replays the whole log every time (nothing flushes
    /// it there), which for a cache just rebuilt from the index files is
    /// megabytes. Best effort: a log left by a failed flush (or a crash) is
    /// replayed, then flushed by the next writable open.
    fn drop(&mut self) {
        if self.writable.load(Ordering::Acquire) {
            let _ = self.db.get_mut().flush();
        }
    }
}

/// Whether the database at `dir` has writes in a log (`*.log`, not yet in
/// table files): left by a process that stopped before it flushed them.
/// A read-only open would replay it every time; a writable one flushes it.
fn has_log(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |rd| {
        rd.flatten().any(|e| {
            e.file_name().as_encoded_bytes().ends_with(b".log")
                && e.metadata().map_or(true, |m| m.len() > 0)
        })
    })
}

/// The epoch recorded in `db` (see [`IndexCache::epoch`]).
fn epoch_in(db: &DB) -> Result<u64> {
    Ok(match db.get_pinned(EPOCH_KEY)? {
        Some(v) => u64::from_le_bytes(
            v.as_ref()
                .try_into()
                .map_err(|_| Error::corrupt("index cache", "epoch is not 8 bytes"))?,
        ),
        None => 0,
    })
}

/// Where `db` says blob `id` is stored.
fn get_in(db: &DB, id: &BlobId) -> Result<Option<Location>> {
    match db.get_pinned(blob_key(id))? {
        Some(v) => Ok(Some(decode_location(id, &v)?)),
        None => Ok(None),
    }
}

/// Every blob entry of one pack in `db`, in offset order.
fn pack_blobs_in(db: &DB, pack: &PackId) -> Result<Vec<BlobEntry>> {
    let mut prefix = vec![b'P'];
    prefix.extend_from_slice(&pack.0);
    let mut out = Vec::new();
    for kv in db.prefix_iterator(&prefix) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_table_files_left_by_each_command_do_not_pile_up() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId([1; 32]);
        let files = |c: &IndexCache| c.db().live_files().unwrap().len();
        let mut most = 0;
        for i in 0..200u8 {
            // One command: open, record a snapshot, close.
            let c = IndexCache::open(dir.path(), &repo).unwrap();
            most = most.max(files(&c));
            c.mark_usable(&BlobId([i; 32]), c.epoch().unwrap()).unwrap();
        }
        let c = IndexCache::open(dir.path(), &repo).unwrap();
        assert!(most <= MAX_TABLE_FILES + 1, "{most} table files at an open");
        for i in 0..200u8 {
            assert!(c.is_usable(&BlobId([i; 32])).unwrap());
        }
    }

    /// A cache RocksDB cannot open because it is damaged is made anew
    /// (empty, bound to the repository, saying why).
    #[test]
    fn a_damaged_cache_is_made_anew_and_says_why() {
        type Damage = fn(&Path);
        let damages: [(&str, Damage); 4] = [
            ("CURRENT garbled", |d| {
                std::fs::write(d.join("CURRENT"), "junk\n").unwrap()
            }),
            ("CURRENT gone", |d| {
                std::fs::remove_file(d.join("CURRENT")).unwrap()
            }),
            ("table files cut", |d| {
                for f in std::fs::read_dir(d).unwrap() {
                    let p = f.unwrap().path();
                    if p.extension().is_some_and(|x| x == "sst") {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&p)
                            .unwrap()
                            .set_len(100)
                            .unwrap();
                    }
                }
            }),
            ("manifest cut", |d| {
                for f in std::fs::read_dir(d).unwrap() {
                    let p = f.unwrap().path();
                    if p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("MANIFEST-")
                    {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&p)
                            .unwrap()
                            .set_len(10)
                            .unwrap();
                    }
                }
            }),
        ];
        let repo = RepoId([1; 32]);
        let mark = BlobId([7; 32]);
        for (what, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            {
                let c = IndexCache::open(dir.path(), &repo).unwrap();
                assert!(c.rebuilt().is_none());
                c.mark_usable(&mark, c.epoch().unwrap()).unwrap();
                // Flushed into a table file, with a log left too.
                c.writable().unwrap().flush().unwrap();
                c.mark_usable(&BlobId([8; 32]), c.epoch().unwrap()).unwrap();
            }
            let slot = dir.path().join(repo.to_hex()).join("index.0");
            damage(&slot);
            let c = IndexCache::open(dir.path(), &repo).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(c.rebuilt().is_some(), "{what}: opened as it was");
            assert!(!c.is_usable(&mark).unwrap(), "{what}: entries survived");
            drop(c);
            // Reopened sound: nothing to say.
            let c = IndexCache::open(dir.path(), &repo).unwrap();
            assert!(c.rebuilt().is_none(), "{what}");
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

    /// Names and sizes of the files in `dir`.
    fn listing(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    fn pack_of(p: u8, first_blob: u8, n: u8) -> PackListing {
        PackListing {
            id: FileId([p; 32]),
            length: 100 * u64::from(n),
            blobs: (0..n)
                .map(|i| BlobEntry {
                    kind: BlobKind::Data,
                    id: BlobId([first_blob.wrapping_add(i); 32]),
                    offset: 8 + 100 * u32::from(i),
                    length: 100,
                    raw_length: 60,
                    delta: None,
                })
                .collect(),
        }
    }

    #[test]
    fn an_open_that_only_reads_writes_nothing_and_the_first_write_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId([1; 32]);
        {
            let c = IndexCache::open(dir.path(), &repo).unwrap();
            assert!(c.is_writable(), "a new cache is created writable");
            c.add_index_file("one", &[pack_of(3, 10, 5)]).unwrap();
            c.mark_usable(&BlobId([7; 32]), c.epoch().unwrap()).unwrap();
        }
        let db_dir = dir.path().join(repo.to_hex()).join("index.0");
        // Closed writable: its writes are in table files, its log empty.
        assert!(!has_log(&db_dir));
        let before = listing(&db_dir);
        {
            let c = IndexCache::open(dir.path(), &repo).unwrap();
            assert!(!c.is_writable());
            assert_eq!(c.dir(), db_dir);
            assert!(c.get(&BlobId([12; 32])).unwrap().is_some());
            assert!(c.is_usable(&BlobId([7; 32])).unwrap());
            // Marking what is marked already is no write.
            c.mark_usable(&BlobId([7; 32]), c.epoch().unwrap()).unwrap();
            assert!(!c.is_writable());
        }
        assert_eq!(listing(&db_dir), before, "a read-only open changed files");

        // The first write reopens it writable, and what was read before
        // and written after are both there, then and at the next open.
        let c = IndexCache::open(dir.path(), &repo).unwrap();
        assert!(!c.is_writable());
        c.add_index_file("two", &[pack_of(4, 50, 5)]).unwrap();
        assert!(c.is_writable());
        for b in [10u8, 14, 50, 54] {
            assert!(c.contains(&BlobId([b; 32])).unwrap(), "blob {b}");
        }
        drop(c);
        let c = IndexCache::open(dir.path(), &repo).unwrap();
        assert!(!c.is_writable());
        assert_eq!(c.seen_index_files().unwrap().len(), 2);
        assert_eq!(c.packs().unwrap().len(), 2);
    }

    #[test]
    fn a_log_left_unflushed_makes_the_next_open_writable() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId([1; 32]);
        let c = IndexCache::open(dir.path(), &repo).unwrap();
        c.add_index_file("one", &[pack_of(3, 10, 5)]).unwrap();
        // As if the process had died: no flush at close.
        c.writable.store(false, Ordering::Release);
        drop(c);
        let db_dir = dir.path().join(repo.to_hex()).join("index.0");
        assert!(has_log(&db_dir));
        let c = IndexCache::open(dir.path(), &repo).unwrap();
        assert!(
            c.is_writable(),
            "replayed and flushed, not replayed read-only"
        );
        assert!(c.contains(&BlobId([11; 32])).unwrap());
        drop(c);
        assert!(!has_log(&db_dir));
    }

    #[test]
    fn readers_on_many_threads_see_the_cache_through_the_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId([1; 32]);
        IndexCache::open(dir.path(), &repo)
            .unwrap()
            .add_index_file("one", &[pack_of(3, 0, 50)])
            .unwrap();
        let c = IndexCache::open(dir.path(), &repo).unwrap();
        assert!(!c.is_writable());
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut reads = 0u64;
                        while !stop.load(Ordering::Relaxed) || reads < 1000 {
                            for b in 0..50u8 {
                                assert!(c.get(&BlobId([b; 32])).unwrap().is_some());
                                // Iteration holds the database meanwhile.
                                if b == 0 {
                                    c.for_each_pack(|_, _, blobs| {
                                        assert!(!blobs.is_empty());
                                        assert!(c.contains(&blobs[0].id).unwrap());
                                        Ok(())
                                    })
                                    .unwrap();
                                }
                                reads += 1;
                            }
                        }
                        reads
                    })
                })
                .collect();
            for i in 0..20u8 {
                c.add_index_file(&format!("more-{i}"), &[pack_of(10 + i, 100 + i, 1)])
                    .unwrap();
            }
            stop.store(true, Ordering::Relaxed);
            for r in readers {
                assert!(r.join().unwrap() >= 1000);
            }
        });
        assert!(c.is_writable());
        assert_eq!(c.packs().unwrap().len(), 21);
    }

    #[test]
    fn a_slot_is_held_by_its_lock_file_until_the_cache_closes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = RepoId([1; 32]);
        IndexCache::open(dir.path(), &repo).unwrap();
        // Read-only opens take no RocksDB lock: the slot's lock file keeps
        // a second instance out of it all the same.
        let a = IndexCache::open(dir.path(), &repo).unwrap();
        assert!(!a.is_writable());
        let b = IndexCache::open(dir.path(), &repo).unwrap();
        assert!(a.dir().ends_with("index.0"));
        assert!(b.dir().ends_with("index.1"));
        drop(a);
        let c = IndexCache::open(dir.path(), &repo).unwrap();
        assert!(c.dir().ends_with("index.0"));
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
        let snap = BlobId([7; 32]);
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
