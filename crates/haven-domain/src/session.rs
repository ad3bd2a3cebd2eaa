//! Session rules: the states a sign-in goes through, and when a session ends.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::org::OrgPolicy;

/// How far a session has got through sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Password accepted; a TOTP or recovery code is still due.
    MfaRequired,
    /// Password accepted; policy demands MFA and the user has none yet: enrolment only.
    MfaEnrollmentRequired,
    /// Fully signed in.
    Active,
}

impl SessionState {
    /// Stable storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::MfaRequired => "mfa_required",
            SessionState::MfaEnrollmentRequired => "mfa_enrollment_required",
            SessionState::Active => "active",
        }
    }

    /// Parses the storage name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::MfaRequired, Self::MfaEnrollmentRequired, Self::Active].into_iter().find(|v| v.as_str() == s)
    }
}

/// Why a session is no longer usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// No activity for longer than the inactivity timeout.
    Idle,
    /// Older than the absolute lifetime.
    Expired,
}

impl SessionEnd {
    /// Stable name, used as the end reason in storage and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Idle => "inactivity_timeout",
            SessionEnd::Expired => "lifetime_expired",
        }
    }
}

/// Sessions in a sign-in step (before MFA) live at most this long.
pub const PENDING_LIFETIME: SignedDuration = SignedDuration::from_secs(10 * 60);

/// Decides whether a session is still alive at `now`.
pub fn check_alive(
    policy: &OrgPolicy,
    state: SessionState,
    created_at: Timestamp,
    last_seen_at: Timestamp,
    now: Timestamp,
) -> Result<(), SessionEnd> {
    let lifetime = match state {
        SessionState::Active => SignedDuration::from_secs(policy.session_lifetime_seconds.into()),
        _ => PENDING_LIFETIME,
    };
    if now.duration_since(created_at) >= lifetime {
        return Err(SessionEnd::Expired);
    }
    let idle = SignedDuration::from_secs(policy.inactivity_timeout_seconds.into());
    if now.duration_since(last_seen_at) >= idle {
        return Err(SessionEnd::Idle);
    }
    Ok(())
}

/// The instant at which a session's absolute lifetime ends.
pub fn expires_at(policy: &OrgPolicy, state: SessionState, created_at: Timestamp) -> Timestamp {
    let secs = match state {
        SessionState::Active => i64::from(policy.session_lifetime_seconds),
        _ => PENDING_LIFETIME.as_secs(),
    };
    created_at + SignedDuration::from_secs(secs)
}

/// Last-seen times are written at most this often, so that a busy session does not turn every
/// request into a database write. The inactivity check is accurate to this granularity.
pub const TOUCH_GRANULARITY: SignedDuration = SignedDuration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn idle_session_ends_after_the_timeout_exactly() {
        let p = OrgPolicy::default();
        assert_eq!(check_alive(&p, SessionState::Active, t(0), t(0), t(899)), Ok(()));
        assert_eq!(check_alive(&p, SessionState::Active, t(0), t(0), t(900)), Err(SessionEnd::Idle));
        assert_eq!(check_alive(&p, SessionState::Active, t(0), t(600), t(1400)), Ok(()));
    }

    #[test]
    fn active_session_ends_at_its_lifetime_however_busy() {
        let p = OrgPolicy::default();
        let end = 12 * 3600;
        assert_eq!(check_alive(&p, SessionState::Active, t(0), t(end - 1), t(end)), Err(SessionEnd::Expired));
        assert_eq!(expires_at(&p, SessionState::Active, t(0)), t(end));
    }

    #[test]
    fn pending_sessions_live_ten_minutes() {
        let p = OrgPolicy::default();
        assert_eq!(
            check_alive(&p, SessionState::MfaRequired, t(0), t(599), t(600)),
            Err(SessionEnd::Expired)
        );
    }
}
