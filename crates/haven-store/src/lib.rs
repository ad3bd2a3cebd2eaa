//! Haven's storage: one narrow interface, [`Store`], whose methods are domain operations. Each
//! write runs in one transaction and appends its audit record in that same transaction, so an
//! action and its audit entry are committed together or not at all.
//!
//! One code path serves both backends: SQL is written once in the dialect SQLite and PostgreSQL
//! share and runs through sqlx's `Any` driver. Only the migrations (one folder per backend) and
//! connection setup differ. The backend is chosen once, from the database URL.

mod audit;
mod audit_index;
pub mod blob;
mod conversations;
mod durable;
mod group;
mod identity;
mod links;
mod messages;
mod migrate;
mod outbox;
mod patient_thread;
mod patients;
mod rows;
mod script;
mod send;
mod sessions;
mod texting;
mod throttle;
mod wal;

use std::path::Path;
use std::time::Duration;

use haven_domain::audit::AuditRecord;
use jiff::Timestamp;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyQueryResult};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

pub use audit::{AuditHead, AuditQuery, AuditRef, RawAuditEntry, StoredAudit, StoredCheckpoint};
pub use audit_index::attach as attach_audit_index;
pub use conversations::{
    ConversationListRow, EventRange, MemberReceipt, Membership, NewConversation, StoredConversation,
    StoredEvent,
};
pub use identity::{LoginCandidate, NewUser, SealedTotp, UserPage};
pub use links::{NewPatientSession, StoredLink};
pub use messages::{MessageChange, NewAttachment, NewMessage, Sent, StoredAttachment, StoredMessage};
pub use patient_thread::{InboxEntry, NewPatientMessage, PatientMessageSent, StoredPatientMessage};
pub use patients::{StoredOrgKey, StoredPatient};
pub use sessions::{MfaProof, NewSession, SessionRecord, SessionSummary};
pub use texting::{ConsentRow, InboundPlan, NewInbound, NewLink, NewText, StoredGateway, StoredText};

/// Storage errors: few, so callers can act on them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row does not exist (or is not visible in the caller's organisation).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was broken; the field names which one.
    #[error("conflict on {0}")]
    Conflict(&'static str),
    /// The database URL or settings are unusable.
    #[error("{0}")]
    Config(String),
    /// Stored data could not be interpreted (never expected; reported, never guessed at).
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// A migration problem.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Result alias for storage calls.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (WAL, synchronous=FULL).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// Chooses the backend from a database URL, refusing anything else.
    pub fn from_url(url: &str) -> StoreResult<Self> {
        let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
        match scheme {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(StoreError::Config(format!(
                "database.url must start with sqlite:// or postgres:// (got scheme {:?})",
                scheme
            ))),
        }
    }

    /// A short name for logs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Maximum connections of the read pool (the write pool of SQLite always has one). On
    /// PostgreSQL the pool has at least two, and the message writer keeps one more of its own.
    pub max_connections: u32,
    /// How long to wait for a connection before failing a request.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { max_connections: 8, acquire_timeout: Duration::from_secs(10) }
    }
}

/// The store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    read: AnyPool,
    /// Every write but the group-commit writer's on PostgreSQL goes through this pool. On
    /// SQLite it has one connection, which the writer shares, so write transactions never
    /// contend for the file lock; on PostgreSQL it is the same pool as `read`, and the writer
    /// has a connection of its own (see `group::WriterPool`).
    write: AnyPool,
    /// Writes to the audit log's search index. On SQLite the index is a database file of its
    /// own, with its own write lock, and this is its one connection: indexing never holds the
    /// writer that group commit shares (see `audit_index.rs`). On PostgreSQL, `write`.
    index: AnyPool,
    /// Sends go through group commit (see `group.rs`).
    group: group::GroupCommit,
    backend: Backend,
    /// Moves after every change to sessions, users, roles or organisation policies made
    /// through this store (see [`Store::auth_epoch`]).
    auth_epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Held by every clone; the SQLite checkpoint task ends when the last one is dropped, the
    /// audit indexer when only its own is left.
    _alive: std::sync::Arc<()>,
}

/// The SQLite URL of the default database file inside a data directory.
pub fn sqlite_url_for(data_dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", data_dir.join("haven.db").display())
}

impl Store {
    /// Connects to the database named by `url` and applies pending migrations. A SQLite
    /// database must be a file (not `:memory:`): the audit search index is a file beside it.
    pub async fn open(url: &str, opts: &StoreOptions) -> StoreResult<Self> {
        let store = Self::connect(url, opts).await?;
        store.migrate().await?;
        tokio::spawn(audit_index::indexer(store.clone()));
        Ok(store)
    }

    /// Connects without migrating (for `haven migrate --status` and tests of migration).
    pub async fn connect(url: &str, opts: &StoreOptions) -> StoreResult<Self> {
        let backend = Backend::from_url(url)?;
        sqlx::any::install_default_drivers();
        let connect: AnyConnectOptions =
            url.parse().map_err(|e| StoreError::Config(format!("database.url is not a valid URL: {e}")))?;
        // Every SQLite connection but the writer's sees the audit index's file, attached.
        let options = |max: u32, recycled: bool, attach: bool| {
            let mut options = AnyPoolOptions::new();
            if !recycled {
                options = options.max_lifetime(None).idle_timeout(None);
            }
            options
                .max_connections(max)
                .acquire_timeout(opts.acquire_timeout)
                // A SQLite connection is in this process and cannot be dropped by a peer, so
                // the check before each use is only a hand-off to its thread (and back).
                .test_before_acquire(backend != Backend::Sqlite)
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // WAL lets readers proceed during a write; synchronous=FULL makes
                            // every commit durable across power loss, not just process crashes.
                            // Statement journals (for multi-row inserts inside a transaction)
                            // stay in memory: they are never needed after a crash. Automatic
                            // checkpoints stay on (they bound the WAL), but only every 4,000
                            // pages: `wal::checkpoints` does their copying beforehand, off the
                            // writer's path.
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000; \
                                 PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 4000;",
                            )
                            .await?;
                            if attach {
                                audit_index::attach(conn)
                                    .await
                                    .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
                            }
                        }
                        Ok(())
                    })
                })
        };
        let pool = |max: u32, recycled: bool, attach: bool| {
            options(max, recycled, attach).connect_with(connect.clone())
        };
        let (read, write, index) = match backend {
            Backend::Sqlite => {
                // The write connection is never recycled: its thread is made once, by this
                // call, and so runs under the scheduling policy of the thread that opened the
                // store (the binary runs the request threads under SCHED_BATCH, and keeps the
                // write path's threads out of it: see `haven/src/sched.rs`).
                let write = pool(1, false, false).await?;
                // Before the readers, which would otherwise attach a file without its tables.
                let index = pool(1, false, true).await?;
                audit_index::prepare_file(&index).await?;
                let read = pool(opts.max_connections.max(1), true, true).await?;
                (read, write, index)
            }
            Backend::Postgres => {
                let p = pool(opts.max_connections.max(2), true, false).await?;
                (p.clone(), p.clone(), p)
            }
        };
        // On PostgreSQL too: every audited write queues on the audit head's row lock anyway, so
        // one writer per node loses no concurrency and saves a commit and a dozen round trips
        // per send.
        // Every round trip of a batch (on SQLite a hand-off to the connection's thread and
        // back) wakes the writer from outside the runtime, where a busy runtime's workers look
        // only now and then: the writer gets a thread of its own, and on PostgreSQL a
        // connection of its own that its thread watches (see `group::WriterPool`).
        let (source, wal) = match backend {
            Backend::Sqlite => (group::WriterPool::Shared(write.clone()), wal::wal_path(&write).await?),
            Backend::Postgres => {
                (group::WriterPool::Own(Box::new((options(1, true, false), connect.clone()))), None)
            }
        };
        let group = group::GroupCommit::start(source, wal);
        let alive = std::sync::Arc::new(());
        if backend == Backend::Sqlite {
            tokio::spawn(wal::checkpoints(read.clone(), std::sync::Arc::downgrade(&alive)));
        }
        Ok(Self { read, write, index, group, backend, auth_epoch: Default::default(), _alive: alive })
    }

    /// Applies pending migrations; returns how many were applied.
    pub async fn migrate(&self) -> StoreResult<usize> {
        self.migrate_up_to(None).await
    }

    /// Applies pending migrations up to schema `version` only; returns how many were applied.
    /// For tests of a migration over data written before it.
    pub async fn migrate_to(&self, version: i64) -> StoreResult<usize> {
        self.migrate_up_to(Some(version)).await
    }

    /// Runs the migrations on the write connection. On SQLite the audit index's file is
    /// attached for them (schema 12 moves the index into it), and only for them: the writer
    /// group commit uses never sees it.
    async fn migrate_up_to(&self, version: Option<i64>) -> StoreResult<usize> {
        let mut conn = self.write.acquire().await?;
        if self.backend == Backend::Sqlite {
            audit_index::attach(&mut conn).await?;
        }
        let applied = migrate::run(&mut conn, self.backend, version).await;
        let detached = match self.backend {
            Backend::Sqlite => audit_index::detach(&mut conn).await,
            Backend::Postgres => Ok(()),
        };
        // A failed migration's error before the detach's.
        let applied = applied?;
        detached?;
        Ok(applied)
    }

    /// A counter that moves after every change this store makes to sessions, users, roles or
    /// organisation policies (never backwards). A cache of sessions read at one value is
    /// current while the counter still has it: read the counter *before* reading the session.
    pub fn auth_epoch(&self) -> u64 {
        self.auth_epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Runs a write to sessions, users, roles or policies, then moves the auth epoch (also when
    /// it failed: a spurious move only costs a cache miss).
    pub(crate) async fn auth_write<T>(&self, work: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let out = work.await;
        self.auth_epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        out
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether PostgreSQL's autovacuum is off for this database (never on SQLite, which has
    /// none). Without it nothing is analysed or vacuumed: plans are made without statistics
    /// and dead rows pile up in the outbox and the members' receipts.
    pub async fn autovacuum_off(&self) -> StoreResult<bool> {
        if self.backend == Backend::Sqlite {
            return Ok(false);
        }
        let row =
            sqlx::query("SELECT current_setting('autovacuum') AS setting").fetch_one(&self.read).await?;
        Ok(crate::rows::get::<String>(&row, "setting")? == "off")
    }

    /// Checks the database answers (for `/readyz`).
    pub async fn ping(&self) -> StoreResult<()> {
        let mut conn = self.read.acquire().await?;
        conn.ping().await?;
        Ok(())
    }

    /// Whether a commit on the write connection returns only once it is durable (SQLite:
    /// `synchronous` FULL or stronger; PostgreSQL: `synchronous_commit` not off). On SQLite
    /// group commit relaxes this on its own batches and must restore it before other writes get
    /// the connection; this checks that it did. (On PostgreSQL the writer never relaxes it.)
    pub async fn commits_durably(&self) -> StoreResult<bool> {
        let mut conn = self.write.acquire().await?;
        Ok(match self.backend {
            Backend::Sqlite => {
                sqlx::query_scalar::<_, i64>("PRAGMA synchronous").fetch_one(&mut *conn).await? >= 2
            }
            Backend::Postgres => {
                sqlx::query_scalar::<_, String>("SHOW synchronous_commit").fetch_one(&mut *conn).await?
                    != "off"
            }
        })
    }

    /// Closes every connection, waiting for running statements to finish. On SQLite this also
    /// checkpoints the WAL into the main file.
    pub async fn close(&self) {
        self.group.close().await;
        self.read.close().await;
        self.index.close().await;
        self.write.close().await;
    }
}

impl Store {
    /// Runs `work` and appends `audit_rec` in one write transaction: both are committed, or
    /// neither is. This is the shape of every audited write.
    pub(crate) async fn audited<T>(
        &self,
        audit_rec: &AuditRecord,
        now: Timestamp,
        work: impl AsyncFnOnce(&mut AnyConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        self.audited_many(std::slice::from_ref(audit_rec), now, work).await
    }

    /// Like [`Store::audited`], with several audit records appended in order.
    pub(crate) async fn audited_many<T>(
        &self,
        audit_recs: &[AuditRecord],
        now: Timestamp,
        work: impl AsyncFnOnce(&mut AnyConnection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut tx = self.write.begin().await?;
        // The head first, before `work` locks anything (see `audit::lock_head`).
        let log = audit::lock_head(&mut tx).await?;
        let out = work(&mut tx).await?;
        audit::append_from(&mut tx, log, audit_recs, now).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// NotFound unless the statement touched a row (the row is absent, or in another organisation).
pub(crate) fn touched(done: AnyQueryResult) -> StoreResult<()> {
    if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}
