//! The gate over real HTTP: decisions, approvals, one-shot execution, kill switches,
//! agent-write control, idempotency, and failing closed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::support::*;

/// A workspace with a developer whose agent submits, and two admins who approve.
struct Scene {
    server: TestServer,
    ws: Workspace,
    dev: Api,
    dev_id: String,
    agent: Api,
    agent_id: String,
    admin: Api,
}

async fn scene() -> Scene {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let (dev_id, dev) = ws.member(&server, "member").await;
    let (agent_id, secret) = Workspace::token(&dev, &["actions:submit"], &["*"]).await;
    let agent = server.with_token(&secret);
    let (_, admin) = ws.member(&server, "admin").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    ws.record_tool("email.send", "write", "approve", false).await;
    ws.record_tool("payments.charge", "write", "approve-dual", true).await;
    ws.agent_writes(true).await;
    Scene { server, ws, dev, dev_id, agent, agent_id, admin }
}

fn hash(r: &Resp) -> String {
    r.body["payload_sha256"].as_str().unwrap().to_string()
}

async fn approve(api: &Api, approval: &str, sha: &str) -> Resp {
    api.post(&format!("/v1/approvals/{approval}/decisions"), json!({"decision": "approve", "payload_sha256": sha})).await
}

async fn execute(api: &Api, action: &str, payload: Value) -> Resp {
    api.post(&format!("/v1/actions/{action}/execute"), json!({"payload": payload})).await
}

/// How many events of a type the workspace has.
async fn count(api: &Api, event_type: &str) -> usize {
    event_types(api).await.iter().filter(|t| *t == event_type).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_auto_tool_runs_at_once_with_the_pinned_hash_and_a_receipt() {
    let s = scene().await;
    let payload = json!({"query": "acme", "limit": 10});
    let r = submit(&s.agent, "crm.read", payload.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["status"], "executed");
    assert_eq!(r.body["result"]["connector"], "record");
    let stages: Vec<&str> = r.body["trace"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.first(), Some(&"authenticate"));
    assert_eq!(stages.last(), Some(&"outcome"));

    // The hash is the one `countersign hash` prints for the same payload.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("hash")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(br#"{ "limit": 10, "query": "acme" }"#)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), hash(&r));

    let events = s.ws.owner.all_events().await;
    let executed = events.iter().find(|e| e["event_type"] == "action.executed").expect("action.executed");
    assert_eq!(executed["payload_sha256"], r.body["payload_sha256"]);
    assert_eq!(executed["actor"]["kind"], "agent");
    assert_eq!(executed["actor"]["id"], s.agent_id.as_str());
    assert_eq!(executed["via"], "agent");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_approval_then_one_execution() {
    let s = scene().await;
    let payload = json!({"to": ["ops@example.com"], "subject": "Invoice", "body": "Attached."});
    let r = submit(&s.agent, "email.send", payload.clone()).await;
    assert_eq!(r.body["status"], "pending_approval", "{}", r.body);
    assert_eq!(r.body["required_approvals"], 1);
    let approval = r.body["approval_id"].as_str().unwrap().to_string();
    let action = r.body["id"].as_str().unwrap().to_string();

    let queue = s.admin.get("/v1/approvals?state=pending").await;
    assert_eq!(queue.body["items"][0]["id"], approval.as_str());
    let detail = s.admin.get(&format!("/v1/approvals/{approval}")).await;
    assert_eq!(detail.body["payload"], payload);
    assert_eq!(detail.body["payload_sha256"], r.body["payload_sha256"]);

    // Not yet approved: execution is refused and nothing runs.
    let early = execute(&s.agent, &action, payload.clone()).await;
    assert_eq!((early.status, early.code()), (409, "approval_pending"));

    let ok = approve(&s.admin, &approval, &hash(&r)).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["state"], "approved");

    // Same payload, other key order and spacing: same hash, runs once.
    let reordered: Value = serde_json::from_str(r#"{"body":"Attached.","subject":"Invoice","to":["ops@example.com"]}"#).unwrap();
    let ran = execute(&s.agent, &action, reordered).await;
    assert_eq!(ran.status, 200, "{}", ran.body);
    assert_eq!(ran.body["status"], "executed");
    let again = execute(&s.agent, &action, payload).await;
    assert_eq!((again.status, again.code()), (409, "approval_consumed"));

    let types = event_types(&s.ws.owner).await;
    for t in ["approval.requested", "approval.granted", "approval.consumed", "action.executed"] {
        assert_eq!(types.iter().filter(|x| *x == t).count(), 1, "{t} in {types:?}");
    }
    let granted = s.ws.owner.all_events().await.into_iter().find(|e| e["event_type"] == "approval.granted").unwrap();
    for field in ["approval_id", "tool", "payload_sha256", "approver_user_id", "policy", "expires_at"] {
        assert!(!granted["data"][field].is_null(), "approval.granted lacks {field}: {}", granted["data"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dual_approval_needs_two_distinct_humans_and_never_the_requester() {
    let s = scene().await;
    let payload = json!({"amount": 125000, "currency": "EUR", "customer": "cus_42"});
    let r = submit(&s.agent, "payments.charge", payload.clone()).await;
    assert_eq!(r.body["required_approvals"], 2, "{}", r.body);
    let approval = r.body["approval_id"].as_str().unwrap().to_string();
    let action = r.body["id"].as_str().unwrap().to_string();
    let sha = hash(&r);

    // The requester is the human behind the agent: they never count.
    let own = approve(&s.dev, &approval, &sha).await;
    assert_eq!(own.status, 403, "{}", own.body);
    let mine = s.dev.get("/v1/me").await;
    assert!(!mine.body["permissions"].as_array().unwrap().contains(&json!("approvals:decide")));
    // Even an admin who requested cannot decide their own.
    let req_by_admin = submit(&s.admin, "payments.charge", payload.clone()).await;
    let self_decide = approve(&s.admin, req_by_admin.body["approval_id"].as_str().unwrap(), &hash(&req_by_admin)).await;
    assert_eq!((self_decide.status, self_decide.code()), (403, "requester_cannot_decide"));

    let first = approve(&s.admin, &approval, &sha).await;
    assert_eq!(first.body["state"], "pending");
    assert_eq!(first.body["approvals"], 1);
    let twice = approve(&s.admin, &approval, &sha).await;
    assert_eq!((twice.status, twice.code()), (409, "already_decided"));
    let early = execute(&s.agent, &action, payload.clone()).await;
    assert_eq!((early.status, early.code()), (409, "approval_pending"));

    let second = approve(&s.ws.owner, &approval, &sha).await;
    assert_eq!(second.body["state"], "approved", "{}", second.body);
    let ran = execute(&s.agent, &action, payload).await;
    assert_eq!(ran.body["status"], "executed", "{}", ran.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_decision_on_a_different_hash_is_refused_and_changes_nothing() {
    let s = scene().await;
    let r = submit(&s.agent, "email.send", json!({"to": ["a@example.com"]})).await;
    let approval = r.body["approval_id"].as_str().unwrap();
    let other = "0".repeat(64);
    let refused = approve(&s.admin, approval, &other).await;
    assert_eq!((refused.status, refused.code()), (409, "payload_hash_mismatch"));
    let still = s.admin.get(&format!("/v1/approvals/{approval}")).await;
    assert_eq!(still.body["state"], "pending");
    assert_eq!(still.body["approvals"], 0);
    assert_eq!(count(&s.ws.owner, "approval.decision_refused").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_deny_ends_it_and_nothing_runs() {
    let s = scene().await;
    let payload = json!({"amount": 10, "currency": "EUR"});
    let r = submit(&s.agent, "payments.charge", payload.clone()).await;
    let (approval, action, sha) = (r.body["approval_id"].as_str().unwrap(), r.body["id"].as_str().unwrap(), hash(&r));
    approve(&s.admin, approval, &sha).await;
    let denied =
        s.ws.owner
            .post(
                &format!("/v1/approvals/{approval}/decisions"),
                json!({"decision": "deny", "payload_sha256": sha, "reason": "not this customer"}),
            )
            .await;
    assert_eq!(denied.body["state"], "denied", "{}", denied.body);
    let ex = execute(&s.agent, action, payload).await;
    assert_eq!((ex.status, ex.code()), (409, "approval_denied"));
    let a = s.dev.get(&format!("/v1/actions/{action}")).await;
    assert_eq!(a.body["status"], "denied");
    assert_eq!(count(&s.ws.owner, "action.executed").await, 0);
    let ev = s.ws.owner.all_events().await.into_iter().find(|e| e["event_type"] == "approval.denied").unwrap();
    assert_eq!(ev["data"]["reason"], "not this customer");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drifted_payload_is_refused_and_the_approval_stays_usable() {
    let s = scene().await;
    let payload = json!({"to": ["a@example.com"], "subject": "hello"});
    let r = submit(&s.agent, "email.send", payload.clone()).await;
    let (approval, action) = (r.body["approval_id"].as_str().unwrap(), r.body["id"].as_str().unwrap());
    approve(&s.admin, approval, &hash(&r)).await;
    let drift = execute(&s.agent, action, json!({"to": ["attacker@evil.test"], "subject": "hello"})).await;
    assert_eq!((drift.status, drift.code()), (409, "payload_hash_mismatch"));
    assert_eq!(count(&s.ws.owner, "action.executed").await, 0);
    assert_eq!(count(&s.ws.owner, "action.execution_refused").await, 1);
    let ok = execute(&s.agent, action, payload).await;
    assert_eq!(ok.body["status"], "executed");
}

#[tokio::test(flavor = "multi_thread")]
async fn of_many_concurrent_executions_exactly_one_runs() {
    let s = scene().await;
    let payload = json!({"to": ["a@example.com"], "subject": "once"});
    let r = submit(&s.agent, "email.send", payload.clone()).await;
    let (approval, action) = (r.body["approval_id"].as_str().unwrap().to_string(), r.body["id"].as_str().unwrap().to_string());
    approve(&s.admin, &approval, &hash(&r)).await;
    let agent = Arc::new(s.agent.clone());
    let attempts: Vec<_> = (0..48)
        .map(|_| {
            let (agent, action, payload) = (agent.clone(), action.clone(), payload.clone());
            tokio::spawn(async move { execute(&agent, &action, payload).await })
        })
        .collect();
    let mut ran = 0;
    for a in attempts {
        let r = a.await.unwrap();
        match r.status {
            200 => ran += 1,
            409 => assert_eq!(r.code(), "approval_consumed"),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(ran, 1);
    assert_eq!(count(&s.ws.owner, "action.executed").await, 1);
    assert_eq!(count(&s.ws.owner, "approval.consumed").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_approval_is_recorded_once_and_cannot_be_decided_or_used() {
    let s = scene().await;
    s.ws.tool(
        "email.send",
        json!({"kind": "write", "irreversible": false, "policy": "approve", "approval_ttl_seconds": 60, "connector": {"type": "record"}}),
    )
    .await;
    let payload = json!({"to": ["a@example.com"]});
    let r = submit(&s.agent, "email.send", payload.clone()).await;
    let (approval, action) = (r.body["approval_id"].as_str().unwrap(), r.body["id"].as_str().unwrap());
    s.server.clock.advance(chrono::Duration::seconds(61));
    let late = approve(&s.admin, approval, &hash(&r)).await;
    assert_eq!((late.status, late.code()), (410, "approval_expired"));
    let refused =
        s.ws.owner
            .all_events()
            .await
            .into_iter()
            .rfind(|e| e["event_type"] == "approval.decision_refused")
            .expect("the late decision is audited");
    assert_eq!(refused["data"]["code"], "approval_expired");
    let ex = execute(&s.agent, action, payload).await;
    assert_eq!((ex.status, ex.code()), (410, "approval_expired"));
    let a = s.dev.get(&format!("/v1/actions/{action}")).await;
    assert_eq!(a.body["status"], "expired");
    // Touch, sweeper and a second touch: the expiry is one event.
    let pending = s.admin.get("/v1/approvals?state=pending").await;
    assert!(pending.body["items"].as_array().unwrap().is_empty());
    assert_eq!(count(&s.ws.owner, "approval.expired").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sweeper_records_expiry_without_anyone_touching_it() {
    let s = scene().await;
    s.ws.tool(
        "email.send",
        json!({"kind": "write", "irreversible": false, "policy": "approve", "approval_ttl_seconds": 60, "connector": {"type": "record"}}),
    )
    .await;
    let r = submit(&s.agent, "email.send", json!({"to": ["a@example.com"]})).await;
    let approval = r.body["approval_id"].as_str().unwrap();
    s.server.clock.advance(chrono::Duration::seconds(61));
    // The sweeper runs every second; wait for its event, up to a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let a = s.admin.get(&format!("/v1/approvals/{approval}")).await;
        if a.body["state"] == "expired" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the sweeper did not expire the approval: {}", a.body);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let ev = s.ws.owner.all_events().await.into_iter().find(|e| e["event_type"] == "approval.expired").unwrap();
    assert_eq!(ev["actor"]["kind"], "system");
    assert_eq!(count(&s.ws.owner, "approval.expired").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_can_never_decide() {
    let s = scene().await;
    let r = submit(&s.agent, "email.send", json!({"to": ["a@example.com"]})).await;
    let approval = r.body["approval_id"].as_str().unwrap();
    // The admin cannot mint a deciding token…
    let t = s.admin.post("/v1/tokens", json!({"name": "robot approver", "scopes": ["approvals:decide"], "tools": ["*"]})).await;
    assert_eq!((t.status, t.code()), (422, "scope_not_allowed"));
    // …and an admin's token with everything it may hold still cannot decide.
    let (_, secret) = Workspace::token(&s.admin, &["approvals:read", "actions:submit"], &["*"]).await;
    let bot = s.server.with_token(&secret);
    let d = approve(&bot, approval, &hash(&r)).await;
    assert_eq!((d.status, d.code()), (403, "permission_denied"));
    assert_eq!(s.admin.get(&format!("/v1/approvals/{approval}")).await.body["state"], "pending");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_switches_block_the_next_call_and_consumption_until_lifted() {
    let s = scene().await;
    let payload = json!({"to": ["a@example.com"]});
    let pending = submit(&s.agent, "email.send", payload.clone()).await;
    let (approval, action) = (pending.body["approval_id"].as_str().unwrap(), pending.body["id"].as_str().unwrap());
    approve(&s.admin, approval, &hash(&pending)).await;

    let no_reason = s.admin.put("/v1/killswitches/workspace", json!({"engaged": true, "reason": "  "})).await;
    assert_eq!((no_reason.status, no_reason.code()), (422, "reason_required"));
    let on = s.admin.put("/v1/killswitches/workspace", json!({"engaged": true, "reason": "incident 42"})).await;
    assert_eq!((&on.body["engaged"], &on.body["changed"]), (&json!(true), &json!(true)), "{}", on.body);
    // A second responder hits it too: nothing changes, and their reason is recorded.
    let again = s.ws.owner.put("/v1/killswitches/workspace", json!({"engaged": true, "reason": "also seeing fraud"})).await;
    assert_eq!(
        (&again.body["engaged"], &again.body["changed"], &again.body["reason"]),
        (&json!(true), &json!(false), &json!("incident 42"))
    );
    let noted =
        s.ws.owner.all_events().await.into_iter().rfind(|e| e["event_type"] == "killswitch.unchanged").expect("the attempt is audited");
    assert_eq!((&noted["data"]["reason"], &noted["data"]["set_reason"]), (&json!("also seeing fraud"), &json!("incident 42")));
    assert_eq!(noted["actor"]["id"], s.ws.owner_id.as_str());

    let blocked = submit(&s.agent, "crm.read", json!({"q": 1})).await;
    assert_eq!(blocked.body["status"], "blocked");
    assert_eq!(blocked.body["code"], "workspace_kill_switch");
    let ex = execute(&s.agent, action, payload.clone()).await;
    assert_eq!((ex.status, ex.code()), (409, "workspace_kill_switch"));
    assert_eq!(s.admin.get(&format!("/v1/approvals/{approval}")).await.body["state"], "approved");

    let list = s.dev.get("/v1/killswitches").await;
    assert_eq!(list.body["workspace"]["reason"], "incident 42");
    s.admin.put("/v1/killswitches/workspace", json!({"engaged": false, "reason": "resolved"})).await;
    assert_eq!(submit(&s.agent, "crm.read", json!({"q": 1})).await.body["status"], "executed");

    // A tool's switch stops that tool only.
    s.admin.put("/v1/killswitches/tools/email.send", json!({"engaged": true, "reason": "bad template"})).await;
    let tool_blocked = execute(&s.agent, action, payload.clone()).await;
    assert_eq!(tool_blocked.code(), "tool_kill_switch");
    assert_eq!(submit(&s.agent, "email.send", payload.clone()).await.body["code"], "tool_kill_switch");
    assert_eq!(submit(&s.agent, "crm.read", json!({})).await.body["status"], "executed");
    s.admin.put("/v1/killswitches/tools/email.send", json!({"engaged": false, "reason": "fixed"})).await;
    assert_eq!(execute(&s.agent, action, payload).await.body["status"], "executed");

    assert_eq!(count(&s.ws.owner, "action.blocked").await, 2);
    assert_eq!(count(&s.ws.owner, "killswitch.engaged").await, 2);
    assert_eq!(count(&s.ws.owner, "killswitch.lifted").await, 2);
    let missing = s.admin.put("/v1/killswitches/tools/emial.send", json!({"engaged": true, "reason": "typo"})).await;
    assert_eq!(missing.status, 404);
    let unnamed = s.admin.put("/v1/killswitches/tools/Email%20Send", json!({"engaged": true, "reason": "typo"})).await;
    unnamed.assert_error(422, "invalid_tool_name");
}

#[tokio::test(flavor = "multi_thread")]
async fn engaging_and_lifting_are_separate_powers() {
    let s = scene().await;
    let r =
        s.ws.owner
            .post("/v1/roles", json!({"name": "responder", "permissions": ["killswitch:read", "killswitch:engage", "tools:read"]}))
            .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let (_, responder) = s.ws.member(&s.server, "responder").await;
    let (_, viewer) = s.ws.member(&s.server, "viewer").await;
    let denied = viewer.put("/v1/killswitches/workspace", json!({"engaged": true, "reason": "x"})).await;
    assert_eq!((denied.status, denied.code()), (403, "permission_denied"));
    assert_eq!(responder.put("/v1/killswitches/tools/email.send", json!({"engaged": true, "reason": "stop"})).await.status, 200);
    let lift = responder.put("/v1/killswitches/tools/email.send", json!({"engaged": false, "reason": "go"})).await;
    assert_eq!((lift.status, lift.code()), (403, "permission_denied"));
    assert_eq!(s.admin.put("/v1/killswitches/tools/email.send", json!({"engaged": false, "reason": "go"})).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_writes_are_off_by_default_for_agents_only() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("crm.update", "write", "auto", false).await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    let (_, secret) = Workspace::token(&ws.owner, &["actions:submit"], &["crm.*"]).await;
    let agent = server.with_token(&secret);
    let w = submit(&agent, "crm.update", json!({"id": 1})).await;
    assert_eq!(w.body["status"], "denied");
    assert_eq!(w.body["code"], "agent_writes_disabled");
    assert_eq!(submit(&agent, "crm.read", json!({"id": 1})).await.body["status"], "executed");
    assert_eq!(submit(&ws.owner, "crm.update", json!({"id": 1})).await.body["status"], "executed");
    ws.agent_writes(true).await;
    assert_eq!(submit(&agent, "crm.update", json!({"id": 1})).await.body["status"], "executed");
    let ev = ws.owner.all_events().await.into_iter().find(|e| e["event_type"] == "settings.updated").unwrap();
    assert_eq!(ev["data"]["before"]["agent_writes_enabled"], false);
    assert_eq!(ev["data"]["after"]["agent_writes_enabled"], true);
    assert_eq!(count(&ws.owner, "action.denied").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_patterns_scope_what_a_token_may_ask_for() {
    let s = scene().await;
    let (_, secret) = Workspace::token(&s.dev, &["actions:submit"], &["crm.*"]).await;
    let narrow = s.server.with_token(&secret);
    let r = submit(&narrow, "email.send", json!({"to": ["a@example.com"]})).await;
    assert_eq!(r.body["status"], "denied");
    assert_eq!(r.body["code"], "tool_not_in_scope");
    assert_eq!(submit(&narrow, "crm.read", json!({})).await.body["status"], "executed");
    // Outside its tools, a token cannot tell a tool that exists from one that does not:
    // both are refused at scope, recorded and audited alike.
    let missing = submit(&narrow, "payroll.run", json!({"to": ["a@example.com"]})).await;
    assert_eq!(missing.status, 201, "{}", missing.body);
    let shape = |r: &Resp| (r.body["status"].clone(), r.body["code"].clone(), r.body["trace"].as_array().unwrap().len());
    assert_eq!(shape(&missing), shape(&r));
    assert_eq!(count(&s.ws.owner, "action.denied").await, 2);
    // Within its tools, a name that is no tool is said as such.
    submit(&narrow, "crm.nothing", json!({})).await.assert_error(404, "unknown_tool");
}

#[tokio::test(flavor = "multi_thread")]
async fn low_confidence_and_irreversibility_raise_the_requirement() {
    let s = scene().await;
    s.ws.tool(
        "crm.read",
        json!({"kind": "read", "irreversible": false, "policy": "auto", "min_confidence": 0.8, "connector": {"type": "record"}}),
    )
    .await;
    let low = s.agent.post("/v1/actions", json!({"tool": "crm.read", "payload": {}, "confidence": 0.5})).await;
    assert_eq!(low.body["status"], "pending_approval");
    let gate = low.body["trace"].as_array().unwrap().iter().find(|t| t["stage"] == "confidence_gate").unwrap().clone();
    assert_eq!(gate["verdict"], "require_approval");
    let none = s.agent.post("/v1/actions", json!({"tool": "crm.read", "payload": {}})).await;
    assert_eq!(none.body["status"], "pending_approval");
    let high = s.agent.post("/v1/actions", json!({"tool": "crm.read", "payload": {}, "confidence": 0.9})).await;
    assert_eq!(high.body["status"], "executed");

    let auto_irreversible =
        s.ws.owner
            .put("/v1/tools/wire.send", json!({"kind": "write", "irreversible": true, "policy": "auto", "connector": {"type": "record"}}))
            .await;
    assert_eq!((auto_irreversible.status, auto_irreversible.code()), (422, "irreversible_requires_approval"));
    assert!(auto_irreversible.body["error"]["message"].as_str().unwrap().contains("irreversible"));
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_replay_the_first_answer_and_refuse_a_different_body() {
    let s = scene().await;
    let body = json!({"tool": "crm.read", "payload": {"q": "x", "n": 1}});
    let send = |b: Vec<u8>, key: &'static str| {
        let agent = s.agent.clone();
        async move { agent.send(reqwest::Method::POST, "/v1/actions", Some(b), &[("Idempotency-Key", key)]).await }
    };
    let first = send(body.to_string().into_bytes(), "k-1").await;
    assert_eq!(first.status, 201);
    // Same request, different spelling: the same answer, no second action.
    let respelled = br#"{ "payload": {"n": 1, "q": "x"}, "tool": "crm.read" }"#.to_vec();
    let again = send(respelled, "k-1").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    let other = send(json!({"tool": "crm.read", "payload": {"q": "y"}}).to_string().into_bytes(), "k-1").await;
    assert_eq!((other.status, other.code()), (409, "idempotency_key_reused"));
    let list = s.ws.owner.get("/v1/actions?tool=crm.read").await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(count(&s.ws.owner, "action.executed").await, 1);
    // Keys belong to whoever sent them.
    let mine = s.dev.send(reqwest::Method::POST, "/v1/actions", Some(body.to_string().into_bytes()), &[("Idempotency-Key", "k-1")]).await;
    assert_ne!(mine.body["id"], first.body["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_decides_but_records_and_runs_nothing() {
    let s = scene().await;
    let before = s.ws.owner.all_events().await.len();
    let r = s.agent.post("/v1/actions", json!({"tool": "payments.charge", "payload": {"amount": 5}, "dry_run": true})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "simulated");
    assert!(r.body["id"].is_null());
    assert_eq!(r.body["required_approvals"], 2);
    assert_eq!(s.ws.owner.all_events().await.len(), before);
    assert!(s.ws.owner.get("/v1/actions").await.body["items"].as_array().unwrap().is_empty());
    assert!(s.admin.get("/v1/approvals").await.body["items"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_tools_and_other_workspaces_are_not_found() {
    let s = scene().await;
    let r = submit(&s.agent, "nope.tool", json!({})).await;
    assert_eq!((r.status, r.code()), (404, "unknown_tool"));
    let pending = submit(&s.agent, "email.send", json!({"to": ["a@example.com"]})).await;
    let (approval, action) = (pending.body["approval_id"].as_str().unwrap(), pending.body["id"].as_str().unwrap());
    let other = s.server.workspace("globex").await;
    for path in [format!("/v1/approvals/{approval}"), format!("/v1/actions/{action}"), "/v1/tools/email.send".to_string()] {
        let r = other.owner.get(&path).await;
        assert_eq!((r.status, r.code()), (404, "not_found"), "{path}");
    }
    let d = approve(&other.owner, approval, &hash(&pending)).await;
    assert_eq!(d.status, 404);
    let e = execute(&other.owner, action, json!({})).await;
    assert_eq!(e.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn members_see_only_their_own_actions() {
    let s = scene().await;
    let mine = submit(&s.agent, "crm.read", json!({})).await;
    let theirs = submit(&s.admin, "crm.read", json!({})).await;
    let list = s.dev.get("/v1/actions").await;
    let ids: Vec<&str> = list.body["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [mine.body["id"].as_str().unwrap()]);
    let other = s.dev.get(&format!("/v1/actions/{}", theirs.body["id"].as_str().unwrap())).await;
    assert_eq!(other.status, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_store_that_cannot_be_read_or_written_refuses_every_call_and_runs_nothing() {
    let (server, faults) = TestServer::start_faulty().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    ws.record_tool("email.send", "write", "approve", false).await;
    ws.agent_writes(true).await;
    let (_, secret) = Workspace::token(&ws.owner, &["actions:submit"], &["*"]).await;
    let agent = server.with_token(&secret);
    let (_, admin) = ws.member(&server, "admin").await;
    let pending = submit(&agent, "email.send", json!({"to": ["a@example.com"]})).await;
    approve(&admin, pending.body["approval_id"].as_str().unwrap(), &hash(&pending)).await;
    let waiting = submit(&agent, "email.send", json!({"to": ["b@example.com"]})).await;
    // Every read the gate makes is cached now, so with reads working only the writes fail.
    assert_eq!(submit(&agent, "crm.read", json!({"q": 0})).await.body["status"], "executed");
    let before = ws.owner.all_events().await.len();

    for (fault, what) in [(&faults.all, "reads and writes"), (&faults.writes, "writes only")] {
        fault.store(true, Ordering::SeqCst);
        for r in [
            submit(&agent, "crm.read", json!({"q": 1})).await,
            submit(&agent, "email.send", json!({"to": ["c@example.com"]})).await,
            execute(&agent, pending.body["id"].as_str().unwrap(), json!({"to": ["a@example.com"]})).await,
            admin
                .post(
                    &format!("/v1/approvals/{}/decisions", waiting.body["approval_id"].as_str().unwrap()),
                    json!({"decision": "approve", "payload_sha256": hash(&waiting)}),
                )
                .await,
            ws.owner.put("/v1/killswitches/workspace", json!({"engaged": true, "reason": "x"})).await,
        ] {
            assert_eq!((r.status, r.code()), (503, "store_unavailable"), "{what}: {}", r.body);
            assert_eq!(r.headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"), "{what}");
        }
        fault.store(false, Ordering::SeqCst);
    }

    // Nothing of it happened: no event, no execution, the approvals as they were.
    let events = ws.owner.all_events().await;
    assert_eq!(events.len(), before, "{:?}", &events[before..]);
    let a = admin.get(&format!("/v1/approvals/{}", pending.body["approval_id"].as_str().unwrap())).await;
    assert_eq!(a.body["state"], "approved");
    let w = admin.get(&format!("/v1/approvals/{}", waiting.body["approval_id"].as_str().unwrap())).await;
    assert_eq!((w.body["state"].as_str(), w.body["decisions"].as_array().map(Vec::len)), (Some("pending"), Some(0)));
    assert_eq!(ws.owner.get("/v1/killswitches").await.body["workspace"]["engaged"], false);
    assert_eq!(ws.owner.get("/v1/audit/verify").await.body["ok"], true);
    assert_eq!(submit(&agent, "crm.read", json!({"q": 1})).await.body["status"], "executed");
    let ran = execute(&agent, pending.body["id"].as_str().unwrap(), json!({"to": ["a@example.com"]})).await;
    assert_eq!(ran.body["status"], "executed", "the approval was kept for the real run: {}", ran.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reason_carries_text_and_line_breaks_but_no_escape_sequences() {
    let s = scene().await;
    let before = s.ws.owner.all_events().await.len();
    // What an approver reads in a terminal must not be able to rewrite their screen.
    for reason in ["ok\u{1b}]0;pwned\u{7}\u{1b}[2J", "nul\u{0}byte", "del\u{7f}", "c1\u{9b}31m"] {
        let r = s.agent.post("/v1/actions", json!({"tool": "email.send", "payload": {"to": ["a@example.com"]}, "reason": reason})).await;
        r.assert_error(422, "invalid_reason");
    }
    assert_eq!(s.ws.owner.all_events().await.len(), before, "a refused request left an event");
    let fine = "Renewal reminder.\n\tCustomer asked on Monday — «urgent».";
    let r = s.agent.post("/v1/actions", json!({"tool": "email.send", "payload": {"to": ["a@example.com"]}, "reason": fine})).await;
    assert_eq!((r.status, r.body["status"].as_str()), (201, Some("pending_approval")), "{}", r.body);
    assert_eq!(s.admin.get(&format!("/v1/actions/{}", r.body["id"].as_str().unwrap())).await.body["reason"], fine);
}

/// Submits `email.send` as the agent and has the admin approve it; returns the action.
async fn approved_email(s: &Scene, to: &str) -> (String, Value) {
    let payload = json!({"to": [to]});
    let r = submit(&s.agent, "email.send", payload.clone()).await;
    assert_eq!(r.body["status"], "pending_approval", "{}", r.body);
    let d = approve(&s.admin, r.body["approval_id"].as_str().unwrap(), r.body["payload_sha256"].as_str().unwrap()).await;
    assert_eq!(d.body["state"], "approved", "{}", d.body);
    (r.body["id"].as_str().unwrap().to_string(), payload)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_does_not_carry_an_action_through_rules_tightened_since() {
    let s = scene().await;
    let (denied_id, denied_payload) = approved_email(&s, "a@example.com").await;
    let (dual_id, dual_payload) = approved_email(&s, "b@example.com").await;

    // A rule now denies it: the approval is not used, and says why.
    let rule = json!({"id": "no-mail", "title": "No mail during the audit", "when": "tool == 'email.send' && 'a@example.com' in payload.to", "effect": "deny"});
    s.ws.owner.post("/v1/constitution/versions", json!({"rules": [rule]})).await.assert_status(201);
    let r = execute(&s.agent, &denied_id, denied_payload.clone()).await;
    r.assert_error(409, "constitution_denied");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("no-mail"), "{}", r.body);
    assert_eq!(s.admin.get(&format!("/v1/actions/{denied_id}")).await.body["status"], "approved", "still approved, not run");

    // The tool now needs two people; one approval is not enough.
    let tool = json!({"kind": "write", "irreversible": false, "policy": "approve-dual", "connector": {"type": "record"}});
    s.ws.owner.put("/v1/tools/email.send", tool).await.assert_status(200);
    let r = execute(&s.agent, &dual_id, dual_payload.clone()).await;
    r.assert_error(409, "approval_insufficient");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("needs 2 approvals"), "{}", r.body);
    assert_eq!(count(&s.ws.owner, "action.execution_refused").await, 2, "each refusal is audited");

    // Back to one: the unused approval runs it, once.
    s.ws.record_tool("email.send", "write", "approve", false).await;
    let r = execute(&s.agent, &dual_id, dual_payload).await;
    assert_eq!(r.body["status"], "executed", "{}", r.body);
    assert_eq!(count(&s.ws.owner, "action.executed").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_agent_token_withdraws_what_it_asked_for() {
    let s = scene().await;
    let (id, payload) = approved_email(&s, "a@example.com").await;
    let waiting = submit(&s.agent, "email.send", json!({"to": ["b@example.com"]})).await;
    let (waiting_approval, waiting_sha) = (waiting.body["approval_id"].as_str().unwrap().to_string(), hash(&waiting));
    // Another token of the same member, whose approvals stay.
    let (_, other) = Workspace::token(&s.dev, &["actions:submit"], &["*"]).await;
    let kept = submit(&s.server.with_token(&other), "email.send", json!({"to": ["c@example.com"]})).await;

    s.dev.delete(&format!("/v1/tokens/{}", s.agent_id)).await.assert_status(200);
    // At once, in the same write: both of the token's approvals are withdrawn, recorded,
    // and out of the queue, so no approver is asked about something that cannot run.
    let approval = s.admin.get(&format!("/v1/actions/{id}")).await.body["approval_id"].as_str().unwrap().to_string();
    assert_eq!(s.admin.get(&format!("/v1/approvals/{approval}")).await.body["state"], "withdrawn");
    assert_eq!(s.admin.get(&format!("/v1/actions/{id}")).await.body["status"], "withdrawn");
    assert_eq!(count(&s.ws.owner, "approval.withdrawn").await, 2);
    let queue = s.admin.get("/v1/approvals").await;
    let pending: Vec<&str> = queue.body["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(pending, [kept.body["approval_id"].as_str().unwrap()]);
    let withdrawn = s.admin.get("/v1/approvals?state=withdrawn").await;
    assert_eq!(withdrawn.body["items"].as_array().unwrap().len(), 2);
    approve(&s.admin, &waiting_approval, &waiting_sha).await.assert_error(409, "approval_not_pending");
    // Not even its owner, signed in, may run what the revoked token asked for.
    let r = execute(&s.dev, &id, payload).await;
    r.assert_error(409, "approval_withdrawn");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("revoked"), "{}", r.body);
    assert_eq!(count(&s.ws.owner, "action.executed").await, 0);
    assert_eq!(count(&s.ws.owner, "action.execution_refused").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_tool_withdraws_its_approvals_and_keeps_its_history() {
    let s = scene().await;
    let (approved, payload) = approved_email(&s, "a@example.com").await;
    submit(&s.agent, "email.send", json!({"to": ["b@example.com"]})).await;
    let other = submit(&s.agent, "payments.charge", json!({"amount": 5})).await;

    // Its engaged switch is a responder's to lift, not an admin's clean-up.
    s.admin.put("/v1/killswitches/tools/email.send", json!({"engaged": true, "reason": "bad template"})).await.assert_status(200);
    let stopped = s.admin.delete("/v1/tools/email.send").await;
    stopped.assert_error(409, "tool_stopped");
    assert!(stopped.body["error"]["message"].as_str().unwrap().contains("bad template"), "{}", stopped.body);
    s.admin.get("/v1/tools/email.send").await.assert_status(200);
    s.admin.put("/v1/killswitches/tools/email.send", json!({"engaged": false, "reason": "fixed"})).await.assert_status(200);

    // Only with tools:manage, and never by an agent.
    s.dev.delete("/v1/tools/email.send").await.assert_error(403, "permission_denied");
    assert_eq!(s.agent.delete("/v1/tools/email.send").await.status, 403);
    let gone = s.admin.delete("/v1/tools/email.send").await;
    gone.assert_status(200);
    assert_eq!((&gone.body["tool"]["name"], &gone.body["approvals_withdrawn"]), (&json!("email.send"), &json!(2)), "{}", gone.body);

    // Its approvals are withdrawn and cannot run; the other tool's stays in the queue.
    let queue = s.admin.get("/v1/approvals").await;
    let pending: Vec<&str> = queue.body["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(pending, [other.body["approval_id"].as_str().unwrap()]);
    let r = execute(&s.dev, &approved, payload).await;
    r.assert_error(409, "tool_deleted");
    let approval = s.admin.get(&format!("/v1/actions/{approved}")).await.body["approval_id"].as_str().unwrap().to_string();
    let withdrawn = s.admin.get(&format!("/v1/approvals/{approval}")).await;
    assert_eq!(withdrawn.body["state"], "withdrawn");
    let why = s.ws.owner.all_events().await.into_iter().rfind(|e| e["event_type"] == "approval.withdrawn").expect("audited");
    assert_eq!(why["data"]["why"], "the tool it was for was deleted");
    assert_eq!(count(&s.ws.owner, "action.executed").await, 0);

    // Gone for agents and readers; its actions and its history stay.
    submit(&s.agent, "email.send", json!({"to": ["c@example.com"]})).await.assert_error(404, "unknown_tool");
    s.admin.get("/v1/tools/email.send").await.assert_error(404, "not_found");
    assert_eq!(s.admin.get(&format!("/v1/actions/{approved}")).await.body["status"], "withdrawn");
    let switches = s.admin.get("/v1/killswitches").await;
    assert!(switches.body["tools"].as_array().unwrap().iter().all(|t| t["target"] != "email.send"), "{}", switches.body);
    let deleted = s.ws.owner.all_events().await.into_iter().rfind(|e| e["event_type"] == "tool.deleted").expect("audited");
    assert_eq!((&deleted["data"]["before"]["name"], &deleted["data"]["approvals_withdrawn"]), (&json!("email.send"), &json!(2)));
    assert_eq!(deleted["resource"], "tool:email.send");

    // Not there, or not a name: said as such. A tool of the same name later starts afresh.
    s.admin.delete("/v1/tools/email.send").await.assert_error(404, "not_found");
    s.admin.delete("/v1/tools/Email%20Send").await.assert_error(422, "invalid_tool_name");
    s.ws.record_tool("email.send", "write", "approve", false).await;
    assert_eq!(submit(&s.agent, "email.send", json!({"to": ["d@example.com"]})).await.body["status"], "pending_approval");
}

#[tokio::test(flavor = "multi_thread")]
async fn deactivating_a_member_withdraws_what_they_asked_for() {
    let s = scene().await;
    let r = submit(&s.agent, "email.send", json!({"to": ["a@example.com"]})).await;
    let approval = r.body["approval_id"].as_str().unwrap().to_string();
    s.ws.owner.patch(&format!("/v1/members/{}", s.dev_id), json!({"status": "deactivated"})).await.assert_status(200);
    assert_eq!(s.admin.get(&format!("/v1/approvals/{approval}")).await.body["state"], "withdrawn");
    let event = s.ws.owner.all_events().await.into_iter().find(|e| e["event_type"] == "approval.withdrawn").unwrap();
    assert_eq!(event["data"]["approval_id"], approval.as_str());
    assert!(event["data"]["why"].as_str().unwrap().contains("deactivated"), "{event}");
}

#[tokio::test(flavor = "multi_thread")]
async fn trying_to_run_someone_elses_approved_action_is_refused_and_recorded() {
    let s = scene().await;
    let (id, payload) = approved_email(&s, "a@example.com").await;
    // The admin approved it, but did not ask for it.
    let r = execute(&s.admin, &id, payload.clone()).await;
    r.assert_error(403, "not_your_action");
    // The requester's own token, limited to other tools.
    let (_, secret) = Workspace::token(&s.dev, &["actions:submit"], &["crm.*"]).await;
    let r = execute(&s.server.with_token(&secret), &id, payload.clone()).await;
    r.assert_error(403, "tool_not_in_scope");
    let codes: Vec<Value> =
        s.ws.owner
            .all_events()
            .await
            .into_iter()
            .filter(|e| e["event_type"] == "action.execution_refused")
            .map(|e| e["data"]["code"].clone())
            .collect();
    assert_eq!(codes, [json!("not_your_action"), json!("tool_not_in_scope")]);
    assert_eq!(
        s.admin
            .get(&format!("/v1/approvals/{}", s.admin.get(&format!("/v1/actions/{id}")).await.body["approval_id"].as_str().unwrap()))
            .await
            .body["state"],
        "approved"
    );
    assert_eq!(execute(&s.agent, &id, payload).await.body["status"], "executed", "the requester's agent still can");
}

/// The execute route decides the action again just before the consuming transaction; if
/// the tool or the rules change in that instant, the transaction notices and refuses
/// rather than consume under a decision made on stale rules. (Driven through the store:
/// over HTTP the instant cannot be hit on purpose.)
#[tokio::test(flavor = "multi_thread")]
async fn a_change_between_the_re_decision_and_the_consumption_refuses_it() {
    use countersign::store::{Actions, Basis, ExecuteRequest, Origin, Standing, WorkspaceId};
    let s = scene().await;
    let (id, payload) = approved_email(&s, "a@example.com").await;
    let action = s.admin.get(&format!("/v1/actions/{id}")).await.body;
    let tool = s.admin.get("/v1/tools/email.send").await.body;
    let request = |tool_updated_at: &str, constitution_version: Option<i64>| ExecuteRequest {
        action_id: id.clone(),
        payload_sha256: action["payload_sha256"].as_str().unwrap().to_string(),
        member_id: action["requester_id"].as_str().unwrap().to_string(),
        in_scope: true,
        is_agent: true,
        record_now: true,
        now: Standing::Needs(1),
        basis: Basis { tool_updated_at: tool_updated_at.to_string(), constitution_version },
    };
    let (ws, by) = (
        WorkspaceId::trusted(&s.ws.id),
        Origin { actor: countersign::audit::Actor::agent(&s.agent_id), via: countersign::audit::Via::Agent },
    );
    for stale in [request("2026-01-01T00:00:00.000000Z", None), request(tool["updated_at"].as_str().unwrap(), Some(1))] {
        let refused = s.server.store.execute_approved(&ws, &by, stale).await.unwrap().unwrap_err();
        assert_eq!((refused.status(), refused.code), (409, "rules_changed"), "{}", refused.message);
    }
    assert_eq!(count(&s.ws.owner, "action.execution_refused").await, 2);
    // Decided on what is in force, it runs; the approval was not used before.
    let ran = s.server.store.execute_approved(&ws, &by, request(tool["updated_at"].as_str().unwrap(), None)).await.unwrap().unwrap();
    assert_eq!(ran.status.as_str(), "executed");
    assert_eq!(execute(&s.agent, &id, payload).await.code(), "approval_consumed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_while_an_action_is_decided_stops_it_from_running_in_that_workspace_only() {
    use countersign::gate::Outcome;
    use countersign::store::{Actions, DecidedUnder, Origin, Store, Tools, WorkspaceId};
    let s = scene().await;
    let new = |under: DecidedUnder, outcome: Outcome| {
        decided_action("crm.read", json!({"q": "accounts"}), &s.dev_id, Some(&s.agent_id), outcome, under)
    };
    let ws = WorkspaceId::trusted(&s.ws.id);
    let by = Origin { actor: countersign::audit::Actor::agent(&s.agent_id), via: countersign::audit::Via::Agent };
    // What the gate reads when it decides: the server's epoch, the workspace's version.
    let under = |store: std::sync::Arc<countersign::store::SqlStore>, ws: WorkspaceId| async move {
        DecidedUnder {
            epoch: store.config_epoch().await.unwrap(),
            workspace_version: store.gate_context(&ws, "crm.read").await.unwrap().config_version,
        }
    };

    // A change in another workspace (a tool, a kill switch there) does not touch this one.
    let decided = under(s.server.store.clone(), ws.clone()).await;
    let other = s.server.workspace("globex").await;
    other.record_tool("crm.read", "read", "auto", false).await;
    other.owner.put("/v1/killswitches/tools/crm.read", json!({"engaged": true, "reason": "theirs"})).await.assert_status(200);
    let ran = s.server.store.record_action(&ws, &by, new(decided, Outcome::Execute)).await.unwrap();
    let countersign::store::Submitted::New { action, .. } = ran else { panic!("a new action") };
    assert_eq!(action.status.as_str(), "executed", "another tenant's change never refuses this one's actions");

    // The gate read the configuration; then, before the action is written, a responder
    // stops the tool here and hears "engaged".
    let decided = under(s.server.store.clone(), ws.clone()).await;
    s.ws.owner.put("/v1/killswitches/tools/crm.read", json!({"engaged": true, "reason": "incident 7"})).await.assert_status(200);
    let before = s.ws.owner.all_events().await.len();
    let refused = s.server.store.record_action(&ws, &by, new(decided, Outcome::Execute)).await.unwrap_err();
    assert_eq!((refused.status(), refused.code), (409, "rules_changed"), "{}", refused.message);
    assert!(refused.message.contains("send it again"), "{}", refused.message);
    assert_eq!(s.ws.owner.all_events().await.len(), before, "nothing was recorded, nothing ran");
    let listed = s.admin.get("/v1/actions?tool=crm.read").await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1), "only the first: {}", listed.body);

    // Sent again, it is decided under the switch: blocked, over HTTP as always.
    let again = submit(&s.agent, "crm.read", json!({"q": "accounts"})).await;
    assert_eq!((again.body["status"].as_str(), again.body["code"].as_str()), (Some("blocked"), Some("tool_kill_switch")));
    // A stale decision to hold it for a person is refused too: a token revoked in between
    // would have withdrawn what it asked for before this approval existed.
    let held = s.server.store.record_action(&ws, &by, new(decided, Outcome::NeedsApproval { required: 1 })).await.unwrap_err();
    assert_eq!(held.code, "rules_changed");
    // One made under what is in force runs.
    s.ws.owner.put("/v1/killswitches/tools/crm.read", json!({"engaged": false, "reason": "resolved"})).await.assert_status(200);
    let now = under(s.server.store.clone(), ws.clone()).await;
    let ran = s.server.store.record_action(&ws, &by, new(now, Outcome::Execute)).await.unwrap();
    let countersign::store::Submitted::New { action, .. } = ran else { panic!("a new action") };
    assert_eq!(action.status.as_str(), "executed");
    // Every kind of change moves the version: a token revoked, say.
    let decided = under(s.server.store.clone(), ws.clone()).await;
    let (spare, _) = Workspace::token(&s.dev, &["actions:submit"], &["*"]).await;
    s.dev.delete(&format!("/v1/tokens/{spare}")).await.assert_status(200);
    let refused = s.server.store.record_action(&ws, &by, new(decided, Outcome::Execute)).await.unwrap_err();
    assert_eq!(refused.code, "rules_changed");
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_lists_page_through_every_approval_in_order() {
    let s = scene().await;
    let mut asked = Vec::new();
    for i in 0..5 {
        let r = submit(&s.agent, "email.send", json!({"to": [format!("{i}@example.com")]})).await;
        asked.push((r.body["approval_id"].as_str().unwrap().to_string(), hash(&r)));
    }
    let pages = |state: &'static str| {
        let admin = s.admin.clone();
        async move {
            let (mut seen, mut after, mut pages) = (Vec::new(), None::<String>, 0);
            loop {
                let path = match &after {
                    Some(a) => format!("/v1/approvals?state={state}&limit=2&after={a}"),
                    None => format!("/v1/approvals?state={state}&limit=2"),
                };
                let r = admin.get(&path).await;
                pages += 1;
                seen.extend(r.body["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()));
                match r.body["next"].as_str() {
                    Some(n) => after = Some(n.to_string()),
                    None => break,
                }
            }
            (seen, pages)
        }
    };
    // Pending: soonest expiry first (all have the same lifetime: the order they were asked).
    let (seen, pages_read) = pages("pending").await;
    assert_eq!(seen, asked.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    assert_eq!(pages_read, 3);
    // Denied: newest first, each once.
    for (id, sha) in &asked[..3] {
        s.admin
            .post(&format!("/v1/approvals/{id}/decisions"), json!({"decision": "deny", "payload_sha256": sha, "reason": "no"}))
            .await
            .assert_status(200);
    }
    let (seen, _) = pages("denied").await;
    assert_eq!(seen, asked[..3].iter().rev().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    // A cursor that names nothing is a mistake, said as one.
    s.admin.get("/v1/approvals?after=apv_01JB9Y6Z3K8Q4W2N7R5T0V1X2Y").await.assert_error(400, "invalid_query");
}
