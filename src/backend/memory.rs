//! An in-memory backend for tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{Backend, Durable, FileKind, Listed, Upload};
use crate::error::{Error, Result};

/// Keeps every file in a map. Same contract as any [`Backend`].
#[derive(Default)]
pub struct MemoryBackend {
    files: Files,
    /// Whole-file reads so far, by kind (for tests that count them).
    reads: Mutex<BTreeMap<FileKind, u64>>,
    /// What [`Backend::reads_whole`] answers: as remote storage would.
    whole: bool,
}

type Files = Arc<Mutex<BTreeMap<(FileKind, String), Vec<u8>>>>;

fn lock_files(files: &Files) -> std::sync::MutexGuard<'_, BTreeMap<(FileKind, String), Vec<u8>>> {
    // A panic while holding the lock cannot leave a half-written file in
    // a map of whole values, so a poisoned lock is safe to reuse.
    files.lock().unwrap_or_else(|p| p.into_inner())
}

/// An upload kept in memory until it is named; it appears whole on finish.
struct MemoryUpload {
    files: Files,
    kind: FileKind,
    bytes: Vec<u8>,
}

impl Upload for MemoryUpload {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.bytes.extend_from_slice(data);
        Ok(())
    }
    fn finish(self: Box<Self>, name: &str) -> Result<Durable> {
        let MemoryUpload { files, kind, bytes } = *self;
        let name = name.to_string();
        Ok(Box::new(move || {
            lock_files(&files).insert((kind, name), bytes);
            Ok(())
        }))
    }
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that asks for files read from start to end to be
    /// read whole, as remote storage does.
    pub fn reading_whole() -> Self {
        MemoryBackend {
            whole: true,
            ..Self::default()
        }
    }

    /// How many whole files of `kind` were read so far.
    pub fn reads(&self, kind: FileKind) -> u64 {
        let r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        r.get(&kind).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(FileKind, String), Vec<u8>>> {
        lock_files(&self.files)
    }

    fn missing(kind: FileKind, name: &str) -> Error {
        Error::io(
            format!("mem:{}/{name}", kind.dir()),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }
    fn create(&self) -> Result<()> {
        Ok(())
    }
    fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        Ok(self
            .lock()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, n), v)| Listed {
                name: n.clone(),
                size: v.len() as u64,
            })
            .collect())
    }
    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        *self
            .reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
        self.lock()
            .get(&(kind, name.to_string()))
            .cloned()
            .ok_or_else(|| Self::missing(kind, name))
    }
    fn reads_whole(&self) -> bool {
        self.whole
    }
    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let g = self.lock();
        let v = g
            .get(&(kind, name.to_string()))
            .ok_or_else(|| Self::missing(kind, name))?;
        let end = offset.checked_add(len).filter(|e| *e <= v.len() as u64);
        match end {
            Some(end) => Ok(v[offset as usize..end as usize].to_vec()),
            None => Err(Error::corrupt(format!("mem:{name}"), "truncated")),
        }
    }
    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        self.lock()
            .get(&(kind, name.to_string()))
            .map(|v| v.len() as u64)
            .ok_or_else(|| Self::missing(kind, name))
    }
    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        self.lock().insert((kind, name.to_string()), data.to_vec());
        Ok(())
    }
    fn begin(&self, kind: FileKind) -> Result<Box<dyn Upload>> {
        Ok(Box::new(MemoryUpload {
            files: Arc::clone(&self.files),
            kind,
            bytes: Vec::new(),
        }))
    }
    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        self.lock().remove(&(kind, name.to_string()));
        Ok(())
    }
}
