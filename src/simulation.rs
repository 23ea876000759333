//! Simulation: deciding actions under a draft constitution and draft tool policies, and
//! drafting a rule from a recorded action.
//!
//! Pure: no I/O. The server reads what is in force and the recorded actions; this module
//! decides them, through the same [`constitution::Compiled::evaluate`] and
//! [`gate::decide`] that decide live actions, so a simulation cannot drift from the gate.
//!
//! # What-if
//!
//! [`replay`] decides each recorded action twice: under what is in force now (the current
//! constitution and tools) and under the draft (the draft's rules, or the current ones
//! when it has none; the current tools with the draft's changes laid over them). Each
//! action is decided with its recorded payload, resource and confidence, at the time it
//! was requested (`now` is its `created_at`), for its requester (e-mail and role as they
//! are now) and agent token (its name as it is now).
//!
//! What-if compares *policy*: the constitution, the confidence gate, the irreversible
//! floor and the tool policy. The stages before the constitution (scope, the kill
//! switches, agent-write control) count as passed on both sides: a draft cannot change
//! them, and an engaged kill switch or agent writes being off would hide, on both sides
//! alike, exactly what the draft changes. They are incidents and workspace settings, not
//! policy; the dry run of one action (which does apply them) shows their effect.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::clock::parse_ts;
use crate::constitution::{self, AgentFacts, Compiled, Facts, RequesterFacts, Rule, RuleError};
use crate::error::{Error, Problem, Result};
use crate::gate::{self, Citation, ConstitutionVerdict, Effect, Outcome, Policy, ToolKind, ToolRules};
use crate::model::ActionStatus;
use crate::names;
use crate::store::{People, ReplayAction};

/// The most rules a constitution (or a draft) may have.
pub const MAX_RULES: usize = 256;
/// The most tools a draft may change.
pub const MAX_DRAFT_TOOLS: usize = 100;

/// A draft: rules and tool policies to try before publishing them.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    /// The whole draft constitution. Absent: the rules in force. `[]`: no rules at all.
    pub rules: Option<Vec<Rule>>,
    /// Changes to tools, by name. Fields left out keep the tool's current value; a tool
    /// the workspace does not have needs `kind`, `irreversible` and `policy`.
    pub tools: Option<BTreeMap<String, DraftTool>>,
}

/// A tool as a draft would have it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftTool {
    pub kind: Option<ToolKind>,
    pub irreversible: Option<bool>,
    pub policy: Option<Policy>,
    /// 0 to 1; `null` removes the minimum; absent keeps the current one.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<f64>)]
    pub min_confidence: Option<Option<f64>>,
}

/// `Some(value)` whenever the field is present, `null` included.
fn present<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

/// The 422 for a constitution that does not compile: every problem, in `errors`.
pub fn invalid_constitution(errors: Vec<RuleError>) -> Error {
    let rules: std::collections::BTreeSet<usize> = errors.iter().map(|e| e.index).collect();
    let first = errors.first().map(|e| e.message.clone()).unwrap_or_default();
    let message = match (errors.len(), rules.len()) {
        (1, _) => format!("the constitution does not compile: {first}"),
        (n, 1) => format!("the constitution does not compile: {n} problems in one rule, the first: {first} (all are in `errors`)"),
        (n, r) => format!("the constitution does not compile: {n} problems in {r} rules, the first: {first} (all are in `errors`)"),
    };
    let problems = errors
        .into_iter()
        .map(|e| Problem {
            rule_id: e.rule_id,
            index: e.index,
            line: e.line,
            column: e.column,
            code: e.code.to_string(),
            message: e.message,
        })
        .collect();
    Error::unprocessable("invalid_constitution", message).with_problems(problems)
}

/// Compiles rules for publishing or simulating: every problem of every rule, or the rules.
pub fn compile_rules(rules: &[Rule], version: Option<i64>) -> Result<Compiled> {
    if rules.len() > MAX_RULES {
        return Err(Error::unprocessable(
            "too_many_rules",
            format!("a constitution has at most {MAX_RULES} rules; this one has {}", rules.len()),
        ));
    }
    constitution::compile(rules, version).map_err(invalid_constitution)
}

/// Checks a draft's tool changes (names, the irreversible floor, confidence ranges) against
/// the tools in force, and returns the tools as the draft would have them.
pub fn draft_tools(
    current: &HashMap<String, ToolRules>,
    draft: Option<&BTreeMap<String, DraftTool>>,
) -> Result<HashMap<String, ToolRules>> {
    let mut tools = current.clone();
    let Some(draft) = draft else { return Ok(tools) };
    if draft.len() > MAX_DRAFT_TOOLS {
        return Err(Error::unprocessable("invalid_draft", format!("a draft changes at most {MAX_DRAFT_TOOLS} tools")));
    }
    for (name, d) in draft {
        if !names::valid_tool_name(name) {
            let shown: String = name.chars().take(64).collect();
            return Err(Error::unprocessable("invalid_tool_name", format!("draft.tools: `{shown}` is not a tool name")));
        }
        let tool = match current.get(name) {
            Some(t) => ToolRules {
                name: name.clone(),
                kind: d.kind.unwrap_or(t.kind),
                irreversible: d.irreversible.unwrap_or(t.irreversible),
                policy: d.policy.unwrap_or(t.policy),
                min_confidence: d.min_confidence.unwrap_or(t.min_confidence),
            },
            None => match (d.kind, d.irreversible, d.policy) {
                (Some(kind), Some(irreversible), Some(policy)) => {
                    ToolRules { name: name.clone(), kind, irreversible, policy, min_confidence: d.min_confidence.flatten() }
                }
                _ => {
                    return Err(Error::unprocessable(
                        "invalid_draft",
                        format!(
                            "draft.tools.{name}: the workspace has no such tool, so the draft must give its kind, irreversible and policy"
                        ),
                    ));
                }
            },
        };
        if tool.irreversible && tool.policy == Policy::Auto {
            return Err(Error::unprocessable(
                "irreversible_requires_approval",
                format!("draft.tools.{name}: an irreversible tool always needs a human: `auto` would let it run unseen"),
            ));
        }
        if tool.min_confidence.is_some_and(|c| !(0.0..=1.0).contains(&c)) {
            return Err(Error::unprocessable("invalid_confidence", format!("draft.tools.{name}: min_confidence must be between 0 and 1")));
        }
        tools.insert(name.clone(), tool);
    }
    Ok(tools)
}

/// [`Facts`] that own their data, to move an evaluation onto another thread.
#[derive(Clone, Debug)]
pub struct OwnedFacts {
    pub tool: String,
    pub payload: Value,
    pub resource: Option<String>,
    /// Token id, token name, owner id.
    pub agent: Option<(String, String, String)>,
    /// Id, e-mail, role.
    pub requester: (String, String, String),
    pub confidence: Option<f64>,
    pub now: chrono::DateTime<chrono::Utc>,
}

impl OwnedFacts {
    pub fn facts(&self) -> Facts<'_> {
        Facts {
            tool: &self.tool,
            payload: &self.payload,
            resource: self.resource.as_deref(),
            agent: self.agent.as_ref().map(|(id, name, owner)| AgentFacts { id, name, owner }),
            requester: RequesterFacts { id: &self.requester.0, email: &self.requester.1, role: &self.requester.2 },
            confidence: self.confidence,
            now: self.now,
        }
    }
}

/// The rules and tools one side of a comparison decides under.
#[derive(Clone)]
pub struct Regime {
    pub constitution: Compiled,
    pub tools: Arc<HashMap<String, ToolRules>>,
}

/// What is in force now against a draft, prepared for deciding many actions both ways.
///
/// A draft usually changes a few rules of many. A rule that is the same on both sides
/// (same id, same content) gives the same citation on the same facts, so it is evaluated
/// once, for the side in force, and its citation reused for the draft; only the draft's
/// new and changed rules are evaluated again. [`Comparison::draft_verdict`] is therefore
/// exactly what evaluating the whole draft would give (a test checks it).
pub struct Comparison {
    pub before: Regime,
    pub after: Regime,
    /// `None`: the draft keeps the rules in force.
    delta: Option<Delta>,
}

struct Delta {
    /// The draft's rules that are not in force as they are.
    changed: Compiled,
    /// Ids of the rules in force that the draft keeps unchanged.
    shared: std::collections::HashSet<String>,
    /// Each draft rule's position, to cite in the draft's order.
    order: HashMap<String, usize>,
}

impl Comparison {
    /// `draft_rules`: the draft's whole constitution, compiled; `None` keeps the rules in force.
    pub fn new(before: Regime, draft_rules: Option<Compiled>, draft_tools: HashMap<String, ToolRules>) -> Comparison {
        let Some(draft) = draft_rules else {
            let after = Regime { constitution: before.constitution.clone(), tools: Arc::new(draft_tools) };
            return Comparison { before, after, delta: None };
        };
        let in_force: HashMap<&str, &Rule> = before.constitution.rules().iter().map(|r| (r.id.as_str(), r)).collect();
        let (kept, changed): (Vec<&Rule>, Vec<&Rule>) = draft.rules().iter().partition(|r| in_force.get(r.id.as_str()) == Some(r));
        let changed: Vec<Rule> = changed.into_iter().cloned().collect();
        // They compiled as part of the draft, so they compile alone; if not, evaluate the
        // whole draft rather than guess.
        let delta = constitution::compile(&changed, None).ok().map(|changed| Delta {
            changed,
            shared: kept.iter().map(|r| r.id.clone()).collect(),
            order: draft.rules().iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect(),
        });
        let after = Regime { constitution: draft, tools: Arc::new(draft_tools) };
        match delta {
            Some(d) => Comparison { before, after, delta: Some(d) },
            None => Comparison {
                delta: Some(Delta {
                    changed: after.constitution.clone(),
                    shared: Default::default(),
                    order: after.constitution.rules().iter().enumerate().map(|(i, r)| (r.id.clone(), i)).collect(),
                }),
                before,
                after,
            },
        }
    }

    /// Whether the draft keeps the rules in force.
    pub fn same_rules(&self) -> bool {
        self.delta.is_none()
    }

    /// The draft's verdict on `facts`, given the verdict in force on the same facts.
    pub fn draft_verdict(&self, facts: &Facts, in_force: &ConstitutionVerdict) -> ConstitutionVerdict {
        let Some(d) = &self.delta else { return in_force.clone() };
        let mut citations: Vec<Citation> = in_force.citations.iter().filter(|c| d.shared.contains(&c.rule_id)).cloned().collect();
        if !d.changed.is_empty() {
            citations.extend(d.changed.evaluate(facts).citations);
        }
        citations.sort_by_key(|c| d.order.get(&c.rule_id).copied().unwrap_or(usize::MAX));
        ConstitutionVerdict { version: self.after.constitution.version(), citations }
    }
}

/// The facts of a recorded action: its own, and its requester and agent token as they
/// are now (a member or token that is gone has empty fields).
pub fn replay_facts<'a>(a: &'a ReplayAction, people: &'a People, payload: &'a Value, now: chrono::DateTime<chrono::Utc>) -> Facts<'a> {
    recorded_facts(&a.tool, payload, a.resource.as_deref(), a.confidence, &a.requester_id, a.agent_token_id.as_deref(), people, now)
}

/// The facts of any recorded action, from its fields.
#[allow(clippy::too_many_arguments)]
pub fn recorded_facts<'a>(
    tool: &'a str,
    payload: &'a Value,
    resource: Option<&'a str>,
    confidence: Option<f64>,
    requester_id: &'a str,
    agent_token_id: Option<&'a str>,
    people: &'a People,
    now: chrono::DateTime<chrono::Utc>,
) -> Facts<'a> {
    let (email, role) = people.members.get(requester_id).map_or(("", ""), |(e, r)| (e.as_str(), r.as_str()));
    Facts {
        tool,
        payload,
        resource,
        agent: agent_token_id.map(|id| AgentFacts { id, name: people.tokens.get(id).map_or("", String::as_str), owner: requester_id }),
        requester: RequesterFacts { id: requester_id, email, role },
        confidence,
        now,
    }
}

/// What one side decided for one action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Side {
    /// `executed` (would run at once), `pending_approval` or `denied`.
    pub status: ActionStatus,
    /// 0, 1 or 2.
    pub required_approvals: u8,
    /// For `denied`: why (`constitution_denied`, `unknown_tool`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The rules that matched (or failed, with `error`).
    pub cited_rules: Vec<Citation>,
}

impl Side {
    /// 0 runs at once, 1 and 2 approvals, 3 refused.
    pub fn strictness(&self) -> u8 {
        match self.status {
            ActionStatus::Executed => 0,
            ActionStatus::PendingApproval => self.required_approvals.max(1),
            _ => 3,
        }
    }

    fn unknown_tool() -> Side {
        Side { status: ActionStatus::Denied, required_approvals: 0, code: Some("unknown_tool".into()), cited_rules: Vec::new() }
    }

    fn of(d: gate::Decision) -> Side {
        let (status, required_approvals, code) = match d.outcome {
            Outcome::Execute => (ActionStatus::Executed, 0, None),
            Outcome::NeedsApproval { required } => (ActionStatus::PendingApproval, required, None),
            Outcome::Denied { code, .. } => (ActionStatus::Denied, 0, Some(code)),
            Outcome::Blocked { code, .. } => (ActionStatus::Blocked, 0, Some(code)),
        };
        Side { status, required_approvals, code, cited_rules: d.citations }
    }

    fn cites_same_rules(&self, other: &Side) -> bool {
        self.cited_rules.len() == other.cited_rules.len()
            && self.cited_rules.iter().zip(&other.cited_rules).all(|(a, b)| a.rule_id == b.rule_id && a.effect == b.effect)
    }
}

/// One action whose outcome would change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Change {
    pub action_id: String,
    pub tool: String,
    pub created_at: String,
    /// What happened to it in fact.
    pub recorded_status: ActionStatus,
    pub requester_id: String,
    pub agent_token_id: Option<String>,
    /// Under what is in force now.
    pub before: Side,
    /// Under the draft.
    pub after: Side,
}

/// Counts over every replayed action (complete even when the list of changes is cut).
/// An action may count in several of the `newly_…` totals.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Totals {
    /// Actions read from the window.
    pub replayed: u64,
    /// Of those, how many could not be decided on either side (the tool no longer exists
    /// and the draft does not define it, or the stored payload could not be read).
    pub skipped: u64,
    /// Outcome (status or number of approvals) differs.
    pub changed: u64,
    /// Of the changed: stricter under the draft.
    pub stricter: u64,
    /// Of the changed: looser under the draft.
    pub looser: u64,
    /// Would run at once now; would need one or two approvals under the draft.
    pub newly_need_approval: u64,
    /// Would run at once or need one approval now; would need two under the draft.
    pub newly_need_dual: u64,
    /// Would not be denied now; would be under the draft.
    pub newly_denied: u64,
    /// Would be denied now; would not be under the draft.
    pub no_longer_denied: u64,
    /// Would need approval or be denied now; would run at once under the draft.
    pub newly_run_at_once: u64,
    /// Same outcome, but different rules cited.
    pub citations_changed: u64,
    /// Actions on which a rule in force failed to evaluate (and failed closed).
    pub rule_errors_before: u64,
    /// Actions on which a draft rule failed to evaluate (and failed closed).
    pub rule_errors_after: u64,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.replayed += o.replayed;
        self.skipped += o.skipped;
        self.changed += o.changed;
        self.stricter += o.stricter;
        self.looser += o.looser;
        self.newly_need_approval += o.newly_need_approval;
        self.newly_need_dual += o.newly_need_dual;
        self.newly_denied += o.newly_denied;
        self.no_longer_denied += o.no_longer_denied;
        self.newly_run_at_once += o.newly_run_at_once;
        self.citations_changed += o.citations_changed;
        self.rule_errors_before += o.rule_errors_before;
        self.rule_errors_after += o.rule_errors_after;
    }

    fn count(&mut self, before: &Side, after: &Side) {
        if before.cited_rules.iter().any(|c| c.error.is_some()) {
            self.rule_errors_before += 1;
        }
        if after.cited_rules.iter().any(|c| c.error.is_some()) {
            self.rule_errors_after += 1;
        }
        let (b, a) = (before.strictness(), after.strictness());
        if a == b {
            if !before.cites_same_rules(after) {
                self.citations_changed += 1;
            }
            return;
        }
        self.changed += 1;
        if a > b {
            self.stricter += 1;
        } else {
            self.looser += 1;
        }
        if b == 0 && (1..=2).contains(&a) {
            self.newly_need_approval += 1;
        }
        if b < 2 && a == 2 {
            self.newly_need_dual += 1;
        }
        if a == 3 {
            self.newly_denied += 1;
        }
        if b == 3 {
            self.no_longer_denied += 1;
        }
        if a == 0 {
            self.newly_run_at_once += 1;
        }
    }
}

/// What replaying a run of actions found.
#[derive(Debug, Default)]
pub struct Replayed {
    pub totals: Totals,
    /// The changed actions, in the order replayed, at most the cap given.
    pub changes: Vec<Change>,
}

/// Decides one recorded action under one regime and a verdict of its constitution.
fn decide_under(a: &ReplayAction, regime: &Regime, verdict: &ConstitutionVerdict) -> Side {
    let Some(tool) = regime.tools.get(&a.tool) else { return Side::unknown_tool() };
    Side::of(gate::decide(&gate::Input {
        principal: "what-if replay",
        is_agent: a.agent_token_id.is_some(),
        in_scope: true,
        workspace_switch: None,
        tool_switch: None,
        agent_writes_enabled: true,
        tool,
        confidence: a.confidence,
        constitution: verdict,
    }))
}

/// Replays `actions` both ways and keeps at most `cap` changes, in order.
pub fn replay(actions: &[ReplayAction], people: &People, cmp: &Comparison, cap: usize) -> Replayed {
    let (before, after) = (&cmp.before, &cmp.after);
    let mut out = Replayed::default();
    for a in actions {
        out.totals.replayed += 1;
        let (tool_before, tool_after) = (before.tools.get(&a.tool), after.tools.get(&a.tool));
        if tool_before.is_none() && tool_after.is_none() {
            out.totals.skipped += 1;
            continue;
        }
        if cmp.same_rules() && tool_before == tool_after {
            // Nothing the draft changes touches this action: both sides are the same.
            continue;
        }
        let (Ok(payload), Some(now)) = (serde_json::from_str::<Value>(&a.payload), parse_ts(&a.created_at)) else {
            out.totals.skipped += 1;
            continue;
        };
        let facts = replay_facts(a, people, &payload, now);
        let verdict = before.constitution.evaluate(&facts);
        let draft_verdict = cmp.draft_verdict(&facts, &verdict);
        let (b, x) = (decide_under(a, before, &verdict), decide_under(a, after, &draft_verdict));
        out.totals.count(&b, &x);
        if b.strictness() != x.strictness() && out.changes.len() < cap {
            out.changes.push(Change {
                action_id: a.id.clone(),
                tool: a.tool.clone(),
                created_at: a.created_at.clone(),
                recorded_status: a.status,
                requester_id: a.requester_id.clone(),
                agent_token_id: a.agent_token_id.clone(),
                before: b,
                after: x,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Drafting a rule from an action.

/// A rule drawn from one action, with what it matches and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DraftedRule {
    pub rule: Rule,
    /// Each condition of `when`, for a person.
    pub explanation: Vec<String>,
}

/// What happened to the action the rule is drawn from.
#[derive(Clone, Copy, Debug)]
pub struct Recorded<'a> {
    pub id: &'a str,
    pub status: ActionStatus,
    pub required_approvals: u8,
    /// Whether a human (not a rule or a switch) refused it.
    pub denied_by_a_human: bool,
    pub created_at: &'a str,
}

/// The effect a rule drawn from this action should have: never looser than what it got.
fn effect_for(r: &Recorded) -> Effect {
    match r.status {
        ActionStatus::Denied if r.denied_by_a_human || r.required_approvals == 0 => Effect::Deny,
        _ if r.required_approvals >= 2 => Effect::RequireDual,
        _ => Effect::RequireApproval,
    }
}

const CEL_RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

fn is_ident(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some('a'..='z' | 'A'..='Z' | '_')) && c.all(|c| c.is_ascii_alphanumeric() || c == '_') && !CEL_RESERVED.contains(&k)
}

/// A CEL string literal.
fn cel_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `payload.key`, or `payload['key']` when the key is not an identifier.
fn field(key: &str) -> String {
    if is_ident(key) { format!("payload.{key}") } else { format!("payload[{}]", cel_str(key)) }
}

/// `has(payload.key)`, or `'key' in payload`.
fn has(key: &str) -> String {
    if is_ident(key) { format!("has(payload.{key})") } else { format!("{} in payload", cel_str(key)) }
}

/// The largest of 1, 2, 5 × 10ⁿ at or below `x` (> 0): a threshold a person would write.
fn nice_floor(x: f64) -> Option<f64> {
    if !(x.is_finite() && x > 0.0) {
        return None;
    }
    let base = 10f64.powf(x.log10().floor());
    let lead = x / base;
    let pick = if lead >= 5.0 {
        5.0
    } else if lead >= 2.0 {
        2.0
    } else {
        1.0
    };
    let t = pick * base;
    // Guard against rounding in powf: never above the value itself.
    Some(if t > x { x } else { t })
}

fn number_text(x: f64) -> Option<String> {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return Some(format!("{}", x as i64));
    }
    let s = format!("{x}");
    (!s.contains(['e', 'E', 'n', 'i'])).then_some(s)
}

const AMOUNT_WORDS: &[&str] = &["amount", "total", "price", "cost", "fee", "sum", "value", "quantity", "qty", "count", "limit", "balance"];

fn is_amount_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    AMOUNT_WORDS.iter().any(|w| k.contains(w))
}

fn is_recipient_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    matches!(k.as_str(), "to" | "cc" | "bcc") || k.ends_with("_to") || k.contains("recipient") || k.contains("email")
}

/// The domain of an e-mail address, when it looks like one.
fn domain_of(addr: &str) -> Option<&str> {
    let (_, d) = addr.rsplit_once('@')?;
    let ok = !d.is_empty() && d.len() <= 253 && d.contains('.') && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    ok.then_some(d)
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

fn unique_id(base: &str, existing: &[String]) -> String {
    let mut base: String = base.chars().take(56).collect();
    base = base.trim_end_matches('-').to_string();
    if !base.starts_with(|c: char| c.is_ascii_lowercase()) {
        base = format!("r-{base}");
    }
    if base.len() < 2 {
        base = "rule".into();
    }
    if !existing.contains(&base) {
        return base;
    }
    (2..).map(|n| format!("{base}-{n}")).find(|id| !existing.iter().any(|e| e == id)).unwrap_or(base)
}

fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// Draws a rule from an action: its tool, the prefix of its resource, and the payload
/// fields that usually decide such actions (recipients' domains, amounts rounded down to
/// a threshold, the currency beside an amount). The rule is compiled and checked to match
/// the action; if the drawn conditions did not, the rule falls back to the tool alone.
/// `existing` are the ids already in use, which the new id avoids.
pub fn draft_rule(facts: &Facts, recorded: &Recorded, existing: &[String]) -> DraftedRule {
    let tool = facts.tool;
    let mut conds = vec![format!("tool == {}", cel_str(tool))];
    let mut why = vec![format!("the tool is `{tool}`")];
    let mut title_parts: Vec<String> = Vec::new();
    let mut id_parts: Vec<String> = vec![slug(tool)];

    if let Some(res) = facts.resource
        && let Some(cut) = res.rfind([':', '/'])
        && cut > 0
        && !res.chars().any(char::is_control)
    {
        let prefix = &res[..=cut];
        conds.push(format!("resource != null && resource.startsWith({})", cel_str(prefix)));
        why.push(format!("the resource starts with `{prefix}`"));
        title_parts.push(format!("on {prefix}*"));
    }

    let mut amount_found = false;
    if let Value::Object(map) = facts.payload {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        let mut recipients = 0;
        for key in keys.iter().copied() {
            if recipients >= 2 || !is_recipient_key(key) {
                continue;
            }
            let (is_list, addrs): (bool, Vec<&str>) = match &map[key] {
                Value::String(s) => (false, vec![s.as_str()]),
                Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
                    (true, items.iter().filter_map(Value::as_str).collect())
                }
                _ => continue,
            };
            let mut domains: Vec<&str> = addrs.iter().filter_map(|a| domain_of(a)).collect();
            domains.sort_unstable();
            domains.dedup();
            domains.truncate(10);
            if domains.is_empty() {
                continue;
            }
            let tests = |var: &str| {
                domains.iter().map(|d| format!("{var}.endsWith({})", cel_str(&format!("@{d}")))).collect::<Vec<_>>().join(" || ")
            };
            let cond = if is_list {
                format!("{} && {}.exists(r, {})", has(key), field(key), tests("r"))
            } else {
                format!("{} && ({})", has(key), tests(&field(key)))
            };
            conds.push(cond);
            let shown = domains.iter().map(|d| format!("@{d}")).collect::<Vec<_>>().join(", ");
            why.push(format!("`{key}` has an address at {shown}"));
            title_parts.push(format!("{key} {shown}"));
            id_parts.push(slug(domains[0]));
            recipients += 1;
        }
        let mut amounts = 0;
        for key in keys.iter().copied() {
            if amounts >= 2 || !is_amount_key(key) {
                continue;
            }
            let Some(x) = map[key].as_f64() else { continue };
            let Some(t) = nice_floor(x).and_then(number_text) else { continue };
            conds.push(format!("{} && {} >= {t}", has(key), field(key)));
            why.push(format!("`{key}` is at least {t} (this action's: {})", map[key]));
            title_parts.push(format!("{key} ≥ {t}"));
            id_parts.push(slug(&format!("{key}-{t}")));
            amounts += 1;
            amount_found = true;
        }
        if amount_found
            && let Some((key, Value::String(cur))) = map.get_key_value("currency")
            && cur.len() <= 8
            && cur.chars().all(|c| c.is_ascii_alphanumeric())
        {
            conds.push(format!("{} && {} == {}", has(key), field(key), cel_str(cur)));
            why.push(format!("the currency is {cur}"));
            title_parts.push(cur.clone());
        }
    }

    let effect = effect_for(recorded);
    let verb = match effect {
        Effect::Deny => "denied",
        Effect::RequireDual => "needs two approvals",
        _ => "needs approval",
    };
    let summary = if title_parts.is_empty() { tool.to_string() } else { format!("{tool} {}", title_parts.join(", ")) };
    let description = format!(
        "Drafted from action {} ({tool}, recorded as {}) of {}. It matches: {}. Edit it, simulate it over history (POST /v1/simulations) and publish it.",
        recorded.id,
        recorded.status.as_str(),
        recorded.created_at,
        why.join("; ")
    );
    let mut rule = Rule {
        id: unique_id(&id_parts.join("-"), existing),
        title: truncate_chars(&format!("{summary}: {verb}"), constitution::MAX_TITLE_CHARS),
        description: truncate_chars(&description, constitution::MAX_DESCRIPTION_CHARS),
        when: conds.join(" && "),
        effect,
        on_error: Default::default(),
    };
    if !matches_cleanly(&rule, facts) {
        // Should not happen; if it does, the tool alone still draws the class.
        rule.when = format!("tool == {}", cel_str(tool));
        rule.title = truncate_chars(&format!("{tool}: {verb}"), constitution::MAX_TITLE_CHARS);
        why.truncate(1);
    }
    DraftedRule { rule, explanation: why }
}

/// Whether `rule` compiles and, on these facts, matches without an error.
pub fn matches_cleanly(rule: &Rule, facts: &Facts) -> bool {
    match constitution::compile(std::slice::from_ref(rule), None) {
        Ok(c) => c.evaluate(facts).citations.iter().any(|c| c.rule_id == rule.id && c.error.is_none()),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts<'a>(tool: &'a str, payload: &'a Value, resource: Option<&'a str>) -> Facts<'a> {
        Facts {
            tool,
            payload,
            resource,
            agent: None,
            requester: RequesterFacts { id: "usr_1", email: "a@example.com", role: "member" },
            confidence: None,
            now: chrono::Utc::now(),
        }
    }

    fn recorded(status: ActionStatus, required: u8) -> Recorded<'static> {
        Recorded { id: "act_1", status, required_approvals: required, denied_by_a_human: false, created_at: "2024-01-01T00:00:00Z" }
    }

    #[test]
    fn thresholds_round_down_to_what_a_person_would_write() {
        assert_eq!(nice_floor(125_000.0), Some(100_000.0));
        assert_eq!(nice_floor(2750.0), Some(2000.0));
        assert_eq!(nice_floor(7.0), Some(5.0));
        assert_eq!(nice_floor(1000.0), Some(1000.0));
        assert_eq!(nice_floor(0.75), Some(0.5));
        assert_eq!(nice_floor(0.0), None);
        assert_eq!(nice_floor(-3.0), None);
        assert_eq!(number_text(100_000.0).as_deref(), Some("100000"));
        assert_eq!(number_text(0.5).as_deref(), Some("0.5"));
    }

    #[test]
    fn a_drafted_rule_names_the_deciding_fields_compiles_and_matches() {
        let payload = json!({"to": ["ops@rival.com", "x@partner.io"], "subject": "hi", "body": "…"});
        let f = facts("email.send", &payload, None);
        let d = draft_rule(&f, &recorded(ActionStatus::Executed, 0), &[]);
        assert_eq!(d.rule.effect, Effect::RequireApproval);
        assert_eq!(d.rule.id, "email-send-partner-io");
        assert!(d.rule.when.contains("r.endsWith('@rival.com')"), "{}", d.rule.when);
        assert!(matches_cleanly(&d.rule, &f));
        // It draws the class, not the one action: another address at the domain matches.
        let other = json!({"to": ["ceo@rival.com"]});
        assert!(matches_cleanly(&d.rule, &facts("email.send", &other, None)));
        assert!(!matches_cleanly(&d.rule, &facts("email.send", &json!({"to": ["a@friend.org"]}), None)));

        let pay = json!({"amount": 125000, "currency": "EUR", "customer": "cus_1"});
        let f = facts("payments.charge", &pay, Some("invoice:42"));
        let d = draft_rule(&f, &recorded(ActionStatus::PendingApproval, 2), &["payments-charge-amount-100000".into()]);
        assert_eq!(d.rule.effect, Effect::RequireDual);
        assert_eq!(d.rule.id, "payments-charge-amount-100000-2");
        assert!(d.rule.when.contains("payload.amount >= 100000"), "{}", d.rule.when);
        assert!(d.rule.when.contains("resource.startsWith('invoice:')"), "{}", d.rule.when);
        assert!(d.rule.when.contains("payload.currency == 'EUR'"), "{}", d.rule.when);
        assert!(matches_cleanly(&d.rule, &f));
        assert!(!matches_cleanly(&d.rule, &facts("payments.charge", &json!({"amount": 99999, "currency": "EUR"}), Some("invoice:1"))));
    }

    #[test]
    fn odd_keys_and_values_still_give_a_rule_that_compiles_and_matches() {
        let payload = json!({"in": 5, "weird key'\\": ["a@b.co"], "amount": 1e300, "Total-Sum": 0.3, "emails": "x@y"});
        let f = facts("odd.tool", &payload, Some("a'b\\c:1"));
        let d = draft_rule(&f, &Recorded { denied_by_a_human: true, ..recorded(ActionStatus::Denied, 1) }, &[]);
        assert_eq!(d.rule.effect, Effect::Deny);
        assert!(matches_cleanly(&d.rule, &f), "{}", d.rule.when);
        for payload in [json!(null), json!([1, 2]), json!("x"), json!({})] {
            let f = facts("odd.tool", &payload, None);
            assert!(matches_cleanly(&draft_rule(&f, &recorded(ActionStatus::Executed, 0), &[]).rule, &f));
        }
    }

    #[test]
    fn the_draft_verdict_reuses_shared_rules_and_equals_evaluating_the_whole_draft() {
        let r = |id: &str, when: &str, effect: Effect| Rule {
            id: id.into(),
            title: id.into(),
            description: String::new(),
            when: when.into(),
            effect,
            on_error: Default::default(),
        };
        let in_force = vec![
            r("keep-a", "payload.amount > 10", Effect::RequireApproval),
            r("change", "payload.amount > 100", Effect::Deny),
            r("drop", "true", Effect::Allow),
            r("keep-b", "payload.missing > 1", Effect::Allow),
        ];
        let draft = vec![
            r("new", "has(payload.to)", Effect::RequireDual),
            r("keep-b", "payload.missing > 1", Effect::Allow),
            r("change", "payload.amount > 1000", Effect::Deny),
            r("keep-a", "payload.amount > 10", Effect::RequireApproval),
        ];
        let before = Regime { constitution: constitution::compile(&in_force, Some(3)).unwrap(), tools: Arc::new(HashMap::new()) };
        let full = constitution::compile(&draft, None).unwrap();
        let cmp = Comparison::new(before.clone(), Some(full.clone()), HashMap::new());
        assert!(!cmp.same_rules());
        for payload in [json!({}), json!({"amount": 50}), json!({"amount": 500, "to": []}), json!({"amount": 5000}), json!({"amount": "x"})]
        {
            let f = facts("t.x", &payload, None);
            let v = before.constitution.evaluate(&f);
            assert_eq!(cmp.draft_verdict(&f, &v), full.evaluate(&f), "{payload}");
        }
        let same = Comparison::new(before.clone(), None, HashMap::new());
        assert!(same.same_rules());
    }

    #[test]
    fn draft_tools_overlay_and_keep_the_irreversible_floor() {
        let mut current = HashMap::new();
        current.insert(
            "email.send".to_string(),
            ToolRules {
                name: "email.send".into(),
                kind: ToolKind::Write,
                irreversible: false,
                policy: Policy::Approve,
                min_confidence: Some(0.5),
            },
        );
        let d: BTreeMap<String, DraftTool> =
            serde_json::from_value(json!({"email.send": {"policy": "auto", "min_confidence": null}})).unwrap();
        let t = draft_tools(&current, Some(&d)).unwrap();
        assert_eq!((t["email.send"].policy, t["email.send"].min_confidence), (Policy::Auto, None));
        let d: BTreeMap<String, DraftTool> =
            serde_json::from_value(json!({"email.send": {"irreversible": true, "policy": "auto"}})).unwrap();
        assert_eq!(draft_tools(&current, Some(&d)).unwrap_err().code, "irreversible_requires_approval");
        let d: BTreeMap<String, DraftTool> = serde_json::from_value(json!({"new.tool": {"policy": "auto"}})).unwrap();
        assert_eq!(draft_tools(&current, Some(&d)).unwrap_err().code, "invalid_draft");
    }
}
