//! Group commit. SQLite has one writer, PostgreSQL orders every audited write on the audit
//! head's row lock, and on both a durable commit costs more than the statements of a send. So
//! sends are not committed one by one: they queue to one writer task, which runs every send
//! waiting at that moment in one transaction, with one audit head read and write, and commits
//! once. Each sender is answered only after that commit, so nothing is acknowledged before it
//! is durable. While sends keep arriving the writer keeps the write connection and runs batch
//! after batch on it: each return to the pool would cost two wake-ups per batch, and on
//! PostgreSQL two pings (sqlx checks a connection as it is returned and, here, as it is taken).
//! Where the pool is shared with other writes (SQLite) it keeps it for at most `HOLD_FOR`, so
//! they still get their turn; its own connection (PostgreSQL) it keeps while sends keep coming.
//!
//! A batch has no savepoints (each would be two more round trips per send). If any send in it
//! fails, or the batch cannot begin or commit, the whole batch is rolled back and every send in
//! it is run again alone, so each gets its own outcome (durable, or an error) and one bad send
//! never fails the others. A client's retry with the same idempotency key is safe either way.
//!
//! On a SQLite file the writer's batches commit without waiting for the log's fsync, and their
//! answers wait for it on a thread of their own instead (`durable.rs`), so the next batch runs
//! during the fsync. On both databases the writer remembers what its last batch left in the
//! database (the audit head, members and sequence numbers), so a batch to conversations it
//! knows is written without reading first (`send.rs`, `Known`).

use haven_domain::audit::AuditRecord;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor};
use tokio::sync::{mpsc, oneshot};

use crate::durable::WalSync;
use crate::messages::{NewMessage, Sent};
use crate::send::{Known, send_batch};
use crate::{StoreError, StoreResult};

/// The most sends committed together; bounds the time a batch holds the writer.
const MAX_BATCH: usize = 128;

/// The longest the writer keeps a shared pool's connection across consecutive batches.
const HOLD_FOR: Duration = Duration::from_millis(10);

struct Job {
    queued: Instant,
    message: NewMessage,
    audit: AuditRecord,
    reply: oneshot::Sender<StoreResult<Sent>>,
}

/// The queue to the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct GroupCommit {
    queue: mpsc::UnboundedSender<Job>,
    /// The writer's own pool, to close with the store's.
    own: Option<AnyPool>,
}

impl GroupCommit {
    /// Starts the writer task, on a thread of its own (or, if no thread can be made, on the
    /// current runtime). It ends when every handle is dropped. It keeps what it knows of the
    /// database from one batch to the next (see `Known`). With `wal`, the SQLite write-ahead
    /// log's path, its commits are made durable by a syncing thread (see `durable.rs`) instead
    /// of inside each commit.
    pub(crate) fn start(source: WriterPool, wal: Option<PathBuf>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let sync = wal.and_then(|path| {
            WalSync::start(path)
                .map_err(|e| tracing::warn!(error = %e, "could not start the log syncing thread; commits sync inline"))
                .ok()
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| tracing::warn!(error = %e, "the writer runs on the shared runtime"))
            .ok();
        let own = matches!(source, WriterPool::Own(..));
        // Opened inside the writer's runtime, so the pool's own tasks and its connection's
        // socket belong to the writer's thread.
        let pool = {
            let _inside = runtime.as_ref().map(tokio::runtime::Runtime::enter);
            source.open()
        };
        let closing = own.then(|| pool.clone());
        let parts = Writer { pool, hold_for: (!own).then_some(HOLD_FOR), rx, sync };
        match runtime {
            Some(rt) => on_own_thread(rt, parts),
            None => {
                tokio::spawn(writer(parts));
            }
        }
        Self { queue, own: closing }
    }

    /// Closes the writer's own connection (if it has one), waiting for its batch to finish.
    pub(crate) async fn close(&self) {
        if let Some(pool) = &self.own {
            pool.close().await;
        }
    }

    /// Stores one message through the next batch; returns after that batch's commit.
    pub(crate) async fn send(&self, m: &NewMessage, audit: &AuditRecord) -> StoreResult<Sent> {
        let (reply, answer) = oneshot::channel();
        let queued = Instant::now();
        let job = Job { queued, message: m.clone(), audit: audit.clone(), reply };
        self.queue.send(job).map_err(|_| stopped())?;
        let answered = answer.await.map_err(|_| stopped())?;
        // Waiting for the batch before, then this send's own batch: with the batch times, this
        // tells whether sends wait on the writer or somewhere else.
        metrics::histogram!("haven_store_send_seconds").record(queued.elapsed().as_secs_f64());
        answered
    }
}

/// Where the writer's connection comes from.
pub(crate) enum WriterPool {
    /// The store's write pool (SQLite: its one connection carries every write of the process).
    Shared(AnyPool),
    /// A pool (of one connection) of the writer's own (PostgreSQL), opened inside the writer's
    /// runtime, so its connection is made on the writer's thread, whose runtime then watches
    /// the socket and wakes it as soon as the database answers. On the shared runtime each of
    /// a batch's round trips waited for a busy worker to look at the socket and then to run
    /// the writer.
    Own(Box<(AnyPoolOptions, AnyConnectOptions)>),
}

impl WriterPool {
    /// The pool; when it is the writer's own, opened lazily (its connection is made by the
    /// writer's first batch).
    fn open(self) -> AnyPool {
        match self {
            Self::Shared(pool) => pool,
            Self::Own(own) => own.0.connect_lazy_with(own.1),
        }
    }
}

fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::PoolClosed)
}

/// What the writer task runs with.
struct Writer {
    pool: AnyPool,
    /// How long it may keep the pool's connection while batches follow one another; no limit
    /// when the pool is its own.
    hold_for: Option<Duration>,
    rx: mpsc::UnboundedReceiver<Job>,
    sync: Option<WalSync<Sent>>,
}

/// Runs the writer on a thread of its own, with `rt` as its runtime. The thread is made before
/// it is handed the runtime: a runtime dropped inside another one (if the thread cannot be
/// made) would panic, so then it is shut down instead and the writer runs on the current one.
fn on_own_thread(rt: tokio::runtime::Runtime, parts: Writer) {
    let (hand_over, taken) = std::sync::mpsc::sync_channel::<(tokio::runtime::Runtime, Writer)>(1);
    let spawned = std::thread::Builder::new().name("haven-writer".into()).spawn(move || {
        if let Ok((rt, parts)) = taken.recv() {
            rt.block_on(writer(parts));
        }
    });
    let back = match spawned {
        Ok(_) => match hand_over.send((rt, parts)) {
            Ok(()) => return,
            Err(std::sync::mpsc::SendError(back)) => back,
        },
        Err(e) => {
            tracing::error!(error = %e, "could not start the writer thread; the writer runs on the shared runtime");
            (rt, parts)
        }
    };
    let (rt, parts) = back;
    rt.shutdown_background();
    tokio::spawn(writer(parts));
}

async fn writer(parts: Writer) {
    let Writer { pool, hold_for, mut rx, sync } = parts;
    let mut known = Known::default();
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        if sync.as_ref().is_some_and(WalSync::failed) {
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(crate::durable::not_durable(crate::durable::EARLIER_FAILURE)));
            }
            continue;
        }
        let mut conn = match pool.acquire().await {
            Ok(conn) => conn,
            Err(e) => {
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Database(again(&e))));
                }
                continue;
            }
        };
        // The connection is kept while batches follow one another (see the module text), but
        // a shared pool's not for longer than `hold_for`.
        let held = Instant::now();
        loop {
            let batch = std::mem::replace(&mut jobs, Vec::with_capacity(MAX_BATCH));
            metrics::histogram!("haven_store_group_commit_batch_size").record(batch.len() as f64);
            let began = Instant::now();
            for job in &batch {
                metrics::histogram!("haven_store_send_queued_seconds")
                    .record((began - job.queued).as_secs_f64());
            }
            let rerun = if batch.len() == 1 {
                batch
            } else {
                run_batch(&mut conn, batch, sync.as_ref(), &mut known).await
            };
            let mut failed = false;
            for job in rerun {
                // Alone, so each gets its own outcome.
                let sent = send_batch(&mut conn, &[(&job.message, &job.audit)], sync.is_some(), &mut known)
                    .await
                    .map(|mut s| s.remove(0));
                failed |= sent.is_err();
                answer(sync.as_ref(), vec![(job.reply, sent)]);
            }
            metrics::histogram!("haven_store_group_commit_seconds").record(began.elapsed().as_secs_f64());
            if failed || hold_for.is_some_and(|limit| held.elapsed() >= limit) {
                break;
            }
            while jobs.len() < MAX_BATCH {
                let Ok(job) = rx.try_recv() else { break };
                jobs.push(job);
            }
            if jobs.is_empty() {
                break;
            }
        }
        if sync.is_some() {
            // The connection goes back to the pool, where every other commit must sync itself.
            if let Err(e) = conn.execute("PRAGMA synchronous = FULL").await {
                tracing::error!(error = %e, "could not restore synchronous commits; closing the write connection");
                conn.close_on_drop();
            }
        }
    }
}

/// Answers each job: a committed send after the log's next fsync when commits are not synced
/// inline, a failure (nothing was written) at once.
fn answer(
    sync: Option<&WalSync<Sent>>,
    outcomes: Vec<(oneshot::Sender<StoreResult<Sent>>, StoreResult<Sent>)>,
) {
    let mut durable = Vec::new();
    for (reply, outcome) in outcomes {
        match (outcome, sync) {
            (Ok(sent), Some(_)) => durable.push((reply, sent)),
            (outcome, _) => {
                let _ = reply.send(outcome);
            }
        }
    }
    if let (Some(sync), false) = (sync, durable.is_empty()) {
        sync.answer_when_durable(durable);
    }
}

/// The same failure again (sqlx errors cannot be cloned), for every job that met it.
fn again(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

/// Runs the batch in one transaction and answers every job once the commit is durable (see
/// [`answer`]). Returns the jobs,
/// unanswered and with nothing written, when the batch has to be rerun one send at a time
/// (one send was refused, or the commit failed).
async fn run_batch(
    conn: &mut PoolConnection<Any>,
    batch: Vec<Job>,
    sync: Option<&WalSync<Sent>>,
    known: &mut Known,
) -> Vec<Job> {
    let jobs: Vec<(&NewMessage, &AuditRecord)> = batch.iter().map(|j| (&j.message, &j.audit)).collect();
    let Ok(results) = send_batch(conn, &jobs, sync.is_some(), known).await else { return batch };
    answer(sync, batch.into_iter().zip(results).map(|(job, sent)| (job.reply, Ok(sent))).collect());
    Vec::new()
}
