//! The real-time WebSocket (`GET /api/v1/ws`). The protocol is documented in
//! `docs/realtime.md`. In short: the client sends `resume` with its last seen sequence number
//! per conversation; the server sends everything after those positions, then `ready`, then
//! live events, each conversation in sequence order without gaps or duplicates.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures_util::SinkExt;
use haven_app::messaging::{EventRange, event_frame};
use haven_app::realtime::Outbound;
use haven_app::{App, Principal};
use haven_domain::ConversationId;
use serde::Deserialize;

use crate::HttpState;
use crate::error::ApiError;
use crate::extract::{Auth, WsOrigin};

/// Close codes (4000–4999 are the application's).
const SESSION_ENDED: u16 = 4001;
const TOO_SLOW: u16 = 4008;
const PROTOCOL: u16 = 4400;
const SERVER_ERROR: u16 = 4500;

/// Events fetched per page while catching up.
const PAGE: u32 = 200;

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Resume {
        #[serde(default)]
        positions: HashMap<ConversationId, i64>,
        #[serde(default = "yes")]
        backfill: bool,
    },
    Receipt {
        conversation_id: ConversationId,
        #[serde(default)]
        delivered_seq: i64,
        #[serde(default)]
        read_seq: i64,
    },
    Ping,
}

fn yes() -> bool {
    true
}

/// GET /api/v1/ws — upgrade to the real-time socket.
#[utoipa::path(get, path = "/api/v1/ws", tag = "messaging",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 101, description = "switching to the WebSocket protocol (see docs/realtime.md)"),
        crate::openapi::AuthErrors))]
pub(crate) async fn upgrade(
    State(state): State<HttpState>,
    _origin: WsOrigin,
    Auth(p): Auth,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "websocket_required",
            "this endpoint speaks the WebSocket protocol only (see docs/realtime.md)",
        )
    })?;
    // Small buffers (the defaults reserve 128 KiB each): frames are small, and an idle socket
    // should cost kilobytes. Frames that are ready together are written out together (one
    // write for a burst, flushed as soon as nothing more is waiting).
    Ok(ws
        .max_message_size(64 * 1024)
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .on_upgrade(move |socket| run(state, p, socket)))
}

async fn close(mut ws: WebSocket, code: u16, reason: &'static str) {
    let _ = ws.send(Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))).await;
}

fn text(s: &str) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// How long an event that arrived ahead of its predecessor waits for it on the bus before the
/// gap is filled from the database. Concurrent sends to one conversation commit in sequence
/// order but may be published a moment out of order; waiting briefly turns what would be a
/// database read per socket into a reordering in memory.
const REORDER_WAIT: Duration = Duration::from_millis(100);

/// Per-socket delivery state: the last sequence number sent, per conversation, and events that
/// arrived ahead of a gap.
struct Cursor {
    last: HashMap<ConversationId, i64>,
    ahead: HashMap<ConversationId, BTreeMap<i64, Arc<str>>>,
    /// When the oldest gap stops waiting for the bus.
    deadline: Option<Instant>,
}

impl Cursor {
    fn new() -> Self {
        Self { last: HashMap::new(), ahead: HashMap::new(), deadline: None }
    }

    /// Sends every event of `conv` after the cursor up to `upto` (inclusive), from the database
    /// (`resume`: the audited history read; otherwise the delivery read).
    async fn fill(
        &mut self,
        app: &App,
        p: &Principal,
        ws: &mut WebSocket,
        conv: ConversationId,
        upto: i64,
        resume: bool,
    ) -> Result<(), ()> {
        loop {
            let after = *self.last.get(&conv).unwrap_or(&0);
            if after >= upto {
                return self.flush(ws, conv).await;
            }
            let range = EventRange::After(after);
            let page = if resume {
                app.events(p, conv, range, PAGE).await
            } else {
                app.events_to_deliver(p, conv, range, PAGE).await
            }
            .map_err(|_| ())?;
            let Some(last) = page.last().map(|e| e.seq) else {
                self.last.insert(conv, upto);
                return self.flush(ws, conv).await;
            };
            for ev in page.iter().filter(|e| e.seq <= upto) {
                ws.feed(text(&event_frame(ev))).await.map_err(|_| ())?;
            }
            self.last.insert(conv, last.min(upto));
            if (page.len() as u32) < PAGE {
                return self.flush(ws, conv).await;
            }
        }
    }

    /// Takes a live event: sends it if it is the next one, holds it if it is ahead of a gap.
    async fn live(
        &mut self,
        ws: &mut WebSocket,
        conv: ConversationId,
        seq: i64,
        json: Arc<str>,
    ) -> Result<(), ()> {
        let last = *self.last.get(&conv).unwrap_or(&0);
        if seq <= last {
            return Ok(());
        }
        if seq > last + 1 {
            self.ahead.entry(conv).or_default().insert(seq, json);
            self.deadline.get_or_insert_with(|| Instant::now() + REORDER_WAIT);
            return Ok(());
        }
        ws.feed(text(&json)).await.map_err(|_| ())?;
        self.last.insert(conv, seq);
        self.flush(ws, conv).await
    }

    /// Sends the held events of `conv` that now follow the cursor without a gap.
    async fn flush(&mut self, ws: &mut WebSocket, conv: ConversationId) -> Result<(), ()> {
        let Some(held) = self.ahead.get_mut(&conv) else { return Ok(()) };
        let mut last = *self.last.get(&conv).unwrap_or(&0);
        while let Some(entry) = held.first_entry() {
            if *entry.key() <= last {
                entry.remove();
            } else if *entry.key() == last + 1 {
                ws.feed(text(&entry.remove())).await.map_err(|_| ())?;
                last += 1;
            } else {
                break;
            }
        }
        self.last.insert(conv, last);
        if held.is_empty() {
            self.ahead.remove(&conv);
            if self.ahead.is_empty() {
                self.deadline = None;
            }
        }
        Ok(())
    }

    /// The bus did not close the gaps in time: fill them from the database.
    async fn fill_gaps(&mut self, app: &App, p: &Principal, ws: &mut WebSocket) -> Result<(), ()> {
        self.deadline = None;
        let gaps: Vec<(ConversationId, i64)> = self
            .ahead
            .iter()
            .filter_map(|(c, held)| held.keys().next().map(|first| (*c, first - 1)))
            .collect();
        for (conv, upto) in gaps {
            self.fill(app, p, ws, conv, upto, false).await?;
        }
        if !self.ahead.is_empty() {
            self.deadline = Some(Instant::now() + REORDER_WAIT);
        }
        Ok(())
    }
}

/// Resolves at the deadline; never, without one.
async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn run(state: HttpState, p: Principal, mut ws: WebSocket) {
    let app = &state.app;
    let hub = app.hub().clone();
    // Register before reading positions, so nothing committed from now on can be missed.
    let mut reg = hub.register(p.user.id, p.session_id);
    let result = session(app, &p, &mut ws, &mut reg.rx).await;
    hub.unregister(p.user.id, reg.id);
    match result {
        End::ClientGone => {}
        End::Close(code, reason) => close(ws, code, reason).await,
    }
}

enum End {
    ClientGone,
    Close(u16, &'static str),
}

/// Frames written before a flush at most.
const BURST: usize = 32;

/// Writes one item of the socket's queue (buffered: the caller flushes).
async fn deliver(
    app: &App,
    p: &Principal,
    ws: &mut WebSocket,
    cursor: &mut Cursor,
    out: Option<Outbound>,
) -> Result<(), End> {
    let done = match out {
        None => return Err(End::Close(TOO_SLOW, "too far behind; reconnect and resume")),
        Some(Outbound::Close { reason }) => return Err(End::Close(SESSION_ENDED, reason)),
        Some(Outbound::Notice { json }) => ws.feed(text(&json)).await.map_err(|_| ()),
        Some(Outbound::Hint { conversation, seq }) => cursor.fill(app, p, ws, conversation, seq, false).await,
        Some(Outbound::Event { conversation, seq, json }) => cursor.live(ws, conversation, seq, json).await,
    };
    done.map_err(|_| End::ClientGone)
}

async fn session(
    app: &App,
    p: &Principal,
    ws: &mut WebSocket,
    rx: &mut tokio::sync::mpsc::Receiver<Outbound>,
) -> End {
    let first = match tokio::time::timeout(Duration::from_secs(10), ws.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<ClientFrame>(&t),
        Ok(None | Some(Err(_))) => return End::ClientGone,
        _ => return End::Close(PROTOCOL, "expected a resume frame first"),
    };
    let Ok(ClientFrame::Resume { positions, backfill }) = first else {
        return End::Close(PROTOCOL, "expected a resume frame first");
    };
    let mut cursor = Cursor::new();
    let Ok(memberships) = app.positions(p).await else { return End::Close(SERVER_ERROR, "try again") };
    for (conv, joined, until) in memberships {
        let from = match positions.get(&conv) {
            Some(seen) => *seen,
            None if backfill => joined - 1,
            None => until,
        };
        cursor.last.insert(conv, from);
        if cursor.fill(app, p, ws, conv, until, true).await.is_err() {
            return End::ClientGone;
        }
    }
    if ws.send(text(r#"{"op":"ready"}"#)).await.is_err() {
        return End::ClientGone;
    }
    let mut keepalive = tokio::time::interval(Duration::from_secs(30));
    keepalive.tick().await;
    loop {
        tokio::select! {
            out = rx.recv() => {
                let mut next = out;
                // Take what else is already waiting (a bounded burst), then write it out once.
                for _ in 0..BURST {
                    if let Err(end) = deliver(app, p, ws, &mut cursor, next).await {
                        return end;
                    }
                    match rx.try_recv() {
                        Ok(more) => next = Some(more),
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => next = None,
                    }
                }
                if ws.flush().await.is_err() {
                    return End::ClientGone;
                }
            }
            _ = sleep_until_deadline(cursor.deadline) => {
                if cursor.fill_gaps(app, p, ws).await.is_err() || ws.flush().await.is_err() {
                    return End::ClientGone;
                }
            }
            incoming = ws.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return End::ClientGone,
                Some(Ok(Message::Text(t))) => {
                    let reply = match serde_json::from_str::<ClientFrame>(&t) {
                        Ok(ClientFrame::Ping) => r#"{"op":"pong"}"#.to_owned(),
                        Ok(ClientFrame::Receipt { conversation_id, delivered_seq, read_seq }) => {
                            match app.mark(p, conversation_id, delivered_seq, read_seq).await {
                                Ok(_) => continue,
                                Err(_) => r#"{"op":"error","code":"receipt_refused","message":"no such conversation"}"#.to_owned(),
                            }
                        }
                        Ok(ClientFrame::Resume { .. }) | Err(_) => {
                            r#"{"op":"error","code":"bad_frame","message":"expected a receipt or ping frame"}"#.to_owned()
                        }
                    };
                    if ws.send(text(&reply)).await.is_err() { return End::ClientGone; }
                }
                Some(Ok(_)) => {}
            },
            _ = keepalive.tick() => {
                if ws.send(Message::Ping(Default::default())).await.is_err() { return End::ClientGone; }
            }
        }
    }
}
