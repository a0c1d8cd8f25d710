//! Checks the test vectors written in format-spec.md (§14) against the code.
//!
//! Every line of the spec of the form `vector NAME = HEX` must equal what
//! this file computes for NAME, and every vector computed here must appear in
//! the spec. Run with `ARCA_PRINT_VECTORS=1` to print the computed values.
//! Where a vector is a whole stored file, it is assembled here from the
//! spec's layout by hand, and then read back through the library's decoders,
//! so the spec, not the encoder, is what the bytes are checked against.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use arca::chunk::Chunker;
use arca::crypto::{self, context, KdfParams, MasterSecrets};
use arca::format::config::{ChunkerParams, Config};
use arca::format::exportrec::{ExportFile, ExportFormat, ExportRecord};
use arca::format::indexfile::{self, PackListing};
use arca::format::lockfile::LockRecord;
use arca::format::pack::{self, BlobEntry};
use arca::format::snapshot::{Snapshot, Summary};
use arca::format::tree::{Node, NodeKind, Tree};
use arca::format::{header, keyfile, BlobKind, ObjectType};
use arca::id::{BlobId, FileId, PackId, RepoId};

fn seq(start: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| start.wrapping_add(i as u8)).collect()
}

fn master() -> MasterSecrets {
    let mut b = seq(0x00, 32);
    b.extend(seq(0x20, 32));
    b.extend(seq(0x40, 32));
    MasterSecrets::from_bytes(&b).unwrap()
}

fn nonce(start: u8) -> [u8; 24] {
    seq(start, 24).try_into().unwrap()
}

/// The spec's deterministic test input (§14.1): xorshift64 from seed 1,
/// low byte of each step.
fn xorshift_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn compute() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let mut put = |k: &str, bytes: &[u8]| {
        v.insert(k.to_string(), hex::encode(bytes));
    };
    let m = master();
    let keys = m.keys();

    // §3.1 headers.
    for (n, t) in [
        ("key", ObjectType::Key),
        ("config", ObjectType::Config),
        ("pack", ObjectType::Pack),
        ("index", ObjectType::Index),
        ("snapshot", ObjectType::Snapshot),
        ("lock", ObjectType::Lock),
        ("export", ObjectType::Export),
    ] {
        put(&format!("header-{n}"), &header(t));
    }

    // §4.2 subkeys, recomputed from the context strings directly.
    put(
        "subkey-blob",
        &blake3::derive_key(context::BLOB_KEY, m.encryption.expose()),
    );
    put(
        "subkey-file",
        &blake3::derive_key(context::FILE_KEY, m.encryption.expose()),
    );
    put(
        "subkey-blob-id",
        &blake3::derive_key(context::BLOB_ID_KEY, m.blob_id.expose()),
    );
    put(
        "subkey-gear",
        &blake3::derive_key(context::GEAR_KEY, m.chunker.expose()),
    );
    assert_eq!(
        keys.blob.expose(),
        &blake3::derive_key(context::BLOB_KEY, m.encryption.expose())
    );
    assert_eq!(
        keys.file.expose(),
        &blake3::derive_key(context::FILE_KEY, m.encryption.expose())
    );

    // §4.3 blob ids and §11 gear table.
    put("blob-id-hello", keys.blob_id(b"hello arca").as_bytes());
    let gear = keys.gear_table();
    let mut g = Vec::new();
    for i in [0usize, 1, 255] {
        g.extend_from_slice(&gear[i].to_le_bytes());
    }
    put("gear-0-1-255", &g);

    // §11 chunk lengths of the test input with the default parameters.
    let chunker = Chunker::new(ChunkerParams::DEFAULT, gear).unwrap();
    let lens = chunker.chunk_lengths(&xorshift_bytes(4 << 20));
    let mut lb = Vec::new();
    for l in lens.iter().take(6) {
        lb.extend_from_slice(&(*l as u32).to_le_bytes());
    }
    put("chunk-lengths-first-6", &lb);

    // §4.4 sealing.
    let sealed = crypto::seal_with_nonce(&keys.file, &nonce(0x80), b"aad", b"plaintext").unwrap();
    put("seal-file-key", &sealed);

    // §6 a whole pack with one raw blob, assembled by hand.
    let id = keys.blob_id(b"hello arca");
    let mut aad = header(ObjectType::Pack).to_vec();
    aad.push(BlobKind::Data as u8);
    aad.extend_from_slice(id.as_bytes());
    let mut payload = vec![pack::ENCODING_RAW];
    payload.extend_from_slice(b"hello arca");
    let blob = crypto::seal_with_nonce(&keys.blob, &nonce(0x90), &aad, &payload).unwrap();
    let entry = BlobEntry {
        kind: BlobKind::Data,
        id,
        offset: 8,
        length: blob.len() as u32,
        raw_length: 10,
        delta: None,
    };
    let mut body = 1u32.to_le_bytes().to_vec();
    body.push(1);
    body.extend_from_slice(id.as_bytes());
    body.extend_from_slice(&8u32.to_le_bytes());
    body.extend_from_slice(&(blob.len() as u32).to_le_bytes());
    body.extend_from_slice(&10u32.to_le_bytes());
    let mut taad = header(ObjectType::Pack).to_vec();
    taad.extend_from_slice(b"trailer");
    let trailer = crypto::seal_with_nonce(&keys.file, &nonce(0xa0), &taad, &body).unwrap();
    let mut packfile = header(ObjectType::Pack).to_vec();
    packfile.extend_from_slice(&blob);
    packfile.extend_from_slice(&trailer);
    packfile.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
    packfile.extend_from_slice(b"APCK");
    put("pack-one-blob", &packfile);
    put("pack-one-blob-name", FileId::of(&packfile).as_bytes());
    // ... and the library reads it back.
    let entries = pack::read_trailer(&keys.file, &packfile, "vector").unwrap();
    assert_eq!(entries, vec![entry]);
    let pid: PackId = FileId::of(&packfile);
    assert_eq!(
        pack::open_blob(&keys, &entry, &packfile[8..8 + blob.len()], &pid, None).unwrap(),
        b"hello arca"
    );

    // §6.2 a zstd blob: the library must open it (encoding output depends on
    // the zstd version, so only decoding is pinned).
    let csv = b"id,name,qty\n1,widget,5\n2,widget,5\n3,widget,5\n4,widget,5\n".repeat(4);
    let zid = keys.blob_id(&csv);
    let mut zpayload = vec![pack::ENCODING_ZSTD];
    zpayload.extend_from_slice(&zstd::bulk::compress(&csv, 3).unwrap());
    let mut zaad = header(ObjectType::Pack).to_vec();
    zaad.push(BlobKind::Data as u8);
    zaad.extend_from_slice(zid.as_bytes());
    let zsealed = crypto::seal_with_nonce(&keys.blob, &nonce(0xb0), &zaad, &zpayload).unwrap();
    let zentry = BlobEntry {
        kind: BlobKind::Data,
        id: zid,
        offset: 8,
        length: zsealed.len() as u32,
        raw_length: csv.len() as u32,
        delta: None,
    };
    assert_eq!(
        pack::open_blob(&keys, &zentry, &zsealed, &pid, None).unwrap(),
        csv
    );

    // §6.3/§6.4 a delta entry and a delta blob's associated data, by hand:
    // blob `hello arca!` as a delta of depth 1 against `hello arca`, at
    // offset 8, 70 sealed bytes.
    let did = keys.blob_id(b"hello arca!");
    let mut dentry_bytes = vec![3u8];
    dentry_bytes.extend_from_slice(did.as_bytes());
    dentry_bytes.extend_from_slice(&8u32.to_le_bytes());
    dentry_bytes.extend_from_slice(&70u32.to_le_bytes());
    dentry_bytes.extend_from_slice(&11u32.to_le_bytes());
    dentry_bytes.extend_from_slice(id.as_bytes());
    dentry_bytes.push(1);
    put("trailer-entry-delta", &dentry_bytes);
    let dref = pack::DeltaRef { base: id, depth: 1 };
    let dentry = BlobEntry {
        kind: BlobKind::Data,
        id: did,
        offset: 8,
        length: 70,
        raw_length: 11,
        delta: Some(dref),
    };
    let mut w = arca::codec::Writer::new();
    dentry.encode(&mut w);
    assert_eq!(w.buf, dentry_bytes);
    let mut daad = header(ObjectType::Pack).to_vec();
    daad.push(3);
    daad.extend_from_slice(did.as_bytes());
    daad.extend_from_slice(id.as_bytes());
    daad.push(1);
    assert_eq!(pack::blob_aad(BlobKind::Data, &did, Some(&dref)), daad);
    put("blob-aad-delta", &daad);
    // A delta blob sealed by hand (encoding 2, a zstd frame with the base as
    // raw-content prefix): the zstd blob above edited in one row. It must
    // open to its plaintext given its base, and not without it or against
    // another base.
    let mut edited = csv.clone();
    edited[30] = b'7';
    edited.extend_from_slice(b"5,gadget,1\n");
    let eid = keys.blob_id(&edited);
    let eref = pack::DeltaRef {
        base: zid,
        depth: 1,
    };
    let frame = arca::delta::encode(&csv, &edited, 3).unwrap();
    assert!(
        frame.len() < edited.len() / 2,
        "the frame refers to its base"
    );
    let mut epayload = vec![pack::ENCODING_ZSTD_DELTA];
    epayload.extend_from_slice(&frame);
    let esealed = crypto::seal_with_nonce(
        &keys.blob,
        &nonce(0xc0),
        &pack::blob_aad(BlobKind::Data, &eid, Some(&eref)),
        &epayload,
    )
    .unwrap();
    let eentry = BlobEntry {
        kind: BlobKind::Data,
        id: eid,
        offset: 8,
        length: esealed.len() as u32,
        raw_length: edited.len() as u32,
        delta: Some(eref),
    };
    assert_eq!(
        pack::open_blob(&keys, &eentry, &esealed, &pid, Some(&csv)).unwrap(),
        edited
    );
    assert!(pack::open_blob(&keys, &eentry, &esealed, &pid, None).is_err());
    let other: Vec<u8> = csv.iter().map(|b| b.to_ascii_uppercase()).collect();
    assert!(pack::open_blob(&keys, &eentry, &esealed, &pid, Some(&other)).is_err());

    // §5.1 a key file, assembled by hand: password "password", Argon2id
    // m=64 KiB t=1 p=1, salt 0xc0.., created 2024-03-01T02:00:00Z, host "h".
    let kdf = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let salt: [u8; 32] = seq(0xc0, 32).try_into().unwrap();
    let kek = kdf.derive_kek(b"password", &salt).unwrap();
    put("kek-password", kek.expose());
    let mut kf = header(ObjectType::Key).to_vec();
    kf.push(1);
    kf.extend_from_slice(&64u32.to_le_bytes());
    kf.extend_from_slice(&1u32.to_le_bytes());
    kf.extend_from_slice(&1u32.to_le_bytes());
    kf.extend_from_slice(&salt);
    kf.extend_from_slice(&1_709_258_400i64.to_le_bytes());
    kf.extend_from_slice(&1u32.to_le_bytes());
    kf.push(b'h');
    let sealed_master =
        crypto::seal_with_nonce(&kek, &nonce(0xe0), &kf.clone(), &m.to_bytes()).unwrap();
    kf.extend_from_slice(&sealed_master);
    put("keyfile-password", &kf);
    let opened = keyfile::open(&kf, b"password", "vector").unwrap();
    assert_eq!(opened.to_bytes().as_slice(), m.to_bytes().as_slice());
    assert!(keyfile::open(&kf, b"Password", "vector").is_err());

    // §5.2 config body with defaults.
    put(
        "config-body-default",
        &Config::new(RepoId([0x11; 32])).encode(),
    );
    // §7 index file body.
    put(
        "index-body",
        &indexfile::encode(&[PackListing {
            id: FileId([0x22; 32]),
            length: 4096,
            blobs: vec![BlobEntry {
                kind: BlobKind::Tree,
                id: BlobId([0x33; 32]),
                offset: 8,
                length: 100,
                raw_length: 60,
                delta: None,
            }],
        }]),
    );
    // §8 snapshot body.
    put(
        "snapshot-body",
        &Snapshot {
            time: 1_709_258_400,
            nanos: 0,
            account: "acme".into(),
            host: "h".into(),
            program: "arca 0.1.0".into(),
            tags: vec!["daily".into()],
            paths: vec!["/data/acme".into()],
            tree: BlobId([0x44; 32]),
            parent: None,
            summary: Summary {
                files_new: 9,
                total_files: 9,
                ..Summary::default()
            },
        }
        .encode(),
    );
    // §9 tree body.
    put(
        "tree-body",
        &Tree {
            nodes: vec![
                Node {
                    name: b"orders.csv".to_vec(),
                    mode: 0o100644,
                    mtime: 1_709_258_400,
                    mtime_nanos: 0,
                    uid: 1000,
                    gid: 1000,
                    size: 10,
                    inode: 7,
                    kind: NodeKind::File {
                        chunks: vec![BlobId([0x55; 32])],
                    },
                },
                Node {
                    name: b"sub".to_vec(),
                    mode: 0o40755,
                    mtime: 1_709_258_400,
                    mtime_nanos: 5,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    inode: 8,
                    kind: NodeKind::Dir {
                        tree: BlobId([0x66; 32]),
                    },
                },
            ],
        }
        .encode(),
    );
    // §10 lock body.
    put(
        "lock-body",
        &LockRecord {
            exclusive: true,
            host: "h".into(),
            pid: 42,
            time: 1_709_258_400,
            operation: "prune".into(),
            nonce: [0x77; 16],
        }
        .encode(),
    );
    // §15 export record body, assembled by hand from the spec's table and
    // read back through the library.
    let mut eb = vec![1u8];
    eb.extend_from_slice(&1_709_258_400i64.to_le_bytes());
    eb.extend_from_slice(&0u32.to_le_bytes());
    eb.extend_from_slice(&[0x99; 32]);
    let s = |b: &mut Vec<u8>, t: &str| {
        b.extend_from_slice(&(t.len() as u32).to_le_bytes());
        b.extend_from_slice(t.as_bytes());
    };
    s(&mut eb, "acme");
    s(&mut eb, "h");
    eb.push(2);
    eb.push(1);
    eb.extend_from_slice(&(20u64 << 20).to_le_bytes());
    for list in [["users", "transactional"], ["users", "orders"]] {
        eb.extend_from_slice(&2u32.to_le_bytes());
        for t in list {
            s(&mut eb, t);
        }
    }
    eb.extend_from_slice(&2u64.to_le_bytes());
    eb.extend_from_slice(&300u64.to_le_bytes());
    eb.extend_from_slice(&1u32.to_le_bytes());
    s(&mut eb, "acme.part-001.zip");
    eb.extend_from_slice(&1234u64.to_le_bytes());
    let rec = ExportRecord {
        time: 1_709_258_400,
        nanos: 0,
        snapshot: FileId([0x99; 32]),
        account: "acme".into(),
        host: "h".into(),
        format: ExportFormat::Json,
        encrypted: true,
        split_size: 20 << 20,
        categories: vec!["users".into(), "transactional".into()],
        tables: vec!["users".into(), "orders".into()],
        attachments: 2,
        attachment_bytes: 300,
        files: vec![ExportFile {
            name: "acme.part-001.zip".into(),
            size: 1234,
        }],
    };
    assert_eq!(ExportRecord::decode(&eb, "vector").unwrap(), rec);
    assert_eq!(rec.encode(), eb);
    put("export-body", &eb);

    // Key cache entry (§12.1), assembled from the spec: KEK = bytes 00..1f,
    // password `hello arca`.
    let kek: [u8; 32] = seq(0x00, 32).try_into().unwrap();
    let tag_key = blake3::derive_key("arca 2026-11-23 v1 key cache password tag", &kek);
    let mut entry = kek.to_vec();
    entry.extend_from_slice(blake3::keyed_hash(&tag_key, b"hello arca").as_bytes());
    let kek_secret = crypto::Secret32::from_bytes(kek);
    assert_eq!(
        &arca::keycache::payload(&kek_secret, b"hello arca")[..],
        &entry[..]
    );
    assert!(arca::keycache::parse(&entry, b"hello arca").is_some());
    put("key-cache-entry", &entry);
    // §12.2 snapshot cache file.
    let sid = arca::id::FileId::of(b"hello");
    put(
        "snapshot-cache-file",
        &arca::snapcache::encode([(&sid, &b"hello"[..])]),
    );
    assert_eq!(
        arca::keycache::description("ab12"),
        "arca:v1:kek:ab12",
        "§12.1 description"
    );
    v
}

fn spec_vectors() -> BTreeMap<String, String> {
    let spec = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/format-spec.md"))
        .expect("format-spec.md");
    let mut out = BTreeMap::new();
    let mut pending: Option<(String, String)> = None;
    for line in spec.lines() {
        let t = line.trim();
        if let Some((name, hex)) = &mut pending {
            // Continuation lines: bare hex.
            if !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()) {
                hex.push_str(t);
                continue;
            }
            out.insert(name.clone(), hex.clone());
            pending = None;
        }
        if let Some(rest) = t.strip_prefix("vector ") {
            let (name, hex) = rest.split_once(" = ").expect("vector NAME = HEX");
            pending = Some((name.trim().to_string(), hex.trim().to_string()));
        }
    }
    if let Some((n, h)) = pending {
        out.insert(n, h);
    }
    out
}

/// Prints a vector as the spec writes it: 64 hex digits a line.
fn render(name: &str, hex: &str) -> String {
    let mut s = format!("vector {name} = ");
    let first = 64usize.min(hex.len());
    s.push_str(&hex[..first]);
    let mut i = first;
    while i < hex.len() {
        s.push('\n');
        s.push_str(&hex[i..(i + 64).min(hex.len())]);
        i += 64;
    }
    s
}

#[test]
fn format_spec_vectors_match_the_code() {
    let got = compute();
    if std::env::var_os("ARCA_PRINT_VECTORS").is_some() {
        for (k, v) in &got {
            println!("{}\n", render(k, v));
        }
    }
    let spec = spec_vectors();
    for (k, v) in &got {
        match spec.get(k) {
            Some(s) => assert_eq!(s, v, "vector {k} in format-spec.md differs from the code"),
            None => panic!(
                "vector {k} is missing from format-spec.md:\n{}",
                render(k, v)
            ),
        }
    }
    for k in spec.keys() {
        assert!(
            got.contains_key(k),
            "format-spec.md has vector {k} that no test computes"
        );
    }
}
