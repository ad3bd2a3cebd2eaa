//! Identifier newtypes. Every id carries at least 74 random bits, so ids cannot be enumerated,
//! and each kind of id has its own type, so a user id can never be passed where an
//! organisation id belongs.

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

            /// A fresh time-ordered id (UUIDv7: the millisecond of `now`, then 74 random bits).
            /// For rows written at a high rate: their index entries go to the end of the index,
            /// not to a random page each, so a commit writes a few pages instead of one per row.
            /// The time it shows is the row's creation time, which is stored beside it anyway.
            pub fn time_ordered(now: jiff::Timestamp, rng: &mut impl Entropy) -> Self {
                let millis = u64::try_from(now.as_millisecond()).unwrap_or(0);
                Self(uuid::Builder::from_unix_timestamp_millis(millis, &rng.bytes::<10>()).into_uuid())
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

    #[test]
    fn time_ordered_ids_sort_by_their_time_and_keep_random_bits() {
        let at = |ms: i64| jiff::Timestamp::from_millisecond(ms).unwrap();
        let earlier = MessageId::time_ordered(at(1_764_900_000_000), &mut Counter(200));
        let later = MessageId::time_ordered(at(1_764_900_000_001), &mut Counter(0));
        assert_eq!(earlier.as_uuid().get_version_num(), 7);
        // Ordered by time even when the later one's random bits are smaller.
        assert!(earlier.as_uuid() < later.as_uuid());
        assert!(earlier.to_string() < later.to_string());
        // Same millisecond, different entropy: still distinct.
        let twin = MessageId::time_ordered(at(1_764_900_000_000), &mut Counter(201));
        assert_ne!(earlier, twin);
        let (secs, _) = earlier.as_uuid().get_timestamp().unwrap().to_unix();
        assert_eq!(secs, 1_764_900_000);
    }
}
