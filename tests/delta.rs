//! Delta storage (format-spec.md §6.4) through the real binary: round trips
//! over many days with deltas on and off, a damaged base named with every
//! blob and file built on it, and prune keeping the bases that kept
//! snapshots need.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use arca::backend::LocalBackend;
use arca::id::BlobId;
use arca::index::Location;
use arca::repository::Repository;
use common::{gen, pack_bytes, same_tree, Env, PASSWORD};

const SCALE: f64 = 0.05;

fn backup_day(e: &Env, src: &Path, day: u32) {
    common::backup_day(e, src, day, SCALE);
}

/// Every blob location in the repository's index, through the library.
fn locations(e: &Env) -> HashMap<BlobId, Location> {
    let repo = Repository::open(Arc::new(LocalBackend::new(e.repo())), PASSWORD.as_bytes())
        .unwrap()
        .open_index(&e.path("lib-cache"))
        .unwrap();
    let mut out = HashMap::new();
    repo.cache()
        .for_each_blob(|l| {
            out.insert(l.entry.id, l);
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn round_trips_over_many_days_with_deltas_on_and_off() {
    let on = Env::new();
    on.init();
    let off = Env::new();
    off.ok(&["init", "--no-delta"]);
    let days = 7; // past the default depth bound of 4: chains re-base
    let mut growth = [0u64; 2];
    for day in 0..days {
        for (i, e) in [&on, &off].into_iter().enumerate() {
            let src = e.path("src");
            let before = pack_bytes(&e.repo());
            backup_day(e, &src, day);
            if day > 0 {
                growth[i] += pack_bytes(&e.repo()) - before;
            }
            let out = e.path(&format!("out{day}"));
            e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
            same_tree(&src, &out);
        }
    }
    // Every older snapshot restores byte-identical too (their chunks are
    // the bases of later deltas).
    for e in [&on, &off] {
        let snaps = e.snapshots_json();
        assert_eq!(snaps.len(), days as usize);
        for (day, s) in snaps.iter().enumerate() {
            let want = e.path(&format!("want{day}"));
            gen(&want, day as u32, SCALE);
            let out = e.path(&format!("old{day}"));
            let id = s["id"].as_str().unwrap();
            e.ok(&["restore", id, "--target", out.to_str().unwrap()]);
            same_tree(&want, &out);
        }
        e.ok(&["check", "--read-data"]);
    }
    let locs = locations(&on);
    let deltas = locs.values().filter(|l| l.entry.delta.is_some()).count();
    let max_depth = locs
        .values()
        .filter_map(|l| l.entry.delta.map(|d| d.depth))
        .max()
        .unwrap_or(0);
    assert!(deltas > 0, "deltas were written");
    assert!(max_depth <= 4, "depth bound holds: {max_depth}");
    assert!(
        locations(&off).values().all(|l| l.entry.delta.is_none()),
        "--no-delta stores every blob whole"
    );
    assert!(
        growth[0] * 4 < growth[1],
        "deltas store much less per day: {} vs {} bytes over {} days",
        growth[0],
        growth[1],
        days - 1
    );
}

#[test]
fn damaged_base_is_named_with_every_blob_and_file_built_on_it() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for day in 0..3 {
        backup_day(&e, &src, day);
    }
    let locs = locations(&e);
    // Everything whose chain passes through `b`.
    let dependents_of = |b: &BlobId| -> HashSet<BlobId> {
        let mut out = HashSet::new();
        for l in locs.values() {
            let mut cur = *l;
            while let Some(d) = cur.entry.delta {
                if d.base == *b {
                    out.insert(l.entry.id);
                    break;
                }
                cur = locs[&d.base];
            }
        }
        out
    };
    // The whole blob with the longest line of deltas built on it.
    let mut bases: Vec<BlobId> = locs
        .values()
        .filter_map(|l| l.entry.delta.map(|d| d.base))
        .filter(|b| locs[b].entry.delta.is_none())
        .collect();
    bases.sort();
    bases.dedup();
    let victim = *bases
        .iter()
        .max_by_key(|b| (dependents_of(b).len(), **b))
        .expect("a delta built on a whole blob");
    let dependents = dependents_of(&victim);
    assert!(dependents.len() >= 2, "chains over days 1 and 2");
    let vl = locs[&victim];

    let hex = vl.pack.to_hex();
    let path = e.repo().join("data").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[(vl.entry.offset + vl.entry.length / 2) as usize] ^= 0x10;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&path, &bytes).unwrap();

    let o = e.run(&["check", "--read-data"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains(&victim.to_string()), "names the base: {err}");
    for d in &dependents {
        assert!(
            err.contains(&d.to_string()),
            "names dependent blob {d}: {err}"
        );
    }
    assert!(
        err.contains("is unreadable"),
        "says why a dependent fails: {err}"
    );
    // The files built on the base are named by their path.
    let names: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| err.contains(&format!(" path /{n}:"))),
        "names the files: {err}"
    );
    // Every snapshot holding a dependent is named.
    for s in e.snapshots_json() {
        let short = &s["id"].as_str().unwrap()[..8];
        assert!(err.contains(short), "names snapshot {short}: {err}");
    }

    // A backup does not build on the damaged base, and the damaged
    // snapshot's files fail to restore with the corruption exit code.
    let out = e.path("out");
    let o = e.run(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(14));
}

#[test]
fn prune_keeps_bases_that_kept_snapshots_need() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for day in 0..4 {
        backup_day(&e, &src, day);
    }
    // Keep only the last day: its deltas are built on blobs of the
    // forgotten days. Repack everything with any unused byte.
    e.ok(&["forget", "--keep-last", "1"]);
    e.ok(&["prune", "--max-unused", "0"]);
    let locs = locations(&e);
    assert!(locs.values().any(|l| l.entry.delta.is_some()));
    for l in locs.values() {
        if let Some(d) = l.entry.delta {
            assert!(locs.contains_key(&d.base), "base {} kept", d.base);
        }
    }
    e.ok(&["check", "--read-data"]);
    let out = e.path("out");
    e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);

    // Later backups still build on what prune kept, and prune again.
    backup_day(&e, &src, 4);
    e.ok(&["forget", "--keep-last", "1"]);
    e.ok(&["prune", "--max-unused", "0"]);
    e.ok(&["check", "--read-data"]);
    let out = e.path("out2");
    e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);
}

#[test]
fn backup_does_not_reuse_a_delta_whose_base_is_gone() {
    // A delta listed without its base is what an interrupted prune can
    // leave behind (its dead pack adopted after the base's pack was
    // deleted). Here: delete the pack of a base, rebuild the index.
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for day in 0..2 {
        backup_day(&e, &src, day);
    }
    let locs = locations(&e);
    let base = locs
        .values()
        .find_map(|l| l.entry.delta.map(|d| d.base))
        .expect("a delta");
    let hex = locs[&base].pack.to_hex();
    std::fs::remove_file(e.repo().join("data").join(&hex[..2]).join(&hex)).unwrap();
    e.ok(&["repair", "index"]);
    let locs = locations(&e);
    assert!(!locs.contains_key(&base));
    assert!(
        locs.values()
            .any(|l| l.entry.delta.is_some_and(|d| d.base == base)),
        "a delta is listed without its base"
    );

    // The same source again, unchanged: files whose chunks are gone or
    // built on the lost base are read and stored again, not reused.
    let o = e.run(&[
        "backup",
        src.to_str().unwrap(),
        "--account",
        "acme",
        "--time",
        "2024-03-03T02:00:00Z",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let latest = e.snapshots_json().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = e.path("out");
    e.ok(&["restore", &latest, "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);
    // Check still reports the old snapshots' damage, and none in the new.
    let o = e.run(&["check", "--read-data"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        !err.contains(&latest[..8]),
        "the new snapshot is whole: {err}"
    );
}
