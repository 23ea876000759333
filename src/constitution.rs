//! The constitution: rules written in CEL that every action is checked against.
//!
//! Pure: no I/O. [`compile`] checks and compiles a list of [`Rule`]s once, when a version is
//! published; [`Compiled::evaluate`] runs them against one action's [`Facts`] and returns
//! the [`ConstitutionVerdict`](crate::gate::ConstitutionVerdict) that
//! [`decide`](crate::gate::decide) combines with the rest of the pipeline. The CEL parser and
//! interpreter are the `cel` crate (0.15); this module adds what it lacks for a gate:
//! publish-time checks, a cost bound, fail-closed evaluation, and speed.
//!
//! # What a rule sees
//!
//! Seven names, and nothing else: `tool` (string), `payload` (the action's JSON),
//! `resource` (string or null), `agent` (`{id, name, owner}`, or null when a person
//! submits), `requester` (`{id, email, role}`), `confidence` (double or null) and `now`
//! (a timestamp, UTC: `now.getHours()` is the UTC hour, `now.getHours("Europe/Paris")` a
//! local one). The standard library's functions and macros (`has`, `all`, `exists`,
//! `exists_one`, `map`, `filter`) are available; no extension library is.
//!
//! JSON becomes CEL like this: integers that fit `i64` are `int`, so `payload.amount + 1`
//! works (the crate's own serde path makes them `uint`, and `uint + int` is an error);
//! larger positive integers are `uint`, exact, and compare with ints and doubles (CEL
//! compares numbers across types) but fail closed in arithmetic with an int, rather than
//! silently losing precision as a double would; other numbers are `double`; strings,
//! booleans and null are themselves; arrays are lists; objects are maps with string keys.
//! Strings are borrowed from the payload, not copied.
//!
//! # Publish-time checks ([`compile`])
//!
//! Every problem of every rule is reported, each as a [`RuleError`] naming the rule, the
//! line and column within `when` where there is one, and a stable `code`:
//!
//! - `invalid_rule_id`, `duplicate_rule_id`, `invalid_title`, `invalid_description`;
//!   `expression_too_long` (over [`MAX_WHEN_BYTES`]);
//! - `syntax_error`: the parser's first error, at its position (later ones are mostly
//!   echoes of the first); also an invalid regular expression given to `matches`;
//! - `unknown_name`: an identifier that is none of the seven names, a comprehension's own
//!   variable or a type name (`int`, `string`, …); a function the standard library does
//!   not have (`payload.to.contain(x)`); a struct type. Each at its own position;
//! - `not_boolean`: see below;
//! - `too_costly`: see below.
//!
//! ## "Does not yield a boolean"
//!
//! The crate has no type checker, so two tests, both of which must pass:
//!
//! 1. *Static*: a small inference over the AST gives each node `bool`, `not bool` or
//!    `unknown`. Literals other than `true`/`false`, list and map literals, arithmetic
//!    (`+ - * / %`, unary `-`), the seven names themselves (none of them is a boolean),
//!    fields of `agent` and `requester` (strings), `size()`, conversions (`int()`,
//!    `string()`, `timestamp()`, …), timestamp accessors, optionals and `map`/`filter`
//!    results are `not bool`; comparisons, `&&`, `||`, `!`, `in`, `has()`, `all`,
//!    `exists`, `exists_one`, `contains`, `startsWith`, `endsWith` and `matches` are
//!    `bool`; a field of the payload, an index or an unknown call is `unknown`. `c ? a : b`
//!    is `not bool` when either branch is. A rule whose root is `not bool` is refused, at
//!    the position of the node that decided it.
//! 2. *Trial*: the rule is evaluated against two neutral sample actions (empty payload;
//!    one with an agent, a resource and a confidence, one with none of them). If an
//!    evaluation *succeeds* with a value that is not a boolean, the rule is refused: a
//!    successful evaluation touched no missing data, so the result does not depend on the
//!    payload. An evaluation that *fails* (say `payload.amount` is missing) proves nothing
//!    and is accepted. So `has(payload.x) ? payload.x : 1` is refused, while
//!    `payload.flagged` is accepted and fails closed at run time if it is not a boolean.
//!
//! ## The cost bound
//!
//! CEL has no loops or recursion; the only iteration is a comprehension over a list or
//! map, and payloads are at most 1 MiB. What could still stall the gate is work that grows
//! faster than the payload: a comprehension inside a comprehension over unrelated lists
//! (n²), a body that scans the whole payload once per element (`payload.a.exists(x, x in
//! payload.b)`, n²), copies multiplied by chained `map`s (`.map(x, [x, x])` twice is 4×,
//! thirty times is 2³⁰×), a regular expression recompiled for every element. So, at
//! publish time (`too_costly` unless said otherwise):
//!
//! - `when` is at most [`MAX_WHEN_BYTES`] bytes (`expression_too_long`), at most
//!   [`MAX_NODES`] AST nodes after macro expansion, at most [`MAX_DEPTH`] levels deep
//!   (this also bounds the interpreter's recursion, so no rule can overflow a stack);
//! - comprehensions nest at most [`MAX_NESTING`] deep;
//! - inside a comprehension's body (its predicate or transform) the only names are its
//!   own variables, literals and the small facts (`tool`, `agent`, `requester`,
//!   `confidence`, `now`, each bounded in size by validation elsewhere). `payload`,
//!   `resource` and an enclosing comprehension's variables are refused there; the range
//!   of a nested comprehension may use the enclosing variable (`x.tags`). Every value a
//!   body touches is therefore part of the current element, and the elements of a range
//!   add up to the range: a comprehension costs in total what one pass over its range
//!   costs, however it nests;
//! - the pattern of `matches` must be a string literal: it is compiled here (an invalid
//!   one is a `syntax_error`, with a program size limit) and cached per thread at run time,
//!   so evaluation never compiles a regex twice;
//! - a *weight* analysis bounds the data the rule reads and copies. The weight of a value
//!   is an upper bound on its size in payloads: `payload` and `resource` weigh 1, literals
//!   and small facts 0, a field or element weighs what its container does, `a + b` weighs
//!   both, a list or map literal its elements, a `map` result its range times its
//!   transform. Every operation that reads or copies its operands (comparisons, `in`,
//!   functions, `+`, literals, binding each element of a comprehension) adds their weights
//!   to the rule's cost, and inside a comprehension body that is multiplied by the range's
//!   weight; field access, `&&`, `||`, `!` and `? :` are free. A rule whose cost exceeds
//!   [`MAX_COST`] is refused. `payload.amount > 1000` costs 1; `payload.to.exists(r,
//!   r.endsWith("@x.com"))` costs 2.
//!
//! With those, one evaluation of one rule does at most [`MAX_COST`] passes over the payload
//! (each a scan, comparison or copy that is linear in what it touches), each pass doing
//! at most [`MAX_NODES`] steps per element: linear in the payload, with a constant fixed at
//! publish time. What that constant means in time is measured by `benches/decision_cost.rs`
//! (`worst_rule_1mib`): the most expensive rules we could write within the limits take
//! 0.15 to 0.45 s on an adversarial 1 MiB payload of 350 000 tiny numbers, and about a
//! millisecond on one made of long strings. Lowering [`MAX_COST`] lowers that in
//! proportion.
//!
//! # Evaluation ([`Compiled::evaluate`])
//!
//! Every rule that matches is cited with its effect. A rule that cannot be evaluated on
//! this action (a missing field, a type error, a result that is not a boolean, a payload
//! nested deeper than [`MAX_PAYLOAD_DEPTH`]) is, with [`OnError::FailClosed`] (the
//! default), cited with at least `require_approval` and the reason in
//! [`Citation::error`](crate::gate::Citation::error); with [`OnError::NoMatch`] it is not
//! cited. Evaluation never panics: it runs under `catch_unwind`, and a panic counts as an
//! evaluation error.
//!
//! Two paths, one meaning. The interpreter spends most of a simple rule's time allocating
//! (0.3 to 1 µs a rule, 0.7 µs per element of a comprehension), which put a realistic set
//! of 100 rules at 60 to 80 µs. So each rule is first tried on a *direct path* (the `fast`
//! module below) that evaluates the common shapes straight on the JSON, and gives up on
//! anything it does not mirror exactly, any error included; only then does the rule go to
//! the interpreter, whose context (and the payload's conversion) is built at most once per
//! action and shared by the remaining rules. A property test checks on random payloads
//! that the two paths give the same verdicts. With it, 100 realistic rules cost about
//! 13 to 19 µs per decision.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo};
use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp, CelUInt, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{Context, Env, ExecutionError, Value};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::gate::{Citation, ConstitutionVerdict, Effect};

/// The names a rule may use, in the order error messages list them.
pub const NAMES: [&str; 7] = ["tool", "payload", "resource", "agent", "requester", "confidence", "now"];
/// The longest `when`, in bytes.
pub const MAX_WHEN_BYTES: usize = 4096;
/// The most AST nodes a rule may have after macro expansion (an `exists` adds about eight).
/// A long hand-written rule, say thirty domains in an `exists`, has about 130.
pub const MAX_NODES: usize = 256;
/// The deepest a rule's AST may be. Bounds the interpreter's recursion (and ours).
pub const MAX_DEPTH: usize = 48;
/// How deep comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) may nest.
pub const MAX_NESTING: usize = 2;
/// The most a rule may cost, in passes over the payload; see the module documentation.
pub const MAX_COST: u32 = 64;
/// How deep a payload may nest for rules to read it; deeper, rules that read the payload
/// fail (closed, by default). JSON parsed by `serde_json` never nests deeper than 128.
pub const MAX_PAYLOAD_DEPTH: usize = 128;
/// The most a title may have, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// The most a description may have, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Compiled-program size limit for a `matches` pattern: far above any sensible pattern,
/// far below what would make a single match slow.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Runtime error messages are cut to this many characters: some of the interpreter's
/// messages print whole values, and a payload can be a megabyte.
const MAX_REASON_CHARS: usize = 300;

/// Type names an expression may mention, as in `type(payload.x) == string`.
const TYPE_NAMES: [&str; 10] = ["bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint"];

/// What `matches` is renamed to after the checks: our own overload, which caches compiled
/// patterns. The `@` keeps it out of reach of anything a person can write.
const MATCHES: &str = "@cs_matches";

/// One rule of a constitution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable, human-chosen slug: `^[a-z][a-z0-9_-]{1,63}$`, unique within a constitution.
    pub id: String,
    /// 1 to 200 characters.
    pub title: String,
    /// At most 2000 characters.
    #[serde(default)]
    pub description: String,
    /// A CEL expression over `tool`, `payload`, `resource`, `agent`, `requester`,
    /// `confidence` and `now` that yields a boolean; at most 4096 bytes.
    pub when: String,
    pub effect: Effect,
    /// What a rule that cannot be evaluated on an action counts as.
    #[serde(default)]
    pub on_error: OnError,
}

/// What a rule that fails at evaluation time (a missing field, a type error) counts as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Cited with at least `require_approval`, and the reason. The default.
    #[default]
    FailClosed,
    /// Not cited, as if it had not matched.
    NoMatch,
}

impl OnError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::FailClosed => "fail_closed",
            OnError::NoMatch => "no_match",
        }
    }
}

/// A problem with one rule at publish time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
pub struct RuleError {
    /// The rule's id as given (possibly the invalid one).
    pub rule_id: String,
    /// The rule's index in the list, from 0.
    pub index: usize,
    /// 1-based line within `when`, when the problem has a position.
    pub line: Option<usize>,
    /// 1-based column (in characters) within `when`, when the problem has a position.
    pub column: Option<usize>,
    /// `invalid_rule_id`, `duplicate_rule_id`, `invalid_title`, `invalid_description`,
    /// `expression_too_long`, `syntax_error`, `unknown_name`, `not_boolean`, `too_costly`.
    pub code: &'static str,
    /// For a person: names the rule and the position.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RuleError {}

/// A published constitution, compiled once and evaluated on every action. Cheap to clone.
#[derive(Clone)]
pub struct Compiled {
    inner: Arc<Inner>,
}

struct Inner {
    version: Option<i64>,
    rules: Vec<Rule>,
    programs: Vec<Program>,
    env: Arc<Env>,
    /// Whether any rule reads the payload: if none does, it is not converted.
    reads_payload: bool,
}

/// One rule's checked and rewritten expression.
struct Program {
    expr: IdedExpr,
    reads_payload: bool,
    /// The one tool the rule can match, when one of its top-level conjuncts is
    /// `tool == '…'`: for any other tool the rule is false whatever the rest says (in CEL
    /// `false && x` is false even when `x` fails), so it is not evaluated at all.
    only_tool: Option<String>,
}

/// The tool a rule is guarded by: a conjunct `tool == 'lit'` (or `'lit' == tool`) among
/// the `&&`s at the root of its expression.
fn only_tool(e: &IdedExpr) -> Option<String> {
    let Expr::Call(c) = &e.expr else { return None };
    if c.target.is_some() || c.args.len() != 2 {
        return None;
    }
    match c.func_name.as_str() {
        "_&&_" => only_tool(&c.args[0]).or_else(|| only_tool(&c.args[1])),
        "_==_" => match (&c.args[0].expr, &c.args[1].expr) {
            (Expr::Ident(n), Expr::Literal(LiteralValue::String(s))) | (Expr::Literal(LiteralValue::String(s)), Expr::Ident(n))
                if n == "tool" =>
            {
                Some(s.inner().to_string())
            }
            _ => None,
        },
        _ => None,
    }
}

impl fmt::Debug for Compiled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.inner.rules.iter().map(|r| r.id.as_str()).collect();
        f.debug_struct("Compiled").field("version", &self.inner.version).field("rules", &ids).finish()
    }
}

/// The agent that submitted an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentFacts<'a> {
    /// The token's id.
    pub id: &'a str,
    /// The token's name.
    pub name: &'a str,
    /// The id of the member who owns the token.
    pub owner: &'a str,
}

/// The person on whose behalf an action is submitted: the token's owner, or the submitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequesterFacts<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub role: &'a str,
}

/// What a rule sees about one action.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub tool: &'a str,
    pub payload: &'a serde_json::Value,
    pub resource: Option<&'a str>,
    /// `None` when a person submits: `agent` is null.
    pub agent: Option<AgentFacts<'a>>,
    pub requester: RequesterFacts<'a>,
    /// `None`: `confidence` is null.
    pub confidence: Option<f64>,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// The standard library plus our `matches`. Built once: an `Env` is immutable and shared.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| {
    let mut env = Env::stdlib();
    // These cannot fail: the name is ours and declared nowhere else. Were they to, the
    // interpreter would fail `matches` (closed) and the tests of `matches` would show it.
    let global = env.add_overload(MATCHES, "cs_matches_string", vec![STRING_TYPE, STRING_TYPE], cs_matches);
    let member = env.add_member_overload(MATCHES, "cs_matches_string_member", STRING_TYPE, vec![STRING_TYPE], cs_matches);
    debug_assert!(global.is_ok() && member.is_ok());
    Arc::new(env)
});

/// Compiles and checks a constitution. Reports every problem of every rule.
pub fn compile(rules: &[Rule], version: Option<i64>) -> Result<Compiled, Vec<RuleError>> {
    let env = Arc::clone(&ENV);
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    let mut programs = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let label = if valid_rule_id(&rule.id) { format!("rule `{}`", rule.id) } else { format!("rule #{}", index + 1) };
        let mut report = |code: &'static str, at: Option<(usize, usize)>, detail: String| {
            let message = match at {
                Some((line, column)) => format!("{label}, line {line}, column {column}: {detail}"),
                None => format!("{label}: {detail}"),
            };
            errors.push(RuleError { rule_id: rule.id.clone(), index, line: at.map(|a| a.0), column: at.map(|a| a.1), code, message });
        };
        if !valid_rule_id(&rule.id) {
            report(
                "invalid_rule_id",
                None,
                format!(
                    "the id {:?} is not valid: use 2 to 64 characters, lower-case letters, digits, `_` and `-`, starting with a letter",
                    truncate(&rule.id, 80)
                ),
            );
        } else if !seen.insert(rule.id.as_str()) {
            report("duplicate_rule_id", None, "another rule has the same id; ids must be unique within a constitution".into());
        }
        let title_chars = rule.title.chars().count();
        if title_chars == 0 || rule.title.trim().is_empty() || !crate::names::valid_free_text(&rule.title, MAX_TITLE_CHARS, false) {
            report(
                "invalid_title",
                None,
                format!(
                    "the title must be 1 to {MAX_TITLE_CHARS} characters, not blank, without control or bidirectional control characters"
                ),
            );
        }
        if !crate::names::valid_free_text(&rule.description, MAX_DESCRIPTION_CHARS, true) {
            report(
                "invalid_description",
                None,
                format!(
                    "the description must be at most {MAX_DESCRIPTION_CHARS} characters, without control characters other than newlines and tabs, or bidirectional controls"
                ),
            );
        }
        if rule.when.len() > MAX_WHEN_BYTES {
            report("expression_too_long", None, format!("`when` is {} bytes; the most is {MAX_WHEN_BYTES}", rule.when.len()));
            continue;
        }
        // Defence in depth: the parser and the trial evaluation run third-party code on
        // input a person typed. A panic there refuses the rule instead of unwinding into
        // the caller.
        let outcome = catch_unwind(AssertUnwindSafe(|| compile_when(&env, &rule.when, version.is_none()))).unwrap_or_else(|_| {
            Err(vec![Problem { code: "syntax_error", at: None, detail: "the expression could not be compiled".into() }])
        });
        match outcome {
            Ok(program) => programs.push(program),
            Err(problems) => {
                for p in problems {
                    report(p.code, p.at, p.detail);
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let reads_payload = programs.iter().any(|p| p.reads_payload);
    Ok(Compiled { inner: Arc::new(Inner { version, rules: rules.to_vec(), programs, env, reads_payload }) })
}

fn valid_rule_id(id: &str) -> bool {
    let mut chars = id.chars();
    (2..=64).contains(&id.len()) && matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

/// A problem found in `when`, before the rule's label is attached.
struct Problem {
    code: &'static str,
    at: Option<(usize, usize)>,
    detail: String,
}

/// `new`: the rule is a draft or about to be published, not a version already in force.
/// Checks added to publishing since a version was accepted (a literal time zone) apply to
/// new rules only: a stored version that compiled before an upgrade compiles after it, so
/// an upgrade never stops a workspace's every decision.
fn compile_when(env: &Arc<Env>, src: &str, new: bool) -> Result<Program, Vec<Problem>> {
    let (mut expr, info) = match env.parser().parse_with_source_info(src) {
        Ok(parsed) => parsed,
        Err(errors) => {
            let first = errors.errors.first();
            let at = first
                .and_then(|e| Some((usize::try_from(e.pos.0).ok()?, usize::try_from(e.pos.1).ok()?)))
                .filter(|&(line, column)| line >= 1 && column >= 1);
            let msg = first.map_or("the expression could not be parsed", |e| e.msg.as_str());
            let msg = msg.strip_prefix("Syntax error: ").unwrap_or(msg);
            let msg = if msg == "UNKNOWN" { "the expression could not be parsed" } else { msg };
            return Err(vec![Problem { code: "syntax_error", at, detail: format!("syntax error: {}", truncate(msg, 200)) }]);
        }
    };

    let mut check = Check::new(env, src, &info, new);
    check.visit(&expr, 0);
    if check.nodes > MAX_NODES {
        check.problem(
            "too_costly",
            None,
            format!(
                "the expression has {} nodes after expanding macros; the most is {MAX_NODES}: split it into several rules",
                check.nodes
            ),
        );
    }
    if check.cost > MAX_COST {
        check.problem(
            "too_costly",
            None,
            format!(
                "the expression reads or copies the payload about {} times; the most is {MAX_COST} (see the constitution's cost rules)",
                check.cost
            ),
        );
    }
    let reads_payload = check.reads_payload;
    if !check.problems.is_empty() {
        return Err(check.problems);
    }

    if let Kind::NotBool(id, what) = kind(&expr, &mut Vec::new()) {
        let at = position(src, &info, id);
        return Err(vec![Problem { code: "not_boolean", at, detail: format!("the expression yields {what} here, not a boolean") }]);
    }

    rename_matches(&mut expr);

    // Trial evaluation on neutral samples: a successful non-boolean result does not depend
    // on the payload, so the rule can never match.
    let payload = serde_json::Value::Object(serde_json::Map::new());
    for facts in sample_facts(&payload) {
        let mut ctx = Context::with_env(Arc::clone(env));
        bind_facts(&mut ctx, &facts, Some(Box::new(CelMap::default())));
        if let Ok(Some(type_name)) = run_trial(&expr, &ctx) {
            return Err(vec![Problem {
                code: "not_boolean",
                at: position(src, &info, expr.id),
                detail: format!(
                    "the expression yields a value of type `{type_name}`, not a boolean (found by evaluating it on a sample action)"
                ),
            }]);
        }
    }
    let only_tool = only_tool(&expr);
    Ok(Program { expr, reads_payload, only_tool })
}

/// `Ok(None)` when the trial yields a boolean, `Ok(Some(type))` when it yields something
/// else, `Err(())` when it fails.
fn run_trial(expr: &IdedExpr, ctx: &Context) -> Result<Option<String>, ()> {
    match Value::resolve_val(expr, ctx) {
        Ok(v) if v.downcast_ref::<CelBool>().is_some() => Ok(None),
        Ok(v) => Ok(Some(v.get_type().name().to_owned())),
        Err(_) => Err(()),
    }
}

fn sample_facts(payload: &serde_json::Value) -> [Facts<'_>; 2] {
    let now = chrono::DateTime::from_timestamp(1_704_110_400, 0).unwrap_or_default(); // 2024-01-01T12:00:00Z
    let requester = RequesterFacts { id: "usr_sample", email: "sample@example.com", role: "member" };
    [
        Facts {
            tool: "sample.tool",
            payload,
            resource: Some("sample:1"),
            agent: Some(AgentFacts { id: "tok_sample", name: "sample", owner: "usr_sample" }),
            requester,
            confidence: Some(0.5),
            now,
        },
        Facts { tool: "sample.tool", payload, resource: None, agent: None, requester, confidence: None, now },
    ]
}

/// Line and column (1-based, columns in characters) of a node. The parser records byte
/// offsets; a call (and a macro, which is one) is recorded at its `(`, so that is moved
/// back to the start of the function's name.
fn position(src: &str, info: &SourceInfo, id: u64) -> Option<(usize, usize)> {
    let (start, _) = info.offset_for(id)?;
    let mut start = start as usize;
    let bytes = src.as_bytes();
    if bytes.get(start) == Some(&b'(') {
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
    }
    let prefix = src.get(..start)?;
    let line = prefix.matches('\n').count() + 1;
    let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
    Some((line, prefix[line_start..].chars().count() + 1))
}

fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// Operators and macro internals: calls whose names no one types as functions.
fn is_operator(name: &str) -> bool {
    name.starts_with('_') || name.starts_with('@') || name == "!_" || name == "-_"
}

/// Calls that only route values (no scan, no copy): free in the cost analysis.
fn is_free(name: &str) -> bool {
    matches!(name, "_&&_" | "_||_" | "!_" | "@not_strictly_false" | "_?_:_" | "_?._" | "_[?_]" | "_[_]")
}

/// Calls whose result is a scalar (weight 0): comparisons, predicates, sizes, numbers.
fn is_scalar_call(name: &str) -> bool {
    matches!(
        name,
        "_==_"
            | "_!=_"
            | "_<_"
            | "_<=_"
            | "_>_"
            | "_>=_"
            | "@in"
            | "contains"
            | "startsWith"
            | "endsWith"
            | "matches"
            | "size"
            | "int"
            | "uint"
            | "double"
            | "bool"
            | "type"
            | "timestamp"
            | "duration"
            | "hasValue"
            | "-_"
            | "_-_"
            | "_*_"
            | "_/_"
            | "_%_"
            | "getFullYear"
            | "getMonth"
            | "getDate"
            | "getDayOfMonth"
            | "getDayOfWeek"
            | "getDayOfYear"
            | "getHours"
            | "getMinutes"
            | "getSeconds"
            | "getMilliseconds"
    )
}

/// A comprehension being checked: its variables.
struct Frame {
    vars: Vec<String>,
    accu: String,
}

/// The timestamp methods that take a time zone as their one argument.
const TIME_ZONE_METHODS: [&str; 10] = [
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
];

/// The publish-time walk: names, functions, cost. One pass, collecting every problem.
struct Check<'s> {
    env: &'s Arc<Env>,
    src: &'s str,
    info: &'s SourceInfo,
    problems: Vec<Problem>,
    nodes: usize,
    too_deep: bool,
    cost: u32,
    /// Multiplies costs inside comprehension bodies: the weight of the ranges around.
    multiplier: u32,
    frames: Vec<Frame>,
    reads_payload: bool,
    reported: HashSet<String>,
    known_functions: HashMap<(String, bool, usize), bool>,
    /// See [`compile_when`].
    new: bool,
}

impl<'s> Check<'s> {
    fn new(env: &'s Arc<Env>, src: &'s str, info: &'s SourceInfo, new: bool) -> Self {
        Check {
            env,
            src,
            info,
            problems: Vec::new(),
            nodes: 0,
            too_deep: false,
            cost: 0,
            multiplier: 1,
            frames: Vec::new(),
            reads_payload: false,
            reported: HashSet::new(),
            known_functions: HashMap::new(),
            new,
        }
    }

    fn problem(&mut self, code: &'static str, at: Option<(usize, usize)>, detail: String) {
        self.problems.push(Problem { code, at, detail });
    }

    fn at(&self, e: &IdedExpr) -> Option<(usize, usize)> {
        position(self.src, self.info, e.id)
    }

    fn charge(&mut self, weight: u32) {
        self.cost = self.cost.saturating_add(weight.saturating_mul(self.multiplier));
    }

    /// Visits a node; returns its weight (an upper bound on its value's size, in payloads,
    /// or in elements of the range inside a comprehension body).
    fn visit(&mut self, e: &IdedExpr, depth: usize) -> u32 {
        self.nodes += 1;
        if depth > MAX_DEPTH {
            if !self.too_deep {
                self.too_deep = true;
                let at = self.at(e);
                self.problem("too_costly", at, format!("the expression nests more than {MAX_DEPTH} levels deep"));
            }
            return 0;
        }
        match &e.expr {
            Expr::Unspecified | Expr::Literal(_) => 0,
            Expr::Ident(name) => self.ident(e, name),
            Expr::Select(select) => {
                let w = self.visit(&select.operand, depth + 1);
                if select.test { 0 } else { w }
            }
            Expr::List(list) => {
                let w = list.elements.iter().fold(0u32, |acc, el| acc.saturating_add(self.visit(el, depth + 1)));
                self.charge(w);
                w
            }
            Expr::Map(map) => {
                let mut w = 0u32;
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(me) => {
                            w = w.saturating_add(self.visit(&me.key, depth + 1));
                            w = w.saturating_add(self.visit(&me.value, depth + 1));
                        }
                        EntryExpr::StructField(sf) => w = w.saturating_add(self.visit(&sf.value, depth + 1)),
                    }
                }
                self.charge(w);
                w
            }
            Expr::Struct(s) => {
                let at = self.at(e);
                self.problem("unknown_name", at, format!("unknown type `{}`: rules have no message types", s.type_name));
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(me) => {
                            self.visit(&me.key, depth + 1);
                            self.visit(&me.value, depth + 1);
                        }
                        EntryExpr::StructField(sf) => {
                            self.visit(&sf.value, depth + 1);
                        }
                    }
                }
                0
            }
            Expr::Call(call) => self.call(e, call, depth),
            Expr::Comprehension(c) => self.comprehension(e, c, depth),
        }
    }

    fn ident(&mut self, e: &IdedExpr, name: &str) -> u32 {
        // A comprehension's own variables first: they shadow everything.
        if let Some(i) = self.frames.iter().rposition(|f| f.accu == name || f.vars.iter().any(|v| v == name)) {
            let frame = &self.frames[i];
            if frame.accu == name {
                return 0;
            }
            if i + 1 == self.frames.len() {
                return 1;
            }
            let at = self.at(e);
            self.problem(
                "too_costly",
                at,
                format!(
                    "`{name}` belongs to an enclosing comprehension; inside a nested comprehension's body use only its own variable (scanning the outer element for every inner one can grow with the square of the payload)"
                ),
            );
            return 1;
        }
        if NAMES.contains(&name) {
            let large = name == "payload" || name == "resource";
            if name == "payload" {
                self.reads_payload = true;
            }
            if large && !self.frames.is_empty() {
                let at = self.at(e);
                self.problem(
                    "too_costly",
                    at,
                    format!(
                        "`{name}` inside a comprehension's body: there, use only the comprehension's own variable, literals and tool, agent, requester, confidence, now (reading `{name}` once per element can grow with the square of the payload)"
                    ),
                );
            }
            return u32::from(large);
        }
        if TYPE_NAMES.contains(&name) {
            return 0;
        }
        if self.reported.insert(name.to_owned()) {
            let at = self.at(e);
            self.problem("unknown_name", at, format!("unknown name `{name}`; the names are {}", NAMES.join(", ")));
        }
        0
    }

    /// Whether the standard library has a function `name` callable this way, asked of the
    /// interpreter itself: a call with null arguments fails with `UndeclaredReference`
    /// only when nothing by that name exists.
    fn function_known(&mut self, name: &str, member: bool, arity: usize) -> bool {
        let key = (name.to_owned(), member, arity);
        if let Some(known) = self.known_functions.get(&key) {
            return *known;
        }
        let nulls = vec!["null"; arity].join(", ");
        let probe = if member { format!("null.{name}({nulls})") } else { format!("{name}({nulls})") };
        let known = match self.env.compile(&probe) {
            Ok(program) => {
                let ctx = Context::with_env(Arc::clone(self.env));
                !matches!(program.execute(&ctx), Err(ExecutionError::UndeclaredReference(_)))
            }
            // Not probeable: let it through; an error at run time fails closed.
            Err(_) => true,
        };
        self.known_functions.insert(key, known);
        known
    }

    fn call(&mut self, e: &IdedExpr, call: &cel::common::ast::CallExpr, depth: usize) -> u32 {
        let name = call.func_name.as_str();
        // `optional.of(x)`: the target spells a namespace, not a value.
        let namespace = match call.target.as_deref() {
            Some(IdedExpr { expr: Expr::Ident(ns), .. }) if !self.is_variable(ns) => {
                self.function_known(&format!("{ns}.{name}"), false, call.args.len())
            }
            _ => false,
        };
        let mut weights = Vec::with_capacity(call.args.len() + 1);
        if let Some(target) = call.target.as_deref()
            && !namespace
        {
            weights.push(self.visit(target, depth + 1));
        }
        for arg in &call.args {
            weights.push(self.visit(arg, depth + 1));
        }
        if !is_operator(name) && !namespace && !self.function_known(name, call.target.is_some(), call.args.len()) {
            let at = self.at(e);
            let style = if call.target.is_some() { "method" } else { "function" };
            let n = call.args.len();
            let plural = if n == 1 { "" } else { "s" };
            self.problem("unknown_name", at, format!("unknown {style} `{name}` with {n} argument{plural}"));
        }
        if name == "matches" {
            self.check_pattern(call);
        }
        if self.new
            && TIME_ZONE_METHODS.contains(&name)
            && call.target.is_some()
            && let [zone] = call.args.as_slice()
        {
            self.check_time_zone(name, zone);
        }
        let sum = weights.iter().fold(0u32, |a, w| a.saturating_add(*w));
        let max = weights.iter().copied().max().unwrap_or(0);
        let result = match name {
            "_+_" => sum,
            "_?_:_" => weights.iter().skip(1).copied().max().unwrap_or(0),
            "_[_]" | "_?._" | "_[?_]" => weights.first().copied().unwrap_or(0),
            "_&&_" | "_||_" | "!_" | "@not_strictly_false" => 0,
            _ if is_scalar_call(name) => 0,
            _ => max,
        };
        if name == "_[_]" {
            // Looking a key up hashes or compares it.
            self.charge(weights.get(1).copied().unwrap_or(0));
        } else if !is_free(name) {
            self.charge(sum.saturating_add(result));
        }
        result
    }

    fn is_variable(&self, name: &str) -> bool {
        NAMES.contains(&name) || self.frames.iter().any(|f| f.accu == name || f.vars.iter().any(|v| v == name))
    }

    /// `matches` takes a literal pattern, compiled here once (and cached at run time).
    fn check_pattern(&mut self, call: &cel::common::ast::CallExpr) {
        let pattern = if call.target.is_some() { call.args.first() } else { call.args.get(1) };
        let Some(pattern) = pattern else { return };
        match &pattern.expr {
            Expr::Literal(LiteralValue::String(s)) => {
                if let Err(err) = build_regex(s.inner()) {
                    let at = self.at(pattern);
                    let first_line = err.to_string().lines().last().unwrap_or_default().trim().to_owned();
                    self.problem("syntax_error", at, format!("invalid regular expression for `matches`: {}", truncate(&first_line, 200)));
                }
            }
            _ => {
                let at = self.at(pattern);
                self.problem(
                    "too_costly",
                    at,
                    "the pattern of `matches` must be a string literal, so that it is compiled once when the constitution is published"
                        .into(),
                );
            }
        }
    }

    /// A literal time zone (`now.getHours('Europe/Paris')`) is tried here, by the same
    /// function that reads it at run time: one that does not exist would otherwise fail
    /// every action the rule sees, closed, until someone notices.
    fn check_time_zone(&mut self, method: &str, zone: &IdedExpr) {
        let Expr::Literal(LiteralValue::String(text)) = &zone.expr else { return };
        let Ok((probe, _)) = self.env.parser().parse_with_source_info(&format!("now.{method}(zone)")) else { return };
        let mut ctx = Context::with_env(Arc::clone(self.env));
        ctx.add_variable_as_val("now", Box::new(CelTimestamp::from(chrono::DateTime::UNIX_EPOCH.fixed_offset())));
        ctx.add_variable_as_val("zone", Box::new(CelString::from(text.inner())));
        if let Err(err) = Value::resolve_val(&probe, &ctx) {
            let at = self.at(zone);
            let zone = text.inner();
            let why = err.to_string();
            // "Error executing function 'timezone': unknown time zone Mars/Olympus": the
            // reason, without the zone again (the message names it once, escaped).
            let why = why.split_once("': ").map_or(why.as_str(), |(_, reason)| reason);
            let why = why.strip_suffix(zone).map_or(why, |w| w.trim_end_matches([' ', ':']));
            self.problem(
                "invalid_time_zone",
                at,
                format!(
                    "`{method}` cannot read the time zone {:?} ({}): give an IANA name such as `Europe/Paris`, or an offset such as `+02:00`",
                    truncate(zone, 64),
                    truncate(why, 120)
                ),
            );
        }
    }

    fn comprehension(&mut self, e: &IdedExpr, c: &ComprehensionExpr, depth: usize) -> u32 {
        let range = self.visit(&c.iter_range, depth + 1);
        // Binding each element clones it: one pass over the range.
        self.charge(range.max(1));
        self.visit(&c.accu_init, depth + 1);
        if self.frames.len() >= MAX_NESTING {
            let at = self.at(e);
            self.problem(
                "too_costly",
                at,
                format!("comprehensions (all, exists, exists_one, map, filter) nest more than {MAX_NESTING} deep"),
            );
        }
        let mut vars = vec![c.iter_var.clone()];
        vars.extend(c.iter_var2.clone());
        self.frames.push(Frame { vars, accu: c.accu_var.clone() });
        let outer = self.multiplier;
        self.multiplier = outer.saturating_mul(range.max(1));
        self.visit(&c.loop_cond, depth + 1);
        let step = self.visit(&c.loop_step, depth + 1);
        self.visit(&c.result, depth + 1);
        self.multiplier = outer;
        self.frames.pop();
        // `map` and `filter` build a list: one element per element of the range, each at
        // most what the transform weighs. The others yield a boolean or a count.
        if matches!(c.accu_init.expr, Expr::List(_)) { range.max(1).saturating_mul(step.max(1)) } else { 0 }
    }
}

/// The static type inference behind `not_boolean`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    /// Certainly not a boolean: the id of the node that says so, and what it yields.
    NotBool(u64, &'static str),
    Unknown,
}

/// `bound` holds the comprehension variables in scope (and whether each is an
/// accumulator, with the kind of its initial value).
fn kind(e: &IdedExpr, bound: &mut Vec<(String, Option<Kind>)>) -> Kind {
    let not = |what: &'static str| Kind::NotBool(e.id, what);
    match &e.expr {
        Expr::Literal(LiteralValue::Boolean(_)) => Kind::Bool,
        Expr::Literal(LiteralValue::String(_)) => not("a string"),
        Expr::Literal(LiteralValue::Bytes(_)) => not("bytes"),
        Expr::Literal(LiteralValue::Null) => not("null"),
        Expr::Literal(_) => not("a number"),
        Expr::List(_) => not("a list"),
        Expr::Map(_) => not("a map"),
        Expr::Struct(_) => not("a message"),
        Expr::Unspecified => Kind::Unknown,
        Expr::Ident(name) => {
            if let Some((_, accu)) = bound.iter().rev().find(|(n, _)| n == name) {
                return accu.unwrap_or(Kind::Unknown);
            }
            match name.as_str() {
                "tool" => not("a string (`tool`)"),
                "payload" => not("the whole payload"),
                "resource" => not("a string or null (`resource`)"),
                "agent" => not("a map or null (`agent`)"),
                "requester" => not("a map (`requester`)"),
                "confidence" => not("a number or null (`confidence`)"),
                "now" => not("a timestamp (`now`)"),
                n if TYPE_NAMES.contains(&n) => not("a type"),
                _ => Kind::Unknown,
            }
        }
        Expr::Select(select) => {
            if select.test {
                return Kind::Bool;
            }
            match &select.operand.expr {
                Expr::Ident(n) if (n == "agent" || n == "requester") && !bound.iter().any(|(b, _)| b == n) => not("a string"),
                _ => Kind::Unknown,
            }
        }
        Expr::Call(call) => match call.func_name.as_str() {
            "_&&_"
            | "_||_"
            | "!_"
            | "_==_"
            | "_!=_"
            | "_<_"
            | "_<=_"
            | "_>_"
            | "_>=_"
            | "@in"
            | "@not_strictly_false"
            | "contains"
            | "startsWith"
            | "endsWith"
            | "matches"
            | "hasValue"
            | "bool" => Kind::Bool,
            "_+_" => not("the result of `+` (a number, string or list)"),
            "_-_" | "_*_" | "_/_" | "_%_" | "-_" => not("a number (arithmetic)"),
            "size" | "int" | "uint" | "double" | "getFullYear" | "getMonth" | "getDate" | "getDayOfMonth" | "getDayOfWeek"
            | "getDayOfYear" | "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds" => not("a number"),
            "string" => not("a string"),
            "bytes" => not("bytes"),
            "timestamp" => not("a timestamp"),
            "duration" => not("a duration"),
            "type" => not("a type"),
            "_?._" | "_[?_]" | "of" | "none" | "ofNonZeroValue" => not("an optional"),
            "_?_:_" if call.args.len() == 3 => match (kind(&call.args[1], bound), kind(&call.args[2], bound)) {
                (k @ Kind::NotBool(..), _) | (_, k @ Kind::NotBool(..)) => k,
                (Kind::Bool, Kind::Bool) => Kind::Bool,
                _ => Kind::Unknown,
            },
            "dyn" if call.args.len() == 1 => kind(&call.args[0], bound),
            _ => Kind::Unknown,
        },
        Expr::Comprehension(c) => {
            // `map` and `filter` start from an empty list; `all` and `exists` from a boolean.
            let accu = match kind(&c.accu_init, bound) {
                Kind::NotBool(..) => not("a list (the result of `map` or `filter`)"),
                k => k,
            };
            bound.push((c.iter_var.clone(), None));
            if let Some(v2) = &c.iter_var2 {
                bound.push((v2.clone(), None));
            }
            bound.push((c.accu_var.clone(), Some(accu)));
            let result = match kind(&c.result, bound) {
                Kind::NotBool(_, what) => Kind::NotBool(e.id, what),
                k => k,
            };
            bound.truncate(bound.len() - 2 - usize::from(c.iter_var2.is_some()));
            result
        }
    }
}

/// Points `matches` calls at our caching overload. Depth is bounded by the checks.
fn rename_matches(e: &mut IdedExpr) {
    match &mut e.expr {
        Expr::Call(call) => {
            if call.func_name == "matches" {
                call.func_name = MATCHES.to_owned();
            }
            if let Some(target) = call.target.as_deref_mut() {
                rename_matches(target);
            }
            call.args.iter_mut().for_each(rename_matches);
        }
        Expr::Select(select) => rename_matches(&mut select.operand),
        Expr::List(list) => list.elements.iter_mut().for_each(rename_matches),
        Expr::Map(map) => {
            for entry in &mut map.entries {
                match &mut entry.expr {
                    EntryExpr::MapEntry(me) => {
                        rename_matches(&mut me.key);
                        rename_matches(&mut me.value);
                    }
                    EntryExpr::StructField(sf) => rename_matches(&mut sf.value),
                }
            }
        }
        Expr::Comprehension(c) => {
            rename_matches(&mut c.iter_range);
            rename_matches(&mut c.accu_init);
            rename_matches(&mut c.loop_cond);
            rename_matches(&mut c.loop_step);
            rename_matches(&mut c.result);
        }
        Expr::Struct(_) | Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn build_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build()
}

thread_local! {
    /// Compiled `matches` patterns. Patterns are literals checked at publish time, so this
    /// holds at most the patterns of the constitutions in force; cleared if it ever grows
    /// past a bound, to keep memory bounded however many versions are published.
    static REGEXES: RefCell<HashMap<String, regex::Regex>> = RefCell::new(HashMap::new());
}

const MAX_CACHED_REGEXES: usize = 1024;

/// Whether `pattern` matches `text`, compiling the pattern at most once per thread.
fn regex_is_match(text: &str, pattern: &str) -> Result<bool, regex::Error> {
    REGEXES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(re) = cache.get(pattern) {
            return Ok(re.is_match(text));
        }
        let re = build_regex(pattern)?;
        let matched = re.is_match(text);
        if cache.len() >= MAX_CACHED_REGEXES {
            cache.clear();
        }
        cache.insert(pattern.to_owned(), re);
        Ok(matched)
    })
}

/// `text.matches(pattern)` / `matches(text, pattern)` with a per-thread cache.
fn cs_matches<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (Some(text), Some(pattern)) =
        (args.first().and_then(|v| v.downcast_ref::<CelString>()), args.get(1).and_then(|v| v.downcast_ref::<CelString>()))
    else {
        return Err(ExecutionError::function_error("matches", "expects two strings"));
    };
    let matched = regex_is_match(text.inner(), pattern.inner()).map_err(|e| ExecutionError::function_error("matches", e))?;
    Ok(CowVal::owned(CelBool::from(matched)))
}

/// Whether `v` nests at most [`MAX_PAYLOAD_DEPTH`] deep (checked without recursing further).
fn within_depth(v: &serde_json::Value, depth: usize) -> bool {
    match v {
        _ if depth > MAX_PAYLOAD_DEPTH => false,
        serde_json::Value::Array(items) => items.iter().all(|i| within_depth(i, depth + 1)),
        serde_json::Value::Object(fields) => fields.values().all(|i| within_depth(i, depth + 1)),
        _ => true,
    }
}

/// A payload number as rules see it: as its RFC 8785 canonical form reads back, which is
/// what is hashed, approved and replayed. `1000`, `1000.0` and `1e3` are one payload (one
/// hash), so they are one number to a rule: the integer 1000. A value with a fraction, or
/// beyond the integers, stays a double. Both evaluators (the interpreter's conversion
/// below and the direct path's `fast::from_json`) take numbers from here.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Int(i64),
    UInt(u64),
    Double(f64),
}

fn canonical_number(n: &serde_json::Number) -> Num {
    if let Some(i) = n.as_i64() {
        return Num::Int(i);
    }
    if let Some(u) = n.as_u64() {
        return Num::UInt(u);
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    // RFC 8785 writes an integral double below 1e21 as integer digits — the shortest that
    // read back as the double, so above 2^53 not its exact value (1.152921504606847e18 is
    // written 1152921504606847000) — which read back as an integer when one holds it.
    if f.fract() == 0.0 && f.abs() < 1e21 {
        let digits = crate::canonical::format_number(f);
        if let Ok(i) = digits.parse::<i64>() {
            return Num::Int(i);
        }
        if let Ok(u) = digits.parse::<u64>() {
            return Num::UInt(u);
        }
    }
    Num::Double(f)
}

/// serde_json → CEL, borrowing strings. `None` when the value nests deeper than
/// [`MAX_PAYLOAD_DEPTH`] (which also bounds this recursion).
fn json_to_cel(v: &serde_json::Value, depth: usize) -> Option<Box<dyn Val + '_>> {
    use serde_json::Value as J;
    if depth > MAX_PAYLOAD_DEPTH {
        return None;
    }
    Some(match v {
        J::Null => Box::new(CelNull),
        J::Bool(b) => Box::new(CelBool::from(*b)),
        J::Number(n) => match canonical_number(n) {
            Num::Int(i) => Box::new(CelInt::from(i)),
            Num::UInt(u) => Box::new(CelUInt::from(u)),
            Num::Double(f) => Box::new(CelDouble::from(f)),
        },
        J::String(s) => Box::new(CelString::from(s.as_str())),
        J::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                list.push(json_to_cel(item, depth + 1)?);
            }
            Box::new(CelList::from(list))
        }
        J::Object(fields) => {
            let mut map = HashMap::with_capacity(fields.len());
            for (k, item) in fields {
                map.insert(CelMapKey::from(k.as_str()), json_to_cel(item, depth + 1)?);
            }
            Box::new(CelMap::from(map))
        }
    })
}

fn string_map<'a>(entries: [(&'static str, &'a str); 3]) -> Box<dyn Val + 'a> {
    let map: HashMap<CelMapKey<'a>, Box<dyn Val + 'a>> =
        entries.into_iter().map(|(k, v)| (CelMapKey::from(k), Box::new(CelString::from(v)) as Box<dyn Val + 'a>)).collect();
    Box::new(CelMap::from(map))
}

/// Binds the seven names. `payload` is the converted payload, or `None` when it could not
/// be converted (rules that read it then fail) or no rule reads it.
fn bind_facts<'a>(ctx: &mut Context<'_, 'a>, facts: &Facts<'a>, payload: Option<Box<dyn Val + 'a>>) {
    ctx.add_variable_as_val("tool", Box::new(CelString::from(facts.tool)));
    ctx.add_variable_as_val("payload", payload.unwrap_or_else(|| Box::new(CelNull)));
    ctx.add_variable_as_val(
        "resource",
        match facts.resource {
            Some(r) => Box::new(CelString::from(r)),
            None => Box::new(CelNull),
        },
    );
    ctx.add_variable_as_val(
        "agent",
        match facts.agent {
            Some(a) => string_map([("id", a.id), ("name", a.name), ("owner", a.owner)]),
            None => Box::new(CelNull),
        },
    );
    let r = facts.requester;
    ctx.add_variable_as_val("requester", string_map([("id", r.id), ("email", r.email), ("role", r.role)]));
    ctx.add_variable_as_val(
        "confidence",
        match facts.confidence {
            Some(c) => Box::new(CelDouble::from(c)),
            None => Box::new(CelNull),
        },
    );
    ctx.add_variable_as_val("now", Box::new(CelTimestamp::from(facts.now.fixed_offset())));
}

/// Why a rule could not be evaluated, for the trace: short, and never a whole payload.
fn describe(err: &ExecutionError) -> String {
    let text = match err {
        ExecutionError::NoSuchKey(key) => format!("no field `{key}` in this action"),
        ExecutionError::UndeclaredReference(name) => format!("unknown name `{name}`"),
        ExecutionError::DivisionByZero(_) => "division by zero".to_owned(),
        ExecutionError::RemainderByZero(_) => "remainder by zero".to_owned(),
        other => other.to_string(),
    };
    truncate(&text, MAX_REASON_CHARS)
}

impl Compiled {
    /// The published version these rules are, if any (a draft has none).
    pub fn version(&self) -> Option<i64> {
        self.inner.version
    }

    pub fn rules(&self) -> &[Rule] {
        &self.inner.rules
    }

    pub fn is_empty(&self) -> bool {
        self.inner.rules.is_empty()
    }

    /// Every rule that matched is cited. A rule that fails at evaluation time (missing
    /// field, type error, non-boolean result): with `on_error = fail_closed` it is cited
    /// with effect `max(its effect, require_approval)` and `error: Some(why)`; with
    /// `no_match` it is not cited. Never panics.
    pub fn evaluate(&self, facts: &Facts) -> ConstitutionVerdict {
        self.evaluate_with(facts, true)
    }

    /// `fast_path: false` runs every rule on the interpreter; tests compare the two.
    fn evaluate_with(&self, facts: &Facts, fast_path: bool) -> ConstitutionVerdict {
        let inner = &*self.inner;
        let mut verdict = ConstitutionVerdict { version: inner.version, citations: Vec::new() };
        if inner.programs.is_empty() {
            return verdict;
        }
        let too_deep = inner.reads_payload && !within_depth(facts.payload, 0);
        let direct = fast::Facts::new(facts);
        // The interpreter's context is built (and the payload converted) once, the first
        // time a rule needs it, and then shared by the remaining rules.
        let mut interpreter: Option<Context> = None;

        for (rule, program) in inner.rules.iter().zip(&inner.programs) {
            if fast_path && program.only_tool.as_deref().is_some_and(|t| t != facts.tool) {
                continue;
            }
            let outcome = if too_deep && program.reads_payload {
                Err(format!("the payload nests deeper than {MAX_PAYLOAD_DEPTH} levels"))
            } else {
                catch_unwind(AssertUnwindSafe(|| {
                    if fast_path && let Some(matched) = fast::eval_rule(&program.expr, &direct) {
                        return Ok(matched);
                    }
                    let ctx = interpreter.get_or_insert_with(|| {
                        let mut ctx = Context::with_env(Arc::clone(&inner.env));
                        let payload = if inner.reads_payload && !too_deep { json_to_cel(facts.payload, 0) } else { None };
                        bind_facts(&mut ctx, facts, payload);
                        ctx
                    });
                    match Value::resolve_val(&program.expr, ctx) {
                        Ok(v) => match v.downcast_ref::<CelBool>() {
                            Some(b) => Ok(*b.inner()),
                            None => Err(format!("the rule yielded a value of type `{}`, not a boolean", v.get_type().name())),
                        },
                        Err(e) => Err(describe(&e)),
                    }
                }))
                .unwrap_or_else(|_| Err("the rule could not be evaluated (internal error)".to_owned()))
            };
            match (outcome, rule.on_error) {
                (Ok(true), _) => verdict.citations.push(Citation {
                    rule_id: rule.id.clone(),
                    title: rule.title.clone(),
                    effect: rule.effect,
                    error: None,
                }),
                (Ok(false), _) | (Err(_), OnError::NoMatch) => {}
                (Err(why), OnError::FailClosed) => verdict.citations.push(Citation {
                    rule_id: rule.id.clone(),
                    title: rule.title.clone(),
                    effect: rule.effect.max(Effect::RequireApproval),
                    error: Some(format!("could not be evaluated, so it fails closed: {why}")),
                }),
            }
        }
        verdict
    }
}

/// The direct path: the common shapes of rules evaluated straight on the JSON and the
/// facts, without converting the payload or going through the interpreter, which spends
/// most of a simple rule's time allocating (about 0.3 to 1 µs a rule, 0.7 µs per element
/// of a comprehension, against tens of nanoseconds here).
///
/// It answers only when every step it took is one it mirrors exactly: literals, the seven
/// names, field access and `has()` on maps, indexing, `==` and `!=` (CEL's heterogeneous
/// equality: different kinds are unequal, numbers compare by value), `<` `<=` `>` `>=` on
/// numbers (with the interpreter's int/uint/double rules) and strings, `in` on lists and
/// maps, int/uint/double arithmetic (overflow gives up), `&&` `||` `!` `? :`, `size`,
/// `startsWith`, `endsWith`, `contains`, `matches`, `dyn`, `getHours`, `getMinutes`,
/// `getDayOfWeek` without a time zone, and comprehensions over lists that do not build
/// lists (`all`, `exists`, `exists_one`). On anything else, any error or any value of an
/// unexpected type, it gives up (`None`) and the rule goes to the interpreter, which then
/// decides, errors included. So when it answers, it answers what the interpreter would:
/// `the_direct_path_agrees_with_the_interpreter` checks that on random payloads.
mod fast {
    use super::{IdedExpr, LiteralValue, MAX_PAYLOAD_DEPTH, regex_is_match};
    use cel::common::ast::Expr;
    use chrono::{Datelike, Timelike};
    use serde_json::Value as J;
    use std::cmp::Ordering;

    #[derive(Clone, Debug)]
    enum F<'e> {
        Null,
        Bool(bool),
        Int(i64),
        UInt(u64),
        Double(f64),
        Str(&'e str),
        /// A list or object of the payload (scalars are unpacked).
        Json(&'e J),
        /// A list literal.
        List(Vec<F<'e>>),
        /// `agent` or `requester`: string fields.
        Fields(&'e [(&'static str, &'e str); 3]),
        Time(chrono::DateTime<chrono::FixedOffset>),
    }

    fn from_json(v: &J) -> F<'_> {
        match v {
            J::Null => F::Null,
            J::Bool(b) => F::Bool(*b),
            J::Number(n) => match super::canonical_number(n) {
                super::Num::Int(i) => F::Int(i),
                super::Num::UInt(u) => F::UInt(u),
                super::Num::Double(f) => F::Double(f),
            },
            J::String(s) => F::Str(s),
            J::Array(_) | J::Object(_) => F::Json(v),
        }
    }

    /// The facts, laid out for the direct path.
    pub(super) struct Facts<'a> {
        tool: &'a str,
        payload: &'a J,
        resource: Option<&'a str>,
        agent: Option<[(&'static str, &'a str); 3]>,
        requester: [(&'static str, &'a str); 3],
        confidence: Option<f64>,
        now: chrono::DateTime<chrono::FixedOffset>,
    }

    impl<'a> Facts<'a> {
        pub(super) fn new(f: &super::Facts<'a>) -> Self {
            Facts {
                tool: f.tool,
                payload: f.payload,
                resource: f.resource,
                agent: f.agent.map(|a| [("id", a.id), ("name", a.name), ("owner", a.owner)]),
                requester: [("id", f.requester.id), ("email", f.requester.email), ("role", f.requester.role)],
                confidence: f.confidence,
                now: f.now.fixed_offset(),
            }
        }
    }

    /// `Some(matched)`, or `None` to leave the rule to the interpreter.
    pub(super) fn eval_rule(expr: &IdedExpr, facts: &Facts<'_>) -> Option<bool> {
        let mut vars = Vec::new();
        match eval(expr, facts, &mut vars)? {
            F::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn eval<'e>(e: &'e IdedExpr, facts: &'e Facts<'_>, vars: &mut Vec<(&'e str, F<'e>)>) -> Option<F<'e>> {
        Some(match &e.expr {
            Expr::Literal(lit) => match lit {
                LiteralValue::Boolean(b) => F::Bool(*b.inner()),
                LiteralValue::Int(i) => F::Int(*i.inner()),
                LiteralValue::UInt(u) => F::UInt(*u.inner()),
                LiteralValue::Double(d) => F::Double(*d.inner()),
                LiteralValue::String(s) => F::Str(s.inner()),
                LiteralValue::Null => F::Null,
                LiteralValue::Bytes(_) => return None,
            },
            Expr::Ident(name) => {
                if let Some((_, v)) = vars.iter().rev().find(|(n, _)| n == name) {
                    return Some(v.clone());
                }
                match name.as_str() {
                    "tool" => F::Str(facts.tool),
                    "payload" => from_json(facts.payload),
                    "resource" => facts.resource.map_or(F::Null, F::Str),
                    "agent" => facts.agent.as_ref().map_or(F::Null, F::Fields),
                    "requester" => F::Fields(&facts.requester),
                    "confidence" => facts.confidence.map_or(F::Null, F::Double),
                    "now" => F::Time(facts.now),
                    _ => return None,
                }
            }
            Expr::Select(select) => {
                let operand = eval(&select.operand, facts, vars)?;
                let field = select.field.as_str();
                match (operand, select.test) {
                    (F::Json(J::Object(map)), false) => from_json(map.get(field)?),
                    (F::Json(J::Object(map)), true) => F::Bool(map.contains_key(field)),
                    (F::Fields(fields), false) => F::Str(fields.iter().find(|(k, _)| *k == field)?.1),
                    (F::Fields(fields), true) => F::Bool(fields.iter().any(|(k, _)| *k == field)),
                    _ => return None,
                }
            }
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return None;
                }
                let mut items = Vec::with_capacity(list.elements.len());
                for el in &list.elements {
                    items.push(eval(el, facts, vars)?);
                }
                F::List(items)
            }
            Expr::Call(call) => return self::call(call, facts, vars),
            Expr::Comprehension(c) => {
                if c.iter_var2.is_some() {
                    return None;
                }
                let range = eval(&c.iter_range, facts, vars)?;
                let items = List::of(&range)?;
                let accu = eval(&c.accu_init, facts, vars)?;
                // Lists built element by element (`map`, `filter`) are left to the
                // interpreter, which appends in place.
                if matches!(accu, F::List(_)) {
                    return None;
                }
                let base = vars.len();
                vars.push((c.accu_var.as_str(), accu));
                vars.push((c.iter_var.as_str(), F::Null));
                for i in 0..items.len() {
                    match eval(&c.loop_cond, facts, vars)? {
                        F::Bool(true) => {}
                        F::Bool(false) => break,
                        _ => return None,
                    }
                    vars[base + 1].1 = items.get(i)?;
                    vars[base].1 = eval(&c.loop_step, facts, vars)?;
                }
                // The result sees the accumulator, not the element.
                vars.truncate(base + 1);
                let result = eval(&c.result, facts, vars)?;
                vars.truncate(base);
                result
            }
            Expr::Map(_) | Expr::Struct(_) | Expr::Unspecified => return None,
        })
    }

    fn call<'e>(call: &'e cel::common::ast::CallExpr, facts: &'e Facts<'_>, vars: &mut Vec<(&'e str, F<'e>)>) -> Option<F<'e>> {
        let args = &call.args;
        let name = call.func_name.as_str();
        // Short-circuits first: they must not evaluate what they skip.
        match (name, args.as_slice()) {
            ("_&&_", [a, b]) => {
                return match eval(a, facts, vars)? {
                    F::Bool(false) => Some(F::Bool(false)),
                    F::Bool(true) => match eval(b, facts, vars)? {
                        F::Bool(r) => Some(F::Bool(r)),
                        _ => None,
                    },
                    _ => None,
                };
            }
            ("_||_", [a, b]) => {
                return match eval(a, facts, vars)? {
                    F::Bool(true) => Some(F::Bool(true)),
                    F::Bool(false) => match eval(b, facts, vars)? {
                        F::Bool(r) => Some(F::Bool(r)),
                        _ => None,
                    },
                    _ => None,
                };
            }
            ("_?_:_", [c, a, b]) => {
                return match eval(c, facts, vars)? {
                    F::Bool(true) => eval(a, facts, vars),
                    F::Bool(false) => eval(b, facts, vars),
                    _ => None,
                };
            }
            _ => {}
        }
        let target = match &call.target {
            Some(t) => Some(eval(t, facts, vars)?),
            None => None,
        };
        // No allocation: calls take at most three arguments.
        if args.len() > 3 {
            return None;
        }
        let mut buffer = [F::Null, F::Null, F::Null];
        for (slot, a) in buffer.iter_mut().zip(args) {
            *slot = eval(a, facts, vars)?;
        }
        Some(match (name, target, &buffer[..args.len()]) {
            ("!_", None, [F::Bool(b)]) => F::Bool(!b),
            ("@not_strictly_false", None, [F::Bool(b)]) => F::Bool(*b),
            ("_==_", None, [a, b]) => F::Bool(equals(a, b)?),
            ("_!=_", None, [a, b]) => F::Bool(!equals(a, b)?),
            ("_<_", None, [a, b]) => F::Bool(compare(a, b)? == Ordering::Less),
            ("_<=_", None, [a, b]) => F::Bool(compare(a, b)? != Ordering::Greater),
            ("_>_", None, [a, b]) => F::Bool(compare(a, b)? == Ordering::Greater),
            ("_>=_", None, [a, b]) => F::Bool(compare(a, b)? != Ordering::Less),
            ("@in", None, [needle, haystack]) => F::Bool(contains(haystack, needle)?),
            ("_[_]", None, [container, index]) => self::index(container, index)?,
            ("_+_" | "_-_" | "_*_" | "_/_" | "_%_", None, [a, b]) => arithmetic(name, a, b)?,
            ("-_", None, [F::Int(i)]) => F::Int(i.checked_neg()?),
            ("-_", None, [F::Double(d)]) => F::Double(-d),
            ("size", None, [v]) => F::Int(size(v)?),
            ("size", Some(v), []) => F::Int(size(&v)?),
            ("startsWith", Some(F::Str(s)), [F::Str(p)]) => F::Bool(s.starts_with(p)),
            ("endsWith", Some(F::Str(s)), [F::Str(p)]) => F::Bool(s.ends_with(p)),
            ("contains", Some(F::Str(s)), [F::Str(p)]) => F::Bool(s.contains(p)),
            (super::MATCHES, Some(F::Str(s)), [F::Str(p)]) => F::Bool(regex_is_match(s, p).ok()?),
            (super::MATCHES, None, [F::Str(s), F::Str(p)]) => F::Bool(regex_is_match(s, p).ok()?),
            ("dyn", None, [v]) => v.clone(),
            ("getHours", Some(F::Time(t)), []) => F::Int(i64::from(t.hour())),
            ("getMinutes", Some(F::Time(t)), []) => F::Int(i64::from(t.minute())),
            ("getDayOfWeek", Some(F::Time(t)), []) => F::Int(i64::from(t.weekday().num_days_from_sunday())),
            _ => return None,
        })
    }

    /// CEL's `==`: values of different kinds are unequal, numbers compare by value (as the
    /// interpreter's `compare`, NaN equal to nothing), lists element-wise, maps by key.
    /// `None` for kinds it does not mirror (timestamps, the facts maps against a map).
    fn equals(a: &F<'_>, b: &F<'_>) -> Option<bool> {
        Some(match (a, b) {
            (F::Time(_), _) | (_, F::Time(_)) => return None,
            (F::Null, F::Null) => true,
            (F::Null, _) | (_, F::Null) => false,
            (F::Bool(x), F::Bool(y)) => x == y,
            (F::Str(x), F::Str(y)) => x == y,
            (F::Int(_) | F::UInt(_) | F::Double(_), F::Int(_) | F::UInt(_) | F::Double(_)) => compare(a, b) == Some(Ordering::Equal),
            (F::Fields(_), _) | (_, F::Fields(_)) => return None,
            (F::Json(J::Object(x)), F::Json(J::Object(y))) => {
                if x.len() != y.len() {
                    return Some(false);
                }
                for (k, v) in x {
                    let Some(w) = y.get(k) else { return Some(false) };
                    if !equals(&from_json(v), &from_json(w))? {
                        return Some(false);
                    }
                }
                true
            }
            (F::Json(J::Object(_)), _) | (_, F::Json(J::Object(_))) => false,
            (x, y) => match (List::of(x), List::of(y)) {
                (Some(xs), Some(ys)) => {
                    if xs.len() != ys.len() {
                        return Some(false);
                    }
                    for i in 0..xs.len() {
                        if !equals(&xs.get(i)?, &ys.get(i)?)? {
                            return Some(false);
                        }
                    }
                    true
                }
                // A list against a scalar, or scalars of different kinds.
                _ => false,
            },
        })
    }

    /// A list of the payload or a list literal, read in place.
    #[derive(Clone, Copy)]
    enum List<'l, 'e> {
        Json(&'e [J]),
        Literal(&'l [F<'e>]),
    }

    impl<'l, 'e> List<'l, 'e> {
        fn of(v: &'l F<'e>) -> Option<Self> {
            match v {
                F::Json(J::Array(items)) => Some(List::Json(items)),
                F::List(items) => Some(List::Literal(items)),
                _ => None,
            }
        }

        fn len(self) -> usize {
            match self {
                List::Json(items) => items.len(),
                List::Literal(items) => items.len(),
            }
        }

        fn get(self, i: usize) -> Option<F<'e>> {
            match self {
                List::Json(items) => items.get(i).map(from_json),
                List::Literal(items) => items.get(i).cloned(),
            }
        }
    }

    /// The interpreter's ordering: ints and uints exactly, against a double as `as f64`;
    /// NaN is not comparable; strings by bytes. `None` for anything else.
    fn compare(a: &F<'_>, b: &F<'_>) -> Option<Ordering> {
        match (a, b) {
            (F::Int(x), F::Int(y)) => Some(x.cmp(y)),
            (F::UInt(x), F::UInt(y)) => Some(x.cmp(y)),
            (F::Int(x), F::UInt(y)) => Some(u64::try_from(*x).map_or(Ordering::Less, |x| x.cmp(y))),
            (F::UInt(x), F::Int(y)) => Some(i64::try_from(*x).map_or(Ordering::Greater, |x| x.cmp(y))),
            (F::Int(x), F::Double(y)) => (*x as f64).partial_cmp(y),
            (F::UInt(x), F::Double(y)) => (*x as f64).partial_cmp(y),
            (F::Double(x), F::Int(y)) => x.partial_cmp(&(*y as f64)),
            (F::Double(x), F::UInt(y)) => x.partial_cmp(&(*y as f64)),
            (F::Double(x), F::Double(y)) => x.partial_cmp(y),
            (F::Str(x), F::Str(y)) => Some(x.cmp(y)),
            _ => None,
        }
    }

    fn contains(haystack: &F<'_>, needle: &F<'_>) -> Option<bool> {
        match (haystack, needle) {
            (F::Json(J::Object(map)), F::Str(key)) => Some(map.contains_key(*key)),
            (F::Fields(fields), F::Str(key)) => Some(fields.iter().any(|(k, _)| k == key)),
            (F::Json(J::Object(_)) | F::Fields(_), _) => None,
            _ => {
                let items = List::of(haystack)?;
                for i in 0..items.len() {
                    if equals(&items.get(i)?, needle)? {
                        return Some(true);
                    }
                }
                Some(false)
            }
        }
    }

    fn index<'e>(container: &F<'e>, index: &F<'e>) -> Option<F<'e>> {
        let position = |i: &F<'_>| match i {
            F::Int(i) => usize::try_from(*i).ok(),
            F::UInt(u) => usize::try_from(*u).ok(),
            _ => None,
        };
        match (container, index) {
            (F::Json(J::Object(map)), F::Str(key)) => Some(from_json(map.get(*key)?)),
            (F::Fields(fields), F::Str(key)) => Some(F::Str(fields.iter().find(|(k, _)| k == key)?.1)),
            (F::Json(J::Array(items)), i) => Some(from_json(items.get(position(i)?)?)),
            (F::List(items), i) => items.get(position(i)?).cloned(),
            _ => None,
        }
    }

    fn arithmetic<'e>(op: &str, a: &F<'e>, b: &F<'e>) -> Option<F<'e>> {
        Some(match (a, b) {
            (F::Int(x), F::Int(y)) => F::Int(match op {
                "_+_" => x.checked_add(*y)?,
                "_-_" => x.checked_sub(*y)?,
                "_*_" => x.checked_mul(*y)?,
                "_/_" => x.checked_div(*y)?,
                _ => x.checked_rem(*y)?,
            }),
            (F::UInt(x), F::UInt(y)) => F::UInt(match op {
                "_+_" => x.checked_add(*y)?,
                "_-_" => x.checked_sub(*y)?,
                "_*_" => x.checked_mul(*y)?,
                "_/_" => x.checked_div(*y)?,
                _ => x.checked_rem(*y)?,
            }),
            (F::Double(x), F::Double(y)) => F::Double(match op {
                "_+_" => x + y,
                "_-_" => x - y,
                "_*_" => x * y,
                "_/_" => x / y,
                _ => return None,
            }),
            _ => return None,
        })
    }

    fn size(v: &F<'_>) -> Option<i64> {
        let n = match v {
            F::Str(s) => s.chars().count(),
            F::Json(J::Array(items)) => items.len(),
            F::Json(J::Object(fields)) => fields.len(),
            F::List(items) => items.len(),
            F::Fields(fields) => fields.len(),
            _ => return None,
        };
        i64::try_from(n).ok()
    }

    // The payload's depth is checked before this path runs (see `evaluate_with`), so the
    // recursion in `equals` over payload values is bounded as the interpreter's is.
    const _: () = assert!(MAX_PAYLOAD_DEPTH <= 128);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{self, Decision, Input, Outcome, Policy, ToolKind, ToolRules};
    use proptest::prelude::*;
    use serde_json::json;

    fn rule(id: &str, when: &str, effect: Effect) -> Rule {
        Rule {
            id: id.into(),
            title: format!("Rule {id}"),
            description: String::new(),
            when: when.into(),
            effect,
            on_error: OnError::FailClosed,
        }
    }

    fn facts(payload: &serde_json::Value) -> Facts<'_> {
        Facts {
            tool: "payments.charge",
            payload,
            resource: Some("invoice:42"),
            agent: Some(AgentFacts { id: "tok_1", name: "billing", owner: "usr_1" }),
            requester: RequesterFacts { id: "usr_1", email: "ops@example.com", role: "member" },
            confidence: Some(0.4),
            now: "2024-05-01T23:30:00Z".parse().unwrap(),
        }
    }

    fn compiled(rules: &[Rule]) -> Compiled {
        match compile(rules, Some(7)) {
            Ok(c) => c,
            Err(errors) => panic!("{errors:#?}"),
        }
    }

    /// Whether a single rule `when` matches `payload` (with the default facts).
    fn matches_payload(when: &str, payload: &serde_json::Value) -> bool {
        let verdict = compiled(&[rule("r1", when, Effect::Deny)]).evaluate(&facts(payload));
        if let Some(c) = verdict.citations.first() {
            assert_eq!(c.error, None, "`{when}` failed on {payload}");
        }
        !verdict.citations.is_empty()
    }

    fn errors_of(rules: &[Rule]) -> Vec<RuleError> {
        match compile(rules, None) {
            Ok(_) => panic!("expected errors for {rules:#?}"),
            Err(errors) => errors,
        }
    }

    /// The only error of a single rule `when`.
    fn error_of(when: &str) -> RuleError {
        let mut errors = errors_of(&[rule("big-payments", when, Effect::Deny)]);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.remove(0)
    }

    fn decide(c: &gate::ConstitutionVerdict, policy: Policy) -> Decision {
        let tool = ToolRules { name: "payments.charge".into(), kind: ToolKind::Write, irreversible: false, policy, min_confidence: None };
        gate::decide(&Input {
            principal: "tok_1",
            is_agent: true,
            in_scope: true,
            workspace_switch: None,
            tool_switch: None,
            agent_writes_enabled: true,
            tool: &tool,
            confidence: Some(0.9),
            constitution: c,
        })
    }

    #[test]
    fn numbers_are_what_their_canonical_form_reads_back_as() {
        // One payload, one hash, one decision: however the client wrote the number.
        let rules = [rule("thirds", "payload.amount / 3 == 333 && type(payload.amount) == int", Effect::Deny)];
        let c = compiled(&rules);
        for text in ["1000", "1000.0", "1e3", "1.0e3", "10000e-1"] {
            let payload: serde_json::Value = serde_json::from_str(&format!("{{\"amount\": {text}}}")).unwrap();
            assert_eq!(crate::canonical::pin(&payload).unwrap().canonical, r#"{"amount":1000}"#);
            for fast_path in [true, false] {
                let v = c.evaluate_with(&facts(&payload), fast_path);
                assert_eq!(v.citations.len(), 1, "{text} (fast path {fast_path}): {v:?}");
                assert_eq!(v.citations[0].error, None, "{text}");
            }
        }
        // A fraction stays a double; so does an integral value beyond the integers.
        assert!(matches_payload("type(payload.x) == double", &json!({"x": 2.5})));
        assert!(matches_payload("type(payload.x) == double", &json!({"x": 1e20 * 1000.0})));
        assert!(matches_payload("type(payload.x) == uint", &json!({"x": 1.5e19})));
        assert!(matches_payload("type(payload.x) == int", &json!({"x": -0.0})));
        // Above 2^53, the value its canonical digits say, which is what what-if replays.
        let big: serde_json::Value = serde_json::from_str(r#"{"x": 1.152921504606847e18}"#).unwrap();
        assert_eq!(crate::canonical::pin(&big).unwrap().canonical, r#"{"x":1152921504606847000}"#);
        assert!(matches_payload("payload.x == 1152921504606847000", &big));
    }

    #[test]
    fn compiled_is_send_sync_and_clone() {
        fn assert<T: Send + Sync + Clone + 'static>() {}
        assert::<Compiled>();
    }

    #[test]
    fn each_effect_is_cited_when_its_rule_matches() {
        let payload = json!({"amount": 5000});
        for effect in [Effect::Allow, Effect::RequireApproval, Effect::RequireDual, Effect::Deny] {
            let c = compiled(&[rule("big", "payload.amount > 1000", effect), rule("small", "payload.amount < 10", Effect::Deny)]);
            let v = c.evaluate(&facts(&payload));
            assert_eq!(v.version, Some(7));
            assert_eq!(v.citations, vec![Citation { rule_id: "big".into(), title: "Rule big".into(), effect, error: None }]);
            assert_eq!(v.strongest(), Some(effect));
        }
        let d = decide(&compiled(&[rule("big", "payload.amount > 1000", Effect::Deny)]).evaluate(&facts(&payload)), Policy::Auto);
        assert!(matches!(d.outcome, Outcome::Denied { ref code, .. } if code == "constitution_denied"));
        let d = decide(&compiled(&[rule("big", "payload.amount > 1000", Effect::RequireDual)]).evaluate(&facts(&payload)), Policy::Auto);
        assert_eq!(d.outcome, Outcome::NeedsApproval { required: 2 });
        let d =
            decide(&compiled(&[rule("big", "payload.amount > 1000", Effect::RequireApproval)]).evaluate(&facts(&payload)), Policy::Auto);
        assert_eq!(d.outcome, Outcome::NeedsApproval { required: 1 });
        let d = decide(&compiled(&[rule("big", "payload.amount > 1000", Effect::Allow)]).evaluate(&facts(&payload)), Policy::Approve);
        assert_eq!(d.outcome, Outcome::Execute);
        assert_eq!(d.constitution_version, Some(7));
        assert_eq!(d.citations[0].rule_id, "big");
    }

    #[test]
    fn the_most_restrictive_matching_rule_wins_and_every_match_is_cited() {
        let c = compiled(&[
            rule("trusted-agent", "agent != null && agent.name == 'billing'", Effect::Allow),
            rule("big", "payload.amount > 1000", Effect::RequireApproval),
            rule("huge", "payload.amount > 4000", Effect::RequireDual),
            rule("never", "payload.amount > 1000000", Effect::Deny),
        ]);
        let payload = json!({"amount": 5000});
        let v = c.evaluate(&facts(&payload));
        let ids: Vec<&str> = v.citations.iter().map(|c| c.rule_id.as_str()).collect();
        assert_eq!(ids, ["trusted-agent", "big", "huge"]);
        assert_eq!(v.strongest(), Some(Effect::RequireDual));
        assert_eq!(decide(&v, Policy::Auto).outcome, Outcome::NeedsApproval { required: 2 });

        let payload = json!({"amount": 2_000_000});
        let v = c.evaluate(&facts(&payload));
        assert_eq!(v.strongest(), Some(Effect::Deny));
        assert!(matches!(decide(&v, Policy::Auto).outcome, Outcome::Denied { .. }));

        let payload = json!({"amount": 5});
        let v = c.evaluate(&facts(&payload));
        assert_eq!(v.strongest(), Some(Effect::Allow));
        assert_eq!(decide(&v, Policy::Approve).outcome, Outcome::Execute, "allow lifts `approve`");
    }

    #[test]
    fn an_empty_constitution_cites_nothing() {
        let c = compile(&[], Some(3)).unwrap();
        assert!(c.is_empty());
        assert_eq!(c.version(), Some(3));
        let payload = json!({});
        assert_eq!(c.evaluate(&facts(&payload)), ConstitutionVerdict { version: Some(3), citations: vec![] });
    }

    #[test]
    fn the_examples_from_the_issue_work() {
        let email = json!({
            "to": ["a@example.com", "spy@competitor.com"],
            "cc": ["boss@example.com"],
            "subject": "Q3", "body": "Hello",
            "amount": 5000,
            "items": [{"price": 50}, {"price": 150.5}],
        });
        let tame = json!({"to": ["a@example.com"], "amount": 1, "items": [{"price": 5}]});
        for when in [
            "payload.amount > 1000",
            "payload.amount + 1 > 2",
            "payload.to.exists(r, r.endsWith('@competitor.com'))",
            "payload.items.exists(x, x.price > 100)",
            "has(payload.cc)",
            "size(payload.to) > 1",
        ] {
            assert!(matches_payload(when, &email), "{when} should match");
            assert!(!matches_payload(when, &tame), "{when} should not match");
        }
        let any = json!({});
        for when in [
            "tool.startsWith('payments.')",
            "confidence != null && confidence < 0.5",
            "now.getHours() >= 22",
            "now.getHours('Asia/Tokyo') == 8",
            "agent != null && agent.name == 'billing'",
            "requester.role == 'member'",
            "resource == 'invoice:42'",
            "type(tool) == string",
            "now > timestamp('2024-01-01T00:00:00Z') && now - timestamp('2024-05-01T00:00:00Z') > duration('23h')",
            "tool.matches('^payments\\\\.[a-z]+$') && matches(tool, 'charge')",
        ] {
            assert!(matches_payload(when, &any), "{when} should match");
        }
        // A person submitting: agent and confidence are null, and the rules still evaluate.
        let mut person = facts(&any);
        person.agent = None;
        person.confidence = None;
        person.resource = None;
        let c = compiled(&[
            rule("a1", "agent != null && agent.name == 'billing'", Effect::Deny),
            rule("c1", "confidence != null && confidence < 0.5", Effect::Deny),
            rule("p1", "agent == null && resource == null", Effect::RequireApproval),
        ]);
        let v = c.evaluate(&person);
        assert_eq!(v.citations.len(), 1, "{v:?}");
        assert_eq!(v.citations[0].rule_id, "p1");
        assert_eq!(v.citations[0].error, None);
    }

    #[test]
    fn json_numbers_become_ints_uints_and_doubles() {
        assert!(matches_payload("payload.n + 1 == 42 && type(payload.n) == int", &json!({"n": 41})));
        assert!(matches_payload("payload.n * 2 == -84", &json!({"n": -42})));
        assert!(matches_payload("payload.f + 0.5 == 2.0 && type(payload.f) == double", &json!({"f": 1.5})));
        assert!(matches_payload("payload.f > 1000", &json!({"f": 1000.5})));
        // Beyond i64: an exact uint, comparable with ints.
        let big = json!({"n": u64::MAX});
        assert!(matches_payload("type(payload.n) == uint && payload.n > 1000 && payload.n == 18446744073709551615u", &big));
        let v = compiled(&[rule("r1", "payload.n + 1 > 0", Effect::Allow)]).evaluate(&facts(&big));
        assert!(v.citations[0].error.is_some(), "uint + int fails closed: {v:?}");
        assert!(matches_payload(
            "payload.s == 'x' && payload.b && payload.z == null && payload.o.k[1] == 2 && size(payload.o) == 1",
            &json!({"s": "x", "b": true, "z": null, "o": {"k": [1, 2]}})
        ));
        // A payload need not be an object.
        assert!(matches_payload("payload[0] == 'a'", &json!(["a"])));
    }

    #[test]
    fn runtime_errors_fail_closed_and_say_which_rule_and_why() {
        let payload = json!({"amount": 5000, "flag": 3});
        let c = compiled(&[
            rule("missing", "payload.nope > 1", Effect::Allow),
            rule("typed", "payload.amount > 'x'", Effect::Deny),
            rule("not-bool", "payload.flag", Effect::RequireDual),
            rule("fine", "payload.amount > 1", Effect::Allow),
        ]);
        let v = c.evaluate(&facts(&payload));
        assert_eq!(v.citations.len(), 4, "{v:#?}");
        let missing = &v.citations[0];
        assert_eq!(
            (missing.rule_id.as_str(), missing.effect),
            ("missing", Effect::RequireApproval),
            "an allow rule that fails needs approval"
        );
        let why = missing.error.as_deref().unwrap();
        assert!(why.contains("fails closed") && why.contains("`nope`"), "{why}");
        let typed = &v.citations[1];
        assert_eq!(typed.effect, Effect::Deny, "a failing deny rule still denies");
        assert!(typed.error.as_deref().unwrap().contains("_>_"), "{typed:?}");
        let not_bool = &v.citations[2];
        assert_eq!(not_bool.effect, Effect::RequireDual);
        assert!(not_bool.error.as_deref().unwrap().contains("not a boolean"), "{not_bool:?}");
        assert_eq!(v.citations[3], Citation { rule_id: "fine".into(), title: "Rule fine".into(), effect: Effect::Allow, error: None });
        // The pipeline sees at least an approval.
        assert_eq!(
            decide(&compiled(&c.rules()[..1]).evaluate(&facts(&payload)), Policy::Auto).outcome,
            Outcome::NeedsApproval { required: 1 }
        );
    }

    #[test]
    fn on_error_no_match_is_not_cited() {
        let mut r = rule("missing", "payload.nope > 1", Effect::Deny);
        r.on_error = OnError::NoMatch;
        let payload = json!({"amount": 1});
        let v = compiled(&[r.clone()]).evaluate(&facts(&payload));
        assert!(v.citations.is_empty(), "{v:?}");
        // …but it still matches when it can be evaluated.
        let payload = json!({"nope": 2});
        assert_eq!(compiled(&[r]).evaluate(&facts(&payload)).strongest(), Some(Effect::Deny));
    }

    #[test]
    fn rules_deserialize_with_defaults_and_refuse_unknown_fields() {
        let r: Rule = serde_json::from_value(json!({"id": "r1", "title": "T", "when": "true", "effect": "require_dual"})).unwrap();
        assert_eq!((r.on_error, r.description.as_str(), r.effect), (OnError::FailClosed, "", Effect::RequireDual));
        let r: Rule =
            serde_json::from_value(json!({"id": "r1", "title": "T", "when": "true", "effect": "deny", "on_error": "no_match"})).unwrap();
        assert_eq!(r.on_error, OnError::NoMatch);
        assert!(serde_json::from_value::<Rule>(json!({"id": "r1", "title": "T", "when": "true", "effect": "deny", "extra": 1})).is_err());
        assert_eq!(serde_json::to_value(OnError::NoMatch).unwrap(), json!("no_match"));
    }

    #[test]
    fn every_rule_level_problem_is_reported() {
        let mut long_title = rule("long-title", "true", Effect::Deny);
        long_title.title = "x".repeat(201);
        let mut blank_title = rule("blank-title", "true", Effect::Deny);
        blank_title.title = "  ".into();
        let mut bad_description = rule("bad-description", "true", Effect::Deny);
        bad_description.description = "ok\nbut \u{1b}[2J".into();
        let errors = errors_of(&[
            rule("Bad Id", "true", Effect::Deny),
            rule("x", "true", Effect::Deny),
            rule("dup", "true", Effect::Deny),
            rule("dup", "true", Effect::Deny),
            long_title,
            blank_title,
            bad_description,
            rule("too-long", &format!("tool == '{}'", "a".repeat(MAX_WHEN_BYTES)), Effect::Deny),
            rule("fine", "true", Effect::Deny),
        ]);
        let summary: Vec<(usize, &str)> = errors.iter().map(|e| (e.index, e.code)).collect();
        assert_eq!(
            summary,
            [
                (0, "invalid_rule_id"),
                (1, "invalid_rule_id"),
                (3, "duplicate_rule_id"),
                (4, "invalid_title"),
                (5, "invalid_title"),
                (6, "invalid_description"),
                (7, "expression_too_long"),
            ]
        );
        assert_eq!(errors[0].rule_id, "Bad Id");
        assert!(errors[0].message.starts_with("rule #1: the id \"Bad Id\""), "{}", errors[0].message);
        assert!(errors[2].message.starts_with("rule `dup`: "), "{}", errors[2].message);
        assert!(errors[6].message.contains("4106 bytes"), "{}", errors[6].message);
        assert!(errors.iter().all(|e| e.line.is_none() && e.column.is_none()));
    }

    #[test]
    fn syntax_errors_name_the_rule_and_the_position() {
        let e = error_of("payload.amount > ");
        assert_eq!((e.code, e.rule_id.as_str(), e.line, e.column), ("syntax_error", "big-payments", Some(1), Some(18)));
        assert!(e.message.starts_with("rule `big-payments`, line 1, column 18: syntax error: mismatched input '<EOF>'"), "{}", e.message);
        let e = error_of("tool == 'a' &&\n  (payload.x ||");
        assert_eq!((e.code, e.line, e.column), ("syntax_error", Some(2), Some(16)));
        let e = error_of("tool ~ 'a'");
        assert_eq!((e.code, e.line, e.column), ("syntax_error", Some(1), Some(6)));
        let e = error_of("payload.to.exists(1, true)");
        assert_eq!((e.code, e.line, e.column), ("syntax_error", Some(1), Some(19)));
        assert!(e.message.contains("simple name"), "{}", e.message);
        let e = error_of("");
        assert_eq!(e.code, "syntax_error");
        let e = error_of("tool.matches('[a-')");
        assert_eq!((e.code, e.line, e.column), ("syntax_error", Some(1), Some(14)));
        assert!(e.message.contains("invalid regular expression"), "{}", e.message);
    }

    #[test]
    fn a_time_zone_that_does_not_exist_is_refused_at_publish() {
        let e = error_of("now.getHours('Mars/Olympus') < 9");
        assert_eq!((e.code, e.line, e.column), ("invalid_time_zone", Some(1), Some(14)));
        assert!(e.message.contains(r#"`getHours` cannot read the time zone "Mars/Olympus" (unknown time zone)"#), "{}", e.message);
        let e = error_of("tool == 'x' &&\n  now.getDayOfWeek('+25:00') == 0");
        assert_eq!((e.code, e.line, e.column), ("invalid_time_zone", Some(2), Some(20)));
        assert!(e.message.contains(r#"the time zone "+25:00" (timezone offset hours out of range [-23, 23])"#), "{}", e.message);
        // Shown escaped: a literal cannot write control characters into the message.
        let e = error_of("now.getHours('Mars\\u001b[2J') < 9");
        assert!(e.message.contains(r#""Mars\u{1b}[2J""#), "{}", e.message);
        // A version already published compiles as it was accepted: an upgrade that added
        // this check must not stop every decision of a workspace that has such a rule.
        assert!(compile(&[rule("night", "now.getHours('Mars/Olympus') < 6", Effect::Deny)], Some(4)).is_ok());
        // Names and offsets that exist publish; a zone read from the payload is the
        // action's to get right, and fails closed for that action alone.
        for when in [
            "now.getHours('Europe/Paris') < 9",
            "now.getHours('-05:30') < 9",
            "now.getHours('') < 9",
            "now.getHours() < 9",
            "now.getHours(payload.zone) < 9",
        ] {
            let c = compile(&[rule("hours", when, Effect::Deny)], None);
            assert!(c.is_ok(), "{when}: {:?}", c.err());
        }
    }

    #[test]
    fn unknown_names_are_refused_at_their_position() {
        let e = error_of("payload.amount > 1 && paylod.amount > 1000");
        assert_eq!((e.code, e.line, e.column), ("unknown_name", Some(1), Some(23)));
        assert_eq!(
            e.message,
            "rule `big-payments`, line 1, column 23: unknown name `paylod`; the names are tool, payload, resource, agent, requester, confidence, now"
        );
        // Columns count characters, not bytes.
        let e = error_of("tool == 'é' ||\n  usr.role == 'x'");
        assert_eq!((e.line, e.column), (Some(2), Some(3)));
        let e = error_of("payload.to.contain('x')");
        assert_eq!((e.code, e.column), ("unknown_name", Some(12)));
        assert!(e.message.contains("unknown method `contain` with 1 argument"), "{}", e.message);
        let e = error_of("lower(tool) == 'x'");
        assert_eq!((e.code, e.column), ("unknown_name", Some(1)));
        let e = error_of("acme.Thing{x: 1} == tool");
        assert_eq!(e.code, "unknown_name");
        // Every unknown name is reported, each once.
        let errors = errors_of(&[rule("r1", "foo == 1 && bar == 2 && foo == 3", Effect::Deny)]);
        assert_eq!(errors.iter().map(|e| e.column).collect::<Vec<_>>(), [Some(1), Some(13)]);
        // Comprehension variables, type names and qualified functions are fine; a
        // comprehension variable is not visible outside its comprehension.
        compiled(&[rule("r1", "payload.to.exists(x, x == 'a') && type(tool) == string && optional.of(1).hasValue()", Effect::Deny)]);
        let e = error_of("payload.to.exists(x, x == 'a') && x == 'b'");
        assert_eq!((e.code, e.column), ("unknown_name", Some(35)));
    }

    #[test]
    fn expressions_that_cannot_be_boolean_are_refused() {
        for (when, column) in [
            ("payload.amount + 1", 16),
            ("'yes'", 1),
            ("[true]", 1),
            ("payload", 1),
            ("confidence", 1),
            ("agent.name", 6),
            ("size(payload.to)", 1),
            ("payload.to.map(x, x == 'a')", 12),
            ("has(payload.x) ? payload.x : 1", 30),
            ("now.getHours()", 5),
        ] {
            let e = error_of(when);
            assert_eq!((e.code, e.line, e.column), ("not_boolean", Some(1), Some(column)), "{when}: {}", e.message);
            assert!(e.message.starts_with("rule `big-payments`, line 1, "), "{}", e.message);
        }
        assert_eq!(
            error_of("payload.amount + 1").message,
            "rule `big-payments`, line 1, column 16: the expression yields the result of `+` (a number, string or list) here, not a boolean"
        );
        assert!(error_of("has(payload.x) ? payload.x : 1").message.ends_with("yields a number here, not a boolean"));
        // Statically unknown, but the trial evaluation shows the result is not a boolean.
        let e = error_of("[1, 2][0]");
        assert_eq!(e.code, "not_boolean");
        assert!(e.message.contains("yields a value of type `int`"), "{}", e.message);
        let e = error_of("requester['role']");
        assert_eq!(e.code, "not_boolean");
        // Depends on the payload: accepted, and fails closed at run time if not a boolean.
        compiled(&[rule("r1", "payload.flagged", Effect::Deny), rule("r2", "payload.x ? payload.y : false", Effect::Deny)]);
    }

    #[test]
    fn costly_rules_are_refused() {
        let cases: &[(&str, &str)] = &[
            // Scanning the payload once per element.
            ("payload.a.exists(x, x in payload.b)", "`payload` inside a comprehension"),
            ("payload.a.all(x, x != resource)", "`resource` inside a comprehension"),
            // The outer element, once per inner element.
            ("payload.a.exists(x, x.tags.exists(t, t in x.tags))", "belongs to an enclosing comprehension"),
            // Three deep.
            ("payload.a.exists(x, x.exists(y, y.exists(z, z)))", "nest more than 2 deep"),
            // A regex compiled on every evaluation.
            ("tool.matches(payload.pattern)", "string literal"),
            // Copies that multiply.
            ("payload.a.map(x, [x, x, x, x]).map(y, [y, y, y, y]).map(z, [z, z, z, z]).size() > 0", "reads or copies the payload"),
            // Copies that add up: forty copies of the payload, compared.
            (&format!("[{}] == []", vec!["payload"; 40].join(", ")), "reads or copies the payload"),
        ];
        for (when, needle) in cases {
            let errors = errors_of(&[rule("costly", when, Effect::Deny)]);
            assert!(errors.iter().all(|e| e.code == "too_costly"), "{when}: {errors:#?}");
            assert!(errors.iter().any(|e| e.message.contains(needle)), "{when}: {errors:#?}");
            assert!(errors[0].message.starts_with("rule `costly`"), "{}", errors[0].message);
        }
        let e = error_of("payload.a.exists(x, x in payload.b)");
        assert_eq!((e.line, e.column), (Some(1), Some(26)));
        // Too many nodes: a long chain of comparisons.
        let when = (0..130).map(|i| format!("tool == 't{i}'")).collect::<Vec<_>>().join(" || ");
        let e = error_of(&when);
        assert_eq!(e.code, "too_costly");
        assert!(e.message.contains("nodes"), "{}", e.message);
        // Too deep.
        let when = format!("{}1{} == 1", "(1 + ".repeat(60), ")".repeat(60));
        assert!(errors_of(&[rule("deep", &when, Effect::Deny)]).iter().any(|e| e.code == "too_costly" || e.code == "syntax_error"));
        // Realistic rules are well within the bounds.
        compiled(&[
            rule("r1", "payload.items.exists(i, i.tags.exists(t, t == 'urgent'))", Effect::Deny),
            rule("r2", "payload.to.exists(r, r.endsWith('@a.com') || r.endsWith('@b.com') || r in ['x@c.com', 'y@d.com'])", Effect::Deny),
            rule("r3", "payload.items.map(i, i.price).exists(p, p > 100)", Effect::Deny),
            rule("r4", "size(payload.to.filter(r, !r.endsWith('@example.com'))) > 3", Effect::Deny),
            rule("r5", "payload.amount > 1000 && payload.currency in ['EUR', 'USD'] && payload.body.contains('wire')", Effect::Deny),
            // Long chains of `||` are balanced by the parser, so they are not deep.
            rule("r6", &(0..60).map(|i| format!("tool == 't{i}'")).collect::<Vec<_>>().join(" || "), Effect::Deny),
            rule(
                "r7",
                &format!("payload.to.exists(r, {})", (0..30).map(|i| format!("r.endsWith('@d{i}.com')")).collect::<Vec<_>>().join(" || ")),
                Effect::Deny,
            ),
        ]);
    }

    #[test]
    fn adversarial_expressions_compile_or_fail_without_crashing() {
        // Each is at most MAX_WHEN_BYTES; none may overflow a stack or panic.
        let n = 1000;
        let shapes = [
            format!("1{} == 1", " + 1".repeat(n)),
            format!("{}true", "!".repeat(n * 2 + 1)),
            format!("{}1 == 1", "-".repeat(n * 2 + 1)),
            format!("{}true{}", "(".repeat(n), ")".repeat(n)),
            format!("{}1{} == 1", "[".repeat(n), "]".repeat(n)),
            format!("payload{} == 1", ".a".repeat(n)),
            format!("payload{} == 1", "[0]".repeat(n)),
            format!("{}1{} == 1", "size(".repeat(n / 4), ")".repeat(n / 4)),
            format!("{}false", "true ? false : ".repeat(n / 4)),
            format!("tool{}", " || tool == 'x'".repeat(n / 4)),
            format!("{}true{}", "payload.a.exists(x, ".repeat(n / 20), ")".repeat(n / 20)),
            "{".repeat(n),
        ];
        for when in shapes {
            let when = truncate(&when, MAX_WHEN_BYTES).replace('…', "");
            let _ = compile(&[rule("r1", &when, Effect::Deny)], None);
        }
    }

    #[test]
    fn deep_payloads_fail_closed_only_for_rules_that_read_the_payload() {
        let mut payload = json!(1);
        for _ in 0..200 {
            payload = json!([payload]);
        }
        let c = compiled(&[rule("reads", "size(payload) > 0", Effect::Allow), rule("tool", "tool == 'payments.charge'", Effect::Deny)]);
        let v = c.evaluate(&facts(&payload));
        assert_eq!(v.citations.len(), 2);
        assert!(v.citations[0].error.as_deref().unwrap().contains("deeper than 128"), "{v:?}");
        assert_eq!(v.citations[0].effect, Effect::RequireApproval);
        assert_eq!(v.citations[1].error, None);
    }

    #[test]
    fn runtime_error_messages_are_short_even_for_huge_payloads() {
        let payload = json!({"list": vec!["x".repeat(1000); 1000]});
        let v = compiled(&[rule("r1", "payload.list + 1 > 0", Effect::Deny)]).evaluate(&facts(&payload));
        let why = v.citations[0].error.as_deref().unwrap();
        assert!(why.chars().count() < 400, "{}", why.len());
    }

    #[test]
    fn matches_uses_literal_patterns_compiled_once() {
        let c = compiled(&[rule("card", r"payload.body.matches('\\d{4}-\\d{4}-\\d{4}-\\d{4}')", Effect::Deny)]);
        let hit = json!({"body": "card 1234-5678-9012-3456 please"});
        let miss = json!({"body": "nothing here"});
        for _ in 0..3 {
            assert_eq!(c.evaluate(&facts(&hit)).strongest(), Some(Effect::Deny));
            assert_eq!(c.evaluate(&facts(&miss)).strongest(), None);
        }
        // A non-string argument fails closed rather than panicking.
        let odd = json!({"body": 12});
        assert!(c.evaluate(&facts(&odd)).citations[0].error.is_some());
    }

    /// Any JSON at all, up to a modest size.
    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            "[a-z@.]{0,12}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::hash_map(
                    prop_oneof![Just("amount".to_string()), Just("to".to_string()), Just("items".to_string()), "[a-z]{1,6}"],
                    inner,
                    0..6
                )
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn fixed_rules() -> Compiled {
        let mut lenient = rule("lenient", "payload.amount * 2 > payload.limit", Effect::Deny);
        lenient.on_error = OnError::NoMatch;
        compiled(&[
            rule("big", "payload.amount > 1000", Effect::RequireApproval),
            rule("plus", "payload.amount + 1 > 2", Effect::Allow),
            rule("comp", "payload.to.exists(r, r.endsWith('@competitor.com'))", Effect::Deny),
            rule("items", "payload.items.exists(x, x.price > 100 || x.tags.exists(t, t == 'x'))", Effect::RequireDual),
            rule("has", "has(payload.cc) && size(payload.to) > 10", Effect::RequireApproval),
            rule("div", "payload.amount / payload.count > 3", Effect::RequireApproval),
            rule("map", "size(payload.items.map(i, i.price)) > 2", Effect::Allow),
            rule("index", "payload.to[1] == 'x' || payload['amount'] == 5", Effect::Allow),
            rule("str", "string(payload.amount).startsWith('1') && payload.to.all(r, r.matches('^[a-z]+@'))", Effect::Allow),
            lenient,
        ])
    }

    /// Rules exercising everything the direct path mirrors, and some it leaves alone.
    const DIFFERENTIAL: &[&str] = &[
        "payload.amount > 1000",
        "payload.amount >= 1000.5",
        "payload.amount < 1u",
        "payload.amount == 5",
        "payload.amount != 5.0",
        "payload.amount + 1 > 2",
        "payload.amount - 1 < 0",
        "payload.amount * 2 == payload.n",
        "payload.amount / 2 == 1",
        "payload.amount % 2 == 0",
        "-payload.amount < 0",
        "payload.n + 1u > 2u && payload.n * 2u > 1u",
        "payload.amount + 0.5 > 1.0 || payload.amount / 2.0 > 1.0",
        "payload.to.exists(r, r.endsWith('@x.com'))",
        "payload.to.all(r, r.startsWith('a'))",
        "payload.to.exists_one(r, r.contains('b'))",
        "payload.items.exists(x, x.price > 100)",
        "payload.items.all(x, has(x.price))",
        "payload.items.exists(x, x.tags.exists(t, t == 'x'))",
        "payload.items.map(i, i.price).exists(p, p > 100)",
        "size(payload.to.filter(r, r.endsWith('.com'))) > 0",
        "has(payload.cc)",
        "has(payload.cc) && size(payload.cc) > 1",
        "size(payload) > 2",
        "payload.name.size() == 3",
        "payload.name.matches('^[a-z]+$')",
        "matches(payload.name, 'a')",
        "'a' in payload.to",
        "5 in payload.to",
        "'amount' in payload",
        "payload.n in [1, 2, 3u, 2.5, 'x', null]",
        "payload.to == payload.cc",
        "payload == payload",
        "payload.items == [1, 2]",
        "payload.to == ['a', 'b']",
        "payload.o == {'a': 1}",
        "payload.to[0] == 'a'",
        "payload['amount'] > 1",
        "payload.to[1u] == null",
        "payload.amount == null",
        "payload.n == payload.amount",
        "payload.n == 1u || payload.n == 1.0",
        "payload.name < 'm'",
        "payload.amount > 'x'",
        "payload.flag ? payload.amount > 1 : false",
        "dyn(payload.amount) > 1",
        "!payload.flag",
        "payload.flag || payload.other",
        "payload.flag && payload.other",
        "payload.to.exists(payload, payload == 'a')",
        "agent != null && agent.name == 'billing'",
        "agent == null",
        "has(agent.name)",
        "'id' in requester && requester['role'] == 'member'",
        "confidence != null && confidence < 0.5",
        "confidence == null",
        "resource == null || resource.startsWith('invoice')",
        "tool.startsWith('pay') && tool.size() > 3",
        "now.getHours() >= 22",
        "now.getDayOfWeek() == 3 || now.getMinutes() > 10",
        "now.getHours('Europe/Paris') > 3",
        "now > timestamp('2024-01-01T00:00:00Z')",
        // Guarded by the tool: skipped for other tools, which must be what evaluating says.
        "tool == 'email.send' && payload.amount > 1",
        "payload.amount > 1 && tool == 'email.send'",
        "payload.missing.x > 1 && 'email.send' == tool && payload.to.exists(r, r == 'a')",
        "tool == 'payments.charge' && payload.amount > 1",
        "(tool == 'email.send' && payload.amount > 1) || payload.flag",
    ];

    fn differential_rules() -> Compiled {
        let rules: Vec<Rule> = DIFFERENTIAL.iter().enumerate().map(|(i, w)| rule(&format!("d{i}"), w, Effect::Deny)).collect();
        compiled(&rules)
    }

    /// Payloads shaped like the rules above expect, with every kind of value in every place.
    fn arb_shaped_payload() -> impl Strategy<Value = serde_json::Value> {
        let key = prop_oneof![
            Just("amount"),
            Just("n"),
            Just("to"),
            Just("cc"),
            Just("items"),
            Just("price"),
            Just("tags"),
            Just("name"),
            Just("flag"),
            Just("other"),
            Just("o"),
            Just("a")
        ];
        let leaf = prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            (-3i64..2000).prop_map(|n| json!(n)),
            prop_oneof![Just(json!(u64::MAX)), Just(json!(i64::MIN)), Just(json!(i64::MAX)), Just(json!(9_007_199_254_740_993u64))],
            (-3.0f64..2000.0).prop_map(|f| json!(f)),
            prop_oneof![Just("a"), Just("b"), Just("x"), Just("abc"), Just("a@x.com"), Just("invoice:1"), Just("x")].prop_map(|s| json!(s)),
        ];
        let object = |key: BoxedStrategy<&'static str>, value: BoxedStrategy<serde_json::Value>| {
            prop::collection::vec((key, value), 0..8)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
        };
        let key = key.boxed();
        let k2 = key.clone();
        let value = leaf.prop_recursive(3, 40, 5, move |inner| {
            prop_oneof![prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array), object(k2.clone(), inner.boxed()),]
        });
        // Mostly an object at the top, as payloads are; sometimes anything.
        prop_oneof![4 => object(key, value.clone().boxed()), 1 => value]
    }

    #[test]
    fn the_direct_path_answers_realistic_rules_without_the_interpreter() {
        let c = compiled(&[
            rule("r1", "tool == 'email.send' && payload.to.exists(r, r.endsWith('@rival.com'))", Effect::Deny),
            rule("r2", "tool == 'payments.charge' && payload.currency in ['JPY', 'KRW'] && payload.amount > 1000000", Effect::Deny),
            rule("r3", "(now.getHours() >= 22 || now.getHours() < 6) && payload.amount > 1000", Effect::Deny),
            rule("r4", "has(payload.cc) && size(payload.cc) > 5 || payload.body.contains('secret')", Effect::Deny),
            rule("r5", r"payload.body.matches('\\b\\d{4}-\\d{4}\\b')", Effect::Deny),
            rule("r6", "agent != null && agent.name == 'x' && requester.role != 'admin' && confidence < 0.5", Effect::Deny),
            rule("r7", "payload.items.exists(i, i.price > 100.5 && i.tags.exists(t, t == 'gift'))", Effect::Deny),
        ]);
        let payload = json!({
            "to": ["a@example.com", "b@example.com"], "cc": ["c@example.com"], "body": "hello 1234-5678",
            "amount": 1500, "currency": "EUR", "items": [{"price": 150, "tags": ["gift"]}, {"price": 5.5, "tags": []}],
        });
        let f = facts(&payload);
        let direct = fast::Facts::new(&f);
        for (rule, program) in c.rules().iter().zip(&c.inner.programs) {
            assert!(fast::eval_rule(&program.expr, &direct).is_some(), "{} went to the interpreter", rule.when);
        }
        assert_eq!(c.evaluate(&f), c.evaluate_with(&f, false));
    }

    proptest! {
        /// Whenever the direct path answers, it answers what the interpreter would: the
        /// verdicts agree, error citations included (every rule fails closed, so an error on
        /// one side and an answer on the other would show).
        #[test]
        fn the_direct_path_agrees_with_the_interpreter(
            payload in arb_shaped_payload(),
            agent in any::<bool>(),
            confidence in prop::option::of(0.0f64..1.0),
            resource in prop::option::of(prop_oneof![Just("invoice:1"), Just("other")]),
            seconds in 1_700_000_000i64..1_800_000_000,
        ) {
            let c = differential_rules();
            let mut f = facts(&payload);
            f.agent = agent.then_some(AgentFacts { id: "tok_1", name: "billing", owner: "usr_1" });
            f.confidence = confidence;
            f.resource = resource;
            f.now = chrono::DateTime::from_timestamp(seconds, 0).unwrap();
            // Error texts may print maps, whose order the interpreter does not fix.
            let outline = |v: ConstitutionVerdict| v.citations.into_iter().map(|c| (c.rule_id, c.effect, c.error.is_some())).collect::<Vec<_>>();
            prop_assert_eq!(outline(c.evaluate_with(&f, true)), outline(c.evaluate_with(&f, false)));
        }
    }

    proptest! {
        /// Evaluation never panics, whatever the payload, and every failure is cited
        /// with at least an approval (or not at all, for `no_match`).
        #[test]
        fn evaluate_never_panics(payload in arb_json()) {
            let c = fixed_rules();
            let v = c.evaluate(&facts(&payload));
            for citation in &v.citations {
                let rule = c.rules().iter().find(|r| r.id == citation.rule_id).unwrap();
                match &citation.error {
                    None => prop_assert_eq!(citation.effect, rule.effect),
                    Some(_) => {
                        prop_assert_eq!(rule.on_error, OnError::FailClosed);
                        prop_assert_eq!(citation.effect, rule.effect.max(Effect::RequireApproval));
                    }
                }
            }
        }
    }
}
