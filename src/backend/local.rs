//! A repository in a local directory.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::direct::Appender;
use super::{Backend, Durable, FileKind, Listed, Upload};
use crate::error::{Error, Result};

/// Prefix of temporary files; `list` skips them and a later `prune` may
/// remove leftovers of crashed writers.
const TMP_PREFIX: &str = ".tmp-";

/// Pack files kept open for ranged reads. Restore and check read many small
/// ranges of the same packs; reopening the file for each one costs a path
/// lookup and, worse, resets the kernel's readahead, so reads of a cold pack
/// went to the disk one blob at a time.
const OPEN_PACKS: usize = 64;

/// Stores a repository under one directory.
pub struct LocalBackend {
    root: PathBuf,
    /// Recently read packs, most recent last. Packs are immutable (named by
    /// their content), so a cached handle always reads the right bytes.
    open_packs: Mutex<Vec<(String, Arc<File>)>>,
}

impl LocalBackend {
    /// A backend rooted at `root` (not created until [`Backend::create`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            open_packs: Mutex::new(Vec::new()),
        }
    }

    /// An open handle on pack `name`, from the cache or newly opened.
    fn pack_file(&self, name: &str, p: &Path) -> Result<Arc<File>> {
        let mut open = self.open_packs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = open.iter().position(|(n, _)| n == name) {
            let entry = open.remove(i);
            let f = entry.1.clone();
            open.push(entry);
            return Ok(f);
        }
        let f = Arc::new(File::open(p).map_err(|e| Error::io(p, e))?);
        if open.len() >= OPEN_PACKS {
            open.remove(0);
        }
        open.push((name.to_string(), f.clone()));
        Ok(f)
    }

    fn path(&self, kind: FileKind, name: &str) -> PathBuf {
        path_of(&self.root, kind, name)
    }
}

/// Where file `name` of `kind` lives under `root`.
fn path_of(root: &Path, kind: FileKind, name: &str) -> PathBuf {
    match kind {
        FileKind::Config => root.join("config"),
        FileKind::Pack => {
            let sub = name.get(..2).unwrap_or("00");
            root.join("data").join(sub).join(name)
        }
        k => root.join(k.dir()).join(name),
    }
}

/// A file being written under a temporary name in its kind's directory
/// (`data/` for packs, whose subdirectory depends on the name to come).
struct LocalUpload {
    root: PathBuf,
    kind: FileKind,
    /// `None` once handed to [`Staged`]. Packs are written without the
    /// page cache where the file system allows (see `direct.rs`).
    file: Option<Appender>,
    tmp: PathBuf,
}

impl Upload for LocalUpload {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        match self.file.as_mut() {
            Some(f) => f.write(data).map_err(|e| Error::io(&self.tmp, e)),
            None => Err(Error::Invalid("write to a finished upload".into())),
        }
    }

    /// The file keeps its temporary name until the returned step has
    /// fsynced it; then it is renamed to its name and that directory
    /// fsynced. A file that exists already is left as it is (names are
    /// content hashes), except the config.
    fn finish(mut self: Box<Self>, name: &str) -> Result<Durable> {
        let path = path_of(&self.root, self.kind, name);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let file = match self.file.take().map(Appender::finish).transpose() {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&self.tmp);
                return Err(Error::io(&self.tmp, e));
            }
        };
        let staged = Staged {
            file,
            tmp: std::mem::take(&mut self.tmp),
            path,
            dir,
        };
        if self.kind != FileKind::Config && staged.path.exists() {
            return Ok(Box::new(move || {
                drop(staged); // removes the temporary file
                Ok(())
            }));
        }
        // Pack subdirectories are made on first use, and so is `exports/`
        // in a repository created before exports existed. The new
        // directory's entry must be durable before a file in it can be.
        if !staged.dir.exists() {
            match fs::create_dir_all(&staged.dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&staged.dir, e)),
            }
            sync_dir(staged.dir.parent().unwrap_or(&self.root))?;
        }
        Ok(Box::new(move || staged.finish()))
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The regular files of `dir`, by name: their type comes with the
/// directory entry, where `list_dir` needs a `stat` per file for its size.
fn names_in(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        if ent
            .file_type()
            .map_err(|e| Error::io(ent.path(), e))?
            .is_file()
        {
            out.push(name);
        }
    }
    Ok(out)
}

fn list_dir(dir: &Path, out: &mut Vec<Listed>) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) {
            continue;
        }
        let md = ent.metadata().map_err(|e| Error::io(ent.path(), e))?;
        if md.is_file() {
            out.push(Listed {
                name,
                size: md.len(),
            });
        }
    }
    Ok(())
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))?;
        for k in FileKind::ALL {
            if k != FileKind::Config {
                let d = self.root.join(k.dir());
                fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            }
        }
        // Pack subdirectories (data/00 … data/ff) are made on first use:
        // a repository per account stays small (256 empty directories
        // would take 1 MB of directory blocks).
        sync_dir(&self.root.join("data"))?;
        sync_dir(&self.root)
    }

    fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        match kind {
            FileKind::Config => {
                if let Ok(md) = fs::metadata(self.root.join("config")) {
                    out.push(Listed {
                        name: "config".into(),
                        size: md.len(),
                    });
                }
            }
            FileKind::Pack => {
                let data = self.root.join("data");
                let rd = match fs::read_dir(&data) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(Error::io(&data, e)),
                };
                for ent in rd {
                    let ent = ent.map_err(|e| Error::io(&data, e))?;
                    if ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        list_dir(&ent.path(), &mut out)?;
                    }
                }
            }
            k => list_dir(&self.root.join(k.dir()), &mut out)?,
        }
        Ok(out)
    }

    fn names(&self, kind: FileKind) -> Result<Vec<String>> {
        match kind {
            FileKind::Snapshot | FileKind::Index | FileKind::Key | FileKind::Lock => {
                names_in(&self.root.join(kind.dir()))
            }
            _ => Ok(self.list(kind)?.into_iter().map(|l| l.name).collect()),
        }
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let p = self.path(kind, name);
        fs::read(&p).map_err(|e| Error::io(&p, e))
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let p = self.path(kind, name);
        let f = if kind == FileKind::Pack {
            self.pack_file(name, &p)?
        } else {
            Arc::new(File::open(&p).map_err(|e| Error::io(&p, e))?)
        };
        let mut buf =
            vec![0u8; usize::try_from(len).map_err(|_| Error::Invalid("range too large".into()))?];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(
                    p.display().to_string(),
                    format!("truncated: cannot read {len} bytes at offset {offset}"),
                )
            } else {
                Error::io(&p, e)
            }
        })?;
        Ok(buf)
    }

    /// Asks the kernel to read the file ahead (`POSIX_FADV_WILLNEED`): the
    /// reads go to the device in the background, so a cold pack is in the
    /// page cache when `check` reaches it. The advice outlives the handle.
    fn prefetch(&self, kind: FileKind, name: &str) {
        if let Ok(f) = File::open(self.path(kind, name)) {
            let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::WillNeed);
        }
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let p = self.path(kind, name);
        fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| Error::io(&p, e))
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        let mut up = self.begin(kind)?;
        up.write(data)?;
        up.finish(name)?()
    }

    fn begin(&self, kind: FileKind) -> Result<Box<dyn Upload>> {
        let dir = match kind {
            FileKind::Config => self.root.clone(),
            k => self.root.join(k.dir()),
        };
        if !dir.exists() {
            // `exports/` in a repository created before exports existed.
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            sync_dir(&self.root)?;
        }
        let mut rnd = [0u8; 8];
        crate::crypto::fill_random(&mut rnd)?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", hex::encode(rnd)));
        let file =
            Appender::create(&tmp, kind == FileKind::Pack).map_err(|e| Error::io(&tmp, e))?;
        Ok(Box::new(LocalUpload {
            root: self.root.clone(),
            kind,
            file: Some(file),
            tmp,
        }))
    }

    fn remove_temporaries(&self) -> Result<u64> {
        let mut dirs = vec![self.root.clone()];
        for k in FileKind::ALL {
            if k != FileKind::Config {
                dirs.push(self.root.join(k.dir()));
            }
        }
        // Whole files were staged in `data/xx/` by earlier versions.
        if let Ok(rd) = fs::read_dir(self.root.join("data")) {
            for ent in rd.flatten() {
                if ent.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(ent.path());
                }
            }
        }
        let mut removed = 0;
        for dir in dirs {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&dir, e)),
            };
            let mut here = 0;
            for ent in rd {
                let ent = ent.map_err(|e| Error::io(&dir, e))?;
                if ent.file_name().to_string_lossy().starts_with(TMP_PREFIX)
                    && ent.file_type().is_ok_and(|t| t.is_file())
                {
                    let p = ent.path();
                    match fs::remove_file(&p) {
                        Ok(()) => here += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(&p, e)),
                    }
                }
            }
            if here > 0 {
                sync_dir(&dir)?;
                removed += here;
            }
        }
        Ok(removed)
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let p = self.path(kind, name);
        if kind == FileKind::Pack {
            self.open_packs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(n, _)| n != name);
        }
        match fs::remove_file(&p) {
            Ok(()) => sync_dir(p.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&p, e)),
        }
    }
}

/// A file written under a temporary name, not yet durable (see
/// [`LocalUpload::finish`]); dropped unfinished, it is removed.
struct Staged {
    /// `None` once renamed.
    file: Option<File>,
    tmp: PathBuf,
    path: PathBuf,
    dir: PathBuf,
}

impl Staged {
    fn finish(mut self) -> Result<()> {
        let Some(f) = self.file.take() else {
            return Ok(());
        };
        let res = (|| {
            f.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
            drop(f);
            fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
            sync_dir(&self.dir)?;
            // A pack moves from `data/` to `data/xx/`: the old entry's
            // removal is made durable too.
            match self.tmp.parent() {
                Some(from) if from != self.dir => sync_dir(from),
                _ => Ok(()),
            }
        })();
        if res.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        res
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp_files(dir: &Path) -> usize {
        fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn an_upload_appears_under_its_name_only_when_durable() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        let data = dir.path().join("repo/data");
        let name = "ab".repeat(32);
        let mut up = b.begin(FileKind::Pack).unwrap();
        up.write(&[7u8; 600]).unwrap();
        up.write(&[7u8; 400]).unwrap();
        assert_eq!(tmp_files(&data), 1, "written under a temporary name");
        let durable = up.finish(&name).unwrap();
        assert!(b.read(FileKind::Pack, &name).is_err(), "not visible yet");
        assert!(b.list(FileKind::Pack).unwrap().is_empty());
        durable().unwrap();
        assert_eq!(b.read(FileKind::Pack, &name).unwrap(), vec![7u8; 1000]);
        assert_eq!(b.list(FileKind::Pack).unwrap().len(), 1);
        assert_eq!(tmp_files(&data), 0);
        assert_eq!(tmp_files(&data.join("ab")), 0);

        // Dropped before its second stage, or before it was named: no
        // file, and no temporary left.
        let other = "cd".repeat(32);
        let mut up = b.begin(FileKind::Pack).unwrap();
        up.write(&[1u8; 10]).unwrap();
        let durable = up.finish(&other).unwrap();
        assert_eq!(tmp_files(&data), 1);
        drop(durable);
        assert!(b.read(FileKind::Pack, &other).is_err());
        assert_eq!(tmp_files(&data), 0);
        let mut up = b.begin(FileKind::Pack).unwrap();
        up.write(&[1u8; 10]).unwrap();
        drop(up);
        assert_eq!(tmp_files(&data), 0);
        assert_eq!(b.list(FileKind::Pack).unwrap().len(), 1);
    }

    #[test]
    fn leftover_temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let b = LocalBackend::new(&repo);
        b.create().unwrap();
        b.write(FileKind::Pack, &"ab".repeat(32), b"pack").unwrap();
        b.write(FileKind::Index, &"cd".repeat(32), b"index")
            .unwrap();
        // What killed writers leave: an upload in `data/`, a whole-file
        // stage of an earlier version in `data/ab/`, an index file's.
        let mut up = b.begin(FileKind::Pack).unwrap();
        up.write(b"partial").unwrap();
        std::mem::forget(up);
        fs::write(repo.join("data/ab/.tmp-0011223344556677"), b"x").unwrap();
        fs::write(repo.join("index/.tmp-8899aabbccddeeff"), b"y").unwrap();
        assert_eq!(b.remove_temporaries().unwrap(), 3);
        assert_eq!(tmp_files(&repo.join("data")), 0);
        assert_eq!(tmp_files(&repo.join("data/ab")), 0);
        assert_eq!(tmp_files(&repo.join("index")), 0);
        assert_eq!(b.read(FileKind::Pack, &"ab".repeat(32)).unwrap(), b"pack");
        assert_eq!(b.read(FileKind::Index, &"cd".repeat(32)).unwrap(), b"index");
        assert_eq!(b.remove_temporaries().unwrap(), 0);
    }
}
