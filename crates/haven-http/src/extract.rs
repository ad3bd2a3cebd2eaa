//! Extractors. Authentication lives here: a handler that takes [`Auth`] receives a
//! [`Principal`] of a fully signed-in user and cannot forget to check it; one that takes
//! [`AnySession`] gets a session in any sign-in state (the MFA steps). Body, path and query
//! extractors turn every rejection into problem+json.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, header};
use haven_app::auth::SessionContext;
use haven_app::{Principal, RequestMeta};
use serde::de::DeserializeOwned;

use crate::HttpState;
use crate::error::{ApiError, ApiResult};

/// The session cookie. `__Host-` binds it to this host, path `/`, Secure.
pub const SESSION_COOKIE: &str = "__Host-haven_session";

/// A request the client made by itself rather than for the user (`X-Haven-Background: 1`):
/// it does not count as activity for the inactivity timeout.
pub const BACKGROUND_HEADER: &str = "x-haven-background";

/// The peer address of a connection (set by the listener).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// A JSON body; rejections become problem+json.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(v))
    }
}

/// Path parameters; an unparseable id is a 404, like an unknown one.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let axum::extract::Path(v) = axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(v))
    }
}

/// Query parameters; rejections become problem+json.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Self> {
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}

/// Where the request came from: the peer address, or with a trusted proxy in front, the
/// client address it reports in `X-Forwarded-For`.
pub fn client_address(parts: &Parts, state: &HttpState) -> Option<IpAddr> {
    let peer = parts.extensions.get::<ClientAddr>().map(|c| c.0.ip())?;
    if !state.settings.trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    // Walk X-Forwarded-For from the right, skipping our own proxies.
    let forwarded = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if state.settings.trusted_proxies.contains(&ip) => continue,
            Ok(ip) => return Some(ip),
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}

/// Request metadata for audit records.
#[derive(Debug, Clone)]
pub struct Meta(pub RequestMeta);

impl FromRequestParts<HttpState> for Meta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> ApiResult<Self> {
        let address = client_address(parts, state).map(|ip| ip.to_string());
        let ua = parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok());
        // Opening the real-time socket is the client's doing too (it reconnects by itself).
        let upgrade = parts
            .headers
            .get(header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        let background = upgrade || parts.headers.contains_key(BACKGROUND_HEADER);
        Ok(Meta(RequestMeta::new(address, ua).in_background(background)))
    }
}

/// Whether the request's scheme is https (directly, or per a trusted proxy).
pub fn is_https(parts: &Parts, state: &HttpState) -> bool {
    if state.settings.tls {
        return true;
    }
    let peer = parts.extensions.get::<ClientAddr>().map(|c| c.0.ip());
    peer.is_some_and(|p| state.settings.trusted_proxies.contains(&p))
        && parts.headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) == Some("https")
}

/// Refuses a cross-site state-changing request. Browsers send `Origin` on every POST, PUT,
/// PATCH and DELETE; it must name this host (or a configured origin).
pub fn check_origin(parts: &Parts, state: &HttpState) -> ApiResult<()> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let forbidden = || {
        ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "origin_refused",
            "cross-site request refused: the Origin header does not match this server",
        )
    };
    let origin = parts.headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).ok_or_else(forbidden)?;
    if origin_allowed(parts, state, origin) { Ok(()) } else { Err(forbidden()) }
}

/// Whether `origin` is this server (or a configured origin).
fn origin_allowed(parts: &Parts, state: &HttpState, origin: &str) -> bool {
    if state.settings.allowed_origins.iter().any(|o| o == origin) {
        return true;
    }
    let Some(host) = parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()) else { return false };
    let scheme = if is_https(parts, state) { "https" } else { "http" };
    origin == format!("{scheme}://{host}")
}

/// The Origin check of a WebSocket upgrade (a GET, so [`check_origin`] lets it by): browsers
/// always send Origin on a WebSocket, and it must be this server, or a page elsewhere could
/// open a socket with the user's cookie. Clients without Origin must use a bearer token.
#[derive(Debug)]
pub struct WsOrigin;

impl FromRequestParts<HttpState> for WsOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> ApiResult<Self> {
        let refused = || {
            ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "origin_refused",
                "cross-site WebSocket refused: the Origin header does not match this server",
            )
        };
        match parts.headers.get(header::ORIGIN).map(|v| v.to_str()) {
            Some(Ok(origin)) if origin_allowed(parts, state, origin) => Ok(WsOrigin),
            Some(_) => Err(refused()),
            None => match session_token(parts) {
                Some((_, false)) => Ok(WsOrigin),
                _ => Err(refused()),
            },
        }
    }
}

/// The session token of a request: `Authorization: Bearer …`, else the session cookie. The
/// flag says whether it came from the cookie (and so needs the Origin check).
pub fn session_token(parts: &Parts) -> Option<(String, bool)> {
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = auth.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| (token.trim().to_owned(), false));
    }
    for value in parts.headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, token)) = pair.trim().split_once('=')
                && name == SESSION_COOKIE
            {
                return Some((token.to_owned(), true));
            }
        }
    }
    None
}

async fn session_context(parts: &mut Parts, state: &HttpState) -> ApiResult<SessionContext> {
    let (token, from_cookie) =
        session_token(parts).ok_or_else(|| ApiError::from(haven_app::AppError::Unauthenticated))?;
    if from_cookie {
        check_origin(parts, state)?;
    }
    let Meta(meta) = Meta::from_request_parts(parts, state).await?;
    Ok(state.app.session(&token, &meta).await?)
}

/// A session in any sign-in state (for the MFA and enrolment steps, and logout).
#[derive(Debug)]
pub struct AnySession(pub SessionContext);

impl FromRequestParts<HttpState> for AnySession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> ApiResult<Self> {
        Ok(AnySession(session_context(parts, state).await?))
    }
}

/// A fully signed-in user.
#[derive(Debug)]
pub struct Auth(pub Principal);

impl FromRequestParts<HttpState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> ApiResult<Self> {
        let ctx = session_context(parts, state).await?;
        if ctx.record.state != haven_domain::session::SessionState::Active {
            return Err(haven_app::AppError::MfaRequired(ctx.record.state).into());
        }
        Ok(Auth(Principal {
            user: ctx.record.user,
            policy: ctx.record.policy,
            session_id: ctx.record.id,
            meta: ctx.meta,
        }))
    }
}
