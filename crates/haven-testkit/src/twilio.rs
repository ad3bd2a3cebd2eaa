//! A stand-in for Twilio's Messages API (the carrier cannot be reached from tests), speaking
//! Twilio's real wire format: `POST /2010-04-01/Accounts/{sid}/Messages.json` with HTTP Basic
//! auth and form fields `To`, `From`, `Body`, `StatusCallback`, answered `201` with a Message
//! resource; `GET` of the same path lists messages newest first, filtered by `To` and `From`;
//! errors are Twilio's JSON error bodies. And the signing of webhooks by Twilio's own Python
//! SDK, so Haven's verifier is checked against the provider's implementation.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// The account the fake knows.
pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
/// Its auth token.
pub const AUTH_TOKEN: &str = "f00dfeedcafe0123456789abcdef0123";

/// A message the fake accepted.
#[derive(Debug, Clone)]
pub struct FakeMessage {
    /// Twilio's id.
    pub sid: String,
    /// Recipient.
    pub to: String,
    /// Sender.
    pub from: String,
    /// Text.
    pub body: String,
    /// Status callback URL given.
    pub status_callback: Option<String>,
}

struct Inner {
    messages: Vec<(FakeMessage, jiff::Timestamp)>,
    /// Answer this many sends with 503 first.
    unavailable: u32,
    /// Accept this many sends but garble the answer (as if it were lost on the way back).
    lose_answers: u32,
    clock: crate::TestClock,
}

/// The running fake.
#[derive(Clone)]
pub struct FakeTwilio {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeTwilio {
    /// Starts the fake on a free port.
    pub async fn start(clock: crate::TestClock) -> Self {
        let inner =
            Arc::new(Mutex::new(Inner { messages: Vec::new(), unavailable: 0, lose_answers: 0, clock }));
        let app = Router::new()
            .route("/2010-04-01/Accounts/{sid}/Messages.json", get(list).post(create))
            .with_state(inner.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", tcp.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(tcp, app).await;
        });
        Self { base, inner }
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.inner.lock().expect("fake").messages.iter().map(|(m, _)| m.clone()).collect()
    }

    /// Makes the next `n` sends succeed at Twilio but answer with a garbled body.
    pub fn lose_next_answers(&self, n: u32) {
        self.inner.lock().expect("fake").lose_answers = n;
    }

    /// Makes the next `n` sends fail with 503.
    pub fn fail_next(&self, n: u32) {
        self.inner.lock().expect("fake").unavailable = n;
    }

    /// The gateway settings that point Haven at this fake.
    pub fn gateway_settings(&self, from: &str) -> Value {
        json!({
            "gateway": {
                "provider": "twilio",
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "from": from,
                "api_base": self.base,
            },
            "help_phone": "+15550100200",
        })
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (status, axum::Json(json!({ "code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": status.as_u16() }))).into_response()
}

fn authorised(headers: &HeaderMap, sid: &str) -> bool {
    let expected =
        format!("Basic {}", data_encoding::BASE64.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}").as_bytes()));
    sid == ACCOUNT_SID
        && headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn resource(m: &FakeMessage, created: jiff::Timestamp) -> Value {
    json!({
        "sid": m.sid, "account_sid": ACCOUNT_SID, "to": m.to, "from": m.from, "body": m.body,
        "status": "queued", "direction": "outbound-api", "num_segments": "1",
        "date_created": jiff::fmt::rfc2822::to_string(&created.to_zoned(jiff::tz::TimeZone::UTC)).expect("date"),
        "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{}.json", m.sid),
    })
}

async fn create(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorised(&headers, &sid) {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut inner = inner.lock().expect("fake");
    if inner.unavailable > 0 {
        inner.unavailable -= 1;
        return error(StatusCode::SERVICE_UNAVAILABLE, 20500, "Service unavailable");
    }
    let (Some(to), Some(from), Some(text)) = (get("To"), get("From"), get("Body")) else {
        return error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    if to.ends_with("0000") {
        return error(StatusCode::BAD_REQUEST, 21211, "The 'To' number is not a valid phone number.");
    }
    let m = FakeMessage {
        sid: format!("SM{:032x}", inner.messages.len() + 1),
        to,
        from,
        body: text,
        status_callback: get("StatusCallback"),
    };
    use haven_domain::Clock;
    let created = inner.clock.now();
    inner.messages.push((m.clone(), created));
    if inner.lose_answers > 0 {
        inner.lose_answers -= 1;
        return (StatusCode::CREATED, "{\"sid\": ").into_response();
    }
    (StatusCode::CREATED, axum::Json(resource(&m, created))).into_response()
}

async fn list(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(sid): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    if !authorised(&headers, &sid) {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let inner = inner.lock().expect("fake");
    let messages: Vec<Value> = inner
        .messages
        .iter()
        .rev()
        .filter(|(m, _)| get("To").is_none_or(|t| t == m.to) && get("From").is_none_or(|f| f == m.from))
        .map(|(m, at)| resource(m, *at))
        .collect();
    axum::Json(json!({ "messages": messages, "page": 0, "page_size": 50, "next_page_uri": null }))
        .into_response()
}

/// The `X-Twilio-Signature` Twilio's official Python SDK computes for a request (through
/// `tests/api/twilio_sign.py` in the test virtualenv, which `scripts/test` sets up).
pub fn sdk_signature(auth_token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join("target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test (it creates the virtualenv from tests/api/requirements.txt)",
        python.display()
    );
    let map: serde_json::Map<String, Value> =
        params.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
    let mut child = std::process::Command::new(python)
        .arg(root.join("tests/api/twilio_sign.py"))
        .arg(auth_token)
        .arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the Twilio SDK signer");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(Value::Object(map).to_string().as_bytes())
        .expect("write params");
    let out = child.wait_with_output().expect("signer output");
    assert!(out.status.success(), "the Twilio SDK signer failed (is twilio installed in target/pyenv?)");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}
