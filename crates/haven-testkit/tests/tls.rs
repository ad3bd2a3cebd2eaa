//! Haven terminating TLS itself with rustls: a real handshake against a certificate made for
//! the test, HSTS on the answer, and clear errors for unusable certificate settings.

use std::sync::{Arc, Mutex};

use haven_app::{App, AppSettings, OsEntropy};
use haven_crypto::password::Argon2Cost;
use haven_store::{Store, StoreOptions};
use haven_testkit::{Backend, TestClock, TestDb};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_hsts() {
    let dir = std::env::temp_dir().join(format!("haven-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    let tls = haven_http::serve::load_tls(&cert_path, &key_path).expect("load certificate");

    let db = TestDb::new(Backend::Sqlite).await;
    let store = Store::open(db.url(), &StoreOptions::default()).await.unwrap();
    let settings = AppSettings {
        argon2: Argon2Cost { memory_kib: 1024, iterations: 1, parallelism: 1 },
        ..Default::default()
    };
    let entropy: Arc<Mutex<dyn haven_domain::Entropy + Send>> = Arc::new(Mutex::new(OsEntropy));
    let app = App::new(
        store,
        haven_testkit::test_keys(),
        db.blobs(),
        settings,
        Arc::new(TestClock::new()),
        entropy,
    )
    .unwrap();
    let http = haven_http::HttpSettings { tls: true, ..Default::default() };
    let router = haven_http::router(haven_http::HttpState::new(app, http));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(haven_http::serve::serve(tcp, Some(tls), router, async move {
        let _ = rx.await;
    }));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    // A plain-text client on the TLS port gets nothing useful, and does not stall the server.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream =
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.expect("handshake");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut resp = String::new();
    stream.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.to_lowercase().contains("strict-transport-security: max-age="), "{resp}");

    tx.send(()).unwrap();
    drop(plain);
    server.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_certificate_settings_name_the_setting() {
    let missing = std::path::Path::new("/nonexistent/cert.pem");
    let err = haven_http::serve::load_tls(missing, missing).unwrap_err().to_string();
    assert!(err.starts_with("server.tls.cert_file"), "{err}");
    let dir = std::env::temp_dir().join(format!("haven-tls-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    let err =
        haven_http::serve::load_tls(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap_err().to_string();
    assert!(err.starts_with("server.tls.key_file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
