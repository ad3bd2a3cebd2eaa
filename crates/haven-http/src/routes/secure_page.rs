//! The patient's secure page (`/p/{token}`), served by the binary as plain HTML forms: no
//! script at all, styles from one file, a CSP that allows nothing else, `Referrer-Policy:
//! no-referrer` and `Cache-Control: no-store`. Opening the link shows the organisation's name
//! and the identity check, nothing about the patient, and never uses the link up. Values are
//! HTML-escaped by the template engine.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use haven_app::patient_link::{CheckFailed, LinkState};
use haven_app::{AppError, RequestMeta};
use minijinja::{Environment, context};
use serde::Deserialize;

use crate::HttpState;
use crate::extract::{ApiPath, Meta};

/// The page's CSP: own styles and form posts to itself, nothing else (no script at all).
const CSP: &str =
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
/// The patient-session cookie (scoped to the page's path).
pub(crate) const PATIENT_COOKIE: &str = "haven_patient";

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.add_template("page.html", include_str!("../../assets/patient/page.html"))
            .expect("the page template parses");
        env
    })
}

fn words(lang: &str) -> minijinja::Value {
    if lang == "es" {
        context! {
            intro => "Tiene un mensaje seguro. Para leerlo, confirme su identidad.",
            send_hint => "Le enviaremos un código al teléfono que tenemos registrado.",
            send => "Enviarme un código",
            resend => "Enviar un código nuevo",
            dob => "Fecha de nacimiento",
            code => "Código de 6 dígitos",
            verify => "Confirmar",
            verified => "Identidad confirmada.",
            locked => "Este enlace se bloqueó tras demasiados intentos.",
            expired => "Este enlace ha vencido.",
            used => "Este enlace ya se usó.",
            call => "Llame al",
            not_found => "Este enlace no es válido.",
            wrong => "La fecha de nacimiento o el código no coinciden. Intentos restantes:",
            recent => "Ya le enviamos un código hace menos de un minuto.",
        }
    } else {
        context! {
            intro => "You have a secure message. To read it, confirm who you are.",
            send_hint => "We will text a code to the phone number we have on record.",
            send => "Text me a code",
            resend => "Send a new code",
            dob => "Date of birth",
            code => "6-digit code",
            verify => "Confirm",
            verified => "Identity confirmed.",
            locked => "This link is locked after too many attempts.",
            expired => "This link has expired.",
            used => "This link was already used.",
            call => "Please call",
            not_found => "This link is not valid.",
            wrong => "The date of birth or the code does not match. Attempts left:",
            recent => "A code was sent less than a minute ago.",
        }
    }
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

struct View<'a> {
    token: &'a str,
    org_name: &'a str,
    lang: &'a str,
    help_phone: &'a str,
    state: &'a str,
    code_sent: bool,
    error: Option<String>,
}

fn render(status: StatusCode, v: View<'_>) -> Response {
    let page = env().get_template("page.html").and_then(|t| {
        t.render(context! {
            token => v.token, org_name => v.org_name, lang => v.lang, help_phone => v.help_phone,
            state => v.state, code_sent => v.code_sent, error => v.error, t => words(v.lang),
        })
    });
    match page {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "the secure page did not render");
            html(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
    }
}

fn not_found() -> Response {
    render(
        StatusCode::NOT_FOUND,
        View {
            token: "",
            org_name: "Haven",
            lang: "en",
            help_phone: "",
            state: "none",
            code_sent: false,
            error: None,
        },
    )
}

fn failure(e: AppError) -> Response {
    match e {
        AppError::NotFound => not_found(),
        e => {
            tracing::warn!(error = %e, "secure page request failed");
            crate::error::ApiError::from(e).into_response()
        }
    }
}

/// Shows the landing page for a link in its current state (`error` for a failed form).
async fn landing(
    state: &HttpState,
    token: &str,
    meta: &RequestMeta,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = match state.app.open_link(token, meta).await {
        Ok(p) => p,
        Err(e) => return failure(e),
    };
    let (name, code_sent) = match page.state {
        LinkState::Open { code_sent } => ("open", code_sent),
        LinkState::Locked => ("locked", false),
        LinkState::Expired => ("expired", false),
        LinkState::Used => ("used", false),
    };
    render(
        status,
        View {
            token,
            org_name: &page.org_name,
            lang: page.language,
            help_phone: &page.help_phone,
            state: name,
            code_sent,
            error,
        },
    )
}

/// Browsers send `Origin` on form posts: it must be this server.
fn same_origin(parts: &Parts, state: &HttpState) -> bool {
    crate::extract::check_origin(parts, state).is_ok()
}

/// GET /p/{token} — the identity check (never uses the link up, shows no PHI).
pub(crate) async fn show(
    State(state): State<HttpState>,
    ApiPath(token): ApiPath<String>,
    Meta(meta): Meta,
) -> Response {
    landing(&state, &token, &meta, StatusCode::OK, None).await
}

/// POST /p/{token}/code — text a one-time code to the phone on record.
pub(crate) async fn send_code(
    State(state): State<HttpState>,
    ApiPath(token): ApiPath<String>,
    Meta(meta): Meta,
    parts: Parts,
) -> Response {
    if !same_origin(&parts, &state) {
        return html(StatusCode::FORBIDDEN, "cross-site request refused".into());
    }
    match state.app.send_link_code(&token, &meta).await {
        Ok(()) => landing(&state, &token, &meta, StatusCode::OK, None).await,
        Err(AppError::Conflict("code_recently_sent", _)) => {
            let lang = state.app.open_link(&token, &meta).await.map(|p| p.language).unwrap_or("en");
            let recent = words(lang).get_attr("recent").map(|v| v.to_string()).unwrap_or_default();
            landing(&state, &token, &meta, StatusCode::TOO_MANY_REQUESTS, Some(recent)).await
        }
        Err(AppError::Conflict(..)) => landing(&state, &token, &meta, StatusCode::CONFLICT, None).await,
        Err(e) => failure(e),
    }
}

/// The identity check's form.
#[derive(Debug, Deserialize)]
pub(crate) struct VerifyForm {
    dob: String,
    code: String,
}

/// POST /p/{token}/verify — date of birth and code; five failures lock the link.
pub(crate) async fn verify(
    State(state): State<HttpState>,
    ApiPath(token): ApiPath<String>,
    Meta(meta): Meta,
    parts: Parts,
    body: axum::body::Bytes,
) -> Response {
    if !same_origin(&parts, &state) {
        return html(StatusCode::FORBIDDEN, "cross-site request refused".into());
    }
    let Ok(form) = serde_urlencoded::from_bytes::<VerifyForm>(&body) else {
        return landing(&state, &token, &meta, StatusCode::UNPROCESSABLE_ENTITY, None).await;
    };
    match state.app.verify_link(&token, &form.dob, &form.code, &meta).await {
        Ok(Ok(session)) => {
            let page = match state.app.open_link(&token, &meta).await {
                Ok(p) => p,
                Err(e) => return failure(e),
            };
            let mut resp = render(
                StatusCode::OK,
                View {
                    token: &token,
                    org_name: &page.org_name,
                    lang: page.language,
                    help_phone: &page.help_phone,
                    state: "verified",
                    code_sent: false,
                    error: None,
                },
            );
            let secure = if state.settings.tls { "; Secure" } else { "" };
            let max_age = haven_app::patient_link::SESSION_LIFETIME.as_secs();
            let cookie = format!(
                "{PATIENT_COOKIE}={}; Path=/p; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
                session.expose()
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Ok(Err(CheckFailed::Locked)) => landing(&state, &token, &meta, StatusCode::FORBIDDEN, None).await,
        Ok(Err(CheckFailed::Wrong { left })) => {
            let lang = state.app.open_link(&token, &meta).await.map(|p| p.language).unwrap_or("en");
            let wrong = words(lang).get_attr("wrong").map(|v| v.to_string()).unwrap_or_default();
            landing(&state, &token, &meta, StatusCode::UNPROCESSABLE_ENTITY, Some(format!("{wrong} {left}")))
                .await
        }
        Err(AppError::Conflict(..)) => landing(&state, &token, &meta, StatusCode::CONFLICT, None).await,
        Err(e) => failure(e),
    }
}

/// GET /p/static/page.css — the page's only style sheet.
pub(crate) async fn css() -> Response {
    let mut resp = include_str!("../../assets/patient/page.css").into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    resp
}
