//! The audit log as stored: an append-only Merkle log. Appends happen only inside the
//! transaction of the action they record (see [`Store::audited`]). Each append takes the next
//! gap-free sequence number from `audit_head` (whose row lock orders concurrent writers),
//! writes the canonical entry and its RFC 9162 leaf hash, and advances the compact frontier,
//! so the tree head is always known without rereading the log.

use haven_audit::merkle::{Frontier, Hash, leaf_hash};
use haven_domain::OrgId;
use haven_domain::audit::{AuditOutcome, AuditRecord};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::rows::{get, ms, ts};
use crate::script::Script;
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

/// An entry exactly as hashed, for export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAuditEntry {
    /// Position in the log.
    pub seq: i64,
    /// When it was recorded.
    pub recorded_at: Timestamp,
    /// The canonical entry bytes.
    pub entry: String,
    /// Its leaf hash.
    pub leaf: Hash,
}

/// The head of the log: its size and root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditHead {
    /// Number of entries.
    pub size: u64,
    /// The tree head.
    pub root: Hash,
}

/// A stored signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Entries covered.
    pub size: u64,
    /// Root over them.
    pub root: Hash,
    /// The signed note.
    pub note: String,
    /// When it was signed.
    pub created_at: Timestamp,
}

/// The canonical entry: sequence number and time first, then the record's fields, serialised
/// by serde_json without whitespace. These bytes are what the leaf hash covers.
#[derive(Serialize)]
struct CanonicalRef<'a> {
    seq: i64,
    time: i64,
    #[serde(flatten)]
    record: &'a AuditRecord,
}

/// The canonical bytes of `rec` as entry `seq`, recorded at `time` (ms).
pub(crate) fn canonical_entry(seq: i64, time: i64, rec: &AuditRecord) -> StoreResult<String> {
    serde_json::to_string(&CanonicalRef { seq, time, record: rec })
        .map_err(|_| StoreError::Corrupt("audit record"))
}

#[derive(Deserialize)]
struct Canonical {
    #[serde(flatten)]
    record: AuditRecord,
}

fn outcome_name(o: AuditOutcome) -> &'static str {
    match o {
        AuditOutcome::Success => "success",
        AuditOutcome::MinorFailure => "minor_failure",
        AuditOutcome::SeriousFailure => "serious_failure",
    }
}

fn frontier_from(size: i64, bytes: &[u8]) -> StoreResult<Frontier> {
    let nodes: Vec<Hash> = bytes
        .chunks(32)
        .map(|c| Hash::try_from(c).map_err(|_| StoreError::Corrupt("audit frontier")))
        .collect::<StoreResult<_>>()?;
    Frontier::from_parts(u64::try_from(size).unwrap_or(0), nodes).ok_or(StoreError::Corrupt("audit frontier"))
}

fn hash_from(bytes: Vec<u8>) -> StoreResult<Hash> {
    Hash::try_from(bytes).map_err(|_| StoreError::Corrupt("hash"))
}

/// Appends `rec` on `conn`, which must be inside the caller's transaction.
pub(crate) async fn append(conn: &mut AnyConnection, rec: &AuditRecord, now: Timestamp) -> StoreResult<i64> {
    let log = Appender::load(conn).await?;
    append_from(conn, log, [rec], now).await
}

/// Appends `recs`, all at `now`, in the caller's transaction (nothing when there are none):
/// the head is read and written once for all of them.
pub(crate) async fn append_all<'a>(
    conn: &mut AnyConnection,
    recs: impl IntoIterator<Item = &'a AuditRecord>,
    now: Timestamp,
) -> StoreResult<()> {
    let recs: Vec<_> = recs.into_iter().collect();
    if recs.is_empty() {
        return Ok(());
    }
    let log = Appender::load(conn).await?;
    append_from(conn, log, recs, now).await.map(|_| ())
}

/// Locks and reads the audit head as the first thing a transaction that will append to the log
/// does. A batch of sends locks it first too, so no two transactions wait on each other's row
/// locks in opposite orders (a member change that locked its conversation's rows before the head
/// would deadlock with a send that holds the head and wants those rows; PostgreSQL would end one
/// of them after a second). Append with [`append_from`].
pub(crate) async fn lock_head(conn: &mut AnyConnection) -> StoreResult<Appender> {
    Appender::load(conn).await
}

/// Begins a transaction and locks the audit head in it, only if the log still has `log`'s size;
/// false if another writer appended since (whatever was known from `log` may be stale), with
/// the transaction left open for the caller to roll back.
///
/// Both go in one round trip, which shortened a batch of sends on PostgreSQL from 2.8 to
/// 2.3–2.5 ms (BENCHMARKS.md). Only the simple protocol takes two statements at once, and it
/// has no parameters, so the size (an integer of the writer's own, never input) is written
/// into the text.
pub(crate) async fn begin_with_head_unmoved(conn: &mut AnyConnection, log: &Appender) -> StoreResult<bool> {
    let size: i64 = log.size;
    let sql =
        format!("BEGIN; UPDATE audit_head SET size = size WHERE id = 1 AND size = {size} RETURNING size");
    let locked = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).fetch_all(conn).await?;
    Ok(!locked.is_empty())
}

/// Appends `recs`, all at `now`, after the head `log` this transaction locked ([`lock_head`]);
/// returns the log's size after them (the last entry's sequence number).
pub(crate) async fn append_from<'a>(
    conn: &mut AnyConnection,
    mut log: Appender,
    recs: impl IntoIterator<Item = &'a AuditRecord>,
    now: Timestamp,
) -> StoreResult<i64> {
    let recs: Vec<_> = recs.into_iter().map(|r| (r, now)).collect();
    if recs.is_empty() {
        return Ok(log.size);
    }
    let mut script = Script::for_connection(conn);
    log.append_many(&mut script, &recs)?;
    log.finish(&mut script);
    script.run(conn).await?;
    Ok(log.size)
}

/// Locks and reads the audit head (see [`Appender::load`]).
const LOAD_HEAD: &str =
    "UPDATE audit_head SET size = size WHERE id = 1 RETURNING 'head' AS part, size, last_time, frontier";

/// Appends several records in one transaction: the head is read (and, on PostgreSQL, locked)
/// once, each record is written with its leaf hash, and the head is written once at the end, so
/// a batch of sends pays for the head twice, not twice per entry. The writes are queued on a
/// [`Script`], so they can go to the database with the caller's other writes.
#[derive(Clone)]
pub(crate) struct Appender {
    size: i64,
    last_time: i64,
    frontier: Frontier,
}

impl Appender {
    /// Reads the head inside the caller's transaction. The no-op UPDATE takes the head's row
    /// lock first, so concurrent writers queue here and what is read is the latest head.
    pub(crate) async fn load(conn: &mut AnyConnection) -> StoreResult<Self> {
        Self::from_row(&sqlx::query(LOAD_HEAD).fetch_one(&mut *conn).await?)
    }

    /// Queues [`Appender::load`]'s read on a script; its row is tagged `head` (see
    /// [`Appender::from_row`]).
    pub(crate) fn queue_load(script: &mut Script) {
        script.statement(|_| LOAD_HEAD.to_owned());
    }

    /// The appender of a head row read by [`Appender::queue_load`].
    pub(crate) fn from_row(head: &sqlx::any::AnyRow) -> StoreResult<Self> {
        let size: i64 = get(head, "size")?;
        let frontier = frontier_from(size, &get::<Vec<u8>>(head, "frontier")?)?;
        Ok(Self { size, last_time: get(head, "last_time")?, frontier })
    }

    /// Queues the records as the next entries, in order (time never goes backwards in the
    /// log), as one insert. Their search index follows behind (see `audit_index.rs`).
    pub(crate) fn append_many(
        &mut self,
        script: &mut Script,
        recs: &[(&AuditRecord, Timestamp)],
    ) -> StoreResult<()> {
        if recs.is_empty() {
            return Ok(());
        }
        script.statement(|m| {
            format!(
                "INSERT INTO audit_log (seq, org_id, recorded_at, event_type, subtype, outcome, agent_user_id, entry, leaf_hash)
                 VALUES {}",
                m.rows(recs.len(), 9)
            )
        });
        for (rec, now) in recs {
            let seq = self.size + 1;
            let time = ms(*now).max(self.last_time);
            let entry = canonical_entry(seq, time, rec)?;
            let leaf = leaf_hash(entry.as_bytes());
            script
                .bind(seq)
                .bind(rec.org_id.map(|o| o.to_string()))
                .bind(time)
                .bind(rec.event_type.clone())
                .bind(rec.subtype.clone())
                .bind(outcome_name(rec.outcome))
                .bind(rec.agent.user_id.map(|u| u.to_string()))
                .bind(entry)
                .bind(leaf.to_vec());
            self.size = seq;
            self.last_time = time;
            self.frontier.push(leaf);
        }
        Ok(())
    }

    /// The log's size: its last entry's sequence number.
    pub(crate) fn size(&self) -> i64 {
        self.size
    }

    /// Queues the head's write; call once, after the last append, before commit.
    pub(crate) fn finish(&self, script: &mut Script) {
        script
            .statement(|m| {
                format!(
                    "UPDATE audit_head SET size = {}, last_time = {}, frontier = {} WHERE id = 1",
                    m.next(),
                    m.next(),
                    m.next()
                )
            })
            .bind(self.size)
            .bind(self.last_time)
            .bind(self.frontier.nodes().concat());
    }
}

/// What the audit log can be searched by: the kinds of reference its search index keeps.
///
/// Only these are indexed. A message send names its message too, but nothing searches by
/// message, and indexing it made each such entry three rows instead of two, in transactions
/// that hold the writer group commit shares. `User` (an entry about a user, such as a role
/// change) is kept for a search of what was done to a user; the app's search names an agent,
/// a patient or a conversation. A new kind here needs the index rebuilt before searches by it
/// find older entries: delete the rows of `audit_index` and set `audit_index_head` back to 0
/// with no leaf, in one transaction (the index's key refuses a row written twice); on SQLite,
/// deleting the index's file (`haven.db-audit-index`) while Haven is stopped does the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AuditRef {
    /// The acting user (the entry's agent).
    Agent,
    /// A user the entry is about (an entity of kind `user`).
    User,
    /// A patient the entry is about.
    Patient,
    /// A conversation the entry is about.
    Conversation,
}

impl AuditRef {
    /// The kind as stored in the index.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditRef::Agent => "agent",
            AuditRef::User => "user",
            AuditRef::Patient => "patient",
            AuditRef::Conversation => "conversation",
        }
    }

    /// The indexed kind for an entity of this kind, if entities of it are indexed.
    pub(crate) fn of_entity(kind: &str) -> Option<Self> {
        match kind {
            "user" => Some(AuditRef::User),
            "patient" => Some(AuditRef::Patient),
            "conversation" => Some(AuditRef::Conversation),
            _ => None,
        }
    }
}

/// What to search the audit log for; every field narrows the result.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Entries whose agent or entities include this reference, e.g. (`Agent`, user id),
    /// (`Patient`, id), (`Conversation`, id).
    pub refs: Vec<(AuditRef, String)>,
    /// Event subtype, e.g. `login`.
    pub subtype: Option<String>,
    /// `success`, `minor_failure` or `serious_failure`.
    pub outcome: Option<String>,
    /// Recorded at or after.
    pub from: Option<Timestamp>,
    /// Recorded at or before.
    pub to: Option<Timestamp>,
    /// Only entries older than this sequence number (paging backwards).
    pub before_seq: Option<i64>,
}

impl Store {
    /// Records an event that changes nothing else (a refused sign-in, a denied access).
    pub async fn record_audit(&self, rec: &AuditRecord, now: Timestamp) -> StoreResult<i64> {
        let mut tx = self.write.begin().await?;
        let seq = append(&mut tx, rec, now).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// The newest audit records of an organisation, newest first.
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

    /// An organisation's audit records matching `q`, newest first, at most `limit`.
    pub async fn search_audit(
        &self,
        org: OrgId,
        q: &AuditQuery,
        limit: u32,
    ) -> StoreResult<Vec<StoredAudit>> {
        // Only the filters present become SQL; values are always bound, never spliced.
        let mut sql = String::from("SELECT seq, recorded_at, entry FROM audit_log WHERE org_id = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            n
        };
        let mut binds: Vec<Bind> = vec![Bind::Text(org.to_string())];
        if !q.refs.is_empty() {
            // The index follows the log; bring it up to date so no entry is missed.
            self.index_audit().await?;
        }
        for (kind, id) in &q.refs {
            let (a, b, c) = (next(), next(), next());
            sql.push_str(&format!(
                " AND seq IN (SELECT seq FROM audit_index WHERE org_id = ${a} AND kind = ${b} AND ref_id = ${c})"
            ));
            binds.extend([
                Bind::Text(org.to_string()),
                Bind::Text(kind.as_str().to_owned()),
                Bind::Text(id.clone()),
            ]);
        }
        if let Some(s) = &q.subtype {
            sql.push_str(&format!(" AND subtype = ${}", next()));
            binds.push(Bind::Text(s.clone()));
        }
        if let Some(o) = &q.outcome {
            sql.push_str(&format!(" AND outcome = ${}", next()));
            binds.push(Bind::Text(o.clone()));
        }
        if let Some(f) = q.from {
            sql.push_str(&format!(" AND recorded_at >= ${}", next()));
            binds.push(Bind::Int(ms(f)));
        }
        if let Some(t) = q.to {
            sql.push_str(&format!(" AND recorded_at <= ${}", next()));
            binds.push(Bind::Int(ms(t)));
        }
        if let Some(b) = q.before_seq {
            sql.push_str(&format!(" AND seq < ${}", next()));
            binds.push(Bind::Int(b));
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", next()));
        binds.push(Bind::Int(i64::from(limit)));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in binds {
            query = match b {
                Bind::Text(t) => query.bind(t),
                Bind::Int(i) => query.bind(i),
            };
        }
        let rows = query.fetch_all(&self.read).await?;
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

    /// Raw entries with seq in `(after_seq, up_to]`, in order, at most `limit` (for export).
    pub async fn audit_raw(&self, after_seq: i64, up_to: i64, limit: i64) -> StoreResult<Vec<RawAuditEntry>> {
        let rows = sqlx::query(
            "SELECT seq, recorded_at, entry, leaf_hash FROM audit_log WHERE seq > $1 AND seq <= $2
             ORDER BY seq LIMIT $3",
        )
        .bind(after_seq)
        .bind(up_to)
        .bind(limit)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RawAuditEntry {
                    seq: get(r, "seq")?,
                    recorded_at: ts(get(r, "recorded_at")?)?,
                    entry: get(r, "entry")?,
                    leaf: hash_from(get(r, "leaf_hash")?)?,
                })
            })
            .collect()
    }

    /// The organisation an entry belongs to: `None` if there is no such entry, `Some(None)` for
    /// a server-wide entry.
    pub async fn audit_entry_org(&self, seq: i64) -> StoreResult<Option<Option<String>>> {
        let row = sqlx::query("SELECT org_id FROM audit_log WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| get::<Option<String>>(&r, "org_id")).transpose()
    }

    /// The leaf hashes of the first `size` entries, in order (for proofs).
    pub async fn audit_leaves(&self, size: u64) -> StoreResult<Vec<Hash>> {
        let rows = sqlx::query("SELECT leaf_hash FROM audit_log WHERE seq <= $1 ORDER BY seq")
            .bind(i64::try_from(size).unwrap_or(i64::MAX))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| hash_from(get(r, "leaf_hash")?)).collect()
    }

    /// The log's current size and root.
    pub async fn audit_head(&self) -> StoreResult<AuditHead> {
        let row =
            sqlx::query("SELECT size, frontier FROM audit_head WHERE id = 1").fetch_one(&self.read).await?;
        let f = frontier_from(get(&row, "size")?, &get::<Vec<u8>>(&row, "frontier")?)?;
        Ok(AuditHead { size: f.size(), root: f.root() })
    }

    /// The last sequence number forwarder `name` has delivered (0 when it never ran).
    pub async fn forward_cursor(&self, name: &str) -> StoreResult<i64> {
        let row = sqlx::query("SELECT last_seq FROM audit_forward_cursor WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| get::<i64>(&r, "last_seq")).transpose().map(|v| v.unwrap_or(0))
    }

    /// Records that forwarder `name` has delivered everything up to `seq`.
    pub async fn set_forward_cursor(&self, name: &str, seq: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_forward_cursor (name, last_seq) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET last_seq = excluded.last_seq",
        )
        .bind(name)
        .bind(seq)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Keeps a signed checkpoint (a second one for the same size is ignored).
    pub async fn save_checkpoint(&self, cp: &StoredCheckpoint) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, root_hash, note, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(i64::try_from(cp.size).unwrap_or(i64::MAX))
        .bind(cp.root.to_vec())
        .bind(&cp.note)
        .bind(ms(cp.created_at))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Checkpoints covering at most `size` entries, oldest first.
    pub async fn checkpoints(&self, up_to_size: u64) -> StoreResult<Vec<StoredCheckpoint>> {
        let rows = sqlx::query(
            "SELECT size, root_hash, note, created_at FROM audit_checkpoints WHERE size <= $1 ORDER BY size",
        )
        .bind(i64::try_from(up_to_size).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredCheckpoint {
                    size: u64::try_from(get::<i64>(r, "size")?).unwrap_or(0),
                    root: hash_from(get(r, "root_hash")?)?,
                    note: get(r, "note")?,
                    created_at: ts(get(r, "created_at")?)?,
                })
            })
            .collect()
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

fn stored(row: &sqlx::any::AnyRow) -> StoreResult<StoredAudit> {
    let record = record_of(&get::<String>(row, "entry")?)?;
    Ok(StoredAudit { seq: get(row, "seq")?, recorded_at: ts(get(row, "recorded_at")?)?, record })
}

/// The record a canonical entry holds.
pub(crate) fn record_of(entry: &str) -> StoreResult<AuditRecord> {
    let c: Canonical = serde_json::from_str(entry).map_err(|_| StoreError::Corrupt("audit entry"))?;
    Ok(c.record)
}
