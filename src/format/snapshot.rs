//! Snapshots (format-spec.md §8): the commit point of a backup.
//!
//! Body (sealed as a file object of type 5): time i64 (unix seconds) ‖
//! nanos u32 ‖ account str ‖ host str ‖ program str ‖ tags (u32 count, str…)
//! ‖ paths (u32 count, str…) ‖ root tree id [32] ‖ has parent u8 ‖ [parent
//! id [32]] ‖ summary (u32 field count ‖ u64 fields…; readers ignore fields
//! past those they know, and default missing ones to 0).

use serde::Serialize;

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::format::limits;
use crate::id::{BlobId, FileId, SnapshotId};

/// What a backup did, recorded in its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Files not in the parent snapshot.
    pub files_new: u64,
    /// Files in the parent whose content was read again and changed.
    pub files_changed: u64,
    /// Files taken from the parent without reading (or read and unchanged).
    pub files_unchanged: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes of blobs new to the repository.
    pub bytes_added: u64,
    /// Stored (compressed, sealed) bytes of those blobs.
    pub bytes_stored: u64,
    /// Blobs new to the repository.
    pub blobs_added: u64,
    /// Files in the snapshot.
    pub total_files: u64,
    /// Bytes of file content in the snapshot.
    pub total_bytes: u64,
    /// Wall time of the backup, milliseconds.
    pub duration_ms: u64,
    /// Source entries that could not be read (skipped).
    pub errors: u64,
}

impl Summary {
    fn fields(&self) -> [u64; 12] {
        [
            self.files_new,
            self.files_changed,
            self.files_unchanged,
            self.dirs,
            self.bytes_read,
            self.bytes_added,
            self.bytes_stored,
            self.blobs_added,
            self.total_files,
            self.total_bytes,
            self.duration_ms,
            self.errors,
        ]
    }

    fn from_fields(f: &[u64]) -> Self {
        let g = |i: usize| f.get(i).copied().unwrap_or(0);
        Summary {
            files_new: g(0),
            files_changed: g(1),
            files_unchanged: g(2),
            dirs: g(3),
            bytes_read: g(4),
            bytes_added: g(5),
            bytes_stored: g(6),
            blobs_added: g(7),
            total_files: g(8),
            total_bytes: g(9),
            duration_ms: g(10),
            errors: g(11),
        }
    }
}

/// A snapshot as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Snapshot time, unix seconds (UTC).
    pub time: i64,
    /// Sub-second part of the time.
    pub nanos: u32,
    /// The account the data belongs to.
    pub account: String,
    /// Host that made the backup.
    pub host: String,
    /// Program and version that wrote it.
    pub program: String,
    /// Free-form tags.
    pub tags: Vec<String>,
    /// Absolute source paths, sorted.
    pub paths: Vec<String>,
    /// The root tree.
    pub tree: BlobId,
    /// The snapshot this one was based on.
    pub parent: Option<SnapshotId>,
    /// What the backup did.
    pub summary: Summary,
}

impl Snapshot {
    /// Checks every field against the limits of format-spec.md §3.3, so that
    /// nothing is written that a reader would refuse.
    pub fn validate(&self) -> Result<()> {
        let long = |what: &str, v: &str, limit: u32| {
            if v.len() > limit as usize {
                Err(Error::Invalid(format!(
                    "{what} is {} bytes; the limit is {limit}",
                    v.len()
                )))
            } else {
                Ok(())
            }
        };
        long("account name", &self.account, limits::MAX_NAME)?;
        long("host name", &self.host, limits::MAX_NAME)?;
        long("program name", &self.program, limits::MAX_NAME)?;
        for t in &self.tags {
            long("tag", t, limits::MAX_NAME)?;
        }
        for p in &self.paths {
            long("path", p, limits::MAX_PATH)?;
        }
        if self.tags.len() > limits::MAX_LIST as usize
            || self.paths.len() > limits::MAX_LIST as usize
        {
            return Err(Error::Invalid(format!(
                "at most {} tags and {} paths per snapshot",
                limits::MAX_LIST,
                limits::MAX_LIST
            )));
        }
        if self.nanos >= 1_000_000_000 {
            return Err(Error::Invalid("nanoseconds out of range".into()));
        }
        Ok(())
    }

    /// Encodes the body (before sealing).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.time);
        w.u32(self.nanos);
        w.str(&self.account);
        w.str(&self.host);
        w.str(&self.program);
        for list in [&self.tags, &self.paths] {
            w.u32(list.len() as u32);
            for s in list {
                w.str(s);
            }
        }
        w.raw(&self.tree.0);
        match &self.parent {
            Some(p) => {
                w.u8(1);
                w.raw(&p.0);
            }
            None => w.u8(0),
        }
        let f = self.summary.fields();
        w.u32(f.len() as u32);
        for v in f {
            w.u64(v);
        }
        w.buf
    }

    /// Decodes a body, checking every length.
    pub fn decode(body: &[u8], what: &str) -> Result<Self> {
        let mut r = Reader::new(body, what);
        let time = r.i64()?;
        let nanos = r.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(Error::corrupt(what, "nanoseconds out of range"));
        }
        let account = r.str(limits::MAX_NAME)?;
        let host = r.str(limits::MAX_NAME)?;
        let program = r.str(limits::MAX_NAME)?;
        let mut tags = Vec::new();
        for _ in 0..r.count(limits::MAX_LIST, 4)? {
            tags.push(r.str(limits::MAX_NAME)?);
        }
        let mut paths = Vec::new();
        for _ in 0..r.count(limits::MAX_LIST, 4)? {
            paths.push(r.str(limits::MAX_PATH)?);
        }
        let tree = BlobId(r.array()?);
        let parent = match r.u8()? {
            0 => None,
            1 => Some(FileId(r.array()?)),
            v => return Err(Error::corrupt(what, format!("parent flag {v}"))),
        };
        let n = r.count(1024, 8)?;
        let mut f = Vec::with_capacity(n);
        for _ in 0..n {
            f.push(r.u64()?);
        }
        r.finish()?;
        Ok(Snapshot {
            time,
            nanos,
            account,
            host,
            program,
            tags,
            paths,
            tree,
            parent,
            summary: Summary::from_fields(&f),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a 4097-byte tag was written, and then the repository's
    /// snapshot listing (and every later backup) failed on it.
    #[test]
    fn what_validate_accepts_decode_accepts() {
        let mut s = Snapshot {
            time: 0,
            nanos: 0,
            account: "a".repeat(4096),
            host: "h".into(),
            program: "p".into(),
            tags: vec!["t".repeat(4096)],
            paths: vec!["/".into()],
            tree: BlobId([1; 32]),
            parent: None,
            summary: Summary::default(),
        };
        s.validate().unwrap();
        Snapshot::decode(&s.encode(), "s").unwrap();
        s.tags.push("t".repeat(4097));
        assert!(s.validate().is_err());
        assert!(Snapshot::decode(&s.encode(), "s").is_err());
        s.tags.pop();
        s.account.push('a');
        assert!(s.validate().is_err());
    }

    #[test]
    fn round_trip_and_truncation() {
        let s = Snapshot {
            time: 1_709_258_400,
            nanos: 5,
            account: "acme".into(),
            host: "h".into(),
            program: "arca 0.1.0".into(),
            tags: vec!["daily".into()],
            paths: vec!["/data/acme".into()],
            tree: BlobId([1; 32]),
            parent: Some(FileId([2; 32])),
            summary: Summary {
                files_new: 3,
                errors: 1,
                ..Summary::default()
            },
        };
        s.validate().unwrap();
        let b = s.encode();
        assert_eq!(Snapshot::decode(&b, "s").unwrap(), s);
        for n in 0..b.len() {
            assert!(Snapshot::decode(&b[..n], "s").is_err());
        }
    }
}
