//! `arca ls` and `arca dump`: look into a snapshot without restoring it.
//!
//! Paths are relative to the snapshot's root (`orders.csv`, `apps/crm`),
//! as `restore --include` takes them. `dump` writes one file's content as
//! stored, or a directory (the whole snapshot for `/`) as a tar archive,
//! reading chunks ahead in parallel as `export` does; every chunk is
//! verified against its id on the way.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::commands::export::{read_all, unwrap_io, Ctx};
use crate::commands::{check_interrupt, format_time, Progress};
use crate::error::{Error, Result};
use crate::export::SrcFile;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;
use crate::repository::IndexedRepository;

/// What a path of a snapshot names.
#[derive(Clone, Debug)]
pub enum Item {
    /// A directory: the root (empty path) or a directory node.
    Dir {
        /// The path, without a leading or trailing `/` (empty for the root).
        path: String,
        /// The directory's tree.
        tree: BlobId,
        /// Its node; `None` for the root.
        node: Option<Node>,
    },
    /// A file or a symlink.
    Leaf {
        /// The path.
        path: String,
        /// Its node.
        node: Node,
    },
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Finds `path` in the snapshot whose root tree is `root`: an empty path (or
/// `/`) is the root. A path that does not exist is [`Error::NotFound`].
pub fn lookup(repo: &IndexedRepository, root: &BlobId, path: &str) -> Result<Item> {
    let mut tree = *root;
    let mut node: Option<Node> = None;
    let mut walked = String::new();
    let mut parts = components(path).peekable();
    while let Some(part) = parts.next() {
        if part == ".." {
            return Err(Error::Invalid(format!(
                "{path:?}: a path in a snapshot cannot hold \"..\""
            )));
        }
        let nodes = repo.read_tree(&tree)?.nodes;
        let Ok(i) = nodes.binary_search_by(|n| n.name.as_slice().cmp(part.as_bytes())) else {
            return Err(not_found(path));
        };
        let found = nodes.into_iter().nth(i).ok_or_else(|| not_found(path))?;
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(part);
        match &found.kind {
            NodeKind::Dir { tree: t } => tree = *t,
            _ if parts.peek().is_some() => return Err(not_found(path)),
            _ => {
                return Ok(Item::Leaf {
                    path: walked,
                    node: found,
                })
            }
        }
        node = Some(found);
    }
    Ok(Item::Dir {
        path: walked,
        tree,
        node,
    })
}

fn not_found(path: &str) -> Error {
    Error::NotFound(format!("{path}: no such path in the snapshot"))
}

/// One entry as `ls` lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Path from the snapshot's root.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Size in bytes (files; 0 otherwise).
    pub size: u64,
    /// Unix mode (permission and type bits).
    pub mode: u32,
    /// The permission bits as `ls -l` shows them (`-rw-r--r--`).
    pub permissions: String,
    /// Modification time, RFC 3339 in UTC.
    pub mtime: String,
    /// Owner and group ids.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Content chunks (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<usize>,
    /// Link target (symlinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `file`, `dir` or `symlink`.
pub(crate) fn kind_name(kind: &NodeKind) -> &'static str {
    match kind {
        NodeKind::File { .. } => "file",
        NodeKind::Dir { .. } => "dir",
        NodeKind::Symlink { .. } => "symlink",
    }
}

/// `-rw-r--r--` for a mode and kind.
pub fn permissions(mode: u32, kind: &NodeKind) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        NodeKind::File { .. } => '-',
        NodeKind::Dir { .. } => 'd',
        NodeKind::Symlink { .. } => 'l',
    });
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let bit = 1 << (8 - i);
        let set = mode & bit != 0;
        // setuid, setgid and sticky show in the x columns.
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (set, special) {
            (true, false) => c,
            (false, false) => '-',
            (true, true) if i == 8 => 't',
            (false, true) if i == 8 => 'T',
            (true, true) => 's',
            (false, true) => 'S',
        });
    }
    s
}

/// The entry for `node` at `path`.
pub fn entry(path: String, node: &Node) -> Entry {
    let (chunks, target) = match &node.kind {
        NodeKind::File { chunks } => (Some(chunks.len()), None),
        NodeKind::Symlink { target } => (None, Some(String::from_utf8_lossy(target).into_owned())),
        NodeKind::Dir { .. } => (None, None),
    };
    Entry {
        path,
        kind: kind_name(&node.kind),
        size: node.size,
        mode: node.mode,
        permissions: permissions(node.mode, &node.kind),
        mtime: format_time(node.mtime, node.mtime_nanos),
        uid: node.uid,
        gid: node.gid,
        chunks,
        target,
    }
}

/// `prefix/name` (just `name` at the root), names shown lossily.
pub(crate) fn join(prefix: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if prefix.is_empty() {
        name.into_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Lists `path` of the snapshot whose root tree is `root`: a file or a
/// symlink is listed alone; a directory's entries are listed in name order,
/// with everything below them when `recursive` (each directory before its
/// content). Entries stream to `f`; memory is one tree per level.
pub fn ls(
    repo: &IndexedRepository,
    root: &BlobId,
    path: &str,
    recursive: bool,
    f: &mut dyn FnMut(&Entry) -> Result<()>,
) -> Result<()> {
    match lookup(repo, root, path)? {
        Item::Leaf { path, node } => f(&entry(path, &node)),
        Item::Dir { path, tree, .. } => list_dir(repo, &tree, &path, recursive, f),
    }
}

fn list_dir(
    repo: &IndexedRepository,
    tree: &BlobId,
    prefix: &str,
    recursive: bool,
    f: &mut dyn FnMut(&Entry) -> Result<()>,
) -> Result<()> {
    check_interrupt()?;
    for node in repo.read_tree(tree)?.nodes {
        let path = join(prefix, &node.name);
        f(&entry(path.clone(), &node))?;
        if let (true, NodeKind::Dir { tree }) = (recursive, &node.kind) {
            list_dir(repo, tree, &path, recursive, f)?;
        }
    }
    Ok(())
}

/// Name patterns for [`find`]: a pattern with a `/` is matched against the
/// whole path from the snapshot's root (`apps/*/records/page-0001*.json`,
/// `**/*.pdf`), any other against the entry's name (`*.pdf`, `orders.csv`).
/// `*` and `?` do not cross a `/`; `**` does; `--ignore-case` folds ASCII
/// case.
#[derive(Clone, Debug)]
pub struct Patterns {
    pats: Vec<(glob::Pattern, bool)>,
    opts: glob::MatchOptions,
}

impl Patterns {
    /// Compiles `patterns`; a malformed one is [`Error::Invalid`].
    pub fn new(patterns: &[String], ignore_case: bool) -> Result<Self> {
        let pats = patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p.trim_start_matches('/'))
                    .map(|g| (g, p.contains('/')))
                    .map_err(|e| Error::Invalid(format!("pattern {p:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Patterns {
            pats,
            opts: glob::MatchOptions {
                case_sensitive: !ignore_case,
                require_literal_separator: true,
                require_literal_leading_dot: false,
            },
        })
    }

    /// Whether the entry at `path` (named `name`) matches any pattern.
    pub fn matches(&self, path: &str, name: &str) -> bool {
        self.pats
            .iter()
            .any(|(g, whole)| g.matches_with(if *whole { path } else { name }, self.opts))
    }
}

/// Every entry of the tree `root` that `patterns` match, in path order.
/// `seen` remembers the matches below each directory already walked, so a
/// directory that several snapshots share at the same path is read once
/// across calls.
pub fn find(
    repo: &IndexedRepository,
    root: &BlobId,
    patterns: &Patterns,
    seen: &mut FindMemo,
) -> Result<std::rc::Rc<Vec<Entry>>> {
    find_in(repo, root, "", patterns, seen)
}

/// The matches below each (tree, path) already walked by [`find`].
pub type FindMemo = std::collections::HashMap<(BlobId, String), std::rc::Rc<Vec<Entry>>>;

fn find_in(
    repo: &IndexedRepository,
    tree: &BlobId,
    prefix: &str,
    patterns: &Patterns,
    seen: &mut FindMemo,
) -> Result<std::rc::Rc<Vec<Entry>>> {
    // By tree and place: the same tree at another path matches other
    // whole-path patterns, and its entries have other paths.
    let key = (*tree, prefix.to_string());
    if let Some(hit) = seen.get(&key) {
        return Ok(std::rc::Rc::clone(hit));
    }
    check_interrupt()?;
    let mut out = Vec::new();
    for node in repo.read_tree(tree)?.nodes {
        let path = join(prefix, &node.name);
        if patterns.matches(&path, &node.name_lossy()) {
            out.push(entry(path.clone(), &node));
        }
        if let NodeKind::Dir { tree } = &node.kind {
            out.extend(find_in(repo, tree, &path, patterns, seen)?.iter().cloned());
        }
    }
    let out = std::rc::Rc::new(out);
    seen.insert(key, std::rc::Rc::clone(&out));
    Ok(out)
}

/// What `dump` wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DumpStats {
    /// Files written (1 for a single file).
    pub files: u64,
    /// Content bytes written (without tar headers).
    pub bytes: u64,
    /// Whether the output is a tar archive (a directory was dumped).
    pub tar: bool,
}

/// Writes `path` of the snapshot to `out`: a file's content as stored, or a
/// directory (the root for an empty path) as a tar archive of everything
/// below it, named from the snapshot's root, with modes, owners and mtimes
/// as backed up. A symlink alone is refused: it has no content. `out_name`
/// names `out` in errors (write failures are [`Error::Io`]).
pub fn dump(
    repo: &IndexedRepository,
    root: &BlobId,
    path: &str,
    out: &mut dyn Write,
    out_name: &str,
    progress: &dyn Progress,
) -> Result<DumpStats> {
    let mut cx = Ctx {
        repo,
        progress,
        bytes_read: 0,
    };
    let mut st = DumpStats::default();
    match lookup(repo, root, path)? {
        Item::Leaf { node, path } => {
            let NodeKind::File { chunks } = &node.kind else {
                return Err(Error::Invalid(format!(
                    "{path} is a symlink: dump writes files and directories"
                )));
            };
            progress.set_total(node.size);
            let file = SrcFile {
                path: path.clone(),
                size: node.size,
                chunks: chunks.clone(),
            };
            let n = copy_file(&mut cx, &file, out, out_name)?;
            out.flush().map_err(|e| Error::io(out_name, e))?;
            st.files = 1;
            st.bytes = n;
        }
        Item::Dir { path, tree, node } => {
            st.tar = true;
            let mut tar = tar::Builder::new(out);
            tar.mode(tar::HeaderMode::Complete);
            if let Some(node) = &node {
                append_dir(&mut tar, &path, node, out_name)?;
            }
            dump_dir(&mut cx, &mut tar, &tree, &path, out_name, &mut st)?;
            let out = tar.into_inner().map_err(|e| Error::io(out_name, e))?;
            out.flush().map_err(|e| Error::io(out_name, e))?;
        }
    }
    Ok(st)
}

/// Copies a file's content to `out`, failing when the chunks do not add up
/// to the size the tree records.
fn copy_file(cx: &mut Ctx, file: &SrcFile, out: &mut dyn Write, out_name: &str) -> Result<u64> {
    let mut n = 0u64;
    cx.with_reader(file, &mut |r| {
        read_all(r, &file.path, &mut |b| {
            n += b.len() as u64;
            out.write_all(b).map_err(|e| Error::io(out_name, e))
        })
    })?;
    if n != file.size {
        return Err(size_mismatch(file, n));
    }
    Ok(n)
}

fn size_mismatch(file: &SrcFile, n: u64) -> Error {
    Error::corrupt(
        &file.path,
        format!(
            "its chunks hold {n} bytes but the tree records {}",
            file.size
        ),
    )
}

/// A failed write, or the reader's own error carried through it.
fn write_error(e: std::io::Error, out_name: &str) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        return unwrap_io(e, out_name);
    }
    Error::io(out_name, e)
}

fn header(node: &Node, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(node.mode & 0o7777);
    h.set_uid(u64::from(node.uid));
    h.set_gid(u64::from(node.gid));
    h.set_mtime(node.mtime.max(0) as u64);
    h.set_size(size);
    h
}

fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    node: &Node,
    out_name: &str,
) -> Result<()> {
    let mut h = header(node, tar::EntryType::Directory, 0);
    tar.append_data(&mut h, Path::new(path), std::io::empty())
        .map_err(|e| Error::io(out_name, e))
}

fn dump_dir<W: Write>(
    cx: &mut Ctx,
    tar: &mut tar::Builder<W>,
    tree: &BlobId,
    prefix: &str,
    out_name: &str,
    st: &mut DumpStats,
) -> Result<()> {
    check_interrupt()?;
    for node in cx.repo.read_tree(tree)?.nodes {
        let path = if prefix.is_empty() {
            Path::new(OsStr::from_bytes(&node.name)).to_path_buf()
        } else {
            Path::new(prefix).join(OsStr::from_bytes(&node.name))
        };
        let shown = path.to_string_lossy().into_owned();
        match &node.kind {
            NodeKind::Dir { tree } => {
                append_dir(tar, &shown, &node, out_name)?;
                dump_dir(cx, tar, tree, &shown, out_name, st)?;
            }
            NodeKind::Symlink { target } => {
                let mut h = header(&node, tar::EntryType::Symlink, 0);
                tar.append_link(&mut h, &path, Path::new(OsStr::from_bytes(target)))
                    .map_err(|e| Error::io(out_name, e))?;
            }
            NodeKind::File { chunks } => {
                let file = SrcFile {
                    path: shown,
                    size: node.size,
                    chunks: chunks.clone(),
                };
                let mut h = header(&node, tar::EntryType::Regular, node.size);
                let mut n = 0u64;
                cx.with_reader(&file, &mut |r| {
                    // Never more than the header promised, and a short
                    // file is caught below: either would shift every
                    // later entry of the archive.
                    let mut counted = Counted {
                        inner: (&mut *r).take(file.size),
                        n: &mut n,
                    };
                    tar.append_data(&mut h, &path, &mut counted)
                        .map_err(|e| write_error(e, out_name))?;
                    let mut more = [0u8; 1];
                    if r.read(&mut more).map_err(|e| unwrap_io(e, &file.path))? > 0 {
                        n = file.size + 1;
                    }
                    Ok(())
                })?;
                if n != file.size {
                    return Err(size_mismatch(&file, n));
                }
                st.files += 1;
                st.bytes += n;
            }
        }
    }
    Ok(())
}

struct Counted<'a, R> {
    inner: R,
    n: &'a mut u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        *self.n += k as u64;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::NoProgress;
    use crate::format::BlobKind;
    use crate::session::WriteSession;
    use crate::testutil::{noise, small_chunk_repo};
    use std::os::unix::fs::PermissionsExt;

    /// A snapshot of: a.csv, d/b.bin (several chunks, mode 0600),
    /// d/e/c.txt and the symlink d/l -> ../a.csv.
    fn sample() -> (tempfile::TempDir, IndexedRepository, BlobId) {
        let tmp = tempfile::tempdir().unwrap();
        let repo = small_chunk_repo(&tmp.path().join("cache")).unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("d/e")).unwrap();
        std::fs::write(src.join("a.csv"), b"id,name\n1,a\n").unwrap();
        std::fs::write(src.join("d/b.bin"), noise(300_000, 7)).unwrap();
        std::fs::set_permissions(src.join("d/b.bin"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(src.join("d/e/c.txt"), b"c").unwrap();
        std::os::unix::fs::symlink("../a.csv", src.join("d/l")).unwrap();
        let tree = crate::testutil::backup_tree(&repo, &src);
        (tmp, repo, tree)
    }

    fn listed(
        repo: &IndexedRepository,
        root: &BlobId,
        path: &str,
        rec: bool,
    ) -> Result<Vec<Entry>> {
        let mut v = Vec::new();
        ls(repo, root, path, rec, &mut |e| {
            v.push(e.clone());
            Ok(())
        })?;
        Ok(v)
    }

    fn paths(v: &[Entry]) -> Vec<&str> {
        v.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn ls_walks_in_name_order_and_resolves_paths() {
        let (_t, repo, root) = sample();
        let all = listed(&repo, &root, "", true).unwrap();
        assert_eq!(
            paths(&all),
            ["a.csv", "d", "d/b.bin", "d/e", "d/e/c.txt", "d/l"]
        );
        assert_eq!(
            paths(&listed(&repo, &root, "/", false).unwrap()),
            ["a.csv", "d"]
        );
        assert_eq!(
            paths(&listed(&repo, &root, "d/", false).unwrap()),
            ["d/b.bin", "d/e", "d/l"]
        );
        let b = listed(&repo, &root, "./d/b.bin", true).unwrap();
        assert_eq!(b.len(), 1);
        let b = &b[0];
        assert_eq!(
            (b.kind, b.size, b.permissions.as_str()),
            ("file", 300_000, "-rw-------")
        );
        assert!(b.chunks.unwrap() > 3, "{b:?}");
        let l = &all[5];
        assert_eq!((l.kind, l.target.as_deref()), ("symlink", Some("../a.csv")));
        assert_eq!(all[1].permissions.chars().next(), Some('d'));
        for missing in ["nope", "d/nope", "a.csv/x", "d/b.bin/x"] {
            let e = listed(&repo, &root, missing, true).unwrap_err();
            assert!(matches!(e, Error::NotFound(_)), "{missing}: {e}");
        }
        assert!(matches!(
            listed(&repo, &root, "d/../a.csv", true).unwrap_err(),
            Error::Invalid(_)
        ));
    }

    #[test]
    fn find_matches_names_or_whole_paths_and_reuses_walked_trees() {
        let (_t, repo, root) = sample();
        let mut memo = FindMemo::new();
        let run = |p: &[&str], i: bool| -> Vec<String> {
            let pats: Vec<String> = p.iter().map(|x| x.to_string()).collect();
            let pats = Patterns::new(&pats, i).unwrap();
            find(&repo, &root, &pats, &mut FindMemo::new())
                .unwrap()
                .iter()
                .map(|e| e.path.clone())
                .collect()
        };
        assert_eq!(run(&["*.csv"], false), ["a.csv"]);
        assert_eq!(run(&["d/*"], false), ["d/b.bin", "d/e", "d/l"]);
        assert_eq!(run(&["**/c.txt"], false), ["d/e/c.txt"]);
        assert_eq!(run(&["/d/e"], false), ["d/e"]);
        assert_eq!(run(&["*.BIN"], false), Vec::<String>::new());
        assert_eq!(run(&["*.BIN", "c.*"], true), ["d/b.bin", "d/e/c.txt"]);
        assert!(Patterns::new(&["[".to_string()], false).is_err());
        // A second walk of the same tree comes from the memo.
        let pats = Patterns::new(&["*".to_string()], false).unwrap();
        let a = find(&repo, &root, &pats, &mut memo).unwrap();
        let b = find(&repo, &root, &pats, &mut memo).unwrap();
        assert!(std::rc::Rc::ptr_eq(&a, &b));
        assert_eq!(a.len(), 6);
    }

    #[test]
    fn permission_strings() {
        let f = NodeKind::File { chunks: vec![] };
        let d = NodeKind::Dir {
            tree: BlobId([0; 32]),
        };
        assert_eq!(permissions(0o100644, &f), "-rw-r--r--");
        assert_eq!(permissions(0o40755, &d), "drwxr-xr-x");
        assert_eq!(permissions(0o4755, &f), "-rwsr-xr-x");
        assert_eq!(permissions(0o2640, &f), "-rw-r-S---");
        assert_eq!(permissions(0o1777, &d), "drwxrwxrwt");
        assert_eq!(permissions(0o1776, &d), "drwxrwxrwT");
    }

    #[test]
    fn dump_writes_a_file_as_stored_and_a_directory_as_tar() {
        let (t, repo, root) = sample();
        let src = t.path().join("src");
        let mut out = Vec::new();
        let st = dump(&repo, &root, "d/b.bin", &mut out, "out", &NoProgress).unwrap();
        assert_eq!(out, std::fs::read(src.join("d/b.bin")).unwrap());
        assert_eq!((st.files, st.bytes, st.tar), (1, 300_000, false));

        for (path, want) in [
            (
                "",
                vec!["a.csv", "d/", "d/b.bin", "d/e/", "d/e/c.txt", "d/l"],
            ),
            ("d/e", vec!["d/e/", "d/e/c.txt"]),
        ] {
            let mut out = Vec::new();
            let st = dump(&repo, &root, path, &mut out, "out", &NoProgress).unwrap();
            assert!(st.tar);
            let mut ar = tar::Archive::new(out.as_slice());
            let mut names = Vec::new();
            for e in ar.entries().unwrap() {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let h = e.header().clone();
                match h.entry_type() {
                    tar::EntryType::Regular => {
                        let mut data = Vec::new();
                        e.read_to_end(&mut data).unwrap();
                        assert_eq!(data, std::fs::read(src.join(&name)).unwrap(), "{name}");
                        let meta = std::fs::metadata(src.join(&name)).unwrap();
                        assert_eq!(h.mode().unwrap(), meta.permissions().mode() & 0o7777);
                        use std::os::unix::fs::MetadataExt;
                        assert_eq!(h.mtime().unwrap() as i64, meta.mtime());
                        names.push(name);
                    }
                    tar::EntryType::Directory => {
                        names.push(format!("{}/", name.trim_end_matches('/')))
                    }
                    tar::EntryType::Symlink => {
                        assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("../a.csv"));
                        names.push(name);
                    }
                    other => panic!("{name}: {other:?}"),
                }
            }
            assert_eq!(names, want, "dump of {path:?}");
            if path.is_empty() {
                assert_eq!(st.files, 3);
                assert_eq!(st.bytes, 300_000 + 12 + 1);
            }
        }

        let e = dump(&repo, &root, "d/l", &mut Vec::new(), "out", &NoProgress).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        let e = dump(&repo, &root, "x", &mut Vec::new(), "out", &NoProgress).unwrap_err();
        assert!(matches!(e, Error::NotFound(_)), "{e}");
    }

    /// A writer that fails once `room` bytes went through.
    struct Full {
        room: usize,
    }
    impl Write for Full {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone"));
            }
            let n = b.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_output_is_an_io_error_naming_it() {
        let (_t, repo, root) = sample();
        for path in ["d/b.bin", ""] {
            let e = dump(
                &repo,
                &root,
                path,
                &mut Full { room: 1000 },
                "the pipe",
                &NoProgress,
            )
            .unwrap_err();
            match e {
                Error::Io { path, source } => {
                    assert_eq!(path, std::path::PathBuf::from("the pipe"));
                    assert_eq!(source.kind(), std::io::ErrorKind::BrokenPipe);
                }
                other => panic!("{other}"),
            }
        }
    }

    #[test]
    fn a_tree_whose_size_disagrees_with_its_chunks_is_corrupt() {
        let (_t, repo, root) = sample();
        let mut tree = repo.read_tree(&root).unwrap();
        let i = tree.nodes.iter().position(|n| n.name == b"a.csv").unwrap();
        let real = tree.nodes[i].size;
        for (size, what) in [(real + 1, "short"), (real - 1, "long")] {
            tree.nodes[i].size = size;
            let mut s = WriteSession::start(&repo).unwrap();
            let (bad, _) = s.add_blob(BlobKind::Tree, &tree.encode()).unwrap();
            s.flush().unwrap();
            for path in ["a.csv", ""] {
                let e = dump(&repo, &bad, path, &mut Vec::new(), "out", &NoProgress).unwrap_err();
                assert!(matches!(e, Error::Corrupt { .. }), "{what} {path:?}: {e}");
            }
        }
    }
}
