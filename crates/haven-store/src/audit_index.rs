//! The audit log's search index (`audit_index`: which entries name which user, patient,
//! conversation…), written behind the log in bulk rather than inside each audited transaction.
//!
//! Why: an entry's index rows land wherever their user or conversation sorts, a different
//! B-tree page for nearly every row, so writing them with the entry made each group-commit batch
//! dirty (and write to the WAL, then copy back) about twice as many pages as everything else in
//! it. Written a few hundred entries at a time, the same pages take many rows each.
//!
//! The index is one B-tree keyed by what it is searched by, (organisation, kind, reference,
//! entry) (schema 11; on SQLite a `WITHOUT ROWID` table): a table with an index beside it wrote
//! each row twice.
//!
//! Only the kinds of reference a search can name are written ([`AuditRef`](crate::AuditRef)):
//! a message send also names its message, and those rows were a third of what chat traffic
//! indexed, for nothing that searched them. Rows of other kinds written before that (schema
//! 11's databases) stay, unread.
//!
//! The log stays the authority: entries are appended in the transaction of what they record, and
//! the index is derived from their canonical bytes. `audit_index_head` says how far it has got,
//! and moves in the same transaction as the rows it covers, so a crash loses nothing and indexes
//! nothing twice. A search by reference first brings the index up to the head of the log, so it
//! never misses an entry however far behind the background indexer is.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use sqlx::{AnyConnection, AnyPool, AssertSqlSafe};

use crate::rows::get;
use crate::script::Script;
use crate::{AuditRef, Backend, Store, StoreError, StoreResult};

/// Entries indexed per transaction at most. This bounds how long the writer is held (recorded,
/// from BEGIN to commit, as `haven_store_audit_index_seconds`: about 6 ms on the benchmark
/// machine; 1,000 took 15 ms, and raised the open-loop delivery p99 from 16 to 31 ms).
const CHUNK: i64 = 250;

/// Index rows per insert statement (four values each, well under every bind limit).
const ROWS_PER_INSERT: usize = 500;

/// How often the background indexer catches up with the log.
const INDEX_EVERY: Duration = Duration::from_millis(250);

/// The parts of a canonical entry (see `audit.rs`) its index rows come from, borrowed from
/// the entry's text: parsing whole records (whose fields are flattened into the entry, which
/// serde buffers) was a large part of what indexing cost the runtime's threads.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(default, borrow)]
    agent: Option<Agent<'a>>,
    #[serde(default, borrow)]
    entities: Vec<Entity<'a>>,
}

#[derive(Deserialize)]
struct Agent<'a> {
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Entity<'a> {
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// The references an entry is found by, each once: its entities of the kinds searched by
/// ([`AuditRef`]), and its acting user as `agent`.
fn refs_in(entry: &str) -> StoreResult<Vec<(AuditRef, Cow<'_, str>)>> {
    let named: Named<'_> = serde_json::from_str(entry).map_err(|_| StoreError::Corrupt("audit entry"))?;
    let agent = named.agent.and_then(|a| a.user_id).map(|u| (AuditRef::Agent, u));
    let entities = named.entities.into_iter().filter_map(|e| Some((AuditRef::of_entity(&e.kind)?, e.id)));
    let mut refs: Vec<_> = entities.chain(agent).collect();
    // The key is (organisation, kind, reference, entry): an entry naming the same thing twice
    // is one row.
    refs.sort_unstable();
    refs.dedup();
    Ok(refs)
}

impl Store {
    /// Brings the search index up to the head of the log; returns how many entries it indexed.
    pub async fn index_audit(&self) -> StoreResult<u64> {
        let mut total = 0;
        loop {
            let at = self.positions().await?;
            if !at.ours {
                self.restart_audit_index(at).await?;
            } else if at.indexed == at.head {
                return Ok(total);
            } else {
                total += self.index_audit_chunk().await?;
            }
        }
    }

    /// Indexes what the log held when the round began, not what is appended meanwhile: under
    /// a steady stream of writes, chasing the head ended every round in transactions of a few
    /// entries each, and they wrote more pages than the sends themselves (every transaction
    /// dirties a page per user and conversation it names). The next round takes the rest.
    async fn index_audit_round(&self) -> StoreResult<u64> {
        let mut at = self.positions().await?;
        if !at.ours {
            // The next round builds it from the first entry.
            self.restart_audit_index(at).await?;
            return Ok(0);
        }
        let target = at.head;
        let mut total = 0;
        while at.indexed < target {
            total += self.index_audit_chunk().await?;
            at = self.positions().await?;
        }
        Ok(total)
    }

    /// Indexes the next entries (at most [`CHUNK`]); returns how many, 0 when another indexer
    /// got there first. They are read and parsed before the write transaction begins, so the
    /// index's writer is held only for the inserts. The head also takes the leaf hash of the
    /// last entry indexed (see [`Positions::ours`]).
    async fn index_audit_chunk(&self) -> StoreResult<u64> {
        let from: i64 = sqlx::query_scalar("SELECT indexed_seq FROM audit_index_head WHERE id = 1")
            .fetch_one(&self.read)
            .await?;
        let rows = sqlx::query(
            "SELECT seq, org_id, entry, leaf_hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(from)
        .bind(CHUNK)
        .fetch_all(&self.read)
        .await?;
        let Some(last) = rows.last() else { return Ok(0) };
        let last_leaf: Vec<u8> = get(last, "leaf_hash")?;
        let last: i64 = get(last, "seq")?;
        let mut refs: Vec<(i64, String, String, String)> = Vec::new();
        for row in &rows {
            let seq: i64 = get(row, "seq")?;
            // Searches always name the organisation: an entry without one is found by its
            // sequence number or time, never through this index.
            let Some(org) = get::<Option<String>>(row, "org_id")? else { continue };
            let entry: String = get(row, "entry")?;
            refs.extend(
                refs_in(&entry)?
                    .into_iter()
                    .map(|(kind, id)| (seq, org.clone(), kind.as_str().to_owned(), id.into())),
            );
        }
        let mut tx = self.index.begin().await?;
        let began = std::time::Instant::now();
        // Moves the head only from where this round read it (and takes its row lock first on
        // PostgreSQL): if another indexer (another node, a search) moved it meanwhile, nothing
        // is written and the caller looks again.
        let moved = sqlx::query(
            "UPDATE audit_index_head SET indexed_seq = $1, leaf = $2 WHERE id = 1 AND indexed_seq = $3",
        )
        .bind(last)
        .bind(last_leaf)
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

    /// Empties an index that is not this log's (`at`, from [`Store::positions`]), if its head
    /// is still where `at` saw it (else another indexer did), so it is built again from the
    /// first entry.
    async fn restart_audit_index(&self, at: Positions) -> StoreResult<()> {
        let mut tx = self.index.begin().await?;
        // The leaf too: another indexer may have started again and come back to the same entry
        // with this log's leaf, and that index is right.
        let moved = sqlx::query(
            "UPDATE audit_index_head SET indexed_seq = 0, leaf = NULL
             WHERE id = 1 AND indexed_seq = $1 AND leaf IS NOT DISTINCT FROM $2",
        )
        .bind(at.indexed)
        .bind(at.leaf)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() == 1 {
            sqlx::query("DELETE FROM audit_index").execute(&mut *tx).await?;
            tx.commit().await?;
            tracing::warn!(
                indexed = at.indexed,
                "the audit search index was not built from this audit log (was the database restored \
                 from a backup, or copied without its index?); building it again from the first entry"
            );
        }
        Ok(())
    }
}

/// The file of the audit index beside the SQLite database file `main` (like SQLite's own
/// `-wal` and `-shm`, it belongs with the database file and is named after it).
fn file_beside(main: &str) -> String {
    format!("{main}-audit-index")
}

/// What the audit index's file is attached as on the connections that see it.
const SCHEMA: &str = "audit_index_db";

/// Attaches the audit index's file to a SQLite connection, so its tables are found by their
/// plain names (after the main database's, which from schema 12 has none of that name). Every
/// SQLite connection of the store but the writer's has it; so do tools that read the index.
pub async fn attach(conn: &mut AnyConnection) -> StoreResult<()> {
    let main = crate::wal::main_file(&mut *conn).await?.ok_or_else(|| {
        StoreError::Config(
            "a SQLite database must be a file: the audit search index is kept in a file beside it".into(),
        )
    })?;
    let file = file_beside(&main);
    // ATTACH opens the file with the connection's flags, and a URL without `mode=rwc` does not
    // let SQLite create it: made here (empty, which SQLite reads as an empty database), so a
    // database restored or upgraded without its index file still opens.
    std::fs::OpenOptions::new().create(true).append(true).open(&file).map_err(|e| {
        StoreError::Config(format!("the audit search index's file {file} cannot be opened: {e}"))
    })?;
    sqlx::query(AssertSqlSafe(format!("ATTACH DATABASE $1 AS {SCHEMA}")))
        .bind(file)
        .execute(&mut *conn)
        .await?;
    // Per connection; see `prepare_file` for why this is enough.
    sqlx::raw_sql(AssertSqlSafe(format!("PRAGMA {SCHEMA}.synchronous = NORMAL"))).execute(&mut *conn).await?;
    Ok(())
}

/// Detaches what [`attach`] attached.
pub(crate) async fn detach(conn: &mut AnyConnection) -> StoreResult<()> {
    sqlx::raw_sql(AssertSqlSafe(format!("DETACH DATABASE {SCHEMA}"))).execute(&mut *conn).await?;
    Ok(())
}

/// Makes the index's file ready on its writer (SQLite only): the tables, and how it commits.
///
/// The index is derived from the log and its head moves with its rows, so it commits without
/// waiting for the disk (WAL with `synchronous = NORMAL`): a power cut can take back its last
/// transactions, never half of one, and the indexer then indexes those entries again. It never
/// shares a lock with the log's writer, which commits with `synchronous = FULL`.
pub(crate) async fn prepare_file(index: &AnyPool) -> StoreResult<()> {
    sqlx::raw_sql(AssertSqlSafe(format!(
        "PRAGMA {SCHEMA}.journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS {SCHEMA}.audit_index (
             org_id TEXT NOT NULL,
             kind TEXT NOT NULL,
             ref_id TEXT NOT NULL,
             seq INTEGER NOT NULL,
             PRIMARY KEY (org_id, kind, ref_id, seq)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS {SCHEMA}.audit_index_head (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             indexed_seq INTEGER NOT NULL,
             leaf BLOB
         );
         INSERT OR IGNORE INTO {SCHEMA}.audit_index_head (id, indexed_seq, leaf) VALUES (1, 0, NULL);"
    )))
    .execute(index)
    .await?;
    Ok(())
}

/// Where the index is against the log.
struct Positions {
    /// The last entry the index covers (0: none).
    indexed: i64,
    /// The leaf hash of that entry, as the index saw it.
    leaf: Option<Vec<u8>>,
    /// The size of the log.
    head: i64,
    /// Whether the log's entry at `indexed` is the one the index saw. On SQLite the index is a
    /// file of its own, and a database file restored from a backup, or copied without it, is a
    /// log the index was not built from (even where the two are the same length). On
    /// PostgreSQL the index is in the log's database, moves in its transactions and is backed
    /// up with it; and during a rolling upgrade to schema 12, nodes still on 11 move the head
    /// without a leaf, which must not start the index again: there it is always true.
    ours: bool,
}

impl Store {
    /// How far the index has got and the size of the log (read-only, so an idle server never
    /// writes just to find there is nothing to do).
    async fn positions(&self) -> StoreResult<Positions> {
        let row = sqlx::query(
            "SELECT i.indexed_seq AS indexed, i.leaf, (SELECT size FROM audit_head WHERE id = 1) AS head,
                    CAST(CASE WHEN i.indexed_seq = 0 OR EXISTS (
                        SELECT 1 FROM audit_log l WHERE l.seq = i.indexed_seq AND l.leaf_hash = i.leaf
                    ) THEN 1 ELSE 0 END AS BIGINT) AS ours
             FROM audit_index_head i WHERE i.id = 1",
        )
        .fetch_one(&self.read)
        .await?;
        Ok(Positions {
            indexed: get(&row, "indexed")?,
            leaf: get(&row, "leaf")?,
            head: get(&row, "head")?,
            ours: get::<i64>(&row, "ours")? == 1 || self.backend == Backend::Postgres,
        })
    }
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

#[cfg(test)]
mod tests {
    use haven_domain::audit::{AuditAction, AuditAgent, AuditOutcome, AuditRecord};
    use haven_domain::{OrgId, UserId};

    use super::*;
    use crate::audit::canonical_entry;

    /// What the index is meant to hold for `rec`: its entities of the searched kinds and its
    /// acting user, each once.
    fn expected(rec: &AuditRecord) -> Vec<(String, String)> {
        let agent = rec.agent.user_id.map(|u| ("agent".to_owned(), u.to_string()));
        let searched =
            |e: &&haven_domain::audit::AuditEntity| ["user", "patient", "conversation"].contains(&&*e.kind);
        let mut v: Vec<_> = rec
            .entities
            .iter()
            .filter(searched)
            .map(|e| (e.kind.clone(), e.id.clone()))
            .chain(agent)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    #[test]
    fn the_references_read_from_an_entry_are_its_searched_entities_and_agent_each_once() {
        let user = UserId::from_uuid(uuid::Uuid::from_u128(7));
        let agent = AuditAgent { user_id: Some(user), ..AuditAgent::default() };
        let records = [
            AuditRecord::new(
                Some(OrgId::from_uuid(uuid::Uuid::from_u128(1))),
                "t",
                "s",
                AuditAction::R,
                AuditOutcome::Success,
                agent.clone(),
            )
            .entity("patient", "p1")
            .entity("patient", "p1")
            .entity("message", "m1")
            .entity("user", "u2")
            .entity("conversation", "c\"quoted\" \\ and \u{e9}"),
            AuditRecord::new(
                None,
                "t",
                "s",
                AuditAction::E,
                AuditOutcome::MinorFailure,
                AuditAgent::default(),
            ),
            AuditRecord::new(None, "t", "s", AuditAction::E, AuditOutcome::Success, agent).code("c"),
        ];
        for rec in &records {
            let entry = canonical_entry(42, 1_800_000_000_000, rec).unwrap();
            let mut got: Vec<(String, String)> = refs_in(&entry)
                .unwrap()
                .into_iter()
                .map(|(k, i)| (k.as_str().to_owned(), i.into_owned()))
                .collect();
            got.sort();
            assert_eq!(got, expected(rec), "{entry}");
        }
        assert!(matches!(refs_in("{\"entities\": 3}"), Err(StoreError::Corrupt(_))));
    }
}
