//! The patient's thread of a patient conversation, and the shared inbox of patient threads.
//! Each patient message is also an event of the conversation, written in the same transaction
//! as its audit record, so staff get it in order and in real time. A message to the patient is
//! stored with the text that announces it (consent and caps checked in that transaction); a
//! message from the patient (re)opens the conversation's inbox entry.

use haven_domain::audit::AuditRecord;
use haven_domain::messaging::{EventKind, InboxStatus, PatientChannel, PatientDirection};
use haven_domain::{ConversationId, OrgId, PatientId, PatientMessageId, UserId};
use jiff::Timestamp;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;

use crate::conversations::{EventInsert, StoredEvent, current_members, insert_event, next_seq};
use crate::rows::{get, id, ms, ts};
use crate::texting::{NewLink, NewText, enqueue_in};
use crate::{Store, StoreError, StoreResult, touched};

/// A message of a patient's thread to store.
#[derive(Debug, Clone)]
pub struct NewPatientMessage {
    /// Id.
    pub id: PatientMessageId,
    /// Organisation.
    pub org_id: OrgId,
    /// The patient conversation.
    pub conversation_id: ConversationId,
    /// The patient.
    pub patient_id: PatientId,
    /// To or from the patient.
    pub direction: PatientDirection,
    /// Secure page or SMS.
    pub channel: PatientChannel,
    /// The staff member who wrote it (none when the patient did).
    pub author_id: Option<UserId>,
    /// The body, sealed under the organisation key and bound to this row.
    pub body_sealed: Vec<u8>,
    /// When.
    pub created_at: Timestamp,
}

/// A message of a patient's thread as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPatientMessage {
    /// Id.
    pub id: PatientMessageId,
    /// The patient conversation.
    pub conversation_id: ConversationId,
    /// Its event's sequence number in the conversation.
    pub seq: i64,
    /// To or from the patient.
    pub direction: PatientDirection,
    /// Secure page or SMS.
    pub channel: PatientChannel,
    /// The staff member who wrote it.
    pub author_id: Option<UserId>,
    /// The sealed body.
    pub body_sealed: Vec<u8>,
    /// When.
    pub created_at: Timestamp,
}

/// A stored patient message with who should get its event live.
#[derive(Debug, Clone)]
pub struct PatientMessageSent {
    /// The conversation event.
    pub event: StoredEvent,
    /// The conversation's current members.
    pub recipients: Vec<UserId>,
}

/// One entry of the shared inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    /// The patient conversation.
    pub conversation_id: ConversationId,
    /// The patient.
    pub patient_id: PatientId,
    /// Open or done.
    pub status: InboxStatus,
    /// Who is handling it.
    pub assignee_id: Option<UserId>,
    /// The patient's latest message.
    pub last_from_patient_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

pub(crate) const PATIENT_MESSAGE_COLUMNS: &str = "pm.id AS pm_id, pm.conversation_id AS pm_conversation_id, \
     pm.seq AS pm_seq, pm.direction AS pm_direction, pm.channel AS pm_channel, pm.author_id AS pm_author_id, \
     pm.body_sealed AS pm_body_sealed, pm.created_at AS pm_created_at";

pub(crate) fn patient_message_row(r: &AnyRow) -> StoreResult<StoredPatientMessage> {
    let direction: String = get(r, "pm_direction")?;
    let channel: String = get(r, "pm_channel")?;
    Ok(StoredPatientMessage {
        id: id(&get::<String>(r, "pm_id")?)?,
        conversation_id: id(&get::<String>(r, "pm_conversation_id")?)?,
        seq: get(r, "pm_seq")?,
        direction: PatientDirection::parse(&direction)
            .ok_or(StoreError::Corrupt("patient message direction"))?,
        channel: PatientChannel::parse(&channel).ok_or(StoreError::Corrupt("patient message channel"))?,
        author_id: get::<Option<String>>(r, "pm_author_id")?.map(|s| id(&s)).transpose()?,
        body_sealed: get(r, "pm_body_sealed")?,
        created_at: ts(get(r, "pm_created_at")?)?,
    })
}

/// Stores a patient message and its conversation event; a message from the patient opens the
/// inbox entry.
pub(crate) async fn insert_patient_message(
    c: &mut AnyConnection,
    m: &NewPatientMessage,
) -> StoreResult<PatientMessageSent> {
    let seq = next_seq(c, m.org_id, m.conversation_id, m.created_at).await?;
    sqlx::query(
        "INSERT INTO patient_messages (id, org_id, conversation_id, patient_id, seq, direction, channel,
            author_id, body_sealed, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(m.id.to_string())
    .bind(m.org_id.to_string())
    .bind(m.conversation_id.to_string())
    .bind(m.patient_id.to_string())
    .bind(seq)
    .bind(m.direction.as_str())
    .bind(m.channel.as_str())
    .bind(m.author_id.map(|u| u.to_string()))
    .bind(m.body_sealed.clone())
    .bind(ms(m.created_at))
    .execute(&mut *c)
    .await?;
    let e = EventInsert {
        org: m.org_id,
        conv: m.conversation_id,
        seq,
        kind: EventKind::PatientMessage,
        actor: m.author_id,
        message: None,
        patient_message: Some(m.id),
        subject: None,
        priority: None,
        now: m.created_at,
    };
    insert_event(c, &e).await?;
    if m.direction == PatientDirection::FromPatient {
        sqlx::query(
            "INSERT INTO patient_inbox (conversation_id, org_id, patient_id, status, assignee_id,
                last_from_patient_at, updated_at) VALUES ($1, $2, $3, 'open', NULL, $4, $4)
             ON CONFLICT (conversation_id) DO UPDATE SET status = 'open', last_from_patient_at = $4, updated_at = $4",
        )
        .bind(m.conversation_id.to_string())
        .bind(m.org_id.to_string())
        .bind(m.patient_id.to_string())
        .bind(ms(m.created_at))
        .execute(&mut *c)
        .await?;
    }
    let recipients = current_members(c, m.conversation_id).await?;
    let stored = StoredPatientMessage {
        id: m.id,
        conversation_id: m.conversation_id,
        seq,
        direction: m.direction,
        channel: m.channel,
        author_id: m.author_id,
        body_sealed: m.body_sealed.clone(),
        created_at: m.created_at,
    };
    let event = StoredEvent {
        conversation_id: m.conversation_id,
        seq,
        kind: EventKind::PatientMessage,
        actor_id: m.author_id,
        subject_id: None,
        message: None,
        patient_message: Some(stored),
        created_at: m.created_at,
    };
    Ok(PatientMessageSent { event, recipients })
}

impl Store {
    /// Stores a message to the patient, queues the text (with its secure link) that announces
    /// it, and appends the audit records, in one transaction: nothing is stored if the text
    /// may not be sent (no consent, opted out). Returns the event and when the text goes out.
    pub async fn message_patient(
        &self,
        m: &NewPatientMessage,
        text: &NewText,
        link: &NewLink,
        schedule: impl FnOnce(&[Timestamp]) -> Timestamp,
        audit_recs: &[AuditRecord],
    ) -> StoreResult<(PatientMessageSent, Timestamp)> {
        self.audited_many(audit_recs, m.created_at, async |c| {
            let at = enqueue_in(c, text, Some(link), schedule).await?;
            let sent = insert_patient_message(c, m).await?;
            Ok((sent, at))
        })
        .await
    }

    /// Stores a message from the patient (written on the secure page) with its audit record.
    pub async fn patient_reply(
        &self,
        m: &NewPatientMessage,
        audit_rec: &AuditRecord,
    ) -> StoreResult<PatientMessageSent> {
        self.audited(audit_rec, m.created_at, async |c| insert_patient_message(c, m).await).await
    }

    /// The patient's thread of a conversation, oldest first (at most `limit`, the newest).
    pub async fn patient_thread(
        &self,
        org: OrgId,
        conv: ConversationId,
        limit: u32,
    ) -> StoreResult<Vec<StoredPatientMessage>> {
        let sql = format!(
            "SELECT {PATIENT_MESSAGE_COLUMNS} FROM patient_messages pm
             WHERE pm.org_id = $1 AND pm.conversation_id = $2 ORDER BY pm.seq DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(conv.to_string())
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        let mut out = rows.iter().map(patient_message_row).collect::<StoreResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }

    /// The patient conversation a text from this patient belongs to: the one of the newest
    /// secure link sent to them.
    pub async fn latest_patient_conversation(
        &self,
        org: OrgId,
        patient: PatientId,
    ) -> StoreResult<Option<ConversationId>> {
        let row = sqlx::query(
            "SELECT conversation_id FROM secure_links WHERE org_id = $1 AND patient_id = $2
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(org.to_string())
        .bind(patient.to_string())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| id(&get::<String>(&r, "conversation_id")?)).transpose()
    }

    /// The shared inbox of an organisation: open entries first, then the newest.
    pub async fn inbox(
        &self,
        org: OrgId,
        status: Option<InboxStatus>,
        limit: u32,
    ) -> StoreResult<Vec<InboxEntry>> {
        let rows = sqlx::query(
            "SELECT conversation_id, patient_id, status, assignee_id, last_from_patient_at, updated_at
             FROM patient_inbox WHERE org_id = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2)
             ORDER BY last_from_patient_at DESC LIMIT $3",
        )
        .bind(org.to_string())
        .bind(status.map(InboxStatus::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(inbox_row).collect()
    }

    /// Assigns an inbox entry and sets its status, with the audit record.
    pub async fn update_inbox(
        &self,
        org: OrgId,
        conv: ConversationId,
        assignee: Option<UserId>,
        status: InboxStatus,
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<InboxEntry> {
        self.audited(audit_rec, now, async |c| {
            let done = sqlx::query(
                "UPDATE patient_inbox SET assignee_id = $3, status = $4, updated_at = $5
                 WHERE org_id = $1 AND conversation_id = $2",
            )
            .bind(org.to_string())
            .bind(conv.to_string())
            .bind(assignee.map(|u| u.to_string()))
            .bind(status.as_str())
            .bind(ms(now))
            .execute(&mut *c)
            .await?;
            touched(done)?;
            let row = sqlx::query(
                "SELECT conversation_id, patient_id, status, assignee_id, last_from_patient_at, updated_at
                 FROM patient_inbox WHERE conversation_id = $1",
            )
            .bind(conv.to_string())
            .fetch_one(&mut *c)
            .await?;
            inbox_row(&row)
        })
        .await
    }
}

fn inbox_row(r: &AnyRow) -> StoreResult<InboxEntry> {
    let status: String = get(r, "status")?;
    Ok(InboxEntry {
        conversation_id: id(&get::<String>(r, "conversation_id")?)?,
        patient_id: id(&get::<String>(r, "patient_id")?)?,
        status: InboxStatus::parse(&status).ok_or(StoreError::Corrupt("inbox status"))?,
        assignee_id: get::<Option<String>>(r, "assignee_id")?.map(|s| id(&s)).transpose()?,
        last_from_patient_at: ts(get(r, "last_from_patient_at")?)?,
        updated_at: ts(get(r, "updated_at")?)?,
    })
}
