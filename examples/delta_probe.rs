//! Simulates delta storage over a series of daily account exports, to choose
//! the base selection, the chain-depth bound and the re-base rule by
//! measurement (format-spec.md §6.4).
//!
//!     cargo run --release --example delta_probe -- MAXDEPTH DIR_DAY_0 DIR_DAY_1 ...
//!
//! Each day's files are chunked with the default parameters; a chunk not
//! seen before is stored either whole (zstd 3) or, when its file existed the
//! day before, as a zstd-3 delta against one base: the previous version's
//! chunk that overlaps most the range where the new chunk should sit
//! (aligned on the nearest chunk both versions share). A base at depth
//! MAXDEPTH is not used; the chunk is encoded against that base's own
//! base chain root instead ("re-base"), or stored whole if that is smaller.
//! At the end, the last day is decoded from scratch (no cache), timing
//! the decode of every chunk through its chain, against decompressing the
//! same chunks stored whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arca::chunk::Chunker;
use arca::crypto::MasterSecrets;
use arca::format::config::ChunkerParams;
use arca::id::BlobId;

fn delta_level() -> i32 {
    std::env::var("DELTA_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}
const LEVEL: i32 = 3;
/// Stored bytes per blob besides its frame: seal (40) and encoding byte,
/// and its entry in the pack trailer and in an index file (45 bytes each
/// whole, 78 for a delta).
const PER_WHOLE: u64 = 41 + 2 * 45;
const PER_DELTA: u64 = 41 + 2 * 78;

enum Stored {
    Whole(Vec<u8>),
    Delta {
        base: BlobId,
        bytes: Vec<u8>,
        raw: usize,
    },
}

struct Blob {
    stored: Stored,
    depth: u32,
    root: BlobId,
}

fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    fn rec(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                rec(root, &p, out)?;
            } else {
                out.push(p.strip_prefix(root)?.to_path_buf());
            }
        }
        Ok(())
    }
    let mut v = Vec::new();
    rec(root, root, &mut v)?;
    v.sort();
    Ok(v)
}

fn decode(blobs: &HashMap<BlobId, Blob>, id: &BlobId) -> Result<Vec<u8>> {
    let b = &blobs[id];
    Ok(match &b.stored {
        Stored::Whole(z) => zstd::bulk::decompress(z, 1 << 20)?,
        Stored::Delta { base, bytes, raw } => {
            let base = decode(blobs, base)?;
            arca::delta::decode(&base, bytes, *raw).map_err(anyhow::Error::msg)?
        }
    })
}

/// Moves every cut forward to just after the next newline (a row end in CSV
/// and JSON lines), as a record-aware chunker would.
fn to_row_ends(data: &[u8], lens: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(lens.len());
    let (mut start, mut cut) = (0usize, 0usize);
    for l in lens {
        cut += l;
        if cut <= start {
            continue;
        }
        let end = match data[cut - 1..].iter().position(|b| *b == b'\n') {
            Some(i) => cut + i,
            None => data.len(),
        };
        out.push(end - start);
        start = end;
        if start >= data.len() {
            break;
        }
    }
    if start < data.len() {
        out.push(data.len() - start);
    }
    out
}

fn main() -> Result<()> {
    // `RECORD_CUTS=1` moves cuts to row ends.
    let record_cuts = std::env::var_os("RECORD_CUTS").is_some();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: delta_probe MAXDEPTH DIR_DAY_0 DIR_DAY_1 ...");
    }
    let max_depth: u32 = args[0].parse()?;
    let days: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
    let secrets = MasterSecrets::from_bytes(&[7u8; 96])?;
    let keys = secrets.keys();
    // `CHUNK_AVG` (bytes) tries other chunk sizes: min = avg/4, max = avg*4.
    let params = match std::env::var("CHUNK_AVG")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        Some(avg) => ChunkerParams {
            min: avg / 4,
            avg,
            max: avg * 4,
            normalization: ChunkerParams::DEFAULT.normalization,
        },
        None => ChunkerParams::DEFAULT,
    };
    let chunker = Chunker::new(params, keys.gear_table())?;
    let mut blobs: HashMap<BlobId, Blob> = HashMap::new();
    let mut plain: HashMap<BlobId, Vec<u8>> = HashMap::new();
    // Previous day's chunk list per file: (id, offset, len).
    let mut prev_files: HashMap<PathBuf, Vec<(BlobId, usize, usize)>> = HashMap::new();
    let mut last_day_chunks = Vec::new();
    for (di, root) in days.iter().enumerate() {
        let mut cur_files = HashMap::new();
        let (mut whole, mut delta, mut rebased, mut stored, mut depth_sum) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let t0 = Instant::now();
        let (mut encode_secs, mut encoded_bytes) = (0f64, 0u64);
        for rel in walk(root)? {
            let data = std::fs::read(root.join(&rel))?;
            let mut lens = chunker.chunk_lengths(&data);
            if record_cuts {
                lens = to_row_ends(&data, &lens);
            }
            let mut list = Vec::with_capacity(lens.len());
            let mut off = 0;
            for len in lens {
                list.push((keys.blob_id(&data[off..off + len]), off, len));
                off += len;
            }
            let old = prev_files.get(&rel);
            let old_pos: HashMap<BlobId, usize> = old
                .map(|o| o.iter().map(|(id, off, _)| (*id, *off)).collect())
                .unwrap_or_default();
            // Last shared anchor: (new end offset, old end offset).
            let mut anchor: (usize, usize) = (0, 0);
            for &(id, off, len) in &list {
                if let Some(&oo) = old_pos.get(&id) {
                    anchor = (off + len, oo + len);
                }
                if blobs.contains_key(&id) {
                    continue;
                }
                let chunk = &data[off..off + len];
                let full = zstd::bulk::compress(chunk, LEVEL)?;
                let mut best: (Stored, u32, BlobId) = (Stored::Whole(full.clone()), 0, id);
                let mut best_len = full.len();
                let mut kind = 0;
                if let Some(o) = old {
                    let est = anchor.1 + (off - anchor.0);
                    let (lo, hi) = (est, est + len);
                    let cand = o
                        .iter()
                        .map(|(oid, ooff, olen)| {
                            let ov = (ooff + olen).min(hi).saturating_sub(*ooff.max(&lo));
                            (ov, *oid)
                        })
                        .max_by_key(|x| x.0);
                    if let Some((_, mut bid)) = cand {
                        let mut k = 1;
                        if blobs[&bid].depth >= max_depth {
                            bid = blobs[&bid].root;
                            k = 2;
                        }
                        if bid != id {
                            let te = Instant::now();
                            let d = arca::delta::encode(&plain[&bid], chunk, delta_level())
                                .map_err(anyhow::Error::msg)?;
                            encode_secs += te.elapsed().as_secs_f64();
                            encoded_bytes += chunk.len() as u64;
                            if d.len() * 10 < best_len * 9 {
                                best_len = d.len();
                                let depth = blobs[&bid].depth + 1;
                                let root = blobs[&bid].root;
                                best = (
                                    Stored::Delta {
                                        base: bid,
                                        bytes: d,
                                        raw: len,
                                    },
                                    depth,
                                    root,
                                );
                                kind = k;
                            }
                        }
                    }
                }
                match kind {
                    0 => whole += 1,
                    1 => delta += 1,
                    _ => rebased += 1,
                }
                stored += best_len as u64 + if kind == 0 { PER_WHOLE } else { PER_DELTA };
                depth_sum += best.1 as u64;
                blobs.insert(
                    id,
                    Blob {
                        stored: best.0,
                        depth: best.1,
                        root: best.2,
                    },
                );
                plain.insert(id, chunk.to_vec());
            }
            cur_files.insert(rel, list);
        }
        let n = whole + delta + rebased;
        println!(
            "day {di}: new blobs {n} (whole {whole}, delta {delta}, rebased {rebased}), stored {:.2} MB, mean depth {:.2}, {:.1}s",
            stored as f64 / 1e6,
            depth_sum as f64 / n.max(1) as f64,
            t0.elapsed().as_secs_f64()
        );
        if encoded_bytes > 0 {
            println!(
                "  delta encoding: {:.1} MB at {:.0} MB/s (one thread)",
                encoded_bytes as f64 / 1e6,
                encoded_bytes as f64 / 1e6 / encode_secs
            );
        }
        if di + 1 == days.len() {
            last_day_chunks = cur_files.values().flatten().map(|x| x.0).collect();
        }
        prev_files = cur_files;
    }
    // Decode the last day from scratch.
    let t = Instant::now();
    let mut bytes = 0;
    for id in &last_day_chunks {
        bytes += decode(&blobs, id)?.len();
    }
    let dt = t.elapsed().as_secs_f64();
    let wholes: Vec<Vec<u8>> = last_day_chunks
        .iter()
        .map(|id| zstd::bulk::compress(&plain[id], LEVEL))
        .collect::<std::io::Result<_>>()?;
    let t = Instant::now();
    let mut b2 = 0;
    for z in &wholes {
        b2 += zstd::bulk::decompress(z, 1 << 20)?.len();
    }
    let dt2 = t.elapsed().as_secs_f64();
    if bytes != b2 {
        bail!("decoded {bytes} bytes with deltas, {b2} whole");
    }
    println!(
        "decode last day: {:.0} MB/s with deltas, {:.0} MB/s whole, ratio {:.2}",
        bytes as f64 / 1e6 / dt,
        b2 as f64 / 1e6 / dt2,
        dt / dt2
    );
    Ok(())
}
