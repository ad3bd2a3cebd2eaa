//! The audit log as a use case: signed checkpoints and the export an auditor verifies offline.

use haven_audit::checkpoint::Checkpoint;
use haven_audit::export;
use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_store::AuditRef;
pub use haven_store::{StoredAudit, StoredCheckpoint};
use jiff::Timestamp;
use tokio::io::{AsyncWrite, AsyncWriteExt};

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
        out: &mut (dyn AsyncWrite + Unpin + Send),
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> AppResult<ExportSummary> {
        if let Actor::User(p) = actor {
            p.require(haven_domain::roles::Permission::AuditRead)?;
            // Organisation users export through the search API; the whole-server log holds
            // every organisation's entries.
            return Err(AppError::NotFound);
        }
        let (summary, _) = self.write_export(from, to, out, progress).await?;
        let mut rec =
            self.record(None, "audit", "audit-export", AuditAction::E, AuditOutcome::Success, actor.agent());
        rec = rec.entity("audit-log", summary.size);
        self.store.record_audit(&rec, self.now()).await?;
        Ok(summary)
    }

    /// Writes the export (unaudited: the callers record what it was for). Returns what was
    /// written and the checkpoint the export ends with.
    pub(crate) async fn write_export(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> AppResult<(ExportSummary, StoredCheckpoint)> {
        let io = |e: std::io::Error| AppError::Internal(format!("writing the export: {e}"));
        let cp = self.checkpoint().await?;
        out.write_all(export::header(self.audit_signer.name(), &self.audit_verifier_key()).as_bytes())
            .await
            .map_err(io)?;
        let mut after = 0i64;
        let mut full = 0u64;
        let size = i64::try_from(cp.size).unwrap_or(i64::MAX);
        let mut text = String::new();
        while after < size {
            let page = self.store.audit_raw(after, size, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            text.clear();
            for e in &page {
                let inside = from.is_none_or(|f| e.recorded_at >= f) && to.is_none_or(|t| e.recorded_at <= t);
                let seq = u64::try_from(e.seq).unwrap_or(0);
                text.push_str(&if inside {
                    full += 1;
                    export::entry_line(seq, &e.leaf, &e.entry)
                } else {
                    export::hash_line(seq, &e.leaf)
                });
            }
            out.write_all(text.as_bytes()).await.map_err(io)?;
            progress(u64::try_from(after).unwrap_or(0), cp.size);
        }
        let checkpoints = self.store.checkpoints(cp.size).await?;
        for c in &checkpoints {
            out.write_all(export::checkpoint_line(&c.note).as_bytes()).await.map_err(io)?;
        }
        out.flush().await.map_err(io)?;
        Ok((ExportSummary { size: cp.size, full_entries: full, checkpoints: checkpoints.len() }, cp))
    }
}

/// A search of the organisation's audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditSearch {
    /// Actions by this user.
    pub user: Option<haven_domain::UserId>,
    /// Actions on this patient.
    pub patient: Option<String>,
    /// Actions on this conversation.
    pub conversation: Option<String>,
    /// Event subtype, e.g. `login`, `user-create`.
    pub action: Option<String>,
    /// `success` or `failure`.
    pub outcome: Option<String>,
    /// Recorded at or after.
    pub from: Option<Timestamp>,
    /// Recorded at or before.
    pub to: Option<Timestamp>,
    /// Entries older than this sequence number (the previous page's last).
    pub before: Option<i64>,
    /// Page size.
    pub limit: u32,
}

/// A Merkle proof, as hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The leaf the proof is for (inclusion proofs).
    pub leaf: Option<haven_audit::Hash>,
    /// The proof's hashes.
    pub hashes: Vec<haven_audit::Hash>,
}

impl App {
    /// Searches the caller's organisation's audit trail (compliance officers and admins); the
    /// search itself is recorded.
    pub async fn search_audit(
        &self,
        p: &crate::Principal,
        s: &AuditSearch,
    ) -> AppResult<Vec<haven_store::StoredAudit>> {
        p.require(haven_domain::roles::Permission::AuditRead)?;
        let mut q = haven_store::AuditQuery {
            subtype: s.action.clone(),
            from: s.from,
            to: s.to,
            before_seq: s.before,
            ..Default::default()
        };
        q.outcome = match s.outcome.as_deref() {
            None => None,
            Some("success") => Some("success".into()),
            Some("failure") => Some("minor_failure".into()),
            Some("serious_failure") => Some("serious_failure".into()),
            Some(_) => {
                return Err(haven_domain::ValidationError::new(
                    "outcome",
                    "invalid_outcome",
                    "outcome is success, failure or serious_failure",
                )
                .into());
            }
        };
        let mut rec = self.record(
            Some(p.org()),
            "audit",
            "audit-search",
            AuditAction::E,
            AuditOutcome::Success,
            p.agent(),
        );
        if let Some(u) = s.user {
            q.refs.push((AuditRef::Agent, u.to_string()));
            rec = rec.entity("user", u);
        }
        if let Some(pt) = &s.patient {
            q.refs.push((AuditRef::Patient, pt.clone()));
            rec = rec.entity("patient", pt);
        }
        if let Some(c) = &s.conversation {
            q.refs.push((AuditRef::Conversation, c.clone()));
            rec = rec.entity("conversation", c);
        }
        let found = self.store.search_audit(p.org(), &q, s.limit.clamp(1, 500)).await?;
        self.store.record_audit(&rec, self.now()).await?;
        Ok(found)
    }

    /// The newest signed checkpoint (signing one first if the log has grown).
    pub async fn latest_checkpoint(&self, p: &crate::Principal) -> AppResult<StoredCheckpoint> {
        p.require(haven_domain::roles::Permission::AuditRead)?;
        self.checkpoint().await
    }

    /// The inclusion proof of entry `seq` (of the caller's organisation) in the tree of `size`.
    pub async fn inclusion_proof(&self, p: &crate::Principal, seq: u64, size: u64) -> AppResult<Proof> {
        p.require(haven_domain::roles::Permission::AuditRead)?;
        let org = self.store.audit_entry_org(i64::try_from(seq).unwrap_or(i64::MAX)).await?;
        if org.flatten() != Some(p.org().to_string()) || seq == 0 || seq > size {
            return Err(AppError::NotFound);
        }
        let leaves = self.store.audit_leaves(size).await?;
        if (leaves.len() as u64) < size {
            return Err(AppError::NotFound);
        }
        let i = usize::try_from(seq - 1).map_err(|_| AppError::NotFound)?;
        Ok(Proof { leaf: Some(leaves[i]), hashes: haven_audit::merkle::inclusion_proof(i, &leaves) })
    }

    /// The consistency proof between the trees of sizes `first <= second`.
    pub async fn consistency_proof(&self, p: &crate::Principal, first: u64, second: u64) -> AppResult<Proof> {
        p.require(haven_domain::roles::Permission::AuditRead)?;
        if first == 0 || first > second {
            return Err(haven_domain::ValidationError::new(
                "first",
                "invalid_range",
                "need 0 < first <= second",
            )
            .into());
        }
        let leaves = self.store.audit_leaves(second).await?;
        if (leaves.len() as u64) < second {
            return Err(AppError::NotFound);
        }
        let m = usize::try_from(first).map_err(|_| AppError::NotFound)?;
        Ok(Proof { leaf: None, hashes: haven_audit::merkle::consistency_proof(m, &leaves) })
    }
}

/// Export formats of the organisation's audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A FHIR R4 `collection` Bundle of AuditEvent resources.
    Fhir,
    /// JSON Lines: one canonical entry per line, exactly as hashed into the log.
    JsonLines,
}

impl App {
    /// Exports the caller's organisation's entries recorded within `[from, to]`, oldest first;
    /// the export is recorded.
    pub async fn export_org_audit(
        &self,
        p: &crate::Principal,
        format: ExportFormat,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> AppResult<String> {
        p.require(haven_domain::roles::Permission::AuditRead)?;
        let mut q = haven_store::AuditQuery { from, to, ..Default::default() };
        let mut events = Vec::new();
        loop {
            let page = self.store.search_audit(p.org(), &q, 1000).await?;
            let Some(last) = page.last() else { break };
            q.before_seq = Some(last.seq);
            let done = page.len() < 1000;
            events.extend(page);
            if done {
                break;
            }
        }
        events.reverse();
        let body = match format {
            ExportFormat::Fhir => {
                let b = crate::audit_fhir::bundle(&events, &self.settings.node_name, self.now());
                serde_json::to_string(&b).map_err(|e| AppError::Internal(e.to_string()))?
            }
            ExportFormat::JsonLines => {
                let mut out = String::new();
                for e in &events {
                    let line = serde_json::json!({"seq": e.seq, "time": e.recorded_at.as_millisecond(), "record": e.record});
                    out.push_str(&line.to_string());
                    out.push('\n');
                }
                out
            }
        };
        let sub = match format {
            ExportFormat::Fhir => "audit-export-fhir",
            ExportFormat::JsonLines => "audit-export-jsonl",
        };
        let rec = self
            .record(Some(p.org()), "audit", sub, AuditAction::E, AuditOutcome::Success, p.agent())
            .entity("audit-log", events.len());
        self.store.record_audit(&rec, self.now()).await?;
        Ok(body)
    }
}
