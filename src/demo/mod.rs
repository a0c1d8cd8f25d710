//! `arca demo`: the whole job end to end on built-in sample data.
//!
//! Generates several days of a stockflow-like account ([`gen`]), backs each
//! day up into a new local repository, lists the snapshots, restores the
//! latest and compares it with the source byte for byte, and runs
//! `check --read-data`.

pub mod gen;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::LocalBackend;
use crate::commands::backup::{backup, BackupOptions};
use crate::commands::check::{check, ReadData};
use crate::commands::restore::{restore, RestoreOptions};
use crate::commands::snapshots::{list, table, Filter};
use crate::commands::{format_time, NoProgress};
use crate::error::{Error, Result};
use crate::repository::{InitOptions, Repository};

/// Demo settings.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Working directory (must not exist or be empty).
    pub dir: PathBuf,
    /// Days to generate and back up.
    pub days: u32,
    /// Data scale (1.0 is about 100 MB per day).
    pub scale: f64,
    /// Password of the demo repository.
    pub password: String,
}

/// Compares two directory trees: content, mode bits and mtimes of files,
/// and the set of entries. Returns one line per difference.
pub fn compare_dirs(a: &Path, b: &Path) -> Result<Vec<String>> {
    let mut diffs = Vec::new();
    compare_into(a, b, Path::new(""), &mut diffs)?;
    Ok(diffs)
}

fn names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.file_name()).map_err(|er| Error::io(dir, er)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

fn compare_into(a: &Path, b: &Path, rel: &Path, diffs: &mut Vec<String>) -> Result<()> {
    let (na, nb) = (names(a)?, names(b)?);
    for n in na.iter().filter(|n| !nb.contains(n)) {
        diffs.push(format!(
            "{}: only in {}",
            rel.join(n).display(),
            a.display()
        ));
    }
    for n in nb.iter().filter(|n| !na.contains(n)) {
        diffs.push(format!(
            "{}: only in {}",
            rel.join(n).display(),
            b.display()
        ));
    }
    for n in na.iter().filter(|n| nb.contains(n)) {
        let (pa, pb, r) = (a.join(n), b.join(n), rel.join(n));
        let ma = fs::symlink_metadata(&pa).map_err(|e| Error::io(&pa, e))?;
        let mb = fs::symlink_metadata(&pb).map_err(|e| Error::io(&pb, e))?;
        if ma.file_type() != mb.file_type() {
            diffs.push(format!("{}: type differs", r.display()));
        } else if ma.is_dir() {
            compare_into(&pa, &pb, &r, diffs)?;
        } else if ma.is_file() {
            let ca = fs::read(&pa).map_err(|e| Error::io(&pa, e))?;
            let cb = fs::read(&pb).map_err(|e| Error::io(&pb, e))?;
            if ca != cb {
                diffs.push(format!("{}: content differs", r.display()));
            }
            if ma.mode() != mb.mode() {
                diffs.push(format!(
                    "{}: mode {:o} vs {:o}",
                    r.display(),
                    ma.mode(),
                    mb.mode()
                ));
            }
            if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
                diffs.push(format!("{}: mtime differs", r.display()));
            }
        } else if ma.file_type().is_symlink() {
            let ta = fs::read_link(&pa).map_err(|e| Error::io(&pa, e))?;
            let tb = fs::read_link(&pb).map_err(|e| Error::io(&pb, e))?;
            if ta != tb {
                diffs.push(format!("{}: link target differs", r.display()));
            }
        }
    }
    Ok(())
}

/// The diff step: what the last backup changed, file by file and record
/// by record.
fn last_day_changes(
    repo: &crate::repository::IndexedRepository,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    let Ok((nid, new)) = repo.find_snapshot("latest", Some("demo-stockflow")) else {
        return Ok(());
    };
    let Ok((oid, old)) = repo.find_snapshot("latest~1", Some("demo-stockflow")) else {
        return Ok(());
    };
    let st = crate::commands::diff::diff(repo, &old.tree, &new.tree, &mut |_| Ok(()))?;
    say(&format!(
        "diff {} {}: {} files modified, {} added, {} removed; {:.2} MB in chunks the day before lacks (stored as deltas, far less)",
        oid.short(),
        nid.short(),
        st.files_modified,
        st.files_added,
        st.files_removed,
        st.bytes_added as f64 / 1e6
    ));
    for t in crate::commands::rowdiff::record_changes(repo, &old.tree, &new.tree)? {
        say(&format!(
            "  {}: {} added, {} removed, {} changed (by {})",
            t.table, t.added, t.removed, t.changed, t.key
        ));
    }
    Ok(())
}

/// The single-record step: the history of a recent order of the first day
/// whose status changed since, its newest version checked against the
/// source's row.
fn record_history(
    repo: &crate::repository::IndexedRepository,
    src: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    use crate::commands::records::{find, history, RecordQuery, Version};
    let mut snaps: Vec<_> = repo
        .snapshots()?
        .into_iter()
        .filter(|(_, s)| s.account == "demo-stockflow")
        .collect();
    snaps.sort_by_key(|(_, s)| (s.time, s.nanos));
    let Some((_, first)) = snaps.first() else {
        return Ok(());
    };
    let all = RecordQuery {
        table: "orders".into(),
        conditions: Vec::new(),
    };
    let mut ids = Vec::new();
    find(repo, &first.tree, &all, &NoProgress, &mut |m| {
        ids.push(m.fields[0].1.clone());
        Ok(())
    })?;
    for id in ids.iter().rev().take(200) {
        let q = RecordQuery {
            table: "orders".into(),
            conditions: vec![("id".into(), id.clone())],
        };
        let mut versions: Vec<Version> = Vec::new();
        history(repo, &snaps, &q, &NoProgress, &mut |v| {
            versions.push(v.clone());
            Ok(())
        })?;
        let [.., last] = versions.as_slice() else {
            continue;
        };
        if versions.len() < 2 {
            continue;
        }
        say(&format!(
            "single records: order {id} through {} snapshots, {} versions:",
            snaps.len(),
            versions.len()
        ));
        for v in &versions {
            let row = v
                .records
                .first()
                .map(|r| String::from_utf8_lossy(r).trim_end().to_string())
                .unwrap_or_else(|| "(no record)".into());
            say(&format!("  {}  {row}", format_time(v.time, 0)));
        }
        let source = fs::read_to_string(src.join("orders.csv")).map_err(|e| Error::io(src, e))?;
        let want = source
            .lines()
            .find(|l| l.split(',').next() == Some(id.as_str()));
        let got = last
            .records
            .first()
            .map(|r| String::from_utf8_lossy(r).trim_end().to_string());
        if want.map(str::to_string) != got {
            return Err(Error::Invalid(format!(
                "order {id}: its newest version differs from the source's row"
            )));
        }
        say("verified: the newest version is the source's row");
        return Ok(());
    }
    Err(Error::Invalid(
        "no order of the first day changed in the days after".into(),
    ))
}

/// Runs the demo, reporting each step through `say`. Fails if the restored
/// data differs from the source or check finds damage.
pub fn run(opts: &DemoOptions, say: &mut dyn FnMut(&str)) -> Result<()> {
    if opts.dir.exists()
        && fs::read_dir(&opts.dir)
            .map_err(|e| Error::io(&opts.dir, e))?
            .next()
            .is_some()
    {
        return Err(Error::Invalid(format!(
            "{} is not empty; give `arca demo --dir` a new directory",
            opts.dir.display()
        )));
    }
    let src = opts.dir.join("account");
    let repo_dir = opts.dir.join("repo");
    let restored = opts.dir.join("restored");
    let cache = opts.dir.join("cache");
    say(&format!("arca demo in {}", opts.dir.display()));
    let repo = Repository::init(
        Arc::new(LocalBackend::new(&repo_dir)),
        opts.password.as_bytes(),
        &InitOptions::default(),
    )?;
    say(&format!(
        "created repository {} (id {})",
        repo_dir.display(),
        repo.config().id.short()
    ));
    let repo = repo.open_index(&cache)?;
    let gopts = gen::GenOptions {
        scale: opts.scale,
        ..gen::GenOptions::default()
    };
    for day in 0..opts.days {
        let g = gen::generate_day(&src, day, &gopts).map_err(|e| Error::io(&src, e))?;
        let time = gen::export_time(day);
        let out = backup(
            &repo,
            &BackupOptions {
                paths: vec![src.clone()],
                account: "demo-stockflow".into(),
                tags: vec!["daily".into()],
                time: Some((time, 0)),
                ..BackupOptions::default()
            },
            &NoProgress,
        )?;
        let s = &out.snapshot.summary;
        say(&format!(
            "day {day}: {} files, {:.1} MB generated; snapshot {} at {}: {} new, {} changed, {} unchanged files; {:.2} MB added, {:.2} MB stored, {} ms",
            g.files,
            g.bytes as f64 / 1e6,
            out.id.short(),
            format_time(time, 0),
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.bytes_added as f64 / 1e6,
            s.bytes_stored as f64 / 1e6,
            s.duration_ms
        ));
    }
    say("");
    say(&table(&list(&repo, &Filter::default())?));
    let (id, latest) = repo.find_snapshot("latest", Some("demo-stockflow"))?;
    let st = restore(
        &repo,
        &latest.tree,
        &RestoreOptions {
            target: restored.clone(),
            ..RestoreOptions::default()
        },
        &NoProgress,
    )?;
    say(&format!(
        "restored snapshot {} into {}: {} files, {:.1} MB",
        id.short(),
        restored.display(),
        st.files,
        st.bytes as f64 / 1e6
    ));
    let diffs = compare_dirs(&src, &restored)?;
    if !diffs.is_empty() {
        return Err(Error::Invalid(format!(
            "restore differs from the source:\n{}",
            diffs.join("\n")
        )));
    }
    say("verified: the restored tree is identical to the source (content, modes, mtimes)");
    last_day_changes(&repo, say)?;
    record_history(&repo, &src, say)?;
    let rep = check(&repo, ReadData::All, &NoProgress)?;
    if !rep.ok() {
        return Err(Error::corrupt("demo repository", rep.errors.join("\n")));
    }
    say(&format!(
        "check --read-data: no errors ({} snapshots, {} trees, {} data blobs, {} packs, {:.1} MB read)",
        rep.snapshots,
        rep.trees,
        rep.data_blobs,
        rep.packs_read,
        rep.bytes_read as f64 / 1e6
    ));
    let stored: u64 = repo
        .backend()
        .list(crate::backend::FileKind::Pack)?
        .iter()
        .map(|l| l.size)
        .sum();
    say(&format!(
        "repository: {:.1} MB in packs for {} days of about {:.1} MB each",
        stored as f64 / 1e6,
        opts.days,
        latest.summary.total_bytes as f64 / 1e6
    ));
    Ok(())
}
