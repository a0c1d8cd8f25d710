//! Key files: the master secrets wrapped by a password (format-spec.md §5.1).
//!
//! Layout: header(type 1) ‖ kdf id u8 (1 = Argon2id v1.3) ‖ m_kib u32 ‖ t u32
//! ‖ p u32 ‖ salt [32] ‖ created i64 ‖ host str ‖ sealed(KEK, aad = every
//! preceding byte, master secrets [96]).

use crate::codec::{Reader, Writer};
use crate::crypto::{self, KdfParams, MasterSecrets, Secret32};
use crate::error::{Error, Result};
use crate::format::{check_header, header, limits, ObjectType, HEADER_LEN};

/// KDF identifier for Argon2id version 0x13.
pub const KDF_ARGON2ID: u8 = 1;

/// The clear-text part of a key file, readable without the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Random salt.
    pub salt: [u8; 32],
    /// Creation time, unix seconds.
    pub created: i64,
    /// Host that created the key.
    pub host: String,
}

fn encode_clear(info: &KeyInfo) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(&header(ObjectType::Key));
    w.u8(KDF_ARGON2ID);
    w.u32(info.kdf.m_kib);
    w.u32(info.kdf.t);
    w.u32(info.kdf.p);
    w.raw(&info.salt);
    w.i64(info.created);
    w.str(&info.host);
    w.buf
}

/// Builds a key file with an already derived key-encryption key.
pub fn encode_with_kek(info: &KeyInfo, kek: &Secret32, master: &MasterSecrets) -> Result<Vec<u8>> {
    let mut out = encode_clear(info);
    let sealed = crypto::seal(kek, &out, &master.to_bytes())?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Splits a key file into its clear part and the offset of the sealed part.
pub fn decode_info(bytes: &[u8], what: &str) -> Result<(KeyInfo, usize)> {
    if bytes.len() as u64 > limits::MAX_SMALL_FILE {
        return Err(Error::corrupt(what, "key file larger than the limit"));
    }
    check_header(bytes, ObjectType::Key, what)?;
    let mut r = Reader::new(bytes, what);
    r.take(HEADER_LEN)?;
    let kdf_id = r.u8()?;
    if kdf_id != KDF_ARGON2ID {
        return Err(Error::Unsupported(format!("{what}: unknown KDF {kdf_id}")));
    }
    let kdf = KdfParams {
        m_kib: r.u32()?,
        t: r.u32()?,
        p: r.u32()?,
    };
    kdf.validate()?;
    let salt = r.array::<32>()?;
    let created = r.i64()?;
    let host = r.str(limits::MAX_NAME)?;
    let at = bytes.len() - r.remaining();
    Ok((
        KeyInfo {
            kdf,
            salt,
            created,
            host,
        },
        at,
    ))
}

/// Opens a key file with a derived key-encryption key. A wrong password shows
/// as an authentication failure, reported as [`Error::WrongPassword`].
pub fn open_with_kek(bytes: &[u8], kek: &Secret32, what: &str) -> Result<MasterSecrets> {
    let (_, at) = decode_info(bytes, what)?;
    if bytes.len() - at != crypto::SEAL_OVERHEAD + 96 {
        return Err(Error::corrupt(
            what,
            "sealed master secrets have the wrong length",
        ));
    }
    let plain = zeroize::Zeroizing::new(
        crypto::open(kek, &bytes[..at], &bytes[at..], what).map_err(|_| Error::WrongPassword)?,
    );
    MasterSecrets::from_bytes(&plain)
}

/// The key-encryption key that `password` gives for this key file (runs its
/// key derivation function; says nothing about whether it opens the file).
pub fn derive_kek(bytes: &[u8], password: &[u8], what: &str) -> Result<Secret32> {
    let (info, _) = decode_info(bytes, what)?;
    info.kdf.derive_kek(password, &info.salt)
}

/// Opens a key file with a password.
pub fn open(bytes: &[u8], password: &[u8], what: &str) -> Result<MasterSecrets> {
    open_with_kek(bytes, &derive_kek(bytes, password, what)?, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key file wrapping `master` under a key derived from `password`.
    fn encode(info: &KeyInfo, password: &[u8], master: &MasterSecrets) -> Result<Vec<u8>> {
        let kek = info.kdf.derive_kek(password, &info.salt)?;
        encode_with_kek(info, &kek, master)
    }

    fn small() -> KeyInfo {
        KeyInfo {
            kdf: KdfParams::CHEAPEST,
            salt: [3; 32],
            created: 1_700_000_000,
            host: "h".into(),
        }
    }

    #[test]
    fn round_trip_and_wrong_password() {
        let m = MasterSecrets::generate().unwrap();
        let f = encode(&small(), b"pw", &m).unwrap();
        let got = open(&f, b"pw", "key").unwrap();
        assert_eq!(got.to_bytes().as_slice(), m.to_bytes().as_slice());
        assert!(matches!(open(&f, b"px", "key"), Err(Error::WrongPassword)));
        let (info, _) = decode_info(&f, "key").unwrap();
        assert_eq!(info, small());
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let m = MasterSecrets::generate().unwrap();
        let f = encode(&small(), b"pw", &m).unwrap();
        for n in 0..f.len() {
            assert!(open(&f[..n], b"pw", "key").is_err());
        }
    }
}
