//! The consent ledger as FHIR R4 Consent resources (a `collection` Bundle), for compliance
//! officers and for EHRs. Each ledger entry is one Consent: who (the patient, when known), what
//! (permit or deny, for which purpose of texting), when, where it came from, and the exact
//! wording shown, attached as text. Numbers are not included: the patient reference identifies
//! whose consent it is, and the ledger's number stays sealed.

use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_domain::roles::Permission;
use haven_domain::sms::{ConsentSource, ConsentState};
use haven_store::ConsentRow;
use serde_json::{Value, json};

use crate::{App, AppResult, Principal};

/// One ledger entry as a FHIR R4 Consent.
pub fn consent_resource(row: &ConsentRow) -> Value {
    let (status, provision) = match row.state {
        ConsentState::Granted => ("active", "permit"),
        ConsentState::Pending => ("proposed", "permit"),
        ConsentState::Revoked => ("rejected", "deny"),
    };
    let purpose = row.purpose.map(|p| p.as_str()).unwrap_or("all");
    let mut r = json!({
        "resourceType": "Consent",
        "id": row.id.to_string(),
        "status": status,
        "scope": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "patient-privacy",
            "display": "Privacy Consent"
        }]},
        "category": [{ "coding": [{
            "system": "http://loinc.org",
            "code": "59284-0",
            "display": "Patient Consent"
        }]}],
        "dateTime": row.recorded_at.to_string(),
        "policyRule": { "coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentpolicycodes",
            "code": "hipaa-auth",
            "display": "HIPAA Authorization"
        }]},
        "sourceAttachment": {
            "contentType": "text/plain; charset=utf-8",
            "data": data_encoding::BASE64.encode(row.wording.as_bytes()),
            "title": format!("Wording shown ({})", source_display(row.source)),
        },
        "provision": {
            "type": provision,
            "action": [{ "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                "code": "disclose",
                "display": "Disclose"
            }]}],
            "purpose": [{
                "system": "urn:haven:texting-purpose",
                "code": purpose,
                "display": format!("SMS texting: {purpose}")
            }]
        },
        "extension": [{
            "url": "urn:haven:consent-source",
            "valueCode": row.source.as_str()
        }]
    });
    if let Some(p) = row.patient_id {
        r["patient"] = json!({ "reference": format!("Patient/{p}") });
    }
    if let Some(u) = row.recorded_by {
        r["performer"] = json!([{ "reference": format!("Practitioner/{u}") }]);
    }
    r
}

fn source_display(s: ConsentSource) -> &'static str {
    match s {
        ConsentSource::FrontDesk => "front desk",
        ConsentSource::WebForm => "web form",
        ConsentSource::SmsKeyword => "SMS keyword",
        ConsentSource::Ehr => "EHR",
        ConsentSource::Phone => "by telephone",
        ConsentSource::InPerson => "in person",
        ConsentSource::NumberChanged => "number changed",
    }
}

impl App {
    /// A page of the organisation's consent ledger as a FHIR Bundle; the export is audited.
    /// The Bundle's `link` names the next page's position when there may be more.
    pub async fn consent_fhir(&self, p: &Principal, after: i64, limit: u32) -> AppResult<Value> {
        p.require(Permission::AuditRead)?;
        let rows = self.store.consent_ledger(p.org(), after, limit).await?;
        let rec = self
            .record(
                Some(p.org()),
                crate::texting::TEXTING,
                "consent-export",
                AuditAction::R,
                AuditOutcome::Success,
                p.agent(),
            )
            .entity("organization", p.org());
        self.store.record_audit(&rec, self.now()).await?;
        let mut bundle = json!({
            "resourceType": "Bundle",
            "type": "collection",
            "timestamp": self.now().to_string(),
            "entry": rows.iter().map(|(_, r)| json!({
                "fullUrl": format!("urn:uuid:{}", r.id),
                "resource": consent_resource(r),
            })).collect::<Vec<_>>(),
        });
        if rows.len() == limit as usize
            && let Some((last, _)) = rows.last()
        {
            bundle["link"] = json!([{ "relation": "next", "url": format!("/api/v1/consent/export?after={last}&limit={limit}") }]);
        }
        Ok(bundle)
    }
}
