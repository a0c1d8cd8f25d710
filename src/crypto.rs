//! Secrets, subkeys, sealing and password-based key wrapping
//! (format-spec.md §4 "Cryptography").
//!
//! Secret types have no `Copy`, no derived `Debug`, and are zeroized on drop.
//! A nonce is drawn from the OS at the point of sealing and is never stored in
//! a value that could be reused.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// Length of an XChaCha20-Poly1305 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// `blake3::derive_key` context strings (format-spec.md §4.2). Changing any
/// of them changes every repository's keys: they are part of the format.
pub mod context {
    /// Key sealing data and tree blobs inside packs.
    pub const BLOB_KEY: &str = "arca 2026-11-23 v1 blob sealing key";
    /// Key sealing whole-file objects: config, pack trailers, index files,
    /// snapshots, locks.
    pub const FILE_KEY: &str = "arca 2026-11-23 v1 file sealing key";
    /// Key of the keyed BLAKE3 that names blobs.
    pub const BLOB_ID_KEY: &str = "arca 2026-11-23 v1 blob id key";
    /// Key of the BLAKE3 XOF that expands into the chunker's gear table.
    pub const GEAR_KEY: &str = "arca 2026-11-23 v1 chunker gear table";
    /// Key-encryption key from the Argon2id output of a password.
    pub const KEK: &str = "arca 2026-11-23 v1 key file wrapping key";
}

/// A 32-byte secret, zeroized on drop, never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct Secret32([u8; 32]);

impl Secret32 {
    /// Wraps bytes that are already secret.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Secret32(b)
    }
    /// 32 bytes from the operating system's CSPRNG.
    pub fn random() -> Result<Self> {
        let mut b = [0u8; 32];
        fill_random(&mut b)?;
        Ok(Secret32(b))
    }
    /// The secret bytes; callers must not copy them into non-zeroized storage.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
    /// A subkey: `blake3::derive_key(context, self)`.
    pub fn derive(&self, context: &str) -> Secret32 {
        Secret32(blake3::derive_key(context, &self.0))
    }
}

impl std::fmt::Debug for Secret32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret32(<redacted>)")
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) -> Result<()> {
    getrandom::getrandom(buf)
        .map_err(|e| Error::Invalid(format!("operating system random source failed: {e}")))
}

/// The three random master secrets of a repository, stored only inside key
/// files (format-spec.md §4.1).
pub struct MasterSecrets {
    /// Root of the sealing keys.
    pub encryption: Secret32,
    /// Root of the blob id key.
    pub blob_id: Secret32,
    /// Root of the chunker's gear table.
    pub chunker: Secret32,
}

impl MasterSecrets {
    /// Fresh random secrets for a new repository.
    pub fn generate() -> Result<Self> {
        Ok(MasterSecrets {
            encryption: Secret32::random()?,
            blob_id: Secret32::random()?,
            chunker: Secret32::random()?,
        })
    }

    /// Serialized form inside a key file: the three secrets concatenated.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(96));
        v.extend_from_slice(self.encryption.expose());
        v.extend_from_slice(self.blob_id.expose());
        v.extend_from_slice(self.chunker.expose());
        v
    }

    /// Parses [`MasterSecrets::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        if b.len() != 96 {
            return Err(Error::corrupt(
                "key file",
                "master secrets are not 96 bytes",
            ));
        }
        let part = |i: usize| {
            let mut a = [0u8; 32];
            a.copy_from_slice(&b[i * 32..(i + 1) * 32]);
            Secret32(a)
        };
        Ok(MasterSecrets {
            encryption: part(0),
            blob_id: part(1),
            chunker: part(2),
        })
    }

    /// Derives the working keys (format-spec.md §4.2).
    pub fn keys(&self) -> Keys {
        Keys {
            blob: self.encryption.derive(context::BLOB_KEY),
            file: self.encryption.derive(context::FILE_KEY),
            blob_id: self.blob_id.derive(context::BLOB_ID_KEY),
            gear: self.chunker.derive(context::GEAR_KEY),
        }
    }
}

/// Working keys derived from [`MasterSecrets`].
pub struct Keys {
    /// Seals blobs.
    pub blob: Secret32,
    /// Seals file objects.
    pub file: Secret32,
    /// Names blobs.
    pub blob_id: Secret32,
    /// Seeds the chunker.
    pub gear: Secret32,
}

impl Keys {
    /// The blob id of `plaintext`: keyed BLAKE3.
    pub fn blob_id(&self, plaintext: &[u8]) -> crate::id::BlobId {
        crate::id::BlobId(*blake3::keyed_hash(self.blob_id.expose(), plaintext).as_bytes())
    }

    /// The chunker's 256-entry gear table: the first 2048 bytes of the
    /// BLAKE3 XOF keyed with the gear key, read as little-endian u64s.
    pub fn gear_table(&self) -> Box<[u64; 256]> {
        let mut bytes = [0u8; 2048];
        blake3::Hasher::new_keyed(self.gear.expose())
            .finalize_xof()
            .fill(&mut bytes);
        let mut table = Box::new([0u64; 256]);
        for (slot, c) in table.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            *slot = u64::from_le_bytes(a);
        }
        bytes.zeroize();
        table
    }
}

/// Seals `plaintext` with XChaCha20-Poly1305 under `key`, binding `aad`.
/// Output: nonce (24) ‖ ciphertext ‖ tag (16). The nonce is fresh random.
pub fn seal(key: &Secret32, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    seal_parts(key, aad, &[plaintext])
}

/// [`seal`] of the concatenation of `parts`, copied once, straight into
/// the sealed output.
pub fn seal_parts(key: &Secret32, aad: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce)?;
    seal_parts_with_nonce(key, &nonce, aad, parts)
}

/// Sealing with a caller-chosen nonce: only for test vectors, where a fixed
/// nonce makes the output reproducible. Production code calls [`seal`].
pub fn seal_with_nonce(
    key: &Secret32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    seal_parts_with_nonce(key, nonce, aad, &[plaintext])
}

fn seal_parts_with_nonce(
    key: &Secret32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    parts: &[&[u8]],
) -> Result<Vec<u8>> {
    let (cipher, inner) = xchacha(key, nonce)?;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + len);
    out.extend_from_slice(nonce);
    for p in parts {
        out.extend_from_slice(p);
    }
    let tag = cipher
        .seal_in_place_separate_tag(inner, Aad::from(aad), &mut out[NONCE_LEN..])
        .map_err(|_| Error::Invalid("encryption failed".into()))?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// XChaCha20-Poly1305 as its draft defines it, over `ring`'s
/// ChaCha20-Poly1305 (IETF, 96-bit nonce), which is about twice as fast as
/// the `chacha20poly1305` crate here: the subkey is HChaCha20(key, first 16
/// nonce bytes), and the inner nonce is four zero bytes and the last 8
/// nonce bytes. The bytes are the same as the `chacha20poly1305` crate's
/// `XChaCha20Poly1305` (tested against it).
fn xchacha(key: &Secret32, nonce: &[u8; NONCE_LEN]) -> Result<(LessSafeKey, Nonce)> {
    let (head, tail) = nonce.split_at(16);
    let mut subkey = chacha20::hchacha::<chacha20::cipher::consts::U10>(
        key.expose().into(),
        chacha20::cipher::generic_array::GenericArray::from_slice(head),
    );
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, subkey.as_slice());
    subkey.as_mut_slice().zeroize();
    let unbound =
        unbound.map_err(|_| Error::Invalid("ChaCha20-Poly1305 key setup failed".into()))?;
    let mut inner = [0u8; 12];
    inner[4..].copy_from_slice(tail);
    Ok((
        LessSafeKey::new(unbound),
        Nonce::assume_unique_for_key(inner),
    ))
}

/// Opens a message made by [`seal`]; fails on any change to the bytes, the
/// key or the associated data. `what` names the object in the error.
pub fn open(key: &Secret32, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
    let (nonce, ct) = split_sealed(sealed, what)?;
    let mut out = ct.to_vec();
    let len = open_ciphertext(key, aad, nonce, &mut out, what)?;
    out.truncate(len);
    Ok(out)
}

/// [`open`] where the message lies: `sealed` is decrypted in place and the
/// plaintext is returned as the part of it that holds it (no copy).
pub fn open_in_place<'a>(
    key: &Secret32,
    aad: &[u8],
    sealed: &'a mut [u8],
    what: &str,
) -> Result<&'a [u8]> {
    let nonce = *split_sealed(sealed, what)?.0;
    let ct = &mut sealed[NONCE_LEN..];
    let len = open_ciphertext(key, aad, &nonce, ct, what)?;
    Ok(&ct[..len])
}

/// A sealed message's nonce and the ciphertext with its tag.
fn split_sealed<'a>(sealed: &'a [u8], what: &str) -> Result<(&'a [u8; NONCE_LEN], &'a [u8])> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(Error::corrupt(
            what,
            "sealed message shorter than nonce and tag",
        ));
    }
    sealed
        .split_first_chunk::<NONCE_LEN>()
        .ok_or_else(|| Error::corrupt(what, "sealed message shorter than its nonce"))
}

/// Authenticates and decrypts `ct` (ciphertext and tag) in place; returns
/// the plaintext's length.
fn open_ciphertext(
    key: &Secret32,
    aad: &[u8],
    nonce: &[u8; NONCE_LEN],
    ct: &mut [u8],
    what: &str,
) -> Result<usize> {
    let (cipher, inner) = xchacha(key, nonce)?;
    Ok(cipher
        .open_in_place(inner, Aad::from(aad), ct)
        .map_err(|_| Error::corrupt(what, "authentication failed (wrong key or damaged bytes)"))?
        .len())
}

/// Argon2id parameters stored in a key file (format-spec.md §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// The default: 64 MiB, 3 passes, 4 lanes (about 110 ms on the reference
    /// 2-core machine with the `parallel` feature).
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };
    /// The cheapest parameters the limits allow (8 KiB, 1 pass, 1 lane):
    /// for tests, benches and probes that open many repositories. Never for
    /// a key that protects data.
    pub const CHEAPEST: KdfParams = KdfParams {
        m_kib: 8,
        t: 1,
        p: 1,
    };
    /// Upper limits accepted when reading a key file, so that a crafted key
    /// file cannot make `open` allocate or spin without bound: at most
    /// 1 GiB and 16 passes (about 30 s here), 16 and 5 times the defaults.
    pub const MAX_M_KIB: u32 = 1024 * 1024;
    /// Largest accepted pass count.
    pub const MAX_T: u32 = 16;
    /// Largest accepted lane count.
    pub const MAX_P: u32 = 64;

    /// Checks the parameters against the limits of format-spec.md §5.1.
    pub fn validate(&self) -> Result<()> {
        let ok = (1..=Self::MAX_P).contains(&self.p)
            && (1..=Self::MAX_T).contains(&self.t)
            && self.m_kib >= 8 * self.p
            && self.m_kib <= Self::MAX_M_KIB;
        if ok {
            Ok(())
        } else {
            Err(Error::corrupt(
                "key file",
                format!("Argon2id parameters out of range: {self:?}"),
            ))
        }
    }

    /// Derives the key-encryption key for `password` and `salt`.
    pub fn derive_kek(&self, password: &[u8], salt: &[u8; 32]) -> Result<Secret32> {
        self.validate()?;
        let params = argon2::Params::new(self.m_kib, self.t, self.p, Some(32))
            .map_err(|e| Error::corrupt("key file", format!("Argon2id parameters: {e}")))?;
        let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        a2.hash_password_into(password, salt, out.as_mut())
            .map_err(|e| Error::Invalid(format!("Argon2id failed: {e}")))?;
        Ok(Secret32::from_bytes(*out).derive(context::KEK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = Secret32::from_bytes([7; 32]);
        let s = seal(&k, b"aad", b"hello").unwrap();
        assert_eq!(s.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(open(&k, b"aad", &s, "t").unwrap(), b"hello");
        assert!(open(&k, b"aaX", &s, "t").is_err(), "aad is bound");
        let mut bad = s.clone();
        bad[30] ^= 1;
        assert!(
            open(&k, b"aad", &bad, "t").is_err(),
            "ciphertext is authenticated"
        );
        assert!(open(&Secret32::from_bytes([8; 32]), b"aad", &s, "t").is_err());
        assert!(open(&k, b"aad", &s[..10], "t").is_err());
    }

    #[test]
    fn sealing_parts_is_sealing_their_concatenation() {
        let k = Secret32::from_bytes([7; 32]);
        let n = [9u8; NONCE_LEN];
        let parts: [&[u8]; 4] = [b"\x01", b"", b"compressed body", b"!"];
        let whole = parts.concat();
        assert_eq!(
            seal_parts_with_nonce(&k, &n, b"aad", &parts).unwrap(),
            seal_with_nonce(&k, &n, b"aad", &whole).unwrap()
        );
        let s = seal_parts(&k, b"aad", &parts).unwrap();
        assert_eq!(open(&k, b"aad", &s, "t").unwrap(), whole);
    }

    proptest::proptest! {
        #[test]
        fn seal_open_any(msg in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..5000),
                         aad in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..64),
                         key in proptest::arbitrary::any::<[u8; 32]>()) {
            let k = Secret32::from_bytes(key);
            let s = seal(&k, &aad, &msg).unwrap();
            proptest::prop_assert_eq!(s.len(), msg.len() + SEAL_OVERHEAD);
            proptest::prop_assert_eq!(open(&k, &aad, &s, "t").unwrap(), msg);
        }
    }

    proptest::proptest! {
        /// The same bytes as the `chacha20poly1305` crate's XChaCha20-Poly1305
        /// (the implementation the format was first written with), and
        /// each opens the other's messages.
        #[test]
        fn same_bytes_as_the_reference_crate(
            msg in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..3000),
            aad in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..64),
            key in proptest::arbitrary::any::<[u8; 32]>(),
            nonce in proptest::arbitrary::any::<[u8; 24]>()) {
            use chacha20poly1305::aead::{Aead, KeyInit, Payload};
            let reference = chacha20poly1305::XChaCha20Poly1305::new((&key).into());
            let theirs = reference
                .encrypt((&nonce).into(), Payload { msg: &msg, aad: &aad })
                .unwrap();
            let k = Secret32::from_bytes(key);
            let ours = seal_with_nonce(&k, &nonce, &aad, &msg).unwrap();
            proptest::prop_assert_eq!(&ours[..NONCE_LEN], &nonce[..]);
            proptest::prop_assert_eq!(&ours[NONCE_LEN..], &theirs[..]);
            let back = reference
                .decrypt((&nonce).into(), Payload { msg: &ours[NONCE_LEN..], aad: &aad })
                .unwrap();
            proptest::prop_assert_eq!(&back, &msg);
        }
    }

    /// draft-irtf-cfrg-xchacha-03, appendix A.3.1 (AEAD_XChaCha20_Poly1305).
    #[test]
    fn xchacha_draft_vector() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let msg = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let aad = hex("50515253c0c1c2c3c4c5c6c7");
        let key: [u8; 32] = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
            .try_into()
            .unwrap();
        let nonce: [u8; 24] = hex("404142434445464748494a4b4c4d4e4f5051525354555657")
            .try_into()
            .unwrap();
        let ct = hex(concat!(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb",
            "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452",
            "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9",
            "21f9664c97637da9768812f615c68b13b52e",
            "c0875924c1c7987947deafd8780acf49"
        ));
        let k = Secret32::from_bytes(key);
        let sealed = seal_with_nonce(&k, &nonce, &aad, msg).unwrap();
        assert_eq!(&sealed[NONCE_LEN..], &ct[..]);
        assert_eq!(open(&k, &aad, &sealed, "t").unwrap(), msg);
    }

    #[test]
    fn two_seals_use_different_nonces() {
        let k = Secret32::from_bytes([1; 32]);
        assert_ne!(seal(&k, b"", b"x").unwrap(), seal(&k, b"", b"x").unwrap());
    }

    #[test]
    fn kdf_limits_refuse_huge_memory() {
        let p = KdfParams {
            m_kib: u32::MAX,
            t: 1,
            p: 1,
        };
        assert!(p.derive_kek(b"pw", &[0; 32]).is_err());
    }
}
