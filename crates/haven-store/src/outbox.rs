//! The outbox's side of the store: claiming due texts under a lease (consent checked again in
//! the same transaction), and recording what became of each (sent, retried, failed, uncertain,
//! or the provider's delivery report). Queuing a text is in `texting.rs`.

use haven_domain::audit::AuditRecord;
use haven_domain::sms::TextStatus;
use haven_domain::{OrgId, TextId};
use jiff::{SignedDuration, Timestamp};
use sqlx::AnyConnection;

use crate::rows::{get, id, ms};
use crate::script::Script;
use crate::texting::{StoredText, TEXT_COLUMNS, consent_statuses, refusal, text_row};
use crate::{Store, StoreResult};

impl Store {
    /// Claims up to `limit` texts that are due (or whose worker's lease ran out) for sending.
    /// In the same transaction, each non-exempt text's consent is checked again (a text to a
    /// number that opted out since it was queued is cancelled, with `cancel`'s audit record),
    /// and `hold` may postpone a queued text (quiet hours in the patient's zone). Also returns
    /// how many texts it read as due but another worker leased first (more may be due).
    pub async fn claim_texts(
        &self,
        now: Timestamp,
        lease: SignedDuration,
        limit: u32,
        hold: impl Fn(&StoredText) -> Option<Timestamp>,
        cancel: impl Fn(&StoredText, &'static str) -> AuditRecord,
    ) -> StoreResult<(Vec<StoredText>, usize)> {
        let mut tx = self.write.begin().await?;
        // Two halves rather than one `OR`: each reads the status index in order and stops at the
        // limit, where the `OR` collected every due text and sorted them all, on every pass.
        let sql = format!(
            "SELECT * FROM (SELECT {TEXT_COLUMNS} FROM sms_outbox WHERE status = 'queued' AND not_before <= $1
                            ORDER BY not_before LIMIT $2) AS due
             UNION ALL
             SELECT * FROM (SELECT {TEXT_COLUMNS} FROM sms_outbox WHERE status = 'sending' AND lease_until <= $1
                            ORDER BY not_before LIMIT $2) AS lapsed"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await?;
        let mut texts = Vec::with_capacity(rows.len());
        for row in &rows {
            texts.push((text_row(row)?, get::<Option<i64>>(row, "lease_until")?));
        }
        texts.sort_by_key(|(t, _)| t.not_before);
        texts.truncate(limit as usize);
        let statuses =
            consent_statuses(&mut tx, texts.iter().map(|(t, _)| (t.org_id, t.phone_index.as_slice())))
                .await?;
        let mut to_claim = Vec::new();
        let mut cancelled = Vec::new();
        for (text, lease_until) in texts {
            let status = statuses.get(&(text.org_id, text.phone_index.clone())).cloned().unwrap_or_default();
            if let Some(why) = refusal(&status, text.kind, text.purpose) {
                let done = sqlx::query(
                    "UPDATE sms_outbox SET status = 'cancelled', error_code = $2, status_at = $3, lease_until = NULL
                     WHERE id = $1 AND status = $4",
                )
                .bind(text.id.to_string())
                .bind(why)
                .bind(ms(now))
                .bind(text.status.as_str())
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    cancelled.push(cancel(&text, why));
                }
                continue;
            }
            if text.status == TextStatus::Queued
                && let Some(later) = hold(&text).filter(|t| *t > now)
            {
                sqlx::query("UPDATE sms_outbox SET not_before = $2 WHERE id = $1 AND status = 'queued'")
                    .bind(text.id.to_string())
                    .bind(ms(later))
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            to_claim.push((text, lease_until));
        }
        let wanted = to_claim.len();
        let claimed = take_leases(&mut tx, to_claim, now, lease).await?;
        crate::audit::append_all(&mut tx, &cancelled, now).await?;
        tx.commit().await?;
        let lost = wanted - claimed.len();
        Ok((claimed, lost))
    }

    /// Records that the provider accepted claimed texts — `(text, provider, provider's id, audit
    /// record)` each — in one transaction with their audit records, so a busy outbox pays one
    /// commit for many texts. A text no longer being sent (settled meanwhile by another node) is
    /// left as it is and not audited again. Returns the texts recorded.
    pub async fn texts_sent(
        &self,
        sent: &[(TextId, &str, &str, &AuditRecord)],
        now: Timestamp,
    ) -> StoreResult<Vec<TextId>> {
        if sent.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write.begin().await?;
        // One statement for all of them (VALUES columns are named column1.. on both databases);
        // the rows it returns are the texts that were still being sent.
        let mut update = Script::for_connection(&tx);
        update.statement(|m| {
            let at = (m.next(), m.next());
            format!(
                "UPDATE sms_outbox AS o SET status = 'sent', provider = v.column2, provider_id = v.column3,
                    sent_at = {}, status_at = {}, lease_until = NULL, error_code = NULL
                 FROM (VALUES {}) AS v WHERE o.id = v.column1 AND o.status = 'sending' RETURNING id",
                at.0,
                at.1,
                m.rows(sent.len(), 3)
            )
        });
        update.bind(ms(now)).bind(ms(now));
        for (text, provider, provider_id, _) in sent {
            update.bind(text.to_string()).bind(*provider).bind(*provider_id);
        }
        let rows = update.fetch_all(&mut tx).await.map_err(crate::rows::conflict("provider_id"))?;
        let updated: std::collections::HashSet<String> =
            rows.iter().map(|r| get::<String>(r, "id")).collect::<StoreResult<_>>()?;
        let (recorded, recs): (Vec<TextId>, Vec<&AuditRecord>) = sent
            .iter()
            .filter(|(text, ..)| updated.contains(&text.to_string()))
            .map(|(text, _, _, rec)| (*text, *rec))
            .unzip();
        crate::audit::append_all(&mut tx, recs, now).await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Records a failed attempt: queued again at `retry_at`, or failed for good (`None`).
    pub async fn text_failed(
        &self,
        text: TextId,
        error_code: &str,
        retry_at: Option<Timestamp>,
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<()> {
        self.audited(audit_rec, now, async |c| {
            let done = sqlx::query(
                "UPDATE sms_outbox SET status = $2, not_before = COALESCE($3, not_before), attempts = attempts + 1,
                    error_code = $4, status_at = $5, lease_until = NULL, claimed_at = NULL
                 WHERE id = $1 AND status = 'sending'",
            )
            .bind(text.to_string())
            .bind(if retry_at.is_some() { "queued" } else { "failed" })
            .bind(retry_at.map(ms))
            .bind(error_code)
            .bind(ms(now))
            .execute(&mut *c)
            .await?;
            crate::touched(done)
        })
        .await
    }

    /// Records an attempt whose outcome is unknown (the provider may have the text): the text
    /// stays `sending` and is looked up with the provider, not resent, when `check_at` comes.
    pub async fn text_uncertain(
        &self,
        text: TextId,
        check_at: Timestamp,
        now: Timestamp,
        audit_rec: &AuditRecord,
    ) -> StoreResult<()> {
        self.audited(audit_rec, now, async |c| {
            let done = sqlx::query(
                "UPDATE sms_outbox SET lease_until = $2, attempts = attempts + 1, error_code = 'uncertain', status_at = $3
                 WHERE id = $1 AND status = 'sending'",
            )
            .bind(text.to_string())
            .bind(ms(check_at))
            .bind(ms(now))
            .execute(&mut *c)
            .await?;
            crate::touched(done)
        })
        .await
    }

    /// Records a provider's delivery report; returns the text it was about, if any. A report
    /// never moves a text back (a late "sent" after "delivered" is ignored).
    pub async fn text_delivery(
        &self,
        org: OrgId,
        provider: &str,
        provider_id: &str,
        status: TextStatus,
        error_code: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Option<TextId>> {
        let row = sqlx::query(
            "UPDATE sms_outbox SET status = $4, error_code = COALESCE($5, error_code), status_at = $6
             WHERE org_id = $1 AND provider = $2 AND provider_id = $3 AND status IN ('sent', 'sending')
             RETURNING id",
        )
        .bind(org.to_string())
        .bind(provider)
        .bind(provider_id)
        .bind(status.as_str())
        .bind(error_code)
        .bind(ms(now))
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| id(&get::<String>(&r, "id")?)).transpose()
    }
}

/// Leases the texts to this node in one compare-and-set on each text's status and lease, so
/// two nodes never both take one; returns those it took.
async fn take_leases(
    c: &mut AnyConnection,
    texts: Vec<(StoredText, Option<i64>)>,
    now: Timestamp,
    lease: SignedDuration,
) -> StoreResult<Vec<StoredText>> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let mut update = Script::for_connection(c);
    update.statement(|m| {
        let (until, at) = (m.next(), m.next());
        format!(
            "UPDATE sms_outbox AS o SET status = 'sending', lease_until = {until}, claimed_at = COALESCE(o.claimed_at, {at})
             FROM (VALUES {}) AS v
             WHERE o.id = v.column1 AND o.status = v.column2 AND COALESCE(o.lease_until, 0) = v.column3 RETURNING id",
            m.repeat(texts.len(), "(?, ?, CAST(? AS BIGINT))", ", ")
        )
    });
    update.bind(ms(now + lease)).bind(ms(now));
    for (text, lease_until) in &texts {
        update.bind(text.id.to_string()).bind(text.status.as_str()).bind(lease_until.unwrap_or(0));
    }
    let taken: std::collections::HashSet<String> =
        update.fetch_all(c).await?.iter().map(|r| get::<String>(r, "id")).collect::<StoreResult<_>>()?;
    Ok(texts
        .into_iter()
        .filter(|(t, _)| taken.contains(&t.id.to_string()))
        .map(|(mut t, _)| {
            t.claimed_at = t.claimed_at.or(Some(now));
            t
        })
        .collect())
}
