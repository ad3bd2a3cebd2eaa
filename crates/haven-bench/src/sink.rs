//! The sink gateway of the `outbox` scenario: it speaks Twilio's Messages API wire format
//! (`POST /2010-04-01/Accounts/{sid}/Messages.json`, HTTP Basic auth, form fields `To`, `From`,
//! `Body`; `201` with a Message resource; `GET` of the same path lists messages newest first,
//! filtered by `To` and `From`, which Haven uses to look a text up after a crash) and counts
//! what it is handed, so duplicates are seen. A carrier cannot be reached from here; this is
//! the provider's edge as Haven sees it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// The account the sink knows.
pub const ACCOUNT_SID: &str = "ACbec40000000000000000000000000000";
/// Its auth token.
pub const AUTH_TOKEN: &str = "bench-sink-token-0123456789abcdef";

struct Accepted {
    sid: String,
    from: String,
    body: String,
    created: jiff::Timestamp,
}

#[derive(Default)]
struct Inner {
    /// Texts by recipient: the scenario sends one text to each patient, so a second one to a
    /// number is a duplicate.
    by_to: HashMap<String, Vec<Accepted>>,
    /// Texts handed over, duplicates included.
    total: usize,
    /// When each recipient's first text arrived, in arrival order.
    first_arrivals: Vec<Instant>,
    /// Lookups (listings by recipient), which Haven makes only for texts whose outcome it
    /// does not know (after a crash).
    lookups: usize,
    /// Kill this process (SIGKILL) when handed this many texts, before answering the last.
    kill: Option<(u32, usize)>,
    /// The kill happened.
    killed: bool,
}

/// The running sink.
#[derive(Clone)]
pub struct Sink {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

/// What the sink has seen.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Texts handed over, duplicates included.
    pub total: usize,
    /// Distinct recipients.
    pub distinct: usize,
    /// Lookups of earlier texts.
    pub lookups: usize,
}

impl Sink {
    /// Starts the sink on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/2010-04-01/Accounts/{sid}/Messages.json", get(list).post(create))
            .with_state(inner.clone());
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", tcp.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(tcp, app).await;
        });
        Ok(Self { base, inner })
    }

    /// The organisation's gateway settings that point Haven here.
    pub fn gateway_settings(&self, from: &str) -> Value {
        json!({
            "gateway": {"provider": "twilio", "account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN,
                        "from": from, "api_base": self.base},
            "help_phone": "+15550100200",
        })
    }

    /// What arrived so far.
    pub fn counts(&self) -> Counts {
        let inner = self.inner.lock().expect("sink");
        Counts { total: inner.total, distinct: inner.by_to.len(), lookups: inner.lookups }
    }

    /// Kills process `pid` (the server) with SIGKILL when handed the `at`-th text, before it
    /// is answered: that text is at the provider, unknown to Haven, and others are in flight.
    pub fn kill_at(&self, pid: u32, at: usize) {
        self.inner.lock().expect("sink").kill = Some((pid, at));
    }

    /// Whether the kill asked for happened.
    pub fn killed(&self) -> bool {
        self.inner.lock().expect("sink").killed
    }

    /// When each recipient's first text arrived, in order.
    pub fn first_arrivals(&self) -> Vec<Instant> {
        self.inner.lock().expect("sink").first_arrivals.clone()
    }
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    let body = json!({"code": code, "message": message, "status": status.as_u16(),
                      "more_info": format!("https://www.twilio.com/docs/errors/{code}")});
    (status, axum::Json(body)).into_response()
}

fn authorised(headers: &HeaderMap, sid: &str) -> bool {
    let expected =
        format!("Basic {}", data_encoding::BASE64.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}").as_bytes()));
    sid == ACCOUNT_SID
        && headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn resource(to: &str, m: &Accepted) -> Value {
    let date =
        jiff::fmt::rfc2822::to_string(&m.created.to_zoned(jiff::tz::TimeZone::UTC)).unwrap_or_default();
    json!({"sid": m.sid, "account_sid": ACCOUNT_SID, "to": to, "from": m.from, "body": m.body,
           "status": "queued", "direction": "outbound-api", "num_segments": "1", "date_created": date,
           "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{}.json", m.sid)})
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
    let (Some(to), Some(from), Some(text)) = (get("To"), get("From"), get("Body")) else {
        return error(StatusCode::BAD_REQUEST, 21602, "Message body is required.");
    };
    let mut inner = inner.lock().expect("sink");
    inner.total += 1;
    let accepted = Accepted {
        sid: format!("SM{:032x}", inner.total),
        from,
        body: text,
        created: jiff::Timestamp::now(),
    };
    let answer = resource(&to, &accepted);
    let seen = inner.by_to.entry(to).or_default();
    seen.push(accepted);
    if seen.len() == 1 {
        inner.first_arrivals.push(Instant::now());
    }
    if let Some((pid, at)) = inner.kill
        && inner.total >= at
        && !inner.killed
    {
        let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        inner.killed = true;
    }
    (StatusCode::CREATED, axum::Json(answer)).into_response()
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
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mut inner = inner.lock().expect("sink");
    inner.lookups += 1;
    let messages: Vec<Value> = match get("To") {
        Some(to) => inner
            .by_to
            .get(to)
            .map(|seen| {
                seen.iter()
                    .rev()
                    .filter(|m| get("From").is_none_or(|f| f == m.from))
                    .map(|m| resource(to, m))
                    .collect()
            })
            .unwrap_or_default(),
        // Haven always asks by recipient; a listing of everything is not needed here.
        None => Vec::new(),
    };
    axum::Json(json!({"messages": messages, "page": 0, "page_size": 50, "next_page_uri": null}))
        .into_response()
}
