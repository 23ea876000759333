//! The records the API returns, shared by the server, the store and the client.
//!
//! These are the nouns of the product as a caller sees them. They never carry a secret:
//! password hashes and token hashes stay inside the store.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::permissions::Permission;

/// A tenant. Everything belongs to exactly one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub created_at: String,
}

/// Workspace-wide settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    /// While false (the default), `write` tools are refused to agent tokens.
    pub agent_writes_enabled: bool,
    /// How long an approval stays open unless the tool says otherwise.
    pub approval_ttl_seconds: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    Deactivated,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Deactivated => "deactivated",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(MemberStatus::Active),
            "deactivated" => Some(MemberStatus::Deactivated),
            _ => None,
        }
    }
}

/// A person in a workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub id: String,
    pub email: String,
    pub name: String,
    /// `owner`, `admin`, `member`, `viewer`, or a custom role's name.
    pub role: String,
    pub status: MemberStatus,
    pub created_at: String,
    pub updated_at: String,
}

/// A role: built-in or custom, with what it allows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Role {
    /// Custom roles have an id (`rol_…`); built-in roles have none.
    pub id: Option<String>,
    pub name: String,
    pub builtin: bool,
    pub description: String,
    #[schema(value_type = Vec<String>)]
    pub permissions: Vec<Permission>,
    /// How many members hold it.
    pub members: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

/// An agent token, as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// The public id (like Vault's accessor): lists, rotates and revokes the token.
    pub id: String,
    pub name: String,
    /// The member who created it; its powers never exceed theirs.
    pub owner_id: String,
    /// Permissions granted (intersected with the owner's role on every request).
    pub scopes: Vec<String>,
    /// Tool name patterns (`email.*`, `*`).
    pub tools: Vec<String>,
    /// The first characters of the secret, to tell tokens apart.
    pub hint: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub rotated_at: Option<String>,
    pub revoked_at: Option<String>,
    pub state: TokenState,
}

/// A signed-in human's session, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub member_id: String,
    pub client: String,
    pub created_at: String,
    pub expires_at: String,
}

/// A page of a list.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<String>,
}

// ---------------------------------------------------------------------------------------
// The gate: tools, kill switches, actions, approvals
// ---------------------------------------------------------------------------------------

use std::collections::BTreeMap;

use crate::gate::{Citation, Policy, Stage, ToolKind};

/// What executes a tool's calls.
///
/// The same shape is used three ways: as sent (secret header values in the clear), as
/// stored (sealed by `vault`), and as returned (masked as `********`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Connector {
    /// Records the call and returns a receipt; runs nothing. For demos and tests.
    /// (Braced, not a unit variant: serde refuses unknown fields only in a struct
    /// variant, and `{"type": "record", "url": …}` must not be taken silently.)
    Record {},
    /// POSTs the payload as JSON to `url`.
    Http {
        url: String,
        /// Plain headers, sent as given and shown as given.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Headers whose values are secret: encrypted at rest, never returned, never
        /// logged. On update, leave this out to keep the stored values (refused if the
        /// URL's scheme, host or port changed: secrets never follow a tool elsewhere).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_headers: Option<BTreeMap<String, String>>,
        /// Query parameters whose values are secret, for an API that takes its key in the
        /// URL (`?key=…`): encrypted at rest, never returned, never logged, added to the
        /// URL only as the call is made. Kept on update like `secret_headers`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_query: Option<BTreeMap<String, String>>,
        /// Milliseconds to wait for the receiver, 100 to 30000 (default 10000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
}

/// What a masked secret looks like in any answer.
pub const MASK: &str = "********";

impl Connector {
    pub fn type_name(&self) -> &'static str {
        match self {
            Connector::Record {} => "record",
            Connector::Http { .. } => "http",
        }
    }

    /// The same connector with every secret value replaced by [`MASK`].
    pub fn masked(&self) -> Connector {
        match self {
            Connector::Record {} => Connector::Record {},
            Connector::Http { url, headers, secret_headers, secret_query, timeout_ms } => {
                let mask = |m: &Option<BTreeMap<String, String>>| m.iter().flatten().map(|(k, _)| (k.clone(), MASK.to_string())).collect();
                Connector::Http {
                    url: url.clone(),
                    headers: headers.clone(),
                    secret_headers: Some(mask(secret_headers)),
                    // Shown only when there are some: most tools have none.
                    secret_query: secret_query.as_ref().filter(|q| !q.is_empty()).map(|_| mask(secret_query)),
                    timeout_ms: *timeout_ms,
                }
            }
        }
    }
}

/// A tool agents can ask to call, with how it is gated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub kind: ToolKind,
    /// Irreversible tools always need a human, whatever the policy says.
    pub irreversible: bool,
    pub policy: Policy,
    /// Below this confidence (0..1), a call needs at least one approval.
    pub min_confidence: Option<f64>,
    /// Approval lifetime for this tool; the workspace default when absent.
    pub approval_ttl_seconds: Option<i64>,
    /// Secret header values are masked.
    pub connector: Connector,
    pub created_at: String,
    pub updated_at: String,
}

/// One kill switch's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KillSwitch {
    /// `workspace`, or the tool's name.
    pub target: String,
    pub engaged: bool,
    pub reason: Option<String>,
    /// Who last changed it (`usr_…` or `tok_…`).
    pub changed_by: Option<String>,
    pub changed_at: Option<String>,
}

/// Every kill switch of a workspace: the workspace's, and each tool's that was ever set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KillSwitches {
    pub workspace: KillSwitch,
    pub tools: Vec<KillSwitch>,
}

impl KillSwitches {
    /// The engaged ones, for banners.
    pub fn engaged(&self) -> impl Iterator<Item = &KillSwitch> {
        std::iter::once(&self.workspace).chain(self.tools.iter()).filter(|s| s.engaged)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Ran and succeeded.
    Executed,
    /// Ran and the connector reported failure.
    Failed,
    /// Waiting for humans.
    PendingApproval,
    /// Approved; waiting for the agent to execute it.
    Approved,
    /// Running now (an `http` connector call in flight).
    Executing,
    /// Refused by policy, a rule, or a human.
    Denied,
    /// Refused by a kill switch.
    Blocked,
    /// Its approval expired before it ran.
    Expired,
    /// Its approval was withdrawn: the token that asked was revoked, or its requester
    /// deactivated.
    Withdrawn,
    /// A dry run: nothing happened.
    Simulated,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Executed => "executed",
            ActionStatus::Failed => "failed",
            ActionStatus::PendingApproval => "pending_approval",
            ActionStatus::Approved => "approved",
            ActionStatus::Executing => "executing",
            ActionStatus::Denied => "denied",
            ActionStatus::Blocked => "blocked",
            ActionStatus::Expired => "expired",
            ActionStatus::Withdrawn => "withdrawn",
            ActionStatus::Simulated => "simulated",
        }
    }
    pub fn parse(s: &str) -> Option<ActionStatus> {
        use ActionStatus::*;
        [Executed, Failed, PendingApproval, Approved, Executing, Denied, Blocked, Expired, Withdrawn, Simulated]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// Why the gate decided what it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionRecord {
    pub trace: Vec<Stage>,
    pub cited_rules: Vec<Citation>,
    pub constitution_version: Option<i64>,
    /// For refusals: the stable code (`tool_kill_switch`, `agent_writes_disabled`, …).
    pub code: Option<String>,
    pub message: Option<String>,
}

/// An action: one intended tool call and everything that happened to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Action {
    pub id: String,
    pub tool: String,
    pub status: ActionStatus,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// SHA-256 of the payload's RFC 8785 canonical form.
    pub payload_sha256: String,
    pub resource: Option<String>,
    /// The resource's state before the change, for the diff.
    #[schema(value_type = Option<Object>)]
    pub current: Option<serde_json::Value>,
    pub reason: Option<String>,
    pub confidence: Option<f64>,
    /// The human accountable: the token's owner, or the person who submitted.
    pub requester_id: String,
    pub agent_token_id: Option<String>,
    pub via: crate::audit::Via,
    pub approval_id: Option<String>,
    pub required_approvals: u8,
    pub decision: DecisionRecord,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// The answer to `POST /v1/actions` and `POST /v1/actions/{id}/execute`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ActionOutcome {
    /// Absent for a dry run, which records nothing.
    pub id: Option<String>,
    /// `executed`, `failed`, `pending_approval`, `denied`, `blocked` or `simulated`
    /// (and, later in an action's life, `approved`, `executing`, `expired`).
    pub status: ActionStatus,
    pub tool: String,
    pub payload_sha256: String,
    pub approval_id: Option<String>,
    /// Humans needed: 0, 1 or 2.
    pub required_approvals: u8,
    /// When the approval expires, for `pending_approval`.
    pub expires_at: Option<String>,
    /// For refusals: the stable code and what it means.
    pub code: Option<String>,
    pub message: Option<String>,
    pub trace: Vec<Stage>,
    pub cited_rules: Vec<Citation>,
    pub constitution_version: Option<i64>,
    /// For executed and failed actions: what the connector returned.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
}

impl ActionOutcome {
    pub fn of(a: &Action, expires_at: Option<String>) -> Self {
        ActionOutcome {
            id: Some(a.id.clone()),
            status: a.status,
            tool: a.tool.clone(),
            payload_sha256: a.payload_sha256.clone(),
            approval_id: a.approval_id.clone(),
            required_approvals: a.required_approvals,
            expires_at,
            code: a.decision.code.clone(),
            message: a.decision.message.clone(),
            trace: a.decision.trace.clone(),
            cited_rules: a.decision.cited_rules.clone(),
            constitution_version: a.decision.constitution_version,
            result: a.result.clone(),
        }
    }
}

/// One human's decision on an approval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalDecision {
    pub member_id: String,
    pub decision: crate::approval::Verdict,
    pub reason: Option<String>,
    /// The hash the decider was shown (always the pinned one: others are refused).
    pub payload_sha256: String,
    pub created_at: String,
    /// The decider's e-mail, for display.
    pub member_email: Option<String>,
}

/// An approval: a pinned request for one or two humans to say yes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub id: String,
    pub action_id: String,
    pub tool: String,
    pub state: crate::approval::State,
    pub policy: Policy,
    /// 1 or 2 humans.
    pub required: u8,
    pub approvals: u8,
    pub decisions: Vec<ApprovalDecision>,
    pub requester_id: String,
    /// The requester's e-mail, for display.
    pub requester_email: Option<String>,
    pub agent_token_id: Option<String>,
    /// The agent token's name, for display.
    pub agent_name: Option<String>,
    pub payload_sha256: String,
    pub resource: Option<String>,
    pub reason: Option<String>,
    pub confidence: Option<f64>,
    pub created_at: String,
    pub expires_at: String,
    pub decided_at: Option<String>,
    pub consumed_at: Option<String>,
    /// The exact payload (detail view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// The resource's state before the change (detail view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub current: Option<serde_json::Value>,
    /// Why the gate asked for approval (detail view only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionRecord>,
}
