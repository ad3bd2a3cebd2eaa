//! Forwards the audit log to a syslog collector over TLS (RFC 5424 messages, RFC 5425
//! octet-counted framing), in order, resuming from a durable cursor after any outage.
//!
//! Delivery is at least once: entries count as delivered only once the connection has been
//! seen alive after they were written; when it is found dead they are sent again on the next
//! connection (the collector can de-duplicate by the `seq` in the structured data). Because
//! RFC 5425 has no acknowledgement, bytes the collector's kernel accepted just before it died
//! may never have been processed: every new connection therefore starts `RESEND_MARGIN`
//! entries before the cursor, so such entries are sent again.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use haven_app::App;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::SyslogConf;

const CURSOR: &str = "syslog";
const BATCH: i64 = 500;
/// Entries re-sent on every new connection, before the durable cursor (more than a socket
/// buffer of entries can hold).
const RESEND_MARGIN: i64 = 2000;

/// A validated forwarder configuration.
pub struct Forwarder {
    address: String,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    poll: Duration,
    node: String,
}

impl Forwarder {
    /// Builds the forwarder from its settings; `None` when forwarding is not configured.
    pub fn from_conf(conf: &SyslogConf, node: &str) -> anyhow::Result<Option<Self>> {
        let Some(address) = conf.address.clone() else { return Ok(None) };
        let host = address
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_owned())
            .context("audit.syslog.address must be host:port")?;
        let name = conf.server_name.clone().unwrap_or(host);
        let server_name = ServerName::try_from(name.clone())
            .with_context(|| format!("audit.syslog.server_name: {name:?} is not a host name"))?;
        let ca_file =
            conf.ca_file.as_deref().context("audit.syslog.ca_file is required with audit.syslog.address")?;
        Ok(Some(Self {
            address,
            server_name,
            connector: TlsConnector::from(client_config(ca_file)?),
            poll: Duration::from_millis(conf.poll_ms.max(10)),
            node: node.to_owned(),
        }))
    }

    async fn connect(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&self.address)).await??;
        tcp.set_nodelay(true)?;
        Ok(tokio::time::timeout(
            Duration::from_secs(10),
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await??)
    }

    /// Runs until the task is aborted.
    pub async fn run(self, app: App) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.session(&app).await {
                Ok(()) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, address = %self.address, "syslog collector unavailable; will retry");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// One connection: send everything after the cursor, then keep following the log.
    async fn session(&self, app: &App) -> anyhow::Result<()> {
        let mut stream = self.connect().await?;
        tracing::info!(address = %self.address, "connected to the syslog collector");
        let mut confirmed = app.store().forward_cursor(CURSOR).await?;
        let mut sent = (confirmed - RESEND_MARGIN).max(0);
        loop {
            let batch = app.store().audit_range(sent, BATCH).await?;
            if !alive(&mut stream).await {
                anyhow::bail!("the collector closed the connection");
            }
            // Everything written before this check reached a live collector.
            if sent > confirmed {
                confirmed = sent;
                app.store().set_forward_cursor(CURSOR, confirmed).await?;
            }
            if batch.is_empty() {
                tokio::time::sleep(self.poll).await;
                continue;
            }
            let mut buf = String::new();
            for e in &batch {
                buf.push_str(&haven_app::audit_fhir::octet_counted(&haven_app::audit_fhir::syslog_message(
                    e, &self.node,
                )));
            }
            stream.write_all(buf.as_bytes()).await?;
            stream.flush().await?;
            sent = batch.last().map(|e| e.seq).unwrap_or(sent);
        }
    }
}

/// A collector never sends us anything: if the connection is readable, it was closed.
async fn alive(stream: &mut TlsStream<TcpStream>) -> bool {
    let mut probe = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(20), stream.read(&mut probe)).await {
        Err(_) => true,
        Ok(Ok(n)) => n > 0,
        Ok(Err(_)) => false,
    }
}

fn client_config(ca_file: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("audit.syslog.ca_file: cannot read {}", ca_file.display()))?
    {
        roots
            .add(cert.with_context(|| format!("audit.syslog.ca_file: {} is not PEM", ca_file.display()))?)
            .context("audit.syslog.ca_file: unusable certificate")?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
