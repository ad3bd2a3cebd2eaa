//! Administration, organisation scoping, malformed input and the system endpoints, through the
//! HTTP API on both backends.

use haven_domain::roles::Role;
use haven_testkit::{Backend, TestServer, both_backends};
use serde_json::json;

both_backends!(other_organisations_ids_are_404_everywhere, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let a = s.org("Riverside").await;
    let z = s.org("Lakeside").await;
    let admin_a = s.enrolled_user(a, "admin.a", &[Role::OrgAdmin]).await;
    let admin_z = s.enrolled_user(z, "admin.z", &[Role::OrgAdmin]).await;
    let victim = s.enrolled_user(a, "dr.a", &[Role::Clinician]).await;
    let tz = s.login(&admin_z).await;
    let id = victim.id;
    let (st, body) = s.get(&format!("/api/v1/users/{id}"), Some(&tz)).await;
    assert_eq!((st, body["code"].as_str()), (404, Some("not_found")));
    for path in [format!("/api/v1/users/{id}/deactivate"), format!("/api/v1/users/{id}/mfa/reset")] {
        assert_eq!(s.post(&path, Some(&tz), json!({})).await.0, 404, "{path}");
    }
    assert_eq!(
        s.put(&format!("/api/v1/users/{id}/roles"), Some(&tz), json!({"roles": ["nurse"]})).await.0,
        404
    );
    let (_, list) = s.get("/api/v1/users", Some(&tz)).await;
    let names: Vec<&str> =
        list["users"].as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin.z"]);
    // The victim is untouched and the right admin sees them.
    let ta = s.login(&admin_a).await;
    let (st, body) = s.get(&format!("/api/v1/users/{id}"), Some(&ta)).await;
    assert_eq!((st, body["status"].as_str()), (200, Some("active")));
    // Ids that do not parse are 404 too.
    assert_eq!(s.get("/api/v1/users/not-a-uuid", Some(&ta)).await.0, 404);
});

both_backends!(non_admins_get_404_on_administration, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let a = s.org("Riverside").await;
    let nurse = s.enrolled_user(a, "nurse.patel", &[Role::Nurse]).await;
    let other = s.user(a, "dr.other", &[Role::Clinician]).await;
    let t = s.login(&nurse).await;
    let (st, _) = s.post("/api/v1/users", Some(&t), json!({"username": "new.user", "display_name": "New", "roles": ["org_admin"], "password": "a-long-enough-passphrase"})).await;
    assert_eq!(st, 404);
    assert_eq!(s.post(&format!("/api/v1/users/{}/deactivate", other.id), Some(&t), json!({})).await.0, 404);
    assert_eq!(s.put("/api/v1/organization/policy", Some(&t), json!({"mfa_required": false, "inactivity_timeout_seconds": 600, "session_lifetime_seconds": 3600})).await.0, 404);
    assert_eq!(s.get("/api/v1/roles", Some(&t)).await.0, 404);
    // The directory is readable by staff.
    assert_eq!(s.get("/api/v1/users", Some(&t)).await.0, 200);
});

both_backends!(admin_manages_users_roles_and_policy, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let a = s.org("Riverside").await;
    let admin = s.enrolled_user(a, "admin", &[Role::OrgAdmin]).await;
    let t = s.login(&admin).await;
    let new = json!({"username": "Dr.New", "display_name": "Dana New", "roles": ["clinician", "nurse"], "password": "quartz-meadow-falcon-12"});
    let (st, created) = s.post("/api/v1/users", Some(&t), new.clone()).await;
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["username"], "dr.new");
    assert_eq!(created["mfa_enrolled"], false);
    assert_eq!(s.post("/api/v1/users", Some(&t), new).await.0, 409);
    let weak =
        json!({"username": "dr.weak", "display_name": "W", "roles": ["nurse"], "password": "iloveyou"});
    let (st, body) = s.post("/api/v1/users", Some(&t), weak).await;
    assert_eq!(
        (st, body["code"].as_str(), body["field"].as_str()),
        (422, Some("password_common"), Some("password"))
    );
    let none = json!({"username": "dr.none", "display_name": "N", "roles": [], "password": "quartz-meadow-falcon-12"});
    assert_eq!(s.post("/api/v1/users", Some(&t), none).await.1["code"], "roles_empty");
    let id = created["id"].as_str().unwrap();
    let (st, body) =
        s.put(&format!("/api/v1/users/{id}/roles"), Some(&t), json!({"roles": ["front_desk"]})).await;
    assert_eq!((st, body["roles"].clone()), (200, json!(["front_desk"])));
    // An admin cannot lock themselves out.
    let (st, body) = s.post(&format!("/api/v1/users/{}/deactivate", admin.id), Some(&t), json!({})).await;
    assert_eq!((st, body["code"].as_str()), (409, Some("cannot_change_self")));
    assert_eq!(
        s.put(&format!("/api/v1/users/{}/roles", admin.id), Some(&t), json!({"roles": ["nurse"]})).await.0,
        409
    );
    assert_eq!(s.get("/api/v1/users?limit=abc", Some(&t)).await.1["code"], "invalid_query");
    assert_eq!(s.get("/api/v1/users?limit=0", Some(&t)).await.0, 422);
    // Roles and their permissions are visible to the admin.
    let (st, roles) = s.get("/api/v1/roles", Some(&t)).await;
    assert_eq!(st, 200);
    let co = roles.as_array().unwrap().iter().find(|r| r["role"] == "compliance_officer").unwrap();
    assert!(co["permissions"].as_array().unwrap().contains(&json!("audit_read")));
    assert!(!co["permissions"].as_array().unwrap().contains(&json!("users_manage")));
    // Policy: validated, then applied to sessions.
    let (st, body) = s
        .put(
            "/api/v1/organization/policy",
            Some(&t),
            json!({"mfa_required": true, "inactivity_timeout_seconds": 5, "session_lifetime_seconds": 3600}),
        )
        .await;
    assert_eq!((st, body["field"].as_str()), (422, Some("inactivity_timeout_seconds")));
    let (st, org) = s
        .put(
            "/api/v1/organization/policy",
            Some(&t),
            json!({"mfa_required": true, "inactivity_timeout_seconds": 60, "session_lifetime_seconds": 3600}),
        )
        .await;
    assert_eq!((st, org["policy"]["inactivity_timeout_seconds"].as_u64()), (200, Some(60)));
    s.clock.advance_secs(61);
    assert_eq!(s.get("/api/v1/me", Some(&t)).await.1["code"], "session_expired");
    let audit = s.app.store().recent_audit(a, 100).await.unwrap();
    for sub in ["user-create", "user-roles", "policy-change"] {
        assert!(audit.iter().any(|e| e.record.subtype == sub), "{sub} audited");
    }
});

both_backends!(deactivation_ends_open_sessions_and_mfa_reset_forces_enrolment, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let a = s.org("Riverside").await;
    let admin = s.enrolled_user(a, "admin", &[Role::OrgAdmin]).await;
    let doc = s.enrolled_user(a, "dr.okafor", &[Role::Clinician]).await;
    let ta = s.login(&admin).await;
    let td = s.login(&doc).await;
    assert_eq!(s.post(&format!("/api/v1/users/{}/mfa/reset", doc.id), Some(&ta), json!({})).await.0, 200);
    assert_eq!(s.get("/api/v1/me", Some(&td)).await.0, 401, "MFA reset ends sessions");
    let (_, body) =
        s.post("/api/v1/auth/login", None, json!({"username": doc.username, "password": doc.password})).await;
    assert_eq!(body["state"], "mfa_enrollment_required");
    let doc = s.enrolled_user(a, "dr.second", &[Role::Clinician]).await;
    let td = s.login(&doc).await;
    let (st, body) = s.post(&format!("/api/v1/users/{}/deactivate", doc.id), Some(&ta), json!({})).await;
    assert_eq!((st, body["status"].as_str()), (200, Some("deactivated")));
    assert_eq!(s.get("/api/v1/me", Some(&td)).await.0, 401);
    let (st, body) =
        s.post("/api/v1/auth/login", None, json!({"username": doc.username, "password": doc.password})).await;
    assert_eq!((st, body["code"].as_str()), (401, Some("invalid_credentials")));
});

both_backends!(malformed_requests_get_problem_json, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let login = s.url("/api/v1/auth/login");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            s.client.post(&login).header("content-type", "application/json").body("{not json"),
            400,
            "malformed_json",
        ),
        (
            s.client.post(&login).json(&json!({"username": "a", "password": "b", "admin": true})),
            422,
            "invalid_body",
        ),
        (s.client.post(&login).json(&json!({"username": 7, "password": "b"})), 422, "invalid_body"),
        (s.client.post(&login).json(&json!({"username": "a"})), 422, "invalid_body"),
        (
            s.client.post(&login).header("content-type", "text/plain").body("{}"),
            415,
            "unsupported_media_type",
        ),
        (
            // The server answers before reading all of it and closes the connection: it must not
            // go back to the pool for the next case.
            s.client
                .post(&login)
                .header("content-type", "application/json")
                .header("connection", "close")
                .body(vec![b' '; 200 * 1024]),
            413,
            "body_too_large",
        ),
        (s.client.get(s.url("/api/v1/nothing-here")), 404, "not_found"),
        (s.client.delete(s.url("/api/v1/me")), 405, "method_not_allowed"),
        (s.client.get(s.url("/api/v1/me")), 401, "unauthenticated"),
        (s.client.get(s.url("/api/v1/me")).header("authorization", "Bearer forged"), 401, "unauthenticated"),
    ];
    for (req, status, code) in cases {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{code}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json", "{code}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], code);
        assert_eq!(body["status"], status);
        assert!(body["type"].as_str().unwrap().ends_with(code));
    }
    // A refused secret is never echoed back.
    let resp = s
        .client
        .post(&login)
        .json(&json!({"username": "a", "password": ["hunter2-secret"]}))
        .send()
        .await
        .unwrap();
    assert!(!resp.text().await.unwrap().contains("hunter2"));
});

both_backends!(system_endpoints_and_security_headers, |b: Backend| async move {
    let s = TestServer::start(b).await;
    for path in ["/healthz", "/readyz"] {
        let (st, body) = s.get(path, None).await;
        assert_eq!((st, body["status"].as_str()), (200, Some("ok")), "{path}");
    }
    let org = s.org("Riverside").await;
    let u = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    let t = s.login(&u).await;
    let resp = s.client.get(s.url("/api/v1/me")).bearer_auth(&t).send().await.unwrap();
    let h = resp.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert!(h.get("strict-transport-security").is_none(), "no HSTS over plain HTTP");
    let metrics = s.client.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_requests_total{"));
    assert!(metrics.contains("route=\"/api/v1/me\""));
    assert!(metrics.contains("http_request_duration_seconds"));
    assert!(!metrics.contains(&u.id.to_string()), "no ids in metrics");
    assert!(!metrics.contains("dr.okafor"));
    let (st, doc) = s.get("/api/openapi.json", None).await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"].as_str().map(|v| v.starts_with("3.1")), Some(true));
    s.stop().await;
});
