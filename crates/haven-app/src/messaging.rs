//! Care-team messaging: conversations and membership, messages (send, edit, recall, expiry),
//! history, receipts. Every use case checks the caller's permission and membership (anything
//! else is NotFound), seals content before it reaches the store, writes its audit record in
//! the same transaction, and publishes the committed event to the real-time bus.

use std::collections::HashMap;
use std::sync::Arc;

use haven_crypto::envelope;
use haven_domain::audit::{AuditAction, AuditOutcome, AuditRecord};
use haven_domain::messaging::{self as rules, ContentType, ConversationKind, Priority};
use haven_domain::roles::Permission;
use haven_domain::{AttachmentId, ConversationId, MessageId, OrgId, PatientId, UserId, ValidationError};
use haven_store::{Membership, MessageChange, NewConversation, NewMessage, StoreError, StoredEvent};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::realtime::{BusMessage, Outbound};
use crate::views::{ConversationView, EventView, MemberView, PatientBanner, content_ctx};
use crate::{App, AppError, AppResult, Principal};

pub use haven_store::EventRange;

pub(crate) const MESSAGING: &str = "messaging";

/// A conversation to start.
#[derive(Debug, Clone)]
pub struct StartConversation {
    /// Direct, group or patient.
    pub kind: ConversationKind,
    /// The other members.
    pub members: Vec<UserId>,
    /// An optional title (sealed at rest).
    pub title: Option<String>,
    /// The patient, for a patient conversation.
    pub patient_id: Option<PatientId>,
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct SendMessage {
    /// The client's idempotency key.
    pub idempotency_key: String,
    /// Text, or base64 of an opaque payload for `mls_ciphertext`.
    pub body: String,
    /// How the payload is to be read.
    pub content_type: ContentType,
    /// Priority.
    pub priority: Priority,
    /// When it expires.
    pub expires_at: Option<Timestamp>,
    /// Attachments uploaded to this conversation by the sender.
    pub attachments: Vec<AttachmentId>,
}

/// Who has received and read one message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageReceipts {
    /// The message.
    pub message_id: MessageId,
    /// Members it has been delivered to.
    pub delivered_to: Vec<UserId>,
    /// Members who have read it.
    pub read_by: Vec<UserId>,
    /// Members who have not read it yet.
    pub unread_by: Vec<UserId>,
}

/// One version of a message.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageVersion {
    /// Version number.
    pub version: i64,
    /// Its text (or base64 payload).
    pub body: String,
    /// When it was written (RFC 3339).
    pub at: String,
}

/// A receipt as delivered on the socket (outside the sequence).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptNotice {
    /// Conversation.
    pub conversation_id: ConversationId,
    /// The member whose positions moved.
    pub user_id: UserId,
    /// Delivered up to.
    pub delivered_seq: i64,
    /// Read up to.
    pub read_seq: i64,
}

/// The JSON frame of an event on the socket.
pub fn event_frame(ev: &EventView) -> Arc<str> {
    #[derive(Serialize)]
    struct Frame<'a> {
        op: &'static str,
        event: &'a EventView,
    }
    Arc::from(serde_json::to_string(&Frame { op: "event", event: ev }).expect("views serialise"))
}

fn receipt_frame(r: &ReceiptNotice) -> Arc<str> {
    #[derive(Serialize)]
    struct Frame<'a> {
        op: &'static str,
        receipt: &'a ReceiptNotice,
    }
    Arc::from(serde_json::to_string(&Frame { op: "receipt", receipt: r }).expect("views serialise"))
}

impl App {
    fn messaging_record(
        &self,
        p: &Principal,
        subtype: &str,
        action: AuditAction,
        conv: ConversationId,
    ) -> AuditRecord {
        self.record(Some(p.org()), MESSAGING, subtype, action, AuditOutcome::Success, p.agent())
            .entity("conversation", conv)
    }

    /// The caller's membership; NotFound unless they hold MessagingUse and are or were a member.
    async fn member(&self, p: &Principal, conv: ConversationId) -> AppResult<Membership> {
        p.require(Permission::MessagingUse)?;
        Ok(self.store.membership(p.org(), conv, p.user.id).await?)
    }

    /// The caller's membership, which must be current (to write).
    pub(crate) async fn current_member(&self, p: &Principal, conv: ConversationId) -> AppResult<Membership> {
        let m = self.member(p, conv).await?;
        if m.is_current() { Ok(m) } else { Err(AppError::NotFound) }
    }

    /// The patient of a conversation the caller sends to. Membership is checked by the send's
    /// own transaction (a non-member's send is refused there, as NotFound); a conversation's
    /// patient never changes, so after the first send it is known without a read.
    async fn patient_of(&self, p: &Principal, conv: ConversationId) -> AppResult<Option<PatientId>> {
        p.require(Permission::MessagingUse)?;
        if let Some(patient) = self.caches.patient_of(p.org(), conv) {
            return Ok(patient);
        }
        let m = self.current_member(p, conv).await?;
        self.caches.keep_patient_of(p.org(), conv, m.conversation.patient_id);
        Ok(m.conversation.patient_id)
    }

    pub(crate) async fn publish_events(
        &self,
        org: OrgId,
        events: &[StoredEvent],
        recipients: &[UserId],
    ) -> AppResult<Vec<EventView>> {
        let views = self.render_events(org, events).await?;
        for v in &views {
            self.bus.publish(BusMessage::Deliver {
                recipients: recipients.to_vec(),
                out: Outbound::Event { conversation: v.conversation_id, seq: v.seq, json: event_frame(v) },
            });
        }
        Ok(views)
    }

    /// Starts a conversation.
    pub async fn create_conversation(
        &self,
        p: &Principal,
        input: StartConversation,
    ) -> AppResult<ConversationView> {
        p.require(Permission::MessagingUse)?;
        let members =
            rules::initial_members(input.kind, p.user.id, &input.members, &self.settings.message_limits)?;
        match (input.kind, input.patient_id) {
            (ConversationKind::Patient, None) => {
                return Err(ValidationError::new(
                    "patient_id",
                    "patient_required",
                    "a patient conversation needs a patient",
                )
                .into());
            }
            (ConversationKind::Patient, Some(_))
                if !p.user.roles.allows(Permission::PatientRead)
                    && !p.user.roles.allows(Permission::PatientRegister) =>
            {
                return Err(AppError::NotFound);
            }
            (ConversationKind::Patient, Some(_)) => {}
            (_, Some(_)) => {
                return Err(ValidationError::new(
                    "patient_id",
                    "patient_not_allowed",
                    "only a patient conversation has a patient",
                )
                .into());
            }
            _ => {}
        }
        let title = match input.title.as_deref().map(str::trim) {
            Some("") | None => None,
            Some(t) if t.len() > 200 || t.chars().any(char::is_control) => {
                return Err(ValidationError::new(
                    "title",
                    "invalid_title",
                    "a title has at most 200 characters",
                )
                .into());
            }
            Some(t) => Some(t.to_owned()),
        };
        let org = p.org();
        let id = self.new_id(|r| ConversationId::random(r));
        let org_key = self.org_key(org).await?;
        let (key, wrapped) = self.new_data_key(&org_key, org, "conversation", id);
        let (o, c) = (org.to_string(), id.to_string());
        let title_sealed = title
            .map(|t| envelope::seal_content(&key, &content_ctx(&o, &c, &c, 0), self.random(), t.as_bytes()));
        let mut rec = self.messaging_record(p, "conversation-create", AuditAction::C, id);
        if let Some(pid) = input.patient_id {
            rec = rec.entity("patient", pid);
        }
        for m in &members {
            rec = rec.entity("user", m);
        }
        let new = NewConversation {
            id,
            org_id: org,
            kind: input.kind,
            patient_id: input.patient_id,
            data_key: wrapped,
            title_sealed,
            created_by: p.user.id,
            members: members.clone(),
            now: self.now(),
        };
        let ev = self.store.create_conversation(&new, &rec).await.map_err(|e| match e {
            StoreError::Conflict("patient") => AppError::NotFound,
            StoreError::Conflict(_) => ValidationError::new(
                "members",
                "unknown_member",
                "every member must be an active user of your organisation",
            )
            .into(),
            e => e.into(),
        })?;
        self.publish_events(org, &[ev], &members).await?;
        self.conversation(p, id).await
    }

    pub(crate) async fn conversation_view(
        &self,
        org: OrgId,
        m: &Membership,
        unread: i64,
        newest: Option<Priority>,
    ) -> AppResult<ConversationView> {
        let c = &m.conversation;
        let org_key = self.org_key(org).await?;
        let title = match (&c.title_sealed, &c.data_key) {
            (Some(sealed), Some(wrapped)) => {
                let key = Self::open_data_key(&org_key, org, "conversation", c.id, wrapped)?;
                let (o, i) = (org.to_string(), c.id.to_string());
                let plain = envelope::open_content(&key, &content_ctx(&o, &i, &i, 0), sealed)
                    .map_err(|_| AppError::Internal(format!("conversation {} title does not open", c.id)))?;
                Some(String::from_utf8_lossy(plain.expose()).into_owned())
            }
            _ => None,
        };
        let patient = match c.patient_id {
            Some(pid) => {
                let v = self.open_patient(&org_key, &self.store.patient(org, pid).await?)?;
                Some(PatientBanner { id: v.id, mrn: v.mrn, name: v.name, date_of_birth: v.date_of_birth })
            }
            None => None,
        };
        Ok(ConversationView {
            id: c.id,
            kind: c.kind,
            title,
            patient,
            created_by: c.created_by,
            created_at: c.created_at.to_string(),
            last_seq: m.visible_until(),
            last_activity_at: c.last_activity_at.to_string(),
            is_member: m.is_current(),
            joined_seq: m.joined_seq,
            delivered_seq: m.delivered_seq,
            read_seq: m.read_seq,
            unread,
            newest_unread_priority: newest,
            members: None,
        })
    }

    /// One conversation with its members (a patient banner read is audited).
    pub async fn conversation(&self, p: &Principal, conv: ConversationId) -> AppResult<ConversationView> {
        p.require(Permission::MessagingUse)?;
        let row = self.store.conversation_row(p.org(), p.user.id, conv).await?;
        let m = &row.membership;
        let mut view = self.conversation_view(p.org(), m, row.unread, row.newest_unread_priority).await?;
        let members = self.store.receipts(p.org(), conv).await?.into_iter().map(member_view).collect();
        view.members = Some(members);
        if let Some(pid) = m.conversation.patient_id {
            let rec =
                self.messaging_record(p, "conversation-read", AuditAction::R, conv).entity("patient", pid);
            self.store.record_audit(&rec, self.now()).await?;
        }
        Ok(view)
    }

    /// A page of the caller's conversations, most recent activity first, with unread counts.
    /// Returns the page and the cursor of the next one.
    pub async fn conversations(
        &self,
        p: &Principal,
        before: Option<(Timestamp, ConversationId)>,
        limit: u32,
    ) -> AppResult<(Vec<ConversationView>, Option<(Timestamp, ConversationId)>)> {
        p.require(Permission::MessagingUse)?;
        let rows = self.store.conversation_list(p.org(), p.user.id, before, limit.saturating_add(1)).await?;
        let more = rows.len() > limit as usize;
        let mut views = Vec::new();
        let mut patients = Vec::new();
        for r in rows.iter().take(limit as usize) {
            if let Some(pid) = r.membership.conversation.patient_id {
                patients.push(pid);
            }
            views.push(
                self.conversation_view(p.org(), &r.membership, r.unread, r.newest_unread_priority).await?,
            );
        }
        // The members of every listed conversation, in one query: clients name direct
        // conversations after the other member and show who is in a group.
        let ids: Vec<ConversationId> = views.iter().map(|v| v.id).collect();
        let mut by_conv: HashMap<ConversationId, Vec<MemberView>> = HashMap::new();
        for (conv, r) in self.store.receipts_of(p.org(), &ids).await? {
            by_conv.entry(conv).or_default().push(member_view(r));
        }
        for v in &mut views {
            v.members = Some(by_conv.remove(&v.id).unwrap_or_default());
        }
        if !patients.is_empty() {
            let mut rec = self.record(
                Some(p.org()),
                MESSAGING,
                "conversation-list",
                AuditAction::R,
                AuditOutcome::Success,
                p.agent(),
            );
            for pid in patients {
                rec = rec.entity("patient", pid);
            }
            self.store.record_audit(&rec, self.now()).await?;
        }
        let next = if more {
            rows.get(limit as usize - 1)
                .map(|r| (r.membership.conversation.last_activity_at, r.membership.conversation.id))
        } else {
            None
        };
        Ok((views, next))
    }

    /// Adds a member (any current member may add a colleague of the organisation).
    pub async fn add_member(
        &self,
        p: &Principal,
        conv: ConversationId,
        user: UserId,
    ) -> AppResult<EventView> {
        let m = self.current_member(p, conv).await?;
        if m.conversation.kind == ConversationKind::Direct {
            return Err(AppError::Conflict(
                "direct_fixed",
                "a direct conversation has exactly two members; start a group".into(),
            ));
        }
        let rec =
            self.messaging_record(p, "conversation-member-add", AuditAction::U, conv).entity("user", user);
        let (ev, recipients) =
            self.store.add_member(p.org(), conv, p.user.id, user, self.now(), &rec).await.map_err(
                |e| match e {
                    StoreError::Conflict(_) => {
                        AppError::Conflict("already_member", "this user is already a member".into())
                    }
                    e => e.into(),
                },
            )?;
        Ok(self.publish_events(p.org(), &[ev], &recipients).await?.remove(0))
    }

    /// Removes a member, or (when `user` is the caller) leaves.
    pub async fn remove_member(
        &self,
        p: &Principal,
        conv: ConversationId,
        user: UserId,
    ) -> AppResult<EventView> {
        let m = self.current_member(p, conv).await?;
        if m.conversation.kind == ConversationKind::Direct && user != p.user.id {
            return Err(AppError::Conflict(
                "direct_fixed",
                "a direct conversation has exactly two members".into(),
            ));
        }
        let subtype = if user == p.user.id { "conversation-leave" } else { "conversation-member-remove" };
        let rec = self.messaging_record(p, subtype, AuditAction::U, conv).entity("user", user);
        let (ev, recipients) =
            self.store.remove_member(p.org(), conv, p.user.id, user, self.now(), &rec).await?;
        // The removed member is among the recipients: their sockets learn from the event.
        Ok(self.publish_events(p.org(), &[ev], &recipients).await?.remove(0))
    }

    /// Sends a message. Returns the event and whether it was stored now (false: the
    /// idempotency key had been used, and this is the first result again).
    pub async fn send_message(
        &self,
        p: &Principal,
        conv: ConversationId,
        input: SendMessage,
    ) -> AppResult<(EventView, bool)> {
        let limits = &self.settings.message_limits;
        rules::check_idempotency_key(&input.idempotency_key)?;
        let payload = match input.content_type {
            ContentType::Text => {
                rules::check_new_body(&input.body, !input.attachments.is_empty(), limits)?;
                input.body.into_bytes()
            }
            ContentType::MlsCiphertext => {
                let bytes = data_encoding::BASE64.decode(input.body.as_bytes()).map_err(|_| {
                    ValidationError::new("body", "invalid_ciphertext", "an mls_ciphertext body is base64")
                })?;
                if bytes.is_empty() || bytes.len() > limits.max_body_bytes {
                    return Err(ValidationError::new(
                        "body",
                        "body_too_large",
                        "the payload is empty or too large",
                    )
                    .into());
                }
                bytes
            }
        };
        let now = self.now();
        rules::check_expiry(input.expires_at, now, limits)?;
        if input.attachments.len() > 10 {
            return Err(ValidationError::new(
                "attachments",
                "too_many_attachments",
                "at most 10 attachments per message",
            )
            .into());
        }
        let org = p.org();
        let patient = self.patient_of(p, conv).await?;
        let id = self.new_id(|r| MessageId::time_ordered(now, r));
        let org_key = self.org_key(org).await?;
        let (key, wrapped) = self.new_data_key(&org_key, org, "message", id);
        let (o, c, i) = (org.to_string(), conv.to_string(), id.to_string());
        let sealed = envelope::seal_content(&key, &content_ctx(&o, &c, &i, 1), self.random(), &payload);
        let mut rec = self.messaging_record(p, "message-send", AuditAction::C, conv).entity("message", id);
        if let Some(pid) = patient {
            rec = rec.entity("patient", pid);
        }
        for a in &input.attachments {
            rec = rec.entity("attachment", a);
        }
        let new = NewMessage {
            id,
            org_id: org,
            conversation_id: conv,
            sender_id: p.user.id,
            idempotency_key: input.idempotency_key.clone(),
            priority: input.priority,
            content_type: input.content_type,
            data_key: wrapped,
            body_sealed: sealed,
            attachments: input.attachments,
            expires_at: input.expires_at,
            now,
        };
        let sent = match self.store.send_message(&new, &rec).await {
            // Two sends with one key raced: the other one won; answer with its result.
            Err(StoreError::Conflict("idempotency_key")) => self.store.send_message(&new, &rec).await?,
            Err(StoreError::Conflict(_)) => {
                return Err(ValidationError::new(
                    "attachments",
                    "invalid_attachment",
                    "attachments must be your own unsent uploads to this conversation",
                )
                .into());
            }
            other => other?,
        };
        if sent.created {
            let view = self.publish_events(org, &[sent.event], &sent.recipients).await?.remove(0);
            metrics::counter!("haven_messages_sent_total").increment(1);
            Ok((view, true))
        } else {
            Ok((self.render_events(org, &[sent.event]).await?.remove(0), false))
        }
    }

    async fn own_message(
        &self,
        p: &Principal,
        conv: ConversationId,
        msg: MessageId,
    ) -> AppResult<haven_store::StoredMessage> {
        let m = self.current_member(p, conv).await?;
        let stored = self.store.message(p.org(), conv, msg).await?;
        if stored.seq < m.joined_seq {
            return Err(AppError::NotFound);
        }
        if stored.sender_id != p.user.id {
            return Err(AppError::Forbidden("not_sender", "only the sender can change a message".into()));
        }
        if stored.data_key.is_none() || stored.expires_at.is_some_and(|t| t <= self.now()) {
            return Err(AppError::Conflict("message_gone", "the message was recalled or has expired".into()));
        }
        Ok(stored)
    }

    /// Edits one's own message: a new version; earlier versions stay visible to members.
    pub async fn edit_message(
        &self,
        p: &Principal,
        conv: ConversationId,
        msg: MessageId,
        body: String,
    ) -> AppResult<EventView> {
        rules::check_body(&body, &self.settings.message_limits)?;
        let stored = self.own_message(p, conv, msg).await?;
        if stored.content_type != ContentType::Text {
            return Err(AppError::Conflict("not_editable", "only text messages can be edited".into()));
        }
        let org = p.org();
        let org_key = self.org_key(org).await?;
        let key = Self::open_data_key(
            &org_key,
            org,
            "message",
            msg,
            stored.data_key.as_deref().unwrap_or_default(),
        )?;
        let (o, c, i) = (org.to_string(), conv.to_string(), msg.to_string());
        let sealed = envelope::seal_content(
            &key,
            &content_ctx(&o, &c, &i, stored.version + 1),
            self.random(),
            body.as_bytes(),
        );
        let rec = self.messaging_record(p, "message-edit", AuditAction::U, conv).entity("message", msg);
        let change = self
            .store
            .edit_message(org, conv, msg, p.user.id, stored.version, &sealed, self.now(), &rec)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    AppError::Conflict("edit_conflict", "the message changed meanwhile; reload it".into())
                }
                e => e.into(),
            })?;
        self.publish_change(org, change).await
    }

    /// Recalls one's own message: its content is destroyed for everyone; a tombstone stays.
    pub async fn recall_message(
        &self,
        p: &Principal,
        conv: ConversationId,
        msg: MessageId,
    ) -> AppResult<EventView> {
        self.own_message(p, conv, msg).await?;
        let rec = self.messaging_record(p, "message-recall", AuditAction::D, conv).entity("message", msg);
        let change =
            self.store.destroy_message(p.org(), conv, msg, Some(p.user.id), self.now(), &rec).await.map_err(
                |e| match e {
                    StoreError::Conflict(_) => {
                        AppError::Conflict("message_gone", "the message was recalled or has expired".into())
                    }
                    e => e.into(),
                },
            )?;
        self.publish_change(p.org(), change).await
    }

    async fn publish_change(&self, org: OrgId, change: MessageChange) -> AppResult<EventView> {
        for a in &change.shredded_attachments {
            if let Err(e) = self.blobs.delete(&a.to_string()) {
                // The key is gone already, so the blob is unreadable; a later sweep retries.
                tracing::warn!(error = %e, "could not delete a shredded attachment blob");
            }
        }
        Ok(self.publish_events(org, &[change.event], &change.recipients).await?.remove(0))
    }

    /// Destroys the content of every message past its expiry (recorded as a system action).
    /// Returns how many were purged.
    pub async fn purge_expired(&self, limit: u32) -> AppResult<usize> {
        let now = self.now();
        let due = self.store.due_expiries(now, limit).await?;
        let mut purged = 0;
        for (org, conv, msg) in due {
            let rec = self
                .record(
                    Some(org),
                    MESSAGING,
                    "message-expire",
                    AuditAction::D,
                    AuditOutcome::Success,
                    Default::default(),
                )
                .entity("conversation", conv)
                .entity("message", msg);
            match self.store.destroy_message(org, conv, msg, None, now, &rec).await {
                Ok(change) => {
                    self.publish_change(org, change).await?;
                    purged += 1;
                }
                Err(StoreError::Conflict(_)) => {} // recalled meanwhile
                Err(e) => return Err(e.into()),
            }
        }
        Ok(purged)
    }

    /// Every version of a message still held (members who can see the message).
    pub async fn message_versions(
        &self,
        p: &Principal,
        conv: ConversationId,
        msg: MessageId,
    ) -> AppResult<Vec<MessageVersion>> {
        let m = self.member(p, conv).await?;
        let stored = self.store.message(p.org(), conv, msg).await?;
        if !m.can_see(stored.seq) {
            return Err(AppError::NotFound);
        }
        if stored.expires_at.is_some_and(|t| t <= self.now()) {
            return Ok(Vec::new());
        }
        let org_key = self.org_key(p.org()).await?;
        let mut out = Vec::new();
        for (version, sealed, at) in self.store.message_versions(p.org(), msg).await? {
            let (text, b64) = Self::open_body(&org_key, p.org(), &stored, version, &sealed)?;
            out.push(MessageVersion { version, body: text.or(b64).unwrap_or_default(), at: at.to_string() });
        }
        let rec =
            self.messaging_record(p, "message-history-read", AuditAction::R, conv).entity("message", msg);
        self.store.record_audit(&rec, self.now()).await?;
        Ok(out)
    }

    /// A page of history the caller may see (audited as a read of the conversation).
    pub async fn events(
        &self,
        p: &Principal,
        conv: ConversationId,
        range: EventRange,
        limit: u32,
    ) -> AppResult<Vec<EventView>> {
        let (m, views) = self.visible_events(p, conv, range, limit).await?;
        if !views.is_empty() {
            let mut rec = self.messaging_record(p, "history-read", AuditAction::R, conv);
            if let Some(pid) = m.conversation.patient_id {
                rec = rec.entity("patient", pid);
            }
            self.store.record_audit(&rec, self.now()).await?;
        }
        Ok(views)
    }

    /// Events for a live socket to deliver, when the bus did not bring them in order (a gap,
    /// or a hint from another node). Not audited, like live delivery itself: the send was
    /// audited, and reading is audited when the member's read receipt moves.
    pub async fn events_to_deliver(
        &self,
        p: &Principal,
        conv: ConversationId,
        range: EventRange,
        limit: u32,
    ) -> AppResult<Vec<EventView>> {
        Ok(self.visible_events(p, conv, range, limit).await?.1)
    }

    async fn visible_events(
        &self,
        p: &Principal,
        conv: ConversationId,
        range: EventRange,
        limit: u32,
    ) -> AppResult<(Membership, Vec<EventView>)> {
        let m = self.member(p, conv).await?;
        let events = self.store.events(conv, m.joined_seq, m.visible_until(), range, limit).await?;
        let views = self.render_events(p.org(), &events).await?;
        Ok((m, views))
    }

    /// The caller's memberships, for resuming a socket: (conversation, first visible seq,
    /// last visible seq).
    pub async fn positions(&self, p: &Principal) -> AppResult<Vec<(ConversationId, i64, i64)>> {
        p.require(Permission::MessagingUse)?;
        let ms = self.store.memberships(p.org(), p.user.id).await?;
        Ok(ms.iter().map(|m| (m.conversation.id, m.joined_seq, m.visible_until())).collect())
    }

    /// Moves the caller's delivered/read positions forward and tells the other members.
    pub async fn mark(
        &self,
        p: &Principal,
        conv: ConversationId,
        delivered: i64,
        read: i64,
    ) -> AppResult<ReceiptNotice> {
        let m = self.member(p, conv).await?;
        let patient = m.conversation.patient_id;
        let on_read = |ids: &[MessageId]| {
            let mut rec = self.messaging_record(p, "message-read", AuditAction::R, conv);
            if let Some(pid) = patient {
                rec = rec.entity("patient", pid);
            }
            for id in ids {
                rec = rec.entity("message", id);
            }
            rec
        };
        let (d, r, changed) = self
            .store
            .advance_receipts(p.org(), conv, p.user.id, delivered, read, self.now(), on_read)
            .await?;
        let notice =
            ReceiptNotice { conversation_id: conv, user_id: p.user.id, delivered_seq: d, read_seq: r };
        if changed {
            let members: Vec<UserId> = self
                .store
                .receipts(p.org(), conv)
                .await?
                .into_iter()
                .filter(|r| r.left_seq.is_none())
                .map(|r| r.user_id)
                .collect();
            self.bus.publish(BusMessage::Deliver {
                recipients: members,
                out: Outbound::Notice { json: receipt_frame(&notice) },
            });
        }
        Ok(notice)
    }

    /// Who has received and read a message (any member who can see it).
    pub async fn message_receipts(
        &self,
        p: &Principal,
        conv: ConversationId,
        msg: MessageId,
    ) -> AppResult<MessageReceipts> {
        let m = self.member(p, conv).await?;
        let stored = self.store.message(p.org(), conv, msg).await?;
        if !m.can_see(stored.seq) {
            return Err(AppError::NotFound);
        }
        let mut out =
            MessageReceipts { message_id: msg, delivered_to: vec![], read_by: vec![], unread_by: vec![] };
        for r in self.store.receipts(p.org(), conv).await? {
            // Only members who could see the message count.
            if r.user_id == stored.sender_id
                || r.joined_seq > stored.seq
                || r.left_seq.is_some_and(|l| l < stored.seq)
            {
                continue;
            }
            if r.delivered_seq >= stored.seq {
                out.delivered_to.push(r.user_id);
            }
            if r.read_seq >= stored.seq {
                out.read_by.push(r.user_id);
            } else {
                out.unread_by.push(r.user_id);
            }
        }
        Ok(out)
    }
}

fn member_view(r: haven_store::MemberReceipt) -> MemberView {
    MemberView {
        is_member: r.left_seq.is_none(),
        user_id: r.user_id,
        display_name: r.display_name,
        delivered_seq: r.delivered_seq,
        read_seq: r.read_seq,
    }
}
