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
/// errors, not skipped: a lock we cannot read may be a live one.
pub fn list_locks(repo: &Repository) -> Result<Vec<FoundLock>> {
    let mut out = Vec::new();
    for l in repo.backend().list(FileKind::Lock)? {
        let body = match repo.read_object(
            FileKind::Lock,
            ObjectType::Lock,
            &l.name,
            limits::MAX_SMALL_FILE,
        ) {
            Ok(b) => b,
            // Removed by its holder between list and read.
            Err(e) if crate::backend::is_not_found(&e) => continue,
            Err(e) => return Err(e),
        };
        let record = LockRecord::decode(&body, &format!("lock {}", l.name))?;
        let stale = is_stale(&record);
        out.push(FoundLock {
            name: l.name,
            record,
            stale,
        });
    }
    Ok(out)
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

/// Takes a shared or exclusive lock for `operation`, or fails with
/// [`Error::Locked`] naming the holder.
pub fn acquire(repo: &Repository, exclusive: bool, operation: &str) -> Result<LockGuard> {
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
            while let Err(RecvTimeoutError::Timeout) =
                stop_rx.recv_timeout(Duration::from_secs(REFRESH_SECS))
            {
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

/// Removes stale locks, or every lock with `all`; returns what it removed.
pub fn unlock(repo: &Repository, all: bool) -> Result<Vec<FoundLock>> {
    let mut removed = Vec::new();
    for l in list_locks(repo)? {
        if all || l.stale {
            repo.backend().remove(FileKind::Lock, &l.name)?;
            removed.push(l);
        }
    }
    Ok(removed)
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
        assert_eq!(unlock(&r, false).unwrap().len(), 1);
        assert!(list_locks(&r).unwrap().is_empty());
    }
}
