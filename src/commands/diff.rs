//! `arca diff`: what changed between two snapshots.
//!
//! Trees are compared in name order; a directory whose tree id is the same
//! in both is skipped without being read, so the cost follows what changed.
//! Each changed path is reported once: `+` added, `-` removed, `M` content
//! changed, `U` only metadata (mode, owner, time) changed, `T` type changed.
//! The totals also say how much data the newer snapshot references that
//! the older one does not (and the reverse), by unique chunks, which is what
//! keeping both costs in the repository.

use std::collections::HashSet;

use crate::commands::browse::{join, kind_name};
use crate::commands::check_interrupt;
use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// How a path changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the newer snapshot.
    Added,
    /// Only in the older snapshot.
    Removed,
    /// A file's content or a symlink's target changed.
    Modified,
    /// Same content; mode, owner or modification time changed.
    Metadata,
    /// A file became a directory, or the like.
    Type,
}

impl ChangeKind {
    /// The one-letter mark (`+ - M U T`).
    pub fn mark(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
            ChangeKind::Type => 'T',
        }
    }
}

/// One changed path.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// Path from the snapshots' root.
    pub path: String,
    /// How it changed.
    pub change: ChangeKind,
    /// `file`, `dir` or `symlink` in the newer snapshot (the older one for
    /// removals).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in the older snapshot (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_size: Option<u64>,
    /// Size in the newer snapshot (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_size: Option<u64>,
}

/// Totals of a diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiffStats {
    /// Files only in the newer snapshot.
    pub files_added: u64,
    /// Files only in the older snapshot.
    pub files_removed: u64,
    /// Files whose content changed.
    pub files_modified: u64,
    /// Paths with only metadata changed.
    pub metadata_changed: u64,
    /// Paths whose type changed.
    pub type_changed: u64,
    /// Directories only in the newer snapshot.
    pub dirs_added: u64,
    /// Directories only in the older snapshot.
    pub dirs_removed: u64,
    /// Unique data chunks the newer snapshot references and the older does not.
    pub chunks_added: u64,
    /// Their plaintext bytes.
    pub bytes_added: u64,
    /// Unique data chunks only the older snapshot references.
    pub chunks_removed: u64,
    /// Their plaintext bytes.
    pub bytes_removed: u64,
}

fn file_size(n: &Node) -> Option<u64> {
    matches!(n.kind, NodeKind::File { .. }).then_some(n.size)
}

struct Walk<'a, 'f> {
    repo: &'a IndexedRepository,
    f: &'f mut dyn FnMut(&Change) -> Result<()>,
    st: DiffStats,
    /// Data chunks of the files compared so far, per side.
    old_chunks: HashSet<BlobId>,
    new_chunks: HashSet<BlobId>,
}

/// Compares the snapshot trees `old` and `new`, handing each change to `f`
/// in path order, and returns the totals.
///
/// The chunk totals are exact: chunks of changed files are looked up in
/// the other snapshot's whole tree (its tree blobs only), and memory holds
/// the changed files' chunk ids.
pub fn diff(
    repo: &IndexedRepository,
    old: &BlobId,
    new: &BlobId,
    f: &mut dyn FnMut(&Change) -> Result<()>,
) -> Result<DiffStats> {
    let mut w = Walk {
        repo,
        f,
        st: DiffStats::default(),
        old_chunks: HashSet::new(),
        new_chunks: HashSet::new(),
    };
    w.trees("", Some(old), Some(new))?;
    // A chunk of a changed file may still be in an unchanged one of the
    // other snapshot: only what neither side's whole tree holds counts.
    let mut added: HashSet<BlobId> = w.new_chunks.difference(&w.old_chunks).copied().collect();
    let mut removed: HashSet<BlobId> = w.old_chunks.difference(&w.new_chunks).copied().collect();
    drop((w.old_chunks, w.new_chunks));
    if !added.is_empty() {
        each_chunk(repo, old, &mut |c| {
            added.remove(c);
        })?;
    }
    if !removed.is_empty() {
        each_chunk(repo, new, &mut |c| {
            removed.remove(c);
        })?;
    }
    let mut st = w.st;
    for id in &added {
        st.chunks_added += 1;
        st.bytes_added += raw_length(repo, id)?;
    }
    for id in &removed {
        st.chunks_removed += 1;
        st.bytes_removed += raw_length(repo, id)?;
    }
    Ok(st)
}

/// Every data chunk the tree references (a chunk once per reference).
fn each_chunk(repo: &IndexedRepository, tree: &BlobId, f: &mut dyn FnMut(&BlobId)) -> Result<()> {
    check_interrupt()?;
    for n in repo.read_tree(tree)?.nodes {
        match &n.kind {
            NodeKind::File { chunks } => chunks.iter().for_each(&mut *f),
            NodeKind::Dir { tree } => each_chunk(repo, tree, f)?,
            NodeKind::Symlink { .. } => {}
        }
    }
    Ok(())
}

fn raw_length(repo: &IndexedRepository, id: &BlobId) -> Result<u64> {
    match repo.cache().get(id)? {
        Some(l) => Ok(u64::from(l.entry.raw_length)),
        None => Err(Error::corrupt(
            format!("chunk {}", id.to_hex()),
            "a snapshot references it but no pack holds it (run `arca check`)",
        )),
    }
}

impl Walk<'_, '_> {
    fn emit(
        &mut self,
        path: String,
        change: ChangeKind,
        old: Option<&Node>,
        new: Option<&Node>,
    ) -> Result<()> {
        let shown = new.or(old).map_or("file", |n| kind_name(&n.kind));
        (self.f)(&Change {
            path,
            change,
            kind: shown,
            old_size: old.and_then(file_size),
            new_size: new.and_then(file_size),
        })
    }

    /// Compares two directories (either may be absent: everything in the
    /// other was added or removed).
    fn trees(&mut self, prefix: &str, old: Option<&BlobId>, new: Option<&BlobId>) -> Result<()> {
        check_interrupt()?;
        if old.is_some() && old == new {
            return Ok(());
        }
        let a = match old {
            Some(t) => self.repo.read_tree(t)?.nodes,
            None => Vec::new(),
        };
        let b = match new {
            Some(t) => self.repo.read_tree(t)?.nodes,
            None => Vec::new(),
        };
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.name.cmp(&y.name),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    self.one_side(prefix, &a[i], false)?;
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.one_side(prefix, &b[j], true)?;
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    self.both(prefix, &a[i], &b[j])?;
                    i += 1;
                    j += 1;
                }
            }
        }
        Ok(())
    }

    /// A node only one side has, with everything below it.
    fn one_side(&mut self, prefix: &str, n: &Node, added: bool) -> Result<()> {
        let path = join(prefix, &n.name);
        let (change, old, new) = if added {
            (ChangeKind::Added, None, Some(n))
        } else {
            (ChangeKind::Removed, Some(n), None)
        };
        self.emit(path.clone(), change, old, new)?;
        match &n.kind {
            NodeKind::File { chunks } => {
                let set = if added {
                    &mut self.new_chunks
                } else {
                    &mut self.old_chunks
                };
                set.extend(chunks.iter().copied());
                if added {
                    self.st.files_added += 1;
                } else {
                    self.st.files_removed += 1;
                }
            }
            NodeKind::Dir { tree } => {
                if added {
                    self.st.dirs_added += 1;
                    self.trees(&path, None, Some(tree))?;
                } else {
                    self.st.dirs_removed += 1;
                    self.trees(&path, Some(tree), None)?;
                }
            }
            NodeKind::Symlink { .. } => {}
        }
        Ok(())
    }

    fn both(&mut self, prefix: &str, a: &Node, b: &Node) -> Result<()> {
        let path = join(prefix, &a.name);
        let meta = a.mode != b.mode
            || a.uid != b.uid
            || a.gid != b.gid
            || (a.mtime, a.mtime_nanos) != (b.mtime, b.mtime_nanos);
        match (&a.kind, &b.kind) {
            (NodeKind::Dir { tree: x }, NodeKind::Dir { tree: y }) => {
                // A directory's own time changes with its content; only its
                // entries are reported.
                self.trees(&path, Some(x), Some(y))
            }
            (NodeKind::File { chunks: x }, NodeKind::File { chunks: y })
                if x != y || a.size != b.size =>
            {
                self.old_chunks.extend(x.iter().copied());
                self.new_chunks.extend(y.iter().copied());
                self.st.files_modified += 1;
                self.emit(path, ChangeKind::Modified, Some(a), Some(b))
            }
            (NodeKind::Symlink { target: x }, NodeKind::Symlink { target: y }) if x != y => {
                self.emit(path, ChangeKind::Modified, Some(a), Some(b))
            }
            (NodeKind::File { .. }, NodeKind::File { .. })
            | (NodeKind::Symlink { .. }, NodeKind::Symlink { .. }) => {
                if meta {
                    self.st.metadata_changed += 1;
                    self.emit(path, ChangeKind::Metadata, Some(a), Some(b))
                } else {
                    Ok(())
                }
            }
            _ => {
                self.st.type_changed += 1;
                self.emit(path.clone(), ChangeKind::Type, Some(a), Some(b))?;
                // What was below (or is now below) the directory side.
                if let NodeKind::Dir { tree } = &a.kind {
                    self.trees(&path, Some(tree), None)?;
                }
                if let NodeKind::Dir { tree } = &b.kind {
                    self.trees(&path, None, Some(tree))?;
                }
                if let NodeKind::File { chunks } = &a.kind {
                    self.old_chunks.extend(chunks.iter().copied());
                }
                if let NodeKind::File { chunks } = &b.kind {
                    self.new_chunks.extend(chunks.iter().copied());
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{backup_tree as snap, memory_repo, noise};
    use std::os::unix::fs::PermissionsExt;

    fn run(repo: &IndexedRepository, a: &BlobId, b: &BlobId) -> (Vec<(char, String)>, DiffStats) {
        let mut v = Vec::new();
        let st = diff(repo, a, b, &mut |c| {
            v.push((c.change.mark(), c.path.clone()));
            Ok(())
        })
        .unwrap();
        (v, st)
    }

    #[test]
    fn every_kind_of_change_is_reported_once_with_exact_data_totals() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = memory_repo(&tmp.path().join("cache"), Default::default()).unwrap();
        let src = tmp.path().join("src");
        let w = |p: &str, data: &[u8]| {
            let p = src.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        };
        let keep = noise(5_000, 1);
        w("a.csv", b"id\n1\n");
        w("d/b.bin", &noise(4_000, 2));
        w("d/keep.txt", &keep);
        w("same/s.txt", b"same");
        w("x", &noise(3_000, 3));
        w("y/f", &noise(2_000, 4));
        w("y/g/h", &noise(1_000, 5));
        let old = snap(&repo, &src);

        w("a.csv", b"id\n1\n2\n");
        std::fs::set_permissions(src.join("d/b.bin"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::remove_file(src.join("x")).unwrap();
        w("x/inner", &noise(700, 6));
        std::fs::remove_dir_all(src.join("y")).unwrap();
        // The same bytes as an unchanged file: no new data.
        w("n.txt", &keep);
        let new = snap(&repo, &src);

        let (changes, st) = run(&repo, &old, &new);
        let want: Vec<(char, String)> = [
            ('M', "a.csv"),
            ('U', "d/b.bin"),
            ('+', "n.txt"),
            ('T', "x"),
            ('+', "x/inner"),
            ('-', "y"),
            ('-', "y/f"),
            ('-', "y/g"),
            ('-', "y/g/h"),
        ]
        .iter()
        .map(|(c, p)| (*c, p.to_string()))
        .collect();
        assert_eq!(changes, want);
        assert_eq!(
            st,
            DiffStats {
                files_added: 2,
                files_removed: 2,
                files_modified: 1,
                metadata_changed: 1,
                type_changed: 1,
                dirs_added: 0,
                dirs_removed: 2,
                chunks_added: 2,
                bytes_added: 7 + 700,
                chunks_removed: 4,
                bytes_removed: 5 + 3_000 + 2_000 + 1_000,
            }
        );

        // The other way round, everything mirrors.
        let (back, rst) = run(&repo, &new, &old);
        assert_eq!(back.len(), changes.len());
        assert_eq!((rst.files_added, rst.files_removed), (2, 2));
        assert_eq!((rst.dirs_added, rst.dirs_removed), (2, 0));
        assert_eq!(
            (rst.bytes_added, rst.bytes_removed),
            (st.bytes_removed, st.bytes_added)
        );

        // A snapshot against itself: nothing, without reading a tree.
        assert_eq!(run(&repo, &new, &new), (vec![], DiffStats::default()));
    }
}
