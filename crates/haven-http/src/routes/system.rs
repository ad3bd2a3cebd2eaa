//! Health, readiness, metrics, the OpenAPI document, `/api/v1/me`, and the fallbacks.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use haven_domain::roles::Role;
use haven_domain::{OrgId, UserId};
use serde::Serialize;

use crate::HttpState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Auth;

/// Liveness and readiness answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// GET /healthz — the process is up.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// GET /readyz — the storage answers.
#[utoipa::path(get, path = "/readyz", tag = "system",
    responses((status = 200, description = "ready", body = Health), crate::openapi::Unavailable))]
pub(crate) async fn readyz(State(state): State<HttpState>) -> ApiResult<Json<Health>> {
    state
        .app
        .store()
        .ping()
        .await
        .map_err(|e| ApiError::from(haven_app::AppError::Unavailable(e.to_string())))?;
    Ok(Json(Health { status: "ok".into() }))
}

/// GET /metrics — Prometheus text format: request counts and latencies by route template.
#[utoipa::path(get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus metrics", body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<HttpState>) -> Response {
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// GET /api/openapi.json — this API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "system",
    responses((status = 200, description = "the OpenAPI document", body = Object)))]
pub(crate) async fn openapi() -> Response {
    let mut resp = crate::openapi::document_json().into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The signed-in user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// User id.
    pub id: UserId,
    /// Organisation id.
    pub organization_id: OrgId,
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Roles held.
    pub roles: Vec<Role>,
    /// What the roles allow (clients show only what the user may do; the server checks anyway).
    pub permissions: Vec<haven_domain::roles::Permission>,
    /// Whether an authenticator is enrolled.
    pub mfa_enrolled: bool,
    /// Unused recovery codes left.
    pub recovery_codes_left: i64,
    /// Seconds of inactivity after which the session ends.
    pub inactivity_timeout_seconds: u32,
}

/// GET /api/v1/me — who is signed in.
#[utoipa::path(get, path = "/api/v1/me", tag = "identity",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the signed-in user", body = Me), crate::openapi::AuthErrors))]
pub(crate) async fn me(State(state): State<HttpState>, Auth(p): Auth) -> ApiResult<Json<Me>> {
    let left = state.app.recovery_codes_left(&p).await?;
    Ok(Json(Me {
        id: p.user.id,
        organization_id: p.user.org_id,
        username: p.user.username.clone(),
        display_name: p.user.display_name.clone(),
        roles: p.user.roles.roles().to_vec(),
        permissions: p.user.roles.permissions(),
        mfa_enrolled: p.user.mfa_enrolled,
        recovery_codes_left: left,
        inactivity_timeout_seconds: p.policy.inactivity_timeout_seconds,
    }))
}

/// Any unknown path.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// A known path with the wrong method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not allowed here")
}
