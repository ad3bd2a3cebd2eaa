//! The OpenAPI 3.1 document, generated from the handlers' annotations. The checked-in copy at
//! `docs/openapi.json` is compared with this by a test, so the two cannot drift apart.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi, PartialSchema};

use crate::error::Problem;
use crate::routes::{attachments, audit, auth, conversations, org, patients, system, texting, users, ws};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Haven API",
        description = "Secure messaging for care teams. Errors are RFC 9457 problem+json with a stable `code`.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only")
    ),
    paths(
        system::healthz, system::readyz, system::metrics, system::openapi, system::me,
        auth::login, auth::verify_mfa, auth::start_enrolment, auth::confirm_enrolment,
        auth::logout, auth::logout_all, auth::change_password, auth::sessions, auth::end_session,
        users::list, users::create, users::get_one, users::deactivate, users::reset_mfa, users::set_roles,
        org::get_org, org::set_policy, org::roles,
        audit::search, audit::checkpoint, audit::verification, audit::export, audit::inclusion, audit::consistency,
        patients::create, patients::lookup, patients::get_one, patients::change_phone,
        conversations::create, conversations::list, conversations::get_one, conversations::add_member,
        conversations::remove_member, conversations::send, conversations::events, conversations::edit,
        conversations::recall, conversations::versions, conversations::receipts, conversations::mark,
        attachments::upload, attachments::download, ws::upgrade,
        texting::set_gateway, texting::get_gateway, texting::set_template, texting::consent,
        texting::record_consent, texting::texts, texting::text_patient, texting::export,
        texting::inbox, texting::update_inbox,
    ),
    components(schemas(Problem, audit::ExportFormatParam)),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Sign-in, MFA and sessions"),
        (name = "identity", description = "The signed-in user"),
        (name = "users", description = "Directory and user administration"),
        (name = "organization", description = "Organisation policy and roles"),
        (name = "messaging", description = "Conversations, messages, history, receipts, attachments, the real-time socket"),
        (name = "patients", description = "Patient records"),
        (name = "texting", description = "Patient texting: the SMS gateway, templates, consent ledger, texts with secure links"),
        (name = "audit", description = "The tamper-evident audit trail: search, checkpoints, proofs"),
        (name = "system", description = "Health, readiness, metrics"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::extract::SESSION_COOKIE))),
        );
    }
}

fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", ContentBuilder::new().schema(Some(Problem::schema())).build())
        .into()
}

fn set(codes: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    codes.iter().map(|(s, d)| ((*s).to_owned(), problem(d))).collect()
}

const AUTH: [(&str, &str); 7] = [
    ("400", "malformed request"),
    ("401", "not signed in, session expired, or wrong credentials"),
    ("403", "sign-in incomplete (MFA due) or cross-site request refused"),
    ("404", "no such resource in your organisation, or not permitted"),
    ("409", "conflicts with the current state"),
    ("429", "too many failed attempts; see Retry-After"),
    ("503", "temporarily unavailable; see Retry-After"),
];

/// Errors of an authenticated endpoint without a body.
pub(crate) struct AuthErrors;
impl IntoResponses for AuthErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(&AUTH)
    }
}

/// Errors of an endpoint with a JSON body.
pub(crate) struct BodyErrors;
impl IntoResponses for BodyErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut m = set(&AUTH);
        m.extend(set(&[
            ("413", "body too large"),
            ("415", "body is not application/json"),
            ("422", "body does not match the schema or a value was refused"),
        ]));
        m
    }
}

/// Errors of an endpoint with query parameters.
pub(crate) struct QueryErrors;
impl IntoResponses for QueryErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut m = set(&AUTH);
        m.extend(set(&[("422", "a parameter was refused")]));
        m
    }
}

/// Storage unavailable.
pub(crate) struct Unavailable;
impl IntoResponses for Unavailable {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        set(&[("503", "storage unavailable")])
    }
}

/// The OpenAPI document as pretty JSON (built once).
pub fn document_json() -> String {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().expect("the document serialises")).clone()
}
