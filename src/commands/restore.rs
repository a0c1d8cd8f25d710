//! `arca restore`: bring a snapshot (or some paths of it) back to disk.
//!
//! Files are written in parallel; every chunk is verified against its id as
//! it is read (decryption authenticates it, and its plaintext must hash to
//! the id). Modes and mtimes are restored; directories get theirs last,
//! after their content is written.

use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use rayon::prelude::*;

use crate::commands::{check_interrupt, Progress};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::format::BlobKind;
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Directory to restore into (created if missing).
    pub target: PathBuf,
    /// Paths within the snapshot to restore (e.g. `orders.csv`,
    /// `apps/crm`); everything when empty.
    pub include: Vec<String>,
    /// Entries to leave out, by name or by path from the snapshot's root
    /// (see [`crate::commands::browse::Patterns`]); they win over includes.
    pub exclude: Option<crate::commands::browse::Patterns>,
}

/// What a restore did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RestoreStats {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Bytes written.
    pub bytes: u64,
}

struct FileJob {
    path: PathBuf,
    node: Node,
}

fn split_include(s: &str) -> Vec<Vec<u8>> {
    s.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(|c| c.as_bytes().to_vec())
        .collect()
}

/// Whether `path` (components under the root) is selected by `includes`:
/// 2 = selected with everything below, 1 = on the way to a selected path,
/// 0 = not selected.
fn selection(path: &[Vec<u8>], includes: &[Vec<Vec<u8>>]) -> u8 {
    if includes.is_empty() {
        return 2;
    }
    let mut best = 0;
    for inc in includes {
        if path.len() >= inc.len() && path[..inc.len()] == inc[..] {
            return 2;
        }
        if inc.len() > path.len() && inc[..path.len()] == path[..] {
            best = 1;
        }
    }
    best
}

fn mtime_of(node: &Node) -> std::time::SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::new(node.mtime.max(0) as u64, node.mtime_nanos))
        .unwrap_or(UNIX_EPOCH)
}

fn set_times(path: &Path, node: &Node) -> Result<()> {
    let f = File::options()
        .read(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.set_modified(mtime_of(node))
        .map_err(|e| Error::io(path, e))
}

fn set_mode(path: &Path, node: &Node) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(node.mode & 0o7777))
        .map_err(|e| Error::io(path, e))
}

/// Whether files under `dir` should have their space reserved before they
/// are written: not on tmpfs, where a reservation zero-fills pages that the
/// restore is about to overwrite.
fn reserves_extents(dir: &Path) -> bool {
    const TMPFS_MAGIC: u64 = 0x0102_1994;
    rustix::fs::statfs(dir).map_or(true, |s| s.f_type as u64 != TMPFS_MAGIC)
}

struct Walk<'a> {
    repo: &'a IndexedRepository,
    includes: Vec<Vec<Vec<u8>>>,
    matched: Vec<bool>,
    files: Vec<FileJob>,
    dirs: Vec<(PathBuf, Node)>,
    stats: RestoreStats,
    exclude: Option<&'a crate::commands::browse::Patterns>,
}

impl Walk<'_> {
    fn excluded(&self, comps: &[Vec<u8>]) -> bool {
        self.exclude.is_some_and(|x| {
            let parts: Vec<String> = comps
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
            x.matches(&parts.join("/"), parts.last().map_or("", String::as_str))
        })
    }

    fn note_matches(&mut self, comps: &[Vec<u8>]) {
        for (i, inc) in self.includes.iter().enumerate() {
            if comps == &inc[..] {
                self.matched[i] = true;
            }
        }
    }

    fn walk(&mut self, tree: &BlobId, dir: &Path, comps: &mut Vec<Vec<u8>>) -> Result<()> {
        check_interrupt()?;
        let t = self.repo.read_tree(tree)?;
        for node in t.nodes {
            comps.push(node.name.clone());
            if self.excluded(comps) {
                comps.pop();
                continue;
            }
            let sel = selection(comps, &self.includes);
            if sel > 0 {
                if sel == 2 {
                    self.note_matches(comps);
                }
                let path = dir.join(std::ffi::OsStr::from_bytes(&node.name));
                match &node.kind {
                    NodeKind::Dir { tree } => {
                        fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
                        if sel == 1 {
                            self.note_matches(comps);
                        }
                        let tree = *tree;
                        self.walk(&tree, &path, comps)?;
                        if sel == 2 {
                            self.stats.dirs += 1;
                            self.dirs.push((path, node));
                        }
                    }
                    NodeKind::File { .. } if sel == 2 => self.files.push(FileJob { path, node }),
                    NodeKind::Symlink { target } if sel == 2 => {
                        let _ = fs::remove_file(&path);
                        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &path)
                            .map_err(|e| Error::io(&path, e))?;
                        self.stats.symlinks += 1;
                    }
                    _ => {}
                }
            }
            comps.pop();
        }
        Ok(())
    }
}

/// Chunks of a file laid out and decoded at a time: about 64 MiB of
/// default chunks, plenty for both cores, and a bounded layout.
const RESTORE_WINDOW: usize = 1024;

thread_local! {
    /// Each thread's decoding buffer, reused from blob to blob: decoded
    /// into, written from, never allocated or faulted in again.
    static PLAIN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Files from this size up get their space reserved before they are
/// written (see [`write_file`]).
const PREALLOCATE_FROM: u64 = 1 << 20;

/// A decoding buffer larger than this (after a chain of unusually large
/// blobs) is freed rather than kept for the next blob.
const KEEP_BUFFER: usize = 16 << 20;

fn write_file(
    repo: &IndexedRepository,
    job: &FileJob,
    preallocate: bool,
    progress: &dyn Progress,
) -> Result<u64> {
    let NodeKind::File { chunks } = &job.node.kind else {
        return Ok(0);
    };
    let in_file = |e: Error| match e {
        Error::Corrupt { what, reason } => Error::Corrupt {
            what: format!("{what} (file {})", job.path.display()),
            reason,
        },
        other => other,
    };
    // Replace, never write through, whatever is at the path (it may be a
    // symlink pointing outside the target): a new file only (`O_EXCL`
    // follows no symlink), and whatever held the name removed first. Into
    // an empty target that is one call per file.
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&job.path)
    };
    let f = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::remove_file(&job.path).map_err(|e| Error::io(&job.path, e))?;
            create()
        }
        r => r,
    }
    .map_err(|e| Error::io(&job.path, e))?;
    // Space is reserved in one call where the file system allocates
    // extents (ext4 otherwise reserves delayed blocks page by page as the
    // writes land: stockflow restores 5 % faster). A refusal (no support,
    // no space for a size the chunks may not match) leaves the old way:
    // the size set, the blocks allocated as written. A small file is
    // written in a few calls that size it as they go: nothing to reserve.
    if job.node.size >= PREALLOCATE_FROM {
        let reserved = preallocate
            && rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, job.node.size)
                .is_ok();
        if !reserved {
            f.set_len(job.node.size)
                .map_err(|e| Error::io(&job.path, e))?;
        }
    }
    // A window of chunks at a time is laid out from the index (so memory
    // does not grow with the file), then decoded and written in parallel,
    // each chunk at its offset.
    let mut total = 0u64;
    let mut locs = Vec::with_capacity(RESTORE_WINDOW.min(chunks.len()));
    for window in chunks.chunks(RESTORE_WINDOW) {
        locs.clear();
        for c in window {
            let loc = repo.locate(c).map_err(in_file)?;
            if loc.entry.kind != BlobKind::Data {
                return Err(in_file(Error::corrupt(
                    format!("blob {c}"),
                    format!("is a {} blob, expected data", loc.entry.kind.name()),
                )));
            }
            locs.push((total, loc));
            total += u64::from(loc.entry.raw_length);
        }
        locs.par_iter().try_for_each(|(off, loc)| {
            check_interrupt()?;
            PLAIN.with(|buf| {
                // A leaf: nothing below re-enters this thread-local.
                let mut buf = buf.borrow_mut();
                let r = repo.read_blob_into(loc, &mut buf).map_err(in_file)?;
                f.write_all_at(&buf[r.clone()], *off)
                    .map_err(|e| Error::io(&job.path, e))?;
                progress.inc(r.len() as u64);
                if buf.capacity() > KEEP_BUFFER {
                    *buf = Vec::new();
                }
                Ok::<(), Error>(())
            })
        })?;
    }
    // The chunks are the content: a size recorded otherwise (by a writer
    // that did not keep them equal) does not pad or cut the file.
    if total != job.node.size {
        f.set_len(total).map_err(|e| Error::io(&job.path, e))?;
    }
    // Through the open file, not its path: no second open, no lookups.
    // Times before mode, whose permissions could forbid setting them.
    f.set_modified(mtime_of(&job.node))
        .map_err(|e| Error::io(&job.path, e))?;
    f.set_permissions(fs::Permissions::from_mode(job.node.mode & 0o7777))
        .map_err(|e| Error::io(&job.path, e))?;
    Ok(total)
}

/// Restores the tree `root` into `opts.target`.
pub fn restore(
    repo: &IndexedRepository,
    root: &BlobId,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreStats> {
    repo.check_features(crate::format::config::Operation::Read)?;
    fs::create_dir_all(&opts.target).map_err(|e| Error::io(&opts.target, e))?;
    let includes: Vec<Vec<Vec<u8>>> = opts.include.iter().map(|s| split_include(s)).collect();
    let mut w = Walk {
        repo,
        matched: vec![false; includes.len()],
        includes,
        files: Vec::new(),
        dirs: Vec::new(),
        stats: RestoreStats::default(),
        exclude: opts.exclude.as_ref(),
    };
    w.walk(root, &opts.target, &mut Vec::new())?;
    if let Some(i) = w.matched.iter().position(|m| !m) {
        return Err(Error::MissingPath(PathBuf::from(&opts.include[i])));
    }
    progress.set_total(w.files.iter().map(|f| f.node.size).sum());
    let preallocate = reserves_extents(&opts.target);
    let bytes: u64 = w
        .files
        .par_iter()
        .map(|j| write_file(repo, j, preallocate, progress))
        .collect::<Result<Vec<u64>>>()?
        .into_iter()
        .sum();
    // Deepest directories first, so setting a parent's mtime comes after
    // every change inside it.
    w.dirs
        .sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().len()));
    for (p, node) in &w.dirs {
        set_times(p, node)?;
        set_mode(p, node)?;
    }
    let mut stats = w.stats;
    stats.files = w.files.len() as u64;
    stats.bytes = bytes;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_selection() {
        let inc = vec![split_include("a/b")];
        let p = |s: &str| split_include(s);
        assert_eq!(selection(&p("a"), &inc), 1);
        assert_eq!(selection(&p("a/b"), &inc), 2);
        assert_eq!(selection(&p("a/b/c"), &inc), 2);
        assert_eq!(selection(&p("a/c"), &inc), 0);
        assert_eq!(selection(&p("x"), &[]), 2);
    }

    /// A temporary directory holding a repository (small chunks) with
    /// `files` backed up from its `src/`, and the backup's root tree.
    fn backed_up(files: &[(&str, &[u8])]) -> (tempfile::TempDir, IndexedRepository, BlobId) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = crate::testutil::small_chunk_repo(&tmp.path().join("cache")).unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        for (name, bytes) in files {
            fs::write(src.join(name), bytes).unwrap();
        }
        let root = crate::testutil::backup_tree(&repo, &src);
        (tmp, repo, root)
    }

    /// A file node whose recorded size disagrees with its chunks is
    /// restored as its chunks, on a disk file system (where space is
    /// reserved for the recorded size first) as on tmpfs, and the space
    /// reserved beyond the chunks is given back.
    #[test]
    fn a_recorded_size_neither_pads_nor_cuts_the_chunks() {
        use crate::commands::NoProgress;
        use crate::session::WriteSession;
        use std::os::unix::fs::MetadataExt;
        let content = crate::testutil::noise(200_000, 3);
        let (tmp, repo, root) = backed_up(&[("f.bin", &content)]);
        let mut tree = repo.read_tree(&root).unwrap();
        let real = tree.nodes[0].size;
        assert_eq!(real, content.len() as u64);
        let shm = Path::new("/dev/shm");
        let in_shm = shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap());
        let targets: Vec<&Path> = std::iter::once(tmp.path())
            .chain(in_shm.as_ref().map(tempfile::TempDir::path))
            .collect();
        for base in targets {
            for (i, size) in [real, real + (8 << 20), real - 1000, 0]
                .into_iter()
                .enumerate()
            {
                tree.nodes[0].size = size;
                let mut s = WriteSession::start(&repo).unwrap();
                let (bad, _) = s.add_blob(BlobKind::Tree, &tree.encode()).unwrap();
                s.flush().unwrap();
                let target = base.join(format!("out-{i}"));
                let opts = RestoreOptions {
                    target: target.clone(),
                    ..RestoreOptions::default()
                };
                let st = restore(&repo, &bad, &opts, &NoProgress).unwrap();
                assert_eq!(st.bytes, real, "{size}");
                let out = target.join("f.bin");
                assert!(
                    fs::read(&out).unwrap() == content,
                    "{} {size}",
                    base.display()
                );
                let blocks = fs::metadata(&out).unwrap().blocks() * 512;
                assert!(
                    blocks < real + (1 << 20),
                    "{} bytes allocated for {real} ({size} recorded) under {}",
                    blocks,
                    base.display()
                );
            }
        }
    }

    /// Restoring over what a target already holds replaces it: a file with
    /// other bytes, and a symlink at a file's path, whose target outside is
    /// left as it was (never written through).
    #[test]
    fn what_holds_a_files_name_is_replaced_never_written_through() {
        use crate::commands::NoProgress;
        let a = crate::testutil::noise(50_000, 1);
        let b = crate::testutil::noise(3_000_000, 2);
        let (tmp, repo, root) = backed_up(&[("a.bin", &a), ("b.bin", &b)]);
        let target = tmp.path().join("out");
        fs::create_dir_all(&target).unwrap();
        let outside = tmp.path().join("outside");
        fs::write(&outside, b"keep me").unwrap();
        fs::write(target.join("a.bin"), vec![7u8; 200_000]).unwrap();
        std::os::unix::fs::symlink(&outside, target.join("b.bin")).unwrap();
        let opts = RestoreOptions {
            target: target.clone(),
            ..RestoreOptions::default()
        };
        let st = restore(&repo, &root, &opts, &NoProgress).unwrap();
        assert_eq!(st.files, 2);
        assert!(fs::read(target.join("a.bin")).unwrap() == a);
        assert!(fs::read(target.join("b.bin")).unwrap() == b);
        assert!(!fs::symlink_metadata(target.join("b.bin"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&outside).unwrap(), b"keep me");
    }
}
