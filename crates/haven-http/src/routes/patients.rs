//! Patient records (the minimal entity messaging needs). MRNs travel in bodies, never in URLs.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use haven_app::patients::PatientView;
use haven_domain::patient::PatientDetails;
use haven_domain::{PatientId, ValidationError};
use serde::Deserialize;

use crate::HttpState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, Auth};

/// A patient to register.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePatientRequest {
    /// Medical record number, unique in the organisation (letters, digits, dashes).
    #[schema(min_length = 1, max_length = 64)]
    pub mrn: String,
    /// Full name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Date of birth, YYYY-MM-DD.
    #[schema(format = Date)]
    pub date_of_birth: String,
    /// Mobile number, E.164.
    pub phone: Option<String>,
    /// Preferred language (default `en`).
    pub language: Option<String>,
    /// IANA time zone.
    pub time_zone: Option<String>,
    /// ISO 3166-2 region (e.g. `US-FL`): a stricter texting window may apply there.
    #[serde(default)]
    pub region: Option<String>,
}

/// A lookup by MRN.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatientLookupRequest {
    /// The MRN to find.
    #[schema(min_length = 1, max_length = 64)]
    pub mrn: String,
}

/// POST /api/v1/patients — register a patient.
#[utoipa::path(post, path = "/api/v1/patients", tag = "patients", request_body = CreatePatientRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 201, description = "registered", body = PatientView), crate::openapi::BodyErrors))]
pub(crate) async fn create(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<CreatePatientRequest>,
) -> ApiResult<(StatusCode, Json<PatientView>)> {
    let date_of_birth = req.date_of_birth.parse::<jiff::civil::Date>().map_err(|_| {
        haven_app::AppError::from(ValidationError::new(
            "date_of_birth",
            "invalid_date_of_birth",
            "the date of birth is a date such as 1961-04-09",
        ))
    })?;
    let details = PatientDetails {
        mrn: req.mrn,
        name: req.name,
        date_of_birth,
        phone: req.phone,
        language: req.language.unwrap_or_else(|| "en".into()),
        time_zone: req.time_zone,
        region: req.region,
    };
    Ok((StatusCode::CREATED, Json(state.app.create_patient(&p, details).await?)))
}

/// POST /api/v1/patients/lookup — find a patient by MRN (a POST, so the MRN stays out of URLs
/// and logs).
#[utoipa::path(post, path = "/api/v1/patients/lookup", tag = "patients", request_body = PatientLookupRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the patient", body = PatientView), crate::openapi::BodyErrors))]
pub(crate) async fn lookup(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<PatientLookupRequest>,
) -> ApiResult<Json<PatientView>> {
    Ok(Json(state.app.find_patient_by_mrn(&p, &req.mrn).await?))
}

/// GET /api/v1/patients/{id} — a patient's record.
#[utoipa::path(get, path = "/api/v1/patients/{id}", tag = "patients",
    params(("id" = PatientId, Path, description = "patient id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the patient", body = PatientView), crate::openapi::AuthErrors))]
pub(crate) async fn get_one(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<PatientId>,
) -> ApiResult<Json<PatientView>> {
    Ok(Json(state.app.patient(&p, id).await?))
}

/// A new mobile number.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PhoneChange {
    /// E.164 (`+` and 8 to 15 digits); absent or null removes the number.
    #[serde(default)]
    pub phone: Option<String>,
}

/// PUT /api/v1/patients/{id}/phone — change a patient's mobile number. Consent for the old
/// number ends with it (source `number-changed`); the new number has none until recorded.
#[utoipa::path(put, path = "/api/v1/patients/{id}/phone", tag = "patients", request_body = PhoneChange,
    params(("id" = PatientId, Path, description = "patient id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the patient", body = PatientView), crate::openapi::BodyErrors))]
pub(crate) async fn change_phone(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<PatientId>,
    ApiJson(req): ApiJson<PhoneChange>,
) -> ApiResult<Json<PatientView>> {
    Ok(Json(state.app.change_patient_phone(&p, id, req.phone).await?))
}
