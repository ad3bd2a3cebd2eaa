//! The storage conformance suite: every case runs against SQLite and PostgreSQL.

use haven_domain::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
use haven_domain::org::{OrgPolicy, Organization};
use haven_domain::roles::{Role, RoleSet};
use haven_domain::session::SessionState;
use haven_domain::throttle::ThrottlePolicy;
use haven_domain::{OrgId, SessionId, UserId};
use haven_store::{MfaProof, NewSession, NewUser, Store, StoreError, StoreOptions};
use haven_testkit::{Backend, TestDb, both_backends};
use jiff::{SignedDuration, Timestamp};
use sqlx::Executor;

mod audit_index;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn rec(org: Option<OrgId>, sub: &str) -> AuditRecord {
    AuditRecord::new(org, "test", sub, AuditAction::E, AuditOutcome::Success, AuditAgent::default())
}

fn id<T>(f: impl FnOnce(&mut haven_app::OsEntropy) -> T) -> T {
    f(&mut haven_app::OsEntropy)
}

async fn open(db: &TestDb) -> Store {
    Store::open(db.url(), &StoreOptions::default()).await.expect("open")
}

async fn org(store: &Store, name: &str) -> OrgId {
    let o = Organization {
        id: id(OrgId::random),
        name: name.into(),
        policy: OrgPolicy::default(),
        created_at: t(0),
    };
    store.create_org(&o, &rec(Some(o.id), "org")).await.unwrap();
    o.id
}

async fn user(store: &Store, org: OrgId, name: &str) -> UserId {
    let u = NewUser {
        id: id(UserId::random),
        org_id: org,
        username: name.into(),
        display_name: name.into(),
        roles: RoleSet::new([Role::Clinician]).unwrap(),
        password_hash: "$argon2id$dummy".into(),
    };
    store.create_user(&u, &rec(Some(org), "user"), t(0)).await.unwrap();
    u.id
}

fn session(org: OrgId, user: UserId, digest: &str, state: SessionState) -> NewSession {
    NewSession {
        id: id(SessionId::random),
        token_digest: digest.into(),
        org_id: org,
        user_id: user,
        state,
        created_at: t(0),
        expires_at: t(3600),
        address: Some("127.0.0.1".into()),
        user_agent: None,
    }
}

/// A connection of its own to the test's database, which sees what the store's readers see
/// (on SQLite the audit index's file, attached).
async fn raw(db: &TestDb) -> sqlx::AnyConnection {
    let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(db.url()).await.unwrap();
    if db.dir().is_some() {
        haven_store::attach_audit_index(&mut c).await.unwrap();
    }
    c
}

/// The plan of `sql` on backend `b`, one line per step; `blob` is bound to `$1` when given.
async fn plan(c: &mut sqlx::AnyConnection, b: Backend, sql: &str, blob: Option<Vec<u8>>) -> String {
    let (explain, column) =
        if b == Backend::Sqlite { ("EXPLAIN QUERY PLAN", "detail") } else { ("EXPLAIN", "QUERY PLAN") };
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("{explain} {sql}")));
    if let Some(blob) = blob {
        query = query.bind(blob);
    }
    let rows = query.fetch_all(c).await.unwrap();
    rows.iter().map(|r| sqlx::Row::get::<String, _>(r, column)).collect::<Vec<_>>().join("\n")
}

both_backends!(users_are_scoped_by_organisation, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    let bb = org(&s, "B").await;
    let ua = user(&s, a, "alice").await;
    assert_eq!(s.user(a, ua).await.unwrap().username, "alice");
    assert!(matches!(s.user(bb, ua).await, Err(StoreError::NotFound)));
    assert!(matches!(s.deactivate_user(bb, ua, &rec(Some(bb), "x"), t(1)).await, Err(StoreError::NotFound)));
    assert!(matches!(s.reset_mfa(bb, ua, &rec(Some(bb), "x"), t(1)).await, Err(StoreError::NotFound)));
    assert!(s.users(bb, None, None, 10).await.unwrap().users.is_empty());
    assert_eq!(s.users(a, None, None, 10).await.unwrap().users.len(), 1);
});

both_backends!(usernames_are_unique_and_a_failed_write_leaves_no_audit, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    user(&s, a, "alice").await;
    let before = s.audit_range(0, 1000).await.unwrap().len();
    let dup = NewUser {
        id: id(UserId::random),
        org_id: a,
        username: "alice".into(),
        display_name: "Other".into(),
        roles: RoleSet::new([Role::Nurse]).unwrap(),
        password_hash: "x".into(),
    };
    assert!(matches!(
        s.create_user(&dup, &rec(Some(a), "dup"), t(2)).await,
        Err(StoreError::Conflict("username"))
    ));
    assert_eq!(
        s.audit_range(0, 1000).await.unwrap().len(),
        before,
        "the audit entry of a failed write must not survive"
    );
});

both_backends!(
    searching_users_matches_parts_of_names_and_takes_wildcards_literally,
    |b: Backend| async move {
        let db = TestDb::new(b).await;
        let s = open(&db).await;
        let a = org(&s, "A").await;
        let other = org(&s, "B").await;
        for n in ["Alice.Smith", "bob_jones", "bobxjones", "carol%2"] {
            user(&s, a, n).await;
        }
        user(&s, other, "alice.other").await;
        let names = |q: &'static str| {
            let s = &s;
            async move {
                s.users(a, Some(q), None, 50)
                    .await
                    .unwrap()
                    .users
                    .into_iter()
                    .map(|u| u.username)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(names("ALICE").await, ["Alice.Smith"], "case-insensitive, and only this organisation");
        assert_eq!(names("smi").await, ["Alice.Smith"]);
        assert_eq!(names("b_j").await, ["bob_jones"], "an underscore is not a wildcard");
        assert_eq!(names("%").await, ["carol%2"], "a percent sign is not a wildcard");
        assert!(names("zed").await.is_empty());
        assert_eq!(names("o").await.len(), 3);
    }
);

both_backends!(paging_users_is_complete_and_ordered, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    for n in ["dave", "alice", "carol", "bob", "erin"] {
        user(&s, a, n).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.users(a, None, after.as_deref(), 2).await.unwrap();
        seen.extend(page.users.iter().map(|u| u.username.clone()));
        match page.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ["alice", "bob", "carol", "dave", "erin"]);
});

both_backends!(sessions_end_on_deactivation_and_password_change, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    let u = user(&s, a, "alice").await;
    let s1 = session(a, u, "d1", SessionState::Active);
    let s2 = session(a, u, "d2", SessionState::Active);
    s.create_session(&s1, &rec(Some(a), "login")).await.unwrap();
    s.create_session(&s2, &rec(Some(a), "login")).await.unwrap();
    assert!(s.session_by_token("d1").await.unwrap().is_some());
    s.set_password(a, u, "new-hash", Some(s1.id), &rec(Some(a), "pw"), t(5)).await.unwrap();
    assert!(s.session_by_token("d1").await.unwrap().is_some(), "the current session stays");
    assert!(s.session_by_token("d2").await.unwrap().is_none(), "other sessions end");
    s.deactivate_user(a, u, &rec(Some(a), "deact"), t(6)).await.unwrap();
    assert!(s.session_by_token("d1").await.unwrap().is_none());
    assert!(s.session_by_token("nope").await.unwrap().is_none());
});

both_backends!(the_session_sweep_returns_only_timed_out_sessions, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await; // inactivity timeout 900 s by default
    let u = user(&s, a, "alice").await;
    let mut young = Vec::new();
    for i in 0..3 {
        let mut n = session(a, u, &format!("young{i}"), SessionState::Active);
        n.created_at = t(1000);
        n.expires_at = t(50_000);
        s.create_session(&n, &rec(Some(a), "login")).await.unwrap();
        young.push(n.id);
    }
    let mut old = session(a, u, "old", SessionState::Active);
    old.expires_at = t(50_000);
    s.create_session(&old, &rec(Some(a), "login")).await.unwrap();
    // At t=1200 every session has been idle more than 30 s, but only the old one more than 900 s.
    let stale = s.stale_sessions(t(1170), t(1200), 10).await.unwrap();
    assert_eq!(stale.iter().map(|r| r.id).collect::<Vec<_>>(), [old.id]);
    let stale = s.stale_sessions(t(1170), t(1200), 1).await.unwrap();
    assert_eq!(stale[0].id, old.id, "a small page still finds it");
});

both_backends!(mfa_proofs_are_single_use, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    let u = user(&s, a, "alice").await;
    s.set_pending_totp(a, u, b"sealed", &rec(Some(a), "enrol"), t(1)).await.unwrap();
    let p1 = session(a, u, "p1", SessionState::MfaEnrollmentRequired);
    s.create_session(&p1, &rec(Some(a), "login")).await.unwrap();
    let act = session(a, u, "a1", SessionState::Active);
    let enrol = MfaProof::Enrolment { step: 100, recovery_digests: vec!["r1".into(), "r2".into()] };
    assert!(s.complete_mfa(p1.id, &enrol, &act, &rec(Some(a), "mfa")).await.unwrap());
    assert!(s.session_by_token("p1").await.unwrap().is_none(), "the pending session is replaced");
    assert!(s.user(a, u).await.unwrap().mfa_enrolled);
    assert_eq!(s.recovery_codes_left(u).await.unwrap(), 2);

    for (digest, proof, ok) in [
        ("p2", MfaProof::TotpStep(100), false), // the step used at enrolment
        ("p3", MfaProof::TotpStep(101), true),
        ("p4", MfaProof::TotpStep(101), false), // replay
        ("p5", MfaProof::RecoveryCode("r1".into()), true),
        ("p6", MfaProof::RecoveryCode("r1".into()), false),
        ("p7", MfaProof::RecoveryCode("unknown".into()), false),
    ] {
        let pending = session(a, u, digest, SessionState::MfaRequired);
        s.create_session(&pending, &rec(Some(a), "login")).await.unwrap();
        let active = session(a, u, &format!("{digest}-active"), SessionState::Active);
        let done = s.complete_mfa(pending.id, &proof, &active, &rec(Some(a), "mfa")).await.unwrap();
        assert_eq!(done, ok, "{digest}");
        assert_eq!(s.session_by_token(&format!("{digest}-active")).await.unwrap().is_some(), ok);
    }
    assert_eq!(s.recovery_codes_left(u).await.unwrap(), 1);
});

both_backends!(audit_sequence_is_gap_free_and_rows_are_immutable, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    for i in 0..5 {
        s.record_audit(&rec(Some(a), &format!("e{i}")), t(i)).await.unwrap();
    }
    let all = s.audit_range(0, 100).await.unwrap();
    let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    assert_eq!(all[3].record.subtype, "e2");
    let mut c = raw(&db).await;
    let upd = c.execute("UPDATE audit_log SET subtype = 'forged' WHERE seq = 2").await;
    assert!(upd.is_err(), "UPDATE of an audit row must fail");
    let del = c.execute("DELETE FROM audit_log WHERE seq = 2").await;
    assert!(del.is_err(), "DELETE of an audit row must fail");
    assert_eq!(s.audit_range(0, 100).await.unwrap(), all);
});

both_backends!(throttle_reserves_attempts_atomically, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = std::sync::Arc::new(open(&db).await);
    let p = ThrottlePolicy { max_failures: 3, window: SignedDuration::from_secs(60) };
    // 20 concurrent attempts on one key: exactly 3 get through.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.reserve_attempt(&[("k1", p)], t(0)).await.unwrap() }));
    }
    let mut allowed = 0;
    for task in tasks {
        if task.await.unwrap().is_none() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 3, "a burst cannot slip past the limit");
    assert_eq!(s.reserve_attempt(&[("k1", p)], t(10)).await.unwrap(), Some(50));
    let c = s.failure_count("k1").await.unwrap().unwrap();
    assert_eq!((c.failures, c.window_start), (3, t(0)), "refused attempts are not counted");
    // A success gives its reservation back; a new window starts afresh.
    s.release_attempt(&["k1"]).await.unwrap();
    assert_eq!(s.failure_count("k1").await.unwrap().unwrap().failures, 2);
    assert_eq!(s.reserve_attempt(&[("k1", p)], t(61)).await.unwrap(), None);
    let c = s.failure_count("k1").await.unwrap().unwrap();
    assert_eq!((c.failures, c.window_start), (1, t(61)));
    // A refusal by one key counts against none.
    assert_eq!(s.reserve_attempt(&[("k2", p)], t(61)).await.unwrap(), None);
    for _ in 0..2 {
        s.reserve_attempt(&[("k1", p)], t(62)).await.unwrap();
    }
    assert!(s.reserve_attempt(&[("k2", p), ("k1", p)], t(63)).await.unwrap().is_some());
    assert_eq!(s.failure_count("k2").await.unwrap().unwrap().failures, 1);
    s.clear_failures("k1").await.unwrap();
    assert!(s.failure_count("k1").await.unwrap().is_none());
});

both_backends!(migrations_are_idempotent_and_checked, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    assert_eq!(s.migrate().await.unwrap(), 0);
    let mut c = raw(&db).await;
    c.execute("UPDATE haven_migrations SET checksum = 'edited' WHERE version = 1").await.unwrap();
    let err = s.migrate().await.unwrap_err();
    assert!(err.to_string().contains("differs"), "{err}");
});

#[test]
fn unknown_database_schemes_are_refused() {
    let e = haven_store::Backend::from_url("mysql://root@localhost/haven").unwrap_err();
    assert!(e.to_string().contains("sqlite://") && e.to_string().contains("postgres://"), "{e}");
    assert!(haven_store::Backend::from_url("postgresql://x/y").is_ok());
}

#[tokio::test]
async fn sqlite_runs_in_wal_mode_with_full_sync() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = open(&db).await;
    s.ping().await.unwrap();
    let mut c = raw(&db).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut c).await.unwrap();
    assert_eq!(mode, "wal");
    s.close().await;
}

#[tokio::test]
async fn sqlite_keeps_its_wal_bounded_under_a_steady_stream_of_writes() {
    let db = TestDb::new(Backend::Sqlite).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    // About 80 MB of audit entries (each 16 KiB subtype is stored twice), one commit each, faster than a checkpoint beside the
    // writer can catch up with: the WAL must still start over instead of growing with them,
    // once it holds the 4,000 pages (16 MB) after which the writer checkpoints.
    let bulky = "x".repeat(16 * 1024);
    for i in 0..2_500 {
        s.record_audit(&rec(Some(a), &format!("{i}{bulky}")), t(i)).await.unwrap();
    }
    let path = db.scratch().join("haven.db");
    let wal = std::fs::metadata(path.with_extension("db-wal")).map(|m| m.len()).unwrap_or(0);
    let main = std::fs::metadata(&path).unwrap().len();
    assert!(main > 40_000_000, "the entries reached the main file ({main} bytes)");
    assert!(wal < 20 * 1024 * 1024, "the WAL is {wal} bytes");
    s.close().await;
}

both_backends!(the_audit_log_is_a_merkle_log_whose_head_matches_its_leaves, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    // The clock goes backwards: recorded times must not.
    for (i, at) in [10, 20, 15, 30, 5].into_iter().enumerate() {
        s.record_audit(&rec(Some(a), &format!("e{i}")), t(at)).await.unwrap();
    }
    let raw = s.audit_raw(0, 100, 100).await.unwrap();
    assert_eq!(raw.len(), 6);
    let mut last = Timestamp::MIN;
    for r in &raw {
        assert_eq!(r.leaf, haven_audit::merkle::leaf_hash(r.entry.as_bytes()));
        assert!(r.entry.starts_with(&format!("{{\"seq\":{},\"time\":", r.seq)), "{}", r.entry);
        assert!(r.recorded_at >= last, "time went backwards at {}", r.seq);
        last = r.recorded_at;
    }
    let leaves = s.audit_leaves(6).await.unwrap();
    let head = s.audit_head().await.unwrap();
    assert_eq!(head.size, 6);
    assert_eq!(head.root, haven_audit::merkle::root(&leaves));
    assert_eq!(s.audit_leaves(3).await.unwrap(), leaves[..3]);
    let cp =
        haven_store::StoredCheckpoint { size: 6, root: head.root, note: "note".into(), created_at: t(40) };
    s.save_checkpoint(&cp).await.unwrap();
    s.save_checkpoint(&cp).await.unwrap();
    assert_eq!(s.checkpoints(6).await.unwrap(), vec![cp]);
    assert!(s.checkpoints(5).await.unwrap().is_empty());
});

both_backends!(an_action_whose_audit_record_cannot_be_written_fails_whole, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let a = org(&s, "A").await;
    let mut c = raw(&db).await;
    // Make every audit insert fail, as a full disk or a broken audit table would.
    match b {
        Backend::Sqlite => {
            c.execute("CREATE TRIGGER audit_broken BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'broken'); END")
                .await
                .unwrap();
        }
        Backend::Postgres => {
            c.execute(sqlx::raw_sql(
                "CREATE FUNCTION audit_broken() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'broken'; END $$;
                 CREATE TRIGGER audit_broken BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_broken();",
            ))
            .await
            .unwrap();
        }
    }
    let u = NewUser {
        id: id(UserId::random),
        org_id: a,
        username: "alice".into(),
        display_name: "Alice".into(),
        roles: RoleSet::new([Role::Nurse]).unwrap(),
        password_hash: "x".into(),
    };
    assert!(s.create_user(&u, &rec(Some(a), "user"), t(1)).await.is_err());
    assert!(matches!(s.user(a, u.id).await, Err(StoreError::NotFound)), "no user without its audit record");
    let head = s.audit_head().await.unwrap();
    assert_eq!(head.size, 1, "the head did not move either");
});

both_backends!(schema_8_keeps_every_message_and_its_idempotency_key, |b: Backend| async move {
    use haven_domain::messaging::{ContentType, ConversationKind, Priority};
    use haven_domain::{ConversationId, MessageId};
    use haven_store::{NewConversation, NewMessage};
    let db = TestDb::new(b).await;
    let s = Store::connect(db.url(), &StoreOptions::default()).await.unwrap();
    // Messages written under schema 7, whose key index led with the conversation.
    s.migrate_to(7).await.unwrap();
    let a = org(&s, "A").await;
    let (alice, bob) = (user(&s, a, "alice").await, user(&s, a, "bob").await);
    let conv = id(ConversationId::random);
    let new_conv = NewConversation {
        id: conv,
        org_id: a,
        kind: ConversationKind::Group,
        patient_id: None,
        data_key: vec![1; 40],
        title_sealed: None,
        created_by: alice,
        members: vec![alice, bob],
        now: t(1),
    };
    s.create_conversation(&new_conv, &rec(Some(a), "conv")).await.unwrap();
    let message = |sender: UserId, key: &str, at: i64| NewMessage {
        id: id(|r| MessageId::time_ordered(t(at), r)),
        org_id: a,
        conversation_id: conv,
        sender_id: sender,
        idempotency_key: key.into(),
        priority: Priority::Routine,
        content_type: ContentType::Text,
        data_key: vec![2; 40],
        body_sealed: vec![3; 50],
        attachments: Vec::new(),
        expires_at: None,
        now: t(at),
    };
    let first = message(alice, "k1", 2);
    assert!(s.send_message(&first, &rec(Some(a), "send")).await.unwrap().created);
    let bobs = message(bob, "k1", 3);
    assert!(s.send_message(&bobs, &rec(Some(a), "send")).await.unwrap().created, "keys are per sender");

    assert_eq!(s.migrate_to(8).await.unwrap(), 1);
    // Every message is there, with its version, and nothing refers to a row that is gone.
    for m in [&first, &bobs] {
        let stored = s.message(a, conv, m.id).await.unwrap();
        assert_eq!((stored.sender_id, stored.body_sealed.as_deref()), (m.sender_id, Some(&[3_u8; 50][..])));
    }
    if b == Backend::Sqlite {
        let mut c = raw(&db).await;
        assert!(sqlx::raw_sql("PRAGMA foreign_key_check").fetch_all(&mut c).await.unwrap().is_empty());
        let fks: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(&mut c).await.unwrap();
        assert_eq!(fks, 1);
    }
    // A key kept before the migration is still a repeat; new keys store new messages.
    let again = s.send_message(&message(alice, "k1", 4), &rec(Some(a), "send")).await.unwrap();
    assert!(!again.created, "the key stored under schema 7 still counts");
    assert_eq!(again.event.message.unwrap().id, first.id);
    let fresh = message(alice, "k2", 5);
    assert!(s.send_message(&fresh, &rec(Some(a), "send")).await.unwrap().created);
    assert_eq!(s.message(a, conv, fresh.id).await.unwrap().seq, 4);
    // Two sends of one new key in one go: the index refuses the second (stored once).
    let (dup, twin, audit) = (message(bob, "k3", 6), message(bob, "k3", 6), rec(Some(a), "send"));
    let (x, y) = tokio::join!(s.send_message(&dup, &audit), s.send_message(&twin, &audit));
    assert_eq!([x.unwrap().created, y.unwrap().created].iter().filter(|c| **c).count(), 1);
    s.close().await;
});

both_backends!(
    schema_10_reads_texts_and_consent_by_phone_and_by_patient_without_statistics,
    |b: Backend| async move {
        let db = TestDb::new(b).await;
        let s = open(&db).await;
        let mut c = raw(&db).await;
        // A new database has no statistics: the plan must follow from the indexes alone. Before
        // schema 10 PostgreSQL answered these from indexes led by the organisation, reading every
        // text or consent entry of the organisation for each text queued or batch claimed.
        // Every lookup here binds a 64-byte blob as $1 (a phone index, or a claim's numbers).
        let plan_of =
            async |c: &mut sqlx::AnyConnection, sql: &str| plan(c, b, sql, Some(vec![0_u8; 64])).await;
        let cap = plan_of(
            &mut c,
            "SELECT COALESCE(sent_at, not_before) AS at FROM sms_outbox
         WHERE org_id = 'o' AND phone_index = $1 AND purpose = 'care'
           AND status IN ('queued', 'sending', 'sent', 'delivered') AND COALESCE(sent_at, not_before) > 0",
        )
        .await;
        assert!(cap.contains("sms_outbox_by_phone"), "the frequency cap's lookup: {cap}");
        let by_patient = plan_of(
        &mut c,
        "SELECT id FROM sms_outbox WHERE org_id = 'o' AND patient_id = 'p' AND phone_index <> $1 ORDER BY created_at DESC, id LIMIT 50",
    )
    .await;
        assert!(by_patient.contains("sms_outbox_by_patient"), "a patient's texts: {by_patient}");
        // The outbox's consent check of a claimed batch, once the ledger has entries (still never
        // analysed): one probe of the phone index per number, not the organisation's whole ledger.
        let a = org(&s, "A").await;
        let blob =
            if b == Backend::Sqlite { "randomblob(32)" } else { "sha256(CAST(CAST(i AS TEXT) AS BYTEA))" };
        let fill = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
         INSERT INTO consent_ledger (id, org_id, phone_index, phone_sealed, purpose, state, source, wording, recorded_at)
         SELECT 'c' || CAST(i AS TEXT), '{a}', {blob}, {blob}, 'all', 'granted', 'staff', 'w', i FROM n"
    );
        sqlx::raw_sql(sqlx::AssertSqlSafe(fill)).execute(&mut c).await.unwrap();
        // A claim's worth of numbers, as `consent_statuses` asks for them.
        let numbers: Vec<String> =
            (1..=64).map(|k| format!("(org_id = '{a}' AND phone_index = substr($1, {k}))")).collect();
        let consent = plan_of(
            &mut c,
            &format!(
                "SELECT org_id, phone_index, purpose, state FROM consent_ledger WHERE {} ORDER BY seq",
                numbers.join(" OR ")
            ),
        )
        .await;
        assert!(consent.contains("consent_by_phone"), "the consent of a batch: {consent}");
        let by_org_alone =
            consent.lines().any(|l| l.trim_end().ends_with(&format!("Cond: (org_id = '{a}'::text)")));
        assert!(!by_org_alone, "the consent of a batch, narrowed by the organisation alone: {consent}");
        s.close().await;
    }
);

both_backends!(the_store_tells_whether_autovacuum_is_off, |b: Backend| async move {
    let db = TestDb::new(b).await;
    let s = open(&db).await;
    let expected = match b {
        Backend::Sqlite => false,
        Backend::Postgres => {
            let mut c = raw(&db).await;
            let setting: String =
                sqlx::query_scalar("SELECT current_setting('autovacuum')").fetch_one(&mut c).await.unwrap();
            setting == "off"
        }
    };
    assert_eq!(s.autovacuum_off().await.unwrap(), expected);
    s.close().await;
});
