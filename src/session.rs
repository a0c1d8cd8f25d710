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

/// Bytes of a pack handed to the writer at a time: a pack is written to
/// storage as it fills, so no whole pack waits in memory.
const PIECE: usize = 1 << 20;
/// Pieces waiting for the writer, at most.
const PIECES_QUEUED: usize = 4;

/// The pack being filled for one kind of blob.
struct Packer {
    /// Bytes not yet handed to the writer (the pack's header first).
    pending: Vec<u8>,
    /// Length of the pack so far, handed over or pending.
    len: usize,
    entries: Vec<BlobEntry>,
}

impl Packer {
    /// A packer with room for one piece of data blobs (tree packs start
    /// small).
    fn for_kind(kind: BlobKind) -> Self {
        let room = match kind {
            BlobKind::Data => PIECE + (PIECE >> 2),
            BlobKind::Tree => 0,
        };
        let mut pending = Vec::with_capacity(room);
        pending.extend_from_slice(&header(ObjectType::Pack));
        Packer {
            len: pending.len(),
            pending,
            entries: Vec::new(),
        }
    }

    fn append(&mut self, b: &SealedBlob) -> Result<()> {
        let offset =
            u32::try_from(self.len).map_err(|_| Error::Invalid("pack too large".into()))?;
        self.entries.push(BlobEntry {
            kind: b.kind,
            id: b.id,
            offset,
            length: b.bytes.len() as u32,
            raw_length: b.raw_length,
            delta: b.delta,
        });
        self.pending.extend_from_slice(&b.bytes);
        self.len += b.bytes.len();
        Ok(())
    }

    fn full(&self, target: usize) -> bool {
        self.len >= target || self.entries.len() as u32 >= limits::MAX_PACK_BLOBS - 1
    }

    /// The pending bytes, when there is a piece's worth of them.
    fn take_piece(&mut self) -> Option<Vec<u8>> {
        (self.pending.len() >= PIECE).then(|| {
            let room = self.pending.capacity();
            std::mem::replace(&mut self.pending, Vec::with_capacity(room))
        })
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

/// A piece of a pack on its way to storage: `bytes` continue the pack
/// open for `slot` (or start one); with `close`, they end with its trailer
/// and the pack is complete.
struct Piece {
    slot: usize,
    bytes: Vec<u8>,
    close: Option<Vec<BlobEntry>>,
}

/// What the pack writer thread reports back.
#[derive(Default)]
struct Written {
    /// Packs durable in storage, not yet listed in an index file.
    packs: Vec<PackListing>,
    /// The first write failure; the session fails with it.
    error: Option<Error>,
}

/// Two threads that write packs while the workers go on compressing and
/// sealing: the writer appends each piece to its pack's upload as it comes
/// and hashes it (the piece is freed then); on a pack's last piece it names
/// the pack by that hash. The syncer makes it durable (fsync, rename,
/// directory fsync) and lists it. At most [`PIECES_QUEUED`] pieces wait for
/// the writer and none waits for an fsync: memory stays a few MiB whatever
/// the backup's size.
struct PackWriter {
    tx: Option<SyncSender<Piece>>,
    threads: Vec<JoinHandle<()>>,
    written: Arc<Mutex<Written>>,
}

/// A pack written, on its way to durability.
type Staged = (crate::backend::Durable, PackListing);

/// Packs written and waiting for the syncer, at most.
const STAGED_PACKS: usize = 4;

/// A pack being written: its upload, the hash of its bytes so far, their
/// length.
type OpenPack = (Box<dyn crate::backend::Upload>, blake3::Hasher, u64);

/// Appends `piece` to its pack (begun on its first piece); on the last
/// piece, names the pack and returns it, on its way to durability.
fn write_piece(
    backend: &dyn Backend,
    open: &mut [Option<OpenPack>; 2],
    piece: Piece,
) -> Result<Option<Staged>> {
    let slot = open
        .get_mut(piece.slot)
        .ok_or_else(|| Error::Invalid("no such pack slot".into()))?;
    let (upload, hasher, length) = match slot {
        Some(p) => p,
        None => slot.insert((backend.begin(FileKind::Pack)?, blake3::Hasher::new(), 0)),
    };
    upload.write(&piece.bytes)?;
    hasher.update(&piece.bytes);
    *length += piece.bytes.len() as u64;
    let Some(blobs) = piece.close else {
        return Ok(None);
    };
    let Some((upload, hasher, length)) = slot.take() else {
        return Ok(None);
    };
    let id = FileId::from_hasher(&hasher);
    let durable = upload.finish(&id.to_hex())?;
    Ok(Some((durable, PackListing { id, length, blobs })))
}

impl PackWriter {
    fn start(backend: Arc<dyn Backend>) -> Result<Self> {
        let (tx, rx) = sync_channel::<Piece>(PIECES_QUEUED);
        let (stx, srx) = sync_channel::<Staged>(STAGED_PACKS);
        let written = Arc::new(Mutex::new(Written::default()));
        let fail = |out: &Arc<Mutex<Written>>, e: Error| {
            lock(out).error.get_or_insert(e);
        };
        let out = Arc::clone(&written);
        let writer = std::thread::Builder::new()
            .name("arca-pack-writer".into())
            .spawn(move || {
                // A pack left open here (a session dropped without flush)
                // is dropped with its upload: no file under any name.
                let mut open: [Option<OpenPack>; 2] = [None, None];
                for piece in rx {
                    match write_piece(backend.as_ref(), &mut open, piece) {
                        Ok(Some(staged)) => {
                            if stx.send(staged).is_err() {
                                return; // the syncer failed and said why
                            }
                        }
                        Ok(None) => {}
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

    /// Hands a piece to the writer (waits while its queue is full).
    fn send(&self, piece: Piece) -> Result<()> {
        self.failure()?;
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Invalid("pack writer already closed".into()))?;
        if tx.send(piece).is_err() {
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
    /// Blobs this session is storing whose index file is not in the cache
    /// yet: two threads never store the same blob. Ids leave once the cache
    /// lists them, so the set stays as small as the packs not yet indexed.
    pending: Mutex<HashSet<BlobId>>,
    /// How many times ids left `pending` (see [`WriteSession::claim`]).
    released: AtomicU64,
    index_files: Mutex<Vec<String>>,
    /// What this session added so far.
    pub stats: SessionStats,
    /// Packs left by interrupted sessions that this one adopted.
    pub adopted: usize,
    /// Things about the repository worth telling the user (not errors).
    pub notes: Vec<String>,
}

/// The kind of blob each packer slot holds (see [`slot`]).
const KINDS: [BlobKind; 2] = [BlobKind::Data, BlobKind::Tree];

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
            packers: KINDS.map(|k| Mutex::new(Packer::for_kind(k))),
            pending: Mutex::new(HashSet::new()),
            released: AtomicU64::new(0),
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
        if !self.claim(id, || self.repo.cache().contains(&id))? {
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

    /// Claims `id` for this thread to store: false when the repository has
    /// it (`known`) or another thread is storing it. An id that left
    /// `pending` meanwhile (its index file reached the cache between the
    /// lookup and the claim) is looked up again, so it is never stored twice.
    fn claim(&self, id: BlobId, known: impl Fn() -> Result<bool>) -> Result<bool> {
        let seen = self.released.load(Ordering::Acquire);
        if known()? {
            return Ok(false);
        }
        let recheck = {
            let mut p = lock(&self.pending);
            if !p.insert(id) {
                return Ok(false);
            }
            self.released.load(Ordering::Acquire) != seen
        };
        if recheck && known()? {
            lock(&self.pending).remove(&id);
            return Ok(false);
        }
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
        if !self.claim(id, || self.repo.has_usable(&id))? {
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
        let slot = slot(sealed.kind);
        let closed = {
            // Pieces of a pack are handed over under its packer's lock, so
            // they reach the writer in order; other kinds go on meanwhile.
            let mut p = lock(&self.packers[slot]);
            p.append(sealed)?;
            if p.full(self.repo.config().pack_target as usize) {
                self.close_pack(slot, &mut p)?
            } else {
                if let Some(bytes) = p.take_piece() {
                    lock(&self.writer).send(Piece {
                        slot,
                        bytes,
                        close: None,
                    })?;
                }
                false
            }
        };
        if closed {
            self.index_durable_packs()?;
        }
        Ok(())
    }

    /// Writes an index file for `packs` (the cache absorbs it), then lets
    /// their blobs leave `pending`: the cache answers for them now.
    fn write_index(&self, packs: &[PackListing]) -> Result<()> {
        let id = self.repo.write_index_file(packs)?;
        lock(&self.index_files).push(id.to_hex());
        let mut p = lock(&self.pending);
        for b in packs.iter().flat_map(|pk| &pk.blobs) {
            p.remove(&b.id);
        }
        self.released.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Names of the index files this session wrote.
    pub fn index_files_written(&self) -> Vec<String> {
        lock(&self.index_files).clone()
    }

    /// Closes the pack in `p` (the packer of `slot`, locked by the caller)
    /// with its trailer and hands its last piece to the writer thread,
    /// which makes it durable (step 1). False when the pack was empty.
    fn close_pack(&self, slot: usize, p: &mut Packer) -> Result<bool> {
        if p.entries.is_empty() {
            return Ok(false);
        }
        let kind = KINDS[slot];
        let done = std::mem::replace(p, Packer::for_kind(kind));
        let mut bytes = done.pending;
        bytes.extend_from_slice(&pack::encode_trailer(
            &self.repo.keys().file,
            &done.entries,
        )?);
        lock(&self.writer).send(Piece {
            slot,
            bytes,
            close: Some(done.entries),
        })?;
        self.stats.packs_written.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Lists the packs made durable so far in an index file once there are
    /// enough of them (step 2).
    fn index_durable_packs(&self) -> Result<()> {
        let batch = lock(&self.writer).take_batch(false);
        if !batch.is_empty() {
            self.write_index(&batch)?;
        }
        Ok(())
    }

    /// Writes every open pack and waits until all are durable, then writes
    /// one index file for all packs not yet listed (steps 1 and 2). After
    /// this, every blob added is durable and indexed. Takes the session
    /// exclusively: no blob can be added while its pack is being closed.
    pub fn flush(&mut self) -> Result<()> {
        for slot in 0..self.packers.len() {
            let mut p = lock(&self.packers[slot]);
            self.close_pack(slot, &mut p)?;
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
    pub fn commit(mut self, snapshot: &Snapshot) -> Result<SnapshotId> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::InitOptions;

    #[test]
    fn ids_leave_pending_once_indexed_and_are_never_stored_twice() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            pack_target: 1 << 16,
            ..InitOptions::default()
        };
        let repo = crate::testutil::memory_repo(dir.path(), opts).unwrap();
        let mut session = WriteSession::start(&repo).unwrap();
        let blob = |i: u64| crate::testutil::noise(40_000, i);
        let (first, new) = session.add_blob(BlobKind::Data, &blob(0)).unwrap();
        assert!(new);
        // Pending and not indexed: another add is refused by the set.
        assert!(!session.add_blob(BlobKind::Data, &blob(0)).unwrap().1);
        assert!(!repo.cache().contains(&first).unwrap());
        for i in 1..40 {
            assert!(session.add_blob(BlobKind::Data, &blob(i)).unwrap().1);
        }
        session.flush().unwrap();
        assert!(!session.index_files_written().is_empty());
        assert!(repo.cache().contains(&first).unwrap());
        assert!(
            lock(&session.pending).is_empty(),
            "indexed blobs leave the set"
        );
        // Now the cache refuses it.
        assert!(!session.add_blob(BlobKind::Data, &blob(0)).unwrap().1);
        assert_eq!(session.stats.blobs_added.load(Ordering::Relaxed), 40);
    }
}
