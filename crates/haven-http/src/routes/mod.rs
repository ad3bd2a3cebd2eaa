//! The routes, one small handler each, grouped by resource.

pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod org;
pub(crate) mod system;
pub(crate) mod users;

use axum::Router;
use axum::routing::{delete, get, post, put};

use crate::HttpState;

pub(crate) fn routes() -> Router<HttpState> {
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
        .route("/api/v1/audit/export", get(audit::export))
        .route("/api/v1/audit/proofs/inclusion", get(audit::inclusion))
        .route("/api/v1/audit/proofs/consistency", get(audit::consistency))
}
