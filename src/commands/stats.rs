//! `arca stats`: logical size, stored size, dedup and compression ratios,
//! for the repository, per account, and for each account's latest snapshot.
//!
//! Definitions: *logical* bytes are file bytes as the snapshots list them
//! (a file in ten snapshots counts ten times); *unique* bytes are the
//! plaintext of distinct blobs; *stored* bytes are their sealed size in
//! packs. Dedup ratio = logical / unique; compression ratio = unique /
//! stored.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::commands::format_time;
use crate::error::Result;
use crate::format::tree::NodeKind;
use crate::format::BlobKind;
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// Sizes of a set of snapshots.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sizes {
    /// File bytes as listed by the snapshots.
    pub logical_bytes: u64,
    /// Plaintext bytes of the distinct data blobs they use.
    pub unique_bytes: u64,
    /// Sealed bytes of those blobs in packs.
    pub stored_bytes: u64,
    /// logical / unique.
    pub dedup_ratio: f64,
    /// unique / stored.
    pub compression_ratio: f64,
}

impl Sizes {
    fn finish(mut self) -> Self {
        let r = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        self.dedup_ratio = r(self.logical_bytes, self.unique_bytes);
        self.compression_ratio = r(self.unique_bytes, self.stored_bytes);
        self
    }
}

/// One account.
#[derive(Clone, Debug, Serialize)]
pub struct AccountStats {
    /// Account name.
    pub account: String,
    /// Its snapshots.
    pub snapshots: u64,
    /// Logical bytes over all its snapshots.
    pub logical_bytes: u64,
    /// The latest snapshot's id.
    pub latest_id: String,
    /// The latest snapshot's time.
    pub latest_time: String,
    /// The latest snapshot's sizes.
    pub latest: Sizes,
}

/// The whole report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    /// Snapshots considered.
    pub snapshots: u64,
    /// Packs in the index.
    pub packs: u64,
    /// Data blobs in the index.
    pub data_blobs: u64,
    /// Repository-wide sizes (all snapshots; unique and stored count every
    /// data blob in the index, including unused ones until prune).
    pub repository: Sizes,
    /// Bytes of all packs (data, trees, headers, trailers).
    pub pack_bytes: u64,
    /// Per account, by name.
    pub accounts: Vec<AccountStats>,
}

/// Computes the report, limited to one account when given. Walks only each
/// account's latest snapshot; the distinct-blob set is sized by one
/// snapshot, the repository totals are streamed from the index.
pub fn stats(repo: &IndexedRepository, account: Option<&str>) -> Result<Stats> {
    let mut out = Stats::default();
    let snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| account.is_none_or(|a| s.account == a))
        .collect();
    out.snapshots = snaps.len() as u64;
    let mut per: BTreeMap<String, (u64, u64, usize)> = BTreeMap::new();
    for (i, (_, s)) in snaps.iter().enumerate() {
        let e = per.entry(s.account.clone()).or_insert((0, 0, i));
        e.0 += 1;
        e.1 += s.summary.total_bytes;
        e.2 = i; // snapshots are sorted by time: the last one wins
        out.repository.logical_bytes += s.summary.total_bytes;
    }
    for (name, (count, logical, latest)) in per {
        let (id, s) = &snaps[latest];
        let mut sizes = Sizes {
            logical_bytes: s.summary.total_bytes,
            ..Sizes::default()
        };
        let mut seen: HashSet<BlobId> = HashSet::new();
        let mut stack = vec![s.tree];
        while let Some(t) = stack.pop() {
            for n in repo.read_tree(&t)?.nodes {
                match n.kind {
                    NodeKind::Dir { tree } => stack.push(tree),
                    NodeKind::File { chunks } => {
                        for c in chunks {
                            if seen.insert(c) {
                                let l = repo.locate(&c)?;
                                sizes.unique_bytes += u64::from(l.entry.raw_length);
                                sizes.stored_bytes += u64::from(l.entry.length);
                            }
                        }
                    }
                    NodeKind::Symlink { .. } => {}
                }
            }
        }
        out.accounts.push(AccountStats {
            account: name,
            snapshots: count,
            logical_bytes: logical,
            latest_id: id.to_hex(),
            latest_time: format_time(s.time, s.nanos),
            latest: sizes.finish(),
        });
    }
    repo.cache().for_each_blob(|l| {
        if l.entry.kind == BlobKind::Data {
            out.data_blobs += 1;
            out.repository.unique_bytes += u64::from(l.entry.raw_length);
            out.repository.stored_bytes += u64::from(l.entry.length);
        }
        Ok(())
    })?;
    repo.cache().for_each_pack_length(|_, length| {
        out.packs += 1;
        out.pack_bytes += length;
        Ok(())
    })?;
    out.repository = std::mem::take(&mut out.repository).finish();
    Ok(out)
}
