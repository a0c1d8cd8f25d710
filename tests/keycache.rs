//! The key cache (`--key-cache`, format-spec.md §12.1): a second open
//! takes the key-encryption key from the kernel keyring, a wrong password
//! still fails, and changing the password or `key uncache` drops the entry.
//! Where a sandbox forbids the keyring, opening must still work by deriving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use arca::backend::LocalBackend;
use arca::crypto::KdfParams;
use arca::error::Error;
use arca::keycache;
use arca::repository::{InitOptions, Repository};

fn small_kdf() -> KdfParams {
    KdfParams::CHEAPEST
}

#[test]
fn second_open_comes_from_the_cache_and_passwords_still_count() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let opts = InitOptions {
        kdf: small_kdf(),
        ..InitOptions::default()
    };
    Repository::init(backend.clone(), b"pw-one", &opts).unwrap();

    // Off: never cached.
    let r = Repository::open_cached(backend.clone(), b"pw-one", 0).unwrap();
    assert!(!r.key_from_cache());
    let key = r.key_name().to_string();
    assert!(keycache::lookup(&key, b"pw-one", 60).is_none());

    let first = Repository::open_cached(backend.clone(), b"pw-one", 60).unwrap();
    assert!(!first.key_from_cache(), "nothing cached yet: derived");
    if !keycache::available() || keycache::lookup(&key, b"pw-one", 60).is_none() {
        // No keyring here (a sandbox), or it refused the entry (a quota).
        eprintln!("kernel keyring not usable here: checked the derive path only");
        return;
    }
    let second = Repository::open_cached(backend.clone(), b"pw-one", 60).unwrap();
    assert!(second.key_from_cache(), "the second open uses the cache");
    assert_eq!(second.keys().file.expose(), first.keys().file.expose());

    // A wrong password is refused though a key for the right one is cached.
    match Repository::open_cached(backend.clone(), b"pw-wrong", 60) {
        Err(Error::WrongPassword) => {}
        Err(e) => panic!("expected a wrong-password error, got {e}"),
        Ok(_) => panic!("a wrong password opened the repository"),
    }
    assert!(keycache::lookup(&key, b"pw-wrong", 60).is_none());

    // Changing the password drops the old key's entry; the new password
    // derives, then is cached.
    let mut r = Repository::open_cached(backend.clone(), b"pw-one", 60).unwrap();
    r.change_password(b"pw-two", small_kdf()).unwrap();
    assert!(keycache::lookup(&key, b"pw-one", 60).is_none());
    assert!(matches!(
        Repository::open_cached(backend.clone(), b"pw-one", 60),
        Err(Error::WrongPassword)
    ));
    let r2 = Repository::open_cached(backend.clone(), b"pw-two", 60).unwrap();
    assert!(!r2.key_from_cache());
    let r3 = Repository::open_cached(backend.clone(), b"pw-two", 60).unwrap();
    assert!(r3.key_from_cache());

    // uncache drops it; the next open derives again.
    assert_eq!(Repository::uncache_keys(backend.as_ref()).unwrap(), 1);
    let r4 = Repository::open_cached(backend.clone(), b"pw-two", 60).unwrap();
    assert!(!r4.key_from_cache());
    assert_eq!(Repository::uncache_keys(backend.as_ref()).unwrap(), 1);
    assert_eq!(Repository::uncache_keys(backend.as_ref()).unwrap(), 0);
}

#[test]
fn an_entry_that_does_not_open_its_key_file_is_dropped() {
    if !keycache::available() {
        eprintln!("kernel keyring not usable here: nothing to check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LocalBackend::new(dir.path().join("repo")));
    let opts = InitOptions {
        kdf: small_kdf(),
        ..InitOptions::default()
    };
    let r = Repository::init(backend.clone(), b"pw", &opts).unwrap();
    let key = r.key_name().to_string();
    // A forged entry: the right password's tag, but a wrong key.
    let bogus = arca::crypto::Secret32::from_bytes([9; 32]);
    if !keycache::store(&key, b"pw", &bogus, 60) {
        eprintln!("the kernel keyring refused the entry (a quota?): nothing to check");
        return;
    }
    let r = Repository::open_cached(backend.clone(), b"pw", 60).unwrap();
    assert!(!r.key_from_cache(), "the bogus entry must not open it");
    // ... and the derived key replaced it.
    let r = Repository::open_cached(backend.clone(), b"pw", 60).unwrap();
    assert!(r.key_from_cache());
    Repository::uncache_keys(backend.as_ref()).unwrap();
}
