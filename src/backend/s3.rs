//! A repository in S3-compatible object storage (AWS S3, MinIO, Ceph RGW,
//! Garage, …), for repositories that outgrow one disk.
//!
//! Location: `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`, addressed
//! path-style (which every S3-compatible store accepts). Credentials come
//! from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
//! `AWS_SESSION_TOKEN`), the region from `AWS_REGION` or
//! `AWS_DEFAULT_REGION` (default `us-east-1`). The objects are laid out as
//! the local directory's files (format-spec.md §1) under PREFIX.
//!
//! Requests are signed with SigV4 (rusty-s3, presigned for one minute) and
//! sent with ureq over one pool of connections. Every request is idempotent
//! (objects are named by their content), so a network error, a timeout or a
//! 5xx answer is retried, with backoff, up to [`ATTEMPTS`] times. A PUT is
//! atomic on S3: an object is whole under its name or absent, which is the
//! [`Backend`] contract; a pack is therefore kept in memory until it is
//! complete and sent in one PUT (16 MiB by default).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use rusty_s3::actions::{ListObjectsV2, S3Action};
pub use rusty_s3::Credentials;
use rusty_s3::{Bucket, UrlStyle};

use super::{Backend, Durable, FileKind, Listed, Upload};
use crate::error::{Error, Result};

/// Tries per request before its error is returned.
pub const ATTEMPTS: u32 = 4;

/// How long a presigned request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(60);

/// The largest object arca reads whole (packs are a few MiB to 1 GiB).
const MAX_READ: u64 = 4 << 30;

struct Inner {
    bucket: Bucket,
    creds: Credentials,
    /// Key prefix, empty or ending in `/`.
    prefix: String,
    agent: ureq::Agent,
    location: String,
    /// Keys per listing page; the store's default (1,000 on S3) if `None`.
    list_page: Option<usize>,
    /// Pack blocks read lately, most recent last.
    blocks: std::sync::Mutex<Vec<Block>>,
}

/// A block of a pack: its key, its number and its bytes.
type Block = (String, u64, Arc<Vec<u8>>);

/// Packs are read in aligned blocks of this size, the last [`BLOCKS_KEPT`]
/// kept: restore and check read a pack's blobs mostly in order, a few
/// hundred bytes to a few MiB each, and one request per blob would pay the
/// store's latency (tens of ms on S3) thousands of times.
pub const BLOCK: u64 = 4 << 20;
/// Blocks kept (32 MiB at most).
pub const BLOCKS_KEPT: usize = 8;

/// Stores a repository in an S3 bucket, under a prefix.
pub struct S3Backend {
    inner: Arc<Inner>,
}

/// Whether a repository location names S3 storage.
pub fn is_s3_location(loc: &str) -> bool {
    loc.starts_with("s3:")
}

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

impl S3Backend {
    /// A backend for `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`, with
    /// credentials and region from the environment.
    pub fn from_location(loc: &str) -> Result<Self> {
        let region =
            env(&["AWS_REGION", "AWS_DEFAULT_REGION"]).unwrap_or_else(|| "us-east-1".into());
        let key = env(&["AWS_ACCESS_KEY_ID"]);
        let secret = env(&["AWS_SECRET_ACCESS_KEY"]);
        let (Some(key), Some(secret)) = (key, secret) else {
            // The location is checked first, for the clearer message.
            Self::new(loc, Credentials::new("", ""), &region)?;
            return Err(Error::Invalid(format!(
                "{loc}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3 storage"
            )));
        };
        let creds = match env(&["AWS_SESSION_TOKEN"]) {
            Some(t) => Credentials::new_with_token(key, secret, t),
            None => Credentials::new(key, secret),
        };
        Self::new(loc, creds, &region)
    }

    /// A backend for `loc` with these credentials, in `region`.
    pub fn new(loc: &str, creds: Credentials, region: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "{loc}: {why} (expected s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX])"
            ))
        };
        let rest = loc
            .strip_prefix("s3:")
            .ok_or_else(|| bad("not an s3: location"))?;
        let url = url::Url::parse(rest).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        let mut parts = url.path().trim_matches('/').splitn(2, '/');
        let bucket = parts
            .next()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("no bucket"))?
            .to_string();
        let prefix = parts.next().unwrap_or("").trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let mut endpoint = url.clone();
        endpoint.set_path("/");
        let region = region.to_string();
        let bucket = Bucket::new(endpoint, UrlStyle::Path, bucket, region)
            .map_err(|e| bad(&e.to_string()))?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .timeout_send_body(Some(Duration::from_secs(300)))
            .build()
            .new_agent();
        Ok(S3Backend {
            inner: Arc::new(Inner {
                bucket,
                creds,
                prefix,
                agent,
                location: loc.to_string(),
                list_page: None,
                blocks: std::sync::Mutex::new(Vec::new()),
            }),
        })
    }

    /// Lists at most `n` keys per request (tests use it to page); before
    /// the backend is shared.
    pub fn with_list_page(mut self, n: usize) -> Self {
        if let Some(i) = Arc::get_mut(&mut self.inner) {
            i.list_page = Some(n);
        }
        self
    }
}

/// The object key of a file: the local layout's path under the prefix.
fn key_of(prefix: &str, kind: FileKind, name: &str) -> String {
    match kind {
        FileKind::Config => format!("{prefix}config"),
        FileKind::Pack => {
            let sub = name.get(..2).unwrap_or("00");
            format!("{prefix}data/{sub}/{name}")
        }
        k => format!("{prefix}{}/{name}", k.dir()),
    }
}

/// An answer: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
    length: Option<u64>,
}

fn io_err(what: &str, kind: std::io::ErrorKind, msg: String) -> Error {
    Error::io(what, std::io::Error::new(kind, msg))
}

impl Inner {
    fn key(&self, kind: FileKind, name: &str) -> String {
        key_of(&self.prefix, kind, name)
    }

    fn what(&self, key: &str) -> String {
        format!("{}:{key}", self.location)
    }

    /// Sends a request made by `make` (signed anew each try), retrying
    /// network errors and 5xx answers; reads the body unless `head`.
    fn send(
        &self,
        what: &str,
        make: &dyn Fn() -> std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        head: bool,
    ) -> Result<Answer> {
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(200 << attempt));
            }
            match make() {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let length = resp
                        .headers()
                        .get("content-length")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    if head {
                        if status >= 500 {
                            last = format!("HTTP {status}");
                            continue;
                        }
                        return Ok(Answer {
                            status,
                            body: Vec::new(),
                            length,
                        });
                    }
                    let mut body = Vec::new();
                    let read = resp
                        .body_mut()
                        .with_config()
                        .limit(MAX_READ)
                        .reader()
                        .read_to_end(&mut body);
                    match read {
                        Ok(_) if status >= 500 => {
                            last = format!("HTTP {status}: {}", excerpt(&body));
                        }
                        Ok(_) => {
                            return Ok(Answer {
                                status,
                                body,
                                length,
                            })
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(io_err(
            what,
            std::io::ErrorKind::Other,
            format!("S3 request failed after {ATTEMPTS} tries: {last}"),
        ))
    }

    /// The error for an answer that is not a success.
    fn refused(&self, what: &str, a: &Answer) -> Error {
        let kind = match a.status {
            404 => std::io::ErrorKind::NotFound,
            401 | 403 => std::io::ErrorKind::PermissionDenied,
            _ => std::io::ErrorKind::Other,
        };
        io_err(
            what,
            kind,
            format!("S3 answered HTTP {}: {}", a.status, excerpt(&a.body)),
        )
    }

    fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Vec<u8>> {
        let what = self.what(key);
        let a = self.send(
            &what,
            &|| {
                let url = self
                    .bucket
                    .get_object(Some(&self.creds), key)
                    .sign(SIGNED_FOR);
                let mut req = self.agent.get(url.as_str());
                if let Some((off, len)) = range {
                    req = req.header("Range", &format!("bytes={off}-{}", off + len - 1));
                }
                req.call()
            },
            false,
        )?;
        match a.status {
            200 | 206 => Ok(a.body),
            _ => Err(self.refused(&what, &a)),
        }
    }
}

/// A request on one object that sends no body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bodiless {
    Head,
    Delete,
}

impl Inner {
    /// A HEAD (its answer's body not read) or a DELETE of `key`.
    fn bodiless(&self, what: &str, key: &str, op: Bodiless) -> Result<Answer> {
        self.send(
            what,
            &|| match op {
                Bodiless::Head => {
                    let url = self
                        .bucket
                        .head_object(Some(&self.creds), key)
                        .sign(SIGNED_FOR);
                    self.agent.head(url.as_str()).call()
                }
                Bodiless::Delete => {
                    let url = self
                        .bucket
                        .delete_object(Some(&self.creds), key)
                        .sign(SIGNED_FOR);
                    self.agent.delete(url.as_str()).call()
                }
            },
            op == Bodiless::Head,
        )
    }

    /// Up to `len` bytes at `offset` (fewer where the object ends).
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self.get(key, Some((offset, len))) {
            Ok(b) => Ok(b),
            // Range not satisfiable: the object ends before `offset`.
            Err(Error::Io { source, .. }) if source.to_string().contains("HTTP 416") => {
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Block `idx` of a pack, from the cache or fetched (shorter at the
    /// pack's end, empty past it).
    fn block(&self, key: &str, idx: u64) -> Result<Arc<Vec<u8>>> {
        {
            let mut c = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = c.iter().position(|(k, n, _)| *n == idx && k == key) {
                let hit = c.remove(p);
                let b = Arc::clone(&hit.2);
                c.push(hit);
                return Ok(b);
            }
        }
        let b = Arc::new(self.get_range(key, idx * BLOCK, BLOCK)?);
        let mut c = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        if c.len() >= BLOCKS_KEPT {
            c.remove(0);
        }
        c.push((key.to_string(), idx, Arc::clone(&b)));
        Ok(b)
    }

    /// Up to `len` bytes of a pack at `offset`, through its blocks.
    fn read_blocks(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let end = offset.saturating_add(len);
        let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(BLOCK as usize));
        let mut pos = offset;
        while pos < end {
            let idx = pos / BLOCK;
            let b = self.block(key, idx)?;
            let at = (pos - idx * BLOCK) as usize;
            if at >= b.len() {
                break;
            }
            let take = (end - pos).min((b.len() - at) as u64) as usize;
            out.extend_from_slice(&b[at..at + take]);
            pos += take as u64;
            if (b.len() as u64) < BLOCK {
                break;
            }
        }
        Ok(out)
    }
}

/// The start of an error body, for messages.
fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(&body[..body.len().min(300)]);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Backend for S3Backend {
    fn location(&self) -> String {
        self.inner.location.clone()
    }

    fn create(&self) -> Result<()> {
        let i = &self.inner;
        let what = i.what("");
        let a = i.send(
            &what,
            &|| {
                let url = i.bucket.head_bucket(Some(&i.creds)).sign(SIGNED_FOR);
                i.agent.head(url.as_str()).call()
            },
            true,
        )?;
        match a.status {
            200 => Ok(()),
            404 => {
                // A bucket of its own for the repository, as restic does.
                let a = i.send(
                    &what,
                    &|| {
                        let url = i.bucket.create_bucket(&i.creds).sign(SIGNED_FOR);
                        i.agent.put(url.as_str()).send_empty()
                    },
                    false,
                )?;
                if a.status == 200 {
                    Ok(())
                } else {
                    Err(i.refused(&what, &a))
                }
            }
            _ => Err(i.refused(&what, &a)),
        }
    }

    fn list(&self, kind: FileKind) -> Result<Vec<Listed>> {
        let i = &self.inner;
        if kind == FileKind::Config {
            return match self.size(kind, "config") {
                Ok(size) => Ok(vec![Listed {
                    name: "config".into(),
                    size,
                }]),
                Err(e) if super::is_not_found(&e) => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let dir = format!("{}{}/", i.prefix, kind.dir());
        let what = i.what(&dir);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let a = i.send(
                &what,
                &|| {
                    let mut l = i.bucket.list_objects_v2(Some(&i.creds));
                    l.with_prefix(dir.as_str());
                    if let Some(n) = i.list_page {
                        l.with_max_keys(n);
                    }
                    if let Some(t) = &token {
                        l.with_continuation_token(t.as_str());
                    }
                    i.agent.get(l.sign(SIGNED_FOR).as_str()).call()
                },
                false,
            )?;
            if a.status != 200 {
                return Err(i.refused(&what, &a));
            }
            let text = String::from_utf8_lossy(&a.body);
            let page = ListObjectsV2::parse_response(&text).map_err(|e| {
                io_err(
                    &what,
                    std::io::ErrorKind::InvalidData,
                    format!("S3 listing does not parse: {e}"),
                )
            })?;
            for c in page.contents {
                let Some(rest) = c.key.strip_prefix(&dir) else {
                    continue;
                };
                // Packs sit one level down (data/3f/3f…).
                let name = match kind {
                    FileKind::Pack => match rest.split_once('/') {
                        Some((sub, n)) if n.get(..2) == Some(sub) => n,
                        _ => continue,
                    },
                    _ if rest.contains('/') => continue,
                    _ => rest,
                };
                out.push(Listed {
                    name: name.to_string(),
                    size: c.size.unwrap_or(0),
                });
            }
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, kind: FileKind, name: &str) -> Result<Vec<u8>> {
        let i = &self.inner;
        i.get(&i.key(kind, name), None)
    }

    fn reads_whole(&self) -> bool {
        true
    }

    fn read_range(&self, kind: FileKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let i = &self.inner;
        if len == 0 {
            return Ok(Vec::new());
        }
        let key = i.key(kind, name);
        let what = i.what(&key);
        let got = if kind == FileKind::Pack {
            i.read_blocks(&key, offset, len)?
        } else {
            i.get_range(&key, offset, len)?
        };
        if got.len() as u64 != len {
            return Err(Error::corrupt(
                what,
                format!("truncated: cannot read {len} bytes at offset {offset}"),
            ));
        }
        Ok(got)
    }

    fn size(&self, kind: FileKind, name: &str) -> Result<u64> {
        let i = &self.inner;
        let key = i.key(kind, name);
        let what = i.what(&key);
        let a = i.bodiless(&what, &key, Bodiless::Head)?;
        match (a.status, a.length) {
            (200, Some(n)) => Ok(n),
            (200, None) => Err(io_err(
                &what,
                std::io::ErrorKind::InvalidData,
                "S3 gave no Content-Length".into(),
            )),
            _ => Err(i.refused(&what, &a)),
        }
    }

    fn write(&self, kind: FileKind, name: &str, data: &[u8]) -> Result<()> {
        put(&self.inner, &self.inner.key(kind, name), data)
    }

    fn begin(&self, kind: FileKind) -> Result<Box<dyn Upload>> {
        Ok(Box::new(S3Upload {
            inner: Arc::clone(&self.inner),
            kind,
            buf: Vec::new(),
        }))
    }

    fn remove(&self, kind: FileKind, name: &str) -> Result<()> {
        let i = &self.inner;
        let key = i.key(kind, name);
        let what = i.what(&key);
        let a = i.bodiless(&what, &key, Bodiless::Delete)?;
        match a.status {
            200 | 204 | 404 => Ok(()),
            _ => Err(i.refused(&what, &a)),
        }
    }
}

fn put(i: &Inner, key: &str, data: &[u8]) -> Result<()> {
    let what = i.what(key);
    let a = i.send(
        &what,
        &|| {
            let url = i.bucket.put_object(Some(&i.creds), key).sign(SIGNED_FOR);
            i.agent.put(url.as_str()).send(data)
        },
        false,
    )?;
    match a.status {
        200 => Ok(()),
        507 => Err(Error::StorageFull(what)),
        _ => Err(i.refused(&what, &a)),
    }
}

/// A pack being filled: kept in memory, sent in one PUT once named.
struct S3Upload {
    inner: Arc<Inner>,
    kind: FileKind,
    buf: Vec<u8>,
}

impl Upload for S3Upload {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn finish(self: Box<Self>, name: &str) -> Result<Durable> {
        let S3Upload { inner, kind, buf } = *self;
        let key = inner.key(kind, name);
        Ok(Box::new(move || put(&inner, &key, &buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_local_layout_under_the_prefix() {
        let n = "3f".to_string() + &"a".repeat(62);
        assert_eq!(key_of("", FileKind::Config, "config"), "config");
        assert_eq!(
            key_of("r/acme/", FileKind::Pack, &n),
            format!("r/acme/data/3f/{n}")
        );
        assert_eq!(
            key_of("r/", FileKind::Snapshot, &n),
            format!("r/snapshots/{n}")
        );
        assert_eq!(key_of("", FileKind::Lock, &n), format!("locks/{n}"));
    }

    #[test]
    fn locations_parse_or_say_what_is_wrong() {
        for bad in [
            "s3:ftp://h/b",
            "s3:http://h",
            "s3:http://h/",
            "s3:not a url",
            "/srv/repo",
        ] {
            assert!(S3Backend::from_location(bad).is_err(), "{bad}");
        }
        assert!(is_s3_location("s3:https://s3.amazonaws.com/b"));
        assert!(!is_s3_location("/srv/s3:x"));
    }
}
