//! Members: people in the workspace.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::model::{Member, MemberStatus};
use crate::names;
use crate::permissions::{BuiltinRole, PermissionSet};
use crate::secrets;
use crate::server::AppState;
use crate::server::auth::{Auth, Caller, need};
use crate::server::error::ErrorBody;
use crate::server::extract::Body;
use crate::store::{MemberChange, NewMember};

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<Member>,
}

/// Every member, active and deactivated.
#[utoipa::path(get, path = "/v1/members", tag = "members", responses((status = 200, body = MemberList), (status = 403, body = ErrorBody)))]
pub async fn list_members(State(state): State<AppState>, caller: Auth<need::MembersRead>) -> Result<Json<MemberList>> {
    Ok(Json(MemberList { items: state.store.list_members(&caller.workspace).await? }))
}

/// One member.
#[utoipa::path(get, path = "/v1/members/{id}", tag = "members", params(("id" = String, Path, description = "member id (`usr_…`)")), responses(
    (status = 200, body = Member),
    (status = 404, body = ErrorBody),
))]
pub async fn get_member(State(state): State<AppState>, caller: Auth<need::MembersRead>, Path(id): Path<String>) -> Result<Json<Member>> {
    ids::parse(IdKind::User, &id)?;
    Ok(Json(state.store.get_member(&caller.workspace, &id).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMember {
    pub email: String,
    /// The member's first password; at least 12 characters. They sign in with it.
    pub password: String,
    /// `admin`, `member`, `viewer`, or a custom role's name.
    pub role: String,
    /// Display name; defaults to the part of the e-mail before `@`.
    pub name: Option<String>,
}

/// Resolves a role name to its stored key and its permissions, refusing `owner` and
/// roles that grant more than the caller holds.
async fn assignable_role(state: &AppState, caller: &Caller, name: &str) -> Result<String> {
    if name == BuiltinRole::Owner.name() {
        return Err(Error::unprocessable(
            "use_ownership_transfer",
            "a workspace has exactly one owner; make someone the owner with POST /v1/workspace/transfer",
        ));
    }
    let key = state
        .store
        .resolve_role(&caller.workspace, name)
        .await?
        .ok_or_else(|| Error::unprocessable("unknown_role", format!("there is no role `{name}`; see GET /v1/roles")))?;
    let perms: PermissionSet = match BuiltinRole::from_name(&key) {
        Some(b) => b.permissions(),
        None => state.store.get_role(&caller.workspace, &key).await?.permissions.into_iter().collect(),
    };
    ensure_can_grant(caller, &perms)?;
    Ok(key)
}

/// Refuses to grant what the caller does not hold: nobody can hand out more power than
/// they have, so no chain of grants can escalate.
pub fn ensure_can_grant(caller: &Caller, perms: &PermissionSet) -> Result<()> {
    if let Some(p) = perms.iter().find(|p| !caller.can(**p)) {
        return Err(Error::forbidden("cannot_grant", format!("you cannot grant `{p}`, which you do not hold yourself")));
    }
    Ok(())
}

/// Adds a member with a first password.
#[utoipa::path(post, path = "/v1/members", tag = "members", request_body = CreateMember, responses(
    (status = 201, body = Member),
    (status = 403, body = ErrorBody),
    (status = 409, description = "already a member", body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn create_member(
    State(state): State<AppState>,
    caller: Auth<need::MembersManage>,
    Body(req): Body<CreateMember>,
) -> Result<(StatusCode, Json<Member>)> {
    let email = names::normalize_email(&req.email);
    if !names::valid_email(&email) {
        return Err(Error::unprocessable(
            "invalid_email",
            format!("`{}` is not an e-mail address", req.email.chars().take(254).collect::<String>()),
        ));
    }
    let name = req.name.clone().unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
    if !names::valid_display_name(&name) {
        return Err(Error::unprocessable("invalid_name", "name must be 1 to 100 characters, without control characters"));
    }
    secrets::check_password_policy(&req.password).map_err(|m| Error::unprocessable("weak_password", m))?;
    let role = assignable_role(&state, &caller, &req.role).await?;
    let password = req.password;
    let password_hash = state.with_password_slot(move || secrets::hash_password(&password)).await?;
    let member = state.store.create_member(&caller.workspace, &caller.origin(), NewMember { email, name, role, password_hash }).await?;
    Ok((StatusCode::CREATED, Json(member)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMember {
    /// A new role: `admin`, `member`, `viewer`, or a custom role's name.
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub role: Option<String>,
    /// `deactivated` ends the member's sessions and revokes their agent tokens at once;
    /// `active` lets them sign in again (their old tokens stay revoked).
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub status: Option<MemberStatus>,
}

/// Refuses changing `target` (their role, status or sessions) to a caller who may not: the
/// owner's account is the owner's alone, and nobody changes someone who holds powers they
/// do not (a custom role with `members:manage` cannot demote, deactivate or sign out an
/// admin). The caller's `members:manage` is checked by the route.
pub async fn ensure_may_change(state: &AppState, caller: &Caller, target: &Member) -> Result<()> {
    if target.role == BuiltinRole::Owner.name() && !caller.can(crate::permissions::Permission::OwnershipTransfer) {
        return Err(Error::forbidden("owner_protected", "only the owner can change the owner's account"));
    }
    let target_key = state.store.resolve_role(&caller.workspace, &target.role).await?.unwrap_or_default();
    let target_perms: PermissionSet = match BuiltinRole::from_name(&target_key) {
        Some(b) => b.permissions(),
        None if target_key.is_empty() => PermissionSet::new(),
        None => state.store.get_role(&caller.workspace, &target_key).await?.permissions.into_iter().collect(),
    };
    if let Some(p) = target_perms.iter().find(|p| !caller.can(**p)) {
        return Err(Error::forbidden(
            "member_outranks_you",
            format!("{} holds `{p}`, which you do not; only someone who holds all their powers can change them", target.email),
        ));
    }
    Ok(())
}

/// Changes a member's role or status.
#[utoipa::path(patch, path = "/v1/members/{id}", tag = "members", request_body = UpdateMember, params(("id" = String, Path, description = "member id")), responses(
    (status = 200, body = Member),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn update_member(
    State(state): State<AppState>,
    caller: Auth<need::MembersManage>,
    Path(id): Path<String>,
    Body(req): Body<UpdateMember>,
) -> Result<Json<Member>> {
    ids::parse(IdKind::User, &id)?;
    if req.role.is_none() && req.status.is_none() {
        return Err(Error::unprocessable("nothing_to_change", "send `role`, `status`, or both"));
    }
    // The target must exist in this workspace before anything else is said about it.
    let target = state.store.get_member(&caller.workspace, &id).await?;
    ensure_may_change(&state, &caller, &target).await?;
    let role = match &req.role {
        Some(r) => Some(assignable_role(&state, &caller, r).await?),
        None => None,
    };
    let change = MemberChange { role, status: req.status };
    Ok(Json(state.store.update_member(&caller.workspace, &caller.origin(), &id, change).await?))
}
