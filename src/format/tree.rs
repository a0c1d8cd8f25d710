//! Trees (format-spec.md §9): one directory's entries, stored as a blob of
//! kind tree. Entries are sorted by name bytes and names are unique.
//!
//! Body: entry count u32 ‖ per entry: name (u32 length ‖ bytes) ‖ type u8 ‖
//! mode u32 ‖ mtime seconds i64 ‖ mtime nanos u32 ‖ uid u32 ‖ gid u32 ‖ size
//! u64 ‖ inode u64 ‖ then by type: file: chunk count u32 ‖ blob ids [32]…;
//! dir: subtree id [32]; symlink: target (u32 length ‖ bytes).

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::format::limits;
use crate::id::BlobId;

/// What a tree entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A regular file and its content chunks, in order.
    File {
        /// Data blob ids.
        chunks: Vec<BlobId>,
    },
    /// A directory and its tree.
    Dir {
        /// Tree blob id.
        tree: BlobId,
    },
    /// A symbolic link.
    Symlink {
        /// The link target, as bytes.
        target: Vec<u8>,
    },
}

/// One entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// File name bytes (one path component, no '/', not "." or "..").
    pub name: Vec<u8>,
    /// Unix mode bits (permissions and type bits as in st_mode).
    pub mode: u32,
    /// Modification time, unix seconds.
    pub mtime: i64,
    /// Modification time, nanoseconds part.
    pub mtime_nanos: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files), 0 otherwise.
    pub size: u64,
    /// Inode number at backup time, used to detect unchanged files.
    pub inode: u64,
    /// Type and content.
    pub kind: NodeKind,
}

impl Node {
    /// The name as UTF-8 (lossy), for messages.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A directory's entries, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// Entries in name order.
    pub nodes: Vec<Node>,
}

const TYPE_FILE: u8 = 1;
const TYPE_DIR: u8 = 2;
const TYPE_SYMLINK: u8 = 3;

/// Checks a name is one safe path component: restore joins it under the
/// target, so "..", "." , "/" and NUL would let a crafted tree escape it.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// Encodes the tree; the caller keeps nodes sorted and names unique.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.nodes.len() as u32);
        for n in &self.nodes {
            w.bytes(&n.name);
            let ty = match n.kind {
                NodeKind::File { .. } => TYPE_FILE,
                NodeKind::Dir { .. } => TYPE_DIR,
                NodeKind::Symlink { .. } => TYPE_SYMLINK,
            };
            w.u8(ty);
            w.u32(n.mode);
            w.i64(n.mtime);
            w.u32(n.mtime_nanos);
            w.u32(n.uid);
            w.u32(n.gid);
            w.u64(n.size);
            w.u64(n.inode);
            match &n.kind {
                NodeKind::File { chunks } => {
                    w.u32(chunks.len() as u32);
                    for c in chunks {
                        w.raw(&c.0);
                    }
                }
                NodeKind::Dir { tree } => w.raw(&tree.0),
                NodeKind::Symlink { target } => w.bytes(target),
            }
        }
        w.buf
    }

    /// Decodes a tree, checking limits, name safety, order and uniqueness.
    pub fn decode(body: &[u8], what: &str) -> Result<Self> {
        let mut r = Reader::new(body, what);
        let n = r.count(limits::MAX_TREE_ENTRIES, 50)?;
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.bytes(limits::MAX_NAME)?.to_vec();
            if !valid_name(&name) {
                return Err(Error::corrupt(
                    what,
                    format!("unsafe entry name {:?}", String::from_utf8_lossy(&name)),
                ));
            }
            if let Some(prev) = nodes.last() {
                if prev.name >= name {
                    return Err(Error::corrupt(what, "entries not sorted or names repeated"));
                }
            }
            let ty = r.u8()?;
            let mode = r.u32()?;
            let mtime = r.i64()?;
            let mtime_nanos = r.u32()?;
            let uid = r.u32()?;
            let gid = r.u32()?;
            let size = r.u64()?;
            let inode = r.u64()?;
            let kind = match ty {
                TYPE_FILE => {
                    let c = r.count(limits::MAX_FILE_CHUNKS, 32)?;
                    let mut chunks = Vec::with_capacity(c);
                    for _ in 0..c {
                        chunks.push(BlobId(r.array()?));
                    }
                    NodeKind::File { chunks }
                }
                TYPE_DIR => NodeKind::Dir {
                    tree: BlobId(r.array()?),
                },
                TYPE_SYMLINK => NodeKind::Symlink {
                    target: r.bytes(limits::MAX_NAME)?.to_vec(),
                },
                other => return Err(Error::corrupt(what, format!("unknown entry type {other}"))),
            };
            nodes.push(Node {
                name,
                mode,
                mtime,
                mtime_nanos,
                uid,
                gid,
                size,
                inode,
                kind,
            });
        }
        r.finish()?;
        Ok(Tree { nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, kind: NodeKind) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            mode: 0o100644,
            mtime: 1,
            mtime_nanos: 2,
            uid: 3,
            gid: 4,
            size: 5,
            inode: 6,
            kind,
        }
    }

    proptest::proptest! {
        #[test]
        fn any_tree_round_trips(names in proptest::collection::btree_set("[a-zA-Z0-9._-]{1,40}", 0..30),
                                chunks in proptest::collection::vec(proptest::arbitrary::any::<[u8; 32]>(), 0..5),
                                mtime in proptest::arbitrary::any::<i64>()) {
            let nodes: Vec<Node> = names
                .into_iter()
                .filter(|n| valid_name(n.as_bytes()))
                .enumerate()
                .map(|(i, n)| {
                    let kind = match i % 3 {
                        0 => NodeKind::File { chunks: chunks.iter().map(|c| BlobId(*c)).collect() },
                        1 => NodeKind::Dir { tree: BlobId([i as u8; 32]) },
                        _ => NodeKind::Symlink { target: n.as_bytes().to_vec() },
                    };
                    Node { mtime, ..node(&n, kind) }
                })
                .collect();
            let t = Tree { nodes };
            proptest::prop_assert_eq!(Tree::decode(&t.encode(), "t").unwrap(), t);
        }
    }

    #[test]
    fn round_trip() {
        let t = Tree {
            nodes: vec![
                node(
                    "a.csv",
                    NodeKind::File {
                        chunks: vec![BlobId([1; 32])],
                    },
                ),
                node(
                    "b",
                    NodeKind::Dir {
                        tree: BlobId([2; 32]),
                    },
                ),
                node(
                    "c",
                    NodeKind::Symlink {
                        target: b"a.csv".to_vec(),
                    },
                ),
            ],
        };
        let b = t.encode();
        assert_eq!(Tree::decode(&b, "t").unwrap(), t);
        for n in 0..b.len() {
            assert!(Tree::decode(&b[..n], "t").is_err());
        }
    }

    #[test]
    fn refuses_escaping_and_unsorted_names() {
        for bad in ["..", ".", "a/b"] {
            let t = Tree {
                nodes: vec![node(
                    bad,
                    NodeKind::Dir {
                        tree: BlobId([2; 32]),
                    },
                )],
            };
            assert!(Tree::decode(&t.encode(), "t").is_err(), "{bad}");
        }
        let t = Tree {
            nodes: vec![
                node(
                    "b",
                    NodeKind::Dir {
                        tree: BlobId([2; 32]),
                    },
                ),
                node(
                    "a",
                    NodeKind::Dir {
                        tree: BlobId([2; 32]),
                    },
                ),
            ],
        };
        assert!(Tree::decode(&t.encode(), "t").is_err());
    }
}
