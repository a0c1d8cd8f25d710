//! `arca copy --to LOCATION`: mirror the repository into another location
//! (a directory, or S3-compatible storage), for example to move to object
//! storage, or to keep an offsite replica in step.
//!
//! The mirror is the same repository, byte for byte: the same config, key
//! files and password, so every command works on it. Files are named by the
//! BLAKE3 of their bytes (format-spec.md §1), so each one read is checked
//! against its name before it is written, and a damaged source file is
//! never copied. Only files the destination lacks are sent, so a copy that
//! was interrupted resumes where it stopped, and a second copy sends only
//! what is new.
//!
//! Order: key files, packs, index files, export records, snapshots, and the
//! config last. A destination becomes a repository when its config appears,
//! so an interrupted first copy leaves no half repository that a command
//! would open; in a mirror that exists, a snapshot arrives only after every
//! file it needs. With `delete`, files the source no longer has (removed by
//! `forget` and `prune`) are removed from the mirror afterwards, in the
//! opposite order: snapshots first, packs last.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::backend::{Backend, FileKind, Listed};
use crate::commands::{check_interrupt, Progress};
use crate::error::{Error, Result};
use crate::id::FileId;

/// The kinds copied, in the order they are copied.
const ORDER: [FileKind; 6] = [
    FileKind::Key,
    FileKind::Pack,
    FileKind::Index,
    FileKind::Export,
    FileKind::Snapshot,
    FileKind::Config,
];

/// Packs are copied in pieces of this size.
const PIECE: u64 = 8 << 20;

/// What a copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    /// Files sent.
    pub copied: u64,
    /// Their bytes.
    pub bytes_copied: u64,
    /// Files the destination had already.
    pub present: u64,
    /// Files removed from the destination (with `delete`).
    pub deleted: u64,
    /// Whether the destination was a repository before (a mirror being
    /// brought up to date) rather than empty.
    pub existed: bool,
}

/// Mirrors every file of `src` into `dst` (see the module's documentation).
/// The caller holds a shared lock on the source, and an exclusive one on the
/// destination when it is a repository already.
pub fn copy(
    src: &dyn Backend,
    dst: &dyn Backend,
    delete: bool,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    copy_in_pieces(src, dst, delete, progress, PIECE)
}

fn copy_in_pieces(
    src: &dyn Backend,
    dst: &dyn Backend,
    delete: bool,
    progress: &dyn Progress,
    piece: u64,
) -> Result<CopyReport> {
    let mut rep = CopyReport::default();
    let src_config = src.read(FileKind::Config, "config")?;
    match dst.read(FileKind::Config, "config") {
        Ok(c) if c == src_config => rep.existed = true,
        Ok(_) => {
            return Err(Error::AlreadyExists(format!(
                "{} holds another repository; copy only mirrors into an empty location or into a mirror of this repository",
                dst.location()
            )))
        }
        Err(e) if crate::backend::is_not_found(&e) => dst.create()?,
        Err(e) => return Err(e),
    }
    let mut lists = Vec::new();
    let mut total = 0u64;
    for kind in ORDER {
        let have: HashMap<String, u64> = dst
            .list(kind)?
            .into_iter()
            .map(|l| (l.name, l.size))
            .collect();
        let want = src.list(kind)?;
        let mut send = Vec::new();
        for l in &want {
            match have.get(&l.name) {
                Some(&size) if size == l.size => rep.present += 1,
                Some(&size) => {
                    return Err(Error::corrupt(
                        format!("{} at {}", l.name, dst.location()),
                        format!(
                            "it holds {size} bytes where the source's file of that name holds {}; remove the damaged file from the destination and copy again",
                            l.size
                        ),
                    ))
                }
                None => {
                    total += l.size;
                    send.push(l.clone());
                }
            }
        }
        lists.push((kind, send, want, have));
    }
    progress.set_total(total);
    let copied = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    for (kind, send, _, _) in &lists {
        let damaged = |l: &Listed| {
            Error::corrupt(
                format!("{}/{} at {}", kind.dir(), l.name, src.location()),
                "its bytes do not hash to its name; run `arca check --read-data` on the source",
            )
        };
        let one = |l: &Listed| -> Result<()> {
            check_interrupt()?;
            if *kind == FileKind::Pack {
                // In pieces, under a temporary name that becomes the real
                // one only once the whole pack hashed to it: memory stays
                // at one piece per pack in flight, whatever the pack size.
                let mut up = dst.begin(FileKind::Pack)?;
                let mut h = blake3::Hasher::new();
                let mut at = 0u64;
                while at < l.size {
                    check_interrupt()?;
                    let n = piece.min(l.size - at);
                    let piece = src.read_range(FileKind::Pack, &l.name, at, n)?;
                    h.update(&piece);
                    up.write(&piece)?;
                    progress.inc(n);
                    at += n;
                }
                if FileId::from_hasher(&h).to_hex() != l.name {
                    return Err(damaged(l));
                }
                up.finish(&l.name)?()?;
            } else {
                let data = src.read(*kind, &l.name)?;
                if *kind != FileKind::Config && FileId::of(&data).to_hex() != l.name {
                    return Err(damaged(l));
                }
                dst.write(*kind, &l.name, &data)?;
                progress.inc(data.len() as u64);
            }
            copied.fetch_add(1, Ordering::Relaxed);
            bytes.fetch_add(l.size, Ordering::Relaxed);
            Ok(())
        };
        // Packs in parallel (their reads and writes wait on storage); the
        // other kinds are small.
        if *kind == FileKind::Pack {
            send.par_iter().try_for_each(one)?;
        } else {
            send.iter().try_for_each(one)?;
        }
    }
    rep.copied = copied.load(Ordering::Relaxed);
    rep.bytes_copied = bytes.load(Ordering::Relaxed);
    if delete {
        for (kind, _, want, have) in lists.iter().rev() {
            let keep: std::collections::HashSet<&str> =
                want.iter().map(|l| l.name.as_str()).collect();
            for name in have.keys().filter(|n| !keep.contains(n.as_str())) {
                check_interrupt()?;
                dst.remove(*kind, name)?;
                rep.deleted += 1;
            }
        }
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::commands::check::{check, ReadData};
    use crate::commands::prune::{prune, PruneOptions};
    use crate::commands::NoProgress;
    use crate::repository::{IndexedRepository, Repository};
    use crate::testutil::{backup_tree, memory_repo, noise};
    use std::sync::Arc;

    fn listing(b: &dyn Backend) -> Vec<(FileKind, Vec<Listed>)> {
        ORDER
            .iter()
            .map(|&k| {
                let mut v = b.list(k).unwrap();
                v.sort_by(|x, y| x.name.cmp(&y.name));
                (k, v)
            })
            .collect()
    }

    fn open(b: &Arc<dyn Backend>, cache: &std::path::Path) -> Result<IndexedRepository> {
        Repository::open(Arc::clone(b), b"pw")?.open_index(cache)
    }

    /// A source with two snapshots of a small account.
    fn source() -> (tempfile::TempDir, IndexedRepository) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = memory_repo(&tmp.path().join("cache"), Default::default()).unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.bin"), noise(3 << 20, 1)).unwrap();
        backup_tree(&repo, &src);
        std::fs::write(src.join("b.bin"), noise(1 << 20, 2)).unwrap();
        backup_tree(&repo, &src);
        (tmp, repo)
    }

    #[test]
    fn a_mirror_is_the_same_repository_and_follows_prune_with_delete() {
        let (tmp, repo) = source();
        let src = repo.backend().clone();
        let dst: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let r = copy(src.as_ref(), dst.as_ref(), false, &NoProgress).unwrap();
        assert!(!r.existed && r.copied > 5 && r.present == 0, "{r:?}");
        assert_eq!(listing(dst.as_ref()), listing(src.as_ref()));
        let mirror = open(&dst, &tmp.path().join("cache2")).unwrap();
        assert_eq!(mirror.snapshots().unwrap(), repo.snapshots().unwrap());
        assert!(check(&mirror, ReadData::All, &NoProgress).unwrap().ok());
        drop(mirror);

        // Nothing new: nothing sent.
        let again = copy(src.as_ref(), dst.as_ref(), false, &NoProgress).unwrap();
        assert_eq!((again.copied, again.existed), (0, true));

        // The source forgets its first snapshot and prunes; the mirror
        // follows with delete, and only then.
        let first = repo.snapshots().unwrap()[0].0;
        src.remove(FileKind::Snapshot, &first.to_hex()).unwrap();
        prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
        let kept = copy(src.as_ref(), dst.as_ref(), false, &NoProgress).unwrap();
        assert_eq!(kept.deleted, 0);
        assert_ne!(listing(dst.as_ref()), listing(src.as_ref()));
        let synced = copy(src.as_ref(), dst.as_ref(), true, &NoProgress).unwrap();
        assert!(synced.deleted > 0, "{synced:?}");
        assert_eq!(listing(dst.as_ref()), listing(src.as_ref()));
        let mirror = open(&dst, &tmp.path().join("cache3")).unwrap();
        assert_eq!(mirror.snapshots().unwrap().len(), 1);
        assert!(check(&mirror, ReadData::All, &NoProgress).unwrap().ok());
    }

    #[test]
    fn packs_copied_in_small_pieces_are_whole() {
        let (tmp, repo) = source();
        let src = repo.backend().clone();
        let dst: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        copy_in_pieces(src.as_ref(), dst.as_ref(), false, &NoProgress, 4093).unwrap();
        assert_eq!(listing(dst.as_ref()), listing(src.as_ref()));
        let packs = src.list(FileKind::Pack).unwrap();
        assert!(packs.iter().any(|l| l.size > 100 * 4093), "{packs:?}");
        for l in packs {
            assert_eq!(
                dst.read(FileKind::Pack, &l.name).unwrap(),
                src.read(FileKind::Pack, &l.name).unwrap()
            );
        }
        let mirror = open(&dst, &tmp.path().join("cache2")).unwrap();
        assert!(check(&mirror, ReadData::All, &NoProgress).unwrap().ok());
    }

    #[test]
    fn a_damaged_source_file_is_never_copied_and_no_half_repository_appears() {
        let (tmp, repo) = source();
        let src = repo.backend().clone();
        // Flip one byte of one pack, in place.
        let pack = src.list(FileKind::Pack).unwrap()[0].name.clone();
        let mut bytes = src.read(FileKind::Pack, &pack).unwrap();
        bytes[100] ^= 1;
        src.remove(FileKind::Pack, &pack).unwrap();
        src.write(FileKind::Pack, &pack, &bytes).unwrap();
        let dst: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let e = copy(src.as_ref(), dst.as_ref(), false, &NoProgress).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains(&pack), "{e}");
        assert!(dst
            .list(FileKind::Pack)
            .unwrap()
            .iter()
            .all(|l| l.name != pack));
        // Not a repository yet: the config comes last.
        assert!(dst.list(FileKind::Config).unwrap().is_empty());
        let e = open(&dst, &tmp.path().join("cache2")).err().unwrap();
        assert!(matches!(e, Error::NoRepository(_)), "{e}");
    }

    #[test]
    fn an_interrupted_copy_resumes_and_another_repository_is_refused() {
        let (tmp, repo) = source();
        let src = repo.backend().clone();
        let dst: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        // As a copy stopped after some packs leaves it.
        let packs = src.list(FileKind::Pack).unwrap();
        for l in &packs[..packs.len() / 2] {
            dst.write(
                FileKind::Pack,
                &l.name,
                &src.read(FileKind::Pack, &l.name).unwrap(),
            )
            .unwrap();
        }
        let r = copy(src.as_ref(), dst.as_ref(), false, &NoProgress).unwrap();
        assert_eq!(r.present, (packs.len() / 2) as u64);
        assert_eq!(listing(dst.as_ref()), listing(src.as_ref()));

        let other = memory_repo(&tmp.path().join("cache-o"), Default::default()).unwrap();
        let e = copy(src.as_ref(), other.backend().as_ref(), false, &NoProgress).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
    }
}
