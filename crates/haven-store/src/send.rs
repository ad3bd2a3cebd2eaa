//! Storing sent messages, one or many per transaction. A batch (from group commit, see
//! `group.rs`) costs three round trips whatever its size: one [`Script`] that begins the
//! transaction, locks and reads the audit head, and reads the members of every conversation in
//! the batch and earlier uses of its idempotency keys; one sequence update for all its
//! conversations; and one script of multi-row inserts for events, messages, versions and audit
//! entries, the senders' own receipts, the audit head's write, and the commit. On SQLite every
//! round trip is a hand-off to the connection's thread and back, and under load each one waits
//! for a core, so those hand-offs, not the SQL, are what a batch costs; sqlx's own begin and
//! commit are two more each (they wait for the caller to take their answer), which is why the
//! transaction is begun and committed by the scripts instead. A single send takes the same path
//! as a batch of one.

use std::collections::HashMap;

use haven_domain::audit::AuditRecord;
use haven_domain::messaging::EventKind;
use haven_domain::{ConversationId, MessageId, OrgId, UserId};
use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Executor};

use crate::audit::Appender;
use crate::conversations::StoredEvent;
use crate::messages::{NewMessage, Sent, StoredMessage, message_event, message_in};
use crate::rows::{get, id, ms, ts};
use crate::script::Script;
use crate::{StoreError, StoreResult, touched};

/// Stores every send of `batch`, in order, in one transaction of its own on `c` (which must not
/// be in one), appending their audit records (the audit head is read and locked once, and
/// written once), and commits. Fails as a whole, with nothing written, if any send is refused:
/// not a current member (NotFound), attachments not the sender's own unsent uploads to that
/// conversation (Conflict "attachments"), or if the commit fails. With `unsynced` (SQLite
/// only) the commit does not wait for the log's fsync, and leaves the connection so: the
/// caller makes it durable before answering anyone, and restores synchronous commits before
/// the connection goes back to the pool (see `durable.rs`).
pub(crate) async fn send_batch(
    c: &mut PoolConnection<Any>,
    batch: &[(&NewMessage, &AuditRecord)],
    unsynced: bool,
) -> StoreResult<Vec<Sent>> {
    match store_and_commit(c, batch, unsynced).await {
        Ok(sent) => Ok(sent),
        Err(e) => {
            abandon(c).await;
            Err(e)
        }
    }
}

/// Rolls back whatever of the transaction is open after a failure. A connection that cannot
/// even do that is closed instead of going back to the pool in an unknown state.
async fn abandon(c: &mut PoolConnection<Any>) {
    if let Err(e) = c.execute("ROLLBACK").await {
        // "No transaction is active" (SQLite) means the failure was BEGIN's, or the commit's
        // and the database rolled back by itself: the connection is fine.
        if !e.to_string().contains("no transaction") {
            tracing::error!(error = %e, "could not roll back a failed send batch; closing its connection");
            c.close_on_drop();
        }
    }
}

async fn store_and_commit(
    c: &mut AnyConnection,
    batch: &[(&NewMessage, &AuditRecord)],
    unsynced: bool,
) -> StoreResult<Vec<Sent>> {
    let mut read = Script::for_connection(c);
    if unsynced {
        read.statement(|_| "PRAGMA synchronous = NORMAL".to_owned());
    }
    read.statement(|_| "BEGIN".to_owned());
    Appender::queue_load(&mut read);
    queue_current_members(&mut read, batch);
    queue_earlier_keys(&mut read, batch);
    let rows = read.fetch_all(c).await?;
    let mut log = None;
    let mut members: HashMap<ConversationId, (OrgId, Vec<UserId>)> = HashMap::new();
    let mut earlier: HashMap<(ConversationId, UserId, String), MessageId> = HashMap::new();
    for row in &rows {
        match get::<String>(row, "part")?.as_str() {
            "head" => log = Some(Appender::from_row(row)?),
            "member" => member_row(&mut members, row)?,
            _ => key_row(&mut earlier, row)?,
        }
    }
    let mut log = log.ok_or(StoreError::Corrupt("audit head"))?;
    for (m, _) in batch {
        let ok = members
            .get(&m.conversation_id)
            .is_some_and(|(org, us)| *org == m.org_id && us.contains(&m.sender_id));
        if !ok {
            return Err(StoreError::NotFound);
        }
    }
    // Which sends repeat an idempotency key: of a stored message, or of an earlier send in
    // this batch. A repeat stores nothing and answers with the first message.
    let mut first_in_batch: HashMap<(ConversationId, UserId, &str), usize> = HashMap::new();
    let mut repeat_of: Vec<Option<Repeat>> = Vec::with_capacity(batch.len());
    for (i, (m, _)) in batch.iter().enumerate() {
        let key = (m.conversation_id, m.sender_id, m.idempotency_key.as_str());
        repeat_of.push(match earlier.get(&(key.0, key.1, key.2.to_owned())) {
            Some(stored) => Some(Repeat::Stored(*stored)),
            None => first_in_batch.get(&key).map(|j| Repeat::InBatch(*j)).or_else(|| {
                first_in_batch.insert(key, i);
                None
            }),
        });
    }
    let fresh: Vec<usize> = (0..batch.len()).filter(|i| repeat_of[*i].is_none()).collect();
    for i in &fresh {
        claim_attachments(c, batch[*i].0).await?;
    }
    let seqs = take_seqs(c, batch, &fresh).await?;
    let mut script = Script::for_connection(c);
    insert_rows(&mut script, batch, &fresh, &seqs);
    let recs: Vec<_> = fresh.iter().map(|i| (batch[*i].1, batch[*i].0.now)).collect();
    log.append_many(&mut script, &recs)?;
    log.finish(&mut script);
    script.statement(|_| "COMMIT".to_owned());
    // The only unique key a fresh send can collide on: event and audit sequence numbers were
    // taken under row locks above.
    let writing = std::time::Instant::now();
    script.run_or_conflict(c, "idempotency_key").await?;
    metrics::histogram!("haven_store_group_commit_write_seconds").record(writing.elapsed().as_secs_f64());

    let mut out: Vec<Option<Sent>> = vec![None; batch.len()];
    for (i, seq) in fresh.iter().zip(&seqs) {
        let m = batch[*i].0;
        let recipients = members[&m.conversation_id].1.clone();
        out[*i] = Some(Sent { event: stored_event(m, *seq)?, recipients, created: true });
    }
    for i in 0..batch.len() {
        let event = match repeat_of[i] {
            None => continue,
            Some(Repeat::InBatch(j)) => {
                out[j].as_ref().map(|s| s.event.clone()).ok_or(StoreError::NotFound)?
            }
            Some(Repeat::Stored(msg)) => {
                // Committed already; the first message is read as it now stands.
                let m = batch[i].0;
                let first = message_in(c, m.org_id, m.conversation_id, msg).await?;
                let (seq, at) = (first.seq, first.created_at);
                message_event(EventKind::Message, seq, Some(m.sender_id), first, at)
            }
        };
        out[i] = Some(Sent { event, recipients: Vec::new(), created: false });
    }
    Ok(out.into_iter().map(|s| s.expect("every send answered")).collect())
}

#[derive(Clone, Copy)]
enum Repeat {
    Stored(MessageId),
    InBatch(usize),
}

/// Queues the read of the organisation and current members (in id order) of every
/// conversation of the batch, one row per conversation (rows are handed over one at a time, and
/// a hundred of them cost more than the rest of the read); its rows are tagged `member`.
fn queue_current_members(script: &mut Script, batch: &[(&NewMessage, &AuditRecord)]) {
    let mut convs: Vec<String> = batch.iter().map(|(m, _)| m.conversation_id.to_string()).collect();
    convs.sort();
    convs.dedup();
    script.statement(|m| {
        let marks: Vec<String> = convs.iter().map(|_| m.next()).collect();
        format!(
            "SELECT 'member' AS part, conversation_id, org_id, string_agg(user_id, ',' ORDER BY user_id) AS users
             FROM conversation_members WHERE conversation_id IN ({}) AND left_seq IS NULL
             GROUP BY conversation_id, org_id",
            marks.join(", ")
        )
    });
    for conv in convs {
        script.bind(conv);
    }
}

fn member_row(out: &mut HashMap<ConversationId, (OrgId, Vec<UserId>)>, row: &AnyRow) -> StoreResult<()> {
    let conv = id(&get::<String>(row, "conversation_id")?)?;
    let org = id(&get::<String>(row, "org_id")?)?;
    let users = get::<String>(row, "users")?.split(',').map(id).collect::<StoreResult<Vec<UserId>>>()?;
    out.insert(conv, (org, users));
    Ok(())
}

/// Queues the read of stored messages whose (conversation, sender, idempotency key) a send of
/// the batch repeats; its rows are tagged `key`.
fn queue_earlier_keys(script: &mut Script, batch: &[(&NewMessage, &AuditRecord)]) {
    // An OR of exact keys: both databases answer each term from the unique index.
    script.statement(|m| {
        let terms: Vec<String> = batch
            .iter()
            .map(|_| {
                format!(
                    "(conversation_id = {} AND sender_id = {} AND idempotency_key = {})",
                    m.next(),
                    m.next(),
                    m.next()
                )
            })
            .collect();
        format!(
            "SELECT 'key' AS part, id, conversation_id, sender_id, idempotency_key FROM messages WHERE {}",
            terms.join(" OR ")
        )
    });
    for (m, _) in batch {
        script
            .bind(m.conversation_id.to_string())
            .bind(m.sender_id.to_string())
            .bind(m.idempotency_key.clone());
    }
}

fn key_row(out: &mut HashMap<(ConversationId, UserId, String), MessageId>, row: &AnyRow) -> StoreResult<()> {
    out.insert(
        (
            id(&get::<String>(row, "conversation_id")?)?,
            id(&get::<String>(row, "sender_id")?)?,
            get::<String>(row, "idempotency_key")?,
        ),
        id(&get::<String>(row, "id")?)?,
    );
    Ok(())
}

async fn claim_attachments(c: &mut AnyConnection, m: &NewMessage) -> StoreResult<()> {
    for a in &m.attachments {
        let done = sqlx::query(
            "UPDATE attachments SET message_id = $1 WHERE id = $2 AND conversation_id = $3
             AND org_id = $4 AND uploader_id = $5 AND message_id IS NULL AND data_key IS NOT NULL",
        )
        .bind(m.id.to_string())
        .bind(a.to_string())
        .bind(m.conversation_id.to_string())
        .bind(m.org_id.to_string())
        .bind(m.sender_id.to_string())
        .execute(&mut *c)
        .await?;
        touched(done).map_err(|_| StoreError::Conflict("attachments"))?;
    }
    Ok(())
}

/// The sequence numbers of the fresh sends, in batch order: one update per conversation takes
/// as many numbers as it has sends (and its row lock until commit).
async fn take_seqs(
    c: &mut AnyConnection,
    batch: &[(&NewMessage, &AuditRecord)],
    fresh: &[usize],
) -> StoreResult<Vec<i64>> {
    let mut per_conv: Vec<(ConversationId, OrgId, i64, i64)> = Vec::new();
    for i in fresh {
        let m = batch[*i].0;
        match per_conv.iter_mut().find(|(conv, ..)| *conv == m.conversation_id) {
            Some(entry) => {
                entry.2 += 1;
                entry.3 = entry.3.max(ms(m.now));
            }
            None => per_conv.push((m.conversation_id, m.org_id, 1, ms(m.now))),
        }
    }
    if per_conv.is_empty() {
        return Ok(Vec::new());
    }
    // One statement for every conversation of the batch (VALUES columns are named column1,
    // column2, ... on both backends; the casts give PostgreSQL the parameters' types).
    let rows: Vec<String> = (0..per_conv.len())
        .map(|r| {
            let p = 4 * r;
            format!("(${}, ${}, CAST(${} AS BIGINT), CAST(${} AS BIGINT))", p + 1, p + 2, p + 3, p + 4)
        })
        .collect();
    let sql = format!(
        "UPDATE conversations AS c SET last_seq = c.last_seq + v.column3, last_activity_at = v.column4
         FROM (VALUES {}) AS v WHERE c.id = v.column1 AND c.org_id = v.column2 RETURNING id, last_seq",
        rows.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (conv, org, count, at) in &per_conv {
        q = q.bind(conv.to_string()).bind(org.to_string()).bind(*count).bind(*at);
    }
    let mut next: HashMap<ConversationId, i64> = HashMap::new();
    for row in q.fetch_all(&mut *c).await? {
        let id: String = get(&row, "id")?;
        let conv: ConversationId = id.parse().map_err(|_| StoreError::Corrupt("conversation id"))?;
        let count = per_conv.iter().find(|(c, ..)| *c == conv).map(|e| e.2).ok_or(StoreError::NotFound)?;
        next.insert(conv, get::<i64>(&row, "last_seq")? - count + 1);
    }
    if next.len() != per_conv.len() {
        return Err(StoreError::NotFound);
    }
    Ok(fresh
        .iter()
        .map(|i| {
            let n = next.get_mut(&batch[*i].0.conversation_id).expect("counted above");
            *n += 1;
            *n - 1
        })
        .collect())
}

/// Queues the event, message and version rows of the fresh sends, and the senders' own
/// receipts.
fn insert_rows(script: &mut Script, batch: &[(&NewMessage, &AuditRecord)], fresh: &[usize], seqs: &[i64]) {
    if fresh.is_empty() {
        return;
    }
    let rows: Vec<(&NewMessage, i64)> = fresh.iter().map(|i| batch[*i].0).zip(seqs.iter().copied()).collect();
    script.statement(|p| {
        format!(
            "INSERT INTO conversation_events (conversation_id, seq, org_id, kind, actor_id, message_id,
             subject_id, priority, created_at) VALUES {}",
            p.rows(rows.len(), 9)
        )
    });
    for (m, seq) in &rows {
        script
            .bind(m.conversation_id.to_string())
            .bind(*seq)
            .bind(m.org_id.to_string())
            .bind(EventKind::Message.as_str())
            .bind(m.sender_id.to_string())
            .bind(m.id.to_string())
            .bind(None::<String>)
            .bind(m.priority.as_str())
            .bind(ms(m.now));
    }

    script.statement(|p| {
        format!(
            "INSERT INTO messages (id, conversation_id, org_id, seq, sender_id, idempotency_key, priority,
             content_type, version, data_key, attachments, expires_at, created_at) VALUES {}",
            p.rows(rows.len(), 13)
        )
    });
    for (m, seq) in &rows {
        let attachments: Vec<String> = m.attachments.iter().map(|a| a.to_string()).collect();
        script
            .bind(m.id.to_string())
            .bind(m.conversation_id.to_string())
            .bind(m.org_id.to_string())
            .bind(*seq)
            .bind(m.sender_id.to_string())
            .bind(m.idempotency_key.clone())
            .bind(m.priority.as_str())
            .bind(m.content_type.as_str())
            .bind(1_i64)
            .bind(m.data_key.clone())
            .bind(serde_json::to_string(&attachments).expect("strings serialise"))
            .bind(m.expires_at.map(ms))
            .bind(ms(m.now));
    }

    script.statement(|p| {
        format!(
            "INSERT INTO message_versions (message_id, version, body_sealed, created_at) VALUES {}",
            p.rows(rows.len(), 4)
        )
    });
    for (m, _) in &rows {
        script.bind(m.id.to_string()).bind(1_i64).bind(m.body_sealed.clone()).bind(ms(m.now));
    }

    // The sender has delivered and read up to their own message: the newest per sender.
    let mut own: Vec<(ConversationId, UserId, i64)> = Vec::new();
    for (m, seq) in &rows {
        match own.iter_mut().find(|(conv, u, _)| *conv == m.conversation_id && *u == m.sender_id) {
            Some(entry) => entry.2 = entry.2.max(*seq),
            None => own.push((m.conversation_id, m.sender_id, *seq)),
        }
    }
    // VALUES columns are named column1.. on both databases.
    script.statement(|p| {
        format!(
            "UPDATE conversation_members SET delivered_seq = v.column3, read_seq = v.column3
             FROM (VALUES {}) AS v
             WHERE conversation_members.conversation_id = v.column1 AND conversation_members.user_id = v.column2",
            p.rows(own.len(), 3)
        )
    });
    for (conv, user, seq) in own {
        script.bind(conv.to_string()).bind(user.to_string()).bind(seq);
    }
}

/// The event of a fresh send, as it reads back (times at the stored millisecond precision).
fn stored_event(m: &NewMessage, seq: i64) -> StoreResult<StoredEvent> {
    let at = ts(ms(m.now))?;
    let stored = StoredMessage {
        id: m.id,
        conversation_id: m.conversation_id,
        seq,
        sender_id: m.sender_id,
        priority: m.priority,
        content_type: m.content_type,
        version: 1,
        data_key: Some(m.data_key.clone()),
        body_sealed: Some(m.body_sealed.clone()),
        attachments: m.attachments.clone(),
        expires_at: m.expires_at.map(|t| ts(ms(t))).transpose()?,
        created_at: at,
        edited_at: None,
        recalled_at: None,
        expired_at: None,
    };
    Ok(message_event(EventKind::Message, seq, Some(m.sender_id), stored, at))
}
