//! Audit records as FHIR R4 AuditEvent resources (in a `collection` Bundle), the form that
//! hospital SIEM and compliance tools read. Codes follow the DICOM and HL7 audit code systems
//! where one fits, and Haven's own URN otherwise.

use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_store::StoredAudit;
use serde_json::{Value, json};

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";

fn event_type(t: &str) -> Value {
    let (system, code, display) = match t {
        "user-authentication" => (DCM, "110114", "User Authentication"),
        "user-management" => (DCM, "110137", "User Security Attributes Changed"),
        "policy" => (DCM, "110136", "Security Roles Changed"),
        "audit" => (DCM, "110101", "Audit Log Used"),
        other => ("urn:haven:audit-event-type", other, other),
    };
    json!({"system": system, "code": code, "display": display})
}

fn entity_type(kind: &str) -> Value {
    let (code, display) = match kind {
        "user" | "patient" => ("1", "Person"),
        _ => ("2", "System Object"),
    };
    json!({"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": code, "display": display})
}

/// One stored record as a FHIR R4 AuditEvent.
pub fn audit_event(e: &StoredAudit, node: &str) -> Value {
    let r = &e.record;
    let mut agent = json!({
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
            "code": if r.agent.user_id.is_some() { "humanuser" } else { "dataprocessor" },
        }]},
        "requestor": true,
    });
    match (&r.agent.user_id, &r.agent.system) {
        (Some(u), _) => {
            agent["who"] = json!({"identifier": {"system": "urn:haven:user", "value": u.to_string()}})
        }
        (None, Some(s)) => agent["who"] = json!({"display": s}),
        (None, None) => agent["who"] = json!({"display": "unidentified"}),
    }
    if let Some(role) = r.agent.role {
        agent["role"] = json!([{"coding": [{"system": "urn:haven:role", "code": role.as_str()}]}]);
    }
    if let Some(addr) = &r.agent.address {
        agent["network"] = json!({"address": addr, "type": "2"});
    }
    if let Some(s) = r.agent.session_id {
        agent["altId"] = json!(format!("session:{s}"));
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": format!("haven-audit-{}", e.seq),
        "type": event_type(&r.event_type),
        "subtype": [{"system": "urn:haven:audit-event-subtype", "code": r.subtype}],
        "action": match r.action {
            AuditAction::C => "C", AuditAction::R => "R", AuditAction::U => "U",
            AuditAction::D => "D", AuditAction::E => "E",
        },
        "recorded": e.recorded_at.to_string(),
        "outcome": r.outcome.fhir_code(),
        "agent": [agent],
        "source": {
            "site": node,
            "observer": {"display": format!("Haven {node}")},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
        },
    });
    if r.outcome != AuditOutcome::Success
        && let Some(code) = &r.outcome_code
    {
        event["outcomeDesc"] = json!(code);
    }
    if !r.entities.is_empty() {
        event["entity"] = Value::Array(
            r.entities
                .iter()
                .map(|en| {
                    json!({
                        "what": {"identifier": {"system": format!("urn:haven:{}", en.kind), "value": en.id}},
                        "type": entity_type(&en.kind),
                    })
                })
                .collect(),
        );
    }
    if let Some(p) = &r.purpose {
        event["purposeOfEvent"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": p}]}]);
    }
    event
}

/// A `collection` Bundle of AuditEvents.
pub fn bundle(events: &[StoredAudit], node: &str, now: jiff::Timestamp) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": now.to_string(),
        "total": events.len(),
        "entry": events.iter().map(|e| json!({
            "fullUrl": format!("urn:haven:audit:{}", e.seq),
            "resource": audit_event(e, node),
        })).collect::<Vec<_>>(),
    })
}

/// One entry as an RFC 5424 syslog message in the IHE ATNA style: facility 10
/// (security/authorization), severity notice (warning for failures), MSGID `ATNA-FHIR`, the
/// entry's sequence number in structured data, and the FHIR AuditEvent JSON as the message.
pub fn syslog_message(e: &StoredAudit, node: &str) -> String {
    let severity = if e.record.outcome == AuditOutcome::Success { 5 } else { 4 };
    let pri = 10 * 8 + severity;
    let host: String = node.chars().filter(|c| c.is_ascii_graphic()).take(255).collect();
    let host = if host.is_empty() { "-".to_owned() } else { host };
    format!(
        "<{pri}>1 {} {host} haven - ATNA-FHIR [haven@32473 seq=\"{}\"] {}",
        e.recorded_at,
        e.seq,
        audit_event(e, node)
    )
}

/// An RFC 5425 frame: the message's length in octets, a space, the message.
pub fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}
