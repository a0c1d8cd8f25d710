//! `arca repair index`: rebuild the index from pack trailers alone.
//!
//! Order (format-spec.md §13.2): read every pack's trailer; write new index
//! files covering every readable pack, durably; only then delete the old
//! index files; finally rebuild the local cache. A crash at any point
//! leaves at least one complete set of index files.

use std::collections::HashSet;

use rayon::prelude::*;
use serde::Serialize;

use crate::backend::FileKind;
use crate::commands::{check_interrupt, Progress};
use crate::error::Result;
use crate::format::indexfile::PackListing;
use crate::id::FileId;
use crate::repository::IndexedRepository;

/// Packs per rebuilt index file: keeps each file a few MiB at most.
const PACKS_PER_FILE: usize = 256;

/// What the repair did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairReport {
    /// Packs whose trailers were read.
    pub packs: u64,
    /// Blobs listed in the new index.
    pub blobs: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Old index files removed.
    pub index_files_removed: u64,
    /// Packs whose trailer could not be read (left in place, not indexed).
    pub unreadable_packs: Vec<String>,
}

/// Rebuilds every index file from pack trailers. The caller holds an
/// exclusive lock.
pub fn repair_index(repo: &IndexedRepository, progress: &dyn Progress) -> Result<RepairReport> {
    let mut rep = RepairReport::default();
    let old: Vec<String> = repo
        .backend()
        .list(FileKind::Index)?
        .into_iter()
        .map(|l| l.name)
        .collect();
    let packs = repo.backend().list(FileKind::Pack)?;
    progress.message("reading pack trailers");
    progress.set_total(packs.len() as u64);
    let results: Vec<(String, Result<PackListing>)> = packs
        .par_iter()
        .map(|l| {
            let r = match FileId::from_hex(&l.name) {
                Ok(id) => repo.read_pack_listing(&id, l.size),
                Err(e) => Err(e),
            };
            progress.inc(1);
            (l.name.clone(), r)
        })
        .collect();
    check_interrupt()?;
    let mut good = Vec::new();
    for (name, r) in results {
        match r {
            Ok(p) => good.push(p),
            Err(e) => rep.unreadable_packs.push(format!("pack {name}: {e}")),
        }
    }
    good.sort_by_key(|p| p.id);
    rep.packs = good.len() as u64;
    rep.blobs = good.iter().map(|p| p.blobs.len() as u64).sum();
    let mut written = HashSet::new();
    for batch in good.chunks(PACKS_PER_FILE) {
        let id = repo.write_index_file(batch)?;
        written.insert(id.to_hex());
        rep.index_files_written += 1;
    }
    for name in old.iter().filter(|n| !written.contains(*n)) {
        repo.backend().remove(FileKind::Index, name)?;
        rep.index_files_removed += 1;
    }
    repo.cache().clear()?;
    repo.sync_index()?;
    Ok(rep)
}
