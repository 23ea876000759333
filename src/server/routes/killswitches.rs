//! Kill switches: stop a tool, or the whole workspace, now.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::model::{KillSwitch, KillSwitches};
use crate::permissions::Permission;
use crate::server::AppState;
use crate::server::auth::{Auth, Caller, need};
use crate::server::error::ErrorBody;
use crate::server::extract::Body;
use crate::store::SwitchTarget;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSwitch {
    /// `true` to engage (needs `killswitch:engage`), `false` to lift (needs `killswitch:lift`).
    pub engaged: bool,
    /// Why: required, recorded on the audit log and shown on every console.
    pub reason: String,
}

/// Every kill switch: the workspace's, and each tool's (an agent token's, only those of the
/// tools its patterns cover).
#[utoipa::path(get, path = "/v1/killswitches", tag = "killswitches", responses((status = 200, body = KillSwitches), (status = 403, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>, caller: Auth<need::KillswitchRead>) -> Result<Json<KillSwitches>> {
    let mut switches = state.store.killswitches(&caller.workspace).await?;
    switches.tools.retain(|s| caller.covers_tool(&s.target));
    Ok(Json(switches))
}

/// A switch as a change request left it.
#[derive(Serialize, ToSchema)]
pub struct SwitchChange {
    #[serde(flatten)]
    pub switch: KillSwitch,
    /// `false` when it already was as asked: nothing changed (its `reason` is still the
    /// one it was set with), and the attempt is recorded as `killswitch.unchanged`.
    pub changed: bool,
}

async fn set(state: &AppState, caller: &Caller, target: SwitchTarget, req: SetSwitch) -> Result<Json<SwitchChange>> {
    caller.require(if req.engaged { Permission::KillswitchEngage } else { Permission::KillswitchLift })?;
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(Error::unprocessable("reason_required", "say why: a kill switch change needs a reason"));
    }
    if !crate::names::valid_free_text(reason, 500, false) {
        return Err(Error::unprocessable(
            "invalid_reason",
            "a reason is at most 500 characters, without control or bidirectional control characters",
        ));
    }
    let (switch, changed) = state.store.set_killswitch(&caller.workspace, &caller.origin(), target, req.engaged, reason).await?;
    Ok(Json(SwitchChange { switch, changed }))
}

/// Engages or lifts the workspace kill switch: while engaged, every gated call is blocked
/// and no approval can be consumed.
#[utoipa::path(put, path = "/v1/killswitches/workspace", tag = "killswitches", request_body = SetSwitch, responses(
    (status = 200, body = SwitchChange),
    (status = 403, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn set_workspace(
    State(state): State<AppState>,
    caller: Auth<need::Authenticated>,
    Body(req): Body<SetSwitch>,
) -> Result<Json<SwitchChange>> {
    set(&state, &caller, SwitchTarget::Workspace, req).await
}

/// Engages or lifts one tool's kill switch.
#[utoipa::path(put, path = "/v1/killswitches/tools/{name}", tag = "killswitches", request_body = SetSwitch, params(("name" = String, Path, description = "tool name")), responses(
    (status = 200, body = SwitchChange),
    (status = 403, description = "permission_denied; tool_not_in_scope (outside a token's tools, whether or not it exists)", body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn set_tool(
    State(state): State<AppState>,
    caller: Auth<need::Authenticated>,
    Path(name): Path<String>,
    Body(req): Body<SetSwitch>,
) -> Result<Json<SwitchChange>> {
    caller.require(if req.engaged { Permission::KillswitchEngage } else { Permission::KillswitchLift })?;
    crate::names::check_tool_name(&name)?;
    caller.require_tool(&name)?;
    // A switch on a misspelt tool would protect nothing: it must name a real one. An
    // engaged switch can always be lifted, even should its tool be gone.
    let ctx = state.store.gate_context(&caller.workspace, &name).await?;
    let lifting_an_engaged_one = !req.engaged && ctx.tool_switch.is_some();
    if ctx.tool.is_none() && !lifting_an_engaged_one {
        return Err(Error::not_found("tool", &name));
    }
    set(&state, &caller, SwitchTarget::Tool(name), req).await
}
