//! Users: staff accounts of one organisation.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::roles::RoleSet;
use crate::{OrgId, UserId, ValidationError};

/// Whether an account may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// May sign in.
    Active,
    /// Access removed; every session was revoked when it happened.
    Deactivated,
}

impl UserStatus {
    /// Stable storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Deactivated => "deactivated",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(UserStatus::Active),
            "deactivated" => Some(UserStatus::Deactivated),
            _ => None,
        }
    }
}

/// A staff account as the rest of the system sees it (no credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// The organisation it belongs to.
    pub org_id: OrgId,
    /// Login name, lowercase, unique across the server.
    pub username: String,
    /// Name shown to colleagues.
    pub display_name: String,
    /// Roles held.
    pub roles: RoleSet,
    /// Active or deactivated.
    pub status: UserStatus,
    /// Whether a TOTP authenticator is enrolled.
    pub mfa_enrolled: bool,
    /// When the account was created.
    pub created_at: Timestamp,
}

/// Normalises and checks a username: 3–64 characters of `a-z 0-9 . _ - @`, compared
/// case-insensitively (stored lowercase).
pub fn normalize_username(raw: &str) -> Result<String, ValidationError> {
    let u = raw.trim().to_lowercase();
    let len = u.chars().count();
    if !(3..=64).contains(&len) {
        return Err(ValidationError::new(
            "username",
            "invalid_username",
            "a username has 3 to 64 characters",
        ));
    }
    if !u.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')) {
        return Err(ValidationError::new(
            "username",
            "invalid_username",
            "a username may contain only letters, digits and . _ - @",
        ));
    }
    Ok(u)
}

/// Checks a display name.
pub fn check_display_name(name: &str) -> Result<String, ValidationError> {
    crate::validation::check_name("display_name", name, 128)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_lowercased_and_checked() {
        assert_eq!(normalize_username("  Dr.Okafor ").unwrap(), "dr.okafor");
        assert!(normalize_username("ab").is_err());
        assert!(normalize_username("robert'); drop").is_err());
        assert!(normalize_username("nurse patel").is_err());
    }

    #[test]
    fn display_names_refuse_control_characters() {
        assert!(check_display_name("Ngozi Okafor").is_ok());
        assert!(check_display_name("Evil\u{0007}Bell").is_err());
        assert!(check_display_name("   ").is_err());
    }
}
