//! Argon2id password hashing with a per-password random salt, in PHC string format.
//!
//! Verification of an unknown account runs against [`PasswordHasher::dummy_hash`], which has the
//! same cost parameters, so the time taken does not tell whether an account exists.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::CryptoError;

/// Argon2id cost settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    /// Memory in KiB (OWASP: 19456 = 19 MiB).
    pub memory_kib: u32,
    /// Iterations (OWASP: 2).
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for Argon2Cost {
    fn default() -> Self {
        Self { memory_kib: 19_456, iterations: 2, parallelism: 1 }
    }
}

/// Hashes and verifies passwords.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    dummy: String,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// Builds a hasher; `salt_seed` supplies the bytes of the dummy hash's salt.
    pub fn new(cost: Argon2Cost, salt_seed: [u8; 16]) -> Result<Self, CryptoError> {
        let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
            .map_err(|_| CryptoError::InvalidParameter("argon2 cost"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut this = Self { argon, dummy: String::new() };
        this.dummy = this.hash(b"dummy password for unknown accounts", salt_seed)?;
        Ok(this)
    }

    /// Hashes `password` with the given 16 random salt bytes.
    pub fn hash(&self, password: &[u8], salt: [u8; 16]) -> Result<String, CryptoError> {
        let salt = SaltString::encode_b64(&salt).map_err(|_| CryptoError::InvalidParameter("salt"))?;
        self.argon
            .hash_password(password, &salt)
            .map(|h| h.to_string())
            .map_err(|_| CryptoError::InvalidParameter("argon2 hash"))
    }

    /// Verifies `password` against a stored PHC hash (constant-time comparison inside argon2).
    pub fn verify(&self, password: &[u8], stored: &str) -> Result<bool, CryptoError> {
        let parsed = PasswordHash::new(stored).map_err(|_| CryptoError::MalformedHash)?;
        match self.argon.verify_password(password, &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(_) => Err(CryptoError::MalformedHash),
        }
    }

    /// A hash of a fixed password at the configured cost: verify against it when the account
    /// does not exist, and discard the result.
    pub fn dummy_hash(&self) -> &str {
        &self.dummy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(Argon2Cost { memory_kib: 256, iterations: 1, parallelism: 1 }, [1; 16]).unwrap()
    }

    #[test]
    fn hash_is_argon2id_and_verifies_only_the_right_password() {
        let h = cheap();
        let stored = h.hash(b"purple monkey dishwasher", [9; 16]).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$"));
        assert!(h.verify(b"purple monkey dishwasher", &stored).unwrap());
        assert!(!h.verify(b"purple monkey dishwashe", &stored).unwrap());
    }

    #[test]
    fn different_salts_give_different_hashes() {
        let h = cheap();
        assert_ne!(h.hash(b"same", [1; 16]).unwrap(), h.hash(b"same", [2; 16]).unwrap());
    }

    #[test]
    fn malformed_hash_is_an_error_not_a_match() {
        assert!(cheap().verify(b"x", "not-a-hash").is_err());
    }
}
