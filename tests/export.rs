//! `arca export` end to end, checked with readers that are not ours:
//! Python's csv, json and zipfile, pyzipper, 7-Zip and unzip.
//!
//! The external readers are required when `CI` is set (scripts/run.sh
//! installs them); elsewhere a test that needs a missing one says so and
//! returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn have(cmd: &str, args: &[&str]) -> bool {
    let ok = Command::new(cmd)
        .args(args)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{cmd} {args:?} is needed by this test in CI (scripts/run.sh installs it)"
        );
        eprintln!("skipping: {cmd} is not available");
    }
    ok
}

fn python() -> String {
    std::env::var("ARCA_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn py(script: &str, args: &[&str]) -> String {
    let o = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A CSV with quotes, commas, newlines inside fields and accented UTF-8.
const TRICKY_CSV: &str = "id,name,note,amount,day\r\n\
1,\"Muñoz, José\",\"said \"\"hola\"\"\nand left\",12.50,2024-03-01\r\n\
2,Zoë Ångström,plain,-3,2024-03-02\r\n\
3,\"\",\"multi\r\nline, with comma\",1e3,\r\n";

fn backup(e: &Env, src: &Path, account: &str, time: &str) {
    e.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--account",
        account,
        "--time",
        time,
    ]);
}

fn stockflow_env() -> (Env, PathBuf) {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("products.csv"), TRICKY_CSV).unwrap();
    std::fs::write(src.join("users.csv"), "id,email\n1,a@example.com\n").unwrap();
    std::fs::write(src.join("settings.json"), "{\"currency\": \"EUR\"}\n").unwrap();
    gen(&e.path("gen"), 0, 0.02);
    std::fs::copy(e.path("gen/orders.csv"), src.join("orders.csv")).unwrap();
    backup(&e, &src, "acme", "2024-03-01T02:00:00");
    (e, src)
}

fn unzip_file(zip: &Path, entry: &str) -> Vec<u8> {
    py(
        "import sys,zipfile;sys.stdout.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]).hex())",
        &[zip.to_str().unwrap(), entry],
    )
    .trim()
    .chars()
    .collect::<Vec<_>>()
    .chunks(2)
    .map(|c| u8::from_str_radix(&c.iter().collect::<String>(), 16).unwrap())
    .collect()
}

fn no_partials(dir: &Path) {
    for f in std::fs::read_dir(dir).unwrap() {
        let n = f.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.ends_with(".partial"), "left a partial file {n}");
    }
}

#[test]
fn csv_export_is_byte_identical_and_json_matches_pythons_csv() {
    if !have(&python(), &["-c", "import zipfile, csv, json"]) {
        return;
    }
    let (e, src) = stockflow_env();
    let out = e.path("out.zip");
    e.ok(&[
        "export",
        "latest",
        "--format",
        "csv",
        "-o",
        out.to_str().unwrap(),
    ]);
    for t in ["products.csv", "orders.csv", "users.csv", "settings.json"] {
        assert_eq!(
            unzip_file(&out, &format!("acme-export-2024-03-01/{t}")),
            std::fs::read(src.join(t)).unwrap(),
            "{t}"
        );
    }
    let readme = String::from_utf8(unzip_file(&out, "acme-export-2024-03-01/README.txt")).unwrap();
    assert!(
        readme.contains("Table products from products.csv: 3 rows, 5 columns."),
        "{readme}"
    );
    let row = |col: &str| -> Vec<String> {
        readme
            .lines()
            .find(|l| l.starts_with(&format!("  {col} ")))
            .unwrap_or_else(|| panic!("no column {col} in {readme}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row("amount"), ["amount", "decimal", "12.50"]);
    assert_eq!(row("day"), ["day", "date", "2024-03-01"]);
    assert_eq!(row("name"), ["name", "text", "Muñoz,", "José"]);

    let outj = e.path("out-json.zip");
    e.ok(&[
        "export",
        "latest",
        "--format",
        "json",
        "-o",
        outj.to_str().unwrap(),
    ]);
    // Python's csv reading the original against Python's json reading ours.
    let check = r#"
import sys, csv, json, zipfile, io
z = zipfile.ZipFile(sys.argv[1])
for table in ("products", "orders"):
    want = list(csv.DictReader(io.open(sys.argv[2] + "/" + table + ".csv", encoding="utf-8", newline="")))
    lines = z.read("acme-export-2024-03-01/" + table + ".jsonl").decode("utf-8").splitlines()
    got = [json.loads(l) for l in lines]
    assert got == [dict(r) for r in want], (table, got[:2], want[:2])
    assert all(list(g.keys()) == list(w.keys()) for g, w in zip(got, want))
    print(table, len(got))
"#;
    let o = py(check, &[outj.to_str().unwrap(), src.to_str().unwrap()]);
    assert!(o.contains("products 3"), "{o}");
}

#[test]
fn split_parts_each_open_alone() {
    if !have("unzip", &["-v"]) || !have(&python(), &["-c", "import zipfile"]) {
        return;
    }
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.05);
    backup(&e, &src, "acme", "2024-03-01T02:00:00");
    let out = e.path("x.zip");
    let o = e.ok(&[
        "export",
        "latest",
        "--format",
        "json",
        "--split-size",
        "1MiB",
        "-o",
        out.to_str().unwrap(),
        "--json",
    ]);
    let rep: serde_json::Value = serde_json::from_str(&o).unwrap();
    let files = rep["files"].as_array().unwrap();
    assert!(files.len() >= 3, "{o}");
    let mut entries = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let p = PathBuf::from(f["path"].as_str().unwrap());
        assert_eq!(p, e.path(&format!("x.part-{:03}.zip", i + 1)));
        let size = std::fs::metadata(&p).unwrap().len();
        assert!(size <= 1 << 20, "{} is {size} bytes", p.display());
        let t = Command::new("unzip").arg("-tq").arg(&p).output().unwrap();
        assert!(
            t.status.success(),
            "unzip -t {}: {}",
            p.display(),
            String::from_utf8_lossy(&t.stdout)
        );
        let names = py(
            "import sys,zipfile;z=zipfile.ZipFile(sys.argv[1]);assert z.testzip() is None;print('\\n'.join(z.namelist()))",
            &[p.to_str().unwrap()],
        );
        entries.extend(names.lines().map(str::to_string));
    }
    // Every entry once; a table cut into pieces has every row once.
    let mut sorted = entries.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), entries.len());
    assert!(entries.iter().any(|n| n.ends_with("README.txt")));
    let all_rows: usize = rep["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows"].as_u64().unwrap() as usize)
        .sum();
    let mut lines = 0;
    for f in files {
        lines += py(
            "import sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nprint(sum(z.read(n).count(b'\\n') for n in z.namelist() if n.endswith('.jsonl')))",
            &[f["path"].as_str().unwrap()],
        )
        .trim()
        .parse::<usize>()
        .unwrap();
    }
    assert_eq!(lines, all_rows);
    no_partials(e.dir.path());
}

#[test]
fn encrypted_export_opens_in_7z_and_pyzipper_with_the_password_only() {
    if !have("7z", &["i"]) || !have(&python(), &["-c", "import pyzipper"]) {
        return;
    }
    let (e, src) = stockflow_env();
    let pw = e.path("zip-pw");
    std::fs::write(&pw, "s3cret pass\n").unwrap();
    let out = e.path("enc.zip");
    e.ok(&[
        "export",
        "latest",
        "--format",
        "csv",
        "-o",
        out.to_str().unwrap(),
        "--zip-password-file",
        pw.to_str().unwrap(),
    ]);
    let t = Command::new("7z")
        .args(["t", "-ps3cret pass"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", String::from_utf8_lossy(&t.stdout));
    let bad = Command::new("7z")
        .args(["t", "-pwrong"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!bad.status.success(), "7z accepted a wrong password");
    let got = py(
        "import sys,pyzipper\nz=pyzipper.AESZipFile(sys.argv[1]);z.setpassword(b's3cret pass')\n\
         i=z.getinfo('acme-export-2024-03-01/products.csv');assert i.flag_bits & 1, 'not encrypted'\n\
         sys.stdout.write(z.read('acme-export-2024-03-01/products.csv').decode('utf-8'))",
        &[out.to_str().unwrap()],
    );
    assert_eq!(
        got.as_bytes(),
        std::fs::read(src.join("products.csv")).unwrap()
    );
    // And the command form of the password.
    let out2 = e.path("enc2.zip");
    e.ok(&[
        "export",
        "latest",
        "--format",
        "json",
        "-o",
        out2.to_str().unwrap(),
        "--zip-password-command",
        "echo other",
    ]);
    let t = Command::new("7z")
        .args(["t", "-pother"])
        .arg(&out2)
        .output()
        .unwrap();
    assert!(t.status.success());
}

#[test]
fn errors_have_distinct_codes_and_leave_no_file() {
    let (e, _) = stockflow_env();
    let out = e.path("o.zip");
    let o = e.run(&[
        "export",
        "latest",
        "--format",
        "csv",
        "--include",
        "nosuch",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(13));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuch"));
    let o = e.run(&[
        "export",
        "latest",
        "--format",
        "csv",
        "--category",
        "bogus",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = e.run(&[
        "export",
        "latest",
        "--format",
        "xml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = e.run(&[
        "export",
        "latest",
        "--format",
        "csv",
        "--split-size",
        "lots",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let bad = e.path("no/such/dir/o.zip");
    let o = e.run(&[
        "export",
        "latest",
        "--format",
        "csv",
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no/such/dir/o.zip: No such file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists());
    no_partials(e.dir.path());
    // A failure mid-way (a pack gone: damage, 14) removes the partial file.
    for p in packs(&e.repo()) {
        std::fs::remove_file(p).unwrap();
    }
    let o = e.run(&[
        "export",
        "latest",
        "--format",
        "csv",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(14), "{err}");
    assert!(err.contains("missing from the repository"), "{err}");
    assert!(!out.exists());
    no_partials(e.dir.path());
    // Nothing was recorded for the failed exports.
    assert_eq!(e.ok(&["exports", "--json"]).trim(), "[]");
}

fn kissflow_tree(dir: &Path) {
    let w = |p: &str, s: &str| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w(
        "UserAndGroup.json",
        "{\n \"users\": [\n  {\"_id\": \"U1\", \"Name\": \"Åsa\", \"Manager\": null},\n  {\"_id\": \"U2\", \"Name\": \"Zdeněk\", \"Extra\": true}\n ],\n \"groups\": [{\"_id\": \"G1\", \"Members\": [\"U1\", \"U2\"]}],\n \"exported_at\": \"2024-03-01T02:00:00Z\"\n}\n",
    );
    w(
        "apps/CRM/records/page-00001.json",
        "[\n{\"_id\":\"P1\",\"Amount\":12.5,\"_created_by\":{\"_id\":\"U1\",\"name\":\"Åsa\"},\"Lines\":[{\"q\":1}]},\n{\"_id\":\"P2\",\"Amount\":3,\"Note\":\"a, \\\"b\\\"\\nc\"}\n]\n",
    );
    w(
        "apps/CRM/records/page-00002.json",
        "[\n{\"_id\":\"P3\",\"Amount\":1e2}\n]\n",
    );
    w("apps/CRM/attachments/Pk1/scan.pdf", "%PDF-1.4 not really");
    w(
        "audit-logs/audit-log-000001.json",
        "{\"file\":1,\"events\":[\n{\"id\":\"e1\",\"timestamp\":\"2024-02-01T00:00:00Z\",\"details\":{\"field\":\"x\",\"old\":1}}\n]}\n",
    );
    w("settings.json", "{\"account\": {\"kind\": \"kissflow\"}}\n");
    w(
        "apps/CRM/records/meta.json",
        "{\"app\": \"CRM\", \"version\": 3}\n",
    );
}

#[test]
fn kissflow_exports_by_category() {
    if !have(&python(), &["-c", "import zipfile, csv"]) {
        return;
    }
    let e = Env::new();
    e.init();
    let src = e.path("kf");
    kissflow_tree(&src);
    backup(&e, &src, "kf", "2024-03-01T02:00:00");
    backup(&e, &src, "kf", "2024-03-05T02:00:00");
    let out = e.path("kf.zip");
    let o = e.ok(&[
        "export",
        "latest",
        "--account",
        "kf",
        "--at",
        "2024-03-02",
        "--format",
        "csv",
        "-o",
        out.to_str().unwrap(),
        "--category",
        "users",
        "--category",
        "transactional",
    ]);
    assert!(o.contains("kf.zip"), "{o}");
    let list = py(
        "import sys,zipfile,csv,io\nz=zipfile.ZipFile(sys.argv[1])\nfor n in z.namelist():\n  print(n)\n  if n.endswith('.csv'):\n    for r in csv.reader(io.TextIOWrapper(z.open(n), encoding='utf-8', newline='')): print(r)",
        &[out.to_str().unwrap()],
    );
    let want = "kf-export-2024-03-01/users.csv
['_id', 'Name', 'Manager', 'Extra']
['U1', 'Åsa', '', '']
['U2', 'Zdeněk', '', 'true']
kf-export-2024-03-01/groups.csv
['_id', 'Members']
['G1', '[\"U1\",\"U2\"]']
kf-export-2024-03-01/apps/CRM/records/meta.json
kf-export-2024-03-01/CRM.csv
['_id', 'Amount', '_created_by._id', '_created_by.name', 'Lines', 'Note']
['P1', '12.5', 'U1', 'Åsa', '[{\"q\":1}]', '']
['P2', '3', '', '', '', 'a, \"b\"\\nc']
['P3', '1e2', '', '', '', '']
kf-export-2024-03-01/settings.json
kf-export-2024-03-01/README.txt
";
    assert_eq!(list, want);
    // JSON, audit and attachments only.
    let out2 = e.path("kf2.zip");
    e.ok(&[
        "export",
        "latest",
        "--format",
        "json",
        "-o",
        out2.to_str().unwrap(),
        "--category",
        "audit",
        "--category",
        "attachments",
    ]);
    let names = py(
        "import sys,zipfile\nz=zipfile.ZipFile(sys.argv[1])\nfor n in z.namelist(): print(n)\nprint(z.read('kf-export-2024-03-05/audit-log.jsonl').decode())",
        &[out2.to_str().unwrap()],
    );
    assert!(names.starts_with(
        "kf-export-2024-03-05/audit-log.jsonl\nkf-export-2024-03-05/settings.json\nkf-export-2024-03-05/attachments/CRM/Pk1/scan.pdf\nkf-export-2024-03-05/README.txt\n"
    ), "{names}");
    assert!(names.contains("{\"id\":\"e1\",\"timestamp\":\"2024-02-01T00:00:00Z\",\"details\":{\"field\":\"x\",\"old\":1}}"));
    // Both exports are recorded.
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&e.ok(&["exports", "--account", "kf", "--json"])).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["format"], "csv");
    assert_eq!(
        rows[0]["categories"],
        serde_json::json!(["users", "transactional"])
    );
    assert_eq!(
        rows[0]["tables"],
        serde_json::json!(["users", "groups", "CRM"])
    );
    assert_eq!(rows[1]["attachments"], 1);
    assert_eq!(rows[1]["files"][0]["name"], "kf2.zip");
    assert_eq!(
        rows[1]["files"][0]["size"],
        std::fs::metadata(&out2).unwrap().len()
    );
    // --include by table name.
    let out3 = e.path("kf3.zip");
    e.ok(&[
        "export",
        "latest",
        "--format",
        "csv",
        "--include",
        "CRM",
        "-o",
        out3.to_str().unwrap(),
    ]);
    let names = py(
        "import sys,zipfile\nprint(' '.join(zipfile.ZipFile(sys.argv[1]).namelist()))",
        &[out3.to_str().unwrap()],
    );
    assert_eq!(names.trim(), "kf-export-2024-03-05/apps/CRM/records/meta.json kf-export-2024-03-05/CRM.csv kf-export-2024-03-05/settings.json kf-export-2024-03-05/README.txt");
}

fn peak_rss_kb(stderr: &[u8]) -> u64 {
    let s = String::from_utf8_lossy(stderr);
    let line = s
        .lines()
        .find(|l| l.starts_with("peak RSS after opening the repository:"))
        .unwrap_or_else(|| panic!("no peak RSS line in {s}"));
    line.split_whitespace()
        .rev()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// Streaming: exporting a 72 MB table (as CSV, and as JSON Lines which
/// rewrites every row) stays well under the table's size in memory.
#[test]
fn export_memory_does_not_grow_with_the_table() {
    let e = Env::new();
    e.init();
    let src = e.path("big");
    std::fs::create_dir_all(&src).unwrap();
    let mut csv = String::from("id,sku,qty,note,at\n");
    let mut i = 0u64;
    while csv.len() < 72_000_000 {
        i += 1;
        csv.push_str(&format!(
            "{i},SF-{:06},{},\"row {i}, with a comma\",2024-03-01T02:{:02}:00Z\n",
            i * 7919 % 1_000_000,
            i % 97,
            i % 60
        ));
    }
    std::fs::write(src.join("movements.csv"), &csv).unwrap();
    backup(&e, &src, "acme", "2024-03-01T02:00:00");
    for format in ["csv", "json"] {
        let out = e.path(&format!("m-{format}.zip"));
        let o = e
            .cmd(&[
                "export",
                "latest",
                "--format",
                format,
                "-o",
                out.to_str().unwrap(),
            ])
            .env("ARCA_DEBUG_PEAK_RSS", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let kb = peak_rss_kb(&o.stderr);
        assert!(kb < 60_000, "{format}: peak RSS {kb} kB for a 72 MB table");
    }
}
