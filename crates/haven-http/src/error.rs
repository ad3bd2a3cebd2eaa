//! One error type for every handler: [`ApiError`] renders as RFC 9457 problem+json with a
//! stable `code`. Internal details go to the server log, never to the client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use haven_app::AppError;
use haven_domain::session::SessionState;
use serde::Serialize;

/// An RFC 9457 problem details object.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:haven:problem:<code>`).
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this occurrence, for a person to read.
    pub detail: String,
    /// A stable machine-readable code.
    pub code: String,
    /// The request field the problem is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    detail: String,
    field: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// Builds an error answer.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self { status, code: code.into(), detail: detail.into(), field: None, retry_after: None }
    }

    /// 404 with the standard wording.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::NotFound => ApiError::not_found(),
            AppError::Unauthenticated => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "sign in first")
            }
            AppError::SessionExpired => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session_expired",
                "the session has ended after inactivity or at its time limit; sign in again",
            ),
            AppError::MfaRequired(SessionState::MfaEnrollmentRequired) => ApiError::new(
                StatusCode::FORBIDDEN,
                "mfa_enrollment_required",
                "your organisation requires multi-factor authentication: enrol an authenticator first",
            ),
            AppError::MfaRequired(_) => ApiError::new(
                StatusCode::FORBIDDEN,
                "mfa_required",
                "complete sign-in with your authenticator code first",
            ),
            AppError::InvalidCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "the username or password is incorrect",
            ),
            AppError::InvalidCode => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_code",
                "the code is incorrect, expired or already used",
            ),
            AppError::Throttled { retry_after_secs } => {
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    format!("too many failed attempts; try again in {retry_after_secs} seconds"),
                );
                e.retry_after = Some(retry_after_secs);
                e
            }
            AppError::Invalid(v) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, v.code, v.message).with_field(v.field)
            }
            AppError::Conflict(code, msg) => ApiError::new(StatusCode::CONFLICT, code, msg),
            AppError::Forbidden(code, msg) => ApiError::new(StatusCode::FORBIDDEN, code, msg),
            AppError::TooLarge(msg) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg),
            AppError::Unsupported(msg) => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", msg)
            }
            AppError::Unavailable(detail) => {
                tracing::error!(error = %detail, "storage unavailable");
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service is temporarily unavailable; try again shortly",
                );
                e.retry_after = Some(5);
                e
            }
            AppError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                // serde's message names the field and the expected type, never the value.
                format!("the request body does not match the schema: {}", data_error_text(&e)),
            ),
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", "the request body is not valid JSON")
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is too large",
            ),
            _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", "the request body could not be read"),
        }
    }
}

fn data_error_text(e: &axum::extract::rejection::JsonDataError) -> String {
    // The innermost source is serde's description ("missing field `x`", "unknown field `y`").
    let mut src: &dyn std::error::Error = e;
    while let Some(next) = src.source() {
        src = next;
    }
    let text = src.to_string();
    // serde quotes offending string values after "invalid value: string"; drop anything quoted
    // that is not a field name so a value (possibly a secret) is never echoed.
    if text.contains("invalid value") || text.contains("invalid type: string") {
        return text.split(',').next_back().unwrap_or("invalid value").trim().to_owned();
    }
    text
}

impl From<QueryRejection> for ApiError {
    fn from(_: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", "the query parameters are invalid")
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        // An id that does not parse names nothing: the same answer as an unknown id.
        ApiError::not_found()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        let body = Problem {
            problem_type: format!("urn:haven:problem:{}", self.code),
            title,
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code,
            field: self.field,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
