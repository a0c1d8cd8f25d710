//! `arca mount`: the repository's snapshots as a read-only file system
//! (FUSE), to browse and copy from with any tool.
//!
//! ```text
//! accounts/<account>/<time>/…    a snapshot's files; <time> in RFC 3339 UTC,
//!                                with "-<short id>" after a second's first
//! accounts/<account>/latest      symlink to the account's newest snapshot
//! ids/<short id>                 symlink to accounts/<account>/<time>
//! ```
//!
//! [`SnapshotFs`] holds the file system's logic over the repository API and
//! is usable (and tested) without FUSE; a thin [`fuser::Filesystem`] adapter
//! serves it to the kernel. Trees are read when a directory is first listed
//! or looked into, a file's chunk layout when it is first opened, and chunks
//! when read, each verified against its id as `restore` does, through a
//! bounded cache of decoded chunks. Snapshots made after the mount appear
//! when a top-level directory is next looked at, at most every
//! [`REFRESH`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    ReplyStatfs, Request,
};

use crate::commands::{check_interrupt, format_time};
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::format::BlobKind;
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// The snapshot list is read again at most this often.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Decoded chunks kept for reads to come (the kernel reads a file in pieces
/// of 128 KiB, smaller than most chunks).
pub const CHUNK_CACHE_BYTES: usize = 16 << 20;

/// Chunks decoded ahead of a read (see [`SnapshotFs::read_ahead`]).
pub const READ_AHEAD: usize = 2;

/// A data chunk, decoded in this thread's buffer (a chain's links and
/// all) and kept as the blob's bytes alone.
fn decode_chunk(repo: &IndexedRepository, id: &BlobId) -> Result<Arc<Vec<u8>>> {
    let loc = repo.locate(id)?;
    DECODE.with(|b| {
        let mut buf = b.borrow_mut();
        let r = repo.read_blob_into(&loc, &mut buf)?;
        let d = Arc::new(buf[r].to_vec());
        if buf.capacity() > KEEP_BUFFER {
            *buf = Vec::new();
        }
        Ok(d)
    })
}

thread_local! {
    /// Each serving thread's decoding buffer, reused from chunk to chunk.
    static DECODE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A decoding buffer larger than this is freed rather than kept.
const KEEP_BUFFER: usize = 16 << 20;

/// How long the kernel may keep what it was told: a snapshot's content never
/// changes; the top-level directories do when snapshots come and go.
const TTL_CONTENT: Duration = Duration::from_secs(3600);
const TTL_TOP: Duration = Duration::from_secs(1);

/// What to show.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Only this account's snapshots.
    pub account: Option<String>,
    /// How often at most the snapshot list is read again.
    pub refresh: Duration,
    /// Let other users use the mount; the kernel then checks every file's
    /// mode and owner as backed up (`default_permissions`).
    pub allow_other: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            account: None,
            refresh: REFRESH,
            allow_other: false,
        }
    }
}

/// What an inode is.
#[derive(Debug)]
enum Kind {
    Root,
    Accounts,
    Ids,
    Account(String),
    Link(Vec<u8>),
    /// A snapshot's root or a directory in it; its entries once listed.
    Dir {
        tree: BlobId,
        entries: OnceLock<Arc<Vec<DirEntry>>>,
    },
    /// A file; the end offset of each chunk once opened.
    File {
        node: Node,
        ends: OnceLock<Arc<Vec<u64>>>,
    },
}

impl Kind {
    /// Whether an existing inode stands for the same thing as `new` (then
    /// its number is kept; otherwise the name gets a new inode).
    fn same(&self, new: &Kind) -> bool {
        match (self, new) {
            (Kind::Account(a), Kind::Account(b)) => a == b,
            (Kind::Link(a), Kind::Link(b)) => a == b,
            (Kind::Dir { tree: a, .. }, Kind::Dir { tree: b, .. }) => a == b,
            (Kind::File { node: a, .. }, Kind::File { node: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// One inode: what it is and its attributes.
#[derive(Debug)]
struct Inode {
    kind: Kind,
    parent: u64,
    perm: u16,
    mtime: SystemTime,
    uid: u32,
    gid: u32,
    size: u64,
}

/// An entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// File name.
    pub name: Vec<u8>,
    /// Its inode number.
    pub ino: u64,
    /// Its type.
    pub kind: FileType,
}

/// Attributes of an inode, as `stat` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File type.
    pub kind: FileType,
    /// Permission bits.
    pub perm: u16,
    /// Size in bytes (files; link targets' length for symlinks).
    pub size: u64,
    /// Modification time.
    pub mtime: SystemTime,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// The snapshots on show: account → (directory name, snapshot) by time.
#[derive(Default)]
struct Listing {
    accounts: BTreeMap<String, Vec<(String, SnapRef)>>,
    loaded: Option<Instant>,
}

#[derive(Clone)]
struct SnapRef {
    hex: String,
    tree: BlobId,
    time: SystemTime,
}

#[derive(Default)]
struct Table {
    /// Inode `n` is at index `n - 1`.
    inodes: Vec<Arc<Inode>>,
    names: HashMap<(u64, Vec<u8>), u64>,
}

/// A bounded cache of decoded chunks, least recently used out first.
struct ChunkCache {
    map: HashMap<BlobId, (Arc<Vec<u8>>, u64)>,
    bytes: usize,
    tick: u64,
    budget: usize,
}

impl ChunkCache {
    fn get(&mut self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(id).map(|(d, t)| {
            *t = tick;
            Arc::clone(d)
        })
    }

    fn put(&mut self, id: BlobId, data: Arc<Vec<u8>>) {
        self.tick += 1;
        if let Some((old, _)) = self.map.insert(id, (Arc::clone(&data), self.tick)) {
            self.bytes -= old.len();
        }
        self.bytes += data.len();
        while self.bytes > self.budget && self.map.len() > 1 {
            let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| *k)
            else {
                break;
            };
            if let Some((d, _)) = self.map.remove(&oldest) {
                self.bytes -= d.len();
            }
        }
    }
}

/// The file system over one repository.
pub struct SnapshotFs {
    repo: Arc<IndexedRepository>,
    opts: MountOptions,
    table: RwLock<Table>,
    listing: Mutex<Listing>,
    cache: Arc<Mutex<ChunkCache>>,
    /// Chunks being decoded ahead of the reads, and the signal that one
    /// is done.
    ahead: Arc<(Mutex<HashSet<BlobId>>, Condvar)>,
    mounted_at: SystemTime,
    uid: u32,
    gid: u32,
}

/// Inode numbers of the fixed directories.
const ROOT: u64 = 1;
const ACCOUNTS: u64 = 2;
const IDS: u64 = 3;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_time(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .unwrap_or(UNIX_EPOCH)
    }
}

impl SnapshotFs {
    /// The file system over `repo`, with its snapshot list read now.
    pub fn new(repo: Arc<IndexedRepository>, opts: MountOptions) -> Result<Self> {
        repo.check_features(crate::format::config::Operation::Read)?;
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let fs = SnapshotFs {
            repo,
            opts,
            table: RwLock::new(Table::default()),
            listing: Mutex::new(Listing::default()),
            cache: Arc::new(Mutex::new(ChunkCache {
                map: HashMap::new(),
                bytes: 0,
                tick: 0,
                budget: CHUNK_CACHE_BYTES,
            })),
            ahead: Arc::new((Mutex::new(HashSet::new()), Condvar::new())),
            mounted_at: SystemTime::now(),
            uid,
            gid,
        };
        {
            let mut t = fs
                .table
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for kind in [Kind::Root, Kind::Accounts, Kind::Ids] {
                let ino = t.inodes.len() as u64 + 1;
                t.inodes.push(Arc::new(fs.synthetic(kind, ROOT, 0o555)));
                debug_assert!(ino <= IDS);
            }
        }
        fs.reload()?;
        Ok(fs)
    }

    fn synthetic(&self, kind: Kind, parent: u64, perm: u16) -> Inode {
        let size = match &kind {
            Kind::Link(t) => t.len() as u64,
            _ => 0,
        };
        Inode {
            kind,
            parent,
            perm,
            mtime: self.mounted_at,
            uid: self.uid,
            gid: self.gid,
            size,
        }
    }

    /// Reads the snapshot list (and new index files) again.
    fn reload(&self) -> Result<()> {
        self.repo.sync_index()?;
        let mut snaps = self.repo.snapshots()?;
        snaps.retain(|(_, s)| self.opts.account.as_ref().is_none_or(|a| &s.account == a));
        // Oldest first; within a second, by nanos then id, so the first of
        // a second keeps the plain name.
        snaps.sort_by(|(ia, a), (ib, b)| (a.time, a.nanos, ia).cmp(&(b.time, b.nanos, ib)));
        let mut accounts: BTreeMap<String, Vec<(String, SnapRef)>> = BTreeMap::new();
        for (id, s) in snaps {
            let list = accounts.entry(s.account.clone()).or_default();
            let mut name = format_time(s.time, 0);
            if list.iter().any(|(n, _)| n.starts_with(&name)) {
                name = format!("{name}-{}", id.short());
            }
            list.push((
                name,
                SnapRef {
                    hex: id.to_hex(),
                    tree: s.tree,
                    time: unix_time(s.time, s.nanos),
                },
            ));
        }
        let mut l = lock(&self.listing);
        l.accounts = accounts;
        l.loaded = Some(Instant::now());
        Ok(())
    }

    /// Reloads the snapshot list when it is older than the refresh period; a
    /// failure keeps the list as it was.
    fn refresh(&self) {
        let stale = lock(&self.listing)
            .loaded
            .is_none_or(|t| t.elapsed() >= self.opts.refresh);
        if stale {
            if let Err(e) = self.reload() {
                eprintln!("arca mount: cannot refresh the snapshot list: {e}");
                lock(&self.listing).loaded = Some(Instant::now());
            }
        }
    }

    fn inode(&self, ino: u64) -> Option<Arc<Inode>> {
        let t = self
            .table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ino.checked_sub(1)
            .and_then(|i| t.inodes.get(i as usize))
            .map(Arc::clone)
    }

    /// The inode of `name` in `parent`: the one it had if it still stands
    /// for the same thing, else a new one made by `make`.
    fn child(&self, parent: u64, name: &[u8], make: impl FnOnce() -> Inode) -> u64 {
        let key = (parent, name.to_vec());
        let new = make();
        let mut t = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&ino) = t.names.get(&key) {
            if t.inodes[(ino - 1) as usize].kind.same(&new.kind) {
                return ino;
            }
        }
        t.inodes.push(Arc::new(new));
        let ino = t.inodes.len() as u64;
        t.names.insert(key, ino);
        ino
    }

    fn node_inode(&self, parent: u64, node: &Node) -> Inode {
        let kind = match &node.kind {
            NodeKind::Dir { tree } => Kind::Dir {
                tree: *tree,
                entries: OnceLock::new(),
            },
            NodeKind::File { .. } => Kind::File {
                node: node.clone(),
                ends: OnceLock::new(),
            },
            NodeKind::Symlink { target } => Kind::Link(target.clone()),
        };
        let size = match &node.kind {
            NodeKind::Symlink { target } => target.len() as u64,
            _ => node.size,
        };
        Inode {
            kind,
            parent,
            perm: (node.mode & 0o7777) as u16,
            mtime: unix_time(node.mtime, node.mtime_nanos),
            uid: node.uid,
            gid: node.gid,
            size,
        }
    }

    /// A directory's entries, without "." and "..".
    pub fn list(&self, ino: u64) -> Result<Vec<DirEntry>> {
        let inode = self.inode(ino).ok_or_else(|| not_found(ino))?;
        let dir = |name: &str, ino| DirEntry {
            name: name.as_bytes().to_vec(),
            ino,
            kind: FileType::Directory,
        };
        let link = |name: &str, ino| DirEntry {
            name: name.as_bytes().to_vec(),
            ino,
            kind: FileType::Symlink,
        };
        match &inode.kind {
            Kind::Root => Ok(vec![dir("accounts", ACCOUNTS), dir("ids", IDS)]),
            Kind::Accounts => {
                self.refresh();
                let names: Vec<String> = lock(&self.listing).accounts.keys().cloned().collect();
                Ok(names
                    .iter()
                    .map(|a| dir(&dir_name(a), self.account_ino(a)))
                    .collect())
            }
            Kind::Account(a) => {
                self.refresh();
                let snaps = lock(&self.listing)
                    .accounts
                    .get(a)
                    .cloned()
                    .unwrap_or_default();
                let mut out: Vec<DirEntry> = snaps
                    .iter()
                    .map(|(name, s)| dir(name, self.snapshot_ino(ino, name, s)))
                    .collect();
                if let Some((newest, _)) = snaps.last() {
                    out.push(link("latest", self.link_ino(ino, "latest", newest)));
                }
                Ok(out)
            }
            Kind::Ids => {
                self.refresh();
                let l = lock(&self.listing);
                let mut ids: Vec<(String, String)> = l
                    .accounts
                    .iter()
                    .flat_map(|(a, v)| {
                        v.iter().map(move |(n, s)| {
                            (s.hex.clone(), format!("../accounts/{}/{n}", dir_name(a)))
                        })
                    })
                    .collect();
                drop(l);
                ids.sort();
                // Short ids, or the whole id where two share a short one.
                let short = |h: &str| h[..8].to_string();
                let mut count: HashMap<String, usize> = HashMap::new();
                for (h, _) in &ids {
                    *count.entry(short(h)).or_default() += 1;
                }
                Ok(ids
                    .iter()
                    .map(|(hex, target)| {
                        let s = short(hex);
                        let name = if count[&s] > 1 { hex.clone() } else { s };
                        link(&name, self.link_ino(IDS, &name, target))
                    })
                    .collect())
            }
            Kind::Dir { tree, entries } => {
                if let Some(e) = entries.get() {
                    return Ok(e.as_ref().clone());
                }
                let t = self.repo.read_tree(tree)?;
                let list: Vec<DirEntry> = t
                    .nodes
                    .iter()
                    .map(|n| DirEntry {
                        name: n.name.clone(),
                        ino: self.child(ino, &n.name, || self.node_inode(ino, n)),
                        kind: match n.kind {
                            NodeKind::Dir { .. } => FileType::Directory,
                            NodeKind::File { .. } => FileType::RegularFile,
                            NodeKind::Symlink { .. } => FileType::Symlink,
                        },
                    })
                    .collect();
                let list = Arc::new(list);
                let _ = entries.set(Arc::clone(&list));
                Ok(list.as_ref().clone())
            }
            Kind::File { .. } | Kind::Link(_) => {
                Err(Error::Invalid(format!("inode {ino} is not a directory")))
            }
        }
    }

    fn account_ino(&self, account: &str) -> u64 {
        self.child(ACCOUNTS, dir_name(account).as_bytes(), || {
            self.synthetic(Kind::Account(account.to_string()), ACCOUNTS, 0o555)
        })
    }

    fn snapshot_ino(&self, parent: u64, name: &str, s: &SnapRef) -> u64 {
        self.child(parent, name.as_bytes(), || Inode {
            mtime: s.time,
            ..self.synthetic(
                Kind::Dir {
                    tree: s.tree,
                    entries: OnceLock::new(),
                },
                parent,
                0o555,
            )
        })
    }

    fn link_ino(&self, parent: u64, name: &str, target: &str) -> u64 {
        self.child(parent, name.as_bytes(), || {
            self.synthetic(Kind::Link(target.as_bytes().to_vec()), parent, 0o777)
        })
    }

    /// The inode of `name` in directory `parent`, if there is one.
    pub fn find(&self, parent: u64, name: &[u8]) -> Result<Option<u64>> {
        if name == b"." {
            return Ok(Some(parent));
        }
        if name == b".." {
            return Ok(self.inode(parent).map(|i| i.parent));
        }
        Ok(self
            .list(parent)?
            .into_iter()
            .find(|e| e.name == name)
            .map(|e| e.ino))
    }

    /// The inode at `path` ("accounts/acme/latest/orders.csv"), following
    /// no symlink but "latest" and "ids/…" as a shell would.
    pub fn resolve(&self, path: &str) -> Result<Option<u64>> {
        let mut ino = ROOT;
        let mut parts: Vec<Vec<u8>> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(|p| p.as_bytes().to_vec())
            .rev()
            .collect();
        let mut hops = 0;
        while let Some(part) = parts.pop() {
            let Some(next) = self.find(ino, &part)? else {
                return Ok(None);
            };
            let inode = self.inode(next).ok_or_else(|| not_found(next))?;
            match &inode.kind {
                Kind::Link(t) if !parts.is_empty() && self.synthetic_link(&inode) => {
                    hops += 1;
                    if hops > 8 || t.starts_with(b"/") {
                        return Ok(None);
                    }
                    parts.extend(
                        t.split(|&b| b == b'/')
                            .filter(|p| !p.is_empty())
                            .map(<[u8]>::to_vec)
                            .rev(),
                    );
                }
                _ => ino = next,
            }
        }
        Ok(Some(ino))
    }

    /// Whether `inode` is a link arca made ("latest", "ids/…"), which
    /// [`Self::resolve`] follows; a snapshot's own links are the data.
    fn synthetic_link(&self, inode: &Inode) -> bool {
        self.inode(inode.parent)
            .is_some_and(|p| matches!(p.kind, Kind::Ids | Kind::Account(_)))
    }

    /// The attributes of an inode.
    pub fn attr(&self, ino: u64) -> Option<Attr> {
        let i = self.inode(ino)?;
        let kind = match &i.kind {
            Kind::Root | Kind::Accounts | Kind::Ids | Kind::Account(_) | Kind::Dir { .. } => {
                FileType::Directory
            }
            Kind::Link(_) => FileType::Symlink,
            Kind::File { .. } => FileType::RegularFile,
        };
        Some(Attr {
            ino,
            kind,
            perm: i.perm,
            size: i.size,
            mtime: i.mtime,
            uid: i.uid,
            gid: i.gid,
        })
    }

    /// A symlink's target.
    pub fn link_target(&self, ino: u64) -> Result<Vec<u8>> {
        match self.inode(ino).map(|i| match &i.kind {
            Kind::Link(t) => Some(t.clone()),
            _ => None,
        }) {
            Some(Some(t)) => Ok(t),
            Some(None) => Err(Error::Invalid(format!("inode {ino} is not a symlink"))),
            None => Err(not_found(ino)),
        }
    }

    /// Where each chunk of a file ends, read from the index once; fails
    /// when the chunks do not add up to the file's size.
    fn layout(&self, ino: u64) -> Result<(Arc<Inode>, Arc<Vec<u64>>)> {
        let inode = self.inode(ino).ok_or_else(|| not_found(ino))?;
        let Kind::File { node, ends } = &inode.kind else {
            return Err(Error::Invalid(format!("inode {ino} is not a file")));
        };
        if let Some(e) = ends.get() {
            let e = Arc::clone(e);
            return Ok((inode, e));
        }
        let NodeKind::File { chunks } = &node.kind else {
            return Err(Error::Invalid(format!("inode {ino} is not a file")));
        };
        let mut v = Vec::with_capacity(chunks.len());
        let mut end = 0u64;
        for c in chunks {
            let loc = self.repo.locate(c)?;
            if loc.entry.kind != BlobKind::Data {
                return Err(Error::corrupt(
                    format!("blob {c} (file {})", node.name_lossy()),
                    format!("is a {} blob, expected data", loc.entry.kind.name()),
                ));
            }
            end += u64::from(loc.entry.raw_length);
            v.push(end);
        }
        if end != node.size {
            return Err(Error::corrupt(
                format!("file {}", node.name_lossy()),
                format!("its chunks hold {end} bytes, its size is {}", node.size),
            ));
        }
        let v = Arc::new(v);
        let _ = ends.set(Arc::clone(&v));
        Ok((inode, v))
    }

    /// Checks a file can be read (its chunks are all in the index).
    pub fn open_file(&self, ino: u64) -> Result<()> {
        self.layout(ino).map(|_| ())
    }

    fn chunk(&self, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        if let Some(d) = lock(&self.cache).get(id) {
            return Ok(d);
        }
        // Being decoded ahead: wait for it rather than decode it twice.
        {
            let (set, done) = &*self.ahead;
            let mut s = lock(set);
            while s.contains(id) {
                s = done
                    .wait(s)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        if let Some(d) = lock(&self.cache).get(id) {
            return Ok(d);
        }
        let d = decode_chunk(&self.repo, id)?;
        lock(&self.cache).put(*id, Arc::clone(&d));
        Ok(d)
    }

    /// Starts decoding the [`READ_AHEAD`] chunks from `from` on the thread
    /// pool, so that a file read in order finds them decoded: the kernel
    /// asks for 128 KiB at a time and waits for each answer, which left one
    /// core idle. A chunk that fails is left for the read that needs it to
    /// report.
    fn read_ahead(&self, chunks: &[BlobId], from: usize) {
        for id in chunks.iter().skip(from).take(READ_AHEAD) {
            let cached = lock(&self.cache).map.contains_key(id);
            if cached || !lock(&self.ahead.0).insert(*id) {
                continue;
            }
            let (repo, cache, ahead, id) = (
                Arc::clone(&self.repo),
                Arc::clone(&self.cache),
                Arc::clone(&self.ahead),
                *id,
            );
            rayon::spawn(move || {
                if let Ok(d) = decode_chunk(&repo, &id) {
                    lock(&cache).put(id, d);
                }
                lock(&ahead.0).remove(&id);
                ahead.1.notify_all();
            });
        }
    }

    /// Up to `size` bytes of a file from `offset` (fewer at its end).
    pub fn read_at(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let (inode, ends) = self.layout(ino)?;
        let Kind::File { node, .. } = &inode.kind else {
            return Err(Error::Invalid(format!("inode {ino} is not a file")));
        };
        let NodeKind::File { chunks } = &node.kind else {
            return Err(Error::Invalid(format!("inode {ino} is not a file")));
        };
        let end = offset.saturating_add(u64::from(size)).min(node.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        let mut i = ends.partition_point(|&e| e <= offset);
        while pos < end {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            let data = self.chunk(&chunks[i])?;
            if data.len() as u64 != ends[i] - start {
                return Err(Error::corrupt(
                    format!("blob {}", chunks[i]),
                    "decodes to another length than its index entry",
                ));
            }
            let to = end.min(ends[i]);
            out.extend_from_slice(&data[(pos - start) as usize..(to - start) as usize]);
            pos = to;
            i += 1;
        }
        self.read_ahead(chunks, i);
        Ok(out)
    }

    fn ttl(&self, ino: u64) -> Duration {
        match self
            .inode(ino)
            .map(|i| matches!(i.kind, Kind::Dir { .. } | Kind::File { .. }))
        {
            Some(true) if ino > IDS => TTL_CONTENT,
            _ => TTL_TOP,
        }
    }

    fn file_attr(&self, ino: u64) -> Option<FileAttr> {
        let a = self.attr(ino)?;
        Some(FileAttr {
            ino: INodeNo(a.ino),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind: a.kind,
            perm: a.perm,
            nlink: if a.kind == FileType::Directory { 2 } else { 1 },
            uid: a.uid,
            gid: a.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

/// An account's directory name: any account name made one path component
/// ('%', '/' and NUL percent-encoded, "." and ".." as %2E), the same name
/// for the same account, and no two accounts with one name.
pub fn dir_name(account: &str) -> String {
    let mut out = String::with_capacity(account.len());
    for c in account.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            '\0' => out.push_str("%00"),
            c => out.push(c),
        }
    }
    match out.as_str() {
        "" => "%".into(),
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => out,
    }
}

fn not_found(ino: u64) -> Error {
    Error::Invalid(format!("no inode {ino}"))
}

/// The errno a failed request answers with; the cause goes to stderr, as
/// the kernel passes on only the number.
fn errno(what: &str, e: &Error) -> Errno {
    eprintln!("arca mount: {what}: {e}");
    match e {
        Error::Interrupted => Errno::EINTR,
        _ => Errno::EIO,
    }
}

impl Filesystem for SnapshotFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.find(parent.0, name.as_bytes()) {
            Ok(Some(ino)) => match self.file_attr(ino) {
                Some(a) => reply.entry(&self.ttl(ino), &a, Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(errno(&format!("lookup {name:?}"), &e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.file_attr(ino.0) {
            Some(a) => reply.attr(&self.ttl(ino.0), &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.link_target(ino.0) {
            Ok(t) => reply.data(&t),
            Err(_) => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.open_file(ino.0) {
            // A snapshot's files never change: the kernel may keep their
            // pages from one open to the next.
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno(&format!("open inode {}", ino.0), &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_at(ino.0, offset, size) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&format!("read inode {}", ino.0), &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match self.list(ino.0) {
            Ok(l) => l,
            Err(e) => return reply.error(errno(&format!("list inode {}", ino.0), &e)),
        };
        let parent = self.inode(ino.0).map_or(ROOT, |i| i.parent);
        let dots = [
            (ino.0, FileType::Directory, b".".as_slice()),
            (parent, FileType::Directory, b".."),
        ];
        let all = dots
            .into_iter()
            .chain(list.iter().map(|e| (e.ino, e.kind, e.name.as_slice())));
        for (i, (eino, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(eino), i as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.table.read().map_or(0, |t| t.inodes.len() as u64);
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }
}

/// Mounts the snapshots at `mountpoint` and serves them until it is
/// unmounted (`fusermount3 -u`) or Ctrl-C; `ready` is called once the
/// mount is in place.
pub fn mount(
    repo: Arc<IndexedRepository>,
    mountpoint: &Path,
    opts: MountOptions,
    ready: impl FnOnce(),
) -> Result<()> {
    let meta = std::fs::metadata(mountpoint).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingPath(mountpoint.to_path_buf()),
        _ => Error::io(mountpoint, e),
    })?;
    if !meta.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not a directory",
            mountpoint.display()
        )));
    }
    let allow_other = opts.allow_other;
    let fs = SnapshotFs::new(repo, opts)?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::RO,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::FSName("arca".into()),
        fuser::MountOption::Subtype("arca".into()),
    ];
    if allow_other {
        // Other users, but never past a file's own permissions.
        config.acl = fuser::SessionACL::All;
        config
            .mount_options
            .push(fuser::MountOption::DefaultPermissions);
    }
    config.n_threads = Some(
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(2)
            .clamp(2, 8),
    );
    let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| {
        Error::Invalid(format!(
            "cannot mount at {}: {e} (is FUSE available: /dev/fuse and fusermount3 from the fuse3 package?)",
            mountpoint.display()
        ))
    })?;
    ready();
    loop {
        if session.guard.is_finished() {
            // Unmounted from outside.
            return session.join().map_err(|e| Error::io(mountpoint, e));
        }
        if check_interrupt().is_err() {
            return session
                .umount_and_join()
                .map_err(|e| Error::io(mountpoint, e));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::backup::{backup, BackupOptions};
    use crate::commands::NoProgress;
    use crate::testutil::{noise, small_chunk_repo};
    use std::os::unix::fs::PermissionsExt;

    fn snap(repo: &IndexedRepository, src: &Path, account: &str, time: (i64, u32)) {
        backup(
            repo,
            &BackupOptions {
                paths: vec![src.to_path_buf()],
                account: account.into(),
                time: Some(time),
                ..BackupOptions::default()
            },
            &NoProgress,
        )
        .unwrap();
    }

    /// Every byte of `want` through reads of `step` bytes from `start`.
    fn read_all(fs: &SnapshotFs, ino: u64, start: u64, step: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut off = start;
        loop {
            let d = fs.read_at(ino, off, step).unwrap();
            if d.is_empty() {
                return out;
            }
            off += d.len() as u64;
            out.extend_from_slice(&d);
        }
    }

    #[test]
    fn snapshots_browse_and_read_as_their_files() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = small_chunk_repo(&tmp.path().join("cache")).unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("apps/crm")).unwrap();
        let big = noise(300_000, 7);
        std::fs::write(src.join("apps/crm/page-1.json"), &big).unwrap();
        std::fs::write(src.join("orders.csv"), b"id,total\n1,10\n").unwrap();
        std::fs::set_permissions(
            src.join("orders.csv"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        std::os::unix::fs::symlink("apps/crm/page-1.json", src.join("first-page")).unwrap();
        snap(&repo, &src, "acme", (1_709_258_400, 0));
        std::fs::write(src.join("orders.csv"), b"id,total\n1,10\n2,20\n").unwrap();
        // Two snapshots in one second: the later gets its id in its name.
        snap(&repo, &src, "acme", (1_709_344_800, 0));
        snap(&repo, &src.join("apps"), "acme", (1_709_344_800, 500));
        let repo = Arc::new(repo);
        let fs = SnapshotFs::new(
            Arc::clone(&repo),
            MountOptions {
                refresh: Duration::ZERO,
                ..MountOptions::default()
            },
        )
        .unwrap();
        let names = |ino| -> Vec<String> {
            fs.list(ino)
                .unwrap()
                .iter()
                .map(|e| String::from_utf8_lossy(&e.name).into_owned())
                .collect()
        };
        assert_eq!(names(ROOT), ["accounts", "ids"]);
        assert_eq!(names(ACCOUNTS), ["acme"]);
        let acme = fs.resolve("accounts/acme").unwrap().unwrap();
        let listed = names(acme);
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert_eq!(listed[0], "2024-03-01T02:00:00Z");
        assert_eq!(listed[1], "2024-03-02T02:00:00Z");
        assert!(listed[2].starts_with("2024-03-02T02:00:00Z-"), "{listed:?}");
        assert_eq!(listed[3], "latest");
        let latest = fs.find(acme, b"latest").unwrap().unwrap();
        assert_eq!(fs.link_target(latest).unwrap(), listed[2].as_bytes());
        assert_eq!(names(IDS).len(), 3);
        let id = &names(IDS)[0];
        let via_id = fs.resolve(&format!("ids/{id}")).unwrap().unwrap();
        let target = String::from_utf8(fs.link_target(via_id).unwrap()).unwrap();
        assert!(target.starts_with("../accounts/acme/2024-03-0"), "{target}");

        // The first snapshot, through its name and through its id link.
        let day1 = "accounts/acme/2024-03-01T02:00:00Z";
        assert_eq!(
            names(fs.resolve(day1).unwrap().unwrap()),
            ["apps", "empty", "first-page", "orders.csv"]
        );
        let orders = fs.resolve(&format!("{day1}/orders.csv")).unwrap().unwrap();
        assert_eq!(fs.read_at(orders, 0, 4096).unwrap(), b"id,total\n1,10\n");
        let a = fs.attr(orders).unwrap();
        assert_eq!((a.kind, a.perm, a.size), (FileType::RegularFile, 0o640, 14));
        let meta = std::fs::metadata(src.join("orders.csv")).unwrap();
        assert!(a.mtime <= meta.modified().unwrap());
        let d2 = "accounts/acme/2024-03-02T02:00:00Z";
        let orders2 = fs.resolve(&format!("{d2}/orders.csv")).unwrap().unwrap();
        assert_eq!(
            fs.read_at(orders2, 0, 4096).unwrap(),
            b"id,total\n1,10\n2,20\n"
        );
        assert_eq!(fs.read_at(orders2, 9, 4).unwrap(), b"1,10");
        let empty = fs.resolve(&format!("{d2}/empty")).unwrap().unwrap();
        assert!(fs.read_at(empty, 0, 100).unwrap().is_empty());
        let link = fs.resolve(&format!("{d2}/first-page")).unwrap().unwrap();
        assert_eq!(fs.attr(link).unwrap().kind, FileType::Symlink);
        assert_eq!(fs.link_target(link).unwrap(), b"apps/crm/page-1.json");

        // A file of many chunks reads back whole in pieces that straddle
        // chunk ends, from any offset, and stops at its end.
        let page = fs
            .resolve(&format!("{d2}/apps/crm/page-1.json"))
            .unwrap()
            .unwrap();
        fs.open_file(page).unwrap();
        let (_, ends) = fs.layout(page).unwrap();
        assert!(ends.len() >= 5, "{} chunks", ends.len());
        // Reading the first bytes starts decoding the next chunks.
        let Kind::File { node, .. } = &fs.inode(page).unwrap().kind else {
            panic!("a file")
        };
        let NodeKind::File { chunks } = &node.kind else {
            panic!("a file")
        };
        fs.read_at(page, 0, 10).unwrap();
        let t0 = Instant::now();
        while !chunks[1..=READ_AHEAD]
            .iter()
            .all(|c| lock(&fs.cache).map.contains_key(c))
        {
            assert!(t0.elapsed() < Duration::from_secs(10), "not decoded ahead");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!lock(&fs.cache).map.contains_key(&chunks[READ_AHEAD + 1]));
        assert_eq!(read_all(&fs, page, 0, 131_072), big);
        assert_eq!(read_all(&fs, page, 0, 7_777), big);
        assert_eq!(read_all(&fs, page, 123_457, 50_000), &big[123_457..]);
        let at = ends[1] - 10;
        assert_eq!(
            fs.read_at(page, at, 20).unwrap(),
            &big[at as usize..at as usize + 20]
        );
        assert!(fs
            .read_at(page, big.len() as u64 + 5, 10)
            .unwrap()
            .is_empty());
        // "latest" (the apps-only snapshot) is followed like a directory.
        let via_latest = fs
            .resolve("accounts/acme/latest/crm/page-1.json")
            .unwrap()
            .unwrap();
        assert_eq!(read_all(&fs, via_latest, 0, 65_536), big);

        // Not found, not a file, not a link.
        assert_eq!(fs.resolve(&format!("{d2}/nothing")).unwrap(), None);
        assert_eq!(fs.resolve("accounts/nobody").unwrap(), None);
        assert!(fs.read_at(acme, 0, 10).is_err());
        assert!(fs.list(orders).is_err());
        assert!(fs.link_target(orders).is_err());

        // A snapshot made after the mount shows at the next refresh, with
        // its account; inode numbers already given stay the same.
        snap(&repo, &src, "beta", (1_709_431_200, 0));
        assert_eq!(names(ACCOUNTS), ["acme", "beta"]);
        assert_eq!(
            fs.resolve(&format!("{d2}/orders.csv")).unwrap(),
            Some(orders2)
        );
        let beta = fs
            .resolve("accounts/beta/latest/orders.csv")
            .unwrap()
            .unwrap();
        assert_eq!(fs.read_at(beta, 0, 100).unwrap(), b"id,total\n1,10\n2,20\n");
        // An account name with a slash is one directory.
        snap(&repo, &src, "team/a", (1_709_431_300, 0));
        assert_eq!(names(ACCOUNTS), ["acme", "beta", "team%2Fa"]);
        let t = fs
            .resolve("accounts/team%2Fa/latest/orders.csv")
            .unwrap()
            .unwrap();
        assert_eq!(fs.read_at(t, 0, 100).unwrap(), b"id,total\n1,10\n2,20\n");
        let ids = fs.list(IDS).unwrap();
        let to_team: Vec<String> = ids
            .iter()
            .map(|e| String::from_utf8(fs.link_target(e.ino).unwrap()).unwrap())
            .filter(|t| t.contains("team"))
            .collect();
        assert_eq!(to_team.len(), 1);
        assert!(
            to_team[0].starts_with("../accounts/team%2Fa/"),
            "{to_team:?}"
        );
        // With an account filter, only its snapshots.
        let only = SnapshotFs::new(
            Arc::clone(&repo),
            MountOptions {
                account: Some("beta".into()),
                ..MountOptions::default()
            },
        )
        .unwrap();
        let accts: Vec<_> = only
            .list(ACCOUNTS)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(accts, [b"beta".to_vec()]);
        assert_eq!(only.list(IDS).unwrap().len(), 1);
    }

    #[test]
    fn account_names_become_one_path_component_each() {
        assert_eq!(dir_name("acme"), "acme");
        assert_eq!(dir_name("a/b"), "a%2Fb");
        assert_eq!(dir_name("a%2Fb"), "a%252Fb", "no two accounts share a name");
        assert_eq!(dir_name(".."), "%2E%2E");
        assert_eq!(dir_name("."), "%2E");
        assert_eq!(dir_name("x\0y"), "x%00y");
        assert_eq!(dir_name("..a"), "..a");
    }

    #[test]
    fn the_chunk_cache_keeps_to_its_budget_and_drops_the_least_recent() {
        let mut c = ChunkCache {
            map: HashMap::new(),
            bytes: 0,
            tick: 0,
            budget: 250,
        };
        let id = |b: u8| BlobId([b; 32]);
        c.put(id(1), Arc::new(vec![1; 100]));
        c.put(id(2), Arc::new(vec![2; 100]));
        assert!(c.get(&id(1)).is_some());
        c.put(id(3), Arc::new(vec![3; 100]));
        assert_eq!(c.bytes, 200);
        assert!(c.get(&id(2)).is_none(), "2 was the least recently used");
        assert!(c.get(&id(1)).is_some() && c.get(&id(3)).is_some());
        // A chunk over the whole budget is still kept, alone.
        c.put(id(4), Arc::new(vec![4; 400]));
        assert_eq!(c.map.len(), 1);
        assert_eq!(c.bytes, 400);
    }
}
