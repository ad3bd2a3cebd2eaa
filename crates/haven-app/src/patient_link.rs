//! The patient's side of a secure link. Opening a link shows only the organisation's name and
//! an identity check, and never uses the link up (link-preview bots open links too). The patient
//! asks for a one-time code, sent to the phone on record, and enters it with their date of
//! birth; five failed checks lock the link. A passed check uses the link and opens a short
//! patient session. Every open, code, check (passed or failed) is audited.

use haven_crypto::Secret;
use haven_domain::LinkId;
use haven_domain::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
use haven_domain::sms::{TextKind, system_text, text_language};
use haven_store::{NewPatientSession, NewText, StoredLink};
use jiff::SignedDuration;
use sha2::{Digest, Sha256};

use crate::texting::{TEXTING, normalise_phone};
use crate::{App, AppError, AppResult, RequestMeta};

/// Failed identity checks before a link locks.
pub const MAX_ATTEMPTS: u32 = 5;
const CODE_LIFETIME: SignedDuration = SignedDuration::from_mins(10);
const RESEND_AFTER: SignedDuration = SignedDuration::from_secs(60);
/// How long a patient session lasts at most.
pub const SESSION_LIFETIME: SignedDuration = SignedDuration::from_mins(15);
/// A patient session ends after this long without activity.
pub const SESSION_IDLE: SignedDuration = SignedDuration::from_mins(5);

/// Where a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Waiting for the identity check; `code_sent` once a code went out.
    Open {
        /// A code was sent and has not expired.
        code_sent: bool,
    },
    /// Too many failed checks.
    Locked,
    /// Past its lifetime.
    Expired,
    /// Identity was proven once already.
    Used,
}

/// What the landing page may show: nothing about the patient.
#[derive(Debug, Clone)]
pub struct LinkLanding {
    /// The organisation's name.
    pub org_name: String,
    /// The page's language (the patient's preferred one, if Haven has it).
    pub language: &'static str,
    /// The number to call for help.
    pub help_phone: String,
    /// The link's state.
    pub state: LinkState,
}

/// Why an identity check did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFailed {
    /// Wrong date of birth or code; this many attempts are left.
    Wrong {
        /// Attempts left before the link locks.
        left: u32,
    },
    /// The link is (now) locked.
    Locked,
}

fn code_hash(link: LinkId, code: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"haven/link-code/v1\0");
    h.update(link.to_string().as_bytes());
    h.update(b"\0");
    h.update(code.trim().as_bytes());
    h.finalize().to_vec()
}

impl App {
    pub(crate) fn page_agent(meta: &RequestMeta) -> AuditAgent {
        AuditAgent {
            address: meta.address.clone(),
            user_agent: meta.user_agent.clone(),
            system: Some("secure-page".into()),
            ..Default::default()
        }
    }

    fn link_record(
        &self,
        link: &StoredLink,
        subtype: &str,
        action: AuditAction,
        outcome: AuditOutcome,
        meta: &RequestMeta,
    ) -> AuditRecord {
        self.record(Some(link.org_id), TEXTING, subtype, action, outcome, Self::page_agent(meta))
            .entity("secure-link", link.id)
            .entity("patient", link.patient_id)
            .entity("conversation", link.conversation_id)
    }

    pub(crate) async fn link(&self, token: &str) -> AppResult<StoredLink> {
        // A token is 22 base64url characters (128 bits); anything else is not a link.
        if token.len() != 22 || !token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(AppError::NotFound);
        }
        Ok(self.store.link_by_token(haven_crypto::token::digest(token).as_bytes()).await?)
    }

    fn link_state(&self, link: &StoredLink) -> LinkState {
        let now = self.now();
        if link.locked {
            LinkState::Locked
        } else if link.verified {
            LinkState::Used
        } else if link.expires_at <= now {
            LinkState::Expired
        } else {
            LinkState::Open { code_sent: link.code_expires_at.is_some_and(|t| t > now) }
        }
    }

    async fn landing(&self, link: &StoredLink) -> AppResult<LinkLanding> {
        let org_key = self.org_key(link.org_id).await?;
        let patient =
            self.open_patient(&org_key, &self.store.patient(link.org_id, link.patient_id).await?)?;
        let org_name = self.store.org(link.org_id).await?.name;
        let help_phone = self.store.sms_gateway(link.org_id).await?.map(|g| g.help_phone).unwrap_or_default();
        Ok(LinkLanding {
            org_name,
            language: text_language(Some(&patient.language)),
            help_phone,
            state: self.link_state(link),
        })
    }

    /// Opens a link: what the landing page may show (audited; the link is not used up).
    pub async fn open_link(&self, token: &str, meta: &RequestMeta) -> AppResult<LinkLanding> {
        let link = self.link(token).await?;
        let page = self.landing(&link).await?;
        let rec = self.link_record(&link, "link-open", AuditAction::R, AuditOutcome::Success, meta);
        self.store.record_audit(&rec, self.now()).await?;
        Ok(page)
    }

    /// Where a link stands after a form action on it (the action itself was audited, so this
    /// read is not recorded as another open).
    pub async fn link_page(&self, token: &str) -> AppResult<LinkLanding> {
        self.landing(&self.link(token).await?).await
    }

    /// Sends a one-time code to the phone on record (at most one a minute).
    pub async fn send_link_code(&self, token: &str, meta: &RequestMeta) -> AppResult<()> {
        let link = self.link(token).await?;
        if !matches!(self.link_state(&link), LinkState::Open { .. }) {
            return Err(AppError::Conflict("link_closed", "this link can no longer be used".into()));
        }
        let org = link.org_id;
        let org_key = self.org_key(org).await?;
        let patient = self.open_patient(&org_key, &self.store.patient(org, link.patient_id).await?)?;
        let phone = patient.phone.as_deref().map(normalise_phone).ok_or_else(|| {
            AppError::Conflict("no_phone", "there is no phone on record to send a code to".into())
        })?;
        let gateway = self.store.sms_gateway(org).await?;
        let org_name = self.store.org(org).await?.name;
        let n = u32::from_be_bytes(self.random::<4>()) % 1_000_000;
        let code = Secret::new(format!("{n:06}"));
        let lang = text_language(Some(&patient.language));
        let help = gateway.map(|g| g.help_phone).unwrap_or_default();
        let body = system_text(TextKind::VerificationCode, lang, &org_name, &help, code.expose());
        let text = NewText {
            patient_id: Some(link.patient_id),
            conversation_id: Some(link.conversation_id),
            ..self.draft_text(&org_key, org, TextKind::VerificationCode, &phone, body)?
        };
        let (id, now) = (text.id, text.created_at);
        let audits = [
            self.link_record(&link, "link-code-send", AuditAction::E, AuditOutcome::Success, meta),
            self.link_record(&link, "sms-queue", AuditAction::C, AuditOutcome::Success, meta)
                .entity("text", id),
        ];
        self.store
            .set_link_code(
                link.id,
                &code_hash(link.id, code.expose()),
                now + CODE_LIFETIME,
                now - RESEND_AFTER,
                &text,
                &audits,
            )
            .await
            .map_err(|e| match e {
                haven_store::StoreError::Conflict("code_recently_sent") => {
                    AppError::Conflict("code_recently_sent", "a code was sent less than a minute ago".into())
                }
                e => e.into(),
            })?;
        self.texting.wake();
        Ok(())
    }

    /// Checks the date of birth and the code. On success the link is used up and a patient
    /// session token is returned; on failure the attempt is counted, and the fifth locks the link.
    pub async fn verify_link(
        &self,
        token: &str,
        date_of_birth: &str,
        code: &str,
        meta: &RequestMeta,
    ) -> AppResult<Result<Secret<String>, CheckFailed>> {
        let link = self.link(token).await?;
        match self.link_state(&link) {
            LinkState::Open { .. } => {}
            LinkState::Locked => return Ok(Err(CheckFailed::Locked)),
            LinkState::Expired | LinkState::Used => {
                return Err(AppError::Conflict("link_closed", "this link can no longer be used".into()));
            }
        }
        let org_key = self.org_key(link.org_id).await?;
        let patient =
            self.open_patient(&org_key, &self.store.patient(link.org_id, link.patient_id).await?)?;
        let now = self.now();
        let dob_ok = date_of_birth
            .trim()
            .parse::<jiff::civil::Date>()
            .is_ok_and(|d| d.to_string() == patient.date_of_birth);
        let code_ok = match (&link.code_hash, link.code_expires_at) {
            (Some(stored), Some(until)) if until > now => {
                use subtle::ConstantTimeEq;
                bool::from(code_hash(link.id, code).ct_eq(stored))
            }
            _ => false,
        };
        if !(dob_ok && code_ok) {
            let rec = self
                .link_record(&link, "identity-check", AuditAction::E, AuditOutcome::MinorFailure, meta)
                .code("identity_not_verified");
            let (attempts, locked) = self.store.link_check_failed(link.id, MAX_ATTEMPTS, now, &rec).await?;
            return Ok(Err(if locked {
                CheckFailed::Locked
            } else {
                CheckFailed::Wrong { left: MAX_ATTEMPTS.saturating_sub(attempts) }
            }));
        }
        let session = haven_crypto::token::session_token(self.random());
        let new = NewPatientSession {
            token_hash: haven_crypto::token::digest(session.expose()).into_bytes(),
            link_id: link.id,
            org_id: link.org_id,
            patient_id: link.patient_id,
            conversation_id: link.conversation_id,
            created_at: now,
            expires_at: now + SESSION_LIFETIME,
        };
        let rec = self.link_record(&link, "identity-check", AuditAction::E, AuditOutcome::Success, meta);
        self.store.link_verified(&new, &rec).await?;
        Ok(Ok(session))
    }

    /// The patient session behind a cookie, if it is still open (activity keeps it alive up to
    /// its lifetime).
    pub async fn patient_session(&self, token: &str) -> AppResult<NewPatientSession> {
        let now = self.now();
        Ok(self
            .store
            .patient_session(haven_crypto::token::digest(token).as_bytes(), now, now - SESSION_IDLE)
            .await?)
    }
}
