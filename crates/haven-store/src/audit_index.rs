//! The audit log's search index (`audit_index`: which entries name which user, patient,
//! conversation…), written behind the log in bulk rather than inside each audited transaction.
//!
//! Why: an entry's index rows land wherever their user or conversation sorts, a different
//! B-tree page for nearly every row, so writing them with the entry made each group-commit batch
//! dirty (and write to the WAL, then copy back) about twice as many pages as everything else in
//! it. Written up to a thousand entries at a time, the same pages take many rows each.
//!
//! The log stays the authority: entries are appended in the transaction of what they record, and
//! the index is derived from their canonical bytes. `audit_index_head` says how far it has got,
//! and moves in the same transaction as the rows it covers, so a crash loses nothing and indexes
//! nothing twice. A search by reference first brings the index up to the head of the log, so it
//! never misses an entry however far behind the background indexer is.

use std::time::Duration;

use haven_domain::audit::AuditRecord;
use sqlx::AnyPool;

use crate::audit::record_of;
use crate::rows::get;
use crate::script::Script;
use crate::{Store, StoreResult};

/// Entries indexed per transaction at most. This bounds how long the writer is held (recorded,
/// from BEGIN to commit, as `haven_store_audit_index_seconds`: about 6 ms on the benchmark
/// machine; 1,000 took 15 ms, and raised the open-loop delivery p99 from 16 to 31 ms).
const CHUNK: i64 = 250;

/// Index rows per insert statement (four values each, well under every bind limit).
const ROWS_PER_INSERT: usize = 500;

/// How often the background indexer catches up with the log.
const INDEX_EVERY: Duration = Duration::from_millis(250);

/// The references an entry is found by: its entities, then its acting user as `agent`.
pub(crate) fn refs_of(rec: &AuditRecord) -> impl Iterator<Item = (&str, String)> {
    let agent = rec.agent.user_id.map(|u| ("agent", u.to_string()));
    rec.entities.iter().map(|e| (e.kind.as_str(), e.id.clone())).chain(agent)
}

impl Store {
    /// Brings the search index up to the head of the log; returns how many entries it indexed.
    pub async fn index_audit(&self) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let (indexed, head) = positions(&self.read).await?;
            if indexed >= head {
                return Ok(total);
            }
            total += self.index_audit_chunk().await?;
        }
    }

    /// Indexes what the log held when the round began, not what is appended meanwhile: under
    /// a steady stream of writes, chasing the head ended every round in transactions of a few
    /// entries each, and they wrote more pages than the sends themselves (every transaction
    /// dirties a page per user and conversation it names). The next round takes the rest.
    async fn index_audit_round(&self) -> StoreResult<u64> {
        let (mut indexed, target) = positions(&self.read).await?;
        let mut total = 0;
        while indexed < target {
            total += self.index_audit_chunk().await?;
            indexed = positions(&self.read).await?.0;
        }
        Ok(total)
    }

    /// Indexes the next entries (at most [`CHUNK`]); returns how many, 0 when another indexer
    /// got there first. They are read and parsed before the write transaction begins, so the
    /// writer (which group commit shares) is held only for the inserts.
    async fn index_audit_chunk(&self) -> StoreResult<u64> {
        let head = sqlx::query("SELECT indexed_seq FROM audit_index_head WHERE id = 1")
            .fetch_one(&self.read)
            .await?;
        let from: i64 = get(&head, "indexed_seq")?;
        let rows =
            sqlx::query("SELECT seq, org_id, entry FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(from)
                .bind(CHUNK)
                .fetch_all(&self.read)
                .await?;
        let Some(last) = rows.last() else { return Ok(0) };
        let last: i64 = get(last, "seq")?;
        let mut refs: Vec<(i64, Option<String>, String, String)> = Vec::new();
        for row in &rows {
            let seq: i64 = get(row, "seq")?;
            let org: Option<String> = get(row, "org_id")?;
            let record = record_of(&get::<String>(row, "entry")?)?;
            refs.extend(refs_of(&record).map(|(kind, id)| (seq, org.clone(), kind.to_owned(), id)));
        }
        let mut tx = self.write.begin().await?;
        let began = std::time::Instant::now();
        // Moves the head only from where this round read it (and takes its row lock first on
        // PostgreSQL): if another indexer (another node, a search) moved it meanwhile, nothing
        // is written and the caller looks again.
        let moved =
            sqlx::query("UPDATE audit_index_head SET indexed_seq = $1 WHERE id = 1 AND indexed_seq = $2")
                .bind(last)
                .bind(from)
                .execute(&mut *tx)
                .await?;
        if moved.rows_affected() != 1 {
            return Ok(0);
        }
        let mut script = Script::for_connection(&tx);
        for chunk in refs.chunks(ROWS_PER_INSERT) {
            script.statement(|m| {
                format!(
                    "INSERT INTO audit_index (seq, org_id, kind, ref_id) VALUES {}",
                    m.rows(chunk.len(), 4)
                )
            });
            for (seq, org, kind, id) in chunk {
                script.bind(*seq).bind(org.clone()).bind(kind.clone()).bind(id.clone());
            }
        }
        script.run(&mut tx).await?;
        tx.commit().await?;
        metrics::histogram!("haven_store_audit_index_seconds").record(began.elapsed().as_secs_f64());
        Ok(rows.len() as u64)
    }
}

/// How far the index has got and the size of the log (read-only, so an idle server never
/// writes just to find there is nothing to do).
async fn positions(read: &AnyPool) -> StoreResult<(i64, i64)> {
    let row = sqlx::query(
        "SELECT (SELECT indexed_seq FROM audit_index_head WHERE id = 1) AS indexed, (SELECT size FROM audit_head WHERE id = 1) AS head",
    )
    .fetch_one(read)
    .await?;
    Ok((get(&row, "indexed")?, get(&row, "head")?))
}

/// Keeps the index close behind the log, so a search has little to catch up. Ends when the
/// store is closed or every other handle to it is dropped.
pub(crate) async fn indexer(store: Store) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INDEX_EVERY, INDEX_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if std::sync::Arc::strong_count(&store._alive) <= 1 || store.write.is_closed() {
            return;
        }
        if let Err(e) = store.index_audit_round().await {
            tracing::warn!(error = %e, "could not index the audit log; the next round will retry");
        }
    }
}
