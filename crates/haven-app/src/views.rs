//! What clients see of conversations, events and messages, and how stored (sealed) rows
//! become those views: every body, title and file name is opened here, and nowhere else.

use std::collections::HashMap;

use haven_crypto::envelope::{self, ContentContext, DataKey};
use haven_domain::messaging::{ContentType, ConversationKind, EventKind, Priority};
use haven_domain::{AttachmentId, ConversationId, MessageId, OrgId, PatientId, UserId};
use haven_store::{StoredAttachment, StoredEvent, StoredMessage};
use serde::Serialize;

use crate::{App, AppError, AppResult};

/// An attachment as members see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttachmentView {
    /// Id (download from `/api/v1/attachments/{id}`).
    pub id: AttachmentId,
    /// Media type found from the content.
    pub media_type: String,
    /// Size in bytes.
    pub size: i64,
    /// The file name given by the uploader; absent once destroyed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Whether a message's content still exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Readable.
    Active,
    /// Recalled by its sender: content destroyed.
    Recalled,
    /// Past its expiry: content destroyed.
    Expired,
}

/// A message in its current version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// Message id.
    pub id: MessageId,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Sequence number of its sending.
    pub seq: i64,
    /// Sender.
    pub sender_id: UserId,
    /// Priority.
    pub priority: Priority,
    /// How the payload is to be read.
    pub content_type: ContentType,
    /// Current version (1 unless edited).
    pub version: i64,
    /// Whether it was edited (earlier versions at `.../versions`).
    pub edited: bool,
    /// Active, recalled or expired.
    pub state: MessageState,
    /// The text (content type `text`, active messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The opaque payload, base64 (content type `mls_ciphertext`, active messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext: Option<String>,
    /// Sent (RFC 3339).
    pub sent_at: String,
    /// Last edited (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// Expiry (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Attachments.
    pub attachments: Vec<AttachmentView>,
}

/// One event of a conversation: the unit of history and of real-time delivery.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Position in the conversation: gap-free, strictly increasing.
    pub seq: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who did it (absent for system events such as expiry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor_id: Option<UserId>,
    /// The member added, removed or leaving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<UserId>,
    /// The message concerned, in its current state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageView>,
    /// The message of the patient's thread (type `patient_message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_message: Option<crate::patient_thread::PatientMessageView>,
}

/// The patient banner of a patient conversation (members only).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PatientBanner {
    /// Patient id.
    pub id: PatientId,
    /// Medical record number.
    pub mrn: String,
    /// Name.
    pub name: String,
    /// Date of birth (YYYY-MM-DD).
    pub date_of_birth: String,
}

/// A conversation as one of its members sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConversationView {
    /// Id.
    pub id: ConversationId,
    /// Direct, group or patient.
    pub kind: ConversationKind,
    /// Title, if one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The patient banner (patient conversations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientBanner>,
    /// Creator.
    pub created_by: UserId,
    /// Created (RFC 3339).
    pub created_at: String,
    /// The last sequence number the caller may see.
    pub last_seq: i64,
    /// Time of the last event (RFC 3339).
    pub last_activity_at: String,
    /// Whether the caller is still a member (false once removed or left: history up to then
    /// stays readable, nothing after).
    pub is_member: bool,
    /// The caller's first visible sequence number.
    pub joined_seq: i64,
    /// The caller's delivered position.
    pub delivered_seq: i64,
    /// The caller's read position.
    pub read_seq: i64,
    /// Messages from others after the read position.
    pub unread: i64,
    /// Priority of the newest unread message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest_unread_priority: Option<Priority>,
    /// The members, current and former, with their receipt positions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<MemberView>>,
}

/// A member and their receipt positions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MemberView {
    /// User id.
    pub user_id: UserId,
    /// Display name.
    pub display_name: String,
    /// Whether still a member.
    pub is_member: bool,
    /// Delivered up to this sequence number.
    pub delivered_seq: i64,
    /// Read up to this sequence number.
    pub read_seq: i64,
}

pub(crate) fn content_ctx<'a>(
    org: &'a str,
    conv: &'a str,
    item: &'a str,
    version: i64,
) -> ContentContext<'a> {
    ContentContext { org, conversation: conv, item, version: u32::try_from(version).unwrap_or(u32::MAX) }
}

impl App {
    /// Opens a sealed payload of a message at `version`.
    pub(crate) fn open_body(
        org_key: &DataKey,
        org: OrgId,
        m: &StoredMessage,
        version: i64,
        sealed: &[u8],
    ) -> AppResult<(Option<String>, Option<String>)> {
        let Some(wrapped) = &m.data_key else { return Ok((None, None)) };
        let key = Self::open_data_key(org_key, org, "message", m.id, wrapped)?;
        let (o, c, i) = (org.to_string(), m.conversation_id.to_string(), m.id.to_string());
        let plain = envelope::open_content(&key, &content_ctx(&o, &c, &i, version), sealed)
            .map_err(|_| AppError::Internal(format!("message {} does not open", m.id)))?;
        Ok(match m.content_type {
            ContentType::Text => (Some(String::from_utf8_lossy(plain.expose()).into_owned()), None),
            ContentType::MlsCiphertext => (None, Some(data_encoding::BASE64.encode(plain.expose()))),
        })
    }

    fn attachment_view(org_key: &DataKey, a: &StoredAttachment) -> AppResult<AttachmentView> {
        let name = match &a.data_key {
            Some(wrapped) => {
                let key = Self::open_data_key(org_key, a.org_id, "attachment", a.id, wrapped)?;
                let (o, c, i) = (a.org_id.to_string(), a.conversation_id.to_string(), a.id.to_string());
                let plain = envelope::open_content(&key, &content_ctx(&o, &c, &i, 1), &a.name_sealed)
                    .map_err(|_| AppError::Internal(format!("attachment {} does not open", a.id)))?;
                Some(String::from_utf8_lossy(plain.expose()).into_owned())
            }
            None => None,
        };
        Ok(AttachmentView { id: a.id, media_type: a.media_type.clone(), size: a.size, name })
    }

    pub(crate) fn message_view(
        &self,
        org_key: &DataKey,
        org: OrgId,
        m: &StoredMessage,
        attachments: &HashMap<MessageId, Vec<&StoredAttachment>>,
    ) -> AppResult<MessageView> {
        let now = self.now();
        let state = if m.recalled_at.is_some() {
            MessageState::Recalled
        } else if m.expired_at.is_some() || m.expires_at.is_some_and(|t| t <= now) {
            // Unreadable from its expiry on, even before the purge has run.
            MessageState::Expired
        } else {
            MessageState::Active
        };
        let (body, ciphertext) = match (state, &m.body_sealed) {
            (MessageState::Active, Some(sealed)) => Self::open_body(org_key, org, m, m.version, sealed)?,
            _ => (None, None),
        };
        let atts = match state {
            MessageState::Active => attachments
                .get(&m.id)
                .map(|v| v.iter().map(|a| Self::attachment_view(org_key, a)).collect::<AppResult<Vec<_>>>())
                .transpose()?
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        Ok(MessageView {
            id: m.id,
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender_id: m.sender_id,
            priority: m.priority,
            content_type: m.content_type,
            version: m.version,
            edited: m.edited_at.is_some(),
            state,
            body,
            ciphertext,
            sent_at: m.created_at.to_string(),
            edited_at: m.edited_at.map(|t| t.to_string()),
            expires_at: m.expires_at.map(|t| t.to_string()),
            attachments: atts,
        })
    }

    /// Renders stored events, opening each message's current version.
    pub(crate) async fn render_events(
        &self,
        org: OrgId,
        events: &[StoredEvent],
    ) -> AppResult<Vec<EventView>> {
        let with_files: Vec<MessageId> = events
            .iter()
            .filter_map(|e| e.message.as_ref())
            .filter(|m| !m.attachments.is_empty())
            .map(|m| m.id)
            .collect();
        let stored = self.store.attachments_of(org, &with_files).await?;
        let mut by_message: HashMap<MessageId, Vec<&StoredAttachment>> = HashMap::new();
        for a in &stored {
            if let Some(m) = a.message_id {
                by_message.entry(m).or_default().push(a);
            }
        }
        let org_key = if events.iter().any(|e| e.message.is_some() || e.patient_message.is_some()) {
            Some(self.org_key(org).await?)
        } else {
            None
        };
        events
            .iter()
            .map(|e| {
                let message = match (&e.message, &org_key) {
                    (Some(m), Some(k)) => Some(self.message_view(k, org, m, &by_message)?),
                    _ => None,
                };
                let patient_message = match (&e.patient_message, &org_key) {
                    (Some(m), Some(k)) => Some(Self::patient_message_view(k, org, m)?),
                    _ => None,
                };
                Ok(EventView {
                    kind: e.kind,
                    conversation_id: e.conversation_id,
                    seq: e.seq,
                    at: e.created_at.to_string(),
                    actor_id: e.actor_id,
                    subject_id: e.subject_id,
                    message,
                    patient_message,
                })
            })
            .collect()
    }
}
