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
}

impl Default for OrgPolicy {
    fn default() -> Self {
        Self { mfa_required: true, inactivity_timeout_seconds: 15 * 60, session_lifetime_seconds: 12 * 3600 }
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
            mfa_required: true,
        };
        assert_eq!(p.validate().unwrap_err().code, "exceeds_lifetime");
    }
}
