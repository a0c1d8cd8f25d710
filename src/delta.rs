//! Delta encoding of data blobs (format-spec.md §6.4): a zstd frame made
//! with the base blob's plaintext as a raw-content prefix. Rows that did not
//! change become matches into the base; only what changed is coded.
//!
//! Pure functions over bytes. Each thread keeps one compression context for
//! deltas: a new one per delta cost its allocation, page faults and table
//! clearing every time (about 6 % of a kissflow incremental backup).

use std::cell::RefCell;

use zstd::zstd_safe::{CCtx, CParameter, DCtx, ResetDirective};

thread_local! {
    /// The delta compression context of this thread. It never holds a
    /// prefix between calls (see [`encode`]).
    static DELTA_CCTX: RefCell<CCtx<'static>> = RefCell::new(CCtx::create());
}

/// Encodes `data` against `base` at zstd `level`.
///
/// Two passes at most. The first uses zstd's `fast` matcher, which indexes
/// the base at about half the cost of level 3's `dfast` (indexing the base
/// was a fifth of a kissflow incremental backup). A chunk with a few edited
/// records codes to almost nothing either way, so a first-pass frame of at
/// most 1/[`QUICK_DIV`] of the chunk is kept. Denser edits (a stock table
/// where many rows change) lose too much with `fast`: those are encoded
/// again at the level's own parameters and the smaller frame is kept.
/// Measured on one day of each kind from the same base repository,
/// alternating with the single `dfast` pass: kissflow 0.81–0.90 s →
/// 0.72–0.79 s for 0.4 % more bytes, stockflow 0.72–0.92 s → 0.71–0.83 s
/// and 5,291 → 5,420 KB a day.
pub fn encode(base: &[u8], data: &[u8], level: i32) -> Result<Vec<u8>, String> {
    let quick = encode_with(base, data, level, true)?;
    if quick.len().saturating_mul(QUICK_DIV) <= data.len() {
        return Ok(quick);
    }
    let full = encode_with(base, data, level, false)?;
    Ok(if full.len() < quick.len() {
        full
    } else {
        quick
    })
}

/// A first-pass delta at most this fraction of its chunk is kept.
pub const QUICK_DIV: usize = 64;

/// One zstd frame of `data` with `base` as its prefix: at `level`, or with
/// the `fast` matcher (level 3's hash table size, minimum match 5) when
/// `quick`.
fn encode_with(base: &[u8], data: &[u8], level: i32, quick: bool) -> Result<Vec<u8>, String> {
    let name = |c| zstd::zstd_safe::get_error_name(c).to_string();
    DELTA_CCTX.with(|cell| {
        // A leaf call: nothing below re-enters this thread-local.
        let mut cctx = cell.borrow_mut();
        // SAFETY: the context is `'static` but `base` is not. The reference
        // is dropped before this function returns, on every path: zstd
        // forgets a referenced prefix when the frame ends, and the final
        // `reset` drops it whatever happened.
        // Nothing else uses this thread's context meanwhile.
        #[allow(unsafe_code)]
        let prefix: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(base) };
        let r = (|| {
            cctx.reset(ResetDirective::SessionAndParameters)
                .map_err(|c| format!("zstd reset: {}", name(c)))?;
            cctx.set_parameter(CParameter::CompressionLevel(level))
                .map_err(|c| format!("zstd level: {}", name(c)))?;
            // The frame records the plaintext size, and no checksum: the
            // blob id already authenticates the result.
            cctx.set_parameter(CParameter::ContentSizeFlag(true))
                .map_err(|c| format!("zstd: {}", name(c)))?;
            if quick {
                cctx.set_parameter(CParameter::Strategy(zstd::zstd_safe::Strategy::ZSTD_fast))
                    .map_err(|c| format!("zstd: {}", name(c)))?;
                cctx.set_parameter(CParameter::HashLog(17))
                    .map_err(|c| format!("zstd: {}", name(c)))?;
                cctx.set_parameter(CParameter::MinMatch(5))
                    .map_err(|c| format!("zstd: {}", name(c)))?;
            }
            cctx.ref_prefix(prefix)
                .map_err(|c| format!("zstd prefix: {}", name(c)))?;
            // Capacity, not length: zstd writes into it and sets the
            // length, so the buffer is never zeroed first.
            let mut out: Vec<u8> = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
            cctx.compress2(&mut out, data)
                .map_err(|c| format!("zstd: {}", name(c)))?;
            Ok(out)
        })();
        // Session and parameters: that also drops any prefix or
        // dictionary (a session-only reset keeps them).
        let _ = cctx.reset(ResetDirective::SessionAndParameters);
        r
    })
}

/// The zstd level of delta frames: at least 3. Levels 1 and 2 hardly look
/// into the base (stockflow, one day: 53.6 MB of deltas at level 1 against
/// 4.97 MB at level 3); level 9 stores 19 % less than level 3 but encodes
/// at a third of its speed (96 against 310 MB/s on one core), and a daily
/// re-export delta-encodes about a quarter of its bytes, so the backup
/// pays for it (measured with `examples/delta_probe.rs`, format-spec.md
/// §6.4).
pub fn level(config_level: i32) -> i32 {
    config_level.max(3)
}

thread_local! {
    /// One decompression context per thread, for deltas and whole frames,
    /// reused: creating one per blob allocates and faults in over 100 KiB
    /// each time (it showed as 7 % of a restore's CPU).
    static DCTX: std::cell::RefCell<DCtx<'static>> = std::cell::RefCell::new(DCtx::create());
}

/// Decodes a frame made by [`encode`] against the same `base`. The output
/// must be exactly `raw_len` bytes; a frame that would produce more, or
/// less, is an error (never a larger allocation).
pub fn decode(base: &[u8], frame: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    // Capacity, not length: zstd writes into it and sets the length, so
    // the buffer is never zeroed first, and never grows past `raw_len`.
    let mut out: Vec<u8> = Vec::with_capacity(raw_len);
    let err = |c| format!("zstd delta: {}", zstd::zstd_safe::get_error_name(c));
    let n = DCTX.with(|d| {
        // A leaf call: nothing below re-enters this thread-local.
        let mut d = d.borrow_mut();
        // SAFETY: as in [`encode`]: the `'static` context holds the
        // reference to `base` only until the final reset below, which
        // drops it on every path (zstd also forgets a prefix once its
        // frame is decoded). A referenced prefix is raw content whatever
        // its first bytes, and is not copied.
        #[allow(unsafe_code)]
        let prefix: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(base) };
        let r = (|| {
            d.reset(zstd::zstd_safe::ResetDirective::SessionAndParameters)
                .map_err(err)?;
            d.ref_prefix(prefix).map_err(err)?;
            d.decompress(&mut out, frame).map_err(err)
        })();
        let _ = d.reset(zstd::zstd_safe::ResetDirective::SessionAndParameters);
        r
    })?;
    if n != raw_len || out.len() != raw_len {
        return Err(format!("delta decodes to {n} bytes, expected {raw_len}"));
    }
    Ok(out)
}

/// Appends the plaintext of a whole zstd frame, exactly `raw_len` bytes,
/// to `out`. On error `out` is left as it was.
pub fn decompress_append(frame: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<(), String> {
    append_with(None, frame, raw_len, out)
}

/// Appends the plaintext of a delta frame made by [`encode`], exactly
/// `raw_len` bytes, to `out`, whose bytes in `base` are the base and must
/// end where `out` ends. The base and the output are then one window to
/// zstd, whose matches into it are plain copies within the buffer rather
/// than the slower external-dictionary path of [`decode`] (stockflow's
/// chain links: 0.080 against 0.055 ms each). On error `out` is left as it
/// was.
pub fn decode_append(
    base: std::ops::Range<usize>,
    frame: &[u8],
    raw_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    if base.end != out.len() || base.start > base.end {
        return Err(format!(
            "delta base at {base:?} does not end the buffer of {} bytes",
            out.len()
        ));
    }
    append_with(Some(base), frame, raw_len, out)
}

fn append_with(
    base: Option<std::ops::Range<usize>>,
    frame: &[u8],
    raw_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let err = |c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c));
    // Reserved first: a reallocation moves the base with the rest, so the
    // prefix below is taken from the buffer as it will stay.
    out.reserve(raw_len);
    let start = out.len();
    let r = DCTX.with(|d| {
        // A leaf call: nothing below re-enters this thread-local.
        let mut d = d.borrow_mut();
        let r = (|| {
            d.reset(zstd::zstd_safe::ResetDirective::SessionAndParameters)
                .map_err(err)?;
            if let Some(b) = &base {
                // SAFETY: `b` lies within `out`'s initialized bytes (checked
                // by the caller against `out.len()`), and nothing moves or
                // frees the buffer until the reset below drops the
                // reference: the writes go to its spare capacity, after
                // `b`, through `Vec::as_mut_ptr`, which leaves pointers
                // from `Vec::as_ptr` valid. The `'static` lifetime is only
                // what the reused context's type asks for (as in
                // [`encode`]).
                #[allow(unsafe_code)]
                let prefix: &'static [u8] = unsafe {
                    std::slice::from_raw_parts(out.as_ptr().add(b.start), b.end - b.start)
                };
                d.ref_prefix(prefix).map_err(err)?;
            }
            // Written into the spare capacity after `start`, never zeroed
            // first; more than `raw_len` bytes is an error below.
            let mut cur = std::io::Cursor::new(&mut *out);
            cur.set_position(start as u64);
            d.decompress(&mut cur, frame).map_err(err)
        })();
        let _ = d.reset(zstd::zstd_safe::ResetDirective::SessionAndParameters);
        r
    });
    match r {
        Ok(n) if n == raw_len && out.len() == start + raw_len => Ok(()),
        Ok(n) => {
            out.truncate(start);
            Err(format!(
                "zstd frame decodes to {n} bytes, expected {raw_len}"
            ))
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_edit_costs_little() {
        let base: Vec<u8> = (0..2000)
            .flat_map(|i| format!("{i},item {i},{},ok\n", i * 7).into_bytes())
            .collect();
        let mut data = base.clone();
        data[5000] = b'X';
        data.extend_from_slice(b"2000,item 2000,14000,new\n");
        let f = encode(&base, &data, 3).unwrap();
        assert!(f.len() < 100, "delta is {} bytes", f.len());
        assert_eq!(decode(&base, &f, data.len()).unwrap(), data);
        // The wrong base, or the wrong length, is an error or a different
        // plaintext, never a panic.
        assert!(decode(&base, &f, data.len() - 1).is_err());
        assert!(decode(&base, &f, data.len() + 1).is_err());
        let other = decode(&data, &f, data.len());
        assert!(other.map(|o| o != data).unwrap_or(true));
    }

    /// A sparse edit keeps the first, `fast` pass; dense edits are encoded
    /// again at the level's own parameters and never come out larger than
    /// that encoding. Both decode to the data.
    #[test]
    fn quick_pass_for_sparse_edits_full_pass_for_dense_ones() {
        let base: Vec<u8> = (0..8000u32)
            .flat_map(|i| format!("{i},sku-{:05},{},ok\n", i * 7919 % 100_000, i % 97).into_bytes())
            .collect();
        let mut sparse = base.clone();
        sparse[40_000] = b'#';
        let f = encode(&base, &sparse, 3).unwrap();
        assert_eq!(
            f,
            encode_with(&base, &sparse, 3, true).unwrap(),
            "kept the quick pass"
        );
        assert!(f.len() * QUICK_DIV <= sparse.len());
        assert_eq!(decode(&base, &f, sparse.len()).unwrap(), sparse);
        // Every row's quantity changes: far more than 1/64 of the chunk.
        let dense: Vec<u8> = (0..8000u32)
            .flat_map(|i| {
                format!(
                    "{i},sku-{:05},{},ok\n",
                    i * 7919 % 100_000,
                    (i * 31 + 5) % 89
                )
                .into_bytes()
            })
            .collect();
        let f = encode(&base, &dense, 3).unwrap();
        let full = encode_with(&base, &dense, 3, false).unwrap();
        let quick = encode_with(&base, &dense, 3, true).unwrap();
        assert!(
            quick.len() * QUICK_DIV > dense.len(),
            "dense edits are not quick"
        );
        assert_eq!(f.len(), full.len().min(quick.len()));
        assert_eq!(decode(&base, &f, dense.len()).unwrap(), dense);
    }

    /// The contiguous decoder gives the same bytes as the external-prefix
    /// one, needs its base to end the buffer, and leaves the buffer as it
    /// was when the frame does not make exactly the expected length.
    #[test]
    fn append_after_the_base_in_one_buffer() {
        let base: Vec<u8> = (0..3000u32)
            .flat_map(|i| format!("{i},row {},x\n", i % 17).into_bytes())
            .collect();
        let mut data = base.clone();
        data[777] = b'#';
        data.extend_from_slice(b"3000,row new,y\n");
        let f = encode(&base, &data, 3).unwrap();
        let mut out = b"head".to_vec();
        out.extend_from_slice(&base);
        let b = 4..out.len();
        decode_append(b.clone(), &f, data.len(), &mut out).unwrap();
        assert_eq!(&out[b.end..], &data[..]);
        assert_eq!(decode(&base, &f, data.len()).unwrap(), data);
        // The base must end the buffer.
        assert!(decode_append(0..4, &f, data.len(), &mut out).is_err());
        // One byte short or long: an error, and nothing appended.
        let mut out = base.clone();
        for n in [data.len() - 1, data.len() + 1] {
            assert!(decode_append(0..base.len(), &f, n, &mut out).is_err());
            assert_eq!(out, base);
        }
        // Whole frames append after what is there.
        let z = zstd::bulk::compress(&data, 1).unwrap();
        let mut out = b"x".to_vec();
        decompress_append(&z, data.len(), &mut out).unwrap();
        assert_eq!(&out[1..], &data[..]);
        assert!(decompress_append(&z, data.len() + 1, &mut out).is_err());
        assert_eq!(out.len(), 1 + data.len());
    }

    #[test]
    fn base_that_looks_like_a_zstd_dictionary_is_raw_content() {
        // The first bytes of a zstd dictionary: a referenced prefix is raw
        // content all the same (a dictionary loaded by copy would not be).
        let mut base = vec![0x37, 0xA4, 0x30, 0xEC];
        base.extend((0..3000u32).flat_map(|i| format!("{i},row\n").into_bytes()));
        let mut data = base.clone();
        data[100] ^= 1;
        let f = encode(&base, &data, 3).unwrap();
        assert_eq!(decode(&base, &f, data.len()).unwrap(), data);
    }

    proptest::proptest! {
        #[test]
        fn round_trip(base in proptest::collection::vec(0u8..8, 0..5000),
                      data in proptest::collection::vec(0u8..8, 0..5000)) {
            let f = encode(&base, &data, 3).unwrap();
            proptest::prop_assert_eq!(decode(&base, &f, data.len()).unwrap(), data);
        }
    }
}
