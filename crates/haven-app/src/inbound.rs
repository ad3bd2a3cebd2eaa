//! Texts and reports arriving from the provider: a patient's text (STOP, HELP, START, YES, or
//! a reply that joins their thread) and delivery reports. A webhook or gateway connection has
//! already authenticated the provider before these run.

use haven_domain::audit::{AuditAction, AuditRecord};
use haven_domain::sms::{
    ConsentSource, ConsentState, ConsentStatus, Purpose, TextKind, TextStatus, keyword_language, system_text,
    text_language,
};
use haven_domain::texting::{Inbound, classify};
use haven_domain::{ConsentId, InboundTextId, OrgId};
use haven_sms::{InboundSms, StatusReport};
use haven_store::{ConsentRow, InboundPlan, NewInbound, NewText};

use crate::texting::normalise_phone;
use crate::{App, AppError, AppResult};

/// What happened to an inbound text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Recorded (and answered, if it was a keyword).
    Recorded,
    /// Seen before (same provider id): nothing done.
    Duplicate,
}

impl App {
    /// Handles a text from a patient (already authenticated as coming from the provider):
    /// de-duplicated by the provider's id; an opt-out is committed, with exactly one
    /// confirmation queued, before this returns; HELP is answered; START/YES lifts an opt-out
    /// or confirms a pending consent; text that only looks like an opt-out is flagged.
    pub async fn receive_sms(&self, org: OrgId, sms: InboundSms) -> AppResult<Received> {
        let gateway = self.store.sms_gateway(org).await?.ok_or(AppError::NotFound)?;
        let org_key = self.org_key(org).await?;
        let org_name = self.store.org(org).await?.name;
        let phone = normalise_phone(&sms.from);
        let index = Self::phone_index(&org_key, org, &phone).to_vec();
        let patients = self.store.patients_by_phone(org, &index).await?;
        let patient = if patients.len() == 1 { Some(patients[0]) } else { None };
        let mut lang = keyword_language(&sms.body);
        if lang.is_none()
            && let Some(pid) = patient
        {
            let stored = self.store.patient(org, pid).await?;
            lang = Some(text_language(Some(&self.open_patient(&org_key, &stored)?.language)));
        }
        let lang = lang.unwrap_or("en");
        let kind = classify(&sms.body);
        let now = self.now();
        let id = self.new_id(|r| InboundTextId::random(r));
        let keyword = match kind {
            Inbound::OptOut => "opt-out",
            Inbound::Help => "help",
            Inbound::OptIn => "opt-in",
            Inbound::LooksLikeOptOut => "flagged",
            Inbound::Message => "message",
        };
        let sealed_in =
            self.seal_text(&org_key, org, "sms-inbound", &id.to_string(), &phone, sms.body.clone())?;
        let inbound = NewInbound {
            id,
            org_id: org,
            provider: sms.provider.to_owned(),
            provider_id: sms.provider_id.clone(),
            phone_index: index.clone(),
            sealed: sealed_in,
            keyword: keyword.to_owned(),
            patient_id: patient,
            flagged: kind == Inbound::LooksLikeOptOut,
            received_at: now,
        };
        let system = haven_domain::audit::AuditAgent {
            system: Some(format!("sms:{}", sms.provider)),
            ..Default::default()
        };
        let audit_for = |subtype: &str, kind: &str, eid: String| -> AuditRecord {
            let mut r = self.texting_record(org, subtype, AuditAction::C, system.clone()).entity(kind, eid);
            if let Some(pid) = patient {
                r = r.entity("patient", pid);
            }
            r
        };
        // The reply is sealed before the transaction (sealing can fail); consent rows are built
        // inside it, from the state the transaction reads.
        let answer = match kind {
            Inbound::OptOut => Some(TextKind::OptOutConfirmation),
            Inbound::OptIn => Some(TextKind::OptInConfirmation),
            Inbound::Help => Some(TextKind::HelpReply),
            _ => None,
        }
        .map(|k| {
            let body = system_text(k, lang, &org_name, &gateway.help_phone, "");
            self.draft_text(&org_key, org, k, &phone, body).map(|t| NewText { patient_id: patient, ..t })
        })
        .transpose()?;
        let add_consent =
            |plan: &mut InboundPlan, scope: Option<Purpose>, state: ConsentState, wording: &str| {
                let cid = self.new_id(|r| ConsentId::random(r));
                plan.audits.push(audit_for("consent-change", "consent", cid.to_string()));
                plan.consent.push(ConsentRow {
                    id: cid,
                    org_id: org,
                    phone_index: index.clone(),
                    phone_sealed: self.seal_org(&org_key, org, "consent", &cid.to_string(), phone.as_bytes()),
                    patient_id: patient,
                    purpose: scope,
                    state,
                    source: ConsentSource::SmsKeyword,
                    wording: wording.to_owned(),
                    recorded_by: None,
                    recorded_at: now,
                });
            };
        // Free text from a known patient joins the thread of their latest secure message.
        let thread = match (kind, patient) {
            (Inbound::Message | Inbound::LooksLikeOptOut, Some(pid)) => {
                match self.store.latest_patient_conversation(org, pid).await? {
                    Some(conv) => Some(self.patient_message_from(
                        &org_key,
                        org,
                        conv,
                        pid,
                        haven_domain::messaging::PatientChannel::Sms,
                        &sms.body,
                    )),
                    None => None,
                }
            }
            _ => None,
        };
        let plan = |status: &ConsentStatus| -> InboundPlan {
            let mut plan = InboundPlan {
                audits: vec![audit_for("sms-receive", "inbound-text", id.to_string())],
                ..Default::default()
            };
            if let Some(m) = thread {
                let rec = audit_for("patient-message-receive", "patient-message", m.id.to_string())
                    .entity("conversation", m.conversation_id);
                plan.audits.push(rec);
                plan.patient_message = Some(m);
            }
            let reply = match kind {
                // Exactly one confirmation: only the opt-out that changes the state is answered.
                Inbound::OptOut if !status.opted_out => {
                    add_consent(&mut plan, None, ConsentState::Revoked, "texted an opt-out keyword");
                    true
                }
                Inbound::OptIn if status.opted_out || !status.pending().is_empty() => {
                    if status.opted_out {
                        add_consent(&mut plan, None, ConsentState::Granted, "texted an opt-in keyword");
                    }
                    for p in status.pending() {
                        add_consent(
                            &mut plan,
                            Some(p),
                            ConsentState::Granted,
                            "answered YES to the consent request",
                        );
                    }
                    true
                }
                Inbound::Help => !status.opted_out,
                _ => false,
            };
            if let Some(t) = answer.filter(|_| reply) {
                plan.audits.push(audit_for("sms-queue", "text", t.id.to_string()));
                plan.texts.push(t);
            }
            plan
        };
        match self.store.receive_text(&inbound, plan).await? {
            None => Ok(Received::Duplicate),
            Some((done, thread)) => {
                if !done.texts.is_empty() {
                    self.texting.wake();
                }
                if let Some(sent) = thread {
                    self.publish_events(org, &[sent.event], &sent.recipients).await?;
                }
                Ok(Received::Recorded)
            }
        }
    }

    /// Records a provider's delivery report.
    pub async fn sms_status(&self, org: OrgId, report: StatusReport) -> AppResult<()> {
        let status = match report.state {
            haven_sms::DeliveryState::Sent => TextStatus::Sent,
            haven_sms::DeliveryState::Delivered => TextStatus::Delivered,
            haven_sms::DeliveryState::Undelivered => TextStatus::Undelivered,
            haven_sms::DeliveryState::Failed => TextStatus::Failed,
        };
        if status == TextStatus::Sent {
            return Ok(());
        }
        self.store
            .text_delivery(
                org,
                report.provider,
                &report.provider_id,
                status,
                report.error_code.as_deref(),
                self.now(),
            )
            .await?;
        Ok(())
    }
}
