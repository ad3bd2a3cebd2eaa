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
//! as a batch of one. The writer remembers what it wrote, and a batch to conversations it knows
//! is the last script alone: one round trip on SQLite; on PostgreSQL the begin with a
//! conditional lock of the audit head (one round trip), then that script (see [`Known`]).

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

/// What the group-commit writer knows the database holds after its own last commit: the audit
/// head and, per conversation it has sent to, its organisation, current members and last
/// sequence number. Between its batches nothing changes any of that without appending to the
/// audit log, since every change to members or sequence numbers is audited, or takes a sequence
/// number of its conversation (most do both; an inbound text only takes a number). A batch
/// whose conversations are all known is written without reading anything first. If something
/// did change (in this process or another node), the batch finds out: on SQLite its first
/// audit entry collides with the entry written since, or its events with the events; on
/// PostgreSQL, where other connections write at the same time, the batch first locks the audit
/// head on the condition that it has not moved (taking the lock first, as every audited
/// transaction does, so the two never deadlock), and its events collide as on SQLite. Either
/// way the batch rolls back, what is known is forgotten, and the batch runs again with the
/// reads. A fast-path batch always has a fresh send (nothing is read, so no send is a repeat
/// of a stored one), so it always writes both.
#[derive(Default)]
pub(crate) struct Known {
    log: Option<Appender>,
    convs: HashMap<ConversationId, KnownConv>,
}

/// The most conversations the writer remembers at once.
const KNOWN_CONVERSATIONS: usize = 10_000;

struct KnownConv {
    org: OrgId,
    members: Vec<UserId>,
    last_seq: i64,
}

impl Known {
    /// What a batch needs to start from, if all of it is known. Attachments are claimed with
    /// reads of their own, so a batch with any takes the path with reads.
    fn start(&self, batch: &[(&NewMessage, &AuditRecord)]) -> Option<Start> {
        let log = self.log.clone()?;
        let mut members = HashMap::new();
        let mut last_seq = HashMap::new();
        for (m, _) in batch {
            let conv = self.convs.get(&m.conversation_id)?;
            if !m.attachments.is_empty() {
                return None;
            }
            members.entry(m.conversation_id).or_insert_with(|| (conv.org, conv.members.clone()));
            last_seq.insert(m.conversation_id, conv.last_seq);
        }
        Some(Start { log, members, earlier: HashMap::new(), last_seq: Some(last_seq) })
    }

    /// Takes in a committed batch: the head it started from, the head after it, and the last
    /// sequence number of each conversation it numbered.
    fn learn(&mut self, start: &Start, log: Appender, after: &HashMap<ConversationId, i64>) {
        if self.log.as_ref().map(Appender::size) != Some(start.log.size())
            || self.convs.len() >= KNOWN_CONVERSATIONS
        {
            // Someone else appended since: what is known of other conversations may be stale.
            // (Or it has grown large: the conversations still busy are learnt again.)
            self.convs.clear();
        }
        self.log = Some(log);
        for (conv, last_seq) in after {
            if let Some((org, members)) = start.members.get(conv) {
                self.convs
                    .insert(*conv, KnownConv { org: *org, members: members.clone(), last_seq: *last_seq });
            }
        }
    }

    fn forget(&mut self) {
        *self = Self::default();
    }
}

/// What a batch's writes start from: the audit head, the members of its conversations, the
/// stored messages whose idempotency keys it repeats, and (when known without reading) each
/// conversation's last sequence number.
struct Start {
    log: Appender,
    members: HashMap<ConversationId, (OrgId, Vec<UserId>)>,
    earlier: HashMap<(ConversationId, UserId, String), MessageId>,
    last_seq: Option<HashMap<ConversationId, i64>>,
}

/// Stores every send of `batch`, in order, in one transaction of its own on `c` (which must not
/// be in one), appending their audit records (the audit head is read and locked once, and
/// written once), and commits. Fails as a whole, with nothing written, if any send is refused:
/// not a current member (NotFound), attachments not the sender's own unsent uploads to that
/// conversation (Conflict "attachments"), or if the commit fails. With `unsynced` (SQLite
/// only) the commit does not wait for the log's fsync, and leaves the connection so: the
/// caller makes it durable before answering anyone, and restores synchronous commits before
/// the connection goes back to the pool (see `durable.rs`). A batch that `known` (the sole
/// writer's knowledge, see [`Known`]) covers skips the reads, and every batch adds to it.
pub(crate) async fn send_batch(
    c: &mut PoolConnection<Any>,
    batch: &[(&NewMessage, &AuditRecord)],
    unsynced: bool,
    known: &mut Known,
) -> StoreResult<Vec<Sent>> {
    if let Some(start) = known.start(batch) {
        match write(c, batch, unsynced, start, known).await {
            Ok(sent) => {
                metrics::counter!("haven_store_group_commit_unread_batches_total").increment(1);
                return Ok(sent);
            }
            Err(e) => {
                // Stale knowledge, or a send repeating a stored idempotency key: read and
                // run it again (a real failure fails again below).
                tracing::debug!(error = %e, "a batch written from what the writer knew failed; running it with reads");
                metrics::counter!("haven_store_group_commit_guesses_failed_total").increment(1);
                abandon(c).await;
                known.forget();
            }
        }
    }
    let stored = match read(c, batch, unsynced).await {
        Ok(start) => write(c, batch, unsynced, start, known).await,
        Err(e) => Err(e),
    };
    if stored.is_err() {
        abandon(c).await;
        known.forget();
    }
    stored
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

/// Begins the transaction and reads what the writes start from, in one round trip.
async fn read(
    c: &mut AnyConnection,
    batch: &[(&NewMessage, &AuditRecord)],
    unsynced: bool,
) -> StoreResult<Start> {
    let mut read = Script::for_connection(c);
    begin(&mut read, unsynced);
    Appender::queue_load(&mut read);
    queue_current_members(&mut read, batch);
    queue_earlier_keys(&mut read, batch);
    let rows = read.fetch_all(c).await?;
    let mut log = None;
    let mut members = HashMap::new();
    let mut earlier = HashMap::new();
    for row in &rows {
        match get::<String>(row, "part")?.as_str() {
            "head" => log = Some(Appender::from_row(row)?),
            "member" => member_row(&mut members, row)?,
            _ => key_row(&mut earlier, row)?,
        }
    }
    let log = log.ok_or(StoreError::Corrupt("audit head"))?;
    Ok(Start { log, members, earlier, last_seq: None })
}

/// Begins a transaction and locks the audit head, if it still has the size `log` ends at;
/// fails with a conflict if another writer appended since (what is known may be stale).
async fn lock_known_head(c: &mut AnyConnection, log: &Appender) -> StoreResult<()> {
    if crate::audit::begin_with_head_unmoved(c, log).await? {
        Ok(())
    } else {
        Err(StoreError::Conflict("audit_head"))
    }
}

/// Queues the transaction's start (and, when `unsynced`, the commit's relaxed sync).
fn begin(script: &mut Script, unsynced: bool) {
    if unsynced {
        script.statement(|_| "PRAGMA synchronous = NORMAL".to_owned());
    }
    script.statement(|_| "BEGIN".to_owned());
}

/// Writes the batch from `start` and commits: inside the transaction [`read`] began, or, when
/// `start` was known without reading, in a transaction begun by the write itself.
async fn write(
    c: &mut AnyConnection,
    batch: &[(&NewMessage, &AuditRecord)],
    unsynced: bool,
    start: Start,
    known: &mut Known,
) -> StoreResult<Vec<Sent>> {
    for (m, _) in batch {
        let ok = start
            .members
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
        repeat_of.push(match start.earlier.get(&(key.0, key.1, key.2.to_owned())) {
            Some(stored) => Some(Repeat::Stored(*stored)),
            None => first_in_batch.get(&key).map(|j| Repeat::InBatch(*j)).or_else(|| {
                first_in_batch.insert(key, i);
                None
            }),
        });
    }
    let fresh: Vec<usize> = (0..batch.len()).filter(|i| repeat_of[*i].is_none()).collect();
    let counts = count_per_conv(batch, &fresh);
    let mut script = Script::for_connection(c);
    let after = match &start.last_seq {
        Some(known) => {
            // Nothing was read, so nothing was begun: the writes begin and number too. Where
            // other connections write (PostgreSQL), the audit head is locked first, as every
            // audited transaction locks it, and only if it is still where this writer left it.
            if script.joined() {
                begin(&mut script, unsynced);
            } else {
                lock_known_head(c, &start.log).await?;
            }
            queue_take_seqs(&mut script, &counts, false);
            counts.iter().map(|(conv, _, n, _)| (*conv, known[conv] + n)).collect()
        }
        None => {
            for i in &fresh {
                claim_attachments(c, batch[*i].0).await?;
            }
            take_seqs(c, &counts).await?
        }
    };
    let seqs = number(batch, &fresh, &counts, &after);
    insert_rows(&mut script, batch, &fresh, &seqs);
    let recs: Vec<_> = fresh.iter().map(|i| (batch[*i].1, batch[*i].0.now)).collect();
    let mut log = start.log.clone();
    log.append_many(&mut script, &recs)?;
    log.finish(&mut script);
    script.statement(|_| "COMMIT".to_owned());
    // Every answer is made before the commit, so nothing after it can fail: a batch that
    // failed after committing would be run again, and its sends answered as repeats, which
    // are not delivered.
    let answers = answers(c, batch, &repeat_of, &fresh, &seqs, &start).await?;
    // The only unique key a fresh send can collide on once read: event and audit sequence
    // numbers were taken under row locks. (Unread, stale knowledge collides too; see Known.)
    let writing = std::time::Instant::now();
    script.run_or_conflict(c, "idempotency_key").await?;
    metrics::histogram!("haven_store_group_commit_write_seconds").record(writing.elapsed().as_secs_f64());
    known.learn(&start, log, &after);
    Ok(answers)
}

/// The answer to each send of the batch, in order: its event and recipients when fresh; the
/// first message's event, with no one to deliver it to, when it repeats one.
async fn answers(
    c: &mut AnyConnection,
    batch: &[(&NewMessage, &AuditRecord)],
    repeat_of: &[Option<Repeat>],
    fresh: &[usize],
    seqs: &[i64],
    start: &Start,
) -> StoreResult<Vec<Sent>> {
    let mut out: Vec<Option<Sent>> = vec![None; batch.len()];
    for (i, seq) in fresh.iter().zip(seqs) {
        let m = batch[*i].0;
        let recipients = start.members[&m.conversation_id].1.clone();
        out[*i] = Some(Sent { event: stored_event(m, *seq)?, recipients, created: true });
    }
    for i in 0..batch.len() {
        let event = match repeat_of[i] {
            None => continue,
            Some(Repeat::InBatch(j)) => {
                out[j].as_ref().map(|s| s.event.clone()).ok_or(StoreError::NotFound)?
            }
            Some(Repeat::Stored(msg)) => {
                // Committed by an earlier transaction; read as it now stands.
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
        format!(
            "SELECT 'member' AS part, conversation_id, org_id, string_agg(user_id, ',' ORDER BY user_id) AS users
             FROM conversation_members WHERE conversation_id IN ({}) AND left_seq IS NULL
             GROUP BY conversation_id, org_id",
            m.repeat(convs.len(), "?", ", ")
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
        format!(
            "SELECT 'key' AS part, id, conversation_id, sender_id, idempotency_key FROM messages WHERE {}",
            m.repeat(batch.len(), "(conversation_id = ? AND sender_id = ? AND idempotency_key = ?)", " OR ")
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

/// Per conversation of the fresh sends, in order of first appearance: its organisation, how
/// many numbers they take, and the newest send time.
type Counts = Vec<(ConversationId, OrgId, i64, i64)>;

fn count_per_conv(batch: &[(&NewMessage, &AuditRecord)], fresh: &[usize]) -> Counts {
    let mut per_conv: Counts = Vec::new();
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
    per_conv
}

/// Queues one update for every conversation of the batch that takes as many numbers as it
/// has fresh sends (and its row lock until commit); with `returning`, its rows give each
/// conversation's last number after it.
fn queue_take_seqs(script: &mut Script, counts: &Counts, returning: bool) {
    if counts.is_empty() {
        return;
    }
    // VALUES columns are named column1, column2, ... on both backends; the casts give
    // PostgreSQL the parameters' types.
    script.statement(|m| {
        format!(
            "UPDATE conversations AS c SET last_seq = c.last_seq + v.column3, last_activity_at = v.column4
             FROM (VALUES {}) AS v WHERE c.id = v.column1 AND c.org_id = v.column2{}",
            m.repeat(counts.len(), "(?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT))", ", "),
            if returning { " RETURNING id, last_seq" } else { "" }
        )
    });
    for (conv, org, count, at) in counts {
        script.bind(conv.to_string()).bind(org.to_string()).bind(*count).bind(*at);
    }
}

/// Takes the numbers in a round trip of its own; returns each conversation's last number.
async fn take_seqs(c: &mut AnyConnection, counts: &Counts) -> StoreResult<HashMap<ConversationId, i64>> {
    let mut script = Script::for_connection(c);
    queue_take_seqs(&mut script, counts, true);
    let mut after = HashMap::new();
    for row in script.fetch_all(c).await? {
        after.insert(id(&get::<String>(&row, "id")?)?, get::<i64>(&row, "last_seq")?);
    }
    if after.len() != counts.len() {
        return Err(StoreError::NotFound);
    }
    Ok(after)
}

/// The sequence numbers of the fresh sends, in batch order, given each conversation's last
/// number after the batch.
fn number(
    batch: &[(&NewMessage, &AuditRecord)],
    fresh: &[usize],
    counts: &Counts,
    after: &HashMap<ConversationId, i64>,
) -> Vec<i64> {
    let mut next: HashMap<ConversationId, i64> =
        counts.iter().map(|(conv, _, n, _)| (*conv, after[conv] - n + 1)).collect();
    fresh
        .iter()
        .map(|i| {
            let n = next.get_mut(&batch[*i].0.conversation_id).expect("counted");
            *n += 1;
            *n - 1
        })
        .collect()
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
