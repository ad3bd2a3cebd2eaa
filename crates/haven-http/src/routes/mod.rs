//! The routes, one small handler each, grouped by resource.

pub(crate) mod attachments;
pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod conversations;
pub(crate) mod org;
pub(crate) mod patients;
pub(crate) mod secure_page;
pub(crate) mod system;
pub(crate) mod texting;
pub(crate) mod users;
pub(crate) mod webhooks;
pub(crate) mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};

use crate::HttpState;

/// A page size from a query: `default` when absent, refused outside 1..=`max`.
pub(crate) fn page_limit(value: Option<u32>, default: u32, max: u32) -> crate::error::ApiResult<u32> {
    let limit = value.unwrap_or(default);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(haven_app::AppError::Invalid(haven_domain::ValidationError::new(
            "limit",
            "out_of_range",
            format!("limit must be between 1 and {max}"),
        ))
        .into())
    }
}

pub(crate) fn routes(attachment_limit: usize) -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/api/openapi.json", get(system::openapi))
        .route("/api/v1/me", get(system::me))
        .route("/api/v1/auth/login", post(auth::login))
        .route("/api/v1/auth/mfa/verify", post(auth::verify_mfa))
        .route("/api/v1/auth/mfa/totp/enroll", post(auth::start_enrolment))
        .route("/api/v1/auth/mfa/totp/confirm", post(auth::confirm_enrolment))
        .route("/api/v1/auth/logout", post(auth::logout))
        .route("/api/v1/auth/logout-all", post(auth::logout_all))
        .route("/api/v1/auth/password", post(auth::change_password))
        .route("/api/v1/auth/sessions", get(auth::sessions))
        .route("/api/v1/auth/sessions/{id}", delete(auth::end_session))
        .route("/api/v1/users", get(users::list).post(users::create))
        .route("/api/v1/users/{id}", get(users::get_one))
        .route("/api/v1/users/{id}/deactivate", post(users::deactivate))
        .route("/api/v1/users/{id}/mfa/reset", post(users::reset_mfa))
        .route("/api/v1/users/{id}/roles", put(users::set_roles))
        .route("/api/v1/roles", get(org::roles))
        .route("/api/v1/organization", get(org::get_org))
        .route("/api/v1/organization/policy", put(org::set_policy))
        .route("/api/v1/audit/events", get(audit::search))
        .route("/api/v1/audit/checkpoint", get(audit::checkpoint))
        .route("/api/v1/audit/verification", get(audit::verification))
        .route("/api/v1/audit/export", get(audit::export))
        .route("/api/v1/audit/proofs/inclusion", get(audit::inclusion))
        .route("/api/v1/audit/proofs/consistency", get(audit::consistency))
        .route("/api/v1/patients", post(patients::create))
        .route("/api/v1/patients/lookup", post(patients::lookup))
        .route("/api/v1/patients/{id}", get(patients::get_one))
        .route("/api/v1/patients/{id}/phone", put(patients::change_phone))
        .route("/api/v1/conversations", get(conversations::list).post(conversations::create))
        .route("/api/v1/conversations/{id}", get(conversations::get_one))
        .route("/api/v1/conversations/{id}/members", post(conversations::add_member))
        .route("/api/v1/conversations/{id}/members/{user_id}", delete(conversations::remove_member))
        .route("/api/v1/conversations/{id}/messages", post(conversations::send))
        .route("/api/v1/conversations/{id}/events", get(conversations::events))
        .route("/api/v1/conversations/{id}/receipts", post(conversations::mark))
        .route(
            "/api/v1/conversations/{id}/messages/{message_id}",
            put(conversations::edit).delete(conversations::recall),
        )
        .route("/api/v1/conversations/{id}/messages/{message_id}/versions", get(conversations::versions))
        .route("/api/v1/conversations/{id}/messages/{message_id}/receipts", get(conversations::receipts))
        .route(
            "/api/v1/conversations/{id}/attachments",
            // The body limit of uploads is the attachment limit (plus room for the refusal to
            // come from the use case, with its clear message, rather than from the transport).
            post(attachments::upload).layer(DefaultBodyLimit::max(attachment_limit.saturating_add(1))),
        )
        .route("/api/v1/attachments/{id}", get(attachments::download))
        .route("/api/v1/organization/sms-gateway", get(texting::get_gateway).put(texting::set_gateway))
        .route("/api/v1/organization/sms-templates/{language}", put(texting::set_template))
        .route("/api/v1/patients/{id}/consent", get(texting::consent).post(texting::record_consent))
        .route("/api/v1/patients/{id}/texts", get(texting::texts))
        .route("/api/v1/conversations/{id}/patient-texts", post(texting::text_patient))
        .route("/api/v1/consent/export", get(texting::export))
        .route("/api/v1/inbox", get(texting::inbox))
        .route("/api/v1/inbox/{conversation_id}", put(texting::update_inbox))
        .route("/webhooks/twilio/{org}/inbound", post(webhooks::twilio_inbound))
        .route("/p/static/page.css", get(secure_page::css))
        .route("/p/{token}", get(secure_page::show))
        .route("/p/{token}/code", post(secure_page::send_code))
        .route("/p/{token}/verify", post(secure_page::verify))
        .route("/p/{token}/reply", post(secure_page::reply))
        .route("/webhooks/twilio/{org}/status", post(webhooks::twilio_status))
        .route("/api/v1/ws", get(ws::upgrade))
}
