//! Export records (format-spec.md §15): what `arca export` wrote, kept in
//! the repository so that every copy of account data that left it is known.
//!
//! Body (sealed as a file object of type 7): version u8 = 1 ‖ time i64 ‖
//! nanos u32 ‖ snapshot id [32] ‖ account str ‖ host str ‖ format u8 (1 csv,
//! 2 json) ‖ encrypted u8 ‖ split size u64 (0: one file) ‖ categories (u32
//! count, str…) ‖ tables (u32 count, str…) ‖ attachments u64 ‖ attachment
//! bytes u64 ‖ files (u32 count, (name str ‖ size u64)…).

use serde::Serialize;

use crate::codec::{Reader, Writer};
use crate::error::{Error, Result};
use crate::format::limits;
use crate::id::{FileId, SnapshotId};

/// The only body version this binary writes and reads.
pub const EXPORT_RECORD_VERSION: u8 = 1;

/// The output format of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// Tables as CSV files.
    Csv = 1,
    /// Tables as JSON Lines files.
    Json = 2,
}

impl ExportFormat {
    /// Lower-case name, as given on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Json => "json",
        }
    }
}

/// One output file of an export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportFile {
    /// File name (no directory).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// An export as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportRecord {
    /// When the export finished, unix seconds (UTC).
    pub time: i64,
    /// Sub-second part of the time.
    pub nanos: u32,
    /// The exported snapshot.
    #[serde(serialize_with = "ser_id")]
    pub snapshot: SnapshotId,
    /// Its account.
    pub account: String,
    /// Host that ran the export.
    pub host: String,
    /// Output format.
    pub format: ExportFormat,
    /// True when the ZIP entries are AES-256 encrypted.
    pub encrypted: bool,
    /// Largest part in bytes, 0 when not split.
    pub split_size: u64,
    /// Categories exported.
    pub categories: Vec<String>,
    /// Tables exported (names as in the ZIP, without extension).
    pub tables: Vec<String>,
    /// Attachments exported.
    pub attachments: u64,
    /// Their bytes.
    pub attachment_bytes: u64,
    /// The ZIP files written.
    pub files: Vec<ExportFile>,
}

fn ser_id<S: serde::Serializer>(id: &SnapshotId, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

impl ExportRecord {
    /// Checks the lengths against the limits a reader enforces (§3.3).
    pub fn validate(&self) -> Result<()> {
        let long = [&self.account, &self.host]
            .into_iter()
            .chain(&self.categories)
            .chain(&self.tables)
            .chain(self.files.iter().map(|f| &f.name))
            .any(|s| s.len() > limits::MAX_NAME as usize);
        let many = [self.categories.len(), self.tables.len(), self.files.len()]
            .iter()
            .any(|n| *n > limits::MAX_LIST as usize);
        if long || many || self.nanos >= 1_000_000_000 {
            return Err(Error::Invalid(format!(
                "export record over the limits: names at most {} bytes, lists at most {} items",
                limits::MAX_NAME,
                limits::MAX_LIST
            )));
        }
        Ok(())
    }

    /// Encodes the body (before sealing).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(EXPORT_RECORD_VERSION);
        w.i64(self.time);
        w.u32(self.nanos);
        w.raw(&self.snapshot.0);
        w.str(&self.account);
        w.str(&self.host);
        w.u8(self.format as u8);
        w.u8(u8::from(self.encrypted));
        w.u64(self.split_size);
        for list in [&self.categories, &self.tables] {
            w.u32(list.len() as u32);
            for s in list {
                w.str(s);
            }
        }
        w.u64(self.attachments);
        w.u64(self.attachment_bytes);
        w.u32(self.files.len() as u32);
        for f in &self.files {
            w.str(&f.name);
            w.u64(f.size);
        }
        w.buf
    }

    /// Decodes a body, checking every length; a newer body version is
    /// refused as unsupported.
    pub fn decode(body: &[u8], what: &str) -> Result<Self> {
        let mut r = Reader::new(body, what);
        let v = r.u8()?;
        if v != EXPORT_RECORD_VERSION {
            return Err(Error::Unsupported(format!(
                "{what} has export record version {v}; this arca reads version {EXPORT_RECORD_VERSION}"
            )));
        }
        let time = r.i64()?;
        let nanos = r.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(Error::corrupt(what, "nanoseconds out of range"));
        }
        let snapshot = FileId(r.array()?);
        let account = r.str(limits::MAX_NAME)?;
        let host = r.str(limits::MAX_NAME)?;
        let format = match r.u8()? {
            1 => ExportFormat::Csv,
            2 => ExportFormat::Json,
            f => return Err(Error::corrupt(what, format!("unknown format {f}"))),
        };
        let encrypted = match r.u8()? {
            0 => false,
            1 => true,
            f => return Err(Error::corrupt(what, format!("encrypted flag {f}"))),
        };
        let split_size = r.u64()?;
        let mut lists = [Vec::new(), Vec::new()];
        for l in &mut lists {
            for _ in 0..r.count(limits::MAX_LIST, 4)? {
                l.push(r.str(limits::MAX_NAME)?);
            }
        }
        let [categories, tables] = lists;
        let attachments = r.u64()?;
        let attachment_bytes = r.u64()?;
        let mut files = Vec::new();
        for _ in 0..r.count(limits::MAX_LIST, 12)? {
            let name = r.str(limits::MAX_NAME)?;
            files.push(ExportFile {
                name,
                size: r.u64()?,
            });
        }
        r.finish()?;
        Ok(ExportRecord {
            time,
            nanos,
            snapshot,
            account,
            host,
            format,
            encrypted,
            split_size,
            categories,
            tables,
            attachments,
            attachment_bytes,
            files,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let r = ExportRecord {
            time: 1_709_258_400,
            nanos: 7,
            snapshot: FileId([9; 32]),
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
                name: "x.part-001.zip".into(),
                size: 1234,
            }],
        };
        r.validate().unwrap();
        let b = r.encode();
        assert_eq!(ExportRecord::decode(&b, "e").unwrap(), r);
        for n in 0..b.len() {
            assert!(ExportRecord::decode(&b[..n], "e").is_err());
        }
        let mut v2 = b.clone();
        v2[0] = 2;
        assert!(matches!(
            ExportRecord::decode(&v2, "e"),
            Err(Error::Unsupported(_))
        ));
    }
}
