//! Audit records: what happened, to what, by whom, from where, with what outcome. The fields
//! follow what a FHIR R4 AuditEvent needs. A record never carries a message body, a password,
//! a token or a TOTP secret: its fields are ids, codes and addresses only.

use serde::{Deserialize, Serialize};

use crate::roles::Role;
use crate::{OrgId, SessionId, UserId};

/// FHIR AuditEvent.action: what kind of operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAction {
    /// Create.
    C,
    /// Read/view.
    R,
    /// Update.
    U,
    /// Delete.
    D,
    /// Execute (sign-in, sign-out, search, export…).
    E,
}

/// FHIR AuditEvent.outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// Success ("0").
    Success,
    /// Minor failure ("4"): refused input, wrong password, denied access.
    MinorFailure,
    /// Serious failure ("8").
    SeriousFailure,
}

impl AuditOutcome {
    /// The FHIR outcome code.
    pub fn fhir_code(self) -> &'static str {
        match self {
            AuditOutcome::Success => "0",
            AuditOutcome::MinorFailure => "4",
            AuditOutcome::SeriousFailure => "8",
        }
    }
}

/// Who did it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAgent {
    /// The acting user, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The acting user's primary role, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The network address the request came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The session the request used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// The client's User-Agent, truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A non-user actor, e.g. `cli` or `system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

/// What it was done to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntity {
    /// Kind of thing: `user`, `organization`, `session`, `policy`, `patient`, `conversation`…
    pub kind: String,
    /// Its id.
    pub id: String,
}

/// One audit record, before it is stored (storage assigns its sequence number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The organisation the event belongs to (none for failures against unknown accounts).
    pub org_id: Option<OrgId>,
    /// Event type, e.g. `user-authentication`, `user-management`, `policy`.
    pub event_type: String,
    /// Event subtype, e.g. `login`, `logout`, `mfa-enroll`, `user-create`.
    pub subtype: String,
    /// Operation kind.
    pub action: AuditAction,
    /// Result.
    pub outcome: AuditOutcome,
    /// A short code explaining a failure (`wrong_password`, `throttled`…); never free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_code: Option<String>,
    /// Who.
    pub agent: AuditAgent,
    /// To what.
    pub entities: Vec<AuditEntity>,
    /// Purpose of use, where known (e.g. `TREAT`, `HOPERAT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

impl AuditRecord {
    /// A record with no entities yet.
    pub fn new(
        org_id: Option<OrgId>,
        event_type: &str,
        subtype: &str,
        action: AuditAction,
        outcome: AuditOutcome,
        agent: AuditAgent,
    ) -> Self {
        Self {
            org_id,
            event_type: event_type.to_owned(),
            subtype: subtype.to_owned(),
            action,
            outcome,
            outcome_code: None,
            agent,
            entities: Vec::new(),
            purpose: None,
        }
    }

    /// Adds an entity.
    pub fn entity(mut self, kind: &str, id: impl ToString) -> Self {
        self.entities.push(AuditEntity { kind: kind.to_owned(), id: id.to_string() });
        self
    }

    /// Sets the failure code.
    pub fn code(mut self, code: &str) -> Self {
        self.outcome_code = Some(code.to_owned());
        self
    }
}
