//! Keeping SQLite's write-ahead log short without making the writer copy it.
//!
//! Committed pages go to the WAL, and a checkpoint copies them into the database file (syncing
//! the log before and the file after). Whoever checkpoints pays for the copying and the two
//! syncs. SQLite's automatic checkpoint runs on the connection that commits, which here is the
//! writer every send waits on: with the default of every 1,000 pages it ran every 30 or so
//! batches, and took about a twelfth of the write connection's time under load.
//!
//! So a task on a read connection copies committed pages soon after they are written, and the
//! writer's automatic checkpoint runs only every 4,000 pages (set where connections are made).
//! It then finds almost everything copied already. The automatic checkpoint stays on because a
//! PASSIVE checkpoint never waits for the writer, so under a steady stream of writes it never
//! catches up with the end of the log; the writer's own does, between its transactions, and
//! only then can the log start again from its beginning. Without it the WAL grew without bound
//! (1.1 GB in 35 s of the outbox benchmark), and every read slowed down with it.

use std::path::PathBuf;
use std::sync::Weak;
use std::time::Duration;

use sqlx::AnyPool;

use crate::StoreResult;

/// The wait between checkpoints while pages are being written.
const WHILE_WRITING: Duration = Duration::from_millis(25);

/// The wait once a checkpoint found nothing new: an idle server wakes ten times less often.
const WHILE_IDLE: Duration = Duration::from_millis(250);

/// What `PRAGMA wal_checkpoint` reports: pages in the log, and pages of it copied.
type Progress = (i64, i64);

/// Copies committed WAL frames into the main database file on a read connection (PASSIVE: it
/// never waits for readers or the writer). Ends with the store or its pool.
pub(crate) async fn checkpoints(pool: AnyPool, alive: Weak<()>) {
    let mut last: Option<Progress> = None;
    let mut wait = WHILE_IDLE;
    loop {
        tokio::time::sleep(wait).await;
        if alive.strong_count() == 0 || pool.is_closed() {
            return;
        }
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA main.wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            Ok((busy, log, copied)) => {
                // Busy: another connection was checkpointing, and this one learnt nothing.
                wait = if busy != 0 { WHILE_WRITING } else { next_wait(last, (log, copied)) };
                last = (busy == 0).then_some((log, copied));
            }
            // Closed between the check above and the checkpoint: the store is shutting down.
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                // A failing disk should not fill the log forty times a second.
                wait = WHILE_IDLE;
                tracing::warn!(error = %e, "WAL checkpoint failed; the next one will retry");
            }
        }
    }
}

/// How long to wait before the next checkpoint, from what the last two reported: soon while
/// the log keeps changing, less often once it stands still.
fn next_wait(before: Option<Progress>, now: Progress) -> Duration {
    if before == Some(now) { WHILE_IDLE } else { WHILE_WRITING }
}

/// The write-ahead log of the SQLite database behind `pool`; none for a database in memory.
pub(crate) async fn wal_path(pool: &AnyPool) -> StoreResult<Option<PathBuf>> {
    Ok(main_file(pool).await?.map(|f| PathBuf::from(format!("{f}-wal"))))
}

/// The file of a SQLite connection's main database; none for a database in memory.
pub(crate) async fn main_file<'e>(
    e: impl sqlx::Executor<'e, Database = sqlx::Any>,
) -> StoreResult<Option<String>> {
    let file: Option<String> =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_optional(e)
            .await?;
    Ok(file.filter(|f| !f.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_come_often_while_the_log_changes_and_rarely_when_it_stands_still() {
        assert_eq!(next_wait(None, (0, 0)), WHILE_WRITING, "the first look counts as a change");
        assert_eq!(next_wait(Some((120, 80)), (180, 180)), WHILE_WRITING, "pages were written and copied");
        assert_eq!(next_wait(Some((180, 180)), (180, 180)), WHILE_IDLE, "nothing new");
        // The log started again from its beginning: fewer pages than before is a change too.
        assert_eq!(next_wait(Some((3_990, 3_990)), (12, 0)), WHILE_WRITING);
        assert!(WHILE_IDLE > WHILE_WRITING);
    }
}
