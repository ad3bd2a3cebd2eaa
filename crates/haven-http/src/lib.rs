//! Haven's HTTP API: an axum router of thin handlers. Handlers parse, call one use case of
//! `haven_app::App`, and shape the answer; authentication is in the extractors, errors are one
//! problem+json type, and every response carries the security headers.

pub mod error;
pub mod extract;
pub mod file_name;
mod middleware;
pub mod openapi;
mod routes;
pub mod serve;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use haven_app::App;
use metrics_exporter_prometheus::PrometheusHandle;

/// Settings of the HTTP layer.
#[derive(Debug, Clone, Default)]
pub struct HttpSettings {
    /// Whether Haven itself terminates TLS (enables HSTS).
    pub tls: bool,
    /// Addresses of reverse proxies whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Origins allowed on state-changing requests besides the request's own host.
    pub allowed_origins: Vec<String>,
    /// Largest JSON body accepted, in bytes.
    pub json_body_limit: usize,
}

/// What every handler can reach. Cloned for every request (axum's `State`), so it is one
/// reference count: the application behind it holds a score of them, and incrementing and
/// dropping all of them per request was a few percent of the server's time under load.
#[derive(Clone, Debug)]
pub struct HttpState(Arc<Shared>);

/// The shared part of [`HttpState`].
#[derive(Debug)]
pub struct Shared {
    /// The use cases.
    pub app: App,
    /// HTTP settings.
    pub settings: HttpSettings,
    metrics: PrometheusHandle,
}

impl std::ops::Deref for HttpState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The process-wide Prometheus recorder (a process has one global recorder; test binaries start
/// several servers).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then this handle renders nothing,
            // which is the embedding application's choice.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl HttpState {
    /// Builds the state.
    pub fn new(app: App, settings: HttpSettings) -> Self {
        Self(Arc::new(Shared { app, settings, metrics: metrics_handle() }))
    }
}

/// The whole HTTP surface.
pub fn router(state: HttpState) -> Router {
    let limit = if state.settings.json_body_limit == 0 { 64 * 1024 } else { state.settings.json_body_limit };
    routes::routes(state.app.settings().max_attachment_bytes)
        .merge(haven_web::router())
        .fallback(routes::system::not_found)
        .method_not_allowed_fallback(routes::system::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::security_headers))
        .layer(axum::middleware::from_fn(middleware::observe))
        .with_state(state)
}
