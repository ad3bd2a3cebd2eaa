//! Messaging through the HTTP API on both backends: conversations, membership, messages,
//! idempotency, edits, recalls, expiry, receipts, patients, and the 404 wall around all of it.

use haven_app::Actor;
use haven_domain::org::OrgPolicy;
use haven_domain::roles::Role;
use haven_domain::{Clock, OrgId};
use haven_testkit::{Backend, TestServer, TestUser, both_backends};
use serde_json::{Value, json};

/// An organisation without the MFA requirement (these tests are about messaging).
async fn org(s: &TestServer, name: &str) -> OrgId {
    let org = s.org(name).await;
    let policy = OrgPolicy { mfa_required: false, ..OrgPolicy::default() };
    s.app.set_policy(&Actor::Operator, org, policy).await.unwrap();
    org
}

async fn signed_in(s: &TestServer, org: OrgId, name: &str, role: Role) -> (TestUser, String) {
    let u = s.user(org, name, &[role]).await;
    let t = s.login(&u).await;
    (u, t)
}

async fn send(s: &TestServer, tok: &str, conv: &str, key: &str, body: Value) -> (u16, Value) {
    let mut b = body;
    b["idempotency_key"] = json!(key);
    s.post(&format!("/api/v1/conversations/{conv}/messages"), Some(tok), b).await
}

async fn direct(s: &TestServer, tok: &str, other: &TestUser) -> String {
    let (st, c) =
        s.post("/api/v1/conversations", Some(tok), json!({"kind": "direct", "members": [other.id]})).await;
    assert_eq!(st, 201, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

/// A group conversation started by `tok`'s user with `members`; its id.
async fn group(s: &TestServer, tok: &str, title: &str, members: &[&TestUser]) -> String {
    let ids: Vec<_> = members.iter().map(|u| u.id).collect();
    let (st, g) = s
        .post("/api/v1/conversations", Some(tok), json!({"kind": "group", "title": title, "members": ids}))
        .await;
    assert_eq!(st, 201, "{g}");
    assert_eq!(g["title"], title);
    g["id"].as_str().unwrap().to_owned()
}

async fn history(s: &TestServer, tok: &str, conv: &str) -> Vec<Value> {
    let (st, page) =
        s.get(&format!("/api/v1/conversations/{conv}/events?after=0&limit=200"), Some(tok)).await;
    assert_eq!(st, 200, "{page}");
    page["events"].as_array().unwrap().clone()
}

async fn unread(s: &TestServer, tok: &str, conv: &str) -> (i64, Value) {
    let (_, list) = s.get("/api/v1/conversations", Some(tok)).await;
    let c = list["conversations"].as_array().unwrap().iter().find(|c| c["id"] == conv).unwrap().clone();
    (c["unread"].as_i64().unwrap(), c["newest_unread_priority"].clone())
}

both_backends!(messages_flow_with_idempotency_receipts_edit_and_recall, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let o = org(&s, "Riverside").await;
    let (_alice, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, bob) = signed_in(&s, o, "bob", Role::Nurse).await;
    let conv = direct(&s, &a, &bob_u).await;

    let (st, first) = send(&s, &a, &conv, "k-1", json!({"body": "K+ 6.1, please recheck"})).await;
    assert_eq!(st, 201, "{first}");
    assert_eq!(first["type"], "message");
    assert_eq!(first["seq"], 2, "seq 1 is the creation");
    let (st, again) = send(&s, &a, &conv, "k-1", json!({"body": "K+ 6.1, please recheck"})).await;
    assert_eq!(st, 200, "a resend returns the first result");
    assert_eq!(again["message"]["id"], first["message"]["id"]);
    let msgs = history(&s, &bob, &conv).await;
    assert_eq!(msgs.iter().filter(|e| e["type"] == "message").count(), 1, "stored once");
    assert_eq!(msgs[1]["message"]["body"], "K+ 6.1, please recheck");

    assert_eq!(unread(&s, &bob, &conv).await, (1, json!("routine")));
    let (st, stat) = send(&s, &a, &conv, "k-2", json!({"body": "Code blue bed 4", "priority": "stat"})).await;
    assert_eq!(st, 201, "{stat}");
    assert_eq!(unread(&s, &bob, &conv).await, (2, json!("stat")));
    assert_eq!(unread(&s, &a, &conv).await.0, 0, "one's own messages are not unread");

    // Read receipts: bob reads up to the first message only.
    let mid = first["message"]["id"].as_str().unwrap();
    let (st, r) =
        s.post(&format!("/api/v1/conversations/{conv}/receipts"), Some(&bob), json!({"read_seq": 2})).await;
    assert_eq!((st, r["read_seq"].as_i64(), r["delivered_seq"].as_i64()), (200, Some(2), Some(2)), "{r}");
    let (_, rc) = s.get(&format!("/api/v1/conversations/{conv}/messages/{mid}/receipts"), Some(&a)).await;
    assert_eq!(rc["read_by"], json!([bob_u.id]));
    let sid = stat["message"]["id"].as_str().unwrap();
    let (_, rc) = s.get(&format!("/api/v1/conversations/{conv}/messages/{sid}/receipts"), Some(&a)).await;
    assert_eq!(rc["unread_by"], json!([bob_u.id]));
    assert_eq!(unread(&s, &bob, &conv).await.0, 1);
    // Positions never go backwards.
    let (_, r) =
        s.post(&format!("/api/v1/conversations/{conv}/receipts"), Some(&bob), json!({"read_seq": 1})).await;
    assert_eq!(r["read_seq"], 2);

    // Edit: a new version, history kept; only the sender may edit.
    let path = format!("/api/v1/conversations/{conv}/messages/{mid}");
    let (st, e) = s.put(&path, Some(&a), json!({"body": "K+ 6.1 (haemolysed), please recheck"})).await;
    assert_eq!(st, 200, "{e}");
    assert_eq!(
        (e["type"].as_str(), e["message"]["version"].as_i64(), e["message"]["edited"].as_bool()),
        (Some("message_edited"), Some(2), Some(true))
    );
    let (st, e) = s.put(&path, Some(&bob), json!({"body": "mine now"})).await;
    assert_eq!((st, e["code"].as_str()), (403, Some("not_sender")));
    let (_, v) = s.get(&format!("{path}/versions"), Some(&bob)).await;
    let bodies: Vec<&str> =
        v["versions"].as_array().unwrap().iter().map(|v| v["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["K+ 6.1, please recheck", "K+ 6.1 (haemolysed), please recheck"]);

    // Recall: the body is destroyed for everyone; a tombstone remains.
    let (st, e) = s.delete(&path, Some(&a)).await;
    assert_eq!((st, e["type"].as_str()), (200, Some("message_recalled")), "{e}");
    let h = history(&s, &bob, &conv).await;
    let m = h.iter().find(|e| e["type"] == "message" && e["message"]["id"] == mid).unwrap();
    assert_eq!(m["message"]["state"], "recalled");
    assert!(m["message"].get("body").is_none());
    let (_, v) = s.get(&format!("{path}/versions"), Some(&bob)).await;
    assert_eq!(v["versions"], json!([]));
    let (st, e) = s.put(&path, Some(&a), json!({"body": "back"})).await;
    assert_eq!((st, e["code"].as_str()), (409, Some("message_gone")));
    let seqs: Vec<i64> = h.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gap-free");
    s.stop().await;
});

both_backends!(bad_input_gets_clear_errors, |b: Backend| async move {
    let s = TestServer::start_with(b, |c| c.message_limits.max_body_bytes = 100).await;
    let o = org(&s, "Riverside").await;
    let (_, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, _) = signed_in(&s, o, "bob", Role::Nurse).await;
    let conv = direct(&s, &a, &bob_u).await;
    let cases = [
        (json!({"body": "  "}), "body_empty"),
        (json!({"body": "x".repeat(101)}), "body_too_large"),
        (json!({"body": "hi", "expires_at": "2001-01-01T00:00:00Z"}), "expiry_in_past"),
        (json!({"body": "hi", "expires_at": "tomorrow"}), "invalid_time"),
        (json!({"body": "hi", "priority": "whenever"}), "invalid_body"),
    ];
    for (i, (body, code)) in cases.into_iter().enumerate() {
        let (st, e) = send(&s, &a, &conv, &format!("bad-{i}"), body).await;
        assert_eq!((st, e["code"].as_str()), (422, Some(code)), "{e}");
    }
    let (st, e) = send(&s, &a, &conv, "has space", json!({"body": "hi"})).await;
    assert_eq!((st, e["code"].as_str()), (422, Some("invalid_idempotency_key")));
    let unknown = "00000000-0000-4000-8000-000000000000";
    let (st, _) = send(&s, &a, unknown, "k", json!({"body": "hi"})).await;
    assert_eq!(st, 404);
    let (st, e) = s.post("/api/v1/conversations", Some(&a), json!({"kind": "direct", "members": []})).await;
    assert_eq!((st, e["code"].as_str()), (422, Some("direct_needs_two")));
    let (st, e) =
        s.post("/api/v1/conversations", Some(&a), json!({"kind": "group", "members": [unknown]})).await;
    assert_eq!((st, e["code"].as_str()), (422, Some("unknown_member")));
    assert_eq!(history(&s, &a, &conv).await.len(), 1, "nothing partial was written");
    s.stop().await;
});

both_backends!(outsiders_get_404_on_every_id, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let o = org(&s, "Riverside").await;
    let other = org(&s, "Elsewhere").await;
    let (_, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, _) = signed_in(&s, o, "bob", Role::Nurse).await;
    let (_, carol) = signed_in(&s, o, "carol", Role::Clinician).await;
    let (_, officer) = signed_in(&s, o, "olga", Role::ComplianceOfficer).await;
    let (_, mallory) = signed_in(&s, other, "mallory", Role::Clinician).await;
    let conv = direct(&s, &a, &bob_u).await;
    let (_, m) = send(&s, &a, &conv, "k", json!({"body": "confidential"})).await;
    let mid = m["message"]["id"].as_str().unwrap();
    for tok in [&carol, &officer, &mallory] {
        let gets = [
            format!("/api/v1/conversations/{conv}"),
            format!("/api/v1/conversations/{conv}/events"),
            format!("/api/v1/conversations/{conv}/messages/{mid}/versions"),
            format!("/api/v1/conversations/{conv}/messages/{mid}/receipts"),
        ];
        for g in gets {
            let (st, body) = s.get(&g, Some(tok)).await;
            assert_eq!(st, 404, "GET {g}: {body}");
            assert!(!body.to_string().contains("confidential"));
        }
        let (st, _) = send(&s, tok, &conv, "k2", json!({"body": "let me in"})).await;
        assert_eq!(st, 404);
        let (st, _) = s
            .post(&format!("/api/v1/conversations/{conv}/receipts"), Some(tok), json!({"read_seq": 9}))
            .await;
        assert_eq!(st, 404);
        let (st, _) = s
            .put(&format!("/api/v1/conversations/{conv}/messages/{mid}"), Some(tok), json!({"body": "x"}))
            .await;
        assert_eq!(st, 404);
        let (st, _) = s.delete(&format!("/api/v1/conversations/{conv}/messages/{mid}"), Some(tok)).await;
        assert_eq!(st, 404);
        let (_, list) = s.get("/api/v1/conversations", Some(tok)).await;
        assert!(list["conversations"].as_array().is_none_or(|l| l.is_empty()), "{list}");
    }
    s.stop().await;
});

both_backends!(membership_changes_are_events_and_bound_what_is_read, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let o = org(&s, "Riverside").await;
    let (_, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, bob) = signed_in(&s, o, "bob", Role::Nurse).await;
    let (carol_u, carol) = signed_in(&s, o, "carol", Role::Clinician).await;
    let conv = group(&s, &a, "Ward 4 nights", &[&bob_u]).await;
    send(&s, &a, &conv, "before-carol", json!({"body": "said before carol"})).await;
    let (st, e) = s
        .post(&format!("/api/v1/conversations/{conv}/members"), Some(&bob), json!({"user_id": carol_u.id}))
        .await;
    assert_eq!((st, e["type"].as_str()), (201, Some("member_added")), "{e}");
    let (st, _) = s
        .post(&format!("/api/v1/conversations/{conv}/members"), Some(&bob), json!({"user_id": carol_u.id}))
        .await;
    assert_eq!(st, 409);
    send(&s, &a, &conv, "with-carol", json!({"body": "carol can read this"})).await;
    let (st, e) = s.delete(&format!("/api/v1/conversations/{conv}/members/{}", carol_u.id), Some(&a)).await;
    assert_eq!((st, e["type"].as_str()), (200, Some("member_removed")));
    send(&s, &a, &conv, "after-carol", json!({"body": "carol must not read this"})).await;

    let bodies = |h: Vec<Value>| -> Vec<String> {
        h.iter().filter_map(|e| e["message"]["body"].as_str().map(str::to_owned)).collect()
    };
    assert_eq!(bodies(history(&s, &carol, &conv).await), ["carol can read this"]);
    let (st, _) = send(&s, &carol, &conv, "k", json!({"body": "still here?"})).await;
    assert_eq!(st, 404, "a removed member cannot write");
    let kinds: Vec<String> =
        history(&s, &bob, &conv).await.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["created", "message", "member_added", "message", "member_removed", "message"]);
    // Leaving is an event too.
    let (st, e) = s.delete(&format!("/api/v1/conversations/{conv}/members/{}", bob_u.id), Some(&bob)).await;
    assert_eq!((st, e["type"].as_str()), (200, Some("member_left")));
    s.stop().await;
});

both_backends!(expired_messages_are_unreadable_then_purged, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let o = org(&s, "Riverside").await;
    let (_, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, bob) = signed_in(&s, o, "bob", Role::Nurse).await;
    let conv = direct(&s, &a, &bob_u).await;
    let at = (s.clock.now() + jiff::SignedDuration::from_secs(120)).to_string();
    let (st, m) = send(&s, &a, &conv, "exp", json!({"body": "door code 4471", "expires_at": at})).await;
    assert_eq!(st, 201, "{m}");
    assert_eq!(history(&s, &bob, &conv).await[1]["message"]["body"], "door code 4471");
    s.clock.advance_secs(121);
    let h = history(&s, &bob, &conv).await;
    assert_eq!(h[1]["message"]["state"], "expired");
    assert!(h[1]["message"].get("body").is_none(), "unreadable from its expiry, before any purge");
    assert_eq!(s.app.purge_expired(100).await.unwrap(), 1);
    assert_eq!(s.app.purge_expired(100).await.unwrap(), 0);
    let h = history(&s, &bob, &conv).await;
    assert_eq!(h.last().unwrap()["type"], "message_expired");
    s.stop().await;
});

both_backends!(patients_and_patient_conversations, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let o = org(&s, "Riverside").await;
    let (_, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, bob) = signed_in(&s, o, "bob", Role::Nurse).await;
    let (_, carol) = signed_in(&s, o, "carol", Role::Clinician).await;
    let (_, desk) = signed_in(&s, o, "desk", Role::FrontDesk).await;
    let p = json!({"mrn": "MRN-0042", "name": "Rosa Diaz", "date_of_birth": "1961-04-09", "phone": "+15550102299", "language": "es"});
    let (st, patient) = s.post("/api/v1/patients", Some(&desk), p.clone()).await;
    assert_eq!(st, 201, "{patient}");
    let (st, e) = s.post("/api/v1/patients", Some(&a), p).await;
    assert_eq!((st, e["code"].as_str()), (409, Some("mrn_taken")));
    let (st, found) = s.post("/api/v1/patients/lookup", Some(&a), json!({"mrn": "mrn-0042"})).await;
    assert_eq!((st, &found["id"]), (200, &patient["id"]));
    let (st, _) = s.post("/api/v1/patients/lookup", Some(&a), json!({"mrn": "MRN-9999"})).await;
    assert_eq!(st, 404);
    let (st, _) = s
        .post("/api/v1/patients", Some(&a), json!({"mrn": "X1", "name": "N", "date_of_birth": "2999-01-01"}))
        .await;
    assert_eq!(st, 422);
    let pid = patient["id"].as_str().unwrap();
    let (st, c) = s
        .post(
            "/api/v1/conversations",
            Some(&a),
            json!({"kind": "patient", "patient_id": pid, "members": [bob_u.id]}),
        )
        .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["patient"]["name"], "Rosa Diaz");
    let conv = c["id"].as_str().unwrap();
    let (_, list) = s.get("/api/v1/conversations", Some(&bob)).await;
    assert_eq!(list["conversations"][0]["patient"]["mrn"], "MRN-0042", "the banner is visible to members");
    let (st, _) = s.get(&format!("/api/v1/conversations/{conv}"), Some(&carol)).await;
    assert_eq!(st, 404, "and to nobody else");
    let (st, e) =
        s.post("/api/v1/conversations", Some(&a), json!({"kind": "patient", "members": [bob_u.id]})).await;
    assert_eq!((st, e["code"].as_str()), (422, Some("patient_required")));
    // Every patient access is in the audit trail.
    let subtypes: Vec<String> =
        s.app.store().recent_audit(o, 500).await.unwrap().iter().map(|e| e.record.subtype.clone()).collect();
    for wanted in ["patient-create", "patient-search", "conversation-create", "conversation-list"] {
        assert!(subtypes.iter().any(|s| s == wanted), "{wanted} missing from {subtypes:?}");
    }
    s.stop().await;
});

both_backends!(concurrent_sends_get_gap_free_sequence_numbers, |b: Backend| async move {
    let s = std::sync::Arc::new(TestServer::start(b).await);
    let o = org(&s, "Riverside").await;
    let (_, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, bob) = signed_in(&s, o, "bob", Role::Nurse).await;
    let conv = direct(&s, &a, &bob_u).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (s, tok, conv) = (s.clone(), if i % 2 == 0 { a.clone() } else { bob.clone() }, conv.clone());
        // Every message is sent twice with the same key, concurrently.
        for _ in 0..2 {
            let (s, tok, conv) = (s.clone(), tok.clone(), conv.clone());
            tasks.push(tokio::spawn(async move {
                let (st, e) = send(&s, &tok, &conv, &format!("m{i}"), json!({"body": format!("n{i}")})).await;
                assert!(st == 201 || st == 200, "{e}");
                e["message"]["id"].as_str().unwrap().to_owned()
            }));
        }
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let h = history(&s, &a, &conv).await;
    let seqs: Vec<i64> = h.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>(), "40 messages stored once each, seqs 2..=41, no gaps");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "both sends of a key answered with the same message");
});

both_backends!(a_failing_send_among_concurrent_sends_fails_alone, |b: Backend| async move {
    // Concurrent sends are committed together (group commit); one that fails must
    // fail alone, and the others, their sequence numbers and their audit entries must be intact.
    let s = std::sync::Arc::new(TestServer::start(b).await);
    let o = org(&s, "Riverside").await;
    let (_, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, _) = signed_in(&s, o, "bob", Role::Nurse).await;
    let conv = direct(&s, &a, &bob_u).await;
    let audit_before = s.app.store().audit_head().await.unwrap().size;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (s, tok, conv) = (s.clone(), a.clone(), conv.clone());
        tasks.push(tokio::spawn(async move {
            let mut body = json!({"body": format!("n{i}")});
            if i % 5 == 2 {
                // Not an upload of this sender: refused inside the store, mid-transaction.
                body["attachments"] = json!(["0190c8a4-5e4b-7c3d-9a2b-000000000001"]);
            }
            let (st, e) = send(&s, &tok, &conv, &format!("m{i}"), body).await;
            (i, st, e)
        }));
    }
    let mut sent = 0;
    for t in tasks {
        let (i, st, e) = t.await.unwrap();
        if i % 5 == 2 {
            assert_eq!((st, e["code"].as_str()), (422, Some("invalid_attachment")), "{e}");
        } else {
            assert_eq!(st, 201, "{e}");
            sent += 1;
        }
    }
    let h = history(&s, &a, &conv).await;
    let seqs: Vec<i64> = h.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=sent + 1).collect::<Vec<_>>(), "the refused sends took no sequence number");
    let bodies: Vec<&str> = h.iter().filter_map(|e| e["message"]["body"].as_str()).collect();
    assert_eq!(bodies.len() as i64, sent);
    assert!(bodies.iter().all(|b| b[1..].parse::<i64>().unwrap() % 5 != 2), "{bodies:?}");
    // The log grew by exactly one entry per stored send (plus the history read), gap-free,
    // and its head is the root over every entry.
    let store = s.app.store();
    assert!(store.commits_durably().await.unwrap(), "group commit gave the write connection back relaxed");
    let raw = intact_audit_log(&s).await;
    let sends = raw[audit_before as usize..].iter().filter(|r| r.entry.contains("\"message-send\"")).count();
    assert_eq!(sends as i64, sent, "one audit entry per stored message, none for a refused one");
});

/// The whole audit log, after checking it is gap-free and its head is the root over every entry.
async fn intact_audit_log(s: &TestServer) -> Vec<haven_store::RawAuditEntry> {
    let store = s.app.store();
    let head = store.audit_head().await.unwrap();
    let raw = store.audit_raw(0, head.size as i64, 100_000).await.unwrap();
    let seqs: Vec<i64> = raw.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=head.size as i64).collect::<Vec<_>>());
    let leaves: Vec<_> = raw.iter().map(|r| haven_audit::merkle::leaf_hash(r.entry.as_bytes())).collect();
    assert_eq!(haven_audit::merkle::root(&leaves), head.root);
    raw
}

both_backends!(sends_notice_changes_made_behind_the_writers_back, |b: Backend| async move {
    // The group-commit writer remembers the audit head, members and sequence numbers of the
    // conversations it wrote to, and writes the next batch without reading them. A
    // change it did not make (here a second node on the same database removes a member) must
    // be noticed: never a reused sequence number or audit entry, never a removed member's send.
    let s = TestServer::start(b).await;
    let o = org(&s, "Riverside").await;
    let (alice_u, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, bob) = signed_in(&s, o, "bob", Role::Nurse).await;
    let (carol_u, _) = signed_in(&s, o, "carol", Role::Nurse).await;
    let conv = group(&s, &a, "Ward 4", &[&bob_u, &carol_u]).await;
    for (tok, key) in [(&a, "k-1"), (&bob, "k-2")] {
        let (st, e) = send(&s, tok, &conv, key, json!({"body": key})).await;
        assert_eq!(st, 201, "{e}");
    }

    let node = s.another_app().await;
    let rec = haven_domain::audit::AuditRecord::new(
        Some(o),
        "messaging",
        "member-remove",
        haven_domain::audit::AuditAction::U,
        haven_domain::audit::AuditOutcome::Success,
        haven_domain::audit::AuditAgent::default(),
    );
    let conv_id = conv.parse().unwrap();
    node.store().remove_member(o, conv_id, alice_u.id, bob_u.id, s.clock.now(), &rec).await.unwrap();

    let (st, e) = send(&s, &bob, &conv, "k-3", json!({"body": "still here?"})).await;
    assert_eq!((st, e["code"].as_str()), (404, Some("not_found")), "{e}");
    let (st, e) = send(&s, &a, &conv, "k-4", json!({"body": "after"})).await;
    assert_eq!((st, e["seq"].as_i64()), (201, Some(5)), "after the removal's number 4: {e}");
    let (st, e) = send(&s, &a, &conv, "k-1", json!({"body": "k-1"})).await;
    assert_eq!((st, e["seq"].as_i64()), (200, Some(2)), "a resend still answers the first: {e}");
    let h = history(&s, &a, &conv).await;
    let seqs: Vec<i64> = h.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(h[3]["type"], "member_removed", "{}", h[3]);
    let raw = intact_audit_log(&s).await;
    assert!(raw.iter().any(|r| r.entry.contains("\"member-remove\"")));
});

both_backends!(sends_racing_audited_changes_from_another_node_all_land, |b: Backend| async move {
    // A batch written from what the writer knows locks the audit head first, as every audited
    // transaction does, and only where it has not moved: changes made at the same moment by
    // another node neither deadlock with the sends nor slip past them.
    let s = std::sync::Arc::new(TestServer::start(b).await);
    let o = org(&s, "Riverside").await;
    let (alice_u, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, _) = signed_in(&s, o, "bob", Role::Nurse).await;
    let (carol_u, _) = signed_in(&s, o, "carol", Role::Nurse).await;
    let conv = group(&s, &a, "Ward 4", &[&bob_u, &carol_u]).await;
    let node = std::sync::Arc::new(s.another_app().await);
    let mut sends = Vec::new();
    for i in 0..30 {
        let (s, a, conv) = (s.clone(), a.clone(), conv.clone());
        sends.push(tokio::spawn(async move {
            let (st, e) = send(&s, &a, &conv, &format!("r{i}"), json!({"body": format!("r{i}")})).await;
            assert_eq!(st, 201, "{e}");
        }));
    }
    let changes = {
        let (node, s, conv_id) = (node.clone(), s.clone(), conv.parse().unwrap());
        tokio::spawn(async move {
            for i in 0..10 {
                let subtype = if i % 2 == 0 { "member-remove" } else { "member-add" };
                let rec = haven_domain::audit::AuditRecord::new(
                    Some(o),
                    "messaging",
                    subtype,
                    haven_domain::audit::AuditAction::U,
                    haven_domain::audit::AuditOutcome::Success,
                    haven_domain::audit::AuditAgent::default(),
                );
                let store = node.store();
                let now = s.clock.now();
                let done = if i % 2 == 0 {
                    store.remove_member(o, conv_id, alice_u.id, carol_u.id, now, &rec).await
                } else {
                    store.add_member(o, conv_id, alice_u.id, carol_u.id, now, &rec).await
                };
                done.unwrap_or_else(|e| panic!("{subtype} beside the sends: {e}"));
            }
        })
    };
    for t in sends {
        t.await.unwrap();
    }
    changes.await.unwrap();
    let h = history(&s, &a, &conv).await;
    let seqs: Vec<i64> = h.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=41).collect::<Vec<_>>(), "the start, 30 messages and 10 changes, no gaps");
    let raw = intact_audit_log(&s).await;
    assert_eq!(raw.iter().filter(|r| r.entry.contains("\"member-")).count(), 10);
});

both_backends!(
    an_audit_search_by_patient_returns_exactly_the_accesses_to_that_patient,
    |b: Backend| async move {
        let s = TestServer::start(b).await;
        let o = org(&s, "Riverside").await;
        let (_, a) = signed_in(&s, o, "alice", Role::Clinician).await;
        let (bob_u, bob) = signed_in(&s, o, "bob", Role::Nurse).await;
        let (_, officer) = signed_in(&s, o, "olga", Role::ComplianceOfficer).await;
        let mut ids = Vec::new();
        for (mrn, name) in [("MRN-1", "Rosa Diaz"), ("MRN-2", "Ali Khan")] {
            let (_, p) = s
                .post(
                    "/api/v1/patients",
                    Some(&a),
                    json!({"mrn": mrn, "name": name, "date_of_birth": "1970-01-01"}),
                )
                .await;
            ids.push(p["id"].as_str().unwrap().to_owned());
        }
        let (_, c) = s
            .post(
                "/api/v1/conversations",
                Some(&a),
                json!({"kind": "patient", "patient_id": ids[0], "members": [bob_u.id]}),
            )
            .await;
        let conv = c["id"].as_str().unwrap();
        send(&s, &a, conv, "k1", json!({"body": "about Rosa"})).await;
        s.post(&format!("/api/v1/conversations/{conv}/receipts"), Some(&bob), json!({"read_seq": 2})).await;
        history(&s, &bob, conv).await;
        s.get(&format!("/api/v1/patients/{}", ids[1]), Some(&a)).await;
        // Ground truth: every entry that names patient 0.
        let all = s.app.store().recent_audit(o, 1000).await.unwrap();
        let expected: Vec<i64> = all
            .iter()
            .filter(|e| e.record.entities.iter().any(|x| x.kind == "patient" && x.id == ids[0]))
            .map(|e| e.seq)
            .collect();
        let (st, found) =
            s.get(&format!("/api/v1/audit/events?patient={}&limit=200", ids[0]), Some(&officer)).await;
        assert_eq!(st, 200, "{found}");
        let got: Vec<i64> =
            found["events"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
        assert_eq!(got, expected);
        let subtypes: Vec<&str> =
            all.iter().filter(|e| expected.contains(&e.seq)).map(|e| e.record.subtype.as_str()).collect();
        for wanted in
            ["patient-create", "conversation-create", "message-send", "message-read", "history-read"]
        {
            assert!(subtypes.contains(&wanted), "{wanted} missing from {subtypes:?}");
        }
        let (st, _) = s.get(&format!("/api/v1/audit/events?patient={}", ids[0]), Some(&bob)).await;
        assert_eq!(st, 404, "clinicians cannot search the audit trail");
        s.stop().await;
    }
);

/// Connections the PostgreSQL server has open to database `name`.
async fn connections_to(admin: &mut sqlx::AnyConnection, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
    )
    .bind(name)
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Waits up to five seconds for the connections to database `name` to be `want`; returns the
/// last count.
async fn settle(admin: &mut sqlx::AnyConnection, name: &str, want: i64) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let n = connections_to(admin, name).await;
        if n == want || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_writer_reconnects_and_closes_with_the_store() {
    // On PostgreSQL the group-commit writer has a connection of its own, made on its own
    // thread rather than taken from the store's pool. When the database drops it, the next
    // batch must take a new one; when the store closes, it must close too.
    let s = TestServer::start(Backend::Postgres).await;
    let o = org(&s, "Riverside").await;
    let (_, a) = signed_in(&s, o, "alice", Role::Clinician).await;
    let (bob_u, _) = signed_in(&s, o, "bob", Role::Nurse).await;
    let conv = direct(&s, &a, &bob_u).await;
    let (st, e) = send(&s, &a, &conv, "k-1", json!({"body": "one"})).await;
    assert_eq!(st, 201, "{e}");

    let name = s.db.url().rsplit('/').next().unwrap().to_owned();
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&haven_testkit::postgres_admin_url())
        .await
        .unwrap();
    assert!(connections_to(&mut admin, &name).await >= 2, "the writer's own and at least one of the pool's");
    // With a timeout, each call returns once its backend has gone.
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
             WHERE datname = $1 AND backend_type = 'client backend'",
    )
    .bind(&name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(ended.len() >= 2 && ended.iter().all(|e| *e), "{ended:?}");

    let (st, e) = send(&s, &a, &conv, "k-2", json!({"body": "two"})).await;
    assert_eq!(st, 201, "a send after the writer's connection was dropped: {e}");
    let bodies: Vec<String> = history(&s, &a, &conv)
        .await
        .iter()
        .filter_map(|e| e["message"]["body"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(bodies, ["one", "two"]);

    s.app.store().close().await;
    assert_eq!(settle(&mut admin, &name, 0).await, 0, "closing the store closed every connection");
}
