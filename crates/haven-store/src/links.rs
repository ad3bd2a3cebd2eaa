//! Secure links and patient sessions. A link is found by the hash of its token; opening it
//! changes nothing but the audit log. Each failed identity check is counted (and audited) in one
//! transaction, and the link locks at the limit; a passed check uses the link up and opens a
//! short patient session, also in one transaction.

use haven_domain::audit::AuditRecord;
use haven_domain::{ConversationId, LinkId, OrgId, PatientId};
use jiff::Timestamp;
use sqlx::any::AnyRow;

use crate::rows::{get, id, ms, ts};
use crate::texting::NewText;
use crate::{Store, StoreError, StoreResult};

/// A secure link as stored.
#[derive(Debug, Clone)]
pub struct StoredLink {
    /// Id.
    pub id: LinkId,
    /// Organisation.
    pub org_id: OrgId,
    /// The patient who must prove who they are.
    pub patient_id: PatientId,
    /// The conversation it opens.
    pub conversation_id: ConversationId,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// Failed identity checks so far.
    pub failed_attempts: u32,
    /// Locked after too many failures.
    pub locked: bool,
    /// Used: identity was proven once.
    pub verified: bool,
    /// SHA-256 of the current one-time code, bound to the link.
    pub code_hash: Option<Vec<u8>>,
    /// When the code stops working.
    pub code_expires_at: Option<Timestamp>,
    /// When the last code was sent.
    pub code_sent_at: Option<Timestamp>,
}

/// A patient session to open.
#[derive(Debug, Clone)]
pub struct NewPatientSession {
    /// SHA-256 of the session token.
    pub token_hash: Vec<u8>,
    /// The link that was used.
    pub link_id: LinkId,
    /// Organisation.
    pub org_id: OrgId,
    /// Patient.
    pub patient_id: PatientId,
    /// Conversation.
    pub conversation_id: ConversationId,
    /// Opened at.
    pub created_at: Timestamp,
    /// Ends at the latest.
    pub expires_at: Timestamp,
}

fn link_row(row: &AnyRow) -> StoreResult<StoredLink> {
    let opt_ts =
        |c: &str| -> StoreResult<Option<Timestamp>> { get::<Option<i64>>(row, c)?.map(ts).transpose() };
    Ok(StoredLink {
        id: id(&get::<String>(row, "id")?)?,
        org_id: id(&get::<String>(row, "org_id")?)?,
        patient_id: id(&get::<String>(row, "patient_id")?)?,
        conversation_id: id(&get::<String>(row, "conversation_id")?)?,
        expires_at: ts(get(row, "expires_at")?)?,
        failed_attempts: u32::try_from(get::<i64>(row, "failed_attempts")?)
            .map_err(|_| StoreError::Corrupt("attempts"))?,
        locked: get::<Option<i64>>(row, "locked_at")?.is_some(),
        verified: get::<Option<i64>>(row, "verified_at")?.is_some(),
        code_hash: get(row, "code_hash")?,
        code_expires_at: opt_ts("code_expires_at")?,
        code_sent_at: opt_ts("code_sent_at")?,
    })
}

impl Store {
    /// The link whose token has this hash.
    pub async fn link_by_token(&self, token_hash: &[u8]) -> StoreResult<StoredLink> {
        let row = sqlx::query(
            "SELECT id, org_id, patient_id, conversation_id, expires_at, failed_attempts, locked_at, verified_at,
                code_hash, code_expires_at, code_sent_at FROM secure_links WHERE token_hash = $1",
        )
        .bind(token_hash.to_vec())
        .fetch_optional(&self.read)
        .await?
        .ok_or(StoreError::NotFound)?;
        link_row(&row)
    }

    /// Stores a new one-time code for the link and queues the text that carries it, unless the
    /// link is locked or used, or a code went out less than `resend_after` ago
    /// (Conflict("code_recently_sent")).
    pub async fn set_link_code(
        &self,
        link: LinkId,
        code_hash: &[u8],
        expires_at: Timestamp,
        not_sent_since: Timestamp,
        text: &NewText,
        audits: &[AuditRecord],
    ) -> StoreResult<()> {
        let now = text.created_at;
        self.audited_many(audits, now, async |c| {
            let done = sqlx::query(
                "UPDATE secure_links SET code_hash = $2, code_expires_at = $3, code_sent_at = $4
                 WHERE id = $1 AND locked_at IS NULL AND verified_at IS NULL
                   AND (code_sent_at IS NULL OR code_sent_at <= $5)",
            )
            .bind(link.to_string())
            .bind(code_hash.to_vec())
            .bind(ms(expires_at))
            .bind(ms(now))
            .bind(ms(not_sent_since))
            .execute(&mut *c)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict("code_recently_sent"));
            }
            crate::texting::insert_text(c, text).await
        })
        .await
    }

    /// Counts a failed identity check (locking the link at `max_attempts`), with its audit
    /// record; returns the failures so far and whether the link is now locked.
    pub async fn link_check_failed(
        &self,
        link: LinkId,
        max_attempts: u32,
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<(u32, bool)> {
        self.audited(audit_rec, now, async |c| {
            let row = sqlx::query(
                "UPDATE secure_links SET failed_attempts = failed_attempts + 1,
                    locked_at = CASE WHEN failed_attempts + 1 >= $2 THEN $3 ELSE locked_at END
                 WHERE id = $1 RETURNING failed_attempts, locked_at",
            )
            .bind(link.to_string())
            .bind(i64::from(max_attempts))
            .bind(ms(now))
            .fetch_optional(&mut *c)
            .await?
            .ok_or(StoreError::NotFound)?;
            let attempts = u32::try_from(get::<i64>(&row, "failed_attempts")?)
                .map_err(|_| StoreError::Corrupt("attempts"))?;
            Ok((attempts, get::<Option<i64>>(&row, "locked_at")?.is_some()))
        })
        .await
    }

    /// Uses the link up (identity proven) and opens the patient's session; Conflict("link_used")
    /// if it was used or locked meanwhile.
    pub async fn link_verified(
        &self,
        session: &NewPatientSession,
        audit_rec: &AuditRecord,
    ) -> StoreResult<()> {
        self.audited(audit_rec, session.created_at, async |c| {
            let done = sqlx::query(
                "UPDATE secure_links SET verified_at = $2, code_hash = NULL
                 WHERE id = $1 AND locked_at IS NULL AND verified_at IS NULL",
            )
            .bind(session.link_id.to_string())
            .bind(ms(session.created_at))
            .execute(&mut *c)
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Conflict("link_used"));
            }
            sqlx::query(
                "INSERT INTO patient_sessions (token_hash, link_id, org_id, patient_id, conversation_id, created_at,
                    last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
            )
            .bind(session.token_hash.clone())
            .bind(session.link_id.to_string())
            .bind(session.org_id.to_string())
            .bind(session.patient_id.to_string())
            .bind(session.conversation_id.to_string())
            .bind(ms(session.created_at))
            .bind(ms(session.expires_at))
            .execute(&mut *c)
            .await?;
            Ok(())
        })
        .await
    }

    /// A patient session still open at `now` with activity since `idle_since`; touches it.
    pub async fn patient_session(
        &self,
        token_hash: &[u8],
        now: Timestamp,
        idle_since: Timestamp,
    ) -> StoreResult<NewPatientSession> {
        let row = sqlx::query(
            "UPDATE patient_sessions SET last_seen_at = $2
             WHERE token_hash = $1 AND ended_at IS NULL AND expires_at > $2 AND last_seen_at > $3
             RETURNING token_hash, link_id, org_id, patient_id, conversation_id, created_at, expires_at",
        )
        .bind(token_hash.to_vec())
        .bind(ms(now))
        .bind(ms(idle_since))
        .fetch_optional(&self.write)
        .await?
        .ok_or(StoreError::NotFound)?;
        Ok(NewPatientSession {
            token_hash: get(&row, "token_hash")?,
            link_id: id(&get::<String>(&row, "link_id")?)?,
            org_id: id(&get::<String>(&row, "org_id")?)?,
            patient_id: id(&get::<String>(&row, "patient_id")?)?,
            conversation_id: id(&get::<String>(&row, "conversation_id")?)?,
            created_at: ts(get(&row, "created_at")?)?,
            expires_at: ts(get(&row, "expires_at")?)?,
        })
    }
}
