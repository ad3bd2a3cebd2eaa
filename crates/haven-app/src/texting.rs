//! Patient texting use cases: an organisation's gateway and templates, the consent ledger
//! (staff-recorded changes, history, FHIR Consent export) and staff texting a patient a secure
//! link. Phone numbers and texts are sealed under the organisation key; numbers are found by
//! blind index. Texts from patients are `inbound.rs`; the outbox worker is `outbox.rs`.

use haven_crypto::envelope::{self, DataKey};
use haven_domain::audit::{AuditAction, AuditOutcome, AuditRecord};
use haven_domain::messaging::ConversationKind;
use haven_domain::roles::Permission;
use haven_domain::sms::{
    self, ConsentSource, ConsentState, ConsentStatus, Purpose, TextKind, TextStatus, system_text,
    text_language,
};
use haven_domain::texting::{next_open_everywhere, next_within_caps};
use haven_domain::{ConsentId, ConversationId, LinkId, OrgId, PatientId, TextId};
use haven_sms::GatewayConfig;
use haven_store::{
    ConsentRow, NewLink, NewPatientMessage, NewText, PatientMessageSent, StoredGateway, StoredText,
};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{App, AppError, AppResult, Principal, RequestMeta};

pub(crate) const TEXTING: &str = "patient-texting";

/// A gateway's settings as an administrator sends them.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct GatewaySettings {
    /// The provider and its credentials (`{"provider":"twilio","account_sid":…,"auth_token":…,"from":…}`).
    #[schema(value_type = Object)]
    pub gateway: GatewayConfig,
    /// The number HELP replies give patients.
    pub help_phone: String,
}

/// A gateway as shown to administrators: never its credentials.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct GatewayView {
    /// `twilio` or `smpp`.
    pub provider: String,
    /// Our number.
    pub from_number: String,
    /// The number HELP replies give.
    pub help_phone: String,
    /// Where the provider must send inbound texts (Twilio).
    pub inbound_webhook_url: String,
    /// Where the provider reports delivery (Twilio).
    pub status_webhook_url: String,
}

/// A consent change recorded by staff.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct ConsentChange {
    /// The purposes; empty means every purpose (an opt-out from everything, or lifting one).
    #[serde(default)]
    pub purposes: Vec<Purpose>,
    /// `granted` or `revoked` (a web-form grant is recorded as pending until the patient
    /// answers YES).
    pub state: ConsentState,
    /// Where it came from: `front-desk`, `web-form`, `ehr`, `phone` or `in-person`.
    pub source: ConsentSource,
    /// The exact wording shown or read to the patient.
    pub wording: String,
}

/// One ledger entry as shown to staff and auditors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ConsentEntryView {
    /// Id.
    pub id: ConsentId,
    /// The purpose, or absent for every purpose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// State.
    pub state: ConsentState,
    /// Source.
    pub source: ConsentSource,
    /// The wording shown.
    pub wording: String,
    /// Who recorded it, if staff did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_by: Option<haven_domain::UserId>,
    /// When (RFC 3339).
    pub recorded_at: String,
}

/// A patient's texting consent: where the number stands and its history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ConsentOverview {
    /// The number opted out of everything.
    pub opted_out: bool,
    /// Purposes texts may be sent for now.
    pub allowed: Vec<Purpose>,
    /// Purposes waiting for the patient's YES.
    pub pending: Vec<Purpose>,
    /// The ledger for the patient's current number, oldest first.
    pub history: Vec<ConsentEntryView>,
}

/// Staff ask for a text to a patient.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct PatientTextRequest {
    /// Why (default `care`).
    #[serde(default = "default_purpose")]
    pub purpose: Purpose,
    /// Urgent texts are not held for quiet hours (caps and consent still apply).
    #[serde(default)]
    pub urgent: bool,
    /// The message for the patient, read on the secure page after the identity check (never
    /// in the SMS). Without it the text only invites the patient to the page.
    #[serde(default)]
    pub body: Option<String>,
    /// Send no earlier than this (RFC 3339, at most 30 days ahead), e.g. a reminder for the
    /// morning. Quiet hours and caps still apply from then; a time already past means now.
    #[serde(default)]
    pub send_at: Option<String>,
}

fn default_purpose() -> Purpose {
    Purpose::Care
}

/// A text as staff see it: never its body or number.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TextView {
    /// Id.
    pub id: TextId,
    /// Kind.
    pub kind: TextKind,
    /// Purpose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// Status.
    pub status: TextStatus,
    /// Not sent before (RFC 3339): quiet hours and caps.
    pub not_before: String,
    /// Failed attempts.
    pub attempts: u32,
    /// The last error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Queued at.
    pub created_at: String,
}

impl From<&StoredText> for TextView {
    fn from(t: &StoredText) -> Self {
        TextView {
            id: t.id,
            kind: t.kind,
            purpose: t.purpose,
            status: t.status,
            not_before: t.not_before.to_string(),
            attempts: t.attempts,
            error_code: t.error_code.clone(),
            created_at: t.created_at.to_string(),
        }
    }
}

/// The sealed form of a text (recipient or sender, and body).
#[derive(Serialize, Deserialize)]
pub(crate) struct SealedText {
    pub(crate) phone: String,
    pub(crate) body: String,
}

/// Normalises a number to E.164 as far as it can (spaces, dashes, brackets dropped).
pub(crate) fn normalise_phone(raw: &str) -> String {
    raw.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.')).collect()
}

fn consent_view(r: &ConsentRow) -> ConsentEntryView {
    ConsentEntryView {
        id: r.id,
        purpose: r.purpose,
        state: r.state,
        source: r.source,
        wording: r.wording.clone(),
        recorded_by: r.recorded_by,
        recorded_at: r.recorded_at.to_string(),
    }
}

impl App {
    /// The blind index of a phone number within an organisation.
    pub(crate) fn phone_index(org_key: &DataKey, org: OrgId, phone: &str) -> [u8; 32] {
        envelope::blind_index(org_key, &org.to_string(), "phone", &normalise_phone(phone))
    }

    /// Seals a small record under the organisation key, bound to its table and row.
    pub(crate) fn seal_org(
        &self,
        org_key: &DataKey,
        org: OrgId,
        table: &str,
        row: &str,
        plain: &[u8],
    ) -> Vec<u8> {
        let ctx =
            envelope::ContentContext { org: &org.to_string(), conversation: table, item: row, version: 0 };
        envelope::seal_content(org_key, &ctx, self.random(), plain)
    }

    /// Opens what [`App::seal_org`] sealed.
    pub(crate) fn open_org<T: serde::de::DeserializeOwned>(
        org_key: &DataKey,
        org: OrgId,
        table: &str,
        row: &str,
        sealed: &[u8],
    ) -> AppResult<T> {
        let ctx =
            envelope::ContentContext { org: &org.to_string(), conversation: table, item: row, version: 0 };
        let plain = envelope::open_content(org_key, &ctx, sealed)
            .map_err(|_| AppError::Internal(format!("sealed {table} row {row} does not open")))?;
        serde_json::from_slice(plain.expose())
            .map_err(|_| AppError::Internal(format!("sealed {table} row {row} is corrupt")))
    }

    /// A phone number and a text body, sealed under the organisation key for `table` row `row`.
    pub(crate) fn seal_text(
        &self,
        org_key: &DataKey,
        org: OrgId,
        table: &str,
        row: &str,
        phone: &str,
        body: String,
    ) -> AppResult<Vec<u8>> {
        let plain = serde_json::to_vec(&SealedText { phone: phone.to_owned(), body })
            .map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(self.seal_org(org_key, org, table, row, &plain))
    }

    /// A text of `kind` to `phone`, sealed and due now, from nobody about nothing; callers add
    /// the purpose, patient, conversation, zone and author they have. Exempt kinds are urgent.
    pub(crate) fn draft_text(
        &self,
        org_key: &DataKey,
        org: OrgId,
        kind: TextKind,
        phone: &str,
        body: String,
    ) -> AppResult<NewText> {
        let id = self.new_id(|r| TextId::random(r));
        let now = self.now();
        Ok(NewText {
            id,
            org_id: org,
            kind,
            purpose: None,
            phone_index: Self::phone_index(org_key, org, phone).to_vec(),
            sealed: self.seal_text(org_key, org, "sms-outbox", &id.to_string(), phone, body)?,
            patient_id: None,
            conversation_id: None,
            time_zone: None,
            region: None,
            urgent: kind.exempt(),
            not_before: now,
            created_by: None,
            created_at: now,
        })
    }

    pub(crate) fn texting_record(
        &self,
        org: OrgId,
        subtype: &str,
        action: AuditAction,
        agent: haven_domain::audit::AuditAgent,
    ) -> AuditRecord {
        self.record(Some(org), TEXTING, subtype, action, AuditOutcome::Success, agent)
    }

    fn gateway_view(&self, g: &StoredGateway) -> GatewayView {
        let base = format!(
            "{}/webhooks/{}/{}",
            self.settings.public_url.trim_end_matches('/'),
            g.provider,
            g.org_id
        );
        GatewayView {
            provider: g.provider.clone(),
            from_number: g.from_number.clone(),
            help_phone: g.help_phone.clone(),
            inbound_webhook_url: format!("{base}/inbound"),
            status_webhook_url: format!("{base}/status"),
        }
    }

    /// Sets up (or replaces) the organisation's SMS gateway. Credentials are sealed at rest
    /// and never shown again.
    pub async fn set_sms_gateway(&self, p: &Principal, s: GatewaySettings) -> AppResult<GatewayView> {
        p.require(Permission::PolicyManage)?;
        let invalid =
            |code, msg: String| AppError::Invalid(haven_domain::ValidationError::new("gateway", code, msg));
        s.gateway.validate().map_err(|m| invalid("invalid_gateway", m))?;
        if !haven_sms::is_e164(&normalise_phone(&s.help_phone)) {
            return Err(invalid("invalid_help_phone", "help_phone must be an E.164 number".into()));
        }
        let org = p.org();
        let org_key = self.org_key(org).await?;
        let plain = serde_json::to_vec(&s.gateway).map_err(|e| AppError::Internal(e.to_string()))?;
        let stored = StoredGateway {
            org_id: org,
            provider: s.gateway.provider().to_owned(),
            from_number: s.gateway.from_number().to_owned(),
            help_phone: normalise_phone(&s.help_phone),
            config_sealed: self.seal_org(&org_key, org, "sms-gateway", &org.to_string(), &plain),
            updated_at: self.now(),
        };
        let rec =
            self.texting_record(org, "gateway-set", AuditAction::U, p.agent()).entity("organization", org);
        self.store.set_sms_gateway(&stored, &rec).await.map_err(|e| match e {
            haven_store::StoreError::Conflict(_) => AppError::Conflict(
                "number_in_use",
                "another organisation already sends from this number".into(),
            ),
            e => e.into(),
        })?;
        self.texting.forget(org);
        Ok(self.gateway_view(&stored))
    }

    /// The organisation's gateway, without credentials.
    pub async fn sms_gateway(&self, p: &Principal) -> AppResult<GatewayView> {
        p.require(Permission::PolicyManage)?;
        let g = self.store.sms_gateway(p.org()).await?.ok_or(AppError::NotFound)?;
        Ok(self.gateway_view(&g))
    }

    /// The organisation's gateway settings, opened (for webhook checks and the outbox).
    pub(crate) async fn gateway_config(
        &self,
        org: OrgId,
    ) -> AppResult<Option<(StoredGateway, GatewayConfig)>> {
        let Some(g) = self.store.sms_gateway(org).await? else { return Ok(None) };
        let org_key = self.org_key(org).await?;
        let config = Self::open_org(&org_key, org, "sms-gateway", &org.to_string(), &g.config_sealed)?;
        Ok(Some((g, config)))
    }

    /// The Twilio auth token that signs this organisation's webhooks, if it texts through Twilio.
    pub async fn twilio_webhook_token(
        &self,
        org: OrgId,
    ) -> AppResult<Option<haven_crypto::secret::Secret<String>>> {
        Ok(match self.gateway_config(org).await? {
            Some((_, GatewayConfig::Twilio(c))) => Some(haven_crypto::secret::Secret::new(c.auth_token)),
            _ => None,
        })
    }

    /// The URL a provider's webhook for `path` is signed against.
    pub fn public_url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.settings.public_url.trim_end_matches('/'), path_and_query)
    }

    /// Records a webhook refused for a bad or missing signature (a security event).
    pub async fn webhook_refused(&self, org: OrgId, meta: &RequestMeta) -> AppResult<()> {
        let agent = haven_domain::audit::AuditAgent {
            address: meta.address.clone(),
            user_agent: meta.user_agent.clone(),
            system: Some("sms-webhook".into()),
            ..Default::default()
        };
        let rec = self
            .record(Some(org), TEXTING, "webhook", AuditAction::E, AuditOutcome::SeriousFailure, agent)
            .code("invalid_signature");
        self.store.record_audit(&rec, self.now()).await?;
        Ok(())
    }

    /// Saves the organisation's secure-message template for a language, refused if it could
    /// carry PHI or lacks the link or opt-out instructions.
    pub async fn set_sms_template(&self, p: &Principal, language: &str, body: &str) -> AppResult<()> {
        p.require(Permission::PolicyManage)?;
        if !sms::LANGUAGES.contains(&language) {
            return Err(AppError::Invalid(haven_domain::ValidationError::new(
                "language",
                "unsupported_language",
                "templates exist for en and es",
            )));
        }
        sms::check_sms_template(body)?;
        let rec = self
            .texting_record(p.org(), "template-set", AuditAction::U, p.agent())
            .entity("organization", p.org());
        Ok(self.store.set_sms_template(p.org(), language, body, self.now(), &rec).await?)
    }

    /// A patient's number (normalised) and the record, for texting.
    async fn patient_phone(
        &self,
        p: &Principal,
        patient: PatientId,
    ) -> AppResult<(DataKey, crate::patients::PatientView, String)> {
        let org_key = self.org_key(p.org()).await?;
        let stored = self.store.patient(p.org(), patient).await?;
        let view = self.open_patient(&org_key, &stored)?;
        let phone = view.phone.clone().map(|p| normalise_phone(&p)).ok_or_else(|| {
            AppError::Conflict("no_phone", "the patient has no mobile number on record".into())
        })?;
        Ok((org_key, view, phone))
    }

    /// Records a consent change given to staff (front desk, phone, in person, EHR, web form).
    /// A web-form grant is recorded as pending and a YES request is texted (double opt-in).
    pub async fn record_consent(
        &self,
        p: &Principal,
        patient: PatientId,
        change: ConsentChange,
    ) -> AppResult<ConsentOverview> {
        p.require(Permission::PatientMessaging)?;
        let wording = change.wording.trim().to_owned();
        if wording.is_empty() || wording.chars().count() > 2000 {
            return Err(AppError::Invalid(haven_domain::ValidationError::new(
                "wording",
                "invalid_wording",
                "the exact consent wording shown to the patient is required (at most 2000 characters)",
            )));
        }
        if matches!(change.source, ConsentSource::SmsKeyword | ConsentSource::NumberChanged)
            || change.state == ConsentState::Pending
        {
            return Err(AppError::Invalid(haven_domain::ValidationError::new(
                "source",
                "invalid_source",
                "staff record granted or revoked consent from front-desk, web-form, ehr, phone or in-person",
            )));
        }
        let (org_key, view, phone) = self.patient_phone(p, patient).await?;
        let org = p.org();
        let now = self.now();
        let index = Self::phone_index(&org_key, org, &phone).to_vec();
        let double_opt_in = change.source == ConsentSource::WebForm && change.state == ConsentState::Granted;
        let state = if double_opt_in { ConsentState::Pending } else { change.state };
        let scopes: Vec<Option<Purpose>> = if change.purposes.is_empty() {
            vec![None]
        } else {
            change.purposes.iter().copied().map(Some).collect()
        };
        if double_opt_in && scopes.contains(&None) {
            return Err(AppError::Invalid(haven_domain::ValidationError::new(
                "purposes",
                "purposes_required",
                "a web-form consent names the purposes it covers",
            )));
        }
        let mut rows = Vec::new();
        let mut audits = Vec::new();
        for scope in scopes {
            let id = self.new_id(|r| ConsentId::random(r));
            let sealed = self.seal_org(&org_key, org, "consent", &id.to_string(), phone.as_bytes());
            rows.push(ConsentRow {
                id,
                org_id: org,
                phone_index: index.clone(),
                phone_sealed: sealed,
                patient_id: Some(patient),
                purpose: scope,
                state,
                source: change.source,
                wording: wording.clone(),
                recorded_by: Some(p.user.id),
                recorded_at: now,
            });
            audits.push(
                self.texting_record(org, "consent-change", AuditAction::C, p.agent())
                    .entity("patient", patient)
                    .entity("consent", id),
            );
        }
        self.store.record_consent(&rows, &audits, now).await?;
        if double_opt_in {
            let org_name = self.store.org(org).await?.name;
            let help = self.store.sms_gateway(org).await?.map(|g| g.help_phone).unwrap_or_default();
            let lang = text_language(Some(&view.language));
            let body = system_text(TextKind::ConsentRequest, lang, &org_name, &help, "");
            let purpose = change.purposes.first().copied();
            self.queue_text(
                p,
                &org_key,
                patient,
                None,
                &phone,
                TextKind::ConsentRequest,
                purpose,
                true,
                None,
                view.time_zone.clone(),
                view.region.clone(),
                body,
                None,
                None,
            )
            .await?;
        }
        self.consent_overview(p, patient).await
    }

    /// A patient's consent for their current number, with its history.
    pub async fn consent_overview(&self, p: &Principal, patient: PatientId) -> AppResult<ConsentOverview> {
        p.require(Permission::PatientMessaging)?;
        let (org_key, _, phone) = self.patient_phone(p, patient).await?;
        let history =
            self.store.consent_history(p.org(), &Self::phone_index(&org_key, p.org(), &phone)).await?;
        let status = ConsentStatus::fold(history.iter().map(|r| (r.purpose, r.state)));
        let rec = self
            .texting_record(p.org(), "consent-read", AuditAction::R, p.agent())
            .entity("patient", patient);
        self.store.record_audit(&rec, self.now()).await?;
        Ok(ConsentOverview {
            opted_out: status.opted_out,
            allowed: Purpose::ALL.into_iter().filter(|x| status.allows(*x)).collect(),
            pending: status.pending(),
            history: history.iter().map(consent_view).collect(),
        })
    }

    /// Queues one text after the consent check, in one transaction with its audit record (and
    /// the secure link it carries, if any).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn queue_text(
        &self,
        p: &Principal,
        org_key: &DataKey,
        patient: PatientId,
        conversation: Option<ConversationId>,
        phone: &str,
        kind: TextKind,
        purpose: Option<Purpose>,
        urgent: bool,
        send_at: Option<Timestamp>,
        time_zone: Option<String>,
        region: Option<String>,
        body: String,
        link: Option<NewLink>,
        thread: Option<&NewPatientMessage>,
    ) -> AppResult<(TextId, Timestamp, Option<PatientMessageSent>)> {
        let org = p.org();
        let text = NewText {
            purpose,
            patient_id: Some(patient),
            conversation_id: conversation,
            time_zone: time_zone.clone(),
            region: region.clone(),
            urgent,
            created_by: Some(p.user.id),
            ..self.draft_text(org_key, org, kind, phone, body)?
        };
        let (id, now) = (text.id, text.created_at);
        let mut rec = self
            .texting_record(org, "sms-queue", AuditAction::C, p.agent())
            .entity("patient", patient)
            .entity("text", id);
        if let Some(c) = conversation {
            rec = rec.entity("conversation", c);
        }
        let settings = self.settings.texting.clone();
        let schedule = move |earlier: &[Timestamp]| {
            let t = next_within_caps(earlier, send_at.map_or(now, |s| s.max(now)), &settings.caps);
            if urgent { t } else { settings.next_window(t, time_zone.as_deref(), region.as_deref()) }
        };
        let refused = |e: haven_store::StoreError| match e {
            haven_store::StoreError::Conflict("opted_out") => AppError::Conflict(
                "patient_opted_out",
                "the patient's number opted out of texts (STOP)".into(),
            ),
            haven_store::StoreError::Conflict("no_consent") => AppError::Conflict(
                "no_consent",
                "there is no recorded consent to text this number for this purpose".into(),
            ),
            e => e.into(),
        };
        // A message of the patient's thread is stored with the text that announces it, or not at all.
        let (at, sent) = match (thread, &link) {
            (Some(m), Some(l)) => {
                let message_rec = self
                    .texting_record(org, "patient-message-send", AuditAction::C, p.agent())
                    .entity("patient", patient)
                    .entity("conversation", m.conversation_id)
                    .entity("patient-message", m.id);
                let (sent, at) = self
                    .store
                    .message_patient(m, &text, l, schedule, &[message_rec, rec])
                    .await
                    .map_err(refused)?;
                (at, Some(sent))
            }
            _ => {
                (self.store.enqueue_text(&text, link.as_ref(), schedule, &rec).await.map_err(refused)?, None)
            }
        };
        self.texting.wake();
        Ok((id, at, sent))
    }

    /// Texts a patient that a secure message is waiting, with a link to read it. The text comes
    /// from the organisation's template in the patient's language and carries no PHI; the
    /// link's 128-bit token is stored only as its hash.
    pub async fn text_patient(
        &self,
        p: &Principal,
        conv: ConversationId,
        req: PatientTextRequest,
    ) -> AppResult<TextView> {
        p.require(Permission::PatientMessaging)?;
        let m = self.current_member(p, conv).await?;
        let (ConversationKind::Patient, Some(patient)) = (m.conversation.kind, m.conversation.patient_id)
        else {
            return Err(AppError::Conflict(
                "not_patient_conversation",
                "only a patient conversation can text its patient".into(),
            ));
        };
        let org = p.org();
        let gateway = self.store.sms_gateway(org).await?.ok_or_else(|| {
            AppError::Conflict("texting_not_configured", "the organisation has no SMS gateway set up".into())
        })?;
        let (org_key, view, phone) = self.patient_phone(p, patient).await?;
        let lang = text_language(Some(&view.language));
        let template = self
            .store
            .sms_template(org, lang)
            .await?
            .unwrap_or_else(|| sms::default_template(lang).to_owned());
        let token: [u8; 16] = self.random();
        let token_text = data_encoding::BASE64URL_NOPAD.encode(&token);
        let now = self.now();
        let send_at = haven_domain::texting::scheduled(req.send_at.as_deref(), now)?;
        let link = NewLink {
            id: self.new_id(|r| LinkId::random(r)),
            token_hash: haven_crypto::token::digest(&token_text).into_bytes(),
            org_id: org,
            patient_id: patient,
            conversation_id: conv,
            created_by: p.user.id,
            created_at: now,
            // A scheduled text's link lasts as long from when it is due as any other's.
            expires_at: send_at.unwrap_or(now) + self.settings.texting.link_lifetime,
        };
        let org_name = self.store.org(org).await?.name;
        let body = sms::render(
            &template,
            &org_name,
            &self.public_url(&format!("/p/{token_text}")),
            &gateway.help_phone,
        );
        let thread = match &req.body {
            Some(text) => Some(self.patient_message_to(p, conv, patient, &org_key, text)?),
            None => None,
        };
        let (id, at, sent) = self
            .queue_text(
                p,
                &org_key,
                patient,
                Some(conv),
                &phone,
                TextKind::SecureMessage,
                Some(req.purpose),
                req.urgent,
                send_at,
                view.time_zone.clone(),
                view.region.clone(),
                body,
                Some(link),
                thread.as_ref(),
            )
            .await?;
        if let Some(sent) = sent {
            self.publish_events(org, &[sent.event], &sent.recipients).await?;
        }
        Ok(TextView {
            id,
            kind: TextKind::SecureMessage,
            purpose: Some(req.purpose),
            status: TextStatus::Queued,
            not_before: at.to_string(),
            attempts: 0,
            error_code: None,
            created_at: now.to_string(),
        })
    }

    /// The texts sent to a patient, newest first (no bodies).
    pub async fn patient_texts(&self, p: &Principal, patient: PatientId) -> AppResult<Vec<TextView>> {
        p.require(Permission::PatientMessaging)?;
        self.store.patient(p.org(), patient).await?;
        let texts = self.store.texts(p.org(), Some(patient), 200).await?;
        Ok(texts.iter().map(TextView::from).collect())
    }
}

/// Patient-texting settings of the server.
#[derive(Debug, Clone)]
pub struct TextingSettings {
    /// When non-urgent texts may go out, in the patient's local time.
    pub window: haven_domain::texting::SendingWindow,
    /// Zones a patient of unknown zone may be in: the strictest window across them applies.
    pub fallback_zones: Vec<jiff::tz::TimeZone>,
    /// Stricter windows by ISO 3166-2 region (e.g. `US-FL`); a patient of unknown region gets
    /// the strictest of them all.
    pub regional_windows: Vec<(String, haven_domain::texting::SendingWindow)>,
    /// Caps per purpose and number.
    pub caps: Vec<haven_domain::texting::FrequencyCap>,
    /// How long a secure link works.
    pub link_lifetime: jiff::SignedDuration,
}

impl Default for TextingSettings {
    fn default() -> Self {
        let zones = [
            "America/New_York",
            "America/Chicago",
            "America/Denver",
            "America/Los_Angeles",
            "America/Anchorage",
            "Pacific/Honolulu",
        ];
        Self {
            window: haven_domain::texting::SendingWindow::default(),
            fallback_zones: zones.iter().filter_map(|z| jiff::tz::TimeZone::get(z).ok()).collect(),
            // Florida's, Oklahoma's and Maryland's 8 a.m. to 8 p.m. rules (as the configuration's default).
            regional_windows: ["US-FL", "US-OK", "US-MD"]
                .into_iter()
                .map(|r| {
                    let eight_to_eight = haven_domain::texting::SendingWindow {
                        start: jiff::civil::Time::constant(8, 0, 0, 0),
                        end: jiff::civil::Time::constant(20, 0, 0, 0),
                    };
                    (r.to_owned(), eight_to_eight)
                })
                .collect(),
            caps: haven_domain::texting::default_caps().to_vec(),
            link_lifetime: jiff::SignedDuration::from_hours(24 * 7),
        }
    }
}

impl TextingSettings {
    /// The window that applies in `region`: the server's, narrowed by the region's rule; for
    /// an unknown region, narrowed by every regional rule (the strictest).
    pub fn window_for(&self, region: Option<&str>) -> haven_domain::texting::SendingWindow {
        self.regional_windows
            .iter()
            .filter(|(r, _)| region.is_none_or(|p| p.eq_ignore_ascii_case(r)))
            .fold(self.window, |w, (_, rule)| w.narrowed(rule).unwrap_or(w))
    }

    /// The first instant at or after `at` inside the window of `zone` and `region` (the
    /// strictest window when the zone is unknown or not a valid IANA name).
    pub fn next_window(&self, at: Timestamp, zone: Option<&str>, region: Option<&str>) -> Timestamp {
        let window = self.window_for(region);
        match zone.and_then(|z| jiff::tz::TimeZone::get(z).ok()) {
            Some(tz) if window.allows(at, &tz) => at,
            Some(tz) => window.next_open(at, &tz),
            None => next_open_everywhere(&window, at, &self.fallback_zones),
        }
    }
}
