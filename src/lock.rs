//! Repository locks (format-spec.md §10).
//!
//! Backup, restore and check take a shared lock; operations that remove or
//! rewrite repository files (repair index, and prune later) take an exclusive
//! one. A lock is a sealed file in `locks/` naming host, pid and time; it is
//! refreshed while held. It is stale when its process is gone (same host) or
//! its time is older than [`STALE_AFTER_SECS`]; stale locks are ignored.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::backend::FileKind;
use crate::error::{Error, Result};
use crate::format::lockfile::LockRecord;
use crate::format::{limits, ObjectType};
use crate::repository::{now_unix, Repository};

/// How often a held lock is rewritten with a fresh time.
pub const REFRESH_SECS: u64 = 120;
/// A lock not refreshed for this long is stale (5 refresh periods, so a
/// slow store or a suspended laptop does not lose its lock at once).
pub const STALE_AFTER_SECS: i64 = 600;

/// A lock as found in the repository, for messages and `unlock`.
#[derive(Clone, Debug)]
pub struct FoundLock {
    /// Its file name.
    pub name: String,
    /// Its contents.
    pub record: LockRecord,
    /// Whether it is stale.
    pub stale: bool,
}

impl FoundLock {
    /// "exclusive lock by backup on host h (pid 12), 30 s ago".
    pub fn describe(&self) -> String {
        format!(
            "{} lock held by {} on host {} (pid {}), refreshed {} s ago{}",
            if self.record.exclusive {
                "exclusive"
            } else {
                "shared"
            },
            self.record.operation,
            self.record.host,
            self.record.pid,
            now_unix() - self.record.time,
            if self.stale { " (stale)" } else { "" }
        )
    }
}

fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Whether a process with this pid exists on this host.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // kill(pid, 0) sends nothing; it only asks whether the process exists.
    // EPERM means it exists but belongs to someone else.
    #[allow(unsafe_code)]
    // SAFETY: kill with signal 0 has no effect on any process; it only checks.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn is_stale(r: &LockRecord) -> bool {
    if now_unix() - r.time > STALE_AFTER_SECS {
        return true;
    }
    r.host == this_host() && !process_alive(r.pid)
}

/// Every lock in the repository. Unreadable lock files are reported as
/// errors, not skipped: a lock we cannot read may be a live one. The error
/// says how to remove one once no process uses the repository.
pub fn list_locks(repo: &Repository) -> Result<Vec<FoundLock>> {
    let (locks, mut unreadable) = scan_locks(repo)?;
    match unreadable.pop() {
        None => Ok(locks),
        Some((name, e)) => Err(Error::corrupt(
            format!("lock file locks/{name}"),
            format!(
                "it does not open with this repository's key ({e}): it is damaged, or was \
                 left by a process of another repository that was at this location. \
                 Once no process uses the repository, `arca unlock --force` removes it"
            ),
        )),
    }
}

/// Lock files that do not read: name and why.
type Unreadable = Vec<(String, Error)>;

/// The locks that read, and the lock files that do not.
fn scan_locks(repo: &Repository) -> Result<(Vec<FoundLock>, Unreadable)> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for l in repo.backend().list(FileKind::Lock)? {
        let what = format!("lock {}", l.name);
        let read = repo
            .read_object(
                FileKind::Lock,
                ObjectType::Lock,
                &l.name,
                limits::MAX_SMALL_FILE,
            )
            .and_then(|body| LockRecord::decode(&body, &what));
        match read {
            Ok(record) => {
                let stale = is_stale(&record);
                out.push(FoundLock {
                    name: l.name,
                    record,
                    stale,
                });
            }
            // Removed by its holder between list and read.
            Err(e) if crate::backend::is_not_found(&e) => continue,
            Err(e @ Error::Corrupt { .. }) => bad.push((l.name, e)),
            Err(e) => return Err(e),
        }
    }
    Ok((out, bad))
}

/// A held lock; released (its file removed) on drop.
pub struct LockGuard {
    shared: Arc<Shared>,
    /// Dropped to stop the refresher.
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

struct Shared {
    backend: Arc<dyn crate::backend::Backend>,
    name: Mutex<String>,
}

fn write_lock(repo_keys: &Repository, rec: &LockRecord) -> Result<String> {
    Ok(repo_keys
        .write_object(FileKind::Lock, ObjectType::Lock, &rec.encode())?
        .to_hex())
}

static LOST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether a lock this process held was removed by someone else (`unlock
/// --force` elsewhere, or the repository replaced at its location): the
/// operation was asked to stop (see [`crate::commands::request_interrupt`]).
pub fn lost() -> bool {
    LOST.load(std::sync::atomic::Ordering::SeqCst)
}

fn on_lost() {
    LOST.store(true, std::sync::atomic::Ordering::SeqCst);
    crate::commands::request_interrupt();
}

/// Takes a shared or exclusive lock for `operation`, or fails with
/// [`Error::Locked`] naming the holder.
///
/// While held, the lock is rewritten every [`REFRESH_SECS`]. A refresh that
/// finds its lock file gone stops refreshing, so that it never writes into
/// a repository that replaced this one, and asks the operation to stop: a
/// lock someone removed no longer keeps conflicting operations out.
pub fn acquire(repo: &Repository, exclusive: bool, operation: &str) -> Result<LockGuard> {
    acquire_with(
        repo,
        exclusive,
        operation,
        Duration::from_secs(REFRESH_SECS),
        on_lost,
    )
}

fn acquire_with(
    repo: &Repository,
    exclusive: bool,
    operation: &str,
    refresh: Duration,
    lost: fn(),
) -> Result<LockGuard> {
    let mut nonce = [0u8; 16];
    crate::crypto::fill_random(&mut nonce)?;
    let mut rec = LockRecord {
        exclusive,
        host: this_host(),
        pid: std::process::id(),
        time: now_unix(),
        operation: operation.to_string(),
        nonce,
    };
    let name = write_lock(repo, &rec)?;
    // Write ours first, then look: of two processes racing, at least one
    // sees the other, so two conflicting locks are never both granted.
    let conflict = list_locks(repo).map(|locks| {
        locks
            .into_iter()
            .find(|l| l.name != name && !l.stale && (exclusive || l.record.exclusive))
    });
    match conflict {
        Ok(None) => {}
        Ok(Some(l)) => {
            let _ = repo.backend().remove(FileKind::Lock, &name);
            return Err(Error::Locked(l.describe()));
        }
        Err(e) => {
            let _ = repo.backend().remove(FileKind::Lock, &name);
            return Err(e);
        }
    }
    let shared = Arc::new(Shared {
        backend: repo.backend().clone(),
        name: Mutex::new(name),
    });
    // The refresher needs the file key to seal; it re-seals through a
    // closure over a copy of the sealed-object writer's inputs.
    let file_key = crate::crypto::Secret32::from_bytes(*repo.keys().file.expose());
    let s2 = shared.clone();
    // Dropping the sender wakes the refresher at once, so releasing the
    // lock never waits out a sleep.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let refresher = std::thread::Builder::new()
        .name("arca-lock-refresh".into())
        .spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stop_rx.recv_timeout(refresh) {
                let current = s2.name.lock().unwrap_or_else(|p| p.into_inner()).clone();
                match s2.backend.size(FileKind::Lock, &current) {
                    Err(e) if crate::backend::is_not_found(&e) => {
                        lost();
                        return;
                    }
                    // Storage unreachable for now: try again next time.
                    Err(_) => continue,
                    Ok(_) => {}
                }
                rec.time = now_unix();
                let Ok(bytes) =
                    crate::format::seal_file(&file_key, ObjectType::Lock, &rec.encode())
                else {
                    continue;
                };
                let new = crate::id::FileId::of(&bytes).to_hex();
                if s2.backend.write(FileKind::Lock, &new, &bytes).is_ok() {
                    let old = std::mem::replace(
                        &mut *s2.name.lock().unwrap_or_else(|p| p.into_inner()),
                        new,
                    );
                    let _ = s2.backend.remove(FileKind::Lock, &old);
                }
            }
        })
        .map_err(|e| Error::Invalid(format!("cannot start lock refresher: {e}")))?;
    Ok(LockGuard {
        shared,
        stop: Some(stop_tx),
        refresher: Some(refresher),
    })
}

impl LockGuard {
    /// The lock file's current name.
    pub fn name(&self) -> String {
        self.shared
            .name
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        let name = self.name();
        let _ = self.shared.backend.remove(FileKind::Lock, &name);
    }
}

/// What `unlock` did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct UnlockReport {
    /// The locks removed, described.
    pub removed: Vec<String>,
    /// Lock files that do not read, left in place (without `all`).
    pub unreadable_kept: Vec<String>,
}

/// Removes stale locks, or every lock with `all`, unreadable lock files
/// included (those may be live, so only `all` removes them).
pub fn unlock(repo: &Repository, all: bool) -> Result<UnlockReport> {
    let (locks, bad) = scan_locks(repo)?;
    let mut rep = UnlockReport::default();
    for l in locks {
        if all || l.stale {
            repo.backend().remove(FileKind::Lock, &l.name)?;
            rep.removed.push(l.describe());
        }
    }
    for (name, e) in bad {
        if all {
            repo.backend().remove(FileKind::Lock, &name)?;
            rep.removed
                .push(format!("unreadable lock file {name} ({e})"));
        } else {
            rep.unreadable_kept.push(format!("{name} ({e})"));
        }
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::crypto::KdfParams;
    use crate::repository::InitOptions;

    fn repo() -> Repository {
        let opts = InitOptions {
            kdf: KdfParams::CHEAPEST,
            ..InitOptions::default()
        };
        Repository::init(Arc::new(MemoryBackend::new()), b"pw", &opts).unwrap()
    }

    #[test]
    fn shared_locks_coexist_exclusive_conflicts() {
        let r = repo();
        let a = acquire(&r, false, "backup").unwrap();
        let b = acquire(&r, false, "backup").unwrap();
        assert!(matches!(acquire(&r, true, "prune"), Err(Error::Locked(_))));
        drop(a);
        drop(b);
        let x = acquire(&r, true, "prune").unwrap();
        let err = acquire(&r, false, "backup").err().unwrap();
        assert!(err.to_string().contains("prune"), "{err}");
        drop(x);
        assert!(
            list_locks(&r).unwrap().is_empty(),
            "drop removes the lock file"
        );
    }

    #[test]
    fn dead_process_lock_is_stale_and_unlock_removes_it() {
        let r = repo();
        let rec = LockRecord {
            exclusive: true,
            host: this_host(),
            pid: u32::MAX - 7,
            time: now_unix(),
            operation: "prune".into(),
            nonce: [0; 16],
        };
        write_lock(&r, &rec).unwrap();
        let g = acquire(&r, false, "backup").expect("stale exclusive lock is ignored");
        drop(g);
        assert_eq!(unlock(&r, false).unwrap().removed.len(), 1);
        assert!(list_locks(&r).unwrap().is_empty());
    }

    /// A lock sealed with another repository's key (as a process of a
    /// repository replaced at the same path leaves it).
    #[test]
    fn a_lock_of_another_key_blocks_with_a_hint_and_unlock_force_removes_it() {
        let r = repo();
        let other = repo();
        let rec = LockRecord {
            exclusive: false,
            host: this_host(),
            pid: std::process::id(),
            time: now_unix(),
            operation: "diff".into(),
            nonce: [1; 16],
        };
        let bytes =
            crate::format::seal_file(&other.keys().file, ObjectType::Lock, &rec.encode()).unwrap();
        let name = crate::id::FileId::of(&bytes).to_hex();
        r.backend().write(FileKind::Lock, &name, &bytes).unwrap();
        let e = acquire(&r, false, "backup").err().unwrap();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("unlock --force"), "{e}");
        assert!(list_locks(&r).is_err());
        let kept = unlock(&r, false).unwrap();
        assert_eq!((kept.removed.len(), kept.unreadable_kept.len()), (0, 1));
        let gone = unlock(&r, true).unwrap();
        assert_eq!((gone.removed.len(), gone.unreadable_kept.len()), (1, 0));
        drop(acquire(&r, true, "prune").unwrap());
    }

    static LOST_SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    fn note_lost() {
        LOST_SEEN.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    #[test]
    fn a_removed_lock_is_not_written_again_and_the_holder_is_told() {
        let r = repo();
        let g = acquire_with(&r, false, "backup", Duration::from_millis(20), note_lost).unwrap();
        // Refreshes replace the file while it is there.
        let first = g.name();
        std::thread::sleep(Duration::from_millis(120));
        assert_ne!(g.name(), first);
        assert_eq!(list_locks(&r).unwrap().len(), 1);
        // Someone removes it (unlock --force, or the repository replaced).
        r.backend().remove(FileKind::Lock, &g.name()).unwrap();
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(LOST_SEEN.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(list_locks(&r).unwrap().is_empty(), "never written again");
        drop(g);
    }
}
