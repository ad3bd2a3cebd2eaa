//! Patient texting through the HTTP API on both backends: Twilio webhooks signed by Twilio's
//! own Python SDK, STOP/HELP/START with the consent ledger, exactly one confirmation, quiet
//! hours in the patient's zone, caps, the durable outbox across a crash, and the refusals.

use haven_app::Actor;
use haven_domain::OrgId;
use haven_domain::org::OrgPolicy;
use haven_domain::roles::Role;
use haven_testkit::twilio::{AUTH_TOKEN, FakeTwilio, sdk_signature};
use haven_testkit::{Backend, TestServer, both_backends};
use serde_json::{Value, json};

const OUR_NUMBER: &str = "+15550009999";
const PATIENT_PHONE: &str = "+15551230001";

/// An organisation texting through the fake Twilio, a front-desk user, a patient in New York
/// with consent for care texts, and a patient conversation.
struct Clinic {
    s: TestServer,
    twilio: FakeTwilio,
    org: OrgId,
    nurse: haven_testkit::TestUser,
    staff: String,
    patient: String,
    conv: String,
}

async fn clinic(backend: Backend) -> Clinic {
    let s = TestServer::start(backend).await;
    // Monday 2026-11-02 10:00 in New York (EST, UTC-5): inside the sending window.
    s.clock.set("2026-11-02T15:00:00Z".parse().unwrap());
    let twilio = FakeTwilio::start(s.clock.clone()).await;
    let org = s.org("Lakeside Clinic").await;
    s.app
        .set_policy(&Actor::Operator, org, OrgPolicy { mfa_required: false, ..OrgPolicy::default() })
        .await
        .unwrap();
    let admin = s.user(org, "admin", &[Role::OrgAdmin]).await;
    let admin = s.login(&admin).await;
    let (st, g) =
        s.put("/api/v1/organization/sms-gateway", Some(&admin), twilio.gateway_settings(OUR_NUMBER)).await;
    assert_eq!(st, 200, "{g}");
    assert!(!g.to_string().contains(AUTH_TOKEN), "credentials are never shown again");
    let nurse = s.user(org, "nurse", &[Role::Nurse]).await;
    let staff = s.login(&nurse).await;
    let (st, p) = s
        .post(
            "/api/v1/patients",
            Some(&staff),
            json!({"mrn": "MRN-1", "name": "Ada Quill", "date_of_birth": "1961-04-09",
                   "phone": PATIENT_PHONE, "time_zone": "America/New_York"}),
        )
        .await;
    assert_eq!(st, 201, "{p}");
    let patient = p["id"].as_str().unwrap().to_owned();
    let (st, c) = s
        .post(&format!("/api/v1/patients/{patient}/consent"), Some(&staff), json!({
            "purposes": ["care"], "state": "granted", "source": "front-desk",
            "wording": "May we text you when a secure message from your care team is waiting? Msg&data rates may apply. Reply STOP to opt out."}))
        .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["allowed"], json!(["care"]));
    let (st, conv) = s
        .post(
            "/api/v1/conversations",
            Some(&staff),
            json!({"kind": "patient", "members": [], "patient_id": patient, "title": "Follow-up"}),
        )
        .await;
    assert_eq!(st, 201, "{conv}");
    let conv = conv["id"].as_str().unwrap().to_owned();
    Clinic { s, twilio, org, nurse, staff, patient, conv }
}

impl Clinic {
    /// Moves the clock to `at` and signs the nurse in again (long jumps end sessions).
    async fn at(&mut self, at: &str) {
        // Signing in moves the clock 30 s (a fresh TOTP step): start 30 s early.
        let at: jiff::Timestamp = at.parse().unwrap();
        self.s.clock.set(at - jiff::SignedDuration::from_secs(30));
        self.staff = self.s.login(&self.nurse).await;
        assert_eq!(self.s.app.now(), at);
    }

    /// Moves the clock on and signs the nurse in again.
    async fn after(&mut self, secs: i64) {
        self.s.clock.advance_secs(secs);
        self.staff = self.s.login(&self.nurse).await;
    }

    /// Posts an inbound-text webhook as Twilio would, signed by the official SDK.
    async fn inbound(&self, sid: &str, from: &str, body: &str) -> (u16, String) {
        let path = format!("/webhooks/twilio/{}/inbound", self.org);
        let params = [
            ("MessageSid", sid),
            ("AccountSid", haven_testkit::twilio::ACCOUNT_SID),
            ("From", from),
            ("To", OUR_NUMBER),
            ("Body", body),
            ("NumMedia", "0"),
        ];
        let sig = sdk_signature(AUTH_TOKEN, &self.s.url(&path), &params);
        self.webhook(&path, &params, Some(&sig)).await
    }

    async fn webhook(&self, path: &str, params: &[(&str, &str)], signature: Option<&str>) -> (u16, String) {
        let mut req = self.s.client.post(self.s.url(path)).form(params);
        if let Some(sig) = signature {
            req = req.header("X-Twilio-Signature", sig);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Runs the outbox until it has nothing due.
    async fn drain(&self) {
        for _ in 0..10 {
            if self.s.app.outbox_pass().await.unwrap().claimed == 0 {
                return;
            }
        }
        panic!("the outbox did not settle");
    }

    async fn consent(&self) -> Value {
        let (st, c) =
            self.s.get(&format!("/api/v1/patients/{}/consent", self.patient), Some(&self.staff)).await;
        assert_eq!(st, 200, "{c}");
        c
    }

    async fn text_patient(&self, body: Value) -> (u16, Value) {
        self.s
            .post(&format!("/api/v1/conversations/{}/patient-texts", self.conv), Some(&self.staff), body)
            .await
    }

    async fn texts(&self) -> Vec<Value> {
        let (st, t) =
            self.s.get(&format!("/api/v1/patients/{}/texts", self.patient), Some(&self.staff)).await;
        assert_eq!(st, 200, "{t}");
        t.as_array().unwrap().clone()
    }
}

both_backends!(stop_is_committed_with_exactly_one_confirmation_and_nothing_else_goes_out, |b| async move {
    let c = clinic(b).await;
    // A reminder queued before the STOP, not yet sent.
    let (st, queued) = c.text_patient(json!({"purpose": "care"})).await;
    assert_eq!(st, 202, "{queued}");

    let (st, twiml) = c.inbound("SM00000000000000000000000000000001", PATIENT_PHONE, "  Stop. ").await;
    assert_eq!(st, 200);
    assert!(twiml.contains("<Response></Response>"), "no inline reply: {twiml}");
    // Committed before the webhook was answered: the ledger shows it at once, with its source.
    let consent = c.consent().await;
    assert_eq!(consent["opted_out"], true, "{consent}");
    assert_eq!(consent["allowed"], json!([]));
    let last = consent["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["state"].as_str(), last["source"].as_str()),
        (Some("revoked"), Some("sms-keyword")),
        "{last}"
    );

    // The same webhook again (a retry or a replay), and a second STOP: no further effect.
    let (st, _) = c.inbound("SM00000000000000000000000000000001", PATIENT_PHONE, "  Stop. ").await;
    assert_eq!(st, 200);
    let (st, _) = c.inbound("SM00000000000000000000000000000002", PATIENT_PHONE, "STOP").await;
    assert_eq!(st, 200);
    assert_eq!(c.consent().await["history"].as_array().unwrap().len(), 2, "one grant, one opt-out");

    // An attempted reminder is refused; the one queued earlier is cancelled when its turn comes.
    let (st, e) = c.text_patient(json!({"purpose": "care"})).await;
    assert_eq!((st, e["code"].as_str()), (409, Some("patient_opted_out")), "{e}");
    c.drain().await;
    let sent = c.twilio.messages();
    assert_eq!(sent.len(), 1, "exactly one text went out: {sent:?}");
    assert_eq!(sent[0].to, PATIENT_PHONE);
    assert_eq!(sent[0].from, OUR_NUMBER);
    assert!(
        sent[0].body.contains("Lakeside Clinic") && sent[0].body.contains("unsubscribed"),
        "{}",
        sent[0].body
    );
    let texts = c.texts().await;
    let earlier = texts.iter().find(|t| t["id"] == queued["id"]).unwrap();
    assert_eq!(
        (earlier["status"].as_str(), earlier["error_code"].as_str()),
        (Some("cancelled"), Some("opted_out"))
    );
    assert!(texts.iter().any(|t| t["kind"] == "opt-out-confirmation" && t["status"] == "sent"));
    c.s.stop().await;
});

both_backends!(forged_unsigned_and_tampered_webhooks_are_refused_and_audited, |b| async move {
    let c = clinic(b).await;
    let path = format!("/webhooks/twilio/{}/inbound", c.org);
    let params = [
        ("MessageSid", "SM00000000000000000000000000000009"),
        ("From", PATIENT_PHONE),
        ("To", OUR_NUMBER),
        ("Body", "STOP"),
    ];
    // Unsigned.
    let (st, body) = c.webhook(&path, &params, None).await;
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("invalid_signature"), "{body}");
    // Signed with another account's token.
    let forged = sdk_signature("0123456789abcdef0123456789abcdef", &c.s.url(&path), &params);
    assert_eq!(c.webhook(&path, &params, Some(&forged)).await.0, 403);
    // Signed for a harmless body, sent with another.
    let harmless = [params[0], params[1], params[2], ("Body", "Thanks!")];
    let sig = sdk_signature(AUTH_TOKEN, &c.s.url(&path), &harmless);
    assert_eq!(c.webhook(&path, &params, Some(&sig)).await.0, 403);
    // Signed for another organisation's URL.
    let other = sdk_signature(
        AUTH_TOKEN,
        &c.s.url("/webhooks/twilio/00000000-0000-4000-8000-000000000000/inbound"),
        &params,
    );
    assert_eq!(c.webhook(&path, &params, Some(&other)).await.0, 403);
    // A status callback is checked the same way.
    let status_path = format!("/webhooks/twilio/{}/status", c.org);
    assert_eq!(
        c.webhook(&status_path, &[("MessageSid", "SM1"), ("MessageStatus", "delivered")], None).await.0,
        403
    );

    assert_eq!(c.consent().await["opted_out"], false, "nothing was acted on");
    c.drain().await;
    assert!(c.twilio.messages().is_empty());
    let admin = c.s.user(c.org, "auditor", &[Role::ComplianceOfficer]).await;
    let admin = c.s.login(&admin).await;
    let (st, page) =
        c.s.get("/api/v1/audit/events?action=webhook&outcome=serious_failure&limit=50", Some(&admin)).await;
    assert_eq!(st, 200, "{page}");
    let refused = page["events"].as_array().unwrap().iter().filter(|e| e["subtype"] == "webhook").count();
    assert_eq!(refused, 5, "every refused webhook is a security event: {page}");
    c.s.stop().await;
});

both_backends!(help_start_and_look_alike_opt_outs, |b| async move {
    let c = clinic(b).await;
    assert_eq!(c.inbound("SM10000000000000000000000000000001", PATIENT_PHONE, "help").await.0, 200);
    assert_eq!(
        c.inbound("SM10000000000000000000000000000002", PATIENT_PHONE, "Please stop texting me about this")
            .await
            .0,
        200
    );
    assert_eq!(c.consent().await["opted_out"], false, "free text is flagged for staff, not obeyed");
    assert_eq!(c.inbound("SM10000000000000000000000000000003", PATIENT_PHONE, "ALTO").await.0, 200);
    assert_eq!(c.consent().await["opted_out"], true);
    assert_eq!(c.inbound("SM10000000000000000000000000000004", PATIENT_PHONE, "Start").await.0, 200);
    let consent = c.consent().await;
    assert_eq!(
        (consent["opted_out"].as_bool(), consent["allowed"].clone()),
        (Some(false), json!(["care"])),
        "{consent}"
    );
    c.drain().await;
    let bodies: Vec<String> = c.twilio.messages().into_iter().map(|m| m.body).collect();
    assert_eq!(
        bodies.len(),
        3,
        "help reply, opt-out confirmation (in Spanish), opt-in confirmation: {bodies:?}"
    );
    let help = bodies.iter().find(|b| b.contains("Help:")).expect("a HELP reply");
    assert!(
        help.contains("+15550100200") && help.contains("STOP") && help.contains("Lakeside Clinic"),
        "{help}"
    );
    assert!(bodies.iter().any(|b| b.contains("cancelada")), "ALTO is answered in Spanish: {bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("again")));
    c.s.stop().await;
});

both_backends!(
    a_text_queued_at_ten_pm_patient_time_goes_out_at_eight_and_caps_hold_the_next,
    |b| async move {
        let mut c = clinic(b).await;
        // 22:00 in New York on Monday 2 November (EST).
        c.at("2026-11-03T03:00:00Z").await;
        let (st, t) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202, "{t}");
        assert_eq!(t["not_before"], "2026-11-03T13:00:00Z", "08:00 EST the next morning");
        c.drain().await;
        c.s.clock.set("2026-11-03T12:59:59Z".parse().unwrap());
        c.drain().await;
        assert!(c.twilio.messages().is_empty(), "nothing before 08:00");
        c.at("2026-11-03T13:00:00Z").await;
        c.drain().await;
        let sent = c.twilio.messages();
        assert_eq!(sent.len(), 1);
        let body = &sent[0].body;
        assert!(body.contains(&format!("{}/p/", c.s.base)) && body.contains("STOP"), "{body}");
        for phi in ["Ada", "Quill", "MRN-1", "1961", "Follow-up"] {
            assert!(!body.contains(phi), "the SMS carries no PHI: {body}");
        }
        let token = body.split("/p/").nth(1).unwrap().split_whitespace().next().unwrap();
        assert!(
            data_encoding::BASE64URL_NOPAD.decode(token.as_bytes()).unwrap().len() >= 16,
            "a 128-bit token"
        );
        // One a day: the next care text waits 24 hours from the first.
        let (st, t2) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202, "{t2}");
        assert_eq!(t2["not_before"], "2026-11-04T13:00:00Z");
        // Urgent texts skip quiet hours but not caps or consent.
        let (st, e) = c.text_patient(json!({"purpose": "lab-results", "urgent": true})).await;
        assert_eq!((st, e["code"].as_str()), (409, Some("no_consent")), "{e}");
        c.s.stop().await;
    }
);

both_backends!(
    a_crash_between_queueing_and_sending_or_after_handing_over_sends_exactly_once,
    |b| async move {
        let mut c = clinic(b).await;
        let (st, _) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202);
        // The node that queued it dies before its worker runs; another node (or the restarted one)
        // finds it in the durable outbox.
        let restarted = c.s.another_app().await;
        while restarted.outbox_pass().await.unwrap().claimed > 0 {}
        assert_eq!(c.twilio.messages().len(), 1);
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 1, "never twice");

        // Twilio accepts the next text but the answer is lost: the text is looked up, not resent.
        c.after(25 * 3600).await;
        c.twilio.lose_next_answers(1);
        let (st, t) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202, "{t}");
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 2);
        let pending = c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap();
        assert_eq!(pending["status"], "sending", "{pending}");
        c.after(120).await;
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 2, "found at Twilio, not sent again");
        let done = c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap();
        assert_eq!(done["status"], "sent", "{done}");

        // An outage is retried with backoff.
        c.after(25 * 3600).await;
        c.twilio.fail_next(1);
        let (_, t) = c.text_patient(json!({"purpose": "care"})).await;
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 2);
        let retry = c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap();
        assert_eq!(
            (retry["status"].as_str(), retry["attempts"].as_u64()),
            (Some("queued"), Some(1)),
            "{retry}"
        );
        c.after(31).await;
        c.drain().await;
        assert_eq!(c.twilio.messages().len(), 3);
        // Delivery reports (signed) move the text on.
        let sid = c.twilio.messages()[2].sid.clone();
        let path = format!("/webhooks/twilio/{}/status", c.org);
        let params = [("MessageSid", sid.as_str()), ("MessageStatus", "delivered")];
        let sig = sdk_signature(AUTH_TOKEN, &c.s.url(&path), &params);
        assert_eq!(c.webhook(&path, &params, Some(&sig)).await.0, 204);
        assert_eq!(c.texts().await.into_iter().find(|x| x["id"] == t["id"]).unwrap()["status"], "delivered");
        c.s.stop().await;
    }
);

both_backends!(the_consent_ledger_keeps_evidence_refuses_bad_input_and_exports_fhir, |b| async move {
    let c = clinic(b).await;
    // A web-form consent waits for YES (double opt-in).
    let (st, o) =
        c.s.post(
            &format!("/api/v1/patients/{}/consent", c.patient),
            Some(&c.staff),
            json!({
            "purposes": ["appointment-reminder"], "state": "granted", "source": "web-form",
            "wording": "Text me appointment reminders."}),
        )
        .await;
    assert_eq!(st, 201, "{o}");
    assert_eq!(o["pending"], json!(["appointment-reminder"]));
    c.drain().await;
    assert!(c.twilio.messages()[0].body.contains("YES"));
    assert_eq!(c.inbound("SM20000000000000000000000000000001", PATIENT_PHONE, "Yes").await.0, 200);
    let o = c.consent().await;
    assert_eq!(o["allowed"], json!(["care", "appointment-reminder"]), "{o}");
    // An opt-out given by telephone, recorded by staff.
    let (st, o) =
        c.s.post(
            &format!("/api/v1/patients/{}/consent", c.patient),
            Some(&c.staff),
            json!({
            "state": "revoked", "source": "phone", "wording": "Patient called: no more texts."}),
        )
        .await;
    assert_eq!(st, 201, "{o}");
    assert_eq!(o["opted_out"], true);
    let last = o["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["source"], "phone");
    assert!(last["recorded_by"].is_string());
    // Refusals: no wording, a keyword source claimed by staff, a PHI placeholder in a template.
    let (st, e) =
        c.s.post(
            &format!("/api/v1/patients/{}/consent", c.patient),
            Some(&c.staff),
            json!({"state": "granted", "source": "front-desk", "wording": " "}),
        )
        .await;
    assert_eq!((st, e["code"].as_str()), (422, Some("invalid_wording")));
    let (st, e) =
        c.s.post(
            &format!("/api/v1/patients/{}/consent", c.patient),
            Some(&c.staff),
            json!({"state": "granted", "source": "sms-keyword", "wording": "x"}),
        )
        .await;
    assert_eq!((st, e["code"].as_str()), (422, Some("invalid_source")));
    let admin = c.s.user(c.org, "admin2", &[Role::OrgAdmin, Role::ComplianceOfficer]).await;
    let admin = c.s.login(&admin).await;
    let (st, e) =
        c.s.put(
            "/api/v1/organization/sms-templates/en",
            Some(&admin),
            json!({"body": "Hi {{ patient_name }}, see {{ link }} STOP to end"}),
        )
        .await;
    assert_eq!((st, e["code"].as_str()), (422, Some("phi_placeholder")));
    let (st, _) =
        c.s.put(
            "/api/v1/organization/sms-templates/es",
            Some(&admin),
            json!({"body": "{{ org_name }}: mensaje nuevo en {{ link }} ALTO para cancelar"}),
        )
        .await;
    assert_eq!(st, 204);
    // The ledger is append-only in the database itself.
    let pool = sqlx::AnyPool::connect(c.s.db.url()).await.unwrap();
    assert!(sqlx::query("UPDATE consent_ledger SET state = 'granted'").execute(&pool).await.is_err());
    assert!(sqlx::query("DELETE FROM consent_ledger").execute(&pool).await.is_err());
    pool.close().await;
    // FHIR export (compliance).
    let (st, bundle) = c.s.get("/api/v1/consent/export?limit=2", Some(&admin)).await;
    assert_eq!(st, 200, "{bundle}");
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["entry"].as_array().unwrap().len(), 2);
    assert_eq!(bundle["link"][0]["relation"], "next");
    let (_, all) = c.s.get("/api/v1/consent/export", Some(&admin)).await;
    let resources: Vec<&Value> = all["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
    assert_eq!(resources.len(), 4, "front-desk grant, web-form pending, YES, phone opt-out: {all}");
    let phone_out = resources.last().unwrap();
    assert_eq!(
        (phone_out["status"].as_str(), phone_out["provision"]["type"].as_str()),
        (Some("rejected"), Some("deny"))
    );
    let wording = data_encoding::BASE64
        .decode(phone_out["sourceAttachment"]["data"].as_str().unwrap().as_bytes())
        .unwrap();
    assert_eq!(wording, b"Patient called: no more texts.");
    assert!(!all.to_string().contains(PATIENT_PHONE), "numbers stay sealed");
    // Staff without the audit permission cannot export; another organisation sees nothing.
    assert_eq!(c.s.get("/api/v1/consent/export", Some(&c.staff)).await.0, 404);
    let other = c.s.org("Elsewhere").await;
    c.s.app
        .set_policy(&Actor::Operator, other, OrgPolicy { mfa_required: false, ..OrgPolicy::default() })
        .await
        .unwrap();
    let stranger = c.s.user(other, "stranger", &[Role::Nurse]).await;
    let stranger = c.s.login(&stranger).await;
    assert_eq!(c.s.get(&format!("/api/v1/patients/{}/consent", c.patient), Some(&stranger)).await.0, 404);
    assert_eq!(
        c.s.post(&format!("/api/v1/conversations/{}/patient-texts", c.conv), Some(&stranger), json!({}))
            .await
            .0,
        404
    );
    c.s.stop().await;
});

/// The link token in the last text to the patient.
fn link_token(c: &Clinic) -> String {
    let body = c.twilio.messages().last().unwrap().body.clone();
    body.split("/p/").nth(1).unwrap().split_whitespace().next().unwrap().to_owned()
}

impl Clinic {
    async fn page(
        &self,
        method: &str,
        path: &str,
        form: &[(&str, &str)],
        origin: bool,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        self.page_as(method, path, form, origin, None).await
    }

    /// Like `page`, with the patient-session cookie the browser would send.
    async fn page_as(
        &self,
        method: &str,
        path: &str,
        form: &[(&str, &str)],
        origin: bool,
        session: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let mut req = match method {
            "GET" => self.s.client.get(self.s.url(path)),
            _ => self.s.client.post(self.s.url(path)).form(form),
        };
        if origin {
            req = req.header("Origin", &self.s.base);
        }
        if let Some(session) = session {
            req = req.header("Cookie", format!("haven_patient={session}"));
        }
        let resp = req.send().await.unwrap();
        let (st, h) = (resp.status().as_u16(), resp.headers().clone());
        (st, h, resp.text().await.unwrap())
    }

    /// The one-time code in the last text.
    fn last_code(&self) -> String {
        let body = self.twilio.messages().last().unwrap().body.clone();
        body.split_whitespace()
            .map(|w| w.trim_end_matches('.'))
            .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
            .expect("a code")
            .to_owned()
    }
}

both_backends!(
    a_secure_link_shows_no_phi_before_identity_and_locks_after_five_wrong_checks,
    |b| async move {
        let mut c = clinic(b).await;
        let (st, _) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202);
        c.drain().await;
        let token = link_token(&c);
        let page = format!("/p/{token}");
        for _ in 0..2 {
            // Opened twice (a link-preview bot, then the patient): nothing is used up, nothing shown.
            let (st, h, html) = c.page("GET", &page, &[], false).await;
            assert_eq!(st, 200, "{html}");
            assert!(html.contains("Lakeside Clinic") && html.contains("Text me a code"), "{html}");
            for phi in ["Ada", "Quill", "MRN-1", "1961", "Follow-up", PATIENT_PHONE] {
                assert!(!html.contains(phi), "no PHI before identity is proven: {html}");
            }
            assert_eq!(h["referrer-policy"], "no-referrer");
            assert_eq!(h["cache-control"], "no-store");
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(
                csp.contains("default-src 'none'")
                    && !csp.contains("unsafe-inline")
                    && !csp.contains("script-src"),
                "{csp}"
            );
            assert!(!html.contains("<script"), "no script at all");
        }
        assert_eq!(c.page("GET", "/p/AAAAAAAAAAAAAAAAAAAAAA", &[], false).await.0, 404);
        // A cross-site post is refused, however its Origin reads; a browser's same-origin post
        // (Origin `null` under `no-referrer`, Sec-Fetch-Site `same-origin`) is the patient's.
        assert_eq!(c.page("POST", &format!("{page}/code"), &[], false).await.0, 403);
        let post = |site: &'static str| {
            c.s.client
                .post(c.s.url(&format!("{page}/code")))
                .header("Origin", "null")
                .header("Sec-Fetch-Site", site)
                .send()
        };
        assert_eq!(post("cross-site").await.unwrap().status(), 403);
        assert_eq!(post("same-site").await.unwrap().status(), 403);
        let (st, _, html) = c.page("POST", &format!("{page}/code"), &[], true).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("Date of birth"));
        // A second code within the minute is refused.
        assert_eq!(c.page("POST", &format!("{page}/code"), &[], true).await.0, 429);
        c.drain().await;
        let code = c.last_code();
        assert_eq!(
            c.twilio.messages().last().unwrap().to,
            PATIENT_PHONE,
            "the code goes to the phone on record"
        );
        for left in (1..=4).rev() {
            let (st, _, html) = c
                .page("POST", &format!("{page}/verify"), &[("dob", "1961-04-10"), ("code", &code)], true)
                .await;
            assert_eq!(st, 422, "{html}");
            assert!(html.contains(&format!("Attempts left: {left}")), "{html}");
        }
        let (st, _, html) =
            c.page("POST", &format!("{page}/verify"), &[("dob", "1961-04-10"), ("code", &code)], true).await;
        assert_eq!(st, 403);
        assert!(
            html.contains("locked") && html.contains("+15550100200"),
            "a clear message and whom to call: {html}"
        );
        // Locked means locked, even with the right answers.
        let (st, h, html) =
            c.page("POST", &format!("{page}/verify"), &[("dob", "1961-04-09"), ("code", &code)], true).await;
        assert_eq!(st, 403, "{html}");
        assert!(h.get("set-cookie").is_none());

        // A new link: the right date of birth and code open a short, cookie-bound session once.
        c.after(25 * 3600).await;
        let (st, _) = c.text_patient(json!({"purpose": "care"})).await;
        assert_eq!(st, 202);
        c.drain().await;
        let page = format!("/p/{}", link_token(&c));
        assert_eq!(c.page("POST", &format!("{page}/code"), &[], true).await.0, 200);
        c.drain().await;
        let code = c.last_code();
        let (st, _, html) = c
            .page("POST", &format!("{page}/verify"), &[("dob", "1961-04-09"), ("code", "000000")], true)
            .await;
        assert_eq!(st, 422, "a wrong code fails like a wrong date: {html}");
        let (st, h, html) =
            c.page("POST", &format!("{page}/verify"), &[("dob", "1961-04-09"), ("code", &code)], true).await;
        assert_eq!(st, 200, "{html}");
        assert!(html.contains("Identity confirmed"));
        let cookie = h["set-cookie"].to_str().unwrap();
        assert!(
            cookie.starts_with("haven_patient=")
                && cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.contains("Path=/p"),
            "{cookie}"
        );
        let session = cookie.split(';').next().unwrap().trim_start_matches("haven_patient=");
        assert!(c.s.app.patient_session(session).await.is_ok());
        let (_, _, html) = c.page("GET", &page, &[], false).await;
        assert!(html.contains("already used"), "single use once identity is proven: {html}");
        // The session ends after five idle minutes.
        c.s.clock.advance_secs(6 * 60);
        assert!(c.s.app.patient_session(session).await.is_err());

        // Every open and every check is audited, failures included.
        let auditor = c.s.user(c.org, "auditor", &[Role::ComplianceOfficer]).await;
        let auditor = c.s.login(&auditor).await;
        let (_, failed) =
            c.s.get("/api/v1/audit/events?action=identity-check&outcome=failure&limit=50", Some(&auditor))
                .await;
        assert_eq!(
            failed["events"].as_array().unwrap().len(),
            6,
            "five on the first link (the retry once locked is refused before any check) and one on the second: {failed}"
        );
        let (_, opened) = c.s.get("/api/v1/audit/events?action=link-open&limit=50", Some(&auditor)).await;
        assert!(opened["events"].as_array().unwrap().len() >= 3);
        c.s.stop().await;
    }
);

impl Clinic {
    /// Opens the newest link as the patient would: a code to the phone, then date of birth and
    /// code. Returns the link's page and the session.
    async fn open_newest_link(&self) -> (String, String) {
        let page = format!("/p/{}", link_token(self));
        assert_eq!(self.page("POST", &format!("{page}/code"), &[], true).await.0, 200);
        self.drain().await;
        let code = self.last_code();
        let (st, h, html) = self
            .page("POST", &format!("{page}/verify"), &[("dob", "1961-04-09"), ("code", &code)], true)
            .await;
        assert_eq!(st, 200, "{html}");
        let cookie = h["set-cookie"].to_str().unwrap();
        let session = cookie.split(';').next().unwrap().trim_start_matches("haven_patient=").to_owned();
        (page, session)
    }

    async fn events(&self) -> Vec<Value> {
        let (st, e) =
            self.s.get(&format!("/api/v1/conversations/{}/events", self.conv), Some(&self.staff)).await;
        assert_eq!(st, 200, "{e}");
        e["events"].as_array().unwrap().clone()
    }
}

both_backends!(the_patient_reads_and_replies_on_the_secure_page_and_by_text, |b| async move {
    let c = clinic(b).await;
    let secret = "Your potassium came back normal at 4.1";
    let (st, t) = c.text_patient(json!({"purpose": "care", "body": secret})).await;
    assert_eq!(st, 202, "{t}");
    c.drain().await;
    let sms = c.twilio.messages().last().unwrap().body.clone();
    assert!(
        !sms.contains("potassium") && sms.contains("/p/"),
        "the SMS carries a link, not the message: {sms}"
    );
    // Staff see it in the conversation, in order, as a message to the patient.
    let events = c.events().await;
    let sent =
        events.iter().find(|e| e["type"] == "patient_message").expect("the message is in the conversation");
    assert_eq!(sent["patient_message"]["direction"], "to_patient");
    assert_eq!(sent["patient_message"]["body"], secret);
    assert_eq!(sent["actor_id"], json!(c.nurse.id));

    let (page, session) = c.open_newest_link().await;
    let (st, _, html) = c.page_as("GET", &page, &[], false, Some(&session)).await;
    assert_eq!(st, 200);
    assert!(html.contains(secret) && html.contains("Your messages"), "{html}");
    // Replies need the same site, the session, and some text.
    let reply = format!("{page}/reply");
    assert_eq!(c.page_as("POST", &reply, &[("body", "hi")], false, Some(&session)).await.0, 403);
    let (st, _, html) = c.page_as("POST", &reply, &[("body", "hi")], true, None).await;
    assert_eq!(st, 401);
    assert!(html.contains("session has ended"), "{html}");
    let (st, _, html) = c.page_as("POST", &reply, &[("body", "   ")], true, Some(&session)).await;
    assert_eq!(st, 422, "{html}");
    let (st, _, html) = c
        .page_as(
            "POST",
            &reply,
            &[("body", "Thank you <b>doctor</b>, see you Tuesday")],
            true,
            Some(&session),
        )
        .await;
    assert_eq!(st, 200, "{html}");
    assert!(
        html.contains("Your reply was sent.")
            && html.contains("Thank you &lt;b&gt;doctor&lt;")
            && !html.contains("<b>doctor"),
        "{html}"
    );

    // The reply reaches the conversation, counts as unread, and opens the shared inbox entry.
    let events = c.events().await;
    let got = events.last().unwrap();
    assert_eq!(
        (got["type"].as_str(), got["patient_message"]["direction"].as_str()),
        (Some("patient_message"), Some("from_patient"))
    );
    assert_eq!(got["patient_message"]["channel"], "secure_page");
    assert!(got.get("actor_id").is_none(), "written by the patient, not by a user: {got}");
    let (_, list) = c.s.get("/api/v1/conversations", Some(&c.staff)).await;
    assert_eq!(list["conversations"][0]["unread"], 1, "{list}");
    let (st, inbox) = c.s.get("/api/v1/inbox?status=open", Some(&c.staff)).await;
    assert_eq!(st, 200, "{inbox}");
    assert_eq!(inbox[0]["conversation_id"], json!(c.conv));
    assert_eq!(inbox[0]["patient"]["name"], "Ada Quill");
    let path = format!("/api/v1/inbox/{}", c.conv);
    let (st, e) = c.s.put(&path, Some(&c.staff), json!({"assignee_id": c.patient, "status": "open"})).await;
    assert_eq!((st, e["code"].as_str()), (422, Some("unknown_user")), "{e}");
    let (st, item) =
        c.s.put(&path, Some(&c.staff), json!({"assignee_id": c.nurse.id, "status": "done"})).await;
    assert_eq!((st, item["status"].as_str()), (200, Some("done")), "{item}");
    assert_eq!(item["assignee_id"], json!(c.nurse.id));
    assert_eq!(c.s.get("/api/v1/inbox?status=open", Some(&c.staff)).await.1, json!([]));

    // A text from the patient joins the thread and opens the entry again.
    let (st, _) = c.inbound("SM-reply-1", PATIENT_PHONE, "Running 10 minutes late").await;
    assert_eq!(st, 200);
    let events = c.events().await;
    let texted = &events.last().unwrap()["patient_message"];
    assert_eq!(
        (texted["body"].as_str(), texted["channel"].as_str()),
        (Some("Running 10 minutes late"), Some("sms"))
    );
    let (_, inbox) = c.s.get("/api/v1/inbox?status=open", Some(&c.staff)).await;
    assert_eq!(inbox.as_array().unwrap().len(), 1);
    // The replayed webhook adds nothing.
    c.inbound("SM-reply-1", PATIENT_PHONE, "Running 10 minutes late").await;
    assert_eq!(c.events().await.len(), events.len());
    let (_, _, html) = c.page_as("GET", &page, &[], false, Some(&session)).await;
    assert!(html.contains("Running 10 minutes late") && html.contains("(by text)"), "{html}");

    // Audited, without bodies.
    let auditor = c.s.user(c.org, "auditor", &[Role::ComplianceOfficer]).await;
    let auditor = c.s.login(&auditor).await;
    for action in ["patient-message-send", "patient-thread-read", "patient-message-receive", "inbox-update"] {
        let (_, found) = c.s.get(&format!("/api/v1/audit/events?action={action}"), Some(&auditor)).await;
        assert!(!found["events"].as_array().unwrap().is_empty(), "{action} is audited");
    }
    let (_, all) = c.s.get("/api/v1/audit/events?limit=500", Some(&auditor)).await;
    let all = all.to_string();
    assert!(
        !all.contains("potassium") && !all.contains("Tuesday") && !all.contains("late"),
        "no bodies in the audit log"
    );
    c.s.stop().await;
});

both_backends!(a_message_to_an_opted_out_patient_is_not_stored_at_all, |b| async move {
    let c = clinic(b).await;
    let (st, _) = c.inbound("SM-stop", PATIENT_PHONE, "STOP").await;
    assert_eq!(st, 200);
    let before = c.events().await.len();
    let (st, e) = c.text_patient(json!({"purpose": "care", "body": "Your results are in"})).await;
    assert_eq!((st, e["code"].as_str()), (409, Some("patient_opted_out")), "{e}");
    assert_eq!(c.events().await.len(), before, "no message without its text: nothing half-written");
    let (st, e) = c.text_patient(json!({"purpose": "care", "body": ""})).await;
    assert_eq!(st, 422, "{e}");
    c.s.stop().await;
});
