//! Actions: an agent asks, the gate decides, and an approved action is executed once.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::canonical;
use crate::error::{Error, Result};
use crate::gate::{self, ConstitutionVerdict, Outcome, Policy, ToolKind, ToolRules};
use crate::ids::{self, IdKind};
use crate::model::{Action, ActionOutcome, ActionStatus, Connector, DecisionRecord};
use crate::names;
use crate::permissions::Permission;
use crate::server::AppState;
use crate::server::auth::{Auth, Caller, CallerKind, need};
use crate::server::connectors;
use crate::server::error::ErrorBody;
use crate::server::extract::{Body, Query, RawBody};
use crate::server::routes::constitution::in_force;
use crate::simulation::{self, Draft, OwnedFacts};
use crate::store::{
    ActionFilter, Basis, DecidedUnder, ExecuteRequest, IdempotencyKey, NewAction, Origin, Standing, Submitted, WorkspaceId,
};

/// Limits on what an action may carry besides its payload (see docs/API.md).
pub const MAX_REASON_CHARS: usize = 2000;
pub const MAX_RESOURCE_CHARS: usize = 256;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitAction {
    /// The tool to call, e.g. `email.send`.
    pub tool: String,
    /// The exact call: any JSON value, usually an object of arguments. Its RFC 8785
    /// canonical form is hashed and pinned.
    #[schema(value_type = serde_json::Value)]
    pub payload: serde_json::Value,
    /// What it changes, e.g. `milestone:42`.
    pub resource: Option<String>,
    /// The resource's state before the change, shown to approvers as a diff.
    #[schema(value_type = Option<serde_json::Value>)]
    pub current: Option<serde_json::Value>,
    /// Why the agent wants this, for the approver.
    pub reason: Option<String>,
    /// The agent's confidence, 0 to 1.
    pub confidence: Option<f64>,
    /// Decide, but record and run nothing: the answer's status is `simulated`.
    #[serde(default)]
    pub dry_run: bool,
    /// Only with `dry_run`: decide under draft rules and tool policies instead of those
    /// in force (see docs/API.md, "Constitution and simulation").
    pub draft: Option<Draft>,
}

fn check_fields(req: &SubmitAction) -> Result<()> {
    names::check_tool_name(&req.tool)?;
    if let Some(c) = req.confidence
        && !(0.0..=1.0).contains(&c)
    {
        return Err(Error::unprocessable("invalid_confidence", "confidence must be between 0 and 1"));
    }
    // Written by the agent, read by approvers (in a terminal, in a CSV): line breaks and
    // tabs are text, any other control character could be an escape sequence.
    if req.reason.as_ref().is_some_and(|r| !names::valid_free_text(r, MAX_REASON_CHARS, true)) {
        return Err(Error::unprocessable(
            "invalid_reason",
            format!(
                "reason is at most {MAX_REASON_CHARS} characters, without control characters other than line breaks and tabs, \
                 and without bidirectional controls (which could show an approver another text than was sent)"
            ),
        ));
    }
    if let Some(r) = &req.resource
        && (r.is_empty() || !names::valid_free_text(r, MAX_RESOURCE_CHARS, false))
    {
        return Err(Error::unprocessable(
            "invalid_resource",
            format!("resource is 1 to {MAX_RESOURCE_CHARS} characters, without control or bidirectional control characters"),
        ));
    }
    Ok(())
}

/// The principal an idempotency key belongs to: the token, or the person.
fn principal(caller: &Caller) -> String {
    match &caller.kind {
        CallerKind::Agent { token_id, .. } => token_id.clone(),
        CallerKind::Human { .. } => caller.member_id.clone(),
    }
}

fn idempotency(headers: &HeaderMap, caller: &Caller, body: &[u8]) -> Result<Option<IdempotencyKey>> {
    let mut given = headers.get_all("idempotency-key").iter();
    let Some(v) = given.next() else { return Ok(None) };
    if given.next().is_some() {
        return Err(Error::bad_request("invalid_idempotency_key", "Idempotency-Key is given more than once: send it once"));
    }
    let key =
        v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.bytes().all(|b| b.is_ascii_graphic())).ok_or_else(
            || {
                Error::bad_request(
                    "invalid_idempotency_key",
                    format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"),
                )
            },
        )?;
    // The fingerprint is over the canonical form, so whitespace and key order do not matter.
    let value = canonical::parse(body).map_err(|e| Error::bad_request("malformed_json", e.to_string()))?;
    let request_sha256 = canonical::pin(&value).map_err(|e| Error::unprocessable("unrepresentable_number", e.to_string()))?.sha256;
    Ok(Some(IdempotencyKey { principal: principal(caller), key: key.to_string(), request_sha256 }))
}

fn principal_label(caller: &Caller) -> String {
    match &caller.kind {
        CallerKind::Agent { token_id, token_name, .. } => format!("agent token {token_id} ({token_name}) owned by {}", caller.member_id),
        CallerKind::Human { .. } => format!("member {} ({})", caller.member_id, caller.member_email),
    }
}

fn decision_record(d: &gate::Decision) -> DecisionRecord {
    let (code, message) = match &d.outcome {
        Outcome::Denied { code, message } | Outcome::Blocked { code, message } => (Some(code.clone()), Some(message.clone())),
        _ => (None, None),
    };
    DecisionRecord { trace: d.trace.clone(), cited_rules: d.citations.clone(), constitution_version: d.constitution_version, code, message }
}

/// Submits an action for the gate to decide.
///
/// The answer's `status` says what happened: `executed` (ran, `result` attached),
/// `failed` (ran, the connector failed), `pending_approval` (see `approval_id`),
/// `denied` or `blocked` (see `code`), or `simulated` for a dry run. With an
/// `Idempotency-Key` header, repeating the same request returns the first answer.
#[utoipa::path(post, path = "/v1/actions", tag = "actions", request_body = SubmitAction,
    params(("Idempotency-Key" = Option<String>, Header, description = "makes retries safe: same key and body, same answer")),
    responses(
        (status = 201, description = "decided and recorded", body = ActionOutcome),
        (status = 200, description = "a dry run: decided, nothing recorded", body = ActionOutcome),
        (status = 400, description = "malformed_json, invalid_idempotency_key, nesting_too_deep, …", body = ErrorBody),
        (status = 401, description = "no usable credential", body = ErrorBody),
        (status = 403, description = "permission_denied", body = ErrorBody),
        (status = 404, description = "unknown_tool", body = ErrorBody),
        (status = 408, description = "request_timeout: the body did not arrive in time", body = ErrorBody),
        (status = 409, description = "idempotency_key_reused (another request), idempotency_key_in_use (still running), rules_changed (the tool or rules changed while it was decided: send it again)", body = ErrorBody),
        (status = 413, description = "payload_too_large", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, description = "the store could not be read or written: refused, nothing ran", body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Auth<need::Authenticated>,
    headers: HeaderMap,
    raw: RawBody<SubmitAction>,
) -> Result<Response> {
    let RawBody { value: mut req, bytes } = raw;
    if req.dry_run {
        if !caller.can(Permission::ActionsSimulate) && !caller.can(Permission::ActionsSubmit) {
            return Err(Error::forbidden("permission_denied", "a dry run needs the `actions:simulate` or the `actions:submit` permission"));
        }
    } else {
        caller.require(Permission::ActionsSubmit)?;
    }
    if req.draft.is_some() && !req.dry_run {
        return Err(Error::unprocessable(
            "draft_requires_dry_run",
            "a draft can only be tried in a dry run: send `dry_run: true`, or publish the draft first",
        ));
    }
    check_fields(&req)?;
    let pinned = canonical::pin(&req.payload).map_err(|e| Error::unprocessable("unrepresentable_number", e.to_string()))?;
    let current = match &req.current {
        Some(c) => Some(canonical::canonicalize_value(c).map_err(|e| Error::unprocessable("unrepresentable_number", e.to_string()))?),
        None => None,
    };
    let idem = if req.dry_run { None } else { idempotency(&headers, &caller, &bytes)? };

    let ctx = gate_context(&state, &caller, &req.tool).await?;
    let draft = req.draft.take();
    // The tool as a draft would have it, when the draft changes it (or defines it).
    let draft_tool = match draft.as_ref().and_then(|d| d.tools.as_ref()) {
        Some(changes) => {
            let current: std::collections::HashMap<String, ToolRules> =
                state.store.list_tools(&caller.workspace).await?.iter().map(|t| (t.name.clone(), tool_rules(t))).collect();
            simulation::draft_tools(&current, Some(changes))?.remove(&req.tool)
        }
        None => None,
    };
    let rules = match (&ctx.tool, draft_tool) {
        (_, Some(d)) => d,
        (Some(t), None) => tool_rules(t),
        // Outside the caller's tools, one that does not exist is refused at the scope stage
        // exactly as one that does: whether it exists is not this caller's to learn. (The
        // rest of these rules is never read: the pipeline stops at scope.)
        (None, None) if !caller.covers_tool(&req.tool) => ToolRules {
            name: req.tool.clone(),
            kind: ToolKind::Write,
            irreversible: true,
            policy: Policy::ApproveDual,
            min_confidence: None,
        },
        (None, None) => {
            return Err(Error::new(
                crate::error::Kind::NotFound,
                "unknown_tool",
                format!("there is no tool `{}` in this workspace; an admin creates it with PUT /v1/tools/{}", req.tool, req.tool),
            ));
        }
    };
    // The rules: the draft's, or those in force (fail closed if they cannot be used).
    let draft_rules = draft.and_then(|d| d.rules);
    let is_draft = draft_rules.is_some();
    let constitution = match draft_rules {
        Some(rules) => tokio::task::spawn_blocking(move || simulation::compile_rules(&rules, None))
            .await
            .map_err(|_| Error::internal("compiling the draft failed"))??,
        None => in_force(&state, &caller.workspace, caller.epoch).await?,
    };
    let in_scope = caller.covers_tool(&rules.name);
    // The constitution is consulted only if the stages before it let the call through.
    let refused_earlier = !in_scope
        || ctx.workspace_switch.is_some()
        || ctx.tool_switch.is_some()
        || (caller.is_agent() && rules.kind == ToolKind::Write && !ctx.settings.agent_writes_enabled);
    let verdict = if refused_earlier || constitution.is_empty() {
        ConstitutionVerdict { version: constitution.version(), citations: Vec::new() }
    } else {
        let facts = OwnedFacts {
            tool: rules.name.clone(),
            payload: std::mem::take(&mut req.payload),
            resource: req.resource.clone(),
            agent: match &caller.kind {
                CallerKind::Agent { token_id, token_name, .. } => Some((token_id.clone(), token_name.clone(), caller.member_id.clone())),
                CallerKind::Human { .. } => None,
            },
            requester: (caller.member_id.clone(), caller.member_email.clone(), caller.role.clone()),
            confidence: req.confidence,
            now: state.clock.now(),
        };
        let (verdict, facts) = evaluate(constitution, facts, bytes.len() > INLINE_EVALUATION_BYTES).await?;
        req.payload = facts.payload;
        verdict
    };
    let mut decision = gate::decide(&gate::Input {
        principal: &principal_label(&caller),
        is_agent: caller.is_agent(),
        in_scope,
        workspace_switch: ctx.workspace_switch.as_ref(),
        tool_switch: ctx.tool_switch.as_ref(),
        agent_writes_enabled: ctx.settings.agent_writes_enabled,
        tool: &rules,
        confidence: req.confidence,
        constitution: &verdict,
    });
    if is_draft {
        label_draft(&mut decision);
    }
    let record = decision_record(&decision);

    if req.dry_run {
        let required = match decision.outcome {
            Outcome::NeedsApproval { required } => required,
            _ => 0,
        };
        let under = if is_draft { "dry run under the draft" } else { "dry run" };
        let outcome = ActionOutcome {
            id: None,
            status: ActionStatus::Simulated,
            tool: rules.name,
            payload_sha256: pinned.sha256,
            approval_id: None,
            required_approvals: required,
            expires_at: None,
            code: record.code,
            message: Some(format!("{under}: would be {}", would_be(&decision.outcome))),
            trace: record.trace,
            cited_rules: record.cited_rules,
            constitution_version: record.constitution_version,
            result: None,
        };
        return Ok((StatusCode::OK, Json(outcome)).into_response());
    }
    // No tool only when it was refused at scope, before anything read it (see `rules`).
    let tool = match ctx.tool {
        Some(t) => Some(t),
        None if matches!(decision.outcome, Outcome::Denied { .. }) && !in_scope => None,
        None => return Err(Error::internal("the tool vanished while deciding")),
    };
    let record_now = tool.as_ref().is_some_and(|t| matches!(t.connector, Connector::Record {}));
    let new = NewAction {
        tool: rules.name.clone(),
        payload: pinned.canonical,
        payload_value: req.payload,
        payload_sha256: pinned.sha256,
        resource: req.resource,
        current,
        current_value: req.current,
        reason: req.reason,
        confidence: req.confidence,
        requester_id: caller.member_id.clone(),
        agent_token_id: match &caller.kind {
            CallerKind::Agent { token_id, .. } => Some(token_id.clone()),
            CallerKind::Human { .. } => None,
        },
        decision: record,
        outcome: decision.outcome,
        policy: tool.as_ref().map_or(rules.policy, |t| t.policy),
        approval_ttl_seconds: tool.as_ref().and_then(|t| t.approval_ttl_seconds).unwrap_or(ctx.settings.approval_ttl_seconds),
        record_now,
        idempotency: idem,
        decided_under: DecidedUnder { epoch: caller.epoch, workspace_version: ctx.config_version },
    };
    // A call through an `http` connector: the write that starts it and the call run in a
    // tracked task (see `tracked`). Everything else is one write, done whatever the client does.
    let submitted = if !record_now && matches!(new.outcome, Outcome::Execute) {
        let Some(tool) = tool else { return Err(Error::internal("the tool vanished while deciding")) };
        tracked(&state, record_and_call(state.clone(), caller.workspace.clone(), caller.origin(), new, tool)).await?
    } else {
        state.store.record_action(&caller.workspace, &caller.origin(), new).await?
    };
    match submitted {
        Submitted::Replay(first) => {
            let mut resp = (StatusCode::CREATED, Json(*first)).into_response();
            resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(resp)
        }
        Submitted::New { action, expires_at } => Ok((StatusCode::CREATED, Json(ActionOutcome::of(&action, expires_at))).into_response()),
    }
}

/// Payloads larger than this are evaluated on a blocking thread: the constitution's cost
/// bound is linear in the payload, so a large one can take milliseconds.
const INLINE_EVALUATION_BYTES: usize = 64 * 1024;

/// Evaluates the constitution on an action, off the async threads when it is large.
async fn evaluate(
    constitution: crate::constitution::Compiled,
    facts: OwnedFacts,
    large: bool,
) -> Result<(ConstitutionVerdict, OwnedFacts)> {
    if !large {
        let verdict = constitution.evaluate(&facts.facts());
        return Ok((verdict, facts));
    }
    tokio::task::spawn_blocking(move || (constitution.evaluate(&facts.facts()), facts))
        .await
        .map_err(|_| Error::unavailable("constitution_unavailable", "the constitution could not be evaluated; nothing was decided"))
}

fn tool_rules(t: &crate::model::Tool) -> ToolRules {
    ToolRules { name: t.name.clone(), kind: t.kind, irreversible: t.irreversible, policy: t.policy, min_confidence: t.min_confidence }
}

/// Says "draft" where the trace would say which version was in force.
fn label_draft(d: &mut gate::Decision) {
    for s in d.trace.iter_mut().filter(|s| s.stage == "constitution") {
        s.detail = s.detail.replace("(no constitution)", "(draft)");
    }
    if let Outcome::Denied { message, .. } = &mut d.outcome {
        *message = message.replace("(no constitution)", "(draft)");
    }
}

/// What the gate reads about a tool, from the cache while the config epoch holds.
async fn gate_context(state: &AppState, caller: &Caller, tool: &str) -> Result<crate::store::GateContext> {
    let key = (caller.workspace.clone(), tool.to_string());
    let epoch = caller.epoch;
    if let Some(hit) = state.gate_cache.get(&key, epoch) {
        return Ok(hit);
    }
    let ctx = state.store.gate_context(&caller.workspace, tool).await?;
    state.gate_cache.put(key, epoch, ctx.clone());
    Ok(ctx)
}

fn would_be(o: &Outcome) -> String {
    match o {
        Outcome::Execute => "executed at once".into(),
        Outcome::NeedsApproval { required: 1 } => "held for one approval".into(),
        Outcome::NeedsApproval { required } => format!("held for {required} approvals"),
        Outcome::Denied { code, .. } => format!("denied ({code})"),
        Outcome::Blocked { code, .. } => format!("blocked ({code})"),
    }
}

/// Runs `work` — a write that may leave an action `executing`, then its connector call —
/// in a task of its own, tracked until shutdown, and waits for it.
///
/// A request's handler is dropped when its client gives up or disconnects. Dropped between
/// the write and the call's end, it would leave the action `executing` with nothing
/// recorded (and the call perhaps made, perhaps not): the task runs to the end whatever
/// the client does, and the client that stayed gets the answer.
async fn tracked<T: Send + 'static>(state: &AppState, work: impl std::future::Future<Output = Result<T>> + Send + 'static) -> Result<T> {
    // After the write that starts a call, "retry" is not safe advice: say to look first.
    state.executions.spawn(work).await.map_err(|e| {
        Error::internal(format!(
            "the task running this action ended abnormally ({e}); its connector call may have been made: read the action \
             (GET /v1/actions) before sending it again, or send it again with the same Idempotency-Key, which answers with what happened"
        ))
    })?
}

/// Records a submitted action and, if it is to run now through its connector, runs it
/// with `tool` as it was decided under (the record is refused if the configuration has
/// changed since, so that is the tool as it is).
async fn record_and_call(state: AppState, ws: WorkspaceId, origin: Origin, new: NewAction, tool: crate::model::Tool) -> Result<Submitted> {
    match state.store.record_action(&ws, &origin, new).await? {
        Submitted::New { action, expires_at } if action.status == ActionStatus::Executing => {
            let action = call_connector(state, ws, origin, *action, &tool).await?;
            Ok(Submitted::New { action: Box::new(action), expires_at })
        }
        other => Ok(other),
    }
}

/// Runs an `executing` action's connector (its decision durable first) and records the
/// result. `tool` is the tool (its connector sealed) exactly as the decision to run was
/// checked against in the transaction that recorded it: never read again afterwards, so a
/// change to its URL or headers made since cannot redirect a call decided under the old.
async fn call_connector(state: AppState, ws: WorkspaceId, origin: Origin, action: Action, tool: &crate::model::Tool) -> Result<Action> {
    let (result, ok) = connectors::run_http(&state.http, &state.keys, &ws, tool, &action).await;
    state.store.finish_execution(&ws, &origin, &action.id, result, ok).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Execute {
    /// The payload again, exactly as submitted (any key order or whitespace): it is
    /// re-hashed and must match the approved hash.
    #[schema(value_type = serde_json::Value)]
    pub payload: serde_json::Value,
}

/// Runs an approved action, once. The payload is re-hashed and must match what the
/// approvers saw; of any number of concurrent calls, exactly one runs.
#[utoipa::path(post, path = "/v1/actions/{id}/execute", tag = "actions", request_body = Execute, params(("id" = String, Path, description = "action id (`act_…`)")), responses(
    (status = 200, body = ActionOutcome),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, description = "payload_hash_mismatch, approval_pending, approval_denied, approval_consumed, a kill switch, or the rules tightened since the approval (constitution_denied, approval_insufficient, requester_token_revoked), or tool_deleted", body = ErrorBody),
    (status = 410, description = "approval_expired", body = ErrorBody),
))]
pub async fn execute(
    State(state): State<AppState>,
    caller: Auth<need::ActionsSubmit>,
    Path(id): Path<String>,
    Body(req): Body<Execute>,
) -> Result<Json<ActionOutcome>> {
    ids::parse(IdKind::Action, &id)?;
    let pinned = canonical::pin(&req.payload).map_err(|e| Error::unprocessable("unrepresentable_number", e.to_string()))?;
    let action = state.store.get_action(&caller.workspace, &id).await?;
    // Tools are never renamed: an action whose tool is missing outlived its deletion,
    // which withdrew its approval.
    let tool = state.store.get_tool_sealed(&caller.workspace, &action.tool).await?.ok_or_else(|| {
        Error::conflict(
            "tool_deleted",
            format!("the tool `{}` was deleted after this action was asked for, and its approval withdrawn; nothing ran", action.tool),
        )
    })?;
    let (now, basis) = standing(&state, &caller, &action, &tool).await?;
    let req = ExecuteRequest {
        action_id: id,
        payload_sha256: pinned.sha256,
        member_id: caller.member_id.clone(),
        in_scope: caller.covers_tool(&action.tool),
        is_agent: caller.is_agent(),
        record_now: matches!(tool.connector, Connector::Record {}),
        now,
        basis,
    };
    let (st, ws, origin) = (state.clone(), caller.workspace.clone(), caller.origin());
    let action = tracked(&state, async move {
        let action = st.store.execute_approved(&ws, &origin, req).await??;
        // `tool` is what `basis` pinned in the consuming transaction: unchanged since.
        if action.status == ActionStatus::Executing { call_connector(st, ws, origin, action, &tool).await } else { Ok(action) }
    })
    .await?;
    Ok(Json(ActionOutcome::of(&action, None)))
}

/// What the gate would decide of an approved `action` if its requester submitted it now,
/// under the tool and the constitution in force: stricter rules since the approval refuse
/// the execution (`store::Standing`), and so does a change to either before the approval
/// is consumed (`store::Basis`). Kill switches, agent-write control and the state of the
/// agent token that asked are checked where the approval is consumed, in one transaction.
async fn standing(state: &AppState, caller: &Caller, action: &Action, tool: &crate::model::Tool) -> Result<(Standing, Basis)> {
    // The agent it came from, for rules that look at it (its state is checked later).
    let agent = match &action.agent_token_id {
        None => None,
        Some(id) => match &caller.kind {
            CallerKind::Agent { token_id, token_name, .. } if token_id == id => {
                Some((id.clone(), token_name.clone(), caller.member_id.clone()))
            }
            _ => {
                let token = state.store.get_token(&caller.workspace, id).await?;
                Some((token.id, token.name, caller.member_id.clone()))
            }
        },
    };
    let rules = tool_rules(tool);
    let constitution = in_force(state, &caller.workspace, caller.epoch).await?;
    let basis = Basis { tool_updated_at: tool.updated_at.clone(), constitution_version: constitution.version() };
    let verdict = if constitution.is_empty() {
        ConstitutionVerdict { version: constitution.version(), citations: Vec::new() }
    } else {
        let large = serde_json::to_vec(&action.payload).map_or(true, |b| b.len() > INLINE_EVALUATION_BYTES);
        let facts = OwnedFacts {
            tool: rules.name.clone(),
            payload: action.payload.clone(),
            resource: action.resource.clone(),
            agent: agent.clone(),
            requester: (caller.member_id.clone(), caller.member_email.clone(), caller.role.clone()),
            confidence: action.confidence,
            now: state.clock.now(),
        };
        evaluate(constitution, facts, large).await?.0
    };
    let decision = gate::decide(&gate::Input {
        principal: &principal_label(caller),
        is_agent: agent.is_some(),
        in_scope: true,
        workspace_switch: None,
        tool_switch: None,
        agent_writes_enabled: true,
        tool: &rules,
        confidence: action.confidence,
        constitution: &verdict,
    });
    let now = match decision.outcome {
        Outcome::Execute => Standing::Needs(0),
        Outcome::NeedsApproval { required } => Standing::Needs(required),
        Outcome::Denied { message, .. } | Outcome::Blocked { message, .. } => Standing::Refused {
            code: "constitution_denied",
            message: format!(
                "the rules in force changed since this action was approved and now refuse it ({message}); the approval was not used"
            ),
        },
    };
    Ok((now, basis))
}

/// Whether the caller may see this action: anyone with `actions:read`, or its requester.
fn may_read(caller: &Caller, a: &Action) -> bool {
    caller.can(Permission::ActionsRead) || (a.requester_id == caller.member_id && caller.can(Permission::ActionsSubmit))
}

/// One action with its payload, decision and result.
#[utoipa::path(get, path = "/v1/actions/{id}", tag = "actions", params(("id" = String, Path, description = "action id")), responses(
    (status = 200, body = Action),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn get_action(State(state): State<AppState>, caller: Auth<need::Authenticated>, Path(id): Path<String>) -> Result<Json<Action>> {
    ids::parse(IdKind::Action, &id)?;
    if !caller.can(Permission::ActionsRead) && !caller.can(Permission::ActionsSubmit) {
        caller.require(Permission::ActionsRead)?;
    }
    let a = state.store.get_action(&caller.workspace, &id).await?;
    if !may_read(&caller, &a) {
        return Err(Error::forbidden("permission_denied", "reading other members' actions needs the `actions:read` permission"));
    }
    // As with approvals: a token reads the actions of the tools it covers, never the
    // payloads of its owner's others (checked after ownership, so it names no tool).
    if !caller.covers_tool(&a.tool) {
        return Err(Error::forbidden("tool_not_in_scope", "this action's tool is outside this token's tools"));
    }
    Ok(Json(a))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub tool: Option<String>,
    /// Actions older than this id (the `next` of the previous page).
    pub before: Option<String>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ActionList {
    pub items: Vec<Action>,
    /// Pass as `before` for the next page.
    pub next: Option<String>,
}

/// Actions, newest first: all of them with `actions:read`, otherwise your own.
#[utoipa::path(get, path = "/v1/actions", tag = "actions", params(ListQuery), responses(
    (status = 200, body = ActionList),
    (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody),
))]
pub async fn list_actions(
    State(state): State<AppState>,
    caller: Auth<need::Authenticated>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ActionList>> {
    let requester_id = if caller.can(Permission::ActionsRead) {
        None
    } else {
        caller.require(Permission::ActionsSubmit)?;
        Some(caller.member_id.clone())
    };
    let status = match q.status.as_deref() {
        Some(s) => {
            Some(ActionStatus::parse(s).ok_or_else(|| Error::bad_request("invalid_query", format!("`{s}` is not an action status")))?)
        }
        None => None,
    };
    if let Some(b) = &q.before {
        ids::parse(IdKind::Action, b)?;
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Error::bad_request("invalid_query", "limit must be between 1 and 200"));
    }
    // A token lists the actions of the tools it covers.
    let (items, next) = super::fill_page(
        limit,
        q.before,
        |before| {
            let filter = ActionFilter { status, tool: q.tool.clone(), requester_id: requester_id.clone(), before, since: None, limit };
            state.store.list_actions(&caller.workspace, filter)
        },
        |a: &Action| caller.covers_tool(&a.tool),
        |a| a.id.clone(),
    )
    .await?;
    Ok(Json(ActionList { items, next }))
}
