//! What-if: recorded actions replayed under a draft and under what is in force now.
//!
//! Bounded: at most [`MAX_REPLAY`] actions, read a page at a time (the next page is read
//! while the current one is decided, on two threads), at most [`MAX_CHANGES`] changes
//! kept, at most [`TIME_LIMIT`] spent, one simulation at a time. Nothing is written.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::constitution::in_force;
use crate::clock::{format_ts, parse_ts};
use crate::error::{Error, Result};
use crate::gate::ToolRules;
use crate::permissions::Permission;
use crate::server::AppState;
use crate::server::auth::{Auth, need};
use crate::server::error::ErrorBody;
use crate::server::extract::Body;
use crate::simulation::{self, Change, Comparison, Draft, Regime, Replayed, Totals};
use crate::store::{People, ReplayPage, ReplayQuery, Store, WorkspaceId};

/// The most actions one simulation replays.
pub const MAX_REPLAY: i64 = 100_000;
/// The most changed actions listed (the totals always count them all).
pub const MAX_CHANGES: usize = 1_000;
/// The window when none is given: the last this many actions.
pub const DEFAULT_LAST: i64 = 1_000;
/// Actions read per page.
const PAGE: i64 = 1_000;
/// After this long, the simulation stops and answers for what it replayed.
pub const TIME_LIMIT: Duration = Duration::from_secs(20);

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulationRequest {
    pub draft: Draft,
    #[serde(default)]
    pub window: Window,
}

/// Which recorded actions to replay: the most recent `last` (1 to 100,000), those since
/// `since`, or both. Neither: the last 1,000.
#[derive(Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub last: Option<i64>,
    /// RFC 3339.
    pub since: Option<String>,
}

/// What was replayed.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct WindowReport {
    pub last: Option<i64>,
    pub since: Option<String>,
    /// `workspace`: every action; `own`: only the caller's (without `actions:read`).
    pub scope: String,
    /// The newest and oldest action replayed.
    pub newest_action_id: Option<String>,
    pub oldest_action_id: Option<String>,
    /// False when the replay stopped before the end of the window: see `stopped_by`.
    pub complete: bool,
    /// `action_limit` (100,000 actions) or `time_limit` (20 s), when not complete.
    pub stopped_by: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SimulationResult {
    pub window: WindowReport,
    /// The version in force the draft is compared with (null: none published).
    pub in_force_version: Option<i64>,
    /// Over every replayed action, even when `changes` is cut.
    pub totals: Totals,
    /// Every action whose outcome (status or approvals needed) would change, newest
    /// first, before → after, at most 1,000.
    pub changes: Vec<Change>,
    /// More actions changed than are listed.
    pub truncated: bool,
    /// The stages taken as passed on both sides: what-if compares policy, not incidents
    /// (see docs/API.md).
    pub not_applied: Vec<String>,
    pub elapsed_ms: u64,
}

/// Replays recorded actions under a draft constitution and draft tool policies, and
/// under what is in force now, and lists every action whose outcome would change.
///
/// Each action is decided with its stored payload, resource and confidence, at the time
/// it was requested, for its requester and agent token. Scope, kill switches and
/// agent-write control count as passed on both sides. No side effects. Without
/// `actions:read`, only the caller's own actions are replayed; by an agent token, only
/// those of the tools it covers.
#[utoipa::path(post, path = "/v1/simulations", tag = "simulation", request_body = SimulationRequest, responses(
    (status = 200, body = SimulationResult),
    (status = 403, body = ErrorBody),
    (status = 422, description = "invalid_constitution (with `errors`), invalid_window, invalid_draft, …", body = ErrorBody),
    (status = 503, description = "constitution_unavailable, store_unavailable", body = ErrorBody),
))]
pub async fn simulate(
    State(state): State<AppState>,
    caller: Auth<need::ActionsSimulate>,
    Body(req): Body<SimulationRequest>,
) -> Result<Json<SimulationResult>> {
    let started = Instant::now();
    let last = match (req.window.last, &req.window.since) {
        (Some(n), _) if !(1..=MAX_REPLAY).contains(&n) => {
            return Err(Error::unprocessable("invalid_window", format!("window.last must be between 1 and {MAX_REPLAY}")));
        }
        (Some(n), _) => n,
        (None, Some(_)) => MAX_REPLAY,
        (None, None) => DEFAULT_LAST,
    };
    let since = match &req.window.since {
        Some(s) => {
            Some(format_ts(parse_ts(s).ok_or_else(|| Error::unprocessable("invalid_window", "window.since must be an RFC 3339 time"))?))
        }
        None => None,
    };
    let own_only = !caller.can(Permission::ActionsRead);
    let ws = caller.workspace.clone();

    let current = in_force(&state, &ws, caller.epoch).await?;
    let tools: HashMap<String, ToolRules> = state
        .store
        .list_tools(&ws)
        .await?
        .into_iter()
        .map(|t| {
            let rules = ToolRules {
                name: t.name.clone(),
                kind: t.kind,
                irreversible: t.irreversible,
                policy: t.policy,
                min_confidence: t.min_confidence,
            };
            (t.name, rules)
        })
        .collect();
    let after_tools = simulation::draft_tools(&tools, req.draft.tools.as_ref())?;
    let in_force_version = current.version();
    let before = Regime { constitution: current, tools: Arc::new(tools) };
    let draft_rules = req.draft.rules;
    let cmp = tokio::task::spawn_blocking(move || {
        let draft = draft_rules.map(|rules| simulation::compile_rules(&rules, None)).transpose()?;
        Ok::<_, Error>(Comparison::new(before, draft, after_tools))
    })
    .await
    .map_err(|_| Error::internal("compiling the draft failed"))??;
    let cmp = Arc::new(cmp);
    let people = Arc::new(state.store.people(&ws).await?);

    let _slot = state.simulations.acquire().await.map_err(|_| Error::unavailable("shutting_down", "the server is shutting down"))?;
    // The time limit counts from here: waiting for another simulation does not eat into it.
    let replaying = Instant::now();
    let query = ReplayQuery { before: None, since: since.clone(), requester_id: own_only.then(|| caller.member_id.clone()), limit: 0 };
    let mut totals = Totals::default();
    let mut changes: Vec<Change> = Vec::new();
    let mut newest = None;
    let mut oldest = None;
    let mut remaining = last;
    let mut stopped_by = None;
    let mut next = Some(fetch(&state, &ws, ReplayQuery { limit: remaining.min(PAGE), ..query.clone() }));
    while let Some(handle) = next.take() {
        let page = handle.await.map_err(|_| Error::internal("reading the history failed"))??;
        let Some(last_id) = page.actions.last().map(|a| a.id.clone()) else { break };
        remaining -= page.actions.len() as i64;
        if !page.exhausted {
            if replaying.elapsed() >= TIME_LIMIT {
                stopped_by = Some("time_limit");
            } else if remaining > 0 {
                // Read the next page while this one is decided.
                next = Some(fetch(&state, &ws, ReplayQuery { before: Some(last_id), limit: remaining.min(PAGE), ..query.clone() }));
            } else if req.window.last.is_none() && since.is_some() {
                // The window was "since", and it holds more than the most we replay?
                let probe = ReplayQuery { before: Some(last_id), limit: 1, ..query.clone() };
                if !state.store.replay_page(&ws, probe).await?.actions.is_empty() {
                    stopped_by = Some("action_limit");
                }
            }
        }
        let cap = (MAX_CHANGES + 1).saturating_sub(changes.len());
        // An agent token replays only the tools it covers: which of its owner's other
        // actions a draft rule would flip says what their payloads hold, a field at a time.
        let mut page = page;
        page.actions.retain(|a| caller.covers_tool(&a.tool));
        // The window's edges are of what was replayed, so they name no action it did not cover.
        if let (Some(first), Some(last)) = (page.actions.first(), page.actions.last()) {
            newest.get_or_insert_with(|| first.id.clone());
            oldest = Some(last.id.clone());
        }
        let replayed = decide_page(page, &people, &cmp, cap).await?;
        totals.add(&replayed.totals);
        changes.extend(replayed.changes);
    }
    changes.truncate(MAX_CHANGES);
    let truncated = totals.changed as usize > changes.len();
    let complete = stopped_by.is_none();
    Ok(Json(SimulationResult {
        window: WindowReport {
            last: req.window.last,
            since: req.window.since,
            scope: if own_only { "own" } else { "workspace" }.into(),
            newest_action_id: newest,
            oldest_action_id: oldest,
            complete,
            stopped_by: stopped_by.map(str::to_string),
        },
        in_force_version,
        totals,
        changes,
        truncated,
        not_applied: ["scope", "workspace_kill_switch", "tool_kill_switch", "agent_write_control"].map(String::from).to_vec(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    }))
}

/// Reads a page of history on the store's reader threads.
fn fetch(state: &AppState, ws: &WorkspaceId, q: ReplayQuery) -> tokio::task::JoinHandle<Result<ReplayPage>> {
    let (store, ws): (Arc<dyn Store>, WorkspaceId) = (state.store.clone(), ws.clone());
    tokio::spawn(async move { store.replay_page(&ws, q).await })
}

/// Decides a page on two blocking threads, one half each, keeping the order.
async fn decide_page(page: ReplayPage, people: &Arc<People>, cmp: &Arc<Comparison>, cap: usize) -> Result<Replayed> {
    let mut first = page.actions;
    let second = first.split_off(first.len() / 2);
    let run = |chunk: Vec<crate::store::ReplayAction>| {
        let (people, cmp) = (people.clone(), cmp.clone());
        tokio::task::spawn_blocking(move || simulation::replay(&chunk, &people, &cmp, cap))
    };
    let (x, y) = tokio::join!(run(first), run(second));
    let failed = |_| Error::internal("replaying the history failed");
    let (mut x, y) = (x.map_err(failed)?, y.map_err(failed)?);
    x.totals.add(&y.totals);
    x.changes.extend(y.changes);
    Ok(x)
}
