//! A repository opened with a password: keys, config, stored objects and
//! snapshots (format-spec.md §1–§8). [`IndexedRepository`] adds the local
//! index, which reading blobs and writing need.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::{is_not_found, Backend, FileKind};
use crate::chunk::Chunker;
use crate::crypto::{KdfParams, Keys, MasterSecrets, Secret32};
use crate::error::{Error, Result};
use crate::format::config::{ChunkerParams, Config, Operation};
use crate::format::indexfile::{self, PackListing};
use crate::format::keyfile::{self, KeyInfo};
use crate::format::pack::{self, DeltaRef, FOOTER_LEN};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Tree;
use crate::format::{check_header, limits, open_file, seal_file, BlobKind, ObjectType, HEADER_LEN};
use crate::id::{BlobId, FileId, PackId, RepoId, SnapshotId};
use crate::index::{IndexCache, Location};
use crate::keycache;
use crate::snapcache::SnapshotCache;

/// Options for a new repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Chunker parameters.
    pub chunker: ChunkerParams,
    /// zstd level.
    pub zstd_level: i32,
    /// Target pack size.
    pub pack_target: u32,
    /// Delta chain bound; 0 stores every blob whole.
    pub delta_depth: u8,
    /// Argon2id parameters of the first key.
    pub kdf: KdfParams,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::DEFAULT,
            zstd_level: crate::format::config::DEFAULT_ZSTD_LEVEL,
            pack_target: crate::format::config::DEFAULT_PACK_TARGET,
            delta_depth: crate::format::config::DEFAULT_DELTA_DEPTH,
            kdf: KdfParams::DEFAULT,
        }
    }
}

/// A key file as listed by `key list`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KeyListing {
    /// The key file's id.
    pub id: String,
    /// Creation time, unix seconds.
    pub created: i64,
    /// Host that created it.
    pub host: String,
    /// True for the key this process opened the repository with.
    pub current: bool,
}

/// An open repository: its storage, keys and config.
pub struct Repository {
    backend: Arc<dyn Backend>,
    keys: Keys,
    master: MasterSecrets,
    config: Config,
    key_name: String,
    chunker: Chunker,
    /// Whether the key-encryption key came from the kernel key cache.
    key_from_cache: bool,
    /// Where snapshot files are cached locally, if anywhere.
    snapshot_cache: Option<SnapshotCache>,
    /// Told of each damaged snapshot file a listing leaves out.
    damage_report: Option<DamageReport>,
}

/// Told the name of a snapshot file that [`Repository::snapshots`] left
/// out, and what is wrong with it.
pub type DamageReport = Arc<dyn Fn(&str, &Error) + Send + Sync>;

fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Seconds since the unix epoch.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A new key file and the key-encryption key derived for it.
fn new_key_file(
    password: &[u8],
    kdf: KdfParams,
    master: &MasterSecrets,
) -> Result<(Vec<u8>, Secret32)> {
    let mut salt = [0u8; 32];
    crate::crypto::fill_random(&mut salt)?;
    let info = KeyInfo {
        kdf,
        salt,
        created: now_unix(),
        host: hostname(),
    };
    let kek = info.kdf.derive_kek(password, &info.salt)?;
    let bytes = keyfile::encode_with_kek(&info, &kek, master)?;
    Ok((bytes, kek))
}

impl Repository {
    /// Creates a repository. Refuses a location that already holds one.
    pub fn init(backend: Arc<dyn Backend>, password: &[u8], opts: &InitOptions) -> Result<Self> {
        Self::init_cached(backend, password, opts, 0)
    }

    /// [`Repository::init`], and with `key_cache_ttl` > 0 the key-encryption
    /// key it derived goes into the kernel key cache ([`crate::keycache`]),
    /// so that the next command does not derive it again.
    pub fn init_cached(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
        key_cache_ttl: u64,
    ) -> Result<Self> {
        Self::init_with(
            backend,
            password,
            opts,
            key_cache_ttl,
            MasterSecrets::generate()?,
        )
    }

    /// [`Self::init`] with given master secrets instead of random ones, so
    /// that a test's chunk boundaries (the gear table comes from the keys)
    /// are the same every run. Not for repositories that hold data.
    #[doc(hidden)]
    pub fn init_with_master(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
        master: MasterSecrets,
    ) -> Result<Self> {
        Self::init_with(backend, password, opts, 0, master)
    }

    fn init_with(
        backend: Arc<dyn Backend>,
        password: &[u8],
        opts: &InitOptions,
        key_cache_ttl: u64,
        master: MasterSecrets,
    ) -> Result<Self> {
        if !backend.list(FileKind::Config)?.is_empty() {
            return Err(Error::AlreadyExists(backend.location()));
        }
        opts.chunker.validate()?;
        backend.create()?;
        let mut id = [0u8; 32];
        crate::crypto::fill_random(&mut id)?;
        let mut config = Config::new(RepoId(id));
        config.chunker = opts.chunker;
        config.zstd_level = opts.zstd_level;
        config.pack_target = opts.pack_target;
        if opts.delta_depth > crate::format::limits::MAX_DELTA_DEPTH {
            return Err(Error::Invalid(format!(
                "delta depth {} is over the limit of {}",
                opts.delta_depth,
                crate::format::limits::MAX_DELTA_DEPTH
            )));
        }
        config.delta_depth = opts.delta_depth;
        let keys = master.keys();
        // The key first, the config last: a repository exists once its config
        // does, and by then a key can open it.
        let (kf, kek) = new_key_file(password, opts.kdf, &master)?;
        let key_name = FileId::of(&kf).to_hex();
        backend.write(FileKind::Key, &key_name, &kf)?;
        let cf = seal_file(&keys.file, ObjectType::Config, &config.encode())?;
        backend.write(FileKind::Config, "config", &cf)?;
        if key_cache_ttl > 0 {
            keycache::store(&key_name, password, &kek, key_cache_ttl);
        }
        let chunker = Chunker::new(config.chunker, keys.gear_table())?;
        Ok(Repository {
            backend,
            keys,
            master,
            config,
            key_name,
            chunker,
            key_from_cache: false,
            snapshot_cache: None,
            damage_report: None,
        })
    }

    /// Opens a repository with a password.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Self> {
        Self::open_cached(backend, password, 0)
    }

    /// Opens a repository with a password; with `key_cache_ttl` > 0 the
    /// key-encryption key is looked up in, and stored into, the kernel key
    /// cache ([`crate::keycache`]) for that many seconds.
    pub fn open_cached(
        backend: Arc<dyn Backend>,
        password: &[u8],
        key_cache_ttl: u64,
    ) -> Result<Self> {
        let cf = match backend.read(FileKind::Config, "config") {
            Ok(b) => b,
            Err(e) if is_not_found(&e) => return Err(Error::NoRepository(backend.location())),
            Err(e) => return Err(e),
        };
        if cf.len() as u64 > limits::MAX_SMALL_FILE {
            return Err(Error::corrupt("config", "larger than the limit"));
        }
        // Refuse a newer format before asking the keys anything.
        check_header(&cf, ObjectType::Config, "config")?;
        let mut names = backend.names(FileKind::Key)?;
        names.sort();
        if names.is_empty() {
            return Err(Error::corrupt("keys", "the repository has no key files"));
        }
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let bytes = backend.read(FileKind::Key, &name)?;
            files.push((name, bytes));
        }
        let mut found = None;
        let mut key_from_cache = false;
        if key_cache_ttl > 0 {
            for (name, bytes) in &files {
                let Some(kek) = keycache::lookup(name, password, key_cache_ttl) else {
                    continue;
                };
                match keyfile::open_with_kek(bytes, &kek, &format!("key {name}")) {
                    Ok(m) => {
                        found = Some((name.clone(), m));
                        key_from_cache = true;
                        break;
                    }
                    // An entry that no longer opens its key file: drop it.
                    Err(Error::WrongPassword) => {
                        keycache::forget(name);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if found.is_none() {
            for (name, bytes) in &files {
                let what = format!("key {name}");
                let kek = keyfile::derive_kek(bytes, password, &what)?;
                match keyfile::open_with_kek(bytes, &kek, &what) {
                    Ok(m) => {
                        if key_cache_ttl > 0 {
                            keycache::store(name, password, &kek, key_cache_ttl);
                        }
                        found = Some((name.clone(), m));
                        break;
                    }
                    Err(Error::WrongPassword) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        let (key_name, master) = found.ok_or(Error::WrongPassword)?;
        let keys = master.keys();
        let body = open_file(&keys.file, ObjectType::Config, &cf, "config")?;
        let config = Config::decode(&body)?;
        let chunker = Chunker::new(config.chunker, keys.gear_table())?;
        Ok(Repository {
            backend,
            keys,
            master,
            config,
            key_name,
            chunker,
            key_from_cache,
            snapshot_cache: None,
            damage_report: None,
        })
    }

    /// Keeps a local copy of the snapshot files under cache root `root`
    /// ([`SnapshotCache`]), which [`Self::snapshots`] reads first.
    pub fn with_snapshot_cache(mut self, root: &Path) -> Self {
        self.snapshot_cache = Some(SnapshotCache::new(root, &self.config.id));
        self
    }

    /// Tells `report` of every damaged snapshot file a listing leaves out.
    pub fn with_damage_report(mut self, report: DamageReport) -> Self {
        self.damage_report = Some(report);
        self
    }

    /// Whether opening took the key-encryption key from the kernel key cache
    /// instead of deriving it.
    pub fn key_from_cache(&self) -> bool {
        self.key_from_cache
    }

    /// The id of the key file in use.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }
    /// The working keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }
    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }
    /// The chunker configured for this repository.
    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }
    /// Refuses `op` if the config requires features this binary lacks.
    pub fn check_features(&self, op: Operation) -> Result<()> {
        self.config.check_features(op)
    }

    /// Drops this repository's key-encryption keys from the kernel key cache;
    /// returns how many entries there were.
    /// Needs no password.
    pub fn uncache_keys(backend: &dyn Backend) -> Result<usize> {
        let names = backend.list(FileKind::Key)?;
        Ok(names.iter().filter(|l| keycache::forget(&l.name)).count())
    }

    /// Adds a key file for `password`; returns its id.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<String> {
        let (kf, _) = new_key_file(password, kdf, &self.master)?;
        let name = FileId::of(&kf).to_hex();
        self.backend.write(FileKind::Key, &name, &kf)?;
        Ok(name)
    }

    /// Lists the key files.
    pub fn list_keys(&self) -> Result<Vec<KeyListing>> {
        let mut out = Vec::new();
        for l in self.backend.list(FileKind::Key)? {
            let bytes = self.backend.read(FileKind::Key, &l.name)?;
            let (info, _) = keyfile::decode_info(&bytes, &format!("key {}", l.name))?;
            out.push(KeyListing {
                current: l.name == self.key_name,
                id: l.name,
                created: info.created,
                host: info.host,
            });
        }
        out.sort_by_key(|k| (k.created, k.id.clone()));
        Ok(out)
    }

    /// Removes a key file given by id or unique prefix. The last key and the
    /// key in use are refused (use `key passwd` to replace the current one).
    pub fn remove_key(&self, prefix: &str, allow_current: bool) -> Result<String> {
        let keys = self.list_keys()?;
        let matches: Vec<&KeyListing> = keys.iter().filter(|k| k.id.starts_with(prefix)).collect();
        let k = match matches.as_slice() {
            [k] => *k,
            [] => return Err(Error::Invalid(format!("no key matches {prefix:?}"))),
            _ => {
                return Err(Error::Invalid(format!(
                    "key prefix {prefix:?} is ambiguous"
                )))
            }
        };
        if keys.len() == 1 {
            return Err(Error::Invalid(
                "refusing to remove the last key: the repository would be unreadable".into(),
            ));
        }
        if k.current && !allow_current {
            return Err(Error::Invalid(
                "refusing to remove the key in use; use `arca key passwd`".into(),
            ));
        }
        self.backend.remove(FileKind::Key, &k.id)?;
        keycache::forget(&k.id);
        Ok(k.id.clone())
    }

    /// Replaces the key in use with one for `new_password`: writes the new
    /// key durably first, then removes the old one.
    pub fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<String> {
        let new = self.add_key(new_password, kdf)?;
        let old = std::mem::replace(&mut self.key_name, new.clone());
        self.backend.remove(FileKind::Key, &old)?;
        keycache::forget(&old);
        Ok(new)
    }

    /// Reads and opens a sealed file object, checking its name is the hash
    /// of its bytes.
    pub fn read_object(
        &self,
        kind: FileKind,
        ty: ObjectType,
        name: &str,
        max: u64,
    ) -> Result<Vec<u8>> {
        let bytes = self.read_object_file(kind, name, max)?;
        // Only the canonical (lower-case) name names the file.
        let id = FileId::from_hex(name)
            .ok()
            .filter(|id| id.to_hex() == name)
            .ok_or_else(|| {
                Error::corrupt(
                    format!("{} {name}", kind.dir()),
                    "contents do not hash to the file name",
                )
            })?;
        self.open_object(kind, ty, &id, &bytes, max)
    }

    /// The file of a file object as stored, refused past `max` bytes.
    fn read_object_file(&self, kind: FileKind, name: &str, max: u64) -> Result<Vec<u8>> {
        let size = self.backend.size(kind, name)?;
        if size > max {
            return Err(Error::corrupt(
                format!("{} {name}", kind.dir()),
                format!("{size} bytes is over the limit of {max}"),
            ));
        }
        self.backend.read(kind, name)
    }

    /// Verifies a file object's bytes (at most `max`, hashing to `id`)
    /// and opens them.
    fn open_object(
        &self,
        kind: FileKind,
        ty: ObjectType,
        id: &FileId,
        bytes: &[u8],
        max: u64,
    ) -> Result<Vec<u8>> {
        let what = || format!("{} {id}", kind.dir());
        if bytes.len() as u64 > max {
            return Err(Error::corrupt(
                what(),
                format!("{} bytes is over the limit of {max}", bytes.len()),
            ));
        }
        if FileId::of(bytes) != *id {
            return Err(Error::corrupt(
                what(),
                "contents do not hash to the file name",
            ));
        }
        open_file(&self.keys.file, ty, bytes, &what())
    }

    /// Opens and decodes snapshot file `id` from bytes already known to be
    /// at most the snapshot file limit and to hash to `id` (a snapshot
    /// cache record, checked as the cache was read).
    fn open_snapshot_checked(&self, id: &SnapshotId, bytes: &[u8]) -> Result<Snapshot> {
        let what = format!("{} {id}", FileKind::Snapshot.dir());
        let body = open_file(&self.keys.file, ObjectType::Snapshot, bytes, &what)?;
        Snapshot::decode(&body, &format!("snapshot {id}"))
    }

    /// Seals and writes a file object named by its hash; returns the name.
    pub fn write_object(&self, kind: FileKind, ty: ObjectType, body: &[u8]) -> Result<FileId> {
        let bytes = seal_file(&self.keys.file, ty, body)?;
        let id = FileId::of(&bytes);
        self.backend.write(kind, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// Loads one snapshot.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let bytes =
            self.read_object_file(FileKind::Snapshot, &id.to_hex(), limits::MAX_SNAPSHOT_FILE)?;
        self.open_snapshot(id, &bytes)
    }

    /// Verifies and decodes the bytes of snapshot file `id`.
    fn open_snapshot(&self, id: &SnapshotId, bytes: &[u8]) -> Result<Snapshot> {
        let body = self.open_object(
            FileKind::Snapshot,
            ObjectType::Snapshot,
            id,
            bytes,
            limits::MAX_SNAPSHOT_FILE,
        )?;
        Snapshot::decode(&body, &format!("snapshot {id}"))
    }

    /// Loads every snapshot, sorted by time then id.
    ///
    /// With a snapshot cache ([`Self::with_snapshot_cache`]), only the files
    /// it lacks are read from the repository. A cached file is verified as
    /// one read from the repository is (its hash is its name, it opens with
    /// the key), else it is read again. Files read from the repository are
    /// then added at the end of the cache; when cached files are gone from
    /// the repository, or the cache needs repair, it is rewritten to hold
    /// exactly the files listed.
    ///
    /// A damaged snapshot file (one that does not authenticate or parse) is
    /// left out and told to the [damage report](Self::with_damage_report):
    /// one bad file must not stop every backup and restore. A file gone
    /// since the directory was listed (a concurrent `forget`) is left out
    /// too. Any other error fails the listing. Whoever must see every
    /// snapshot (prune) uses [`Self::snapshots_strict`].
    pub fn snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (out, damaged) = self.list_snapshots()?;
        if let Some(report) = &self.damage_report {
            for (name, e) in &damaged {
                report(name, e);
            }
        }
        Ok(out)
    }

    /// [`Self::snapshots`], failing on the first damaged snapshot file.
    pub fn snapshots_strict(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (out, mut damaged) = self.list_snapshots()?;
        match damaged.pop() {
            Some((_, e)) => Err(e),
            None => Ok(out),
        }
    }

    /// The snapshots that read, and the damaged files left out (name and
    /// error).
    #[allow(clippy::type_complexity)]
    fn list_snapshots(&self) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<(String, Error)>)> {
        let names = self.backend.names(FileKind::Snapshot)?;
        let cached = self
            .snapshot_cache
            .as_ref()
            .map(SnapshotCache::load)
            .unwrap_or_default();
        // (id, snapshot, the file when it was read from the repository);
        // None for a file gone since the listing.
        let results: Vec<Result<Option<(SnapshotId, Snapshot, Option<Vec<u8>>)>>> = names
            .par_iter()
            .map(|l| {
                let id = FileId::from_hex(l)
                    .ok()
                    .filter(|id| id.to_hex() == *l)
                    .ok_or_else(|| {
                        Error::corrupt(format!("snapshots/{l}"), "not a snapshot file name")
                    })?;
                // Records are checked against their id (and the size limit)
                // as the cache is read: only the key is left to check.
                if let Some(s) = cached
                    .get(&id)
                    .and_then(|b| self.open_snapshot_checked(&id, b).ok())
                {
                    return Ok(Some((id, s, None)));
                }
                let bytes =
                    match self.read_object_file(FileKind::Snapshot, l, limits::MAX_SNAPSHOT_FILE) {
                        Ok(b) => b,
                        Err(e) if crate::backend::is_not_found(&e) => return Ok(None),
                        Err(e) => return Err(e),
                    };
                let s = self.open_snapshot(&id, &bytes)?;
                Ok(Some((id, s, Some(bytes))))
            })
            .collect();
        let mut loaded = Vec::with_capacity(results.len());
        let mut damaged = Vec::new();
        for (name, r) in names.iter().zip(results) {
            match r {
                Ok(Some(x)) => loaded.push(x),
                Ok(None) => {}
                Err(e @ Error::Corrupt { .. }) => damaged.push((name.clone(), e)),
                Err(e) => return Err(e),
            }
        }
        if let Some(c) = &self.snapshot_cache {
            let hits = loaded.iter().filter(|x| x.2.is_none()).count();
            // A cached file that did not open was read again.
            let refused = loaded
                .iter()
                .any(|(id, _, fresh)| fresh.is_some() && cached.get(id).is_some());
            if hits < cached.len() || refused || !cached.appendable() {
                // Files gone from the repository, or a cache to repair:
                // rewritten to hold exactly the files listed.
                c.store(loaded.iter().filter_map(|(id, _, fresh)| {
                    let b = fresh.as_deref().or_else(|| cached.get(id))?;
                    Some((id, b))
                }));
            } else if hits < loaded.len() {
                // Only new files: added at the end.
                c.append(
                    loaded
                        .iter()
                        .filter_map(|(id, _, fresh)| Some((id, fresh.as_deref()?))),
                );
            }
        }
        let mut out: Vec<(SnapshotId, Snapshot)> =
            loaded.into_iter().map(|(id, s, _)| (id, s)).collect();
        out.sort_by_key(|(id, s)| (s.time, s.nanos, *id));
        Ok((out, damaged))
    }

    /// Resolves "latest" (optionally within an account), "latest~N" (the
    /// N-th before it) or an id prefix.
    pub fn find_snapshot(
        &self,
        spec: &str,
        account: Option<&str>,
    ) -> Result<(SnapshotId, Snapshot)> {
        let all = self.snapshots()?;
        let mut cands: Vec<(SnapshotId, Snapshot)> = all
            .into_iter()
            .filter(|(_, s)| account.is_none_or(|a| s.account == a))
            .collect();
        if spec == "latest" {
            return cands.pop().ok_or_else(|| {
                Error::Invalid(match account {
                    Some(a) => format!("no snapshot for account {a:?}"),
                    None => "the repository has no snapshots".into(),
                })
            });
        }
        if let Some(back) = spec.strip_prefix("latest~") {
            let back: usize = back
                .parse()
                .map_err(|_| Error::Invalid(format!("{spec:?}: want latest~N, N a number")))?;
            let n = cands.len();
            return if back < n {
                Ok(cands.swap_remove(n - 1 - back))
            } else {
                Err(Error::Invalid(format!(
                    "{spec:?}: there are only {n} snapshots{}",
                    account
                        .map(|a| format!(" for account {a:?}"))
                        .unwrap_or_default()
                )))
            };
        }
        let spec_l = spec.to_ascii_lowercase();
        cands.retain(|(id, _)| id.to_hex().starts_with(&spec_l));
        match cands.len() {
            1 => Ok(cands.remove(0)),
            0 => Err(Error::Invalid(format!("no snapshot matches {spec:?}"))),
            n => Err(Error::Invalid(format!(
                "snapshot prefix {spec:?} matches {n} snapshots"
            ))),
        }
    }

    /// Opens the local index cache under `cache_root` and brings it up to
    /// date with the repository's index files.
    pub fn open_index(self, cache_root: &Path) -> Result<IndexedRepository> {
        let cache = IndexCache::open(cache_root, &self.config.id)?;
        let r = IndexedRepository { repo: self, cache };
        r.sync_index()?;
        Ok(r)
    }

    /// Reads every blob entry of a pack from its trailer (two range reads).
    pub fn read_pack_listing(&self, id: &PackId, length: u64) -> Result<PackListing> {
        let name = id.to_hex();
        let what = format!("pack {name}");
        if length < (HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(Error::corrupt(&what, "shorter than header and footer"));
        }
        if length > limits::MAX_PACK_SIZE {
            return Err(Error::corrupt(&what, "larger than the pack size limit"));
        }
        let head = self
            .backend
            .read_range(FileKind::Pack, &name, 0, HEADER_LEN as u64)?;
        check_header(&head, ObjectType::Pack, &what)?;
        let footer = self.backend.read_range(
            FileKind::Pack,
            &name,
            length - FOOTER_LEN as u64,
            FOOTER_LEN as u64,
        )?;
        let (off, tlen) = pack::trailer_location(&footer, length, &what)?;
        let sealed = self
            .backend
            .read_range(FileKind::Pack, &name, off, u64::from(tlen))?;
        let blobs = pack::decode_trailer(&self.keys.file, &sealed, off, &what)?;
        Ok(PackListing {
            id: *id,
            length,
            blobs,
        })
    }
}

/// Index files read into memory at once while syncing the cache: one per
/// core. An index file holds up to 50,000 blob entries (§13.1), so this
/// bounds the sync's memory to a few MB per core, whatever the repository.
fn sync_batch() -> usize {
    rayon::current_num_threads().clamp(1, 8)
}

/// A repository with an up-to-date local index: the state needed to read
/// blobs and to start a write session.
pub struct IndexedRepository {
    repo: Repository,
    cache: IndexCache,
}

impl std::ops::Deref for IndexedRepository {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl IndexedRepository {
    /// The local index.
    pub fn cache(&self) -> &IndexCache {
        &self.cache
    }

    /// Absorbs index files the cache has not seen. If an index file the cache
    /// absorbed is gone from the repository (replaced by `repair index` or a
    /// future prune), the cache is cleared and rebuilt from the index files.
    pub fn sync_index(&self) -> Result<usize> {
        let listed = self.repo.backend.names(FileKind::Index)?;
        let present: HashSet<&str> = listed.iter().map(String::as_str).collect();
        let mut seen = self.cache.seen_index_files()?;
        if seen.iter().any(|s| !present.contains(s.as_str())) {
            self.cache.clear()?;
            seen.clear();
        }
        let todo: Vec<&String> = listed.iter().filter(|n| !seen.contains(*n)).collect();
        // A few files at a time: read in parallel, absorb, drop. Memory is
        // bounded by the batch, not by the repository's index.
        for batch in todo.chunks(sync_batch()) {
            let loaded = batch
                .par_iter()
                .map(|name| Ok((name.as_str(), self.read_index_file(name)?)))
                .collect::<Result<Vec<_>>>()?;
            for (name, packs) in &loaded {
                self.cache.add_index_file(name, packs)?;
            }
        }
        Ok(todo.len())
    }

    /// Reads one index file.
    pub fn read_index_file(&self, name: &str) -> Result<Vec<PackListing>> {
        let body = self.repo.read_object(
            FileKind::Index,
            ObjectType::Index,
            name,
            limits::MAX_INDEX_FILE,
        )?;
        indexfile::decode(&body, &format!("index {name}"))
    }

    /// Writes an index file listing `packs` and absorbs it into the cache.
    pub fn write_index_file(&self, packs: &[PackListing]) -> Result<FileId> {
        let id = self.repo.write_object(
            FileKind::Index,
            ObjectType::Index,
            &indexfile::encode(packs),
        )?;
        self.cache.add_index_file(&id.to_hex(), packs)?;
        Ok(id)
    }

    /// Where a blob is stored.
    pub fn locate(&self, id: &BlobId) -> Result<Location> {
        self.cache.get(id)?.ok_or_else(|| {
            Error::corrupt(
                format!("blob {id}"),
                "not in the index: missing from the repository",
            )
        })
    }

    /// Reads, opens and verifies a blob at a known location; a delta is
    /// decoded through its chain of bases.
    pub fn read_blob_at(&self, loc: &Location) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let r = self.read_blob_into(loc, &mut buf)?;
        Ok(only(buf, r))
    }

    /// [`Self::read_blob_at`] into a buffer the caller keeps: `buf` is
    /// cleared, the blob is decoded into it through its delta chain and
    /// verified against its id, and its range in `buf` is returned. Each
    /// link is decoded right after its base in the one buffer (see
    /// [`crate::delta::decode_append`]) and opened where it was read, so a
    /// reused buffer makes no allocation per blob.
    pub fn read_blob_into(&self, loc: &Location, buf: &mut Vec<u8>) -> Result<Range<usize>> {
        self.read_chain_into(loc, buf, CHAIN_BUFFER)
    }

    /// [`Self::read_blob_into`], reserving at most `reserve` bytes ahead.
    fn read_chain_into(
        &self,
        loc: &Location,
        buf: &mut Vec<u8>,
        reserve: usize,
    ) -> Result<Range<usize>> {
        let r = self.decode_chain(loc, buf, reserve)?;
        pack::verify_id(&self.repo.keys, &loc.entry, &loc.pack, &buf[r.clone()])?;
        Ok(r)
    }

    /// Decodes the blob at `loc` into `buf` (cleared first) through its
    /// delta chain, root first, each link right after its base; returns the
    /// blob's range, reserving at most `reserve` bytes ahead. Not hashed:
    /// see [`Self::read_base`].
    fn decode_chain(
        &self,
        loc: &Location,
        buf: &mut Vec<u8>,
        reserve: usize,
    ) -> Result<Range<usize>> {
        let mut chain = vec![*loc];
        let mut total = loc.entry.raw_length as usize;
        while let Some(d) = chain[chain.len() - 1].entry.delta {
            let top = chain[chain.len() - 1].entry.id;
            let base = self.locate_base(&top, &d)?;
            total += base.entry.raw_length as usize;
            chain.push(base);
        }
        buf.clear();
        buf.reserve(total.min(reserve));
        let mut base: Option<Range<usize>> = None;
        for (i, link) in chain.iter().enumerate().rev() {
            let raw = link.entry.raw_length as usize;
            if let Some(b) = base.clone() {
                // Past the reservation (long chains of large blobs), the
                // base moves to the front first, so the buffer stays within
                // two links.
                if b.start > 0 && buf.capacity() - buf.len() < raw {
                    buf.copy_within(b.clone(), 0);
                    buf.truncate(b.len());
                    base = Some(0..b.len());
                }
            }
            let mut sealed = self.read_sealed(link)?;
            let r = pack::decode_into(
                &self.repo.keys,
                &link.entry,
                &mut sealed,
                &link.pack,
                base,
                buf,
            )
            .map_err(|e| match e {
                Error::Corrupt { what, reason } if i > 0 => Error::Corrupt {
                    what: format!("delta blob {} (base {what})", loc.entry.id),
                    reason,
                },
                other => other,
            })?;
            base = Some(r);
        }
        Ok(base.unwrap_or(0..0))
    }

    /// The sealed bytes of the blob at `loc`, as stored. A pack the index
    /// lists but the repository lacks is damage (exit 14), not an I/O
    /// error.
    pub fn read_sealed(&self, loc: &Location) -> Result<Vec<u8>> {
        self.repo
            .backend
            .read_range(
                FileKind::Pack,
                &loc.pack.to_hex(),
                u64::from(loc.entry.offset),
                u64::from(loc.entry.length),
            )
            .map_err(|e| {
                if crate::backend::is_not_found(&e) {
                    Error::corrupt(
                        format!("pack {}", loc.pack),
                        "listed in the index but missing from the repository (`arca check` \
                         names what needs it; `arca repair index` drops it from the index)",
                    )
                } else {
                    e
                }
            })
    }

    /// Opens and verifies the sealed bytes of the blob at `loc`, reading
    /// its bases first when it is a delta.
    pub fn open_sealed(&self, loc: &Location, sealed: &[u8]) -> Result<Vec<u8>> {
        match &loc.entry.delta {
            None => pack::open_blob(&self.repo.keys, &loc.entry, sealed, &loc.pack, None),
            Some(d) => {
                let base = self.read_base(&loc.entry.id, d)?;
                pack::open_blob(&self.repo.keys, &loc.entry, sealed, &loc.pack, Some(&base))
            }
        }
    }

    /// The location of the base of `id`'s delta `d`, checked: a data blob
    /// exactly one level shallower (so every chain ends, at depth 0).
    pub fn locate_base(&self, id: &BlobId, d: &DeltaRef) -> Result<Location> {
        let what = || format!("delta blob {id}");
        let loc = self
            .cache
            .get(&d.base)?
            .ok_or_else(|| Error::corrupt(what(), format!("its base {} is missing", d.base)))?;
        let base_depth = loc.entry.delta.map_or(0, |b| b.depth);
        if loc.entry.kind != BlobKind::Data || base_depth + 1 != d.depth {
            return Err(Error::corrupt(
                what(),
                format!(
                    "its base {} has depth {base_depth}, expected {}",
                    d.base,
                    d.depth - 1
                ),
            ));
        }
        Ok(loc)
    }

    /// The plaintext of a delta's base, decoded through its own chain. Bases
    /// are authenticated by their seals but not hashed: the delta built on
    /// them is, and no other base could decode to it.
    fn read_base(&self, id: &BlobId, d: &DeltaRef) -> Result<Vec<u8>> {
        let loc = self.locate_base(id, d)?;
        self.read_base_at(&loc).map_err(|e| match e {
            Error::Corrupt { what, reason } => Error::Corrupt {
                what: format!("delta blob {id} (base {what})"),
                reason,
            },
            other => other,
        })
    }

    /// The plaintext of the blob at `loc`, through its delta chain, to be
    /// used as a delta base: authenticated by the seals but not hashed (see
    /// [`Self::read_base`]; a delta encodes against exactly these bytes, and
    /// every read decodes them again from the same sealed bytes).
    pub fn read_base_at(&self, loc: &Location) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let r = self.decode_chain(loc, &mut buf, CHAIN_BUFFER)?;
        Ok(only(buf, r))
    }

    /// Whether the index has `id` with every base of its delta chain: only
    /// then may a backup reuse it. (A delta whose base was pruned can be
    /// listed again when an interrupted prune's dead pack is adopted.)
    pub fn has_usable(&self, id: &BlobId) -> Result<bool> {
        let Some(mut loc) = self.cache.get(id)? else {
            return Ok(false);
        };
        while let Some(d) = loc.entry.delta {
            match self.locate_base(&loc.entry.id, &d) {
                Ok(l) => loc = l,
                Err(Error::Corrupt { .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads, opens and verifies a blob of the expected kind.
    pub fn read_blob(&self, id: &BlobId, kind: BlobKind) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        if loc.entry.kind != kind {
            return Err(Error::corrupt(
                format!("blob {id}"),
                format!(
                    "is a {} blob, expected {}",
                    loc.entry.kind.name(),
                    kind.name()
                ),
            ));
        }
        self.read_blob_at(&loc)
    }

    /// Reads and decodes a tree.
    pub fn read_tree(&self, id: &BlobId) -> Result<Tree> {
        let body = self.read_blob(id, BlobKind::Tree)?;
        Tree::decode(&body, &format!("tree {id}"))
    }

    /// Packs in storage that no absorbed index file lists: left by a backup
    /// that was interrupted after writing them. Returns their listings, read
    /// from their trailers; unreadable ones are returned as errors.
    pub fn unindexed_packs(&self) -> Result<Vec<Result<PackListing>>> {
        let listed = self.repo.backend.list(FileKind::Pack)?;
        let mut todo = Vec::new();
        for l in listed {
            let id = match FileId::from_hex(&l.name) {
                Ok(id) => id,
                Err(_) => continue,
            };
            if !self.cache.has_pack(&id)? {
                todo.push((id, l.size));
            }
        }
        Ok(todo
            .par_iter()
            .map(|(id, size)| self.repo.read_pack_listing(id, *size))
            .collect())
    }
}

/// The bytes of `buf` in `r`, in `buf` itself: a whole blob is the buffer
/// already; a delta follows its bases in it.
fn only(mut buf: Vec<u8>, r: Range<usize>) -> Vec<u8> {
    buf.truncate(r.end);
    buf.drain(..r.start);
    buf
}

/// The most a chain's buffer reserves at once (see
/// [`IndexedRepository::read_blob_into`]): a default chain (five links of
/// at most 1 MiB) fits whole.
const CHAIN_BUFFER: usize = 8 << 20;

/// The default cache root: `$ARCA_CACHE_DIR`, else `$XDG_CACHE_HOME/arca`,
/// else `~/.cache/arca`, else a directory under the system temp dir.
pub fn default_cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("ARCA_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("arca");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("arca");
    }
    std::env::temp_dir().join("arca-cache")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::WriteSession;

    /// A snapshot at `time` (nothing behind its tree: listing only).
    fn bare_snapshot(time: i64) -> Snapshot {
        Snapshot {
            time,
            nanos: 0,
            account: "acme".into(),
            host: "h".into(),
            program: "arca test".into(),
            tags: Vec::new(),
            paths: vec!["/src".into()],
            tree: BlobId([1; 32]),
            parent: None,
            summary: Default::default(),
        }
    }

    /// A repository (password "pw") in memory, with its backend as both
    /// types: the read-counting one and the trait object.
    fn memory_repository() -> (
        Arc<crate::backend::MemoryBackend>,
        Arc<dyn Backend>,
        Repository,
    ) {
        let mem = Arc::new(crate::backend::MemoryBackend::new());
        let opts = InitOptions {
            kdf: KdfParams::CHEAPEST,
            ..InitOptions::default()
        };
        let backend: Arc<dyn Backend> = Arc::clone(&mem) as Arc<dyn Backend>;
        let repo = Repository::init(Arc::clone(&backend), b"pw", &opts).unwrap();
        (mem, backend, repo)
    }

    #[test]
    fn snapshot_listing_reads_from_the_repository_only_what_the_cache_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let (mem, backend, repo) = memory_repository();
        let cached = Repository::open(Arc::clone(&backend), b"pw")
            .unwrap()
            .with_snapshot_cache(dir.path());
        let write = |t: i64| {
            repo.write_object(
                FileKind::Snapshot,
                ObjectType::Snapshot,
                &bare_snapshot(t).encode(),
            )
            .unwrap()
        };
        let ids: Vec<SnapshotId> = (0..5).map(|t| write(1_700_000_000 + t)).collect();
        let reads = || mem.reads(FileKind::Snapshot);

        let plain = repo.snapshots().unwrap();
        assert_eq!(reads(), 5, "without a cache, every file every time");
        assert_eq!(cached.snapshots().unwrap(), plain);
        assert_eq!(reads(), 10, "the first cached listing reads them all");
        assert_eq!(cached.snapshots().unwrap(), plain);
        assert_eq!(reads(), 10, "the next one reads none");

        // A new snapshot: only it is read. A forgotten one: nothing read,
        // and it leaves the listing and the cache.
        let six = write(1_700_000_100);
        let listed = cached.snapshots().unwrap();
        assert_eq!(reads(), 11);
        assert_eq!(listed.len(), 6);
        assert_eq!(listed[5].0, six);
        backend
            .remove(FileKind::Snapshot, &ids[0].to_hex())
            .unwrap();
        let listed = cached.snapshots().unwrap();
        assert_eq!(reads(), 11);
        assert_eq!(listed.len(), 5);
        assert!(listed.iter().all(|(id, _)| *id != ids[0]));
        let file = SnapshotCache::new(dir.path(), &cached.config.id).load();
        assert_eq!(file.len(), 5);
        assert!(file.get(&ids[0]).is_none());
        assert_eq!(cached.snapshots().unwrap(), repo.snapshots().unwrap());
    }

    /// A damaged snapshot file is left out of the listing and told to the
    /// damage report, with or without the cache; the strict listing fails
    /// on it.
    #[test]
    fn a_damaged_snapshot_file_is_left_out_and_told() {
        let dir = tempfile::tempdir().unwrap();
        let (_, backend, plain) = memory_repository();
        let told = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let report: DamageReport = {
            let told = Arc::clone(&told);
            Arc::new(move |name: &str, e: &Error| {
                assert!(matches!(e, Error::Corrupt { .. }), "{e}");
                told.lock().unwrap().push(name.to_string());
            })
        };
        let plain = plain.with_damage_report(Arc::clone(&report));
        let cached = Repository::open(Arc::clone(&backend), b"pw")
            .unwrap()
            .with_snapshot_cache(dir.path())
            .with_damage_report(report);
        let ids: Vec<SnapshotId> = (0..3)
            .map(|t| {
                plain
                    .write_object(
                        FileKind::Snapshot,
                        ObjectType::Snapshot,
                        &bare_snapshot(1_700_000_000 + t).encode(),
                    )
                    .unwrap()
            })
            .collect();
        // The newest one damaged before any listing cached it.
        let bad = ids[2].to_hex();
        let mut bytes = backend.read(FileKind::Snapshot, &bad).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        backend.remove(FileKind::Snapshot, &bad).unwrap();
        backend.write(FileKind::Snapshot, &bad, &bytes).unwrap();
        for repo in [&plain, &cached] {
            let listed: Vec<SnapshotId> =
                repo.snapshots().unwrap().into_iter().map(|x| x.0).collect();
            assert_eq!(listed, ids[..2]);
            assert!(matches!(
                repo.snapshots_strict(),
                Err(Error::Corrupt { .. })
            ));
            let (latest, _) = repo.find_snapshot("latest", None).unwrap();
            assert_eq!(latest, ids[1], "latest among the snapshots that read");
        }
        assert!(told.lock().unwrap().iter().all(|n| *n == bad));
        assert!(told.lock().unwrap().len() >= 2);
        // Removed: a sound repository again, for both listings.
        backend.remove(FileKind::Snapshot, &bad).unwrap();
        for repo in [&plain, &cached] {
            assert_eq!(repo.snapshots_strict().unwrap().len(), 2);
        }
    }

    /// `rows` CSV rows; rows `r` with `r % 97 == edit % 97` carry `edit`.
    fn table(rows: u32, edit: u32) -> Vec<u8> {
        (0..rows)
            .flat_map(|r| {
                let v = if r % 97 == edit % 97 { edit } else { 0 };
                format!("{r},item-{:06},{v},{}\n", r * 7919 % 1_000_000, r % 13).into_bytes()
            })
            .collect()
    }

    /// A chain of five links of 0.9 MB or so each decodes through one reused
    /// buffer that, when it may reserve less than the chain (as past
    /// `CHAIN_BUFFER`), never holds the whole chain; every version reads
    /// back exact through `read_blob_into` and `read_blob_at` alike.
    #[test]
    fn chains_decode_in_a_bounded_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::testutil::memory_repo(dir.path(), InitOptions::default()).unwrap();
        let versions: Vec<Vec<u8>> = (0..5).map(|v| table(38_000, v * 31)).collect();
        let total: usize = versions.iter().map(Vec::len).sum();
        assert!(versions
            .iter()
            .all(|v| v.len() > 800_000 && v.len() < 1 << 20));
        let mut session = WriteSession::start(&repo).unwrap();
        let mut prev: Option<BlobId> = None;
        let mut ids = Vec::new();
        for v in &versions {
            let id = repo.keys().blob_id(v);
            assert!(session.add_data(id, v, prev.as_ref()).unwrap());
            // The next version is built on this one only once it is indexed.
            session.flush().unwrap();
            prev = Some(id);
            ids.push(id);
        }
        let last = repo.locate(&ids[4]).unwrap();
        assert_eq!(last.entry.delta.map(|d| d.depth), Some(4), "a full chain");
        let mut buf = Vec::new();
        for (id, want) in ids.iter().zip(&versions).rev() {
            let loc = repo.locate(id).unwrap();
            let r = repo.read_blob_into(&loc, &mut buf).unwrap();
            assert_eq!(&buf[r], &want[..]);
            assert_eq!(&repo.read_blob_at(&loc).unwrap(), want);
        }
        assert!(buf.capacity() >= total, "a default chain fits whole");
        let mut buf = Vec::new();
        for (id, want) in ids.iter().zip(&versions).rev() {
            let loc = repo.locate(id).unwrap();
            let r = repo.read_chain_into(&loc, &mut buf, 1 << 20).unwrap();
            assert_eq!(&buf[r], &want[..]);
        }
        assert!(
            buf.capacity() < total,
            "the buffer holds at most part of the chain: {} of {total} bytes",
            buf.capacity()
        );
        // A blob sealed under an id its plaintext does not hash to (a
        // writer's bug, not damage: the seal is valid) is refused.
        let wrong = BlobId([7; 32]);
        let sealed = pack::seal_blob(repo.keys(), BlobKind::Data, wrong, &versions[0], 1).unwrap();
        assert!(session.copy_blob(&sealed).unwrap());
        session.flush().unwrap();
        let loc = repo.locate(&wrong).unwrap();
        match repo.read_blob_into(&loc, &mut buf) {
            Err(Error::Corrupt { reason, .. }) => {
                assert!(reason.contains("does not hash"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(repo.read_base_at(&loc).is_ok(), "bases are not hashed");
    }
}
