//! Conversations, membership, messages, history and receipts.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use haven_app::messaging::EventRange;
use haven_app::messaging::{MessageReceipts, MessageVersion, ReceiptNotice, SendMessage, StartConversation};
use haven_app::views::{ConversationView, EventView};
use haven_domain::messaging::{ContentType, ConversationKind, Priority};
use haven_domain::{AttachmentId, ConversationId, MessageId, PatientId, UserId, ValidationError};
use serde::{Deserialize, Serialize};

use crate::HttpState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};

/// A conversation to start.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConversationRequest {
    /// Direct (you and one other), group, or patient (about one patient).
    pub kind: ConversationKind,
    /// The other members (users of your organisation).
    pub members: Vec<UserId>,
    /// Optional title (at most 200 characters).
    #[schema(max_length = 200)]
    pub title: Option<String>,
    /// The patient of a patient conversation.
    pub patient_id: Option<PatientId>,
}

/// One page of conversations.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConversationPage {
    /// Most recent activity first.
    pub conversations: Vec<ConversationView>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// Paging of the conversation list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConversationParams {
    /// The `next_before` of the previous page.
    pub before: Option<String>,
    /// Page size, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A member to add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The user to add.
    pub user_id: UserId,
}

/// A message to send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    /// Chosen by the client, unique per message: resending with the same key returns the first
    /// result (200) and stores nothing. 1–128 of `A-Z a-z 0-9 - _ . :`. Keys that grow with
    /// time (a UUIDv7, or the time in hex followed by random digits, as the web client makes
    /// them) are the cheapest to store: each goes to the end of the key index.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    pub idempotency_key: String,
    /// The text (or, for `mls_ciphertext`, the payload in base64).
    #[schema(min_length = 1)]
    pub body: String,
    /// Default `text`.
    pub content_type: Option<ContentType>,
    /// Default `routine`.
    pub priority: Option<Priority>,
    /// When the message becomes unreadable and is destroyed (RFC 3339, in the future).
    pub expires_at: Option<String>,
    /// Attachments you uploaded to this conversation and have not sent yet.
    pub attachments: Option<Vec<AttachmentId>>,
}

/// A new version of a message.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessageRequest {
    /// The new text.
    #[schema(min_length = 1)]
    pub body: String,
}

/// Which events to read.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Events after this sequence number, oldest first (catching up).
    pub after: Option<i64>,
    /// Events before this sequence number (scrolling back); returned oldest first.
    pub before: Option<i64>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub events: Vec<EventView>,
}

/// New receipt positions (never moved backwards).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReceiptRequest {
    /// Everything up to this sequence number has been delivered to this user's device.
    pub delivered_seq: Option<i64>,
    /// Everything up to this sequence number has been read (implies delivered).
    pub read_seq: Option<i64>,
}

/// Versions of a message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionList {
    /// Oldest first.
    pub versions: Vec<MessageVersion>,
}

fn bad_cursor() -> haven_app::AppError {
    ValidationError::new(
        "before",
        "invalid_cursor",
        "before must be a next_before value from a previous page",
    )
    .into()
}

fn parse_cursor(s: &str) -> Result<(jiff::Timestamp, ConversationId), haven_app::AppError> {
    let (ms, id) = s.split_once('.').ok_or_else(bad_cursor)?;
    let ms: i64 = ms.parse().map_err(|_| bad_cursor())?;
    let t = jiff::Timestamp::from_millisecond(ms).map_err(|_| bad_cursor())?;
    Ok((t, id.parse().map_err(|_| bad_cursor())?))
}

/// POST /api/v1/conversations — start a conversation.
#[utoipa::path(post, path = "/api/v1/conversations", tag = "messaging", request_body = CreateConversationRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 201, description = "created", body = ConversationView), crate::openapi::BodyErrors))]
pub(crate) async fn create(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<CreateConversationRequest>,
) -> ApiResult<(StatusCode, Json<ConversationView>)> {
    let input = StartConversation {
        kind: req.kind,
        members: req.members,
        title: req.title,
        patient_id: req.patient_id,
    };
    Ok((StatusCode::CREATED, Json(state.app.create_conversation(&p, input).await?)))
}

/// GET /api/v1/conversations — the caller's conversations, most recent activity first.
#[utoipa::path(get, path = "/api/v1/conversations", tag = "messaging", params(ConversationParams),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "a page", body = ConversationPage), crate::openapi::QueryErrors))]
pub(crate) async fn list(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ConversationParams>,
) -> ApiResult<Json<ConversationPage>> {
    let limit = super::page_limit(q.limit, 50, 100)?;
    let before = q.before.as_deref().map(parse_cursor).transpose()?;
    let (conversations, next) = state.app.conversations(&p, before, limit).await?;
    let next_before = next.map(|(t, id)| format!("{}.{id}", t.as_millisecond()));
    Ok(Json(ConversationPage { conversations, next_before }))
}

/// GET /api/v1/conversations/{id} — one conversation with its members and their receipts.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "messaging",
    params(("id" = ConversationId, Path, description = "conversation id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the conversation", body = ConversationView), crate::openapi::AuthErrors))]
pub(crate) async fn get_one(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<ConversationId>,
) -> ApiResult<Json<ConversationView>> {
    Ok(Json(state.app.conversation(&p, id).await?))
}

/// POST /api/v1/conversations/{id}/members — add a member (group and patient conversations).
#[utoipa::path(post, path = "/api/v1/conversations/{id}/members", tag = "messaging", request_body = AddMemberRequest,
    params(("id" = ConversationId, Path, description = "conversation id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 201, description = "the membership event", body = EventView), crate::openapi::BodyErrors))]
pub(crate) async fn add_member(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(req): ApiJson<AddMemberRequest>,
) -> ApiResult<(StatusCode, Json<EventView>)> {
    Ok((StatusCode::CREATED, Json(state.app.add_member(&p, id, req.user_id).await?)))
}

/// DELETE /api/v1/conversations/{id}/members/{user_id} — remove a member, or leave (your own id).
#[utoipa::path(delete, path = "/api/v1/conversations/{id}/members/{user_id}", tag = "messaging",
    params(("id" = ConversationId, Path, description = "conversation id"), ("user_id" = UserId, Path, description = "member")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the membership event", body = EventView), crate::openapi::AuthErrors))]
pub(crate) async fn remove_member(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath((id, user)): ApiPath<(ConversationId, UserId)>,
) -> ApiResult<Json<EventView>> {
    Ok(Json(state.app.remove_member(&p, id, user).await?))
}

/// POST /api/v1/conversations/{id}/messages — send. 201 when stored; 200 with the first
/// result when the idempotency key was used before. A 2xx means durably committed.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "messaging", request_body = SendMessageRequest,
    params(("id" = ConversationId, Path, description = "conversation id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 201, description = "stored", body = EventView),
        (status = 200, description = "already stored under this idempotency key", body = EventView),
        crate::openapi::BodyErrors))]
pub(crate) async fn send(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(req): ApiJson<SendMessageRequest>,
) -> ApiResult<(StatusCode, Json<EventView>)> {
    let expires_at = req
        .expires_at
        .map(|s| {
            s.parse::<jiff::Timestamp>().map_err(|_| {
                haven_app::AppError::from(ValidationError::new(
                    "expires_at",
                    "invalid_time",
                    "expires_at must be an RFC 3339 time such as 2026-11-22T18:00:00Z",
                ))
            })
        })
        .transpose()?;
    let input = SendMessage {
        idempotency_key: req.idempotency_key,
        body: req.body,
        content_type: req.content_type.unwrap_or(ContentType::Text),
        priority: req.priority.unwrap_or(Priority::Routine),
        expires_at,
        attachments: req.attachments.unwrap_or_default(),
    };
    let (view, created) = state.app.send_message(&p, id, input).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(view)))
}

/// GET /api/v1/conversations/{id}/events — history: `after` to catch up, `before` to scroll back.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/events", tag = "messaging", params(("id" = ConversationId, Path, description = "conversation id"), EventParams),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "a page of events", body = EventPage), crate::openapi::QueryErrors))]
pub(crate) async fn events(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<ConversationId>,
    ApiQuery(q): ApiQuery<EventParams>,
) -> ApiResult<Json<EventPage>> {
    let limit = super::page_limit(q.limit, 50, 200)?;
    let range = match (q.after, q.before) {
        (Some(_), Some(_)) => {
            return Err(haven_app::AppError::from(ValidationError::new(
                "after",
                "after_and_before",
                "give after or before, not both",
            ))
            .into());
        }
        (Some(a), None) => EventRange::After(a),
        (None, Some(b)) => EventRange::Before(b),
        (None, None) => EventRange::Before(i64::MAX),
    };
    Ok(Json(EventPage { events: state.app.events(&p, id, range, limit).await? }))
}

/// PUT /api/v1/conversations/{id}/messages/{message_id} — edit your message (a new version).
#[utoipa::path(put, path = "/api/v1/conversations/{id}/messages/{message_id}", tag = "messaging", request_body = EditMessageRequest,
    params(("id" = ConversationId, Path, description = "conversation id"), ("message_id" = MessageId, Path, description = "message id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the edit event", body = EventView), crate::openapi::BodyErrors))]
pub(crate) async fn edit(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath((id, msg)): ApiPath<(ConversationId, MessageId)>,
    ApiJson(req): ApiJson<EditMessageRequest>,
) -> ApiResult<Json<EventView>> {
    Ok(Json(state.app.edit_message(&p, id, msg, req.body).await?))
}

/// DELETE /api/v1/conversations/{id}/messages/{message_id} — recall your message: its content
/// is destroyed for everyone and a tombstone remains.
#[utoipa::path(delete, path = "/api/v1/conversations/{id}/messages/{message_id}", tag = "messaging",
    params(("id" = ConversationId, Path, description = "conversation id"), ("message_id" = MessageId, Path, description = "message id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the recall event", body = EventView), crate::openapi::AuthErrors))]
pub(crate) async fn recall(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath((id, msg)): ApiPath<(ConversationId, MessageId)>,
) -> ApiResult<Json<EventView>> {
    Ok(Json(state.app.recall_message(&p, id, msg).await?))
}

/// GET /api/v1/conversations/{id}/messages/{message_id}/versions — the edit history.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages/{message_id}/versions", tag = "messaging",
    params(("id" = ConversationId, Path, description = "conversation id"), ("message_id" = MessageId, Path, description = "message id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "versions, oldest first", body = VersionList), crate::openapi::AuthErrors))]
pub(crate) async fn versions(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath((id, msg)): ApiPath<(ConversationId, MessageId)>,
) -> ApiResult<Json<VersionList>> {
    Ok(Json(VersionList { versions: state.app.message_versions(&p, id, msg).await? }))
}

/// GET /api/v1/conversations/{id}/messages/{message_id}/receipts — who has it, who has read it.
#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages/{message_id}/receipts", tag = "messaging",
    params(("id" = ConversationId, Path, description = "conversation id"), ("message_id" = MessageId, Path, description = "message id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "receipts", body = MessageReceipts), crate::openapi::AuthErrors))]
pub(crate) async fn receipts(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath((id, msg)): ApiPath<(ConversationId, MessageId)>,
) -> ApiResult<Json<MessageReceipts>> {
    Ok(Json(state.app.message_receipts(&p, id, msg).await?))
}

/// POST /api/v1/conversations/{id}/receipts — move your delivered/read positions forward.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/receipts", tag = "messaging", request_body = ReceiptRequest,
    params(("id" = ConversationId, Path, description = "conversation id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "your positions now", body = ReceiptNotice), crate::openapi::BodyErrors))]
pub(crate) async fn mark(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<ConversationId>,
    ApiJson(req): ApiJson<ReceiptRequest>,
) -> ApiResult<Json<ReceiptNotice>> {
    let read = req.read_seq.unwrap_or(0);
    let delivered = req.delivered_seq.unwrap_or(0);
    Ok(Json(state.app.mark(&p, id, delivered, read).await?))
}
