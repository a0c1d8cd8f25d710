//! One module per operation, each a small function over the repository API.

pub mod backup;
pub mod browse;
pub mod check;
pub mod copy;
pub mod diff;
pub mod export;
pub mod forget;
pub mod mount;
pub mod prune;
pub mod records;
pub mod repair;
pub mod restore;
pub mod rowdiff;
pub mod snapshots;
pub mod stats;
pub mod tag;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::repository::Repository;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks every running operation to stop at its next checkpoint (called from
/// the binary's Ctrl-C handler). Operations then return
/// [`Error::Interrupted`] after leaving the repository consistent.
pub fn request_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Fails with [`Error::Interrupted`] once an interrupt was requested.
pub fn check_interrupt() -> Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Progress of a long operation, in bytes. The binary shows a bar on a
/// terminal; the library only reports.
pub trait Progress: Sync {
    /// Sets the total expected.
    fn set_total(&self, _bytes: u64) {}
    /// Adds work done.
    fn inc(&self, _bytes: u64) {}
    /// Sets a short message (current phase).
    fn message(&self, _msg: &str) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Picks the snapshot for `restore` and `export`: `spec` is "latest" or an
/// id prefix; with `at` (unix seconds, and `spec` "latest") it is the
/// newest snapshot at or before that time, of `account` when given.
pub fn pick_snapshot(
    repo: &Repository,
    spec: &str,
    account: Option<&str>,
    at: Option<i64>,
) -> Result<(SnapshotId, Snapshot)> {
    let Some(at) = at else {
        return repo.find_snapshot(spec, account);
    };
    if spec != "latest" {
        return Err(Error::Invalid(
            "give either a snapshot id or --at, not both".into(),
        ));
    }
    repo.snapshots()?
        .into_iter()
        .rfind(|(_, s)| account.is_none_or(|a| s.account == a) && s.time <= at)
        .ok_or_else(|| Error::Invalid(format!("no snapshot at or before {}", format_time(at, 0))))
}

/// Parses a time argument: RFC 3339 (`2024-03-01T02:00:00Z`,
/// `…+01:00`), or `YYYY-MM-DDTHH:MM:SS` / `YYYY-MM-DD HH:MM:SS` / `YYYY-MM-DD`
/// taken as UTC. Returns unix seconds and nanoseconds.
pub fn parse_time(s: &str) -> Result<(i64, u32)> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok((t.timestamp(), t.timestamp_subsec_nanos()));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            let t = t.and_utc();
            return Ok((t.timestamp(), t.timestamp_subsec_nanos()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok((t.and_utc().timestamp(), 0));
        }
    }
    Err(Error::Invalid(format!(
        "cannot parse time {s:?}: use RFC 3339 (2024-03-01T02:00:00Z) or YYYY-MM-DDTHH:MM:SS (UTC)"
    )))
}

/// Formats unix seconds as RFC 3339 in UTC.
pub fn format_time(secs: i64, nanos: u32) -> String {
    chrono::DateTime::from_timestamp(secs, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("@{secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_forms() {
        let want = (1_709_258_400, 0);
        assert_eq!(parse_time("2024-03-01T02:00:00Z").unwrap(), want);
        assert_eq!(parse_time("2024-03-01T03:00:00+01:00").unwrap(), want);
        assert_eq!(parse_time("2024-03-01T02:00:00").unwrap(), want);
        assert_eq!(parse_time("2024-03-01 02:00:00").unwrap(), want);
        assert_eq!(parse_time("2024-03-01").unwrap().0, want.0 - 7200);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_time(want.0, 0), "2024-03-01T02:00:00Z");
    }
}
