//! `arca forget`: remove the snapshots no retention rule keeps.
//!
//! The decision is [`crate::retention::decide`]'s; this module applies it:
//! the removed snapshots' files are deleted (their data stays until `prune`).
//! Removing a snapshot file is atomic, so a kill leaves each snapshot either
//! whole or gone.

use serde::Serialize;

use crate::backend::FileKind;
use crate::commands::{check_interrupt, format_time};
use crate::error::{Error, Result};
use crate::format::config::Operation;
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::repository::Repository;
use crate::retention::{self, Policy, RetentionError, RuleSet, SnapInfo};

/// Where the rules come from.
pub enum Rules {
    /// The same rules for every group (command-line flags).
    Flags(RuleSet),
    /// Tiers by plan, time zone by account (a policy file).
    Policy(Box<Policy>),
}

/// What to forget.
pub struct ForgetOptions {
    /// The rules.
    pub rules: Rules,
    /// Only this account's snapshots are considered.
    pub account: Option<String>,
    /// "Now" for duration rules (unix seconds).
    pub now: i64,
    /// Allow removing the newest snapshot of a group.
    pub allow_empty: bool,
    /// Decide and report, remove nothing.
    pub dry_run: bool,
}

/// One snapshot's fate.
#[derive(Clone, Debug, Serialize)]
pub struct Fate {
    /// Snapshot id.
    pub id: String,
    /// RFC 3339 time.
    pub time: String,
    /// Account.
    pub account: String,
    /// Group (account and paths).
    pub group: String,
    /// "keep" or "remove".
    pub action: &'static str,
    /// The rules that keep it (empty when removed).
    pub reasons: Vec<String>,
}

/// What forget did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForgetReport {
    /// Every considered snapshot, by group then time.
    pub snapshots: Vec<Fate>,
    /// Snapshots kept.
    pub kept: u64,
    /// Snapshots removed (or, with dry run, to remove).
    pub removed: u64,
    /// True when nothing was changed.
    pub dry_run: bool,
}

fn retention_error(e: RetentionError) -> Error {
    Error::Invalid(e.to_string())
}

/// Decides and (unless dry run) removes. The caller holds an exclusive lock.
pub fn forget(repo: &Repository, opts: &ForgetOptions) -> Result<ForgetReport> {
    repo.check_features(Operation::Prune)?;
    let snaps: Vec<SnapInfo> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| opts.account.as_ref().is_none_or(|a| &s.account == a))
        .map(|(id, s)| SnapInfo {
            id: id.to_hex(),
            time: s.time,
            nanos: s.nanos,
            account: s.account,
            paths: s.paths,
            tags: s.tags,
        })
        .collect();
    let rules_for = |account: &str| -> std::result::Result<RuleSet, RetentionError> {
        match &opts.rules {
            Rules::Flags(r) => Ok(r.clone()),
            Rules::Policy(p) => p.rules_for(account),
        }
    };
    let decisions = retention::decide(&snaps, &rules_for, opts.now, opts.allow_empty)
        .map_err(retention_error)?;
    let mut rep = ForgetReport {
        dry_run: opts.dry_run,
        ..ForgetReport::default()
    };
    for d in decisions {
        if d.keep {
            rep.kept += 1;
        } else {
            rep.removed += 1;
            if !opts.dry_run {
                check_interrupt()?;
                repo.backend().remove(FileKind::Snapshot, &d.id)?;
            }
        }
        rep.snapshots.push(Fate {
            time: format_time(d.time, 0),
            action: if d.keep { "keep" } else { "remove" },
            id: d.id,
            account: d.account,
            group: d.group,
            reasons: d.reasons,
        });
    }
    Ok(rep)
}

/// Removes the snapshots named by `specs` (ids, unique id prefixes,
/// `latest`, `latest~N`, within `account` when given), and nothing else,
/// unless `dry_run`. A snapshot file too damaged to read is named by its
/// file name or a unique prefix of it. Every name is resolved before
/// anything is removed. The caller holds an exclusive lock.
pub fn forget_named(
    repo: &Repository,
    specs: &[String],
    account: Option<&str>,
    dry_run: bool,
) -> Result<ForgetReport> {
    repo.check_features(Operation::Prune)?;
    let readable = repo.snapshots()?;
    let files = repo.backend().names(FileKind::Snapshot)?;
    let fate = |id: &SnapshotId, s: &Snapshot| Fate {
        id: id.to_hex(),
        time: format_time(s.time, s.nanos),
        group: format!("{} {}", s.account, s.paths.join(", ")),
        account: s.account.clone(),
        action: "remove",
        reasons: Vec::new(),
    };
    let mut chosen: Vec<Fate> = Vec::new();
    for spec in specs {
        let f = if spec.starts_with("latest") {
            let (id, s) = repo.find_snapshot(spec, account)?;
            fate(&id, &s)
        } else {
            // Among every snapshot file, so that one too damaged to read
            // can be named too.
            let lower = spec.to_ascii_lowercase();
            let hits: Vec<&String> = files
                .iter()
                .filter(|f| !lower.is_empty() && f.starts_with(&lower))
                .collect();
            match hits.as_slice() {
                [] => return Err(Error::NotFound(format!("no snapshot matches {spec:?}"))),
                [one] => match readable.iter().find(|(id, _)| id.to_hex() == **one) {
                    Some((id, s)) if account.is_some_and(|a| a != s.account) => {
                        return Err(Error::Invalid(format!(
                            "snapshot {} is of account {:?}, not {:?}",
                            id.short(),
                            s.account,
                            account.unwrap_or_default()
                        )))
                    }
                    Some((id, s)) => fate(id, s),
                    None => Fate {
                        id: (*one).clone(),
                        time: String::new(),
                        group: "(snapshot files that do not read)".into(),
                        account: String::new(),
                        action: "remove",
                        reasons: Vec::new(),
                    },
                },
                many => {
                    return Err(Error::Invalid(format!(
                        "snapshot prefix {spec:?} matches {} snapshots",
                        many.len()
                    )))
                }
            }
        };
        if !chosen.iter().any(|c| c.id == f.id) {
            chosen.push(f);
        }
    }
    let mut rep = ForgetReport {
        dry_run,
        ..ForgetReport::default()
    };
    for f in chosen {
        if !dry_run {
            check_interrupt()?;
            repo.backend().remove(FileKind::Snapshot, &f.id)?;
        }
        rep.removed += 1;
        rep.snapshots.push(f);
    }
    Ok(rep)
}

/// Renders a report as a table.
pub fn table(rep: &ForgetReport) -> String {
    let mut out = String::new();
    let mut group = "";
    for f in &rep.snapshots {
        if f.group != group {
            group = &f.group;
            out.push_str(&format!("{group}\n"));
        }
        out.push_str(&format!(
            "  {:<8}  {:<20}  {:<6}  {}\n",
            &f.id[..8.min(f.id.len())],
            f.time,
            f.action,
            f.reasons.join(", ")
        ));
    }
    out.push_str(&format!(
        "{} kept, {} {}\n",
        rep.kept,
        rep.removed,
        if rep.dry_run {
            "to remove (dry run)"
        } else {
            "removed"
        }
    ));
    out
}
