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

    fn try_store<'a>(
        &self,
        files: impl IntoIterator<Item = (&'a SnapshotId, &'a [u8])>,
    ) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        // One writer per process; another process renames its own.
        let tmp = dir.join(format!(".snapshots.{}.tmp", std::process::id()));
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
}

impl Cached {
    /// The records of cache file `buf`, up to the first that is cut short
    /// or larger than a snapshot file may be; none without the magic.
    pub fn parse(buf: Vec<u8>) -> Self {
        let mut at = HashMap::new();
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
                at.insert(FileId(id), pos + 36..pos + 36 + len);
                pos += 36 + len;
            }
        }
        Cached { buf, at }
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

    fn id(b: u8) -> SnapshotId {
        FileId([b; 32])
    }

    #[test]
    fn records_round_trip_and_a_cut_file_keeps_its_whole_records() {
        let (a, b) = (id(1), id(2));
        let enc = encode([(&a, &b"first"[..]), (&b, &b"second file"[..])]);
        let all = Cached::parse(enc.clone());
        assert_eq!(all.len(), 2);
        assert_eq!(all.get(&a), Some(&b"first"[..]));
        assert_eq!(all.get(&b), Some(&b"second file"[..]));
        assert_eq!(all.get(&id(3)), None);
        // Cut inside the second record: the first survives.
        let cut = Cached::parse(enc[..enc.len() - 3].to_vec());
        assert_eq!(cut.len(), 1);
        assert_eq!(cut.get(&a), Some(&b"first"[..]));
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
    fn store_replaces_the_file_and_load_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let c = SnapshotCache::new(dir.path(), &RepoId([7; 32]));
        assert!(c.load().is_empty(), "no file yet");
        let (a, b) = (id(1), id(2));
        c.store([(&a, &b"x"[..]), (&b, &b"y"[..])]);
        assert_eq!(c.load().len(), 2);
        c.store([(&b, &b"y"[..])]);
        let now = c.load();
        assert_eq!(now.len(), 1);
        assert_eq!(now.get(&b), Some(&b"y"[..]));
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
