//! Approvals: the queue, one approval in full, and a human's decision.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::approval::{State as ApprovalState, Verdict};
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::model::Approval;
use crate::permissions::Permission;
use crate::server::AppState;
use crate::server::auth::{Auth, Caller, need};
use crate::server::error::ErrorBody;
use crate::server::extract::{Body, Query};
use crate::store::{ApprovalQuery, DecisionRequest};

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending` (default, soonest expiry first), `approved`, `denied`, `expired`, `consumed`,
    /// `withdrawn`.
    pub state: Option<String>,
    /// 1 to 500 (default 100).
    pub limit: Option<i64>,
    /// The `next` of the previous page: the approvals listed after it.
    pub after: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ApprovalList {
    pub items: Vec<Approval>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The approval queue (or approvals in another state).
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ListQuery), responses(
    (status = 200, body = ApprovalList),
    (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody),
))]
pub async fn list(
    State(state): State<AppState>,
    caller: Auth<need::ApprovalsRead>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ApprovalList>> {
    let wanted = q.state.as_deref().unwrap_or("pending");
    let st = ApprovalState::parse(wanted).ok_or_else(|| {
        Error::bad_request(
            "invalid_query",
            format!("`{wanted}` is not an approval state: pending, approved, denied, expired, consumed or withdrawn"),
        )
    })?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::bad_request("invalid_query", "limit must be between 1 and 500"));
    }
    if let Some(a) = &q.after {
        ids::parse(IdKind::Approval, a)?;
    }
    let own = (!sees_every_approval(&caller)).then(|| caller.member_id.clone());
    // A token sees the approvals of the tools it covers, as it may submit only those.
    let (items, next) = super::fill_page(
        limit,
        q.after,
        |after| state.store.list_approvals(&caller.workspace, ApprovalQuery { state: st, limit, requester: own.clone(), after }),
        |a: &Approval| caller.covers_tool(&a.tool),
        |a| a.id.clone(),
    )
    .await?;
    Ok(Json(ApprovalList { items, next }))
}

/// Who reads every approval, payload and all: whoever reads every action (`actions:read`)
/// or decides approvals (`approvals:decide`: an approver must see what they decide).
/// Anyone else with `approvals:read` — a member — sees the approvals they asked for.
fn sees_every_approval(caller: &Caller) -> bool {
    caller.can(Permission::ActionsRead) || caller.can(Permission::ApprovalsDecide)
}

/// One approval: the exact payload, `current`, the pinned hash, the decisions so far, and
/// why the gate asked.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals", params(("id" = String, Path, description = "approval id (`apv_…`)")), responses(
    (status = 200, body = Approval),
    (status = 403, description = "permission_denied (another member's), tool_not_in_scope (outside a token's tools)", body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn get(State(state): State<AppState>, caller: Auth<need::ApprovalsRead>, Path(id): Path<String>) -> Result<Json<Approval>> {
    ids::parse(IdKind::Approval, &id)?;
    let a = state.store.get_approval(&caller.workspace, &id).await?;
    // Whose it is first: even its tool is for those who may read it.
    if !sees_every_approval(&caller) && a.requester_id != caller.member_id {
        return Err(Error::forbidden(
            "permission_denied",
            "reading other members' approvals needs the `actions:read` or the `approvals:decide` permission",
        ));
    }
    if !caller.covers_tool(&a.tool) {
        return Err(Error::forbidden(
            "tool_not_in_scope",
            format!("this token's tools do not cover `{}`, the tool this approval is for", a.tool),
        ));
    }
    Ok(Json(a))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decide {
    /// `approve` or `deny`.
    pub decision: Verdict,
    /// The hash you were shown. If the payload changed since, the decision is refused.
    pub payload_sha256: String,
    /// Why; recorded on the audit log. Consoles ask for one on deny.
    pub reason: Option<String>,
}

/// A human's decision. Refused when the hash differs from the pinned one, when you are
/// the requester, when you already decided, after expiry, or for agent tokens.
#[utoipa::path(post, path = "/v1/approvals/{id}/decisions", tag = "approvals", request_body = Decide, params(("id" = String, Path, description = "approval id")), responses(
    (status = 200, body = Approval),
    (status = 403, description = "requester_cannot_decide, or not permitted", body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, description = "payload_hash_mismatch, already_decided, approval_not_pending", body = ErrorBody),
    (status = 410, description = "approval_expired", body = ErrorBody),
))]
pub async fn decide(
    State(state): State<AppState>,
    caller: Auth<need::ApprovalsDecide>,
    Path(id): Path<String>,
    Body(req): Body<Decide>,
) -> Result<Json<Approval>> {
    caller.require_human("deciding approvals")?;
    ids::parse(IdKind::Approval, &id)?;
    if req.payload_sha256.len() != 64 || !req.payload_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::unprocessable("invalid_hash", "payload_sha256 must be the 64 hex digits of the SHA-256 you were shown"));
    }
    if let Some(r) = &req.reason
        && !crate::names::valid_free_text(r, 2000, true)
    {
        return Err(Error::unprocessable(
            "invalid_reason",
            "a reason is at most 2000 characters, without control characters other than line breaks and tabs, and without bidirectional controls",
        ));
    }
    let decision = DecisionRequest {
        approval_id: id,
        member_id: caller.member_id.clone(),
        verdict: req.decision,
        payload_sha256: req.payload_sha256.to_ascii_lowercase(),
        reason: req.reason.map(|r| r.trim().to_string()).filter(|r| !r.is_empty()),
    };
    let approval = state.store.decide_approval(&caller.workspace, &caller.origin(), decision).await??;
    Ok(Json(approval))
}
