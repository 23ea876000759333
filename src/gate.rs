//! The decision pipeline: what happens when an agent wants to call a tool.
//!
//! Pure: it takes everything it needs as input and returns a [`Decision`] with a trace of
//! every stage, in the brief's order:
//!
//! authenticate → scope → workspace kill switch → tool kill switch → agent-write control
//! → constitution → confidence gate → irreversible floor → tool policy → outcome.
//!
//! Each stage can only make the outcome stricter. There is no input for which an error
//! lets a call through: anything the caller cannot supply (a failed rule, a missing
//! confidence where a minimum is set) counts against the call.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How a tool is configured to be gated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Policy {
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "approve")]
    Approve,
    #[serde(rename = "approve-dual")]
    ApproveDual,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Auto => "auto",
            Policy::Approve => "approve",
            Policy::ApproveDual => "approve-dual",
        }
    }
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "auto" => Some(Policy::Auto),
            "approve" => Some(Policy::Approve),
            "approve-dual" => Some(Policy::ApproveDual),
            _ => None,
        }
    }
    fn requirement(self) -> Requirement {
        match self {
            Policy::Auto => Requirement::None,
            Policy::Approve => Requirement::One,
            Policy::ApproveDual => Requirement::Two,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolKind {
    Read,
    Write,
}

impl ToolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolKind::Read => "read",
            ToolKind::Write => "write",
        }
    }
    pub fn parse(s: &str) -> Option<ToolKind> {
        match s {
            "read" => Some(ToolKind::Read),
            "write" => Some(ToolKind::Write),
            _ => None,
        }
    }
}

/// The effect of a constitution rule, least to most restrictive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    RequireApproval,
    RequireDual,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::RequireApproval => "require_approval",
            Effect::RequireDual => "require_dual",
            Effect::Deny => "deny",
        }
    }
}

/// How many humans must approve. Ordered: the pipeline only ever raises it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Requirement {
    None,
    One,
    Two,
}

impl Requirement {
    pub fn count(self) -> u8 {
        match self {
            Requirement::None => 0,
            Requirement::One => 1,
            Requirement::Two => 2,
        }
    }
}

/// One stage of the pipeline, as it appears in the trace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stage {
    /// `authenticate`, `scope`, `workspace_kill_switch`, `tool_kill_switch`,
    /// `agent_write_control`, `constitution`, `confidence_gate`, `irreversible_floor`,
    /// `tool_policy`, `outcome`.
    pub stage: String,
    /// `pass`, `deny`, `block`, `require_approval`, `require_dual`, `allow`, `skip`,
    /// and for `outcome` the outcome itself.
    pub verdict: String,
    /// What the stage saw, for a person.
    pub detail: String,
}

/// A rule that matched (or failed) and what it said.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Citation {
    pub rule_id: String,
    pub title: String,
    pub effect: Effect,
    /// Set when the rule could not be evaluated on this action and failed closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the constitution said about an action: the matched rules, combined.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConstitutionVerdict {
    pub version: Option<i64>,
    pub citations: Vec<Citation>,
}

impl ConstitutionVerdict {
    /// The most restrictive effect cited, if any.
    pub fn strongest(&self) -> Option<Effect> {
        self.citations.iter().map(|c| c.effect).max()
    }
}

/// The pipeline's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Outcome {
    /// Run now.
    Execute,
    /// Wait for `required` humans.
    NeedsApproval { required: u8 },
    /// Refused by policy (scope, agent-write control, constitution).
    Denied { code: String, message: String },
    /// Refused by a kill switch.
    Blocked { code: String, message: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    pub trace: Vec<Stage>,
    pub citations: Vec<Citation>,
    pub constitution_version: Option<i64>,
}

/// An engaged kill switch, as the pipeline needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Engaged {
    pub reason: String,
    pub by: String,
}

/// The tool as the pipeline needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRules {
    pub name: String,
    pub kind: ToolKind,
    pub irreversible: bool,
    pub policy: Policy,
    pub min_confidence: Option<f64>,
}

/// Everything the pipeline looks at.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// Who is calling, for the trace.
    pub principal: &'a str,
    pub is_agent: bool,
    /// Whether the caller's tool patterns cover the tool.
    pub in_scope: bool,
    pub workspace_switch: Option<&'a Engaged>,
    pub tool_switch: Option<&'a Engaged>,
    pub agent_writes_enabled: bool,
    pub tool: &'a ToolRules,
    pub confidence: Option<f64>,
    pub constitution: &'a ConstitutionVerdict,
}

fn stage(name: &str, verdict: &str, detail: impl Into<String>) -> Stage {
    Stage { stage: name.into(), verdict: verdict.into(), detail: detail.into() }
}

/// Runs the pipeline.
pub fn decide(input: &Input<'_>) -> Decision {
    let mut trace = vec![stage("authenticate", "pass", input.principal)];
    let c = input.constitution;
    let finish = |mut trace: Vec<Stage>, outcome: Outcome| {
        let verdict = match &outcome {
            Outcome::Execute => "execute".to_string(),
            Outcome::NeedsApproval { required } => format!("pending_approval ({required})"),
            Outcome::Denied { code, .. } => format!("denied ({code})"),
            Outcome::Blocked { code, .. } => format!("blocked ({code})"),
        };
        trace.push(stage("outcome", &verdict, ""));
        Decision { outcome, trace, citations: c.citations.clone(), constitution_version: c.version }
    };
    let refuse = |mut trace: Vec<Stage>, name: &str, verdict: &str, code: &str, message: String| {
        trace.push(stage(name, verdict, message.clone()));
        let outcome = if verdict == "block" {
            Outcome::Blocked { code: code.into(), message }
        } else {
            Outcome::Denied { code: code.into(), message }
        };
        finish(trace, outcome)
    };
    let tool = input.tool;

    if !input.in_scope {
        let m = format!("this token's tool patterns do not include `{}`", tool.name);
        return refuse(trace, "scope", "deny", "tool_not_in_scope", m);
    }
    trace.push(stage("scope", "pass", format!("`{}` is within the caller's tools", tool.name)));

    if let Some(s) = input.workspace_switch {
        let m = format!("the workspace kill switch is engaged ({}; by {})", s.reason, s.by);
        return refuse(trace, "workspace_kill_switch", "block", "workspace_kill_switch", m);
    }
    trace.push(stage("workspace_kill_switch", "pass", "not engaged"));

    if let Some(s) = input.tool_switch {
        let m = format!("the kill switch for `{}` is engaged ({}; by {})", tool.name, s.reason, s.by);
        return refuse(trace, "tool_kill_switch", "block", "tool_kill_switch", m);
    }
    trace.push(stage("tool_kill_switch", "pass", "not engaged"));

    if input.is_agent && tool.kind == ToolKind::Write && !input.agent_writes_enabled {
        let m = format!("`{}` is a write tool and agent writes are off for this workspace (settings: agent_writes_enabled)", tool.name);
        return refuse(trace, "agent_write_control", "deny", "agent_writes_disabled", m);
    }
    let detail = match (input.is_agent, tool.kind) {
        (false, _) => "a person, not an agent",
        (true, ToolKind::Read) => "a read tool",
        (true, ToolKind::Write) => "agent writes are on",
    };
    trace.push(stage("agent_write_control", "pass", detail));

    // Constitution: the most restrictive cited effect wins.
    let strongest = c.strongest();
    let cited: Vec<&str> = c.citations.iter().map(|x| x.rule_id.as_str()).collect();
    let version = c.version.map_or("no constitution".to_string(), |v| format!("version {v}"));
    let mut floor = Requirement::None;
    let mut allowed = false;
    match strongest {
        Some(Effect::Deny) => {
            let denying: Vec<&str> = c.citations.iter().filter(|x| x.effect == Effect::Deny).map(|x| x.rule_id.as_str()).collect();
            let m = format!("denied by rule {} ({version})", denying.join(", "));
            return refuse(trace, "constitution", "deny", "constitution_denied", m);
        }
        Some(Effect::RequireDual) => {
            floor = Requirement::Two;
            trace.push(stage("constitution", "require_dual", format!("rules {} ({version})", cited.join(", "))));
        }
        Some(Effect::RequireApproval) => {
            floor = Requirement::One;
            trace.push(stage("constitution", "require_approval", format!("rules {} ({version})", cited.join(", "))));
        }
        Some(Effect::Allow) => {
            allowed = true;
            trace.push(stage("constitution", "allow", format!("rules {} ({version})", cited.join(", "))));
        }
        None => trace.push(stage("constitution", "pass", format!("no rule matched ({version})"))),
    }

    let mut below_confidence = false;
    match (tool.min_confidence, input.confidence) {
        (Some(min), Some(conf)) if conf < min => {
            below_confidence = true;
            floor = floor.max(Requirement::One);
            trace.push(stage("confidence_gate", "require_approval", format!("confidence {conf} is below the tool's minimum {min}")));
        }
        (Some(min), None) => {
            below_confidence = true;
            floor = floor.max(Requirement::One);
            trace.push(stage("confidence_gate", "require_approval", format!("no confidence given; the tool's minimum is {min}")));
        }
        (Some(min), Some(conf)) => trace.push(stage("confidence_gate", "pass", format!("confidence {conf} meets the minimum {min}"))),
        (None, _) => trace.push(stage("confidence_gate", "pass", "the tool sets no minimum")),
    }

    if tool.irreversible {
        floor = floor.max(Requirement::One);
        trace.push(stage("irreversible_floor", "require_approval", "irreversible tools always need a human"));
    } else {
        trace.push(stage("irreversible_floor", "pass", "reversible"));
    }

    // Tool policy. `allow` may lift `approve` (never `approve-dual`) to run at once, and
    // only when nothing else raised the floor.
    let mut policy_req = tool.policy.requirement();
    let lifted = allowed && tool.policy == Policy::Approve && !tool.irreversible && !below_confidence;
    if lifted {
        policy_req = Requirement::None;
    }
    let required = floor.max(policy_req);
    let verdict = match required {
        Requirement::None => "pass",
        Requirement::One => "require_approval",
        Requirement::Two => "require_dual",
    };
    let detail = if lifted {
        format!("policy `{}` lifted by an allow rule", tool.policy.as_str())
    } else {
        format!("policy `{}`", tool.policy.as_str())
    };
    trace.push(stage("tool_policy", verdict, detail));

    let outcome = match required {
        Requirement::None => Outcome::Execute,
        r => Outcome::NeedsApproval { required: r.count() },
    };
    finish(trace, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tool(policy: Policy, irreversible: bool, min: Option<f64>) -> ToolRules {
        ToolRules { name: "email.send".into(), kind: ToolKind::Write, irreversible, policy, min_confidence: min }
    }

    fn run(t: &ToolRules, effects: &[Effect], confidence: Option<f64>) -> Decision {
        let c = ConstitutionVerdict {
            version: Some(1),
            citations: effects
                .iter()
                .enumerate()
                .map(|(i, e)| Citation { rule_id: format!("r{i}"), title: String::new(), effect: *e, error: None })
                .collect(),
        };
        decide(&Input {
            principal: "tok_1",
            is_agent: true,
            in_scope: true,
            workspace_switch: None,
            tool_switch: None,
            agent_writes_enabled: true,
            tool: t,
            confidence,
            constitution: &c,
        })
    }

    #[test]
    fn trace_lists_every_stage_in_order() {
        let d = run(&tool(Policy::Auto, false, None), &[], Some(0.9));
        let stages: Vec<&str> = d.trace.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(
            stages,
            [
                "authenticate",
                "scope",
                "workspace_kill_switch",
                "tool_kill_switch",
                "agent_write_control",
                "constitution",
                "confidence_gate",
                "irreversible_floor",
                "tool_policy",
                "outcome"
            ]
        );
        assert_eq!(d.outcome, Outcome::Execute);
    }

    #[test]
    fn kill_switches_block_before_anything_else_is_considered() {
        let t = tool(Policy::Auto, false, None);
        let sw = Engaged { reason: "incident".into(), by: "usr_1".into() };
        let c = ConstitutionVerdict::default();
        let d = decide(&Input {
            principal: "tok_1",
            is_agent: true,
            in_scope: true,
            workspace_switch: Some(&sw),
            tool_switch: None,
            agent_writes_enabled: true,
            tool: &t,
            confidence: None,
            constitution: &c,
        });
        assert!(matches!(d.outcome, Outcome::Blocked { ref code, .. } if code == "workspace_kill_switch"));
    }

    #[test]
    fn agent_writes_off_denies_write_tools_to_agents_only() {
        let t = tool(Policy::Auto, false, None);
        let c = ConstitutionVerdict::default();
        let mut input = Input {
            principal: "tok_1",
            is_agent: true,
            in_scope: true,
            workspace_switch: None,
            tool_switch: None,
            agent_writes_enabled: false,
            tool: &t,
            confidence: None,
            constitution: &c,
        };
        assert!(matches!(decide(&input).outcome, Outcome::Denied { ref code, .. } if code == "agent_writes_disabled"));
        input.is_agent = false;
        assert_eq!(decide(&input).outcome, Outcome::Execute);
    }

    #[test]
    fn allow_lifts_approve_but_not_dual_irreversible_or_low_confidence() {
        assert_eq!(run(&tool(Policy::Approve, false, None), &[Effect::Allow], None).outcome, Outcome::Execute);
        assert_eq!(run(&tool(Policy::ApproveDual, false, None), &[Effect::Allow], None).outcome, Outcome::NeedsApproval { required: 2 });
        assert_eq!(run(&tool(Policy::Approve, true, None), &[Effect::Allow], None).outcome, Outcome::NeedsApproval { required: 1 });
        assert_eq!(
            run(&tool(Policy::Approve, false, Some(0.8)), &[Effect::Allow], Some(0.5)).outcome,
            Outcome::NeedsApproval { required: 1 }
        );
        assert_eq!(run(&tool(Policy::Approve, false, Some(0.8)), &[Effect::Allow], Some(0.9)).outcome, Outcome::Execute);
    }

    #[test]
    fn the_most_restrictive_rule_wins() {
        let d = run(&tool(Policy::Auto, false, None), &[Effect::Allow, Effect::RequireDual, Effect::RequireApproval], None);
        assert_eq!(d.outcome, Outcome::NeedsApproval { required: 2 });
        let d = run(&tool(Policy::Auto, false, None), &[Effect::Allow, Effect::Deny], None);
        assert!(matches!(d.outcome, Outcome::Denied { ref code, .. } if code == "constitution_denied"));
        assert_eq!(d.citations.len(), 2);
    }

    #[test]
    fn missing_confidence_counts_as_below_the_minimum() {
        let d = run(&tool(Policy::Auto, false, Some(0.5)), &[], None);
        assert_eq!(d.outcome, Outcome::NeedsApproval { required: 1 });
    }

    fn arb_effects() -> impl Strategy<Value = Vec<Effect>> {
        prop::collection::vec(
            prop_oneof![Just(Effect::Allow), Just(Effect::RequireApproval), Just(Effect::RequireDual), Just(Effect::Deny)],
            0..5,
        )
    }

    proptest! {
        /// No combination of rules, policy and confidence lets an irreversible tool run
        /// without a human, or lowers what a rule demanded.
        #[test]
        fn nothing_lowers_the_floor(
            effects in arb_effects(),
            policy in prop_oneof![Just(Policy::Auto), Just(Policy::Approve), Just(Policy::ApproveDual)],
            irreversible in any::<bool>(),
            min in prop::option::of(0.0f64..1.0),
            conf in prop::option::of(0.0f64..1.0),
        ) {
            let t = tool(policy, irreversible, min);
            let d = run(&t, &effects, conf);
            let required = match d.outcome { Outcome::Execute => 0, Outcome::NeedsApproval { required } => required, _ => 3 };
            if irreversible { prop_assert!(required >= 1); }
            if effects.contains(&Effect::Deny) { prop_assert_eq!(required, 3); }
            if effects.contains(&Effect::RequireDual) { prop_assert!(required >= 2); }
            if effects.contains(&Effect::RequireApproval) { prop_assert!(required >= 1); }
            if policy == Policy::ApproveDual { prop_assert!(required >= 2); }
            if policy == Policy::Approve && !effects.contains(&Effect::Allow) { prop_assert!(required >= 1); }
            if let (Some(m), c) = (min, conf) && c.is_none_or(|c| c < m) { prop_assert!(required >= 1); }
        }
    }
}
