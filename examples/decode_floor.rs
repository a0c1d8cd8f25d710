//! How fast the newest snapshot of a repository decodes when nothing is
//! written: every chunk of every file read, opened, decompressed (through
//! its delta chain) and verified against its id, on all cores, as
//! `restore` does, but with the file writes left out. The floor under any
//! restore on the machine (README "Where the target is not met").
//!
//!     ARCA_PASSWORD=... cargo run --release --example decode_floor -- REPO CACHE_DIR [ROUNDS]
//!
//! Prints, per round, the time and MB/s; then the snapshot's chunks by
//! delta depth.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arca::backend::LocalBackend;
use arca::format::tree::NodeKind;
use arca::index::Location;
use arca::repository::Repository;
use rayon::prelude::*;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        bail!("usage: decode_floor REPO CACHE_DIR [ROUNDS]");
    }
    let rounds: usize = args.get(2).map_or(Ok(5), |r| r.parse())?;
    let password = std::env::var("ARCA_PASSWORD").context("ARCA_PASSWORD")?;
    let repo = Repository::open(Arc::new(LocalBackend::new(&args[0])), password.as_bytes())?
        .open_index(Path::new(&args[1]))?;
    let snapshots = repo.snapshots()?;
    let Some((id, snap)) = snapshots.iter().max_by_key(|(_, s)| (s.time, s.nanos)) else {
        bail!("no snapshot");
    };
    // Every chunk of every file.
    let mut locs: Vec<Location> = Vec::new();
    let mut trees = vec![snap.tree];
    while let Some(t) = trees.pop() {
        for node in repo.read_tree(&t)?.nodes {
            match node.kind {
                NodeKind::Dir { tree } => trees.push(tree),
                NodeKind::File { chunks } => {
                    for c in chunks {
                        locs.push(repo.locate(&c)?);
                    }
                }
                NodeKind::Symlink { .. } => {}
            }
        }
    }
    let bytes: u64 = locs.iter().map(|l| u64::from(l.entry.raw_length)).sum();
    println!(
        "snapshot {id}: {} chunks, {:.1} MB, {} threads",
        locs.len(),
        bytes as f64 / 1e6,
        rayon::current_num_threads()
    );
    for round in 0..rounds {
        let t = Instant::now();
        let n: usize = locs
            .par_iter()
            .map_init(Vec::new, |buf, l| {
                repo.read_blob_into(l, buf).map(|r| r.len())
            })
            .sum::<arca::error::Result<usize>>()?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "round {round}: decoded {:.1} MB in {s:.3} s = {:.0} MB/s",
            n as f64 / 1e6,
            n as f64 / 1e6 / s
        );
    }
    let mut depth = std::collections::BTreeMap::<u8, (usize, u64)>::new();
    for l in &locs {
        let e = depth
            .entry(l.entry.delta.map_or(0, |d| d.depth))
            .or_default();
        e.0 += 1;
        e.1 += u64::from(l.entry.raw_length);
    }
    for (d, (n, b)) in depth {
        println!("depth {d}: {n} chunks, {:.1} MB", b as f64 / 1e6);
    }
    Ok(())
}
