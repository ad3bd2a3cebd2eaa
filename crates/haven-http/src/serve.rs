//! Serving the router: plain HTTP or TLS (rustls), with graceful shutdown. On shutdown the
//! listener stops accepting, in-flight requests finish, and only then does `serve` return.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::extract::ClientAddr;

/// Problems loading the TLS certificate or key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("server.tls.cert_file: {0}")]
    Cert(String),
    /// The key file could not be read or holds no private key.
    #[error("server.tls.key_file: {0}")]
    Key(String),
    /// rustls refused the pair.
    #[error("server.tls: the certificate and key do not form a usable pair: {0}")]
    Config(String),
}

/// Loads a PEM certificate chain and private key into a TLS 1.2/1.3 server configuration.
pub fn load_tls(cert_file: &Path, key_file: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| TlsError::Cert(format!("cannot read {}: {e}", cert_file.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert(format!("{} is not PEM: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Cert(format!("{} holds no certificate", cert_file.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| TlsError::Key(format!("cannot read a private key from {}: {e}", key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that completes TLS handshakes off the accept path: a slow or hostile client
/// cannot hold up others' connections.
pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Wraps a bound TCP listener.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, incoming) = mpsc::channel(256);
        let acceptor_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // As for plain connections: no Nagle delay on small writes.
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { incoming, local, acceptor_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(c) => c,
            // The acceptor task never ends on its own; if it did, wait for shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Plain TCP connections with Nagle's algorithm off: a WebSocket frame or a response goes out
/// when written, not after the peer's delayed acknowledgement of the previous one (up to 40 ms).
pub struct PlainListener(TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(&self.0)
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Serves `router` on `tcp` (with TLS when `tls` is given) until `shutdown` completes, then
/// waits for in-flight requests to finish.
pub async fn serve(
    tcp: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = router.layer(axum::middleware::from_fn(connect_info_to_client_addr));
    match tls {
        None => {
            axum::serve(PlainListener(tcp), router.into_make_service_with_connect_info::<ClientAddr>())
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            let listener = TlsListener::new(tcp, config)?;
            axum::serve(listener, router.into_make_service_with_connect_info::<ClientAddr>())
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Copies the `ConnectInfo<ClientAddr>` extension into a plain `ClientAddr` extension, which is
/// what the extractors read.
async fn connect_info_to_client_addr(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(axum::extract::ConnectInfo(addr)) =
        req.extensions().get::<axum::extract::ConnectInfo<ClientAddr>>().cloned()
    {
        req.extensions_mut().insert(addr);
    }
    next.run(req).await
}
