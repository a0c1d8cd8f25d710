//! JSON records: splitting a stream of JSON into records without holding
//! the stream, compacting a record to one line, and flattening a record into
//! `(dotted column, text)` pairs in document order.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// How records sit in a JSON file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// JSON Lines: every top-level value is a record.
    Lines,
    /// A top-level array of records, or a top-level object whose
    /// array-valued members hold records (the member name is the record's
    /// key, e.g. `users`, `groups`, `events`): decided by the first byte.
    Document,
}

/// One record: the member it came from (`None` for arrays and JSON Lines)
/// and its raw bytes.
pub type Record = (Option<String>, Vec<u8>);

/// Splits a JSON byte stream into records, keeping only the record being
/// read (memory is bounded by the largest record, not the file).
///
/// Records are objects or arrays; scalar values where records are expected
/// are skipped (they are not rows of a table).
pub struct Splitter {
    /// Depth at which record values start; decided by the first byte for
    /// [`Shape::Document`].
    rec_depth: Option<usize>,
    stack: Vec<u8>,
    in_string: bool,
    escape: bool,
    /// Inside an array that is a member of the top-level object.
    in_member_array: bool,
    /// Top-level object: the next string is a member name.
    expect_key: bool,
    key_buf: Option<Vec<u8>>,
    key: Option<String>,
    rec: Option<Vec<u8>>,
    what: String,
}

impl Splitter {
    /// A splitter for a file of `shape`; `what` names it in errors.
    pub fn new(shape: Shape, what: &str) -> Self {
        Splitter {
            rec_depth: if shape == Shape::Lines { Some(0) } else { None },
            stack: Vec::new(),
            in_string: false,
            escape: false,
            in_member_array: false,
            expect_key: false,
            key_buf: None,
            key: None,
            rec: None,
            what: what.to_string(),
        }
    }

    fn at_record_level(&self) -> bool {
        match self.rec_depth {
            Some(0) => self.stack.is_empty(),
            Some(1) => self.stack.len() == 1,
            Some(2) => self.stack.len() == 2 && self.in_member_array,
            _ => false,
        }
    }

    /// Feeds bytes; calls `emit` for every complete record.
    pub fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(Record) -> Result<()>) -> Result<()> {
        for &b in data {
            if let Some(r) = &mut self.rec {
                r.push(b);
            }
            if let Some(k) = &mut self.key_buf {
                k.push(b);
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if b == b'\\' {
                    self.escape = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if let Some(k) = self.key_buf.take() {
                        self.key = Some(serde_json::from_slice::<String>(&k).map_err(|e| {
                            Error::Invalid(format!("{}: bad member name: {e}", self.what))
                        })?);
                    }
                }
                continue;
            }
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => continue,
                0xEF | 0xBB | 0xBF if self.rec_depth.is_none() => continue, // BOM
                _ => {}
            }
            if self.rec_depth.is_none() {
                self.rec_depth = Some(match b {
                    b'[' => 1,
                    b'{' => 2,
                    _ => {
                        return Err(Error::Invalid(format!(
                            "{}: not a JSON array or object of records",
                            self.what
                        )))
                    }
                });
                self.expect_key = b == b'{';
                self.stack.push(b);
                continue;
            }
            // A record starts.
            if self.rec.is_none() && (b == b'{' || b == b'[') && self.at_record_level() {
                self.rec = Some(vec![b]);
                self.stack.push(b);
                continue;
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    if self.rec_depth == Some(2) && self.stack.len() == 1 && self.expect_key {
                        self.key_buf = Some(vec![b'"']);
                    }
                }
                b':' if self.stack.len() == 1 => self.expect_key = false,
                b',' if self.stack.len() == 1 => self.expect_key = true,
                b'{' | b'[' => {
                    if self.rec_depth == Some(2) && self.stack.len() == 1 && b == b'[' {
                        self.in_member_array = true;
                    }
                    self.stack.push(b);
                }
                b'}' | b']' => {
                    let open = self
                        .stack
                        .pop()
                        .ok_or_else(|| Error::Invalid(format!("{}: unbalanced JSON", self.what)))?;
                    if (open == b'{') != (b == b'}') {
                        return Err(Error::Invalid(format!(
                            "{}: mismatched JSON brackets",
                            self.what
                        )));
                    }
                    if self.rec.is_some() && self.at_record_level() {
                        if let Some(r) = self.rec.take() {
                            emit((self.key.clone(), r))?;
                        }
                    }
                    if self.stack.len() == 1 && self.rec_depth == Some(2) {
                        self.in_member_array = false;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks the stream ended between records.
    pub fn finish(&self) -> Result<()> {
        if self.rec.is_some() || self.in_string || !self.stack.is_empty() {
            return Err(Error::Invalid(format!(
                "{}: JSON ends inside a value",
                self.what
            )));
        }
        Ok(())
    }
}

/// Copies JSON text without the whitespace outside strings: the record's
/// bytes otherwise unchanged (numbers keep their exact spelling).
pub fn compact(raw: &[u8], out: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escape = false;
    for &b in raw {
        if in_string {
            out.push(b);
            if escape {
                escape = false;
            } else if b == b'\\' {
                escape = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'"' => {
                in_string = true;
                out.push(b);
            }
            _ => out.push(b),
        }
    }
}

/// The members of a JSON object in document order.
struct Ordered<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Ordered<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, &'de RawValue>()? {
                    v.push((k, val));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Flattens a record into `(column, text)` pairs in document order: nested
/// objects become dotted names (`details.field`), lists become their JSON
/// text, strings their value, `null` an empty field, numbers and booleans
/// their JSON spelling. A record that is not an object becomes one column
/// `value`.
pub fn flatten(raw: &[u8], out: &mut Vec<(String, String)>) -> Result<()> {
    out.clear();
    let text = std::str::from_utf8(raw)
        .map_err(|e| Error::Invalid(format!("record is not UTF-8: {e}")))?;
    if !text.trim_start().starts_with('{') {
        let mut c = Vec::new();
        compact(raw, &mut c);
        out.push(("value".into(), String::from_utf8_lossy(&c).into_owned()));
        return Ok(());
    }
    flatten_object(text, "", out)
}

fn bad(e: serde_json::Error) -> Error {
    Error::Invalid(format!("bad JSON record: {e}"))
}

fn flatten_object(text: &str, prefix: &str, out: &mut Vec<(String, String)>) -> Result<()> {
    let obj: Ordered = serde_json::from_str(text).map_err(bad)?;
    for (k, v) in obj.0 {
        let name = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        let t = v.get().trim();
        match t.as_bytes().first() {
            Some(b'{') => {
                if t[1..].trim_start().starts_with('}') {
                    out.push((name, "{}".into()));
                } else {
                    flatten_object(t, &name, out)?;
                }
            }
            Some(b'[') => {
                let mut c = Vec::new();
                compact(t.as_bytes(), &mut c);
                out.push((name, String::from_utf8_lossy(&c).into_owned()));
            }
            Some(b'"') => out.push((name, serde_json::from_str::<String>(t).map_err(bad)?)),
            Some(b'n') => out.push((name, String::new())),
            _ => out.push((name, t.to_string())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(shape: Shape, text: &str, step: usize) -> Vec<(Option<String>, String)> {
        let mut s = Splitter::new(shape, "t");
        let mut got = Vec::new();
        for part in text.as_bytes().chunks(step) {
            s.feed(part, &mut |(k, r)| {
                got.push((k, String::from_utf8(r).unwrap()));
                Ok(())
            })
            .unwrap();
        }
        s.finish().unwrap();
        got
    }

    #[test]
    fn splits_arrays_members_and_lines_at_any_chunk_boundary() {
        for step in [1, 2, 3, 7, 1000] {
            let a = split(
                Shape::Document,
                "[\n{\"a\":1,\"b\":\"x]}\\\"\"},\n{\"a\":[2]}\n]",
                step,
            );
            assert_eq!(
                a,
                vec![
                    (None, "{\"a\":1,\"b\":\"x]}\\\"\"}".into()),
                    (None, "{\"a\":[2]}".into())
                ]
            );
            let o = split(
                Shape::Document,
                "{\"file\":1,\"ev\\u0065nts\":[{\"id\":1},\n{\"id\":2}],\"meta\":{\"x\":[{\"no\":1}]},\"g\":[{\"id\":3}],\"t\":\"[{\"}",
                step,
            );
            assert_eq!(
                o,
                vec![
                    (Some("events".into()), "{\"id\":1}".into()),
                    (Some("events".into()), "{\"id\":2}".into()),
                    (Some("g".into()), "{\"id\":3}".into()),
                ]
            );
            let l = split(Shape::Lines, "{\"a\":1}\n{\"a\":2}\n", step);
            assert_eq!(l.len(), 2);
        }
    }

    #[test]
    fn broken_json_is_an_error() {
        let mut s = Splitter::new(Shape::Document, "t");
        s.feed(b"[{\"a\":1}", &mut |_| Ok(())).unwrap();
        assert!(s.finish().is_err());
        let mut s = Splitter::new(Shape::Document, "t");
        assert!(s.feed(b"[{\"a\":1]", &mut |_| Ok(())).is_err());
        assert!(Splitter::new(Shape::Document, "t")
            .feed(b"42", &mut |_| Ok(()))
            .is_err());
    }

    #[test]
    fn flattens_in_document_order() {
        let mut out = Vec::new();
        flatten(
            br#"{"z":1.50,"a":{"b":{"c":"x\ny"},"e":{}},"l":[1, {"k": "v"}],"n":null,"t":true,"s":"Jos\u00e9"}"#,
            &mut out,
        )
        .unwrap();
        let want = [
            ("z", "1.50"),
            ("a.b.c", "x\ny"),
            ("a.e", "{}"),
            ("l", "[1,{\"k\":\"v\"}]"),
            ("n", ""),
            ("t", "true"),
            ("s", "José"),
        ];
        let got: Vec<(&str, &str)> = out.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(got, want);
        flatten(b"[1,2]", &mut out).unwrap();
        assert_eq!(out, vec![("value".to_string(), "[1,2]".to_string())]);
    }

    #[test]
    fn compact_keeps_strings() {
        let mut c = Vec::new();
        compact(b"{ \"a b\" : [ 1 , 2 ],\n \"c\":\"x  y\\\" z\" }", &mut c);
        assert_eq!(c, b"{\"a b\":[1,2],\"c\":\"x  y\\\" z\"}");
    }
}
