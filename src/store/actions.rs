//! Actions and approvals: recording decisions, deciding, expiring, and consuming an
//! approval exactly once.
//!
//! Every state change here runs inside one write job, so it is atomic with its audit
//! event, and (the writer being single, or rows being locked on PostgreSQL) no two
//! changes to one approval interleave. The rules themselves are in `crate::approval`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::db::{Conn, DbError, Row, Value as DbValue};
use super::engine::{DecidedUnder, WriteTx};
use super::{Origin, SqlStore, WorkspaceId};
use crate::approval::{self, Decided, Refusal, State, Verdict};
use crate::audit::{Actor, EventDraft, Via, outcome};
use crate::clock::{format_ts, parse_ts};
use crate::error::{Error, Kind, Result};
use crate::gate::{Outcome, Policy};
use crate::ids::{IdKind, new_id};
use crate::model::{Action, ActionOutcome, ActionStatus, Approval, ApprovalDecision, DecisionRecord};
use crate::params;

/// An action the gate has decided, to record.
#[derive(Clone, Debug)]
pub struct NewAction {
    pub tool: String,
    /// The canonical payload, the same as a value, and its hash.
    pub payload: String,
    pub payload_value: Value,
    pub payload_sha256: String,
    pub resource: Option<String>,
    /// The resource's current state, as canonical JSON text and as a value.
    pub current: Option<String>,
    pub current_value: Option<Value>,
    pub reason: Option<String>,
    pub confidence: Option<f64>,
    pub requester_id: String,
    pub agent_token_id: Option<String>,
    pub decision: DecisionRecord,
    pub outcome: Outcome,
    /// The tool's policy, recorded on the approval.
    pub policy: Policy,
    pub approval_ttl_seconds: i64,
    /// For `Execute`: run the `record` connector inside this transaction (true), or mark
    /// the action `executing` for a connector that runs after commit (false).
    pub record_now: bool,
    pub idempotency: Option<IdempotencyKey>,
    /// The configuration the decision was made under. An action to run now is refused
    /// (`rules_changed`) if its workspace's configuration changed since: a kill switch
    /// engaged, a token revoked or a tool changed while it was being decided must stop
    /// it, not follow it into the log.
    pub decided_under: DecidedUnder,
}

/// What a submitted action to run now hears when the configuration changed while it was
/// being decided. Nothing was recorded; deciding it again is safe.
pub fn rules_changed_while_deciding() -> Error {
    Error::conflict(
        "rules_changed",
        "the configuration changed while this action was being decided (a kill switch, a tool, the rules, a token or a role); \
         nothing was recorded or run: send it again (with the same Idempotency-Key, it cannot run twice)",
    )
}

/// An `Idempotency-Key`, scoped to whoever sent it.
#[derive(Clone, Debug)]
pub struct IdempotencyKey {
    pub principal: String,
    pub key: String,
    /// Fingerprint of the request: the same key with a different body is refused.
    pub request_sha256: String,
}

/// What recording an action did.
#[derive(Clone, Debug)]
pub enum Submitted {
    New {
        action: Box<Action>,
        expires_at: Option<String>,
    },
    /// The same key and request were seen before: here is the first answer.
    Replay(Box<ActionOutcome>),
}

#[async_trait]
pub trait Actions {
    async fn record_action(&self, ws: &WorkspaceId, by: &Origin, new: NewAction) -> Result<Submitted>;
    /// Records what a connector that ran after commit returned.
    async fn finish_execution(&self, ws: &WorkspaceId, by: &Origin, action_id: &str, result: Value, ok: bool) -> Result<Action>;
    /// Records as failed, in every workspace, each action still `executing` that started
    /// before `started_before`: its connector call was cut off (the server stopped
    /// mid-call), so whether it took effect is unknown. Never runs anything again.
    /// Returns how many.
    async fn fail_interrupted(&self, started_before: &str, limit: i64) -> Result<usize>;
    async fn get_action(&self, ws: &WorkspaceId, id: &str) -> Result<Action>;
    async fn list_actions(&self, ws: &WorkspaceId, filter: ActionFilter) -> Result<Vec<Action>>;
    /// Consumes an approved action's approval and runs (record) or starts (http) it.
    /// `Ok(Err(_))` is a refusal that has been audited.
    async fn execute_approved(&self, ws: &WorkspaceId, by: &Origin, req: ExecuteRequest) -> Result<Result<Action, Error>>;
}

/// Which actions to list.
#[derive(Clone, Debug, Default)]
pub struct ActionFilter {
    pub status: Option<ActionStatus>,
    pub tool: Option<String>,
    pub requester_id: Option<String>,
    /// Actions with ids before this one (newest first paging).
    pub before: Option<String>,
    /// Actions created at or after this time.
    pub since: Option<String>,
    pub limit: i64,
}

/// Running an approved action.
#[derive(Clone, Debug)]
pub struct ExecuteRequest {
    pub action_id: String,
    /// The hash of the payload the agent re-sent.
    pub payload_sha256: String,
    /// The human asking (or owning the agent token asking): must be the requester.
    pub member_id: String,
    /// Whether the caller's tool patterns cover the action's tool.
    pub in_scope: bool,
    pub is_agent: bool,
    pub record_now: bool,
    /// What the gate asks of the action now, under the tool and rules in force at
    /// execution: an approval given under laxer rules does not carry it through stricter
    /// ones.
    pub now: Standing,
    /// What `now` was worked out from (read just before the transaction). If it has
    /// changed by the time the approval would be consumed, the execution is refused: sent
    /// again, it is decided under what is in force then.
    pub basis: Basis,
}

/// The configuration a [`Standing`] was decided under.
#[derive(Clone, Debug, PartialEq)]
pub struct Basis {
    /// The tool's `updated_at`.
    pub tool_updated_at: String,
    /// The constitution version in force, if any.
    pub constitution_version: Option<i64>,
}

/// What the gate asks of an approved action at the moment it would run.
#[derive(Clone, Debug, PartialEq)]
pub enum Standing {
    /// It would need this many approvals if submitted now (0: it would run at once).
    Needs(u8),
    /// It would be refused now.
    Refused { code: &'static str, message: String },
}

#[async_trait]
pub trait Approvals {
    /// Pending approvals soonest-expiry first; other states newest first.
    /// Approvals in `state`, in the list's order (pending: soonest expiry first; others:
    /// newest first), starting after the approval `after` (the last of the previous page);
    /// with `requester`, only those that member requested.
    async fn list_approvals(&self, ws: &WorkspaceId, q: ApprovalQuery) -> Result<Vec<Approval>>;
    /// One approval with its payload, current state and the gate's reasons.
    async fn get_approval(&self, ws: &WorkspaceId, id: &str) -> Result<Approval>;
    /// A human's decision. `Ok(Err(_))` is a refusal that has been audited.
    async fn decide_approval(&self, ws: &WorkspaceId, by: &Origin, req: DecisionRequest) -> Result<Result<Approval, Error>>;
    /// Expires every open approval whose time has come, in every workspace, recording each
    /// once. Returns how many.
    async fn expire_due(&self, limit: i64) -> Result<usize>;
}

/// Which approvals to list.
#[derive(Clone, Debug)]
pub struct ApprovalQuery {
    pub state: State,
    pub limit: i64,
    pub requester: Option<String>,
    pub after: Option<String>,
}

#[derive(Clone, Debug)]
pub struct DecisionRequest {
    pub approval_id: String,
    pub member_id: String,
    pub verdict: Verdict,
    pub payload_sha256: String,
    pub reason: Option<String>,
}

// ---------------------------------------------------------------------------------------

const ACTION_COLS: &str = "id, tool, status, payload, payload_sha256, resource, current, reason, confidence, requester_id, \
     agent_token_id, via, approval_id, required_approvals, decision, result, created_at, updated_at";

fn action_from_row(r: &Row) -> Result<Action, DbError> {
    let bad = |c, what: &str| DbError::Decode { column: c, message: format!("unknown {what}") };
    Ok(Action {
        id: r.text(0)?,
        tool: r.text(1)?,
        status: ActionStatus::parse(&r.text(2)?).ok_or_else(|| bad(2, "status"))?,
        payload: r.json(3)?,
        payload_sha256: r.text(4)?,
        resource: r.opt_text(5)?,
        current: r.opt_json(6)?,
        reason: r.opt_text(7)?,
        confidence: r.opt_real(8)?,
        requester_id: r.text(9)?,
        agent_token_id: r.opt_text(10)?,
        via: serde_json::from_value(Value::String(r.text(11)?)).map_err(|_| bad(11, "via"))?,
        approval_id: r.opt_text(12)?,
        required_approvals: r.int(13)? as u8,
        decision: r.json(14)?,
        result: r.opt_json(15)?,
        created_at: r.text(16)?,
        updated_at: r.text(17)?,
    })
}

fn read_action(conn: &mut dyn Conn, ws: &str, id: &str) -> Result<Action> {
    let row = conn
        .query_opt(&format!("SELECT {ACTION_COLS} FROM actions WHERE workspace_id = $1 AND id = $2"), params![ws, id])?
        .ok_or_else(|| Error::not_found("action", id))?;
    Ok(action_from_row(&row)?)
}

pub(super) const APPROVAL_COLS: &str = "a.id, a.action_id, a.tool, a.state, a.policy, a.required, a.requester_id, a.payload_sha256, \
     a.created_at, a.expires_at, a.decided_at, a.consumed_at, x.agent_token_id, x.resource, x.reason, x.confidence, m.email, t.name";
/// Approvals with their action, the requester's e-mail and the agent token's name.
pub(super) const APPROVAL_FROM: &str = "approvals a JOIN actions x ON x.id = a.action_id JOIN members m ON m.id = a.requester_id \
     LEFT JOIN tokens t ON t.id = x.agent_token_id";

pub(super) fn approval_from_row(r: &Row, decisions: Vec<ApprovalDecision>) -> Result<Approval, DbError> {
    let bad = |c, what: &str| DbError::Decode { column: c, message: format!("unknown {what}") };
    let approvals = decisions.iter().filter(|d| d.decision == Verdict::Approve).count() as u8;
    Ok(Approval {
        id: r.text(0)?,
        action_id: r.text(1)?,
        tool: r.text(2)?,
        state: State::parse(&r.text(3)?).ok_or_else(|| bad(3, "state"))?,
        policy: Policy::parse(&r.text(4)?).ok_or_else(|| bad(4, "policy"))?,
        required: r.int(5)? as u8,
        approvals,
        decisions,
        requester_id: r.text(6)?,
        payload_sha256: r.text(7)?,
        created_at: r.text(8)?,
        expires_at: r.text(9)?,
        decided_at: r.opt_text(10)?,
        consumed_at: r.opt_text(11)?,
        agent_token_id: r.opt_text(12)?,
        resource: r.opt_text(13)?,
        reason: r.opt_text(14)?,
        confidence: r.opt_real(15)?,
        requester_email: r.opt_text(16)?,
        agent_name: r.opt_text(17)?,
        payload: None,
        current: None,
        decision: None,
    })
}

fn read_decisions(conn: &mut dyn Conn, ws: &str, approval_id: &str) -> Result<Vec<ApprovalDecision>, DbError> {
    let rows = conn.query(
        "SELECT d.member_id, d.decision, d.reason, d.payload_sha256, d.created_at, m.email FROM approval_decisions d \
         LEFT JOIN members m ON m.id = d.member_id WHERE d.workspace_id = $1 AND d.approval_id = $2 ORDER BY d.created_at, d.member_id",
        params![ws, approval_id],
    )?;
    rows.iter()
        .map(|r| {
            Ok(ApprovalDecision {
                member_id: r.text(0)?,
                decision: if r.text(1)? == "deny" { Verdict::Deny } else { Verdict::Approve },
                reason: r.opt_text(2)?,
                payload_sha256: r.text(3)?,
                created_at: r.text(4)?,
                member_email: r.opt_text(5)?,
            })
        })
        .collect()
}

fn read_approval(conn: &mut dyn Conn, ws: &str, id: &str, for_update: &str) -> Result<Approval> {
    let sql = format!("SELECT {APPROVAL_COLS} FROM {APPROVAL_FROM} WHERE a.workspace_id = $1 AND a.id = $2{for_update}");
    let row = conn.query_opt(&sql, params![ws, id])?.ok_or_else(|| Error::not_found("approval", id))?;
    let decisions = read_decisions(conn, ws, id)?;
    Ok(approval_from_row(&row, decisions)?)
}

/// The pure state machine's view of a stored approval.
fn machine(a: &Approval) -> Result<approval::Approval> {
    Ok(approval::Approval {
        state: a.state,
        required: a.required,
        requester_id: a.requester_id.clone(),
        payload_sha256: a.payload_sha256.clone(),
        expires_at: parse_ts(&a.expires_at).ok_or_else(|| Error::internal("an approval has an unreadable expiry"))?,
        decisions: a.decisions.iter().map(|d| (d.member_id.clone(), d.decision)).collect(),
    })
}

/// The fields of the seed's example event, for every approval event.
fn approval_event_data(a: &Approval, extra: Value) -> Value {
    let mut data = json!({
        "approval_id": a.id,
        "action_id": a.action_id,
        "tool": a.tool,
        "payload_sha256": a.payload_sha256,
        "policy": a.policy.as_str(),
        "required": a.required,
        "requester_id": a.requester_id,
        "expires_at": a.expires_at,
    });
    if let (Some(d), Value::Object(e)) = (data.as_object_mut(), extra) {
        d.extend(e);
    }
    data
}

fn set_action_status(tx: &mut WriteTx<'_>, ws: &str, id: &str, status: ActionStatus) -> Result<(), DbError> {
    let now = tx.now_ts();
    tx.execute(
        "UPDATE actions SET status = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2",
        params![ws, id, status.as_str(), &now],
    )?;
    Ok(())
}

/// Whose open approvals to withdraw.
pub(super) enum AskedBy<'a> {
    /// Through this agent token (just revoked).
    Token(&'a str),
    /// By this member (just deactivated), through any token or in person.
    Member(&'a str),
    /// For this tool (just deleted).
    Tool(&'a str),
}

/// Withdraws every open (pending or approved) approval asked for through a token just
/// revoked, or by a member just deactivated, in the transaction that did it, each with
/// its `approval.withdrawn` event: nobody is left to run it, so no approver should be
/// asked to decide it. Returns how many.
pub(super) fn withdraw_open_approvals(tx: &mut WriteTx<'_>, ws: &str, by: &Origin, asked_by: AskedBy<'_>) -> Result<usize> {
    let (filter, who, why) = match asked_by {
        AskedBy::Token(id) => ("x.agent_token_id = $2", id, "the agent token that asked for it was revoked"),
        AskedBy::Member(id) => ("a.requester_id = $2", id, "the member who asked for it was deactivated"),
        AskedBy::Tool(name) => ("a.tool = $2", name, "the tool it was for was deleted"),
    };
    let sql = format!(
        "SELECT a.id FROM approvals a JOIN actions x ON x.id = a.action_id \
         WHERE a.workspace_id = $1 AND a.state IN ('pending', 'approved') AND {filter} ORDER BY a.id"
    );
    let ids: Vec<String> = tx.query(&sql, params![ws, who])?.iter().map(|r| r.text(0)).collect::<Result<_, _>>()?;
    let now = tx.now_ts();
    let mut withdrawn = 0;
    for id in &ids {
        let lock = tx.dialect().for_update_of("a");
        let a = read_approval(&mut *tx, ws, id, &lock)?;
        let mut m = machine(&a)?;
        // Past its time, it expired first: recorded as such, as any touch would.
        if m.expire_if_due(tx.now()) {
            record_expiry(tx, ws, &a, by.actor.clone(), by.via)?;
            continue;
        }
        if !m.withdraw() {
            continue;
        }
        tx.execute(
            "UPDATE approvals SET state = 'withdrawn', decided_at = COALESCE(decided_at, $3) \
             WHERE workspace_id = $1 AND id = $2 AND state IN ('pending', 'approved')",
            params![ws, id, &now],
        )?;
        set_action_status(tx, ws, &a.action_id, ActionStatus::Withdrawn)?;
        tx.append(
            ws,
            EventDraft::new("approval.withdrawn", by.actor.clone(), by.via)
                .resource(a.id.clone())
                .payload_sha256(a.payload_sha256.clone())
                .outcome(outcome::FAILURE)
                .data(approval_event_data(&a, json!({"approvals": a.approvals, "why": why}))),
        )?;
        withdrawn += 1;
    }
    Ok(withdrawn)
}

/// The result code of a call the sweeper found cut off.
const INTERRUPTED: &str = "execution_interrupted";

/// Records how an `executing` action's connector call ended: its status and result, an
/// `action.executed` or `action.failed` event, and the answer kept for its idempotency
/// key. `None` if the action is not executing (its end is already recorded).
///
/// A call's own answer may also replace the sweeper's "interrupted, outcome unknown" (see
/// `fail_interrupted`) if it arrives after all — the log then shows both, in order — but
/// the sweeper never overwrites an answer.
fn finish(tx: &mut WriteTx<'_>, ws: &str, action_id: &str, result: &Value, ok: bool, actor: &Actor, via: Via) -> Result<Option<Action>> {
    let status = if ok { ActionStatus::Executed } else { ActionStatus::Failed };
    let now = tx.now_ts();
    let swept = result.get("code").and_then(Value::as_str) == Some(INTERRUPTED);
    let n = if swept {
        let sql =
            "UPDATE actions SET status = $3, result = $4, updated_at = $5 WHERE workspace_id = $1 AND id = $2 AND status = 'executing'";
        tx.execute(sql, params![ws, action_id, status.as_str(), result.to_string(), &now])?
    } else {
        let sql = "UPDATE actions SET status = $3, result = $4, updated_at = $5 WHERE workspace_id = $1 AND id = $2 \
                   AND (status = 'executing' OR (status = 'failed' AND result LIKE $6))";
        let interrupted = format!("%\"code\":\"{INTERRUPTED}\"%");
        tx.execute(sql, params![ws, action_id, status.as_str(), result.to_string(), &now, interrupted])?
    };
    if n == 0 {
        return Ok(None);
    }
    let action = read_action(&mut *tx, ws, action_id)?;
    let (event, out) = if ok { ("action.executed", outcome::SUCCESS) } else { ("action.failed", outcome::FAILURE) };
    tx.append(
        ws,
        EventDraft::new(event, actor.clone(), via)
            .resource(action_id.to_string())
            .payload_sha256(action.payload_sha256.clone())
            .outcome(out)
            .data(json!({"action_id": action_id, "tool": action.tool, "connector": "http", "result": result})),
    )?;
    save_idempotent_response(tx, ws, action_id, &ActionOutcome::of(&action, None))?;
    Ok(Some(action))
}

/// Records an approval's expiry (state, action, event), once.
fn record_expiry(tx: &mut WriteTx<'_>, ws: &str, a: &Approval, actor: Actor, via: Via) -> Result<(), DbError> {
    let now = tx.now_ts();
    let n = tx.execute(
        "UPDATE approvals SET state = 'expired', decided_at = COALESCE(decided_at, $3) WHERE workspace_id = $1 AND id = $2 AND state IN ('pending', 'approved')",
        params![ws, &a.id, &now],
    )?;
    if n == 0 {
        return Ok(());
    }
    set_action_status(tx, ws, &a.action_id, ActionStatus::Expired)?;
    tx.append(
        ws,
        EventDraft::new("approval.expired", actor, via)
            .resource(a.id.clone())
            .payload_sha256(a.payload_sha256.clone())
            .outcome(outcome::FAILURE)
            .data(approval_event_data(a, json!({"approvals": a.approvals}))),
    )?;
    Ok(())
}

/// Turns a state-machine refusal into the error a caller sees.
fn refusal_error(r: &Refusal) -> Error {
    let kind = match r {
        Refusal::Expired => Kind::Gone,
        Refusal::RequesterCannotDecide => Kind::Forbidden,
        _ => Kind::Conflict,
    };
    Error::new(kind, r.code(), r.message())
}

/// What one run of `record_action`'s write job did.
enum Recorded {
    /// The same key and request were seen before: the first answer.
    Replay(Box<ActionOutcome>),
    /// The action, already built (to keep it with its idempotency key).
    Built(Submitted),
    /// What was written; the caller builds the action from it and the request.
    Written(Written, Option<String>),
}

/// What `record_action` wrote beyond the request itself.
struct Written {
    id: String,
    status: ActionStatus,
    required: u8,
    approval_id: Option<String>,
    result: Option<Value>,
    /// When: created and updated.
    at: String,
}

impl Written {
    fn action(self, new: NewAction, via: Via) -> Action {
        Action {
            id: self.id,
            tool: new.tool,
            status: self.status,
            payload: new.payload_value,
            payload_sha256: new.payload_sha256,
            resource: new.resource,
            current: new.current_value,
            reason: new.reason,
            confidence: new.confidence,
            requester_id: new.requester_id,
            agent_token_id: new.agent_token_id,
            via,
            approval_id: self.approval_id,
            required_approvals: self.required,
            decision: new.decision,
            result: self.result,
            created_at: self.at.clone(),
            updated_at: self.at,
        }
    }
}

/// The receipt the `record` connector returns.
pub fn record_receipt(action_id: &str, at: &str) -> Value {
    json!({"connector": "record", "recorded": true, "receipt": format!("rcpt_{}", action_id.trim_start_matches("act_")), "recorded_at": at})
}

fn save_idempotent_response(tx: &mut WriteTx<'_>, ws: &str, action_id: &str, response: &ActionOutcome) -> Result<(), DbError> {
    let text = serde_json::to_string(response).unwrap_or_default();
    tx.execute("UPDATE idempotency_keys SET response = $3 WHERE workspace_id = $1 AND action_id = $2", params![ws, action_id, &text])?;
    Ok(())
}

#[async_trait]
impl Actions for SqlStore {
    async fn record_action(&self, ws: &WorkspaceId, by: &Origin, new: NewAction) -> Result<Submitted> {
        let (ws, by) = (ws.clone(), by.clone());
        // What can be prepared before the write is, so the one writer thread does less.
        let decision_text = serde_json::to_string(&new.decision).map_err(|e| Error::internal(e.to_string()))?;
        let new = Arc::new(new);
        let job_new = new.clone();
        let via = by.via;
        let done = self
            .engine
            .write(move |tx| {
                // A job may run again (see `store::engine`): it only reads the request.
                let new = &*job_new;
                let w = ws.as_str();
                tx.set_workspace(w)?;
                if let Some(k) = &new.idempotency {
                    let sql = format!(
                        "SELECT request_sha256, response FROM idempotency_keys WHERE workspace_id = $1 AND principal = $2 AND key = $3{}",
                        tx.dialect().for_update()
                    );
                    if let Some(row) = tx.query_opt(&sql, params![w, &k.principal, &k.key])? {
                        if row.text(0)? != k.request_sha256 {
                            return Err(Error::conflict(
                                "idempotency_key_reused",
                                "this Idempotency-Key was already used with a different request; use a new key for a new request",
                            ));
                        }
                        return match row.opt_json::<ActionOutcome>(1)? {
                            Some(first) => Ok(Recorded::Replay(Box::new(first))),
                            None => Err(Error::conflict(
                                "idempotency_key_in_use",
                                "a request with this Idempotency-Key is still running; retry when it has finished",
                            )),
                        };
                    }
                }
                let now = tx.now();
                let now_ts = format_ts(now);
                let id = new_id(IdKind::Action);
                let (status, required, approval) = match &new.outcome {
                    Outcome::Execute if new.record_now => (ActionStatus::Executed, 0u8, None),
                    Outcome::Execute => (ActionStatus::Executing, 0, None),
                    Outcome::NeedsApproval { required } => {
                        let expires = format_ts(now + chrono::Duration::seconds(new.approval_ttl_seconds));
                        (ActionStatus::PendingApproval, *required, Some((new_id(IdKind::Approval), expires)))
                    }
                    Outcome::Denied { .. } => (ActionStatus::Denied, 0, None),
                    Outcome::Blocked { .. } => (ActionStatus::Blocked, 0, None),
                };
                let result = (status == ActionStatus::Executed).then(|| record_receipt(&id, &now_ts));
                tx.execute(
                    "INSERT INTO actions (id, workspace_id, tool, status, payload, payload_sha256, resource, current, reason, confidence, \
                     requester_id, agent_token_id, via, approval_id, required_approvals, decision, result, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18)",
                    params![
                        &id,
                        w,
                        &new.tool,
                        status.as_str(),
                        &new.payload,
                        &new.payload_sha256,
                        new.resource.clone(),
                        new.current.clone(),
                        new.reason.clone(),
                        new.confidence,
                        &new.requester_id,
                        new.agent_token_id.clone(),
                        by.via.as_str(),
                        approval.as_ref().map(|(a, _)| a.clone()),
                        required as i64,
                        &decision_text,
                        result.as_ref().map(|r| r.to_string()),
                        &now_ts
                    ],
                )?;
                let cited: Vec<&str> = new.decision.cited_rules.iter().map(|c| c.rule_id.as_str()).collect();
                tx.append(
                    w,
                    EventDraft::new("action.requested", by.actor.clone(), by.via)
                        .resource(id.clone())
                        .payload_sha256(new.payload_sha256.clone())
                        .outcome(match status {
                            ActionStatus::Denied => outcome::DENIED,
                            ActionStatus::Blocked => outcome::BLOCKED,
                            ActionStatus::PendingApproval => outcome::PENDING,
                            _ => outcome::SUCCESS,
                        })
                        .data(json!({
                            "action_id": id,
                            "tool": new.tool,
                            "status": status.as_str(),
                            "required_approvals": required,
                            "requester_id": new.requester_id,
                            "agent_token_id": new.agent_token_id,
                            "resource": new.resource,
                            "confidence": new.confidence,
                            "reason": new.reason,
                            "code": new.decision.code,
                            "cited_rules": cited,
                            "constitution_version": new.decision.constitution_version,
                        })),
                )?;
                // Checked in the transaction that records it, once the workspace's chain head
                // is locked (the append above): a change to the workspace either committed
                // before — and is seen — or waits for this job and comes after it in the
                // log. A refusal decided under stale rules is harmless; a run is not, and
                // neither is an approval asked for by a token revoked (or a member
                // deactivated) in between: the revocation withdrew the open ones before this
                // one existed, so it would wait for approvers with nobody left to run it.
                // Refused, the savepoint takes the row and the event back.
                if matches!(new.outcome, Outcome::Execute | Outcome::NeedsApproval { .. }) && tx.workspace_config_moved(w, &new.decided_under)? {
                    return Err(rules_changed_while_deciding());
                }
                let summary = |extra: Value| {
                    let mut d = json!({"action_id": id, "tool": new.tool, "code": new.decision.code, "message": new.decision.message, "cited_rules": cited});
                    if let (Some(m), Value::Object(e)) = (d.as_object_mut(), extra) {
                        m.extend(e);
                    }
                    d
                };
                match status {
                    ActionStatus::Denied | ActionStatus::Blocked => {
                        let (event, out) = if status == ActionStatus::Denied { ("action.denied", outcome::DENIED) } else { ("action.blocked", outcome::BLOCKED) };
                        tx.append(
                            w,
                            EventDraft::new(event, by.actor.clone(), by.via)
                                .resource(id.clone())
                                .payload_sha256(new.payload_sha256.clone())
                                .outcome(out)
                                .data(summary(json!({}))),
                        )?;
                    }
                    ActionStatus::Executed => {
                        tx.append(
                            w,
                            EventDraft::new("action.executed", by.actor.clone(), by.via)
                                .resource(id.clone())
                                .payload_sha256(new.payload_sha256.clone())
                                .data(summary(json!({"connector": "record", "result": result}))),
                        )?;
                    }
                    ActionStatus::PendingApproval => {
                        let (apv, expires) = approval.clone().expect("pending actions have an approval");
                        tx.execute(
                            "INSERT INTO approvals (id, workspace_id, action_id, tool, payload_sha256, policy, required, requester_id, state, created_at, expires_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10)",
                            params![&apv, w, &id, &new.tool, &new.payload_sha256, new.policy.as_str(), required as i64, &new.requester_id, &now_ts, &expires],
                        )?;
                        tx.append(
                            w,
                            EventDraft::new("approval.requested", by.actor.clone(), by.via)
                                .resource(apv.clone())
                                .payload_sha256(new.payload_sha256.clone())
                                .outcome(outcome::PENDING)
                                .data(json!({
                                    "approval_id": apv,
                                    "action_id": id,
                                    "tool": new.tool,
                                    "payload_sha256": new.payload_sha256,
                                    "policy": new.policy.as_str(),
                                    "required": required,
                                    "requester_id": new.requester_id,
                                    "agent_token_id": new.agent_token_id,
                                    "expires_at": expires,
                                    "cited_rules": cited,
                                })),
                        )?;
                    }
                    _ => {}
                }
                let written = Written { id, status, required, approval_id: approval.as_ref().map(|(a, _)| a.clone()), result, at: now_ts };
                let expires_at = approval.map(|(_, e)| e);
                if let Some(k) = &new.idempotency {
                    // The first answer is kept with the key, in the same transaction.
                    let action = written.action(new.clone(), via);
                    let response = (action.status != ActionStatus::Executing).then(|| ActionOutcome::of(&action, expires_at.clone()));
                    let inserted = tx.execute(
                        "INSERT INTO idempotency_keys (workspace_id, principal, key, request_sha256, action_id, response, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (workspace_id, principal, key) DO NOTHING",
                        params![w, &k.principal, &k.key, &k.request_sha256, &action.id, response.map(|r| serde_json::to_string(&r).unwrap_or_default()), &action.created_at],
                    )?;
                    if inserted == 0 {
                        // Another replica committed the same key after the check above (one
                        // writer, SQLite, cannot): run again, and answer as that first call did.
                        return Err(tx.retry_later().into());
                    }
                    return Ok(Recorded::Built(Submitted::New { action: Box::new(action), expires_at }));
                }
                Ok(Recorded::Written(written, expires_at))
            })
            .await?;
        Ok(match done {
            Recorded::Replay(first) => Submitted::Replay(first),
            Recorded::Built(submitted) => submitted,
            // Built from what was written rather than read back: this is the hot path. The
            // job is done with the request by now, so it is moved, not copied.
            Recorded::Written(written, expires_at) => {
                let new = Arc::try_unwrap(new).unwrap_or_else(|shared| (*shared).clone());
                Submitted::New { action: Box::new(written.action(new, via)), expires_at }
            }
        })
    }

    async fn finish_execution(&self, ws: &WorkspaceId, by: &Origin, action_id: &str, result: Value, ok: bool) -> Result<Action> {
        let (ws, by, action_id) = (ws.clone(), by.clone(), action_id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                finish(tx, w, &action_id, &result, ok, &by.actor, by.via)?
                    .ok_or_else(|| Error::conflict("not_executing", "the action is not running"))
            })
            .await
    }

    async fn fail_interrupted(&self, started_before: &str, limit: i64) -> Result<usize> {
        let before = started_before.to_string();
        let probe = "SELECT 1 FROM actions WHERE status = 'executing' AND updated_at < $1 LIMIT 1";
        if !self.engine.any_anywhere(probe, params![&before].to_vec()).await? {
            return Ok(0);
        }
        self.engine
            .write(move |tx| {
                let result = json!({
                    "connector": "http",
                    "code": INTERRUPTED,
                    "error": "the server stopped while this call was in flight, so whether it took effect is unknown; \
                              check the receiving system before submitting it again",
                });
                let due =
                    "SELECT workspace_id, id FROM actions WHERE status = 'executing' AND updated_at < $1 ORDER BY updated_at LIMIT $2";
                // `None` from `finish`: another replica recorded it first.
                tx.each_in_its_workspace(due, params![&before, limit], |tx, w, id| {
                    Ok(finish(tx, w, id, &result, false, &Actor::system("execution-sweeper"), Via::System)?.is_some())
                })
            })
            .await
    }

    async fn get_action(&self, ws: &WorkspaceId, id: &str) -> Result<Action> {
        let (ws, id) = (ws.clone(), id.to_string());
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                read_action(conn, ws.as_str(), &id)
            })
            .await
    }

    async fn list_actions(&self, ws: &WorkspaceId, f: ActionFilter) -> Result<Vec<Action>> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                // Optional filters as `($n IS NULL OR col = $n)`: one statement, one plan.
                let sql = format!(
                    "SELECT {ACTION_COLS} FROM actions WHERE workspace_id = $1 \
                     AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR tool = $3) AND ($4 IS NULL OR requester_id = $4) \
                     AND ($5 IS NULL OR id < $5) AND ($6 IS NULL OR created_at >= $6) ORDER BY id DESC LIMIT $7"
                );
                let rows = conn.query(
                    &sql,
                    params![
                        w,
                        f.status.map(|s| s.as_str()),
                        f.tool.clone(),
                        f.requester_id.clone(),
                        f.before.clone(),
                        f.since.clone(),
                        f.limit
                    ],
                )?;
                Ok(rows.iter().map(action_from_row).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn execute_approved(&self, ws: &WorkspaceId, by: &Origin, req: ExecuteRequest) -> Result<Result<Action, Error>> {
        let (ws, by) = (ws.clone(), by.clone());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let action = read_action(&mut *tx, w, &req.action_id)?;
                let Some(approval_id) = action.approval_id.clone() else {
                    return Err(Error::conflict(
                        "no_approval",
                        format!("this action has no approval to execute: it was decided when it was submitted ({})", action.status.as_str()),
                    ));
                };
                let lock = tx.dialect().for_update_of("a");
                let stored = read_approval(&mut *tx, w, &approval_id, &lock)?;
                let mut m = machine(&stored)?;
                let now = tx.now();
                let refuse = |tx: &mut WriteTx<'_>, code: &'static str, message: String, kind: Kind| -> Result<Result<Action, Error>> {
                    tx.append(
                        w,
                        EventDraft::new("action.execution_refused", by.actor.clone(), by.via)
                            .resource(action.id.clone())
                            .payload_sha256(req.payload_sha256.clone())
                            .outcome(outcome::DENIED)
                            .data(json!({"action_id": action.id, "approval_id": approval_id, "tool": action.tool, "code": code, "message": message})),
                    )?;
                    Ok(Err(Error::new(kind, code, message)))
                };
                // Someone else's action, or a tool outside the token's patterns: refused
                // and recorded (trying to run another's approved action is worth knowing).
                if action.requester_id != req.member_id {
                    let message = "only the requester, or an agent token they own, may execute this action".to_string();
                    return refuse(tx, "not_your_action", message, Kind::Forbidden);
                }
                if !req.in_scope {
                    let message = format!("this token's tool patterns do not include `{}`", action.tool);
                    return refuse(tx, "tool_not_in_scope", message, Kind::Forbidden);
                }
                // Kill switches and agent-write control are checked here, in the same
                // transaction as the consumption, so neither can be raced.
                let switch = tx
                    .query_opt(
                        "SELECT target, reason FROM killswitches WHERE workspace_id = $1 AND engaged = TRUE AND (target = 'workspace' OR target = $2) ORDER BY target DESC",
                        params![w, format!("tool:{}", action.tool)],
                    )?
                    .map(|r| Ok::<_, DbError>((r.text(0)?, r.opt_text(1)?.unwrap_or_default())))
                    .transpose()?;
                if let Some((target, reason)) = switch {
                    let (code, what) = if target == "workspace" { ("workspace_kill_switch", "the workspace".to_string()) } else { ("tool_kill_switch", format!("`{}`", action.tool)) };
                    return refuse(tx, code, format!("the kill switch for {what} is engaged ({reason}); the approval was not used"), Kind::Conflict);
                }
                if req.is_agent {
                    let writes = tx.query_opt("SELECT agent_writes_enabled FROM workspaces WHERE id = $1", params![w])?.map(|r| r.bool(0)).transpose()?;
                    let kind = tx.query_opt("SELECT kind FROM tools WHERE workspace_id = $1 AND name = $2", params![w, &action.tool])?.map(|r| r.text(0)).transpose()?;
                    if kind.as_deref() == Some("write") && writes == Some(false) {
                        return refuse(tx, "agent_writes_disabled", "agent writes are off for this workspace; the approval was not used".into(), Kind::Conflict);
                    }
                }
                match m.consume(&req.payload_sha256, now) {
                    Ok(()) => {}
                    Err(Refusal::Expired) => {
                        record_expiry(tx, w, &stored, by.actor.clone(), by.via)?;
                        return refuse(tx, "approval_expired", Refusal::Expired.message(), Kind::Gone);
                    }
                    Err(r) => {
                        let e = refusal_error(&r);
                        return refuse(tx, r.code(), r.message(), e.kind);
                    }
                }
                // Otherwise it could run, but the rules may have tightened since it was approved
                // (checked last, so a stale, pending or drifted request hears that first).
                // The agent token that asked must still be able to act: revoking it
                // withdraws what it asked for.
                if let Some(token) = &action.agent_token_id {
                    let row = tx.query_opt("SELECT name, revoked_at, expires_at FROM tokens WHERE workspace_id = $1 AND id = $2", params![w, token])?;
                    let (name, revoked, expires) = match row {
                        Some(r) => (r.text(0)?, r.opt_text(1)?, r.opt_text(2)?),
                        None => (token.clone(), Some(String::new()), None),
                    };
                    let expired = expires.is_some_and(|e| e <= format_ts(now));
                    if revoked.is_some() || expired {
                        let message = format!(
                            "the agent token `{name}` that requested this action has been {} since, which withdraws what it asked for; the approval was not used",
                            if revoked.is_some() { "revoked" } else { "expired" }
                        );
                        return refuse(tx, "requester_token_revoked", message, Kind::Conflict);
                    }
                }
                let tool_now = tx.query_opt("SELECT updated_at FROM tools WHERE workspace_id = $1 AND name = $2", params![w, &action.tool])?;
                let rules_now = tx.query_opt(
                    "SELECT version FROM constitution_versions WHERE workspace_id = $1 ORDER BY version DESC LIMIT 1",
                    params![w],
                )?;
                let tool_now = tool_now.map(|r| r.text(0)).transpose()?;
                let rules_now = rules_now.map(|r| r.int(0)).transpose()?;
                if tool_now.as_deref() != Some(req.basis.tool_updated_at.as_str()) || rules_now != req.basis.constitution_version {
                    let message = "the tool or the rules in force changed while this execution was being checked; send it again to have it decided under them (the approval was not used)";
                    return refuse(tx, "rules_changed", message.into(), Kind::Conflict);
                }
                match &req.now {
                    Standing::Refused { code, message } => return refuse(tx, code, message.clone(), Kind::Conflict),
                    Standing::Needs(needed) if *needed > stored.required => {
                        let message = format!(
                            "this action now needs {needed} approvals (the tool's policy or the rules in force changed since it was approved) and has {} \
                             — submit it again to ask for them; the approval was not used",
                            stored.required
                        );
                        return refuse(tx, "approval_insufficient", message, Kind::Conflict);
                    }
                    Standing::Needs(_) => {}
                }
                let now_ts = format_ts(now);
                let n = tx.execute(
                    "UPDATE approvals SET state = 'consumed', consumed_at = $3 WHERE workspace_id = $1 AND id = $2 AND state = 'approved'",
                    params![w, &approval_id, &now_ts],
                )?;
                if n != 1 {
                    // The state machine and the row disagree: refuse rather than risk a second run.
                    return Err(Error::conflict("approval_consumed", Refusal::Consumed.message()));
                }
                tx.append(
                    w,
                    EventDraft::new("approval.consumed", by.actor.clone(), by.via)
                        .resource(approval_id.clone())
                        .payload_sha256(stored.payload_sha256.clone())
                        .data(approval_event_data(&stored, json!({"consumed_by": by.actor.id}))),
                )?;
                if req.record_now {
                    let result = record_receipt(&action.id, &now_ts);
                    tx.execute(
                        "UPDATE actions SET status = 'executed', result = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2",
                        params![w, &action.id, result.to_string(), &now_ts],
                    )?;
                    tx.append(
                        w,
                        EventDraft::new("action.executed", by.actor.clone(), by.via)
                            .resource(action.id.clone())
                            .payload_sha256(action.payload_sha256.clone())
                            .data(json!({"action_id": action.id, "approval_id": approval_id, "tool": action.tool, "connector": "record", "result": result})),
                    )?;
                } else {
                    set_action_status(tx, w, &action.id, ActionStatus::Executing)?;
                }
                Ok(Ok(read_action(&mut *tx, w, &action.id)?))
            })
            .await
    }
}

#[async_trait]
impl Approvals for SqlStore {
    async fn list_approvals(&self, ws: &WorkspaceId, q: ApprovalQuery) -> Result<Vec<Approval>> {
        let ws = ws.clone();
        let now = self.now_ts();
        let ApprovalQuery { state, limit, requester, after } = q;
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                // Optional conditions, each with its own numbered parameter after the four
                // every query has.
                let mut args: Vec<DbValue> = params![w, state.as_str(), &now, limit].to_vec();
                let mut and = String::new();
                if let Some(r) = &requester {
                    args.push(DbValue::from(r.as_str()));
                    and.push_str(&format!(" AND a.requester_id = ${}", args.len()));
                }
                if let Some(after) = &after {
                    // Where the previous page ended, in the list's own order.
                    let Some(last) =
                        conn.query_opt("SELECT expires_at FROM approvals WHERE workspace_id = $1 AND id = $2", params![w, after])?
                    else {
                        return Err(Error::bad_request(
                            "invalid_query",
                            format!("`after`: there is no approval `{after}` in this workspace"),
                        ));
                    };
                    args.push(DbValue::from(after.as_str()));
                    let id = args.len();
                    if state == State::Pending {
                        args.push(DbValue::from(last.text(0)?));
                        let at = args.len();
                        and.push_str(&format!(" AND (a.expires_at > ${at} OR (a.expires_at = ${at} AND a.id > ${id}))"));
                    } else {
                        and.push_str(&format!(" AND a.id < ${id}"));
                    }
                }
                // An approval past its time is not pending, even in the moment before the
                // sweeper records its expiry.
                let sql = match state {
                    State::Pending => format!(
                        "SELECT {APPROVAL_COLS} FROM {APPROVAL_FROM} \
                         WHERE a.workspace_id = $1 AND a.state = $2 AND a.expires_at > $3{and} ORDER BY a.expires_at, a.id LIMIT $4"
                    ),
                    _ => format!(
                        "SELECT {APPROVAL_COLS} FROM {APPROVAL_FROM} \
                         WHERE a.workspace_id = $1 AND a.state = $2 AND ($3 IS NOT NULL){and} ORDER BY a.id DESC LIMIT $4"
                    ),
                };
                let rows = conn.query(&sql, &args)?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let decisions = read_decisions(conn, w, &r.text(0)?)?;
                    out.push(approval_from_row(r, decisions)?);
                }
                Ok(out)
            })
            .await
    }

    async fn get_approval(&self, ws: &WorkspaceId, id: &str) -> Result<Approval> {
        let (ws, id) = (ws.clone(), id.to_string());
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                let mut a = read_approval(conn, w, &id, "")?;
                let action = read_action(conn, w, &a.action_id)?;
                a.payload = Some(action.payload);
                a.current = action.current;
                a.decision = Some(action.decision);
                Ok(a)
            })
            .await
    }

    async fn decide_approval(&self, ws: &WorkspaceId, by: &Origin, req: DecisionRequest) -> Result<Result<Approval, Error>> {
        let (ws, by) = (ws.clone(), by.clone());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let lock = tx.dialect().for_update_of("a");
                let stored = read_approval(&mut *tx, w, &req.approval_id, &lock)?;
                let mut m = machine(&stored)?;
                let now = tx.now();
                match m.decide(&req.member_id, req.verdict, &req.payload_sha256, now) {
                    Err(r) => {
                        if r == Refusal::Expired {
                            // The expiry first (once), then this attempt, like any refusal.
                            record_expiry(tx, w, &stored, by.actor.clone(), by.via)?;
                        }
                        tx.append(
                            w,
                            EventDraft::new("approval.decision_refused", by.actor.clone(), by.via)
                                .resource(stored.id.clone())
                                .payload_sha256(req.payload_sha256.clone())
                                .outcome(outcome::DENIED)
                                .data(approval_event_data(&stored, json!({"decider_id": req.member_id, "code": r.code(), "decision": req.verdict}))),
                        )?;
                        Ok(Err(refusal_error(&r)))
                    }
                    Ok(decided) => {
                        let now_ts = format_ts(now);
                        let verdict_text = match req.verdict {
                            Verdict::Approve => "approve",
                            Verdict::Deny => "deny",
                        };
                        tx.execute(
                            "INSERT INTO approval_decisions (approval_id, workspace_id, member_id, decision, reason, payload_sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                            params![&stored.id, w, &req.member_id, verdict_text, req.reason.clone(), &req.payload_sha256, &now_ts],
                        )?;
                        let (event, out, extra) = match decided {
                            Decided::Approved { approvals, complete } => {
                                if complete {
                                    tx.execute(
                                        "UPDATE approvals SET state = 'approved', decided_at = $3 WHERE workspace_id = $1 AND id = $2",
                                        params![w, &stored.id, &now_ts],
                                    )?;
                                    set_action_status(tx, w, &stored.action_id, ActionStatus::Approved)?;
                                }
                                ("approval.granted", outcome::SUCCESS, json!({"approver_user_id": req.member_id, "approvals": approvals, "complete": complete}))
                            }
                            Decided::Denied => {
                                tx.execute(
                                    "UPDATE approvals SET state = 'denied', decided_at = $3 WHERE workspace_id = $1 AND id = $2",
                                    params![w, &stored.id, &now_ts],
                                )?;
                                set_action_status(tx, w, &stored.action_id, ActionStatus::Denied)?;
                                ("approval.denied", outcome::DENIED, json!({"approver_user_id": req.member_id, "reason": req.reason}))
                            }
                        };
                        tx.append(
                            w,
                            EventDraft::new(event, by.actor.clone(), by.via)
                                .resource(stored.id.clone())
                                .payload_sha256(stored.payload_sha256.clone())
                                .outcome(out)
                                .data(approval_event_data(&stored, extra)),
                        )?;
                        Ok(Ok(read_approval(&mut *tx, w, &stored.id, "")?))
                    }
                }
            })
            .await
    }

    async fn expire_due(&self, limit: i64) -> Result<usize> {
        let probe = "SELECT 1 FROM approvals WHERE state IN ('pending', 'approved') AND expires_at <= $1 LIMIT 1";
        if !self.engine.any_anywhere(probe, params![self.now_ts()].to_vec()).await? {
            return Ok(0);
        }
        self.engine
            .write(move |tx| {
                let now = tx.now_ts();
                let due = "SELECT workspace_id, id FROM approvals WHERE state IN ('pending', 'approved') AND expires_at <= $1 ORDER BY expires_at LIMIT $2";
                tx.each_in_its_workspace(due, params![&now, limit], |tx, w, id| {
                    let lock = tx.dialect().for_update_of("a");
                    let a = read_approval(&mut *tx, w, id, &lock)?;
                    record_expiry(tx, w, &a, Actor::system("approval-sweeper"), Via::System)?;
                    Ok(true)
                })
            })
            .await
    }
}
