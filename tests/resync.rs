//! A changed file is cut along its previous version where the content is the
//! same, without scanning (backup's `Resync`). The cuts must be exactly the
//! chunker's: after an insertion, an append, a truncation, repeated content,
//! a file that only got a new mtime, and the old last chunk moved inside the
//! file, every file's chunk list equals chunking the new bytes from scratch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use arca::backend::LocalBackend;
use arca::format::tree::NodeKind;
use arca::id::BlobId;
use arca::repository::Repository;
use common::{backup_at, noise, Env, PASSWORD};

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The two versions of every test file.
fn versions() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let a = noise(1_500_000, 1);
    let b = noise(70_000, 2);
    let c = noise(300_000, 3);
    let block = noise(20_000, 4);
    let repeated: Vec<u8> = cat(&[&block.repeat(30), &noise(200_000, 5)]);
    let mut repeated_changed = repeated.clone();
    repeated_changed[310_000] ^= 0x5a;
    vec![
        (
            "insert.bin",
            a.clone(),
            cat(&[&a[..700_000], &b, &a[700_000..]]),
        ),
        ("append.bin", a.clone(), cat(&[&a, &c])),
        ("truncate.bin", a.clone(), a[..900_000].to_vec()),
        ("repeat.bin", repeated, repeated_changed),
        ("touched.bin", a.clone(), a.clone()),
        // The old last chunk is all that is left, or is followed by more.
        ("new-head.bin", a.clone(), cat(&[&b, &a])),
        (
            "grown-tail.bin",
            a.clone(),
            cat(&[&a[..1_200_000], &a[1_200_000..], &b[..10]]),
        ),
        // The old file's tail (its last chunk) now sits in the middle.
        (
            "tail-inside.bin",
            a.clone(),
            cat(&[&a, &c, &a[1_400_000..], &b]),
        ),
        (
            "deleted-middle.bin",
            a.clone(),
            cat(&[&a[..300_000], &a[600_000..]]),
        ),
    ]
}

#[test]
fn cuts_equal_a_fresh_scan_of_the_new_bytes() {
    let e = Env::new();
    // Small chunks: many cuts per file.
    e.ok(&[
        "init",
        "--chunk-min",
        "4096",
        "--chunk-avg",
        "16384",
        "--chunk-max",
        "65536",
    ]);
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let files = versions();
    for (name, old, _) in &files {
        std::fs::write(src.join(name), old).unwrap();
    }
    backup_at(&e, &src, "2024-03-01T02:00:00Z");
    // New content (and for touched.bin only a new mtime), so every file is
    // read again with the first snapshot as its parent.
    std::thread::sleep(std::time::Duration::from_millis(20));
    for (name, _, new) in &files {
        std::fs::write(src.join(name), new).unwrap();
    }
    backup_at(&e, &src, "2024-03-02T02:00:00Z");

    let repo = Repository::open(Arc::new(LocalBackend::new(e.repo())), PASSWORD.as_bytes())
        .unwrap()
        .open_index(&e.path("lib-cache"))
        .unwrap();
    let (_, snap) = repo.find_snapshot("latest", Some("acme")).unwrap();
    assert_eq!(snap.summary.files_unchanged, 0, "every file was read again");
    let tree = repo.read_tree(&snap.tree).unwrap();
    let mut seen = 0;
    for (name, _, new) in &files {
        let node = tree
            .nodes
            .iter()
            .find(|n| n.name == name.as_bytes())
            .unwrap_or_else(|| panic!("{name} missing from the snapshot"));
        let NodeKind::File { chunks } = &node.kind else {
            panic!("{name} is not a file");
        };
        let mut want: Vec<BlobId> = Vec::new();
        let mut pos = 0;
        for n in repo.chunker().chunk_lengths(new) {
            want.push(repo.keys().blob_id(&new[pos..pos + n]));
            pos += n;
        }
        assert!(want.len() > 10, "{name}: enough chunks to mean something");
        assert_eq!(chunks, &want, "{name}: chunks differ from a fresh scan");
        seen += 1;
    }
    assert_eq!(seen, files.len());
    let out = e.path("out");
    e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    common::same_tree(&src, &out);
}
