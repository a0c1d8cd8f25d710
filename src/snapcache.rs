//! A local copy of the repository's snapshot files (format-spec.md §12.2).
//!
//! Listing snapshots (every backup does, to find its parent) read each
//! snapshot file from the repository: one open and read per file on a local
//! disk, a HEAD and a GET per file on S3, so a repository holding many
//! accounts' snapshots made every command pay for all of them. The cache
//! keeps the files as stored (sealed) in one local file; a listing then
//! reads from the repository only the files it has not seen.
//!
//! Nothing here is trusted: each cached file must hash to its name and open
//! with the repository's key, exactly as if read from the repository, or it
//! is read from the repository again. Every operation is best effort: a
//! cache that cannot be read or written costs only the reads it would save.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::format::limits;
use crate::id::{FileId, RepoId, SnapshotId};

/// The cache file's first bytes (§12.2).
pub const MAGIC: &[u8; 8] = b"arcaSNC1";

/// The snapshot cache of one repository.
#[derive(Clone, Debug)]
pub struct SnapshotCache {
    path: PathBuf,
}

impl SnapshotCache {
    /// The cache of repository `repo` under cache root `root`.
    pub fn new(root: &Path, repo: &RepoId) -> Self {
        SnapshotCache {
            path: root.join(repo.to_hex()).join("snapshots"),
        }
    }

    /// The cache file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached files; none when there is no readable cache.
    pub fn load(&self) -> Cached {
        std::fs::read(&self.path)
            .map(Cached::parse)
            .unwrap_or_default()
    }

    /// Replaces the cache with `files` (id, sealed file as stored). Written
    /// to a temporary file and renamed over the old one, so a reader sees
    /// the old cache or the new one, whole; not synced, as a cache lost in a
    /// crash is only read again from the repository.
    pub fn store<'a>(&self, files: impl IntoIterator<Item = (&'a SnapshotId, &'a [u8])>) {
        let _ = self.try_store(files);
    }

    /// Adds `files` at the end of the cache in one write, leaving what is
    /// there as it is: a listing that found only new snapshots writes those,
    /// not the whole cache again. A record cut short by a crash, or two
    /// appends interleaved, end the records a reader takes (each must hash
    /// to its id), and the next listing then rewrites the cache.
    pub fn append<'a>(&self, files: impl IntoIterator<Item = (&'a SnapshotId, &'a [u8])>) {
        let _ = self.try_append(files);
    }

    fn try_append<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a SnapshotId, &'a [u8])>,
    ) -> std::io::Result<()> {
        use std::io::Write;
        let records = encode(files);
        // Without creating: a cache that is gone is written whole next time.
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        f.write_all(&records[MAGIC.len()..])
    }

    fn try_store<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a SnapshotId, &'a [u8])>,
    ) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        // Unique per process and call: concurrent writers rename their own.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".snapshots.{}.{n}.tmp", std::process::id()));
        let r =
            std::fs::write(&tmp, encode(files)).and_then(|()| std::fs::rename(&tmp, &self.path));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    }
}

/// The cache file holding `files`, in the given order (§12.2).
pub fn encode<'a>(files: impl IntoIterator<Item = (&'a SnapshotId, &'a [u8])>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    for (id, bytes) in files {
        // Never larger than a snapshot file may be, so this fits in u32.
        let Ok(len) = u32::try_from(bytes.len()) else {
            continue;
        };
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The files of a cache file, read into memory.
#[derive(Debug, Default)]
pub struct Cached {
    buf: Vec<u8>,
    /// Where each file's bytes are in `buf`.
    at: HashMap<SnapshotId, Range<usize>>,
    /// Records read (more than `at` holds when an id repeats).
    records: usize,
    /// Whether every byte after the magic belonged to a good record.
    whole: bool,
}

impl Cached {
    /// The records of cache file `buf`, up to the first that is cut short,
    /// larger than a snapshot file may be, or whose bytes do not hash to
    /// its id; none without the magic.
    pub fn parse(buf: Vec<u8>) -> Self {
        let mut at = HashMap::new();
        let mut records = 0;
        let mut whole = false;
        if buf.starts_with(MAGIC) {
            let mut pos = MAGIC.len();
            while buf.len() - pos >= 36 {
                let r = &buf[pos..];
                let mut id = [0u8; 32];
                id.copy_from_slice(&r[..32]);
                let len = u32::from_le_bytes([r[32], r[33], r[34], r[35]]) as usize;
                if len as u64 > limits::MAX_SNAPSHOT_FILE || r.len() - 36 < len {
                    break;
                }
                if FileId::of(&r[36..36 + len]) != FileId(id) {
                    break;
                }
                at.insert(FileId(id), pos + 36..pos + 36 + len);
                records += 1;
                pos += 36 + len;
            }
            whole = pos == buf.len();
        }
        Cached {
            buf,
            at,
            records,
            whole,
        }
    }

    /// Whether new records may go at the end: the file read whole, every
    /// record good, no id twice.
    pub fn appendable(&self) -> bool {
        self.whole && self.records == self.at.len()
    }

    /// The cached bytes of file `id`.
    pub fn get(&self, id: &SnapshotId) -> Option<&[u8]> {
        self.at.get(id).map(|r| &self.buf[r.clone()])
    }

    /// How many files are cached.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether no file is cached.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache record's id: the hash of its bytes, as in a repository.
    fn id_of(bytes: &[u8]) -> SnapshotId {
        FileId::of(bytes)
    }

    #[test]
    fn records_round_trip_and_a_cut_file_keeps_its_whole_records() {
        let (fa, fb) = (&b"first"[..], &b"second file"[..]);
        let (a, b) = (id_of(fa), id_of(fb));
        let enc = encode([(&a, fa), (&b, fb)]);
        let all = Cached::parse(enc.clone());
        assert_eq!(all.len(), 2);
        assert!(all.appendable());
        assert_eq!(all.get(&a), Some(fa));
        assert_eq!(all.get(&b), Some(fb));
        assert_eq!(all.get(&id_of(b"third")), None);
        // Cut inside the second record: the first survives, and the file
        // is rewritten rather than appended to.
        let cut = Cached::parse(enc[..enc.len() - 3].to_vec());
        assert_eq!(cut.len(), 1);
        assert_eq!(cut.get(&a), Some(fa));
        assert!(!cut.appendable());
        // A record whose bytes do not hash to its id ends the parse.
        let mut bad = enc.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let p = Cached::parse(bad);
        assert_eq!(p.len(), 1);
        assert!(!p.appendable());
        // An id twice (two processes appending the same file): readable,
        // not appendable.
        let mut twice = enc.clone();
        twice.extend_from_slice(&encode([(&a, fa)])[MAGIC.len()..]);
        let p = Cached::parse(twice);
        assert_eq!(p.len(), 2);
        assert!(!p.appendable());
        // No magic, or another version's: nothing.
        assert!(Cached::parse(enc[8..].to_vec()).is_empty());
        let mut other = enc.clone();
        other[7] = b'9';
        assert!(Cached::parse(other).is_empty());
        // A length over the snapshot file limit stops the parse.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[3u8; 32]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Cached::parse(huge).is_empty());
    }

    #[test]
    fn store_replaces_the_file_append_adds_to_it_and_load_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let c = SnapshotCache::new(dir.path(), &RepoId([7; 32]));
        assert!(c.load().is_empty(), "no file yet");
        let (fx, fy, fz) = (&b"x"[..], &b"y"[..], &b"z"[..]);
        let (x, y, z) = (id_of(fx), id_of(fy), id_of(fz));
        // Appending needs a cache to append to.
        c.append([(&x, fx)]);
        assert!(!c.path().exists());
        c.store([(&x, fx), (&y, fy)]);
        assert_eq!(c.load().len(), 2);
        c.append([(&z, fz)]);
        let now = c.load();
        assert_eq!(now.len(), 3);
        assert!(now.appendable());
        assert_eq!(now.get(&z), Some(fz));
        c.store([(&y, fy)]);
        let now = c.load();
        assert_eq!(now.len(), 1);
        assert_eq!(now.get(&y), Some(fy));
        assert!(c
            .path()
            .starts_with(dir.path().join(RepoId([7; 32]).to_hex())));
        // Only the cache file is left in its directory (no temporary files).
        let names: Vec<_> = std::fs::read_dir(c.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("snapshots")]);
    }
}
