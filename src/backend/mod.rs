//! Storage backends: where a repository's files live (format-spec.md §1
//! "Repository layout"). The engine only ever talks to [`Backend`].

mod direct;
mod local;
mod memory;
mod s3;

pub use local::LocalBackend;
pub use memory::MemoryBackend;
pub use s3::{is_s3_location, Credentials, S3Backend, BLOCK as S3_BLOCK};

use crate::error::{Error, Result};

/// The kinds of file a repository holds, each in its own namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    /// The single file `config`.
    Config,
    /// `keys/<id>`.
    Key,
    /// `data/<first two hex digits>/<id>`: packs.
    Pack,
    /// `index/<id>`.
    Index,
    /// `snapshots/<id>`.
    Snapshot,
    /// `locks/<id>`.
    Lock,
    /// `exports/<id>`: records of exports (format-spec.md §15).
    Export,
}

impl FileKind {
    /// Every kind, in layout order.
    pub const ALL: [FileKind; 7] = [
        FileKind::Config,
        FileKind::Key,
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Lock,
        FileKind::Export,
    ];
    /// The directory holding this kind ("" for the config).
    pub fn dir(self) -> &'static str {
        match self {
            FileKind::Config => "",
            FileKind::Key => "keys",
            FileKind::Pack => "data",
            FileKind::Index => "index",
            FileKind::Snapshot => "snapshots",
            FileKind::Lock => "locks",
            FileKind::Export => "exports",
        }
    }
}

/// A stored file: its name and length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The file's name within its kind (64 hex digits, or "config").
    pub name: String,
    /// Length in bytes.
    pub size: u64,
}

/// A place that stores a repository's files.
///
/// Contract every implementation keeps:
/// - `write` is atomic and durable: when it returns `Ok`, the whole file is
///   readable under its name and survives a crash or power loss; a crash
///   during `write` leaves either no file under the name or the whole file.
///   Files are write-once: names are content hashes, so writing a name that
///   exists is a no-op.
/// - `list` returns only complete files (never temporary ones).
/// - `remove` of a missing file succeeds (removal is idempotent).
/// - A missing file reads as an error for which [`is_not_found`] is true.
pub trait Backend: Send + Sync {
    /// A human-readable location, e.g. the directory.
    fn location(&self) -> String;
    /// Creates the empty layout for a new repository.
    fn create(&self) -> Result<()>;
    /// Lists the complete files of one kind.
    fn list(&self, kind: FileKind) -> Result<Vec<Listed>>;
    /// The names of [`Backend::list`], for callers that need no sizes (a
    /// local directory then skips a `stat` per file).
    fn names(&self, kind: FileKind) -> Result<Vec<String>> {
        Ok(self.list(kind)?.into_iter().map(|l| l.name).collect())
    }
    /// Reads a whole file.
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset`; fails if the file is shorter.
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// A hint that file `name` will be read in full soon, so that storage
    /// can start fetching it while the caller works on something else. It
    /// never fails; a backend may ignore it.
    fn prefetch(&self, _kind: FileKind, _name: &str) {}
    /// Whether a file read from start to end (`check --read-data` reading
    /// a pack) is better fetched whole in one request than range by range:
    /// true where every request costs a round trip (S3). Local storage
    /// reads in windows, which keeps memory small.
    fn reads_whole(&self) -> bool {
        false
    }
    /// The length of a file.
    fn size(&self, kind: FileKind, name: &str) -> Result<u64>;
    /// Writes a whole file atomically and durably (see the trait's contract).
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()>;
    /// Starts a file written in pieces and named only when complete (a
    /// pack, named by the hash of its bytes): see [`Upload`]. The pieces go
    /// to storage as they come, so no whole file waits in memory.
    fn begin(&self, kind: FileKind) -> Result<Box<dyn Upload>>;
    /// Removes the files that writers which died left under temporary names
    /// (a pack being filled when a backup was killed), and returns how many.
    /// Only under an exclusive lock: a live writer's file would go too.
    fn remove_temporaries(&self) -> Result<u64> {
        Ok(0)
    }
    /// Removes a file durably.
    fn remove(&self, kind: FileKind, name: &str) -> Result<()>;
}

/// A file begun with [`Backend::begin`]: its bytes are appended with
/// [`Upload::write`] under a temporary name; [`Upload::finish`] gives it its
/// name and returns the step that makes it durable and visible under that
/// name. Until that step succeeds the file may be missing, never present
/// under its name and incomplete. Dropped unfinished, an upload leaves
/// nothing under any name a reader lists.
pub trait Upload: Send {
    /// Appends bytes.
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Names the complete file (see the trait's documentation).
    fn finish(self: Box<Self>, name: &str) -> Result<Durable>;
}

/// The second stage of [`Upload::finish`]: makes the file durable and
/// visible under its name.
pub type Durable = Box<dyn FnOnce() -> Result<()> + Send>;

/// True when `e` says a file does not exist.
pub fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
}
