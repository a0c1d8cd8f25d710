//! Index files (format-spec.md §7): write-once lists of the packs a backup
//! added and their blobs, so a client brings its local index up to date by
//! reading only the index files it has not seen.
//!
//! Body (sealed as a file object of type 4): pack count u32 ‖ per pack:
//! pack id [32] ‖ pack length u64 ‖ blob count u32 ‖ entries (§6.3).

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::format::limits;
use crate::format::pack::{BlobEntry, ENTRY_LEN};
use crate::id::PackId;

/// One pack as listed in an index file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackListing {
    /// The pack's file id.
    pub id: PackId,
    /// The pack's length in bytes.
    pub length: u64,
    /// Its blobs, as in its trailer.
    pub blobs: Vec<BlobEntry>,
}

/// Encodes an index file body.
pub fn encode(packs: &[PackListing]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(packs.len() as u32);
    for p in packs {
        w.raw(&p.id.0);
        w.u64(p.length);
        w.u32(p.blobs.len() as u32);
        for b in &p.blobs {
            b.encode(&mut w);
        }
    }
    w.buf
}

/// Decodes an index file body, checking every count against the limits.
pub fn decode(body: &[u8], what: &str) -> Result<Vec<PackListing>> {
    let mut r = Reader::new(body, what);
    let n = r.count(limits::MAX_INDEX_PACKS, 44)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = crate::id::FileId(r.array()?);
        let length = r.u64()?;
        if length > limits::MAX_PACK_SIZE {
            return Err(Error::corrupt(
                what,
                format!("pack {id} length {length} over the limit"),
            ));
        }
        let m = r.count(limits::MAX_PACK_BLOBS, ENTRY_LEN)?;
        let mut blobs = Vec::with_capacity(m);
        for _ in 0..m {
            blobs.push(BlobEntry::decode(&mut r)?);
        }
        out.push(PackListing { id, length, blobs });
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BlobKind;
    use crate::id::BlobId;

    #[test]
    fn round_trip() {
        let p = PackListing {
            id: PackId::of(b"x"),
            length: 1234,
            blobs: vec![
                BlobEntry {
                    kind: BlobKind::Tree,
                    id: BlobId([5; 32]),
                    offset: 8,
                    length: 100,
                    raw_length: 77,
                    delta: None,
                },
                BlobEntry {
                    kind: BlobKind::Data,
                    id: BlobId([6; 32]),
                    offset: 108,
                    length: 100,
                    raw_length: 77,
                    delta: Some(crate::format::pack::DeltaRef {
                        base: BlobId([5; 32]),
                        depth: 2,
                    }),
                },
            ],
        };
        let body = encode(std::slice::from_ref(&p));
        assert_eq!(decode(&body, "i").unwrap(), vec![p]);
        for n in 0..body.len() {
            assert!(decode(&body[..n], "i").is_err());
        }
    }
}
