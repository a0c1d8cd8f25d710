//! Little-endian byte encoding shared by every on-disk structure
//! (format-spec.md §3 "Encoding conventions").
//!
//! Decoding treats its input as untrusted: every read is bounds-checked and
//! every length prefix is checked against a caller-supplied limit before
//! anything is allocated. Nothing here panics on bad input.

use crate::error::{Error, Result};

/// Appends little-endian values to a byte vector.
#[derive(Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// Writes one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Writes a u16, little-endian.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes a u32, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes a u64, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes an i64, little-endian two's complement.
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Writes raw bytes with no length prefix.
    pub fn raw(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// Writes a u32 length then the bytes. Callers keep lengths within the
    /// spec's limits, which are all far below `u32::MAX`.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.raw(v);
    }
    /// Writes a UTF-8 string as [`Writer::bytes`].
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

/// Reads little-endian values from untrusted bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; `what` names the object in error messages.
    pub fn new(buf: &'a [u8], what: &'a str) -> Self {
        Reader { buf, pos: 0, what }
    }

    /// A corruption error naming this object and the current offset.
    pub fn err(&self, reason: impl Into<String>) -> Error {
        Error::corrupt(format!("{} at byte {}", self.what, self.pos), reason.into())
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated: need {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a little-endian u16.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian i64.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Reads a u32 count and checks it against `limit` and against the bytes
    /// left (each item takes at least `min_item` bytes), before the caller
    /// allocates anything for the items.
    pub fn count(&mut self, limit: u32, min_item: usize) -> Result<usize> {
        let n = self.u32()?;
        if n > limit {
            return Err(self.err(format!("count {n} exceeds limit {limit}")));
        }
        let n = n as usize;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(self.err(format!("count {n} does not fit in the bytes left")));
        }
        Ok(n)
    }

    /// Reads a u32-length-prefixed byte string of at most `limit` bytes.
    pub fn bytes(&mut self, limit: u32) -> Result<&'a [u8]> {
        let n = self.u32()?;
        if n > limit {
            return Err(self.err(format!("length {n} exceeds limit {limit}")));
        }
        self.take(n as usize)
    }

    /// Reads a length-prefixed UTF-8 string of at most `limit` bytes.
    pub fn str(&mut self, limit: u32) -> Result<String> {
        let b = self.bytes(limit)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(self.err(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_limits() {
        let mut w = Writer::new();
        w.u8(7);
        w.u32(0xdead_beef);
        w.i64(-5);
        w.str("héllo");
        let mut r = Reader::new(&w.buf, "test");
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 0xdead_beef);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.str(100).unwrap(), "héllo");
        r.finish().unwrap();

        let mut r = Reader::new(&w.buf[5..], "test");
        r.i64().unwrap();
        assert!(r.str(3).is_err(), "limit below the length must fail");
    }

    #[test]
    fn count_refuses_more_items_than_bytes() {
        let mut w = Writer::new();
        w.u32(1000);
        let mut r = Reader::new(&w.buf, "test");
        assert!(r.count(u32::MAX, 1).is_err());
    }
}
