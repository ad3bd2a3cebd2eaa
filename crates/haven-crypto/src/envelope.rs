//! Envelope encryption. Content is sealed with AES-256-GCM under a data key; data keys are
//! wrapped by their organisation's key; organisation keys are wrapped by the master key. Every
//! wrap and every seal binds its context into the associated data (organisation, scope,
//! conversation, message, version), so a ciphertext or a wrapped key copied anywhere else fails
//! to open. Destroying a wrapped data key makes what it sealed unrecoverable (crypto-shredding).
//!
//! Master-key rotation re-wraps organisation keys only: data keys and content never change, so
//! rotation needs no downtime and old ciphertexts stay readable throughout.

use std::collections::BTreeMap;

use crate::seal::{MasterKey, SealingKey};
use crate::{CryptoError, Secret};

/// The master keys by version: the current one wraps, every one listed can unwrap (older keys
/// stay until every organisation key has been re-wrapped).
#[derive(Debug, Clone)]
pub struct MasterKeyring {
    current: u32,
    keys: BTreeMap<u32, SealingKey>,
}

impl MasterKeyring {
    /// A keyring whose current key is `current` (version, key), with older keys for unwrapping.
    pub fn new(current: (u32, MasterKey), older: Vec<(u32, MasterKey)>) -> Self {
        let mut keys = BTreeMap::new();
        for (v, k) in older.into_iter().chain(std::iter::once(current.clone())) {
            keys.insert(v, k.subkey("key-wrapping"));
        }
        Self { current: current.0, keys }
    }

    /// The version new wraps use.
    pub fn current_version(&self) -> u32 {
        self.current
    }
}

/// Where master keys come from: a key file or the environment today, a KMS later. Asked at
/// start and again whenever a key version is met that is not loaded (after a rotation by
/// another process).
pub trait KeyProvider: Send + Sync {
    /// Every master key by version; the highest version is current.
    fn master_keys(&self) -> Result<Vec<(u32, MasterKey)>, CryptoError>;
}

/// A 256-bit content or organisation key.
#[derive(Debug, Clone)]
pub struct DataKey(SealingKey, Secret<[u8; 32]>);

impl DataKey {
    /// A key from 32 random bytes.
    pub fn from_random(bytes: [u8; 32]) -> Self {
        Self(SealingKey::from_bytes(bytes), Secret::new(bytes))
    }

    fn bytes(&self) -> &[u8; 32] {
        self.1.expose()
    }
}

/// A key wrapped by a versioned master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The master-key version that wrapped it.
    pub version: u32,
    /// The sealed key.
    pub sealed: Vec<u8>,
}

fn org_aad(org: &str) -> Vec<u8> {
    [b"haven/org-key/v1\0".as_slice(), org.as_bytes()].concat()
}

fn data_aad(org: &str, scope: &str) -> Vec<u8> {
    [b"haven/data-key/v1\0".as_slice(), org.as_bytes(), b"\0", scope.as_bytes()].concat()
}

/// Wraps an organisation key with the current master key.
pub fn wrap_org_key(ring: &MasterKeyring, org: &str, key: &DataKey, nonce: [u8; 12]) -> WrappedKey {
    let kek = &ring.keys[&ring.current];
    WrappedKey { version: ring.current, sealed: kek.seal(nonce, &org_aad(org), key.bytes()) }
}

/// Unwraps an organisation key with whichever master key wrapped it.
pub fn unwrap_org_key(ring: &MasterKeyring, org: &str, wrapped: &WrappedKey) -> Result<DataKey, CryptoError> {
    let kek = ring.keys.get(&wrapped.version).ok_or(CryptoError::OpenFailed)?;
    let bytes = kek.open(&org_aad(org), &wrapped.sealed)?;
    let key: [u8; 32] = bytes.expose().as_slice().try_into().map_err(|_| CryptoError::OpenFailed)?;
    Ok(DataKey::from_random(key))
}

/// Re-wraps an organisation key under the current master key (key rotation).
pub fn rewrap_org_key(
    ring: &MasterKeyring,
    org: &str,
    wrapped: &WrappedKey,
    nonce: [u8; 12],
) -> Result<WrappedKey, CryptoError> {
    Ok(wrap_org_key(ring, org, &unwrap_org_key(ring, org, wrapped)?, nonce))
}

/// Wraps a data key with its organisation key, bound to `scope` (e.g. `message:<id>`).
pub fn wrap_data_key(org_key: &DataKey, org: &str, scope: &str, key: &DataKey, nonce: [u8; 12]) -> Vec<u8> {
    org_key.0.seal(nonce, &data_aad(org, scope), key.bytes())
}

/// Unwraps a data key; fails if it was wrapped for another organisation or scope.
pub fn unwrap_data_key(
    org_key: &DataKey,
    org: &str,
    scope: &str,
    sealed: &[u8],
) -> Result<DataKey, CryptoError> {
    let bytes = org_key.0.open(&data_aad(org, scope), sealed)?;
    let key: [u8; 32] = bytes.expose().as_slice().try_into().map_err(|_| CryptoError::OpenFailed)?;
    Ok(DataKey::from_random(key))
}

/// Where a piece of content belongs; all of it is bound into the seal.
#[derive(Debug, Clone, Copy)]
pub struct ContentContext<'a> {
    /// Organisation id.
    pub org: &'a str,
    /// Conversation id.
    pub conversation: &'a str,
    /// Message (or attachment) id.
    pub item: &'a str,
    /// Version (edits make new versions).
    pub version: u32,
}

impl ContentContext<'_> {
    fn aad(&self) -> Vec<u8> {
        [
            b"haven/content/v1\0".as_slice(),
            self.org.as_bytes(),
            b"\0",
            self.conversation.as_bytes(),
            b"\0",
            self.item.as_bytes(),
            b"\0",
            &self.version.to_be_bytes(),
        ]
        .concat()
    }
}

/// Seals content under a data key, bound to its context.
pub fn seal_content(key: &DataKey, ctx: &ContentContext<'_>, nonce: [u8; 12], plaintext: &[u8]) -> Vec<u8> {
    key.0.seal(nonce, &ctx.aad(), plaintext)
}

/// Opens content; fails if it was altered or belongs to another context.
pub fn open_content(
    key: &DataKey,
    ctx: &ContentContext<'_>,
    sealed: &[u8],
) -> Result<Secret<Vec<u8>>, CryptoError> {
    key.0.open(&ctx.aad(), sealed)
}

/// A blind index: HMAC-SHA-256 of `value` under a key derived from the organisation key for
/// `field`, so a value (an MRN) can be found by exact match without being stored. The same
/// value gives the same index only within one organisation and one field.
pub fn blind_index(org_key: &DataKey, org: &str, field: &str, value: &str) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    type HmacSha256 = Hmac<sha2::Sha256>;
    let mut derive = HmacSha256::new_from_slice(org_key.bytes()).expect("HMAC takes any key length");
    derive.update(b"haven/blind-index/v1\0");
    derive.update(org.as_bytes());
    derive.update(b"\0");
    derive.update(field.as_bytes());
    let index_key = derive.finalize().into_bytes();
    let mut mac = HmacSha256::new_from_slice(&index_key).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(current: u32) -> MasterKeyring {
        MasterKeyring::new(
            (current, MasterKey::from_bytes([current as u8; 32])),
            (1..current).map(|v| (v, MasterKey::from_bytes([v as u8; 32]))).collect(),
        )
    }

    #[test]
    fn the_whole_envelope_opens_only_in_its_context() {
        let r = ring(1);
        let org_key = DataKey::from_random([7; 32]);
        let wrapped_org = wrap_org_key(&r, "org-a", &org_key, [1; 12]);
        let org_key = unwrap_org_key(&r, "org-a", &wrapped_org).unwrap();
        assert!(unwrap_org_key(&r, "org-b", &wrapped_org).is_err(), "an org key moved to another org");
        let dk = DataKey::from_random([9; 32]);
        let wrapped_dk = wrap_data_key(&org_key, "org-a", "message:m1", &dk, [2; 12]);
        let dk = unwrap_data_key(&org_key, "org-a", "message:m1", &wrapped_dk).unwrap();
        assert!(unwrap_data_key(&org_key, "org-a", "message:m2", &wrapped_dk).is_err());
        let ctx = ContentContext { org: "org-a", conversation: "c1", item: "m1", version: 1 };
        let sealed = seal_content(&dk, &ctx, [3; 12], b"K+ 6.1, repeat BMP");
        assert_eq!(open_content(&dk, &ctx, &sealed).unwrap().expose(), b"K+ 6.1, repeat BMP");
        for other in [
            ContentContext { org: "org-b", ..ctx },
            ContentContext { conversation: "c2", ..ctx },
            ContentContext { item: "m2", ..ctx },
            ContentContext { version: 2, ..ctx },
        ] {
            assert!(open_content(&dk, &other, &sealed).is_err(), "{other:?}");
        }
        assert!(!sealed.windows(4).any(|w| w == b"repe" || w == b"K+ 6"), "no plaintext in the ciphertext");
    }

    #[test]
    fn master_key_rotation_rewraps_without_touching_content() {
        let org_key = DataKey::from_random([7; 32]);
        let old = wrap_org_key(&ring(1), "org-a", &org_key, [1; 12]);
        let r2 = ring(2);
        // Before re-wrapping, the old wrap still opens with the new keyring (old key kept).
        assert!(unwrap_org_key(&r2, "org-a", &old).is_ok());
        let new = rewrap_org_key(&r2, "org-a", &old, [4; 12]).unwrap();
        assert_eq!(new.version, 2);
        let only_new = MasterKeyring::new((2, MasterKey::from_bytes([2; 32])), vec![]);
        assert!(unwrap_org_key(&only_new, "org-a", &old).is_err(), "the retired key is needed for old wraps");
        let reopened = unwrap_org_key(&only_new, "org-a", &new).unwrap();
        assert_eq!(reopened.bytes(), org_key.bytes());
    }

    #[test]
    fn blind_indexes_depend_on_org_field_and_key() {
        let k1 = DataKey::from_random([1; 32]);
        let k2 = DataKey::from_random([2; 32]);
        let a = blind_index(&k1, "org-a", "mrn", "MRN-1");
        assert_eq!(a, blind_index(&k1, "org-a", "mrn", "MRN-1"));
        assert_ne!(a, blind_index(&k1, "org-a", "mrn", "MRN-2"));
        assert_ne!(a, blind_index(&k1, "org-b", "mrn", "MRN-1"));
        assert_ne!(a, blind_index(&k1, "org-a", "phone", "MRN-1"));
        assert_ne!(a, blind_index(&k2, "org-a", "mrn", "MRN-1"));
    }
}
