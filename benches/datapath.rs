//! Throughput of the backup data path, in bytes of plaintext per second.
//!
//! Input is realistic: the CSV tables of a generated "stockflow" account
//! (`arca::demo::gen`, scale 0.08, seed 42: products, orders and inventory
//! concatenated, several MB) and 4 MiB of pseudo-random bytes standing in for
//! incompressible attachments.
//!
//! Groups, one per stage of the path a byte takes, then the whole path:
//!
//! - `chunking`: FastCDC with a secret gear table.
//! - `hashing`: keyed BLAKE3 blob ids over 64 KiB pieces.
//! - `compression`: zstd alone (no encryption) on the CSV chunks: compress at
//!   levels 1 and 3, decompress of the level-3 frames; what `seal` costs
//!   minus the cipher.
//! - `seal`: zstd at the default level + XChaCha20-Poly1305, as `seal_blob` does for a pack.
//! - `open`: decrypt, decompress, verify.
//! - `pipeline`: chunk + hash + seal of the whole CSV buffer, one thread.
//! - `pack_write`: the CSV buffer stored through `WriteSession` into a new
//!   local repository: chunk, hash, index lookup, seal, append to a pack,
//!   pack and index files written and fsynced. Each iteration gets a fresh
//!   repository (made outside the timing) so nothing deduplicates.
//! - `restore`: `commands::restore` of a snapshot holding the CSV buffer as
//!   one file into a fresh directory: index lookups, pack reads (from the
//!   page cache: the repository was just written), open, file writes.
//!
//! Every figure is plaintext (file) bytes per second.
//!
//! Run: `cargo bench --bench datapath` (a few minutes on 2 cores), or
//! `cargo bench --bench datapath -- --test` to run every bench once.

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use tempfile::TempDir;

use arca::backend::LocalBackend;
use arca::chunk::Chunker;
use arca::commands::backup::{backup, BackupOptions};
use arca::commands::restore::{restore, RestoreOptions};
use arca::commands::NoProgress;
use arca::crypto::{KdfParams, Keys, MasterSecrets};
use arca::demo::gen::{generate_day, GenOptions};
use arca::format::config::{ChunkerParams, DEFAULT_ZSTD_LEVEL};
use arca::format::pack::{open_blob, seal_blob, BlobEntry};
use arca::format::BlobKind;
use arca::id::{BlobId, FileId};
use arca::repository::{IndexedRepository, InitOptions, Repository};
use arca::session::WriteSession;

/// Size of the pieces the `hashing` group names.
const HASH_PIECE: usize = 64 * 1024;
/// Size of the incompressible buffer.
const RANDOM_LEN: usize = 4 << 20;
/// The tables concatenated into the CSV buffer.
const CSV_FILES: [&str; 3] = ["products.csv", "orders.csv", "inventory.csv"];

/// Inputs shared by every bench, built once per process.
struct Data {
    keys: Keys,
    chunker: Chunker,
    csv: Vec<u8>,
    random: Vec<u8>,
    /// Content-defined chunk lengths of `csv` and `random`.
    csv_lens: Vec<usize>,
    random_lens: Vec<usize>,
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let opts = GenOptions {
            scale: 0.08,
            seed: 42,
        };
        generate_day(dir.path(), 0, &opts).expect("generate the sample account");
        let mut csv = Vec::new();
        for name in CSV_FILES {
            let bytes = std::fs::read(dir.path().join(name)).expect("read a generated table");
            csv.extend_from_slice(&bytes);
        }
        let random = pseudo_random(RANDOM_LEN, 0x5EED_1234_ABCD_0001);

        let keys = MasterSecrets::generate().expect("OS random").keys();
        let chunker =
            Chunker::new(ChunkerParams::DEFAULT, keys.gear_table()).expect("default chunker");
        let csv_lens = chunker.chunk_lengths(&csv);
        let random_lens = chunker.chunk_lengths(&random);
        eprintln!(
            "datapath input: csv {} bytes in {} chunks, random {} bytes in {} chunks",
            csv.len(),
            csv_lens.len(),
            random.len(),
            random_lens.len()
        );
        Data {
            keys,
            chunker,
            csv,
            random,
            csv_lens,
            random_lens,
        }
    })
}

/// xorshift64*: incompressible bytes without another dependency.
fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Splits `buf` at the given lengths.
fn split<'a>(buf: &'a [u8], lens: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(lens.len());
    let mut pos = 0;
    for &n in lens {
        out.push(&buf[pos..pos + n]);
        pos += n;
    }
    out
}

/// A chunk with its id, ready to seal.
struct Piece<'a> {
    id: BlobId,
    bytes: &'a [u8],
}

fn pieces<'a>(keys: &Keys, chunks: &[&'a [u8]]) -> Vec<Piece<'a>> {
    chunks
        .iter()
        .map(|c| Piece {
            id: keys.blob_id(c),
            bytes: c,
        })
        .collect()
}

/// Sealed blobs and the entries that describe them, as a pack would hold.
fn sealed(keys: &Keys, pieces: &[Piece<'_>]) -> Vec<(BlobEntry, Vec<u8>)> {
    let mut offset = arca::format::HEADER_LEN as u32;
    pieces
        .iter()
        .map(|p| {
            let s = seal_blob(keys, BlobKind::Data, p.id, p.bytes, DEFAULT_ZSTD_LEVEL)
                .expect("seal a blob");
            let entry = BlobEntry {
                kind: s.kind,
                id: s.id,
                offset,
                length: s.bytes.len() as u32,
                raw_length: s.raw_length,
                delta: None,
            };
            offset += entry.length;
            (entry, s.bytes)
        })
        .collect()
}

fn total(pieces: &[Piece<'_>]) -> u64 {
    pieces.iter().map(|p| p.bytes.len() as u64).sum()
}

/// Short runs: the whole file finishes in a few minutes on 2 cores.
fn configure<M: criterion::measurement::Measurement>(g: &mut BenchmarkGroup<'_, M>) {
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

fn chunking(c: &mut Criterion) {
    let d = data();
    let mut g = c.benchmark_group("chunking");
    configure(&mut g);
    for (name, buf) in [("csv", &d.csv), ("random", &d.random)] {
        g.throughput(Throughput::Bytes(buf.len() as u64));
        g.bench_function(name, |b| b.iter(|| d.chunker.chunk_lengths(black_box(buf))));
    }
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let d = data();
    let mut g = c.benchmark_group("hashing");
    configure(&mut g);
    g.throughput(Throughput::Bytes(d.csv.len() as u64));
    g.bench_function("blob_id_csv_64k", |b| {
        b.iter(|| {
            for piece in d.csv.chunks(HASH_PIECE) {
                black_box(d.keys.blob_id(black_box(piece)));
            }
        })
    });
    g.finish();
}

fn seal(c: &mut Criterion) {
    let d = data();
    let csv = pieces(&d.keys, &split(&d.csv, &d.csv_lens));
    let random = pieces(&d.keys, &split(&d.random, &d.random_lens));
    let mut g = c.benchmark_group("seal");
    configure(&mut g);
    for (name, set) in [("csv", &csv), ("random", &random)] {
        g.throughput(Throughput::Bytes(total(set)));
        g.bench_function(name, |b| {
            b.iter(|| {
                for p in set.iter() {
                    let s = seal_blob(
                        &d.keys,
                        BlobKind::Data,
                        p.id,
                        black_box(p.bytes),
                        DEFAULT_ZSTD_LEVEL,
                    )
                    .expect("seal");
                    black_box(s.bytes);
                }
            })
        });
    }
    g.finish();
}

fn open(c: &mut Criterion) {
    let d = data();
    let pack = FileId([0; 32]);
    let csv = sealed(&d.keys, &pieces(&d.keys, &split(&d.csv, &d.csv_lens)));
    let random = sealed(&d.keys, &pieces(&d.keys, &split(&d.random, &d.random_lens)));
    // Random chunks take the stored-raw path (encoding byte + seal only);
    // CSV chunks compress.
    let overhead = 1 + arca::crypto::SEAL_OVERHEAD;
    assert!(random
        .iter()
        .all(|(e, b)| b.len() == e.raw_length as usize + overhead));
    let stored: usize = csv.iter().map(|(_, b)| b.len()).sum();
    assert!(stored < d.csv.len() / 2, "CSV compresses");
    let mut g = c.benchmark_group("open");
    configure(&mut g);
    for (name, set) in [("csv", &csv), ("random", &random)] {
        let raw: u64 = set.iter().map(|(e, _)| u64::from(e.raw_length)).sum();
        g.throughput(Throughput::Bytes(raw));
        g.bench_function(name, |b| {
            b.iter(|| {
                for (entry, bytes) in set.iter() {
                    let plain =
                        open_blob(&d.keys, entry, black_box(bytes), &pack, None).expect("open");
                    black_box(plain);
                }
            })
        });
    }
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let d = data();
    let mut g = c.benchmark_group("pipeline");
    configure(&mut g);
    g.throughput(Throughput::Bytes(d.csv.len() as u64));
    g.bench_function("csv_chunk_hash_seal", |b| {
        b.iter(|| {
            let buf = black_box(&d.csv[..]);
            let mut pos = 0;
            let mut stored = 0usize;
            for n in d.chunker.chunk_lengths(buf) {
                let chunk = &buf[pos..pos + n];
                pos += n;
                let id = d.keys.blob_id(chunk);
                let s = seal_blob(&d.keys, BlobKind::Data, id, chunk, DEFAULT_ZSTD_LEVEL)
                    .expect("seal");
                stored += s.bytes.len();
            }
            stored
        })
    });
    g.finish();
}

fn compression(c: &mut Criterion) {
    let d = data();
    let chunks = split(&d.csv, &d.csv_lens);
    let plain = d.csv.len() as u64;
    let mut g = c.benchmark_group("compression");
    configure(&mut g);
    g.throughput(Throughput::Bytes(plain));
    for level in [1, 3] {
        g.bench_function(format!("csv_compress_l{level}"), |b| {
            b.iter(|| {
                for chunk in &chunks {
                    let z = zstd::bulk::compress(black_box(chunk), level).expect("compress");
                    black_box(z);
                }
            })
        });
    }
    let frames: Vec<(Vec<u8>, usize)> = chunks
        .iter()
        .map(|c| {
            let z = zstd::bulk::compress(c, DEFAULT_ZSTD_LEVEL).expect("compress");
            (z, c.len())
        })
        .collect();
    g.bench_function(format!("csv_decompress_l{DEFAULT_ZSTD_LEVEL}"), |b| {
        b.iter(|| {
            for (z, len) in &frames {
                let p = zstd::bulk::decompress(black_box(z), *len).expect("decompress");
                black_box(p);
            }
        })
    });
    g.finish();
}

/// Password of the bench repositories.
const PASSWORD: &[u8] = b"bench";

/// A repository in its own temporary directory (repository and index
/// cache), dropped with it.
struct TempRepo {
    repo: IndexedRepository,
    // Dropped after `repo`: the index cache lives inside.
    _dir: TempDir,
}

/// A new empty repository. The key's Argon2id is the cheapest the limits
/// allow: opening is not what these benches measure, and the default
/// (about 110 ms) would be paid once per `pack_write` iteration.
fn temp_repo() -> TempRepo {
    let dir = tempfile::tempdir().expect("temporary directory");
    let opts = InitOptions {
        kdf: KdfParams::CHEAPEST,
        ..InitOptions::default()
    };
    let repo = Repository::init(
        Arc::new(LocalBackend::new(dir.path().join("repo"))),
        PASSWORD,
        &opts,
    )
    .expect("init a repository");
    let repo = repo
        .open_index(&dir.path().join("cache"))
        .expect("open the index");
    TempRepo { repo, _dir: dir }
}

/// Stores `buf` as data chunks in `repo`, as a backup stores a file's
/// content, and makes them durable; returns the chunks added.
fn store(repo: &IndexedRepository, buf: &[u8]) -> u64 {
    let mut session = WriteSession::start(repo).expect("start a write session");
    let mut pos = 0;
    for n in repo.chunker().chunk_lengths(buf) {
        let chunk = &buf[pos..pos + n];
        pos += n;
        let id = repo.keys().blob_id(chunk);
        session.add_data(id, chunk, None).expect("add a chunk");
    }
    session.flush().expect("flush the session");
    session
        .stats
        .blobs_added
        .load(std::sync::atomic::Ordering::Relaxed)
}

fn pack_write(c: &mut Criterion) {
    let d = data();
    // Every chunk must be new to the repository, or the bench measures
    // index lookups only.
    let check = temp_repo();
    let added = store(&check.repo, &d.csv);
    assert_eq!(store(&check.repo, &d.csv), 0, "a second store adds nothing");
    assert!(added > 1, "the CSV buffer is several chunks");
    drop(check);
    let mut g = c.benchmark_group("pack_write");
    configure(&mut g);
    g.throughput(Throughput::Bytes(d.csv.len() as u64));
    g.bench_function("csv_new_repo", |b| {
        b.iter_batched(
            temp_repo,
            |r| {
                black_box(store(&r.repo, black_box(&d.csv)));
                // Returned so that removing the directory is not timed.
                r
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// Name of the file holding the CSV buffer in the `restore` snapshot.
const RESTORE_FILE: &str = "account.csv";

fn restore_bench(c: &mut Criterion) {
    let d = data();
    let src = tempfile::tempdir().expect("temporary directory");
    std::fs::write(src.path().join(RESTORE_FILE), &d.csv).expect("write the source file");
    let r = temp_repo();
    let out = backup(
        &r.repo,
        &BackupOptions {
            paths: vec![src.path().to_path_buf()],
            account: "bench".into(),
            time: Some((1_709_258_400, 0)),
            ..BackupOptions::default()
        },
        &NoProgress,
    )
    .expect("back up the CSV buffer");
    let root = out.snapshot.tree;
    // Once, untimed: the restore is complete and byte-identical.
    let check = tempfile::tempdir().expect("temporary directory");
    restore_into(&r.repo, &root, check.path());
    let back = std::fs::read(check.path().join(RESTORE_FILE)).expect("read the restored file");
    assert!(back == d.csv, "restored file equals the source");
    drop(check);

    let mut g = c.benchmark_group("restore");
    configure(&mut g);
    g.throughput(Throughput::Bytes(d.csv.len() as u64));
    g.bench_function("csv_one_file", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temporary directory"),
            |dst| {
                restore_into(&r.repo, &root, dst.path());
                dst
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn restore_into(repo: &IndexedRepository, root: &BlobId, target: &Path) {
    let st = restore(
        repo,
        root,
        &RestoreOptions {
            target: target.to_path_buf(),
            ..RestoreOptions::default()
        },
        &NoProgress,
    )
    .expect("restore");
    black_box(st);
}

criterion_group!(
    benches,
    chunking,
    hashing,
    compression,
    seal,
    open,
    pipeline,
    pack_write,
    restore_bench
);
criterion_main!(benches);
