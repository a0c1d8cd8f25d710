//! `arca mount` through the kernel's FUSE. These tests need /dev/fuse (and
//! fusermount3 when not root); where FUSE cannot be had, set
//! ARCA_SKIP_FUSE_TESTS=1 to skip them by name rather than fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn fuse_or_skip(test: &str) -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    assert!(
        std::env::var_os("ARCA_SKIP_FUSE_TESTS").is_some(),
        "{test}: /dev/fuse is missing (set ARCA_SKIP_FUSE_TESTS=1 to skip)"
    );
    eprintln!("{test}: skipped, no /dev/fuse");
    false
}

/// Whether `dir` (an absolute path without symlinks, as the tests' temporary
/// directories are) is a mount point; not canonicalized, since a stale FUSE
/// mount cannot be.
fn is_mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap()))
}

/// A running `arca mount`, unmounted when dropped.
struct Mounted {
    child: Option<Child>,
    dir: PathBuf,
}

impl Mounted {
    fn start(e: &Env, dir: &Path) -> Self {
        Self::start_with(e, dir, &[])
    }

    fn start_with(e: &Env, dir: &Path, flags: &[&str]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let mut args = vec!["mount", dir.to_str().unwrap()];
        args.extend_from_slice(flags);
        let child = e
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut m = Mounted {
            child: Some(child),
            dir: dir.to_path_buf(),
        };
        let t0 = Instant::now();
        while !dir.join("accounts").exists() {
            if let Some(st) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let o = m.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "arca mount exited with {st}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "mount not up");
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// Ctrl-C: unmounts and exits 0.
    fn stop(self) -> String {
        self.stop_with("-INT")
    }

    /// A signal (`-INT`, `-TERM`): unmounts and exits 0.
    fn stop_with(mut self, signal: &str) -> String {
        let child = self.child.take().unwrap();
        std::process::Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(!is_mounted(&self.dir), "still mounted after Ctrl-C");
        err
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever failed, no mount is left behind.
        if is_mounted(&self.dir) {
            let _ = std::process::Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
    }
}

#[test]
fn mounted_snapshots_read_as_their_sources_and_refuse_writes() {
    if !fuse_or_skip("mounted_snapshots_read_as_their_sources_and_refuse_writes") {
        return;
    }
    let e = Env::new();
    e.init();
    let (day0, day1) = (e.path("day0"), e.path("day1"));
    gen(&day0, 0, 0.05);
    gen(&day1, 1, 0.05);
    std::fs::set_permissions(
        day1.join("users.csv"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("orders.csv", day1.join("latest-orders")).unwrap();
    backup_at(&e, &day0, "2024-03-01T02:00:00Z");
    backup_at(&e, &day1, "2024-03-02T02:00:00Z");

    let mnt = e.path("mnt");
    let m = Mounted::start(&e, &mnt);
    let acme = mnt.join("accounts/acme");
    let mut names: Vec<String> = std::fs::read_dir(&acme)
        .unwrap()
        .map(|d| d.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["2024-03-01T02:00:00Z", "2024-03-02T02:00:00Z", "latest"]
    );
    // Content, modes, mtimes and links, as the sources have them.
    same_tree(&day0, &acme.join("2024-03-01T02:00:00Z"));
    same_tree(&day1, &acme.join("latest"));
    let ids: Vec<PathBuf> = std::fs::read_dir(mnt.join("ids"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        let orders = std::fs::read(id.join("orders.csv")).unwrap();
        assert!(
            orders == std::fs::read(day0.join("orders.csv")).unwrap()
                || orders == std::fs::read(day1.join("orders.csv")).unwrap()
        );
    }

    // Read-only.
    let w = std::fs::write(acme.join("latest/orders.csv"), b"x").unwrap_err();
    assert_eq!(w.raw_os_error(), Some(libc_erofs()), "{w}");
    let w = std::fs::create_dir(acme.join("latest/new")).unwrap_err();
    assert_eq!(w.raw_os_error(), Some(libc_erofs()), "{w}");

    // The mount holds a shared lock: prune waits, restore does not.
    let o = e.run(&["prune"]);
    assert_eq!(
        o.status.code(),
        Some(11),
        "prune while mounted: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = e.path("out");
    e.ok(&["restore", "latest", "--target", out.to_str().unwrap()]);
    same_tree(&day1, &out);

    let err = m.stop();
    assert!(err.contains("mounted read-only at"), "{err}");
    // The lock went with it.
    e.ok(&["prune"]);
}

fn libc_erofs() -> i32 {
    30
}

#[test]
fn a_damaged_chunk_fails_its_read_with_eio_and_the_mount_stays_up() {
    if !fuse_or_skip("a_damaged_chunk_fails_its_read_with_eio_and_the_mount_stays_up") {
        return;
    }
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.02);
    e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    flip_middle_byte(&largest_pack(&e.repo()));

    let mnt = e.path("mnt");
    let m = Mounted::start(&e, &mnt);
    let root = mnt.join("accounts/a/latest");
    let (mut good, mut bad) = (0, 0);
    for f in std::fs::read_dir(&root).unwrap() {
        let p = f.unwrap().path();
        if !p.is_file() {
            continue;
        }
        match std::fs::read(&p) {
            Ok(d) => {
                assert_eq!(d, std::fs::read(src.join(p.file_name().unwrap())).unwrap());
                good += 1;
            }
            Err(err) => {
                assert_eq!(
                    err.raw_os_error(),
                    Some(5),
                    "EIO for {}: {err}",
                    p.display()
                );
                bad += 1;
            }
        }
    }
    assert!(bad >= 1, "the damaged chunk's file fails");
    assert!(good >= 1, "the other files still read");
    // SIGTERM (a service manager stopping it) unmounts as Ctrl-C does.
    let err = m.stop_with("-TERM");
    assert!(
        err.contains("corrupt repository data"),
        "the cause is logged: {err}"
    );
}

#[test]
fn mount_errors_have_their_exit_codes() {
    let e = Env::new();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.01);
    e.ok(&["backup", src.to_str().unwrap(), "--account", "a"]);
    let missing = e.path("no-such-dir");
    let o = e.run(&["mount", missing.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(13),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let file = src.join("orders.csv");
    let o = e.run(&["mount", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a directory"));
    let dir = e.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    let o = e.run_pw("wrong", &["mount", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(12));
}

/// Reads `path` as user nobody: Ok, or the errno of the failure.
fn read_as_nobody(path: &Path) -> Result<(), String> {
    let o = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "cat"])
        .arg(path)
        .output()
        .unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

#[test]
fn other_users_see_a_mount_only_with_allow_other_and_only_what_modes_allow() {
    if !fuse_or_skip("other_users_see_a_mount_only_with_allow_other_and_only_what_modes_allow") {
        return;
    }
    if rustix_is_root() == Some(false) || which("runuser").is_none() {
        eprintln!("skipped: needs root and runuser to act as another user");
        return;
    }
    let e = Env::new();
    // Other users must reach the mount point.
    std::fs::set_permissions(e.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    e.init();
    let src = e.path("src");
    gen(&src, 0, 0.01);
    std::fs::set_permissions(
        src.join("users.csv"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    backup_at(&e, &src, "2024-03-01T02:00:00Z");
    let latest = |mnt: &Path| mnt.join("accounts/acme/latest");

    let mnt = e.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Mounted::start(&e, &mnt);
    let err = read_as_nobody(&latest(&mnt).join("orders.csv")).unwrap_err();
    assert!(
        err.contains("Permission denied"),
        "owner only by default: {err}"
    );
    m.stop();

    let m = Mounted::start_with(&e, &mnt, &["--allow-other"]);
    read_as_nobody(&latest(&mnt).join("orders.csv")).expect("a 0644 file reads");
    let err = read_as_nobody(&latest(&mnt).join("users.csv")).unwrap_err();
    assert!(
        err.contains("Permission denied"),
        "a 0600 file stays its owner's: {err}"
    );
    // Its owner (root here) still reads it.
    assert_eq!(
        std::fs::read(latest(&mnt).join("users.csv")).unwrap(),
        std::fs::read(src.join("users.csv")).unwrap()
    );
    m.stop();
}

fn rustix_is_root() -> Option<bool> {
    let o = std::process::Command::new("id").arg("-u").output().ok()?;
    Some(String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}
