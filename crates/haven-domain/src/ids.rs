//! Identifier newtypes. Every id is 128 random bits, so ids cannot be enumerated, and each kind
//! of id has its own type, so a user id can never be passed where an organisation id belongs.

use std::fmt;
use std::str::FromStr;

use crate::Entropy;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A fresh random id (122 random bits in UUIDv4 layout, 128 drawn).
            pub fn random(rng: &mut impl Entropy) -> Self {
                Self(uuid::Builder::from_random_bytes(rng.bytes::<16>()).into_uuid())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }

            /// Wraps an existing UUID (from storage or a request path).
            pub fn from_uuid(id: uuid::Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .format(Some(utoipa::openapi::schema::SchemaFormat::KnownFormat(
                        utoipa::openapi::schema::KnownFormat::Uuid,
                    )))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

id_type!(
    /// An organisation (tenant).
    OrgId
);
id_type!(
    /// A user account (staff member or service account).
    UserId
);
id_type!(
    /// A session (one sign-in).
    SessionId
);
id_type!(
    /// One audit record.
    AuditId
);
id_type!(
    /// A patient record.
    PatientId
);
id_type!(
    /// A conversation.
    ConversationId
);
id_type!(
    /// A message.
    MessageId
);
id_type!(
    /// An attachment.
    AttachmentId
);
id_type!(
    /// An outbound text in the outbox.
    TextId
);
id_type!(
    /// An inbound text.
    InboundTextId
);
id_type!(
    /// One entry of the consent ledger.
    ConsentId
);
id_type!(
    /// A secure link sent to a patient.
    LinkId
);
id_type!(
    /// A message of a patient's thread.
    PatientMessageId
);

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u8);
    impl Entropy for Counter {
        fn fill(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.0;
                self.0 = self.0.wrapping_add(1);
            }
        }
    }

    #[test]
    fn ids_round_trip_through_text() {
        let id = UserId::random(&mut Counter(7));
        let parsed: UserId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        assert_eq!(id.as_uuid().get_version_num(), 4);
    }

    #[test]
    fn different_entropy_gives_different_ids() {
        assert_ne!(OrgId::random(&mut Counter(0)), OrgId::random(&mut Counter(1)));
    }
}
