//! Measures FastCDC parameter sets on a series of daily account exports.
//!
//!     cargo run --release --example chunk_sizes -- DIR_DAY_A DIR_DAY_B [DIR_DAY_C ...]
//!
//! For each parameter set (avg 8 KiB .. 1 MiB, min = avg/4, max = avg*4,
//! normalization 1): chunks every file of day A (recursive walk, sorted by
//! path) and records the chunk ids; then, for each following day, counts the
//! chunks not seen before, their raw bytes and their stored bytes (zstd level 3
//! plus 41 bytes of sealing overhead plus 45 bytes of index/trailer entry), and
//! adds them to the seen set.
//!
//! Also estimates what a future delta-compression feature could store: each
//! new chunk is zstd-3 compressed with the previous day's bytes of the same
//! file around the same offset (from `off - len/2` to `off + len + len/2`) as
//! a raw-content dictionary (hash tables sized to the window); the smaller of
//! that and the plain compression is counted. That is a proxy for "delta
//! against the chunk's previous version".
//!
//! Output: Markdown tables on stdout, progress on stderr. Single-threaded, so
//! the chunking speed is per core.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arca::chunk::Chunker;
use arca::crypto::{Keys, MasterSecrets};
use arca::format::config::ChunkerParams;
use arca::id::BlobId;
use zstd::zstd_safe::CParameter;

/// Sealing overhead per stored blob: nonce 24 + tag 16 + encoding byte 1.
const SEAL_OVERHEAD: u64 = 41;
/// Index entry + pack trailer entry per stored blob, approximately.
const INDEX_OVERHEAD: u64 = 45;
const PER_CHUNK: u64 = SEAL_OVERHEAD + INDEX_OVERHEAD;
const ZSTD_LEVEL: i32 = 3;

const KIB: u32 = 1024;
const AVGS: [u32; 7] = [
    8 * KIB,
    16 * KIB,
    32 * KIB,
    64 * KIB,
    128 * KIB,
    256 * KIB,
    1024 * KIB,
];

/// Files of `root`, recursively, as paths relative to `root`, sorted.
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    fn rec(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            let p = e.path();
            if ft.is_dir() {
                rec(root, &p, out)?;
            } else if ft.is_file() {
                out.push(p.strip_prefix(root)?.to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    rec(root, root, &mut out)?;
    out.sort();
    Ok(out)
}

/// What one day added to the store under one parameter set.
#[derive(Default, Clone)]
struct DayStats {
    /// Bytes of input.
    input_bytes: u64,
    /// Chunks cut (with repeats).
    chunks: u64,
    /// Chunks not seen before (distinct).
    new_chunks: u64,
    /// Raw bytes of the new chunks.
    new_raw: u64,
    /// zstd-3 bytes of the new chunks + per-chunk overhead.
    new_stored: u64,
    /// Same, with the delta-compression estimate for chunks of files that
    /// existed the day before.
    new_stored_delta: u64,
}

struct SetResult {
    params: ChunkerParams,
    days: Vec<DayStats>,
    chunk_time: Duration,
    hash_time: Duration,
    chunked_bytes: u64,
}

fn measure(
    params: ChunkerParams,
    keys: &Keys,
    gear: &[u64; 256],
    days: &[(PathBuf, Vec<PathBuf>)],
) -> Result<SetResult> {
    let chunker = Chunker::new(params, Box::new(*gear))?;
    let mut seen: HashSet<BlobId> = HashSet::new();
    let mut out = Vec::new();
    let mut chunk_time = Duration::ZERO;
    let mut hash_time = Duration::ZERO;
    let mut chunked_bytes = 0u64;
    let mut delta = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    // Large enough for the biggest dictionary window + chunk (max 4 MiB * 3).
    delta.set_parameter(CParameter::WindowLog(26))?;

    for (di, (root, files)) in days.iter().enumerate() {
        let prev_root = if di > 0 { Some(&days[di - 1].0) } else { None };
        let mut st = DayStats::default();
        for rel in files {
            let data = std::fs::read(root.join(rel))
                .with_context(|| format!("reading {}", root.join(rel).display()))?;
            let t = Instant::now();
            let lens = chunker.chunk_lengths(&data);
            chunk_time += t.elapsed();
            chunked_bytes += data.len() as u64;
            st.input_bytes += data.len() as u64;
            st.chunks += lens.len() as u64;

            // The previous day's version of this file, read only if needed.
            let mut prev: Option<Option<Vec<u8>>> = None;
            let mut off = 0usize;
            for len in lens {
                let chunk = &data[off..off + len];
                let t = Instant::now();
                let id = keys.blob_id(chunk);
                hash_time += t.elapsed();
                if seen.insert(id) {
                    let plain = zstd::bulk::compress(chunk, ZSTD_LEVEL)?.len() as u64;
                    st.new_chunks += 1;
                    st.new_raw += len as u64;
                    st.new_stored += plain + PER_CHUNK;
                    let mut best = plain;
                    if let Some(pr) = prev_root {
                        let prev = prev.get_or_insert_with(|| std::fs::read(pr.join(rel)).ok());
                        if let Some(p) = prev.as_deref().filter(|p| !p.is_empty()) {
                            let lo = off.saturating_sub(len / 2).min(p.len());
                            let hi = (off + len + len / 2).min(p.len());
                            // Near the end of a grown file: use the old tail.
                            let lo = if hi - lo < len / 2 {
                                p.len().saturating_sub(len)
                            } else {
                                lo
                            };
                            let window = &p[lo..hi.max(lo)];
                            if !window.is_empty() {
                                // Hash tables big enough to index the whole
                                // window, so large windows are not penalised
                                // by level 3's 2^17-entry tables.
                                let bits =
                                    (window.len() + len).next_power_of_two().trailing_zeros();
                                let bits = (bits + 1).clamp(17, 24);
                                delta.set_parameter(CParameter::HashLog(bits))?;
                                delta.set_parameter(CParameter::ChainLog(bits))?;
                                delta.set_dictionary(ZSTD_LEVEL, window)?;
                                best = best.min(delta.compress(chunk)?.len() as u64);
                            }
                        }
                    }
                    st.new_stored_delta += best + PER_CHUNK;
                }
                off += len;
            }
        }
        out.push(st);
    }
    Ok(SetResult {
        params,
        days: out,
        chunk_time,
        hash_time,
        chunked_bytes,
    })
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

fn kib(b: u32) -> String {
    if b >= 1024 * 1024 && b % (1024 * 1024) == 0 {
        format!("{} MiB", b / (1024 * 1024))
    } else {
        format!("{} KiB", b / 1024)
    }
}

fn main() -> Result<()> {
    let dirs: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if dirs.len() < 2 {
        bail!("usage: chunk_sizes DIR_DAY_A DIR_DAY_B [DIR_DAY_C ...]");
    }
    let mut days = Vec::new();
    for d in &dirs {
        let files = walk(d)?;
        days.push((d.clone(), files));
    }
    let secrets = MasterSecrets::generate()?;
    let keys = secrets.keys();
    let gear = keys.gear_table();

    let mut results = Vec::new();
    for avg in AVGS {
        let params = ChunkerParams {
            min: avg / 4,
            avg,
            max: avg * 4,
            normalization: 1,
        };
        eprintln!(
            "measuring min {} avg {} max {} ...",
            kib(params.min),
            kib(avg),
            kib(params.max)
        );
        results.push(measure(params, &keys, &gear, &days)?);
    }

    let later = (days.len() - 1) as f64;
    println!(
        "Input: {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let a = &results[0].days[0];
    println!(
        "Day A: {} files, {:.1} MB; later days: {} ({:.1} MB mean). MB = 10^6 bytes, GB = 10^9 bytes. \
         Stored = zstd-3 + {SEAL_OVERHEAD} B sealing + {INDEX_OVERHEAD} B index per new chunk.\n",
        days[0].1.len(),
        mb(a.input_bytes),
        days.len() - 1,
        results[0].days[1..].iter().map(|d| mb(d.input_bytes)).sum::<f64>() / later,
    );
    println!(
        "| avg (min/max) | day-A chunks (distinct) | mean chunk | day-A stored MB | new chunks/day | \
         new raw MB/day | stored MB/day | stored MB/day, delta est. | chunks per GB | chunking MB/s | hashing MB/s |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        let a = &r.days[0];
        let rest = &r.days[1..];
        let mean = |f: &dyn Fn(&DayStats) -> u64| rest.iter().map(f).sum::<u64>() as f64 / later;
        println!(
            "| {} ({}/{}) | {} ({}) | {:.1} KiB | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
            kib(r.params.avg),
            kib(r.params.min),
            kib(r.params.max),
            a.chunks,
            a.new_chunks,
            a.input_bytes as f64 / a.chunks as f64 / 1024.0,
            mb(a.new_stored),
            mean(&|d| d.new_chunks),
            mb(mean(&|d| d.new_raw) as u64),
            mb(mean(&|d| d.new_stored) as u64),
            mb(mean(&|d| d.new_stored_delta) as u64),
            a.chunks as f64 / (a.input_bytes as f64 / 1e9),
            mb(r.chunked_bytes) / r.chunk_time.as_secs_f64(),
            mb(r.chunked_bytes) / r.hash_time.as_secs_f64(),
        );
    }
    println!(
        "\nPer later day (new chunks / new raw MB / stored MB / stored MB with delta est.):\n"
    );
    print!("| avg |");
    for i in 1..days.len() {
        print!(" day {} |", i);
    }
    println!();
    print!("|---|");
    for _ in 1..days.len() {
        print!("---|");
    }
    println!();
    for r in &results {
        print!("| {} |", kib(r.params.avg));
        for d in &r.days[1..] {
            print!(
                " {} / {:.2} / {:.2} / {:.2} |",
                d.new_chunks,
                mb(d.new_raw),
                mb(d.new_stored),
                mb(d.new_stored_delta)
            );
        }
        println!();
    }
    Ok(())
}
