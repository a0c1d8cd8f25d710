//! `arca prune`: reclaim the space of blobs no snapshot needs, never losing
//! one a snapshot needs (format-spec.md §13.3).
//!
//! Order (each step durable before the next starts):
//! 1. adopt packs no index file lists (left by interrupted backups), so that
//!    nothing a snapshot might reference is invisible to the mark;
//! 2. mark every blob reachable from every snapshot, into an on-disk set;
//! 3. decide per pack: keep, repack (dead share of its bytes above the
//!    threshold), or delete (nothing live);
//! 4. repack: copy each live blob, verified, into new packs; write them and
//!    index files for them;
//! 5. write new index files for every kept pack;
//! 6. delete the old index files, then 7. the repacked and dead packs.
//!
//! A kill at any instant leaves a valid repository: until step 6 every old
//! index file and pack is intact; from step 6 on, new index files cover every
//! live blob. Packs orphaned by a kill in step 6 or 7 are garbage; the next
//! prune (or backup, which adopts them) deals with them. Running prune again
//! finishes the job.

use std::collections::HashSet;

use serde::Serialize;

use crate::backend::FileKind;
use crate::commands::{check_interrupt, Progress};
use crate::error::{Error, Result};
use crate::format::config::Operation;
use crate::format::indexfile::PackListing;
use crate::format::pack::SealedBlob;
use crate::format::tree::NodeKind;
use crate::id::{BlobId, PackId};
use crate::index::Location;
use crate::markset::MarkSet;
use crate::repository::IndexedRepository;
use crate::session::WriteSession;

/// Packs listed per index file written for kept packs.
const PACKS_PER_INDEX_FILE: usize = 256;
/// Blob entries per index file written for kept packs: the file and its
/// listing are built in memory, so this bounds prune's memory whatever the
/// blob size (about 4 MB of listing).
const BLOBS_PER_INDEX_FILE: usize = 50_000;

/// Prune settings.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Repack a pack when more than this percentage of its bytes is unused.
    pub max_unused_pct: f64,
    /// Repack at most this many bytes of packs in one run: the packs with
    /// the largest unused share go first, the others keep their unused
    /// blobs until a later prune. Packs with nothing live are deleted
    /// whatever this says (that costs no copying).
    pub max_repack_bytes: Option<u64>,
    /// Report what would be done, change nothing.
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_pct: DEFAULT_MAX_UNUSED_PCT,
            max_repack_bytes: None,
            dry_run: false,
        }
    }
}

/// Default repack threshold. A pack with a tenth of its bytes unused is
/// rewritten; below that, copying 90 % to free 10 % is not worth the I/O.
pub const DEFAULT_MAX_UNUSED_PCT: f64 = 10.0;

/// What prune did (or, with dry run, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Snapshots whose blobs were marked.
    pub snapshots: u64,
    /// Packs adopted from interrupted backups before marking.
    pub packs_adopted: u64,
    /// Packs before.
    pub packs_before: u64,
    /// Packs kept as they are.
    pub packs_kept: u64,
    /// Packs rewritten without their unused blobs.
    pub packs_repacked: u64,
    /// Packs deleted because nothing in them is used.
    pub packs_deleted: u64,
    /// New packs written by the repack.
    pub packs_written: u64,
    /// Blobs in use.
    pub blobs_live: u64,
    /// Unused blobs removed.
    pub blobs_removed: u64,
    /// Unused blobs left in kept packs (under the threshold).
    pub blobs_unused_left: u64,
    /// Pack bytes before.
    pub bytes_before: u64,
    /// Pack bytes after.
    pub bytes_after: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Unused bytes left in kept packs.
    pub bytes_unused_left: u64,
    /// Packs over the repack threshold left for a later prune by
    /// `max_repack_bytes` (counted in `packs_kept`).
    pub packs_repack_postponed: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Old index files removed.
    pub index_files_removed: u64,
    /// Files left under temporary names by writers that were killed
    /// (partial packs), removed.
    pub temporaries_removed: u64,
    /// True when nothing was changed.
    pub dry_run: bool,
}

const KEEP: u8 = 0;
const REPACK: u8 = 1;
const DELETE: u8 = 2;

/// A pack over the repack threshold: (unused share, pack bytes, pack,
/// unused blobs, unused bytes).
type Candidate = (f64, u64, PackId, u64, u64);

/// Sorts `candidates` by priority, the largest unused share first (then by
/// pack id), and says which of them to repack: each one that still fits
/// in `budget` bytes of packs (all without a budget). A pack too large for
/// what is left does not stop smaller ones after it.
fn within_budget(candidates: &mut [Candidate], budget: Option<u64>) -> Vec<bool> {
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
    let mut left = budget.unwrap_or(u64::MAX);
    candidates
        .iter()
        .map(|c| {
            let fits = c.1 <= left;
            if fits {
                left -= c.1;
            }
            fits
        })
        .collect()
}

/// Marks every blob reachable from every snapshot into `marks`. Refuses to
/// go on if a snapshot needs a blob the index lacks: pruning a damaged
/// repository could delete what repair would need.
fn mark(repo: &IndexedRepository, marks: &mut MarkSet, progress: &dyn Progress) -> Result<u64> {
    // Every snapshot, or none: a snapshot file that does not read could
    // need blobs that nothing else marks.
    let snaps = repo.snapshots_strict().map_err(|e| match e {
        Error::Corrupt { what, reason } => Error::Corrupt {
            what,
            reason: format!(
                "{reason}; prune does not run while a snapshot does not read, since it \
                 could delete what that snapshot needs (run `arca check`, then restore \
                 the file from a copy or remove it with `arca forget ID`)"
            ),
        },
        other => other,
    })?;
    progress.message("marking");
    progress.set_total(snaps.len() as u64);
    for (sid, s) in &snaps {
        let mut stack = vec![s.tree];
        while let Some(t) = stack.pop() {
            check_interrupt()?;
            if !marks.insert_now(&t)? {
                continue;
            }
            let tree = repo.read_tree(&t).map_err(|e| {
                Error::corrupt(
                    format!("snapshot {}", sid.short()),
                    format!(
                        "refusing to prune: it needs tree {t}: {e}; run `arca check` and `arca repair index`"
                    ),
                )
            })?;
            for n in tree.nodes {
                match n.kind {
                    NodeKind::Dir { tree } => stack.push(tree),
                    NodeKind::File { chunks } => {
                        for c in chunks {
                            let Some(loc) = repo.cache().get(&c)? else {
                                return Err(Error::corrupt(
                                    format!("snapshot {}", sid.short()),
                                    format!(
                                        "refusing to prune: it needs data blob {c}, which no index lists; run `arca check` and `arca repair index`"
                                    ),
                                ));
                            };
                            marks.insert(&c)?;
                            mark_bases(repo, marks, loc, sid)?;
                        }
                    }
                    NodeKind::Symlink { .. } => {}
                }
            }
        }
        progress.inc(1);
    }
    marks.flush()?;
    Ok(snaps.len() as u64)
}

/// Marks every base a live delta needs, down its chain (§6.4): a base is
/// live as long as one delta built on it is.
fn mark_bases(
    repo: &IndexedRepository,
    marks: &mut MarkSet,
    mut loc: Location,
    sid: &crate::id::SnapshotId,
) -> Result<()> {
    while let Some(d) = loc.entry.delta {
        loc = repo.locate_base(&loc.entry.id, &d).map_err(|e| {
            Error::corrupt(
                format!("snapshot {}", sid.short()),
                format!("refusing to prune: it needs {e}; run `arca check`"),
            )
        })?;
        marks.insert(&loc.entry.id)?;
    }
    Ok(())
}

/// Whether `id` in `pack` is a live blob's canonical copy.
fn live_here(
    repo: &IndexedRepository,
    marks: &MarkSet,
    id: &BlobId,
    pack: &PackId,
) -> Result<bool> {
    if !marks.contains(id)? {
        return Ok(false);
    }
    // Duplicates (the same blob written by two concurrent backups) are
    // dead everywhere but in the copy the index points at.
    Ok(repo.cache().get(id)?.is_some_and(|l| l.pack == *pack))
}

/// Runs prune. The caller holds an exclusive lock.
pub fn prune(
    repo: &IndexedRepository,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    repo.check_features(Operation::Prune)?;
    let mut rep = PruneReport {
        dry_run: opts.dry_run,
        ..PruneReport::default()
    };
    // 1. Adopt interrupted backups' packs (the session does it on start).
    let mut session = WriteSession::start(repo)?;
    rep.packs_adopted = session.adopted as u64;
    // Partial packs of killed backups: never read, never listed, so never
    // needed; the exclusive lock means no writer is alive to own them.
    if !opts.dry_run {
        rep.temporaries_removed = repo.backend().remove_temporaries()?;
    }

    // 2. Mark.
    let cache_dir = repo
        .cache()
        .dir()
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let mut marks = MarkSet::create(&cache_dir)?;
    rep.snapshots = mark(repo, &mut marks, progress)?;

    // 3. Decide per pack.
    progress.message("planning");
    let threshold = opts.max_unused_pct.clamp(0.0, 100.0) / 100.0;
    // Packs over the threshold, decided once all are seen.
    let mut candidates: Vec<Candidate> = Vec::new();
    repo.cache().for_each_pack(|pack, length, blobs| {
        check_interrupt()?;
        let (mut live, mut live_bytes, mut dead, mut dead_bytes) = (0u64, 0u64, 0u64, 0u64);
        for e in &blobs {
            if live_here(repo, &marks, &e.id, &pack)? {
                live += 1;
                live_bytes += u64::from(e.length);
            } else {
                dead += 1;
                dead_bytes += u64::from(e.length);
            }
        }
        rep.packs_before += 1;
        rep.bytes_before += length;
        rep.blobs_live += live;
        let total = (live_bytes + dead_bytes).max(1);
        let decision = if live == 0 {
            rep.packs_deleted += 1;
            rep.blobs_removed += dead;
            rep.bytes_freed += length;
            DELETE
        } else if dead_bytes as f64 / total as f64 > threshold {
            candidates.push((
                dead_bytes as f64 / total as f64,
                length,
                pack,
                dead,
                dead_bytes,
            ));
            return Ok(());
        } else {
            rep.packs_kept += 1;
            rep.blobs_unused_left += dead;
            rep.bytes_unused_left += dead_bytes;
            KEEP
        };
        marks.set_pack_note(&pack, &[decision])
    })?;
    let chosen = within_budget(&mut candidates, opts.max_repack_bytes);
    for ((_, _, pack, dead, dead_bytes), repack) in candidates.into_iter().zip(chosen) {
        let decision = if repack {
            rep.packs_repacked += 1;
            rep.blobs_removed += dead;
            rep.bytes_freed += dead_bytes;
            REPACK
        } else {
            // Later ones may still fit: smaller packs.
            rep.packs_kept += 1;
            rep.packs_repack_postponed += 1;
            rep.blobs_unused_left += dead;
            rep.bytes_unused_left += dead_bytes;
            KEEP
        };
        marks.set_pack_note(&pack, &[decision])?;
    }
    rep.bytes_after = rep.bytes_before.saturating_sub(rep.bytes_freed);
    if opts.dry_run {
        return Ok(rep);
    }

    // 4. Repack: copy live blobs, each verified, into new packs. Every pass
    // over the plan streams it from disk: nothing here grows with the
    // number of packs.
    progress.message("repacking");
    marks.for_each_pack_note(|pack, note| {
        check_interrupt()?;
        if note.first().copied() != Some(REPACK) {
            return Ok(());
        }
        let bytes = repo.backend().read(FileKind::Pack, &pack.to_hex())?;
        for e in repo.cache().pack_blobs(&pack)? {
            if !live_here(repo, &marks, &e.id, &pack)? {
                continue;
            }
            let (o, n) = (e.offset as usize, e.length as usize);
            let sealed = bytes.get(o..o + n).ok_or_else(|| {
                Error::corrupt(
                    format!("pack {pack}"),
                    format!("blob {} lies past the end", e.id),
                )
            })?;
            // Never copy damage into a new pack: a blob that does not
            // verify (through its bases, for a delta) stops the prune
            // before anything is deleted.
            repo.open_sealed(&Location { pack, entry: e }, sealed)?;
            session.copy_blob(&SealedBlob {
                kind: e.kind,
                id: e.id,
                raw_length: e.raw_length,
                delta: e.delta,
                bytes: sealed.to_vec(),
            })?;
        }
        Ok(())
    })?;
    session.flush()?;
    rep.packs_written = session
        .stats
        .packs_written
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut keep_index: HashSet<String> = session.index_files_written().into_iter().collect();

    // 5. Index files for every kept pack.
    progress.message("writing index");
    let mut batch: Vec<PackListing> = Vec::new();
    let mut batch_blobs = 0usize;
    marks.for_each_pack_note(|pack, note| {
        if note.first().copied() != Some(KEEP) {
            return Ok(());
        }
        let length = repo
            .cache()
            .pack_length(&pack)?
            .ok_or_else(|| Error::Cache(format!("pack {pack} vanished from the cache")))?;
        let blobs = repo.cache().pack_blobs(&pack)?;
        batch_blobs += blobs.len();
        batch.push(PackListing {
            id: pack,
            length,
            blobs,
        });
        if batch.len() >= PACKS_PER_INDEX_FILE || batch_blobs >= BLOBS_PER_INDEX_FILE {
            batch_blobs = 0;
            keep_index.insert(repo.write_index_file(&std::mem::take(&mut batch))?.to_hex());
        }
        Ok(())
    })?;
    if !batch.is_empty() {
        keep_index.insert(repo.write_index_file(&batch)?.to_hex());
    }
    rep.index_files_written = keep_index.len() as u64;

    // 6. Old index files, now superseded.
    check_interrupt()?;
    for l in repo.backend().list(FileKind::Index)? {
        if !keep_index.contains(&l.name) {
            repo.backend().remove(FileKind::Index, &l.name)?;
            rep.index_files_removed += 1;
        }
    }
    // 7. Packs nothing needs any more.
    progress.message("deleting");
    marks.for_each_pack_note(|pack, note| {
        if matches!(note.first().copied(), Some(DELETE) | Some(REPACK)) {
            repo.backend().remove(FileKind::Pack, &pack.to_hex())?;
        }
        Ok(())
    })?;
    repo.cache().clear()?;
    repo.sync_index()?;
    let mut after = 0;
    repo.cache().for_each_pack_length(|_, length| {
        after += length;
        Ok(())
    })?;
    rep.bytes_after = after;
    rep.bytes_freed = rep.bytes_before.saturating_sub(after);
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::FileId;

    #[test]
    fn the_budget_takes_the_largest_unused_share_first_and_what_still_fits() {
        let c = |share: f64, bytes: u64, id: u8| (share, bytes, FileId([id; 32]), 1, 1);
        let mut v = vec![c(0.5, 10, 1), c(0.9, 30, 3), c(0.2, 5, 4), c(0.9, 20, 2)];
        let pick = within_budget(&mut v, Some(45));
        let order: Vec<u8> = v.iter().map(|x| x.2 .0[0]).collect();
        assert_eq!(order, [2, 3, 1, 4], "largest share first, then pack id");
        // 20 taken (25 left), 30 does not fit, then 10 and 5 do.
        assert_eq!(pick, [true, false, true, true]);
        assert_eq!(within_budget(&mut v, None), [true; 4]);
        assert_eq!(within_budget(&mut v, Some(0)), [false; 4]);
        assert_eq!(within_budget(&mut v, Some(64)), [true, true, true, false]);
    }
}
