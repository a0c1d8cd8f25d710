//! Typed errors of the engine, each mapped to one process exit code.
//!
//! The binary turns an [`Error`] into a message and [`Error::exit_code`]; the
//! table of codes is part of the user contract (README "Exit codes").

use std::path::PathBuf;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes, documented in README.md.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any error without a more specific code.
    pub const ERROR: i32 = 1;
    /// Bad command line (clap uses 2 as well).
    pub const USAGE: i32 = 2;
    /// Backup finished, but some source files could not be read.
    pub const PARTIAL: i32 = 3;
    /// `check` found damage.
    pub const DAMAGE: i32 = 4;
    /// No repository at the given location.
    pub const NO_REPOSITORY: i32 = 10;
    /// The repository is locked by another process.
    pub const LOCKED: i32 = 11;
    /// No key file opens with the given password.
    pub const WRONG_PASSWORD: i32 = 12;
    /// A source or include path, a table, or a record does not exist.
    pub const MISSING_PATH: i32 = 13;
    /// Repository data failed to decode or authenticate (corrupt or truncated).
    pub const CORRUPT: i32 = 14;
    /// The storage is full.
    pub const STORAGE_FULL: i32 = 15;
    /// The repository needs a newer arca (format version or mandatory feature).
    pub const UNSUPPORTED: i32 = 16;
    /// Interrupted by a signal (Ctrl-C).
    pub const INTERRUPTED: i32 = 130;
}

/// Every error the engine reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No repository (no config file) at the location.
    #[error("no arca repository at {0}")]
    NoRepository(String),
    /// A repository already exists where `init` was asked to create one.
    #[error("a repository already exists at {0}")]
    AlreadyExists(String),
    /// No key file could be opened with the password.
    #[error("wrong password: no key file of this repository opens with it")]
    WrongPassword,
    /// Another process holds a conflicting lock.
    #[error("repository is locked: {0}")]
    Locked(String),
    /// A path given by the user does not exist.
    #[error("path not found: {}", .0.display())]
    MissingPath(PathBuf),
    /// Nothing matched what was asked for (no record with these values).
    #[error("{0}")]
    NotFound(String),
    /// Stored bytes failed to parse, authenticate or verify.
    #[error("corrupt repository data: {what}: {reason}")]
    Corrupt {
        /// The object, e.g. "pack 3fa1… blob 9c2e… at offset 1234".
        what: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The repository needs features or a format version this binary lacks.
    #[error("unsupported repository: {0}")]
    Unsupported(String),
    /// The storage device or quota is full.
    #[error("storage full while writing {0}")]
    StorageFull(String),
    /// The operation was interrupted (Ctrl-C).
    #[error("interrupted")]
    Interrupted,
    /// A request that cannot be satisfied, e.g. an unknown snapshot id.
    #[error("{0}")]
    Invalid(String),
    /// An I/O error with the path it happened on.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error from the local index cache (RocksDB).
    #[error("index cache: {0}")]
    Cache(String),
}

impl Error {
    /// Builds a [`Error::Corrupt`].
    pub fn corrupt(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Wraps an I/O error, classifying "no space" as [`Error::StorageFull`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if is_storage_full(&source) {
            return Error::StorageFull(path.display().to_string());
        }
        Error::Io { path, source }
    }

    /// The process exit code for this error (README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoRepository(_) => exit::NO_REPOSITORY,
            Error::WrongPassword => exit::WRONG_PASSWORD,
            Error::Locked(_) => exit::LOCKED,
            Error::MissingPath(_) | Error::NotFound(_) => exit::MISSING_PATH,
            Error::Corrupt { .. } => exit::CORRUPT,
            Error::Unsupported(_) => exit::UNSUPPORTED,
            Error::StorageFull(_) => exit::STORAGE_FULL,
            Error::Interrupted => exit::INTERRUPTED,
            Error::AlreadyExists(_) | Error::Invalid(_) | Error::Io { .. } | Error::Cache(_) => {
                exit::ERROR
            }
        }
    }
}

fn is_storage_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        cache_error(e.into_string())
    }
}

/// An error of the index cache's database: a full device is
/// [`Error::StorageFull`] (exit 15), naming the file when RocksDB's message
/// does ("IO error: No space left on device: While appending to file:
/// PATH: No space left on device").
fn cache_error(msg: String) -> Error {
    const FULL: [&str; 2] = ["No space left on device", "Disk quota exceeded"];
    if !FULL.iter().any(|f| msg.contains(f)) {
        return Error::Cache(msg);
    }
    let file = msg
        .split_once("file: ")
        .and_then(|(_, rest)| rest.rsplit_once(": "))
        .map(|(path, _)| path);
    Error::StorageFull(match file {
        Some(path) => format!("the index cache ({path})"),
        None => "the index cache".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_device_under_the_cache_is_storage_full() {
        let e = cache_error(
            "IO error: No space left on device: While appending to file: \
             /c/index.0/000004.log: No space left on device"
                .into(),
        );
        assert_eq!(
            e.to_string(),
            "storage full while writing the index cache (/c/index.0/000004.log)"
        );
        assert_eq!(e.exit_code(), exit::STORAGE_FULL);
        let e = cache_error("IO error: Disk quota exceeded".into());
        assert_eq!(e.to_string(), "storage full while writing the index cache");
        let e = cache_error("Corruption: bad block".into());
        assert!(matches!(e, Error::Cache(_)));
        assert_ne!(e.exit_code(), exit::STORAGE_FULL);
    }
}
