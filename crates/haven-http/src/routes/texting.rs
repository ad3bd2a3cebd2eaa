//! Patient texting for staff and administrators: the organisation's gateway and templates, a
//! patient's consent (record, history), texting a patient from a patient conversation, the
//! texts sent, and the consent ledger as FHIR Consent resources. Bodies and numbers never
//! appear in responses about texts.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use haven_app::patient_thread::{InboxItem, InboxUpdate};
use haven_app::texting::{
    ConsentChange, ConsentOverview, GatewaySettings, GatewayView, PatientTextRequest, TextView,
};
use haven_domain::messaging::InboxStatus;
use haven_domain::{ConversationId, PatientId};
use serde::Deserialize;

use crate::HttpState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};

/// PUT /api/v1/organization/sms-gateway — set up the organisation's SMS provider.
#[utoipa::path(put, path = "/api/v1/organization/sms-gateway", tag = "texting", request_body = GatewaySettings,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "saved (credentials are never shown again)", body = GatewayView), crate::openapi::BodyErrors))]
pub(crate) async fn set_gateway(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<GatewaySettings>,
) -> ApiResult<Json<GatewayView>> {
    Ok(Json(state.app.set_sms_gateway(&p, req).await?))
}

/// GET /api/v1/organization/sms-gateway — the provider, numbers and webhook URLs.
#[utoipa::path(get, path = "/api/v1/organization/sms-gateway", tag = "texting",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the gateway", body = GatewayView), crate::openapi::AuthErrors))]
pub(crate) async fn get_gateway(
    State(state): State<HttpState>,
    Auth(p): Auth,
) -> ApiResult<Json<GatewayView>> {
    Ok(Json(state.app.sms_gateway(&p).await?))
}

/// A secure-message template.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRequest {
    /// The text: `{{ org_name }}`, `{{ link }}` (required) and `{{ help_phone }}` only, with
    /// opt-out instructions (STOP or ALTO), at most 320 characters.
    #[schema(max_length = 320)]
    pub body: String,
}

/// PUT /api/v1/organization/sms-templates/{language} — save the template of a language (en, es).
#[utoipa::path(put, path = "/api/v1/organization/sms-templates/{language}", tag = "texting",
    params(("language" = String, Path, description = "en or es")), request_body = TemplateRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 204, description = "saved"), crate::openapi::BodyErrors))]
pub(crate) async fn set_template(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(language): ApiPath<String>,
    ApiJson(req): ApiJson<TemplateRequest>,
) -> ApiResult<StatusCode> {
    state.app.set_sms_template(&p, &language, &req.body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// GET /api/v1/patients/{id}/consent — where the patient's number stands, and its ledger.
#[utoipa::path(get, path = "/api/v1/patients/{id}/consent", tag = "texting",
    params(("id" = PatientId, Path, description = "patient id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "consent", body = ConsentOverview), crate::openapi::AuthErrors))]
pub(crate) async fn consent(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<PatientId>,
) -> ApiResult<Json<ConsentOverview>> {
    Ok(Json(state.app.consent_overview(&p, id).await?))
}

/// POST /api/v1/patients/{id}/consent — record consent given or withdrawn (front desk, phone,
/// in person, EHR; a web form asks the patient to confirm by text).
#[utoipa::path(post, path = "/api/v1/patients/{id}/consent", tag = "texting",
    params(("id" = PatientId, Path, description = "patient id")), request_body = ConsentChange,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 201, description = "recorded", body = ConsentOverview), crate::openapi::BodyErrors))]
pub(crate) async fn record_consent(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<PatientId>,
    ApiJson(req): ApiJson<ConsentChange>,
) -> ApiResult<(StatusCode, Json<ConsentOverview>)> {
    Ok((StatusCode::CREATED, Json(state.app.record_consent(&p, id, req).await?)))
}

/// GET /api/v1/patients/{id}/texts — texts to the patient, newest first (status only).
#[utoipa::path(get, path = "/api/v1/patients/{id}/texts", tag = "texting",
    params(("id" = PatientId, Path, description = "patient id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "texts", body = [TextView]), crate::openapi::AuthErrors))]
pub(crate) async fn texts(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<PatientId>,
) -> ApiResult<Json<Vec<TextView>>> {
    Ok(Json(state.app.patient_texts(&p, id).await?))
}

/// POST /api/v1/conversations/{id}/patient-texts — text the conversation's patient a secure link.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/patient-texts", tag = "texting",
    params(("id" = ConversationId, Path, description = "a patient conversation")), request_body = PatientTextRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 202, description = "queued (quiet hours and caps may hold it)", body = TextView), crate::openapi::BodyErrors))]
pub(crate) async fn text_patient(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(req): ApiJson<PatientTextRequest>,
) -> ApiResult<(StatusCode, Json<TextView>)> {
    Ok((StatusCode::ACCEPTED, Json(state.app.text_patient(&p, id, req).await?)))
}

/// Paging of the ledger export.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsentExportQuery {
    /// Entries after this position (0 for the first page).
    pub after: Option<i64>,
    /// Page size (1–1000, default 500).
    pub limit: Option<u32>,
}

/// GET /api/v1/consent/export — the organisation's consent ledger as a FHIR R4 Bundle of
/// Consent resources (compliance officers).
#[utoipa::path(get, path = "/api/v1/consent/export", tag = "texting", params(ConsentExportQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "a FHIR Bundle (collection) of Consent resources", body = Object), crate::openapi::QueryErrors))]
pub(crate) async fn export(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ConsentExportQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    let limit = super::page_limit(q.limit, 500, 1000)?;
    Ok(Json(state.app.consent_fhir(&p, q.after.unwrap_or(0).max(0), limit).await?))
}

/// Inbox filter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InboxParams {
    /// `open` or `done` (default: both).
    pub status: Option<InboxStatus>,
}

/// GET /api/v1/inbox — the shared inbox: patient threads where the patient wrote, newest first.
#[utoipa::path(get, path = "/api/v1/inbox", tag = "texting", params(InboxParams),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the inbox", body = [InboxItem]), crate::openapi::QueryErrors))]
pub(crate) async fn inbox(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<InboxParams>,
) -> ApiResult<Json<Vec<InboxItem>>> {
    Ok(Json(state.app.inbox(&p, q.status).await?))
}

/// PUT /api/v1/inbox/{conversation_id} — assign a patient thread, or mark it done.
#[utoipa::path(put, path = "/api/v1/inbox/{conversation_id}", tag = "texting", request_body = InboxUpdate,
    params(("conversation_id" = String, Path, description = "the patient conversation")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "updated", body = InboxItem), crate::openapi::BodyErrors))]
pub(crate) async fn update_inbox(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(conv): ApiPath<ConversationId>,
    ApiJson(req): ApiJson<InboxUpdate>,
) -> ApiResult<Json<InboxItem>> {
    Ok(Json(state.app.update_inbox(&p, conv, req).await?))
}
