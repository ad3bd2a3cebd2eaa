//! Sign-in, the second factor, sessions, sign-out and password change.
//!
//! Sign-in is two steps when the user has MFA: the password creates a session in state
//! `mfa_required`, and a TOTP or recovery code promotes it, under a new token, to `active`. A
//! user whose organisation requires MFA and who has none gets a session that can only enrol.

use haven_crypto::Secret;
use haven_crypto::token::{self, digest};
use haven_crypto::totp::{self, TotpSecret};
use haven_domain::SessionId;
use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_domain::password::{PasswordContext, check_password};
use haven_domain::session::{self, SessionState};
use haven_domain::throttle::ThrottlePolicy;
use haven_domain::user::{UserStatus, normalize_username};
use haven_store::{MfaProof, NewSession, SessionRecord};
use jiff::Timestamp;

use crate::{App, AppError, AppResult, Principal, RequestMeta};

/// A session as the client sees it, with its token (returned once, at creation).
#[derive(Debug)]
pub struct IssuedSession {
    /// The bearer token; only its digest is stored.
    pub token: Secret<String>,
    /// Sign-in state.
    pub state: SessionState,
    /// Absolute end of the session.
    pub expires_at: Timestamp,
    /// Inactivity timeout of the user's organisation.
    pub inactivity_timeout_seconds: u32,
}

/// A session found by its token, whatever its state: what the MFA steps act on.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// The stored session.
    pub record: SessionRecord,
    /// Where the request came from.
    pub meta: RequestMeta,
}

impl SessionContext {
    fn principal(&self) -> Principal {
        Principal {
            user: self.record.user.clone(),
            policy: self.record.policy,
            session_id: self.record.id,
            meta: self.meta.clone(),
        }
    }
}

/// A started TOTP enrolment: what the user scans or types.
#[derive(Debug)]
pub struct Enrolment {
    /// The base32 secret.
    pub secret: Secret<String>,
    /// The `otpauth://` URI.
    pub otpauth_uri: Secret<String>,
    /// The URI as a QR code, SVG.
    pub qr_svg: Secret<String>,
}

/// A confirmed enrolment: the new active session and the recovery codes (shown once).
#[derive(Debug)]
pub struct EnrolmentDone {
    /// The new session (fresh token).
    pub session: IssuedSession,
    /// Ten single-use recovery codes.
    pub recovery_codes: Vec<Secret<String>>,
}

const AUTH: &str = "user-authentication";

fn account_key(username: &str) -> String {
    format!("acct:{}", digest(&username.trim().to_lowercase()))
}

fn source_key(meta: &RequestMeta) -> Option<String> {
    meta.address.as_ref().map(|a| format!("src:{a}"))
}

impl App {
    /// Counts the attempt against its keys before it is checked (so concurrent attempts cannot
    /// exceed the limit); refuses when a key is over its limit.
    async fn check_throttles(&self, keys: &[(&str, ThrottlePolicy)], now: Timestamp) -> AppResult<()> {
        match self.store.reserve_attempt(keys, now).await? {
            Some(retry_after_secs) => Err(AppError::Throttled { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// A success gives back its reservation: only failures count.
    async fn release(&self, keys: &[(&str, ThrottlePolicy)]) -> AppResult<()> {
        let keys: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
        Ok(self.store.release_attempt(&keys).await?)
    }

    /// Records a refusal by the throttle (the attempt itself was not made).
    async fn record_throttled(
        &self,
        org: Option<haven_domain::OrgId>,
        subtype: &str,
        agent: haven_domain::audit::AuditAgent,
        now: Timestamp,
    ) -> AppResult<()> {
        let rec = self
            .record(org, AUTH, subtype, AuditAction::E, AuditOutcome::MinorFailure, agent)
            .code("throttled");
        self.store.record_audit(&rec, now).await?;
        Ok(())
    }

    async fn verify_password_blocking(&self, password: Secret<String>, stored: Option<String>) -> bool {
        let hasher = self.hasher.clone();
        tokio::task::spawn_blocking(move || {
            // An unknown account costs the same Argon2 work as a known one.
            let target = stored.unwrap_or_else(|| hasher.dummy_hash().to_owned());
            let ok = hasher.verify(password.expose().as_bytes(), &target).unwrap_or(false);
            ok && !target.is_empty()
        })
        .await
        .unwrap_or(false)
    }

    fn issue(
        &self,
        user_state: SessionState,
        rec_user: &haven_domain::user::User,
        policy: &haven_domain::org::OrgPolicy,
        meta: &RequestMeta,
        now: Timestamp,
    ) -> (NewSession, IssuedSession) {
        let token = token::session_token(self.random::<32>());
        let id = self.new_id(|r| SessionId::random(r));
        let expires_at = session::expires_at(policy, user_state, now);
        let new = NewSession {
            id,
            token_digest: digest(token.expose()),
            org_id: rec_user.org_id,
            user_id: rec_user.id,
            state: user_state,
            created_at: now,
            expires_at,
            address: meta.address.clone(),
            user_agent: meta.user_agent.clone(),
        };
        let issued = IssuedSession {
            token,
            state: user_state,
            expires_at,
            inactivity_timeout_seconds: policy.inactivity_timeout_seconds,
        };
        (new, issued)
    }

    /// The password step of sign-in.
    pub async fn login(
        &self,
        username: &str,
        password: Secret<String>,
        meta: &RequestMeta,
    ) -> AppResult<IssuedSession> {
        let now = self.now();
        let acct = account_key(username);
        let src = source_key(meta);
        let mut keys = vec![(acct.as_str(), self.settings.account_throttle)];
        if let Some(s) = &src {
            keys.push((s.as_str(), self.settings.source_throttle));
        }
        let agent = meta_agent(meta);
        if let Err(e) = self.check_throttles(&keys, now).await {
            let rec = self
                .record(None, AUTH, "login", AuditAction::E, AuditOutcome::MinorFailure, agent)
                .entity("account-name-digest", &acct[5..])
                .code("throttled");
            self.store.record_audit(&rec, now).await?;
            return Err(e);
        }
        let candidate = match normalize_username(username) {
            Ok(u) => self.store.login_candidate(&u).await?,
            Err(_) => None,
        };
        let ok = self
            .verify_password_blocking(password, candidate.as_ref().map(|c| c.password_hash.clone()))
            .await;
        let candidate = match candidate {
            Some(c) if ok && c.user.status == UserStatus::Active => c,
            other => {
                let (org, user, code) = match &other {
                    Some(c) if c.user.status != UserStatus::Active => {
                        (Some(c.user.org_id), Some(c.user.id), "account_deactivated")
                    }
                    Some(c) => (Some(c.user.org_id), Some(c.user.id), "wrong_password"),
                    None => (None, None, "unknown_account"),
                };
                let mut agent = agent;
                agent.user_id = user;
                let mut rec = self
                    .record(org, AUTH, "login", AuditAction::E, AuditOutcome::MinorFailure, agent)
                    .code(code);
                if user.is_none() {
                    rec = rec.entity("account-name-digest", &acct[5..]);
                }
                // The attempt was counted when it was reserved.
                self.store.record_audit(&rec, now).await?;
                return Err(AppError::InvalidCredentials);
            }
        };
        self.store.clear_failures(&acct).await?;
        self.release(&keys[1..]).await?;
        let user = &candidate.user;
        let state = if user.mfa_enrolled {
            SessionState::MfaRequired
        } else if candidate.policy.mfa_required {
            SessionState::MfaEnrollmentRequired
        } else {
            SessionState::Active
        };
        let (new, issued) = self.issue(state, user, &candidate.policy, meta, now);
        let mut agent = meta_agent(meta);
        agent.user_id = Some(user.id);
        agent.role = Some(user.roles.primary());
        agent.session_id = Some(new.id);
        let subtype = if state == SessionState::Active { "login" } else { "login-password" };
        let rec = self
            .record(Some(user.org_id), AUTH, subtype, AuditAction::E, AuditOutcome::Success, agent)
            .entity("user", user.id)
            .entity("session", new.id);
        self.store.create_session(&new, &rec).await?;
        Ok(issued)
    }

    /// Ends (and records) every session that has timed out, so automatic logoff is recorded
    /// when it happens, not when the token is next presented. Returns how many ended.
    pub async fn end_timed_out_sessions(&self) -> AppResult<u64> {
        let now = self.now();
        let shortest = jiff::SignedDuration::from_secs(i64::from(haven_domain::org::INACTIVITY_BOUNDS.0));
        let mut ended = 0;
        for r in self.store.stale_sessions(now - shortest, now, 1000).await? {
            if let Err(end) = session::check_alive(&r.policy, r.state, r.created_at, r.last_seen_at, now) {
                let ctx = SessionContext { record: r, meta: RequestMeta::default() };
                self.end_timed_out(&ctx, end, now).await?;
                ended += 1;
            }
        }
        Ok(ended)
    }

    async fn end_timed_out(
        &self,
        ctx: &SessionContext,
        end: session::SessionEnd,
        now: Timestamp,
    ) -> AppResult<()> {
        let r = &ctx.record;
        let rec = self
            .record(
                Some(r.user.org_id),
                AUTH,
                "session-timeout",
                AuditAction::E,
                AuditOutcome::Success,
                ctx.principal().agent(),
            )
            .entity("session", r.id)
            .code(end.as_str());
        self.store.end_session(r.id, end.as_str(), &rec, now).await?;
        self.close_sockets(r.user.id, Some(r.id), None);
        Ok(())
    }

    /// Finds the session of a token, ending it (and recording why) if it has timed out.
    /// Activity is recorded, at most every few seconds.
    pub async fn session(&self, token: &str, meta: &RequestMeta) -> AppResult<SessionContext> {
        let now = self.now();
        let digest = digest(token);
        // The epoch is read before the session, so a change committed meanwhile leaves the
        // entry kept below already out of date.
        let epoch = self.store.auth_epoch();
        let record = match self.caches.session(&digest, epoch) {
            Some(r) => r,
            None => {
                let r = self.store.session_by_token(&digest).await?.ok_or(AppError::Unauthenticated)?;
                self.caches.keep_session(&digest, r.clone(), epoch);
                r
            }
        };
        if record.user.status != UserStatus::Active {
            return Err(AppError::Unauthenticated);
        }
        let ctx = SessionContext { record, meta: meta.clone() };
        let r = &ctx.record;
        if let Err(end) = session::check_alive(&r.policy, r.state, r.created_at, r.last_seen_at, now) {
            self.end_timed_out(&ctx, end, now).await?;
            return Err(AppError::SessionExpired);
        }
        if !meta.background && now.duration_since(r.last_seen_at) >= session::TOUCH_GRANULARITY {
            self.store.touch_session(r.id, now).await?;
            self.caches.session_touched(&digest, now);
        }
        Ok(ctx)
    }

    /// Authenticates a fully signed-in user: the session must be active.
    pub async fn authenticate(&self, token: &str, meta: &RequestMeta) -> AppResult<Principal> {
        let ctx = self.session(token, meta).await?;
        if ctx.record.state != SessionState::Active {
            return Err(AppError::MfaRequired(ctx.record.state));
        }
        Ok(ctx.principal())
    }

    async fn mfa_failure(&self, ctx: &SessionContext, subtype: &str, code: &str) -> AppResult<AppError> {
        let now = self.now();
        let rec = self
            .record(
                Some(ctx.record.user.org_id),
                AUTH,
                subtype,
                AuditAction::E,
                AuditOutcome::MinorFailure,
                ctx.principal().agent(),
            )
            .entity("user", ctx.record.user.id)
            .code(code);
        // The attempt was counted when it was reserved.
        self.store.record_audit(&rec, now).await?;
        Ok(AppError::InvalidCode)
    }

    fn mfa_keys(&self, ctx: &SessionContext) -> (String, Option<String>) {
        (format!("mfa:{}", ctx.record.user.id), source_key(&ctx.meta))
    }

    /// Reserves an MFA attempt (audited when refused); `release` gives it back on success.
    async fn check_mfa_throttle(&self, ctx: &SessionContext, subtype: &str, release: bool) -> AppResult<()> {
        let (mfa_key, src) = self.mfa_keys(ctx);
        let mut keys = vec![(mfa_key.as_str(), self.settings.mfa_throttle)];
        if let Some(s) = &src {
            keys.push((s.as_str(), self.settings.source_throttle));
        }
        if release {
            return self.release(&keys).await;
        }
        let now = self.now();
        if let Err(e) = self.check_throttles(&keys, now).await {
            let mut agent = ctx.principal().agent();
            agent.user_id = Some(ctx.record.user.id);
            self.record_throttled(Some(ctx.record.user.org_id), subtype, agent, now).await?;
            return Err(e);
        }
        Ok(())
    }

    fn unseal_totp(&self, ctx: &SessionContext, sealed: &[u8]) -> AppResult<TotpSecret> {
        let aad = ctx.record.user.id.to_string();
        let (bytes, _) = self
            .open_totp(aad.as_bytes(), sealed)
            .map_err(|_| AppError::Internal("a stored TOTP secret failed to open".into()))?;
        Ok(TotpSecret::from_bytes(bytes.expose().clone()))
    }

    /// The second step of sign-in: a TOTP code or a recovery code.
    pub async fn verify_mfa(&self, ctx: &SessionContext, code: Secret<String>) -> AppResult<IssuedSession> {
        if ctx.record.state != SessionState::MfaRequired {
            return Err(AppError::Conflict(
                "mfa_not_pending",
                "this session is not waiting for a second factor".into(),
            ));
        }
        self.check_mfa_throttle(ctx, "mfa-verify", false).await?;
        let now = self.now();
        let cand =
            self.store.login_candidate(&ctx.record.user.username).await?.ok_or(AppError::Unauthenticated)?;
        let sealed = cand.totp_sealed.as_deref().ok_or(AppError::Unauthenticated)?;
        let secret = self.unseal_totp(ctx, sealed)?;
        let unix = u64::try_from(now.as_second()).unwrap_or(0);
        let last = cand.totp_last_step.and_then(|s| u64::try_from(s).ok());
        let typed = code.expose().trim();
        let proof = if typed.len() == totp::DIGITS {
            secret.verify(typed, unix, last).map(|s| MfaProof::TotpStep(s as i64))
        } else {
            Some(MfaProof::RecoveryCode(digest(&token::normalize_recovery_code(typed))))
        };
        let subtype = match proof {
            Some(MfaProof::RecoveryCode(_)) => "mfa-recovery-code",
            _ => "mfa-verify",
        };
        let Some(proof) = proof else {
            return Err(self.mfa_failure(ctx, subtype, "wrong_code").await?);
        };
        let (new, issued) = self.issue(SessionState::Active, &cand.user, &cand.policy, &ctx.meta, now);
        let mut agent = ctx.principal().agent();
        agent.session_id = Some(new.id);
        let rec = self
            .record(Some(cand.user.org_id), AUTH, subtype, AuditAction::E, AuditOutcome::Success, agent)
            .entity("user", cand.user.id)
            .entity("session", new.id);
        if !self.store.complete_mfa(ctx.record.id, &proof, &new, &rec).await? {
            return Err(self.mfa_failure(ctx, subtype, "code_reused").await?);
        }
        self.check_mfa_throttle(ctx, subtype, true).await?;
        Ok(issued)
    }

    /// Starts TOTP enrolment for a user without an authenticator.
    pub async fn start_enrolment(&self, ctx: &SessionContext) -> AppResult<Enrolment> {
        if ctx.record.user.mfa_enrolled {
            return Err(AppError::Conflict(
                "mfa_already_enrolled",
                "an authenticator is already enrolled; an administrator can reset it".into(),
            ));
        }
        if ctx.record.state == SessionState::MfaRequired {
            return Err(AppError::MfaRequired(ctx.record.state));
        }
        let now = self.now();
        let secret = TotpSecret::from_random(self.random::<20>());
        let aad = ctx.record.user.id.to_string();
        let sealed = self.seal_totp(aad.as_bytes(), secret.expose_bytes());
        let rec = self
            .record(
                Some(ctx.record.user.org_id),
                AUTH,
                "mfa-enroll-start",
                AuditAction::C,
                AuditOutcome::Success,
                ctx.principal().agent(),
            )
            .entity("user", ctx.record.user.id);
        self.store.set_pending_totp(ctx.record.user.org_id, ctx.record.user.id, &sealed, &rec, now).await?;
        let issuer = self.settings.totp_issuer.clone();
        let uri = secret.otpauth_uri(&issuer, &ctx.record.user.username);
        let svg = totp::qr_svg(&uri).map_err(|e| AppError::Internal(e.to_string()))?;
        Ok(Enrolment { secret: secret.base32(), otpauth_uri: Secret::new(uri), qr_svg: Secret::new(svg) })
    }

    /// Confirms enrolment with a first code; returns recovery codes and a new active session.
    pub async fn confirm_enrolment(
        &self,
        ctx: &SessionContext,
        code: Secret<String>,
    ) -> AppResult<EnrolmentDone> {
        if ctx.record.state == SessionState::MfaRequired {
            return Err(AppError::MfaRequired(ctx.record.state));
        }
        self.check_mfa_throttle(ctx, "mfa-enroll", false).await?;
        let now = self.now();
        let cand =
            self.store.login_candidate(&ctx.record.user.username).await?.ok_or(AppError::Unauthenticated)?;
        let Some(pending) = cand.totp_pending_sealed.as_deref() else {
            return Err(AppError::Conflict("no_pending_enrollment", "start an enrolment first".into()));
        };
        let secret = self.unseal_totp(ctx, pending)?;
        let unix = u64::try_from(now.as_second()).unwrap_or(0);
        let Some(step) = secret.verify(code.expose(), unix, None) else {
            return Err(self.mfa_failure(ctx, "mfa-enroll", "wrong_code").await?);
        };
        let codes: Vec<Secret<String>> = (0..10).map(|_| token::recovery_code(self.random::<10>())).collect();
        let proof = MfaProof::Enrolment {
            step: step as i64,
            recovery_digests: codes.iter().map(|c| digest(c.expose())).collect(),
        };
        let (new, issued) = self.issue(SessionState::Active, &cand.user, &cand.policy, &ctx.meta, now);
        let mut agent = ctx.principal().agent();
        agent.session_id = Some(new.id);
        let rec = self
            .record(Some(cand.user.org_id), AUTH, "mfa-enroll", AuditAction::C, AuditOutcome::Success, agent)
            .entity("user", cand.user.id)
            .entity("session", new.id);
        if !self.store.complete_mfa(ctx.record.id, &proof, &new, &rec).await? {
            return Err(AppError::Conflict("no_pending_enrollment", "start an enrolment first".into()));
        }
        self.check_mfa_throttle(ctx, "mfa-enroll", true).await?;
        // Other sessions were single-factor and have ended (in the same transaction).
        self.close_sockets(cand.user.id, None, Some(new.id));
        Ok(EnrolmentDone { session: issued, recovery_codes: codes })
    }

    /// Ends the caller's session.
    pub async fn logout(&self, ctx: &SessionContext) -> AppResult<()> {
        let rec = self
            .record(
                Some(ctx.record.user.org_id),
                AUTH,
                "logout",
                AuditAction::E,
                AuditOutcome::Success,
                ctx.principal().agent(),
            )
            .entity("session", ctx.record.id);
        self.store.end_session(ctx.record.id, "logout", &rec, self.now()).await?;
        self.close_sockets(ctx.record.user.id, Some(ctx.record.id), None);
        Ok(())
    }

    /// Ends every session of the caller, this one included.
    pub async fn logout_everywhere(&self, p: &Principal) -> AppResult<u64> {
        let rec = self
            .record(Some(p.org()), AUTH, "logout-all", AuditAction::E, AuditOutcome::Success, p.agent())
            .entity("user", p.user.id);
        let n = self.store.end_user_sessions(p.org(), p.user.id, "logout_all", &rec, self.now()).await?;
        self.close_sockets(p.user.id, None, None);
        Ok(n)
    }

    /// The caller's live sessions (to spot one they do not recognise).
    pub async fn my_sessions(&self, p: &Principal) -> AppResult<Vec<haven_store::SessionSummary>> {
        Ok(self.store.user_sessions(p.org(), p.user.id).await?)
    }

    /// Ends one of the caller's own sessions.
    pub async fn end_my_session(&self, p: &Principal, id: SessionId) -> AppResult<()> {
        let rec = self
            .record(Some(p.org()), AUTH, "logout-session", AuditAction::E, AuditOutcome::Success, p.agent())
            .entity("session", id);
        self.store.end_user_session(p.user.id, id, "revoked_by_user", &rec, self.now()).await?;
        self.close_sockets(p.user.id, Some(id), None);
        Ok(())
    }

    /// Changes the caller's password after checking the current one; every other session of
    /// the user ends.
    pub async fn change_password(
        &self,
        p: &Principal,
        current: Secret<String>,
        new: Secret<String>,
    ) -> AppResult<()> {
        let now = self.now();
        let acct = account_key(&p.user.username);
        let keys = [(acct.as_str(), self.settings.account_throttle)];
        if let Err(e) = self.check_throttles(&keys, now).await {
            self.record_throttled(Some(p.org()), "password-change", p.agent(), now).await?;
            return Err(e);
        }
        let cand = self.store.login_candidate(&p.user.username).await?.ok_or(AppError::Unauthenticated)?;
        if !self.verify_password_blocking(current, Some(cand.password_hash)).await {
            let rec = self
                .record(
                    Some(p.org()),
                    AUTH,
                    "password-change",
                    AuditAction::U,
                    AuditOutcome::MinorFailure,
                    p.agent(),
                )
                .entity("user", p.user.id)
                .code("wrong_password");
            // The attempt was counted when it was reserved.
            self.store.record_audit(&rec, now).await?;
            return Err(AppError::InvalidCredentials);
        }
        self.release(&keys).await?;
        let ctx = PasswordContext {
            username: &p.user.username,
            display_name: &p.user.display_name,
            mfa: p.user.mfa_enrolled || p.policy.mfa_required,
        };
        check_password(new.expose(), &ctx)?;
        let hash = self.hash_password(new).await?;
        let rec = self
            .record(Some(p.org()), AUTH, "password-change", AuditAction::U, AuditOutcome::Success, p.agent())
            .entity("user", p.user.id);
        self.store.set_password(p.org(), p.user.id, &hash, Some(p.session_id), &rec, now).await?;
        self.close_sockets(p.user.id, None, Some(p.session_id));
        Ok(())
    }

    pub(crate) async fn hash_password(&self, password: Secret<String>) -> AppResult<String> {
        let hasher = self.hasher.clone();
        let salt = self.random::<16>();
        tokio::task::spawn_blocking(move || hasher.hash(password.expose().as_bytes(), salt))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
            .map_err(|e| AppError::Internal(e.to_string()))
    }

    /// The number of unused recovery codes of the caller.
    pub async fn recovery_codes_left(&self, p: &Principal) -> AppResult<i64> {
        Ok(self.store.recovery_codes_left(p.user.id).await?)
    }
}

/// An audit agent with only the request's origin filled in (before the user is known).
fn meta_agent(meta: &RequestMeta) -> haven_domain::audit::AuditAgent {
    haven_domain::audit::AuditAgent {
        address: meta.address.clone(),
        user_agent: meta.user_agent.clone(),
        ..Default::default()
    }
}
