//! Captures every log line (TRACE, all targets) of a full sign-in, enrolment, recovery-code use
//! and password change, and checks that no secret appears in them.

use std::io::Write;
use std::sync::{Arc, Mutex};

use haven_domain::roles::Role;
use haven_testkit::{Backend, TestServer};
use serde_json::json;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sign_in_and_enrolment_logs_no_secret() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let s = TestServer::start(Backend::Sqlite).await;
    let org = s.org("Riverside").await;
    let u = s.user(org, "dr.okafor", &[Role::Clinician]).await;
    let mut secrets: Vec<String> = vec![u.password.clone()];

    let (_, body) =
        s.post("/api/v1/auth/login", None, json!({"username": u.username, "password": u.password})).await;
    let t1 = body["token"].as_str().unwrap().to_owned();
    let (_, e) = s.post("/api/v1/auth/mfa/totp/enroll", Some(&t1), json!({})).await;
    let secret_b32 = e["secret"].as_str().unwrap().to_owned();
    let secret = data_encoding::BASE32_NOPAD.decode(secret_b32.as_bytes()).unwrap();
    let code = s.code(&secret);
    let (st, done) = s.post("/api/v1/auth/mfa/totp/confirm", Some(&t1), json!({"code": code})).await;
    assert_eq!(st, 200);
    let t2 = done["session"]["token"].as_str().unwrap().to_owned();
    let codes: Vec<String> =
        done["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(s.get("/api/v1/me", Some(&t2)).await.0, 200);

    // Sign in again with a recovery code, then change the password.
    let (_, body) =
        s.post("/api/v1/auth/login", None, json!({"username": u.username, "password": u.password})).await;
    let t3 = body["token"].as_str().unwrap().to_owned();
    let (st, body) = s.post("/api/v1/auth/mfa/verify", Some(&t3), json!({"code": codes[0]})).await;
    assert_eq!(st, 200);
    let t4 = body["token"].as_str().unwrap().to_owned();
    let new_password = "harbour-violet-compass-31".to_owned();
    let (st, _) = s
        .post(
            "/api/v1/auth/password",
            Some(&t4),
            json!({"current_password": u.password, "new_password": new_password}),
        )
        .await;
    assert_eq!(st, 204);
    // And a failed attempt with a password-like username.
    s.post(
        "/api/v1/auth/login",
        None,
        json!({"username": "typed-my-password-here-Zq9", "password": "Zq9-secret-guess"}),
    )
    .await;
    s.stop().await;

    secrets.extend([secret_b32, code, t1, t2, t3, t4, new_password, "Zq9-secret-guess".into()]);
    secrets.extend(codes);
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("request"), "the capture must have seen the request log lines");
    assert!(logs.lines().count() > 20, "TRACE capture is working");
    for secret in &secrets {
        assert!(!logs.contains(secret.as_str()), "a secret appeared in the logs");
    }
    // The failed username is not logged either (it may be a mistyped password).
    assert!(!logs.contains("typed-my-password-here-Zq9"));
}
