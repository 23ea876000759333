//! Decision cost with 0, 10 and 100 constitution rules in force: `Compiled::evaluate` (the
//! payload converted once, every rule run) followed by `gate::decide`, on an email.send-like
//! and a payments.charge-like payload. Target: 100 rules add under 50 µs per decision.
//!
//! Also the worst rules we could write within the publish-time cost bound, on an
//! adversarial 1 MiB payload: what one rule can cost at most.
//!
//! `cargo bench --bench decision_cost`

use std::hint::black_box;
use std::time::Duration;

use countersign::constitution::{self, AgentFacts, Compiled, Facts, OnError, RequesterFacts, Rule};
use countersign::gate::{self, ConstitutionVerdict, Effect, Input, Policy, ToolKind, ToolRules};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

fn email() -> Value {
    json!({
        "to": ["alice@example.com", "bob@partner.io", "carol@example.com"],
        "cc": ["dave@example.com"],
        "subject": "Quarterly numbers and next steps",
        "body": "Hi all,\n\nPlease find attached the quarterly numbers. Revenue is up 12% on the quarter, \
                 churn is down to 2.1%, and the pipeline for next quarter looks healthy. I would like to \
                 walk through the details on Thursday; the invite follows. Two things need a decision \
                 before then: the pricing change for the enterprise tier, and whether we extend the \
                 pilot with the logistics customer for another month. My recommendation on both is in \
                 the deck, slides 7 and 11.\n\nThanks,\nErin",
        "attachments": [{"name": "q3-numbers.pdf", "size": 48213}, {"name": "deck.pptx", "size": 1204117}],
        "thread_id": "th_01HZX4K3",
    })
}

fn payment() -> Value {
    json!({
        "amount": 125000,
        "currency": "EUR",
        "customer": {"id": "cus_8f2k1", "email": "buyer@acme.example", "country": "DE"},
        "description": "Invoice INV-2024-0042, annual licence renewal",
        "metadata": {"invoice": "INV-2024-0042", "order": "ord_991", "sales_rep": "usr_17"},
        "capture": true,
    })
}

/// `n` rules of the kinds people write: most are about one tool, guarded by it.
fn rules(n: usize) -> Vec<Rule> {
    (0..n)
        .map(|i| {
            let when = match i % 10 {
                0 => format!("tool == 'email.send' && payload.to.exists(r, r.endsWith('@rival{i}.com'))"),
                1 => format!("tool == 'payments.charge' && payload.amount > {}", 100_000 + i * 1000),
                2 => format!("tool == 'payments.charge' && payload.currency in ['JPY', 'KRW'] && payload.amount > {}", 1_000_000 + i),
                3 => format!("confidence != null && confidence < 0.{}", i % 9 + 1),
                4 => {
                    format!("(now.getHours() >= 22 || now.getHours() < 6) && tool.startsWith('payments.') && payload.amount > {}", i * 1000)
                }
                5 => format!("tool == 'email.send' && has(payload.cc) && size(payload.cc) > {}", 5 + i % 5),
                6 => format!("tool == 'email.send' && payload.body.contains('secret-{i}')"),
                7 => format!("tool == 'email.send' && payload.body.matches('\\\\b\\\\d{{4}}-\\\\d{{4}}-\\\\d{{4}}-{i:04}\\\\b')"),
                8 => format!("agent != null && agent.name == 'agent-{i}' && requester.role != 'admin'"),
                _ => format!("tool == 'payments.charge' && payload.customer.email.endsWith('@blocked{i}.example')"),
            };
            let effect = [Effect::RequireApproval, Effect::RequireDual, Effect::Deny, Effect::Allow][i % 4];
            Rule {
                id: format!("rule-{i}"),
                title: format!("Rule {i}"),
                description: String::new(),
                when,
                effect,
                on_error: OnError::FailClosed,
            }
        })
        .collect()
}

fn facts<'a>(tool: &'a str, payload: &'a Value) -> Facts<'a> {
    Facts {
        tool,
        payload,
        resource: Some("invoice:42"),
        agent: Some(AgentFacts { id: "tok_01HZX", name: "billing-agent", owner: "usr_17" }),
        requester: RequesterFacts { id: "usr_17", email: "erin@example.com", role: "member" },
        confidence: Some(0.92),
        now: "2024-05-01T14:30:00Z".parse().expect("a timestamp"),
    }
}

fn decision(c: &Compiled, tool: &ToolRules, facts: &Facts) -> gate::Decision {
    let verdict: ConstitutionVerdict = c.evaluate(facts);
    gate::decide(&Input {
        principal: "tok_01HZX",
        is_agent: true,
        in_scope: true,
        workspace_switch: None,
        tool_switch: None,
        agent_writes_enabled: true,
        tool,
        confidence: facts.confidence,
        constitution: &verdict,
    })
}

fn decision_cost(c: &mut Criterion) {
    let cases = [
        (
            "email.send",
            email(),
            ToolRules {
                name: "email.send".into(),
                kind: ToolKind::Write,
                irreversible: true,
                policy: Policy::Approve,
                min_confidence: Some(0.8),
            },
        ),
        (
            "payments.charge",
            payment(),
            ToolRules {
                name: "payments.charge".into(),
                kind: ToolKind::Write,
                irreversible: false,
                policy: Policy::Auto,
                min_confidence: None,
            },
        ),
    ];
    let mut group = c.benchmark_group("decision");
    for n in [0usize, 10, 100] {
        let compiled = constitution::compile(&rules(n), Some(1)).expect("the bench rules compile");
        for (tool, payload, rules) in &cases {
            let f = facts(tool, payload);
            group.bench_with_input(BenchmarkId::new(*tool, n), &n, |b, _| b.iter(|| black_box(decision(&compiled, rules, black_box(&f)))));
        }
    }
    group.finish();
}

/// The most one rule can cost: the worst rules we found within the limits, on 1 MiB.
fn worst_case(c: &mut Criterion) {
    // 1 MiB: two lists of ~175 000 one-digit numbers, and a 0.25 MiB string.
    let n = 175_000;
    let payload = json!({"a": vec![7; n], "b": vec![7; n], "s": "ab".repeat(128 * 1024)});
    let size = serde_json::to_vec(&payload).expect("serialises").len();
    assert!(size <= 1 << 20, "{size}");
    let worst = [
        // 32 deep comparisons of two 175 000-element lists: cost 64, the most allowed.
        ("compare", ["payload.a == payload.b"; 32].join(" && ")),
        // Copies: the list concatenated with itself six times, then compared (cost 62;
        // the direct path leaves list `+` to the interpreter, so this also converts).
        ("copy", format!("{} == payload.b", ["payload.a"; 7].join(" + "))),
        // 40 comparisons per element of the list (cost 41, 168 nodes).
        ("loop", format!("payload.a.exists(x, {})", ["x == 8"; 40].join(" || "))),
        // Regex and string scans over the string.
        ("scan", format!("{} || payload.s.matches('(a|b)*c')", ["payload.s.contains('abc')"; 20].join(" || "))),
    ];
    let f = facts("payments.charge", &payload);
    let tool = ToolRules {
        name: "payments.charge".into(),
        kind: ToolKind::Write,
        irreversible: false,
        policy: Policy::Auto,
        min_confidence: None,
    };
    let mut group = c.benchmark_group("worst_rule_1mib");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    let baseline = constitution::compile(
        &[Rule {
            id: "convert".into(),
            title: "Converts the payload only".into(),
            description: String::new(),
            when: "has(payload.a)".into(),
            effect: Effect::Deny,
            on_error: OnError::FailClosed,
        }],
        None,
    )
    .expect("compiles");
    group.bench_function("conversion_only", |b| b.iter(|| black_box(decision(&baseline, &tool, &f))));
    for (name, when) in worst {
        let rule = Rule {
            id: "worst".into(),
            title: name.into(),
            description: String::new(),
            when,
            effect: Effect::Deny,
            on_error: OnError::FailClosed,
        };
        let compiled = match constitution::compile(&[rule], None) {
            Ok(c) => c,
            Err(e) => panic!("{name}: {e:#?}"),
        };
        group.bench_function(name, |b| b.iter(|| black_box(decision(&compiled, &tool, &f))));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = decision_cost, worst_case
}
criterion_main!(benches);
