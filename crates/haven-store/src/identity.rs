//! Organisations, users, credentials and MFA state. Every method that reads or changes a user
//! takes the caller's organisation and scopes its query by it: a user id of another
//! organisation is simply not found.

use haven_domain::audit::AuditRecord;
use haven_domain::org::{OrgPolicy, Organization};
use haven_domain::roles::RoleSet;
use haven_domain::user::{User, UserStatus};
use haven_domain::{OrgId, SessionId, UserId};
use jiff::Timestamp;
use sqlx::AnyConnection;

use crate::rows::{self, ORG_COLUMNS, USER_COLUMNS, flag, get, ms};
use crate::{Store, StoreError, StoreResult, touched};

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The new id.
    pub id: UserId,
    /// The organisation.
    pub org_id: OrgId,
    /// Normalised login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Roles.
    pub roles: RoleSet,
    /// Argon2id PHC string.
    pub password_hash: String,
}

/// What sign-in needs to know about an account, found by username.
#[derive(Debug, Clone)]
pub struct LoginCandidate {
    /// The user.
    pub user: User,
    /// Their organisation's policy.
    pub policy: OrgPolicy,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// The sealed TOTP secret, when enrolled.
    pub totp_sealed: Option<Vec<u8>>,
    /// The sealed TOTP secret of an enrolment not yet confirmed.
    pub totp_pending_sealed: Option<Vec<u8>>,
    /// The last TOTP step accepted.
    pub totp_last_step: Option<i64>,
}

/// One page of users, ordered by username.
#[derive(Debug, Clone)]
pub struct UserPage {
    /// The users.
    pub users: Vec<User>,
    /// The username to pass as `after` for the next page, if there is one.
    pub next_after: Option<String>,
}

/// Runs an UPDATE of one user row of organisation `org`: `set` is the SET clause, whose
/// placeholders start at $3 (`$1` is the user id, `$2` the organisation).
async fn update_user(
    conn: &mut AnyConnection,
    org: OrgId,
    id: UserId,
    set: &'static str,
    bind: impl FnOnce(
        sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
) -> StoreResult<()> {
    let sql = format!("UPDATE users SET {set} WHERE id = $1 AND org_id = $2");
    let q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string()).bind(org.to_string());
    touched(bind(q).execute(&mut *conn).await?)
}

/// The policy's attachment limit as stored (validated policies are far below `i64::MAX`).
fn attachment_bytes(policy: &OrgPolicy) -> i64 {
    i64::try_from(policy.max_attachment_bytes).unwrap_or(i64::MAX)
}

impl Store {
    /// Creates an organisation.
    pub async fn create_org(&self, org: &Organization, audit_rec: &AuditRecord) -> StoreResult<()> {
        self.audited(audit_rec, org.created_at, async |c| {
            sqlx::query(
                "INSERT INTO organizations (id, name, mfa_required, inactivity_timeout_seconds,
                 session_lifetime_seconds, max_attachment_bytes, attachment_kinds, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(org.id.to_string())
            .bind(&org.name)
            .bind(flag(org.policy.mfa_required))
            .bind(i64::from(org.policy.inactivity_timeout_seconds))
            .bind(i64::from(org.policy.session_lifetime_seconds))
            .bind(attachment_bytes(&org.policy))
            .bind(org.policy.attachment_kinds.to_storage())
            .bind(ms(org.created_at))
            .execute(&mut *c)
            .await?;
            Ok(())
        })
        .await
    }

    /// An organisation by id.
    pub async fn org(&self, id: OrgId) -> StoreResult<Organization> {
        let sql = format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.read)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::org(&row)
    }

    /// Every organisation, by name (for the operator's CLI).
    pub async fn orgs(&self) -> StoreResult<Vec<Organization>> {
        let sql = format!("SELECT {ORG_COLUMNS} FROM organizations ORDER BY name, id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.read).await?;
        rows.iter().map(rows::org).collect()
    }

    /// Replaces an organisation's policy.
    pub async fn set_org_policy(
        &self,
        id: OrgId,
        policy: &OrgPolicy,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<Vec<(UserId, SessionId)>> {
        self.auth_write(async {
            self.audited(audit_rec, now, async |c| {
                let done = sqlx::query(
                    "UPDATE organizations SET mfa_required = $1, inactivity_timeout_seconds = $2,
                     session_lifetime_seconds = $3, max_attachment_bytes = $4, attachment_kinds = $5
                     WHERE id = $6",
                )
                .bind(flag(policy.mfa_required))
                .bind(i64::from(policy.inactivity_timeout_seconds))
                .bind(i64::from(policy.session_lifetime_seconds))
                .bind(attachment_bytes(policy))
                .bind(policy.attachment_kinds.to_storage())
                .bind(id.to_string())
                .execute(&mut *c)
                .await?;
                touched(done)?;
                if !policy.mfa_required {
                    return Ok(Vec::new());
                }
                // Requiring MFA ends the single-factor sessions of users without an authenticator
                // at once: they sign in again and enrol.
                let rows = sqlx::query(
                    "UPDATE sessions SET ended_at = $1, end_reason = 'mfa_now_required'
                     WHERE org_id = $2 AND ended_at IS NULL AND state = 'active'
                       AND user_id IN (SELECT id FROM users WHERE org_id = $2 AND totp_sealed IS NULL)
                     RETURNING user_id, id",
                )
                .bind(ms(now))
                .bind(id.to_string())
                .fetch_all(&mut *c)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok((rows::id(&get::<String>(r, "user_id")?)?, rows::id(&get::<String>(r, "id")?)?))
                    })
                    .collect()
            })
            .await
        })
        .await
    }

    /// Creates a user; `Conflict("username")` when the name is taken anywhere on the server.
    pub async fn create_user(
        &self,
        u: &NewUser,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<User> {
        self.audited(audit_rec, now, async |c| {
            sqlx::query(
                "INSERT INTO users (id, org_id, username, display_name, roles, status, password_hash,
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $7)",
            )
            .bind(u.id.to_string())
            .bind(u.org_id.to_string())
            .bind(&u.username)
            .bind(&u.display_name)
            .bind(u.roles.to_storage())
            .bind(&u.password_hash)
            .bind(ms(now))
            .execute(&mut *c)
            .await
            .map_err(rows::conflict("username"))?;
            Ok(())
        })
        .await?;
        Ok(User {
            id: u.id,
            org_id: u.org_id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            roles: u.roles.clone(),
            status: UserStatus::Active,
            mfa_enrolled: false,
            created_at: now,
        })
    }

    /// A user of organisation `org`.
    pub async fn user(&self, org: OrgId, id: UserId) -> StoreResult<User> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(org.to_string())
            .fetch_optional(&self.read)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::user(&row)
    }

    /// A user of organisation `org` by username.
    pub async fn user_by_username(&self, org: OrgId, username: &str) -> StoreResult<User> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1 AND org_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(username)
            .bind(org.to_string())
            .fetch_optional(&self.read)
            .await?
            .ok_or(StoreError::NotFound)?;
        rows::user(&row)
    }

    /// A page of an organisation's users, ordered by username, after `after`.
    pub async fn users(
        &self,
        org: OrgId,
        search: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<UserPage> {
        // A search matches a part of the username or the display name, case-insensitively;
        // LIKE's wildcards in the search are taken literally.
        let pattern = search.map(|q| {
            let escaped = q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM users WHERE org_id = $1 AND username > $2
               AND (CAST($4 AS TEXT) IS NULL OR lower(username) LIKE $4 ESCAPE '\\' OR lower(display_name) LIKE $4 ESCAPE '\\')
             ORDER BY username LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.to_string())
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit) + 1)
            .bind(pattern)
            .fetch_all(&self.read)
            .await?;
        let mut users = rows.iter().map(rows::user).collect::<StoreResult<Vec<_>>>()?;
        let next_after = if users.len() > limit as usize {
            users.truncate(limit as usize);
            users.last().map(|u| u.username.clone())
        } else {
            None
        };
        Ok(UserPage { users, next_after })
    }

    /// Everything sign-in needs, by username (server-wide: usernames are unique).
    pub async fn login_candidate(&self, username: &str) -> StoreResult<Option<LoginCandidate>> {
        let sql = format!(
            "SELECT u.{cols}, u.password_hash, u.totp_sealed AS totp, u.totp_pending_sealed AS pending,
                    u.totp_last_step, {policy}
             FROM users u JOIN organizations o ON o.id = u.org_id WHERE u.username = $1",
            cols = USER_COLUMNS.replace(", ", ", u."),
            policy = rows::POLICY_OF_O,
        );
        let Some(row) =
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(username).fetch_optional(&self.read).await?
        else {
            return Ok(None);
        };
        Ok(Some(LoginCandidate {
            user: rows::user(&row)?,
            policy: rows::policy(&row)?,
            password_hash: get(&row, "password_hash")?,
            totp_sealed: get(&row, "totp")?,
            totp_pending_sealed: get(&row, "pending")?,
            totp_last_step: get(&row, "totp_last_step")?,
        }))
    }

    /// Replaces a user's roles.
    pub async fn set_user_roles(
        &self,
        org: OrgId,
        id: UserId,
        roles: &RoleSet,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.auth_write(async {
            self.audited(audit_rec, now, async |c| {
                update_user(c, org, id, "roles = $3, updated_at = $4", |q| {
                    q.bind(roles.to_storage()).bind(ms(now))
                })
                .await
            })
            .await
        })
        .await
    }

    /// Deactivates a user and ends every one of their sessions, in one transaction.
    pub async fn deactivate_user(
        &self,
        org: OrgId,
        id: UserId,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.auth_write(async {
            self.audited(audit_rec, now, async |c| {
                update_user(c, org, id, "status = 'deactivated', updated_at = $3", |q| q.bind(ms(now)))
                    .await?;
                crate::sessions::end_all(c, id, None, "user_deactivated", now).await?;
                Ok(())
            })
            .await
        })
        .await
    }

    /// Removes a user's authenticator and recovery codes and ends their sessions; they must
    /// enrol again at next sign-in.
    pub async fn reset_mfa(
        &self,
        org: OrgId,
        id: UserId,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.auth_write(async {
            self.audited(audit_rec, now, async |c| {
                update_user(
                    c,
                    org,
                    id,
                    "totp_sealed = NULL, totp_pending_sealed = NULL, totp_last_step = NULL, updated_at = $3",
                    |q| q.bind(ms(now)),
                )
                .await?;
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *c)
                    .await?;
                crate::sessions::end_all(c, id, None, "mfa_reset", now).await?;
                Ok(())
            })
            .await
        })
        .await
    }

    /// Stores a new password hash and ends every session of the user but `keep`.
    pub async fn set_password(
        &self,
        org: OrgId,
        id: UserId,
        password_hash: &str,
        keep: Option<SessionId>,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.auth_write(async {
            self.audited(audit_rec, now, async |c| {
                update_user(c, org, id, "password_hash = $3, updated_at = $4", |q| {
                    q.bind(password_hash).bind(ms(now))
                })
                .await?;
                crate::sessions::end_all(c, id, keep, "password_changed", now).await?;
                Ok(())
            })
            .await
        })
        .await
    }

    /// Stores the sealed secret of an enrolment in progress (replacing any earlier one).
    pub async fn set_pending_totp(
        &self,
        org: OrgId,
        id: UserId,
        sealed: &[u8],
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.auth_write(async {
            self.audited(audit_rec, now, async |c| {
                let enrolled: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM users WHERE id = $1 AND org_id = $2 AND totp_sealed IS NOT NULL",
                )
                .bind(id.to_string())
                .bind(org.to_string())
                .fetch_one(&mut *c)
                .await?;
                if enrolled > 0 {
                    return Err(StoreError::Conflict("mfa_already_enrolled"));
                }
                update_user(c, org, id, "totp_pending_sealed = $3, updated_at = $4", |q| {
                    q.bind(sealed.to_vec()).bind(ms(now))
                })
                .await
            })
            .await
        })
        .await
    }

    /// How many unused recovery codes a user has left.
    pub async fn recovery_codes_left(&self, id: UserId) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(id.to_string())
            .fetch_one(&self.read)
            .await?)
    }

    /// Every sealed TOTP secret (enrolled and pending), for re-sealing at key rotation:
    /// (user, organisation, enrolled, pending).
    pub async fn totp_secrets(&self) -> StoreResult<Vec<SealedTotp>> {
        let rows = sqlx::query(
            "SELECT id, org_id, totp_sealed, totp_pending_sealed FROM users
             WHERE totp_sealed IS NOT NULL OR totp_pending_sealed IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SealedTotp {
                    user_id: rows::id(&get::<String>(r, "id")?)?,
                    org_id: rows::id(&get::<String>(r, "org_id")?)?,
                    enrolled: get(r, "totp_sealed")?,
                    pending: get(r, "totp_pending_sealed")?,
                })
            })
            .collect()
    }

    /// Replaces a user's sealed TOTP secrets if they are still `old` (compare-and-set, so an
    /// enrolment or reset meanwhile wins). Returns whether it replaced them.
    pub async fn reseal_totp(
        &self,
        old: &SealedTotp,
        new: &SealedTotp,
        audit_rec: &AuditRecord,
        now: Timestamp,
    ) -> StoreResult<bool> {
        self.auth_write(async {
            let r = self
                .audited(audit_rec, now, async |c| {
                    let done = sqlx::query(
                        "UPDATE users SET totp_sealed = $2, totp_pending_sealed = $3
                         WHERE id = $1 AND totp_sealed IS NOT DISTINCT FROM $4 AND totp_pending_sealed IS NOT DISTINCT FROM $5",
                    )
                    .bind(old.user_id.to_string())
                    .bind(new.enrolled.clone())
                    .bind(new.pending.clone())
                    .bind(old.enrolled.clone())
                    .bind(old.pending.clone())
                    .execute(&mut *c)
                    .await?;
                    touched(done)
                })
                .await;
            match r {
                Ok(()) => Ok(true),
                Err(StoreError::NotFound) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

/// A user's sealed TOTP secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedTotp {
    /// The user.
    pub user_id: UserId,
    /// Their organisation.
    pub org_id: OrgId,
    /// The enrolled secret, sealed.
    pub enrolled: Option<Vec<u8>>,
    /// A pending enrolment's secret, sealed.
    pub pending: Option<Vec<u8>>,
}
