//! How the server's runtime threads are scheduled.
//!
//! Every send waits on one serial section: the writer's batch, executed and committed on the
//! write connection's own thread. The runtime's worker threads, which read requests and write
//! frames to sockets, wake up tens of thousands of times a second under load, and under Linux's
//! default policy a waking thread may preempt the one running: on two cores the write
//! connection's thread was preempted about four thousand times a second in the middle of its
//! batches, and every send queued behind the batch waited for it too.
//!
//! With `SCHED_BATCH` a thread's wake-up does not preempt a running thread: it runs at the next
//! scheduling point instead. Its share of the CPU (its nice value) is the same as before. So
//! the runtime's threads (and its blocking pool, where passwords are hashed) run with
//! `SCHED_BATCH`, and the threads on the write path (the writer, the database connections'
//! threads, the log's syncing thread) keep the default policy. `server.batch_scheduling =
//! false` turns it off.

/// Why a thread kept the default policy.
#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    /// The thread's nice value is not 0; setting the policy would reset it.
    #[error("the thread's nice value is {0}, not 0; leaving its scheduling as it is")]
    Niced(i64),
    /// The operating system refused.
    #[error("could not set SCHED_BATCH: {0}")]
    Refused(String),
    /// Not Linux: there is no SCHED_BATCH.
    #[cfg(not(target_os = "linux"))]
    #[error("SCHED_BATCH exists on Linux only")]
    Unsupported,
}

/// A field of this thread's `/proc` stat line (1-based, as in proc(5)); fields after the
/// command name, which may itself hold spaces and parentheses, are counted from its closing
/// parenthesis.
#[cfg(target_os = "linux")]
fn own_stat_field(n: usize) -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// Puts the calling thread under `SCHED_BATCH`, keeping its nice value (only a thread at nice
/// 0 is changed: the call that sets the policy also sets the nice value).
#[cfg(target_os = "linux")]
pub fn batch_current_thread() -> Result<(), SchedError> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
    };
    use thread_priority::{ThreadPriority, ThreadPriorityOsValue};
    match own_stat_field(19) {
        Some(0) => {}
        Some(nice) => return Err(SchedError::Niced(nice)),
        None => return Err(SchedError::Refused("/proc/thread-self/stat could not be read".into())),
    }
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Os(ThreadPriorityOsValue::default()),
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch),
    )
    .map_err(|e| SchedError::Refused(format!("{e:?}")))
}

/// Not Linux: nothing to do.
#[cfg(not(target_os = "linux"))]
pub fn batch_current_thread() -> Result<(), SchedError> {
    Err(SchedError::Unsupported)
}

/// The runtime of `haven serve` and the other commands: with `batch`, each of its threads
/// (workers and blocking pool) puts itself under `SCHED_BATCH` when it starts; a refusal is
/// logged once and the thread runs as before.
pub fn runtime(batch: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if batch {
        let warned = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        builder.on_thread_start(move || {
            if let Err(e) = batch_current_thread()
                && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(error = %e, "runtime threads keep the default scheduling policy");
            }
        });
    }
    builder.build()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// This thread's scheduling policy (0 the default, 3 `SCHED_BATCH`), when it can be read.
    fn current_policy() -> Option<i64> {
        own_stat_field(41)
    }

    /// The policy of a worker thread of the runtime, read from inside a task.
    fn worker_policy(batch: bool) -> Option<i64> {
        let rt = runtime(batch).expect("runtime");
        rt.block_on(async { tokio::spawn(async { current_policy() }).await.expect("task") })
    }

    fn blocking_policy(batch: bool) -> Option<i64> {
        let rt = runtime(batch).expect("runtime");
        rt.block_on(async { tokio::task::spawn_blocking(current_policy).await.expect("task") })
    }

    #[test]
    fn the_runtimes_threads_run_under_sched_batch_when_asked() {
        // This test's own thread is under the default policy, as every thread starts.
        assert_eq!(current_policy(), Some(0));
        assert_eq!(worker_policy(true), Some(3));
        assert_eq!(blocking_policy(true), Some(3));
        assert_eq!(worker_policy(false), Some(0));
        assert_eq!(blocking_policy(false), Some(0));
        assert_eq!(own_stat_field(19), Some(0), "the nice value is kept");
    }

    #[test]
    fn a_niced_thread_is_left_as_it_is() {
        // A thread at another nice value is not changed (setting the policy would reset it).
        let outcome = std::thread::spawn(|| {
            std::process::Command::new("renice")
                .args(["-n", "3", "-p", &own_tid().to_string()])
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            Some((batch_current_thread(), current_policy(), own_stat_field(19)))
        })
        .join()
        .expect("thread");
        // Without renice on the machine there is nothing to check.
        let Some((result, policy, nice)) = outcome else { return };
        assert!(matches!(result, Err(SchedError::Niced(3))), "{result:?}");
        assert_eq!(policy, Some(0));
        assert_eq!(nice, Some(3));
    }

    fn own_tid() -> i64 {
        std::fs::read_link("/proc/thread-self")
            .ok()
            .and_then(|p| p.file_name()?.to_str()?.parse().ok())
            .expect("thread id")
    }
}
