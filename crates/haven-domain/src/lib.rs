//! Haven's domain: the rules, with no IO, no clock and no randomness of its own.
//!
//! Time comes in as a [`jiff::Timestamp`] argument and randomness through the [`Entropy`]
//! trait, so that every rule here can be tested with a fixed clock and fixed bytes.
//! This crate must not depend on a database driver, a web framework or an async runtime.

pub mod attachment;
pub mod audit;
pub mod ids;
pub mod messaging;
pub mod org;
pub mod password;
pub mod patient;
pub mod roles;
pub mod session;
pub mod sms;
pub mod texting;
pub mod throttle;
pub mod user;
pub mod validation;

pub use ids::{
    AttachmentId, ConsentId, ConversationId, InboundTextId, LinkId, MessageId, OrgId, PatientId,
    PatientMessageId, SessionId, TextId, UserId,
};
pub use validation::ValidationError;

/// A source of random bytes. Production code passes the operating system's CSPRNG;
/// tests pass a seeded or fixed source.
pub trait Entropy {
    /// Fills `dest` entirely with random bytes.
    fn fill(&mut self, dest: &mut [u8]);

    /// Returns `N` random bytes.
    fn bytes<const N: usize>(&mut self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut out = [0u8; N];
        self.fill(&mut out);
        out
    }
}

/// A source of the current time. Domain functions take a `Timestamp` argument instead; this
/// trait is how the layers above obtain one, so tests can substitute a fixed clock.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> jiff::Timestamp;
}

impl<E: Entropy + ?Sized> Entropy for &mut E {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest)
    }
}
