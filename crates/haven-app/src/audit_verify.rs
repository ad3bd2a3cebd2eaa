//! The audit log's verification status, for compliance officers: the server runs the auditor's
//! own offline verifier (`haven_audit::export::verify`, the code behind `haven audit verify`)
//! over a fresh export of the whole log, streamed through an in-memory pipe (memory stays
//! small whatever the log's size), with the server's verifier key pinned. Every entry is
//! re-hashed, sequence numbers and times checked, the tree recomputed and every signed
//! checkpoint checked against it. The check is itself audited; a failure is recorded as a
//! serious one.

use haven_audit::Hash;
use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_domain::roles::Permission;
use jiff::Timestamp;
use tokio::io::{AsyncReadExt, DuplexStream};

use crate::audit::StoredCheckpoint;
use crate::{App, AppError, AppResult, Principal};

/// The result of verifying the stored log.
#[derive(Debug, Clone)]
pub struct LogVerification {
    /// Whether every check passed.
    pub verified: bool,
    /// Entries checked.
    pub entries: u64,
    /// The root recomputed from every entry (when verified).
    pub root: Option<Hash>,
    /// Signed checkpoints whose signature and root were checked.
    pub checkpoints: usize,
    /// The first problem found (when not verified).
    pub problem: Option<String>,
    /// The signed checkpoint the check covered (the newest).
    pub checkpoint: StoredCheckpoint,
    /// The key the signatures were checked with.
    pub verifier_key: String,
    /// When the check ran.
    pub checked_at: Timestamp,
}

/// The reading end of the pipe as a blocking reader, for the verifier's thread.
struct PipeReader {
    runtime: tokio::runtime::Handle,
    pipe: DuplexStream,
}

impl std::io::Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.runtime.block_on(self.pipe.read(buf))
    }
}

/// Bytes in flight between the export and the verifier.
const PIPE: usize = 1 << 20;

impl App {
    /// Verifies the whole stored log as an auditor would (audit readers only).
    pub async fn verify_audit_log(&self, p: &Principal) -> AppResult<LogVerification> {
        p.require(Permission::AuditRead)?;
        let key = self.audit_verifier_key();
        let (mut writer, pipe) = tokio::io::duplex(PIPE);
        let reader = PipeReader { runtime: tokio::runtime::Handle::current(), pipe };
        let pinned = key.clone();
        let verifier = tokio::task::spawn_blocking(move || {
            let input = std::io::BufReader::with_capacity(PIPE, reader);
            haven_audit::export::verify(input, Some(&pinned), None, &mut |_| {})
        });
        let export = async {
            let summary = self.write_export(None, None, &mut writer, &mut |_, _| {}).await;
            // Closing the pipe is the end of the file for the verifier.
            drop(writer);
            summary
        };
        let (exported, verified) = tokio::join!(export, verifier);
        let verified = verified.map_err(|e| AppError::Internal(format!("the verifier stopped: {e}")))?;
        // A verifier that stopped early closes the pipe and the export fails to write: the
        // verifier's finding is the answer then.
        let checkpoint = match (&verified, exported) {
            (_, Ok((_, cp))) => cp,
            (Err(_), Err(_)) => self.checkpoint().await?,
            (Ok(_), Err(e)) => return Err(e),
        };
        let now = self.now();
        let outcome = match &verified {
            Ok(_) => AuditOutcome::Success,
            Err(_) => AuditOutcome::SeriousFailure,
        };
        let size = checkpoint.size;
        let rec = self
            .record(Some(p.org()), "audit", "audit-verify", AuditAction::E, outcome, p.agent())
            .entity("audit-log", size);
        self.store.record_audit(&rec, now).await?;
        Ok(match verified {
            Ok(v) => LogVerification {
                verified: true,
                entries: v.size,
                root: Some(v.root),
                checkpoints: v.checkpoints,
                problem: None,
                checkpoint,
                verifier_key: key,
                checked_at: now,
            },
            Err(e) => {
                tracing::error!(problem = %e, "the audit log failed verification");
                LogVerification {
                    verified: false,
                    entries: size,
                    root: None,
                    checkpoints: 0,
                    problem: Some(e.to_string()),
                    checkpoint,
                    verifier_key: key,
                    checked_at: now,
                }
            }
        })
    }
}
