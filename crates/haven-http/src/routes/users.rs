//! The user directory and user administration.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use haven_app::Actor;
use haven_app::admin::CreateUser;
use haven_crypto::Secret;
use haven_domain::roles::Role;
use haven_domain::user::{User, UserStatus};
use haven_domain::{OrgId, UserId};
use serde::{Deserialize, Serialize};

use crate::HttpState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, ApiPath, ApiQuery, Auth};

/// A user as the directory shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// User id.
    pub id: UserId,
    /// Organisation id.
    pub organization_id: OrgId,
    /// Login name.
    pub username: String,
    /// Display name.
    pub display_name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Active or deactivated.
    pub status: UserStatus,
    /// Whether an authenticator is enrolled.
    pub mfa_enrolled: bool,
    /// When the account was created (RFC 3339).
    pub created_at: String,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id,
            organization_id: u.org_id,
            username: u.username,
            display_name: u.display_name,
            roles: u.roles.roles().to_vec(),
            status: u.status,
            mfa_enrolled: u.mfa_enrolled,
            created_at: u.created_at.to_string(),
        }
    }
}

/// One page of users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// The users, ordered by username.
    pub users: Vec<UserView>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// Search and paging parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only users whose username or display name contains this (case-insensitive).
    #[param(max_length = 100)]
    pub q: Option<String>,
    /// Return users whose username sorts after this one.
    pub after: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// A user to create.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Login name: 3–64 of a-z, 0-9, `.`, `_`, `-`, `@` (compared case-insensitively).
    #[schema(pattern = "^[A-Za-z0-9._@-]{3,64}$")]
    pub username: String,
    /// Name shown to colleagues.
    #[schema(min_length = 1, max_length = 128)]
    pub display_name: String,
    /// At least one role.
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
    /// Initial password (NIST 800-63B rules: length, not on the breached list, no own name).
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
}

/// New roles.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesRequest {
    /// At least one role.
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
}

fn actor(p: haven_app::Principal) -> Actor {
    Actor::User(Box::new(p))
}

/// GET /api/v1/users — the organisation's directory, paged.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(ListParams),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "a page of users", body = UserList), crate::openapi::QueryErrors))]
pub(crate) async fn list(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiQuery(q): ApiQuery<ListParams>,
) -> ApiResult<Json<UserList>> {
    let org = p.org();
    let limit = super::page_limit(q.limit, 50, 200)?;
    let page = state.app.users(&actor(p), org, q.q.as_deref(), q.after.as_deref(), limit).await?;
    Ok(Json(UserList {
        users: page.users.into_iter().map(Into::into).collect(),
        next_after: page.next_after,
    }))
}

/// POST /api/v1/users — create a user (organisation admins).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUserRequest,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 201, description = "created", body = UserView), crate::openapi::BodyErrors))]
pub(crate) async fn create(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let org = p.org();
    let input = CreateUser {
        username: req.username,
        display_name: req.display_name,
        roles: req.roles,
        password: Secret::new(req.password),
    };
    let user = state.app.create_user(&actor(p), org, input).await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// GET /api/v1/users/{id} — one user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = UserId, Path, description = "user id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the user", body = UserView), crate::openapi::AuthErrors))]
pub(crate) async fn get_one(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<UserView>> {
    let org = p.org();
    Ok(Json(state.app.user(&actor(p), org, id).await?.into()))
}

/// POST /api/v1/users/{id}/deactivate — remove access at once (every session ends).
#[utoipa::path(post, path = "/api/v1/users/{id}/deactivate", tag = "users",
    params(("id" = UserId, Path, description = "user id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "deactivated", body = UserView), crate::openapi::AuthErrors))]
pub(crate) async fn deactivate(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<UserView>> {
    let org = p.org();
    Ok(Json(state.app.deactivate_user(&actor(p), org, id).await?.into()))
}

/// POST /api/v1/users/{id}/mfa/reset — remove the user's authenticator; they enrol again.
#[utoipa::path(post, path = "/api/v1/users/{id}/mfa/reset", tag = "users",
    params(("id" = UserId, Path, description = "user id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "MFA reset", body = UserView), crate::openapi::AuthErrors))]
pub(crate) async fn reset_mfa(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<UserId>,
) -> ApiResult<Json<UserView>> {
    let org = p.org();
    Ok(Json(state.app.reset_mfa(&actor(p), org, id).await?.into()))
}

/// PUT /api/v1/users/{id}/roles — replace the user's roles.
#[utoipa::path(put, path = "/api/v1/users/{id}/roles", tag = "users", request_body = RolesRequest,
    params(("id" = UserId, Path, description = "user id")),
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "roles replaced", body = UserView), crate::openapi::BodyErrors))]
pub(crate) async fn set_roles(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiPath(id): ApiPath<UserId>,
    ApiJson(req): ApiJson<RolesRequest>,
) -> ApiResult<Json<UserView>> {
    let org = p.org();
    Ok(Json(state.app.set_roles(&actor(p), org, id, req.roles).await?.into()))
}
