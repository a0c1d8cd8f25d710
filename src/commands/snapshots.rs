//! `arca snapshots`: list and filter snapshots.

use serde::Serialize;

use crate::commands::format_time;
use crate::error::Result;
use crate::format::snapshot::{Snapshot, Summary};
use crate::id::SnapshotId;
use crate::repository::Repository;

/// Filters; every one that is set must hold.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this account.
    pub account: Option<String>,
    /// Only snapshots carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only snapshots strictly before this time (unix seconds).
    pub before: Option<i64>,
    /// Only snapshots at or after this time (unix seconds).
    pub after: Option<i64>,
    /// Only the newest N of each account.
    pub latest: Option<usize>,
}

/// A snapshot as listed (and as printed by `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    /// Full id (64 hex digits).
    pub id: String,
    /// First 8 hex digits.
    pub short_id: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// Account.
    pub account: String,
    /// Host.
    pub host: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Source paths.
    pub paths: Vec<String>,
    /// Root tree id.
    pub tree: String,
    /// Parent snapshot id, if any.
    pub parent: Option<String>,
    /// What the backup did.
    pub summary: Summary,
}

impl Listed {
    fn of(id: &SnapshotId, s: &Snapshot) -> Self {
        Listed {
            id: id.to_hex(),
            short_id: id.short(),
            time: format_time(s.time, s.nanos),
            account: s.account.clone(),
            host: s.host.clone(),
            tags: s.tags.clone(),
            paths: s.paths.clone(),
            tree: s.tree.to_hex(),
            parent: s.parent.map(|p| p.to_hex()),
            summary: s.summary.clone(),
        }
    }
}

/// Lists snapshots matching `f`, oldest first.
pub fn list(repo: &Repository, f: &Filter) -> Result<Vec<Listed>> {
    let mut v: Vec<(SnapshotId, Snapshot)> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| f.account.as_ref().is_none_or(|a| &s.account == a))
        .filter(|(_, s)| f.tags.iter().all(|t| s.tags.contains(t)))
        .filter(|(_, s)| f.before.is_none_or(|b| s.time < b))
        .filter(|(_, s)| f.after.is_none_or(|a| s.time >= a))
        .collect();
    if let Some(n) = f.latest {
        // Keep the newest n per account; v is sorted oldest first.
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        let mut keep = vec![false; v.len()];
        for (i, (_, s)) in v.iter().enumerate().rev() {
            let c = seen.entry(s.account.clone()).or_default();
            if *c < n {
                *c += 1;
                keep[i] = true;
            }
        }
        let mut it = keep.into_iter();
        v.retain(|_| it.next().unwrap_or(false));
    }
    Ok(v.iter().map(|(id, s)| Listed::of(id, s)).collect())
}

fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// An RFC 3339 time without its fraction of a second, which would push
/// the table's columns apart (`--json` keeps it).
fn whole_seconds(t: &str) -> String {
    match (t.find('.'), t.find(['Z', '+'])) {
        (Some(dot), Some(end)) if dot < end => format!("{}{}", &t[..dot], &t[end..]),
        _ => t.to_string(),
    }
}

/// Renders snapshots as a plain-text table.
pub fn table(rows: &[Listed]) -> String {
    let mut out = format!(
        "{:<8}  {:<20}  {:<16}  {:>7}  {:>10}  {:>10}  {}\n",
        "ID", "Time", "Account", "Files", "Size", "Added", "Tags"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<8}  {:<20}  {:<16}  {:>7}  {:>10}  {:>10}  {}\n",
            r.short_id,
            whole_seconds(&r.time),
            r.account,
            r.summary.total_files,
            human_bytes(r.summary.total_bytes),
            human_bytes(r.summary.bytes_stored),
            r.tags.join(",")
        ));
    }
    out.push_str(&format!("{} snapshot(s)\n", rows.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_times_are_whole_seconds_so_columns_line_up() {
        assert_eq!(
            whole_seconds("2026-11-24T04:58:45.937168692Z"),
            "2026-11-24T04:58:45Z"
        );
        assert_eq!(
            whole_seconds("2024-03-01T02:00:00Z"),
            "2024-03-01T02:00:00Z"
        );
        assert_eq!(
            whole_seconds("2024-03-01T02:00:00.5+01:00"),
            "2024-03-01T02:00:00+01:00"
        );
    }
}
