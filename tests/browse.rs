//! `ls`, `dump` and `diff` through the `arca` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use common::*;

/// Two days of generated data, backed up; day 0's source is kept in `old`.
fn two_days() -> Env {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    backup_day(&e, &src, 0, 0.02);
    gen(&e.path("old"), 0, 0.02);
    backup_day(&e, &src, 1, 0.02);
    e
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn ls_lists_what_was_backed_up() {
    let e = two_days();
    let src = e.path("src");
    let out = e.ok(&["--json", "ls", "latest"]);
    let v: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v.iter().map(|x| x["path"].as_str().unwrap()).collect();
    assert_eq!(names, files(&src));
    for x in &v {
        let m = std::fs::metadata(src.join(x["path"].as_str().unwrap())).unwrap();
        assert_eq!(x["type"], "file");
        assert_eq!(x["size"].as_u64(), Some(m.len()));
        assert_eq!(x["mode"].as_u64(), Some(u64::from(m.mode())));
    }
    let text = e.ok(&["ls", "-l", "latest", names[0]]);
    let first = std::fs::metadata(src.join(names[0])).unwrap();
    assert!(text.starts_with("-rw"), "{text}");
    assert!(text.contains(&format!(" {} ", first.len())), "{text}");
    assert_eq!(
        e.ok(&["--json", "ls", "latest~1", "--account", "acme"])
            .len(),
        out.len()
    );
    e.expect(&["ls", "latest", "no/such"], 13);
}

#[test]
fn dump_writes_files_and_tar_archives_to_standard_output() {
    let e = two_days();
    let src = e.path("src");
    let name = &files(&src)[0];
    let o = e.cmd(&["dump", "latest", name]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(o.stdout, std::fs::read(src.join(name)).unwrap());

    // The whole snapshot as a tar archive unpacks into the source.
    let o = e.cmd(&["dump", "latest", "/"]).output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let out = e.path("untar");
    tar::Archive::new(o.stdout.as_slice()).unpack(&out).unwrap();
    same_tree(&src, &out);

    // Into a file, and an older snapshot.
    let f = e.path("old.csv");
    e.ok(&[
        "dump",
        "latest~1",
        "--account",
        "acme",
        name,
        "-o",
        f.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&f).unwrap(),
        std::fs::read(e.path("old").join(name)).unwrap()
    );

    // A reader that stops early ends the dump quietly.
    let mut c = e.cmd(&["dump", "latest", "/"]);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A full device behind the output stops it with the storage-full code.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let o = e
        .cmd(&["dump", "latest", "/"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(15),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    e.expect(&["dump", "latest", "no/such"], 13);
}

#[test]
fn diff_names_the_files_that_changed() {
    let e = two_days();
    let (src, old) = (e.path("src"), e.path("old"));
    let mut want = Vec::new();
    for n in files(&src) {
        let (a, b) = (old.join(&n), src.join(&n));
        if std::fs::read(&a).unwrap() != std::fs::read(&b).unwrap() {
            want.push(("modified", n));
        }
    }
    assert!(
        want.len() >= 3,
        "the generator changes files day to day: {want:?}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&e.ok(&["--json", "diff", "latest", "--account", "acme"])).unwrap();
    let got: Vec<(&str, String)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] != "metadata")
        .map(|c| {
            (
                c["change"].as_str().unwrap(),
                c["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(&str, String)> = want.into_iter().collect();
    assert_eq!(got, want);
    let st = &v["stats"];
    assert_eq!(st["files_modified"].as_u64(), Some(got.len() as u64));
    assert!(st["bytes_added"].as_u64().unwrap() > 0);
    // The same pair named explicitly gives the same answer, as text too.
    let ids: Vec<String> = e
        .snapshots_json()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    let text = e.ok(&["diff", &ids[0][..8], &ids[1]]);
    for (_, n) in &got {
        assert!(text.contains(&format!("M  {n}  (")), "{text}");
    }
    assert!(text.contains(&format!("{} modified", got.len())), "{text}");
    // The first snapshot has nothing before it.
    e.expect(&["diff", &ids[0]], 13);

    // Row by row, for every CSV table that changed, as a whole-table
    // comparison counts them.
    let v: serde_json::Value = serde_json::from_str(&e.ok(&[
        "--json",
        "diff",
        "latest~1",
        "latest",
        "--account",
        "acme",
        "--records",
    ]))
    .unwrap();
    let tables = v["tables"].as_array().unwrap();
    let csv: Vec<&String> = got
        .iter()
        .map(|(_, n)| n)
        .filter(|n| n.ends_with(".csv"))
        .collect();
    assert_eq!(tables.len(), csv.len());
    for t in tables {
        let n = format!("{}.csv", t["table"].as_str().unwrap());
        let want = arca::testutil::csv_row_changes(
            &std::fs::read(old.join(&n)).unwrap(),
            &std::fs::read(src.join(&n)).unwrap(),
        );
        let counts = |k: &str| t[k].as_u64().unwrap();
        assert_eq!(
            (counts("added"), counts("removed"), counts("changed")),
            want,
            "{n}"
        );
    }
    assert!(tables.iter().any(|t| t["changed"].as_u64() > Some(0)));
    let text = e.ok(&["diff", "latest", "--account", "acme", "--records"]);
    assert!(text.contains("\norders: "), "{text}");
}

#[test]
fn find_tells_which_snapshots_hold_a_file() {
    let e = two_days();
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&e.ok(&["--json", "find", "orders.csv", "--account", "acme"]))
            .unwrap();
    assert_eq!(v.len(), 2, "both days hold it");
    for s in &v {
        let m = s["matches"].as_array().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0]["path"], "orders.csv");
    }
    let sizes: Vec<u64> = v
        .iter()
        .map(|s| s["matches"][0]["size"].as_u64().unwrap())
        .collect();
    assert_eq!(
        sizes[0],
        std::fs::metadata(e.path("old/orders.csv")).unwrap().len()
    );
    assert_eq!(
        sizes[1],
        std::fs::metadata(e.path("src/orders.csv")).unwrap().len()
    );
    let text = e.ok(&["find", "*.CSV", "-i"]);
    assert!(text.contains("orders.csv"), "{text}");
    let csv = files(&e.path("src"))
        .iter()
        .filter(|n| n.ends_with(".csv"))
        .count();
    assert!(
        text.ends_with(&format!("{} matches in 2 snapshots\n", 2 * csv)),
        "{text}"
    );
    assert_eq!(e.ok(&["--json", "find", "nothing.x"]).trim(), "[]");
    e.expect(&["find", "["], 1);
}

#[test]
fn backup_leaves_out_what_exclude_patterns_name() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    let w = |p: &str, data: &[u8]| {
        let p = src.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("a.csv", b"id\n1\n");
    w("b.tmp", b"scratch");
    w("tmp/x", b"x");
    w("apps/crm/attachments/big.bin", &noise(100_000, 3));
    w("apps/crm/records/r.json", b"[]");
    w("apps/hr/records/s.json", b"[]");
    let list = e.path("exclude.txt");
    std::fs::write(&list, "# scratch space\n\ntmp\n").unwrap();
    let s = src.to_str().unwrap();
    e.ok(&[
        "backup",
        s,
        "--account",
        "acme",
        "--exclude",
        "*.tmp",
        "--exclude",
        "apps/*/attachments",
        "--exclude-file",
        list.to_str().unwrap(),
    ]);
    let v: Vec<serde_json::Value> =
        serde_json::from_str(&e.ok(&["--json", "ls", "latest"])).unwrap();
    let paths: Vec<&str> = v.iter().map(|x| x["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "a.csv",
            "apps",
            "apps/crm",
            "apps/crm/records",
            "apps/crm/records/r.json",
            "apps/hr",
            "apps/hr/records",
            "apps/hr/records/s.json"
        ]
    );
    // Without the patterns, the next backup takes everything.
    e.ok(&["backup", s, "--account", "acme"]);
    let d: serde_json::Value =
        serde_json::from_str(&e.ok(&["--json", "diff", "latest", "--account", "acme"])).unwrap();
    let added: Vec<&str> = d["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["change"] == "added")
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        added,
        [
            "apps/crm/attachments",
            "apps/crm/attachments/big.bin",
            "b.tmp",
            "tmp",
            "tmp/x"
        ]
    );
    e.expect(
        &[
            "backup",
            s,
            "--account",
            "acme",
            "--exclude-file",
            "/no/such",
        ],
        13,
    );
    e.expect(&["backup", s, "--account", "acme", "--exclude", "["], 1);
}
