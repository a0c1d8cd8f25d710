//! `arca forget` through the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

/// Backs up the same small source under `account` at each of `times`.
fn snapshots_at(e: &Env, account: &str, times: &[&str]) {
    let src = e.path("src");
    if !src.exists() {
        gen(&src, 0, 0.01);
    }
    for t in times {
        e.ok(&[
            "backup",
            src.to_str().unwrap(),
            "--account",
            account,
            "--time",
            t,
        ]);
    }
}

fn forget_json(e: &Env, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["forget", "--json"];
    a.extend_from_slice(args);
    serde_json::from_str(&e.ok(&a)).unwrap()
}

fn kept_times(r: &serde_json::Value) -> Vec<String> {
    r["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["action"] == "keep")
        .map(|f| f["time"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn keep_last_dry_run_then_for_real() {
    let e = Env::new();
    e.init();
    snapshots_at(
        &e,
        "a",
        &[
            "2024-03-01T02:00:00",
            "2024-03-02T02:00:00",
            "2024-03-03T02:00:00",
        ],
    );
    let r = forget_json(&e, &["--keep-last", "2", "--dry-run"]);
    assert_eq!(r["kept"], 2);
    assert_eq!(r["removed"], 1);
    assert_eq!(e.snapshots_json().len(), 3, "dry run removes nothing");
    let r = forget_json(&e, &["--keep-last", "2"]);
    assert_eq!(
        kept_times(&r),
        vec!["2024-03-02T02:00:00Z", "2024-03-03T02:00:00Z"]
    );
    assert_eq!(r["snapshots"][1]["reasons"][0], "last 2");
    assert_eq!(e.snapshots_json().len(), 2);
    let table = e.ok(&["forget", "--keep-last", "2", "--dry-run"]);
    assert!(table.contains("2 kept, 0 to remove"), "{table}");
}

#[test]
fn daily_count_versus_daily_duration_and_the_safety() {
    let e = Env::new();
    e.init();
    // Two a day for three days, then a gap.
    snapshots_at(
        &e,
        "a",
        &[
            "2024-03-01T01:00:00",
            "2024-03-01T13:00:00",
            "2024-03-02T01:00:00",
            "2024-03-02T13:00:00",
            "2024-03-05T01:00:00",
            "2024-03-05T13:00:00",
        ],
    );
    // A count: the newest of the 2 most recent days that have snapshots.
    let r = forget_json(&e, &["--keep-daily", "2", "--dry-run"]);
    assert_eq!(
        kept_times(&r),
        vec!["2024-03-02T13:00:00Z", "2024-03-05T13:00:00Z"]
    );
    // A duration from now: 2 days back from 03-06 12:00 reaches 03-05 only.
    let r = forget_json(
        &e,
        &[
            "--keep-daily",
            "2d",
            "--now",
            "2024-03-06T12:00:00Z",
            "--dry-run",
        ],
    );
    assert_eq!(kept_times(&r), vec!["2024-03-05T13:00:00Z"]);
    // Long after: no rule keeps anything, the safety keeps the newest...
    let r = forget_json(
        &e,
        &[
            "--keep-daily",
            "2d",
            "--now",
            "2025-01-01T00:00:00Z",
            "--dry-run",
        ],
    );
    assert_eq!(kept_times(&r), vec!["2024-03-05T13:00:00Z"]);
    assert_eq!(
        r["snapshots"][5]["reasons"][0],
        "newest of its group (safety)"
    );
    // ...unless --allow-empty says otherwise.
    let r = forget_json(
        &e,
        &[
            "--keep-daily",
            "2d",
            "--now",
            "2025-01-01T00:00:00Z",
            "--allow-empty",
        ],
    );
    assert_eq!(r["kept"], 0);
    assert!(e.snapshots_json().is_empty());
}

#[test]
fn account_filter_and_policy_file_with_time_zones() {
    let e = Env::new();
    e.init();
    // 23:30 UTC on 03-01 is already 03-02 in Berlin; 00:30 UTC on 03-02 is
    // 03-02 in Berlin too, but 03-01 evening in New York.
    let times = ["2024-03-01T23:30:00", "2024-03-02T00:30:00"];
    snapshots_at(&e, "berlin-co", &times);
    snapshots_at(&e, "ny-co", &times);
    let policy = e.path("policy.toml");
    std::fs::write(
        &policy,
        r#"
[defaults]
plan = "starter"
timezone = "UTC"

[plans.starter]
tiers = [ { name = "daily", every = "1d", keep = "30d" } ]

[accounts.berlin-co]
timezone = "Europe/Berlin"

[accounts.ny-co]
timezone = "America/New_York"
"#,
    )
    .unwrap();
    let p = policy.to_str().unwrap();
    let r = forget_json(
        &e,
        &["--policy", p, "--now", "2024-03-03T00:00:00Z", "--dry-run"],
    );
    let by_account = |a: &str| -> Vec<String> {
        r["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["account"] == a && f["action"] == "keep")
            .map(|f| f["time"].as_str().unwrap().to_string())
            .collect()
    };
    // Berlin: both fall on local 03-02, one day bucket, the newest kept.
    assert_eq!(by_account("berlin-co"), vec!["2024-03-02T00:30:00Z"]);
    // New York: local 03-01 18:30 and 19:30, also one day: the newest kept.
    assert_eq!(by_account("ny-co"), vec!["2024-03-02T00:30:00Z"]);
    assert!(r["snapshots"][1]["reasons"][0]
        .as_str()
        .unwrap()
        .contains("starter/daily"));

    // --account limits the decision (and removal) to one account.
    let r = forget_json(&e, &["--keep-last", "1", "--account", "ny-co"]);
    assert_eq!(r["snapshots"].as_array().unwrap().len(), 2);
    assert_eq!(e.snapshots_json().len(), 3);

    // Errors in the policy file are clear and carry a distinct code.
    std::fs::write(&policy, "[accounts.x]\nplan = \"gold\"\n").unwrap();
    let o = e.run(&["forget", "--policy", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("gold"));
}

#[test]
fn forget_needs_a_rule_and_forget_prune_frees_space() {
    let e = Env::new();
    // Whole chunks: the forgotten days' chunks are then unused (with
    // deltas they would be the bases of the kept day's chunks).
    e.ok(&["init", "--pack-size-mib", "1", "--no-delta"]);
    let o = e.run(&["forget"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no retention rule"));

    let src = e.path("src");
    for day in 0..3 {
        gen(&src, day, 0.05);
        e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    }
    let before = pack_bytes(&e.repo());
    let out = e.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert!(out.contains("freed"), "{out}");
    assert!(pack_bytes(&e.repo()) < before * 2 / 3);
    e.ok(&["check", "--read-data"]);
    let got = e.path("got");
    e.ok(&["restore", "latest", "--target", got.to_str().unwrap()]);
    same_tree(&src, &got);
}

#[test]
fn stats_report_sizes_and_ratios_per_account() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.05);
    for acct in ["a", "a", "b"] {
        e.ok(&[
            "backup",
            src.to_str().unwrap(),
            "--account",
            acct,
            "--force",
        ]);
    }
    let st: serde_json::Value = serde_json::from_str(&e.ok(&["stats", "--json"])).unwrap();
    let size: u64 = std::fs::read_dir(&src)
        .unwrap()
        .map(|f| f.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(st["snapshots"], 3);
    assert_eq!(
        st["repository"]["logical_bytes"].as_u64().unwrap(),
        3 * size
    );
    // The same content three times: unique bytes are one copy.
    assert_eq!(st["repository"]["unique_bytes"].as_u64().unwrap(), size);
    assert!((st["repository"]["dedup_ratio"].as_f64().unwrap() - 3.0).abs() < 1e-9);
    assert!(
        st["repository"]["compression_ratio"].as_f64().unwrap() > 2.0,
        "CSV compresses"
    );
    let accts = st["accounts"].as_array().unwrap();
    assert_eq!(accts.len(), 2);
    assert_eq!(accts[0]["account"], "a");
    assert_eq!(accts[0]["snapshots"], 2);
    assert_eq!(accts[0]["latest"]["unique_bytes"].as_u64().unwrap(), size);
    let one: serde_json::Value =
        serde_json::from_str(&e.ok(&["stats", "--json", "--account", "b"])).unwrap();
    assert_eq!(one["accounts"].as_array().unwrap().len(), 1);
    assert!(e.ok(&["stats"]).contains("dedup 3.0x"));
}

/// The policy file shown in README.md parses and gives the plans it says.
#[test]
fn readme_policy_example_parses() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("```toml\n").expect("a toml block in README") + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let policy = arca::retention::Policy::parse(&readme[start..end]).expect("README policy parses");
    assert_eq!(policy.plan_for("acme").unwrap(), "enterprise");
    assert_eq!(policy.plan_for("someone-else").unwrap(), "starter");
    let rs = policy.rules_for("acme").unwrap();
    assert_eq!(rs.tz, chrono_tz::Europe::Berlin);
    assert_eq!(rs.rules.len(), 3);
}

#[test]
fn a_snapshot_tagged_afterwards_is_kept_by_keep_tag_and_restores() {
    let e = Env::new();
    e.init();
    snapshots_at(
        &e,
        "a",
        &[
            "2024-03-01T02:00:00",
            "2024-03-02T02:00:00",
            "2024-03-03T02:00:00",
        ],
    );
    let first = e.snapshots_json()[0]["id"].as_str().unwrap().to_string();
    let out: serde_json::Value =
        serde_json::from_str(&e.ok(&["--json", "tag", &first[..8], "--add", "legal"])).unwrap();
    let new = out[0]["new"].as_str().unwrap().to_string();
    assert_ne!(new, first);
    let snaps = e.snapshots_json();
    assert_eq!(snaps.len(), 3);
    assert_eq!(snaps[0]["id"], new.as_str());
    assert_eq!(snaps[0]["tags"], serde_json::json!(["legal"]));
    e.expect(&["tag", &first[..8], "--add", "x"], 1); // the old id is gone
    e.expect(&["tag", &new], 2); // nothing to change

    let r = forget_json(&e, &["--keep-last", "1", "--keep-tag", "legal"]);
    assert_eq!(
        kept_times(&r),
        vec!["2024-03-01T02:00:00Z", "2024-03-03T02:00:00Z"]
    );
    e.ok(&["prune"]);
    e.ok(&["check", "--read-data"]);
    let to = e.path("restored");
    e.ok(&["restore", &new, "--target", to.to_str().unwrap()]);
    same_tree(&e.path("src"), &to);
}

/// `forget SNAPSHOT...` removes exactly the snapshots named (id, prefix,
/// latest~N), across accounts, resolving every name before removing any;
/// a snapshot file too damaged to read can be named too, after which prune
/// runs again.
#[test]
fn forget_by_name_removes_exactly_those_snapshots() {
    let e = Env::new();
    e.init();
    snapshots_at(
        &e,
        "acme",
        &[
            "2024-03-01T00:00:00Z",
            "2024-03-02T00:00:00Z",
            "2024-03-03T00:00:00Z",
        ],
    );
    snapshots_at(&e, "zeta", &["2024-03-02T12:00:00Z"]);
    let ids = listed_ids(&e); // acme 1, acme 2, zeta, acme 3 (by time)
    assert_eq!(ids.len(), 4);

    // Dry run: reported, nothing removed.
    let rep = forget_json(&e, &["--dry-run", &ids[0][..10]]);
    assert_eq!(rep["removed"], 1);
    assert_eq!(rep["dry_run"], true);
    assert_eq!(listed_ids(&e), ids);

    // A name that matches nothing: exit 13, and nothing else named goes.
    e.expect(&["forget", &ids[0][..12], "0000000000"], 13);
    assert_eq!(listed_ids(&e), ids);
    // Names and rules do not mix; neither given is a usage error.
    e.expect(&["forget", &ids[0], "--keep-last", "1"], 2);
    e.expect(&["forget"], 2);

    // --account: latest is that account's; another account's id refused.
    let rep = forget_json(&e, &["--dry-run", "--account", "zeta", "latest"]);
    assert_eq!(rep["snapshots"][0]["id"].as_str().unwrap(), ids[2]);
    assert_eq!(
        e.run(&["forget", "--account", "zeta", &ids[0]])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(listed_ids(&e), ids);

    // A prefix and latest~3 (the oldest of all: acme's first, named twice).
    let rep = forget_json(&e, &[&ids[2][..8], "latest~3", &ids[0]]);
    assert_eq!(rep["removed"], 2, "{rep}");
    assert_eq!(listed_ids(&e), vec![ids[1].clone(), ids[3].clone()]);

    // A snapshot file that does not read (and no local copy of it).
    let file = e.repo().join("snapshots").join(&ids[3]);
    std::fs::write(&file, b"not a snapshot").unwrap();
    for d in std::fs::read_dir(e.cache()).unwrap() {
        let _ = std::fs::remove_file(d.unwrap().path().join("snapshots"));
    }
    assert_eq!(e.run(&["prune"]).status.code(), Some(14));
    let rep = forget_json(&e, &[&ids[3][..8]]);
    assert_eq!(rep["removed"], 1, "{rep}");
    assert!(!file.exists());
    e.ok(&["prune"]);
    assert_eq!(listed_ids(&e), vec![ids[1].clone()]);
    e.ok(&["check", "--read-data"]);
}
