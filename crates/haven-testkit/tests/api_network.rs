//! Client addresses, proxies and per-source throttling.

use haven_domain::audit::AuditRecord;
use haven_testkit::{Backend, TestServer, both_backends};
use serde_json::json;

async fn failed_login_address(s: &TestServer, forwarded: Option<&str>) -> Option<String> {
    let mut req = s
        .client
        .post(s.url("/api/v1/auth/login"))
        .json(&json!({"username": "ghost.user", "password": "not-the-password"}));
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    assert_eq!(req.send().await.unwrap().status(), 401);
    let all = s.app.store().audit_range(0, 10_000).await.unwrap();
    let last: &AuditRecord = &all.last().unwrap().record;
    assert_eq!(last.outcome_code.as_deref(), Some("unknown_account"));
    last.agent.address.clone()
}

both_backends!(forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy, |b: Backend| async move {
    let s = TestServer::start(b).await;
    assert_eq!(failed_login_address(&s, Some("203.0.113.9")).await.as_deref(), Some("127.0.0.1"));
    let http = haven_http::HttpSettings {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        json_body_limit: 65536,
        ..Default::default()
    };
    let s = TestServer::start_custom(b, |_| {}, http).await;
    assert_eq!(failed_login_address(&s, Some("203.0.113.9")).await.as_deref(), Some("203.0.113.9"));
    // The rightmost address not belonging to a trusted proxy is the client.
    assert_eq!(
        failed_login_address(&s, Some("198.51.100.1, 203.0.113.7, 127.0.0.1")).await.as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(failed_login_address(&s, None).await.as_deref(), Some("127.0.0.1"));
});

both_backends!(failures_are_throttled_per_source_address_across_accounts, |b: Backend| async move {
    let s = TestServer::start_with(b, |a| a.source_throttle.max_failures = 3).await;
    for i in 0..3 {
        let (st, _) = s
            .post(
                "/api/v1/auth/login",
                None,
                json!({"username": format!("user{i}"), "password": "wrong-password-x"}),
            )
            .await;
        assert_eq!(st, 401);
    }
    let (st, body) = s
        .post("/api/v1/auth/login", None, json!({"username": "someone.else", "password": "wrong-password-x"}))
        .await;
    assert_eq!((st, body["code"].as_str()), (429, Some("too_many_attempts")));
});
