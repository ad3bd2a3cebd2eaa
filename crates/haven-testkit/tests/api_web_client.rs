//! What the web client relies on, through the HTTP API on both backends: the page itself and
//! its CSP, directory search, permissions in `/me`, members in the conversation list, the
//! organisation's attachment policy, background requests that are not activity, and the audit
//! log's verification status.

use haven_app::Actor;
use haven_domain::org::OrgPolicy;
use haven_domain::roles::Role;
use haven_testkit::{Backend, TestServer, TestUser, both_backends};
use serde_json::json;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

async fn direct(s: &TestServer, tok: &str, with: &TestUser) -> String {
    let (st, c) =
        s.post("/api/v1/conversations", Some(tok), json!({"kind": "direct", "members": [with.id]})).await;
    assert_eq!(st, 201, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

both_backends!(the_page_is_served_with_a_strict_csp, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let resp = s.client.get(s.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("require-trusted-types-for 'script'"), "{csp}");
    let html = resp.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/app/js/main.js">"#));
    let js = s.client.get(s.url("/app/js/main.js")).send().await.unwrap();
    assert_eq!(js.status(), 200);
    assert!(js.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert_eq!(s.client.get(s.url("/app/js/nothing.js")).send().await.unwrap().status(), 404);
    assert_eq!(s.client.get(s.url("/app/../Cargo.toml")).send().await.unwrap().status(), 404);
});

both_backends!(directory_search_and_permissions_for_the_client, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let nurse = s.enrolled_user(org, "nurse.patel", &[Role::Nurse]).await;
    s.enrolled_user(org, "dr.lindqvist", &[Role::Clinician]).await;
    s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    let t = s.login(&nurse).await;
    let (st, page) = s.get("/api/v1/users?q=LINDQ", Some(&t)).await;
    assert_eq!(st, 200, "{page}");
    let names: Vec<&str> =
        page["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["dr.lindqvist"]);
    let (_, page) = s.get("/api/v1/users?q=%25", Some(&t)).await;
    assert_eq!(page["users"].as_array().unwrap().len(), 0, "a % is a character, not a wildcard");
    let (st, e) = s.get(&format!("/api/v1/users?q={}", "x".repeat(101)), Some(&t)).await;
    assert_eq!((st, e["code"].as_str(), e["field"].as_str()), (422, Some("too_long"), Some("q")), "{e}");

    let (_, me) = s.get("/api/v1/me", Some(&t)).await;
    let perms: Vec<&str> =
        me["permissions"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(perms.contains(&"messaging_use") && perms.contains(&"directory_read"), "{perms:?}");
    assert!(!perms.contains(&"users_manage") && !perms.contains(&"audit_read"), "{perms:?}");
});

both_backends!(the_conversation_list_carries_members_and_receipts, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let a = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    let bob = s.enrolled_user(org, "dr.lindqvist", &[Role::Clinician]).await;
    let ta = s.login(&a).await;
    let tb = s.login(&bob).await;
    let conv = direct(&s, &ta, &bob).await;
    let (st, _) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(&ta),
            json!({"idempotency_key": "k1", "body": "hello"}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) =
        s.post(&format!("/api/v1/conversations/{conv}/receipts"), Some(&tb), json!({"read_seq": 2})).await;
    assert!(st == 200 || st == 204, "{st}");
    let (_, list) = s.get("/api/v1/conversations", Some(&ta)).await;
    let item = &list["conversations"][0];
    let members = item["members"].as_array().expect("members in the list");
    let them = members.iter().find(|m| m["user_id"] == json!(bob.id)).expect("the other member");
    assert_eq!(them["display_name"], "Test dr.lindqvist");
    assert!(them["read_seq"].as_i64().unwrap() >= 2, "{them}");
});

both_backends!(the_organisations_attachment_policy_is_enforced, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let admin = s.enrolled_user(org, "admin", &[Role::OrgAdmin]).await;
    let a = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    let bob = s.enrolled_user(org, "dr.lindqvist", &[Role::Clinician]).await;
    let tadmin = s.login(&admin).await;
    let (_, current) = s.get("/api/v1/organization", Some(&tadmin)).await;
    assert_eq!(current["policy"]["max_attachment_bytes"], 25 * 1024 * 1024);
    assert_eq!(current["policy"]["attachment_kinds"], json!(["image", "pdf", "office", "text"]));
    let mut policy = current["policy"].clone();

    // Refusals change nothing.
    for (field, bad) in [
        ("max_attachment_bytes", json!(2u64 << 30)),
        ("attachment_kinds", json!(["image", "exe"])),
        ("max_attachment_bytes", json!(-1)),
    ] {
        let mut p = policy.clone();
        p[field] = bad;
        let (st, e) = s.put("/api/v1/organization/policy", Some(&tadmin), p).await;
        assert!(st == 400 || st == 422, "{field}: {st} {e}");
    }
    policy["max_attachment_bytes"] = json!(16);
    policy["attachment_kinds"] = json!(["pdf"]);
    let (st, o) = s.put("/api/v1/organization/policy", Some(&tadmin), policy.clone()).await;
    assert_eq!(st, 200, "{o}");

    let ta = s.login(&a).await;
    let conv = direct(&s, &ta, &bob).await;
    let (st, e) = s.upload(&ta, &conv, "x.png", PNG).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (413, Some("too_large")),
        "the org limit is below the server's: {e}"
    );
    let (st, e) = s.upload(&ta, &conv, "x.png", &PNG[..16]).await;
    assert_eq!(
        (st, e["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "images are not allowed: {e}"
    );
    let (st, pdf) = s.upload(&ta, &conv, "r.pdf", b"%PDF-1.7\n%%EOF\n").await;
    assert_eq!(st, 201, "{pdf}");
    // A message may be only an attachment.
    let (st, m) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(&ta),
            json!({"idempotency_key": "k", "body": "", "attachments": [pdf["id"]]}),
        )
        .await;
    assert_eq!(st, 201, "{m}");
    let (st, e) = s
        .post(
            &format!("/api/v1/conversations/{conv}/messages"),
            Some(&ta),
            json!({"idempotency_key": "k2", "body": "  "}),
        )
        .await;
    assert_eq!(st, 422, "an empty message without attachments is refused: {e}");

    policy["max_attachment_bytes"] = json!(0);
    assert_eq!(s.put("/api/v1/organization/policy", Some(&tadmin), policy).await.0, 200);
    let ta = s.login(&a).await;
    let (st, e) = s.upload(&ta, &conv, "r.pdf", b"%PDF-1.7\n").await;
    assert_eq!((st, e["code"].as_str()), (403, Some("attachments_disabled")), "{e}");
});

both_backends!(background_requests_are_not_activity, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let policy = OrgPolicy { inactivity_timeout_seconds: 300, ..OrgPolicy::default() };
    s.app.set_policy(&Actor::Operator, org, policy).await.unwrap();
    let u = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    let get_background = |t: String| {
        let req =
            s.client.get(s.url("/api/v1/conversations")).bearer_auth(t).header("x-haven-background", "1");
        async move { req.send().await.unwrap().status().as_u16() }
    };
    // The user's own requests keep the session alive...
    let t = s.login(&u).await;
    for _ in 0..3 {
        s.clock.advance_secs(200);
        assert_eq!(s.get("/api/v1/me", Some(&t)).await.0, 200);
    }
    // ...the client's own polling does not: it is answered, but the timeout runs on.
    s.clock.advance_secs(200);
    assert_eq!(get_background(t.clone()).await, 200);
    s.clock.advance_secs(200);
    assert_eq!(get_background(t.clone()).await, 401, "300 s after the last activity the session is over");
});

both_backends!(the_audit_log_reports_its_verification, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let officer = s.enrolled_user(org, "compliance.chen", &[Role::ComplianceOfficer]).await;
    let nurse = s.enrolled_user(org, "nurse.patel", &[Role::Nurse]).await;
    s.app.checkpoint().await.unwrap();
    let t = s.login(&officer).await;
    let (st, v) = s.get("/api/v1/audit/verification", Some(&t)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "verified", "{v}");
    assert!(v["entries"].as_u64().unwrap() >= 4, "{v}");
    assert!(v["checkpoints_verified"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["checkpoint"]["root_hash"].as_str().unwrap().len(), 64);
    // The check itself is audited.
    let (_, found) = s.get("/api/v1/audit/events?action=audit-verify", Some(&t)).await;
    assert_eq!(found["events"].as_array().unwrap().len(), 1, "{found}");
    let tn = s.login(&nurse).await;
    let (st, _) = s.get("/api/v1/audit/verification", Some(&tn)).await;
    assert!(st == 403 || st == 404, "staff cannot run it: {st}");
});
