//! Attachment upload and download. Uploads are the raw file as the body; the file name comes
//! in the `X-File-Name` header (percent-encoded UTF-8), never in the URL.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use haven_app::views::AttachmentView;
use haven_domain::{AttachmentId, ConversationId, ValidationError};

use crate::HttpState;
use crate::error::ApiResult;
use crate::extract::{ApiPath, Auth};

fn file_name(headers: &HeaderMap) -> Result<String, haven_app::AppError> {
    let bad = || {
        haven_app::AppError::from(ValidationError::new(
            "X-File-Name",
            "invalid_file_name",
            "send the file name in the X-File-Name header, percent-encoded UTF-8",
        ))
    };
    let raw = headers.get("x-file-name").and_then(|v| v.to_str().ok()).ok_or_else(bad)?;
    crate::file_name::decode(raw).ok_or_else(bad)
}

/// POST /api/v1/conversations/{id}/attachments — upload a file (send it by naming its id in a
/// message). Its type is judged from its content: images, PDF, Office documents, plain text.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/attachments", tag = "messaging",
    params(("id" = ConversationId, Path, description = "conversation id"),
        ("X-File-Name" = String, Header, description = "the file name, percent-encoded UTF-8")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file"),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 201, description = "stored", body = AttachmentView), crate::openapi::BodyErrors))]
pub(crate) async fn upload(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<ConversationId>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<AttachmentView>)> {
    let name = file_name(&headers)?;
    let limit = state.app.settings().max_attachment_bytes;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            haven_app::AppError::TooLarge(format!("an attachment may have at most {limit} bytes"))
        } else {
            haven_app::AppError::from(ValidationError::new(
                "body",
                "unreadable_body",
                "the upload could not be read",
            ))
        }
    })?;
    Ok((StatusCode::CREATED, Json(state.app.upload_attachment(&p, id, &name, &body).await?)))
}

/// GET /api/v1/attachments/{id} — download (members who can see the message it was sent with).
#[utoipa::path(get, path = "/api/v1/attachments/{id}", tag = "messaging",
    params(("id" = AttachmentId, Path, description = "attachment id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the file", content_type = "application/octet-stream", body = Vec<u8>),
        crate::openapi::AuthErrors))]
pub(crate) async fn download(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<AttachmentId>,
) -> ApiResult<Response> {
    let d = state.app.download_attachment(&p, id).await?;
    // RFC 6266 / 8187: an ASCII fallback plus the exact UTF-8 name.
    let ascii: String = d
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || ".-_ ".contains(c) { c } else { '_' })
        .collect();
    let encoded = crate::file_name::encode(&d.name);
    let disposition = format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}");
    let mut resp = d.bytes.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&d.media_type).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment")),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(resp)
}
