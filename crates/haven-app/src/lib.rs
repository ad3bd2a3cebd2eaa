//! Haven's use cases. Each public method of [`App`] is one thing a person or a client can do:
//! it checks permissions, applies the domain rules, and calls the store once for the write,
//! passing the audit record that goes into the same transaction.
//!
//! Nothing here knows about HTTP. Time comes from the injected [`Clock`], randomness from the
//! injected entropy source, so tests run on a fixed clock.

pub mod admin;
pub mod attachments;
pub mod audit;
pub mod audit_fhir;
pub mod audit_verify;
pub mod auth;
mod caches;
pub mod consent_fhir;
pub mod demo;
mod error;
pub mod inbound;
pub mod keys;
pub mod messaging;
pub mod outbox;
pub mod patient_link;
pub mod patient_thread;
pub mod patients;
pub mod realtime;
pub mod texting;
pub mod views;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use haven_crypto::envelope::{DataKey, MasterKeyring};
use haven_crypto::password::{Argon2Cost, PasswordHasher};
use haven_crypto::seal::{MasterKey, SealingKey};
use haven_domain::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
use haven_domain::messaging::MessageLimits;
use haven_domain::org::OrgPolicy;
use haven_domain::roles::Permission;
use haven_domain::throttle::ThrottlePolicy;
use haven_domain::user::User;
use haven_domain::{Clock, Entropy, OrgId, SessionId, UserId};
use haven_store::Store;
use haven_store::blob::BlobStore;
use realtime::{Bus, Hub, LocalBus};

pub use error::{AppError, AppResult};

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        getrandom::fill(dest).expect("the operating system's random source failed");
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// Settings of the use cases, validated by the binary from its configuration.
#[derive(Debug, Clone)]
pub struct AppSettings {
    /// Argon2id cost for password hashing.
    pub argon2: Argon2Cost,
    /// Failed sign-ins allowed per account.
    pub account_throttle: ThrottlePolicy,
    /// Failed sign-ins and codes allowed per source address.
    pub source_throttle: ThrottlePolicy,
    /// Failed MFA codes allowed per account.
    pub mfa_throttle: ThrottlePolicy,
    /// Name shown in authenticator apps ("Haven").
    pub totp_issuer: String,
    /// This server's name in audit records (FHIR AuditEvent.source).
    pub node_name: String,
    /// Policy given to new organisations.
    pub default_policy: OrgPolicy,
    /// Limits on messages (body size, expiry, members).
    pub message_limits: MessageLimits,
    /// Largest attachment, in bytes.
    pub max_attachment_bytes: usize,
    /// Frames queued per WebSocket before a slow client is disconnected (to resume).
    pub socket_queue: usize,
    /// This server's address as patients and providers reach it (secure links, webhook URLs).
    pub public_url: String,
    /// Patient texting: quiet hours, caps, link lifetime.
    pub texting: texting::TextingSettings,
}

impl Default for AppSettings {
    fn default() -> Self {
        let window = jiff::SignedDuration::from_secs(15 * 60);
        Self {
            argon2: Argon2Cost::default(),
            account_throttle: ThrottlePolicy { max_failures: 5, window },
            source_throttle: ThrottlePolicy { max_failures: 50, window },
            mfa_throttle: ThrottlePolicy { max_failures: 5, window },
            totp_issuer: "Haven".into(),
            node_name: "haven".into(),
            default_policy: OrgPolicy::default(),
            message_limits: MessageLimits::default(),
            max_attachment_bytes: 25 * 1024 * 1024,
            socket_queue: 256,
            public_url: "https://127.0.0.1:8443".into(),
            texting: texting::TextingSettings::default(),
        }
    }
}

/// Where a request came from, for audit records and per-source throttling.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The client's network address (after trusted-proxy resolution).
    pub address: Option<String>,
    /// The client's User-Agent, truncated to 256 characters.
    pub user_agent: Option<String>,
    /// Whether the client made this request by itself (a refresh after reconnecting, a
    /// preview), not because the user did something: it does not count as activity for the
    /// inactivity timeout.
    pub background: bool,
}

impl RequestMeta {
    /// Builds request metadata, truncating the User-Agent.
    pub fn new(address: Option<String>, user_agent: Option<&str>) -> Self {
        Self { address, user_agent: user_agent.map(|ua| ua.chars().take(256).collect()), background: false }
    }

    /// Marks the request as the client's own, not the user's (see [`RequestMeta::background`]).
    pub fn in_background(mut self, background: bool) -> Self {
        self.background = background;
        self
    }
}

/// A signed-in user acting through a session (the result of authentication).
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user.
    pub user: User,
    /// Their organisation's policy.
    pub policy: OrgPolicy,
    /// The session.
    pub session_id: SessionId,
    /// Where the request came from.
    pub meta: RequestMeta,
}

impl Principal {
    /// The user's organisation.
    pub fn org(&self) -> OrgId {
        self.user.org_id
    }

    /// Fails with NotFound unless the user holds `p`: what a user may not do, they may not
    /// learn exists either.
    pub fn require(&self, p: Permission) -> AppResult<()> {
        if self.user.roles.allows(p) { Ok(()) } else { Err(AppError::NotFound) }
    }

    /// The audit agent for this principal.
    pub fn agent(&self) -> AuditAgent {
        AuditAgent {
            user_id: Some(self.user.id),
            role: Some(self.user.roles.primary()),
            address: self.meta.address.clone(),
            session_id: Some(self.session_id),
            user_agent: self.meta.user_agent.clone(),
            system: None,
        }
    }
}

/// Who performs an administrative action: a signed-in user, or the operator at the CLI.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A signed-in user (permission-checked).
    User(Box<Principal>),
    /// The server operator through `haven admin` (has shell access to the server already).
    Operator,
}

impl Actor {
    fn agent(&self) -> AuditAgent {
        match self {
            Actor::User(p) => p.agent(),
            Actor::Operator => AuditAgent { system: Some("cli".into()), ..AuditAgent::default() },
        }
    }

    /// The organisation the actor may act in: its own, or (operator) the one named.
    fn org_scope(&self, requested: OrgId) -> OrgId {
        match self {
            Actor::User(p) => p.org(),
            Actor::Operator => requested,
        }
    }

    fn require(&self, p: Permission) -> AppResult<()> {
        match self {
            Actor::User(u) => u.require(p),
            Actor::Operator => Ok(()),
        }
    }
}

/// The server's keys, loaded by the binary from outside the database.
#[derive(Debug)]
pub struct Keys {
    /// The master keys by version (wrap every other key; seal TOTP secrets). The highest
    /// version is current; there is at least one.
    pub masters: Vec<(u32, MasterKey)>,
    /// Signs audit-log checkpoints; its name is the log's origin.
    pub audit_signer: haven_audit::checkpoint::NoteSigner,
}

/// The application: every use case hangs off this.
#[derive(Clone)]
pub struct App {
    store: Store,
    clock: Arc<dyn Clock>,
    entropy: Arc<Mutex<dyn Entropy + Send>>,
    hasher: PasswordHasher,
    totp_keys: Arc<RwLock<Vec<SealingKey>>>,
    key_reload: Option<keys::KeyReload>,
    audit_signer: Arc<haven_audit::checkpoint::NoteSigner>,
    settings: Arc<AppSettings>,
    keyring: Arc<RwLock<MasterKeyring>>,
    org_keys: Arc<RwLock<HashMap<OrgId, DataKey>>>,
    blobs: Arc<dyn BlobStore>,
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    texting: Arc<outbox::TextingRuntime>,
    caches: Arc<caches::Caches>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("backend", &self.store.backend()).finish_non_exhaustive()
    }
}

impl App {
    /// Wires the application.
    pub fn new(
        store: Store,
        keys: Keys,
        blobs: Arc<dyn BlobStore>,
        settings: AppSettings,
        clock: Arc<dyn Clock>,
        entropy: Arc<Mutex<dyn Entropy + Send>>,
    ) -> AppResult<Self> {
        let mut seed = [0u8; 16];
        entropy.lock().expect("entropy lock").fill(&mut seed);
        let hasher = PasswordHasher::new(settings.argon2, seed)
            .map_err(|e| AppError::Internal(format!("argon2 settings: {e}")))?;
        if keys.masters.is_empty() {
            return Err(AppError::Internal("no master key".into()));
        }
        let (ring, totp_keys) = keys::derive(&keys.masters);
        let hub = Arc::new(Hub::new(settings.socket_queue));
        Ok(Self {
            store,
            clock,
            entropy,
            hasher,
            totp_keys: Arc::new(RwLock::new(totp_keys)),
            key_reload: None,
            audit_signer: Arc::new(keys.audit_signer),
            settings: Arc::new(settings),
            keyring: Arc::new(RwLock::new(ring)),
            org_keys: Arc::default(),
            blobs,
            bus: Arc::new(LocalBus(hub.clone())),
            hub,
            texting: Arc::default(),
            caches: Arc::default(),
        })
    }

    /// Lets the application ask its key provider again when it meets a master-key version it
    /// has not loaded (a rotation by another process).
    pub fn with_key_provider(mut self, reload: keys::KeyReload) -> Self {
        self.key_reload = Some(reload);
        self
    }

    /// Makes this node one of several on one PostgreSQL: what it publishes also goes, as ids
    /// only, to the returned queue, which a transport between the nodes (NATS) drains; what
    /// the transport receives from the others is given to [`Self::hub`]. Call before the
    /// application is cloned.
    pub fn with_relay(mut self, capacity: usize) -> (Self, realtime::Outgoing) {
        let (bus, rx) = realtime::RelayBus::new(self.hub.clone(), capacity);
        self.bus = Arc::new(bus);
        (self, rx)
    }

    /// This node's real-time hub (sockets register here).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Closes the real-time sockets of ended sessions (on every node, through the bus).
    fn close_sockets(&self, user: UserId, only: Option<SessionId>, except: Option<SessionId>) {
        self.bus.publish(realtime::BusMessage::SessionsEnded { user, only, except });
    }

    /// The application's settings.
    pub fn settings(&self) -> &AppSettings {
        &self.settings
    }

    /// The store (for readiness checks and shutdown).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The current time from the injected clock.
    pub fn now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    fn random<const N: usize>(&self) -> [u8; N] {
        let mut out = [0u8; N];
        self.entropy.lock().expect("entropy lock").fill(&mut out);
        out
    }

    /// Runs `make` with the entropy source, e.g. to draw a new id.
    fn new_id<T>(&self, make: impl FnOnce(&mut &mut (dyn Entropy + Send)) -> T) -> T {
        let mut guard = self.entropy.lock().expect("entropy lock");
        let mut source: &mut (dyn Entropy + Send) = &mut *guard;
        make(&mut source)
    }

    fn record(
        &self,
        org: Option<OrgId>,
        event_type: &str,
        subtype: &str,
        action: AuditAction,
        outcome: AuditOutcome,
        agent: AuditAgent,
    ) -> AuditRecord {
        let mut agent = agent;
        if agent.system.is_none() && agent.user_id.is_none() {
            agent.system = Some(self.settings.node_name.clone());
        }
        AuditRecord::new(org, event_type, subtype, action, outcome, agent)
    }
}
