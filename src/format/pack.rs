//! Pack files (format-spec.md §6).
//!
//! Layout: header(type 3) ‖ sealed blob … ‖ sealed trailer ‖ trailer length
//! u32 ‖ end magic "APCK". A sealed blob is seal(blob key, aad = header ‖ kind
//! ‖ id, encoding u8 ‖ data); the trailer is seal(file key, aad = header ‖
//! "trailer", count u32 ‖ entries) and lists every blob, so the index can be
//! rebuilt from packs alone. A data blob may be stored as a delta against
//! another data blob, its base (§6.4): its entry then has kind 3 and names
//! the base and the chain depth.

use crate::codec::{Reader, Writer};
use crate::crypto::{self, Keys, Secret32};
use crate::error::{Error, Result};
use crate::format::{
    check_header, header, limits, BlobKind, ObjectType, BLOB_KIND_DELTA, HEADER_LEN,
};
use crate::id::{BlobId, PackId};

/// Last four bytes of a pack.
pub const END_MAGIC: [u8; 4] = *b"APCK";
/// Length of the fixed footer: trailer length u32 ‖ end magic.
pub const FOOTER_LEN: usize = 8;
/// Encoded length of one trailer entry of kind data or tree (the shortest).
pub const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;
/// Encoded length of one trailer entry of kind 3 (a delta).
pub const DELTA_ENTRY_LEN: usize = ENTRY_LEN + 32 + 1;
/// Blob payload encoding: stored as is.
pub const ENCODING_RAW: u8 = 0;
/// Blob payload encoding: one zstd frame.
pub const ENCODING_ZSTD: u8 = 1;
/// Blob payload encoding: one zstd frame made with the base blob's
/// plaintext as a raw-content prefix (delta blobs only, §6.4).
pub const ENCODING_ZSTD_DELTA: u8 = 2;

/// How a delta blob refers to its base (format-spec.md §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeltaRef {
    /// The data blob whose plaintext is the prefix of this blob's frame.
    pub base: BlobId,
    /// Bases to decode before this blob: 1 + the base's depth (a blob
    /// stored whole has depth 0).
    pub depth: u8,
}

/// One blob as listed in a pack trailer and in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobEntry {
    /// Data or tree (a delta's plaintext is always data).
    pub kind: BlobKind,
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob.
    pub length: u32,
    /// Length of the plaintext.
    pub raw_length: u32,
    /// Set when the blob is stored as a delta against a base.
    pub delta: Option<DeltaRef>,
}

impl BlobEntry {
    /// The kind byte written for this entry: 3 for a delta.
    pub fn kind_byte(&self) -> u8 {
        match self.delta {
            Some(_) => BLOB_KIND_DELTA,
            None => self.kind as u8,
        }
    }

    /// Bases to decode before this blob: 0 for a whole blob.
    pub fn chain_depth(&self) -> u8 {
        self.delta.map_or(0, |d| d.depth)
    }

    /// Appends the entry's encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.u8(self.kind_byte());
        w.raw(&self.id.0);
        w.u32(self.offset);
        w.u32(self.length);
        w.u32(self.raw_length);
        if let Some(d) = &self.delta {
            w.raw(&d.base.0);
            w.u8(d.depth);
        }
    }

    /// Reads one entry and checks its lengths against the limits.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let kind_byte = r.u8()?;
        let kind = if kind_byte == BLOB_KIND_DELTA {
            BlobKind::Data
        } else {
            BlobKind::from_u8(kind_byte)?
        };
        let id = BlobId(r.array()?);
        let offset = r.u32()?;
        let length = r.u32()?;
        let raw_length = r.u32()?;
        if length > limits::MAX_BLOB_STORED || raw_length > limits::MAX_BLOB_RAW {
            return Err(r.err(format!("blob {} lengths out of range", id.short())));
        }
        if (length as usize) < crypto::SEAL_OVERHEAD + 1 {
            return Err(r.err(format!("blob {} shorter than its seal", id.short())));
        }
        let delta = if kind_byte == BLOB_KIND_DELTA {
            let base = BlobId(r.array()?);
            let depth = r.u8()?;
            if depth == 0 || depth > limits::MAX_DELTA_DEPTH || base == id {
                return Err(r.err(format!(
                    "delta blob {} has depth {depth} or is its own base",
                    id.short()
                )));
            }
            Some(DeltaRef { base, depth })
        } else {
            None
        };
        Ok(BlobEntry {
            kind,
            id,
            offset,
            length,
            raw_length,
            delta,
        })
    }
}

/// Associated data binding a blob to its pack format, kind and id, and a
/// delta to its base (a delta cannot be re-pointed at another base).
pub fn blob_aad(kind: BlobKind, id: &BlobId, delta: Option<&DeltaRef>) -> Vec<u8> {
    let mut a = Vec::with_capacity(HEADER_LEN + 66);
    a.extend_from_slice(&header(ObjectType::Pack));
    match delta {
        Some(d) => {
            a.push(BLOB_KIND_DELTA);
            a.extend_from_slice(&id.0);
            a.extend_from_slice(&d.base.0);
            a.push(d.depth);
        }
        None => {
            a.push(kind as u8);
            a.extend_from_slice(&id.0);
        }
    }
    a
}

/// Associated data of the trailer.
pub fn trailer_aad() -> [u8; HEADER_LEN + 7] {
    let mut a = [0u8; HEADER_LEN + 7];
    a[..HEADER_LEN].copy_from_slice(&header(ObjectType::Pack));
    a[HEADER_LEN..].copy_from_slice(b"trailer");
    a
}

/// A blob ready to be appended to a pack.
pub struct SealedBlob {
    /// Data or tree.
    pub kind: BlobKind,
    /// Keyed hash of the plaintext.
    pub id: BlobId,
    /// Length of the plaintext.
    pub raw_length: u32,
    /// Set when stored as a delta.
    pub delta: Option<DeltaRef>,
    /// The sealed bytes.
    pub bytes: Vec<u8>,
}

/// Compresses (when it helps) and seals one blob. `plaintext` must be the
/// bytes whose keyed hash is `id`.
pub fn seal_blob(
    keys: &Keys,
    kind: BlobKind,
    id: BlobId,
    plaintext: &[u8],
    zstd_level: i32,
) -> Result<SealedBlob> {
    let raw_length = u32::try_from(plaintext.len())
        .ok()
        .filter(|n| *n <= limits::MAX_BLOB_RAW)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "blob of {} bytes exceeds the limit",
                plaintext.len()
            ))
        })?;
    let compressed =
        compress_whole(plaintext, zstd_level).map_err(|e| Error::Invalid(format!("zstd: {e}")))?;
    // Incompressible content (attachments) is stored raw: saves the frame
    // overhead and the decompression on restore. The encoding byte and the
    // body are copied once, into the sealed output.
    let (encoding, body) = if compressed.len() < plaintext.len() {
        (ENCODING_ZSTD, &compressed[..])
    } else {
        (ENCODING_RAW, plaintext)
    };
    let bytes = crypto::seal_parts(&keys.blob, &blob_aad(kind, &id, None), &[&[encoding], body])?;
    Ok(SealedBlob {
        kind,
        id,
        raw_length,
        delta: None,
        bytes,
    })
}

thread_local! {
    /// One compression context per thread and level, reused: a new one per
    /// blob allocated and faulted in its tables every time. The frames are
    /// the same bytes either way.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// `plaintext` as one zstd frame at `level` (what `zstd::bulk::compress`
/// makes).
fn compress_whole(plaintext: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        // A leaf call: nothing below re-enters this thread-local.
        let mut slot = cell.borrow_mut();
        match &mut *slot {
            Some((l, c)) if *l == level => c.compress(plaintext),
            _ => {
                let mut c = zstd::bulk::Compressor::new(level)?;
                let out = c.compress(plaintext);
                *slot = Some((level, c));
                out
            }
        }
    })
}

/// Seals a data blob already encoded as a delta `frame` against the base
/// named by `delta` (see [`crate::delta::encode`]).
pub fn seal_delta(
    keys: &Keys,
    id: BlobId,
    raw_length: usize,
    delta: DeltaRef,
    frame: &[u8],
) -> Result<SealedBlob> {
    let raw_length = u32::try_from(raw_length)
        .ok()
        .filter(|n| *n <= limits::MAX_BLOB_RAW)
        .ok_or_else(|| Error::Invalid("delta blob exceeds the size limit".into()))?;
    let bytes = crypto::seal_parts(
        &keys.blob,
        &blob_aad(BlobKind::Data, &id, Some(&delta)),
        &[&[ENCODING_ZSTD_DELTA], frame],
    )?;
    Ok(SealedBlob {
        kind: BlobKind::Data,
        id,
        raw_length,
        delta: Some(delta),
        bytes,
    })
}

/// Opens, decompresses and verifies one sealed blob against its entry: the
/// plaintext must have the entry's length and hash to the entry's id. A
/// delta needs its base's plaintext in `base`.
pub fn open_blob(
    keys: &Keys,
    entry: &BlobEntry,
    sealed: &[u8],
    pack: &PackId,
    base: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let plain = decode_blob(keys, entry, sealed, pack, base)?;
    verify_id(keys, entry, pack, &plain)?;
    Ok(plain)
}

/// Fails unless `plain` hashes to the entry's id.
pub fn verify_id(keys: &Keys, entry: &BlobEntry, pack: &PackId, plain: &[u8]) -> Result<()> {
    if keys.blob_id(plain) != entry.id {
        return Err(Error::corrupt(
            blob_what(entry, pack),
            "plaintext does not hash to the blob id",
        ));
    }
    Ok(())
}

/// How messages name a blob: its pack, id and offset.
fn blob_what(entry: &BlobEntry, pack: &PackId) -> String {
    format!("pack {} blob {} at offset {}", pack, entry.id, entry.offset)
}

/// Authenticates and decrypts a sealed blob: (how to name it, payload).
fn open_payload(
    keys: &Keys,
    entry: &BlobEntry,
    sealed: &[u8],
    pack: &PackId,
) -> Result<(String, Vec<u8>)> {
    let what = blob_what(entry, pack);
    let payload = crypto::open(
        &keys.blob,
        &blob_aad(entry.kind, &entry.id, entry.delta.as_ref()),
        sealed,
        &what,
    )?;
    Ok((what, payload))
}

/// [`open_blob`] without the final hash check: the seal authenticates the
/// stored bytes and the length is checked, but the plaintext is not hashed.
/// Only for the bases inside a delta chain, whose end result is hashed
/// against its own id (a wrong base cannot produce it).
pub fn decode_blob(
    keys: &Keys,
    entry: &BlobEntry,
    sealed: &[u8],
    pack: &PackId,
    base: Option<&[u8]>,
) -> Result<Vec<u8>> {
    let (what, payload) = open_payload(keys, entry, sealed, pack)?;
    let mut out = Vec::with_capacity(entry.raw_length as usize);
    decode_payload(entry, &what, &payload, base.map(Base::Slice), &mut out)?;
    Ok(out)
}

/// [`decode_blob`] into a buffer: opens `sealed` in place and appends the
/// blob's plaintext to `out`, returning where it lies. A delta's base must
/// be the bytes of `out` in `base`, ending where `out` ends (see
/// [`crate::delta::decode_append`]). The plaintext is not hashed.
pub fn decode_into(
    keys: &Keys,
    entry: &BlobEntry,
    sealed: &mut [u8],
    pack: &PackId,
    base: Option<std::ops::Range<usize>>,
    out: &mut Vec<u8>,
) -> Result<std::ops::Range<usize>> {
    let what = blob_what(entry, pack);
    let payload = crypto::open_in_place(
        &keys.blob,
        &blob_aad(entry.kind, &entry.id, entry.delta.as_ref()),
        sealed,
        &what,
    )?;
    let start = out.len();
    decode_payload(entry, &what, payload, base.map(Base::Tail), out)?;
    Ok(start..out.len())
}

/// Where a delta's base is: its own bytes, or the bytes of the output
/// buffer in this range, which ends the buffer.
enum Base<'a> {
    Slice(&'a [u8]),
    Tail(std::ops::Range<usize>),
}

/// Appends the plaintext of an opened payload (encoding byte, then data)
/// to `out`: exactly the entry's raw length, in the encoding its kind
/// allows.
fn decode_payload(
    entry: &BlobEntry,
    what: &str,
    payload: &[u8],
    base: Option<Base>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let (&encoding, data) = payload
        .split_first()
        .ok_or_else(|| Error::corrupt(what, "empty payload"))?;
    let raw = entry.raw_length as usize;
    match (encoding, &entry.delta) {
        (ENCODING_RAW, None) => {
            if data.len() != raw {
                return Err(Error::corrupt(
                    what,
                    format!("plaintext is {} bytes, trailer says {raw}", data.len()),
                ));
            }
            out.extend_from_slice(data);
        }
        (ENCODING_ZSTD, None) => {
            crate::delta::decompress_append(data, raw, out).map_err(|e| Error::corrupt(what, e))?
        }
        (ENCODING_ZSTD_DELTA, Some(d)) => {
            let r = match base {
                // Only `decode_blob` passes a base of its own, with an
                // empty `out`: the decoded vector becomes it.
                Some(Base::Slice(b)) => crate::delta::decode(b, data, raw).map(|p| {
                    debug_assert!(out.is_empty());
                    *out = p;
                }),
                Some(Base::Tail(r)) => crate::delta::decode_append(r, data, raw, out),
                None => {
                    return Err(Error::Invalid(format!(
                        "{what}: delta opened without its base {}",
                        d.base
                    )))
                }
            };
            r.map_err(|e| Error::corrupt(what, e))?;
        }
        (other, _) => {
            return Err(Error::corrupt(
                what,
                format!("encoding {other} is not valid for this blob kind"),
            ))
        }
    }
    Ok(())
}

/// Authenticates a sealed blob against its entry without decoding it: its
/// bytes are exactly what was sealed for this id, kind (and base), and its
/// encoding suits its kind. Used by `check --read-data`, which decodes
/// bases and deltas afterwards, each once, from the root of their chain.
pub fn authenticate_blob(
    keys: &Keys,
    entry: &BlobEntry,
    sealed: &[u8],
    pack: &PackId,
) -> Result<()> {
    let (what, payload) = open_payload(keys, entry, sealed, pack)?;
    match (payload.first().copied(), &entry.delta) {
        (Some(ENCODING_RAW | ENCODING_ZSTD), None) | (Some(ENCODING_ZSTD_DELTA), Some(_)) => Ok(()),
        (Some(e), _) => Err(Error::corrupt(
            &what,
            format!("encoding {e} is not valid for this blob kind"),
        )),
        (None, _) => Err(Error::corrupt(&what, "empty payload")),
    }
}

/// Encodes the trailer and footer that close a pack whose blobs are `entries`.
pub fn encode_trailer(file_key: &Secret32, entries: &[BlobEntry]) -> Result<Vec<u8>> {
    let mut w = Writer::new();
    w.u32(entries.len() as u32);
    for e in entries {
        e.encode(&mut w);
    }
    let sealed = crypto::seal(file_key, &trailer_aad(), &w.buf)?;
    let mut out = sealed;
    let len = out.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&END_MAGIC);
    Ok(out)
}

/// Where the sealed trailer sits, from the last [`FOOTER_LEN`] bytes of a
/// pack of `pack_len` bytes: returns (offset, length).
pub fn trailer_location(footer: &[u8], pack_len: u64, what: &str) -> Result<(u64, u32)> {
    if footer.len() != FOOTER_LEN || footer[4..] != END_MAGIC {
        return Err(Error::corrupt(
            what,
            "missing end magic: truncated or not a pack",
        ));
    }
    let mut l = [0u8; 4];
    l.copy_from_slice(&footer[..4]);
    let len = u32::from_le_bytes(l);
    if len > limits::MAX_TRAILER {
        return Err(Error::corrupt(
            what,
            format!("trailer length {len} exceeds the limit"),
        ));
    }
    let min = (HEADER_LEN + FOOTER_LEN) as u64 + u64::from(len);
    if pack_len < min {
        return Err(Error::corrupt(what, "trailer length larger than the pack"));
    }
    Ok((pack_len - FOOTER_LEN as u64 - u64::from(len), len))
}

/// Opens a sealed trailer and checks every entry lies inside the blob area,
/// in order and without overlap.
pub fn decode_trailer(
    file_key: &Secret32,
    sealed: &[u8],
    trailer_offset: u64,
    what: &str,
) -> Result<Vec<BlobEntry>> {
    let body = crypto::open(file_key, &trailer_aad(), sealed, what)?;
    let mut r = Reader::new(&body, what);
    let n = r.count(limits::MAX_PACK_BLOBS, ENTRY_LEN)?;
    let mut out = Vec::with_capacity(n);
    let mut next = HEADER_LEN as u64;
    for _ in 0..n {
        let e = BlobEntry::decode(&mut r)?;
        let end = u64::from(e.offset) + u64::from(e.length);
        if u64::from(e.offset) < next || end > trailer_offset {
            return Err(Error::corrupt(
                what,
                format!(
                    "blob {} at offset {} overlaps or lies outside the blob area",
                    e.id, e.offset
                ),
            ));
        }
        next = end;
        out.push(e);
    }
    r.finish()?;
    Ok(out)
}

/// Reads every entry of a whole pack held in memory, checking its header.
pub fn read_trailer(file_key: &Secret32, pack: &[u8], what: &str) -> Result<Vec<BlobEntry>> {
    check_header(pack, ObjectType::Pack, what)?;
    let len = pack.len() as u64;
    if pack.len() < HEADER_LEN + FOOTER_LEN {
        return Err(Error::corrupt(what, "shorter than header and footer"));
    }
    let (off, tlen) = trailer_location(&pack[pack.len() - FOOTER_LEN..], len, what)?;
    let start = off as usize;
    decode_trailer(file_key, &pack[start..start + tlen as usize], off, what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterSecrets;

    fn pack_of(keys: &Keys, blobs: &[&[u8]]) -> (Vec<u8>, Vec<BlobEntry>) {
        let mut pack = header(ObjectType::Pack).to_vec();
        let mut entries = Vec::new();
        for b in blobs {
            let id = keys.blob_id(b);
            let s = seal_blob(keys, BlobKind::Data, id, b, 3).unwrap();
            entries.push(BlobEntry {
                kind: BlobKind::Data,
                id,
                offset: pack.len() as u32,
                length: s.bytes.len() as u32,
                raw_length: s.raw_length,
                delta: None,
            });
            pack.extend_from_slice(&s.bytes);
        }
        pack.extend_from_slice(&encode_trailer(&keys.file, &entries).unwrap());
        (pack, entries)
    }

    proptest::proptest! {
        #[test]
        fn any_blobs_round_trip(blobs in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..3000), 0..12)) {
            let keys = MasterSecrets::from_bytes(&[9u8; 96]).unwrap().keys();
            let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
            let (pack, entries) = pack_of(&keys, &refs);
            let got = read_trailer(&keys.file, &pack, "p").unwrap();
            proptest::prop_assert_eq!(&got, &entries);
            for (e, want) in got.iter().zip(&blobs) {
                let s = &pack[e.offset as usize..(e.offset + e.length) as usize];
                proptest::prop_assert_eq!(&open_blob(&keys, e, s, &PackId::of(&pack), None).unwrap(), want);
            }
        }

        #[test]
        fn any_single_byte_flip_is_detected(pos in 0usize..10_000, bit in 0u8..8) {
            let keys = MasterSecrets::from_bytes(&[9u8; 96]).unwrap().keys();
            let (mut pack, entries) = pack_of(&keys, &[b"some,csv,row\n".repeat(40).as_slice()]);
            let pos = pos % pack.len();
            pack[pos] ^= 1 << bit;
            let pid = PackId::of(&pack);
            let ok = read_trailer(&keys.file, &pack, "p")
                .ok()
                .filter(|t| *t == entries)
                .map(|t| {
                    let e = &t[0];
                    open_blob(&keys, e, &pack[e.offset as usize..(e.offset + e.length) as usize], &pid, None).is_ok()
                })
                .unwrap_or(false);
            proptest::prop_assert!(!ok, "flip at {} went unnoticed", pos);
        }
    }

    #[test]
    fn pack_round_trip() {
        let keys = MasterSecrets::generate().unwrap().keys();
        let (pack, entries) = pack_of(&keys, &[b"hello world", &[0u8; 5000], b""]);
        let got = read_trailer(&keys.file, &pack, "p").unwrap();
        assert_eq!(got, entries);
        let pid = PackId::of(&pack);
        for (e, want) in got.iter().zip([&b"hello world"[..], &[0u8; 5000], b""]) {
            let s = &pack[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(open_blob(&keys, e, s, &pid, None).unwrap(), want);
        }
    }

    #[test]
    fn blob_cannot_be_swapped_for_another_id() {
        let keys = MasterSecrets::generate().unwrap().keys();
        let (pack, entries) = pack_of(&keys, &[b"aaa", b"bbb"]);
        let mut e = entries[0];
        e.id = entries[1].id;
        let s = &pack[e.offset as usize..(e.offset + e.length) as usize];
        assert!(open_blob(&keys, &e, s, &PackId::of(&pack), None).is_err());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let keys = MasterSecrets::generate().unwrap().keys();
        let (pack, _) = pack_of(&keys, &[b"hello", b"world"]);
        for n in 0..pack.len() {
            assert!(read_trailer(&keys.file, &pack[..n], "p").is_err());
        }
    }
}
