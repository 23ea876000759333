//! Roles: the built-in four and custom permission sets.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::members::ensure_can_grant;
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::model::Role;
use crate::names;
use crate::permissions::{self, Permission, PermissionSet};
use crate::server::AppState;
use crate::server::auth::{Auth, Caller, need};
use crate::server::error::ErrorBody;
use crate::server::extract::Body;
use crate::store::RoleChange;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RoleList {
    pub items: Vec<Role>,
    /// Every permission there is, with what it allows.
    pub permissions: Vec<PermissionInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PermissionInfo {
    pub name: String,
    pub description: String,
    pub grantable_to_agents: bool,
}

/// Built-in and custom roles, and the permission vocabulary.
#[utoipa::path(get, path = "/v1/roles", tag = "roles", responses((status = 200, body = RoleList), (status = 403, body = ErrorBody)))]
pub async fn list_roles(State(state): State<AppState>, caller: Auth<need::MembersRead>) -> Result<Json<RoleList>> {
    let items = state.store.list_roles(&caller.workspace).await?;
    let permissions = Permission::ALL
        .iter()
        .map(|p| PermissionInfo { name: p.as_str().into(), description: p.describe().into(), grantable_to_agents: p.grantable_to_agents() })
        .collect();
    Ok(Json(RoleList { items, permissions }))
}

/// One custom role.
#[utoipa::path(get, path = "/v1/roles/{id}", tag = "roles", params(("id" = String, Path, description = "role id (`rol_…`)")), responses(
    (status = 200, body = Role),
    (status = 404, body = ErrorBody),
))]
pub async fn get_role(State(state): State<AppState>, caller: Auth<need::MembersRead>, Path(id): Path<String>) -> Result<Json<Role>> {
    ids::parse(IdKind::Role, &id)?;
    Ok(Json(state.store.get_role(&caller.workspace, &id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRole {
    /// A lower-case slug, e.g. `approver` or `on-call`.
    pub name: String,
    pub description: Option<String>,
    /// Permissions, e.g. `["approvals:read", "approvals:decide"]`.
    pub permissions: Vec<String>,
}

fn check_role_fields(
    caller: &Caller,
    name: Option<&str>,
    description: Option<&str>,
    perms: Option<&[String]>,
) -> Result<Option<PermissionSet>> {
    if let Some(name) = name
        && !names::valid_role_name(name)
    {
        return Err(Error::unprocessable(
            "invalid_name",
            "role names are 2 to 40 characters of a-z, 0-9, `-` and `_`, starting with a letter",
        ));
    }
    if let Some(d) = description
        && !crate::names::valid_free_text(d, 500, false)
    {
        return Err(Error::unprocessable(
            "invalid_description",
            "a description is at most 500 characters, without control or bidirectional control characters",
        ));
    }
    let Some(perms) = perms else { return Ok(None) };
    let set = permissions::parse_set(perms).map_err(|e| Error::unprocessable("unknown_permission", e.to_string()))?;
    if let Some(p) = set.iter().find(|p| !p.grantable_to_custom_roles()) {
        return Err(Error::unprocessable(
            "permission_not_grantable",
            format!("`{p}` belongs to the owner alone and cannot be part of a custom role"),
        ));
    }
    ensure_can_grant(caller, &set)?;
    Ok(Some(set))
}

/// Creates a custom role.
#[utoipa::path(post, path = "/v1/roles", tag = "roles", request_body = CreateRole, responses(
    (status = 201, body = Role),
    (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn create_role(
    State(state): State<AppState>,
    caller: Auth<need::RolesManage>,
    Body(req): Body<CreateRole>,
) -> Result<(StatusCode, Json<Role>)> {
    let perms = check_role_fields(&caller, Some(&req.name), req.description.as_deref(), Some(&req.permissions))?.unwrap_or_default();
    let role =
        state.store.create_role(&caller.workspace, &caller.origin(), &req.name, req.description.as_deref().unwrap_or(""), perms).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRole {
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    /// The whole new permission list (not a diff).
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub permissions: Option<Vec<String>>,
}

/// Changes a custom role. Members holding it gain or lose powers at once.
#[utoipa::path(patch, path = "/v1/roles/{id}", tag = "roles", request_body = UpdateRole, params(("id" = String, Path, description = "role id")), responses(
    (status = 200, body = Role),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn update_role(
    State(state): State<AppState>,
    caller: Auth<need::RolesManage>,
    Path(id): Path<String>,
    Body(req): Body<UpdateRole>,
) -> Result<Json<Role>> {
    ids::parse(IdKind::Role, &id)?;
    let role = state.store.get_role(&caller.workspace, &id).await?;
    if req.name.is_none() && req.description.is_none() && req.permissions.is_none() {
        return Err(Error::unprocessable("nothing_to_change", "send `name`, `description`, `permissions`, or any of them"));
    }
    // Changing a role changes what its members may do: taking a power away is as much a
    // use of it as giving it, so only someone who holds every power the role has may.
    if let Some(p) = role.permissions.iter().find(|p| !caller.can(**p)) {
        return Err(Error::forbidden(
            "role_outranks_you",
            format!("this role holds `{p}`, which you do not: only someone who holds every permission of a role may change it"),
        ));
    }
    let permissions = check_role_fields(&caller, req.name.as_deref(), req.description.as_deref(), req.permissions.as_deref())?;
    let change = RoleChange { name: req.name, description: req.description, permissions };
    Ok(Json(state.store.update_role(&caller.workspace, &caller.origin(), &id, change).await?))
}

/// Deletes a custom role nobody holds.
#[utoipa::path(delete, path = "/v1/roles/{id}", tag = "roles", params(("id" = String, Path, description = "role id")), responses(
    (status = 204, description = "deleted"),
    (status = 404, body = ErrorBody),
    (status = 409, description = "members still hold it", body = ErrorBody),
))]
pub async fn delete_role(State(state): State<AppState>, caller: Auth<need::RolesManage>, Path(id): Path<String>) -> Result<StatusCode> {
    ids::parse(IdKind::Role, &id)?;
    state.store.delete_role(&caller.workspace, &caller.origin(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
