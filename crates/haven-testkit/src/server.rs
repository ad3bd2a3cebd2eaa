//! An in-process Haven on 127.0.0.1:0 with a test clock and cheap password hashing.

use std::sync::{Arc, Mutex};

use haven_app::admin::CreateUser;
use haven_app::{Actor, App, AppSettings, OsEntropy};
use haven_crypto::Secret;
use haven_crypto::password::Argon2Cost;
use haven_crypto::totp::TotpSecret;
use haven_domain::OrgId;
use haven_domain::roles::Role;
use haven_domain::{Clock, UserId};
use haven_store::{Store, StoreOptions};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{Backend, TestClock, TestDb};

/// A running server and what a test needs to drive it.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The application behind it (for direct setup and inspection).
    pub app: App,
    /// The server's clock.
    pub clock: TestClock,
    /// An HTTP client (no cookie store: tests pass tokens explicitly).
    pub client: reqwest::Client,
    /// The database (kept alive for the server's lifetime).
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A user created by a test, with what it takes to sign in as them.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Id.
    pub id: UserId,
    /// Organisation.
    pub org: OrgId,
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
    /// TOTP secret, once enrolled.
    pub totp: Option<Vec<u8>>,
}

/// A strong password that passes the rules.
pub const PASSWORD: &str = "plum-kettle-orbit-7291";

impl TestServer {
    /// Starts a server on `backend` with default settings (cheap Argon2).
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server, letting the test adjust the settings.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut AppSettings)) -> Self {
        let http = haven_http::HttpSettings { json_body_limit: 64 * 1024, ..Default::default() };
        Self::start_custom(backend, tweak, http).await
    }

    /// Starts a server with adjusted use-case and HTTP settings.
    pub async fn start_custom(
        backend: Backend,
        tweak: impl FnOnce(&mut AppSettings),
        http: haven_http::HttpSettings,
    ) -> Self {
        let db = TestDb::new(backend).await;
        let store = Store::open(db.url(), &StoreOptions::default()).await.expect("open store");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", tcp.local_addr().expect("addr"));
        let mut settings = AppSettings {
            argon2: Argon2Cost { memory_kib: 1024, iterations: 1, parallelism: 1 },
            public_url: base.clone(),
            ..AppSettings::default()
        };
        tweak(&mut settings);
        let clock = TestClock::new();
        let entropy: Arc<Mutex<dyn haven_domain::Entropy + Send>> = Arc::new(Mutex::new(OsEntropy));
        let app = App::new(store, crate::test_keys(), db.blobs(), settings, Arc::new(clock.clone()), entropy)
            .expect("app");
        let router = haven_http::router(haven_http::HttpState::new(app.clone(), http));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            haven_http::serve::serve(tcp, None, router, async move {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        TestServer {
            base,
            app,
            clock,
            client: reqwest::Client::new(),
            db,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Another application (a second node, or this one after a crash) on the same database,
    /// clock and keys, with the same settings.
    pub async fn another_app(&self) -> App {
        let store = Store::open(self.db.url(), &StoreOptions::default()).await.expect("open store");
        let entropy: Arc<Mutex<dyn haven_domain::Entropy + Send>> = Arc::new(Mutex::new(OsEntropy));
        let settings = self.app.settings().clone();
        App::new(store, crate::test_keys(), self.db.blobs(), settings, Arc::new(self.clock.clone()), entropy)
            .expect("app")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.app.store().close().await;
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Creates an organisation as the operator.
    pub async fn org(&self, name: &str) -> OrgId {
        self.app.create_org(&Actor::Operator, name).await.expect("create org").id
    }

    /// Creates a user without MFA.
    pub async fn user(&self, org: OrgId, username: &str, roles: &[Role]) -> TestUser {
        let input = CreateUser {
            username: username.into(),
            display_name: format!("Test {username}"),
            roles: roles.to_vec(),
            password: Secret::new(PASSWORD.into()),
        };
        let u = self.app.create_user(&Actor::Operator, org, input).await.expect("create user");
        TestUser { id: u.id, org, username: u.username, password: PASSWORD.into(), totp: None }
    }

    /// Creates a user and enrols TOTP through the API; returns the user.
    pub async fn enrolled_user(&self, org: OrgId, username: &str, roles: &[Role]) -> TestUser {
        let mut u = self.user(org, username, roles).await;
        let (status, body) = self
            .post("/api/v1/auth/login", None, json!({"username": u.username, "password": u.password}))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "mfa_enrollment_required");
        let token = body["token"].as_str().unwrap().to_owned();
        let (status, e) = self.post("/api/v1/auth/mfa/totp/enroll", Some(&token), json!({})).await;
        assert_eq!(status, 200, "{e}");
        let secret = data_encoding::BASE32_NOPAD.decode(e["secret"].as_str().unwrap().as_bytes()).unwrap();
        let code = self.code(&secret);
        let (status, done) =
            self.post("/api/v1/auth/mfa/totp/confirm", Some(&token), json!({"code": code})).await;
        assert_eq!(status, 200, "{done}");
        u.totp = Some(secret);
        u
    }

    /// The TOTP code for `secret` at the server's current time.
    pub fn code(&self, secret: &[u8]) -> String {
        TotpSecret::from_bytes(secret.to_vec()).code_at(self.clock.now().as_second() as u64)
    }

    /// Signs in fully (password, then TOTP), moving the clock one step so the code is fresh.
    pub async fn login(&self, u: &TestUser) -> String {
        self.clock.advance_secs(30);
        let (status, body) = self
            .post("/api/v1/auth/login", None, json!({"username": u.username, "password": u.password}))
            .await;
        assert_eq!(status, 200, "{body}");
        let token = body["token"].as_str().unwrap().to_owned();
        let Some(secret) = &u.totp else { return token };
        let (status, body) =
            self.post("/api/v1/auth/mfa/verify", Some(&token), json!({"code": self.code(secret)})).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "active");
        body["token"].as_str().unwrap().to_owned()
    }

    /// POSTs JSON, returning the status and the JSON body (Null when empty).
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("request")).await
    }

    /// PUTs JSON.
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let mut req = self.client.put(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("request")).await
    }

    /// DELETEs.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.delete(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("request")).await
    }

    /// Uploads a file to a conversation (`x-file-name` names it), as the web client does.
    pub async fn upload(&self, token: &str, conv: &str, name: &str, bytes: &[u8]) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(&format!("/api/v1/conversations/{conv}/attachments")))
            .bearer_auth(token)
            .header("x-file-name", name)
            .body(bytes.to_vec())
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GETs JSON.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        Self::read(req.send().await.expect("request")).await
    }

    async fn read(resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }
}
