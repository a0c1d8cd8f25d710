//! `arca check`: prove the repository whole.
//!
//! Structure: every index file decodes; every pack it lists exists with the
//! listed length; every snapshot decodes; every tree of every snapshot is
//! indexed, decrypts and decodes; every chunk a file needs is indexed as
//! data. With read-data (all packs or a random subset): every pack's bytes
//! hash to its name, its trailer matches the index, and every blob decrypts,
//! decompresses and hashes to its id. Damage is named: pack, blob, and the
//! snapshots and paths that need it. The local cache is not trusted: check
//! reads the index files themselves.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::commands::{check_interrupt, Progress};
use crate::error::{Error, Result};
use crate::format::indexfile::PackListing;
use crate::format::pack::{self, BlobEntry, DeltaRef};
use crate::format::tree::{NodeKind, Tree};
use crate::format::BlobKind;
use crate::id::{BlobId, FileId, PackId, SnapshotId};
use crate::repository::IndexedRepository;

/// How much data to read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Every pack.
    All,
    /// A random subset of packs, this percentage of them (rounded up).
    Subset(f64),
    /// Slice `n` of `t` (counted from 1): the packs whose id, its first 8
    /// bytes read as a little-endian number, leaves `n - 1` when divided
    /// by `t`. The slices part the packs, so `t` runs with `n` = 1..=`t`
    /// (one a day, say) read every pack once; a pack keeps its slice.
    Slice {
        /// Which slice, 1..=`t`.
        n: u64,
        /// How many slices.
        t: u64,
    },
}

impl ReadData {
    /// Whether the pack `p` is read in this mode (before a random subset
    /// is drawn).
    fn takes(&self, p: &PackId) -> bool {
        match *self {
            ReadData::None => false,
            ReadData::All | ReadData::Subset(_) => true,
            ReadData::Slice { n, t } => slice_of(p, t) == n,
        }
    }
}

/// Which of `t` slices (counted from 1) the pack `p` falls in: see
/// [`ReadData::Slice`].
pub fn slice_of(p: &PackId, t: u64) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&p.0[..8]);
    u64::from_le_bytes(first) % t.max(1) + 1
}

/// What check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    /// Damage: each line names what is broken.
    pub errors: Vec<String>,
    /// Not damage, but worth knowing (e.g. unindexed packs).
    pub warnings: Vec<String>,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Distinct trees checked.
    pub trees: u64,
    /// Distinct data blobs referenced.
    pub data_blobs: u64,
    /// Packs in storage.
    pub packs: u64,
    /// Packs read in full.
    pub packs_read: u64,
    /// Bytes read in full.
    pub bytes_read: u64,
}

impl CheckReport {
    /// True when no damage was found.
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Where check's own reading of the index files puts a blob.
type Loc = crate::index::Location;

/// Index files read and absorbed at a time (in parallel, up to 50,000
/// entries each): only their entries, compacted, are kept.
const INDEX_FILES_AT_ONCE: usize = 4;

/// One blob entry of check's index, packed: a [`BlobEntry`] whose delta
/// base, when it has one, is in [`CheckIndex::bases`] (a whole blob carries
/// none), and the number of its pack. 56 bytes, where the entry and pack
/// number took 84.
#[derive(Clone, Copy)]
struct Slot {
    id: BlobId,
    offset: u32,
    length: u32,
    raw_length: u32,
    pack: u32,
    /// Position of the delta's base in `bases`, or [`NO_BASE`].
    base: u32,
    kind: BlobKind,
    /// The entry's chain depth (0: stored whole).
    depth: u8,
}

/// [`Slot::base`] of a blob stored whole.
const NO_BASE: u32 = u32::MAX;

/// Check's own reading of the index files, compact: one sorted array of
/// entries (about 60 bytes a blob, looked up by binary search) where a hash
/// map of locations took four times that, plus the pack order.
#[derive(Default)]
struct CheckIndex {
    packs: Vec<PackId>,
    pack_no: HashMap<PackId, u32>,
    /// The canonical entry of every blob, sorted by id (after `finish`).
    slots: Vec<Slot>,
    /// The bases of delta entries, as listed (some left unused by `finish`).
    bases: Vec<BlobId>,
    /// Ordinals into `slots`, sorted by pack and offset.
    by_pack: Vec<u32>,
    /// Range of each pack's canonical entries in `by_pack`.
    pack_ranges: HashMap<u32, (usize, usize)>,
}

impl CheckIndex {
    fn add(&mut self, packs: &[PackListing]) {
        for p in packs {
            let next = self.packs.len() as u32;
            let no = *self.pack_no.entry(p.id).or_insert(next);
            if no == next {
                self.packs.push(p.id);
            }
            for e in &p.blobs {
                let base = match &e.delta {
                    Some(d) => {
                        self.bases.push(d.base);
                        (self.bases.len() - 1) as u32
                    }
                    None => NO_BASE,
                };
                self.slots.push(Slot {
                    id: e.id,
                    offset: e.offset,
                    length: e.length,
                    raw_length: e.raw_length,
                    pack: no,
                    base,
                    kind: e.kind,
                    depth: e.chain_depth(),
                });
            }
        }
    }

    /// Keeps one entry per blob, as the cache does: of two copies, the one
    /// with the shorter delta chain (the one readers use; the later one
    /// listed at equal depth); then orders the packs' entries.
    fn finish(&mut self) {
        // Sorted through an array of ordinals (stable: entries of one id
        // and depth stay in the order listed), then moved into place: a
        // sort of the entries themselves takes half of them again.
        let mut order: Vec<u32> = (0..self.slots.len() as u32).collect();
        {
            let slots = &self.slots;
            order.sort_by(|&a, &b| {
                let (a, b) = (&slots[a as usize], &slots[b as usize]);
                (a.id, a.depth).cmp(&(b.id, b.depth))
            });
        }
        permute(&mut self.slots, &mut order);
        drop(order);
        // Compacted in place: a second array would double the peak.
        let slots = &mut self.slots;
        let mut kept = 0;
        for r in 0..slots.len() {
            if kept > 0 && slots[kept - 1].id == slots[r].id {
                if slots[r].depth == slots[kept - 1].depth {
                    slots.swap(kept - 1, r);
                }
                continue;
            }
            slots.swap(kept, r);
            kept += 1;
        }
        slots.truncate(kept);
        slots.shrink_to_fit();
        let mut order: Vec<u32> = (0..self.slots.len() as u32).collect();
        order.sort_by_key(|&i| {
            let s = &self.slots[i as usize];
            (s.pack, s.offset)
        });
        let mut start = 0;
        while start < order.len() {
            let pack = self.slots[order[start] as usize].pack;
            let mut end = start;
            while end < order.len() && self.slots[order[end] as usize].pack == pack {
                end += 1;
            }
            self.pack_ranges.insert(pack, (start, end));
            start = end;
        }
        self.by_pack = order;
    }

    /// The entry `s` packs.
    fn entry(&self, s: &Slot) -> BlobEntry {
        BlobEntry {
            kind: s.kind,
            id: s.id,
            offset: s.offset,
            length: s.length,
            raw_length: s.raw_length,
            delta: (s.base != NO_BASE).then(|| DeltaRef {
                base: self.bases[s.base as usize],
                depth: s.depth,
            }),
        }
    }

    fn loc(&self, s: &Slot) -> Loc {
        Loc {
            pack: self.packs[s.pack as usize],
            entry: self.entry(s),
        }
    }

    /// The position of `id` among the blobs.
    fn ordinal(&self, id: &BlobId) -> Option<usize> {
        self.slots.binary_search_by(|s| s.id.cmp(id)).ok()
    }

    fn get(&self, id: &BlobId) -> Option<Loc> {
        self.ordinal(id).map(|i| self.loc(&self.slots[i]))
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn blobs(&self) -> impl Iterator<Item = Loc> + '_ {
        self.slots.iter().map(|s| self.loc(s))
    }

    /// The blobs whose canonical copy is in pack `pid`, in offset order.
    fn canonical_in_pack(&self, pid: &PackId) -> Vec<Loc> {
        let Some(no) = self.pack_no.get(pid) else {
            return Vec::new();
        };
        match self.pack_ranges.get(no) {
            Some(&(a, b)) => self.by_pack[a..b]
                .iter()
                .map(|&i| self.loc(&self.slots[i as usize]))
                .collect(),
            None => Vec::new(),
        }
    }
}

/// Puts `items` in the order `order` gives (`items[i]` becomes the old
/// `items[order[i]]`), one cycle of the permutation at a time: no second
/// array. `order` is left as the identity.
fn permute<T: Copy>(items: &mut [T], order: &mut [u32]) {
    for i in 0..items.len() {
        if order[i] as usize == i {
            continue;
        }
        let first = items[i];
        let mut j = i;
        loop {
            let k = order[j] as usize;
            order[j] = j as u32;
            if k == i {
                items[j] = first;
                break;
            }
            items[j] = items[k];
            j = k;
        }
    }
}

/// Blobs seen by the tree walk: a bit per indexed blob, and a set for ids
/// no index file lists (reported as missing).
struct Seen {
    bits: Vec<u64>,
    unknown: HashSet<BlobId>,
}

impl Seen {
    fn new(n: usize) -> Self {
        Seen {
            bits: vec![0; n.div_ceil(64)],
            unknown: HashSet::new(),
        }
    }

    /// Marks `id`; true when it was not marked yet.
    fn insert(&mut self, index: &CheckIndex, id: &BlobId) -> bool {
        match index.ordinal(id) {
            Some(i) => {
                let (w, b) = (i / 64, 1u64 << (i % 64));
                let new = self.bits[w] & b == 0;
                self.bits[w] |= b;
                new
            }
            None => self.unknown.insert(*id),
        }
    }
}

/// Reads a blob stored whole (a tree). The sealed bytes are freed before
/// the caller decodes the plaintext, so a large tree is held twice at most,
/// not three times (a tree listing 484,000 chunks is 15.5 MB).
fn read_blob(repo: &IndexedRepository, loc: &Loc) -> Result<Vec<u8>> {
    let mut sealed = repo.read_sealed(loc)?;
    open_whole(repo, loc, &mut sealed)
}

/// Decoded bases kept while reading data, so deltas built on the same base
/// (or on each other) do not decode it again. Bounded in bytes.
struct BaseCache {
    map: Mutex<HashMap<BlobId, Arc<Vec<u8>>>>,
    bytes: AtomicU64,
}

/// Budget of [`BaseCache`]: a few hundred default chunks.
const BASE_CACHE_BYTES: u64 = 32 << 20;

impl BaseCache {
    fn get(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn put(&self, id: BlobId, plain: Arc<Vec<u8>>) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if self.bytes.load(Ordering::Relaxed) + plain.len() as u64 > BASE_CACHE_BYTES {
            m.clear();
            self.bytes.store(0, Ordering::Relaxed);
        }
        self.bytes.fetch_add(plain.len() as u64, Ordering::Relaxed);
        m.insert(id, plain);
    }
}

/// What check needs to open any blob: its own reading of the index files
/// (the cache is not trusted) and a cache of decoded bases.
struct Opener<'a> {
    repo: &'a IndexedRepository,
    index: &'a CheckIndex,
    bases: BaseCache,
    /// Which delta is built on which blob.
    children: &'a HashMap<BlobId, Vec<BlobId>>,
    /// Every pack is read: deltas and their bases are only authenticated
    /// while reading packs, and decoded afterwards chain by chain.
    all: bool,
    /// The most of a pack read at once ([`READ_WINDOW`]).
    window: u64,
}

impl Opener<'_> {
    /// The deltas built on `id`.
    fn children_of(&self, id: &BlobId) -> &[BlobId] {
        self.children.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether reading a pack only authenticates this blob (see `all`).
    fn deferred(&self, entry: &BlobEntry) -> bool {
        self.all && (entry.delta.is_some() || self.children.contains_key(&entry.id))
    }

    /// Opens the blob at `loc` from its sealed bytes, decoding the bases of
    /// a delta first (each verified against its own id).
    fn open(&self, loc: &Loc, sealed: &[u8]) -> Result<Vec<u8>> {
        let base = match &loc.entry.delta {
            None => None,
            Some(d) => Some(self.base(&loc.entry.id, d)?),
        };
        pack::open_blob(
            self.repo.keys(),
            &loc.entry,
            sealed,
            &loc.pack,
            base.as_deref().map(Vec::as_slice),
        )
    }

    fn base(&self, id: &BlobId, d: &DeltaRef) -> Result<Arc<Vec<u8>>> {
        if let Some(p) = self.bases.get(&d.base) {
            return Ok(p);
        }
        let loc = chain_step(self.index, id, d)
            .map_err(|m| Error::corrupt(format!("delta blob {id}"), m))?;
        let sealed = self.repo.read_sealed(&loc)?;
        let plain = Arc::new(self.open(&loc, &sealed).map_err(|e| {
            Error::corrupt(
                format!("delta blob {id}"),
                format!("its base {} is unreadable: {e}", d.base),
            )
        })?);
        self.bases.put(d.base, plain.clone());
        Ok(plain)
    }
}

/// Decodes every delta chain once, from its root (a whole blob) down,
/// each blob with its base's plaintext: as much work as decoding every blob
/// whole, where decoding each delta through its chain would repeat the
/// bases for every blob built on them.
struct Chains<'a> {
    opener: &'a Opener<'a>,
    missing_packs: &'a HashSet<PackId>,
    damaged: &'a HashMap<BlobId, String>,
}

impl Chains<'_> {
    /// Problems found: (blob, message) for every blob that does not decode
    /// and every blob built on one.
    fn verify_all(&self) -> Vec<(BlobId, String)> {
        let index = self.opener.index;
        let mut roots: Vec<BlobId> = Vec::new();
        for b in self.opener.children.keys() {
            if index.get(b).is_some_and(|l| l.entry.delta.is_none()) {
                roots.push(*b);
            }
        }
        roots.sort();
        let mut out: Vec<(BlobId, String)> = roots
            .par_iter()
            .map(|r| {
                let mut out = Vec::new();
                self.verify(r, None, &mut out);
                out
            })
            .flatten()
            .collect();
        // Deltas no root reaches: a base missing, or depths that do not
        // step down by one.
        let mut orphans: Vec<(Loc, String)> = Vec::new();
        for l in index.blobs().filter(|l| l.entry.delta.is_some()) {
            let mut cur = l;
            while let Some(d) = cur.entry.delta {
                match chain_step(index, &cur.entry.id, &d) {
                    Ok(b) => cur = b,
                    Err(m) => {
                        orphans.push((l, m));
                        break;
                    }
                }
            }
        }
        orphans.sort_by_key(|(l, _)| l.entry.id);
        for (l, m) in orphans {
            out.push((
                l.entry.id,
                format!(
                    "pack {}: data blob {} at offset {}: cannot be decoded: {m}",
                    l.pack, l.entry.id, l.entry.offset
                ),
            ));
        }
        out
    }

    fn verify(&self, id: &BlobId, base: Option<&[u8]>, out: &mut Vec<(BlobId, String)>) {
        let index = self.opener.index;
        let Some(loc) = index.get(id) else {
            return;
        };
        let plain = if self.missing_packs.contains(&loc.pack) {
            Err(format!("is in missing or truncated pack {}", loc.pack))
        } else if self.damaged.contains_key(id) {
            Err("is damaged".to_string())
        } else {
            let repo = self.opener.repo;
            repo.read_sealed(&loc)
                .and_then(|sealed| {
                    pack::open_blob(repo.keys(), &loc.entry, &sealed, &loc.pack, base)
                })
                .map_err(|e| {
                    let m = format!(
                        "pack {}: data blob {id} at offset {}: {e}",
                        loc.pack, loc.entry.offset
                    );
                    out.push((*id, m));
                    "is unreadable".to_string()
                })
        };
        let depth = loc.entry.delta.map_or(0, |d| d.depth);
        for c in self.opener.children_of(id) {
            let Some(cl) = index.get(c) else {
                continue;
            };
            if cl.entry.delta.map(|d| d.depth) != Some(depth + 1) {
                continue; // reported as an orphan chain
            }
            match &plain {
                Ok(p) => self.verify(c, Some(p), out),
                Err(why) => self.fail(c, id, why, out),
            }
        }
    }

    /// Reports `id` and everything built on it as undecodable because its
    /// base `base` `why`.
    fn fail(&self, id: &BlobId, base: &BlobId, why: &str, out: &mut Vec<(BlobId, String)>) {
        let Some(loc) = self.opener.index.get(id) else {
            return;
        };
        out.push((
            *id,
            format!(
                "pack {}: data blob {id} at offset {}: its base {base} {why}",
                loc.pack, loc.entry.offset
            ),
        ));
        for c in self.opener.children_of(id) {
            self.fail(c, id, "is unreadable", out);
        }
    }
}

/// One step down a delta chain in check's own index: the base of `id`'s
/// delta `d`, which must be a data blob one level shallower.
fn chain_step(index: &CheckIndex, id: &BlobId, d: &DeltaRef) -> std::result::Result<Loc, String> {
    let loc = index.get(&d.base).ok_or_else(|| {
        format!(
            "base {} of delta blob {id} is missing (not in any index file)",
            d.base
        )
    })?;
    let depth = loc.entry.delta.map_or(0, |b| b.depth);
    if loc.entry.kind != BlobKind::Data || depth + 1 != d.depth {
        return Err(format!(
            "base {} of delta blob {id} has depth {depth}, expected {}",
            d.base,
            d.depth - 1
        ));
    }
    Ok(loc)
}

/// Checks the repository.
pub fn check(
    repo: &IndexedRepository,
    read_data: ReadData,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    let mut rep = CheckReport::default();

    // 1. Index files, read directly from the repository (the local cache
    // is not trusted), a few at a time, kept compact.
    progress.message("index files");
    let mut index = CheckIndex::default();
    let mut pack_len: HashMap<PackId, u64> = HashMap::new();
    let names: Vec<String> = repo
        .backend()
        .list(FileKind::Index)?
        .into_iter()
        .map(|l| l.name)
        .collect();
    for group in names.chunks(INDEX_FILES_AT_ONCE) {
        check_interrupt()?;
        let loaded: Vec<(&String, Result<_>)> = group
            .par_iter()
            .map(|n| (n, repo.read_index_file(n)))
            .collect();
        for (name, r) in loaded {
            match r {
                Ok(packs) => {
                    for p in &packs {
                        pack_len.insert(p.id, p.length);
                    }
                    index.add(&packs);
                }
                Err(e) => rep.errors.push(format!("index file {name}: {e}")),
            }
        }
    }

    index.finish();
    let index = &index;

    // 2. Packs: every indexed pack present with its length.
    progress.message("packs");
    let stored: HashMap<PackId, u64> = repo
        .backend()
        .list(FileKind::Pack)?
        .into_iter()
        .filter_map(|l| FileId::from_hex(&l.name).ok().map(|id| (id, l.size)))
        .collect();
    rep.packs = stored.len() as u64;
    let mut missing_packs = HashSet::new();
    let mut sorted: Vec<(&PackId, &u64)> = pack_len.iter().collect();
    sorted.sort();
    for (id, len) in sorted {
        match stored.get(id) {
            None => {
                rep.errors.push(format!(
                    "pack {id}: missing from storage (listed in the index)"
                ));
                missing_packs.insert(*id);
            }
            Some(s) if s != len => {
                rep.errors.push(format!(
                    "pack {id}: {s} bytes in storage, index says {len} (truncated or damaged)"
                ));
                missing_packs.insert(*id);
            }
            _ => {}
        }
    }
    let mut unindexed: Vec<&PackId> = stored
        .keys()
        .filter(|p| !pack_len.contains_key(*p))
        .collect();
    unindexed.sort();
    for p in unindexed {
        rep.warnings.push(format!(
            "pack {p}: not listed in any index file (left by an interrupted backup; the next backup adopts it)"
        ));
    }

    // 3. Read data: damaged blobs found here are then traced to snapshots.
    let mut damaged: HashMap<BlobId, String> = HashMap::new();
    if read_data != ReadData::None {
        let mut packs: Vec<(PackId, u64)> = stored
            .iter()
            .filter(|(p, _)| pack_len.contains_key(*p) && read_data.takes(p))
            .map(|(p, l)| (*p, *l))
            .collect();
        packs.sort();
        if let ReadData::Subset(pct) = read_data {
            let mut salt = [0u8; 32];
            crate::crypto::fill_random(&mut salt)?;
            packs.sort_by_key(|(p, _)| *blake3::keyed_hash(&salt, &p.0).as_bytes());
            let n = ((packs.len() as f64) * pct.clamp(0.0, 100.0) / 100.0).ceil() as usize;
            packs.truncate(n);
        }
        progress.message("reading packs");
        progress.set_total(packs.iter().map(|(_, l)| *l).sum());
        let bytes = AtomicU64::new(0);
        // Which delta is built on which blob, for decoding chains root
        // first (deltas only).
        let mut children: HashMap<BlobId, Vec<BlobId>> = HashMap::new();
        for l in index.blobs() {
            if let Some(d) = &l.entry.delta {
                children.entry(d.base).or_default().push(l.entry.id);
            }
        }
        let all = read_data == ReadData::All;
        let opener = Opener {
            repo,
            index,
            bases: BaseCache {
                map: Mutex::new(HashMap::new()),
                bytes: AtomicU64::new(0),
            },
            children: &children,
            all,
            window: READ_WINDOW,
        };
        let results: Vec<Vec<(Option<BlobId>, String)>> = packs
            .par_iter()
            .enumerate()
            .map(|(i, (pid, _))| {
                check_interrupt()?;
                // Each thread takes a run of consecutive packs: the next
                // one is fetched while this one is verified.
                if let Some((next, _)) = packs.get(i + 1) {
                    repo.backend().prefetch(FileKind::Pack, &next.to_hex());
                }
                let (r, n) = read_pack(&opener, pid, &index.canonical_in_pack(pid));
                bytes.fetch_add(n, Ordering::Relaxed);
                progress.inc(n);
                Ok(r)
            })
            .collect::<Result<_>>()?;
        rep.packs_read = packs.len() as u64;
        rep.bytes_read = bytes.load(Ordering::Relaxed);
        for (blob, msg) in results.into_iter().flatten() {
            rep.errors.push(msg.clone());
            if let Some(b) = blob {
                damaged.insert(b, msg);
            }
        }
        if all {
            progress.message("decoding deltas");
            let chains = Chains {
                opener: &opener,
                missing_packs: &missing_packs,
                damaged: &damaged,
            };
            for (blob, msg) in chains.verify_all() {
                rep.errors.push(msg.clone());
                damaged.insert(blob, msg);
            }
        }
    }

    // 4. Snapshots and their trees.
    progress.message("snapshots");
    let mut snaps = Vec::new();
    for l in repo.backend().list(FileKind::Snapshot)? {
        match FileId::from_hex(&l.name) {
            Ok(id) => match repo.load_snapshot(&id) {
                Ok(s) => snaps.push((id, s)),
                Err(e) => rep.errors.push(format!("snapshot {}: {e}", l.name)),
            },
            Err(_) => rep
                .warnings
                .push(format!("snapshots/{}: not a snapshot file name", l.name)),
        }
    }
    snaps.sort_by_key(|(_, s)| s.time);
    rep.snapshots = snaps.len() as u64;
    let mut seen_trees = Seen::new(index.len());
    let mut seen_data = Seen::new(index.len());
    let mut bad_trees: HashMap<BlobId, String> = HashMap::new();
    let mut tainted: HashSet<BlobId> = HashSet::new();
    let mut w = TreeWalk {
        repo,
        index,
        missing_packs: &missing_packs,
        damaged: &damaged,
        seen_trees: &mut seen_trees,
        seen_data: &mut seen_data,
        trees: 0,
        data_blobs: 0,
        bad_trees: &mut bad_trees,
        tainted: &mut tainted,
        errors: &mut rep.errors,
        snapshot: FileId([0; 32]),
    };
    for (sid, s) in &snaps {
        check_interrupt()?;
        w.snapshot = *sid;
        w.walk(&s.tree, "/")?;
    }
    let (trees, data_blobs) = (w.trees, w.data_blobs);
    rep.trees = trees;
    rep.data_blobs = data_blobs;
    Ok(rep)
}

/// The most of a pack check holds at once per thread while reading it: a
/// window of whole blobs (one blob larger than this is read alone). Whole
/// 16 MiB packs on every core were most of check's peak memory.
const READ_WINDOW: u64 = 2 << 20;

/// Opens a blob stored whole, decrypted where its sealed bytes lie: its
/// plaintext, hashed against its id.
fn open_whole(repo: &IndexedRepository, l: &Loc, sealed: &mut [u8]) -> Result<Vec<u8>> {
    let mut plain = Vec::new();
    pack::decode_into(repo.keys(), &l.entry, sealed, &l.pack, None, &mut plain)?;
    pack::verify_id(repo.keys(), &l.entry, &l.pack, &plain)?;
    Ok(plain)
}

/// Reads one pack from start to end, a window of whole blobs at a time
/// (taken from the whole pack, read in one request, where the backend
/// asks for that), hashing every byte on the way. `indexed`: the blobs
/// whose canonical copy is in this pack.
fn read_pack(opener: &Opener<'_>, pid: &PackId, indexed: &[Loc]) -> PackRead {
    let repo = opener.repo;
    let mut out = Vec::new();
    let name = pid.to_hex();
    let what = format!("pack {pid}");
    let unreadable = |out: &mut Vec<(Option<BlobId>, String)>, blobs: &[Loc], e: &Error| {
        for l in blobs {
            out.push((
                Some(l.entry.id),
                format!("pack {pid}: blob {} unreadable: {e}", l.entry.id),
            ));
        }
    };
    // Remote storage: the whole pack in one request (windows are then
    // taken from it); local: windows read as they come.
    let mut whole = if repo.backend().reads_whole() {
        match repo.backend().read(FileKind::Pack, &name) {
            Ok(b) => Some(b),
            Err(e) => {
                unreadable(&mut out, indexed, &e);
                return (out, 0);
            }
        }
    } else {
        None
    };
    let size = match &whole {
        Some(b) => b.len() as u64,
        None => match repo.backend().size(FileKind::Pack, &name) {
            Ok(n) => n,
            Err(e) => {
                unreadable(&mut out, indexed, &e);
                return (out, 0);
            }
        },
    };
    let listing = match &whole {
        Some(b) => pack::read_trailer(&repo.keys().file, b, &what),
        None => repo.read_pack_listing(pid, size).map(|l| l.blobs),
    };
    match listing {
        Ok(listing) => {
            let tset: HashMap<BlobId, &BlobEntry> = listing.iter().map(|e| (e.id, e)).collect();
            for l in indexed {
                if tset.get(&l.entry.id).copied() != Some(&l.entry) {
                    out.push((
                        Some(l.entry.id),
                        format!(
                            "pack {pid}: blob {} is in the index but not in the pack's trailer",
                            l.entry.id
                        ),
                    ));
                }
            }
        }
        Err(e) => out.push((None, format!("pack {pid}: trailer: {e}"))),
    }
    let mut blobs: Vec<Loc> = indexed.to_vec();
    blobs.sort_by_key(|l| (l.entry.offset, l.entry.length));
    let span = |l: &Loc| {
        let o = u64::from(l.entry.offset);
        (o, o + u64::from(l.entry.length))
    };
    // `alone`: no other entry shares the blob's bytes, so a whole blob
    // may be decrypted where it lies in the window (a tree of a large
    // directory is megabytes: held twice, not three times).
    let check_blob =
        |out: &mut Vec<(Option<BlobId>, String)>, l: &Loc, s: &mut [u8], alone: bool| {
            let r = if opener.deferred(&l.entry) {
                pack::authenticate_blob(repo.keys(), &l.entry, s, pid)
            } else if alone && l.entry.delta.is_none() {
                open_whole(repo, l, s).map(|_| ())
            } else {
                opener.open(l, s).map(|_| ())
            };
            if let Err(e) = r {
                out.push((
                    Some(l.entry.id),
                    format!(
                        "pack {pid}: {} blob {} at offset {}: {e}",
                        l.entry.kind.name(),
                        l.entry.id,
                        l.entry.offset
                    ),
                ));
            }
        };
    let mut hasher = blake3::Hasher::new();
    let mut pos = 0u64;
    let mut next = 0usize;
    while pos < size {
        // Blobs the index places past the end, or overlapping one already
        // passed (a damaged index): each read on its own, or reported.
        while let Some(l) = blobs.get(next) {
            let (o, e) = span(l);
            if e > size {
                out.push((
                    Some(l.entry.id),
                    format!("{what}: blob {} lies past the end", l.entry.id),
                ));
            } else if o < pos {
                match repo.read_sealed(l) {
                    Ok(mut s) => check_blob(&mut out, l, &mut s, true),
                    Err(e) => unreadable(&mut out, std::slice::from_ref(l), &e),
                }
            } else {
                break;
            }
            next += 1;
        }
        // The window: as many whole blobs as fit, at least the first.
        // Entries a damaged index made overlap never stretch past `end`.
        let mut end = (pos + opener.window).min(size);
        let mut last = next;
        let mut covered = pos;
        while let Some(l) = blobs.get(last) {
            let (o, e) = span(l);
            if o >= end || e > size {
                break;
            }
            if e > end {
                if last == next {
                    end = e;
                    last += 1;
                } else {
                    end = o.max(covered);
                }
                break;
            }
            covered = covered.max(e);
            last += 1;
        }
        // The window is hashed before any blob in it is decrypted in place.
        let mut read;
        let buf: &mut [u8] = match &mut whole {
            Some(b) => &mut b[pos as usize..end as usize],
            None => match repo
                .backend()
                .read_range(FileKind::Pack, &name, pos, end - pos)
            {
                Ok(b) => {
                    read = b;
                    &mut read
                }
                Err(e) => {
                    unreadable(&mut out, &blobs[next..], &e);
                    return (out, size);
                }
            },
        };
        hasher.update(buf);
        let window = &blobs[next..last];
        let mut before = pos; // the end of every entry so far
        for (i, l) in window.iter().enumerate() {
            let (o, e) = span(l);
            let alone = before <= o && window.get(i + 1).is_none_or(|n| span(n).0 >= e);
            before = before.max(e);
            let s = &mut buf[(o - pos) as usize..(e - pos) as usize];
            check_blob(&mut out, l, s, alone);
        }
        next = last;
        pos = end;
    }
    for l in &blobs[next..] {
        out.push((
            Some(l.entry.id),
            format!("{what}: blob {} lies past the end", l.entry.id),
        ));
    }
    if FileId::from_hasher(&hasher) != *pid {
        out.push((
            None,
            format!("pack {pid}: contents do not hash to its name (damaged in storage)"),
        ));
    }
    (out, size)
}

/// What reading a pack found: one message per problem (with the blob it
/// concerns, when there is one), and the pack's length in storage (0 when
/// it could not be read).
type PackRead = (Vec<(Option<BlobId>, String)>, u64);

struct TreeWalk<'a> {
    repo: &'a IndexedRepository,
    index: &'a CheckIndex,
    missing_packs: &'a HashSet<PackId>,
    damaged: &'a HashMap<BlobId, String>,
    seen_trees: &'a mut Seen,
    seen_data: &'a mut Seen,
    /// Distinct trees and data blobs seen.
    trees: u64,
    data_blobs: u64,
    bad_trees: &'a mut HashMap<BlobId, String>,
    tainted: &'a mut HashSet<BlobId>,
    errors: &'a mut Vec<String>,
    snapshot: SnapshotId,
}

impl TreeWalk<'_> {
    fn err(&mut self, path: &str, msg: String) {
        self.errors.push(format!(
            "snapshot {} path {path}: {msg}",
            self.snapshot.short()
        ));
    }

    /// Walks a tree; returns whether anything under it is broken. A tree
    /// already walked is skipped unless something under it was broken, so
    /// damage is named under every snapshot and path that needs it.
    fn walk(&mut self, tree: &BlobId, path: &str) -> Result<bool> {
        if let Some(m) = self.bad_trees.get(tree).cloned() {
            self.err(path, m);
            return Ok(true);
        }
        let first = self.seen_trees.insert(self.index, tree);
        if first {
            self.trees += 1;
        } else if !self.tainted.contains(tree) {
            return Ok(false);
        }
        let t = match self.load(tree)? {
            Ok(t) => t,
            Err(m) => {
                self.bad_trees.insert(*tree, m.clone());
                self.err(path, m);
                return Ok(true);
            }
        };
        let mut bad = false;
        for n in &t.nodes {
            let child = format!("{}{}", path, n.name_lossy());
            match &n.kind {
                NodeKind::Dir { tree } => bad |= self.walk(tree, &format!("{child}/"))?,
                NodeKind::File { chunks } => {
                    for c in chunks {
                        if self.seen_data.insert(self.index, c) {
                            self.data_blobs += 1;
                        }
                        let problem = match self.index.get(c) {
                            None => {
                                Some(format!("data blob {c} is missing (not in any index file)"))
                            }
                            Some(l) if l.entry.kind != BlobKind::Data => Some(format!(
                                "blob {c} is a {} blob, expected data",
                                l.entry.kind.name()
                            )),
                            Some(l) if self.missing_packs.contains(&l.pack) => Some(format!(
                                "data blob {c} is in missing or truncated pack {}",
                                l.pack
                            )),
                            Some(l) => match self.damaged.get(c) {
                                Some(m) => Some(format!("data blob {c} is damaged: {m}")),
                                None => self.chain_problem(c, l)?,
                            },
                        };
                        if let Some(p) = problem {
                            self.err(&child, p);
                            bad = true;
                        }
                    }
                }
                NodeKind::Symlink { .. } => {}
            }
        }
        if bad {
            self.tainted.insert(*tree);
        }
        Ok(bad)
    }

    /// The first problem down the delta chain of data blob `c`: a base
    /// missing, inconsistent, in a lost pack, or found damaged. Every blob
    /// built on a damaged base is damaged with it.
    fn chain_problem(&self, c: &BlobId, mut loc: Loc) -> Result<Option<String>> {
        while let Some(d) = loc.entry.delta {
            let id = loc.entry.id;
            loc = match chain_step(self.index, &id, &d) {
                Ok(l) => l,
                Err(m) => return Ok(Some(format!("data blob {c} cannot be decoded: {m}"))),
            };
            if self.missing_packs.contains(&loc.pack) {
                return Ok(Some(format!(
                    "data blob {c} depends on base {} in missing or truncated pack {}",
                    d.base, loc.pack
                )));
            }
            if let Some(m) = self.damaged.get(&d.base) {
                return Ok(Some(format!(
                    "data blob {c} depends on damaged base {}: {m}",
                    d.base
                )));
            }
        }
        Ok(None)
    }

    /// The tree `id`, or why it cannot be read.
    fn load(&self, id: &BlobId) -> Result<std::result::Result<Tree, String>> {
        let Some(loc) = self.index.get(id) else {
            return Ok(Err(format!("tree {id} is missing (not in any index file)")));
        };
        if loc.entry.kind != BlobKind::Tree {
            return Ok(Err(format!(
                "blob {id} is a {} blob, expected a tree",
                loc.entry.kind.name()
            )));
        }
        if self.missing_packs.contains(&loc.pack) {
            return Ok(Err(format!(
                "tree {id} is in missing or truncated pack {}",
                loc.pack
            )));
        }
        Ok(read_blob(self.repo, &loc)
            .map_err(|e| format!("tree {id}: {e}"))
            .and_then(|body| Tree::decode(&body, &format!("tree {id}")).map_err(|e| e.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::DeltaRef;

    fn entry(id: u8, offset: u32, depth: u8) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            id: BlobId([id; 32]),
            offset,
            length: 10,
            raw_length: 10,
            delta: (depth > 0).then_some(DeltaRef {
                base: BlobId([200; 32]),
                depth,
            }),
        }
    }

    fn listing(pack: u8, blobs: Vec<BlobEntry>) -> PackListing {
        PackListing {
            id: FileId([pack; 32]),
            length: 1000,
            blobs,
        }
    }

    #[test]
    fn slices_follow_the_spec_vector() {
        // format-spec.md §2.
        let id = |first: u8| {
            let mut b = [0u8; 32];
            b[0] = first;
            b[20] = 0xff;
            FileId(b)
        };
        assert_eq!(slice_of(&id(1), 3), 2);
        assert_eq!(slice_of(&id(3), 3), 1);
        assert_eq!(slice_of(&id(3), 1), 1);
        let mut hi = [0u8; 32];
        hi[7] = 0x80; // 2^63 = 3 mod 5
        assert_eq!(slice_of(&FileId(hi), 5), 4);
        assert!(ReadData::Slice { n: 2, t: 3 }.takes(&id(1)));
        assert!(!ReadData::Slice { n: 1, t: 3 }.takes(&id(1)));
    }

    #[test]
    fn the_index_keeps_the_shorter_chain_and_orders_packs() {
        let mut ix = CheckIndex::default();
        // Blob 1: a delta in pack A, whole in pack B (B wins). Blob 2: the
        // same depth in A then C (the later one wins). Blob 3 only in A.
        ix.add(&[listing(
            0xa,
            vec![entry(3, 300, 0), entry(1, 100, 2), entry(2, 200, 1)],
        )]);
        ix.add(&[listing(0xb, vec![entry(1, 50, 0)])]);
        // Built on another base than A's copy: the kept entry is C's whole.
        let mut in_c = entry(2, 70, 1);
        in_c.delta = Some(DeltaRef {
            base: BlobId([201; 32]),
            depth: 1,
        });
        ix.add(&[listing(0xc, vec![in_c])]);
        ix.finish();
        assert_eq!(ix.len(), 3);
        let l1 = ix.get(&BlobId([1; 32])).unwrap();
        assert_eq!((l1.pack, l1.entry), (FileId([0xb; 32]), entry(1, 50, 0)));
        let l2 = ix.get(&BlobId([2; 32])).unwrap();
        assert_eq!((l2.pack, l2.entry), (FileId([0xc; 32]), in_c));
        let l3 = ix.get(&BlobId([3; 32])).unwrap();
        assert_eq!(l3.entry, entry(3, 300, 0));
        assert!(ix.get(&BlobId([9; 32])).is_none());
        let a: Vec<u32> = ix
            .canonical_in_pack(&FileId([0xa; 32]))
            .iter()
            .map(|l| l.entry.offset)
            .collect();
        assert_eq!(a, vec![300], "only blob 3's canonical copy is in A");
        assert_eq!(ix.canonical_in_pack(&FileId([0xb; 32])).len(), 1);
        assert!(ix.canonical_in_pack(&FileId([0xd; 32])).is_empty());
        let mut seen = Seen::new(ix.len());
        assert!(seen.insert(&ix, &BlobId([2; 32])));
        assert!(!seen.insert(&ix, &BlobId([2; 32])));
        assert!(seen.insert(&ix, &BlobId([9; 32])));
        assert!(!seen.insert(&ix, &BlobId([9; 32])));
    }

    /// A pack is read in windows of whole blobs, and whole (once) only from
    /// a backend that asks for it: every window size (one blob at a time
    /// up to the whole pack) finds nothing in a sound pack, and names
    /// exactly the flipped blob and the pack's hash in a damaged one;
    /// entries of a damaged index that overlap, or lie past the end, are
    /// reported without upsetting the windows.
    #[test]
    fn packs_are_read_in_windows_of_whole_blobs() {
        use crate::backend::MemoryBackend;
        for whole in [false, true] {
            let mem = Arc::new(if whole {
                MemoryBackend::reading_whole()
            } else {
                MemoryBackend::new()
            });
            read_pack_in_windows(mem, whole);
        }
    }

    fn read_pack_in_windows(mem: Arc<crate::backend::MemoryBackend>, whole: bool) {
        use crate::repository::{InitOptions, Repository};
        use crate::session::WriteSession;
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn crate::backend::Backend> = mem.clone();
        let opts = InitOptions {
            kdf: crate::crypto::KdfParams::CHEAPEST,
            ..InitOptions::default()
        };
        let repo = Repository::init(backend, b"pw", &opts)
            .unwrap()
            .open_index(dir.path())
            .unwrap();
        // Noise does not compress: sealed sizes follow these lengths, one
        // blob larger than most windows below.
        let sizes = [
            3_000, 70_000, 1_000, 150_000, 20_000, 400_000, 5_000, 90_000,
        ];
        let mut session = WriteSession::start(&repo).unwrap();
        for (i, n) in sizes.iter().enumerate() {
            session
                .add_blob(BlobKind::Data, &crate::testutil::noise(*n, i as u64))
                .unwrap();
        }
        session.flush().unwrap();
        let packs = repo.backend().list(FileKind::Pack).unwrap();
        assert_eq!(packs.len(), 1);
        let pid = PackId::from_hex(&packs[0].name).unwrap();
        let mut index = CheckIndex::default();
        index.add(&[repo.read_pack_listing(&pid, packs[0].size).unwrap()]);
        index.finish();
        let indexed = index.canonical_in_pack(&pid);
        assert_eq!(indexed.len(), sizes.len());
        let children = HashMap::new();
        let opener = |window| Opener {
            repo: &repo,
            index: &index,
            bases: BaseCache {
                map: Mutex::new(HashMap::new()),
                bytes: AtomicU64::new(0),
            },
            children: &children,
            all: true,
            window,
        };
        let windows = [1, 4_096, 100_000, 200_000, READ_WINDOW, u64::MAX / 2];
        for w in windows {
            let (problems, n) = read_pack(&opener(w), &pid, &indexed);
            assert_eq!(problems, vec![], "window {w}");
            assert_eq!(n, packs[0].size);
        }
        // Read whole only where the backend asks for it, once per pack.
        let want = if whole { windows.len() as u64 } else { 0 };
        assert_eq!(mem.reads(FileKind::Pack), want, "whole-pack reads");

        // Damage one byte inside the fourth blob.
        let mut bytes = repo.backend().read(FileKind::Pack, &pid.to_hex()).unwrap();
        let hit = indexed.iter().max_by_key(|l| l.entry.length).unwrap().entry;
        bytes[hit.offset as usize + hit.length as usize / 2] ^= 0x40;
        repo.backend()
            .write(FileKind::Pack, &pid.to_hex(), &bytes)
            .unwrap();
        for w in windows {
            let (got, _) = read_pack(&opener(w), &pid, &indexed);
            let blobs: Vec<Option<BlobId>> = got.iter().map(|(b, _)| *b).collect();
            assert_eq!(blobs, vec![Some(hit.id), None], "window {w}: {got:?}");
            assert!(got[1].1.contains("do not hash to its name"), "{got:?}");
        }

        // A damaged index: one entry overlapping its neighbours, one past
        // the end of the pack (neither is in the trailer either).
        let mut bad = indexed.clone();
        let mut overlap = bad[2];
        overlap.entry.id = BlobId([1; 32]);
        overlap.entry.offset -= 10;
        overlap.entry.length += 20;
        let mut past = bad[0];
        past.entry.id = BlobId([2; 32]);
        past.entry.offset = packs[0].size as u32 - 5;
        bad.push(overlap);
        bad.push(past);
        for w in windows {
            let (got, _) = read_pack(&opener(w), &pid, &bad);
            let mut blobs: Vec<Option<BlobId>> = got.iter().map(|(b, _)| *b).collect();
            blobs.sort();
            blobs.dedup();
            let mut want = vec![
                Some(hit.id),
                None,
                Some(overlap.entry.id),
                Some(past.entry.id),
            ];
            want.sort();
            assert_eq!(blobs, want, "window {w}: {got:?}");
            assert!(
                got.iter().any(|(_, m)| m.contains("lies past the end")),
                "{got:?}"
            );
        }
    }

    /// `permute` moves every item to where the order says, over cycles of
    /// every length (fixed points, swaps, one long cycle), and the index's
    /// entries stay packed small.
    #[test]
    fn permute_applies_an_order_in_place() {
        let orders: [&[u32]; 4] = [&[0, 1, 2, 3], &[1, 0, 3, 2], &[3, 0, 1, 2], &[2, 0, 1, 3]];
        for o in orders {
            let mut items: Vec<char> = vec!['a', 'b', 'c', 'd'];
            let want: Vec<char> = o.iter().map(|&k| items[k as usize]).collect();
            let mut order = o.to_vec();
            permute(&mut items, &mut order);
            assert_eq!(items, want, "{o:?}");
            assert_eq!(order, vec![0, 1, 2, 3]);
        }
        // A shuffled thousand: an order made by sorting pseudo-random keys.
        let keys: Vec<u64> = (0..1000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7)
            .collect();
        let mut order: Vec<u32> = (0..1000).collect();
        order.sort_by_key(|&i| keys[i as usize]);
        let mut items = keys.clone();
        permute(&mut items, &mut order);
        let mut sorted = keys;
        sorted.sort();
        assert_eq!(items, sorted);
        assert!(std::mem::size_of::<Slot>() <= 56);
    }
}
