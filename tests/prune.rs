//! Prune through the binary: what it frees, that it never loses a blob a
//! kept snapshot needs, and that a kill at any moment leaves a repository
//! that checks clean and restores identically.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// A repository with one snapshot per day for `days` days, with 1 MiB
/// packs so that prune has many packs to decide on. Returns the days'
/// snapshot ids, oldest first. `init` adds flags to `arca init`.
fn repo_with_days(e: &Env, days: u32, scale: f64, init: &[&str]) -> Vec<String> {
    let mut args = vec!["init", "--pack-size-mib", "1"];
    args.extend_from_slice(init);
    e.ok(&args);
    let src = e.path("src");
    for day in 0..days {
        backup_day(e, &src, day, scale);
    }
    e.snapshots_json()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// Removes snapshots by deleting their files (what `forget` does).
fn drop_snapshots(e: &Env, ids: &[String]) {
    for id in ids {
        std::fs::remove_file(e.repo().join("snapshots").join(id)).unwrap();
    }
}

/// Every remaining snapshot restores identically to its day's data.
fn assert_kept_snapshots_restore(e: &Env, days: &[(String, u32)], scale: f64) {
    for (id, day) in days {
        let want = e.path(&format!("want-{day}"));
        if !want.exists() {
            gen(&want, *day, scale);
        }
        let got = e.path(&format!("got-{day}"));
        let _ = std::fs::remove_dir_all(&got);
        e.ok(&["restore", &id[..12], "--target", got.to_str().unwrap()]);
        same_tree(&want, &got);
    }
}

fn pack_count(repo: &Path) -> usize {
    packs(repo).len()
}

#[test]
fn prune_frees_what_forgotten_snapshots_alone_used_and_keeps_the_rest() {
    let e = Env::new();
    // Whole chunks: with deltas the forgotten days' chunks are the bases of
    // the kept days' (tests/delta.rs covers that).
    let ids = repo_with_days(&e, 4, 0.05, &["--no-delta"]);
    let before = pack_bytes(&e.repo());
    // Nothing forgotten: prune finds nothing to free.
    let r: serde_json::Value = serde_json::from_str(&e.ok(&["prune", "--json"])).unwrap();
    assert_eq!(r["packs_deleted"], 0);
    assert_eq!(r["packs_repacked"], 0);
    assert_eq!(pack_bytes(&e.repo()), before);

    drop_snapshots(&e, &ids[..2]);
    let dry: serde_json::Value =
        serde_json::from_str(&e.ok(&["prune", "--dry-run", "--json"])).unwrap();
    assert!(dry["bytes_freed"].as_u64().unwrap() > 0);
    assert_eq!(pack_bytes(&e.repo()), before, "dry run changes nothing");

    let r: serde_json::Value = serde_json::from_str(&e.ok(&["prune", "--json"])).unwrap();
    let after = pack_bytes(&e.repo());
    assert!(after < before * 3 / 4, "freed space: {before} -> {after}");
    assert_eq!(r["bytes_after"].as_u64().unwrap(), after);
    e.ok(&["check", "--read-data"]);
    assert_kept_snapshots_restore(&e, &[(ids[2].clone(), 2), (ids[3].clone(), 3)], 0.05);

    // Running it again finds nothing more to do.
    let again: serde_json::Value = serde_json::from_str(&e.ok(&["prune", "--json"])).unwrap();
    assert_eq!(again["packs_deleted"], 0);
    assert_eq!(again["packs_repacked"], 0);

    // With every snapshot gone, nothing is left but empty space.
    drop_snapshots(&e, &ids[2..]);
    e.ok(&["prune"]);
    assert_eq!(pack_count(&e.repo()), 0);
    e.ok(&["check"]);
}

#[test]
fn prune_with_max_unused_100_deletes_only_wholly_unused_packs() {
    let e = Env::new();
    let ids = repo_with_days(&e, 3, 0.05, &["--no-delta"]);
    drop_snapshots(&e, &ids[..1]);
    let r: serde_json::Value =
        serde_json::from_str(&e.ok(&["prune", "--max-unused", "100%", "--json"])).unwrap();
    assert_eq!(r["packs_repacked"], 0);
    assert!(r["bytes_unused_left"].as_u64().unwrap() > 0);
    e.ok(&["check", "--read-data"]);
    assert_kept_snapshots_restore(&e, &[(ids[1].clone(), 1), (ids[2].clone(), 2)], 0.05);
}

#[test]
fn max_repack_size_bounds_the_repack_and_the_rest_waits_for_the_next_prune() {
    // Which packs are over the threshold depends on where the chunks fall
    // (each repository has its own gear table), so this checks the budget's
    // two ends and what follows; `within_budget`'s unit test checks the
    // order and the packs in between.
    let e = Env::new();
    let ids = repo_with_days(&e, 4, 0.05, &["--no-delta"]);
    drop_snapshots(&e, &ids[..2]);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["prune", "--json", "--max-unused", "0%"];
        a.extend_from_slice(args);
        serde_json::from_str(&e.ok(&a)).unwrap()
    };
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    let plan = json(&["--dry-run"]);
    let over = n(&plan, "packs_repacked");
    assert!(over >= 1, "packs with unused data: {plan}");
    assert_eq!(n(&plan, "packs_repack_postponed"), 0);
    let all = json(&["--dry-run", "--max-repack-size", "1GB"]);
    assert_eq!(n(&all, "packs_repacked"), over, "{all}");

    // 0: only what nothing uses is deleted; the rest waits, counted as kept.
    let packs_before = pack_count(&e.repo());
    let none = json(&["--max-repack-size", "0"]);
    assert_eq!(n(&none, "packs_repacked"), 0);
    assert_eq!(n(&none, "packs_repack_postponed"), over);
    assert_eq!(n(&none, "packs_deleted"), n(&plan, "packs_deleted"));
    assert_eq!(n(&none, "packs_kept"), n(&plan, "packs_kept") + over);
    assert_eq!(
        pack_count(&e.repo()),
        packs_before - n(&none, "packs_deleted") as usize
    );
    e.ok(&["check", "--read-data"]);
    assert_kept_snapshots_restore(&e, &[(ids[2].clone(), 2), (ids[3].clone(), 3)], 0.05);

    // The next prune takes up exactly what was left, and then nothing.
    let rest = json(&[]);
    assert_eq!(n(&rest, "packs_repacked"), over, "{rest}");
    assert_eq!(n(&rest, "packs_deleted"), 0);
    assert_eq!(n(&json(&[]), "packs_repacked"), 0);
    e.ok(&["check", "--read-data"]);
    assert_kept_snapshots_restore(&e, &[(ids[2].clone(), 2), (ids[3].clone(), 3)], 0.05);

    let o = e.run(&["prune", "--max-repack-size", "lots"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Two days backed up, the first snapshot forgotten.
fn two_days_first_forgotten() -> (Env, Vec<String>) {
    let e = Env::new();
    let ids = repo_with_days(&e, 2, 0.02, &[]);
    drop_snapshots(&e, &ids[..1]);
    (e, ids)
}

/// Deletes every index file and the local cache.
fn lose_index_and_cache(e: &Env) {
    for f in std::fs::read_dir(e.repo().join("index")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::remove_dir_all(e.cache()).unwrap();
}

#[test]
fn prune_adopts_unindexed_packs_before_marking() {
    let (e, ids) = two_days_first_forgotten();
    // Lose an index file and the cache: blobs the kept snapshot needs are
    // now unknown (their packs are adopted first, so prune must still work).
    lose_index_and_cache(&e);
    e.ok(&["prune"]);
    e.ok(&["check", "--read-data"]);
    assert_kept_snapshots_restore(&e, &[(ids[1].clone(), 1)], 0.02);
}

#[test]
fn prune_refuses_when_a_kept_snapshot_needs_a_blob_no_pack_holds() {
    let (e, _ids) = two_days_first_forgotten();
    // Lose the index, the cache and the largest pack: blobs the kept
    // snapshot needs are now nowhere.
    lose_index_and_cache(&e);
    let victim = packs(&e.repo())
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    std::fs::remove_file(&victim).unwrap();
    let before = packs(&e.repo());
    let o = e.run(&["prune"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(14), "{err}");
    assert!(err.contains("refusing to prune"), "{err}");
    assert_eq!(packs(&e.repo()), before, "nothing deleted");
}

fn names(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// When to kill a prune.
#[derive(Clone, Copy, Debug)]
enum When {
    /// After a delay (random, spread over the run).
    Delay(u64),
    /// Once prune has written its first new index file (repack done).
    NewIndexFile,
    /// Once the first old index file is gone (old index being removed).
    OldIndexGone,
    /// Once the first old pack is gone (old packs being removed).
    OldPackGone,
}

/// Kills prune at many points of its run (`ARCA_FAULT_RUNS`, default 20);
/// after each kill the repository checks clean and every kept snapshot
/// restores identically; a backup and a final prune then work.
#[test]
fn kill_prune_at_any_moment_loses_nothing() {
    let runs: u64 = std::env::var("ARCA_FAULT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("fault loop seed {seed}");
    let mut killed_mid_run = 0;
    for run in 0..runs {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let when = match run % 4 {
            0 => When::Delay((seed >> 33) % 600 + 1),
            1 => When::NewIndexFile,
            2 => When::OldIndexGone,
            _ => When::OldPackGone,
        };
        let e = Env::new();
        let ids = repo_with_days(&e, 3, 0.08, &[]);
        drop_snapshots(&e, &ids[..1]);
        let kept = vec![(ids[1].clone(), 1), (ids[2].clone(), 2)];
        let old_index = names(&e.repo().join("index"));
        let old_packs: Vec<PathBuf> = packs(&e.repo());
        let mut child = e.cmd(&["prune"]).spawn().unwrap();
        let t0 = std::time::Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() || t0.elapsed() > Duration::from_secs(60) {
                break;
            }
            let now_index = names(&e.repo().join("index"));
            let hit = match when {
                When::Delay(ms) => t0.elapsed() >= Duration::from_millis(ms),
                When::NewIndexFile => now_index.iter().any(|n| !old_index.contains(n)),
                When::OldIndexGone => old_index.iter().any(|n| !now_index.contains(n)),
                When::OldPackGone => old_packs.iter().any(|p| !p.exists()),
            };
            if hit {
                break;
            }
            std::thread::sleep(Duration::from_micros(300));
        }
        let _ = child.kill();
        let finished = child.wait().unwrap().success();
        if !finished {
            killed_mid_run += 1;
        }
        eprintln!(
            "run {run}: kill at {when:?}: prune had {}",
            if finished { "finished" } else { "not finished" }
        );
        e.ok(&["check", "--read-data"]);
        assert_kept_snapshots_restore(&e, &kept, 0.08);
        // A backup after the kill works (and may adopt leftover packs);
        // prune then finishes the job.
        let src = e.path("src");
        common::backup_at(&e, &src, "2024-03-09T00:00:00");
        e.ok(&["prune"]);
        e.ok(&["check", "--read-data"]);
        assert_kept_snapshots_restore(&e, &kept, 0.08);
    }
    assert!(
        killed_mid_run * 2 >= runs,
        "most kills must land while prune runs ({killed_mid_run} of {runs})"
    );
}

/// A backup and a prune never run at once: whichever comes second gets exit
/// 11 naming the other, and nothing the backup wrote is lost.
#[test]
fn prune_during_a_backup_is_refused_and_the_backup_loses_nothing() {
    let (e, ids) = two_days_first_forgotten();
    let big = e.path("big");
    gen(&big, 5, 1.0);
    let mut backup = e
        .cmd(&["backup", big.to_str().unwrap(), "--account", "big"])
        .spawn()
        .unwrap();
    // Wait for the backup's lock, then try to prune while it runs.
    let t0 = std::time::Instant::now();
    while names(&e.repo().join("locks")).is_empty() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let o = e.run(&["prune"]);
    let still_running = backup.try_wait().unwrap().is_none();
    assert!(
        still_running,
        "the backup must still run when prune starts (100 MB to read)"
    );
    assert!(backup.wait().unwrap().success());
    assert_eq!(
        o.status.code(),
        Some(11),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("backup"));
    e.ok(&["prune"]);
    e.ok(&["check", "--read-data"]);
    let got = e.path("got-big");
    e.ok(&[
        "restore",
        "latest",
        "--account",
        "big",
        "--target",
        got.to_str().unwrap(),
    ]);
    same_tree(&big, &got);
    assert_kept_snapshots_restore(&e, &[(ids[1].clone(), 1)], 0.02);
}
