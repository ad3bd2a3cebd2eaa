//! Checkpoints in the C2SP `tlog-checkpoint` format, carried in a C2SP signed note with an
//! Ed25519 signature. The body is `origin\nsize\nbase64(root)\n`; each signature line is
//! `— <key name> base64(key id (4 bytes) || signature)`, where the key id is the first four
//! bytes of SHA-256(name || "\n" || 0x01 || public key).

use data_encoding::{BASE64, HEXLOWER};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::Hash;

/// Why a checkpoint or note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note or body does not follow the format.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature by the expected key verified.
    #[error("no valid signature by {0}")]
    BadSignature(String),
    /// The verifier key string is not `name+hash+base64`.
    #[error("malformed verifier key")]
    BadKey,
}

/// A signed statement of the log's size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's unique name.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// Root hash of the tree of those entries.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body that is signed.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\n", self.origin, self.size, BASE64.encode(&self.root))
    }

    /// Parses a note body (extension lines after the root are allowed and ignored).
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty()).ok_or(CheckpointError::Malformed("origin"))?;
        let size =
            lines.next().and_then(|s| s.parse::<u64>().ok()).ok_or(CheckpointError::Malformed("size"))?;
        let root = lines
            .next()
            .and_then(|r| BASE64.decode(r.as_bytes()).ok())
            .and_then(|r| <Hash>::try_from(r).ok())
            .ok_or(CheckpointError::Malformed("root hash"))?;
        Ok(Self { origin: origin.to_owned(), size, root })
    }
}

const ED25519: u8 = 0x01;
const DASH: &str = "\u{2014} ";

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn check_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['+', ' ', '\n'])
}

/// Signs checkpoints with the server's Ed25519 key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner").field("name", &self.name).finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer named `name` (the log origin) from a 32-byte Ed25519 seed.
    pub fn new(name: &str, seed: &[u8; 32]) -> Result<Self, CheckpointError> {
        if !check_name(name) {
            return Err(CheckpointError::BadKey);
        }
        Ok(Self { name: name.to_owned(), key: SigningKey::from_bytes(seed) })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public verifier key: `name+hex(key id)+base64(0x01 || public key)`.
    pub fn verifier_key(&self) -> String {
        let public = self.key.verifying_key().to_bytes();
        let mut typed = vec![ED25519];
        typed.extend_from_slice(&public);
        format!("{}+{}+{}", self.name, HEXLOWER.encode(&key_id(&self.name, &public)), BASE64.encode(&typed))
    }

    /// Signs a checkpoint; returns the whole note text.
    pub fn sign(&self, cp: &Checkpoint) -> String {
        let body = cp.body();
        let sig = self.key.sign(body.as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key().to_bytes()).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n{DASH}{} {}\n", self.name, BASE64.encode(&blob))
    }
}

/// Verifies notes signed by one key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Parses a verifier key string as produced by [`NoteSigner::verifier_key`].
    pub fn from_key(vkey: &str) -> Result<Self, CheckpointError> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CheckpointError::BadKey);
        };
        let typed = BASE64.decode(b64.as_bytes()).map_err(|_| CheckpointError::BadKey)?;
        if typed.len() != 33 || typed[0] != ED25519 || !check_name(name) {
            return Err(CheckpointError::BadKey);
        }
        let public: [u8; 32] = typed[1..].try_into().map_err(|_| CheckpointError::BadKey)?;
        let id = key_id(name, &public);
        if HEXLOWER.encode(&id) != hash {
            return Err(CheckpointError::BadKey);
        }
        let key = VerifyingKey::from_bytes(&public).map_err(|_| CheckpointError::BadKey)?;
        Ok(Self { name: name.to_owned(), id, key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Verifies a note and returns its checkpoint, whose origin must be the key's name.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let split = note.find("\n\n").ok_or(CheckpointError::Malformed("no signature block"))?;
        let (body, sigs) = (&note[..split + 1], &note[split + 2..]);
        let mut verified = false;
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix(DASH) else {
                return Err(CheckpointError::Malformed("signature line"));
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return Err(CheckpointError::Malformed("signature line"));
            };
            if name != self.name {
                continue;
            }
            let blob = BASE64.decode(b64.as_bytes()).map_err(|_| CheckpointError::Malformed("signature"))?;
            if blob.len() != 68 || blob[..4] != self.id {
                continue;
            }
            let sig =
                Signature::from_slice(&blob[4..]).map_err(|_| CheckpointError::Malformed("signature"))?;
            if self.key.verify(body.as_bytes(), &sig).is_ok() {
                verified = true;
            }
        }
        if !verified {
            return Err(CheckpointError::BadSignature(self.name.clone()));
        }
        let cp = Checkpoint::parse_body(body)?;
        if cp.origin != self.name {
            return Err(CheckpointError::Malformed("origin differs from the key name"));
        }
        Ok(cp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new("haven.example/audit", &[9; 32]).unwrap()
    }

    #[test]
    fn signed_checkpoints_verify_and_round_trip() {
        let s = signer();
        let cp = Checkpoint { origin: "haven.example/audit".into(), size: 42, root: [7; 32] };
        let note = s.sign(&cp);
        assert!(note.starts_with("haven.example/audit\n42\nBwcH"));
        assert!(note.contains("\n\n\u{2014} haven.example/audit "));
        let v = NoteVerifier::from_key(&s.verifier_key()).unwrap();
        assert_eq!(v.verify(&note).unwrap(), cp);
    }

    #[test]
    fn any_change_to_the_note_is_refused() {
        let s = signer();
        let note = s.sign(&Checkpoint { origin: "haven.example/audit".into(), size: 42, root: [7; 32] });
        let v = NoteVerifier::from_key(&s.verifier_key()).unwrap();
        let forged = note.replacen("\n42\n", "\n41\n", 1);
        assert!(matches!(v.verify(&forged), Err(CheckpointError::BadSignature(_))));
        let other = NoteSigner::new("haven.example/audit", &[8; 32]).unwrap();
        let v2 = NoteVerifier::from_key(&other.verifier_key()).unwrap();
        assert!(v2.verify(&note).is_err(), "another key's verifier refuses it");
        assert!(NoteVerifier::from_key("haven.example/audit+00000000+AQ==").is_err());
    }
}
