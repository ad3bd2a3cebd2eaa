//! The patient's secure page (`/p/{token}`), served by the binary as plain HTML forms: no
//! script at all, styles from one file, a CSP that allows nothing else, `Referrer-Policy:
//! no-referrer` and `Cache-Control: no-store`. Opening the link shows the organisation's name
//! and the identity check, nothing about the patient, and never uses the link up. After the
//! check, the session cookie (bound to this link) shows the patient's thread with a reply form.
//! Values are HTML-escaped by the template engine.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use haven_app::AppError;
use haven_app::patient_link::{CheckFailed, LinkLanding, LinkState};
use haven_app::patient_thread::PatientThread;
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
            thread => "Sus mensajes",
            you => "Usted",
            by_text => "(por mensaje de texto)",
            no_messages => "Todavía no hay mensajes.",
            reply => "Responder",
            send_reply => "Enviar",
            sent => "Su respuesta fue enviada.",
            empty => "Escriba un mensaje antes de enviarlo.",
            privacy => "Esta página es privada. Ciérrela cuando termine; su sesión termina sola tras unos minutos sin actividad.",
            session_over => "Su sesión segura terminó. Para seguir, pida un enlace nuevo.",
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
            thread => "Your messages",
            you => "You",
            by_text => "(by text)",
            no_messages => "There are no messages yet.",
            reply => "Reply",
            send_reply => "Send",
            sent => "Your reply was sent.",
            empty => "Write a message before sending it.",
            privacy => "This page is private. Close it when you are done; your session ends by itself after a few minutes without activity.",
            session_over => "Your secure session has ended. To continue, ask for a new link.",
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

/// What a form action left to say: a key of the page's words, and attempts left.
#[derive(Clone, Copy, Default)]
struct Notice {
    error: Option<&'static str>,
    left: Option<u32>,
}

fn render(
    status: StatusCode,
    token: &str,
    page: Option<&LinkLanding>,
    shown: &str,
    notice: Notice,
) -> Response {
    let (org_name, lang, help_phone) =
        page.map_or(("Haven", "en", ""), |p| (p.org_name.as_str(), p.language, p.help_phone.as_str()));
    let state = match page.map(|p| p.state) {
        _ if !shown.is_empty() => shown,
        Some(LinkState::Open { .. }) => "open",
        Some(LinkState::Locked) => "locked",
        Some(LinkState::Expired) => "expired",
        Some(LinkState::Used) => "used",
        None => "none",
    };
    let code_sent = matches!(page.map(|p| p.state), Some(LinkState::Open { code_sent: true }));
    render_page(
        status,
        context! {
            token, org_name, lang, help_phone, state, code_sent,
            error => notice.error, left => notice.left, t => words(lang),
        },
    )
}

/// Renders the page template with `ctx`.
fn render_page(status: StatusCode, ctx: minijinja::Value) -> Response {
    match env().get_template("page.html").and_then(|t| t.render(ctx)) {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "the secure page did not render");
            html(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
    }
}

/// The patient's thread, after the identity check.
fn render_thread(
    status: StatusCode,
    token: &str,
    thread: &PatientThread,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let messages: Vec<minijinja::Value> = thread
        .messages
        .iter()
        .map(|m| {
            // Shown in UTC, said so: the page has no script to convert to the reader's zone.
            let when = m
                .sent_at
                .parse::<jiff::Timestamp>()
                .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|_| m.sent_at.clone());
            context! {
                direction => m.direction.as_str(), channel => m.channel.as_str(),
                body => m.body.as_str(), sent_at => m.sent_at.as_str(), when,
            }
        })
        .collect();
    render_page(
        status,
        context! {
            token, org_name => thread.org_name.as_str(), lang => thread.language, state => "thread",
            messages, notice, error, t => words(thread.language),
        },
    )
}

/// The patient-session cookie of a request, if any.
fn patient_cookie(parts: &Parts) -> Option<String> {
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
        v.split(';').find_map(|c| {
            let (k, val) = c.trim().split_once('=')?;
            (k == PATIENT_COOKIE).then(|| val.to_owned())
        })
    })
}

fn failure(e: AppError) -> Response {
    match e {
        AppError::NotFound => render(StatusCode::NOT_FOUND, "", None, "", Notice::default()),
        e => {
            tracing::warn!(error = %e, "secure page request failed");
            crate::error::ApiError::from(e).into_response()
        }
    }
}

/// The page as it stands after a form action (which was audited itself).
async fn after_action(
    state: &HttpState,
    token: &str,
    status: StatusCode,
    shown: &str,
    notice: Notice,
) -> Response {
    match state.app.link_page(token).await {
        Ok(page) => render(status, token, Some(&page), shown, notice),
        Err(e) => failure(e),
    }
}

/// A form post must come from this page. Browsers send `Origin: null` on form posts from a
/// page whose referrer policy is `no-referrer` (as this page's is), so their `Sec-Fetch-Site`,
/// which no page can set, decides; without it (other clients), `Origin` must be this server.
fn same_origin(parts: &Parts, state: &HttpState) -> bool {
    match parts.headers.get("sec-fetch-site").map(|v| v.to_str().unwrap_or_default()) {
        Some(site) => site == "same-origin",
        None => crate::extract::check_origin(parts, state).is_ok(),
    }
}

/// GET /p/{token} — the identity check (never uses the link up, shows no PHI).
pub(crate) async fn show(
    State(state): State<HttpState>,
    ApiPath(token): ApiPath<String>,
    Meta(meta): Meta,
    parts: Parts,
) -> Response {
    // With the session the identity check opened: the thread.
    let cookie = patient_cookie(&parts);
    if let Some(session) = &cookie {
        match state.app.patient_thread(&token, session, &meta).await {
            Ok(thread) => return render_thread(StatusCode::OK, &token, &thread, None, None),
            Err(AppError::Unauthenticated) => {}
            Err(e) => return failure(e),
        }
    }
    match state.app.open_link(&token, &meta).await {
        // A used link whose session is over: say so rather than "already used".
        Ok(page) if cookie.is_some() && page.state == LinkState::Used => {
            render(StatusCode::OK, &token, Some(&page), "session_over", Notice::default())
        }
        Ok(page) => render(StatusCode::OK, &token, Some(&page), "", Notice::default()),
        Err(e) => failure(e),
    }
}

/// The reply form.
#[derive(Debug, Deserialize)]
pub(crate) struct ReplyForm {
    body: String,
}

/// POST /p/{token}/reply — the patient's reply, into the conversation (needs the session).
pub(crate) async fn reply(
    State(state): State<HttpState>,
    ApiPath(token): ApiPath<String>,
    Meta(meta): Meta,
    parts: Parts,
    body: axum::body::Bytes,
) -> Response {
    if !same_origin(&parts, &state) {
        return html(StatusCode::FORBIDDEN, "cross-site request refused".into());
    }
    let Some(session) = patient_cookie(&parts) else {
        return after_action(&state, &token, StatusCode::UNAUTHORIZED, "session_over", Notice::default())
            .await;
    };
    let text = serde_urlencoded::from_bytes::<ReplyForm>(&body).map(|f| f.body).unwrap_or_default();
    let (status, notice, error) = match state.app.patient_reply(&token, &session, &text, &meta).await {
        Ok(()) => (StatusCode::OK, Some("sent"), None),
        Err(AppError::Invalid(_)) => (StatusCode::UNPROCESSABLE_ENTITY, None, Some("empty")),
        Err(AppError::Unauthenticated) => {
            return after_action(&state, &token, StatusCode::UNAUTHORIZED, "session_over", Notice::default())
                .await;
        }
        Err(e) => return failure(e),
    };
    match state.app.patient_thread(&token, &session, &meta).await {
        Ok(thread) => render_thread(status, &token, &thread, notice, error),
        Err(e) => failure(e),
    }
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
    let (status, notice) = match state.app.send_link_code(&token, &meta).await {
        Ok(()) => (StatusCode::OK, Notice::default()),
        Err(AppError::Conflict("code_recently_sent", _)) => {
            (StatusCode::TOO_MANY_REQUESTS, Notice { error: Some("recent"), left: None })
        }
        Err(AppError::Conflict(..)) => (StatusCode::CONFLICT, Notice::default()),
        Err(e) => return failure(e),
    };
    after_action(&state, &token, status, "", notice).await
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
        return after_action(&state, &token, StatusCode::UNPROCESSABLE_ENTITY, "", Notice::default()).await;
    };
    match state.app.verify_link(&token, &form.dob, &form.code, &meta).await {
        Ok(Ok(session)) => {
            let mut resp = match state.app.patient_thread(&token, session.expose(), &meta).await {
                Ok(thread) => render_thread(StatusCode::OK, &token, &thread, Some("verified"), None),
                Err(e) => failure(e),
            };
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
        Ok(Err(CheckFailed::Locked)) => {
            after_action(&state, &token, StatusCode::FORBIDDEN, "", Notice::default()).await
        }
        Ok(Err(CheckFailed::Wrong { left })) => {
            after_action(
                &state,
                &token,
                StatusCode::UNPROCESSABLE_ENTITY,
                "",
                Notice { error: Some("wrong"), left: Some(left) },
            )
            .await
        }
        Err(AppError::Conflict(..)) => {
            after_action(&state, &token, StatusCode::CONFLICT, "", Notice::default()).await
        }
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
