//! Reading and verifying the audit log.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{AuditEvent, VerifyReport};
use crate::error::{Error, Result};
use crate::server::AppState;
use crate::server::auth::{Auth, need};
use crate::server::error::ErrorBody;
use crate::server::extract::Query;
use crate::server::stream::{self, Filter};

/// Page size when none is asked for, and the most one page may hold.
pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = crate::store::AUDIT_MAX_PAGE;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Events after this `seq` (default 0: from the start).
    pub after_seq: Option<i64>,
    /// How many, 1 to 1000 (default 100).
    pub limit: Option<i64>,
    /// Instead of paging: the most recent N events (1 to 1000), oldest first.
    pub tail: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `after_seq` for the next page.
    pub next_after_seq: i64,
    /// Whether more events exist now beyond this page.
    pub has_more: bool,
}

/// A page of the workspace's audit log, oldest first.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(PageQuery), responses(
    (status = 200, body = EventPage),
    (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody),
))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Auth<need::AuditRead>,
    Query(q): Query<PageQuery>,
) -> Result<Json<EventPage>> {
    if let Some(n) = q.tail {
        if q.after_seq.is_some() || q.limit.is_some() {
            return Err(Error::bad_request("invalid_query", "tail cannot be combined with after_seq or limit"));
        }
        if !(1..=MAX_PAGE).contains(&n) {
            return Err(Error::bad_request("invalid_query", format!("tail must be between 1 and {MAX_PAGE}")));
        }
        let (head, _) = state.store.audit_head(&caller.workspace).await?;
        let after = (head - n).max(0);
        let events = state.store.audit_page(&caller.workspace, after, n).await?;
        let next_after_seq = events.last().map_or(after, |e| e.seq);
        return Ok(Json(EventPage { events, next_after_seq, has_more: false }));
    }
    let after = q.after_seq.unwrap_or(0);
    if after < 0 {
        return Err(Error::bad_request("invalid_query", "after_seq must be 0 or more"));
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::bad_request("invalid_query", format!("limit must be between 1 and {MAX_PAGE}")));
    }
    // Ask for one more than the page to know whether there is more.
    let mut events = state.store.audit_page(&caller.workspace, after, limit + 1).await?;
    let has_more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_after_seq = events.last().map_or(after, |e| e.seq);
    Ok(Json(EventPage { events, next_after_seq, has_more }))
}

/// Recomputes the workspace's whole chain and names the first broken `seq`.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", responses(
    (status = 200, body = VerifyReport),
    (status = 403, body = ErrorBody),
))]
pub async fn verify(State(state): State<AppState>, caller: Auth<need::AuditRead>) -> Result<Json<VerifyReport>> {
    Ok(Json(state.store.audit_verify(&caller.workspace).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this `seq` (the `Last-Event-ID` header, when sent, wins).
    pub after_seq: Option<i64>,
    /// Comma-separated event types; `approval.*` matches a family.
    pub types: Option<String>,
    /// Only events about this tool.
    pub tool: Option<String>,
    /// Only events by this actor id.
    pub actor: Option<String>,
}

/// The live audit log as Server-Sent Events.
///
/// Each event is `event: audit`, `id: <seq>`, `data: <the event as JSON>`. Reconnect with
/// `Last-Event-ID` to resume with no gap and no repeat: stored events are sent first, then
/// live ones. A comment line every 15 seconds keeps idle connections open. A client that
/// falls too far behind receives `event: lagged` with `{"resume_after_seq": N}` and is
/// disconnected; it resumes from N without loss.
#[utoipa::path(get, path = "/v1/audit/stream", tag = "audit", params(StreamQuery,
    ("Last-Event-ID" = Option<String>, Header, description = "resume after this seq")),
    responses(
        (status = 200, description = "text/event-stream of audit events"),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "resume_point_ahead: Last-Event-ID (or after_seq) is past the end of this log", body = ErrorBody),
    ))]
pub async fn stream_events(
    State(state): State<AppState>,
    caller: Auth<need::AuditRead>,
    headers: axum::http::HeaderMap,
    Query(q): Query<StreamQuery>,
) -> Result<impl axum::response::IntoResponse> {
    let from_header = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| Error::bad_request("invalid_last_event_id", "Last-Event-ID must be the seq of an event"))?,
        ),
        None => None,
    };
    let after = from_header.or(q.after_seq).unwrap_or(0);
    if after < 0 {
        return Err(Error::bad_request("invalid_query", "after_seq must be 0 or more"));
    }
    // Resuming after an event this log has not written — another server's, or this one's
    // before a restore from backup — would wait, silently, for events numbered past it
    // while the ones in between go by unseen.
    if after > 0 {
        let (head, _) = state.store.audit_head(&caller.workspace).await?;
        if after > head {
            return Err(Error::conflict(
                "resume_point_ahead",
                format!(
                    "this workspace's log ends at seq {head}, so there is no event {after} to resume after (another server's log, or one restored from an older backup?): connect again without Last-Event-ID, or with after_seq {head} or less"
                ),
            ));
        }
    }
    // The same event-type patterns as exports, checked by the same rule.
    let types = crate::store::AuditRange::parse(None, None, q.types.as_deref())?.types;
    let filter = Filter { types, tool: q.tool, actor: q.actor };
    let sse = stream::respond(
        state.store.clone(),
        state.hub.clone(),
        caller.workspace.clone(),
        after,
        filter,
        state.config.stream_heartbeat,
        state.shutdown.clone(),
    );
    // One stream per connection: when the server ends a stream (a lagging client, a
    // shutdown) the connection closes too, so the client notices and reconnects.
    Ok(([(axum::http::header::CONNECTION, "close")], sse))
}
