//! Sessions: created at sign-in, promoted when MFA completes (with a new token), touched on
//! activity, ended by logout, timeout, password change, MFA reset or deactivation. Only token
//! digests are stored.

use haven_domain::audit::AuditRecord;
use haven_domain::org::OrgPolicy;
use haven_domain::session::SessionState;
use haven_domain::user::User;
use haven_domain::{OrgId, SessionId, UserId};
use jiff::Timestamp;
use sqlx::AnyConnection;

use crate::rows::{self, USER_COLUMNS, get, ms, ts};
use crate::{Store, StoreError, StoreResult, audit};

/// A session to create.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// Its id.
    pub id: SessionId,
    /// SHA-256 of the token, hex.
    pub token_digest: String,
    /// The user's organisation.
    pub org_id: OrgId,
    /// The user.
    pub user_id: UserId,
    /// Sign-in state.
    pub state: SessionState,
    /// Creation time.
    pub created_at: Timestamp,
    /// Absolute end.
    pub expires_at: Timestamp,
    /// Client address.
    pub address: Option<String>,
    /// Client User-Agent (truncated).
    pub user_agent: Option<String>,
}

/// A live session with its user and the user's organisation policy.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// Its id.
    pub id: SessionId,
    /// Sign-in state.
    pub state: SessionState,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last recorded activity.
    pub last_seen_at: Timestamp,
    /// Absolute end.
    pub expires_at: Timestamp,
    /// The user.
    pub user: User,
    /// The user's organisation policy.
    pub policy: OrgPolicy,
}

/// A live session as its owner sees it in a session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Its id.
    pub id: SessionId,
    /// Sign-in state.
    pub state: SessionState,
    /// Sign-in time.
    pub created_at: Timestamp,
    /// Last recorded activity.
    pub last_seen_at: Timestamp,
    /// Absolute end.
    pub expires_at: Timestamp,
    /// Address it signed in from.
    pub address: Option<String>,
    /// Its User-Agent.
    pub user_agent: Option<String>,
}

/// How a sign-in's second step was proven.
#[derive(Debug, Clone)]
pub enum MfaProof {
    /// A TOTP code of this step (must be newer than the last one used).
    TotpStep(i64),
    /// A recovery code with this digest (must be unused).
    RecoveryCode(String),
    /// A first enrolment confirmed with this step; these recovery-code digests are issued.
    Enrolment {
        /// The step of the confirming code.
        step: i64,
        /// Digests of the new recovery codes.
        recovery_digests: Vec<String>,
    },
}

async fn insert(conn: &mut AnyConnection, s: &NewSession) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sessions (id, token_hash, org_id, user_id, state, created_at, last_seen_at,
         expires_at, address, user_agent) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9)",
    )
    .bind(s.id.to_string())
    .bind(&s.token_digest)
    .bind(s.org_id.to_string())
    .bind(s.user_id.to_string())
    .bind(s.state.as_str())
    .bind(ms(s.created_at))
    .bind(ms(s.expires_at))
    .bind(s.address.clone())
    .bind(s.user_agent.clone())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Ends every live session of `user` except `keep`.
pub(crate) async fn end_all(
    conn: &mut AnyConnection,
    user: UserId,
    keep: Option<SessionId>,
    reason: &str,
    now: Timestamp,
) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE sessions SET ended_at = $1, end_reason = $2
         WHERE user_id = $3 AND ended_at IS NULL AND id <> $4",
    )
    .bind(ms(now))
    .bind(reason)
    .bind(user.to_string())
    .bind(keep.map(|k| k.to_string()).unwrap_or_default())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

async fn end_one(conn: &mut AnyConnection, id: SessionId, reason: &str, now: Timestamp) -> StoreResult<bool> {
    let done =
        sqlx::query("UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL")
            .bind(ms(now))
            .bind(reason)
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

fn session_select() -> String {
    format!(
        "SELECT s.id AS sid, s.state, s.created_at AS s_created, s.last_seen_at, s.expires_at,
                u.{cols}, {policy}
         FROM sessions s JOIN users u ON u.id = s.user_id JOIN organizations o ON o.id = s.org_id",
        cols = USER_COLUMNS.replace(", ", ", u."),
        policy = rows::POLICY_OF_O,
    )
}

fn session_record(row: &sqlx::any::AnyRow) -> StoreResult<SessionRecord> {
    let state: String = get(row, "state")?;
    Ok(SessionRecord {
        id: rows::id(&get::<String>(row, "sid")?)?,
        state: SessionState::parse(&state).ok_or(StoreError::Corrupt("session state"))?,
        created_at: ts(get(row, "s_created")?)?,
        last_seen_at: ts(get(row, "last_seen_at")?)?,
        expires_at: ts(get(row, "expires_at")?)?,
        user: rows::user(row)?,
        policy: rows::policy(row)?,
    })
}

impl Store {
    /// Creates a session (a successful password step).
    pub async fn create_session(&self, s: &NewSession, audit_rec: &AuditRecord) -> StoreResult<()> {
        self.audited(audit_rec, s.created_at, async |c| insert(c, s).await).await
    }

    /// The live (not ended) session with this token digest, with its user and policy.
    /// Whether it has timed out is for the caller to decide, with its clock.
    pub async fn session_by_token(&self, token_digest: &str) -> StoreResult<Option<SessionRecord>> {
        let sql = format!("{} WHERE s.token_hash = $1 AND s.ended_at IS NULL", session_select());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(token_digest).fetch_optional(&self.read).await?;
        row.as_ref().map(session_record).transpose()
    }

    /// Live sessions that have timed out at `now` (past their end, or idle longer than their
    /// organisation allows; `idle_since` bounds the scan), oldest activity first, at most
    /// `limit`.
    pub async fn stale_sessions(
        &self,
        idle_since: Timestamp,
        now: Timestamp,
        limit: i64,
    ) -> StoreResult<Vec<SessionRecord>> {
        let sql = format!(
            // Each organisation's own inactivity limit is applied here, so every row returned
            // has timed out and a sweep never sticks on a page of idle but live sessions.
            "{} WHERE s.ended_at IS NULL AND (s.expires_at <= $2 OR (s.last_seen_at <= $1
               AND s.last_seen_at + o.inactivity_timeout_seconds * 1000 <= $2))
             ORDER BY s.last_seen_at LIMIT $3",
            session_select()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(idle_since))
            .bind(ms(now))
            .bind(limit)
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(session_record).collect()
    }

    /// The live sessions of a user of `org`, newest first.
    pub async fn user_sessions(&self, org: OrgId, user: UserId) -> StoreResult<Vec<SessionSummary>> {
        let rows = sqlx::query(
            "SELECT id, state, created_at, last_seen_at, expires_at, address, user_agent FROM sessions
             WHERE org_id = $1 AND user_id = $2 AND ended_at IS NULL ORDER BY created_at DESC",
        )
        .bind(org.to_string())
        .bind(user.to_string())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = get(r, "state")?;
                Ok(SessionSummary {
                    id: rows::id(&get::<String>(r, "id")?)?,
                    state: SessionState::parse(&state).ok_or(StoreError::Corrupt("session state"))?,
                    created_at: ts(get(r, "created_at")?)?,
                    last_seen_at: ts(get(r, "last_seen_at")?)?,
                    expires_at: ts(get(r, "expires_at")?)?,
                    address: get(r, "address")?,
                    user_agent: get(r, "user_agent")?,
                })
            })
            .collect()
    }

    /// Ends session `id` if it is a live session of `user`; NotFound otherwise.
    pub async fn end_user_session(
        &self,
        user: UserId,
        id: SessionId,
        reason: &str,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.auth_write(async {
            self.audited(audit_rec, now, async |c| {
                let done = sqlx::query(
                    "UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND user_id = $4 AND ended_at IS NULL",
                )
                .bind(ms(now))
                .bind(reason)
                .bind(id.to_string())
                .bind(user.to_string())
                .execute(&mut *c)
                .await?;
                crate::touched(done)
            })
            .await
        })
        .await
    }

    /// Records activity on a session.
    pub async fn touch_session(&self, id: SessionId, now: Timestamp) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2 AND ended_at IS NULL")
            .bind(ms(now))
            .bind(id.to_string())
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Ends one session; false when it had already ended (nothing is recorded then).
    pub async fn end_session(
        &self,
        id: SessionId,
        reason: &str,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.auth_write(async {
            let mut tx = self.write.begin().await?;
            if !end_one(&mut tx, id, reason, now).await? {
                return Ok(false);
            }
            audit::append(&mut tx, audit_rec, now).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Ends every session of a user of `org` ("sign out everywhere"); returns how many.
    pub async fn end_user_sessions(
        &self,
        org: OrgId,
        user: UserId,
        reason: &str,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<u64> {
        self.auth_write(async {
            self.audited(audit_rec, now, async |c| {
                let exists: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = $1 AND org_id = $2")
                        .bind(user.to_string())
                        .bind(org.to_string())
                        .fetch_one(&mut *c)
                        .await?;
                if exists == 0 {
                    return Err(StoreError::NotFound);
                }
                end_all(c, user, None, reason, now).await
            })
            .await
        })
        .await
    }

    /// Completes sign-in: spends the MFA proof, ends the pending session `old` and creates the
    /// active session `new` (a fresh token), all in one transaction. Returns false, changing
    /// nothing, when the proof was already spent (a replayed code) or `old` has ended.
    pub async fn complete_mfa(
        &self,
        old: SessionId,
        proof: &MfaProof,
        new: &NewSession,
        audit_rec: &AuditRecord,
    ) -> StoreResult<bool> {
        self.auth_write(async {
            let now = new.created_at;
            let user = new.user_id.to_string();
            let mut tx = self.write.begin().await?;
            let spent = match proof {
                MfaProof::TotpStep(step) => sqlx::query(
                    "UPDATE users SET totp_last_step = $1
                     WHERE id = $2 AND totp_sealed IS NOT NULL
                       AND (totp_last_step IS NULL OR totp_last_step < $1)",
                )
                .bind(*step)
                .bind(&user)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                MfaProof::RecoveryCode(digest) => sqlx::query(
                    "UPDATE recovery_codes SET used_at = $1
                     WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
                )
                .bind(ms(now))
                .bind(&user)
                .bind(digest)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
                MfaProof::Enrolment { step, recovery_digests } => {
                    let n = sqlx::query(
                        "UPDATE users SET totp_sealed = totp_pending_sealed, totp_pending_sealed = NULL,
                         totp_last_step = $1, updated_at = $2
                         WHERE id = $3 AND totp_pending_sealed IS NOT NULL AND totp_sealed IS NULL",
                    )
                    .bind(*step)
                    .bind(ms(now))
                    .bind(&user)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                        .bind(&user)
                        .execute(&mut *tx)
                        .await?;
                    for d in recovery_digests {
                        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
                            .bind(&user)
                            .bind(d)
                            .execute(&mut *tx)
                            .await?;
                    }
                    n
                }
            };
            if spent != 1 || !end_one(&mut tx, old, "mfa_completed", now).await? {
                tx.rollback().await?;
                return Ok(false);
            }
            insert(&mut tx, new).await?;
            if matches!(proof, MfaProof::Enrolment { .. }) {
                // Sessions opened before the authenticator existed were single-factor: end them.
                end_all(&mut tx, new.user_id, Some(new.id), "mfa_enrolled", now).await?;
            }
            audit::append(&mut tx, audit_rec, now).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }
}
