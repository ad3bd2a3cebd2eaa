//! The audit log as a use case: signed checkpoints and the export an auditor verifies offline.

use haven_audit::checkpoint::Checkpoint;
use haven_audit::export;
use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_store::StoredCheckpoint;
use jiff::Timestamp;

use crate::{Actor, App, AppError, AppResult};

/// Entries read from storage per page during an export.
const PAGE: i64 = 10_000;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// Entries in the log covered by the export's checkpoint.
    pub size: u64,
    /// Entries written in full (inside the time range).
    pub full_entries: u64,
    /// Checkpoints written.
    pub checkpoints: usize,
}

impl App {
    /// The log's verifier key (`name+id+key`), to give to auditors.
    pub fn audit_verifier_key(&self) -> String {
        self.audit_signer.verifier_key()
    }

    /// Signs a checkpoint of the log as it is now, unless the newest one already covers it.
    pub async fn checkpoint(&self) -> AppResult<StoredCheckpoint> {
        let head = self.store.audit_head().await?;
        if let Some(last) = self.store.checkpoints(head.size).await?.pop()
            && last.size == head.size
        {
            return Ok(last);
        }
        let cp = Checkpoint { origin: self.audit_signer.name().to_owned(), size: head.size, root: head.root };
        let stored = StoredCheckpoint {
            size: head.size,
            root: head.root,
            note: self.audit_signer.sign(&cp),
            created_at: self.now(),
        };
        self.store.save_checkpoint(&stored).await?;
        Ok(stored)
    }

    /// Writes the whole log (entries recorded within `[from, to]` in full, the others as leaf
    /// hashes), its checkpoints and a fresh one, to `out`. The export itself is audited.
    /// `progress(done, total)` is called after every page.
    pub async fn export_audit(
        &self,
        actor: &Actor,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        out: &mut dyn std::io::Write,
        progress: &mut dyn FnMut(u64, u64),
    ) -> AppResult<ExportSummary> {
        if let Actor::User(p) = actor {
            p.require(haven_domain::roles::Permission::AuditRead)?;
            // Organisation users export through the search API (coming); the whole-server log
            // holds every organisation's entries.
            return Err(AppError::NotFound);
        }
        let io = |e: std::io::Error| AppError::Internal(format!("writing the export: {e}"));
        let cp = self.checkpoint().await?;
        out.write_all(export::header(self.audit_signer.name(), &self.audit_verifier_key()).as_bytes())
            .map_err(io)?;
        let mut after = 0i64;
        let mut full = 0u64;
        let size = i64::try_from(cp.size).unwrap_or(i64::MAX);
        while after < size {
            let page = self.store.audit_raw(after, size, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for e in &page {
                let inside = from.is_none_or(|f| e.recorded_at >= f) && to.is_none_or(|t| e.recorded_at <= t);
                let seq = u64::try_from(e.seq).unwrap_or(0);
                let line = if inside {
                    full += 1;
                    export::entry_line(seq, &e.leaf, &e.entry)
                } else {
                    export::hash_line(seq, &e.leaf)
                };
                out.write_all(line.as_bytes()).map_err(io)?;
            }
            progress(u64::try_from(after).unwrap_or(0), cp.size);
        }
        let checkpoints = self.store.checkpoints(cp.size).await?;
        for c in &checkpoints {
            out.write_all(export::checkpoint_line(&c.note).as_bytes()).map_err(io)?;
        }
        out.flush().map_err(io)?;
        let mut rec =
            self.record(None, "audit", "audit-export", AuditAction::E, AuditOutcome::Success, actor.agent());
        rec = rec.entity("audit-log", cp.size);
        self.store.record_audit(&rec, self.now()).await?;
        Ok(ExportSummary { size: cp.size, full_entries: full, checkpoints: checkpoints.len() })
    }
}
