//! Administration: organisations, users, roles and policies. Every method takes an [`Actor`]:
//! a signed-in user is held to their permissions and their own organisation; the operator at
//! the CLI may act in any organisation.

use haven_crypto::Secret;
use haven_domain::audit::{AuditAction, AuditOutcome};
use haven_domain::org::{OrgPolicy, Organization, check_org_name};
use haven_domain::password::{PasswordContext, check_password};
use haven_domain::roles::{Permission, Role, RoleSet};
use haven_domain::user::{User, check_display_name, normalize_username};
use haven_domain::{OrgId, UserId};
use haven_store::{NewUser, UserPage};

use crate::{Actor, App, AppError, AppResult};

const USERS: &str = "user-management";

/// What is needed to create a user.
#[derive(Debug)]
pub struct CreateUser {
    /// Login name (normalised to lowercase).
    pub username: String,
    /// Name shown to colleagues.
    pub display_name: String,
    /// Roles, at least one.
    pub roles: Vec<Role>,
    /// Initial password, checked against the password rules.
    pub password: Secret<String>,
}

impl App {
    /// Creates an organisation (operator only: tenants are provisioned by whoever runs the
    /// server).
    pub async fn create_org(&self, actor: &Actor, name: &str) -> AppResult<Organization> {
        if !matches!(actor, Actor::Operator) {
            return Err(AppError::NotFound);
        }
        let org = Organization {
            id: self.new_id(|r| OrgId::random(r)),
            name: check_org_name(name)?,
            policy: self.settings.default_policy,
            created_at: self.now(),
        };
        let rec = self
            .record(
                Some(org.id),
                USERS,
                "organization-create",
                AuditAction::C,
                AuditOutcome::Success,
                actor.agent(),
            )
            .entity("organization", org.id);
        self.store.create_org(&org, &rec).await?;
        Ok(org)
    }

    /// Every organisation (operator only).
    pub async fn orgs(&self, actor: &Actor) -> AppResult<Vec<Organization>> {
        if !matches!(actor, Actor::Operator) {
            return Err(AppError::NotFound);
        }
        Ok(self.store.orgs().await?)
    }

    /// The actor's organisation (any signed-in user may see its name and policy).
    pub async fn org(&self, actor: &Actor, org: OrgId) -> AppResult<Organization> {
        Ok(self.store.org(actor.org_scope(org)).await?)
    }

    /// Replaces the organisation's policy.
    pub async fn set_policy(&self, actor: &Actor, org: OrgId, policy: OrgPolicy) -> AppResult<Organization> {
        actor.require(Permission::PolicyManage)?;
        policy.validate()?;
        let org = actor.org_scope(org);
        let rec = self
            .record(
                Some(org),
                "policy",
                "policy-change",
                AuditAction::U,
                AuditOutcome::Success,
                actor.agent(),
            )
            .entity("policy", org);
        for (user, session) in self.store.set_org_policy(org, &policy, &rec, self.now()).await? {
            self.close_sockets(user, Some(session), None);
        }
        Ok(self.store.org(org).await?)
    }

    /// Creates a user in the organisation.
    pub async fn create_user(&self, actor: &Actor, org: OrgId, input: CreateUser) -> AppResult<User> {
        actor.require(Permission::UsersManage)?;
        let org = self.store.org(actor.org_scope(org)).await?;
        let username = normalize_username(&input.username)?;
        let display_name = check_display_name(&input.display_name)?;
        let roles = RoleSet::new(input.roles)?;
        check_password(
            input.password.expose(),
            &PasswordContext {
                username: &username,
                display_name: &display_name,
                mfa: org.policy.mfa_required,
            },
        )?;
        let password_hash = self.hash_password(input.password).await?;
        let id = self.new_id(|r| UserId::random(r));
        let rec = self
            .record(Some(org.id), USERS, "user-create", AuditAction::C, AuditOutcome::Success, actor.agent())
            .entity("user", id);
        let new = NewUser { id, org_id: org.id, username, display_name, roles, password_hash };
        Ok(self.store.create_user(&new, &rec, self.now()).await?)
    }

    /// A page of the organisation's users; `search` matches a part of the username or the
    /// display name, case-insensitively.
    pub async fn users(
        &self,
        actor: &Actor,
        org: OrgId,
        search: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> AppResult<UserPage> {
        actor.require(Permission::DirectoryRead)?;
        let search = search.map(str::trim).filter(|q| !q.is_empty());
        if search.is_some_and(|q| q.chars().count() > 100) {
            return Err(haven_domain::ValidationError::new(
                "q",
                "too_long",
                "a search is at most 100 characters",
            )
            .into());
        }
        Ok(self.store.users(actor.org_scope(org), search, after, limit.clamp(1, 200)).await?)
    }

    /// One user of the organisation.
    pub async fn user(&self, actor: &Actor, org: OrgId, id: UserId) -> AppResult<User> {
        actor.require(Permission::DirectoryRead)?;
        Ok(self.store.user(actor.org_scope(org), id).await?)
    }

    /// One user of the organisation, by username (for the CLI).
    pub async fn user_by_username(&self, actor: &Actor, org: OrgId, username: &str) -> AppResult<User> {
        actor.require(Permission::DirectoryRead)?;
        let username = normalize_username(username).map_err(|_| AppError::NotFound)?;
        Ok(self.store.user_by_username(actor.org_scope(org), &username).await?)
    }

    fn refuse_self(actor: &Actor, id: UserId, what: &str) -> AppResult<()> {
        if let Actor::User(p) = actor
            && p.user.id == id
        {
            return Err(AppError::Conflict(
                "cannot_change_self",
                format!("you cannot {what} your own account; ask another administrator"),
            ));
        }
        Ok(())
    }

    /// Deactivates a user; all their sessions end at once.
    pub async fn deactivate_user(&self, actor: &Actor, org: OrgId, id: UserId) -> AppResult<User> {
        actor.require(Permission::UsersManage)?;
        Self::refuse_self(actor, id, "deactivate")?;
        let org = actor.org_scope(org);
        let rec = self
            .record(Some(org), USERS, "user-deactivate", AuditAction::U, AuditOutcome::Success, actor.agent())
            .entity("user", id);
        self.store.deactivate_user(org, id, &rec, self.now()).await?;
        self.close_sockets(id, None, None);
        Ok(self.store.user(org, id).await?)
    }

    /// Removes a user's authenticator and recovery codes; they enrol again at next sign-in.
    pub async fn reset_mfa(&self, actor: &Actor, org: OrgId, id: UserId) -> AppResult<User> {
        actor.require(Permission::UsersManage)?;
        let org = actor.org_scope(org);
        let rec = self
            .record(Some(org), USERS, "mfa-reset", AuditAction::U, AuditOutcome::Success, actor.agent())
            .entity("user", id);
        self.store.reset_mfa(org, id, &rec, self.now()).await?;
        self.close_sockets(id, None, None);
        Ok(self.store.user(org, id).await?)
    }

    /// Replaces a user's roles. An administrator cannot take away their own admin role.
    pub async fn set_roles(
        &self,
        actor: &Actor,
        org: OrgId,
        id: UserId,
        roles: Vec<Role>,
    ) -> AppResult<User> {
        actor.require(Permission::UsersManage)?;
        let roles = RoleSet::new(roles)?;
        if !roles.contains(Role::OrgAdmin) {
            Self::refuse_self(actor, id, "remove the administrator role from")?;
        }
        let org = actor.org_scope(org);
        let rec = self
            .record(Some(org), USERS, "user-roles", AuditAction::U, AuditOutcome::Success, actor.agent())
            .entity("user", id);
        self.store.set_user_roles(org, id, &roles, &rec, self.now()).await?;
        // Open sockets were authorised under the old roles: they reconnect under the new ones.
        self.close_sockets(id, None, None);
        Ok(self.store.user(org, id).await?)
    }

    /// The built-in roles and the permissions each grants.
    pub fn roles(&self, actor: &Actor) -> AppResult<Vec<(Role, &'static [Permission])>> {
        actor.require(Permission::RolesRead)?;
        Ok(Role::ALL.iter().map(|r| (*r, r.permissions())).collect())
    }
}
