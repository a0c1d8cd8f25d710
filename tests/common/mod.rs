//! Shared helpers for the integration tests: a scratch repository and a way
//! to run the real `arca` binary against it.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arca::demo::gen::{generate_day, GenOptions};

pub const PASSWORD: &str = "correct horse battery staple";

pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A command for the arca binary with repository, password and cache
    /// set through the environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_arca"));
        c.args(args)
            .env("ARCA_REPOSITORY", self.repo())
            .env("ARCA_PASSWORD", PASSWORD)
            .env("ARCA_CACHE_DIR", self.cache())
            .env_remove("ARCA_PASSWORD_FILE")
            .env_remove("ARCA_PASSWORD_COMMAND")
            .env_remove("ARCA_KEY_CACHE");
        c
    }

    /// Runs with another password than the default one.
    pub fn run_pw(&self, password: &str, args: &[&str]) -> Output {
        self.cmd(args)
            .env("ARCA_PASSWORD", password)
            .output()
            .expect("run arca")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run arca")
    }

    /// Runs and asserts the exit code; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(args, 0)
    }

    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(code),
            "arca {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs `c` (a [`Env::cmd`] with changes) and asserts it succeeded;
    /// returns stdout.
    pub fn ok_cmd(&self, mut c: Command) -> String {
        let o = c.output().expect("run arca");
        assert_eq!(
            o.status.code(),
            Some(0),
            "arca {:?}\nstdout:\n{}\nstderr:\n{}",
            c.get_args().collect::<Vec<_>>(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn init(&self) {
        self.ok(&["init"]);
    }

    pub fn snapshots_json(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["snapshots", "--json"]);
        serde_json::from_str(&out).expect("snapshots --json is a JSON array")
    }
}

/// Writes generated account data for `day` into `dir` (scale 0.02: ~2 MB).
pub fn gen(dir: &Path, day: u32, scale: f64) {
    generate_day(dir, day, &GenOptions { scale, seed: 42 }).expect("generate");
}

/// Generates day `day` into `src` (afresh) and backs it up for account
/// `acme` at 02:00 UTC of 2024-03-(day + 1).
pub fn backup_day(e: &Env, src: &Path, day: u32, scale: f64) {
    let _ = std::fs::remove_dir_all(src);
    gen(src, day, scale);
    backup_at(e, src, &format!("2024-03-{:02}T02:00:00Z", day + 1));
}

/// Backs `src` up for account `acme` with snapshot time `time`.
pub fn backup_at(e: &Env, src: &Path, time: &str) {
    e.ok(&[
        "backup",
        src.to_str().unwrap(),
        "--account",
        "acme",
        "--time",
        time,
    ]);
}

/// Bytes that do not compress (not every test crate uses them).
#[allow(unused_imports)]
pub use arca::testutil::noise;

pub fn same_tree(a: &Path, b: &Path) {
    let d = arca::demo::compare_dirs(a, b).expect("compare");
    assert!(d.is_empty(), "trees differ:\n{}", d.join("\n"));
}

/// All pack files of a local repository (packs being written live in
/// `data/` under temporary names, and are not counted).
pub fn packs(repo: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for sub in std::fs::read_dir(repo.join("data")).expect("data dir") {
        let sub = sub.expect("entry").path();
        if !sub.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&sub).expect("sub") {
            let p = f.expect("entry").path();
            if !p
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
            {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

pub fn pack_bytes(repo: &Path) -> u64 {
    packs(repo)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// The largest pack of the repository at `repo` (a data pack: tree packs
/// are much smaller).
pub fn largest_pack(repo: &Path) -> PathBuf {
    packs(repo)
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).expect("pack").len())
        .expect("a pack")
}

/// Flips one bit of the byte in the middle of `pack` (inside a blob), and
/// returns the pack's file name, which errors should name.
pub fn flip_middle_byte(pack: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = std::fs::read(pack).expect("read pack");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::set_permissions(pack, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::write(pack, &bytes).expect("write pack");
    pack.file_name()
        .and_then(|n| n.to_str())
        .expect("pack name")
        .to_string()
}

/// The ids of the snapshots `snapshots --json` lists, oldest first.
pub fn listed_ids(e: &Env) -> Vec<String> {
    e.snapshots_json()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}
