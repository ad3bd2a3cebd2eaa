//! AES-256-GCM sealing of small secrets (TOTP secrets) under a key derived from the master key.
//! Each sealed value is bound to its context (associated data, e.g. the user id), so a sealed
//! value copied to another row fails to open.
//!
//! Layout: `version (1) || nonce (12) || ciphertext+tag`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroize;

use crate::{CryptoError, Secret};

const VERSION: u8 = 1;

/// The server's master key: 32 bytes kept outside the database.
#[derive(Clone)]
pub struct MasterKey(Secret<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Wraps 32 key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Secret::new(bytes))
    }

    /// Derives a purpose-specific subkey (HMAC-SHA256 of the label), so that one key is never
    /// used for two purposes.
    pub fn subkey(&self, label: &str) -> SealingKey {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose()).expect("any key size");
        mac.update(b"haven subkey v1\0");
        mac.update(label.as_bytes());
        let mut out: [u8; 32] = mac.finalize().into_bytes().into();
        let key = SealingKey(Secret::new(out));
        out.zeroize();
        key
    }
}

/// A key that seals and opens values.
#[derive(Clone, Debug)]
pub struct SealingKey(Secret<[u8; 32]>);

impl SealingKey {
    /// A sealing key from raw key bytes (a data key or an unwrapped organisation key).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Secret::new(bytes))
    }

    /// Seals `plaintext` bound to `aad`, with a 96-bit random nonce.
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new(self.0.expose().into());
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad })
            .expect("AES-GCM encryption of in-memory data cannot fail");
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens a sealed value; fails if it was altered or sealed for a different `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Secret<Vec<u8>>, CryptoError> {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return Err(CryptoError::OpenFailed);
        }
        let cipher = Aes256Gcm::new(self.0.expose().into());
        cipher
            .decrypt(Nonce::from_slice(&sealed[1..13]), Payload { msg: &sealed[13..], aad })
            .map(Secret::new)
            .map_err(|_| CryptoError::OpenFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context() {
        let key = MasterKey::from_bytes([3; 32]).subkey("totp");
        let sealed = key.seal([5; 12], b"user-a", b"secret bytes");
        assert_eq!(key.open(b"user-a", &sealed).unwrap().expose(), b"secret bytes");
        assert!(key.open(b"user-b", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open(b"user-a", &tampered).is_err());
        let other = MasterKey::from_bytes([3; 32]).subkey("other");
        assert!(other.open(b"user-a", &sealed).is_err());
    }
}
