//! A disk-backed set of blob ids (and per-pack notes) for operations that
//! must not hold a repository-sized map in memory: prune marks every live
//! blob here. It is a temporary RocksDB under the cache directory, removed
//! when dropped. Memory stays bounded by RocksDB's write buffer and the
//! caller's batch, whatever the repository's size.

use std::path::{Path, PathBuf};

use rocksdb::{Options, WriteBatch, DB};

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};

/// Ids are written in batches of this many.
const BATCH: usize = 16 * 1024;

/// A temporary on-disk set.
pub struct MarkSet {
    db: Option<DB>,
    dir: PathBuf,
    batch: WriteBatch,
    pending: usize,
}

fn key(prefix: u8, id: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = prefix;
    k[1..].copy_from_slice(id);
    k
}

impl MarkSet {
    /// Creates an empty set in a new directory under `root`, first removing
    /// sets left there by processes that no longer run (a killed prune).
    pub fn create(root: &Path) -> Result<Self> {
        remove_abandoned(root);
        let mut rnd = [0u8; 8];
        crate::crypto::fill_random(&mut rnd)?;
        let dir = root.join(format!("mark-{}-{}", std::process::id(), hex::encode(rnd)));
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        let mut o = Options::default();
        o.create_if_missing(true);
        o.set_write_buffer_size(4 << 20);
        o.set_max_write_buffer_number(2);
        let mut t = rocksdb::BlockBasedOptions::default();
        t.set_block_cache(&rocksdb::Cache::new_lru_cache(2 << 20)?);
        t.set_bloom_filter(10.0, false);
        o.set_block_based_table_factory(&t);
        o.set_max_open_files(64);
        o.set_keep_log_file_num(1);
        // A scratch set: losing it in a crash only means marking again.
        o.set_use_fsync(false);
        let db = DB::open(&o, &dir)?;
        Ok(MarkSet {
            db: Some(db),
            dir,
            batch: WriteBatch::default(),
            pending: 0,
        })
    }

    fn db(&self) -> Result<&DB> {
        self.db
            .as_ref()
            .ok_or_else(|| Error::Cache("mark set closed".into()))
    }

    /// Adds a blob id (batched; visible to `contains` after `flush`).
    pub fn insert(&mut self, id: &BlobId) -> Result<()> {
        self.batch.put(key(b'm', &id.0), []);
        self.pending += 1;
        if self.pending >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Adds a blob id at once and says whether it was new.
    pub fn insert_now(&mut self, id: &BlobId) -> Result<bool> {
        let k = key(b'm', &id.0);
        if self.db()?.get_pinned(k)?.is_some() {
            return Ok(false);
        }
        self.db()?.put(k, [])?;
        Ok(true)
    }

    /// Writes pending inserts.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending > 0 {
            let b = std::mem::take(&mut self.batch);
            self.db()?.write_without_wal(b)?;
            self.pending = 0;
        }
        Ok(())
    }

    /// True when `id` was inserted (and flushed).
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        Ok(self.db()?.get_pinned(key(b'm', &id.0))?.is_some())
    }

    /// Stores a small note about a pack (prune's decision).
    pub fn set_pack_note(&self, pack: &PackId, note: &[u8]) -> Result<()> {
        self.db()?.put(key(b'd', &pack.0), note)?;
        Ok(())
    }

    /// Calls `f` with every pack note, in pack id order.
    pub fn for_each_pack_note(&self, mut f: impl FnMut(PackId, &[u8]) -> Result<()>) -> Result<()> {
        for kv in self.db()?.prefix_iterator(b"d") {
            let (k, v) = kv?;
            if k.first() != Some(&b'd') {
                break;
            }
            if k.len() != 33 {
                return Err(Error::Cache("malformed pack note".into()));
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[1..]);
            f(crate::id::FileId(id), &v)?;
        }
        Ok(())
    }
}

/// Removes `mark-<pid>-*` directories whose process is gone.
fn remove_abandoned(root: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("mark-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !crate::lock::process_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for MarkSet {
    fn drop(&mut self) {
        drop(self.db.take());
        let _ = DB::destroy(&Options::default(), &self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_notes_and_cleanup() {
        let root = tempfile::tempdir().unwrap();
        let dir;
        {
            let mut m = MarkSet::create(root.path()).unwrap();
            dir = m.dir.clone();
            for i in 0..40_000u32 {
                let mut b = [0u8; 32];
                b[..4].copy_from_slice(&i.to_le_bytes());
                m.insert(&BlobId(b)).unwrap();
            }
            m.flush().unwrap();
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&39_999u32.to_le_bytes());
            assert!(m.contains(&BlobId(b)).unwrap());
            assert!(!m.contains(&BlobId([0xff; 32])).unwrap());
            assert!(m.insert_now(&BlobId([0xfe; 32])).unwrap());
            assert!(!m.insert_now(&BlobId([0xfe; 32])).unwrap());
            m.set_pack_note(&crate::id::FileId([1; 32]), b"keep")
                .unwrap();
            let mut n = 0;
            m.for_each_pack_note(|_, v| {
                assert_eq!(v, b"keep");
                n += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(n, 1);
        }
        assert!(!dir.exists(), "dropped set removes its directory");
        // A set abandoned by a dead process is removed by the next create.
        let stale = root.path().join(format!("mark-{}-00", u32::MAX - 3));
        std::fs::create_dir_all(&stale).unwrap();
        let _m = MarkSet::create(root.path()).unwrap();
        assert!(!stale.exists());
    }
}
