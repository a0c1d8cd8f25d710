//! On-disk structures: pure encoders and decoders over bytes, no I/O
//! (format-spec.md). Each submodule names the spec section it implements.

pub mod config;
pub mod exportrec;
pub mod indexfile;
pub mod keyfile;
pub mod lockfile;
pub mod pack;
pub mod snapshot;
pub mod tree;

use crate::codec::Reader;
use crate::crypto::{self, Secret32};
use crate::error::{Error, Result};

/// First four bytes of every stored object (format-spec.md §3.1).
pub const MAGIC: [u8; 4] = *b"ARCA";
/// The format version this binary writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Length of [`Header`].
pub const HEADER_LEN: usize = 8;

/// Object types, byte 6 of the header (format-spec.md §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectType {
    /// A key file (§5.1).
    Key = 1,
    /// The repository config (§5.2).
    Config = 2,
    /// A pack file (§6).
    Pack = 3,
    /// An index file (§7).
    Index = 4,
    /// A snapshot (§8).
    Snapshot = 5,
    /// A lock (§10).
    Lock = 6,
    /// An export record (§15).
    Export = 7,
}

impl ObjectType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => ObjectType::Key,
            2 => ObjectType::Config,
            3 => ObjectType::Pack,
            4 => ObjectType::Index,
            5 => ObjectType::Snapshot,
            6 => ObjectType::Lock,
            7 => ObjectType::Export,
            _ => return None,
        })
    }
}

/// Blob kinds stored in packs (format-spec.md §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum BlobKind {
    /// A chunk of file content.
    Data = 1,
    /// A serialized directory tree (§9).
    Tree = 2,
}

/// Kind byte of a data blob stored as a delta against another data blob
/// (format-spec.md §6.4). Only trailer and index entries carry it; the
/// blob's plaintext is data.
pub const BLOB_KIND_DELTA: u8 = 3;

impl BlobKind {
    /// Parses the kind byte of a whole blob (1 or 2), refusing unknown kinds
    /// with a message that says why. Entries parse kind 3 themselves.
    pub fn from_u8(v: u8) -> Result<Self> {
        match v {
            1 => Ok(BlobKind::Data),
            2 => Ok(BlobKind::Tree),
            other => Err(Error::Unsupported(format!(
                "unknown blob kind {other}; this repository was written by a newer arca"
            ))),
        }
    }
    /// Lower-case name for messages and JSON.
    pub fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }
}

/// The limits every decoder enforces before allocating (format-spec.md §3.3).
pub mod limits {
    /// Largest plaintext of one blob.
    pub const MAX_BLOB_RAW: u32 = 64 << 20;
    /// Largest stored (compressed and sealed) blob.
    pub const MAX_BLOB_STORED: u32 = MAX_BLOB_RAW + (1 << 20);
    /// Largest pack file.
    pub const MAX_PACK_SIZE: u64 = 1 << 30;
    /// Most blobs in one pack.
    pub const MAX_PACK_BLOBS: u32 = 1 << 20;
    /// Largest sealed pack trailer.
    pub const MAX_TRAILER: u32 = 80 << 20;
    /// Largest index file.
    pub const MAX_INDEX_FILE: u64 = 256 << 20;
    /// Most packs listed in one index file.
    pub const MAX_INDEX_PACKS: u32 = 1 << 20;
    /// Largest snapshot file.
    pub const MAX_SNAPSHOT_FILE: u64 = 16 << 20;
    /// Largest export record file.
    pub const MAX_EXPORT_FILE: u64 = 16 << 20;
    /// Largest key, config or lock file.
    pub const MAX_SMALL_FILE: u64 = 64 << 10;
    /// Longest name of one tree entry, symlink target, account, tag, host.
    pub const MAX_NAME: u32 = 4096;
    /// Longest path recorded in a snapshot.
    pub const MAX_PATH: u32 = 65536;
    /// Most tags or paths in one snapshot.
    pub const MAX_LIST: u32 = 65536;
    /// Most entries in one tree.
    pub const MAX_TREE_ENTRIES: u32 = 4 << 20;
    /// Most chunks of one file.
    pub const MAX_FILE_CHUNKS: u32 = 16 << 20;
    /// Most feature names per operation in the config.
    pub const MAX_FEATURES: u32 = 256;
    /// Deepest delta chain a reader follows (writers stay at or below the
    /// config's depth, at most this).
    pub const MAX_DELTA_DEPTH: u8 = 16;
}

/// The 8-byte header of every stored object (format-spec.md §3.1):
/// magic "ARCA", format version (u16 LE), object type, reserved zero byte.
pub fn header(ty: ObjectType) -> [u8; HEADER_LEN] {
    let v = FORMAT_VERSION.to_le_bytes();
    [
        MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], ty as u8, 0,
    ]
}

/// Checks the header of a stored object: magic, a version this binary
/// reads (newer versions are refused, never misread), and the expected type.
pub fn check_header(bytes: &[u8], want: ObjectType, what: &str) -> Result<()> {
    let mut r = Reader::new(bytes, what);
    let magic = r.array::<4>()?;
    if magic != MAGIC {
        return Err(Error::corrupt(what, "bad magic: not an arca object"));
    }
    let version = r.u16()?;
    if version > FORMAT_VERSION {
        return Err(Error::Unsupported(format!(
            "{what} has format version {version}; this arca reads up to version {FORMAT_VERSION}: upgrade arca"
        )));
    }
    if version == 0 {
        return Err(Error::corrupt(what, "format version 0"));
    }
    let ty = r.u8()?;
    match ObjectType::from_u8(ty) {
        Some(t) if t == want => {}
        _ => {
            return Err(Error::corrupt(
                what,
                format!("object type {ty}, expected {}", want as u8),
            ))
        }
    }
    if r.u8()? != 0 {
        return Err(Error::corrupt(what, "reserved header byte is not zero"));
    }
    Ok(())
}

/// A whole-file sealed object: header ‖ seal(file key, aad = header, body)
/// (format-spec.md §3.2). Used for config, index files, snapshots, locks.
pub fn seal_file(key: &Secret32, ty: ObjectType, body: &[u8]) -> Result<Vec<u8>> {
    let h = header(ty);
    let sealed = crypto::seal(key, &h, body)?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens [`seal_file`] output after checking the header.
pub fn open_file(key: &Secret32, ty: ObjectType, bytes: &[u8], what: &str) -> Result<Vec<u8>> {
    check_header(bytes, ty, what)?;
    crypto::open(key, &bytes[..HEADER_LEN], &bytes[HEADER_LEN..], what)
}
