//! Appending to and reading the audit log. Appends happen only inside the transaction of the
//! action they record (see the callers); the sequence number comes from `audit_head`, so it is
//! gap-free and assigned in commit order.

use haven_domain::OrgId;
use haven_domain::audit::{AuditOutcome, AuditRecord};
use jiff::Timestamp;
use sqlx::AnyConnection;

use crate::rows::{get, ms, ts};
use crate::{Store, StoreError, StoreResult};

/// An audit record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAudit {
    /// Position in the log, from 1, without gaps.
    pub seq: i64,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// The record.
    pub record: AuditRecord,
}

fn outcome_name(o: AuditOutcome) -> &'static str {
    match o {
        AuditOutcome::Success => "success",
        AuditOutcome::MinorFailure => "minor_failure",
        AuditOutcome::SeriousFailure => "serious_failure",
    }
}

/// Appends `rec` on `conn`, which must be inside the caller's transaction.
pub(crate) async fn append(conn: &mut AnyConnection, rec: &AuditRecord, now: Timestamp) -> StoreResult<i64> {
    let seq: i64 = sqlx::query_scalar("UPDATE audit_head SET size = size + 1 WHERE id = 1 RETURNING size")
        .fetch_one(&mut *conn)
        .await?;
    let entry = serde_json::to_string(rec).map_err(|_| StoreError::Corrupt("audit record"))?;
    sqlx::query(
        "INSERT INTO audit_log (seq, org_id, recorded_at, event_type, subtype, outcome, agent_user_id, entry)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(rec.org_id.map(|o| o.to_string()))
    .bind(ms(now))
    .bind(&rec.event_type)
    .bind(&rec.subtype)
    .bind(outcome_name(rec.outcome))
    .bind(rec.agent.user_id.map(|u| u.to_string()))
    .bind(entry)
    .execute(&mut *conn)
    .await?;
    Ok(seq)
}

impl Store {
    /// Records an event that changes nothing else (a refused sign-in, a denied access).
    pub async fn record_audit(&self, rec: &AuditRecord, now: Timestamp) -> StoreResult<i64> {
        let mut tx = self.write.begin().await?;
        let seq = append(&mut tx, rec, now).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// The newest audit records of an organisation, newest first (search comes with the audit
    /// trail work; this serves tests and the CLI).
    pub async fn recent_audit(&self, org: OrgId, limit: i64) -> StoreResult<Vec<StoredAudit>> {
        let rows = sqlx::query(
            "SELECT seq, recorded_at, entry FROM audit_log WHERE org_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(org.to_string())
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(stored).collect()
    }

    /// Every audit record from `after_seq` on, in order, at most `limit` (unscoped: for the
    /// server's own export and verification tooling, never for a user request).
    pub async fn audit_range(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<StoredAudit>> {
        let rows =
            sqlx::query("SELECT seq, recorded_at, entry FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after_seq)
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
        rows.iter().map(stored).collect()
    }
}

fn stored(row: &sqlx::any::AnyRow) -> StoreResult<StoredAudit> {
    let entry: String = get(row, "entry")?;
    Ok(StoredAudit {
        seq: get(row, "seq")?,
        recorded_at: ts(get(row, "recorded_at")?)?,
        record: serde_json::from_str(&entry).map_err(|_| StoreError::Corrupt("audit entry"))?,
    })
}
