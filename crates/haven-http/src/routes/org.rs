//! The organisation, its policy, and the built-in roles.

use axum::Json;
use axum::extract::State;
use haven_app::Actor;
use haven_domain::OrgId;
use haven_domain::org::{OrgPolicy, Organization};
use haven_domain::roles::{Permission, Role};
use serde::Serialize;

use crate::HttpState;
use crate::error::ApiResult;
use crate::extract::{ApiJson, Auth};

/// The organisation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrgView {
    /// Organisation id.
    pub id: OrgId,
    /// Name.
    pub name: String,
    /// Security policy.
    pub policy: OrgPolicy,
}

impl From<Organization> for OrgView {
    fn from(o: Organization) -> Self {
        Self { id: o.id, name: o.name, policy: o.policy }
    }
}

/// A role and what it allows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleView {
    /// The role.
    pub role: Role,
    /// What it is for.
    pub description: String,
    /// The permissions it grants.
    pub permissions: Vec<Permission>,
}

/// GET /api/v1/organization — the signed-in user's organisation and its policy.
#[utoipa::path(get, path = "/api/v1/organization", tag = "organization",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "the organisation", body = OrgView), crate::openapi::AuthErrors))]
pub(crate) async fn get_org(State(state): State<HttpState>, Auth(p): Auth) -> ApiResult<Json<OrgView>> {
    let org = p.org();
    Ok(Json(state.app.org(&Actor::User(Box::new(p)), org).await?.into()))
}

/// PUT /api/v1/organization/policy — replace the policy (organisation admins).
#[utoipa::path(put, path = "/api/v1/organization/policy", tag = "organization", request_body = OrgPolicy,
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "policy replaced", body = OrgView), crate::openapi::BodyErrors))]
pub(crate) async fn set_policy(
    State(state): State<HttpState>,
    Auth(p): Auth,
    ApiJson(policy): ApiJson<OrgPolicy>,
) -> ApiResult<Json<OrgView>> {
    let org = p.org();
    Ok(Json(state.app.set_policy(&Actor::User(Box::new(p)), org, policy).await?.into()))
}

/// GET /api/v1/roles — the built-in roles and their permissions (admins and compliance).
#[utoipa::path(get, path = "/api/v1/roles", tag = "organization",
    security(("bearer" = []), ("cookie" = [])),
    responses((status = 200, description = "roles", body = [RoleView]), crate::openapi::AuthErrors))]
pub(crate) async fn roles(State(state): State<HttpState>, Auth(p): Auth) -> ApiResult<Json<Vec<RoleView>>> {
    let roles = state.app.roles(&Actor::User(Box::new(p)))?;
    Ok(Json(
        roles
            .into_iter()
            .map(|(role, perms)| RoleView {
                role,
                description: role.description().into(),
                permissions: perms.to_vec(),
            })
            .collect(),
    ))
}
