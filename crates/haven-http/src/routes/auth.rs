//! Sign-in, MFA, enrolment, sign-out and password change.

use axum::Json;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use haven_app::auth::IssuedSession;
use haven_crypto::Secret;
use haven_domain::session::SessionState;
use serde::{Deserialize, Serialize};

use crate::HttpState;
use crate::error::ApiResult;
use crate::extract::{AnySession, ApiJson, ApiPath, Auth, Meta, SESSION_COOKIE, check_origin};

/// Username and password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Login name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// A one-time code: a 6-digit TOTP code or a recovery code.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// The code.
    pub code: String,
}

/// Current and new password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    /// The current password.
    pub current_password: String,
    /// The new password.
    pub new_password: String,
}

/// A new session. The token is shown once: send it as `Authorization: Bearer <token>`
/// (browsers get it as an HttpOnly cookie too).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionResponse {
    /// The session token.
    pub token: String,
    /// `active`, or the sign-in step still due.
    pub state: SessionState,
    /// When the session ends at the latest.
    pub expires_at: String,
    /// Seconds of inactivity after which the session ends.
    pub inactivity_timeout_seconds: u32,
}

/// A started enrolment.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnrolmentResponse {
    /// The TOTP secret in base32, to type into an authenticator app.
    pub secret: String,
    /// The `otpauth://` URI.
    pub otpauth_uri: String,
    /// The URI as an SVG QR code.
    pub qr_svg: String,
}

/// A confirmed enrolment.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnrolmentDoneResponse {
    /// The new, fully signed-in session.
    pub session: SessionResponse,
    /// Ten single-use recovery codes, shown this once.
    pub recovery_codes: Vec<String>,
}

fn cookie(token: &str, max_age: Option<i64>) -> HeaderValue {
    let age = max_age.map(|a| format!("; Max-Age={a}")).unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict{age}"
    ))
    .expect("token is URL-safe base64")
}

fn session_body(s: &IssuedSession) -> SessionResponse {
    SessionResponse {
        token: s.token.expose().clone(),
        state: s.state,
        expires_at: s.expires_at.to_string(),
        inactivity_timeout_seconds: s.inactivity_timeout_seconds,
    }
}

fn with_cookie<T: Serialize>(body: T, token: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(SET_COOKIE, cookie(token, None));
    (headers, Json(body)).into_response()
}

fn clear_cookie() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(SET_COOKIE, cookie("", Some(0)));
    headers
}

/// POST /api/v1/auth/login — password step of sign-in.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, description = "session created; see `state` for the next step", body = SessionResponse),
              crate::openapi::BodyErrors))]
pub(crate) async fn login(
    State(state): State<HttpState>,
    Meta(meta): Meta,
    parts: Parts,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    if parts.headers.contains_key(axum::http::header::ORIGIN) {
        check_origin(&parts, &state)?;
    }
    let issued = state.app.login(&req.username, Secret::new(req.password), &meta).await?;
    Ok(with_cookie(session_body(&issued), issued.token.expose()))
}

/// POST /api/v1/auth/mfa/verify — second step: a TOTP code or a recovery code.
#[utoipa::path(post, path = "/api/v1/auth/mfa/verify", tag = "auth", request_body = CodeRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "signed in; a new token replaces the old", body = SessionResponse),
              crate::openapi::BodyErrors))]
pub(crate) async fn verify_mfa(
    State(state): State<HttpState>,
    AnySession(ctx): AnySession,
    ApiJson(req): ApiJson<CodeRequest>,
) -> ApiResult<Response> {
    let issued = state.app.verify_mfa(&ctx, Secret::new(req.code)).await?;
    Ok(with_cookie(session_body(&issued), issued.token.expose()))
}

/// POST /api/v1/auth/mfa/totp/enroll — start TOTP enrolment.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/enroll", tag = "auth",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "scan the QR code, then confirm with a code", body = EnrolmentResponse),
              crate::openapi::AuthErrors))]
pub(crate) async fn start_enrolment(
    State(state): State<HttpState>,
    AnySession(ctx): AnySession,
) -> ApiResult<Json<EnrolmentResponse>> {
    let e = state.app.start_enrolment(&ctx).await?;
    Ok(Json(EnrolmentResponse {
        secret: e.secret.expose().clone(),
        otpauth_uri: e.otpauth_uri.expose().clone(),
        qr_svg: e.qr_svg.expose().clone(),
    }))
}

/// POST /api/v1/auth/mfa/totp/confirm — finish enrolment with a first code.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/confirm", tag = "auth", request_body = CodeRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "enrolled and signed in; keep the recovery codes", body = EnrolmentDoneResponse),
              crate::openapi::BodyErrors))]
pub(crate) async fn confirm_enrolment(
    State(state): State<HttpState>,
    AnySession(ctx): AnySession,
    ApiJson(req): ApiJson<CodeRequest>,
) -> ApiResult<Response> {
    let done = state.app.confirm_enrolment(&ctx, Secret::new(req.code)).await?;
    let body = EnrolmentDoneResponse {
        session: session_body(&done.session),
        recovery_codes: done.recovery_codes.iter().map(|c| c.expose().clone()).collect(),
    };
    Ok(with_cookie(body, done.session.token.expose()))
}

/// POST /api/v1/auth/logout — end this session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 204, description = "signed out"), crate::openapi::AuthErrors))]
pub(crate) async fn logout(
    State(state): State<HttpState>,
    AnySession(ctx): AnySession,
) -> ApiResult<Response> {
    state.app.logout(&ctx).await?;
    Ok((StatusCode::NO_CONTENT, clear_cookie()).into_response())
}

/// POST /api/v1/auth/logout-all — end every session of the signed-in user.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 204, description = "every session ended"), crate::openapi::AuthErrors))]
pub(crate) async fn logout_all(State(state): State<HttpState>, Auth(p): Auth) -> ApiResult<Response> {
    state.app.logout_everywhere(&p).await?;
    Ok((StatusCode::NO_CONTENT, clear_cookie()).into_response())
}

/// POST /api/v1/auth/password — change the password; other sessions end.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", request_body = PasswordChangeRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 204, description = "password changed; other sessions ended"), crate::openapi::BodyErrors))]
pub(crate) async fn change_password(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<PasswordChangeRequest>,
) -> ApiResult<StatusCode> {
    state.app.change_password(&p, Secret::new(req.current_password), Secret::new(req.new_password)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One of the signed-in user's sessions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// Session id.
    pub id: haven_domain::SessionId,
    /// Whether this is the session making the request.
    pub current: bool,
    /// Sign-in state.
    pub state: SessionState,
    /// Sign-in time (RFC 3339).
    pub created_at: String,
    /// Last activity (RFC 3339, to within a few seconds).
    pub last_seen_at: String,
    /// Latest end (RFC 3339).
    pub expires_at: String,
    /// Address it signed in from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Browser or client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

/// GET /api/v1/auth/sessions — the signed-in user's live sessions.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "live sessions, newest first", body = [SessionView]), crate::openapi::AuthErrors))]
pub(crate) async fn sessions(
    State(state): State<HttpState>,
    Auth(p): Auth,
) -> ApiResult<Json<Vec<SessionView>>> {
    let list = state.app.my_sessions(&p).await?;
    Ok(Json(
        list.into_iter()
            .map(|s| SessionView {
                id: s.id,
                current: s.id == p.session_id,
                state: s.state,
                created_at: s.created_at.to_string(),
                last_seen_at: s.last_seen_at.to_string(),
                expires_at: s.expires_at.to_string(),
                address: s.address,
                user_agent: s.user_agent,
            })
            .collect(),
    ))
}

/// DELETE /api/v1/auth/sessions/{id} — end one of the signed-in user's sessions.
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth",
    params(("id" = haven_domain::SessionId, Path, description = "session id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 204, description = "ended"), crate::openapi::AuthErrors))]
pub(crate) async fn end_session(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<haven_domain::SessionId>,
) -> ApiResult<StatusCode> {
    state.app.end_my_session(&p, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
