//! Haven's cryptography, with no IO: password hashing (Argon2id), TOTP (RFC 6238), session
//! tokens and recovery codes (random, stored as SHA-256), AEAD sealing (AES-256-GCM) of small
//! secrets, and the [`Secret`] type whose `Debug` never prints its contents.

pub mod envelope;
pub mod password;
pub mod seal;
pub mod secret;
pub mod token;
pub mod totp;

pub use secret::Secret;

/// Errors of this crate. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A parameter was out of range (e.g. Argon2 cost settings).
    #[error("invalid parameter: {0}")]
    InvalidParameter(&'static str),
    /// A stored hash could not be parsed.
    #[error("malformed stored hash")]
    MalformedHash,
    /// Sealed data failed authentication or was malformed.
    #[error("sealed data could not be opened")]
    OpenFailed,
    /// A QR code could not be built for the given data.
    #[error("QR code could not be rendered")]
    Qr,
}
