//! `countersign demo`: a seeded workspace and a simulated agent producing realistic
//! traffic, on a real server and a real store, so the whole product can be seen in one
//! command.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Client;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::permissions::BuiltinRole;
use crate::secrets;
use crate::server::{self, AppState, Running, ServerConfig};
use crate::store::{NewMember, SqlStore, Store, Workspaces};

/// Every demo account's password.
pub const PASSWORD: &str = "countersign-demo";
pub const WORKSPACE: &str = "acme";

/// The demo's people: (e-mail, role, what they are for).
pub const PEOPLE: &[(&str, &str, &str)] = &[
    ("owner@acme.test", "owner", "owns the workspace"),
    ("ada@acme.test", "admin", "the console signs in as her"),
    ("cyd@acme.test", "admin", "a second admin, for dual approvals"),
    ("ben@acme.test", "approver", "a custom role: decides approvals, nothing else"),
    ("val@acme.test", "viewer", "read-only"),
    ("dev@acme.test", "member", "owns the agent's token"),
];

/// A running demo.
pub struct Demo {
    pub base: String,
    pub running: Running,
    pub agent_token: String,
    pub agent: tokio::task::JoinHandle<()>,
}

async fn sign_in(base: &str, email: &str) -> Result<Client> {
    let c = Client::new(base, None, "api");
    let s = c.sign_in(email, PASSWORD, None).await.map_err(|e| Error::internal(format!("demo sign-in for {email}: {e}")))?;
    Ok(c.with_token(Some(s.token)))
}

async fn put(c: &Client, path: &str, body: Value) -> Result<Value> {
    c.raw("PUT", path, Some(body)).await.map_err(|e| Error::internal(format!("demo setup {path}: {e}")))
}

async fn post(c: &Client, path: &str, body: Value) -> Result<Value> {
    c.raw("POST", path, Some(body)).await.map_err(|e| Error::internal(format!("demo setup {path}: {e}")))
}

/// Creates the workspace, people, tools and the agent's token, unless they exist.
async fn seed(store: &Arc<SqlStore>, base: &str) -> Result<String> {
    let existing = store.list_workspaces().await?;
    if !existing.iter().any(|w| w.name == WORKSPACE) {
        let owner = NewMember {
            email: PEOPLE[0].0.into(),
            name: "Olu Owner".into(),
            role: BuiltinRole::Owner.name().into(),
            password_hash: secrets::hash_password(PASSWORD),
        };
        store.create_workspace(WORKSPACE, owner).await?;
        let owner = sign_in(base, PEOPLE[0].0).await?;
        post(&owner, "/v1/roles", json!({"name": "approver", "description": "decides approvals", "permissions": ["approvals:read", "approvals:decide", "audit:read", "killswitch:read", "killswitch:engage", "tools:read", "members:read", "actions:read"]})).await?;
        for (email, role, _) in &PEOPLE[1..] {
            let name = email.split('@').next().unwrap_or_default();
            post(&owner, "/v1/members", json!({"email": email, "password": PASSWORD, "role": role, "name": name})).await?;
        }
        let record = json!({"type": "record"});
        let tools = [
            (
                "crm.read",
                json!({"kind": "read", "irreversible": false, "policy": "auto", "description": "Look up accounts and contacts", "connector": record}),
            ),
            (
                "email.send",
                json!({"kind": "write", "irreversible": false, "policy": "approve", "description": "Send an e-mail to customers", "connector": record}),
            ),
            (
                "milestones.update",
                json!({"kind": "write", "irreversible": false, "policy": "approve", "min_confidence": 0.7, "description": "Change a project milestone", "connector": record}),
            ),
            (
                "payments.charge",
                json!({"kind": "write", "irreversible": true, "policy": "approve-dual", "description": "Charge a customer's card", "connector": record}),
            ),
            (
                "refunds.issue",
                json!({"kind": "write", "irreversible": true, "policy": "approve", "approval_ttl_seconds": 90, "description": "Refund a payment (approvals expire in 90 s)", "connector": record}),
            ),
        ];
        for (name, spec) in tools {
            put(&owner, &format!("/v1/tools/{name}"), spec).await?;
        }
        c_patch(&owner, "/v1/settings", json!({"agent_writes_enabled": true})).await?;
    }
    let dev = sign_in(base, "dev@acme.test").await?;
    let t = post(&dev, "/v1/tokens", json!({"name": "billing-agent", "scopes": ["actions:submit"], "tools": ["*"]})).await?;
    Ok(t["token"].as_str().unwrap_or_default().to_string())
}

async fn c_patch(c: &Client, path: &str, body: Value) -> Result<Value> {
    c.raw("PATCH", path, Some(body)).await.map_err(|e| Error::internal(format!("demo setup {path}: {e}")))
}

/// Starts the server on `listen` over the store in `data_dir`, seeds it, and starts the
/// simulated agent at `per_minute` actions a minute.
pub async fn start(data_dir: &Path, listen: SocketAddr, per_minute: f64) -> Result<Demo> {
    crate::cli::admin::ensure_private_dir(data_dir).map_err(|e| Error::internal(format!("cannot create {}: {e}", data_dir.display())))?;
    let key_file = data_dir.join("master.key");
    if !key_file.exists() {
        crate::vault::generate_key_file(&key_file).map_err(|e| Error::internal(e.to_string()))?;
    }
    let keys = crate::vault::MasterKeys::from_file(&key_file).map_err(Error::internal)?;
    let clock = Clock::system();
    let store = SqlStore::open_sqlite(&crate::cli::db_path(data_dir), clock.clone())?;
    // The data directory's checkpoint key, as `serve` uses: checkpoints kept during a demo
    // still verify after it restarts on the same directory.
    let (signer, _) = crate::checkpoint::Signer::load_or_create(&data_dir.join(crate::checkpoint::KEY_FILE)).map_err(Error::internal)?;
    let state = AppState::with_signer(store.clone() as Arc<dyn Store>, clock, ServerConfig::default(), keys, signer);
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| Error::internal(format!("cannot listen on {listen}: {e}")))?;
    let running = server::start(listener, state).await.map_err(|e| Error::internal(e.to_string()))?;
    let base = format!("http://{}", running.addr);
    let agent_token = seed(&store, &base).await?;
    let agent_client = Client::new(&base, Some(agent_token.clone()), "api");
    seed_queue(&agent_client).await;
    let colleague = sign_in(&base, "cyd@acme.test").await?;
    let agent = tokio::spawn(agent(agent_client, colleague, per_minute));
    Ok(Demo { base, running, agent_token, agent })
}

/// A tiny deterministic generator (xorshift): the demo needs variety, not cryptography.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn confidence(&mut self, low: f64) -> f64 {
        let span = ((1.0 - low) * 100.0) as u64;
        (low * 100.0 + self.below(span + 1) as f64).min(99.0).round() / 100.0
    }
}

const CUSTOMERS: &[&str] = &["Northwind", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne"];
const PEOPLE_OUT: &[&str] =
    &["finance@northwind.example", "ap@globex.example", "ops@initech.example", "billing@hooli.example", "cfo@vandelay.example"];

/// One realistic action: (tool, payload, resource, current, reason, confidence).
fn scenario(d: &mut Dice, n: u64) -> (String, Value, Option<String>, Option<Value>, String, f64) {
    let customer = *d.pick(CUSTOMERS);
    match d.below(10) {
        0..=3 => (
            "crm.read".into(),
            json!({"query": format!("{customer} renewal status"), "fields": ["plan", "renews_on", "owner"], "limit": 10}),
            None,
            None,
            format!("Preparing the {customer} renewal summary"),
            d.confidence(0.8),
        ),
        4 | 5 => {
            let to = *d.pick(PEOPLE_OUT);
            (
                "email.send".into(),
                json!({"to": [to], "cc": ["accounts@acme.test"], "subject": format!("Your {customer} invoice #{}", 2000 + n), "body": "Hello,\n\nPlease find attached this month's invoice. Payment is due in 30 days.\n\nBest,\nAcme billing"}),
                Some(format!("invoice:{}", 2000 + n)),
                None,
                format!("Monthly invoice for {customer}"),
                d.confidence(0.55),
            )
        }
        6 | 7 => {
            let id = 40 + d.below(5);
            let statuses = ["planned", "in_progress", "at_risk", "done"];
            let from = *d.pick(&statuses);
            let to = *d.pick(&statuses);
            let due = format!("2026-12-{:02}", 1 + d.below(27));
            let current = json!({"id": id, "title": format!("{customer} rollout"), "status": from, "due": "2026-12-01", "owner": "dana", "notes": "Waiting on the security review."});
            let proposed = json!({"id": id, "title": format!("{customer} rollout"), "status": to, "due": due, "owner": "dana", "notes": "Security review passed; moving forward."});
            (
                "milestones.update".into(),
                proposed,
                Some(format!("milestone:{id}")),
                Some(current),
                format!("{customer} status changed in the tracker"),
                d.confidence(0.4),
            )
        }
        8 => (
            "payments.charge".into(),
            json!({"customer": format!("cus_{}", customer.to_lowercase()), "amount": 1200 + d.below(240) * 100, "currency": "EUR", "description": "Annual plan renewal"}),
            Some(format!("customer:{}", customer.to_lowercase())),
            None,
            format!("{customer} renewal is due today"),
            d.confidence(0.7),
        ),
        _ => (
            "refunds.issue".into(),
            json!({"payment": format!("py_{}", 10_000 + n), "amount": 49 + d.below(200), "currency": "EUR", "reason": "duplicate charge"}),
            Some(format!("payment:py_{}", 10_000 + n)),
            None,
            "Customer reported a duplicate charge".into(),
            d.confidence(0.6),
        ),
    }
}

/// A first few requests, so the queue has one of each kind from the start: an e-mail, a
/// dual-approval charge, a milestone change with its current state (a diff), a refund.
async fn seed_queue(c: &Client) {
    if c.raw("GET", "/v1/actions?limit=1", None).await.is_ok_and(|v| v["items"].as_array().is_some_and(|a| !a.is_empty())) {
        return;
    }
    let first = [
        json!({"tool": "email.send", "payload": {"to": ["finance@northwind.example", "ap@globex.example"], "cc": ["accounts@acme.test"], "subject": "Northwind invoice #2041", "body": "Hello,\n\nPlease find attached this month's invoice.\n\nBest,\nAcme billing"}, "resource": "invoice:2041", "reason": "Monthly invoice run", "confidence": 0.82}),
        json!({"tool": "payments.charge", "payload": {"customer": "cus_northwind", "amount": 12500, "currency": "EUR", "description": "Annual plan renewal"}, "resource": "customer:northwind", "reason": "Northwind renewal is due today", "confidence": 0.91}),
        json!({"tool": "milestones.update", "payload": {"id": 42, "title": "Northwind rollout", "status": "done", "due": "2026-12-14", "owner": "dana", "notes": "Security review passed; moving forward."}, "current": {"id": 42, "title": "Northwind rollout", "status": "in_progress", "due": "2026-12-01", "owner": "dana", "notes": "Waiting on the security review."}, "resource": "milestone:42", "reason": "The tracker says the review passed", "confidence": 0.64}),
        json!({"tool": "refunds.issue", "payload": {"payment": "py_10001", "amount": 49, "currency": "EUR", "reason": "duplicate charge"}, "resource": "payment:py_10001", "reason": "Customer reported a duplicate charge", "confidence": 0.77}),
    ];
    for body in first {
        let _ = c.raw("POST", "/v1/actions", Some(body)).await;
    }
}

/// The simulated agent: submits a stream of actions and runs the ones approved for it.
/// A simulated colleague (cyd, an admin) adds the second approval to dual approvals
/// that someone else started, so a dual approval can be seen to complete.
async fn agent(c: Client, colleague: Client, per_minute: f64) {
    let mut d = Dice(0x9E37_79B9_7F4A_7C15 ^ std::process::id() as u64);
    let every = Duration::from_secs_f64(60.0 / per_minute.max(0.1));
    let mut n = 0u64;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        n += 1;
        if let Ok(queue) = colleague.approvals("pending", 50).await {
            for a in queue.iter().filter(|a| {
                a.required == 2 && a.approvals == 1 && a.decisions.iter().all(|d| d.member_email.as_deref() != Some("cyd@acme.test"))
            }) {
                let _ = colleague
                    .decide(&a.id, crate::approval::Verdict::Approve, &a.payload_sha256, Some("second approval (demo colleague)"))
                    .await;
            }
        }
        let (tool, payload, resource, current, reason, confidence) = scenario(&mut d, n);
        let body =
            json!({"tool": tool, "payload": payload, "resource": resource, "current": current, "reason": reason, "confidence": confidence});
        let _ = c.raw("POST", "/v1/actions", Some(body)).await;
        // Run, once, whatever people approved.
        if let Ok(list) = c.raw("GET", "/v1/actions?status=approved&limit=20", None).await {
            for a in list["items"].as_array().into_iter().flatten() {
                if let Some(id) = a["id"].as_str() {
                    let _ = c.raw("POST", &format!("/v1/actions/{id}/execute"), Some(json!({"payload": a["payload"]}))).await;
                }
            }
        }
    }
}
