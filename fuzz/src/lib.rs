//! Bodies of arca's fuzz targets, one `pub fn NAME(data: &[u8])` per target
//! in `fuzz_targets/NAME.rs`, so they also run on stable Rust without
//! libFuzzer: a smoke test calls them on mutated valid inputs.
//!
//! Contract of every body: any input may be refused with an error, none may
//! panic, and whatever decodes must re-encode to an equal value (and, where
//! the encoding is canonical, to the same bytes). A failed `assert!` here is
//! a bug in arca, not in the harness.
//!
//! This file is written to work both as the root of the `arca-fuzz` crate and
//! as a module included from another crate that depends on `arca`:
//!
//! ```ignore
//! #[path = "../fuzz/src/lib.rs"]
//! mod fuzz_bodies;
//! ```
//!
//! so it uses only `arca::` and `std::` paths (never `crate::`) and no
//! crate-level attributes.
//!
//! Fixed keys: `MasterSecrets::from_bytes(&[7; 96]).keys()` and the KEK
//! `[9; 32]`. Nonces of the sealed objects built here are fixed too, so
//! [`seeds`] is byte-for-byte deterministic.

#![allow(dead_code)]

use std::sync::OnceLock;

use arca::codec::{Reader, Writer};
use arca::crypto::{self, KdfParams, Keys, MasterSecrets, Secret32, NONCE_LEN};
use arca::format::config::{ChunkerParams, Config};
use arca::format::indexfile::{self, PackListing};
use arca::format::keyfile::{self, KeyInfo};
use arca::format::lockfile::LockRecord;
use arca::format::pack::{
    self, blob_aad, open_blob, read_trailer, seal_blob, trailer_aad, trailer_location, BlobEntry,
    ENCODING_RAW, ENCODING_ZSTD, END_MAGIC, ENTRY_LEN, FOOTER_LEN,
};
use arca::format::snapshot::{Snapshot, Summary};
use arca::format::tree::{Node, NodeKind, Tree};
use arca::format::{header, limits, BlobKind, ObjectType, HEADER_LEN};
use arca::id::{BlobId, FileId, RepoId};

/// A target body.
pub type Body = fn(&[u8]);

/// Every target: name (as in `fuzz_targets/NAME.rs`) and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("pack_trailer", pack_trailer),
    ("blob_open", blob_open),
    ("tree_decode", tree_decode),
    ("snapshot_decode", snapshot_decode),
    ("keyfile", keyfile),
    ("index_file", index_file),
    ("config", config),
    ("lock_decode", lock_decode),
    ("chunker", chunker),
];

/// The fixed master secrets every target uses.
pub fn master() -> MasterSecrets {
    MasterSecrets::from_bytes(&[7u8; 96]).expect("96 bytes are valid master secrets")
}

/// The working keys of [`master`], derived once.
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| master().keys())
}

/// The fixed key-encryption key of the `keyfile` target (no Argon2 per input).
pub fn kek() -> Secret32 {
    Secret32::from_bytes([9u8; 32])
}

/// The nonce of every object sealed by this harness.
const NONCE: [u8; NONCE_LEN] = [0x5a; NONCE_LEN];

/// Pack id passed to `open_blob` (only used in messages).
const PACK: FileId = FileId([0; 32]);

fn le_u16(b: &[u8]) -> u16 {
    let mut a = [0u8; 2];
    a.copy_from_slice(&b[..2]);
    u16::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// `header ‖ zeros(area) ‖ seal(file key, trailer aad, body) ‖ footer`: a
/// pack whose trailer plaintext is `body`, so that the entry parser behind
/// the AEAD is reached.
fn pack_around(area: usize, body: &[u8]) -> Vec<u8> {
    let sealed = crypto::seal_with_nonce(&keys().file, &NONCE, &trailer_aad(), body)
        .expect("sealing with a fixed nonce");
    let mut p = header(ObjectType::Pack).to_vec();
    p.resize(HEADER_LEN + area, 0);
    p.extend_from_slice(&sealed);
    p.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    p.extend_from_slice(&END_MAGIC);
    p
}

/// Target `pack_trailer`.
///
/// 1. The input as a whole pack: `read_trailer` with the fixed file key.
/// 2. Its last 8 bytes as a footer: `trailer_location`, against the input's
///    length and against a pack length taken from its first 8 bytes.
/// 3. `u16 area ‖ body`: `body` sealed as the trailer of a pack with `area`
///    bytes of blob area, then `read_trailer`; accepted entries must lie in
///    the blob area in order, and re-encode to exactly `body`.
pub fn pack_trailer(data: &[u8]) {
    let k = keys();
    if let Ok(entries) = read_trailer(&k.file, data, "fuzz") {
        check_entries(&entries, data.len() as u64);
    }

    if data.len() >= FOOTER_LEN {
        let footer = &data[data.len() - FOOTER_LEN..];
        let mut lens = vec![data.len() as u64];
        if data.len() >= 8 {
            lens.push(le_u64(data));
        }
        for pack_len in lens {
            if let Ok((off, len)) = trailer_location(footer, pack_len, "fuzz") {
                assert!(off >= HEADER_LEN as u64, "trailer overlaps the header");
                assert_eq!(
                    off + u64::from(len) + FOOTER_LEN as u64,
                    pack_len,
                    "trailer and footer must end the pack"
                );
                assert!(len <= limits::MAX_TRAILER);
            }
        }
    }

    if data.len() >= 2 {
        let area = usize::from(le_u16(data));
        let body = &data[2..];
        let pack_bytes = pack_around(area, body);
        if let Ok(entries) = read_trailer(&k.file, &pack_bytes, "fuzz") {
            check_entries(&entries, pack_bytes.len() as u64);
            let mut w = Writer::new();
            w.u32(entries.len() as u32);
            for e in &entries {
                e.encode(&mut w);
            }
            assert_eq!(w.buf, body, "trailer body encoding is canonical");
            // encode_trailer (random nonce) must read back the same entries.
            let mut again = header(ObjectType::Pack).to_vec();
            again.resize(HEADER_LEN + area, 0);
            again.extend_from_slice(
                &pack::encode_trailer(&k.file, &entries).expect("encode_trailer"),
            );
            let back = read_trailer(&k.file, &again, "fuzz").expect("re-encoded trailer reads");
            assert_eq!(back, entries, "trailer round trip");
        }
    }
}

/// Entries accepted from a pack of `pack_len` bytes lie in its blob area, in
/// order, without overlap, within the limits.
fn check_entries(entries: &[BlobEntry], pack_len: u64) {
    let mut next = HEADER_LEN as u64;
    for e in entries {
        let start = u64::from(e.offset);
        let end = start + u64::from(e.length);
        assert!(start >= next, "entries overlap or are out of order");
        assert!(
            end <= pack_len - FOOTER_LEN as u64,
            "entry runs past the trailer"
        );
        assert!(e.length <= limits::MAX_BLOB_STORED && e.raw_length <= limits::MAX_BLOB_RAW);
        next = end;
    }
    assert!(entries.len() <= limits::MAX_PACK_BLOBS as usize);
}

/// Target `blob_open`. The first byte picks a mode (mod 3):
///
/// * 0: `entry (45 bytes, as in a trailer) ‖ sealed blob bytes`: `open_blob`
///   on the bytes as stored (stops at the AEAD unless they are a real blob);
/// * 1: `entry ‖ payload`: the payload (encoding byte ‖ data) is sealed under
///   the fixed blob key and the entry's kind and id, then opened, so the zstd
///   and length/hash checks behind the AEAD are reached;
/// * 2: `plaintext`: `seal_blob` then `open_blob` must give it back.
pub fn blob_open(data: &[u8]) {
    let k = keys();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 | 1 => {
            if rest.len() < ENTRY_LEN {
                return;
            }
            let (head, tail) = rest.split_at(ENTRY_LEN);
            // Entries only ever come from decoded trailers and index files.
            let mut r = Reader::new(head, "fuzz entry");
            let Ok(entry) = BlobEntry::decode(&mut r) else {
                return;
            };
            let sealed;
            let bytes = if mode % 3 == 0 {
                tail
            } else {
                sealed = crypto::seal_with_nonce(
                    &k.blob,
                    &NONCE,
                    &blob_aad(entry.kind, &entry.id, entry.delta.as_ref()),
                    tail,
                )
                .expect("sealing with a fixed nonce");
                &sealed[..]
            };
            if let Ok(plain) = open_blob(
                k,
                &entry,
                bytes,
                &PACK,
                entry.delta.map(|_| &b"id,name\n1,a\n"[..]),
            ) {
                assert_eq!(plain.len(), entry.raw_length as usize);
                assert_eq!(k.blob_id(&plain), entry.id);
            }
        }
        _ => {
            let kind = if mode & 0x80 == 0 {
                BlobKind::Data
            } else {
                BlobKind::Tree
            };
            let id = k.blob_id(rest);
            let s = seal_blob(k, kind, id, rest, 3).expect("seal_blob");
            assert_eq!(s.raw_length as usize, rest.len());
            assert!(s.bytes.len() <= rest.len() + 1 + crypto::SEAL_OVERHEAD);
            let entry = BlobEntry {
                kind,
                id,
                offset: HEADER_LEN as u32,
                length: s.bytes.len() as u32,
                raw_length: s.raw_length,
                delta: None,
            };
            let plain =
                open_blob(k, &entry, &s.bytes, &PACK, None).expect("open what seal_blob sealed");
            assert_eq!(plain, rest, "seal/open round trip");
        }
    }
}

/// Target `tree_decode`: a decoded tree has safe, sorted, unique names and
/// re-encodes to the same bytes (the encoding is canonical).
pub fn tree_decode(data: &[u8]) {
    let Ok(t) = Tree::decode(data, "fuzz") else {
        return;
    };
    for w in t.nodes.windows(2) {
        assert!(w[0].name < w[1].name, "names sorted and unique");
    }
    for n in &t.nodes {
        assert!(arca::format::tree::valid_name(&n.name), "safe name");
    }
    let enc = t.encode();
    assert_eq!(enc, data, "tree encoding is canonical");
    let again = Tree::decode(&enc, "fuzz").expect("re-encoded tree decodes");
    assert_eq!(again, t, "tree round trip");
}

/// Target `snapshot_decode`: a decoded snapshot re-encodes to a body that
/// decodes to an equal snapshot. (Not byte-canonical: readers ignore summary
/// fields past those they know and default missing ones.)
pub fn snapshot_decode(data: &[u8]) {
    let Ok(s) = Snapshot::decode(data, "fuzz") else {
        return;
    };
    assert!(s.nanos < 1_000_000_000);
    let enc = s.encode();
    let again = Snapshot::decode(&enc, "fuzz").expect("re-encoded snapshot decodes");
    assert_eq!(again, s, "snapshot round trip");
    assert_eq!(again.encode(), enc, "snapshot re-encoding is stable");
}

/// Target `keyfile`: `decode_info` and `open_with_kek` with the fixed KEK
/// (never Argon2). A decoded clear part re-encodes to the same bytes, and a
/// key file rebuilt from it opens with the KEK.
pub fn keyfile(data: &[u8]) {
    let kek = kek();
    let _ = keyfile::open_with_kek(data, &kek, "fuzz");
    let Ok((info, at)) = keyfile::decode_info(data, "fuzz") else {
        return;
    };
    assert!(at <= data.len());
    assert!(info.kdf.validate().is_ok());
    let m = master();
    let rebuilt = keyfile::encode_with_kek(&info, &kek, &m).expect("encode_with_kek");
    assert_eq!(
        &rebuilt[..at],
        &data[..at],
        "key file clear part is canonical"
    );
    let (info2, at2) = keyfile::decode_info(&rebuilt, "fuzz").expect("rebuilt key file decodes");
    assert_eq!((info2, at2), (info, at), "key info round trip");
    let opened = keyfile::open_with_kek(&rebuilt, &kek, "fuzz").expect("rebuilt key file opens");
    assert_eq!(opened.to_bytes().as_slice(), m.to_bytes().as_slice());
}

/// Target `index_file`: a decoded index file body re-encodes to the same
/// bytes and decodes again to equal listings.
pub fn index_file(data: &[u8]) {
    let Ok(packs) = indexfile::decode(data, "fuzz") else {
        return;
    };
    for p in &packs {
        assert!(p.length <= limits::MAX_PACK_SIZE);
    }
    let enc = indexfile::encode(&packs);
    assert_eq!(enc, data, "index file encoding is canonical");
    let again = indexfile::decode(&enc, "fuzz").expect("re-encoded index decodes");
    assert_eq!(again, packs, "index file round trip");
}

/// Target `config`: a decoded config re-encodes to the same bytes and
/// decodes again to an equal config; its chunker parameters build a chunker.
pub fn config(data: &[u8]) {
    let Ok(c) = Config::decode(data) else {
        return;
    };
    let enc = c.encode();
    assert_eq!(enc, data, "config encoding is canonical");
    let again = Config::decode(&enc).expect("re-encoded config decodes");
    assert_eq!(again, c, "config round trip");
    for op in [
        arca::format::config::Operation::Read,
        arca::format::config::Operation::Write,
        arca::format::config::Operation::Prune,
    ] {
        let _ = c.check_features(op);
    }
    arca::chunk::Chunker::new(c.chunker, keys().gear_table()).expect("decoded params are valid");
}

/// Target `lock_decode`: a decoded lock re-encodes to the same bytes.
pub fn lock_decode(data: &[u8]) {
    let Ok(l) = LockRecord::decode(data, "fuzz") else {
        return;
    };
    assert_eq!(l.encode(), data, "lock encoding is canonical");
    let again = LockRecord::decode(&l.encode(), "fuzz").expect("re-encoded lock decodes");
    assert_eq!(again, l);
}

/// Target `chunker`: `min u32 ‖ avg u32 ‖ max u32 ‖ normalization u8 ‖ block
/// u16 ‖ content`. Parameters that validate (as a config's would) build a
/// chunker whose chunks cover the content exactly, respect min and max, and
/// are the same whether cut from the whole buffer or streamed in blocks.
pub fn chunker(data: &[u8]) {
    if data.len() < 15 {
        return;
    }
    let mut r = Reader::new(data, "fuzz");
    let (Ok(min), Ok(avg), Ok(max), Ok(normalization), Ok(block)) =
        (r.u32(), r.u32(), r.u32(), r.u8(), r.u16())
    else {
        return;
    };
    let content = &data[15..];
    let params = ChunkerParams {
        min,
        avg,
        max,
        normalization,
    };
    let Ok(c) = arca::chunk::Chunker::new(params, keys().gear_table()) else {
        return;
    };
    let lens = c.chunk_lengths(content);
    assert_eq!(
        lens.iter().sum::<usize>(),
        content.len(),
        "chunks cover the input"
    );
    assert!(
        lens.iter().all(|&n| n >= 1 && n <= max as usize),
        "max respected"
    );
    if let Some((_, init)) = lens.split_last() {
        assert!(init.iter().all(|&n| n >= min as usize), "min respected");
    }
    let mut streamed = Vec::new();
    let mut joined = Vec::new();
    let total = c
        .stream(content, usize::from(block), |b, l| {
            joined.extend_from_slice(b);
            streamed.extend_from_slice(l);
            Ok(())
        })
        .expect("streaming from memory");
    assert_eq!(total, content.len() as u64);
    assert_eq!(joined, content);
    assert_eq!(
        streamed, lens,
        "streamed boundaries equal whole-buffer ones"
    );
}

// ---------------------------------------------------------------------------
// Seeds and mutations, for the stable smoke test and the libFuzzer corpus.
// ---------------------------------------------------------------------------

fn node(name: &str, kind: NodeKind) -> Node {
    Node {
        name: name.as_bytes().to_vec(),
        mode: 0o100644,
        mtime: 1_709_258_400,
        mtime_nanos: 123,
        uid: 1000,
        gid: 1000,
        size: 4096,
        inode: 77,
        kind,
    }
}

fn sample_tree() -> Tree {
    Tree {
        nodes: vec![
            node(
                "clients.csv",
                NodeKind::File {
                    chunks: vec![BlobId([1; 32]), BlobId([2; 32])],
                },
            ),
            node("empty.csv", NodeKind::File { chunks: Vec::new() }),
            node(
                "latest",
                NodeKind::Symlink {
                    target: b"../day-1".to_vec(),
                },
            ),
            node(
                "sub",
                NodeKind::Dir {
                    tree: BlobId([3; 32]),
                },
            ),
        ],
    }
}

fn sample_snapshot(parent: bool, fields: usize) -> Vec<u8> {
    let s = Snapshot {
        time: 1_709_258_400,
        nanos: 999_999_999,
        account: "acme".into(),
        host: "backup-1".into(),
        program: "arca 0.1.0".into(),
        tags: vec!["daily".into(), "day-0".into()],
        paths: vec!["/data/acme".into()],
        tree: BlobId([4; 32]),
        parent: parent.then_some(FileId([5; 32])),
        summary: Summary {
            files_new: 9,
            bytes_read: 1 << 20,
            errors: 1,
            ..Summary::default()
        },
    };
    let mut enc = s.encode();
    if fields != 12 {
        // Rewrite the summary with another field count (older/newer writers).
        let at = enc.len() - 4 - 12 * 8;
        enc.truncate(at);
        enc.extend_from_slice(&(fields as u32).to_le_bytes());
        for i in 0..fields {
            enc.extend_from_slice(&(i as u64).to_le_bytes());
        }
    }
    enc
}

fn entries() -> Vec<BlobEntry> {
    vec![
        BlobEntry {
            kind: BlobKind::Data,
            id: BlobId([6; 32]),
            offset: HEADER_LEN as u32,
            length: 100,
            raw_length: 1000,
            delta: None,
        },
        BlobEntry {
            kind: BlobKind::Tree,
            id: BlobId([7; 32]),
            offset: HEADER_LEN as u32 + 100,
            length: 41,
            raw_length: 0,
            delta: None,
        },
    ]
}

fn trailer_body(entries: &[BlobEntry]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(entries.len() as u32);
    for e in entries {
        e.encode(&mut w);
    }
    w.buf
}

/// A real blob sealed with the fixed keys and nonce: (entry, sealed bytes,
/// payload before sealing).
fn real_blob(
    kind: BlobKind,
    plain: &[u8],
    compress: bool,
    offset: u32,
) -> (BlobEntry, Vec<u8>, Vec<u8>) {
    let k = keys();
    let id = k.blob_id(plain);
    let mut payload = Vec::new();
    if compress {
        payload.push(ENCODING_ZSTD);
        payload.extend_from_slice(&zstd_frame(plain));
    } else {
        payload.push(ENCODING_RAW);
        payload.extend_from_slice(plain);
    }
    let sealed = crypto::seal_with_nonce(&k.blob, &NONCE, &blob_aad(kind, &id, None), &payload)
        .expect("sealing with a fixed nonce");
    let entry = BlobEntry {
        kind,
        id,
        offset,
        length: sealed.len() as u32,
        raw_length: plain.len() as u32,
        delta: None,
    };
    (entry, sealed, payload)
}

/// A zstd frame of `plain`, as `seal_blob` makes (via a sealed blob opened
/// back: arca-fuzz does not depend on zstd itself).
fn zstd_frame(plain: &[u8]) -> Vec<u8> {
    let k = keys();
    let id = k.blob_id(plain);
    let s = seal_blob(k, BlobKind::Data, id, plain, 3).expect("seal_blob");
    let payload = crypto::open(
        &k.blob,
        &blob_aad(BlobKind::Data, &id, None),
        &s.bytes,
        "seed",
    )
    .expect("open own blob");
    assert_eq!(payload[0], ENCODING_ZSTD, "seed plaintext must compress");
    payload[1..].to_vec()
}

fn csv_sample() -> Vec<u8> {
    let mut v = b"id,sku,name,quantity\n".to_vec();
    for i in 0..60u32 {
        v.extend_from_slice(
            format!("{i},SKU-{:05},Widget {},{}\n", i * 7, i % 9, i * 3).as_bytes(),
        );
    }
    v
}

fn entry_bytes(e: &BlobEntry) -> Vec<u8> {
    let mut w = Writer::new();
    e.encode(&mut w);
    w.buf
}

fn small_kdf() -> KeyInfo {
    KeyInfo {
        kdf: KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        },
        salt: [3; 32],
        created: 1_700_000_000,
        host: "backup-1".into(),
    }
}

/// Deterministic key file: `encode_with_kek` seals with a random nonce, so
/// the sealed part is redone here with the fixed one.
fn key_file(info: &KeyInfo) -> Vec<u8> {
    let kek = kek();
    let m = master();
    let f = keyfile::encode_with_kek(info, &kek, &m).expect("encode_with_kek");
    let at = f.len() - crypto::SEAL_OVERHEAD - 96;
    let mut out = f[..at].to_vec();
    let sealed = crypto::seal_with_nonce(&kek, &NONCE, &out, &m.to_bytes())
        .expect("sealing with a fixed nonce");
    out.extend_from_slice(&sealed);
    out
}

/// Valid inputs for `target` (empty for an unknown name): encodings of
/// typical values, edge values (empty lists, no parent, every node kind) and
/// inputs that reach the code behind each AEAD. Deterministic.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let k = keys();
    match target {
        "pack_trailer" => {
            let csv = csv_sample();
            let (e1, s1, _) = real_blob(BlobKind::Data, &csv, true, HEADER_LEN as u32);
            let (e2, s2, _) = real_blob(
                BlobKind::Tree,
                &sample_tree().encode(),
                false,
                e1.offset + e1.length,
            );
            let mut area = s1.clone();
            area.extend_from_slice(&s2);
            let full = {
                let body = trailer_body(&[e1, e2]);
                let sealed = crypto::seal_with_nonce(&k.file, &NONCE, &trailer_aad(), &body)
                    .expect("sealing with a fixed nonce");
                let mut p = header(ObjectType::Pack).to_vec();
                p.extend_from_slice(&area);
                p.extend_from_slice(&sealed);
                p.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
                p.extend_from_slice(&END_MAGIC);
                p
            };
            let empty_pack = pack_around(0, &trailer_body(&[]));
            let with_area = |area: u16, body: Vec<u8>| {
                let mut v = area.to_le_bytes().to_vec();
                v.extend_from_slice(&body);
                v
            };
            vec![
                full,
                empty_pack,
                with_area(200, trailer_body(&entries())),
                with_area(0, trailer_body(&[])),
                with_area(141, trailer_body(&entries())),
            ]
        }
        "blob_open" => {
            let csv = csv_sample();
            let tree = sample_tree().encode();
            let mut out = Vec::new();
            for (kind, plain, compress) in [
                (BlobKind::Data, &csv[..], true),
                (BlobKind::Data, &csv[..], false),
                (BlobKind::Tree, &tree[..], false),
                (BlobKind::Data, &b""[..], false),
            ] {
                let (e, sealed, payload) = real_blob(kind, plain, compress, HEADER_LEN as u32);
                let mut m0 = vec![0u8];
                m0.extend_from_slice(&entry_bytes(&e));
                m0.extend_from_slice(&sealed);
                out.push(m0);
                let mut m1 = vec![1u8];
                m1.extend_from_slice(&entry_bytes(&e));
                m1.extend_from_slice(&payload);
                out.push(m1);
            }
            let mut m2 = vec![2u8];
            m2.extend_from_slice(&csv);
            out.push(m2);
            let mut m2t = vec![0x82u8];
            m2t.extend_from_slice(&tree);
            out.push(m2t);
            out
        }
        "tree_decode" => vec![
            sample_tree().encode(),
            Tree::default().encode(),
            Tree {
                nodes: vec![node(
                    "x",
                    NodeKind::File {
                        chunks: vec![BlobId([9; 32])],
                    },
                )],
            }
            .encode(),
        ],
        "snapshot_decode" => vec![
            sample_snapshot(true, 12),
            sample_snapshot(false, 12),
            sample_snapshot(true, 0),
            sample_snapshot(false, 14),
        ],
        "keyfile" => {
            let mut long_host = small_kdf();
            long_host.host = "h".repeat(300);
            let mut default_kdf = small_kdf();
            default_kdf.kdf = KdfParams::DEFAULT;
            vec![
                key_file(&small_kdf()),
                key_file(&long_host),
                key_file(&default_kdf),
            ]
        }
        "index_file" => vec![
            indexfile::encode(&[
                PackListing {
                    id: FileId([8; 32]),
                    length: 4096,
                    blobs: entries(),
                },
                PackListing {
                    id: FileId([9; 32]),
                    length: 16,
                    blobs: Vec::new(),
                },
            ]),
            indexfile::encode(&[]),
        ],
        "config" => {
            let mut c = Config::new(RepoId([1; 32]));
            let plain = c.encode();
            c.features[2].push("future-thing".into());
            c.zstd_level = -5;
            c.chunker = ChunkerParams {
                min: 64,
                avg: 256,
                max: 1024,
                normalization: 3,
            };
            vec![plain, c.encode()]
        }
        "lock_decode" => vec![
            LockRecord {
                exclusive: true,
                host: "backup-1".into(),
                pid: 4242,
                time: 1_709_258_400,
                operation: "prune".into(),
                nonce: [1; 16],
            }
            .encode(),
            LockRecord {
                exclusive: false,
                host: String::new(),
                pid: 0,
                time: -1,
                operation: "backup".into(),
                nonce: [0; 16],
            }
            .encode(),
        ],
        "chunker" => {
            let mut out = Vec::new();
            let content = {
                let mut v = csv_sample();
                let copy = v.clone();
                for _ in 0..3 {
                    v.extend_from_slice(&copy);
                }
                v
            };
            for (min, avg, max, norm, block) in [
                (64u32, 256u32, 1024u32, 1u8, 0u16),
                (64, 256, 1024, 3, 1500),
                (256, 1024, 4096, 0, 5000),
                (1024, 1024, 1024, 2, 7),
            ] {
                let mut v = Vec::new();
                v.extend_from_slice(&min.to_le_bytes());
                v.extend_from_slice(&avg.to_le_bytes());
                v.extend_from_slice(&max.to_le_bytes());
                v.push(norm);
                v.extend_from_slice(&block.to_le_bytes());
                v.extend_from_slice(&content);
                out.push(v);
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Every (target, seed) pair.
pub fn all_seeds() -> Vec<(&'static str, Vec<u8>)> {
    TARGETS
        .iter()
        .flat_map(|(name, _)| seeds(name).into_iter().map(move |s| (*name, s)))
        .collect()
}

/// `n` deterministic mutations of `seed`: bit flips, interesting byte and
/// u32 values (0, 1, 0x7f.., 0x80.., 0xff..) written anywhere (hitting length
/// and count prefixes), truncations, insertions, deletions and duplicated
/// spans. `rng` seeds the choices.
pub fn mutations(seed: &[u8], n: usize, rng: u64) -> Vec<Vec<u8>> {
    let mut x =
        rng ^ 0x9E37_79B9_7F4A_7C15 ^ (seed.len() as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    const BYTES: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];
    const WORDS: [u32; 9] = [
        0,
        1,
        2,
        0x7f,
        0xff,
        0x1000,
        0x7fff_ffff,
        0x8000_0000,
        u32::MAX,
    ];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut v = seed.to_vec();
        let rounds = 1 + (next() % 3) as usize;
        for _ in 0..rounds {
            let len = v.len();
            let pos = if len == 0 {
                0
            } else {
                (next() % len as u64) as usize
            };
            match next() % 8 {
                0 if len > 0 => v[pos] ^= 1 << (next() % 8),
                1 if len > 0 => v[pos] = BYTES[(next() % BYTES.len() as u64) as usize],
                2 if len >= 4 => {
                    let p = pos.min(len - 4);
                    let w = WORDS[(next() % WORDS.len() as u64) as usize];
                    v[p..p + 4].copy_from_slice(&w.to_le_bytes());
                }
                3 => v.truncate(pos),
                4 => {
                    let b = (next() & 0xff) as u8;
                    v.insert(pos, b);
                }
                5 if len > 0 => {
                    let end = (pos + 1 + (next() % 8) as usize).min(len);
                    v.drain(pos..end);
                }
                6 if len > 0 => {
                    let end = (pos + 1 + (next() % 64) as usize).min(len);
                    let span = v[pos..end].to_vec();
                    let at = (next() % (len as u64 + 1)) as usize;
                    v.splice(at..at, span);
                }
                _ if len > 0 => {
                    let p = (next() % len as u64) as usize;
                    v[p] = v[p].wrapping_add(1);
                }
                _ => v.push(0),
            }
        }
        out.push(v);
    }
    out
}
