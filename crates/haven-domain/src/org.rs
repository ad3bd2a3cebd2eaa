//! Organisations (tenants) and the policies each one sets for its users.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{OrgId, ValidationError};

/// An organisation: a clinic, a hospital, a practice. Everything else belongs to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    /// Its id.
    pub id: OrgId,
    /// Its display name, e.g. "Riverside Clinic".
    pub name: String,
    /// Its security policy.
    pub policy: OrgPolicy,
    /// When it was created.
    pub created_at: Timestamp,
}

/// Security policy of an organisation. Defaults are the strict values of requirements.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgPolicy {
    /// Whether every user must enrol a second factor before doing anything else.
    pub mfa_required: bool,
    /// A session ends after this many seconds without activity (HIPAA automatic logoff).
    /// At most the session lifetime.
    #[schema(minimum = 30, maximum = 14400)]
    pub inactivity_timeout_seconds: u32,
    /// A session ends this many seconds after sign-in, whatever the activity.
    #[schema(minimum = 300, maximum = 43200)]
    pub session_lifetime_seconds: u32,
    /// The largest attachment members may share, in bytes (0: no attachments). The server's
    /// own limit (`messaging.max_attachment_bytes`) applies too. Default 25 MiB when absent.
    #[serde(default = "default_attachment_bytes")]
    #[schema(minimum = 0, maximum = 1073741824)]
    pub max_attachment_bytes: u64,
    /// Which kinds of file members may share (judged from the content). Default all when absent.
    #[serde(default)]
    pub attachment_kinds: AttachmentKinds,
}

fn default_attachment_bytes() -> u64 {
    DEFAULT_ATTACHMENT_BYTES
}

/// The default attachment limit: 25 MiB.
pub const DEFAULT_ATTACHMENT_BYTES: u64 = 25 * 1024 * 1024;
/// The highest attachment limit a policy may set: 1 GiB.
pub const MAX_ATTACHMENT_BYTES: u64 = 1024 * 1024 * 1024;

/// A kind of file that can be shared, judged from its content (see `attachment::kind_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentKind {
    /// PNG, JPEG, GIF, WebP, HEIC.
    Image,
    /// PDF documents.
    Pdf,
    /// Word, Excel and PowerPoint documents, and RTF.
    Office,
    /// Plain text.
    Text,
}

impl AttachmentKind {
    /// Every kind, in display order.
    pub const ALL: [AttachmentKind; 4] =
        [AttachmentKind::Image, AttachmentKind::Pdf, AttachmentKind::Office, AttachmentKind::Text];

    /// The stable name used in the API and storage.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachmentKind::Image => "image",
            AttachmentKind::Pdf => "pdf",
            AttachmentKind::Office => "office",
            AttachmentKind::Text => "text",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of attachment kinds (a list in the API, each kind once, in display order).
#[derive(Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(value_type = Vec<AttachmentKind>)]
pub struct AttachmentKinds(u8);

impl Default for AttachmentKinds {
    fn default() -> Self {
        Self::from_kinds(AttachmentKind::ALL)
    }
}

impl AttachmentKinds {
    /// The set of these kinds.
    pub fn from_kinds(kinds: impl IntoIterator<Item = AttachmentKind>) -> Self {
        Self(kinds.into_iter().fold(0, |acc, k| acc | k.bit()))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: AttachmentKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The kinds in the set, in display order.
    pub fn kinds(self) -> Vec<AttachmentKind> {
        AttachmentKind::ALL.into_iter().filter(|k| self.contains(*k)).collect()
    }

    /// Comma-separated stable names, for storage.
    pub fn to_storage(self) -> String {
        self.kinds().iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",")
    }

    /// Parses the storage form; an unknown name is an error.
    pub fn from_storage(s: &str) -> Option<Self> {
        let mut set = Self(0);
        for name in s.split(',').filter(|n| !n.is_empty()) {
            set.0 |= AttachmentKind::ALL.into_iter().find(|k| k.as_str() == name)?.bit();
        }
        Some(set)
    }
}

impl std::fmt::Debug for AttachmentKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds()).finish()
    }
}

impl Serialize for AttachmentKinds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.kinds().serialize(s)
    }
}

impl<'de> Deserialize<'de> for AttachmentKinds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_kinds(Vec::<AttachmentKind>::deserialize(d)?))
    }
}

impl Default for OrgPolicy {
    fn default() -> Self {
        Self {
            mfa_required: true,
            inactivity_timeout_seconds: 15 * 60,
            session_lifetime_seconds: 12 * 3600,
            max_attachment_bytes: DEFAULT_ATTACHMENT_BYTES,
            attachment_kinds: AttachmentKinds::default(),
        }
    }
}

/// Bounds on the inactivity timeout: at least 30 s, at most 4 h.
pub const INACTIVITY_BOUNDS: (u32, u32) = (30, 4 * 3600);
/// Bounds on the absolute session lifetime: at least 5 min, at most 12 h (NIST AAL2).
pub const LIFETIME_BOUNDS: (u32, u32) = (5 * 60, 12 * 3600);

impl OrgPolicy {
    /// Checks the policy's values against their bounds and each other.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let (lo, hi) = INACTIVITY_BOUNDS;
        if !(lo..=hi).contains(&self.inactivity_timeout_seconds) {
            return Err(ValidationError::new(
                "inactivity_timeout_seconds",
                "out_of_range",
                format!("the inactivity timeout must be between {lo} and {hi} seconds"),
            ));
        }
        let (lo, hi) = LIFETIME_BOUNDS;
        if !(lo..=hi).contains(&self.session_lifetime_seconds) {
            return Err(ValidationError::new(
                "session_lifetime_seconds",
                "out_of_range",
                format!("the session lifetime must be between {lo} and {hi} seconds"),
            ));
        }
        if self.max_attachment_bytes > MAX_ATTACHMENT_BYTES {
            return Err(ValidationError::new(
                "max_attachment_bytes",
                "out_of_range",
                format!("the attachment limit can be at most {MAX_ATTACHMENT_BYTES} bytes (1 GiB)"),
            ));
        }
        if self.inactivity_timeout_seconds > self.session_lifetime_seconds {
            return Err(ValidationError::new(
                "inactivity_timeout_seconds",
                "exceeds_lifetime",
                "the inactivity timeout cannot be longer than the session lifetime",
            ));
        }
        Ok(())
    }
}

/// Checks an organisation name.
pub fn check_org_name(name: &str) -> Result<String, ValidationError> {
    crate::validation::check_name("name", name, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_strict_values() {
        let p = OrgPolicy::default();
        assert!(p.mfa_required);
        assert_eq!(p.inactivity_timeout_seconds, 900);
        assert_eq!(p.session_lifetime_seconds, 43200);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn out_of_range_values_name_the_setting() {
        let p = OrgPolicy { inactivity_timeout_seconds: 5, ..OrgPolicy::default() };
        assert_eq!(p.validate().unwrap_err().field, "inactivity_timeout_seconds");
        let p = OrgPolicy { session_lifetime_seconds: 13 * 3600, ..OrgPolicy::default() };
        assert_eq!(p.validate().unwrap_err().field, "session_lifetime_seconds");
        let p = OrgPolicy {
            inactivity_timeout_seconds: 4 * 3600,
            session_lifetime_seconds: 3600,
            ..OrgPolicy::default()
        };
        assert_eq!(p.validate().unwrap_err().code, "exceeds_lifetime");
        let p = OrgPolicy { max_attachment_bytes: MAX_ATTACHMENT_BYTES + 1, ..OrgPolicy::default() };
        assert_eq!(p.validate().unwrap_err().field, "max_attachment_bytes");
    }

    #[test]
    fn attachment_settings_default_when_absent_and_round_trip() {
        let old: OrgPolicy = serde_json::from_str(
            r#"{"mfa_required":true,"inactivity_timeout_seconds":600,"session_lifetime_seconds":3600}"#,
        )
        .unwrap();
        assert_eq!(old.max_attachment_bytes, DEFAULT_ATTACHMENT_BYTES);
        assert_eq!(old.attachment_kinds.kinds(), AttachmentKind::ALL);
        let p: OrgPolicy = serde_json::from_str(
            r#"{"mfa_required":true,"inactivity_timeout_seconds":600,"session_lifetime_seconds":3600,
                "max_attachment_bytes":0,"attachment_kinds":["text","image","text"]}"#,
        )
        .unwrap();
        assert_eq!(p.attachment_kinds.kinds(), [AttachmentKind::Image, AttachmentKind::Text]);
        assert_eq!(serde_json::to_value(p.attachment_kinds).unwrap(), serde_json::json!(["image", "text"]));
        assert_eq!(AttachmentKinds::from_storage(&p.attachment_kinds.to_storage()), Some(p.attachment_kinds));
        assert_eq!(AttachmentKinds::from_storage(""), Some(AttachmentKinds::from_kinds([])));
        assert_eq!(AttachmentKinds::from_storage("image,exe"), None);
        assert!(serde_json::from_str::<OrgPolicy>(r#"{"mfa_required":true,"inactivity_timeout_seconds":600,"session_lifetime_seconds":3600,"attachment_kinds":["exe"]}"#).is_err());
    }
}
