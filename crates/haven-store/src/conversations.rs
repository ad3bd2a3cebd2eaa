//! Conversations, membership and the per-conversation event sequence. Every method takes the
//! caller's organisation and checks membership inside its query: a conversation the caller
//! cannot see is simply not found.
//!
//! Sequence numbers come from `conversations.last_seq`, incremented by the transaction that
//! writes the event. The increment takes the row's write lock, so concurrent writers to one
//! conversation commit in sequence order and a committed event never has an uncommitted
//! predecessor: a reader that sees seq N can always read 1..N.

use haven_domain::audit::AuditRecord;
use haven_domain::messaging::{ConversationKind, EventKind, Priority};
use haven_domain::{ConversationId, MessageId, OrgId, PatientId, PatientMessageId, UserId};
use jiff::Timestamp;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::messages::{MESSAGE_COLUMNS, StoredMessage, message_row};
use crate::patient_thread::{PATIENT_MESSAGE_COLUMNS, patient_message_row};
use crate::rows::{get, id, ms, ts};
use crate::{Store, StoreError, StoreResult, touched};

/// A conversation to create.
#[derive(Debug, Clone)]
pub struct NewConversation {
    /// The new id.
    pub id: ConversationId,
    /// The organisation.
    pub org_id: OrgId,
    /// Direct, group or patient.
    pub kind: ConversationKind,
    /// The patient a patient conversation is about.
    pub patient_id: Option<PatientId>,
    /// The conversation's data key, wrapped by the organisation key (seals the title).
    pub data_key: Vec<u8>,
    /// The sealed title, if any.
    pub title_sealed: Option<Vec<u8>>,
    /// The creator (a member).
    pub created_by: UserId,
    /// Every first member, the creator included.
    pub members: Vec<UserId>,
    /// When.
    pub now: Timestamp,
}

/// A conversation as stored.
#[derive(Debug, Clone)]
pub struct StoredConversation {
    /// Id.
    pub id: ConversationId,
    /// Organisation.
    pub org_id: OrgId,
    /// Kind.
    pub kind: ConversationKind,
    /// The patient, for patient conversations.
    pub patient_id: Option<PatientId>,
    /// Wrapped data key; `None` once shredded.
    pub data_key: Option<Vec<u8>>,
    /// Sealed title.
    pub title_sealed: Option<Vec<u8>>,
    /// Creator.
    pub created_by: UserId,
    /// Created.
    pub created_at: Timestamp,
    /// Last sequence number handed out.
    pub last_seq: i64,
    /// Time of the last event.
    pub last_activity_at: Timestamp,
}

/// A user's membership of a conversation, with the conversation.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The conversation.
    pub conversation: StoredConversation,
    /// First sequence number the member may see.
    pub joined_seq: i64,
    /// Last sequence number the member may see, once they have left or been removed.
    pub left_seq: Option<i64>,
    /// Delivered up to.
    pub delivered_seq: i64,
    /// Read up to.
    pub read_seq: i64,
}

impl Membership {
    /// Whether the user is a member now (not removed, not left).
    pub fn is_current(&self) -> bool {
        self.left_seq.is_none()
    }

    /// The last sequence number this member may see.
    pub fn visible_until(&self) -> i64 {
        self.left_seq.unwrap_or(self.conversation.last_seq)
    }

    /// Whether the event at `seq` falls in what this member may see.
    pub fn can_see(&self, seq: i64) -> bool {
        (self.joined_seq..=self.visible_until()).contains(&seq)
    }
}

/// A row of a user's conversation list.
#[derive(Debug, Clone)]
pub struct ConversationListRow {
    /// The membership (and conversation).
    pub membership: Membership,
    /// Messages from others after the member's read position.
    pub unread: i64,
    /// Priority of the newest unread message.
    pub newest_unread_priority: Option<Priority>,
}

/// One event of a conversation, with the message it concerns in its current state.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Position in the conversation.
    pub seq: i64,
    /// What happened.
    pub kind: EventKind,
    /// Who did it (none for system events such as expiry).
    pub actor_id: Option<UserId>,
    /// The member added, removed or leaving.
    pub subject_id: Option<UserId>,
    /// The message concerned, as it is now.
    pub message: Option<StoredMessage>,
    /// The message of the patient's thread (kind `patient_message`).
    pub patient_message: Option<crate::patient_thread::StoredPatientMessage>,
    /// When.
    pub created_at: Timestamp,
}

/// A member's receipt positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReceipt {
    /// The member.
    pub user_id: UserId,
    /// Their display name.
    pub display_name: String,
    /// First visible sequence number.
    pub joined_seq: i64,
    /// Last visible sequence number if no longer a member.
    pub left_seq: Option<i64>,
    /// Delivered up to.
    pub delivered_seq: i64,
    /// Read up to.
    pub read_seq: i64,
}

/// Which page of events to read.
#[derive(Debug, Clone, Copy)]
pub enum EventRange {
    /// Events with seq > after, oldest first.
    After(i64),
    /// Events with seq < before, newest first in the query but returned oldest first.
    Before(i64),
}

const CONV_COLUMNS: &str = "c.id, c.org_id, c.kind, c.patient_id, c.data_key, c.title_sealed, \
     c.created_by, c.created_at, c.last_seq, c.last_activity_at";

const MEMBER_COLUMNS: &str = "m.joined_seq, m.left_seq, m.delivered_seq, m.read_seq";

fn conversation_row(row: &AnyRow) -> StoreResult<StoredConversation> {
    let kind: String = get(row, "kind")?;
    Ok(StoredConversation {
        id: id(&get::<String>(row, "id")?)?,
        org_id: id(&get::<String>(row, "org_id")?)?,
        kind: ConversationKind::parse(&kind).ok_or(StoreError::Corrupt("conversation kind"))?,
        patient_id: get::<Option<String>>(row, "patient_id")?.map(|s| id(&s)).transpose()?,
        data_key: get(row, "data_key")?,
        title_sealed: get(row, "title_sealed")?,
        created_by: id(&get::<String>(row, "created_by")?)?,
        created_at: ts(get(row, "created_at")?)?,
        last_seq: get(row, "last_seq")?,
        last_activity_at: ts(get(row, "last_activity_at")?)?,
    })
}

fn membership_row(row: &AnyRow) -> StoreResult<Membership> {
    Ok(Membership {
        conversation: conversation_row(row)?,
        joined_seq: get(row, "joined_seq")?,
        left_seq: get(row, "left_seq")?,
        delivered_seq: get(row, "delivered_seq")?,
        read_seq: get(row, "read_seq")?,
    })
}

/// Hands out the conversation's next sequence number (taking its row lock until commit).
pub(crate) async fn next_seq(
    c: &mut AnyConnection,
    org: OrgId,
    conv: ConversationId,
    now: Timestamp,
) -> StoreResult<i64> {
    let row = sqlx::query(
        "UPDATE conversations SET last_seq = last_seq + 1, last_activity_at = $3
         WHERE id = $1 AND org_id = $2 RETURNING last_seq",
    )
    .bind(conv.to_string())
    .bind(org.to_string())
    .bind(ms(now))
    .fetch_optional(&mut *c)
    .await?
    .ok_or(StoreError::NotFound)?;
    get(&row, "last_seq")
}

/// An event row to insert.
pub(crate) struct EventInsert {
    pub org: OrgId,
    pub conv: ConversationId,
    pub seq: i64,
    pub kind: EventKind,
    pub actor: Option<UserId>,
    pub message: Option<MessageId>,
    pub patient_message: Option<PatientMessageId>,
    pub subject: Option<UserId>,
    pub priority: Option<Priority>,
    pub now: Timestamp,
}

pub(crate) async fn insert_event(c: &mut AnyConnection, e: &EventInsert) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO conversation_events (conversation_id, seq, org_id, kind, actor_id, message_id,
         subject_id, priority, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(e.conv.to_string())
    .bind(e.seq)
    .bind(e.org.to_string())
    .bind(e.kind.as_str())
    .bind(e.actor.map(|u| u.to_string()))
    .bind(e.message.map(|m| m.to_string()).or_else(|| e.patient_message.map(|m| m.to_string())))
    .bind(e.subject.map(|u| u.to_string()))
    .bind(e.priority.map(|p| p.as_str()))
    .bind(ms(e.now))
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Fails with NotFound unless `user` is a current member of the conversation.
pub(crate) async fn require_current_member(
    c: &mut AnyConnection,
    org: OrgId,
    conv: ConversationId,
    user: UserId,
) -> StoreResult<()> {
    let row = sqlx::query(
        "SELECT 1 AS ok FROM conversation_members
         WHERE conversation_id = $1 AND user_id = $2 AND org_id = $3 AND left_seq IS NULL",
    )
    .bind(conv.to_string())
    .bind(user.to_string())
    .bind(org.to_string())
    .fetch_optional(&mut *c)
    .await?;
    row.map(|_| ()).ok_or(StoreError::NotFound)
}

/// The current members of a conversation (the recipients of its next event).
pub(crate) async fn current_members(c: &mut AnyConnection, conv: ConversationId) -> StoreResult<Vec<UserId>> {
    let rows = sqlx::query(
        "SELECT user_id FROM conversation_members WHERE conversation_id = $1 AND left_seq IS NULL
         ORDER BY user_id",
    )
    .bind(conv.to_string())
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(|r| id(&get::<String>(r, "user_id")?)).collect()
}

/// Adds `user` (who must be an active user of `org`) as a member visible from `seq`.
async fn insert_member(
    c: &mut AnyConnection,
    org: OrgId,
    conv: ConversationId,
    user: UserId,
    seq: i64,
) -> StoreResult<()> {
    let done = sqlx::query(
        "INSERT INTO conversation_members (conversation_id, user_id, org_id, joined_seq, left_seq,
         delivered_seq, read_seq)
         SELECT $1, id, org_id, $3, NULL, $4, $4 FROM users WHERE id = $2 AND org_id = $5 AND status = 'active'",
    )
    .bind(conv.to_string())
    .bind(user.to_string())
    .bind(seq)
    .bind(seq - 1)
    .bind(org.to_string())
    .execute(&mut *c)
    .await
    .map_err(crate::rows::conflict("member"))?;
    touched(done)
}

impl Store {
    /// Creates a conversation with its first members; returns its first event.
    pub async fn create_conversation(
        &self,
        conv: &NewConversation,
        audit_rec: &AuditRecord,
    ) -> StoreResult<StoredEvent> {
        self.audited(audit_rec, conv.now, async |c| {
            let done = sqlx::query(
                "INSERT INTO conversations (id, org_id, kind, patient_id, data_key, title_sealed,
                 created_by, created_at, last_seq, last_activity_at)
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, 1, $8
                 WHERE $4 IS NULL OR EXISTS (SELECT 1 FROM patients WHERE id = $4 AND org_id = $2)",
            )
            .bind(conv.id.to_string())
            .bind(conv.org_id.to_string())
            .bind(conv.kind.as_str())
            .bind(conv.patient_id.map(|p| p.to_string()))
            .bind(conv.data_key.clone())
            .bind(conv.title_sealed.clone())
            .bind(conv.created_by.to_string())
            .bind(ms(conv.now))
            .execute(&mut *c)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict("patient"));
            }
            for m in &conv.members {
                insert_member(c, conv.org_id, conv.id, *m, 1).await.map_err(|e| match e {
                    StoreError::NotFound => StoreError::Conflict("members"),
                    e => e,
                })?;
            }
            insert_event(
                c,
                &EventInsert {
                    org: conv.org_id,
                    conv: conv.id,
                    seq: 1,
                    kind: EventKind::Created,
                    actor: Some(conv.created_by),
                    message: None,
                    patient_message: None,
                    subject: None,
                    priority: None,
                    now: conv.now,
                },
            )
            .await?;
            Ok(StoredEvent {
                conversation_id: conv.id,
                seq: 1,
                kind: EventKind::Created,
                actor_id: Some(conv.created_by),
                subject_id: None,
                message: None,
                patient_message: None,
                created_at: conv.now,
            })
        })
        .await
    }

    /// A user's membership of a conversation (current or past). NotFound if they never were
    /// a member, or the conversation is in another organisation.
    pub async fn membership(
        &self,
        org: OrgId,
        conv: ConversationId,
        user: UserId,
    ) -> StoreResult<Membership> {
        let sql = format!(
            "SELECT {CONV_COLUMNS}, {MEMBER_COLUMNS} FROM conversation_members m
             JOIN conversations c ON c.id = m.conversation_id
             WHERE m.conversation_id = $1 AND m.user_id = $2 AND m.org_id = $3 AND c.org_id = $3"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(conv.to_string())
            .bind(user.to_string())
            .bind(org.to_string())
            .fetch_optional(&self.read)
            .await?
            .ok_or(StoreError::NotFound)?;
        membership_row(&row)
    }

    /// Every membership of a user, current and past (for resuming a real-time connection).
    pub async fn memberships(&self, org: OrgId, user: UserId) -> StoreResult<Vec<Membership>> {
        let sql = format!(
            "SELECT {CONV_COLUMNS}, {MEMBER_COLUMNS} FROM conversation_members m
             JOIN conversations c ON c.id = m.conversation_id
             WHERE m.user_id = $1 AND m.org_id = $2 ORDER BY c.id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user.to_string())
            .bind(org.to_string())
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(membership_row).collect()
    }

    /// A page of a user's conversations, most recent activity first. `before` is the
    /// `(last_activity_at, id)` of the last row of the previous page.
    pub async fn conversation_list(
        &self,
        org: OrgId,
        user: UserId,
        before: Option<(Timestamp, ConversationId)>,
        limit: u32,
    ) -> StoreResult<Vec<ConversationListRow>> {
        self.list_rows(org, user, None, before, limit).await
    }

    /// One conversation of a user's list (with its unread count); NotFound unless they are or
    /// were a member.
    pub async fn conversation_row(
        &self,
        org: OrgId,
        user: UserId,
        conv: ConversationId,
    ) -> StoreResult<ConversationListRow> {
        self.list_rows(org, user, Some(conv), None, 1).await?.pop().ok_or(StoreError::NotFound)
    }

    async fn list_rows(
        &self,
        org: OrgId,
        user: UserId,
        only: Option<ConversationId>,
        before: Option<(Timestamp, ConversationId)>,
        limit: u32,
    ) -> StoreResult<Vec<ConversationListRow>> {
        let visible = "COALESCE(m.left_seq, c.last_seq)";
        // Two statements rather than `($6 = '' OR c.id = $6)`: a plan shared by both would read
        // every membership of the user to find one conversation.
        let only_one = if only.is_some() { "m.conversation_id = $6" } else { "$6 = ''" };
        let sql = format!(
            "SELECT {CONV_COLUMNS}, {MEMBER_COLUMNS},
               (SELECT COUNT(*) FROM conversation_events e WHERE e.conversation_id = c.id
                  AND e.kind IN ('message', 'patient_message') AND e.seq > m.read_seq AND e.seq <= {visible}
                  AND COALESCE(e.actor_id, '') <> m.user_id) AS unread,
               (SELECT e.priority FROM conversation_events e WHERE e.conversation_id = c.id
                  AND e.kind = 'message' AND e.seq > m.read_seq AND e.seq <= {visible}
                  AND e.actor_id <> m.user_id ORDER BY e.seq DESC LIMIT 1) AS unread_priority
             FROM conversation_members m JOIN conversations c ON c.id = m.conversation_id
             WHERE m.user_id = $1 AND m.org_id = $2
               AND ($3 IS NULL OR c.last_activity_at < $3 OR (c.last_activity_at = $3 AND c.id < $4))
               AND {only_one}
             ORDER BY c.last_activity_at DESC, c.id DESC LIMIT $5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(user.to_string())
            .bind(org.to_string())
            .bind(before.map(|(t, _)| ms(t)))
            .bind(before.map(|(_, id)| id.to_string()).unwrap_or_default())
            .bind(i64::from(limit))
            .bind(only.map(|c| c.to_string()).unwrap_or_default())
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| {
                let p: Option<String> = get(r, "unread_priority")?;
                Ok(ConversationListRow {
                    membership: membership_row(r)?,
                    unread: get(r, "unread")?,
                    newest_unread_priority: p
                        .map(|p| Priority::parse(&p).ok_or(StoreError::Corrupt("priority")))
                        .transpose()?,
                })
            })
            .collect()
    }

    /// Adds a member; `actor` must be a current member. Returns the event and its recipients
    /// (the members after the change).
    pub async fn add_member(
        &self,
        org: OrgId,
        conv: ConversationId,
        actor: UserId,
        user: UserId,
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<(StoredEvent, Vec<UserId>)> {
        self.audited(audit_rec, now, async |c| {
            require_current_member(c, org, conv, actor).await?;
            if require_current_member(c, org, conv, user).await.is_ok() {
                return Err(StoreError::Conflict("member"));
            }
            let seq = next_seq(c, org, conv, now).await?;
            // A former member comes back with a fresh window: what was said while they were
            // away stays hidden from them.
            sqlx::query("DELETE FROM conversation_members WHERE conversation_id = $1 AND user_id = $2")
                .bind(conv.to_string())
                .bind(user.to_string())
                .execute(&mut *c)
                .await?;
            insert_member(c, org, conv, user, seq).await?;
            let ev = member_event(c, org, conv, seq, EventKind::MemberAdded, actor, user, now).await?;
            Ok((ev, current_members(c, conv).await?))
        })
        .await
    }

    /// Removes a member (or, when `actor == user`, records that they left). Returns the event
    /// and its recipients: the remaining members and the one who is gone.
    pub async fn remove_member(
        &self,
        org: OrgId,
        conv: ConversationId,
        actor: UserId,
        user: UserId,
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<(StoredEvent, Vec<UserId>)> {
        self.audited(audit_rec, now, async |c| {
            require_current_member(c, org, conv, actor).await?;
            require_current_member(c, org, conv, user).await?;
            let seq = next_seq(c, org, conv, now).await?;
            let mut recipients = current_members(c, conv).await?;
            sqlx::query(
                "UPDATE conversation_members SET left_seq = $3 WHERE conversation_id = $1 AND user_id = $2",
            )
            .bind(conv.to_string())
            .bind(user.to_string())
            .bind(seq)
            .execute(&mut *c)
            .await?;
            let kind = if actor == user { EventKind::MemberLeft } else { EventKind::MemberRemoved };
            let ev = member_event(c, org, conv, seq, kind, actor, user, now).await?;
            recipients.sort();
            Ok((ev, recipients))
        })
        .await
    }

    /// A page of events the member may see (between `joined` and `until`, inclusive), each
    /// message in its current state.
    pub async fn events(
        &self,
        conv: ConversationId,
        joined: i64,
        until: i64,
        range: EventRange,
        limit: u32,
    ) -> StoreResult<Vec<StoredEvent>> {
        let (cond, order) = match range {
            EventRange::After(_) => ("e.seq > $2", "ASC"),
            EventRange::Before(_) => ("e.seq < $2", "DESC"),
        };
        let pos = match range {
            EventRange::After(s) | EventRange::Before(s) => s,
        };
        let sql = format!(
            "SELECT e.seq, e.kind, e.actor_id, e.subject_id, e.created_at AS event_at, e.message_id,
               {MESSAGE_COLUMNS}, {PATIENT_MESSAGE_COLUMNS}
             FROM conversation_events e LEFT JOIN messages msg ON msg.id = e.message_id
             LEFT JOIN message_versions v ON v.message_id = msg.id AND v.version = msg.version
             LEFT JOIN patient_messages pm ON pm.id = e.message_id
             WHERE e.conversation_id = $1 AND {cond} AND e.seq >= $3 AND e.seq <= $4
             ORDER BY e.seq {order} LIMIT $5"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(conv.to_string())
            .bind(pos)
            .bind(joined)
            .bind(until)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let kind: String = get(r, "kind")?;
                let kind = EventKind::parse(&kind).ok_or(StoreError::Corrupt("event kind"))?;
                let message_id: Option<String> = get(r, "message_id")?;
                let patient = kind == EventKind::PatientMessage;
                Ok(StoredEvent {
                    conversation_id: conv,
                    seq: get(r, "seq")?,
                    kind,
                    actor_id: get::<Option<String>>(r, "actor_id")?.map(|s| id(&s)).transpose()?,
                    subject_id: get::<Option<String>>(r, "subject_id")?.map(|s| id(&s)).transpose()?,
                    message: message_id.as_ref().filter(|_| !patient).map(|_| message_row(r)).transpose()?,
                    patient_message: message_id
                        .filter(|_| patient)
                        .map(|_| patient_message_row(r))
                        .transpose()?,
                    created_at: ts(get(r, "event_at")?)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        if matches!(range, EventRange::Before(_)) {
            out.reverse();
        }
        Ok(out)
    }

    /// Every member's receipt positions (current and former members).
    pub async fn receipts(&self, org: OrgId, conv: ConversationId) -> StoreResult<Vec<MemberReceipt>> {
        Ok(self.receipts_of(org, &[conv]).await?.into_iter().map(|(_, r)| r).collect())
    }

    /// Every member's receipt positions in each of `convs` (one query), by conversation.
    pub async fn receipts_of(
        &self,
        org: OrgId,
        convs: &[ConversationId],
    ) -> StoreResult<Vec<(ConversationId, MemberReceipt)>> {
        if convs.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (0..convs.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT m.conversation_id, m.user_id, u.display_name, m.joined_seq, m.left_seq, m.delivered_seq,
                    m.read_seq
             FROM conversation_members m JOIN users u ON u.id = m.user_id
             WHERE m.org_id = $1 AND m.conversation_id IN ({}) ORDER BY m.conversation_id, m.user_id",
            marks.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(org.to_string());
        for c in convs {
            q = q.bind(c.to_string());
        }
        q.fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    id(&get::<String>(r, "conversation_id")?)?,
                    MemberReceipt {
                        user_id: id(&get::<String>(r, "user_id")?)?,
                        display_name: get(r, "display_name")?,
                        joined_seq: get(r, "joined_seq")?,
                        left_seq: get(r, "left_seq")?,
                        delivered_seq: get(r, "delivered_seq")?,
                        read_seq: get(r, "read_seq")?,
                    },
                ))
            })
            .collect()
    }

    /// Advances a member's delivered and read positions (never backwards, never past what they
    /// may see). When the read position advances, `on_read` builds the audit record of the
    /// first read of the messages from others in between, committed with the change.
    /// Returns the new (delivered, read) positions and whether anything changed.
    #[allow(clippy::too_many_arguments)]
    pub async fn advance_receipts(
        &self,
        org: OrgId,
        conv: ConversationId,
        user: UserId,
        delivered: i64,
        read: i64,
        now: Timestamp,
        on_read: impl FnOnce(&[MessageId]) -> AuditRecord,
    ) -> StoreResult<(i64, i64, bool)> {
        let mut tx = self.write.begin().await?;
        let m = {
            let sql = format!(
                "SELECT {CONV_COLUMNS}, {MEMBER_COLUMNS} FROM conversation_members m
                 JOIN conversations c ON c.id = m.conversation_id
                 WHERE m.conversation_id = $1 AND m.user_id = $2 AND m.org_id = $3"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(conv.to_string())
                .bind(user.to_string())
                .bind(org.to_string())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?;
            membership_row(&row)?
        };
        let cap = m.visible_until();
        let new_read = read.min(cap).max(m.read_seq);
        let new_delivered = delivered.max(new_read).min(cap).max(m.delivered_seq);
        let changed = new_read != m.read_seq || new_delivered != m.delivered_seq;
        // The messages from others a read passes are audited; the head is then locked before
        // the member's row (see `audit::lock_head`). A delivery alone is not audited and does
        // not wait for it.
        let mut first_read = Vec::new();
        if new_read > m.read_seq {
            let rows = sqlx::query(
                "SELECT message_id FROM conversation_events WHERE conversation_id = $1 AND kind = 'message'
                 AND seq > $2 AND seq <= $3 AND actor_id <> $4 ORDER BY seq",
            )
            .bind(conv.to_string())
            .bind(m.read_seq)
            .bind(new_read)
            .bind(user.to_string())
            .fetch_all(&mut *tx)
            .await?;
            first_read = rows
                .iter()
                .map(|r| id(&get::<String>(r, "message_id")?))
                .collect::<StoreResult<Vec<MessageId>>>()?;
        }
        let log = if first_read.is_empty() { None } else { Some(crate::audit::lock_head(&mut tx).await?) };
        if changed {
            sqlx::query(
                "UPDATE conversation_members SET delivered_seq = $3, read_seq = $4
                 WHERE conversation_id = $1 AND user_id = $2",
            )
            .bind(conv.to_string())
            .bind(user.to_string())
            .bind(new_delivered)
            .bind(new_read)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(log) = log {
            crate::audit::append_from(&mut tx, log, [&on_read(&first_read)], now).await?;
        }
        tx.commit().await?;
        Ok((new_delivered, new_read, changed))
    }

    /// One message of a conversation in its current state.
    pub async fn message(
        &self,
        org: OrgId,
        conv: ConversationId,
        msg: MessageId,
    ) -> StoreResult<StoredMessage> {
        let mut conn = self.read.acquire().await?;
        crate::messages::message_in(&mut conn, org, conv, msg).await
    }
}

#[allow(clippy::too_many_arguments)]
async fn member_event(
    c: &mut AnyConnection,
    org: OrgId,
    conv: ConversationId,
    seq: i64,
    kind: EventKind,
    actor: UserId,
    subject: UserId,
    now: Timestamp,
) -> StoreResult<StoredEvent> {
    insert_event(
        c,
        &EventInsert {
            org,
            conv,
            seq,
            kind,
            actor: Some(actor),
            message: None,
            patient_message: None,
            subject: Some(subject),
            priority: None,
            now,
        },
    )
    .await?;
    Ok(StoredEvent {
        conversation_id: conv,
        seq,
        kind,
        actor_id: Some(actor),
        subject_id: Some(subject),
        message: None,
        patient_message: None,
        created_at: now,
    })
}
