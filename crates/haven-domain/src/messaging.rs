//! Messaging rules: conversation kinds and membership, priorities, message bodies, expiry and
//! idempotency keys. The payload model is opaque bytes with a content type, so an end-to-end
//! encrypted conversation (MLS, RFC 9420) whose payloads the server cannot read fits the same
//! model: nothing here assumes the server can read a message.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{UserId, ValidationError};

/// What kind of conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationKind {
    /// Two people.
    Direct,
    /// A care team or any group.
    Group,
    /// About one patient: members see the patient banner.
    Patient,
}

/// How urgent a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Normal.
    Routine,
    /// Needs attention soon.
    Urgent,
    /// Immediately (critical results, emergencies).
    Stat,
}

/// How a payload is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ContentType {
    /// UTF-8 text, sealed at rest by the server.
    Text,
    /// An MLS (RFC 9420) message the server relays and stores without being able to read it.
    MlsCiphertext,
}

/// What happened at one position of a conversation's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The conversation was created with its first members.
    Created,
    /// A member was added.
    MemberAdded,
    /// A member was removed by another.
    MemberRemoved,
    /// A member left.
    MemberLeft,
    /// A message was sent.
    Message,
    /// A message was edited (a new version).
    MessageEdited,
    /// A message was recalled by its sender: its content is destroyed.
    MessageRecalled,
    /// A message reached its expiry: its content is destroyed.
    MessageExpired,
    /// A message of the patient's thread: to the patient (read on the secure page) or from
    /// them (written there or texted).
    PatientMessage,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 9] = [
        EventKind::Created,
        EventKind::MemberAdded,
        EventKind::MemberRemoved,
        EventKind::MemberLeft,
        EventKind::Message,
        EventKind::MessageEdited,
        EventKind::MessageRecalled,
        EventKind::MessageExpired,
        EventKind::PatientMessage,
    ];

    /// The stable name used in storage and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::MemberAdded => "member_added",
            EventKind::MemberRemoved => "member_removed",
            EventKind::MemberLeft => "member_left",
            EventKind::Message => "message",
            EventKind::MessageEdited => "message_edited",
            EventKind::MessageRecalled => "message_recalled",
            EventKind::MessageExpired => "message_expired",
            EventKind::PatientMessage => "patient_message",
        }
    }

    /// Parses the stable name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

macro_rules! stable_names {
    ($t:ty { $($v:ident => $s:literal),* $(,)? }) => {
        impl $t {
            /// The stable name used in storage and on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => $s),* }
            }
            /// Parses the stable name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(<$t>::$v),)* _ => None }
            }
        }
    };
}
pub(crate) use stable_names;

stable_names!(ConversationKind { Direct => "direct", Group => "group", Patient => "patient" });
stable_names!(Priority { Routine => "routine", Urgent => "urgent", Stat => "stat" });
stable_names!(ContentType { Text => "text", MlsCiphertext => "mls_ciphertext" });

/// Which way a message of a patient's thread went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatientDirection {
    /// Staff to the patient: announced by a PHI-free text with a secure link.
    ToPatient,
    /// The patient to staff.
    FromPatient,
}

/// How a message of a patient's thread travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PatientChannel {
    /// Read or written on the secure page, after the identity check.
    SecurePage,
    /// Texted by the patient.
    Sms,
}

/// Where a patient thread stands in the organisation's shared inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboxStatus {
    /// The patient wrote and staff have not finished with it.
    Open,
    /// Handled (a new message from the patient opens it again).
    Done,
}

stable_names!(PatientDirection { ToPatient => "to_patient", FromPatient => "from_patient" });
stable_names!(PatientChannel { SecurePage => "secure_page", Sms => "sms" });
stable_names!(InboxStatus { Open => "open", Done => "done" });

/// Limits on messages, set by the server's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest body, in bytes.
    pub max_body_bytes: usize,
    /// Longest expiry a sender may set.
    pub max_expiry: SignedDuration,
    /// Most members a group may have.
    pub max_members: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self { max_body_bytes: 16 * 1024, max_expiry: SignedDuration::from_hours(24 * 30), max_members: 1000 }
    }
}

/// Checks a text body: not blank, within the size limit, no NUL characters.
pub fn check_body(body: &str, limits: &MessageLimits) -> Result<(), ValidationError> {
    if body.trim().is_empty() {
        return Err(ValidationError::new("body", "body_empty", "a message needs some text"));
    }
    check_body_content(body, limits)
}

/// Checks the body of a new message: like [`check_body`], except that a message that shares
/// attachments may have no text of its own.
pub fn check_new_body(
    body: &str,
    has_attachments: bool,
    limits: &MessageLimits,
) -> Result<(), ValidationError> {
    if has_attachments && body.trim().is_empty() {
        return check_body_content(body, limits);
    }
    check_body(body, limits)
}

fn check_body_content(body: &str, limits: &MessageLimits) -> Result<(), ValidationError> {
    if body.len() > limits.max_body_bytes {
        return Err(ValidationError::new(
            "body",
            "body_too_large",
            format!("a message may have at most {} bytes", limits.max_body_bytes),
        ));
    }
    if body.contains('\0') {
        return Err(ValidationError::new("body", "body_invalid", "a message may not contain NUL characters"));
    }
    Ok(())
}

/// Checks an optional expiry: in the future, and not beyond the limit.
pub fn check_expiry(
    expires_at: Option<Timestamp>,
    now: Timestamp,
    limits: &MessageLimits,
) -> Result<(), ValidationError> {
    let Some(at) = expires_at else { return Ok(()) };
    if at <= now {
        return Err(ValidationError::new("expires_at", "expiry_in_past", "the expiry must be in the future"));
    }
    if at.duration_since(now) > limits.max_expiry {
        return Err(ValidationError::new(
            "expires_at",
            "expiry_too_far",
            format!("a message may expire at most {} days ahead", limits.max_expiry.as_hours() / 24),
        ));
    }
    Ok(())
}

/// The members of a new conversation: the creator plus `others`, de-duplicated, checked
/// against the kind (a direct conversation has exactly two people).
pub fn initial_members(
    kind: ConversationKind,
    creator: UserId,
    others: &[UserId],
    limits: &MessageLimits,
) -> Result<Vec<UserId>, ValidationError> {
    let mut members = vec![creator];
    for o in others {
        if !members.contains(o) {
            members.push(*o);
        }
    }
    match kind {
        ConversationKind::Direct if members.len() != 2 => Err(ValidationError::new(
            "members",
            "direct_needs_two",
            "a direct conversation is between you and exactly one other person",
        )),
        _ if members.len() > limits.max_members => Err(ValidationError::new(
            "members",
            "too_many_members",
            format!("a conversation may have at most {} members", limits.max_members),
        )),
        _ => Ok(members),
    }
}

/// A client-chosen key that makes a send idempotent: 1–128 characters of `A-Z a-z 0-9 - _ . :`.
pub fn check_idempotency_key(key: &str) -> Result<(), ValidationError> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            "idempotency_key",
            "invalid_idempotency_key",
            "an idempotency key has 1 to 128 characters of letters, digits and - _ . :",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn uid(n: u8) -> UserId {
        struct Fixed(u8);
        impl crate::Entropy for Fixed {
            fn fill(&mut self, dest: &mut [u8]) {
                dest.fill(self.0)
            }
        }
        UserId::random(&mut Fixed(n))
    }

    #[test]
    fn bodies_must_be_non_blank_and_bounded() {
        let l = MessageLimits { max_body_bytes: 10, ..MessageLimits::default() };
        assert_eq!(check_body("   \n", &l).unwrap_err().code, "body_empty");
        assert_eq!(check_new_body("", false, &l).unwrap_err().code, "body_empty");
        assert!(check_new_body("", true, &l).is_ok(), "attachments alone are a message");
        assert_eq!(check_new_body("a\0", true, &l).unwrap_err().code, "body_invalid");
        assert_eq!(check_body("01234567890", &l).unwrap_err().code, "body_too_large");
        assert_eq!(check_body("a\0b", &l).unwrap_err().code, "body_invalid");
        assert!(check_body("K+ 6.1", &l).is_ok());
    }

    #[test]
    fn expiry_must_be_ahead_and_within_the_limit() {
        let l = MessageLimits::default();
        assert!(check_expiry(None, t(0), &l).is_ok());
        assert_eq!(check_expiry(Some(t(0)), t(0), &l).unwrap_err().code, "expiry_in_past");
        assert!(check_expiry(Some(t(60)), t(0), &l).is_ok());
        assert_eq!(check_expiry(Some(t(31 * 86400)), t(0), &l).unwrap_err().code, "expiry_too_far");
    }

    #[test]
    fn direct_conversations_have_exactly_two_people() {
        let l = MessageLimits::default();
        let (a, b, c) = (uid(1), uid(2), uid(3));
        assert_eq!(initial_members(ConversationKind::Direct, a, &[b], &l).unwrap(), vec![a, b]);
        assert!(initial_members(ConversationKind::Direct, a, &[a], &l).is_err());
        assert!(initial_members(ConversationKind::Direct, a, &[b, c], &l).is_err());
        assert_eq!(initial_members(ConversationKind::Group, a, &[b, b, c, a], &l).unwrap(), vec![a, b, c]);
        let small = MessageLimits { max_members: 2, ..l };
        assert!(initial_members(ConversationKind::Group, a, &[b, c], &small).is_err());
    }

    #[test]
    fn stable_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        for p in [Priority::Routine, Priority::Urgent, Priority::Stat] {
            assert_eq!(Priority::parse(p.as_str()), Some(p));
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!(ConversationKind::parse("patient"), Some(ConversationKind::Patient));
        assert_eq!(ContentType::parse("mls_ciphertext"), Some(ContentType::MlsCiphertext));
        assert_eq!(Priority::parse("URGENT"), None);
    }

    #[test]
    fn idempotency_keys_are_short_and_plain() {
        assert!(check_idempotency_key("7f3c-01HZX:retry.2").is_ok());
        assert!(check_idempotency_key("").is_err());
        assert!(check_idempotency_key(&"x".repeat(129)).is_err());
        assert!(check_idempotency_key("has space").is_err());
    }
}
