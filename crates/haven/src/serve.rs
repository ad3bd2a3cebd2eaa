//! `haven serve` and `haven migrate`: wiring configuration, keys, storage, the use cases and
//! the HTTP layer, then serving until SIGTERM or SIGINT.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use haven_app::{App, OsEntropy, SystemClock};
use haven_crypto::Secret;
use haven_store::{Store, StoreOptions};

use crate::config::Conf;

/// Sets up logging: text or JSON lines on stderr, filtered by `log.level`.
pub fn init_logging(conf: &Conf) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&conf.log.level)
        .with_context(|| format!("log.level: {:?} is not a valid filter", conf.log.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match conf.log.format.as_str() {
        "text" => builder.init(),
        "json" => builder.json().init(),
        other => anyhow::bail!("log.format: {other:?} must be \"text\" or \"json\""),
    }
    Ok(())
}

fn ensure_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))
}

/// Opens storage (migrating it) and builds the application.
pub async fn open_app(conf: &Conf, data_dir: &Path) -> anyhow::Result<App> {
    ensure_data_dir(data_dir)?;
    let settings = conf.app_settings()?;
    let url = conf.database_url(data_dir)?;
    let keys = crate::keys::load(conf, data_dir)?;
    let opts = StoreOptions { max_connections: conf.database.max_connections, ..StoreOptions::default() };
    let store = Store::open(&url, &opts).await.context("cannot open the database")?;
    let entropy: Arc<Mutex<dyn haven_domain::Entropy + Send>> = Arc::new(Mutex::new(OsEntropy));
    let blobs = haven_store::blob::FsBlobStore::new(&data_dir.join("blobs"))
        .with_context(|| format!("cannot create the blob directory under {}", data_dir.display()))?;
    let app = App::new(store, keys, Arc::new(blobs), settings, Arc::new(SystemClock), entropy)?;
    // Another process (`haven keys rotate`) may add a master-key version while this one runs.
    Ok(app.with_key_provider(Arc::new(crate::keys::KeySource::from(conf).in_dir(data_dir))))
}

/// `haven migrate`.
pub async fn migrate(conf: &Conf, data_dir: &Path) -> anyhow::Result<()> {
    ensure_data_dir(data_dir)?;
    let url = conf.database_url(data_dir)?;
    let store = Store::connect(&url, &StoreOptions::default()).await.context("cannot open the database")?;
    let applied = store.migrate().await?;
    store.close().await;
    println!("{} migration(s) applied; the {} database is up to date", applied, store.backend().name());
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// `haven serve`.
pub async fn serve(conf: &Conf, data_dir: &Path, demo: bool, bind: Option<&str>) -> anyhow::Result<()> {
    let listen = conf.listen(bind)?;
    let forwarder = crate::syslog::Forwarder::from_conf(&conf.audit.syslog, &conf.server.node_name)?;
    let tls = match &listen.tls {
        Some((cert, key)) => Some(haven_http::serve::load_tls(cert, key)?),
        None => None,
    };
    let app = open_app(conf, data_dir).await?;
    let app = crate::cluster::join(app, &conf.cluster, &conf.server.node_name).await?;
    // Said once by the server, not by every command-line call that opens the database.
    if app.store().autovacuum_off().await.context("cannot read the database's settings")? {
        tracing::warn!(
            "PostgreSQL's autovacuum is off: no table will be analysed or vacuumed, so queries are planned \
             without statistics and dead rows accumulate; turn it on, or run VACUUM ANALYZE regularly"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    if demo {
        print_demo(&app, scheme, listen.bind).await?;
    }
    let http = haven_http::HttpSettings {
        tls: tls.is_some(),
        trusted_proxies: listen.trusted_proxies.clone(),
        allowed_origins: conf.server.allowed_origins.clone(),
        json_body_limit: conf.server.json_body_limit,
    };
    let router = haven_http::router(haven_http::HttpState::new(app.clone(), http));
    let checkpoints = tokio::spawn(background_duties(app.clone(), conf.audit.checkpoint_interval_seconds));
    let forwarder = forwarder.map(|f| tokio::spawn(f.run(app.clone())));
    if let Err(e) = app.start_gateways().await {
        tracing::warn!(error = %e, "SMS gateways could not be started");
    }
    // The outbox is durable: stopping the worker mid-send only lets a lease run out, and the
    // next start reconciles with the provider before sending anything again.
    let outbox = {
        let app = app.clone();
        tokio::spawn(async move { app.run_outbox(std::future::pending()).await })
    };
    let tcp = tokio::net::TcpListener::bind(listen.bind)
        .await
        .with_context(|| format!("cannot listen on {}", listen.bind))?;
    let addr = tcp.local_addr()?;
    tracing::info!(%addr, backend = app.store().backend().name(), "Haven is listening");
    println!("Haven is listening on {scheme}://{addr}");
    haven_http::serve::serve(tcp, tls, router, shutdown_signal()).await?;
    checkpoints.abort();
    outbox.abort();
    if let Some(f) = forwarder {
        f.abort();
    }
    // A last checkpoint, so that everything recorded before shutdown is covered by a signature.
    if let Err(e) = app.checkpoint().await {
        tracing::warn!(error = %e, "could not sign the final audit checkpoint");
    }
    app.store().close().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Background duties: sign a checkpoint of the audit log every `interval` seconds (when it has
/// grown), and end timed-out sessions every 15 seconds so automatic logoff is recorded when it
/// happens.
async fn background_duties(app: App, interval: u64) {
    let checkpoint_every = std::time::Duration::from_secs(interval.max(1));
    let mut last_checkpoint = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5).min(checkpoint_every));
    loop {
        tick.tick().await;
        // Expired messages are unreadable from their expiry on; this destroys their keys.
        match app.purge_expired(500).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "purged expired messages"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired messages"),
        }
        match app.end_timed_out_sessions().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(sessions = n, "ended timed-out sessions"),
            Err(e) => tracing::warn!(error = %e, "could not end timed-out sessions"),
        }
        if last_checkpoint.elapsed() >= checkpoint_every {
            last_checkpoint = tokio::time::Instant::now();
            if let Err(e) = app.checkpoint().await {
                tracing::warn!(error = %e, "could not sign an audit checkpoint");
            }
        }
    }
}

async fn print_demo(app: &App, scheme: &str, bind: std::net::SocketAddr) -> anyhow::Result<()> {
    match app.seed_demo().await? {
        None => println!(
            "Demo organisation \"{}\" already exists in this data directory; its accounts were printed when it was created.",
            haven_app::demo::DEMO_ORG
        ),
        Some(accounts) => {
            println!(
                "Created the demo organisation \"{}\". These credentials are shown once:",
                haven_app::demo::DEMO_ORG
            );
            println!();
            println!("  {:<18} {:<20} {:<22} TOTP SECRET (base32)", "USERNAME", "ROLE", "PASSWORD");
            for a in &accounts {
                println!(
                    "  {:<18} {:<20} {:<22} {}",
                    a.username,
                    a.role.as_str(),
                    show(&a.password),
                    show(&a.totp_secret)
                );
            }
            println!();
            println!("Add a TOTP secret to an authenticator app (SHA-1, 6 digits, 30 s) to sign in.");
        }
    }
    println!("Open {scheme}://{bind}/ (API: {scheme}://{bind}/api/openapi.json)");
    Ok(())
}

fn show(s: &Secret<String>) -> &str {
    s.expose()
}
