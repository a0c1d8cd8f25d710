//! `arca tag`: change the tags of existing snapshots, for example to put a
//! snapshot on legal hold (`forget --keep-tag legal` then keeps it).
//!
//! A snapshot file is sealed and named by its bytes, so new tags make a new
//! snapshot file with a new id: it is written (durably) first, and the old
//! file is removed only then. A kill in between leaves both, the same
//! snapshot with the old and the new tags. Running the command again on
//! the old id finishes the job: a snapshot that differs only by already
//! having the new tags is taken as the new one, and only the old one is
//! removed.

use crate::backend::FileKind;
use crate::commands::check_interrupt;
use crate::error::{Error, Result};
use crate::format::config::Operation;
use crate::format::snapshot::Snapshot;
use crate::format::ObjectType;
use crate::id::SnapshotId;
use crate::repository::Repository;

/// How to change the tags.
#[derive(Clone, Debug, Default)]
pub struct TagChange {
    /// Replace every tag with these (applied first).
    pub set: Option<Vec<String>>,
    /// Tags to add.
    pub add: Vec<String>,
    /// Tags to remove.
    pub remove: Vec<String>,
}

impl TagChange {
    /// The tags `old` becomes: sorted and unique, as snapshots store them
    /// (format-spec.md §8).
    pub fn apply(&self, old: &[String]) -> Vec<String> {
        let mut tags: Vec<String> = self.set.clone().unwrap_or_else(|| old.to_vec());
        tags.extend(self.add.iter().cloned());
        tags.retain(|t| !self.remove.contains(t));
        tags.sort();
        tags.dedup();
        tags
    }

    fn is_empty(&self) -> bool {
        self.set.is_none() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// What happened to one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Retagged {
    /// The snapshot's id before.
    pub old: String,
    /// Its id now (the same when its tags did not change).
    pub new: String,
    /// Its tags now.
    pub tags: Vec<String>,
    /// Whether the tags changed.
    pub changed: bool,
}

/// Applies `change` to each of `snapshots`. The caller holds an exclusive
/// lock, so that no other command replaces or removes them meanwhile.
pub fn tag(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    change: &TagChange,
) -> Result<Vec<Retagged>> {
    repo.check_features(Operation::Write)?;
    if change.is_empty() {
        return Err(Error::Invalid(
            "give the tags to --add, --remove or --set".into(),
        ));
    }
    let all = repo.snapshots()?;
    let mut out = Vec::with_capacity(snapshots.len());
    for (id, snap) in snapshots {
        check_interrupt()?;
        let tags = change.apply(&snap.tags);
        if tags == snap.tags {
            out.push(Retagged {
                old: id.to_hex(),
                new: id.to_hex(),
                tags,
                changed: false,
            });
            continue;
        }
        let mut next = snap.clone();
        next.tags = tags.clone();
        next.validate()?;
        // A copy left by an interrupted run is the new snapshot already.
        let new = match all.iter().find(|(o, s)| o != id && *s == next) {
            Some((o, _)) => *o,
            // New first, durably; only then the old one goes.
            None => repo.write_object(FileKind::Snapshot, ObjectType::Snapshot, &next.encode())?,
        };
        repo.backend().remove(FileKind::Snapshot, &id.to_hex())?;
        out.push(Retagged {
            old: id.to_hex(),
            new: new.to_hex(),
            tags,
            changed: true,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn changes_apply_sorted_without_duplicates() {
        let old = v(&["daily", "eu"]);
        let add = |a: &[&str]| TagChange {
            add: v(a),
            ..TagChange::default()
        };
        assert_eq!(add(&["legal"]).apply(&old), v(&["daily", "eu", "legal"]));
        assert_eq!(
            add(&["eu", "x", "x", "a"]).apply(&old),
            v(&["a", "daily", "eu", "x"])
        );
        let rm = TagChange {
            remove: v(&["daily", "absent"]),
            ..TagChange::default()
        };
        assert_eq!(rm.apply(&old), v(&["eu"]));
        let set = TagChange {
            set: Some(v(&["b", "a", "a"])),
            add: v(&["c"]),
            remove: v(&["b"]),
        };
        assert_eq!(set.apply(&old), v(&["a", "c"]));
        assert_eq!(
            TagChange {
                set: Some(vec![]),
                ..TagChange::default()
            }
            .apply(&old),
            Vec::<String>::new()
        );
    }

    fn sample() -> (tempfile::TempDir, crate::repository::IndexedRepository) {
        use crate::commands::backup::{backup, BackupOptions};
        let tmp = tempfile::tempdir().unwrap();
        let repo =
            crate::testutil::memory_repo(&tmp.path().join("cache"), Default::default()).unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.csv"), b"id\n1\n").unwrap();
        for t in [1_000, 2_000] {
            backup(
                &repo,
                &BackupOptions {
                    paths: vec![src.clone()],
                    account: "acme".into(),
                    tags: v(&["daily"]),
                    time: Some((t, 0)),
                    ..BackupOptions::default()
                },
                &crate::commands::NoProgress,
            )
            .unwrap();
        }
        (tmp, repo)
    }

    #[test]
    fn a_retagged_snapshot_replaces_the_old_one() {
        let (_t, repo) = sample();
        let before = repo.snapshots().unwrap();
        let legal = TagChange {
            add: v(&["legal"]),
            ..TagChange::default()
        };
        let r = tag(&repo, &before[..1], &legal).unwrap();
        assert!(r[0].changed && r[0].new != r[0].old, "{r:?}");
        let after = repo.snapshots().unwrap();
        assert_eq!(after.len(), 2);
        let (id, s) = &after[0];
        assert_eq!(id.to_hex(), r[0].new);
        assert_eq!(s.tags, v(&["daily", "legal"]));
        let mut want = before[0].1.clone();
        want.tags = s.tags.clone();
        assert_eq!(*s, want, "only the tags changed");
        assert_eq!(after[1], before[1]);
        // Nothing to change: the snapshot keeps its id.
        let again = tag(&repo, &after[..1], &legal).unwrap();
        assert_eq!((again[0].changed, &again[0].new), (false, &r[0].new));
        assert_eq!(repo.snapshots().unwrap(), after);
        assert!(tag(&repo, &after, &TagChange::default()).is_err());
    }

    #[test]
    fn a_run_killed_between_write_and_remove_is_finished_by_the_next() {
        let (_t, repo) = sample();
        let before = repo.snapshots().unwrap();
        let (old_id, old) = &before[0];
        // As a killed run leaves it: the new copy written, the old not removed.
        let mut copy = old.clone();
        copy.tags = v(&["daily", "legal"]);
        let copy_id = repo
            .write_object(FileKind::Snapshot, ObjectType::Snapshot, &copy.encode())
            .unwrap();
        assert_eq!(repo.snapshots().unwrap().len(), 3);
        let legal = TagChange {
            add: v(&["legal"]),
            ..TagChange::default()
        };
        let r = tag(&repo, &before[..1], &legal).unwrap();
        assert_eq!(
            (r[0].old.as_str(), r[0].new.as_str()),
            (old_id.to_hex().as_str(), copy_id.to_hex().as_str())
        );
        let after = repo.snapshots().unwrap();
        assert_eq!(after.len(), 2, "no second copy");
        assert!(after
            .iter()
            .any(|(i, s)| *i == copy_id && s.tags == copy.tags));
        assert!(!after.iter().any(|(i, _)| i == old_id));
    }
}
