//! Helpers shared by the unit and integration tests (not part of the API).

/// `n` bytes that do not compress: the low bytes of xorshift64 from `seed`.
/// Every seed gives its own sequence (the state must be odd; `2 seed + 1`
/// keeps seeds apart, where `seed | 1` made 2 and 3 the same).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A repository in memory, made with `opts` but the cheapest key
/// derivation, with its index cache in `cache_dir`.
pub fn memory_repo(
    cache_dir: &std::path::Path,
    opts: crate::repository::InitOptions,
) -> crate::Result<crate::repository::IndexedRepository> {
    let opts = crate::repository::InitOptions {
        kdf: crate::crypto::KdfParams::CHEAPEST,
        ..opts
    };
    let backend: std::sync::Arc<dyn crate::backend::Backend> =
        std::sync::Arc::new(crate::backend::MemoryBackend::new());
    crate::repository::Repository::init(backend, b"pw", &opts)?.open_index(cache_dir)
}

/// Chunks a sixteenth of the default size (4, 16 and 64 KiB), so that
/// small test files span many chunks.
pub const SMALL_CHUNKS: crate::format::config::ChunkerParams =
    crate::format::config::ChunkerParams {
        min: 4096,
        avg: 16384,
        max: 65536,
        ..crate::format::config::ChunkerParams::DEFAULT
    };

/// [`small_chunk_repo`] whose keys (and so chunk boundaries) are fixed by
/// `seed`: the same layout every run, for tests that assert on it.
pub fn seeded_small_chunk_repo(
    cache_dir: &std::path::Path,
    seed: u8,
) -> crate::Result<crate::repository::IndexedRepository> {
    let opts = crate::repository::InitOptions {
        chunker: SMALL_CHUNKS,
        kdf: crate::crypto::KdfParams::CHEAPEST,
        ..crate::repository::InitOptions::default()
    };
    let master = crate::crypto::MasterSecrets::from_bytes(
        &(0..96u8)
            .map(|i| i.wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )?;
    let backend: std::sync::Arc<dyn crate::backend::Backend> =
        std::sync::Arc::new(crate::backend::MemoryBackend::new());
    crate::repository::Repository::init_with_master(backend, b"pw", &opts, master)?
        .open_index(cache_dir)
}

/// [`memory_repo`] with [`SMALL_CHUNKS`].
pub fn small_chunk_repo(
    cache_dir: &std::path::Path,
) -> crate::Result<crate::repository::IndexedRepository> {
    memory_repo(
        cache_dir,
        crate::repository::InitOptions {
            chunker: SMALL_CHUNKS,
            ..crate::repository::InitOptions::default()
        },
    )
}

/// Rows (added, removed, changed) between two CSV tables with headers,
/// found the slow way: both parsed whole into key -> rows, equal rows
/// cancelled per key, the rest paired up as changes. The reference that
/// `diff --records` is tested against.
pub fn csv_row_changes(a: &[u8], b: &[u8]) -> (u64, u64, u64) {
    type Rows = std::collections::HashMap<Vec<u8>, Vec<Vec<Vec<u8>>>>;
    fn rows(t: &[u8]) -> Rows {
        let mut m = Rows::new();
        let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(t);
        for rec in r.byte_records().flatten() {
            let f: Vec<Vec<u8>> = rec.iter().map(<[u8]>::to_vec).collect();
            m.entry(f.first().cloned().unwrap_or_default())
                .or_default()
                .push(f);
        }
        m
    }
    let (ra, mut rb) = (rows(a), rows(b));
    let (mut added, mut removed, mut changed) = (0, 0, 0);
    for (k, mut va) in ra {
        let mut vb = rb.remove(&k).unwrap_or_default();
        va.retain(|r| match vb.iter().position(|x| x == r) {
            Some(p) => {
                vb.remove(p);
                false
            }
            None => true,
        });
        let both = va.len().min(vb.len()) as u64;
        changed += both;
        removed += va.len() as u64 - both;
        added += vb.len() as u64 - both;
    }
    added += rb.values().map(|v| v.len() as u64).sum::<u64>();
    (added, removed, changed)
}

/// Backs up `dir` (its content as the snapshot's root) for account `acme`
/// and returns the snapshot's root tree.
pub fn backup_tree(
    repo: &crate::repository::IndexedRepository,
    dir: &std::path::Path,
) -> crate::id::BlobId {
    use crate::commands::backup::{backup, BackupOptions};
    let out = backup(
        repo,
        &BackupOptions {
            paths: vec![dir.to_path_buf()],
            account: "acme".into(),
            ..BackupOptions::default()
        },
        &crate::commands::NoProgress,
    );
    match out {
        Ok(o) => o.snapshot.tree,
        Err(e) => panic!("backup of {}: {e}", dir.display()),
    }
}
