//! The audit trail for compliance officers and admins: search, the signed checkpoint, and
//! Merkle proofs. Everyone else gets 404.

use axum::Json;
use axum::extract::State;
use haven_app::audit::AuditSearch;
use haven_app::audit::StoredAudit;
use haven_domain::UserId;
use haven_domain::audit::{AuditAction, AuditOutcome};
use serde::{Deserialize, Serialize};

use crate::HttpState;
use crate::error::ApiResult;
use crate::extract::{ApiQuery, Auth};

/// Search filters; all optional, all narrowing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Actions performed by this user.
    pub user: Option<UserId>,
    /// Actions on this patient (id).
    pub patient: Option<String>,
    /// Actions on this conversation (id).
    pub conversation: Option<String>,
    /// Event subtype, e.g. `login`, `user-create`, `policy-change`.
    pub action: Option<String>,
    /// `success`, `failure` or `serious_failure`.
    pub outcome: Option<String>,
    /// Recorded at or after (RFC 3339).
    pub from: Option<String>,
    /// Recorded at or before (RFC 3339).
    pub to: Option<String>,
    /// Only entries older than this sequence number (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// Who acted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    /// The user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Their role.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Network address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Session.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// User-Agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A non-user actor (`cli`, the server's node name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
}

/// What was acted on.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EntityView {
    /// Kind: `user`, `session`, `policy`, `patient`, `conversation`…
    pub kind: String,
    /// Id.
    pub id: String,
}

/// One audit event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    /// Position in the log (gap-free, server-wide).
    pub seq: i64,
    /// When (RFC 3339).
    pub recorded_at: String,
    /// Event type.
    pub event_type: String,
    /// Event subtype.
    pub subtype: String,
    /// FHIR action code: C, R, U, D or E.
    pub action: String,
    /// `success`, `failure` or `serious_failure`.
    pub outcome: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome_code: Option<String>,
    /// Who.
    pub agent: AgentView,
    /// To what.
    pub entities: Vec<EntityView>,
}

/// A page of events, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEventList {
    /// The events.
    pub events: Vec<AuditEventView>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
}

impl From<StoredAudit> for AuditEventView {
    fn from(s: StoredAudit) -> Self {
        let r = s.record;
        Self {
            seq: s.seq,
            recorded_at: s.recorded_at.to_string(),
            event_type: r.event_type,
            subtype: r.subtype,
            action: match r.action {
                AuditAction::C => "C",
                AuditAction::R => "R",
                AuditAction::U => "U",
                AuditAction::D => "D",
                AuditAction::E => "E",
            }
            .into(),
            outcome: match r.outcome {
                AuditOutcome::Success => "success",
                AuditOutcome::MinorFailure => "failure",
                AuditOutcome::SeriousFailure => "serious_failure",
            }
            .into(),
            outcome_code: r.outcome_code,
            agent: AgentView {
                user_id: r.agent.user_id.map(|u| u.to_string()),
                role: r.agent.role.map(|x| x.as_str().to_owned()),
                address: r.agent.address,
                session_id: r.agent.session_id.map(|x| x.to_string()),
                user_agent: r.agent.user_agent,
                system: r.agent.system,
            },
            entities: r.entities.into_iter().map(|e| EntityView { kind: e.kind, id: e.id }).collect(),
        }
    }
}

fn time(field: &'static str, v: Option<&str>) -> ApiResult<Option<jiff::Timestamp>> {
    v.map(|s| {
        s.parse::<jiff::Timestamp>().map_err(|_| {
            haven_app::AppError::Invalid(haven_domain::ValidationError::new(
                field,
                "invalid_time",
                format!("{field} must be an RFC 3339 time such as 2026-11-01T00:00:00Z"),
            ))
            .into()
        })
    })
    .transpose()
}

/// GET /api/v1/audit/events — search the organisation's audit trail (audited itself).
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", params(SearchParams),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "matching events, newest first", body = AuditEventList), crate::openapi::QueryErrors))]
pub(crate) async fn search(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<SearchParams>,
) -> ApiResult<Json<AuditEventList>> {
    let limit = super::page_limit(q.limit, 100, 500)?;
    let search = AuditSearch {
        user: q.user,
        patient: q.patient,
        conversation: q.conversation,
        action: q.action,
        outcome: q.outcome,
        from: time("from", q.from.as_deref())?,
        to: time("to", q.to.as_deref())?,
        before: q.before,
        limit,
    };
    let found = state.app.search_audit(&p, &search).await?;
    let next_before = (found.len() == limit as usize).then(|| found.last().map(|e| e.seq)).flatten();
    Ok(Json(AuditEventList { events: found.into_iter().map(Into::into).collect(), next_before }))
}

/// The newest signed checkpoint of the log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckpointView {
    /// Entries covered.
    pub size: u64,
    /// Root hash, hex.
    pub root_hash: String,
    /// The signed note (C2SP signed-note format).
    pub note: String,
    /// The key that verifies it: `name+keyid+base64(key)`.
    pub verifier_key: String,
    /// When it was signed (RFC 3339).
    pub created_at: String,
}

/// GET /api/v1/audit/checkpoint — the newest signed checkpoint (signed now if the log grew).
#[utoipa::path(get, path = "/api/v1/audit/checkpoint", tag = "audit",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the checkpoint", body = CheckpointView), crate::openapi::AuthErrors))]
pub(crate) async fn checkpoint(
    State(state): State<HttpState>,
    Auth(p): Auth,
) -> ApiResult<Json<CheckpointView>> {
    let cp = state.app.latest_checkpoint(&p).await?;
    Ok(Json(checkpoint_view(cp, state.app.audit_verifier_key())))
}

fn checkpoint_view(cp: haven_app::audit::StoredCheckpoint, verifier_key: String) -> CheckpointView {
    CheckpointView {
        size: cp.size,
        root_hash: hex(&cp.root),
        note: cp.note,
        verifier_key,
        created_at: cp.created_at.to_string(),
    }
}

/// The result of verifying the stored log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VerificationView {
    /// `verified`, or `failed` when any check failed.
    pub status: String,
    /// Entries checked.
    pub entries: u64,
    /// The root recomputed from every entry, hex (when verified).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// Signed checkpoints checked (signature and root).
    pub checkpoints_verified: usize,
    /// The first problem found (when failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// When the check ran (RFC 3339).
    pub checked_at: String,
    /// The newest signed checkpoint, which the check covered.
    pub checkpoint: CheckpointView,
}

/// GET /api/v1/audit/verification — verify the whole stored log now, as `haven audit verify`
/// does offline: every entry re-hashed, sequence numbers and times checked, the tree recomputed,
/// every signed checkpoint checked with the server's verifier key (audited itself).
#[utoipa::path(get, path = "/api/v1/audit/verification", tag = "audit",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the verification's result", body = VerificationView), crate::openapi::AuthErrors))]
pub(crate) async fn verification(
    State(state): State<HttpState>,
    Auth(p): Auth,
) -> ApiResult<Json<VerificationView>> {
    let v = state.app.verify_audit_log(&p).await?;
    Ok(Json(VerificationView {
        status: if v.verified { "verified" } else { "failed" }.into(),
        entries: v.entries,
        root_hash: v.root.map(|r| hex(&r)),
        checkpoints_verified: v.checkpoints,
        problem: v.problem,
        checked_at: v.checked_at.to_string(),
        checkpoint: checkpoint_view(v.checkpoint, v.verifier_key),
    }))
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Inclusion proof parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InclusionParams {
    /// The entry's sequence number.
    pub seq: u64,
    /// The tree size (a checkpoint's size).
    pub size: u64,
}

/// Consistency proof parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyParams {
    /// The older tree size.
    pub first: u64,
    /// The newer tree size.
    pub second: u64,
}

/// A Merkle proof (RFC 9162).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProofView {
    /// The leaf hash (inclusion proofs), hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf_hash: Option<String>,
    /// The proof's hashes, hex, in RFC 9162 order.
    pub proof: Vec<String>,
}

/// GET /api/v1/audit/proofs/inclusion — proof that an entry is in the tree of a given size.
#[utoipa::path(get, path = "/api/v1/audit/proofs/inclusion", tag = "audit", params(InclusionParams),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the proof", body = ProofView), crate::openapi::QueryErrors))]
pub(crate) async fn inclusion(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<InclusionParams>,
) -> ApiResult<Json<ProofView>> {
    let proof = state.app.inclusion_proof(&p, q.seq, q.size).await?;
    Ok(Json(ProofView {
        leaf_hash: proof.leaf.map(|l| hex(&l)),
        proof: proof.hashes.iter().map(|h| hex(h)).collect(),
    }))
}

/// GET /api/v1/audit/proofs/consistency — proof that a tree extends an older one.
#[utoipa::path(get, path = "/api/v1/audit/proofs/consistency", tag = "audit", params(ConsistencyParams),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the proof", body = ProofView), crate::openapi::QueryErrors))]
pub(crate) async fn consistency(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ConsistencyParams>,
) -> ApiResult<Json<ProofView>> {
    let proof = state.app.consistency_proof(&p, q.first, q.second).await?;
    Ok(Json(ProofView { leaf_hash: None, proof: proof.hashes.iter().map(|h| hex(h)).collect() }))
}

/// Export parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// `fhir` (a FHIR R4 Bundle of AuditEvent) or `jsonl` (JSON Lines).
    pub format: ExportFormatParam,
    /// Recorded at or after (RFC 3339).
    pub from: Option<String>,
    /// Recorded at or before (RFC 3339).
    pub to: Option<String>,
}

/// Export format.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormatParam {
    /// FHIR R4 Bundle of AuditEvent resources.
    Fhir,
    /// JSON Lines.
    Jsonl,
}

/// GET /api/v1/audit/export — the organisation's audit trail as FHIR AuditEvents or JSON Lines
/// (audited itself).
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", params(ExportParams),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the export", content(
        (Object = "application/fhir+json"),
        (String = "application/x-ndjson"),
    )), crate::openapi::QueryErrors))]
pub(crate) async fn export(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ExportParams>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let (format, content_type) = match q.format {
        ExportFormatParam::Fhir => (haven_app::audit::ExportFormat::Fhir, "application/fhir+json"),
        ExportFormatParam::Jsonl => (haven_app::audit::ExportFormat::JsonLines, "application/x-ndjson"),
    };
    let body = state
        .app
        .export_org_audit(&p, format, time("from", q.from.as_deref())?, time("to", q.to.as_deref())?)
        .await?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}
