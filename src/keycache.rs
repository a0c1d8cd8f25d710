//! A cache of key-encryption keys in the Linux kernel's user keyring
//! (format-spec.md §12.1), so that commands run back to back skip the
//! Argon2id derivation. The CLI turns it on by default for passwords that
//! were not typed (README "Key cache").
//!
//! The same facility holds disk-encryption passwords for `systemd-ask-password`
//! and `cryptsetup`: entries live in kernel memory only, never on disk, are
//! readable by processes of the same user, and expire after a time-out that
//! every use renews. An entry is bound to one key file (its id is in the
//! entry's description) and to the password: it holds a keyed BLAKE3 tag of
//! the password, and a command that gives another password derives as usual.
//!
//! Every failure of the keyring (no kernel support, a container's seccomp
//! filter, a quota) is silent: the command derives the key as if the cache
//! were off.

use linux_keyutils::{KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};

use crate::crypto::Secret32;

/// The keyring entry's description for key file `key_name`.
pub fn description(key_name: &str) -> String {
    format!("arca:v1:kek:{key_name}")
}

/// Context of the key under which the password is tagged.
const VERIFIER_CONTEXT: &str = "arca 2026-11-23 v1 key cache password tag";

/// The entry's payload: the key-encryption key, then the password's tag
/// (format-spec.md §4.5).
pub fn payload(kek: &Secret32, password: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
    let mut v = zeroize::Zeroizing::new(Vec::with_capacity(64));
    v.extend_from_slice(kek.expose());
    v.extend_from_slice(&tag(kek, password));
    v
}

fn tag(kek: &Secret32, password: &[u8]) -> [u8; 32] {
    let k = kek.derive(VERIFIER_CONTEXT);
    *blake3::keyed_hash(k.expose(), password).as_bytes()
}

/// The key-encryption key in `payload` if it was stored for `password`.
pub fn parse(payload: &[u8], password: &[u8]) -> Option<Secret32> {
    if payload.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(&payload[..32]);
    let kek = Secret32::from_bytes(k);
    let expect = tag(&kek, password);
    // Constant time: the tag is a secret-dependent value.
    let diff = expect
        .iter()
        .zip(&payload[32..])
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    (diff == 0).then_some(kek)
}

fn user_keyring() -> Option<KeyRing> {
    KeyRing::from_special_id(KeyRingIdentifier::User, false).ok()
}

/// The cached key-encryption key of `key_name` for `password`, renewing the
/// entry's time-out to `ttl_secs`. `None` when there is no entry, it was
/// stored for another password, or the keyring is not usable.
pub fn lookup(key_name: &str, password: &[u8], ttl_secs: u64) -> Option<Secret32> {
    let ring = user_keyring()?;
    let key = ring.search(&description(key_name)).ok()?;
    let mut buf = zeroize::Zeroizing::new([0u8; 64]);
    let n = key.read(&mut *buf).ok()?;
    let kek = parse(&buf[..n.min(64)], password)?;
    let _ = key.set_timeout(ttl_secs.try_into().unwrap_or(usize::MAX));
    Some(kek)
}

/// Stores `kek` for `key_name` and `password`, expiring after `ttl_secs`.
/// Returns whether the keyring took it.
pub fn store(key_name: &str, password: &[u8], kek: &Secret32, ttl_secs: u64) -> bool {
    let Some(ring) = user_keyring() else {
        return false;
    };
    let Ok(key) = ring.add_key(&description(key_name), &*payload(kek, password)) else {
        return false;
    };
    // Readable by this user's processes only (like a 0600 file), whether or
    // not they possess the user keyring through their session.
    // (The builder starts from no permission: group and world get none.)
    let perms = KeyPermissionsBuilder::builder()
        .posessor(Permission::ALL)
        .user(
            Permission::VIEW
                | Permission::READ
                | Permission::WRITE
                | Permission::SEARCH
                | Permission::SETATTR,
        )
        .build();
    if key.set_perms(perms).is_err()
        || key
            .set_timeout(ttl_secs.try_into().unwrap_or(usize::MAX))
            .is_err()
    {
        let _ = key.invalidate();
        return false;
    }
    true
}

/// Drops the entry of `key_name`, if any. Returns whether one was dropped.
pub fn forget(key_name: &str) -> bool {
    let Some(ring) = user_keyring() else {
        return false;
    };
    match ring.search(&description(key_name)) {
        Ok(key) => key.invalidate().is_ok(),
        Err(_) => false,
    }
}

/// Whether the kernel keyring can be used by this process (tests skip what
/// needs it when a sandbox forbids it).
pub fn available() -> bool {
    user_keyring().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_binds_password() {
        let kek = Secret32::from_bytes([7; 32]);
        let p = payload(&kek, b"right");
        assert_eq!(p.len(), 64);
        assert_eq!(parse(&p, b"right").unwrap().expose(), kek.expose());
        assert!(parse(&p, b"wrong").is_none());
        assert!(parse(&p[..63], b"right").is_none());
        let mut bad = p.to_vec();
        bad[40] ^= 1;
        assert!(parse(&bad, b"right").is_none());
    }
}
