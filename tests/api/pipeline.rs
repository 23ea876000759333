//! The decision pipeline's contract over real HTTP, stage by stage: which refusal wins
//! when several apply, what every outcome leaves in the log, approval lifetimes, the
//! approval lists, who may never decide, and requests refused with nothing left behind.

use serde_json::{Value, json};

use crate::support::*;

/// A workspace with two admins and a member whose agent may call every tool.
struct Scene {
    server: TestServer,
    ws: Workspace,
    agent: Api,
    admin: Api,
    other_admin: Api,
}

async fn scene() -> Scene {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let (_, dev) = ws.member(&server, "member").await;
    let (_, secret) = Workspace::token(&dev, &["actions:submit"], &["*"]).await;
    let agent = server.with_token(&secret);
    let (_, admin) = ws.member(&server, "admin").await;
    let (_, other_admin) = ws.member(&server, "admin").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    ws.record_tool("email.send", "write", "approve", false).await;
    Scene { server, ws, agent, admin, other_admin }
}

fn stages(r: &Resp) -> Vec<String> {
    r.body["trace"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap().to_string()).collect()
}

async fn set_switch(api: &Api, target: &str, engaged: bool) {
    let path = if target == "workspace" { "/v1/killswitches/workspace".to_string() } else { format!("/v1/killswitches/tools/{target}") };
    api.put(&path, json!({"engaged": engaged, "reason": "test"})).await.assert_status(200);
}

async fn publish(api: &Api, rules: Value) {
    api.post("/v1/constitution/versions", json!({ "rules": rules })).await.assert_status(201);
}

#[tokio::test(flavor = "multi_thread")]
async fn when_several_stages_would_refuse_the_first_in_the_briefs_order_decides() {
    let s = scene().await;
    // Everything at once: a token that may only read CRM, both kill switches, agent writes
    // off, and a rule that denies every e-mail.
    let (_, narrow) = Workspace::token(&s.ws.owner, &["actions:submit"], &["crm.*"]).await;
    let narrow = s.server.with_token(&narrow);
    publish(&s.admin, json!([{"id": "no-mail", "title": "No mail", "when": "tool == 'email.send'", "effect": "deny"}])).await;
    set_switch(&s.admin, "workspace", true).await;
    set_switch(&s.admin, "email.send", true).await;
    s.ws.agent_writes(false).await;
    let payload = json!({"to": ["a@example.com"]});
    let full = ["authenticate", "scope", "workspace_kill_switch", "tool_kill_switch", "agent_write_control", "constitution"];

    // Each refusal ends the trace at its own stage, after every stage before it passed.
    let expect = |r: &Resp, status: &str, code: &str, upto: usize| {
        assert_eq!((r.body["status"].as_str(), r.body["code"].as_str()), (Some(status), Some(code)), "{}", r.body);
        let mut want: Vec<String> = full[..upto].iter().map(|s| s.to_string()).collect();
        want.push("outcome".into());
        assert_eq!(stages(r), want, "{}", r.body);
    };
    expect(&submit(&narrow, "email.send", payload.clone()).await, "denied", "tool_not_in_scope", 2);
    expect(&submit(&s.agent, "email.send", payload.clone()).await, "blocked", "workspace_kill_switch", 3);
    set_switch(&s.admin, "workspace", false).await;
    expect(&submit(&s.agent, "email.send", payload.clone()).await, "blocked", "tool_kill_switch", 4);
    set_switch(&s.admin, "email.send", false).await;
    expect(&submit(&s.agent, "email.send", payload.clone()).await, "denied", "agent_writes_disabled", 5);
    s.ws.agent_writes(true).await;
    let denied = submit(&s.agent, "email.send", payload.clone()).await;
    expect(&denied, "denied", "constitution_denied", 6);
    assert_eq!(denied.body["cited_rules"][0]["rule_id"], "no-mail");

    // None of them ran: five decisions, each audited as refused, nothing executed.
    let events = s.ws.owner.all_events().await;
    let count = |t: &str| events.iter().filter(|e| e["event_type"] == t).count();
    assert_eq!((count("action.denied"), count("action.blocked"), count("action.executed")), (3, 2, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_outcome_is_audited_with_the_payload_hash() {
    let s = scene().await;
    s.ws.agent_writes(true).await;
    let executed = submit(&s.agent, "crm.read", json!({"q": 1})).await;
    let pending = submit(&s.agent, "email.send", json!({"to": ["a@example.com"]})).await;
    set_switch(&s.admin, "crm.read", true).await;
    let blocked = submit(&s.agent, "crm.read", json!({"q": 2})).await;
    let (_, narrow) = Workspace::token(&s.ws.owner, &["actions:submit"], &["crm.*"]).await;
    let denied = submit(&s.server.with_token(&narrow), "email.send", json!({"to": ["b@example.com"]})).await;

    let events = s.ws.owner.all_events().await;
    for (r, outcome_event) in
        [(&executed, "action.executed"), (&pending, "approval.requested"), (&blocked, "action.blocked"), (&denied, "action.denied")]
    {
        let sha = r.body["payload_sha256"].as_str().unwrap();
        let id = r.body["id"].as_str().unwrap();
        let of_it: Vec<&Value> = events.iter().filter(|e| e["data"]["action_id"] == id).collect();
        let types: Vec<&str> = of_it.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
        assert_eq!(types, ["action.requested", outcome_event], "{}", r.body);
        for e in of_it {
            assert_eq!(e["payload_sha256"], sha, "{e}");
        }
    }
    // The approval's request carries what the seed's example event does.
    let requested = events.iter().find(|e| e["event_type"] == "approval.requested").unwrap();
    for field in ["approval_id", "tool", "payload_sha256", "policy", "expires_at", "requester_id"] {
        assert!(!requested["data"][field].is_null(), "approval.requested lacks {field}: {requested}");
    }
    assert_eq!(requested["data"]["approval_id"], pending.body["approval_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_last_thirty_minutes_unless_the_workspace_or_the_tool_says_otherwise() {
    let s = scene().await;
    s.ws.agent_writes(true).await;
    let lifetime = |r: &Resp| {
        let a = r.body["approval_id"].as_str().unwrap().to_string();
        (a, r.body["expires_at"].as_str().unwrap().to_string())
    };
    let seconds = |api: Api, id: String| async move {
        let a = api.get(&format!("/v1/approvals/{id}")).await.body;
        let at = |f: &str| chrono::DateTime::parse_from_rfc3339(a[f].as_str().unwrap()).unwrap();
        (at("expires_at") - at("created_at")).num_seconds()
    };
    let (id, _) = lifetime(&submit(&s.agent, "email.send", json!({"n": 1})).await);
    assert_eq!(seconds(s.admin.clone(), id).await, 1800, "the default is 30 minutes");

    s.ws.owner.patch("/v1/settings", json!({"approval_ttl_seconds": 600})).await.assert_status(200);
    let (id, _) = lifetime(&submit(&s.agent, "email.send", json!({"n": 2})).await);
    assert_eq!(seconds(s.admin.clone(), id).await, 600, "the workspace's setting applies to the next approval");

    s.ws.tool(
        "email.send",
        json!({"kind": "write", "irreversible": false, "policy": "approve", "approval_ttl_seconds": 90, "connector": {"type": "record"}}),
    )
    .await;
    let (id, _) = lifetime(&submit(&s.agent, "email.send", json!({"n": 3})).await);
    assert_eq!(seconds(s.admin.clone(), id).await, 90, "a tool's own lifetime wins");

    for bad in [json!({"approval_ttl_seconds": 0}), json!({"approval_ttl_seconds": -5}), json!({"approval_ttl_seconds": "1h"})] {
        let r = s.ws.owner.patch("/v1/settings", bad.clone()).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_are_listed_by_state_and_the_detail_shows_what_was_decided() {
    let s = scene().await;
    s.ws.agent_writes(true).await;
    let current = json!({"subject": "Invoice 6", "to": ["a@example.com"]});
    let body =
        |n: i64| json!({"tool": "email.send", "payload": {"subject": format!("Invoice {n}"), "to": ["a@example.com"]}, "current": current});
    let mut made = Vec::new();
    for n in 0..4 {
        let r = s.agent.post("/v1/actions", body(n)).await;
        r.assert_status(201);
        made.push(r);
    }
    let decide = |api: &Api, r: &Resp, decision: &str| {
        let (api, id, sha) = (api.clone(), r.body["approval_id"].as_str().unwrap().to_string(), r.body["payload_sha256"].clone());
        let decision = decision.to_string();
        async move {
            api.post(&format!("/v1/approvals/{id}/decisions"), json!({"decision": decision, "payload_sha256": sha, "reason": "checked"}))
                .await
        }
    };
    decide(&s.admin, &made[1], "approve").await.assert_status(200);
    decide(&s.admin, &made[2], "deny").await.assert_status(200);
    decide(&s.admin, &made[3], "approve").await.assert_status(200);
    let run = s
        .agent
        .post(&format!("/v1/actions/{}/execute", made[3].body["id"].as_str().unwrap()), json!({"payload": body(3)["payload"]}))
        .await;
    assert_eq!(run.body["status"], "executed", "{}", run.body);

    for (state, which) in [("pending", 0), ("approved", 1), ("denied", 2), ("consumed", 3)] {
        let listed = s.admin.get(&format!("/v1/approvals?state={state}")).await;
        let ids: Vec<&str> = listed.body["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
        assert_eq!(ids, [made[which].body["approval_id"].as_str().unwrap()], "state={state}: {}", listed.body);
    }
    assert_eq!(s.admin.get("/v1/approvals?state=expired").await.body["items"], json!([]));
    s.admin.get("/v1/approvals?state=nonsense").await.assert_error(400, "invalid_query");

    let detail = s.other_admin.get(&format!("/v1/approvals/{}", made[2].body["approval_id"].as_str().unwrap())).await.body;
    assert_eq!(detail["payload"], body(2)["payload"], "the exact payload");
    assert_eq!(detail["current"], current, "the state it changes");
    assert_eq!(detail["payload_sha256"], made[2].body["payload_sha256"]);
    assert_eq!(detail["decisions"].as_array().map(Vec::len), Some(1), "{detail}");
    assert_eq!(detail["decisions"][0]["decision"], "deny");
    assert_eq!(detail["decisions"][0]["reason"], "checked");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_person_behind_an_agent_never_decides_what_it_asked_for() {
    let s = scene().await;
    s.ws.agent_writes(true).await;
    // An admin's own agent: the admin may decide approvals, but not this one.
    let (_, secret) = Workspace::token(&s.admin, &["actions:submit"], &["*"]).await;
    let admins_agent = s.server.with_token(&secret);
    let r = submit(&admins_agent, "email.send", json!({"to": ["a@example.com"]})).await;
    let path = format!("/v1/approvals/{}/decisions", r.body["approval_id"].as_str().unwrap());
    let decision = json!({"decision": "approve", "payload_sha256": r.body["payload_sha256"]});
    s.admin.post(&path, decision.clone()).await.assert_error(403, "requester_cannot_decide");
    let a = s.admin.get(&format!("/v1/approvals/{}", r.body["approval_id"].as_str().unwrap())).await.body;
    assert_eq!((a["state"].as_str(), a["decisions"].as_array().map(Vec::len)), (Some("pending"), Some(0)));
    // Someone else may.
    s.other_admin.post(&path, decision).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_write_control_is_checked_again_when_an_approved_write_would_run() {
    let s = scene().await;
    s.ws.agent_writes(true).await;
    let payload = json!({"to": ["a@example.com"]});
    let r = submit(&s.agent, "email.send", payload.clone()).await;
    let path = format!("/v1/approvals/{}/decisions", r.body["approval_id"].as_str().unwrap());
    s.admin.post(&path, json!({"decision": "approve", "payload_sha256": r.body["payload_sha256"]})).await.assert_status(200);
    s.ws.agent_writes(false).await;
    let id = r.body["id"].as_str().unwrap();
    let refused = s.agent.post(&format!("/v1/actions/{id}/execute"), json!({"payload": payload})).await;
    refused.assert_error(409, "agent_writes_disabled");
    assert_eq!(s.admin.get(&format!("/v1/actions/{id}")).await.body["status"], "approved", "not run, the approval not used");
    s.ws.agent_writes(true).await;
    let ran = s.agent.post(&format!("/v1/actions/{id}/execute"), json!({"payload": payload})).await;
    assert_eq!(ran.body["status"], "executed", "{}", ran.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_tools_and_requests_leave_nothing_behind() {
    let s = scene().await;
    let before = s.ws.owner.all_events().await.len();
    let r = s
        .ws
        .owner
        .put("/v1/tools/payments.refund", json!({"kind": "write", "irreversible": true, "policy": "auto", "connector": {"type": "record"}}))
        .await;
    r.assert_error(422, "irreversible_requires_approval");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("irreversible"), "{}", r.body);
    s.ws.owner.get("/v1/tools/payments.refund").await.assert_error(404, "not_found");

    for (body, status, code) in [
        (json!({"tool": "nope.tool", "payload": {}}), 404, "unknown_tool"),
        (json!({"tool": "crm.read", "payload": {}, "confidence": 1.5}), 422, "invalid_confidence"),
        (json!({"tool": "crm.read", "payload": {}, "confidence": -0.1}), 422, "invalid_confidence"),
    ] {
        s.agent.post("/v1/actions", body.clone()).await.assert_error(status, code);
    }
    for raw in [
        &br#"{"tool": "crm.read", "payload": {"account": 9007199254740993}}"#[..],
        br#"{"tool": "crm.read", "payload": {"account": 9007199254740993.0}}"#,
        br#"{"tool": "crm.read", "payload": {"account": 9007199254740993e0}}"#,
        br#"{"tool": "crm.read", "payload": {"n": 1e400}}"#,
    ] {
        let r = s.agent.raw("POST", "/v1/actions", raw).await;
        r.assert_error(422, "unrepresentable_number");
    }
    s.ws.owner.patch("/v1/settings", json!({"approval_ttl_seconds": 0})).await.assert_error(422, "invalid_ttl");
    assert_eq!(s.ws.owner.all_events().await.len(), before, "no tool, no action, no setting, no event");
    assert_eq!(s.admin.get("/v1/actions").await.body["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_change_is_audited_before_and_after_with_its_secrets_masked() {
    let s = scene().await;
    let url = "https://hooks.example.test/send";
    let spec = |policy: &str| {
        json!({"kind": "write", "irreversible": false, "policy": policy,
        "connector": {"type": "http", "url": url, "secret_headers": {"authorization": "Bearer sk_live_never_shown"}}})
    };
    s.ws.tool("mail.bulk", spec("approve")).await;
    s.ws.tool("mail.bulk", spec("approve-dual")).await;
    let events = s.ws.owner.all_events().await;
    let created = events.iter().find(|e| e["event_type"] == "tool.created" && e["resource"] == "tool:mail.bulk").unwrap();
    let updated = events.iter().find(|e| e["event_type"] == "tool.updated" && e["resource"] == "tool:mail.bulk").unwrap();
    assert!(created["data"]["before"].is_null());
    assert_eq!(created["data"]["after"]["policy"], "approve");
    assert_eq!(updated["data"]["before"]["policy"], "approve");
    assert_eq!(updated["data"]["after"]["policy"], "approve-dual");
    for e in [created, updated] {
        assert!(!e.to_string().contains("sk_live_never_shown"), "a secret reached the log: {e}");
        assert_eq!(e["data"]["after"]["connector"]["url"], url);
    }
}
