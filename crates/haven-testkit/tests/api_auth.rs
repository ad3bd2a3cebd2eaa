//! Sign-in, MFA, sessions and throttling through the HTTP API, on both backends.

use haven_domain::roles::Role;
use haven_testkit::{Backend, TestServer, both_backends};
use serde_json::json;

both_backends!(full_sign_in_with_totp_then_me, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let u = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    s.clock.advance_secs(30);
    let (st, body) =
        s.post("/api/v1/auth/login", None, json!({"username": "DR.OKAFOR", "password": u.password})).await;
    assert_eq!(st, 200);
    assert_eq!(body["state"], "mfa_required");
    let pending = body["token"].as_str().unwrap().to_owned();
    assert_eq!(pending.len(), 43, "256-bit token");
    // The pending session can do nothing else.
    let (st, body) = s.get("/api/v1/me", Some(&pending)).await;
    assert_eq!((st, body["code"].as_str()), (403, Some("mfa_required")));
    // A wrong code is refused.
    let (st, body) = s.post("/api/v1/auth/mfa/verify", Some(&pending), json!({"code": "000000"})).await;
    assert_eq!((st, body["code"].as_str()), (401, Some("invalid_code")));
    let code = s.code(u.totp.as_ref().unwrap());
    let (st, body) = s.post("/api/v1/auth/mfa/verify", Some(&pending), json!({"code": code})).await;
    assert_eq!(st, 200, "{body}");
    let active = body["token"].as_str().unwrap().to_owned();
    assert_ne!(active, pending, "the token is replaced when sign-in completes");
    let (st, _) = s.get("/api/v1/me", Some(&pending)).await;
    assert_eq!(st, 401, "the pending token no longer works");
    let (st, me) = s.get("/api/v1/me", Some(&active)).await;
    assert_eq!(st, 200);
    assert_eq!(me["username"], "dr.okafor");
    assert_eq!(me["organization_id"], org.to_string());
    assert_eq!(me["roles"], json!(["clinician"]));
    assert_eq!(me["mfa_enrolled"], true);
    assert_eq!(me["recovery_codes_left"], 10);
    // The same code cannot sign in a second time (no reuse), even in a new sign-in.
    let (_, body) =
        s.post("/api/v1/auth/login", None, json!({"username": "dr.okafor", "password": u.password})).await;
    let again = body["token"].as_str().unwrap().to_owned();
    let (st, _) = s.post("/api/v1/auth/mfa/verify", Some(&again), json!({"code": code})).await;
    assert_eq!(st, 401);
});

both_backends!(mfa_is_required_by_policy_and_recovery_codes_work_once, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let u = s.user(org, "nurse.patel", &[Role::Nurse]).await;
    let (_, body) =
        s.post("/api/v1/auth/login", None, json!({"username": u.username, "password": u.password})).await;
    assert_eq!(body["state"], "mfa_enrollment_required");
    let t = body["token"].as_str().unwrap().to_owned();
    for path in ["/api/v1/me", "/api/v1/users", "/api/v1/organization"] {
        let (st, body) = s.get(path, Some(&t)).await;
        assert_eq!((st, body["code"].as_str()), (403, Some("mfa_enrollment_required")), "{path}");
    }
    let (st, e) = s.post("/api/v1/auth/mfa/totp/enroll", Some(&t), json!({})).await;
    assert_eq!(st, 200);
    assert!(e["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/Haven:nurse.patel?secret="));
    assert!(e["qr_svg"].as_str().unwrap().contains("<svg"));
    let secret = data_encoding::BASE32_NOPAD.decode(e["secret"].as_str().unwrap().as_bytes()).unwrap();
    let (st, _) = s.post("/api/v1/auth/mfa/totp/confirm", Some(&t), json!({"code": "123456"})).await;
    assert_eq!(st, 401);
    let (st, done) =
        s.post("/api/v1/auth/mfa/totp/confirm", Some(&t), json!({"code": s.code(&secret)})).await;
    assert_eq!(st, 200, "{done}");
    let codes: Vec<String> =
        done["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 10);
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 10);
    let active = done["session"]["token"].as_str().unwrap();
    assert_eq!(s.get("/api/v1/me", Some(active)).await.0, 200);
    // Enrolling again is refused.
    let (st, _) = s.post("/api/v1/auth/mfa/totp/enroll", Some(active), json!({})).await;
    assert_eq!(st, 409);
    // A recovery code signs in once, typed loosely.
    for expected in [200, 401] {
        let (_, body) =
            s.post("/api/v1/auth/login", None, json!({"username": u.username, "password": u.password})).await;
        let p = body["token"].as_str().unwrap().to_owned();
        let typed = codes[3].to_uppercase().replace('-', " ");
        let (st, _) = s.post("/api/v1/auth/mfa/verify", Some(&p), json!({"code": typed})).await;
        assert_eq!(st, expected);
    }
});

both_backends!(inactivity_timeout_and_lifetime_end_sessions, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let u = s.enrolled_user(org, "dr.lindqvist", &[Role::Clinician]).await;
    let t = s.login(&u).await;
    s.clock.advance_secs(14 * 60);
    assert_eq!(s.get("/api/v1/me", Some(&t)).await.0, 200, "activity within the timeout");
    s.clock.advance_secs(14 * 60);
    assert_eq!(s.get("/api/v1/me", Some(&t)).await.0, 200, "the previous request counted as activity");
    s.clock.advance_secs(15 * 60);
    let (st, body) = s.get("/api/v1/me", Some(&t)).await;
    assert_eq!((st, body["code"].as_str()), (401, Some("session_expired")));
    let (st, body) = s.get("/api/v1/me", Some(&t)).await;
    assert_eq!((st, body["code"].as_str()), (401, Some("unauthenticated")), "the ended session stays ended");
    let audit = s.app.store().recent_audit(org, 50).await.unwrap();
    assert!(audit.iter().any(|a| a.record.subtype == "session-timeout"
        && a.record.outcome_code.as_deref() == Some("inactivity_timeout")));
    // Absolute lifetime: 12 hours however busy.
    let t = s.login(&u).await;
    for _ in 0..(12 * 60 / 10) {
        s.clock.advance_secs(10 * 60);
        let (st, _) = s.get("/api/v1/me", Some(&t)).await;
        if st == 401 {
            return;
        }
    }
    panic!("the session outlived its 12-hour lifetime");
});

both_backends!(failed_logins_are_throttled_per_account_without_enumeration, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let u = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    let (st, known) = s
        .post("/api/v1/auth/login", None, json!({"username": "dr.okafor", "password": "wrong password!"}))
        .await;
    let (st2, unknown) = s
        .post("/api/v1/auth/login", None, json!({"username": "nobody.here", "password": "wrong password!"}))
        .await;
    assert_eq!((st, st2), (401, 401));
    assert_eq!(known, unknown, "same answer for a wrong password and an unknown account");
    for _ in 0..4 {
        s.post("/api/v1/auth/login", None, json!({"username": "dr.okafor", "password": "wrong password!"}))
            .await;
        s.post("/api/v1/auth/login", None, json!({"username": "nobody.here", "password": "wrong password!"}))
            .await;
    }
    for name in ["dr.okafor", "nobody.here"] {
        let resp = s
            .client
            .post(s.url("/api/v1/auth/login"))
            .json(&json!({"username": name, "password": u.password}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429, "{name}");
        let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry > 0 && retry <= 900, "{retry}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "too_many_attempts");
    }
    // After the window, the right password works again.
    s.clock.advance_secs(15 * 60 + 1);
    let (st, _) =
        s.post("/api/v1/auth/login", None, json!({"username": "dr.okafor", "password": u.password})).await;
    assert_eq!(st, 200);
    let audit = s.app.store().recent_audit(org, 100).await.unwrap();
    assert!(audit.iter().filter(|a| a.record.outcome_code.as_deref() == Some("wrong_password")).count() >= 5);
});

both_backends!(wrong_mfa_codes_are_throttled, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let u = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    s.clock.advance_secs(30);
    let (_, body) =
        s.post("/api/v1/auth/login", None, json!({"username": u.username, "password": u.password})).await;
    let p = body["token"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        assert_eq!(s.post("/api/v1/auth/mfa/verify", Some(&p), json!({"code": "999999"})).await.0, 401);
    }
    let code = s.code(u.totp.as_ref().unwrap());
    let (st, body) = s.post("/api/v1/auth/mfa/verify", Some(&p), json!({"code": code})).await;
    assert_eq!((st, body["code"].as_str()), (429, Some("too_many_attempts")));
    // The refusal itself is a security event.
    let audit = s.app.store().recent_audit(org, 50).await.unwrap();
    let refused = &audit[0].record;
    assert_eq!(
        (refused.subtype.as_str(), refused.outcome_code.as_deref()),
        ("mfa-verify", Some("throttled"))
    );
    assert_eq!(refused.agent.user_id, Some(u.id));
});

both_backends!(a_burst_of_wrong_passwords_cannot_exceed_the_limit, |b: Backend| async move {
    let s = std::sync::Arc::new(TestServer::start(b).await);
    let org = s.org("Riverside").await;
    let u = s.user(org, "dr.okafor", &[Role::Clinician]).await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (s, name) = (s.clone(), u.username.clone());
        tasks.push(tokio::spawn(async move {
            s.post("/api/v1/auth/login", None, json!({"username": name, "password": "wrong-password-123"}))
                .await
                .0
        }));
    }
    let mut wrong = 0;
    for t in tasks {
        if t.await.unwrap() == 401 {
            wrong += 1;
        }
    }
    assert_eq!(wrong, 5, "exactly the allowed number of guesses were checked; the rest were throttled");
});

both_backends!(logout_password_change_and_sign_out_everywhere, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let mut u = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    let a = s.login(&u).await;
    let bb = s.login(&u).await;
    let (st, body) = s
        .post(
            "/api/v1/auth/password",
            Some(&a),
            json!({"current_password": "not it at all", "new_password": "river-stone-lantern-88"}),
        )
        .await;
    assert_eq!((st, body["code"].as_str()), (401, Some("invalid_credentials")));
    let (st, body) = s
        .post(
            "/api/v1/auth/password",
            Some(&a),
            json!({"current_password": u.password, "new_password": "password"}),
        )
        .await;
    assert_eq!((st, body["field"].as_str()), (422, Some("password")));
    let (st, body) = s
        .post(
            "/api/v1/auth/password",
            Some(&a),
            json!({"current_password": u.password, "new_password": "dr.okafor-secret-99"}),
        )
        .await;
    assert_eq!((st, body["code"].as_str()), (422, Some("password_contains_name")));
    let (st, _) = s
        .post(
            "/api/v1/auth/password",
            Some(&a),
            json!({"current_password": u.password, "new_password": "river-stone-lantern-88"}),
        )
        .await;
    assert_eq!(st, 204);
    assert_eq!(s.get("/api/v1/me", Some(&a)).await.0, 200, "the session that changed it stays");
    assert_eq!(s.get("/api/v1/me", Some(&bb)).await.0, 401, "other sessions end");
    u.password = "river-stone-lantern-88".into();
    let c = s.login(&u).await;
    assert_eq!(s.post("/api/v1/auth/logout", Some(&c), json!({})).await.0, 204);
    assert_eq!(s.get("/api/v1/me", Some(&c)).await.0, 401);
    let d = s.login(&u).await;
    assert_eq!(s.post("/api/v1/auth/logout-all", Some(&d), json!({})).await.0, 204);
    assert_eq!(s.get("/api/v1/me", Some(&a)).await.0, 401);
    assert_eq!(s.get("/api/v1/me", Some(&d)).await.0, 401);
});

both_backends!(cookie_sessions_need_a_same_origin_for_writes, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let u = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    s.clock.advance_secs(30);
    let resp = s
        .client
        .post(s.url("/api/v1/auth/login"))
        .json(&json!({"username": u.username, "password": u.password}))
        .send()
        .await
        .unwrap();
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["__Host-haven_session=", "Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let pair = cookie.split(';').next().unwrap().to_owned();
    let verify = |origin: Option<String>| {
        let mut r = s
            .client
            .post(s.url("/api/v1/auth/mfa/verify"))
            .header("cookie", pair.clone())
            .json(&json!({"code": s.code(u.totp.as_ref().unwrap())}));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let evil = verify(Some("https://evil.example".into())).await.unwrap();
    assert_eq!(evil.status(), 403);
    assert_eq!(evil.json::<serde_json::Value>().await.unwrap()["code"], "origin_refused");
    assert_eq!(verify(None).await.unwrap().status(), 403, "a cookie write without Origin is refused");
    let ok = verify(Some(s.base.clone())).await.unwrap();
    assert_eq!(ok.status(), 200);
    let new_cookie = ok.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let me = s.client.get(s.url("/api/v1/me")).header("cookie", new_cookie).send().await.unwrap();
    assert_eq!(me.status(), 200, "a cookie GET needs no Origin");
});

both_backends!(idle_sessions_are_ended_and_recorded_without_being_presented, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let u = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    let busy = s.enrolled_user(org, "dr.busy", &[Role::Clinician]).await;
    let idle = s.login(&u).await;
    let active = s.login(&busy).await;
    assert_eq!(s.app.end_timed_out_sessions().await.unwrap(), 0);
    s.clock.advance_secs(10 * 60);
    assert_eq!(s.get("/api/v1/me", Some(&active)).await.0, 200);
    s.clock.advance_secs(6 * 60);
    // The idle sign-in and the two sessions left open by enrolment time out; the busy one not.
    assert_eq!(s.app.end_timed_out_sessions().await.unwrap(), 3);
    assert_eq!(s.app.end_timed_out_sessions().await.unwrap(), 0, "recorded once");
    let audit = s.app.store().recent_audit(org, 100).await.unwrap();
    let timeouts: Vec<_> = audit.iter().filter(|a| a.record.subtype == "session-timeout").collect();
    assert_eq!(timeouts.len(), 3);
    assert_eq!(timeouts.iter().filter(|t| t.record.agent.user_id == Some(u.id)).count(), 2);
    assert!(timeouts.iter().all(|t| t.record.outcome_code.as_deref() == Some("inactivity_timeout")));
    let (st, body) = s.get("/api/v1/me", Some(&idle)).await;
    assert_eq!((st, body["code"].as_str()), (401, Some("unauthenticated")));
    assert_eq!(s.get("/api/v1/me", Some(&active)).await.0, 200);
});

both_backends!(users_see_and_end_their_own_sessions_only, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let u = s.enrolled_user(org, "dr.okafor", &[Role::Clinician]).await;
    let other = s.enrolled_user(org, "dr.other", &[Role::Clinician]).await;
    s.clock.advance_secs(16 * 60);
    s.app.end_timed_out_sessions().await.unwrap();
    let a = s.login(&u).await;
    let laptop = s.login(&u).await;
    let theirs = s.login(&other).await;
    let (st, list) = s.get("/api/v1/auth/sessions", Some(&a)).await;
    assert_eq!(st, 200, "{list}");
    let list = list.as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list.iter().filter(|x| x["current"] == true).count(), 1);
    assert_eq!(list[0]["address"], "127.0.0.1");
    let laptop_id = list.iter().find(|x| x["current"] == false).unwrap()["id"].as_str().unwrap().to_owned();
    let resp = s
        .client
        .delete(s.url(&format!("/api/v1/auth/sessions/{laptop_id}")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(s.get("/api/v1/me", Some(&laptop)).await.0, 401);
    assert_eq!(s.get("/api/v1/me", Some(&a)).await.0, 200);
    // Someone else's session is not yours to see or end.
    let (_, their_list) = s.get("/api/v1/auth/sessions", Some(&theirs)).await;
    let their_id = their_list[0]["id"].as_str().unwrap().to_owned();
    let resp = s
        .client
        .delete(s.url(&format!("/api/v1/auth/sessions/{their_id}")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(s.get("/api/v1/me", Some(&theirs)).await.0, 200);
});

both_backends!(single_factor_sessions_end_when_mfa_becomes_required_or_enrolled, |b: Backend| async move {
    let s = TestServer::start(b).await;
    let org = s.org("Riverside").await;
    let relaxed = haven_domain::org::OrgPolicy { mfa_required: false, ..Default::default() };
    s.app.set_policy(&haven_app::Actor::Operator, org, relaxed).await.unwrap();
    let u = s.user(org, "dr.okafor", &[Role::Clinician]).await;
    let first = s.login(&u).await;
    let second = s.login(&u).await;
    assert_eq!(s.get("/api/v1/me", Some(&first)).await.0, 200, "single-factor sessions are allowed");
    // Enrolling an authenticator from one session ends the other single-factor one.
    let (st, e) = s.post("/api/v1/auth/mfa/totp/enroll", Some(&second), json!({})).await;
    assert_eq!(st, 200, "{e}");
    let secret = data_encoding::BASE32_NOPAD.decode(e["secret"].as_str().unwrap().as_bytes()).unwrap();
    let (st, done) =
        s.post("/api/v1/auth/mfa/totp/confirm", Some(&second), json!({"code": s.code(&secret)})).await;
    assert_eq!(st, 200, "{done}");
    assert_eq!(s.get("/api/v1/me", Some(&first)).await.0, 401);
    let enrolled = done["session"]["token"].as_str().unwrap().to_owned();
    assert_eq!(s.get("/api/v1/me", Some(&enrolled)).await.0, 200);
    // Requiring MFA ends the single-factor sessions of users without an authenticator only.
    let v = s.user(org, "nurse.patel", &[Role::Nurse]).await;
    let single = s.login(&v).await;
    assert_eq!(s.get("/api/v1/me", Some(&single)).await.0, 200);
    let strict = haven_domain::org::OrgPolicy { mfa_required: true, ..relaxed };
    s.app.set_policy(&haven_app::Actor::Operator, org, strict).await.unwrap();
    assert_eq!(s.get("/api/v1/me", Some(&single)).await.0, 401);
    assert_eq!(s.get("/api/v1/me", Some(&enrolled)).await.0, 200, "a two-factor session stays");
});
