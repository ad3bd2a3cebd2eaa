//! Failure counters for throttling sign-in and MFA attempts. Keys are opaque strings chosen by
//! the caller (a digest of the account name, or the source address); the counting rule lives in
//! `haven_domain::throttle`.

use haven_domain::throttle::{FailureCount, ThrottleDecision, ThrottlePolicy};
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

    /// Counts an attempt against every `(key, policy)` *before* it is checked, atomically
    /// (an upsert that increments and returns the new count under the row's lock), so
    /// concurrent attempts cannot all slip under the limit. If any key is over its limit the
    /// counts are rolled back and the seconds until that key's window ends are returned.
    pub async fn reserve_attempt(
        &self,
        keys: &[(&str, ThrottlePolicy)],
        now: Timestamp,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.write.begin().await?;
        for (key, policy) in keys {
            let row = sqlx::query(
                "INSERT INTO auth_throttle (key, failures, window_start) VALUES ($1, 1, $2)
                 ON CONFLICT (key) DO UPDATE SET
                   failures = CASE WHEN auth_throttle.window_start <= $3 THEN 1 ELSE auth_throttle.failures + 1 END,
                   window_start = CASE WHEN auth_throttle.window_start <= $3 THEN $2 ELSE auth_throttle.window_start END
                 RETURNING failures, window_start",
            )
            .bind(*key)
            .bind(ms(now))
            .bind(ms(now - policy.window))
            .fetch_one(&mut *tx)
            .await?;
            let counted = FailureCount {
                failures: u32::try_from(get::<i64>(&row, "failures")?).unwrap_or(u32::MAX),
                window_start: ts(get(&row, "window_start")?)?,
            };
            if let ThrottleDecision::Refuse { retry_after_secs } = policy.decide_reserved(counted, now) {
                tx.rollback().await?;
                return Ok(Some(retry_after_secs));
            }
        }
        tx.commit().await?;
        Ok(None)
    }

    /// Gives back the attempts a success had reserved (a success is not a failure).
    pub async fn release_attempt(&self, keys: &[&str]) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        for key in keys {
            sqlx::query("UPDATE auth_throttle SET failures = failures - 1 WHERE key = $1 AND failures > 0")
                .bind(*key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets a key's failures (after a successful sign-in of that account).
    pub async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM auth_throttle WHERE key = $1").bind(key).execute(&self.write).await?;
        Ok(())
    }
}
