//! Content-defined chunking: FastCDC v2020 with a secret gear table
//! (format-spec.md §11).
//!
//! fastcdc's own `seed` XORs one u64 into the public table, which leaves the
//! table's structure visible to boundary-fingerprinting attacks; arca replaces
//! the whole table with one derived from the repository's chunker secret.

use std::io::Read;

use fastcdc::v2020::{cut_gear, select_masks, Normalization};

use crate::error::{Error, Result};

/// Why [`Chunker::stream`] stopped.
#[derive(Debug)]
pub enum StreamError {
    /// Reading the source failed.
    Read(std::io::Error),
    /// The callback failed.
    Sink(Error),
}
use crate::format::config::ChunkerParams;

/// A configured chunker. Cheap to share between threads.
pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    gear_ls: Box<[u64; 256]>,
    masks: (u64, u64, u64, u64),
}

impl Chunker {
    /// A chunker with the given parameters and gear table.
    pub fn new(params: ChunkerParams, gear: Box<[u64; 256]>) -> Result<Self> {
        params.validate()?;
        let mut gear_ls = Box::new([0u64; 256]);
        for (d, s) in gear_ls.iter_mut().zip(gear.iter()) {
            *d = s << 1;
        }
        let level = match params.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let (s, l) = select_masks(params.avg as usize, level);
        Ok(Chunker {
            params,
            gear,
            gear_ls,
            masks: (s, l, s << 1, l << 1),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &ChunkerParams {
        &self.params
    }

    /// Length of the next chunk at the start of `data`. When `eof` is false
    /// the caller must pass at least `max` bytes, so that a boundary is never
    /// forced by the end of a read buffer.
    pub fn next_cut(&self, data: &[u8]) -> usize {
        let (ms, ml, msl, mll) = self.masks;
        let (_, n) = cut_gear(
            data,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            ms,
            ml,
            msl,
            mll,
            &self.gear[..],
            &self.gear_ls[..],
        );
        n
    }

    /// Chunk lengths of a whole in-memory buffer.
    pub fn chunk_lengths(&self, data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let n = self.next_cut(&data[pos..]).max(1);
            out.push(n);
            pos += n;
        }
        out
    }

    /// Streams `reader` in blocks of about `block` bytes and calls `f` with
    /// each block's data and the lengths of the chunks it holds. Chunk
    /// boundaries are identical to [`Chunker::chunk_lengths`] of the whole
    /// stream. Returns the total bytes read. A failed read and a failed `f`
    /// are told apart: the first is the source's problem, the second ours.
    pub fn stream<R: Read>(
        &self,
        reader: R,
        block: usize,
        f: impl FnMut(&[u8], &[usize]) -> Result<()>,
    ) -> Result<u64, StreamError> {
        self.stream_with(
            reader,
            block,
            &mut Vec::new(),
            |rest| self.next_cut(rest),
            f,
        )
    }

    /// [`Chunker::stream`] reading into `buf` (cleared first), so that a
    /// caller can reuse one buffer across files (a fresh multi-MiB buffer
    /// is mapped, and page-faulted in, on every allocation), with the cut
    /// points given by `cut`. `cut` is called in order with the bytes from
    /// each chunk's start (at least `max` of them, or all that is left) and
    /// must return what [`Chunker::next_cut`] would for those bytes; it may
    /// know it without scanning, for example from a chunk the previous
    /// version of the file had at that place, verified by its hash.
    pub fn stream_with<R: Read>(
        &self,
        mut reader: R,
        block: usize,
        buf: &mut Vec<u8>,
        mut cut: impl FnMut(&[u8]) -> usize,
        mut f: impl FnMut(&[u8], &[usize]) -> Result<()>,
    ) -> Result<u64, StreamError> {
        let max = self.params.max as usize;
        // `block` may be small (a small file's size): it grows below when
        // a read leaves too little to cut, so every round makes progress.
        let mut block = block.max(1);
        buf.clear();
        buf.reserve(block + 1);
        let mut total = 0u64;
        let mut eof = false;
        loop {
            if !eof && buf.len() < block {
                // Reads into the spare capacity without zeroing it first,
                // until `block` bytes are buffered or the source ends.
                let want = (block - buf.len()) as u64;
                buf.reserve(block - buf.len());
                match (&mut reader).take(want).read_to_end(buf) {
                    Ok(n) => {
                        total += n as u64;
                        if (n as u64) < want {
                            eof = true;
                        }
                    }
                    Err(e) => return Err(StreamError::Read(e)),
                }
            }
            // Cut every chunk whose boundary cannot depend on bytes not yet read.
            let mut lens = Vec::new();
            let mut pos = 0;
            while pos < buf.len() && (eof || buf.len() - pos >= max) {
                let n = cut(&buf[pos..]).clamp(1, buf.len() - pos);
                lens.push(n);
                pos += n;
            }
            if pos > 0 {
                f(&buf[..pos], &lens).map_err(StreamError::Sink)?;
                buf.drain(..pos);
            } else if !eof {
                // Less than `max` bytes read and more to come (the file is
                // larger than the hint): read more before cutting.
                block = (2 * block).max(buf.len() + max);
            }
            if eof && buf.is_empty() {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunker() -> Chunker {
        let mut g = Box::new([0u64; 256]);
        for (i, v) in g.iter_mut().enumerate() {
            *v = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        Chunker::new(
            ChunkerParams {
                min: 256,
                avg: 1024,
                max: 4096,
                normalization: 1,
            },
            g,
        )
        .unwrap()
    }

    use crate::testutil::noise;

    proptest! {
        #[test]
        fn streaming_matches_whole_buffer(len in 0usize..60_000, seed in any::<u64>(), block in 1usize..20_000) {
            let c = chunker();
            let data = noise(len, seed);
            let whole = c.chunk_lengths(&data);
            let mut streamed = Vec::new();
            let mut joined = Vec::new();
            c.stream(&data[..], block, |b, l| { joined.extend_from_slice(b); streamed.extend_from_slice(l); Ok(()) }).unwrap();
            prop_assert_eq!(&whole, &streamed);
            prop_assert_eq!(joined, data);
            prop_assert!(whole.iter().all(|&n| n <= 4096));
            if let Some((_, rest)) = whole.split_last() { prop_assert!(rest.iter().all(|&n| n >= 256)); }
        }

        #[test]
        fn a_reused_buffer_changes_nothing(len in 0usize..60_000, seed in any::<u64>(), block in 1usize..20_000, junk in 0usize..30_000) {
            // A buffer left over from another file (content and capacity)
            // gives the same chunks and bytes as a fresh one.
            let c = chunker();
            let data = noise(len, seed);
            let mut buf = noise(junk, seed ^ 0x55);
            let mut streamed = Vec::new();
            let mut joined = Vec::new();
            let n = c.stream_with(&data[..], block, &mut buf, |r| c.next_cut(r), |b, l| { joined.extend_from_slice(b); streamed.extend_from_slice(l); Ok(()) }).unwrap();
            prop_assert_eq!(n, len as u64);
            prop_assert_eq!(c.chunk_lengths(&data), streamed);
            prop_assert_eq!(joined, data);
        }
    }

    #[test]
    fn an_edit_moves_only_nearby_boundaries() {
        let c = chunker();
        let a = noise(200_000, 7);
        let mut b = a.clone();
        b[100_000] ^= 0xff;
        let ca = c.chunk_lengths(&a);
        let cb = c.chunk_lengths(&b);
        let same = ca.iter().zip(&cb).take_while(|(x, y)| x == y).count();
        assert!(same > ca.len() / 3, "boundaries before the edit are stable");
        assert!(ca.len() - same < ca.len() / 2 + 3);
    }

    #[test]
    fn different_gear_tables_cut_differently() {
        let c1 = chunker();
        let mut g = Box::new([0u64; 256]);
        for (i, v) in g.iter_mut().enumerate() {
            *v = (i as u64 + 7).wrapping_mul(0xD1B5_4A32_D192_ED03);
        }
        let c2 = Chunker::new(*c1.params(), g).unwrap();
        let d = noise(100_000, 3);
        assert_ne!(c1.chunk_lengths(&d), c2.chunk_lengths(&d));
    }
}
