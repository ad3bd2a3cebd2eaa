//! Patient texting records and replies: the purposes a text may serve, the consent ledger's
//! states and sources and how the ledger decides whether a number may be texted, the kinds of
//! outbound text (and which are exempt from consent, quiet hours and caps), the outbox's retry
//! schedule, the system's own replies (HELP, opt-out and opt-in confirmations, verification
//! codes) in English and Spanish, and the default secure-message templates.
//!
//! Pure: time comes in as arguments.

use jiff::SignedDuration;

use crate::ValidationError;
use crate::messaging::stable_names;
use crate::texting::check_template;

/// Why a text is sent. Consent and frequency caps are kept per purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// "You have a secure message from your care team."
    Care,
    /// Appointment reminders.
    AppointmentReminder,
    /// Lab results are ready (never the results).
    LabResults,
    /// Prescription notices.
    Prescription,
    /// Pre- and post-procedure instructions.
    Procedure,
}
stable_names!(Purpose {
    Care => "care",
    AppointmentReminder => "appointment-reminder",
    LabResults => "lab-results",
    Prescription => "prescription",
    Procedure => "procedure",
});

impl Purpose {
    /// Every purpose.
    pub const ALL: [Purpose; 5] = [
        Purpose::Care,
        Purpose::AppointmentReminder,
        Purpose::LabResults,
        Purpose::Prescription,
        Purpose::Procedure,
    ];
}

/// A consent ledger entry's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentState {
    /// Texts may be sent (for an all-purposes entry: an earlier opt-out is lifted).
    Granted,
    /// Entered on the web, waiting for the patient to answer YES (double opt-in).
    Pending,
    /// No texts (for an all-purposes entry: the number opted out of everything).
    Revoked,
}
stable_names!(ConsentState { Granted => "granted", Pending => "pending", Revoked => "revoked" });

/// Where a consent change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentSource {
    /// Recorded by staff at the front desk.
    FrontDesk,
    /// A web form (double opt-in required).
    WebForm,
    /// A keyword texted by the patient (STOP, START, YES…).
    SmsKeyword,
    /// Received from the EHR.
    Ehr,
    /// Given to staff by telephone.
    Phone,
    /// Given to staff in person.
    InPerson,
    /// Ended by the system because the patient's number changed.
    NumberChanged,
}
stable_names!(ConsentSource {
    FrontDesk => "front-desk",
    WebForm => "web-form",
    SmsKeyword => "sms-keyword",
    Ehr => "ehr",
    Phone => "phone",
    InPerson => "in-person",
    NumberChanged => "number-changed",
});

/// Where a number stands, folded from its ledger entries in recording order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentStatus {
    /// The number opted out of everything (STOP) and has not opted back in.
    pub opted_out: bool,
    /// The latest state per purpose (absent: never asked).
    pub purposes: Vec<(Purpose, ConsentState)>,
}

impl ConsentStatus {
    /// Folds ledger entries (`None` scope = every purpose), oldest first.
    pub fn fold(entries: impl IntoIterator<Item = (Option<Purpose>, ConsentState)>) -> Self {
        let mut status = ConsentStatus::default();
        for (scope, state) in entries {
            match scope {
                None => status.opted_out = state == ConsentState::Revoked,
                Some(p) => match status.purposes.iter_mut().find(|(q, _)| *q == p) {
                    Some(slot) => slot.1 = state,
                    None => status.purposes.push((p, state)),
                },
            }
        }
        status
    }

    /// The state of one purpose (`None`: no consent was ever recorded for it).
    pub fn state(&self, purpose: Purpose) -> Option<ConsentState> {
        self.purposes.iter().find(|(p, _)| *p == purpose).map(|(_, s)| *s)
    }

    /// Whether a non-exempt text of `purpose` may go out: not opted out, and consent granted
    /// for that purpose. Deny by default: no record is no consent.
    pub fn allows(&self, purpose: Purpose) -> bool {
        !self.opted_out && self.state(purpose) == Some(ConsentState::Granted)
    }

    /// Purposes waiting for the patient's YES.
    pub fn pending(&self) -> Vec<Purpose> {
        self.purposes.iter().filter(|(_, s)| *s == ConsentState::Pending).map(|(p, _)| *p).collect()
    }
}

/// What an outbound text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TextKind {
    /// A notice that a secure message is waiting, with its link.
    SecureMessage,
    /// The one confirmation of an opt-out.
    OptOutConfirmation,
    /// The confirmation of opting back in.
    OptInConfirmation,
    /// The answer to HELP.
    HelpReply,
    /// A one-time code for the secure page.
    VerificationCode,
    /// "Reply YES to receive texts" after a number was entered on the web.
    ConsentRequest,
}
stable_names!(TextKind {
    SecureMessage => "secure-message",
    OptOutConfirmation => "opt-out-confirmation",
    OptInConfirmation => "opt-in-confirmation",
    HelpReply => "help-reply",
    VerificationCode => "verification-code",
    ConsentRequest => "consent-request",
});

impl TextKind {
    /// Replies the patient asked for (by keyword or by requesting a code) go out at once and
    /// whatever the consent state: they are not subject to consent, quiet hours or caps.
    pub fn exempt(self) -> bool {
        matches!(
            self,
            TextKind::OptOutConfirmation
                | TextKind::OptInConfirmation
                | TextKind::HelpReply
                | TextKind::VerificationCode
        )
    }
}

/// Status of an outbound text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TextStatus {
    /// Waiting in the outbox (possibly for quiet hours, a cap or a retry).
    Queued,
    /// Handed to a worker; if the worker dies, reconciled with the provider before any retry.
    Sending,
    /// Accepted by the provider.
    Sent,
    /// The carrier reported delivery.
    Delivered,
    /// The provider or carrier could not deliver it.
    Undelivered,
    /// Given up after the last retry, or refused permanently by the provider.
    Failed,
    /// Not sent: the number opted out (or consent ended) before it could go.
    Cancelled,
}
stable_names!(TextStatus {
    Queued => "queued",
    Sending => "sending",
    Sent => "sent",
    Delivered => "delivered",
    Undelivered => "undelivered",
    Failed => "failed",
    Cancelled => "cancelled",
});

/// Attempts before a text is marked failed.
pub const MAX_ATTEMPTS: u32 = 8;

/// How long to wait before attempt `attempts + 1`, after `attempts` failed ones: 30 s doubling
/// up to an hour; `None` once [`MAX_ATTEMPTS`] have failed.
pub fn retry_delay(attempts: u32) -> Option<SignedDuration> {
    if attempts >= MAX_ATTEMPTS {
        return None;
    }
    let secs = 30i64.saturating_mul(1 << attempts.min(20)).min(3600);
    Some(SignedDuration::from_secs(secs))
}

/// The languages Haven has its own texts in.
pub const LANGUAGES: [&str; 2] = ["en", "es"];

/// The language to text a patient in: their preferred one if Haven has texts in it, else English.
pub fn text_language(preferred: Option<&str>) -> &'static str {
    match preferred {
        Some(l) if l.eq_ignore_ascii_case("es") => "es",
        _ => "en",
    }
}

/// The language of a keyword: Spanish for ALTO, PARAR and AYUDA, otherwise none implied.
pub fn keyword_language(body: &str) -> Option<&'static str> {
    let word: String = body.chars().filter(|c| c.is_alphabetic()).collect::<String>().to_uppercase();
    matches!(word.as_str(), "ALTO" | "PARAR" | "AYUDA").then_some("es")
}

/// The system's own text of `kind` (not a secure-message notice, which comes from the
/// organisation's template). `program` is the organisation's name; `code` only for
/// verification codes. None of these carry PHI.
pub fn system_text(kind: TextKind, language: &str, program: &str, help_phone: &str, code: &str) -> String {
    let es = language == "es";
    match (kind, es) {
        (TextKind::OptOutConfirmation, false) => {
            format!(
                "{program}: you are unsubscribed and will get no more texts from us. Reply START to resubscribe."
            )
        }
        (TextKind::OptOutConfirmation, true) => {
            format!(
                "{program}: su suscripción fue cancelada y no recibirá más mensajes. Responda START para volver."
            )
        }
        (TextKind::OptInConfirmation, false) => {
            format!("{program}: you will get texts from us again. Reply HELP for help, STOP to opt out.")
        }
        (TextKind::OptInConfirmation, true) => {
            format!(
                "{program}: volverá a recibir nuestros mensajes. Responda AYUDA para ayuda, ALTO para cancelar."
            )
        }
        (TextKind::HelpReply, false) => format!(
            "{program}: secure-message notices from your care team. Help: {help_phone}. Reply STOP to opt out. Msg&data rates may apply."
        ),
        (TextKind::HelpReply, true) => format!(
            "{program}: avisos de mensajes seguros de su equipo de salud. Ayuda: {help_phone}. Responda ALTO para cancelar."
        ),
        (TextKind::VerificationCode, false) => {
            format!("{program}: your code is {code}. It expires in 10 minutes. Never share it.")
        }
        (TextKind::VerificationCode, true) => {
            format!("{program}: su código es {code}. Vence en 10 minutos. No lo comparta.")
        }
        (TextKind::ConsentRequest, false) => {
            format!(
                "{program}: reply YES to get secure-message notices from your care team. Reply STOP to opt out."
            )
        }
        (TextKind::ConsentRequest, true) => format!(
            "{program}: responda YES para recibir avisos de mensajes seguros de su equipo de salud. Responda ALTO para cancelar."
        ),
        (TextKind::SecureMessage, _) => render(default_template(language), program, "", help_phone),
    }
}

/// The built-in secure-message template of a language (used until the organisation saves its own).
pub fn default_template(language: &str) -> &'static str {
    if language == "es" {
        "{{ org_name }}: tiene un mensaje seguro nuevo. Léalo en {{ link }} Responda ALTO para cancelar."
    } else {
        "{{ org_name }}: you have a new secure message. Read it at {{ link }} Reply STOP to opt out."
    }
}

/// Checks an organisation's secure-message template on save: the PHI-free placeholder rules of
/// [`check_template`], plus opt-out instructions (STOP or ALTO), which every text must carry.
pub fn check_sms_template(text: &str) -> Result<(), ValidationError> {
    check_template(text)?;
    let upper = text.to_uppercase();
    let words: Vec<&str> = upper.split(|c: char| !c.is_alphanumeric()).collect();
    if !words.iter().any(|w| *w == "STOP" || *w == "ALTO") {
        return Err(ValidationError::new(
            "template",
            "missing_opt_out",
            "every text must say how to stop: include STOP (or ALTO in Spanish)",
        ));
    }
    Ok(())
}

/// Fills a checked template's placeholders.
pub fn render(template: &str, org_name: &str, link: &str, help_phone: &str) -> String {
    let mut out = String::with_capacity(template.len() + link.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        out.push_str(match after[..close].trim() {
            "org_name" => org_name,
            "link" => link,
            "help_phone" => help_phone,
            _ => "",
        });
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_record_is_no_consent_and_stop_overrides_every_purpose_until_start() {
        let none = ConsentStatus::fold([]);
        assert!(!none.allows(Purpose::Care));

        let granted = [(Some(Purpose::Care), ConsentState::Granted)];
        assert!(ConsentStatus::fold(granted).allows(Purpose::Care));
        assert!(!ConsentStatus::fold(granted).allows(Purpose::AppointmentReminder));

        let stopped = [granted[0], (None, ConsentState::Revoked)];
        assert!(!ConsentStatus::fold(stopped).allows(Purpose::Care));

        // START lifts the opt-out and restores what was granted before, nothing more.
        let restarted = [stopped[0], stopped[1], (None, ConsentState::Granted)];
        let s = ConsentStatus::fold(restarted);
        assert!(s.allows(Purpose::Care));
        assert!(!s.allows(Purpose::LabResults));
    }

    #[test]
    fn a_web_entered_number_waits_for_yes() {
        let s = ConsentStatus::fold([(Some(Purpose::Care), ConsentState::Pending)]);
        assert!(!s.allows(Purpose::Care));
        assert_eq!(s.pending(), vec![Purpose::Care]);
        let s = ConsentStatus::fold([
            (Some(Purpose::Care), ConsentState::Pending),
            (Some(Purpose::Care), ConsentState::Granted),
        ]);
        assert!(s.allows(Purpose::Care));
        assert!(s.pending().is_empty());
    }

    #[test]
    fn retries_back_off_then_give_up() {
        assert_eq!(retry_delay(0), Some(SignedDuration::from_secs(30)));
        assert_eq!(retry_delay(1), Some(SignedDuration::from_secs(60)));
        assert_eq!(retry_delay(6), Some(SignedDuration::from_secs(1920)));
        assert_eq!(retry_delay(7), Some(SignedDuration::from_secs(3600)));
        assert_eq!(retry_delay(MAX_ATTEMPTS), None);
    }

    #[test]
    fn only_patient_requested_replies_are_exempt() {
        assert!(TextKind::OptOutConfirmation.exempt());
        assert!(TextKind::HelpReply.exempt());
        assert!(TextKind::VerificationCode.exempt());
        assert!(!TextKind::SecureMessage.exempt());
        assert!(!TextKind::ConsentRequest.exempt());
    }

    #[test]
    fn replies_name_the_program_a_contact_and_how_to_stop() {
        let help = system_text(TextKind::HelpReply, "en", "Lakeside Clinic", "+15550100", "");
        assert!(help.contains("Lakeside Clinic") && help.contains("+15550100") && help.contains("STOP"));
        let ayuda = system_text(TextKind::HelpReply, "es", "Lakeside Clinic", "+15550100", "");
        assert!(ayuda.contains("ALTO") && ayuda.contains("+15550100"));
        assert_eq!(keyword_language(" Alto. "), Some("es"));
        assert_eq!(keyword_language("STOP"), None);
        assert_eq!(text_language(Some("es")), "es");
        assert_eq!(text_language(Some("fr")), "en");
        for lang in LANGUAGES {
            for kind in [TextKind::OptOutConfirmation, TextKind::HelpReply, TextKind::ConsentRequest] {
                assert!(system_text(kind, lang, "Lakeside Clinic", "+15550100", "").chars().count() <= 160);
            }
        }
    }

    #[test]
    fn default_templates_pass_the_checks_and_render_within_one_long_sms() {
        for lang in LANGUAGES {
            let t = default_template(lang);
            check_sms_template(t).unwrap();
            let text = render(t, "Lakeside Clinic", "https://haven.example.org/p/AAAAAAAAAAAAAAAAAAAAAA", "");
            assert!(text.contains("https://haven.example.org/p/AAAAAAAAAAAAAAAAAAAAAA"));
            assert!(!text.contains("{{"));
            assert!(text.chars().count() <= 160, "{lang}: {} chars", text.chars().count());
        }
        let err = check_sms_template("{{ org_name }}: news at {{ link }}").unwrap_err();
        assert_eq!(err.code, "missing_opt_out");
        let err = check_sms_template("Hi {{ patient_name }} {{ link }} STOP").unwrap_err();
        assert_eq!(err.code, "phi_placeholder");
    }
}
