//! A clinic set up for patient-texting tests: an organisation texting through the Twilio
//! stand-in, a nurse, a patient in New York with consent for care texts, and a patient
//! conversation; with helpers to move the clock, post signed webhooks, drain the outbox and
//! act as the patient on the secure page.

use haven_app::Actor;
use haven_domain::OrgId;
use haven_domain::org::OrgPolicy;
use haven_domain::roles::Role;
use serde_json::{Value, json};

use crate::twilio::{AUTH_TOKEN, FakeTwilio, sdk_signature};
use crate::{Backend, TestServer};

/// The organisation's sending number.
pub const OUR_NUMBER: &str = "+15550009999";
/// The patient's phone on record.
pub const PATIENT_PHONE: &str = "+15551230001";

/// An organisation texting through the fake Twilio, a front-desk user, a patient in New York
/// with consent for care texts, and a patient conversation.
pub struct Clinic {
    /// The server.
    pub s: TestServer,
    /// The Twilio stand-in.
    pub twilio: FakeTwilio,
    /// The organisation.
    pub org: OrgId,
    /// A nurse (texts patients).
    pub nurse: crate::TestUser,
    /// The nurse's token.
    pub staff: String,
    /// The patient's id.
    pub patient: String,
    /// The patient conversation's id.
    pub conv: String,
}

/// Sets the clinic up on `backend`, at Monday 2026-11-02 10:00 in New York.
pub async fn clinic(backend: Backend) -> Clinic {
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
    pub async fn at(&mut self, at: &str) {
        // Signing in moves the clock 30 s (a fresh TOTP step): start 30 s early.
        let at: jiff::Timestamp = at.parse().unwrap();
        self.s.clock.set(at - jiff::SignedDuration::from_secs(30));
        self.staff = self.s.login(&self.nurse).await;
        assert_eq!(self.s.app.now(), at);
    }

    /// Moves the clock on and signs the nurse in again.
    pub async fn after(&mut self, secs: i64) {
        self.s.clock.advance_secs(secs);
        self.staff = self.s.login(&self.nurse).await;
    }

    /// Posts an inbound-text webhook as Twilio would, signed by the official SDK.
    pub async fn inbound(&self, sid: &str, from: &str, body: &str) -> (u16, String) {
        let path = format!("/webhooks/twilio/{}/inbound", self.org);
        let params = [
            ("MessageSid", sid),
            ("AccountSid", crate::twilio::ACCOUNT_SID),
            ("From", from),
            ("To", OUR_NUMBER),
            ("Body", body),
            ("NumMedia", "0"),
        ];
        let sig = sdk_signature(AUTH_TOKEN, &self.s.url(&path), &params);
        self.webhook(&path, &params, Some(&sig)).await
    }

    /// Posts a webhook form with an optional `X-Twilio-Signature`.
    pub async fn webhook(
        &self,
        path: &str,
        params: &[(&str, &str)],
        signature: Option<&str>,
    ) -> (u16, String) {
        let mut req = self.s.client.post(self.s.url(path)).form(params);
        if let Some(sig) = signature {
            req = req.header("X-Twilio-Signature", sig);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    /// Runs the outbox until it has nothing due.
    pub async fn drain(&self) {
        for _ in 0..10 {
            if self.s.app.outbox_pass().await.unwrap().claimed == 0 {
                return;
            }
        }
        panic!("the outbox did not settle");
    }

    /// The patient's consent overview.
    pub async fn consent(&self) -> Value {
        let (st, c) =
            self.s.get(&format!("/api/v1/patients/{}/consent", self.patient), Some(&self.staff)).await;
        assert_eq!(st, 200, "{c}");
        c
    }

    /// Texts the patient from the conversation (as the nurse).
    pub async fn text_patient(&self, body: Value) -> (u16, Value) {
        self.s
            .post(&format!("/api/v1/conversations/{}/patient-texts", self.conv), Some(&self.staff), body)
            .await
    }

    /// The texts sent to the patient.
    pub async fn texts(&self) -> Vec<Value> {
        let (st, t) =
            self.s.get(&format!("/api/v1/patients/{}/texts", self.patient), Some(&self.staff)).await;
        assert_eq!(st, 200, "{t}");
        t.as_array().unwrap().clone()
    }
}

/// The link token in the last text to the patient.
pub fn link_token(c: &Clinic) -> String {
    let body = c.twilio.messages().last().unwrap().body.clone();
    body.split("/p/").nth(1).unwrap().split_whitespace().next().unwrap().to_owned()
}

impl Clinic {
    /// A request to the secure page, with this server's `Origin` when `origin`.
    pub async fn page(
        &self,
        method: &str,
        path: &str,
        form: &[(&str, &str)],
        origin: bool,
    ) -> (u16, reqwest::header::HeaderMap, String) {
        self.page_as(method, path, form, origin, None).await
    }

    /// Like `page`, with the patient-session cookie the browser would send.
    pub async fn page_as(
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
    pub fn last_code(&self) -> String {
        let body = self.twilio.messages().last().unwrap().body.clone();
        body.split_whitespace()
            .map(|w| w.trim_end_matches('.'))
            .find(|w| w.len() == 6 && w.bytes().all(|b| b.is_ascii_digit()))
            .expect("a code")
            .to_owned()
    }
}

impl Clinic {
    /// Opens the newest link as the patient would: a code to the phone, then date of birth and
    /// code. Returns the link's page and the session.
    pub async fn open_newest_link(&self) -> (String, String) {
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

    /// The conversation's events, as the nurse sees them.
    pub async fn events(&self) -> Vec<Value> {
        let (st, e) =
            self.s.get(&format!("/api/v1/conversations/{}/events", self.conv), Some(&self.staff)).await;
        assert_eq!(st, 200, "{e}");
        e["events"].as_array().unwrap().clone()
    }
}
