//! Signed checkpoints of the audit chain and the key that signs them.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::checkpoint::{Checkpoint, PublicKeyInfo};
use crate::error::{Error, Result};
use crate::server::AppState;
use crate::server::auth::{Auth, need};
use crate::server::error::ErrorBody;
use crate::server::extract::Query;
use crate::store::MAX_CHECKPOINT_PAGE;

/// The key that signs this server's checkpoints. Pin it (keep a copy somewhere the server
/// cannot change) and pass it to `countersign audit verify --public-key`.
#[utoipa::path(get, path = "/v1/audit/public-key", tag = "audit", responses(
    (status = 200, body = PublicKeyInfo),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody),
))]
pub async fn public_key(State(state): State<AppState>, _caller: Auth<need::AuditRead>) -> Json<PublicKeyInfo> {
    Json(state.signer.public_key())
}

/// Signs the workspace's audit chain head now and returns the checkpoint.
///
/// Keep the JSON: later, `countersign audit verify --checkpoint FILE` proves that the log
/// still extends it (same hash at its `seq`, sound chain from genesis through the end) and
/// catches a truncated or rewritten tail. The first checkpoint of each head is also kept
/// by the server (`GET /v1/audit/checkpoints`). Signing is not audited: an event would
/// move the head just signed.
#[utoipa::path(get, path = "/v1/audit/checkpoints/latest", tag = "audit", responses(
    (status = 200, body = Checkpoint),
    (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody),
))]
pub async fn latest(State(state): State<AppState>, caller: Auth<need::AuditRead>) -> Result<Json<Checkpoint>> {
    Ok(Json(crate::server::checkpoints::sign_head(&state, &caller.workspace).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Checkpoints of heads before this `seq` (default: from the newest).
    pub before_seq: Option<i64>,
    /// How many, 1 to 1000 (default 100).
    pub limit: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CheckpointPage {
    /// Newest first.
    pub checkpoints: Vec<Checkpoint>,
    /// Pass as `before_seq` for the next page; absent on the last page.
    pub next_before_seq: Option<i64>,
}

/// The checkpoints the server has kept: the first signature of each head it signed, by
/// schedule (`checkpoint_interval`, when the head has moved) or on request. Newest first.
#[utoipa::path(get, path = "/v1/audit/checkpoints", tag = "audit", params(ListQuery), responses(
    (status = 200, body = CheckpointPage),
    (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody),
))]
pub async fn list(
    State(state): State<AppState>,
    caller: Auth<need::AuditRead>,
    Query(q): Query<ListQuery>,
) -> Result<Json<CheckpointPage>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_CHECKPOINT_PAGE).contains(&limit) {
        return Err(Error::bad_request("invalid_query", format!("limit must be between 1 and {MAX_CHECKPOINT_PAGE}")));
    }
    if q.before_seq.is_some_and(|s| s < 1) {
        return Err(Error::bad_request("invalid_query", "before_seq must be 1 or more"));
    }
    let mut checkpoints = state.store.list_checkpoints(&caller.workspace, q.before_seq, limit + 1).await?;
    let more = checkpoints.len() as i64 > limit;
    checkpoints.truncate(limit as usize);
    let next_before_seq = if more { checkpoints.last().map(|c| c.seq) } else { None };
    Ok(Json(CheckpointPage { checkpoints, next_before_seq }))
}
