//! S3-compatible storage against a local S3 server (moto's, installed by
//! `scripts/run.sh test`; ARCA_TEST_PYTHON names its interpreter). Where
//! no such server can be had, ARCA_SKIP_S3_TESTS=1 skips these tests by
//! name rather than fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arca::backend::{is_not_found, Backend, Credentials, FileKind, S3Backend};
use arca::Error;
use common::*;

/// A moto S3 server on a free local port, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(test: &str) -> Option<Server> {
        let python = std::env::var("ARCA_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let has_moto = Command::new(&python)
            .args(["-c", "import moto.server"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has_moto {
            assert!(
                std::env::var_os("ARCA_SKIP_S3_TESTS").is_some(),
                "{test}: no moto server for {python} (scripts/run.sh test installs it; \
                 ARCA_SKIP_S3_TESTS=1 skips)"
            );
            eprintln!("{test}: skipped, no moto");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Server { child, port };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < Duration::from_secs(60), "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(s)
    }

    fn location(&self, bucket_and_prefix: &str) -> String {
        format!("s3:http://127.0.0.1:{}/{bucket_and_prefix}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3_env(c: &mut Command, location: &str) {
    c.env("ARCA_REPOSITORY", location)
        .env("AWS_ACCESS_KEY_ID", "test-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1");
}

/// An arca command on the repository at `location`.
fn s3_cmd(e: &Env, location: &str, args: &[&str]) -> Command {
    let mut c = e.cmd(args);
    s3_env(&mut c, location);
    c
}

fn backend(s: &Server, prefix: &str) -> S3Backend {
    let creds = Credentials::new("test-key", "test-secret");
    S3Backend::new(&s.location(prefix), creds, "us-east-1").unwrap()
}

#[test]
fn the_s3_backend_keeps_the_backend_contract() {
    let Some(s) = Server::start("the_s3_backend_keeps_the_backend_contract") else {
        return;
    };
    let b = backend(&s, "contract/repo").with_list_page(2);
    b.create().unwrap();
    assert!(b.list(FileKind::Config).unwrap().is_empty());
    b.write(FileKind::Config, "config", b"cfg").unwrap();
    assert_eq!(b.list(FileKind::Config).unwrap()[0].size, 3);
    // Five snapshots, listed over three pages; nothing of another kind.
    let names: Vec<String> = (0..5)
        .map(|i| format!("{i:02}{}", "e".repeat(62)))
        .collect();
    for (i, n) in names.iter().enumerate() {
        b.write(FileKind::Snapshot, n, &vec![i as u8; i + 1])
            .unwrap();
    }
    let listed = b.list(FileKind::Snapshot).unwrap();
    assert_eq!(
        listed.iter().map(|l| l.name.clone()).collect::<Vec<_>>(),
        names
    );
    assert_eq!(listed[4].size, 5);
    assert!(b.list(FileKind::Index).unwrap().is_empty());
    assert_eq!(b.read(FileKind::Snapshot, &names[2]).unwrap(), [2, 2, 2]);
    assert_eq!(b.size(FileKind::Snapshot, &names[3]).unwrap(), 4);

    // A pack in pieces: nothing listed until it is finished and durable.
    let pack = format!("3f{}", "a".repeat(62));
    let mut up = b.begin(FileKind::Pack).unwrap();
    up.write(b"0123456789").unwrap();
    up.write(b"abcdef").unwrap();
    let durable = up.finish(&pack).unwrap();
    assert!(b.list(FileKind::Pack).unwrap().is_empty());
    durable().unwrap();
    let packs = b.list(FileKind::Pack).unwrap();
    assert_eq!((packs[0].name.as_str(), packs[0].size), (pack.as_str(), 16));
    assert_eq!(b.read_range(FileKind::Pack, &pack, 8, 4).unwrap(), b"89ab");
    assert_eq!(b.read_range(FileKind::Pack, &pack, 15, 1).unwrap(), b"f");
    // Past the end: truncated, named.
    for (off, len) in [(10, 10), (16, 1), (40, 2)] {
        let e = b.read_range(FileKind::Pack, &pack, off, len).unwrap_err();
        assert!(
            matches!(&e, Error::Corrupt { reason, .. } if reason.contains("truncated")),
            "{off}+{len}: {e}"
        );
    }
    // A pack of three blocks (4 MiB each): ranges across block ends read
    // back exact, the last block short, past the end truncated.
    let big: Vec<u8> = (0..9u32 << 20).map(|i| (i % 251) as u8).collect();
    let big_name = format!("3f{}", "b".repeat(62));
    let mut up = b.begin(FileKind::Pack).unwrap();
    up.write(&big).unwrap();
    up.finish(&big_name).unwrap()().unwrap();
    let block = arca::backend::S3_BLOCK as usize;
    for (off, len) in [
        (0, 10),
        (block - 3, 7),
        (block - 1, block + 2),
        (2 * block + 5, big.len() - 2 * block - 5),
    ] {
        let got = b
            .read_range(FileKind::Pack, &big_name, off as u64, len as u64)
            .unwrap();
        assert!(got == big[off..off + len], "{off}+{len}");
    }
    let e = b
        .read_range(FileKind::Pack, &big_name, big.len() as u64 - 2, 3)
        .unwrap_err();
    assert!(matches!(&e, Error::Corrupt { .. }), "{e}");
    assert_eq!(b.read(FileKind::Pack, &big_name).unwrap(), big);
    b.remove(FileKind::Pack, &big_name).unwrap();

    // An upload dropped unfinished leaves nothing.
    let mut up = b.begin(FileKind::Pack).unwrap();
    up.write(b"lost").unwrap();
    drop(up);
    assert_eq!(b.list(FileKind::Pack).unwrap().len(), 1);

    // Missing files read as not found; removing twice is fine.
    let e = b.read(FileKind::Index, &names[0]).unwrap_err();
    assert!(is_not_found(&e), "{e}");
    assert!(is_not_found(
        &b.size(FileKind::Index, &names[0]).unwrap_err()
    ));
    b.remove(FileKind::Snapshot, &names[1]).unwrap();
    b.remove(FileKind::Snapshot, &names[1]).unwrap();
    assert_eq!(b.list(FileKind::Snapshot).unwrap().len(), 4);
    // Another prefix in the same bucket is another repository.
    let other = backend(&s, "contract/other");
    assert!(other.list(FileKind::Config).unwrap().is_empty());
    assert!(other.list(FileKind::Snapshot).unwrap().is_empty());
}

#[test]
fn backup_restore_check_forget_and_prune_on_s3() {
    let Some(s) = Server::start("backup_restore_check_forget_and_prune_on_s3") else {
        return;
    };
    let e = Env::new();
    let loc = s.location("arca-repos/acme");
    let run = |args: &[&str]| s3_cmd(&e, &loc, args);
    let ok = |args: &[&str]| e.ok_cmd(run(args));
    let code = |args: &[&str]| run(args).output().unwrap().status.code();
    // Nothing there yet.
    assert_eq!(code(&["snapshots"]), Some(10));
    ok(&["init", "--pack-size-mib", "1"]);
    assert_eq!(code(&["init"]), Some(1), "a second init is refused");
    let src = e.path("src");
    for day in 0..3 {
        let _ = std::fs::remove_dir_all(&src);
        gen(&src, day, 0.05);
        let t = format!("2024-03-{:02}T02:00:00Z", day + 1);
        ok(&[
            "backup",
            src.to_str().unwrap(),
            "--account",
            "acme",
            "--time",
            &t,
        ]);
    }
    let out = e.path("out");
    ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);
    let report = ok(&["check", "--read-data"]);
    assert!(report.contains("no errors"), "{report}");
    ok(&["forget", "--keep-last", "1", "--prune"]);
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(listed.len(), 1);
    ok(&["check", "--read-data"]);
    let out2 = e.path("out2");
    ok(&["restore", "latest", "--target", out2.to_str().unwrap()]);
    same_tree(&src, &out2);
    // A wrong password, and the index cache rebuilt from the packs.
    let mut c = run(&["snapshots"]);
    c.env("ARCA_PASSWORD", "wrong");
    assert_eq!(c.output().unwrap().status.code(), Some(12));
    ok(&["repair", "index"]);
    ok(&["check"]);
}

#[test]
fn unreachable_or_unconfigured_s3_storage_fails_clearly() {
    let e = Env::new();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let loc = format!("s3:http://127.0.0.1:{port}/b/p");
    let mut c = e.cmd(&["snapshots"]);
    s3_env(&mut c, &loc);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("S3 request failed after 4 tries"), "{err}");
    let mut c = e.cmd(&["snapshots"]);
    c.env("ARCA_REPOSITORY", &loc)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("set AWS_ACCESS_KEY_ID"));
    let mut c = e.cmd(&["snapshots"]);
    s3_env(&mut c, "s3:ftp://h/b");
    assert_eq!(c.output().unwrap().status.code(), Some(1));
}

#[test]
fn a_backup_killed_mid_way_on_s3_leaves_a_valid_repository() {
    let Some(s) = Server::start("a_backup_killed_mid_way_on_s3_leaves_a_valid_repository") else {
        return;
    };
    let e = Env::new();
    let loc = s.location("kill/acme");
    let run = |args: &[&str]| s3_cmd(&e, &loc, args);
    let ok = |args: &[&str]| e.ok_cmd(run(args));
    ok(&["init", "--pack-size-mib", "1"]);
    let src = e.path("src");
    gen(&src, 0, 0.3);
    ok(&[
        "backup",
        src.to_str().unwrap(),
        "--account",
        "acme",
        "--time",
        "2024-03-01T02:00:00Z",
    ]);
    let store = backend(&s, "kill/acme");
    let before = store.list(FileKind::Pack).unwrap().len();
    // New data that does not compress: many 1 MiB packs to send.
    for i in 0..6u64 {
        std::fs::write(src.join(format!("scan-{i}.pdf")), noise(4 << 20, i)).unwrap();
    }
    // Killed (SIGKILL) once it has sent some packs of the second backup.
    let mut child = run(&["backup", src.to_str().unwrap(), "--account", "acme"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while store.list(FileKind::Pack).unwrap().len() < before + 2
        && child.try_wait().unwrap().is_none()
        && t0.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    // The first snapshot is whole; the repository checks clean.
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["snapshots", "--json"])).unwrap();
    assert_eq!(listed.len(), 1, "killed before its snapshot ({status})");
    ok(&["check", "--read-data"]);
    // The next backup completes, and the first snapshot restores exactly.
    ok(&["backup", src.to_str().unwrap(), "--account", "acme"]);
    ok(&["check", "--read-data"]);
    let out = e.path("out");
    ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);
    let first = e.path("first");
    ok(&[
        "restore",
        listed[0]["id"].as_str().unwrap(),
        "--target",
        first.to_str().unwrap(),
    ]);
    let day0 = e.path("day0");
    gen(&day0, 0, 0.3);
    same_tree(&day0, &first);
    // The packs the killed backup sent were adopted: their chunks were not
    // stored again by the next backup.
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["snapshots", "--json"])).unwrap();
    let added = listed[1]["summary"]["bytes_added"].as_u64().unwrap();
    assert!(added < 23 << 20, "{added} bytes added of 24 MiB");
}

#[test]
fn a_local_repository_moves_to_s3_with_copy() {
    let Some(s) = Server::start("a_local_repository_moves_to_s3_with_copy") else {
        return;
    };
    let e = Env::new();
    e.init();
    let src = e.path("src");
    for day in 0..2 {
        backup_day(&e, &src, day, 0.03);
    }
    let loc = s.location("arca-mirror/acme");
    let mut c = e.cmd(&["copy", "--to", &loc]);
    s3_env(&mut c, e.repo().to_str().unwrap());
    e.ok_cmd(c);
    let on_s3 = |args: &[&str]| e.ok_cmd(s3_cmd(&e, &loc, args));
    let report = on_s3(&["check", "--read-data"]);
    assert!(report.contains("no errors"), "{report}");
    let out = e.path("out");
    on_s3(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&src, &out);
    // Up to date: a second copy sends nothing.
    let mut c = e.cmd(&["--json", "copy", "--to", &loc]);
    s3_env(&mut c, e.repo().to_str().unwrap());
    let r: serde_json::Value = serde_json::from_str(&e.ok_cmd(c)).unwrap();
    assert_eq!(
        (r["copied"].as_u64(), r["existed"].as_bool()),
        (Some(0), Some(true))
    );
}
