//! Making SQLite's group commits durable off the writer's path. With `synchronous = FULL` a
//! commit returns only after SQLite has fsynced the write-ahead log, and while it waits the
//! writer can do nothing else: on a two-core machine that wait was a quarter of every batch.
//! So the writer's own batches commit with `synchronous = NORMAL` (the log is written, in
//! order, but not yet synced), and hand their answers here: one thread fsyncs the log file
//! and only then answers every batch committed before that fsync began. The writer meanwhile
//! runs the next batch, and batches that commit while an fsync is running share the next one.
//!
//! Nothing is acknowledged before it is durable: a sender is answered only after an fsync of
//! the log that began after its batch's commit, and the log is append-only between
//! checkpoints, which SQLite syncs before copying from it. Other connections may read a batch
//! in the moments before its fsync; a power loss then (not a crash of the process: the
//! operating system still holds the pages) could take back a message nobody was told was
//! sent. If an fsync fails the log can no longer be trusted (Linux may report the next one
//! clean with the pages lost), so every batch from then on is refused until Haven restarts.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::{StoreError, StoreResult};

/// A committed but not yet synced batch: the answers waiting for the fsync.
type Answers<T> = Vec<(oneshot::Sender<StoreResult<T>>, T)>;

/// The handle to the syncing thread. Dropping it ends the thread after its last answers.
pub(crate) struct WalSync<T> {
    /// Each batch's answers, with when they were handed over.
    queue: mpsc::Sender<(Instant, Answers<T>)>,
    failed: Arc<AtomicBool>,
}

impl<T: Send + 'static> WalSync<T> {
    /// Starts the thread that syncs the write-ahead log at `wal` (the database file's name
    /// followed by `-wal`).
    pub(crate) fn start(wal: PathBuf) -> io::Result<Self> {
        let (queue, rx) = mpsc::channel();
        let failed = Arc::new(AtomicBool::new(false));
        let flag = failed.clone();
        std::thread::Builder::new().name("haven-wal-sync".into()).spawn(move || syncer(wal, rx, flag))?;
        Ok(Self { queue, failed })
    }

    /// Whether an fsync has failed: the writer then refuses every send.
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Answers `answers` after the next fsync of the log.
    pub(crate) fn answer_when_durable(&self, answers: Answers<T>) {
        if let Err(mpsc::SendError((_, answers))) = self.queue.send((Instant::now(), answers)) {
            // The thread is gone (it cannot panic; this is shutdown): nothing can be promised.
            for (reply, _) in answers {
                let _ = reply.send(Err(not_durable("the log syncing thread has stopped")));
            }
        }
    }
}

/// Why a batch is refused after the first failed fsync.
pub(crate) const EARLIER_FAILURE: &str = "an earlier fsync failed";

/// The error every send gets once the log could not be synced.
pub(crate) fn not_durable(why: &str) -> StoreError {
    StoreError::Database(sqlx::Error::Io(io::Error::other(format!(
        "the write-ahead log could not be made durable ({why}); writes are refused until Haven restarts"
    ))))
}

fn syncer<T>(wal: PathBuf, rx: mpsc::Receiver<(Instant, Answers<T>)>, failed: Arc<AtomicBool>) {
    let mut log = Log { path: wal, file: None };
    while let Ok(first) = rx.recv() {
        // Everything queued by now was committed before this fsync begins, so it covers all.
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let began = Instant::now();
        let outcome =
            if failed.load(Ordering::SeqCst) { Err(io::Error::other(EARLIER_FAILURE)) } else { log.sync() };
        metrics::histogram!("haven_store_wal_sync_seconds").record(began.elapsed().as_secs_f64());
        let answered = Instant::now();
        for (handed, _) in &waiting {
            // A batch's wait for durability: the fsync before its own, if one was running, and
            // its own.
            metrics::histogram!("haven_store_wal_wait_seconds").record((answered - *handed).as_secs_f64());
        }
        let waiting = waiting.into_iter().flat_map(|(_, answers)| answers);
        match outcome {
            Ok(()) => {
                for (reply, answer) in waiting {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                if !failed.swap(true, Ordering::SeqCst) {
                    tracing::error!(error = %e, "fsync of the SQLite write-ahead log failed; refusing sends until restart");
                }
                let why = e.to_string();
                for (reply, _) in waiting {
                    let _ = reply.send(Err(not_durable(&why)));
                }
            }
        }
    }
}

/// The log file, opened once and again only if SQLite has replaced it (it deletes the log when
/// its last connection closes, after copying everything into the database file and syncing it).
struct Log {
    path: PathBuf,
    file: Option<File>,
}

impl Log {
    fn sync(&mut self) -> io::Result<()> {
        if self.file.as_ref().is_none_or(|f| !same_file(f, &self.path)) {
            self.file = match File::open(&self.path) {
                Ok(f) => Some(f),
                // No log: everything committed is in the database file, synced by the checkpoint
                // that removed the log.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
        }
        self.file.as_ref().map_or(Ok(()), File::sync_data)
    }
}

#[cfg(unix)]
fn same_file(f: &File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, _: &std::path::Path) -> bool {
    // Without inode numbers, open the log afresh for every fsync.
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of this test's own (removed by the caller's `remove_dir_all`).
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("haven-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn answer(sync: &WalSync<u32>, value: u32) -> StoreResult<u32> {
        let (reply, answered) = oneshot::channel();
        sync.answer_when_durable(vec![(reply, value)]);
        answered.await.expect("answered")
    }

    #[tokio::test]
    async fn answers_come_back_after_the_sync() {
        let dir = scratch("answers");
        let wal = dir.join("haven.db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let sync = WalSync::start(wal.clone()).unwrap();
        assert_eq!(answer(&sync, 7).await.unwrap(), 7);
        // SQLite replaced the log (its last connection closed and a new one opened).
        std::fs::remove_file(&wal).unwrap();
        assert_eq!(answer(&sync, 8).await.unwrap(), 8, "no log: everything is in the database file");
        std::fs::write(&wal, b"new frames").unwrap();
        assert_eq!(answer(&sync, 9).await.unwrap(), 9);
        assert!(!sync.failed());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_failed_sync_refuses_that_batch_and_every_later_one() {
        let dir = scratch("failed");
        // A log that cannot be opened (its directory is a file) stands in for a failing disk.
        std::fs::write(dir.join("not-a-dir"), b"").unwrap();
        let sync = WalSync::start(dir.join("not-a-dir").join("haven.db-wal")).unwrap();
        let refused = answer(&sync, 1).await.unwrap_err();
        assert!(refused.to_string().contains("could not be made durable"), "{refused}");
        assert!(sync.failed());
        assert!(answer(&sync, 2).await.is_err(), "a later batch is refused too");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
