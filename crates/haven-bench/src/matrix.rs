//! Scenario `matrix`: the `chat` load, unchanged, against a Matrix homeserver (Synapse, say)
//! over the Matrix client-server API, so that Haven and an established server are measured by
//! one tool, with one load, on one machine. The tool signs its users up through open
//! registration, makes each conversation a private room (the creator invites, every invitee
//! joins), follows each user's `/sync` long poll for the whole run (a Matrix client's way of
//! hearing of new events, where a Haven client keeps a WebSocket), and sends with
//! `PUT /rooms/{room}/send/m.room.message/{txn}`, which the server answers once the event is
//! stored. Delivery is the arrival of the `/sync` answer that carries the event.
//!
//! The server is not started by the tool: `scripts/bench-synapse` starts Synapse on PostgreSQL
//! for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::chat::Api;
use crate::{ChatArgs, Ctx};

/// The `matrix` scenario's arguments.
#[derive(Debug, clap::Args)]
pub struct MatrixArgs {
    /// The homeserver's client API base URL.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    homeserver: String,
    /// The homeserver's process id, to report its peak memory and CPU time.
    #[arg(long)]
    pid: Option<u32>,
    #[command(flatten)]
    load: ChatArgs,
}

/// A password the tool's users sign up with (the homeserver is the tool's own, on loopback).
const PASSWORD: &str = "haven-bench-Matrix-1";

/// How many events of one room a `/sync` answer may carry before it leaves some out (which the
/// tool would count as missing deliveries). Synapse caps it at its `filter_timeline_limit`,
/// which `scripts/bench-synapse` raises to this.
const TIMELINE_LIMIT: u32 = 1000;

/// `/sync` answers that left events out (a gap a real client would page back through).
static LIMITED: AtomicUsize = AtomicUsize::new(0);

/// A room or event id for a URL path (`!room:server` holds characters a path segment must not).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Signs `n` new users up; returns (Matrix user id, access token) per user.
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    n: usize,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(n);
    for name in crate::established::new_user_names(n) {
        let body = json!({"username": name, "password": PASSWORD,
                          "auth": {"type": "m.login.dummy"}, "inhibit_login": false});
        let v = crate::chat::post(http, format!("{base}/_matrix/client/v3/register"), None, &body)
            .await
            .context("signing up (the homeserver must allow open registration)")?;
        let id = v["user_id"].as_str().context("no user_id")?.to_owned();
        let token = v["access_token"].as_str().context("no access_token")?.to_owned();
        out.push((id, token));
        progress.inc(1);
    }
    Ok(out)
}

/// Makes a private room of `creator` and `invitees` (ids and tokens), each invitee joining as
/// its client would; returns the room id.
pub async fn create_room(
    http: &reqwest::Client,
    base: &str,
    creator: &str,
    invitees: &[(&str, &str)],
) -> anyhow::Result<String> {
    let ids: Vec<&str> = invitees.iter().map(|(id, _)| *id).collect();
    let body = json!({"preset": "private_chat", "invite": ids});
    let v =
        crate::chat::post(http, format!("{base}/_matrix/client/v3/createRoom"), Some(creator), &body).await?;
    let room = v["room_id"].as_str().context("no room_id")?.to_owned();
    for (_, token) in invitees {
        let url = format!("{base}/_matrix/client/v3/rooms/{}/join", path_segment(&room));
        crate::chat::post(http, url, Some(token), &json!({})).await?;
    }
    Ok(room)
}

/// The part of a `/sync` answer the tool reads.
#[derive(serde::Deserialize)]
struct SyncAnswer {
    next_batch: String,
    #[serde(default)]
    rooms: Option<SyncRooms>,
}

#[derive(serde::Deserialize)]
struct SyncRooms {
    #[serde(default)]
    join: HashMap<String, JoinedRoom>,
}

#[derive(serde::Deserialize)]
struct JoinedRoom {
    #[serde(default)]
    timeline: Option<Timeline>,
}

#[derive(serde::Deserialize)]
struct Timeline {
    #[serde(default)]
    events: Vec<TimelineEvent>,
    #[serde(default)]
    limited: bool,
}

#[derive(serde::Deserialize)]
struct TimelineEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: Option<EventContent>,
}

#[derive(serde::Deserialize)]
struct EventContent {
    #[serde(default)]
    body: Option<String>,
}

/// One `/sync`: from `since` (or the start), waiting up to `timeout_ms` for something new.
async fn sync(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    since: Option<&str>,
    timeout_ms: u64,
) -> anyhow::Result<SyncAnswer> {
    // Only room timelines: no presence, account data or receipts to read past.
    let filter = json!({
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {"timeline": {"limit": TIMELINE_LIMIT}, "ephemeral": {"not_types": ["*"]},
                 "account_data": {"not_types": ["*"]}, "state": {"lazy_load_members": true}},
    })
    .to_string();
    let mut query = vec![("filter", filter), ("timeout", timeout_ms.to_string())];
    if let Some(s) = since {
        query.push(("since", s.to_owned()));
    }
    let resp =
        http.get(format!("{base}/_matrix/client/v3/sync")).query(&query).bearer_auth(token).send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        bail!("sync: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// Follows `token`'s `/sync` until `stop` changes, recording the body and arrival time of every
/// message event; returns what it recorded. The first sync (which only finds where "now" is)
/// happens before this returns, so nothing sent afterwards is missed.
pub async fn open_sync(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    seen: Arc<AtomicUsize>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<crate::chat::Arrivals> {
    let mut since = sync(http, base, token, None, 0).await?.next_batch;
    let (http, base, token) = (http.clone(), base.to_owned(), token.to_owned());
    Ok(tokio::spawn(async move {
        let mut arrived = Vec::new();
        loop {
            let answer = tokio::select! {
                a = sync(&http, &base, &token, Some(&since), 30_000) => a,
                _ = stop.changed() => break,
            };
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("a /sync failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let at = Instant::now();
            for room in answer.rooms.into_iter().flat_map(|r| r.join.into_values()) {
                let Some(timeline) = room.timeline else { continue };
                if timeline.limited {
                    LIMITED.fetch_add(1, Ordering::Relaxed);
                }
                for ev in timeline.events.into_iter().filter(|e| e.kind == "m.room.message") {
                    if let Some(body) = ev.content.and_then(|c| c.body) {
                        arrived.push((body, at));
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            since = answer.next_batch;
        }
        arrived
    }))
}

/// The URL a message to `room` is sent to, less its transaction id.
pub fn send_url(base: &str, room: &str) -> String {
    format!("{base}/_matrix/client/v3/rooms/{}/send/m.room.message/", path_segment(room))
}

/// Runs the chat load against the homeserver and reports it as the `chat` scenario does.
pub fn run(ctx: &Ctx, a: &MatrixArgs) -> anyhow::Result<()> {
    a.load.check()?;
    let base = a.homeserver.trim_end_matches('/');
    let http = reqwest::Client::new();
    let bar = crate::bar(a.load.users as u64, "users");
    let users = ctx.rt.block_on(register(&http, base, a.load.users, &bar));
    bar.finish_and_clear();
    let users = users?;
    let server = ctx.rt.block_on(version(&http, base)).unwrap_or_else(|_| "unknown".into());
    crate::established::run(
        ctx,
        Api::Matrix,
        base,
        &users,
        a.pid,
        &a.load,
        &format!("matrix ({server})"),
        |_, results| {
            let limited = LIMITED.load(Ordering::Relaxed);
            if limited > 0 {
                println!("  {limited} /sync answers left events out (their deliveries count as missing)");
            }
            results["limited_syncs"] = json!(limited);
            Ok(())
        },
    )
}

/// The homeserver's name and version: Synapse tells its version on an endpoint of its own;
/// any other homeserver is named by the newest client API version it speaks.
async fn version(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    if let Ok(resp) = http.get(format!("{base}/_synapse/admin/v1/server_version")).send().await
        && resp.status().is_success()
    {
        let v: Value = resp.json().await?;
        // Synapse adds the git branch and commit of the directory it is installed under, which
        // for a venv inside a checkout are the checkout's, not Synapse's.
        let version = v["server_version"].as_str().and_then(|v| v.split_whitespace().next());
        return Ok(format!("Synapse {}", version.unwrap_or("?")));
    }
    let v: Value = http.get(format!("{base}/_matrix/client/versions")).send().await?.json().await?;
    let latest = v["versions"].as_array().and_then(|a| a.last()).and_then(Value::as_str).unwrap_or("?");
    Ok(format!("a homeserver speaking Matrix client API {latest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_are_escaped_for_a_path() {
        assert_eq!(path_segment("!abC9:bench.local"), "%21abC9%3Abench.local");
    }

    #[test]
    fn a_sync_answer_yields_the_message_bodies_of_joined_rooms() {
        let text = r#"{"next_batch":"s2","rooms":{"join":{"!r:x":{"timeline":{"limited":false,
            "events":[{"type":"m.room.member","content":{"membership":"join"}},
                      {"type":"m.room.message","content":{"msgtype":"m.text","body":"k1"}}]}}}}}"#;
        let a: SyncAnswer = serde_json::from_str(text).unwrap();
        assert_eq!(a.next_batch, "s2");
        let bodies: Vec<String> = a
            .rooms
            .unwrap()
            .join
            .into_values()
            .flat_map(|r| r.timeline.unwrap().events)
            .filter(|e| e.kind == "m.room.message")
            .filter_map(|e| e.content?.body)
            .collect();
        assert_eq!(bodies, ["k1"]);
    }
}
