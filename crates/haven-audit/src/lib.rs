//! Haven's tamper-evident audit log, with no IO.
//!
//! - [`merkle`]: RFC 9162 hashing (leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || l || r)),
//!   tree heads, inclusion and consistency proofs, and the compact frontier that lets the server
//!   append in O(log n).
//! - [`checkpoint`]: checkpoints in the C2SP signed-note format, signed with Ed25519.
//! - [`export`]: the export file and the offline verifier an auditor runs without the server.

pub mod checkpoint;
pub mod export;
pub mod merkle;
pub mod synthetic;

pub use merkle::Hash;
