//! What-if over 100,000 recorded actions: `cargo bench --bench whatif`.
//!
//! Fills a fresh SQLite store with recorded actions through the store API (the same
//! `record_action` the gate uses: each action with its audit events, durably committed),
//! then starts the server in this process on that store and times
//! `POST /v1/simulations` over real HTTP on loopback, for drafts of several shapes:
//!
//! - nothing: an empty draft (what reading and paging the history costs);
//! - tools: the draft changes one tool's policy and keeps the 10 rules in force;
//! - rules: 10 rules in force, the draft adds 2;
//! - rules: 100 rules in force, the draft changes 1 and adds 1 (the usual edit);
//! - rules: 100 rules in force, all 100 different in the draft (the worst case: every
//!   rule evaluated twice for every action);
//!
//! each over the last 100,000 actions, best and median of 5 runs, the CPU time the process
//! spent (median; on a shared machine it says what the work costs whatever the load), and
//! the totals the server returned. Target: under 2 s. `COUNTERSIGN_BENCH_ACTIONS` sets the history size
//! (default 100000), `COUNTERSIGN_BENCH_DIR` the directory (default: Cargo's target tmp dir).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use countersign::canonical;
use countersign::clock::Clock;
use countersign::gate::{Outcome, Policy};
use countersign::model::DecisionRecord;
use countersign::server::{self, AppState, ServerConfig};
use countersign::store::{Actions, NewAction, NewMember, Origin, SqlStore, Store, Workspaces};
use serde_json::{Value, json};

const PASSWORD: &str = "benchmark password 1";
const RUNS: usize = 5;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `i`th recorded action: a mix of reads, e-mails and payments, half through an agent.
fn action(i: usize, owner: &str, token: &str, under: countersign::store::DecidedUnder) -> NewAction {
    let (tool, payload, policy, outcome) = match i % 3 {
        0 => ("crm.read", json!({"query": format!("account {i}"), "limit": 10 + i % 40}), Policy::Auto, Outcome::Execute),
        1 => {
            let domain = ["example.com", "partner.io", "rival.com", "customer.example", "internal.example"][i % 5];
            (
                "email.send",
                json!({
                    "to": [format!("person{}@{domain}", i % 97), format!("ops@{domain}")],
                    "subject": format!("Follow-up on ticket {i}"),
                    "body": "Hello,\n\nthanks for your message; the fix is deployed and the invoice is attached.\n\nRegards",
                }),
                Policy::Approve,
                Outcome::NeedsApproval { required: 1 },
            )
        }
        _ => (
            "payments.charge",
            json!({"amount": (i * 7919) % 250_000, "currency": (["EUR", "USD", "JPY"][i % 3]), "customer": format!("cus_{i}")}),
            Policy::ApproveDual,
            Outcome::NeedsApproval { required: 2 },
        ),
    };
    let pinned = canonical::pin(&payload).expect("canonical");
    NewAction {
        tool: tool.into(),
        payload: pinned.canonical,
        payload_value: payload,
        payload_sha256: pinned.sha256,
        resource: i.is_multiple_of(4).then(|| format!("account:{}", i % 1000)),
        current: None,
        current_value: None,
        reason: None,
        confidence: i.is_multiple_of(2).then_some((i % 100) as f64 / 100.0),
        requester_id: owner.into(),
        agent_token_id: i.is_multiple_of(2).then(|| token.to_string()),
        decision: DecisionRecord { trace: Vec::new(), cited_rules: Vec::new(), constitution_version: None, code: None, message: None },
        outcome,
        policy,
        approval_ttl_seconds: 86_400,
        record_now: true,
        idempotency: None,
        decided_under: under,
    }
}

/// `n` rules of the kinds people write.
fn rules(n: usize, salt: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let when = match (i + salt) % 6 {
                0 => format!("tool == 'email.send' && payload.to.exists(r, r.endsWith('@rival{i}.com'))"),
                1 => format!("tool == 'payments.charge' && payload.amount > {} && payload.currency == 'EUR'", 100_000 + i * 1000),
                2 => format!("confidence != null && confidence < 0.{}", i % 9 + 1),
                3 => format!("tool == 'crm.read' && payload.query.contains('secret-{i}')"),
                4 => format!("agent != null && agent.name == 'agent-{i}' && requester.role != 'admin'"),
                _ => format!("resource != null && resource.startsWith('account:{i}')"),
            };
            let effect = ["require_approval", "require_dual", "deny", "allow"][i % 4];
            json!({"id": format!("rule-{i}"), "title": format!("Rule {i}"), "when": when, "effect": effect})
        })
        .collect()
}

async fn call(c: &reqwest::Client, method: reqwest::Method, url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut r = c.request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// CPU seconds this process (the server included) has used so far, from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let ticks = field(11) + field(12);
    ticks / 100.0
}

fn main() {
    let base: PathBuf =
        std::env::var_os("COUNTERSIGN_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("bench dir");
    let tmp = tempfile::tempdir_in(&base).expect("temp dir");
    let n: usize = env_or("COUNTERSIGN_BENCH_ACTIONS", 100_000);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("Countersign: what-if over {n} recorded actions");
    println!("data directory: {} ({cpus} CPUs)", tmp.path().display());
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    println!("load average before: {}", load());

    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = SqlStore::open_sqlite(&tmp.path().join("countersign.db"), Clock::system()).expect("store");
        let (ws, owner) = store
            .create_workspace(
                "bench",
                NewMember {
                    email: "owner@bench.test".into(),
                    name: "Owner".into(),
                    role: "owner".into(),
                    password_hash: countersign::secrets::hash_password(PASSWORD),
                },
            )
            .await
            .expect("workspace");
        let key_file = tmp.path().join("master.key");
        countersign::vault::generate_key_file(&key_file).expect("key");
        let keys = countersign::vault::MasterKeys::from_file(&key_file).expect("keys");
        let state = AppState::new(store.clone() as Arc<dyn Store>, Clock::system(), ServerConfig::default(), keys);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let running = server::start(listener, state).await.expect("server");
        let url = format!("http://{}", running.addr);
        let c = reqwest::Client::new();
        let (_, signed) =
            call(&c, reqwest::Method::POST, &format!("{url}/v1/sessions"), None, Some(&json!({"email": "owner@bench.test", "password": PASSWORD})))
                .await;
        let token = signed["token"].as_str().expect("session").to_string();
        let t = Some(token.as_str());
        for (name, kind, policy, irreversible) in
            [("crm.read", "read", "auto", false), ("email.send", "write", "approve", false), ("payments.charge", "write", "approve-dual", true)]
        {
            let spec = json!({"kind": kind, "irreversible": irreversible, "policy": policy, "connector": {"type": "record"}});
            let (s, b) = call(&c, reqwest::Method::PUT, &format!("{url}/v1/tools/{name}"), t, Some(&spec)).await;
            assert!(s == 201 || s == 200, "{b}");
        }
        let (s, agent) = call(
            &c,
            reqwest::Method::POST,
            &format!("{url}/v1/tokens"),
            t,
            Some(&json!({"name": "agent-7", "scopes": ["actions:submit"], "tools": ["*"]})),
        )
        .await;
        assert_eq!(s, 201, "{agent}");
        let agent_id = agent["id"].as_str().unwrap().to_string();

        // Fill: the store API, many writers at once so that group commit batches them.
        let fill = Instant::now();
        let next = Arc::new(AtomicUsize::new(0));
        let by = Origin::system("bench");
        let under = countersign::store::DecidedUnder {
            epoch: store.config_epoch().await.expect("epoch"),
            workspace_version: countersign::store::Tools::gate_context(&*store, &countersign::store::WorkspaceId::trusted(ws.id.clone()), "crm.read")
                .await
                .expect("gate context")
                .config_version,
        };
        let mut tasks = Vec::new();
        for _ in 0..256 {
            let (store, ws, next, by, owner, agent_id) = (store.clone(), ws.id.clone(), next.clone(), by.clone(), owner.id.clone(), agent_id.clone());
            tasks.push(tokio::spawn(async move {
                let ws = countersign::store::WorkspaceId::trusted(ws);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    store.record_action(&ws, &by, action(i, &owner, &agent_id, under)).await.expect("record");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        let filled = fill.elapsed();
        println!("filled {n} actions through the store in {:.1} s ({:.0}/s)", filled.as_secs_f64(), n as f64 / filled.as_secs_f64());
        println!();

        let publish = |rules: Vec<Value>| {
            let (c, url, token) = (c.clone(), url.clone(), token.clone());
            async move {
                let (s, b) =
                    call(&c, reqwest::Method::POST, &format!("{url}/v1/constitution/versions"), Some(&token), Some(&json!({"rules": rules})))
                        .await;
                assert_eq!(s, 201, "{b}");
            }
        };
        let mut draft10 = rules(10, 0);
        draft10.push(json!({"id": "rival-mail", "title": "Mail to rivals", "when": "tool == 'email.send' && payload.to.exists(r, r.endsWith('@rival.com'))", "effect": "deny"}));
        draft10.push(json!({"id": "big-eur", "title": "Big EUR charges", "when": "tool == 'payments.charge' && payload.amount >= 200000", "effect": "deny"}));
        let mut draft100 = rules(100, 0);
        draft100[7]["when"] = json!("tool == 'payments.charge' && payload.amount > 50000");
        draft100.push(json!({"id": "rival-mail", "title": "Mail to rivals", "when": "tool == 'email.send' && payload.to.exists(r, r.endsWith('@rival.com'))", "effect": "deny"}));
        let cases: Vec<(&str, Vec<Value>, Value)> = vec![
            ("nothing (empty draft: reading the history)", rules(10, 0), json!({})),
            ("tools (10 rules; email.send made auto)", rules(10, 0), json!({"tools": {"email.send": {"policy": "auto"}}})),
            ("rules (10 in force; 2 added)", rules(10, 0), json!({"rules": draft10})),
            ("rules (100 in force; 1 changed, 1 added)", rules(100, 0), json!({"rules": draft100})),
            ("rules (100 in force; all 100 different)", rules(100, 0), json!({"rules": rules(100, 1)})),
        ];
        println!("POST /v1/simulations, window last {n}, {RUNS} runs each");
        println!(
            "{:<48} {:>8} {:>9} {:>8} {:>9} {:>8} {:>7}",
            "draft", "best s", "median s", "cpu s", "replayed", "changed", "listed"
        );
        for (name, in_force, draft) in cases {
            publish(in_force).await;
            let mut times = Vec::new();
            let mut cpu = Vec::new();
            let mut last = Value::Null;
            for _ in 0..RUNS {
                let t0 = Instant::now();
                let c0 = cpu_seconds();
                let (s, b) = call(
                    &c,
                    reqwest::Method::POST,
                    &format!("{url}/v1/simulations"),
                    t,
                    Some(&json!({"draft": draft, "window": {"last": n}})),
                )
                .await;
                times.push(t0.elapsed());
                cpu.push(cpu_seconds() - c0);
                assert_eq!(s, 200, "{b}");
                assert_eq!(b["totals"]["replayed"], n as u64, "{}", b["totals"]);
                last = b;
            }
            times.sort();
            cpu.sort_by(f64::total_cmp);
            println!(
                "{:<48} {:>8.3} {:>9.3} {:>8.2} {:>9} {:>8} {:>7}",
                name,
                times[0].as_secs_f64(),
                times[RUNS / 2].as_secs_f64(),
                cpu[RUNS / 2],
                last["totals"]["replayed"],
                last["totals"]["changed"],
                last["changes"].as_array().map_or(0, Vec::len),
            );
            println!("    totals: {}", last["totals"]);
        }
        println!("load average after: {}", load());
        running.shutdown().await.expect("shutdown");
    });
}
