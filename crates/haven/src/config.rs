//! Configuration: a TOML file, then `HAVEN_*` environment variables, then validation into the
//! settings the other crates take. Secrets may also come from `HAVEN_…_FILE`. The commented
//! example (`haven config example`) is generated from the doc comments below, so it cannot
//! drift from what is read.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use confique::Config;

/// Haven's configuration file.
#[derive(Debug, Config)]
pub struct Conf {
    /// Network listener.
    #[config(nested)]
    pub server: ServerConf,
    /// Storage.
    #[config(nested)]
    pub database: DatabaseConf,
    /// Password hashing and sign-in throttling.
    #[config(nested)]
    pub security: SecurityConf,
    /// Encryption and signing keys.
    #[config(nested)]
    pub keys: KeysConf,
    /// The tamper-evident audit log.
    #[config(nested)]
    pub audit: AuditConf,
    /// Messaging limits.
    #[config(nested)]
    pub messaging: MessagingConf,
    /// Patient texting.
    #[config(nested)]
    pub texting: TextingConf,
    /// Several nodes on one database.
    #[config(nested)]
    pub cluster: ClusterConf,
    /// Logging.
    #[config(nested)]
    pub log: LogConf,
}

/// Several Haven nodes serving one organisation set from one PostgreSQL database (behind a
/// load balancer, or simply more sockets than one process may hold): how a message sent on one
/// node reaches the sockets held by the others.
#[derive(Debug, Config)]
pub struct ClusterConf {
    /// The NATS server the nodes share, e.g. `nats://10.0.0.5:4222` (`tls://` for TLS;
    /// credentials as `nats://user:password@host:4222`, so it can also be given as
    /// HAVEN_CLUSTER_NATS_URL_FILE). Unset: this node is alone. Requires PostgreSQL. Only ids
    /// and positions cross it, never content: the other nodes read each event from the database.
    #[config(env = "HAVEN_CLUSTER_NATS_URL")]
    pub nats_url: Option<String>,
    /// The subject the nodes of this deployment publish on; deployments sharing a NATS server
    /// need different ones.
    #[config(env = "HAVEN_CLUSTER_SUBJECT", default = "haven.realtime")]
    pub subject: String,
}

/// Network listener.
#[derive(Debug, Config)]
pub struct ServerConf {
    /// Address and port to listen on. An address other than loopback requires TLS (below) or
    /// `proxy.tls_terminated = true`.
    #[config(env = "HAVEN_SERVER_BIND", default = "127.0.0.1:8080")]
    pub bind: String,
    /// Extra origins (scheme://host[:port]) allowed to make state-changing browser requests,
    /// besides the host the request was sent to. Comma-separated in the environment.
    #[config(env = "HAVEN_SERVER_ALLOWED_ORIGINS", parse_env = confique::env::parse::list_by_comma, default = [])]
    pub allowed_origins: Vec<String>,
    /// This server's name in audit records.
    #[config(env = "HAVEN_SERVER_NODE_NAME", default = "haven")]
    pub node_name: String,
    /// Largest JSON request body accepted, in bytes.
    #[config(env = "HAVEN_SERVER_JSON_BODY_LIMIT", default = 65536)]
    pub json_body_limit: usize,
    /// Run the threads that read requests and write to sockets under Linux's `SCHED_BATCH`
    /// policy (same CPU share, but their wake-ups do not preempt a running thread), so the
    /// database writer's batch, which every send waits on, is not interrupted by them.
    #[config(env = "HAVEN_SERVER_BATCH_SCHEDULING", default = true)]
    pub batch_scheduling: bool,
    /// TLS, terminated by Haven itself.
    #[config(nested)]
    pub tls: TlsConf,
    /// A TLS-terminating reverse proxy in front of Haven.
    #[config(nested)]
    pub proxy: ProxyConf,
}

/// TLS, terminated by Haven itself (rustls; TLS 1.2 and 1.3).
#[derive(Debug, Config)]
pub struct TlsConf {
    /// PEM certificate chain.
    #[config(env = "HAVEN_SERVER_TLS_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key.
    #[config(env = "HAVEN_SERVER_TLS_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

/// A TLS-terminating reverse proxy in front of Haven.
#[derive(Debug, Config)]
pub struct ProxyConf {
    /// Set to true only when every client reaches Haven through a proxy that terminates TLS;
    /// then Haven may listen on a non-loopback address without TLS of its own.
    #[config(env = "HAVEN_SERVER_PROXY_TLS_TERMINATED", default = false)]
    pub tls_terminated: bool,
    /// Addresses of the proxies whose X-Forwarded-For and X-Forwarded-Proto are believed.
    /// Comma-separated in the environment.
    #[config(env = "HAVEN_SERVER_PROXY_TRUSTED", parse_env = confique::env::parse::list_by_comma, default = [])]
    pub trusted: Vec<String>,
}

/// Storage.
#[derive(Debug, Config)]
pub struct DatabaseConf {
    /// `sqlite:///path/to/haven.db` or `postgres://user@host/db`. Default: `haven.db` in the
    /// data directory. May contain a password: can also be given as HAVEN_DATABASE_URL_FILE.
    #[config(env = "HAVEN_DATABASE_URL")]
    pub url: Option<String>,
    /// Connections in the pool. On PostgreSQL the pool has at least two, and the message
    /// writer keeps one more of its own, so Haven opens up to this many plus one.
    #[config(env = "HAVEN_DATABASE_MAX_CONNECTIONS", default = 8)]
    pub max_connections: u32,
}

/// Password hashing and sign-in throttling.
#[derive(Debug, Config)]
pub struct SecurityConf {
    /// Argon2id memory cost in KiB (OWASP minimum 19456).
    #[config(env = "HAVEN_SECURITY_ARGON2_MEMORY_KIB", default = 19456)]
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    #[config(env = "HAVEN_SECURITY_ARGON2_ITERATIONS", default = 2)]
    pub argon2_iterations: u32,
    /// Failed sign-ins allowed per account within the window.
    #[config(env = "HAVEN_SECURITY_MAX_FAILURES_PER_ACCOUNT", default = 5)]
    pub max_failures_per_account: u32,
    /// Failed sign-ins and codes allowed per source address within the window.
    #[config(env = "HAVEN_SECURITY_MAX_FAILURES_PER_SOURCE", default = 50)]
    pub max_failures_per_source: u32,
    /// Wrong MFA codes allowed per account within the window.
    #[config(env = "HAVEN_SECURITY_MAX_MFA_FAILURES", default = 5)]
    pub max_mfa_failures: u32,
    /// Length of the throttling window, in seconds.
    #[config(env = "HAVEN_SECURITY_THROTTLE_WINDOW_SECONDS", default = 900)]
    pub throttle_window_seconds: u32,
}

/// Encryption keys.
#[derive(Debug, Config)]
pub struct KeysConf {
    /// File holding the master keys: one per line, `VERSION:BASE64` (32 bytes; a bare base64
    /// line is version 1). The highest version is current. Generated with mode 0600 on first
    /// start when missing; `haven keys rotate` adds a version. Default: `master.key` in the
    /// data directory.
    #[config(env = "HAVEN_KEYS_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The master keys themselves, instead of a file, for secret managers that inject
    /// environment variables: `VERSION:BASE64` entries separated by commas or new lines.
    #[config(env = "HAVEN_KEYS_MASTER_KEY")]
    pub master_key: Option<String>,
    /// File holding the Ed25519 seed (base64, 32 bytes) that signs audit-log checkpoints.
    /// Generated with mode 0600 on first start when missing. Default: `audit-signing.key` in
    /// the data directory.
    #[config(env = "HAVEN_KEYS_AUDIT_SIGNING_KEY_FILE")]
    pub audit_signing_key_file: Option<PathBuf>,
    /// The audit signing seed itself (base64), instead of a file.
    #[config(env = "HAVEN_KEYS_AUDIT_SIGNING_KEY")]
    pub audit_signing_key: Option<String>,
}

/// Messaging limits.
#[derive(Debug, Config)]
pub struct MessagingConf {
    /// Largest message body, in bytes.
    #[config(env = "HAVEN_MESSAGING_MAX_BODY_BYTES", default = 16384)]
    pub max_body_bytes: usize,
    /// Longest expiry a sender may set, in days.
    #[config(env = "HAVEN_MESSAGING_MAX_EXPIRY_DAYS", default = 30)]
    pub max_expiry_days: u32,
    /// Most members of a group conversation.
    #[config(env = "HAVEN_MESSAGING_MAX_MEMBERS", default = 1000)]
    pub max_members: usize,
    /// Largest attachment, in bytes (default 25 MiB).
    #[config(env = "HAVEN_MESSAGING_MAX_ATTACHMENT_BYTES", default = 26214400)]
    pub max_attachment_bytes: usize,
    /// Frames queued for one WebSocket before a client that does not keep up is disconnected
    /// (it reconnects and resumes without loss).
    #[config(env = "HAVEN_MESSAGING_SOCKET_QUEUE", default = 256)]
    pub socket_queue: usize,
}

/// Patient texting: rules the system enforces for every organisation. Each organisation sets
/// up its own SMS provider in the admin API.
#[derive(Debug, Config)]
pub struct TextingConf {
    /// This server's address as patients' phones and SMS providers reach it, e.g.
    /// `https://haven.riverside-clinic.org`. Secure links and webhook URLs are built from it, and
    /// Twilio's signatures are checked against it. Default: the listener's own address.
    #[config(env = "HAVEN_TEXTING_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Start of the daily sending window in the patient's local time (HH:MM). Non-urgent texts
    /// wait until it opens.
    #[config(env = "HAVEN_TEXTING_WINDOW_START", default = "08:00")]
    pub window_start: String,
    /// End of the daily sending window (HH:MM), e.g. 20:00 where a state requires it.
    #[config(env = "HAVEN_TEXTING_WINDOW_END", default = "21:00")]
    pub window_end: String,
    /// Zones patients of unknown zone may be in; the strictest window across them applies.
    #[config(env = "HAVEN_TEXTING_FALLBACK_ZONES", parse_env = confique::env::parse::list_by_comma,
        default = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "America/Anchorage", "Pacific/Honolulu"])]
    pub fallback_zones: Vec<String>,
    /// Stricter sending windows by ISO 3166-2 region, as `REGION=HH:MM-HH:MM` (e.g. Florida's,
    /// Oklahoma's and Maryland's 8 a.m. to 8 p.m. rules). They only narrow the window above; a
    /// patient whose region is unknown gets the strictest of them.
    #[config(env = "HAVEN_TEXTING_REGIONAL_WINDOWS", parse_env = confique::env::parse::list_by_comma,
        default = ["US-FL=08:00-20:00", "US-OK=08:00-20:00", "US-MD=08:00-20:00"])]
    pub regional_windows: Vec<String>,
    /// Texts of one purpose to one number per rolling day.
    #[config(env = "HAVEN_TEXTING_MAX_PER_DAY", default = 1)]
    pub max_per_day: u32,
    /// Texts of one purpose to one number per rolling week.
    #[config(env = "HAVEN_TEXTING_MAX_PER_WEEK", default = 3)]
    pub max_per_week: u32,
    /// How long a secure link works, in hours.
    #[config(env = "HAVEN_TEXTING_LINK_LIFETIME_HOURS", default = 168)]
    pub link_lifetime_hours: u32,
}

/// The tamper-evident audit log.
#[derive(Debug, Config)]
pub struct AuditConf {
    /// The log's unique name in its signed checkpoints, e.g. `haven.riverside-clinic.org/audit`.
    /// Auditors pin it with the public key; do not change it once checkpoints exist.
    #[config(env = "HAVEN_AUDIT_ORIGIN", default = "haven/audit")]
    pub origin: String,
    /// How often the server signs a checkpoint of the log when it has grown, in seconds.
    #[config(env = "HAVEN_AUDIT_CHECKPOINT_INTERVAL_SECONDS", default = 300)]
    pub checkpoint_interval_seconds: u64,
    /// Forwarding to a syslog collector (SIEM).
    #[config(nested)]
    pub syslog: SyslogConf,
}

/// Forwarding every audit entry to a syslog collector: RFC 5424 messages over TLS (RFC 5425),
/// IHE ATNA style, in log order. The log itself is the durable buffer: while the collector is
/// down nothing is lost, and delivery resumes where it stopped (at least once; the entry's
/// sequence number is in the structured data for de-duplication).
#[derive(Debug, Config)]
pub struct SyslogConf {
    /// The collector, `host:port` (6514 is the syslog-over-TLS port). Unset: no forwarding.
    #[config(env = "HAVEN_AUDIT_SYSLOG_ADDRESS")]
    pub address: Option<String>,
    /// The name to verify in the collector's certificate. Default: the host of `address`.
    #[config(env = "HAVEN_AUDIT_SYSLOG_SERVER_NAME")]
    pub server_name: Option<String>,
    /// PEM file of the CA(s) that issued the collector's certificate. Required with `address`.
    #[config(env = "HAVEN_AUDIT_SYSLOG_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// How often to look for new entries, in milliseconds.
    #[config(env = "HAVEN_AUDIT_SYSLOG_POLL_MS", default = 1000)]
    pub poll_ms: u64,
}

/// Logging.
#[derive(Debug, Config)]
pub struct LogConf {
    /// A tracing filter: `info`, `haven=debug,info`, ...
    #[config(env = "HAVEN_LOG_LEVEL", default = "info,sqlx=warn")]
    pub level: String,
    /// `text` or `json`.
    #[config(env = "HAVEN_LOG_FORMAT", default = "text")]
    pub format: String,
}

/// Loads the configuration: the file (if given; it must exist), then the environment.
pub fn load(file: Option<&Path>) -> anyhow::Result<Conf> {
    let mut builder = Conf::builder().env();
    if let Some(f) = file {
        if !f.is_file() {
            bail!("the configuration file {} does not exist", f.display());
        }
        builder = builder.file(f);
    }
    let mut conf = builder.load().context("invalid configuration")?;
    if let Some(url) = secret_from_file("HAVEN_DATABASE_URL", conf.database.url.is_some())? {
        conf.database.url = Some(url);
    }
    if let Some(url) = secret_from_file("HAVEN_CLUSTER_NATS_URL", conf.cluster.nats_url.is_some())? {
        conf.cluster.nats_url = Some(url);
    }
    Ok(conf)
}

/// Reads `NAME_FILE` when set; refuses when both `NAME` (or the file setting) and `NAME_FILE`
/// are given.
fn secret_from_file(name: &str, already_set: bool) -> anyhow::Result<Option<String>> {
    let var = format!("{name}_FILE");
    let Some(path) = std::env::var_os(&var) else { return Ok(None) };
    if already_set {
        bail!("{name} and {var} are both set: use one");
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{var}: cannot read {}", Path::new(&path).display()))?;
    Ok(Some(text.trim().to_owned()))
}

/// The commented example configuration.
pub fn example() -> String {
    confique::toml::template::<Conf>(confique::toml::FormatOptions::default())
}

/// Where and how to listen, validated.
#[derive(Debug)]
pub struct Listen {
    /// The address.
    pub bind: SocketAddr,
    /// Certificate and key, when Haven terminates TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Trusted proxies.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Conf {
    /// Validates the listener settings; refuses a non-loopback address without TLS unless a
    /// TLS-terminating proxy is declared.
    pub fn listen(&self, bind_override: Option<&str>) -> anyhow::Result<Listen> {
        let raw = bind_override.unwrap_or(&self.server.bind);
        let bind: SocketAddr = raw
            .parse()
            .with_context(|| format!("server.bind: {raw:?} is not an address:port such as 127.0.0.1:8080"))?;
        let tls = match (&self.server.tls.cert_file, &self.server.tls.key_file) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => bail!("server.tls: set both cert_file and key_file, or neither"),
        };
        if !bind.ip().is_loopback() && tls.is_none() && !self.server.proxy.tls_terminated {
            bail!(
                "refusing to listen on {bind} without TLS: set server.tls.cert_file and \
                 server.tls.key_file, or set server.proxy.tls_terminated = true when a \
                 TLS-terminating proxy is in front"
            );
        }
        let trusted_proxies = self
            .server
            .proxy
            .trusted
            .iter()
            .map(|p| p.parse().with_context(|| format!("server.proxy.trusted: {p:?} is not an IP address")))
            .collect::<anyhow::Result<_>>()?;
        for o in &self.server.allowed_origins {
            if !(o.starts_with("https://") || o.starts_with("http://")) || o.ends_with('/') {
                bail!("server.allowed_origins: {o:?} must look like https://host[:port]");
            }
        }
        Ok(Listen { bind, tls, trusted_proxies })
    }

    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self, data_dir: &Path) -> anyhow::Result<String> {
        let url = match &self.database.url {
            Some(u) => u.clone(),
            None => haven_store::sqlite_url_for(data_dir),
        };
        haven_store::Backend::from_url(&url)?;
        Ok(url)
    }

    /// The use-case settings.
    pub fn app_settings(&self) -> anyhow::Result<haven_app::AppSettings> {
        let s = &self.security;
        if s.argon2_memory_kib < 8 * 1024 {
            bail!("security.argon2_memory_kib: at least 8192 KiB is required (OWASP recommends 19456)");
        }
        if s.argon2_iterations == 0 {
            bail!("security.argon2_iterations: must be at least 1");
        }
        for (name, v) in [
            ("security.max_failures_per_account", s.max_failures_per_account),
            ("security.max_failures_per_source", s.max_failures_per_source),
            ("security.max_mfa_failures", s.max_mfa_failures),
            ("security.throttle_window_seconds", s.throttle_window_seconds),
        ] {
            if v == 0 {
                bail!("{name}: must be at least 1");
            }
        }
        if self.database.max_connections == 0 {
            bail!("database.max_connections: must be at least 1");
        }
        let m = &self.messaging;
        for (name, v) in [
            ("messaging.max_body_bytes", m.max_body_bytes),
            ("messaging.max_expiry_days", m.max_expiry_days as usize),
            ("messaging.max_members", m.max_members),
            ("messaging.max_attachment_bytes", m.max_attachment_bytes),
            ("messaging.socket_queue", m.socket_queue),
        ] {
            if v == 0 {
                bail!("{name}: must be at least 1");
            }
        }
        if m.max_body_bytes > 1024 * 1024 {
            bail!("messaging.max_body_bytes: at most 1048576 (1 MiB); send larger content as an attachment");
        }
        if m.max_attachment_bytes > 512 * 1024 * 1024 {
            bail!("messaging.max_attachment_bytes: at most 536870912 (512 MiB)");
        }
        let window = jiff::SignedDuration::from_secs(s.throttle_window_seconds.into());
        let policy = |max_failures| haven_domain::throttle::ThrottlePolicy { max_failures, window };
        Ok(haven_app::AppSettings {
            argon2: haven_crypto::password::Argon2Cost {
                memory_kib: s.argon2_memory_kib,
                iterations: s.argon2_iterations,
                parallelism: 1,
            },
            account_throttle: policy(s.max_failures_per_account),
            source_throttle: policy(s.max_failures_per_source),
            mfa_throttle: policy(s.max_mfa_failures),
            totp_issuer: "Haven".into(),
            node_name: self.server.node_name.clone(),
            default_policy: haven_domain::org::OrgPolicy::default(),
            message_limits: haven_domain::messaging::MessageLimits {
                max_body_bytes: m.max_body_bytes,
                max_expiry: jiff::SignedDuration::from_hours(24 * i64::from(m.max_expiry_days)),
                max_members: m.max_members,
            },
            max_attachment_bytes: m.max_attachment_bytes,
            socket_queue: m.socket_queue,
            public_url: self.public_url()?,
            texting: self.texting_settings()?,
        })
    }

    fn public_url(&self) -> anyhow::Result<String> {
        match &self.texting.public_url {
            Some(u) => {
                let ok =
                    (u.starts_with("https://") || u.starts_with("http://")) && !u.contains(['?', '#', ' ']);
                if !ok {
                    bail!("texting.public_url: {u:?} must look like https://host[:port][/path]");
                }
                Ok(u.trim_end_matches('/').to_owned())
            }
            None => {
                let scheme = if self.server.tls.cert_file.is_some() { "https" } else { "http" };
                Ok(format!("{scheme}://{}", self.server.bind))
            }
        }
    }

    fn texting_settings(&self) -> anyhow::Result<haven_app::texting::TextingSettings> {
        let t = &self.texting;
        let time = |name: &str, v: &str| -> anyhow::Result<jiff::civil::Time> {
            v.parse().map_err(|_| anyhow::anyhow!("texting.{name}: {v:?} is not a time such as 08:00"))
        };
        let window = haven_domain::texting::SendingWindow::new(
            time("window_start", &t.window_start)?,
            time("window_end", &t.window_end)?,
        )
        .map_err(|e| anyhow::anyhow!("texting.window_start/window_end: {}", e.message))?;
        let mut regional_windows = Vec::new();
        for entry in &t.regional_windows {
            let bad = || {
                anyhow::anyhow!(
                    "texting.regional_windows: {entry:?} is not REGION=HH:MM-HH:MM (e.g. US-FL=08:00-20:00)"
                )
            };
            let (region, hours) = entry.split_once('=').ok_or_else(bad)?;
            let (from, to) = hours.split_once('-').ok_or_else(bad)?;
            let rule = haven_domain::texting::SendingWindow::new(
                from.trim().parse().map_err(|_| bad())?,
                to.trim().parse().map_err(|_| bad())?,
            )
            .map_err(|_| bad())?;
            if window.narrowed(&rule).is_none() {
                bail!("texting.regional_windows: {entry:?} does not overlap the sending window");
            }
            regional_windows.push((region.trim().to_ascii_uppercase(), rule));
        }
        let mut zones = Vec::new();
        for z in &t.fallback_zones {
            zones.push(
                jiff::tz::TimeZone::get(z)
                    .map_err(|_| anyhow::anyhow!("texting.fallback_zones: {z:?} is not an IANA zone"))?,
            );
        }
        if zones.is_empty() {
            bail!("texting.fallback_zones: name at least one zone");
        }
        if t.link_lifetime_hours == 0 || t.link_lifetime_hours > 24 * 30 {
            bail!("texting.link_lifetime_hours: between 1 and 720");
        }
        let cap = |max, hours| haven_domain::texting::FrequencyCap {
            max,
            within: jiff::SignedDuration::from_hours(hours),
        };
        Ok(haven_app::texting::TextingSettings {
            window,
            fallback_zones: zones,
            regional_windows,
            caps: vec![cap(t.max_per_day, 24), cap(t.max_per_week, 24 * 7)],
            link_lifetime: jiff::SignedDuration::from_hours(i64::from(t.link_lifetime_hours)),
        })
    }
}
