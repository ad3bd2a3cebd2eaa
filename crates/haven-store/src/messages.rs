//! Messages: send (idempotent), edit (a new sealed version), recall and expiry (the data key
//! and every sealed version are destroyed; a tombstone remains), and attachments.

use haven_domain::audit::AuditRecord;
use haven_domain::messaging::{ContentType, EventKind, Priority};
use haven_domain::{AttachmentId, ConversationId, MessageId, OrgId, UserId};
use jiff::Timestamp;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::conversations::{
    EventInsert, StoredEvent, current_members, insert_event, next_seq, require_current_member,
};
use crate::rows::{get, id, ms, ts};
use crate::{Store, StoreError, StoreResult, touched};

/// A message to store; the body is already sealed.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The new id.
    pub id: MessageId,
    /// Organisation.
    pub org_id: OrgId,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Sender (must be a current member).
    pub sender_id: UserId,
    /// The client's idempotency key.
    pub idempotency_key: String,
    /// Priority.
    pub priority: Priority,
    /// How the payload is to be read.
    pub content_type: ContentType,
    /// The message's data key, wrapped by the organisation key.
    pub data_key: Vec<u8>,
    /// Version 1 of the body, sealed.
    pub body_sealed: Vec<u8>,
    /// Attachments uploaded by the sender to this conversation and not yet sent.
    pub attachments: Vec<AttachmentId>,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
    /// When.
    pub now: Timestamp,
}

/// A message as stored, in its current version.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Id.
    pub id: MessageId,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Sequence number of its sending.
    pub seq: i64,
    /// Sender.
    pub sender_id: UserId,
    /// Priority.
    pub priority: Priority,
    /// Content type.
    pub content_type: ContentType,
    /// Current version (1 unless edited).
    pub version: i64,
    /// Wrapped data key; `None` once recalled or expired.
    pub data_key: Option<Vec<u8>>,
    /// The current version's sealed body; `None` once destroyed.
    pub body_sealed: Option<Vec<u8>>,
    /// Attachment ids.
    pub attachments: Vec<AttachmentId>,
    /// Expiry.
    pub expires_at: Option<Timestamp>,
    /// Sent.
    pub created_at: Timestamp,
    /// Last edited.
    pub edited_at: Option<Timestamp>,
    /// Recalled.
    pub recalled_at: Option<Timestamp>,
    /// Expired and purged.
    pub expired_at: Option<Timestamp>,
}

/// The outcome of a send.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The message's event (for a repeated key: the first one's).
    pub event: StoredEvent,
    /// Who receives it (empty for a repeat: nothing new to deliver).
    pub recipients: Vec<UserId>,
    /// False when the idempotency key had been used: nothing was stored.
    pub created: bool,
}

/// A change to a message (edit, recall, expiry): its event and who receives it.
#[derive(Debug, Clone)]
pub struct MessageChange {
    /// The event.
    pub event: StoredEvent,
    /// The members to deliver it to.
    pub recipients: Vec<UserId>,
    /// Attachments whose keys were destroyed (their blobs can go).
    pub shredded_attachments: Vec<AttachmentId>,
}

/// An attachment to store; its blob is already written, sealed.
#[derive(Debug, Clone)]
pub struct NewAttachment {
    /// The new id (also the blob's key).
    pub id: AttachmentId,
    /// Organisation.
    pub org_id: OrgId,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Uploader (must be a current member).
    pub uploader_id: UserId,
    /// Media type found from the content.
    pub media_type: String,
    /// Size in bytes, before sealing.
    pub size: i64,
    /// Data key, wrapped by the organisation key.
    pub data_key: Vec<u8>,
    /// The file name, sealed.
    pub name_sealed: Vec<u8>,
    /// When.
    pub now: Timestamp,
}

/// An attachment as stored.
#[derive(Debug, Clone)]
pub struct StoredAttachment {
    /// Id.
    pub id: AttachmentId,
    /// Organisation.
    pub org_id: OrgId,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Uploader.
    pub uploader_id: UserId,
    /// The message it was sent with.
    pub message_id: Option<MessageId>,
    /// Media type.
    pub media_type: String,
    /// Size in bytes.
    pub size: i64,
    /// Wrapped data key; `None` once shredded.
    pub data_key: Option<Vec<u8>>,
    /// Sealed file name.
    pub name_sealed: Vec<u8>,
    /// Uploaded.
    pub created_at: Timestamp,
}

pub(crate) const MESSAGE_COLUMNS: &str = "msg.id AS m_id, msg.conversation_id AS m_conversation_id, \
     msg.seq AS m_seq, msg.sender_id AS m_sender_id, msg.priority AS m_priority, \
     msg.content_type AS m_content_type, msg.version AS m_version, msg.data_key AS m_data_key, \
     msg.attachments AS m_attachments, msg.expires_at AS m_expires_at, \
     msg.created_at AS m_created_at, msg.edited_at AS m_edited_at, \
     msg.recalled_at AS m_recalled_at, msg.expired_at AS m_expired_at, v.body_sealed AS m_body_sealed";

fn opt_ts(row: &AnyRow, col: &str) -> StoreResult<Option<Timestamp>> {
    get::<Option<i64>>(row, col)?.map(ts).transpose()
}

pub(crate) fn message_row(row: &AnyRow) -> StoreResult<StoredMessage> {
    let priority: String = get(row, "m_priority")?;
    let content_type: String = get(row, "m_content_type")?;
    let attachments: String = get(row, "m_attachments")?;
    let attachments: Vec<String> =
        serde_json::from_str(&attachments).map_err(|_| StoreError::Corrupt("attachments"))?;
    Ok(StoredMessage {
        id: id(&get::<String>(row, "m_id")?)?,
        conversation_id: id(&get::<String>(row, "m_conversation_id")?)?,
        seq: get(row, "m_seq")?,
        sender_id: id(&get::<String>(row, "m_sender_id")?)?,
        priority: Priority::parse(&priority).ok_or(StoreError::Corrupt("priority"))?,
        content_type: ContentType::parse(&content_type).ok_or(StoreError::Corrupt("content type"))?,
        version: get(row, "m_version")?,
        data_key: get(row, "m_data_key")?,
        body_sealed: get(row, "m_body_sealed")?,
        attachments: attachments.iter().map(|a| id(a)).collect::<StoreResult<_>>()?,
        expires_at: opt_ts(row, "m_expires_at")?,
        created_at: ts(get(row, "m_created_at")?)?,
        edited_at: opt_ts(row, "m_edited_at")?,
        recalled_at: opt_ts(row, "m_recalled_at")?,
        expired_at: opt_ts(row, "m_expired_at")?,
    })
}

const ATTACHMENT_COLUMNS: &str = "id, org_id, conversation_id, uploader_id, message_id, media_type, size, \
     data_key, name_sealed, created_at";

fn attachment_row(row: &AnyRow) -> StoreResult<StoredAttachment> {
    Ok(StoredAttachment {
        id: id(&get::<String>(row, "id")?)?,
        org_id: id(&get::<String>(row, "org_id")?)?,
        conversation_id: id(&get::<String>(row, "conversation_id")?)?,
        uploader_id: id(&get::<String>(row, "uploader_id")?)?,
        message_id: get::<Option<String>>(row, "message_id")?.map(|s| id(&s)).transpose()?,
        media_type: get(row, "media_type")?,
        size: get(row, "size")?,
        data_key: get(row, "data_key")?,
        name_sealed: get(row, "name_sealed")?,
        created_at: ts(get(row, "created_at")?)?,
    })
}

pub(crate) async fn message_in(
    c: &mut AnyConnection,
    org: OrgId,
    conv: ConversationId,
    msg: MessageId,
) -> StoreResult<StoredMessage> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages msg
         LEFT JOIN message_versions v ON v.message_id = msg.id AND v.version = msg.version
         WHERE msg.id = $1 AND msg.conversation_id = $2 AND msg.org_id = $3"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(msg.to_string())
        .bind(conv.to_string())
        .bind(org.to_string())
        .fetch_optional(&mut *c)
        .await?
        .ok_or(StoreError::NotFound)?;
    message_row(&row)
}

pub(crate) fn message_event(
    kind: EventKind,
    seq: i64,
    actor: Option<UserId>,
    m: StoredMessage,
    at: Timestamp,
) -> StoredEvent {
    StoredEvent {
        conversation_id: m.conversation_id,
        seq,
        kind,
        actor_id: actor,
        subject_id: None,
        message: Some(m),
        patient_message: None,
        created_at: at,
    }
}

impl Store {
    /// Stores a message: a new sequence number, the event, version 1 of the body, the sender's
    /// own receipt, the attachments claimed, and the audit record, in one transaction. A
    /// repeated idempotency key stores nothing and returns the first message.
    pub async fn send_message(&self, m: &NewMessage, audit_rec: &AuditRecord) -> StoreResult<Sent> {
        self.group.send(m, audit_rec).await
    }

    /// Stores a new version of a message. `expected_version` is the version the editor saw
    /// (the new body is sealed for `expected_version + 1`); only the sender may edit, and not
    /// after recall or expiry.
    #[allow(clippy::too_many_arguments)]
    pub async fn edit_message(
        &self,
        org: OrgId,
        conv: ConversationId,
        msg: MessageId,
        editor: UserId,
        expected_version: i64,
        body_sealed: &[u8],
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<MessageChange> {
        self.audited(audit_rec, now, async |c| {
            require_current_member(c, org, conv, editor).await?;
            let done = sqlx::query(
                "UPDATE messages SET version = version + 1, edited_at = $5
                 WHERE id = $1 AND conversation_id = $2 AND org_id = $3 AND sender_id = $4
                 AND version = $6 AND recalled_at IS NULL AND expired_at IS NULL AND data_key IS NOT NULL",
            )
            .bind(msg.to_string())
            .bind(conv.to_string())
            .bind(org.to_string())
            .bind(editor.to_string())
            .bind(ms(now))
            .bind(expected_version)
            .execute(&mut *c)
            .await?;
            touched(done).map_err(|_| StoreError::Conflict("version"))?;
            insert_version(c, msg, expected_version + 1, body_sealed, now).await?;
            change_event(c, org, conv, msg, EventKind::MessageEdited, Some(editor), now, Vec::new()).await
        })
        .await
    }

    /// Destroys a message's content for everyone: its data key, every sealed version and its
    /// attachments' keys. `by` is the sender recalling it, or `None` for expiry.
    pub async fn destroy_message(
        &self,
        org: OrgId,
        conv: ConversationId,
        msg: MessageId,
        by: Option<UserId>,
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<MessageChange> {
        self.audited(audit_rec, now, async |c| {
            let (kind, column) = match by {
                Some(user) => {
                    require_current_member(c, org, conv, user).await?;
                    (EventKind::MessageRecalled, "recalled_at")
                }
                None => (EventKind::MessageExpired, "expired_at"),
            };
            let sql = format!(
                "UPDATE messages SET data_key = NULL, {column} = $4
                 WHERE id = $1 AND conversation_id = $2 AND org_id = $3
                 AND ($5 IS NULL OR sender_id = $5) AND recalled_at IS NULL AND expired_at IS NULL"
            );
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(msg.to_string())
                .bind(conv.to_string())
                .bind(org.to_string())
                .bind(ms(now))
                .bind(by.map(|u| u.to_string()))
                .execute(&mut *c)
                .await?;
            touched(done).map_err(|_| StoreError::Conflict("message_state"))?;
            sqlx::query("DELETE FROM message_versions WHERE message_id = $1")
                .bind(msg.to_string())
                .execute(&mut *c)
                .await?;
            let rows = sqlx::query(
                "UPDATE attachments SET data_key = NULL WHERE message_id = $1 AND data_key IS NOT NULL
                 RETURNING id",
            )
            .bind(msg.to_string())
            .fetch_all(&mut *c)
            .await?;
            let shredded = rows.iter().map(|r| id(&get::<String>(r, "id")?)).collect::<StoreResult<_>>()?;
            change_event(c, org, conv, msg, kind, by, now, shredded).await
        })
        .await
    }

    /// Messages whose expiry has passed and whose content still exists, oldest first.
    pub async fn due_expiries(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<(OrgId, ConversationId, MessageId)>> {
        let rows = sqlx::query(
            "SELECT org_id, conversation_id, id FROM messages WHERE expires_at IS NOT NULL
             AND expired_at IS NULL AND recalled_at IS NULL AND expires_at <= $1
             ORDER BY expires_at LIMIT $2",
        )
        .bind(ms(now))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    id(&get::<String>(r, "org_id")?)?,
                    id(&get::<String>(r, "conversation_id")?)?,
                    id(&get::<String>(r, "id")?)?,
                ))
            })
            .collect()
    }

    /// Every version of a message still held, oldest first: (version, sealed body, time).
    pub async fn message_versions(
        &self,
        org: OrgId,
        msg: MessageId,
    ) -> StoreResult<Vec<(i64, Vec<u8>, Timestamp)>> {
        let rows = sqlx::query(
            "SELECT v.version, v.body_sealed, v.created_at FROM message_versions v
             JOIN messages msg ON msg.id = v.message_id WHERE v.message_id = $1 AND msg.org_id = $2
             ORDER BY v.version",
        )
        .bind(msg.to_string())
        .bind(org.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "version")?, get(r, "body_sealed")?, ts(get(r, "created_at")?)?)))
            .collect()
    }

    /// Stores an attachment's metadata; the uploader must be a current member.
    pub async fn create_attachment(&self, a: &NewAttachment, audit_rec: &AuditRecord) -> StoreResult<()> {
        self.audited(audit_rec, a.now, async |c| {
            require_current_member(c, a.org_id, a.conversation_id, a.uploader_id).await?;
            sqlx::query(
                "INSERT INTO attachments (id, org_id, conversation_id, uploader_id, message_id, media_type,
                 size, data_key, name_sealed, created_at) VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9)",
            )
            .bind(a.id.to_string())
            .bind(a.org_id.to_string())
            .bind(a.conversation_id.to_string())
            .bind(a.uploader_id.to_string())
            .bind(&a.media_type)
            .bind(a.size)
            .bind(a.data_key.clone())
            .bind(a.name_sealed.clone())
            .bind(ms(a.now))
            .execute(&mut *c)
            .await?;
            Ok(())
        })
        .await
    }

    /// An attachment of the organisation.
    pub async fn attachment(&self, org: OrgId, a: AttachmentId) -> StoreResult<StoredAttachment> {
        let sql = format!("SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(a.to_string())
            .bind(org.to_string())
            .fetch_optional(&self.read)
            .await?
            .ok_or(StoreError::NotFound)?;
        attachment_row(&row)
    }

    /// The attachments sent with the given messages.
    pub async fn attachments_of(
        &self,
        org: OrgId,
        messages: &[MessageId],
    ) -> StoreResult<Vec<StoredAttachment>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (0..messages.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT {ATTACHMENT_COLUMNS} FROM attachments WHERE org_id = $1 AND message_id IN ({})
             ORDER BY created_at, id",
            marks.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.to_string());
        for m in messages {
            q = q.bind(m.to_string());
        }
        q.fetch_all(&self.read).await?.iter().map(attachment_row).collect()
    }
}

async fn insert_version(
    c: &mut AnyConnection,
    msg: MessageId,
    version: i64,
    sealed: &[u8],
    now: Timestamp,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO message_versions (message_id, version, body_sealed, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(msg.to_string())
    .bind(version)
    .bind(sealed.to_vec())
    .bind(ms(now))
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Writes the event of a change to a message and gathers its recipients.
#[allow(clippy::too_many_arguments)]
async fn change_event(
    c: &mut AnyConnection,
    org: OrgId,
    conv: ConversationId,
    msg: MessageId,
    kind: EventKind,
    actor: Option<UserId>,
    now: Timestamp,
    shredded_attachments: Vec<AttachmentId>,
) -> StoreResult<MessageChange> {
    let seq = next_seq(c, org, conv, now).await?;
    insert_event(
        c,
        &EventInsert {
            org,
            conv,
            seq,
            kind,
            actor,
            message: Some(msg),
            patient_message: None,
            subject: None,
            priority: None,
            now,
        },
    )
    .await?;
    let recipients = current_members(c, conv).await?;
    let m = message_in(c, org, conv, msg).await?;
    Ok(MessageChange { event: message_event(kind, seq, actor, m, now), recipients, shredded_attachments })
}
