//! `arca backup`: walk paths, store new content, commit a snapshot.
//!
//! Phases: (1) scan the sources into memory, matching each file against the
//! parent snapshot (same account and paths) by size, mtime and inode;
//! (2) read changed and new files in parallel, chunking, hashing,
//! compressing and sealing on every core, the chunks of one large file in
//! parallel too; (3) store trees bottom-up; (4) commit through the write
//! session (packs, then index, then snapshot).

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;

use crate::chunk::StreamError;
use crate::commands::{check_interrupt, Progress};
use crate::error::{Error, Result};
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::format::BlobKind;
use crate::id::{BlobId, SnapshotId};
use crate::repository::IndexedRepository;
use crate::session::WriteSession;

/// Read block per file: large enough to give rayon many chunks to seal in
/// parallel (32 chunks of the default 256 KiB average).
const READ_BLOCK: usize = 8 << 20;
/// Files under this size are sealed chunk after chunk by one worker.
const SMALL_FILE: u64 = 4 << 20;

/// What to back up.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Source paths (files or directories).
    pub paths: Vec<PathBuf>,
    /// Account the data belongs to.
    pub account: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Snapshot time (unix seconds, nanos); now when `None`.
    pub time: Option<(i64, u32)>,
    /// Read every file even when the parent says it is unchanged.
    pub force: bool,
    /// Host name to record; this host when `None`.
    pub host: Option<String>,
    /// Entries not to back up: names, or paths from the snapshot's root
    /// (see [`crate::commands::browse::Patterns`]). An excluded directory
    /// is not entered.
    pub exclude: Option<crate::commands::browse::Patterns>,
}

/// The result of a backup.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Source entries that could not be read (and were skipped).
    pub warnings: Vec<String>,
    /// Notes about the repository (not failures), e.g. adopted packs.
    pub notes: Vec<String>,
}

struct Meta {
    mode: u32,
    mtime: i64,
    mtime_nanos: u32,
    uid: u32,
    gid: u32,
    size: u64,
    inode: u64,
}

impl Meta {
    fn of(md: &fs::Metadata) -> Self {
        Meta {
            mode: md.mode(),
            mtime: md.mtime(),
            mtime_nanos: md.mtime_nsec().clamp(0, 999_999_999) as u32,
            uid: md.uid(),
            gid: md.gid(),
            size: if md.is_file() { md.len() } else { 0 },
            inode: md.ino(),
        }
    }
}

enum Scanned {
    File(FileData, FileState),
    /// A directory's entries, and the parent snapshot's tree for it when
    /// that tree holds exactly these entries: it is then kept as it is,
    /// neither encoded nor hashed again.
    Dir(Vec<Entry>, Option<BlobId>),
    Symlink(Vec<u8>),
}

/// What a scanned file's chunks come from.
enum FileData {
    /// Reused from the parent snapshot.
    Reuse(Vec<BlobId>),
    /// To be read: the job, as the scan found it...
    Read(Job),
    /// ...and once numbered ([`number_jobs`]), the index of its job.
    Job(usize),
}

/// Moves every read job out of `entries`, in tree order (the order of a
/// sequential scan), leaving its index in its place.
fn number_jobs(entries: &mut [Entry], jobs: &mut Vec<Job>) {
    for e in entries {
        match &mut e.kind {
            Scanned::File(data @ FileData::Read(_), _) => {
                if let FileData::Read(job) = std::mem::replace(data, FileData::Job(jobs.len())) {
                    jobs.push(job);
                }
            }
            Scanned::File(..) => {}
            Scanned::Dir(children, _) => number_jobs(children, jobs),
            Scanned::Symlink(_) => {}
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FileState {
    New,
    Changed,
    Unchanged,
}

struct Entry {
    name: Vec<u8>,
    meta: Meta,
    kind: Scanned,
}

impl Entry {
    /// Whether this entry would be stored exactly as `p`: the same name,
    /// metadata and content (a file reused unchanged, the same symlink
    /// target, a directory kept as `p`'s tree).
    fn stores_as(&self, p: &Node) -> bool {
        let m = &self.meta;
        self.name == p.name
            && m.mode == p.mode
            && m.mtime == p.mtime
            && m.mtime_nanos == p.mtime_nanos
            && m.uid == p.uid
            && m.gid == p.gid
            && m.size == p.size
            && m.inode == p.inode
            && match (&self.kind, &p.kind) {
                (Scanned::File(FileData::Reuse(c), _), NodeKind::File { chunks }) => c == chunks,
                (Scanned::Dir(_, Some(t)), NodeKind::Dir { tree }) => t == tree,
                (Scanned::Symlink(t), NodeKind::Symlink { target }) => t == target,
                _ => false,
            }
    }
}

/// Whether `entries` (sorted by name) would be stored exactly as `tree`.
fn stored_as(entries: &[Entry], tree: &Tree) -> bool {
    tree.nodes.len() == entries.len()
        && entries.iter().zip(&tree.nodes).all(|(e, p)| e.stores_as(p))
}

struct Job {
    path: PathBuf,
    size: u64,
    /// The parent snapshot's chunks of this file, when it changed: where
    /// delta bases come from.
    parent: Option<Vec<BlobId>>,
}

/// The parent version of a file, laid out: each chunk's id and offset, so a
/// new chunk can be paired with the old chunk at the same place.
struct OldLayout {
    ids: Vec<BlobId>,
    /// Start offset of each chunk, ascending.
    starts: Vec<u64>,
    /// The old file's length.
    end: u64,
    /// Each chunk's position in `ids`, sorted by the id's first 8 bytes
    /// then position (16 bytes a chunk where a map took about 50: a file
    /// of many small chunks keeps its layout small).
    index: Vec<(u64, u32)>,
}

fn id_prefix(id: &BlobId) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(b)
}

impl OldLayout {
    /// Lays out `chunks` with their lengths from the index; `None` when the
    /// index lacks one (no hints then: the chunks are stored whole).
    fn new(repo: &IndexedRepository, chunks: Vec<BlobId>) -> Result<Option<Self>> {
        let mut starts = Vec::with_capacity(chunks.len());
        let mut off = 0u64;
        for c in &chunks {
            let Some(loc) = repo.cache().get(c)? else {
                return Ok(None);
            };
            starts.push(off);
            off += u64::from(loc.entry.raw_length);
        }
        let Ok(n) = u32::try_from(chunks.len()) else {
            return Ok(None);
        };
        let mut index: Vec<(u64, u32)> = (0..n)
            .map(|i| (id_prefix(&chunks[i as usize]), i))
            .collect();
        index.sort_unstable();
        Ok(Some(OldLayout {
            ids: chunks,
            starts,
            end: off,
            index,
        }))
    }

    /// The position of chunk `id` (the first, if it repeats).
    fn position(&self, id: &BlobId) -> Option<usize> {
        let p = id_prefix(id);
        let from = self.index.partition_point(|e| e.0 < p);
        self.index[from..]
            .iter()
            .take_while(|e| e.0 == p)
            .map(|e| e.1 as usize)
            .find(|&i| self.ids[i] == *id)
    }

    /// Length of chunk `i`.
    fn len(&self, i: usize) -> u64 {
        self.starts.get(i + 1).copied().unwrap_or(self.end) - self.starts[i]
    }

    /// The old chunk overlapping most of `[lo, lo + len)`; past the old
    /// end, the last chunk (a file that grew at its end).
    fn best_overlap(&self, lo: u64, len: u64) -> Option<BlobId> {
        let n = self.ids.len();
        if n == 0 {
            return None;
        }
        let i = self.starts.partition_point(|s| *s <= lo).saturating_sub(1);
        let hi = lo + len;
        let end_of = |j: usize| self.starts.get(j + 1).copied().unwrap_or(u64::MAX);
        let overlap = |j: usize| end_of(j).min(hi).saturating_sub(self.starts[j].max(lo));
        let mut best = i;
        if i + 1 < n && overlap(i + 1) > overlap(i) {
            best = i + 1;
        }
        Some(self.ids[best])
    }
}

/// Pairs each chunk of a changed file with a delta base: the old chunk at
/// the same place, reckoned from the last chunk both versions share (rows
/// inserted or deleted before it shift everything after it).
struct BaseFinder<'a> {
    old: &'a OldLayout,
    /// End of the last shared chunk: (offset in the new file, in the old).
    anchor: (u64, u64),
}

impl BaseFinder<'_> {
    fn hint(&mut self, id: &BlobId, off: u64, len: u64) -> Option<BlobId> {
        if let Some(j) = self.old.position(id) {
            self.anchor = (off + len, self.old.starts[j] + self.old.len(j));
            return None;
        }
        let est = self.anchor.1 + off.saturating_sub(self.anchor.0);
        self.old.best_overlap(est, len)
    }
}

/// Cuts a changed file along its previous version where the content is the
/// same, without scanning it. For every chunk it first tries the old chunk
/// expected next: if the bytes at hand, taken at that chunk's length, hash to
/// its id, they are that chunk's content, and the chunker would cut them at
/// the same place (a cut depends only on the bytes since the chunk's start).
/// The one exception is the old file's last chunk, which its end cut: it is
/// tried only against exactly the bytes left (the scan of the same bytes to
/// the same end cuts them the same). Otherwise the chunker scans as usual. Every chunk's id is
/// computed here, once, and handed to the sink in order.
///
/// On a daily re-export most chunks are unchanged, so most of the file is
/// hashed, not scanned (the scan costs about twice the hash).
struct Resync<'a> {
    old: &'a OldLayout,
    chunker: &'a crate::chunk::Chunker,
    keys: &'a crate::crypto::Keys,
    /// The old chunk expected next.
    next: usize,
    /// Offset in the new file of the next chunk.
    off: u64,
    /// End of the last shared chunk: (offset in the new file, in the old).
    anchor: (u64, u64),
    /// Ids of the chunks cut and not yet taken.
    ids: Vec<BlobId>,
}

impl Resync<'_> {
    fn cut(&mut self, rest: &[u8]) -> usize {
        if self.next < self.old.ids.len() {
            let len = self.old.len(self.next) as usize;
            // The old last chunk only when it is all that is left: the
            // scan of the same bytes, to the same end, ends it the same.
            let last = self.next + 1 == self.old.ids.len();
            if len <= rest.len() && (!last || len == rest.len()) {
                let id = self.keys.blob_id(&rest[..len]);
                if id == self.old.ids[self.next] {
                    self.shared(id, len, self.next);
                    return len;
                }
            }
        }
        let n = self.chunker.next_cut(rest).clamp(1, rest.len().max(1));
        let id = self.keys.blob_id(&rest[..n.min(rest.len())]);
        match self.old.position(&id) {
            Some(j) => self.shared(id, n, j),
            None => {
                self.off += n as u64;
                self.ids.push(id);
                // Expect the old chunk that starts where this one ends,
                // shifted as much as the last shared chunk was.
                let est = self.anchor.1 + self.off.saturating_sub(self.anchor.0);
                self.next = self.old.starts.partition_point(|s| *s < est);
            }
        }
        n
    }

    fn shared(&mut self, id: BlobId, len: usize, j: usize) {
        self.off += len as u64;
        self.anchor = (self.off, self.old.starts[j] + self.old.len(j));
        self.next = j + 1;
        self.ids.push(id);
    }
}

/// A read job's result: its chunks and bytes read, or why the source could
/// not be read.
type JobResult = std::result::Result<(Vec<BlobId>, u64), String>;

/// Walks the source. The entries of a directory are scanned in parallel:
/// a backup where nothing changed is mostly this walk, one `statx` per
/// entry and one parent tree per directory.
struct Scanner<'a> {
    repo: &'a IndexedRepository,
    force: bool,
    /// Every chunk of the parent snapshot is known usable (the cache
    /// marked it so in its current epoch): unchanged files need no lookups.
    parent_usable: bool,
    warnings: Mutex<Vec<String>>,
    exclude: Option<&'a crate::commands::browse::Patterns>,
}

impl Scanner<'_> {
    fn warn(&self, msg: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }

    fn parent_tree(&self, tree: Option<&BlobId>) -> Result<Option<Tree>> {
        match tree {
            Some(t) => self.repo.read_tree(t).map(Some),
            None => Ok(None),
        }
    }

    /// Whether the entry at `rel` (its path in the snapshot) is excluded.
    fn excluded(&self, rel: &str) -> bool {
        self.exclude.is_some_and(|x| {
            let name = rel.rsplit('/').next().unwrap_or(rel);
            x.matches(rel, name)
        })
    }

    /// Scans one path given on the command line, at `rel` in the snapshot;
    /// `parent` is the parent snapshot's node for it.
    fn scan(
        &self,
        path: &Path,
        rel: &str,
        name: Vec<u8>,
        parent: Option<&Node>,
    ) -> Result<Option<Entry>> {
        check_interrupt()?;
        match fs::symlink_metadata(path) {
            Ok(md) => self.scan_with(path, &md, rel, name, parent),
            Err(e) => {
                self.warn(format!("{}: {e}", path.display()));
                Ok(None)
            }
        }
    }

    /// [`Self::scan`] for a path whose metadata (not following a symlink)
    /// is `md`.
    fn scan_with(
        &self,
        path: &Path,
        md: &fs::Metadata,
        rel: &str,
        name: Vec<u8>,
        parent: Option<&Node>,
    ) -> Result<Option<Entry>> {
        let meta = Meta::of(md);
        let ft = md.file_type();
        let kind = if ft.is_file() {
            let reuse = match parent {
                Some(Node {
                    kind: NodeKind::File { chunks },
                    size,
                    mtime,
                    mtime_nanos,
                    inode,
                    ..
                }) if !self.force
                    && *size == meta.size
                    && *mtime == meta.mtime
                    && *mtime_nanos == meta.mtime_nanos
                    && *inode == meta.inode =>
                {
                    // Only if the repository still has every chunk, with
                    // its delta chain: otherwise the file is read again, so
                    // a damaged or repaired repository heals on backup.
                    let mut usable = true;
                    if !self.parent_usable {
                        for c in chunks {
                            if !self.repo.has_usable(c)? {
                                usable = false;
                                break;
                            }
                        }
                    }
                    usable.then(|| chunks.clone())
                }
                _ => None,
            };
            let state = match (parent, &reuse) {
                (_, Some(_)) => FileState::Unchanged,
                (
                    Some(Node {
                        kind: NodeKind::File { .. },
                        ..
                    }),
                    None,
                ) => FileState::Changed,
                _ => FileState::New,
            };
            match reuse {
                Some(c) => Scanned::File(FileData::Reuse(c), state),
                None => {
                    let parent = match parent {
                        Some(Node {
                            kind: NodeKind::File { chunks },
                            ..
                        }) if !chunks.is_empty() => Some(chunks.clone()),
                        _ => None,
                    };
                    let job = Job {
                        path: path.to_path_buf(),
                        size: meta.size,
                        parent,
                    };
                    Scanned::File(FileData::Read(job), state)
                }
            }
        } else if ft.is_dir() {
            let ptree = match parent {
                Some(Node {
                    kind: NodeKind::Dir { tree },
                    ..
                }) => self.parent_tree(Some(tree))?,
                _ => None,
            };
            let pmap: HashMap<&[u8], &Node> = ptree
                .as_ref()
                .map(|t| t.nodes.iter().map(|n| (n.name.as_slice(), n)).collect())
                .unwrap_or_default();
            // The entries keep the directory open: each child is examined
            // relative to it (`statx` on the directory and the name, not
            // the whole path walked again for every entry).
            let mut entries: Vec<(std::ffi::OsString, fs::DirEntry)> = match fs::read_dir(path) {
                Ok(rd) => rd
                    .filter_map(|e| match e {
                        Ok(e) => Some((e.file_name(), e)),
                        Err(err) => {
                            self.warn(format!("{}: {err}", path.display()));
                            None
                        }
                    })
                    .collect(),
                Err(e) => {
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            };
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            let scanned = entries
                .par_iter()
                .map(|(n, e)| {
                    check_interrupt()?;
                    let nb = n.as_bytes().to_vec();
                    // Paths are only needed to match excludes.
                    let child_rel = match self.exclude {
                        Some(_) => crate::commands::browse::join(rel, &nb),
                        None => String::new(),
                    };
                    if self.excluded(&child_rel) {
                        return Ok(None);
                    }
                    let child = path.join(n);
                    // Not following a symlink, as `symlink_metadata`.
                    let md = match e.metadata() {
                        Ok(m) => m,
                        Err(err) => {
                            self.warn(format!("{}: {err}", child.display()));
                            return Ok(None);
                        }
                    };
                    let p = pmap.get(nb.as_slice()).copied();
                    self.scan_with(&child, &md, &child_rel, nb, p)
                })
                .collect::<Result<Vec<Option<Entry>>>>()?;
            let children: Vec<Entry> = scanned.into_iter().flatten().collect();
            let same = match (parent, &ptree) {
                (
                    Some(Node {
                        kind: NodeKind::Dir { tree },
                        ..
                    }),
                    Some(t),
                ) if stored_as(&children, t) => Some(*tree),
                _ => None,
            };
            Scanned::Dir(children, same)
        } else if ft.is_symlink() {
            match fs::read_link(path) {
                Ok(t) => Scanned::Symlink(t.as_os_str().as_bytes().to_vec()),
                Err(e) => {
                    self.warn(format!("{}: {e}", path.display()));
                    return Ok(None);
                }
            }
        } else {
            self.warn(format!(
                "{}: skipped special file (device, fifo or socket)",
                path.display()
            ));
            return Ok(None);
        };
        Ok(Some(Entry { name, meta, kind }))
    }
}

/// Read buffers handed from one file to the next. A fresh read block is
/// above glibc's mmap threshold, so every allocation would be mapped and
/// page-faulted in again (a quarter of a million faults per GB read).
#[derive(Default)]
struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    /// At most this many idle buffers are kept: one per worker.
    const KEEP: usize = 2;

    /// A buffer with room for a whole read block. Its pages are touched
    /// only as far as reads fill it, and its size keeps it mmapped (above
    /// the 4 MiB threshold, out of the heap arenas): buffers sized to each
    /// small file fragmented the arenas instead.
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(READ_BLOCK + 1))
    }

    fn give(&self, buf: Vec<u8>) {
        let mut idle = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < Self::KEEP {
            idle.push(buf);
        }
    }
}

/// Reads one file and stores its chunks. `Ok(Err(msg))` means the source
/// could not be read; `Err` is a repository failure and aborts the backup.
fn store_file(
    session: &WriteSession<'_>,
    mut job: Job,
    progress: &dyn Progress,
    bytes_read: &AtomicU64,
    buffers: &BufferPool,
) -> Result<JobResult> {
    let f = match File::open(&job.path) {
        Ok(f) => f,
        Err(e) => return Ok(Err(format!("{}: {e}", job.path.display()))),
    };
    let repo = session.repo();
    let old = match job.parent.take() {
        Some(p) => OldLayout::new(repo, p)?,
        None => None,
    };
    let mut finder = old
        .as_ref()
        .filter(|_| repo.config().delta_depth > 0)
        .map(|old| BaseFinder {
            old,
            anchor: (0, 0),
        });
    let resync = old.as_ref().map(|old| {
        std::cell::RefCell::new(Resync {
            old,
            chunker: repo.chunker(),
            keys: repo.keys(),
            next: 0,
            off: 0,
            anchor: (0, 0),
            ids: Vec::new(),
        })
    });
    // Each RefCell is borrowed by one call at a time: `cut` runs only
    // between calls of the sink, and the sink takes what it needs first.
    let cut = |rest: &[u8]| match &resync {
        Some(r) => r.borrow_mut().cut(rest),
        None => repo.chunker().next_cut(rest),
    };
    let mut ids = Vec::new();
    let mut file_off = 0u64;
    // A small file gets a buffer of its own size (plus one byte to see the
    // end), not a whole read block: 1,900 files of 8 MiB zeroed buffers
    // cost more than reading them.
    let block = usize::try_from(job.size.saturating_add(1))
        .unwrap_or(READ_BLOCK)
        .min(READ_BLOCK);
    let mut buf = buffers.take();
    let r = repo
        .chunker()
        .stream_with(f, block, &mut buf, cut, |block, lens| {
            check_interrupt()?;
            let mut slices = Vec::with_capacity(lens.len());
            let mut pos = 0;
            for &n in lens {
                slices.push(&block[pos..pos + n]);
                pos += n;
            }
            let block_ids: Vec<BlobId> = match &resync {
                Some(r) => std::mem::take(&mut r.borrow_mut().ids),
                None => slices.par_iter().map(|c| repo.keys().blob_id(c)).collect(),
            };
            if block_ids.len() != slices.len() {
                return Err(Error::Invalid(format!(
                    "{}: {} chunks cut but {} ids",
                    job.path.display(),
                    slices.len(),
                    block_ids.len()
                )));
            }
            // Bases are found in file order (the anchor moves forward), then the
            // chunks are sealed in parallel.
            let hints: Vec<Option<BlobId>> = block_ids
                .iter()
                .zip(lens)
                .map(|(id, &n)| {
                    let h = finder.as_mut().and_then(|f| f.hint(id, file_off, n as u64));
                    file_off += n as u64;
                    h
                })
                .collect();
            let add = |i: usize| {
                session
                    .add_data(block_ids[i], slices[i], hints[i].as_ref())
                    .map(|_| ())
            };
            // A small file's few chunks are sealed in turn: files already
            // run in parallel, and a worker waiting on its own chunks would
            // steal further files meanwhile, each holding its read buffer
            // (1,900 files of kissflow: 86 MB peak RSS).
            if job.size < SMALL_FILE {
                (0..slices.len()).try_for_each(add)?;
            } else {
                (0..slices.len()).into_par_iter().try_for_each(add)?;
            }
            ids.extend(block_ids);
            bytes_read.fetch_add(block.len() as u64, Ordering::Relaxed);
            progress.inc(block.len() as u64);
            Ok(())
        });
    buffers.give(buf);
    match r {
        Ok(n) => Ok(Ok((ids, n))),
        Err(StreamError::Read(e)) => Ok(Err(format!("{}: {e}", job.path.display()))),
        Err(StreamError::Sink(e)) => Err(e),
    }
}

#[derive(Default)]
struct Counts {
    files_new: u64,
    files_changed: u64,
    files_unchanged: u64,
    dirs: u64,
    total_files: u64,
    total_bytes: u64,
}

/// Stores the tree of a scanned directory's `entries` and returns its id,
/// or keeps `known` (the parent's tree, which holds exactly these entries);
/// counts the files either way.
fn store_dir(
    session: &WriteSession<'_>,
    entries: Vec<Entry>,
    known: Option<BlobId>,
    results: &mut [Option<JobResult>],
    counts: &mut Counts,
) -> Result<BlobId> {
    let mut nodes = Vec::with_capacity(if known.is_some() { 0 } else { entries.len() });
    for e in entries {
        let mut size = e.meta.size;
        let kind = match e.kind {
            Scanned::File(FileData::Reuse(chunks), state) => {
                count_file(counts, state, size);
                NodeKind::File { chunks }
            }
            // Every job was numbered before the files were read.
            Scanned::File(FileData::Read(job), _) => {
                return Err(Error::Invalid(format!(
                    "{}: scanned but never read",
                    job.path.display()
                )))
            }
            Scanned::File(FileData::Job(job), state) => {
                match results.get_mut(job).and_then(Option::take) {
                    Some(Ok((chunks, n))) => {
                        // The file may have changed size since the scan: record
                        // what was actually read.
                        size = n;
                        count_file(counts, state, size);
                        NodeKind::File { chunks }
                    }
                    _ => continue,
                }
            }
            Scanned::Dir(children, k) => {
                counts.dirs += 1;
                NodeKind::Dir {
                    tree: store_dir(session, children, k, results, counts)?,
                }
            }
            Scanned::Symlink(target) => NodeKind::Symlink { target },
        };
        // A kept tree is only counted: its nodes are not needed.
        if known.is_some() {
            continue;
        }
        nodes.push(Node {
            name: e.name,
            mode: e.meta.mode,
            mtime: e.meta.mtime,
            mtime_nanos: e.meta.mtime_nanos,
            uid: e.meta.uid,
            gid: e.meta.gid,
            size,
            inode: e.meta.inode,
            kind,
        });
    }
    if let Some(id) = known {
        return Ok(id);
    }
    // The nodes (whose chunk lists can be megabytes) go before the blob is
    // sealed.
    let encoded = Tree { nodes }.encode();
    let (id, _) = session.add_blob(BlobKind::Tree, &encoded)?;
    Ok(id)
}

fn count_file(c: &mut Counts, state: FileState, size: u64) {
    c.total_files += 1;
    c.total_bytes += size;
    match state {
        FileState::New => c.files_new += 1,
        FileState::Changed => c.files_changed += 1,
        FileState::Unchanged => c.files_unchanged += 1,
    }
}

/// Backs up `opts.paths` into `repo` and commits a snapshot.
///
/// With one directory path, the snapshot's root is that directory's
/// content; otherwise the root holds one entry per path, named by its last
/// component (which must be unique).
pub fn backup(
    repo: &IndexedRepository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupOutcome> {
    let start = Instant::now();
    if opts.account.is_empty() {
        return Err(Error::Invalid("an account name is required".into()));
    }
    if opts.paths.is_empty() {
        return Err(Error::Invalid("no paths to back up".into()));
    }
    let mut paths = Vec::new();
    for p in &opts.paths {
        let abs = fs::canonicalize(p).map_err(|_| Error::MissingPath(p.clone()))?;
        paths.push(abs);
    }
    paths.sort();
    paths.dedup();
    let path_strings: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let single_dir = paths.len() == 1 && paths[0].is_dir();
    let root_names: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_else(|| b"root".to_vec())
        })
        .collect();
    if !single_dir {
        let mut sorted = root_names.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != root_names.len() {
            return Err(Error::Invalid(
                "two source paths end in the same name; back them up separately".into(),
            ));
        }
    }

    // The parent: the latest snapshot of the same account and paths.
    let parent = repo
        .snapshots()?
        .into_iter()
        .rfind(|(_, s)| s.account == opts.account && s.paths == path_strings);

    // Read before anything is looked up: a mark made at the end counts
    // only if the epoch did not move meanwhile.
    let epoch = repo.cache().epoch()?;
    let parent_usable = match &parent {
        Some((_, s)) => repo.cache().is_usable(&s.tree)?,
        None => false,
    };

    progress.message("scanning");
    let scanner = Scanner {
        repo,
        force: opts.force,
        parent_usable,
        warnings: Mutex::new(Vec::new()),
        exclude: opts.exclude.as_ref(),
    };
    // The parent's root, seen as a directory node, so one code path matches.
    let parent_root = parent.as_ref().map(|(_, s)| Node {
        name: Vec::new(),
        mode: 0,
        mtime: 0,
        mtime_nanos: 0,
        uid: 0,
        gid: 0,
        size: 0,
        inode: 0,
        kind: NodeKind::Dir { tree: s.tree },
    });
    // The root's entries, and the parent's root tree when it holds exactly
    // them.
    let (mut root_entries, root_known): (Vec<Entry>, Option<BlobId>) = if single_dir {
        match scanner.scan(&paths[0], "", Vec::new(), parent_root.as_ref())? {
            Some(Entry {
                kind: Scanned::Dir(children, known),
                ..
            }) => (children, known),
            _ => return Err(Error::MissingPath(paths[0].clone())),
        }
    } else {
        let ptree = match &parent_root {
            Some(Node {
                kind: NodeKind::Dir { tree },
                ..
            }) => Some(repo.read_tree(tree)?),
            _ => None,
        };
        let mut order: Vec<usize> = (0..paths.len()).collect();
        order.sort_by(|a, b| root_names[*a].cmp(&root_names[*b]));
        let mut v = Vec::new();
        for i in order {
            let pn = ptree
                .as_ref()
                .and_then(|t| t.nodes.iter().find(|n| n.name == root_names[i]));
            let rel = String::from_utf8_lossy(&root_names[i]).into_owned();
            if scanner.excluded(&rel) {
                continue;
            }
            if let Some(e) = scanner.scan(&paths[i], &rel, root_names[i].clone(), pn)? {
                v.push(e);
            }
        }
        let known = match (&parent, &ptree) {
            (Some((_, s)), Some(t)) if stored_as(&v, t) => Some(s.tree),
            _ => None,
        };
        (v, known)
    };
    let mut warnings = scanner
        .warnings
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    // In path order, whichever thread found them.
    warnings.sort();
    let mut jobs = Vec::new();
    number_jobs(&mut root_entries, &mut jobs);

    let session = WriteSession::start(repo)?;
    progress.message("reading");
    progress.set_total(jobs.iter().map(|j| j.size).sum());
    let bytes_read = AtomicU64::new(0);
    let warn = Mutex::new(Vec::new());
    let buffers = BufferPool::default();
    // Jobs are consumed: each parent chunk list is freed with its job.
    let mut results: Vec<Option<JobResult>> = jobs
        .into_par_iter()
        .map(|job| {
            let r = store_file(&session, job, progress, &bytes_read, &buffers)?;
            if let Err(m) = &r {
                warn.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(m.clone());
            }
            Ok(Some(r))
        })
        .collect::<Result<Vec<_>>>()?;
    warnings.extend(warn.into_inner().unwrap_or_else(|p| p.into_inner()));

    progress.message("storing trees");
    let mut counts = Counts::default();
    let tree = store_dir(
        &session,
        root_entries,
        root_known,
        &mut results,
        &mut counts,
    )?;
    check_interrupt()?;

    let (time, nanos) = opts.time.unwrap_or_else(|| {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (d.as_secs() as i64, d.subsec_nanos())
    });
    let summary = Summary {
        files_new: counts.files_new,
        files_changed: counts.files_changed,
        files_unchanged: counts.files_unchanged,
        dirs: counts.dirs,
        bytes_read: bytes_read.load(Ordering::Relaxed),
        bytes_added: session.stats.bytes_added.load(Ordering::Relaxed),
        bytes_stored: session.stats.bytes_stored.load(Ordering::Relaxed),
        blobs_added: session.stats.blobs_added.load(Ordering::Relaxed),
        total_files: counts.total_files,
        total_bytes: counts.total_bytes,
        duration_ms: start.elapsed().as_millis() as u64,
        errors: warnings.len() as u64,
    };
    let mut tags = opts.tags.clone();
    tags.sort();
    tags.dedup();
    let snapshot = Snapshot {
        time,
        nanos,
        account: opts.account.clone(),
        host: opts
            .host
            .clone()
            .unwrap_or_else(|| gethostname::gethostname().to_string_lossy().into_owned()),
        program: format!("arca {}", env!("CARGO_PKG_VERSION")),
        tags,
        paths: path_strings,
        tree,
        parent: parent.map(|(id, _)| id),
        summary,
    };
    progress.message("committing");
    let mut notes = session.notes.clone();
    if session.adopted > 0 {
        notes.push(format!(
            "reused {} pack(s) left by an interrupted backup",
            session.adopted
        ));
    }
    let id = session.commit(&snapshot)?;
    // Every chunk of the new snapshot was added, found usable, or taken
    // from a parent known usable: the next backup may trust it, unless a
    // canonical copy changed or an entry went in the meantime.
    // (Best effort: the snapshot is committed; a mark that cannot be
    // written only costs the next backup its lookups.)
    if repo.cache().epoch().is_ok_and(|e| e == epoch) {
        let _ = repo.cache().mark_usable(&snapshot.tree, epoch);
    }
    Ok(BackupOutcome {
        id,
        snapshot,
        warnings,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{backup_tree, small_chunk_repo};
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// The node at `path` (names from the root tree `root`).
    fn node_at(repo: &IndexedRepository, root: &BlobId, path: &[&str]) -> Node {
        let mut tree = repo.read_tree(root).unwrap();
        for (i, name) in path.iter().enumerate() {
            let n = tree
                .nodes
                .into_iter()
                .find(|n| n.name == name.as_bytes())
                .unwrap_or_else(|| panic!("no {name} in {path:?}"));
            if i + 1 == path.len() {
                return n;
            }
            let NodeKind::Dir { tree: t } = n.kind else {
                panic!("{name} is not a directory");
            };
            tree = repo.read_tree(&t).unwrap();
        }
        unreachable!("empty path")
    }

    fn tree_of(repo: &IndexedRepository, root: &BlobId, path: &[&str]) -> BlobId {
        match node_at(repo, root, path).kind {
            NodeKind::Dir { tree } => tree,
            _ => panic!("{path:?} is not a directory"),
        }
    }

    /// A directory keeps its parent's tree only when nothing in it changed:
    /// every kind of change below it (a file's mode, a rename, a symlink's
    /// target, a new empty directory, a directory's own mode) shows in the
    /// new snapshot, and the directories it does not touch keep their trees.
    #[test]
    fn a_directory_keeps_its_parents_tree_only_when_nothing_in_it_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = small_chunk_repo(&tmp.path().join("cache")).unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::create_dir_all(src.join("c")).unwrap();
        fs::write(src.join("a/b/deep.txt"), b"id,qty\n1,5\n").unwrap();
        fs::write(src.join("a/b/other.txt"), b"other").unwrap();
        fs::write(src.join("c/keep.txt"), b"keep").unwrap();
        symlink("b/deep.txt", src.join("a/link")).unwrap();
        let t0 = backup_tree(&repo, &src);

        // Nothing changed: the same trees, and every file counted unchanged.
        let out = backup(
            &repo,
            &BackupOptions {
                paths: vec![src.clone()],
                account: "acme".into(),
                ..BackupOptions::default()
            },
            &crate::commands::NoProgress,
        )
        .unwrap();
        assert_eq!(out.snapshot.tree, t0);
        let s = &out.snapshot.summary;
        assert_eq!((s.files_unchanged, s.total_files, s.dirs), (3, 3, 3));
        let c0 = tree_of(&repo, &t0, &["c"]);

        fs::set_permissions(src.join("a/b/deep.txt"), fs::Permissions::from_mode(0o600)).unwrap();
        let t1 = backup_tree(&repo, &src);
        assert_ne!(t1, t0);
        assert_eq!(
            node_at(&repo, &t1, &["a", "b", "deep.txt"]).mode & 0o777,
            0o600
        );
        assert_eq!(tree_of(&repo, &t1, &["c"]), c0);

        fs::rename(src.join("a/b/other.txt"), src.join("a/b/renamed.txt")).unwrap();
        let t2 = backup_tree(&repo, &src);
        assert_ne!(t2, t1);
        let b2 = repo.read_tree(&tree_of(&repo, &t2, &["a", "b"])).unwrap();
        let names: Vec<&[u8]> = b2.nodes.iter().map(|n| n.name.as_slice()).collect();
        assert_eq!(names, [&b"deep.txt"[..], b"renamed.txt"]);

        fs::remove_file(src.join("a/link")).unwrap();
        symlink("b/renamed.txt", src.join("a/link")).unwrap();
        let t3 = backup_tree(&repo, &src);
        assert_ne!(t3, t2);
        assert!(matches!(
            node_at(&repo, &t3, &["a", "link"]).kind,
            NodeKind::Symlink { target } if target == b"b/renamed.txt"
        ));

        fs::create_dir(src.join("a/b/new")).unwrap();
        let t4 = backup_tree(&repo, &src);
        assert_ne!(t4, t3);
        assert!(matches!(
            node_at(&repo, &t4, &["a", "b", "new"]).kind,
            NodeKind::Dir { .. }
        ));

        // A directory's own mode is in its parent's tree: `a` changes, `b`
        // (whose entries did not) keeps its tree.
        let b4 = tree_of(&repo, &t4, &["a", "b"]);
        fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o700)).unwrap();
        let t5 = backup_tree(&repo, &src);
        assert_ne!(tree_of(&repo, &t5, &["a"]), tree_of(&repo, &t4, &["a"]));
        assert_eq!(node_at(&repo, &t5, &["a", "b"]).mode & 0o777, 0o700);
        assert_eq!(tree_of(&repo, &t5, &["a", "b"]), b4);
        assert_eq!(tree_of(&repo, &t5, &["c"]), c0);

        // Unchanged since: kept whole again.
        assert_eq!(backup_tree(&repo, &src), t5);

        // A file removed (the rest of its directory unchanged) is gone.
        fs::remove_file(src.join("a/b/renamed.txt")).unwrap();
        let t6 = backup_tree(&repo, &src);
        let b6 = repo.read_tree(&tree_of(&repo, &t6, &["a", "b"])).unwrap();
        let names: Vec<&[u8]> = b6.nodes.iter().map(|n| n.name.as_slice()).collect();
        assert_eq!(names, [&b"deep.txt"[..], b"new"]);
    }
}
