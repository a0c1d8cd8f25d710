//! Locks (format-spec.md §10). Body (sealed as a file object of type 6):
//! exclusive u8 ‖ host str ‖ pid u32 ‖ time i64 (unix seconds, refreshed) ‖
//! operation str ‖ nonce [16] (makes every lock file's name unique).

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::format::limits;

/// One lock as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRecord {
    /// Exclusive (prune, repair) or shared (backup, restore, check).
    pub exclusive: bool,
    /// Host of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Time the lock was taken or last refreshed, unix seconds.
    pub time: i64,
    /// What the holder is doing, e.g. "backup".
    pub operation: String,
    /// Random bytes that make the lock file unique.
    pub nonce: [u8; 16],
}

impl LockRecord {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(u8::from(self.exclusive));
        w.str(&self.host);
        w.u32(self.pid);
        w.i64(self.time);
        w.str(&self.operation);
        w.raw(&self.nonce);
        w.buf
    }

    /// Decodes a body.
    pub fn decode(body: &[u8], what: &str) -> Result<Self> {
        let mut r = Reader::new(body, what);
        let exclusive = match r.u8()? {
            0 => false,
            1 => true,
            v => return Err(Error::corrupt(what, format!("exclusive flag {v}"))),
        };
        let host = r.str(limits::MAX_NAME)?;
        let pid = r.u32()?;
        let time = r.i64()?;
        let operation = r.str(limits::MAX_NAME)?;
        let nonce = r.array()?;
        r.finish()?;
        Ok(LockRecord {
            exclusive,
            host,
            pid,
            time,
            operation,
            nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let l = LockRecord {
            exclusive: true,
            host: "h".into(),
            pid: 42,
            time: 7,
            operation: "prune".into(),
            nonce: [1; 16],
        };
        assert_eq!(LockRecord::decode(&l.encode(), "l").unwrap(), l);
    }
}
