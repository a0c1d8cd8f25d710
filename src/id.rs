//! Identifier newtypes. Each is 32 bytes, shown and parsed as 64 lower-case
//! hex digits in one place (format-spec.md §2 "Identifiers").

use std::fmt;

use crate::error::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out)
                    .map_err(|_| Error::Invalid(format!("not a {} (64 hex digits): {s:?}", stringify!($name))))?;
                Ok(Self(out))
            }
            /// The 64-digit lower-case hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 hex digits, for tables and messages.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
    };
}

id_type!(
    /// Keyed BLAKE3 of a blob's plaintext (data chunk or tree): its name
    /// everywhere in the repository.
    BlobId
);
id_type!(
    /// Unkeyed BLAKE3 of a stored file's bytes: the file's name in storage.
    /// Used for packs, index files, snapshots, key files and locks.
    FileId
);
id_type!(
    /// Random identity of a repository, stored in its config; names its cache.
    RepoId
);

impl FileId {
    /// The unkeyed BLAKE3 of `bytes`: the name a stored file gets.
    pub fn of(bytes: &[u8]) -> Self {
        FileId(*blake3::hash(bytes).as_bytes())
    }

    /// The id of a file hashed in pieces into `h`.
    pub fn from_hasher(h: &blake3::Hasher) -> Self {
        FileId(*h.finalize().as_bytes())
    }
}

/// Pack files are named by their [`FileId`].
pub type PackId = FileId;
/// Snapshot files are named by their [`FileId`].
pub type SnapshotId = FileId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let id = FileId::of(b"abc");
        assert_eq!(FileId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!(FileId::from_hex("zz").is_err());
        assert!(FileId::from_hex(&"0".repeat(63)).is_err());
    }
}
