//! The workspace itself: its identity, its ownership and its settings.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::model::{Member, Settings, Workspace};
use crate::server::AppState;
use crate::server::auth::{Auth, need};
use crate::server::error::ErrorBody;
use crate::server::extract::Body;
use crate::store::SettingsChange;

/// The caller's workspace.
#[utoipa::path(get, path = "/v1/workspace", tag = "workspace", responses((status = 200, body = Workspace), (status = 401, body = ErrorBody)))]
pub async fn get_workspace(State(state): State<AppState>, caller: Auth<need::Authenticated>) -> Result<Json<Workspace>> {
    Ok(Json(state.store.get_workspace(&caller.workspace).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The member who becomes the owner. The current owner becomes an admin.
    pub member_id: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Transferred {
    pub previous_owner: Member,
    pub owner: Member,
}

/// Transfers ownership (owner only).
#[utoipa::path(post, path = "/v1/workspace/transfer", tag = "workspace", request_body = Transfer, responses(
    (status = 200, body = Transferred),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody),
))]
pub async fn transfer_ownership(
    State(state): State<AppState>,
    caller: Auth<need::OwnershipTransfer>,
    Body(req): Body<Transfer>,
) -> Result<Json<Transferred>> {
    caller.require_human("transferring ownership")?;
    ids::parse(IdKind::User, &req.member_id)?;
    let (previous_owner, owner) = state.store.transfer_ownership(&caller.workspace, &caller.origin(), &req.member_id).await?;
    Ok(Json(Transferred { previous_owner, owner }))
}

/// Workspace settings.
#[utoipa::path(get, path = "/v1/settings", tag = "workspace", responses((status = 200, body = Settings), (status = 403, body = ErrorBody)))]
pub async fn get_settings(State(state): State<AppState>, caller: Auth<need::SettingsRead>) -> Result<Json<Settings>> {
    Ok(Json(state.store.get_settings(&caller.workspace).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// Lets agent tokens call `write` tools. Off by default.
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub agent_writes_enabled: Option<bool>,
    /// Default approval lifetime, 60 seconds to 7 days.
    #[serde(default, deserialize_with = "crate::server::extract::present")]
    #[schema(nullable = false)]
    pub approval_ttl_seconds: Option<i64>,
}

/// Shortest and longest approval lifetime a workspace or tool may set.
pub const MIN_TTL_SECONDS: i64 = 60;
pub const MAX_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// Checks an approval lifetime against the bounds.
pub fn check_ttl(field: &str, ttl: i64) -> Result<()> {
    if !(MIN_TTL_SECONDS..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(Error::unprocessable(
            "invalid_ttl",
            format!("{field} must be between {MIN_TTL_SECONDS} seconds and {MAX_TTL_SECONDS} seconds (7 days)"),
        ));
    }
    Ok(())
}

/// Changes workspace settings (audited with before and after).
#[utoipa::path(patch, path = "/v1/settings", tag = "workspace", request_body = SettingsPatch, responses(
    (status = 200, body = Settings),
    (status = 403, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn update_settings(
    State(state): State<AppState>,
    caller: Auth<need::SettingsManage>,
    Body(req): Body<SettingsPatch>,
) -> Result<Json<Settings>> {
    if let Some(ttl) = req.approval_ttl_seconds {
        check_ttl("approval_ttl_seconds", ttl)?;
    }
    let change = SettingsChange { agent_writes_enabled: req.agent_writes_enabled, approval_ttl_seconds: req.approval_ttl_seconds };
    Ok(Json(state.store.update_settings(&caller.workspace, &caller.origin(), change).await?))
}
