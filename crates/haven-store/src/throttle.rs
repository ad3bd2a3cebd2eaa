//! Failure counters for throttling sign-in and MFA attempts. Keys are opaque strings chosen by
//! the caller (a digest of the account name, or the source address); the counting rule lives in
//! `haven_domain::throttle`.

use haven_domain::audit::AuditRecord;
use haven_domain::throttle::{FailureCount, ThrottlePolicy};
use jiff::Timestamp;

use crate::rows::{get, ms, ts};
use sqlx::AnyConnection;

use crate::{Store, StoreResult};

async fn count(conn: &mut AnyConnection, key: &str) -> StoreResult<Option<FailureCount>> {
    let row = sqlx::query("SELECT failures, window_start FROM auth_throttle WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(FailureCount {
        failures: u32::try_from(get::<i64>(&row, "failures")?).unwrap_or(u32::MAX),
        window_start: ts(get(&row, "window_start")?)?,
    }))
}

impl Store {
    /// The current count of a key, if it has one.
    pub async fn failure_count(&self, key: &str) -> StoreResult<Option<FailureCount>> {
        let mut conn = self.read.acquire().await?;
        count(&mut conn, key).await
    }

    /// Counts one failure against each `(key, policy)` and records the audit entry, in one
    /// transaction.
    pub async fn record_failure(
        &self,
        keys: &[(&str, ThrottlePolicy)],
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.audited(audit_rec, now, async |c| {
            for (key, policy) in keys {
                let current = count(c, key).await?;
                let next = policy.record_failure(current, now);
                sqlx::query(
                    "INSERT INTO auth_throttle (key, failures, window_start) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,
                     window_start = excluded.window_start",
                )
                .bind(*key)
                .bind(i64::from(next.failures))
                .bind(ms(next.window_start))
                .execute(&mut *c)
                .await?;
            }
            Ok(())
        })
        .await
    }

    /// Forgets a key's failures (after a successful sign-in of that account).
    pub async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM auth_throttle WHERE key = $1").bind(key).execute(&self.write).await?;
        Ok(())
    }
}
