//! Opaque bearer secrets: session tokens (256 bits) and recovery codes (80 bits). Only their
//! SHA-256 digests are stored, so a copy of the database does not let anyone sign in.

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD, HEXLOWER};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::Secret;

/// Encodes 32 random bytes as a session token (43 URL-safe characters).
pub fn session_token(random: [u8; 32]) -> Secret<String> {
    Secret::new(BASE64URL_NOPAD.encode(&random))
}

/// The stored form of a token or code: lowercase hex of its SHA-256.
pub fn digest(secret: &str) -> String {
    HEXLOWER.encode(&Sha256::digest(secret.as_bytes()))
}

/// Formats 10 random bytes as a recovery code `xxxx-xxxx-xxxx-xxxx` (80 bits, base32).
pub fn recovery_code(random: [u8; 10]) -> Secret<String> {
    let raw = BASE32_NOPAD.encode(&random).to_lowercase();
    let grouped: Vec<&str> = (0..4).map(|i| &raw[i * 4..i * 4 + 4]).collect();
    Secret::new(grouped.join("-"))
}

/// Normalises a typed recovery code (case, spaces, dashes) to the form that was hashed.
pub fn normalize_recovery_code(typed: &str) -> String {
    let compact: String =
        typed.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
    if compact.len() != 16 {
        return compact;
    }
    (0..4).map(|i| &compact[i * 4..i * 4 + 4]).collect::<Vec<_>>().join("-")
}

/// Constant-time equality of two strings (digests, signatures).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_url_safe() {
        let t = session_token([0xAB; 32]);
        assert_eq!(t.expose().len(), 43);
        assert!(t.expose().chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(digest(t.expose()).len(), 64);
        assert_ne!(digest(t.expose()), *t.expose());
    }

    #[test]
    fn recovery_codes_normalise_what_people_type() {
        let code = recovery_code([7; 10]);
        assert_eq!(code.expose().len(), 19);
        let typed = code.expose().to_uppercase().replace('-', " ");
        assert_eq!(normalize_recovery_code(&typed), *code.expose());
    }

    #[test]
    fn ct_eq_compares() {
        assert!(ct_eq("abc", "abc"));
        assert!(!ct_eq("abc", "abd"));
        assert!(!ct_eq("abc", "abcd"));
    }
}
