//! Provider webhooks (not part of the client API document). Twilio's requests are trusted
//! only after `X-Twilio-Signature` is verified in constant time over the exact public URL and
//! the form parameters; a missing or wrong signature is refused (403) and audited. Inbound texts
//! are de-duplicated by `MessageSid`, so a retried or replayed webhook changes nothing. An
//! opt-out is committed before the 200 is sent.

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use haven_app::AppError;
use haven_domain::{OrgId, ValidationError};

use crate::HttpState;
use crate::error::ApiResult;
use crate::extract::{ApiPath, Meta};

/// An empty TwiML answer: replies go through the outbox, never inline, so each is sent once.
const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

async fn verified(
    state: &HttpState,
    org: OrgId,
    meta: &haven_app::RequestMeta,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Vec<(String, String)>> {
    let token = state.app.twilio_webhook_token(org).await?.ok_or(AppError::NotFound)?;
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        AppError::Invalid(ValidationError::new("body", "invalid_form", "the body is not form-encoded"))
    })?;
    let url = state.app.public_url(uri.path_and_query().map(|p| p.as_str()).unwrap_or(uri.path()));
    let signature = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !haven_sms::twilio::verify(token.expose(), &url, &params, signature) {
        state.app.webhook_refused(org, meta).await?;
        return Err(AppError::Forbidden(
            "invalid_signature",
            "the webhook signature is missing or wrong".into(),
        )
        .into());
    }
    Ok(params)
}

fn twiml() -> Response {
    ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], EMPTY_TWIML).into_response()
}

fn missing(what: &'static str) -> AppError {
    AppError::Invalid(ValidationError::new(what, "invalid_webhook", "a required webhook field is missing"))
}

/// POST /webhooks/twilio/{org}/inbound — a text from a patient.
pub(crate) async fn twilio_inbound(
    State(state): State<HttpState>,
    ApiPath(org): ApiPath<OrgId>,
    Meta(meta): Meta,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let params = verified(&state, org, &meta, &uri, &headers, &body).await?;
    let sms = haven_sms::twilio::inbound(&params).ok_or_else(|| missing("MessageSid"))?;
    state.app.receive_sms(org, sms).await?;
    Ok(twiml())
}

/// POST /webhooks/twilio/{org}/status — a delivery report for a text we sent.
pub(crate) async fn twilio_status(
    State(state): State<HttpState>,
    ApiPath(org): ApiPath<OrgId>,
    Meta(meta): Meta,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let params = verified(&state, org, &meta, &uri, &headers, &body).await?;
    let report = haven_sms::twilio::status(&params).ok_or_else(|| missing("MessageStatus"))?;
    state.app.sms_status(org, report).await?;
    Ok(StatusCode::NO_CONTENT)
}
