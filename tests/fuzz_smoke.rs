//! Stable-Rust smoke test of the fuzz target bodies: every seed, and many
//! deterministic mutations of it, through every target (not only its own:
//! a key file fed to the tree decoder must fail cleanly too).
//!
//! The bodies of the fuzz targets (fuzz/src/lib.rs) are included as a
//! module, so CI exercises them on stable Rust without libFuzzer.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_bodies;

use fuzz_bodies::{all_seeds, mutations, seeds, TARGETS};

#[test]
fn every_target_has_seeds_that_pass() {
    for (name, body) in TARGETS {
        let s = seeds(name);
        assert!(!s.is_empty(), "{name} has no seeds");
        for input in &s {
            body(input);
        }
    }
}

/// The seeds are valid objects, so the mutations start from the paths
/// behind every check (and the AEADs), not from the first refusal.
#[test]
fn seeds_are_valid_objects() {
    use arca::format::{config::Config, indexfile, keyfile, lockfile::LockRecord};
    use arca::format::{snapshot::Snapshot, tree::Tree};
    let k = fuzz_bodies::keys();
    for s in seeds("tree_decode") {
        Tree::decode(&s, "seed").expect("tree seed");
    }
    for s in seeds("snapshot_decode") {
        Snapshot::decode(&s, "seed").expect("snapshot seed");
    }
    for s in seeds("index_file") {
        indexfile::decode(&s, "seed").expect("index seed");
    }
    for s in seeds("config") {
        Config::decode(&s).expect("config seed");
    }
    for s in seeds("lock_decode") {
        LockRecord::decode(&s, "seed").expect("lock seed");
    }
    for s in seeds("keyfile") {
        keyfile::open_with_kek(&s, &fuzz_bodies::kek(), "seed").expect("key file seed");
    }
    let packs = seeds("pack_trailer");
    let entries = arca::format::pack::read_trailer(&k.file, &packs[0], "seed").expect("pack seed");
    assert_eq!(entries.len(), 2);
    for e in &entries {
        let b = &packs[0][e.offset as usize..(e.offset + e.length) as usize];
        arca::format::pack::open_blob(k, e, b, &arca::id::FileId([0; 32]), None)
            .expect("blob in pack seed");
    }
    assert_eq!(seeds("nonexistent"), Vec::<Vec<u8>>::new());
    assert_eq!(seeds("tree_decode"), seeds("tree_decode"), "deterministic");
    assert_eq!(seeds("keyfile"), seeds("keyfile"), "deterministic");
}

#[test]
fn mutated_seeds_never_panic() {
    let n: usize = std::env::var("ARCA_FUZZ_SMOKE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let corpus = all_seeds();
    for (i, (_, seed)) in corpus.iter().enumerate() {
        for m in mutations(seed, n, i as u64) {
            for (name, body) in TARGETS {
                let r = std::panic::catch_unwind(|| body(&m));
                assert!(r.is_ok(), "target {name} panicked on input {}", hex(&m));
            }
        }
    }
}

#[test]
fn tiny_inputs_never_panic() {
    for len in 0..64usize {
        for fill in [0u8, 1, 0xff] {
            let v = vec![fill; len];
            for (_, body) in TARGETS {
                body(&v);
            }
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
