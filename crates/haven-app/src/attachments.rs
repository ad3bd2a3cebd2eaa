//! Attachments: checked by content, sealed under their own data key, stored as blobs, and
//! served only to members who can see the message they were sent with.

use haven_crypto::envelope;
use haven_domain::attachment::{check_file_name, kind_of, sniff_media_type};
use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_domain::{AttachmentId, ConversationId};
use haven_store::NewAttachment;

use crate::views::{AttachmentView, content_ctx};
use crate::{App, AppError, AppResult, Principal};

/// A downloaded attachment.
#[derive(Debug)]
pub struct Download {
    /// The file name given by the uploader.
    pub name: String,
    /// Media type.
    pub media_type: String,
    /// The content.
    pub bytes: Vec<u8>,
}

impl App {
    /// Stores an upload to a conversation; it is sent by naming it in a message.
    pub async fn upload_attachment(
        &self,
        p: &Principal,
        conv: ConversationId,
        name: &str,
        bytes: &[u8],
    ) -> AppResult<AttachmentView> {
        let name = check_file_name(name)?;
        // The organisation's limit, within the server's.
        let limit = usize::try_from(p.policy.max_attachment_bytes)
            .unwrap_or(usize::MAX)
            .min(self.settings.max_attachment_bytes);
        if limit == 0 {
            return Err(AppError::Forbidden(
                "attachments_disabled",
                "your organisation does not allow attachments".into(),
            ));
        }
        if bytes.len() > limit {
            return Err(AppError::TooLarge(format!("an attachment may have at most {limit} bytes")));
        }
        let media_type = sniff_media_type(bytes).ok_or_else(|| {
            AppError::Unsupported(
                "this kind of file cannot be shared: images, PDF, Office documents and plain text are allowed"
                    .into(),
            )
        })?;
        let kind = kind_of(media_type);
        if !p.policy.attachment_kinds.contains(kind) {
            let allowed: Vec<&str> = p.policy.attachment_kinds.kinds().iter().map(|k| k.as_str()).collect();
            return Err(AppError::Unsupported(format!(
                "your organisation does not allow sharing this kind of file ({}); allowed: {}",
                kind.as_str(),
                if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
            )));
        }
        self.current_member(p, conv).await?;
        let org = p.org();
        let id = self.new_id(|r| AttachmentId::random(r));
        let org_key = self.org_key(org).await?;
        let (key, wrapped) = self.new_data_key(&org_key, org, "attachment", id);
        let (o, c, i) = (org.to_string(), conv.to_string(), id.to_string());
        let content = envelope::seal_content(&key, &content_ctx(&o, &c, &i, 0), self.random(), bytes);
        let name_sealed =
            envelope::seal_content(&key, &content_ctx(&o, &c, &i, 1), self.random(), name.as_bytes());
        let blobs = self.blobs.clone();
        let key_name = i.clone();
        tokio::task::spawn_blocking(move || blobs.put(&key_name, &content))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .map_err(|e| AppError::Unavailable(e.to_string()))?;
        let rec = self
            .record(
                Some(org),
                crate::messaging::MESSAGING,
                "attachment-upload",
                AuditAction::C,
                AuditOutcome::Success,
                p.agent(),
            )
            .entity("conversation", conv)
            .entity("attachment", id);
        let new = NewAttachment {
            id,
            org_id: org,
            conversation_id: conv,
            uploader_id: p.user.id,
            media_type: media_type.to_owned(),
            size: bytes.len() as i64,
            data_key: wrapped,
            name_sealed,
            now: self.now(),
        };
        if let Err(e) = self.store.create_attachment(&new, &rec).await {
            let _ = self.blobs.delete(&i);
            return Err(e.into());
        }
        Ok(AttachmentView { id, media_type: media_type.to_owned(), size: new.size, name: Some(name) })
    }

    /// Downloads an attachment: the uploader before it is sent, then members who can see its
    /// message; recalled, expired or unknown attachments are NotFound.
    pub async fn download_attachment(&self, p: &Principal, id: AttachmentId) -> AppResult<Download> {
        p.require(haven_domain::roles::Permission::MessagingUse)?;
        let org = p.org();
        let a = self.store.attachment(org, id).await?;
        let m = self.store.membership(org, a.conversation_id, p.user.id).await?;
        let visible = match a.message_id {
            None => a.uploader_id == p.user.id && m.is_current(),
            Some(msg) => {
                let stored = self.store.message(org, a.conversation_id, msg).await?;
                let live = stored.data_key.is_some() && stored.expires_at.is_none_or(|t| t > self.now());
                live && m.can_see(stored.seq)
            }
        };
        let wrapped = a.data_key.as_ref().filter(|_| visible).ok_or(AppError::NotFound)?;
        let org_key = self.org_key(org).await?;
        let key = Self::open_data_key(&org_key, org, "attachment", id, wrapped)?;
        let blobs = self.blobs.clone();
        let key_name = id.to_string();
        let sealed = tokio::task::spawn_blocking(move || blobs.get(&key_name))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .map_err(|e| AppError::Internal(format!("attachment blob: {e}")))?;
        let (o, c, i) = (org.to_string(), a.conversation_id.to_string(), id.to_string());
        let bytes = envelope::open_content(&key, &content_ctx(&o, &c, &i, 0), &sealed)
            .map_err(|_| AppError::Internal(format!("attachment {id} does not open")))?;
        let name = envelope::open_content(&key, &content_ctx(&o, &c, &i, 1), &a.name_sealed)
            .map_err(|_| AppError::Internal(format!("attachment {id} name does not open")))?;
        let rec = self
            .record(
                Some(org),
                crate::messaging::MESSAGING,
                "attachment-download",
                AuditAction::R,
                AuditOutcome::Success,
                p.agent(),
            )
            .entity("conversation", a.conversation_id)
            .entity("attachment", id);
        self.store.record_audit(&rec, self.now()).await?;
        Ok(Download {
            name: String::from_utf8_lossy(name.expose()).into_owned(),
            media_type: a.media_type,
            bytes: bytes.expose().clone(),
        })
    }
}
