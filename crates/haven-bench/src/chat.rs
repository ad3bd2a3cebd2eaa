//! Scenario `chat`: U users, R group conversations of K members, every user on a WebSocket for
//! the whole run; S senders per conversation post N messages in all, closed-loop (each sender
//! sends its next message when the previous one is acknowledged) or open-loop at a fixed
//! rate. Measures accepted messages per second, send latency, and end-to-end delivery latency
//! (send start to arrival on each other member's socket).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Which API the load speaks: Haven's own, or an established server's (to measure it with the
/// same load: the Matrix client-server API, see `matrix.rs`, or XMPP, see `xmpp.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// Haven's REST API and WebSocket.
    Haven,
    /// A Matrix homeserver's client-server API: rooms, `/send` and `/sync`.
    Matrix,
    /// An XMPP server's client streams and multi-user chat rooms.
    Xmpp,
}

/// What one member's listener recorded: the body and arrival time of every message event.
pub(crate) type Arrivals = tokio::task::JoinHandle<Vec<(String, Instant)>>;

/// One member listening: what it records, and (XMPP) the stream its senders post on.
pub(crate) type Listener = (Arrivals, Option<crate::xmpp::Conn>);

impl Api {
    /// Makes conversation `m` (indexes into `users`, its creator first); returns its id.
    async fn create(
        self,
        http: &reqwest::Client,
        base: &str,
        users: &[(String, String)],
        m: &[usize],
    ) -> anyhow::Result<String> {
        let creator = &users[m[0]].1;
        match self {
            Self::Haven => {
                let others: Vec<&str> = m[1..].iter().map(|&u| users[u].0.as_str()).collect();
                let body = json!({"kind": "group", "members": others});
                let v = post(http, format!("{base}/api/v1/conversations"), Some(creator), &body).await?;
                Ok(v["id"].as_str().context("no conversation id")?.to_owned())
            }
            Self::Matrix => {
                let others: Vec<(&str, &str)> =
                    m[1..].iter().map(|&u| (users[u].0.as_str(), users[u].1.as_str())).collect();
                crate::matrix::create_room(http, base, creator, &others).await
            }
            Self::Xmpp => crate::xmpp::room_name(&users[m[0]].0),
        }
    }

    /// Starts following `user`'s deliveries (its WebSocket, its `/sync`, or its XMPP stream,
    /// which joins `convs`, the conversations it is a member of) until `stop` changes; returns
    /// once it is listening.
    async fn listen(
        self,
        http: &reqwest::Client,
        base: &str,
        user: &(String, String),
        convs: &[&str],
        seen: Arc<AtomicUsize>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<Listener> {
        let token = &user.1;
        match self {
            Self::Haven => Ok((open_socket(base, token, seen, stop).await?, None)),
            Self::Matrix => Ok((crate::matrix::open_sync(http, base, token, seen, stop).await?, None)),
            Self::Xmpp => {
                let (arrivals, conn) =
                    crate::xmpp::open_stream(base, &user.0, token, convs, seen, stop).await?;
                Ok((arrivals, Some(conn)))
            }
        }
    }
}

/// Parameters of a run.
#[derive(Debug, Clone)]
pub struct ChatParams {
    /// Conversations.
    pub conversations: usize,
    /// Members per conversation.
    pub members: usize,
    /// Senders per conversation.
    pub senders: usize,
    /// Messages in all.
    pub messages: usize,
    /// Open loop: messages per second in all (closed loop when absent).
    pub rate: Option<f64>,
    /// Where the members' sockets connect, when not where the messages are sent (another node
    /// of a cluster).
    pub listen_base: Option<String>,
}

/// What a run measured. Latencies in microseconds.
#[derive(Debug, Clone, Default)]
pub struct ChatResult {
    /// The conversations the load was sent to (their ids, or rooms), in the order made.
    pub conversations: Vec<String>,
    /// Messages accepted (2xx).
    pub accepted: usize,
    /// Sends refused or failed.
    pub failed: usize,
    /// Wall time of the sending phase, seconds.
    pub seconds: f64,
    /// Send latencies.
    pub send_us: Vec<u64>,
    /// Delivery latencies (one per recipient).
    pub delivery_us: Vec<u64>,
    /// Deliveries expected but not seen at the end.
    pub missing: usize,
    /// The server's work per accepted message during the load (see `server::Work::per`).
    pub server_per_message: Value,
    /// What the server's group-commit writer did during the load (batches, sizes, times).
    pub writer: Value,
    /// This tool's own CPU time per accepted message during the load, microseconds.
    pub tool_cpu_us_per_message: f64,
    /// The local PostgreSQL's CPU time per accepted message during the load, microseconds
    /// (none when no PostgreSQL runs on this machine; see `server::database_cpu_seconds`).
    pub database_cpu_us_per_message: Option<f64>,
}

/// Posts `body` as JSON (with `token` as bearer, if any) and returns the JSON answer; fails on
/// any status but 2xx, with the answer in the error.
pub(crate) async fn post(
    http: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: &Value,
) -> anyhow::Result<Value> {
    let mut r = http.post(url).json(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{status}: {v}");
    }
    Ok(v)
}

/// Signs every user in; returns (user id, token) per user.
pub async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    names: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for n in names {
        let body = json!({"username": n, "password": crate::server::PASSWORD});
        let v = post(http, format!("{base}/api/v1/auth/login"), None, &body).await?;
        let token = v["token"].as_str().context("no token")?.to_owned();
        let me: Value =
            http.get(format!("{base}/api/v1/me")).bearer_auth(&token).send().await?.json().await?;
        out.push((me["id"].as_str().context("no id in /me")?.to_owned(), token));
    }
    Ok(out)
}

/// Resumes a fresh socket with no backfill (live events only) and waits for `ready`.
pub async fn resume_live<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> anyhow::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(json!({"op": "resume", "positions": {}, "backfill": false}).to_string())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"ready\"") => return Ok(()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("the socket failed before ready: {e}"),
            None => bail!("the socket closed before ready"),
        }
    }
}

/// A frame as far as the tool reads it: borrowed from the text, nothing else parsed or copied
/// (the tool shares the machine with the server, so its own cost per delivery matters).
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(borrow)]
    op: Cow<'a, str>,
    #[serde(borrow)]
    event: Option<FrameEvent<'a>>,
}

#[derive(serde::Deserialize)]
struct FrameEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<FrameMessage<'a>>,
}

#[derive(serde::Deserialize)]
struct FrameMessage<'a> {
    #[serde(borrow)]
    body: Option<Cow<'a, str>>,
}

/// The body of a message event frame, if `text` is one.
fn message_body(text: &str) -> Option<String> {
    let f: Frame = serde_json::from_str(text).ok()?;
    let ev = f.event.filter(|_| f.op == "event")?;
    if ev.kind != "message" {
        return None;
    }
    Some(ev.message?.body?.into_owned())
}

/// Opens a socket for `token`, resumes with no backfill, and records the body and arrival time
/// of every message event until `stop` changes; returns what it recorded.
async fn open_socket(
    base: &str,
    token: &str,
    seen: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Arrivals> {
    let mut req = format!("{}/api/v1/ws", base.replace("http://", "ws://")).into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    // tungstenite zeroes the free part of its read buffer before every read, 128 KiB by
    // default: with hundreds of sockets that memset was the tool's largest cost. Frames here
    // are a few hundred bytes, so 4 KiB reads take several at once.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
    resume_live(&mut ws).await?;
    Ok(tokio::spawn(async move {
        let mut arrived = Vec::new();
        loop {
            let msg = tokio::select! {
                msg = ws.next() => msg,
                _ = stop.changed() => break,
            };
            let Some(Ok(msg)) = msg else { break };
            if let Message::Text(t) = msg
                && let Some(body) = message_body(&t)
            {
                arrived.push((body, Instant::now()));
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
        arrived
    }))
}

/// Where one sender's messages go: Haven's messages URL of its conversation (parsed once:
/// reqwest would parse a string again for every request), a Matrix room's send URL less its
/// transaction id (which is each message's own), or an XMPP room and the sender's stream.
enum Target {
    Haven(reqwest::Url),
    Matrix(String),
    Xmpp(crate::xmpp::Conn, String),
}

impl Target {
    fn new(api: Api, base: &str, conv: &str, conn: Option<&crate::xmpp::Conn>) -> anyhow::Result<Self> {
        Ok(match api {
            Api::Haven => {
                Self::Haven(reqwest::Url::parse(&format!("{base}/api/v1/conversations/{conv}/messages"))?)
            }
            Api::Matrix => Self::Matrix(crate::matrix::send_url(base, conv)),
            Api::Xmpp => Self::Xmpp(conn.context("the sender has no stream")?.clone(), conv.to_owned()),
        })
    }

    /// Sends message `key` (its idempotency key or transaction id, and its body).
    async fn send(&self, http: &reqwest::Client, token: &str, key: &str) -> anyhow::Result<()> {
        let request = match self {
            Self::Xmpp(conn, room) => return conn.send(room, key).await,
            Self::Haven(url) => {
                http.post(url.clone()).body(format!(r#"{{"idempotency_key":"{key}","body":"{key}"}}"#))
            }
            Self::Matrix(url) => {
                http.put(format!("{url}{key}")).body(format!(r#"{{"msgtype":"m.text","body":"{key}"}}"#))
            }
        };
        let resp = request.bearer_auth(token).header("content-type", "application/json").send().await?;
        answered(resp).await
    }
}

/// Reads an answer whose status is all that matters: fails on any status but 2xx, with the
/// answer in the error.
async fn answered(resp: reqwest::Response) -> anyhow::Result<()> {
    let status = resp.status();
    let answer = resp.bytes().await?;
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&answer));
    }
    Ok(())
}

/// The idempotency key (and body) of sender `s`'s message `i` in conversation `c`: the
/// millisecond it is made, in hex, then who sends it. Keys that grow with time are what the web
/// client makes too (`newKey` in `api.js`), and what the API documents as the cheapest to store:
/// each lands at the end of its part of the key index instead of on a page of its own.
fn message_key(c: usize, s: usize, i: usize) -> String {
    let ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    format!("{ms:012x}-c{c}s{s}m{i}")
}

/// What one sender did: (key, send start, send latency in µs when accepted).
type Sends = Vec<(String, Instant, Option<u64>)>;

/// Runs the scenario against `base`, speaking `api`, with signed-in `users` (id, token).
/// `load_begins` is called once every conversation exists and every member listens, just
/// before the first send (to read the server's counters of the load alone).
pub async fn run(
    api: Api,
    base: &str,
    users: &[(String, String)],
    p: &ChatParams,
    progress: &indicatif::ProgressBar,
    load_begins: impl FnOnce(),
) -> anyhow::Result<ChatResult> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    // Membership: conversation r has users (r*K + j) mod U.
    let members: Vec<Vec<usize>> = (0..p.conversations)
        .map(|r| (0..p.members).map(|j| (r * p.members + j) % users.len()).collect())
        .collect();
    let mut convs = Vec::new();
    for m in &members {
        convs.push(api.create(&http, base, users, m).await?);
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut sockets = Vec::new();
    let mut streams = Vec::new();
    for (u, user) in users.iter().enumerate() {
        let mine: Vec<&str> =
            members.iter().zip(&convs).filter(|(m, _)| m.contains(&u)).map(|(_, c)| c.as_str()).collect();
        let listen_base = p.listen_base.as_deref().unwrap_or(base);
        let (arrivals, stream) =
            api.listen(&http, listen_base, user, &mine, seen.clone(), stopped.clone()).await?;
        sockets.push(arrivals);
        streams.push(stream);
    }
    // Senders: the first S members of each conversation; messages split evenly.
    let total_senders = p.conversations * p.senders;
    let per_sender = p.messages.div_ceil(total_senders);
    let interval = p.rate.map(|r| Duration::from_secs_f64(total_senders as f64 / r));
    load_begins();
    let began = Instant::now();
    let mut tasks = Vec::new();
    let mut remaining = p.messages;
    let start = tokio::time::Instant::now();
    for (c, conv) in convs.iter().enumerate() {
        for s in 0..p.senders {
            // Open loop: the senders' ticks are spread evenly over one interval, so the load
            // arrives at the rate asked, not in bursts of every sender at once.
            let nth = (c * p.senders + s) as u32;
            let mut tick = interval
                .map(|every| tokio::time::interval_at(start + every * nth / total_senders as u32, every));
            let n = per_sender.min(remaining);
            remaining -= n;
            let http = http.clone();
            let target = Target::new(api, base, conv, streams[members[c][s]].as_ref())?;
            let token = users[members[c][s]].1.clone();
            let progress = progress.clone();
            tasks.push(tokio::spawn(async move {
                let mut sends: Sends = Vec::with_capacity(n);
                for i in 0..n {
                    // Open loop: latencies count from when the send was due, so a server that
                    // falls behind shows its queue in them (the ticks missed while a send was
                    // out come at once, as tokio's intervals do by default).
                    let due = match tick.as_mut() {
                        Some(t) => Some(t.tick().await.into_std()),
                        None => None,
                    };
                    let key = message_key(c, s, i);
                    let t0 = due.unwrap_or_else(Instant::now);
                    let ok = target.send(&http, &token, &key).await.is_ok();
                    let us = t0.elapsed().as_micros() as u64;
                    sends.push((key, t0, ok.then_some(us)));
                    progress.inc(1);
                }
                (c, s, sends)
            }));
        }
    }
    let mut sends = Vec::with_capacity(tasks.len());
    for t in tasks {
        sends.push(t.await?);
    }
    let seconds = began.elapsed().as_secs_f64();
    let mut r = ChatResult { seconds, conversations: convs, ..Default::default() };
    for (_, _, us) in sends.iter().flat_map(|(_, _, s)| s) {
        match us {
            Some(us) => {
                r.accepted += 1;
                r.send_us.push(*us);
            }
            None => r.failed += 1,
        }
    }
    // Let the last deliveries arrive: every member's socket receives each message, the
    // sender's own included.
    let expected = r.accepted * p.members;
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    let mut arrivals: HashMap<(String, usize), Instant> = HashMap::with_capacity(expected);
    for (u, s) in sockets.into_iter().enumerate() {
        for (body, at) in s.await? {
            arrivals.entry((body, u)).or_insert(at);
        }
    }
    for (c, s, sent) in sends {
        let m = &members[c];
        for (key, t0, _) in sent.into_iter().filter(|(_, _, us)| us.is_some()) {
            for &u in m.iter().filter(|&&u| u != m[s]) {
                match arrivals.get(&(key.clone(), u)) {
                    Some(t) => r.delivery_us.push(t.duration_since(t0).as_micros() as u64),
                    None => {
                        if std::env::var_os("HAVEN_BENCH_DEBUG").is_some() {
                            eprintln!("missing {key} for user {u}");
                        }
                        r.missing += 1
                    }
                }
            }
        }
    }
    Ok(r)
}

/// Fails the run if any delivery was missing or any send failed (after its report is printed).
pub fn check_complete(r: &ChatResult) -> anyhow::Result<()> {
    if r.missing > 0 || r.failed > 0 {
        bail!("{} deliveries missing, {} sends failed", r.missing, r.failed);
    }
    Ok(())
}

/// The p-th percentile (0..=100) of `v`, which gets sorted.
pub fn percentile(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}
