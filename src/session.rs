//! Write sessions: the only way to add blobs and commit a snapshot.
//!
//! The write order of format-spec.md §13 is enforced here and nowhere else:
//! 1. blobs are appended to packs; a full pack is written durably;
//! 2. durable packs are listed in an index file, written durably (every few
//!    packs, and at commit);
//! 3. the snapshot is written last, after every pack and index file it
//!    needs is durable. [`WriteSession::commit`] consumes the session, so no
//!    snapshot can be written before its data.
//!
//! A session dropped without commit (error, Ctrl-C, kill -9) leaves complete
//! packs in storage; the next session adopts those no index file lists.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::backend::{Backend, FileKind};
use crate::error::{Error, Result};
use crate::format::indexfile::PackListing;
use crate::format::pack::{self, BlobEntry, DeltaRef, SealedBlob};
use crate::format::snapshot::Snapshot;
use crate::format::{header, limits, BlobKind, ObjectType};
use crate::id::{BlobId, FileId, SnapshotId};
use crate::repository::IndexedRepository;

/// Packs written before an index file lists them: bounds what an
/// interrupted backup leaves unindexed (the next backup adopts them anyway).
const PACKS_PER_INDEX_FILE: usize = 8;
/// Blob entries per index file, whatever the blob size: readers hold a
/// whole index file in memory while absorbing it.
const BLOBS_PER_INDEX_FILE: usize = 50_000;

struct Packer {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl Packer {
    /// A packer whose buffer already has room for `target` bytes and a
    /// trailer, so filling a data pack never copies (pages are only touched
    /// as they are written); tree packs start small.
    fn for_kind(kind: BlobKind, target: usize) -> Self {
        let room = match kind {
            BlobKind::Data => target + (target >> 4),
            BlobKind::Tree => 0,
        };
        let mut buf = Vec::with_capacity(room);
        buf.extend_from_slice(&header(ObjectType::Pack));
        Packer {
            buf,
            entries: Vec::new(),
        }
    }

    fn append(&mut self, b: &SealedBlob) -> Result<()> {
        let offset =
            u32::try_from(self.buf.len()).map_err(|_| Error::Invalid("pack too large".into()))?;
        self.entries.push(BlobEntry {
            kind: b.kind,
            id: b.id,
            offset,
            length: b.bytes.len() as u32,
            raw_length: b.raw_length,
            delta: b.delta,
        });
        self.buf.extend_from_slice(&b.bytes);
        Ok(())
    }

    fn full(&self, target: usize) -> bool {
        self.buf.len() >= target || self.entries.len() as u32 >= limits::MAX_PACK_BLOBS - 1
    }
}

/// Counters of what a session added.
#[derive(Default, Debug)]
pub struct SessionStats {
    /// Blobs new to the repository.
    pub blobs_added: AtomicU64,
    /// Their plaintext bytes.
    pub bytes_added: AtomicU64,
    /// Their sealed bytes.
    pub bytes_stored: AtomicU64,
    /// Of the blobs added, those stored as deltas.
    pub deltas_added: AtomicU64,
    /// Packs written.
    pub packs_written: AtomicU64,
}

/// A closed pack on its way to storage: its bytes (trailer included) and
/// its entries.
type ClosedPack = (Vec<u8>, Vec<BlobEntry>);

/// What the pack writer thread reports back.
#[derive(Default)]
struct Written {
    /// Packs durable in storage, not yet listed in an index file.
    packs: Vec<PackListing>,
    /// The first write failure; the session fails with it.
    error: Option<Error>,
}

/// Two threads that write closed packs while the workers go on compressing
/// and sealing: the writer hashes a pack and writes it (its bytes are freed
/// then), the syncer makes it durable (fsync, rename, directory fsync) and
/// lists it. The hand-off to the writer is a rendezvous, so at most one
/// closed pack waits besides the one being written, and none waits for an
/// fsync: memory stays bounded by a few packs whatever the backup's size.
struct PackWriter {
    tx: Option<SyncSender<ClosedPack>>,
    threads: Vec<JoinHandle<()>>,
    written: Arc<Mutex<Written>>,
}

/// A pack written, on its way to durability.
type Staged = (crate::backend::Durable, PackListing);

/// Packs written and waiting for the syncer, at most.
const STAGED_PACKS: usize = 4;

impl PackWriter {
    fn start(backend: Arc<dyn Backend>) -> Result<Self> {
        let (tx, rx) = sync_channel::<ClosedPack>(0);
        let (stx, srx) = sync_channel::<Staged>(STAGED_PACKS);
        let written = Arc::new(Mutex::new(Written::default()));
        let fail = |out: &Arc<Mutex<Written>>, e: Error| {
            lock(out).error.get_or_insert(e);
        };
        let out = Arc::clone(&written);
        let writer = std::thread::Builder::new()
            .name("arca-pack-writer".into())
            .spawn(move || {
                for (bytes, blobs) in rx {
                    let id = FileId::of(&bytes);
                    let length = bytes.len() as u64;
                    match backend.write_staged(FileKind::Pack, &id.to_hex(), bytes) {
                        Ok(durable) => {
                            let listing = PackListing { id, length, blobs };
                            if stx.send((durable, listing)).is_err() {
                                return; // the syncer failed and said why
                            }
                        }
                        Err(e) => {
                            fail(&out, e);
                            // Dropping the receiver makes every later send
                            // fail, so the workers stop.
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::Invalid(format!("cannot start the pack writer: {e}")))?;
        let out = Arc::clone(&written);
        let syncer = std::thread::Builder::new()
            .name("arca-pack-sync".into())
            .spawn(move || {
                for (durable, listing) in srx {
                    match durable() {
                        Ok(()) => lock(&out).packs.push(listing),
                        Err(e) => {
                            fail(&out, e);
                            return;
                        }
                    }
                }
            })
            .map_err(|e| Error::Invalid(format!("cannot start the pack syncer: {e}")))?;
        Ok(PackWriter {
            tx: Some(tx),
            threads: vec![writer, syncer],
            written,
        })
    }

    /// The writer's failure, if it had one.
    fn failure(&self) -> Result<()> {
        match lock(&self.written).error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Hands a closed pack to the writer (waits while it is busy).
    fn send(&self, pack: ClosedPack) -> Result<()> {
        self.failure()?;
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Invalid("pack writer already closed".into()))?;
        if tx.send(pack).is_err() {
            self.failure()?;
            return Err(Error::Invalid("the pack writer stopped".into()));
        }
        Ok(())
    }

    /// Waits until every pack handed over is durable.
    fn finish(&mut self) -> Result<()> {
        self.tx = None;
        // The writer first: its end closes the syncer's channel.
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                return Err(Error::Invalid("the pack writer panicked".into()));
            }
        }
        self.failure()
    }

    /// Takes the durable packs not yet listed when there are enough for an
    /// index file (or all of them with `all`).
    fn take_batch(&self, all: bool) -> Vec<PackListing> {
        let mut w = lock(&self.written);
        if all
            || w.packs.len() >= PACKS_PER_INDEX_FILE
            || w.packs.iter().map(|p| p.blobs.len()).sum::<usize>() >= BLOBS_PER_INDEX_FILE
        {
            std::mem::take(&mut w.packs)
        } else {
            Vec::new()
        }
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        // A session dropped without commit: let the writer finish what it
        // has (those packs are adopted by the next session).
        let _ = self.finish();
    }
}

/// An open write session on an indexed repository.
pub struct WriteSession<'a> {
    repo: &'a IndexedRepository,
    writer: Mutex<PackWriter>,
    packers: [Mutex<Packer>; 2],
    pending: Mutex<HashSet<BlobId>>,
    index_files: Mutex<Vec<String>>,
    /// What this session added so far.
    pub stats: SessionStats,
    /// Packs left by interrupted sessions that this one adopted.
    pub adopted: usize,
    /// Things about the repository worth telling the user (not errors).
    pub notes: Vec<String>,
}

fn slot(kind: BlobKind) -> usize {
    match kind {
        BlobKind::Data => 0,
        BlobKind::Tree => 1,
    }
}

impl<'a> WriteSession<'a> {
    /// Starts a session. Packs left by interrupted sessions are adopted first
    /// (listed in a new index file) so their blobs are reused, not rewritten.
    pub fn start(repo: &'a IndexedRepository) -> Result<Self> {
        repo.check_features(crate::format::config::Operation::Write)?;
        repo.sync_index()?;
        let mut notes = Vec::new();
        let orphans: Vec<PackListing> = repo
            .unindexed_packs()?
            .into_iter()
            .filter_map(|r| match r {
                Ok(l) => Some(l),
                Err(e) => {
                    // A damaged orphan cannot hold anything a snapshot needs;
                    // leave it for check to report.
                    notes.push(format!("ignoring unreadable unindexed pack: {e}"));
                    None
                }
            })
            .collect();
        let orphans_len = orphans.len();
        if !orphans.is_empty() {
            repo.write_index_file(&orphans)?;
        }
        Ok(WriteSession {
            repo,
            writer: Mutex::new(PackWriter::start(Arc::clone(repo.backend()))?),
            packers: [BlobKind::Data, BlobKind::Tree]
                .map(|k| Mutex::new(Packer::for_kind(k, repo.config().pack_target as usize))),
            pending: Mutex::new(HashSet::new()),
            index_files: Mutex::new(Vec::new()),
            stats: SessionStats::default(),
            adopted: orphans_len,
            notes,
        })
    }

    /// The repository being written.
    pub fn repo(&self) -> &IndexedRepository {
        self.repo
    }

    /// Stores `plaintext` as a blob unless the repository already has it.
    /// Returns its id and whether it was new. Safe to call from many threads.
    pub fn add_blob(&self, kind: BlobKind, plaintext: &[u8]) -> Result<(BlobId, bool)> {
        let id = self.repo.keys().blob_id(plaintext);
        let new = self.add_blob_with_id(kind, id, plaintext)?;
        Ok((id, new))
    }

    /// As [`WriteSession::add_blob`] with the id already computed by the
    /// caller (it must be the keyed hash of `plaintext`).
    pub fn add_blob_with_id(&self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<bool> {
        if self.repo.cache().contains(&id)? {
            return Ok(false);
        }
        if !lock(&self.pending).insert(id) {
            return Ok(false);
        }
        let sealed = pack::seal_blob(
            self.repo.keys(),
            kind,
            id,
            plaintext,
            self.repo.config().zstd_level,
        )?;
        self.store_new(&sealed)?;
        Ok(true)
    }

    /// Counts and appends a blob new to the repository.
    fn store_new(&self, sealed: &SealedBlob) -> Result<()> {
        self.stats.blobs_added.fetch_add(1, Ordering::Relaxed);
        if sealed.delta.is_some() {
            self.stats.deltas_added.fetch_add(1, Ordering::Relaxed);
        }
        self.stats
            .bytes_added
            .fetch_add(u64::from(sealed.raw_length), Ordering::Relaxed);
        self.append(sealed)
    }

    /// Stores a data chunk whose id the caller computed, unless the
    /// repository already has it with its whole delta chain. With deltas on
    /// and `base_hint` naming the chunk's likely previous version, the
    /// chunk is stored as a delta against it (or against the root of its
    /// chain, when the chain is at the config's bound) if that is clearly
    /// smaller than storing it whole. Safe to call from many threads.
    pub fn add_data(
        &self,
        id: BlobId,
        plaintext: &[u8],
        base_hint: Option<&BlobId>,
    ) -> Result<bool> {
        if self.repo.has_usable(&id)? {
            return Ok(false);
        }
        if !lock(&self.pending).insert(id) {
            return Ok(false);
        }
        let cfg = self.repo.config();
        let sealed = match base_hint {
            Some(h) if cfg.delta_depth > 0 && *h != id => self.seal_with_base(id, plaintext, h)?,
            _ => None,
        };
        let sealed = match sealed {
            Some(s) => s,
            None => pack::seal_blob(
                self.repo.keys(),
                BlobKind::Data,
                id,
                plaintext,
                cfg.zstd_level,
            )?,
        };
        self.store_new(&sealed)?;
        Ok(true)
    }

    /// Seals `plaintext` as a delta against `hint` (or its chain's root),
    /// or whole when that turned out smaller; `None` when no usable base
    /// exists (the caller seals it whole).
    fn seal_with_base(
        &self,
        id: BlobId,
        plaintext: &[u8],
        hint: &BlobId,
    ) -> Result<Option<SealedBlob>> {
        let repo = self.repo;
        let cfg = repo.config();
        let Some(mut base) = repo.cache().get(hint)? else {
            return Ok(None);
        };
        if base.entry.kind != BlobKind::Data {
            return Ok(None);
        }
        if base.entry.delta.map_or(0, |d| d.depth) >= cfg.delta_depth {
            // Re-base on the root: one cumulative delta instead of a longer
            // chain, so reading never decodes more than the bound.
            while let Some(d) = base.entry.delta {
                base = match repo.locate_base(&base.entry.id, &d) {
                    Ok(l) => l,
                    Err(Error::Corrupt { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                };
            }
        }
        let depth = base.entry.delta.map_or(0, |d| d.depth) + 1;
        if depth > cfg.delta_depth {
            return Ok(None);
        }
        // A damaged base is never built upon: the chunk is stored whole.
        // Not hashed: the delta is built on exactly the bytes every later
        // read decodes from the same seals.
        let base_plain = match repo.read_base_at(&base) {
            Ok(p) => p,
            Err(Error::Corrupt { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let frame =
            crate::delta::encode(&base_plain, plaintext, crate::delta::level(cfg.zstd_level))
                .map_err(|e| Error::Invalid(format!("delta encoding: {e}")))?;
        // Under a tenth of the plaintext a delta beats any whole encoding of
        // account data (zstd stores CSV at about 0.29); above it, compare,
        // and keep the delta only when it saves at least a tenth.
        if frame.len() * 10 > plaintext.len() {
            // Sealed whole once; kept if the delta does not beat it.
            let whole =
                pack::seal_blob(repo.keys(), BlobKind::Data, id, plaintext, cfg.zstd_level)?;
            if frame.len() * 10
                >= whole
                    .bytes
                    .len()
                    .saturating_sub(crate::crypto::SEAL_OVERHEAD + 1)
                    * 9
            {
                return Ok(Some(whole));
            }
        }
        let d = DeltaRef {
            base: base.entry.id,
            depth,
        };
        pack::seal_delta(repo.keys(), id, plaintext.len(), d, &frame).map(Some)
    }

    /// Appends a blob already sealed (and verified) elsewhere, as is: a
    /// sealed blob's associated data names only the pack format, its kind
    /// and its id, so its bytes are valid in any pack. Used by prune to
    /// repack; unlike [`WriteSession::add_blob`] it does not skip blobs the
    /// index knows (that copy is the one being moved).
    pub fn copy_blob(&self, sealed: &SealedBlob) -> Result<bool> {
        if !lock(&self.pending).insert(sealed.id) {
            return Ok(false);
        }
        self.append(sealed)?;
        Ok(true)
    }

    fn append(&self, sealed: &SealedBlob) -> Result<()> {
        self.stats
            .bytes_stored
            .fetch_add(sealed.bytes.len() as u64, Ordering::Relaxed);
        let full = {
            let mut p = lock(&self.packers[slot(sealed.kind)]);
            p.append(sealed)?;
            let target = self.repo.config().pack_target as usize;
            if p.full(target) {
                Some(std::mem::replace(
                    &mut *p,
                    Packer::for_kind(sealed.kind, target),
                ))
            } else {
                None
            }
        };
        if let Some(p) = full {
            self.write_pack(p)?;
        }
        Ok(())
    }

    fn write_index(&self, packs: &[PackListing]) -> Result<()> {
        let id = self.repo.write_index_file(packs)?;
        lock(&self.index_files).push(id.to_hex());
        Ok(())
    }

    /// Names of the index files this session wrote.
    pub fn index_files_written(&self) -> Vec<String> {
        lock(&self.index_files).clone()
    }

    /// Closes a pack with its trailer and hands it to the writer thread,
    /// which makes it durable (step 1); lists the packs made durable so far
    /// in an index file once there are enough of them (step 2).
    fn write_pack(&self, p: Packer) -> Result<()> {
        if p.entries.is_empty() {
            return Ok(());
        }
        let mut bytes = p.buf;
        bytes.extend_from_slice(&pack::encode_trailer(&self.repo.keys().file, &p.entries)?);
        // The writer lock is held only by the thread handing a pack over:
        // others keep filling packers meanwhile.
        let batch = {
            let w = lock(&self.writer);
            w.send((bytes, p.entries))?;
            w.take_batch(false)
        };
        self.stats.packs_written.fetch_add(1, Ordering::Relaxed);
        if !batch.is_empty() {
            self.write_index(&batch)?;
        }
        Ok(())
    }

    /// Writes every open pack and waits until all are durable, then writes
    /// one index file for all packs not yet listed (steps 1 and 2). After
    /// this, every blob added is durable and indexed.
    pub fn flush(&self) -> Result<()> {
        let target = self.repo.config().pack_target as usize;
        for (p, kind) in self.packers.iter().zip([BlobKind::Data, BlobKind::Tree]) {
            let full = std::mem::replace(&mut *lock(p), Packer::for_kind(kind, target));
            self.write_pack(full)?;
        }
        let rest = {
            let mut w = lock(&self.writer);
            w.finish()?;
            let rest = w.take_batch(true);
            // The session stays usable after a flush.
            *w = PackWriter::start(Arc::clone(self.repo.backend()))?;
            rest
        };
        if !rest.is_empty() {
            self.write_index(&rest)?;
        }
        Ok(())
    }

    /// Flushes, then writes the snapshot: the commit point (step 3).
    pub fn commit(self, snapshot: &Snapshot) -> Result<SnapshotId> {
        // Refuse before anything is made durable for it: a snapshot over the
        // limits would be unreadable and block every later listing.
        snapshot.validate()?;
        self.flush()?;
        self.repo
            .write_object(FileKind::Snapshot, ObjectType::Snapshot, &snapshot.encode())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Workers that panic abort the whole backup before commit, so a poisoned
    // guard is never used to commit; recovering it only lets errors surface.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
