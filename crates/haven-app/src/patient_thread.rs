//! The patient's thread of a patient conversation. Staff write to the patient: the message is
//! stored with the PHI-free text that announces it (see `text_patient`). The patient reads the
//! thread and replies on the secure page after the identity check, or texts back; every message
//! is an event of the conversation, delivered live to its members. A message from the patient
//! opens the conversation's entry in the organisation's shared inbox, where staff assign it and
//! mark it done.

use haven_crypto::envelope::DataKey;
use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_domain::messaging::{InboxStatus, PatientChannel, PatientDirection, check_body};
use haven_domain::roles::Permission;
use haven_domain::{ConversationId, OrgId, PatientId, PatientMessageId, UserId};
use haven_store::{InboxEntry, NewPatientMessage, StoredPatientMessage};
use serde::{Deserialize, Serialize};

use crate::texting::TEXTING;
use crate::views::PatientBanner;
use crate::{App, AppError, AppResult, Principal, RequestMeta};

/// Messages of a thread shown on the secure page, at most.
const PAGE_MESSAGES: u32 = 100;
const TABLE: &str = "patient-message";

/// A message of a patient's thread.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PatientMessageView {
    /// Id.
    pub id: PatientMessageId,
    /// To or from the patient.
    pub direction: PatientDirection,
    /// Secure page or SMS.
    pub channel: PatientChannel,
    /// The staff member who wrote it (messages to the patient).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author_id: Option<UserId>,
    /// The text.
    pub body: String,
    /// When (RFC 3339).
    pub sent_at: String,
}

/// The thread as the patient sees it on the secure page.
#[derive(Debug, Clone)]
pub struct PatientThread {
    /// The organisation's name.
    pub org_name: String,
    /// The page's language.
    pub language: &'static str,
    /// Oldest first.
    pub messages: Vec<PatientMessageView>,
}

/// An entry of the shared inbox of patient threads.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InboxItem {
    /// The patient conversation.
    pub conversation_id: ConversationId,
    /// The patient.
    pub patient: PatientBanner,
    /// Open or done.
    pub status: InboxStatus,
    /// Who is handling it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_id: Option<UserId>,
    /// The patient's latest message (RFC 3339).
    pub last_from_patient_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

/// Assigning or closing an inbox entry.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboxUpdate {
    /// Who handles it (absent: nobody).
    #[serde(default)]
    pub assignee_id: Option<UserId>,
    /// Open or done.
    pub status: InboxStatus,
}

impl App {
    fn seal_patient_message(
        &self,
        org_key: &DataKey,
        org: OrgId,
        id: PatientMessageId,
        body: &str,
    ) -> Vec<u8> {
        let plain = serde_json::to_vec(body).unwrap_or_default();
        self.seal_org(org_key, org, TABLE, &id.to_string(), &plain)
    }

    /// Opens a stored message of a patient's thread.
    pub(crate) fn patient_message_view(
        org_key: &DataKey,
        org: OrgId,
        m: &StoredPatientMessage,
    ) -> AppResult<PatientMessageView> {
        let body: String = Self::open_org(org_key, org, TABLE, &m.id.to_string(), &m.body_sealed)?;
        Ok(PatientMessageView {
            id: m.id,
            direction: m.direction,
            channel: m.channel,
            author_id: m.author_id,
            body,
            sent_at: m.created_at.to_string(),
        })
    }

    /// A message from staff to the patient of a patient conversation, sealed, to be stored with
    /// the text announcing it.
    pub(crate) fn patient_message_to(
        &self,
        p: &Principal,
        conv: ConversationId,
        patient: PatientId,
        org_key: &DataKey,
        body: &str,
    ) -> AppResult<NewPatientMessage> {
        check_body(body, &self.settings.message_limits)?;
        let id = self.new_id(|r| PatientMessageId::random(r));
        Ok(NewPatientMessage {
            id,
            org_id: p.org(),
            conversation_id: conv,
            patient_id: patient,
            direction: PatientDirection::ToPatient,
            channel: PatientChannel::SecurePage,
            author_id: Some(p.user.id),
            body_sealed: self.seal_patient_message(org_key, p.org(), id, body),
            created_at: self.now(),
        })
    }

    /// A message from the patient (texted or written on the page), sealed.
    pub(crate) fn patient_message_from(
        &self,
        org_key: &DataKey,
        org: OrgId,
        conv: ConversationId,
        patient: PatientId,
        channel: PatientChannel,
        body: &str,
    ) -> NewPatientMessage {
        let id = self.new_id(|r| PatientMessageId::random(r));
        NewPatientMessage {
            id,
            org_id: org,
            conversation_id: conv,
            patient_id: patient,
            direction: PatientDirection::FromPatient,
            channel,
            author_id: None,
            body_sealed: self.seal_patient_message(org_key, org, id, body),
            created_at: self.now(),
        }
    }

    /// The patient session behind a cookie, which must belong to this link.
    async fn session_of_link(&self, token: &str, session: &str) -> AppResult<haven_store::NewPatientSession> {
        let link = self.link(token).await?;
        let s = self.patient_session(session).await.map_err(|e| match e {
            AppError::NotFound => AppError::Unauthenticated,
            e => e,
        })?;
        if s.link_id != link.id {
            return Err(AppError::Unauthenticated);
        }
        Ok(s)
    }

    /// The thread behind a patient session, for the secure page (audited as read by the
    /// patient). Unauthenticated (a missing, ended or timed-out session) otherwise.
    pub async fn patient_thread(
        &self,
        token: &str,
        session: &str,
        meta: &RequestMeta,
    ) -> AppResult<PatientThread> {
        let s = self.session_of_link(token, session).await?;
        let org_key = self.org_key(s.org_id).await?;
        let patient = self.open_patient(&org_key, &self.store.patient(s.org_id, s.patient_id).await?)?;
        let stored = self.store.patient_thread(s.org_id, s.conversation_id, PAGE_MESSAGES).await?;
        let messages = stored
            .iter()
            .map(|m| Self::patient_message_view(&org_key, s.org_id, m))
            .collect::<AppResult<Vec<_>>>()?;
        let rec = self
            .record(
                Some(s.org_id),
                TEXTING,
                "patient-thread-read",
                AuditAction::R,
                AuditOutcome::Success,
                Self::page_agent(meta),
            )
            .entity("patient", s.patient_id)
            .entity("conversation", s.conversation_id);
        self.store.record_audit(&rec, self.now()).await?;
        Ok(PatientThread {
            org_name: self.store.org(s.org_id).await?.name,
            language: haven_domain::sms::text_language(Some(&patient.language)),
            messages,
        })
    }

    /// A reply written by the patient on the secure page: stored in the conversation and
    /// delivered live to its members.
    pub async fn patient_reply(
        &self,
        token: &str,
        session: &str,
        body: &str,
        meta: &RequestMeta,
    ) -> AppResult<()> {
        let s = self.session_of_link(token, session).await?;
        check_body(body, &self.settings.message_limits)?;
        let org_key = self.org_key(s.org_id).await?;
        let m = self.patient_message_from(
            &org_key,
            s.org_id,
            s.conversation_id,
            s.patient_id,
            PatientChannel::SecurePage,
            body,
        );
        let rec = self
            .record(
                Some(s.org_id),
                TEXTING,
                "patient-message-receive",
                AuditAction::C,
                AuditOutcome::Success,
                Self::page_agent(meta),
            )
            .entity("patient", s.patient_id)
            .entity("conversation", s.conversation_id)
            .entity("patient-message", m.id);
        let sent = self.store.patient_reply(&m, &rec).await?;
        self.publish_events(s.org_id, &[sent.event], &sent.recipients).await?;
        Ok(())
    }

    /// The shared inbox of patient threads (staff who message patients).
    pub async fn inbox(&self, p: &Principal, status: Option<InboxStatus>) -> AppResult<Vec<InboxItem>> {
        p.require(Permission::PatientMessaging)?;
        let entries = self.store.inbox(p.org(), status, 200).await?;
        if entries.is_empty() {
            return Ok(vec![]);
        }
        let org_key = self.org_key(p.org()).await?;
        let mut out = Vec::with_capacity(entries.len());
        for e in &entries {
            out.push(self.inbox_item(&org_key, p.org(), e).await?);
        }
        // The list shows patients' names and MRNs: a PHI read, recorded with who was shown.
        let mut rec = self.record(
            Some(p.org()),
            TEXTING,
            "inbox-read",
            AuditAction::R,
            AuditOutcome::Success,
            p.agent(),
        );
        for e in &entries {
            rec = rec.entity("patient", e.patient_id);
        }
        self.store.record_audit(&rec, self.now()).await?;
        Ok(out)
    }

    async fn inbox_item(&self, org_key: &DataKey, org: OrgId, e: &InboxEntry) -> AppResult<InboxItem> {
        let stored = self.store.patient(org, e.patient_id).await?;
        let patient = self.open_patient(org_key, &stored)?;
        Ok(InboxItem {
            conversation_id: e.conversation_id,
            patient: PatientBanner {
                id: e.patient_id,
                mrn: patient.mrn,
                name: patient.name,
                date_of_birth: patient.date_of_birth,
            },
            status: e.status,
            assignee_id: e.assignee_id,
            last_from_patient_at: e.last_from_patient_at.to_string(),
            updated_at: e.updated_at.to_string(),
        })
    }

    /// Assigns an inbox entry to a staff member, or marks it done (audited).
    pub async fn update_inbox(
        &self,
        p: &Principal,
        conv: ConversationId,
        update: InboxUpdate,
    ) -> AppResult<InboxItem> {
        p.require(Permission::PatientMessaging)?;
        if let Some(u) = update.assignee_id {
            let user = self.store.user(p.org(), u).await.map_err(|_| {
                AppError::Invalid(haven_domain::ValidationError::new(
                    "assignee_id",
                    "unknown_user",
                    "the assignee is not a user of your organisation",
                ))
            })?;
            if user.status != haven_domain::user::UserStatus::Active {
                return Err(AppError::Invalid(haven_domain::ValidationError::new(
                    "assignee_id",
                    "user_inactive",
                    "the assignee's account is deactivated",
                )));
            }
        }
        let now = self.now();
        let mut rec = self
            .record(Some(p.org()), TEXTING, "inbox-update", AuditAction::U, AuditOutcome::Success, p.agent())
            .entity("conversation", conv);
        if let Some(u) = update.assignee_id {
            rec = rec.entity("user", u);
        }
        let entry =
            self.store.update_inbox(p.org(), conv, update.assignee_id, update.status, now, &rec).await?;
        let org_key = self.org_key(p.org()).await?;
        self.inbox_item(&org_key, p.org(), &entry).await
    }
}
