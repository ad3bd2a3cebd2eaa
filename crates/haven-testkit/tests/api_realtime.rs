//! The real-time socket on both backends: live delivery in order, receipts, resume after a
//! disconnect with exactly the missed events, Origin checks, and sockets closing when their
//! session ends. Plus attachments and the at-rest canary.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use haven_app::Actor;
use haven_domain::OrgId;
use haven_domain::org::OrgPolicy;
use haven_domain::roles::Role;
use haven_testkit::{Backend, TestServer, TestUser, both_backends};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn org(s: &TestServer) -> OrgId {
    let org = s.org("Riverside").await;
    let policy = OrgPolicy { mfa_required: false, ..OrgPolicy::default() };
    s.app.set_policy(&Actor::Operator, org, policy).await.unwrap();
    org
}

async fn signed_in(s: &TestServer, org: OrgId, name: &str) -> (TestUser, String) {
    let u = s.user(org, name, &[Role::Clinician]).await;
    let t = s.login(&u).await;
    (u, t)
}

async fn connect_with(s: &TestServer, token: &str, origin: Option<&str>) -> Result<Socket, u16> {
    let mut req = s.url("/api/v1/ws").replace("http://", "ws://").into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("connect: {e}"),
    }
}

/// Connects and resumes from `positions`; returns the socket and the events before `ready`.
async fn resume(s: &TestServer, token: &str, positions: Value) -> (Socket, Vec<Value>) {
    let mut ws = connect_with(s, token, None).await.expect("upgrade");
    ws.send(Message::text(json!({"op": "resume", "positions": positions}).to_string())).await.unwrap();
    let mut backlog = Vec::new();
    loop {
        let f = next(&mut ws).await;
        match f["op"].as_str() {
            Some("ready") => return (ws, backlog),
            Some("event") => backlog.push(f["event"].clone()),
            _ => {}
        }
    }
}

/// The next JSON frame (skipping pings), or a `{"closed": code}` value.
async fn next(ws: &mut Socket) -> Value {
    loop {
        let msg =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("a frame within 10 s");
        match msg {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Close(c))) => return json!({"closed": c.map(|c| u16::from(c.code))}),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return json!({"closed": null}),
        }
    }
}

async fn next_event(ws: &mut Socket) -> Value {
    loop {
        let f = next(ws).await;
        if f["op"] == "event" {
            return f["event"].clone();
        }
        assert!(f.get("closed").is_none(), "socket closed: {f}");
    }
}

async fn send(s: &TestServer, tok: &str, conv: &str, key: &str, body: &str) -> Value {
    let (st, e) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(tok),
            json!({"idempotency_key": key, "body": body}),
        )
        .await;
    assert_eq!(st, 201, "{e}");
    e
}

both_backends!(live_delivery_receipts_and_exact_resume, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let o = org(&s).await;
    let (_, alice) = signed_in(&s, o, "alice").await;
    let (bob_u, bob) = signed_in(&s, o, "bob").await;
    let (mut a_ws, _) = resume(&s, &alice, json!({})).await;
    let (mut b_ws, _) = resume(&s, &bob, json!({})).await;
    let (_, c) =
        s.post("/api/v1/conversations", Some(&alice), json!({"kind": "direct", "members": [bob_u.id]})).await;
    let conv = c["id"].as_str().unwrap().to_owned();
    assert_eq!(next_event(&mut b_ws).await["type"], "created", "a new conversation arrives live");
    assert_eq!(next_event(&mut a_ws).await["type"], "created");
    for i in 1..=3 {
        send(&s, &alice, &conv, &format!("m{i}"), &format!("live {i}")).await;
    }
    for i in 1..=3 {
        let e = next_event(&mut b_ws).await;
        assert_eq!(
            (e["seq"].as_i64(), e["message"]["body"].as_str()),
            (Some(i + 1), Some(format!("live {i}").as_str()))
        );
    }
    // A read receipt sent on the socket reaches the sender.
    b_ws.send(Message::text(json!({"op": "receipt", "conversation_id": conv, "read_seq": 4}).to_string()))
        .await
        .unwrap();
    let receipt = loop {
        let f = next(&mut a_ws).await;
        if f["op"] == "receipt" {
            break f["receipt"].clone();
        }
    };
    assert_eq!(
        (receipt["user_id"].as_str(), receipt["read_seq"].as_i64()),
        (Some(bob_u.id.to_string().as_str()), Some(4))
    );

    // Bob drops off; two messages are sent meanwhile; he resumes from seq 4.
    drop(b_ws);
    send(&s, &alice, &conv, "m4", "missed 4").await;
    send(&s, &alice, &conv, "m5", "missed 5").await;
    let (mut b_ws, backlog) = resume(&s, &bob, json!({ conv.clone(): 4 })).await;
    let got: Vec<(i64, String)> = backlog
        .iter()
        .map(|e| (e["seq"].as_i64().unwrap(), e["message"]["body"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(got, [(5, "missed 4".to_owned()), (6, "missed 5".to_owned())], "exactly the missed ones");
    send(&s, &alice, &conv, "m6", "live again").await;
    assert_eq!(next_event(&mut b_ws).await["seq"], 7, "then live, no duplicate");
    // A client without positions is given everything it may see.
    let (_, all) = resume(&s, &bob, json!({})).await;
    assert_eq!(
        all.iter().map(|e| e["seq"].as_i64().unwrap()).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );

    // Logging out closes the session's sockets.
    let (st, _) = s.post("/api/v1/auth/logout", Some(&bob), json!({})).await;
    assert_eq!(st, 204);
    let closed = loop {
        let f = next(&mut b_ws).await;
        if f.get("closed").is_some() {
            break f;
        }
    };
    assert_eq!(closed["closed"], 4001);
    assert_eq!(connect_with(&s, &bob, None).await.err(), Some(401), "and the token no longer opens one");
    // Deactivating a user closes their sockets at once.
    let alice_id = s.app.authenticate(&alice, &haven_app::RequestMeta::default()).await.unwrap().user.id;
    s.app.deactivate_user(&Actor::Operator, o, alice_id).await.unwrap();
    let closed = loop {
        let f = next(&mut a_ws).await;
        if f.get("closed").is_some() {
            break f;
        }
    };
    assert_eq!(closed["closed"], 4001);
    s.stop().await;
});

both_backends!(websocket_origin_is_checked, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let o = org(&s).await;
    let (_, alice) = signed_in(&s, o, "alice").await;
    assert_eq!(connect_with(&s, &alice, Some("https://evil.example")).await.err(), Some(403));
    let own = s.base.clone();
    assert!(connect_with(&s, &alice, Some(&own)).await.is_ok(), "the server's own origin is allowed");
    assert_eq!(connect_with(&s, "not-a-token", None).await.err(), Some(401));
    s.stop().await;
});

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

both_backends!(attachments_are_typed_by_content_and_served_to_members_only, |b: Backend| async move {
    let s = TestServer::start_with(b, |c| c.max_attachment_bytes = 4096).await;
    let o = org(&s).await;
    let (_, alice) = signed_in(&s, o, "alice").await;
    let (bob_u, bob) = signed_in(&s, o, "bob").await;
    let (_, carol) = signed_in(&s, o, "carol").await;
    let (_, c) =
        s.post("/api/v1/conversations", Some(&alice), json!({"kind": "direct", "members": [bob_u.id]})).await;
    let conv = c["id"].as_str().unwrap();
    let (st, e) = s.upload(&alice, conv, "setup.exe", b"MZ\x90\0\x03\0\0\0").await;
    assert_eq!((st, e["code"].as_str()), (415, Some("unsupported_media_type")));
    let (st, e) = s.upload(&alice, conv, "page.html", b"<html><script>alert(1)</script>").await;
    assert_eq!(st, 415, "{e}");
    let (st, e) =
        s.upload(&alice, conv, "big.pdf", &[b"%PDF-1.7\n".as_slice(), &[b'x'; 5000]].concat()).await;
    assert_eq!((st, e["code"].as_str()), (413, Some("too_large")));
    let (st, e) = s.upload(&carol, conv, "x.png", PNG).await;
    assert_eq!(st, 404, "only members upload: {e}");
    let (st, att) = s.upload(&alice, conv, "wound%20photo.png", PNG).await;
    assert_eq!(
        (st, att["media_type"].as_str(), att["name"].as_str()),
        (201, Some("image/png"), Some("wound photo.png"))
    );
    let aid = att["id"].as_str().unwrap();
    let (st, _) = s.get(&format!("/api/v1/attachments/{aid}"), Some(&bob)).await;
    assert_eq!(st, 404, "not sent yet: only the uploader sees it");
    let (st, m) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(&alice),
            json!({"idempotency_key": "a", "body": "see photo", "attachments": [aid]}),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    assert_eq!(m["message"]["attachments"][0]["id"], aid);
    let resp =
        s.client.get(s.url(&format!("/api/v1/attachments/{aid}"))).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "image/png");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-disposition"].to_str().unwrap().starts_with("attachment;"));
    assert_eq!(resp.bytes().await.unwrap().as_ref(), PNG);
    let (st, _) = s.get(&format!("/api/v1/attachments/{aid}"), Some(&carol)).await;
    assert_eq!(st, 404, "non-members cannot download");
    let (st, _) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(&alice),
            json!({"idempotency_key": "b", "body": "again", "attachments": [aid]}),
        )
        .await;
    assert_eq!(st, 422, "an attachment is sent once");
    let mid = m["message"]["id"].as_str().unwrap();
    let (st, _) = s.delete(&format!("/api/v1/conversations/{conv}/messages/{mid}"), Some(&alice)).await;
    assert_eq!(st, 200);
    let (st, _) = s.get(&format!("/api/v1/attachments/{aid}"), Some(&bob)).await;
    assert_eq!(st, 404, "a recalled message's attachment is gone");
    assert!(
        std::fs::read_dir(s.db.scratch().join("blobs"))
            .unwrap()
            .all(|d| { std::fs::read_dir(d.unwrap().path()).unwrap().next().is_none() }),
        "and its blob deleted"
    );
    s.stop().await;
});

/// Every byte the database and the blob store hold, as one buffer (SQLite: the files and the
/// WAL; PostgreSQL: every row of every table as text, including bytea as hex).
async fn stored_bytes(s: &TestServer, b: Backend) -> Vec<u8> {
    let mut all = Vec::new();
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    let mut stack = vec![s.db.scratch().to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { stack.push(p) } else { files.push(p) }
        }
    }
    for f in files {
        all.extend(std::fs::read(f).unwrap_or_default());
    }
    if b == Backend::Postgres {
        use sqlx::Row;
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(s.db.url()).await.unwrap();
        let tables =
            sqlx::query("SELECT tablename::text AS tablename FROM pg_tables WHERE schemaname = 'public'")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        for t in tables {
            let name: String = t.get("tablename");
            let sql = format!("SELECT row_to_json(x)::text AS j FROM {name} x");
            for r in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&mut conn).await.unwrap() {
                let j: String = r.get("j");
                all.extend(j.into_bytes());
            }
        }
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

both_backends!(canary_is_never_stored_readably, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let o = org(&s).await;
    let (_, alice) = signed_in(&s, o, "alice").await;
    let (bob_u, _) = signed_in(&s, o, "bob").await;
    let canary = "CANARY-7f3a9c-Rosa-Diaz-K-6-1";
    let (_, p) = s
        .post(
            "/api/v1/patients",
            Some(&alice),
            json!({"mrn": "MRN-CANARY-77", "name": canary, "date_of_birth": "1961-04-09"}),
        )
        .await;
    let (_, c) = s
        .post(
            "/api/v1/conversations",
            Some(&alice),
            json!({"kind": "patient", "patient_id": p["id"], "title": canary, "members": [bob_u.id]}),
        )
        .await;
    let conv = c["id"].as_str().unwrap();
    let (st, att) = s.upload(&alice, conv, canary, format!("lab note {canary}\n").as_bytes()).await;
    assert_eq!(st, 201, "{att}");
    let (st, _) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(&alice),
            json!({"idempotency_key": "c", "body": canary, "attachments": [att["id"]]}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = s
        .put(
            &format!("/api/v1/conversations/{conv}/messages/{}", "00000000-0000-4000-8000-000000000000"),
            Some(&alice),
            json!({"body": canary}),
        )
        .await;
    assert_eq!(st, 404);
    let bytes = stored_bytes(&s, b).await;
    // The scan is real: what is meant to be stored in clear is found.
    assert!(contains(&bytes, conv.as_bytes()), "the scan sees the stored conversation id");
    assert!(contains(&bytes, b"alice"));
    for needle in [canary.as_bytes(), b"MRN-CANARY-77".as_slice(), b"CANARY-7f3a9c".as_slice()] {
        assert!(!contains(&bytes, needle), "{} found at rest", String::from_utf8_lossy(needle));
    }
    s.stop().await;
});

/// A second node (its own `App` and hub) on the test server's database, and `token`'s principal
/// there.
async fn second_node(s: &TestServer, token: &str) -> (haven_app::App, haven_app::Principal) {
    let node = s.another_app().await;
    let p = node.authenticate(token, &haven_app::RequestMeta::default()).await.unwrap();
    (node, p)
}

/// An urgent text message to send through the app.
fn text(key: &str, body: &str) -> haven_app::messaging::SendMessage {
    haven_app::messaging::SendMessage {
        idempotency_key: key.into(),
        body: body.into(),
        content_type: haven_domain::messaging::ContentType::Text,
        priority: haven_domain::messaging::Priority::Urgent,
        expires_at: None,
        attachments: vec![],
    }
}

both_backends!(a_hint_from_another_node_delivers_the_event_from_the_database, |b: Backend| async move {
    use haven_app::realtime::{BusMessage, Outbound};
    let s = TestServer::start(b).await;
    let o = org(&s).await;
    let (alice_u, alice) = signed_in(&s, o, "alice").await;
    let (bob_u, bob) = signed_in(&s, o, "bob").await;
    let (_, c) =
        s.post("/api/v1/conversations", Some(&alice), json!({"kind": "direct", "members": [bob_u.id]})).await;
    let conv: haven_domain::ConversationId = c["id"].as_str().unwrap().parse().unwrap();
    let (mut b_ws, backlog) = resume(&s, &bob, json!({ conv.to_string(): 1 })).await;
    assert!(backlog.is_empty());
    // A second node on the same database, with its own hub: its sends do not reach this node's
    // sockets except through the bus.
    let (node2, p) = second_node(&s, &alice).await;
    assert_eq!(p.user.id, alice_u.id);
    let input = text("n2", "sent on node 2");
    let (ev, _) = node2.send_message(&p, conv, input).await.unwrap();
    // What a NATS bus would carry to this node: ids only.
    s.app.hub().apply(BusMessage::Deliver {
        recipients: vec![bob_u.id],
        out: Outbound::Hint { conversation: conv, seq: ev.seq },
    });
    let e = next_event(&mut b_ws).await;
    assert_eq!((e["seq"].as_i64(), e["message"]["body"].as_str()), (Some(2), Some("sent on node 2")));
    s.stop().await;
});

both_backends!(
    events_published_out_of_order_are_reordered_in_memory_then_gaps_filled,
    |b: Backend| async move {
        use haven_app::realtime::{BusMessage, Outbound};
        let s = TestServer::start(b).await;
        let o = org(&s).await;
        let (alice_u, alice) = signed_in(&s, o, "alice").await;
        let (bob_u, bob) = signed_in(&s, o, "bob").await;
        let (_, c) = s
            .post("/api/v1/conversations", Some(&alice), json!({"kind": "direct", "members": [bob_u.id]}))
            .await;
        let conv: haven_domain::ConversationId = c["id"].as_str().unwrap().parse().unwrap();
        let (mut b_ws, backlog) = resume(&s, &bob, json!({ conv.to_string(): 1 })).await;
        assert!(backlog.is_empty());
        // A second node on the same database, with its own hub: its sends do not reach this node's
        // sockets except through the bus.
        let (node2, p) = second_node(&s, &alice).await;
        assert_eq!(p.user.id, alice_u.id);
        // Four messages stored on node 2 (seqs 2..=5); this node's socket hears of them only as
        // the bus brings them. The frames carry a marker the database does not have, so what the
        // socket delivers shows where it came from.
        let mut frames = Vec::new();
        for n in 2..=5 {
            let (mut ev, _) =
                node2.send_message(&p, conv, text(&format!("k{n}"), &format!("db {n}"))).await.unwrap();
            assert_eq!(ev.seq, n);
            ev.message.as_mut().unwrap().body = Some(format!("bus {n}"));
            frames.push(haven_app::messaging::event_frame(&ev));
        }
        let publish = |seq: i64| {
            s.app.hub().apply(BusMessage::Deliver {
                recipients: vec![bob_u.id],
                out: Outbound::Event { conversation: conv, seq, json: frames[(seq - 2) as usize].clone() },
            })
        };
        // 3 before 2: held, then both sent in order from memory.
        publish(3);
        publish(2);
        for n in [2, 3] {
            let e = next_event(&mut b_ws).await;
            assert_eq!(
                (e["seq"].as_i64(), e["message"]["body"].as_str()),
                (Some(n), Some(format!("bus {n}").as_str()))
            );
        }
        // 5 without 4: after a short wait, 4 comes from the database, then 5 from memory.
        publish(5);
        let e = next_event(&mut b_ws).await;
        assert_eq!((e["seq"].as_i64(), e["message"]["body"].as_str()), (Some(4), Some("db 4")));
        let e = next_event(&mut b_ws).await;
        assert_eq!((e["seq"].as_i64(), e["message"]["body"].as_str()), (Some(5), Some("bus 5")));
        // The gap fill is delivery, not a history read: it is not audited as one.
        let reads = s.app.store().recent_audit(o, 500).await.unwrap();
        assert!(!reads.iter().any(|e| e.record.subtype == "history-read"), "gap fills are not history reads");
        s.stop().await;
    }
);
