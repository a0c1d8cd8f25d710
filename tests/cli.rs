//! End-to-end tests through the `arca` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

#[test]
fn several_days_back_up_and_restore_identically() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for day in 0..4 {
        gen(&src, day, 0.02);
        let t = format!("2024-03-0{}T02:00:00", day + 1);
        e.ok(&[
            "backup",
            src.to_str().unwrap(),
            "--account",
            "acme",
            "--tag",
            "daily",
            "--time",
            &t,
        ]);
    }
    let snaps = e.snapshots_json();
    assert_eq!(snaps.len(), 4);
    for (i, s) in snaps.iter().enumerate() {
        assert_eq!(s["account"], "acme");
        assert_eq!(s["time"], format!("2024-03-0{}T02:00:00Z", i + 1));
        assert_eq!(s["tags"], serde_json::json!(["daily"]));
        assert_eq!(s["paths"][0], src.canonicalize().unwrap().to_str().unwrap());
        assert_eq!(s["id"].as_str().unwrap().len(), 64);
        assert_eq!(s["summary"]["total_files"], 9);
    }
    // Day 1 onwards: every file was rewritten with new content.
    assert_eq!(snaps[1]["summary"]["files_changed"], 9);

    let out = e.path("out-latest");
    e.ok(&[
        "restore",
        "latest",
        "--account",
        "acme",
        "--target",
        out.to_str().unwrap(),
    ]);
    same_tree(&src, &out);

    // An older snapshot by id prefix equals that day regenerated.
    let day1 = e.path("day1");
    gen(&day1, 1, 0.02);
    let out1 = e.path("out-1");
    let prefix = &snaps[1]["id"].as_str().unwrap()[..10];
    e.ok(&["restore", prefix, "--target", out1.to_str().unwrap()]);
    same_tree(&day1, &out1);

    // One path only.
    let part = e.path("out-part");
    e.ok(&[
        "restore",
        "latest",
        "--include",
        "orders.csv",
        "--target",
        part.to_str().unwrap(),
    ]);
    let names: Vec<_> = std::fs::read_dir(&part)
        .unwrap()
        .map(|d| d.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("orders.csv")]);
    assert_eq!(
        std::fs::read(part.join("orders.csv")).unwrap(),
        std::fs::read(src.join("orders.csv")).unwrap()
    );

    // A path the snapshot lacks is a clear error with its own code.
    e.expect(
        &[
            "restore",
            "latest",
            "--include",
            "nope.csv",
            "--target",
            part.to_str().unwrap(),
        ],
        13,
    );

    e.ok(&["check", "--read-data"]);
}

#[test]
fn unchanged_files_are_taken_from_the_parent() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.02);
    e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    let out: serde_json::Value =
        serde_json::from_str(&e.ok(&["backup", src.to_str().unwrap(), "--account", "a", "--json"]))
            .unwrap();
    assert_eq!(out["summary"]["files_unchanged"], 9);
    assert_eq!(out["summary"]["bytes_read"], 0);
    assert_eq!(out["summary"]["blobs_added"], 0);
    // Nothing changed, so the index cache is only read: a third backup
    // leaves its files as they were (no log, manifest, options or table
    // file written), and still takes every file from its parent.
    let cache_files = || {
        let mut v = Vec::new();
        for repo_dir in std::fs::read_dir(e.cache()).unwrap() {
            let db = repo_dir.unwrap().path().join("index.0");
            for f in std::fs::read_dir(&db).unwrap() {
                let f = f.unwrap();
                let md = f.metadata().unwrap();
                v.push((f.file_name(), md.len(), md.modified().unwrap()));
            }
        }
        v.sort();
        v
    };
    let before = cache_files();
    assert!(before
        .iter()
        .any(|f| f.0.to_string_lossy().ends_with(".sst")));
    let third: serde_json::Value =
        serde_json::from_str(&e.ok(&["backup", src.to_str().unwrap(), "--account", "a", "--json"]))
            .unwrap();
    assert_eq!(third["summary"]["files_unchanged"], 9);
    assert_eq!(third["summary"]["bytes_read"], 0);
    assert_eq!(cache_files(), before);
    let forced: serde_json::Value = serde_json::from_str(&e.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--account",
        "a",
        "--json",
        "--force",
    ]))
    .unwrap();
    assert!(forced["summary"]["bytes_read"].as_u64().unwrap() > 1_000_000);
    assert_eq!(
        forced["summary"]["blobs_added"], 0,
        "re-read content dedups to nothing new"
    );
}

#[test]
fn snapshot_filters() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.01);
    let s = src.to_str().unwrap();
    e.ok(&[
        "backup",
        s,
        "--account",
        "a",
        "--time",
        "2024-01-01T00:00:00Z",
        "--tag",
        "x",
    ]);
    e.ok(&[
        "backup",
        s,
        "--account",
        "a",
        "--time",
        "2024-01-02 00:00:00",
    ]);
    e.ok(&[
        "backup",
        s,
        "--account",
        "b",
        "--time",
        "2024-01-03T01:00:00+01:00",
        "--tag",
        "x",
    ]);
    let q = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["snapshots", "--json"];
        a.extend_from_slice(args);
        let v: Vec<serde_json::Value> = serde_json::from_str(&e.ok(&a)).unwrap();
        v.iter()
            .map(|s| s["time"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(q(&[]).len(), 3);
    assert_eq!(q(&["--account", "a"]).len(), 2);
    assert_eq!(
        q(&["--tag", "x"]),
        vec!["2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z"]
    );
    assert_eq!(
        q(&["--before", "2024-01-02T00:00:00"]),
        vec!["2024-01-01T00:00:00Z"]
    );
    assert_eq!(q(&["--after", "2024-01-02T00:00:00Z"]).len(), 2);
    assert_eq!(
        q(&["--latest", "1"]),
        vec!["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"]
    );
    let table = e.ok(&["snapshots"]);
    assert!(table.contains("3 snapshot(s)"), "{table}");
    e.expect(&["snapshots", "--before", "last tuesday"], 1);
}

#[test]
fn wrong_password_missing_repo_and_missing_path_have_their_codes() {
    let e = Env::new();
    e.expect(&["snapshots"], 10);
    e.init();
    let o = e.run_pw("wrong", &["snapshots"]);
    assert_eq!(
        o.status.code(),
        Some(12),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong password"));
    e.expect(&["backup", "/definitely/not/here", "--account", "a"], 13);
    e.expect(&["init"], 1);
    e.expect(&["backup"], 2);
    // Password from a file and from a command.
    let pf = e.path("pw");
    std::fs::write(&pf, format!("{PASSWORD}\n")).unwrap();
    let o = e
        .cmd(&["snapshots", "--password-file", pf.to_str().unwrap()])
        .env_remove("ARCA_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let o = e
        .cmd(&[
            "snapshots",
            "--password-command",
            &format!("echo '{PASSWORD}'"),
        ])
        .env_remove("ARCA_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn two_backups_at_once_from_two_processes_are_both_valid() {
    let e = Env::new();
    e.init();
    let (a, b) = (e.path("a"), e.path("b"));
    gen(&a, 0, 0.1);
    gen(&b, 3, 0.1);
    let mut pa = e
        .cmd(&["backup", a.to_str().unwrap(), "--account", "a"])
        .spawn()
        .unwrap();
    let mut pb = e
        .cmd(&["backup", b.to_str().unwrap(), "--account", "b"])
        .spawn()
        .unwrap();
    assert!(pa.wait().unwrap().success());
    assert!(pb.wait().unwrap().success());
    assert_eq!(e.snapshots_json().len(), 2);
    e.ok(&["check", "--read-data"]);
    for (acct, src) in [("a", &a), ("b", &b)] {
        let out = e.path(&format!("out-{acct}"));
        e.ok(&[
            "restore",
            "latest",
            "--account",
            acct,
            "--target",
            out.to_str().unwrap(),
        ]);
        same_tree(src, &out);
    }
}

#[test]
fn kill_during_backup_leaves_a_valid_repository_and_the_next_backup_reuses_packs() {
    // A clean reference for the stored size.
    let clean = Env::new();
    clean.ok(&["init", "--pack-size-mib", "1"]);
    let src = clean.path("src");
    gen(&src, 0, 0.4);
    clean.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    let clean_bytes = pack_bytes(&clean.repo());

    let mut reused_somewhere = false;
    // Kill at fixed moments of the backup's progress: before any pack, after
    // the first, mid-way (packs written but not yet indexed), just after the
    // first index file (every 8 packs), and after a plain delay.
    enum When {
        Delay(u64),
        Packs(usize),
    }
    let moments = [
        When::Delay(20),
        When::Packs(1),
        When::Packs(3),
        When::Packs(9),
        When::Delay(700),
    ];
    for (i, when) in moments.into_iter().enumerate() {
        let e = Env::new();
        e.ok(&["init", "--pack-size-mib", "1"]);
        let mut child = e
            .cmd(&["backup", src.to_str().unwrap(), "--account", "a"])
            .spawn()
            .unwrap();
        match when {
            When::Delay(ms) => std::thread::sleep(Duration::from_millis(ms)),
            When::Packs(n) => {
                let t0 = std::time::Instant::now();
                while packs(&e.repo()).len() < n
                    && child.try_wait().unwrap().is_none()
                    && t0.elapsed() < Duration::from_secs(60)
                {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        let after_kill = packs(&e.repo()).len();
        eprintln!(
            "run {i}: exit {:?}, {after_kill} packs after the kill",
            status.code()
        );
        // The repository is readable and checks clean (unindexed packs are
        // only warnings), whatever the moment of the kill.
        e.ok(&["check"]);
        let o = e.run(&["backup", src.to_str().unwrap(), "--account", "a", "--json"]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        // Fewer than 8 packs means none was listed in an index file yet
        // (index files come every 8 packs): all of them must be adopted.
        if (1..8).contains(&after_kill) {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains(&format!("reused {after_kill} pack")),
                "run {i}: {err}"
            );
        }
        e.ok(&["check", "--read-data"]);
        let restored = e.path("out");
        e.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
        same_tree(&src, &restored);
        let total = pack_bytes(&e.repo());
        // Nothing stored twice: packs adopted from the killed run are reused.
        assert!(
            total <= clean_bytes + clean_bytes / 50 + 64 * 1024,
            "run {i}: {total} bytes stored vs {clean_bytes} for a clean backup"
        );
        if status.code().is_none() && after_kill > 0 {
            assert!(out["summary"]["bytes_stored"].as_u64().unwrap() < clean_bytes);
            reused_somewhere = true;
        }
        // Prune removes the partial files the kill left (a pack being
        // filled, an index file being written), and only those.
        let partial = temporaries(&e.repo());
        eprintln!("run {i}: {partial} partial files left");
        let o = e.run(&["prune", "--json"]);
        assert_eq!(o.status.code(), Some(0));
        let pr: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(pr["temporaries_removed"].as_u64(), Some(partial), "run {i}");
        assert_eq!(temporaries(&e.repo()), 0);
        e.ok(&["check", "--read-data"]);
    }
    assert!(
        reused_somewhere,
        "at least one kill landed after a pack was written"
    );
}

/// Files under temporary names anywhere in repository `repo`.
fn temporaries(repo: &std::path::Path) -> u64 {
    let mut n = 0;
    let mut dirs = vec![repo.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
                n += 1;
            }
        }
    }
    n
}

/// A repository with one backup of generated data, and its largest pack
/// (the data pack; the tree pack is much smaller).
fn one_backup_and_its_data_pack() -> (Env, std::path::PathBuf) {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.02);
    e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    let victim = largest_pack(&e.repo());
    (e, victim)
}

#[test]
fn flipped_byte_is_found_by_read_data_and_named() {
    let (e, victim) = one_backup_and_its_data_pack();
    let name = flip_middle_byte(&victim);

    let o = e.run(&["check", "--read-data"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains(&name), "names the pack: {err}");
    assert!(err.contains("snapshot "), "names the snapshot: {err}");
    assert!(err.contains(".csv"), "names the file: {err}");

    let out = e.path("out");
    let o = e.run(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(14),
        "restore refuses damaged data: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A pack the index lists but the repository lost: restore and backup
/// stop with the damage code naming it (not an I/O error), and after
/// `repair index` a backup stores the data again and checks whole.
#[test]
fn a_missing_pack_is_damage_and_repair_index_lets_backups_store_it_again() {
    let (e, victim) = one_backup_and_its_data_pack();
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::remove_file(&victim).unwrap();
    let out = e.path("out");
    let o = e.run(&["restore", "latest", "--target", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(14), "{err}");
    assert!(
        err.contains(&format!("pack {name}")) && err.contains("missing from the repository"),
        "{err}"
    );
    assert_eq!(e.run(&["check"]).status.code(), Some(4));
    e.ok(&["repair", "index"]);
    let src = e.path("src");
    e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    let out = e.path("out2");
    e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);
}

#[test]
fn read_data_slices_part_the_packs_and_the_damaged_one_is_in_its_slice() {
    // Whole chunks: a delta is read through its base, so with deltas a
    // damaged base is (rightly) also reported by the slices of the packs
    // holding deltas built on it.
    let e = Env::new();
    e.ok(&["init", "--no-delta", "--pack-size-mib", "1"]);
    let src = e.path("src");
    for day in 0..2 {
        gen(&src, day, 0.02);
        e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    }
    let name = flip_middle_byte(&largest_pack(&e.repo()));
    let all = packs(&e.repo()).len() as u64;
    assert!(all >= 3, "{all} packs");
    // Its slice, as format-spec §2 defines it.
    let first: [u8; 8] = hex::decode(&name[..16]).unwrap().try_into().unwrap();
    let t = 3u64;
    let expect = u64::from_le_bytes(first) % t + 1;

    let mut read = 0;
    for n in 1..=t {
        let o = e.run(&["--json", "check", "--read-data-subset", &format!("{n}/{t}")]);
        let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        read += rep["packs_read"].as_u64().unwrap();
        let errors = rep["errors"].to_string();
        if n == expect {
            assert_eq!(o.status.code(), Some(4), "slice {n}: {errors}");
            assert!(errors.contains(&name), "slice {n} names the pack: {errors}");
        } else {
            assert_eq!(o.status.code(), Some(0), "slice {n}: {errors}");
        }
    }
    assert_eq!(read, all, "the slices read every pack once");

    let count = |arg: &str| {
        let o = e.run(&["--json", "check", "--read-data-subset", arg]);
        let rep: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        rep["packs_read"].as_u64().unwrap()
    };
    assert_eq!(count("1/1"), all);
    assert_eq!(count("100%"), all);
    assert_eq!(count("0%"), 0);
    for bad in ["0/3", "4/3", "1/0", "a/3", "101%", "x%"] {
        let o = e.run(&["check", "--read-data-subset", bad]);
        assert_eq!(
            o.status.code(),
            Some(2),
            "{bad}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn truncated_pack_is_reported_by_check() {
    let (e, victim) = one_backup_and_its_data_pack();
    let len = std::fs::metadata(&victim).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap();
    f.set_len(len / 3).unwrap();
    let o = e.run(&["check"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains(victim.file_name().unwrap().to_str().unwrap()),
        "{err}"
    );
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn repair_index_rebuilds_from_packs_alone() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for day in 0..2 {
        gen(&src, day, 0.02);
        e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    }
    for f in std::fs::read_dir(e.repo().join("index")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    std::fs::remove_dir_all(e.cache()).unwrap();
    // Without an index, check sees every blob as missing.
    e.expect(&["check"], 4);
    let out = e.ok(&["repair", "index"]);
    assert!(out.contains("index rebuilt"), "{out}");
    e.ok(&["check", "--read-data"]);
    let restored = e.path("out");
    e.ok(&["restore", "latest", "--target", restored.to_str().unwrap()]);
    same_tree(&src, &restored);
    // Another client whose cache still lists the old index files rebuilds it.
    e.ok(&["repair", "index"]);
    e.ok(&["check"]);
}

#[test]
fn a_locked_repository_gives_exit_11_and_unlock_clears_stale_locks() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.01);
    let backend = std::sync::Arc::new(arca::backend::LocalBackend::new(e.repo()));
    let repo = arca::repository::Repository::open(backend, PASSWORD.as_bytes()).unwrap();
    {
        let _held = arca::lock::acquire(&repo, true, "prune").unwrap();
        let o = e.run(&["backup", src.to_str().unwrap(), "--account", "a"]);
        assert_eq!(o.status.code(), Some(11));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("locked") && err.contains("prune"), "{err}");
        // unlock without --force leaves a live lock alone.
        e.ok(&["unlock"]);
        e.expect(&["backup", src.to_str().unwrap(), "--account", "a"], 11);
    }
    // A shared lock does not block another shared lock, only exclusive ones.
    {
        let _held = arca::lock::acquire(&repo, false, "backup").unwrap();
        e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
        e.expect(&["repair", "index"], 11);
    }
    assert!(std::fs::read_dir(e.repo().join("locks"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn keys_add_list_remove_and_passwd() {
    let e = Env::new();
    e.init();
    let pw2 = e.path("pw2");
    std::fs::write(&pw2, "second password\n").unwrap();
    e.ok(&["key", "add", "--new-password-file", pw2.to_str().unwrap()]);
    let keys: Vec<serde_json::Value> =
        serde_json::from_str(&e.ok(&["key", "list", "--json"])).unwrap();
    assert_eq!(keys.len(), 2);
    let other = keys.iter().find(|k| k["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The new password opens the repository.
    let o = e.run_pw("second password", &["snapshots"]);
    assert_eq!(o.status.code(), Some(0));
    // The key in use cannot be removed, the other can; the last never.
    let current = keys.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    e.expect(&["key", "remove", &current[..12]], 1);
    e.ok(&["key", "remove", &other[..12]]);
    let o = e.run_pw("second password", &["snapshots"]);
    assert_eq!(o.status.code(), Some(12));
    // passwd: the old password stops working, the new one works.
    let pw3 = e.path("pw3");
    std::fs::write(&pw3, "third\n").unwrap();
    e.ok(&[
        "key",
        "passwd",
        "--new-password-file",
        pw3.to_str().unwrap(),
    ]);
    e.expect(&["snapshots"], 12);
    let o = e.run_pw("third", &["snapshots"]);
    assert_eq!(o.status.code(), Some(0));
    let o = e.run_pw("third", &["key", "list", "--json"]);
    let keys: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(keys.len(), 1);
    let last = keys[0]["id"].as_str().unwrap();
    let o = e.run_pw("third", &["key", "remove", &last[..12]]);
    assert_eq!(o.status.code(), Some(1), "the last key is never removed");
    assert!(String::from_utf8_lossy(&o.stderr).contains("last key"));
}

#[test]
fn a_newer_format_version_is_refused_clearly() {
    let e = Env::new();
    e.init();
    let cfg = e.repo().join("config");
    let mut b = std::fs::read(&cfg).unwrap();
    b[4] = 2; // format version, little-endian u16 at bytes 4..6
    std::fs::write(&cfg, &b).unwrap();
    let o = e.run(&["snapshots"]);
    assert_eq!(o.status.code(), Some(16));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("version 2") && err.contains("upgrade"),
        "{err}"
    );
}

/// The scan runs over a directory's entries in parallel: the tree it makes
/// must not depend on which thread found what. Many directories of files
/// that are read (new, changed, or forced) and reused (unchanged): the same
/// tree id every time the content is the same, and restores identical.
#[test]
fn parallel_scan_makes_the_same_tree_every_time() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for d in 0..24 {
        let dir = src.join(format!("m{:02}/app{}", d % 6, d));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..15 {
            let body: String = (0..(f * 40 + d))
                .map(|i| format!("{d},{f},{i},row\n"))
                .collect();
            std::fs::write(dir.join(format!("r{f:02}.csv")), body).unwrap();
        }
    }
    let backup = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["backup", src.to_str().unwrap(), "--account", "a", "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&e.ok(&args)).unwrap()
    };
    // The root tree of the snapshot a backup printed.
    let tree = |b: &serde_json::Value| -> String {
        let snaps = e.snapshots_json();
        let s = snaps.iter().find(|s| s["id"] == b["id"]).expect("listed");
        s["tree"].as_str().expect("a tree id").to_string()
    };
    let first = backup(&[]);
    let reused = backup(&[]);
    let forced = backup(&["--force"]);
    assert_eq!(reused["summary"]["files_unchanged"], 360);
    assert_eq!(
        forced["summary"]["bytes_read"],
        first["summary"]["bytes_read"]
    );
    assert_eq!(tree(&first), tree(&reused));
    assert_eq!(tree(&first), tree(&forced));
    // One file deep down changes: only it is read, and the tree follows.
    let deep = src.join("m03/app9/r07.csv");
    std::fs::write(&deep, "changed\n").unwrap();
    let changed = backup(&[]);
    assert_eq!(changed["summary"]["files_changed"], 1);
    assert_eq!(changed["summary"]["files_unchanged"], 359);
    assert_ne!(tree(&changed), tree(&first));
    let out = e.path("out");
    e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);
    e.ok(&["check", "--read-data"]);
}

#[test]
fn unreadable_source_file_gives_exit_3_and_a_valid_snapshot() {
    // /proc/self/mem fails with EIO when read from offset 0, even for root,
    // which ignores permission bits.
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.01);
    let o = e.run(&[
        "backup",
        src.to_str().unwrap(),
        "/proc/self/mem",
        "--account",
        "a",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("mem"), "names the file: {err}");
    let snaps = e.snapshots_json();
    assert_eq!(snaps[0]["summary"]["errors"], 1);
    assert_eq!(snaps[0]["summary"]["total_files"], 9);
    e.ok(&["check", "--read-data"]);
    let out = e.path("out");
    e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out.join("src"));
}

#[test]
fn symlinks_and_nested_directories_round_trip() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src.join("apps/crm/records"), 0, 0.01);
    std::os::unix::fs::symlink("apps/crm/records/orders.csv", src.join("latest-orders")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", src.join("dangling")).unwrap();
    std::fs::write(src.join("empty.json"), b"").unwrap();
    std::fs::set_permissions(
        src.join("empty.json"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    let out = e.path("out");
    e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);
    let part = e.path("part");
    e.ok(&[
        "restore",
        "latest",
        "--include",
        "apps/crm",
        "--target",
        part.to_str().unwrap(),
    ]);
    same_tree(&src.join("apps/crm"), &part.join("apps/crm"));
}

#[test]
fn ctrl_c_during_backup_exits_130_and_leaves_the_repository_valid() {
    let e = Env::new();
    e.ok(&["init", "--pack-size-mib", "1"]);
    let src = e.path("src");
    gen(&src, 0, 0.5);
    let mut interrupted = false;
    for delay_ms in [100u64, 300] {
        let child = e
            .cmd(&["backup", src.to_str().unwrap(), "--account", "a"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let pid = child.id().to_string();
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        let o = child.wait_with_output().unwrap();
        match o.status.code() {
            Some(130) => interrupted = true,
            Some(0) => {}
            other => panic!(
                "unexpected exit {other:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
        }
        // The interrupted process released its lock: an exclusive operation
        // can run at once.
        e.ok(&["repair", "index"]);
        e.ok(&["check"]);
    }
    assert!(interrupted, "at least one interrupt landed mid-backup");
    e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    let out = e.path("out");
    e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);
}

/// Regression: a tag over the spec's 4096-byte limit used to be written into
/// a snapshot that every later `snapshots` and backup then failed to read.
#[test]
fn a_too_long_tag_is_refused_and_the_repository_stays_usable() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.01);
    let tag = "t".repeat(4097);
    let o = e.run(&[
        "backup",
        src.to_str().unwrap(),
        "--account",
        "a",
        "--tag",
        &tag,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("limit is 4096"));
    assert!(e.snapshots_json().is_empty());
    e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    e.ok(&["check"]);
}

#[test]
fn key_cache_flag_parses_and_uncache_needs_no_password() {
    let e = Env::new();
    e.init();
    // A bad duration is a usage error; durations and "off" are accepted.
    let o = e.run(&["--key-cache", "banana", "snapshots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--key-cache"));
    e.ok(&["--key-cache", "off", "snapshots"]);
    e.ok(&["--key-cache", "15m", "snapshots"]);
    // With the entry in place, a wrong password is still refused.
    let o = e.run_pw("not the password", &["--key-cache", "15m", "snapshots"]);
    assert_eq!(o.status.code(), Some(12));
    // uncache works without any password, and drops the entry if the
    // keyring took one (none in a sandbox without a keyring).
    let keys: Vec<serde_json::Value> =
        serde_json::from_str(&e.ok(&["key", "list", "--json"])).unwrap();
    let id = keys[0]["id"].as_str().unwrap();
    let cached = arca::keycache::lookup(id, PASSWORD.as_bytes(), 60).is_some();
    let mut uncache = e.cmd(&["key", "uncache"]);
    uncache.env_remove("ARCA_PASSWORD");
    let out = e.ok_cmd(uncache);
    let dropped = if cached { "dropped 1" } else { "dropped 0" };
    assert!(out.contains(dropped));
    assert!(arca::keycache::lookup(id, PASSWORD.as_bytes(), 60).is_none());
}

/// Without `--key-cache`, a password from a file or the environment has its
/// key cached (15 minutes), and `--key-cache off` caches nothing.
#[test]
fn key_cache_is_on_by_default_for_stored_passwords() {
    let e = Env::new();
    e.ok(&["--key-cache", "off", "init"]);
    let keys: Vec<serde_json::Value> =
        serde_json::from_str(&e.ok(&["--key-cache", "off", "key", "list", "--json"])).unwrap();
    let id = keys[0]["id"].as_str().unwrap().to_string();
    let cached = || arca::keycache::lookup(&id, PASSWORD.as_bytes(), 60).is_some();
    assert!(!cached(), "--key-cache off stores nothing");
    // Whether this keyring takes entries at all (a sandbox or a quota may
    // refuse them, and then the cache is silently off).
    let probe = format!("probe-{}", std::process::id());
    let probe_kek = arca::crypto::Secret32::from_bytes([3; 32]);
    let usable = arca::keycache::store(&probe, b"p", &probe_kek, 60)
        && arca::keycache::lookup(&probe, b"p", 60).is_some();
    arca::keycache::forget(&probe);
    if !usable {
        eprintln!("kernel keyring not usable here: checked that commands still work");
    }
    // A password file, no --key-cache: cached.
    let pw_file = e.path("pw");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let mut from_file = e.cmd(&["snapshots"]);
    from_file
        .env_remove("ARCA_PASSWORD")
        .env("ARCA_PASSWORD_FILE", &pw_file);
    e.ok_cmd(from_file);
    assert_eq!(
        cached(),
        usable,
        "a password file caches its key by default"
    );
    e.ok(&["key", "uncache"]);
    assert!(!cached());
    // ARCA_PASSWORD, no --key-cache: cached; a wrong password still fails.
    e.ok(&["snapshots"]);
    assert_eq!(cached(), usable, "ARCA_PASSWORD caches its key by default");
    assert_eq!(
        e.run_pw("not the password", &["snapshots"]).status.code(),
        Some(12)
    );
    // init itself stores the key it derived.
    let e2 = Env::new();
    e2.init();
    let keys: Vec<serde_json::Value> =
        serde_json::from_str(&e2.ok(&["--key-cache", "off", "key", "list", "--json"])).unwrap();
    let id2 = keys[0]["id"].as_str().unwrap();
    assert_eq!(
        arca::keycache::lookup(id2, PASSWORD.as_bytes(), 60).is_some(),
        usable,
        "init caches the key it derived"
    );
    e.ok(&["key", "uncache"]);
    e2.ok(&["key", "uncache"]);
}

#[test]
fn unwritable_output_is_an_error_or_quiet_never_a_panic() {
    let e = Env::new();
    e.init();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    // Standard output on a full device: the storage-full code, named.
    let o = e
        .cmd(&["--json", "snapshots"])
        .stdout(full())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(15), "{err}");
    assert!(err.contains("standard output"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A reader that went away (`arca snapshots | head`): quiet, and the
    // command's own outcome.
    let mut child = e
        .cmd(&["--json", "stats"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    // Standard error on a full device: the error's own code still.
    let o = e
        .cmd(&["snapshots"])
        .env("ARCA_REPOSITORY", e.path("missing"))
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(10));
}

/// `restore --at` brings back the state at a point in time: the newest
/// snapshot at or before it, of the account given.
#[test]
fn restore_at_a_time_brings_back_the_state_then() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for day in 0..3 {
        backup_day(&e, &src, day, 0.05);
    }
    // Another account's snapshot, newer than acme's at 12:30, is not taken.
    backup_at(&e, &src, "2024-03-02T12:00:00Z");
    let other = e.path("other");
    gen(&other, 0, 0.02);
    e.ok(&[
        "backup",
        other.to_str().unwrap(),
        "--account",
        "zeta",
        "--time",
        "2024-03-02T12:15:00Z",
    ]);
    let restore_at = |at: &str, day: u32| {
        let out = e.path(&format!("at-{at}"));
        let o = e.ok(&[
            "restore",
            "latest",
            "--account",
            "acme",
            "--at",
            at,
            "--target",
            out.to_str().unwrap(),
        ]);
        let want = e.path(&format!("want-{day}"));
        if !want.exists() {
            gen(&want, day, 0.05);
        }
        same_tree(&want, &out);
        o
    };
    // Between snapshots, at a snapshot's very second, after the last.
    restore_at("2024-03-01T20:00:00Z", 0);
    restore_at("2024-03-02T02:00:00", 1);
    restore_at("2024-03-02T12:30:00Z", 2); // day 2's tree backed up at 12:00
    restore_at("2025-01-01", 2);
    // Before the first snapshot: an error, and nothing written.
    let none = e.path("none");
    let o = e.run(&[
        "restore",
        "latest",
        "--account",
        "acme",
        "--at",
        "2024-02-01",
        "--target",
        none.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no snapshot at or before 2024-02-01"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!none.exists());
    // A snapshot id and a time together are refused.
    let id = e.snapshots_json()[0]["id"].as_str().unwrap().to_string();
    let o = e.run(&[
        "restore",
        &id,
        "--at",
        "2024-03-02",
        "--target",
        none.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not both"));
}

#[test]
fn single_records_come_back_from_a_snapshot_and_from_a_point_in_time() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("clients.csv"),
        "id,name,balance\n1,Ana,10\n2,Bo,20\n",
    )
    .unwrap();
    backup_at(&e, &src, "2024-03-01T02:00:00Z");
    // Next day: client 1 changed, client 2 deleted, client 3 new.
    std::fs::write(
        src.join("clients.csv"),
        "id,name,balance\n1,Ana,15\n3,Cy,30\n",
    )
    .unwrap();
    backup_at(&e, &src, "2024-03-02T02:00:00Z");
    let rec = |extra: &[&str]| {
        let mut a = vec![
            "restore",
            "latest",
            "--account",
            "acme",
            "--table",
            "clients",
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let v = rec(&["--where", "id=1"]);
    assert_eq!(e.ok(&args(&v)), "id,name,balance\n1,Ana,15\n");
    // The deleted client, as it was the day before.
    let v = rec(&["--at", "2024-03-01T12:00:00Z", "--where", "id=2"]);
    assert_eq!(e.ok(&args(&v)), "id,name,balance\n2,Bo,20\n");
    let v = rec(&["--where", "id=2"]);
    let o = e.run(&args(&v));
    assert_eq!(o.status.code(), Some(13));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no record of table clients"));
    // Several conditions, and --json.
    let v = rec(&["--where", "name=Ana", "--where", "balance=15", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&e.ok(&args(&v))).unwrap();
    assert_eq!(
        j,
        serde_json::json!([{"id": "1", "name": "Ana", "balance": "15"}])
    );
    // Errors: no such table (13), no such column (1), and usage (2).
    let mut v = rec(&["--where", "id=1"]);
    v[5] = "client".into();
    assert_eq!(e.run(&args(&v)).status.code(), Some(13));
    let v = rec(&["--where", "idd=1"]);
    let o = e.run(&args(&v));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("its columns: id, name, balance"));
    let v = rec(&["--where", "id"]);
    assert_eq!(e.run(&args(&v)).status.code(), Some(2));
    let x = e.path("x");
    let x = x.to_str().unwrap();
    let v = rec(&["--where", "id=1", "--target", x]);
    assert_eq!(e.run(&args(&v)).status.code(), Some(2));
    e.expect(&["restore", "latest", "--where", "id=1", "--target", x], 2);
    assert!(!e.path("x").exists(), "nothing restored");
    e.expect(&["restore", "latest"], 2);

    // The history of client 2: there on day one, gone on day two.
    let v = rec(&["--where", "id=2", "--history"]);
    let out = e.ok(&args(&v));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("# 2024-03-01T02:00:00Z snapshot ")
            && lines[0].ends_with(": 1 record")
    );
    assert_eq!(&lines[1..3], ["id,name,balance", "2,Bo,20"]);
    assert!(
        lines[3].starts_with("# 2024-03-02T02:00:00Z snapshot ")
            && lines[3].ends_with(": no record")
    );
    let v = rec(&["--where", "id=1", "--history", "--json"]);
    let j: serde_json::Value = serde_json::from_str(&e.ok(&args(&v))).unwrap();
    let balances: Vec<&str> = j
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["records"][0]["balance"].as_str().unwrap())
        .collect();
    assert_eq!(balances, ["10", "15"]);
    let v = rec(&["--history"]);
    assert_eq!(
        e.run(&args(&v)).status.code(),
        Some(2),
        "a history needs --where"
    );
}

#[test]
fn copy_mirrors_the_repository_into_a_directory_and_follows_prune() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for day in 0..3 {
        backup_day(&e, &src, day, 0.02);
    }
    let mirror = e.path("mirror");
    let m = mirror.to_str().unwrap();
    let r: serde_json::Value = serde_json::from_str(&e.ok(&["--json", "copy", "--to", m])).unwrap();
    assert_eq!(r["existed"], false);
    assert!(r["copied"].as_u64().unwrap() > 5, "{r}");
    let on_mirror = |args: &[&str]| {
        let mut c = e.cmd(args);
        c.env("ARCA_REPOSITORY", &mirror);
        e.ok_cmd(c)
    };
    assert_eq!(
        on_mirror(&["snapshots", "--json"]),
        e.ok(&["snapshots", "--json"])
    );
    let out = e.path("out");
    on_mirror(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);

    // forget + prune at the source; the mirror keeps everything until
    // --delete, then matches.
    e.ok(&["forget", "--keep-last", "1", "--prune"]);
    let r: serde_json::Value = serde_json::from_str(&e.ok(&["--json", "copy", "--to", m])).unwrap();
    assert_eq!(
        (r["existed"].as_bool(), r["deleted"].as_u64()),
        (Some(true), Some(0))
    );
    let listed = |args: &[&str]| -> usize {
        serde_json::from_str::<Vec<serde_json::Value>>(&on_mirror(args))
            .unwrap()
            .len()
    };
    assert_eq!(listed(&["snapshots", "--json"]), 3);
    let r: serde_json::Value =
        serde_json::from_str(&e.ok(&["--json", "copy", "--to", m, "--delete"])).unwrap();
    assert!(r["deleted"].as_u64().unwrap() > 2, "{r}");
    assert_eq!(listed(&["snapshots", "--json"]), 1);
    let report = on_mirror(&["check", "--read-data"]);
    assert!(report.contains("no errors"), "{report}");
    assert_eq!(
        packs(&mirror).len(),
        packs(&e.repo()).len(),
        "the mirror holds the same packs"
    );

    // Another repository is never overwritten.
    let other = Env::new();
    other.init();
    e.expect(&["copy", "--to", other.repo().to_str().unwrap()], 1);
}

/// The one snapshot cache file under the test's cache root.
fn snapshot_cache_file(e: &Env) -> std::path::PathBuf {
    let mut found = Vec::new();
    for d in std::fs::read_dir(e.cache()).unwrap() {
        let p = d.unwrap().path().join("snapshots");
        if p.is_file() {
            found.push(p);
        }
    }
    assert_eq!(found.len(), 1, "one snapshot cache: {found:?}");
    found.remove(0)
}

#[test]
fn snapshot_files_are_read_from_the_local_cache_but_check_reads_the_repository() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for (i, t) in [
        "2024-03-01 02:00:00",
        "2024-03-02 02:00:00",
        "2024-03-03 02:00:00",
    ]
    .iter()
    .enumerate()
    {
        std::fs::write(src.join("orders.csv"), format!("id,total\n{i},10\n")).unwrap();
        backup_at(&e, &src, t);
    }
    let ids = listed_ids(&e);
    assert_eq!(ids.len(), 3);
    let cache = snapshot_cache_file(&e);
    let cached = std::fs::read(&cache).unwrap();
    // The cache holds exactly the repository's snapshot files, byte for
    // byte (whatever their order in it).
    let holds_exactly = |ids: &[String]| {
        let c = arca::snapcache::Cached::parse(std::fs::read(&cache).unwrap());
        assert_eq!(c.len(), ids.len());
        for id in ids {
            let file = std::fs::read(e.repo().join("snapshots").join(id)).unwrap();
            let fid = arca::id::FileId::from_hex(id).unwrap();
            assert_eq!(c.get(&fid), Some(&file[..]), "{id} cached as stored");
        }
        assert!(c.appendable());
    };
    holds_exactly(&ids);

    // A damaged file in the repository: listings take the cached copy
    // (it hashes to the file's name, so it is the file as written)...
    let victim = e.repo().join("snapshots").join(&ids[1]);
    let original = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, b"not a snapshot file").unwrap();
    assert_eq!(listed_ids(&e), ids);
    let restored = e.path("out");
    e.ok(&["restore", &ids[1], "--target", restored.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(restored.join("orders.csv")).unwrap(),
        "id,total\n1,10\n"
    );
    // ...but check reads the repository's own files, and names the damage.
    let o = e.run(&["check"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&ids[1][..8])
            || String::from_utf8_lossy(&o.stdout).contains(&ids[1][..8]),
        "{o:?}"
    );
    std::fs::write(&victim, &original).unwrap();
    e.ok(&["check"]);

    // A damaged cache entry is never used: the file is read from the
    // repository again and the cache rewritten with the good copy.
    let mut bad = std::fs::read(&cache).unwrap();
    let at = bad.len() - 5;
    bad[at] ^= 0x40;
    std::fs::write(&cache, &bad).unwrap();
    assert_eq!(listed_ids(&e), ids);
    holds_exactly(&ids);
    // So is a cache cut short, or one that is not a cache at all.
    std::fs::write(&cache, &cached[..cached.len() / 2]).unwrap();
    assert_eq!(listed_ids(&e), ids);
    holds_exactly(&ids);
    std::fs::write(&cache, b"junk").unwrap();
    assert_eq!(listed_ids(&e), ids);
    holds_exactly(&ids);

    // A snapshot forgotten (here by another client: its file is simply
    // gone) leaves the listing and the cache.
    std::fs::remove_file(e.repo().join("snapshots").join(&ids[0])).unwrap();
    assert_eq!(listed_ids(&e), ids[1..]);
    let after = std::fs::read(&cache).unwrap();
    let gone = hex::decode(&ids[0]).unwrap();
    assert!(
        !after.windows(32).any(|w| w == gone),
        "forgotten id left the cache"
    );
    assert!(after.len() < cached.len());
    holds_exactly(&ids[1..]);

    // A new snapshot is added at the end of the cache: nothing before it
    // is written again.
    std::fs::write(src.join("orders.csv"), "id,total\n9,10\n").unwrap();
    backup_at(&e, &src, "2024-03-04 02:00:00");
    let now = listed_ids(&e);
    assert_eq!(now.len(), 3);
    let grown = std::fs::read(&cache).unwrap();
    assert!(
        grown.len() > after.len() && grown.starts_with(&after),
        "appended"
    );
    holds_exactly(&now);
}

/// Runs `script` (bash) in a private mount namespace, where it may mount
/// small tmpfs file systems; `None` when this machine allows no namespace
/// (neither as root nor through a user namespace).
fn in_mount_namespace(e: &Env, script: &str) -> Option<std::process::Output> {
    let works = |args: &[&str]| {
        std::process::Command::new("unshare")
            .args(args)
            .args([
                "bash",
                "-c",
                "mount -t tmpfs -o size=64k none \"$0\"",
                "/mnt",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let flags: &[&str] = if works(&["-m"]) {
        &["-m"]
    } else if works(&["-Urm"]) {
        &["-Urm"]
    } else {
        return None;
    };
    let o = std::process::Command::new("unshare")
        .args(flags)
        .args(["bash", "-c", script])
        .env("ARCA", env!("CARGO_BIN_EXE_arca"))
        .env("D", e.dir.path())
        .env("ARCA_PASSWORD", PASSWORD)
        .env("ARCA_CACHE_DIR", e.cache())
        .env_remove("ARCA_REPOSITORY")
        .env_remove("ARCA_KEY_CACHE")
        .output()
        .unwrap();
    Some(o)
}

/// A full disk, under the repository, a restore's target or the index
/// cache: exit 15
/// naming what was being written, nothing half written left behind, the
/// space given back, the snapshots committed before still whole, and the
/// next backup that fits succeeds.
#[test]
fn a_full_disk_is_exit_15_and_loses_nothing_committed() {
    let e = Env::new();
    for d in ["small", "tiny", "tiny-cache", "src1", "src2", "src3"] {
        std::fs::create_dir_all(e.path(d)).unwrap();
    }
    gen(&e.path("src1"), 0, 0.02);
    std::fs::write(e.path("src2/big.bin"), arca::testutil::noise(12 << 20, 1)).unwrap();
    std::fs::write(e.path("src3/mid.bin"), arca::testutil::noise(2 << 20, 2)).unwrap();
    let script = r#"
        set -u
        mount -t tmpfs -o size=8m none "$D/small" || exit 99
        mount -t tmpfs -o size=256k none "$D/tiny" || exit 99
        R="$D/small/repo"
        run() { n=$1; shift; "$ARCA" --no-progress "$@" >"$D/$n.out" 2>"$D/$n.err"; echo "$n $?"; }
        run init --repo "$R" init
        run backup1 --repo "$R" backup --account acme "$D/src1"
        run backup2 --repo "$R" backup --account acme "$D/src2"
        run backup3 --repo "$R" backup --account acme "$D/src3"
        run restore --repo "$R" restore latest --account acme --target "$D/tiny/out"
        mount -t tmpfs -o size=16k none "$D/tiny-cache" || exit 99
        ARCA_CACHE_DIR="$D/tiny-cache" run cachefull --repo "$R" backup --account acme "$D/src1"
        ARCA_CACHE_DIR="$D/tiny-cache" run cachefull2 --repo "$R" restore latest --account acme --target "$D/out-cf"
        ARCA_CACHE_DIR="$D/tiny-cache" run cachelist --repo "$R" snapshots --json
        cp -a "$R" "$D/repo"
    "#;
    let Some(o) = in_mount_namespace(&e, script) else {
        eprintln!("SKIPPED: no mount namespace here (unshare -m and -Urm both refused)");
        return;
    };
    let codes = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = |n: &str| std::fs::read_to_string(e.path(&format!("{n}.err"))).unwrap_or_default();
    assert!(
        o.status.success(),
        "{codes}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let code = |n: &str| {
        codes
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{n} ")))
            .unwrap_or_else(|| panic!("no code for {n}: {codes}"))
            .to_string()
    };
    let says = |n: &str, want: &str, text: &str| {
        assert_eq!(code(n), want, "{n}: {}", err(n));
        assert!(err(n).contains(text), "{n}: {}", err(n));
        assert!(!err(n).contains("panicked"), "{n}: {}", err(n));
    };
    says("init", "0", "");
    says("backup1", "0", "");
    says("backup2", "15", "storage full");
    assert!(
        err("backup2").contains("/small/repo/"),
        "{}",
        err("backup2")
    );
    // The failed backup gave its space back: a 2 MiB backup fits after it.
    says("backup3", "0", "");
    says("restore", "15", "storage full");
    assert!(
        err("restore").contains("/tiny/out/mid.bin"),
        "{}",
        err("restore")
    );
    // The local index cache on a full device: the same code, naming the
    // cache, never an abort inside RocksDB (its own log file used to
    // trip an assertion at close once a write to it had failed).
    for n in ["cachefull", "cachefull2"] {
        says(n, "15", "storage full while writing the index cache");
    }
    // A listing needs no index: it still works (the snapshot cache is
    // best effort).
    says("cachelist", "0", "");
    // The repository, copied out of the namespace: no temporary or
    // partial file, no lock, every snapshot whole.
    let mut stray = Vec::new();
    let mut dirs = vec![e.repo()];
    while let Some(d) = dirs.pop() {
        for ent in std::fs::read_dir(&d).unwrap() {
            let p = ent.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.file_name().unwrap().to_string_lossy().starts_with('.') {
                stray.push(p);
            }
        }
    }
    assert!(stray.is_empty(), "left behind: {stray:?}");
    assert!(std::fs::read_dir(e.repo().join("locks")).map_or(true, |mut d| d.next().is_none()));
    e.ok(&["check", "--read-data"]);
    let snaps = e.snapshots_json();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    for (i, src) in ["src1", "src3"].iter().enumerate() {
        let id = snaps[i]["id"].as_str().unwrap();
        let out = e.path(&format!("out-{i}"));
        e.ok(&["restore", id, "--target", out.to_str().unwrap()]);
        same_tree(&e.path(src), &out);
    }
}

/// A damaged index cache is a cache: the command says so, makes it anew
/// from the repository's index files and goes on.
#[test]
fn a_damaged_index_cache_is_rebuilt_with_a_warning() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    backup_day(&e, &src, 0, 0.02);
    let slots: Vec<std::path::PathBuf> = std::fs::read_dir(e.cache())
        .unwrap()
        .map(|d| d.unwrap().path().join("index.0"))
        .filter(|p| p.join("CURRENT").is_file())
        .collect();
    assert_eq!(slots.len(), 1, "{slots:?}");
    std::fs::write(slots[0].join("CURRENT"), "junk\n").unwrap();
    let out = e.path("out");
    let o = e.run(&["restore", "latest", "--target", out.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "warning: the local index cache was damaged (Corruption: CURRENT file corrupted)"
        ),
        "{err}"
    );
    same_tree(&src, &out);
    // Made anew once: the next command finds it sound and reuses it.
    let o = e.run(&["backup", src.to_str().unwrap(), "--account", "acme"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!err.contains("damaged"), "{err}");
    let said = format!("{}{err}", String::from_utf8_lossy(&o.stdout));
    assert!(said.contains("(0 new, 0 changed,"), "{said}");
}

/// One damaged snapshot file stops neither listings nor backups nor
/// restores (each warns and leaves it out), but `check` reports it and
/// `prune` refuses to run until it is restored or removed.
#[test]
fn a_damaged_snapshot_file_is_left_out_with_a_warning_and_blocks_only_prune() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for day in 0..3 {
        backup_day(&e, &src, day, 0.02);
    }
    // The newest snapshot's file, damaged in the repository and not in
    // the local snapshot cache (dropped), as on a machine that has not
    // listed it yet.
    let snaps = e.snapshots_json();
    assert_eq!(snaps.len(), 3);
    let newest = snaps[2]["id"].as_str().unwrap().to_string();
    let file = e.repo().join("snapshots").join(&newest);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    for d in std::fs::read_dir(e.cache()).unwrap() {
        let _ = std::fs::remove_file(d.unwrap().path().join("snapshots"));
    }
    let warned = |o: &std::process::Output| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            err.contains(&format!(
                "warning: snapshot file snapshots/{newest} is damaged"
            )),
            "{err}"
        );
    };
    let o = e.run(&["snapshots", "--json"]);
    assert_eq!(o.status.code(), Some(0));
    warned(&o);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed.len(), 2);
    // restore latest: the newest snapshot that reads (day 1).
    let out = e.path("out");
    let o = e.run(&["restore", "latest", "--target", out.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    warned(&o);
    let day1 = e.path("day1");
    gen(&day1, 1, 0.02);
    same_tree(&day1, &out);
    // A backup goes on.
    let o = e.run(&["backup", src.to_str().unwrap(), "--account", "acme"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    warned(&o);
    // check names the file; prune refuses.
    let o = e.run(&["check"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&newest)
            || String::from_utf8_lossy(&o.stderr).contains(&newest)
    );
    let o = e.run(&["prune"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(14), "{err}");
    assert!(
        err.contains(&newest) && err.contains("prune does not run while a snapshot does not read"),
        "{err}"
    );
    // Removed: all is well again.
    std::fs::remove_file(&file).unwrap();
    let o = e.run(&["prune"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!String::from_utf8_lossy(&o.stderr).contains("damaged"));
    e.ok(&["check"]);
}
