//! The constitution and simulation over real HTTP: publishing versions, rules citing and
//! combining in the gate, failing closed, immutability, dry runs and what-if with drafts,
//! and drafting a rule from an action.

use serde_json::{Value, json};

use crate::support::*;

fn rule(id: &str, when: &str, effect: &str) -> Value {
    json!({"id": id, "title": format!("Rule {id}"), "when": when, "effect": effect})
}

async fn publish(api: &Api, rules: Value) -> Resp {
    api.post("/v1/constitution/versions", json!({ "rules": rules })).await
}

/// A workspace whose member `dev` submits through an agent token, with an admin.
struct Scene {
    server: TestServer,
    ws: Workspace,
    dev_id: String,
    dev: Api,
    agent: Api,
    agent_id: String,
    admin: Api,
}

async fn scene(name: &str) -> Scene {
    let server = TestServer::start().await;
    let ws = server.workspace(name).await;
    let (dev_id, dev) = ws.member(&server, "member").await;
    let (agent_id, secret) = Workspace::token(&dev, &["actions:submit", "actions:simulate"], &["*"]).await;
    let agent = server.with_token(&secret);
    let (_, admin) = ws.member(&server, "admin").await;
    ws.agent_writes(true).await;
    Scene { server, ws, dev_id, dev, agent, agent_id, admin }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|c| c["rule_id"].as_str().unwrap().to_string()).collect()
}

/// (status, required approvals, code) of an action outcome.
fn outcome(r: &Resp) -> (String, u64, String) {
    assert!(r.status == 201 || r.status == 200, "{}", r.text);
    (
        r.body["status"].as_str().unwrap().to_string(),
        r.body["required_approvals"].as_u64().unwrap(),
        r.body["code"].as_str().unwrap_or("").to_string(),
    )
}

fn o(status: &str, required: u64, code: &str) -> (String, u64, String) {
    (status.to_string(), required, code.to_string())
}

fn stage<'a>(r: &'a Resp, name: &str) -> &'a Value {
    r.body["trace"].as_array().unwrap().iter().find(|s| s["stage"] == name).unwrap_or_else(|| panic!("no {name} stage: {}", r.text))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_effect_against_each_tool_policy() {
    let s = scene("combine").await;
    // Every policy, reversible and irreversible (irreversible `auto` cannot exist).
    let tools = [
        ("t.auto", "auto", false),
        ("t.approve", "approve", false),
        ("t.dual", "approve-dual", false),
        ("t.approve-irr", "approve", true),
        ("t.dual-irr", "approve-dual", true),
    ];
    for (name, policy, irreversible) in tools {
        s.ws.record_tool(name, "write", policy, irreversible).await;
    }
    // One rule per effect, chosen by the payload.
    let effects = ["allow", "require_approval", "require_dual", "deny"];
    let rules: Vec<Value> =
        effects.iter().map(|e| rule(&format!("rule-{}", e.replace('_', "-")), &format!("payload.effect == '{e}'"), e)).collect();
    let v = publish(&s.admin, json!(rules)).await;
    assert_eq!(v.assert_status(201)["version"], 1);

    let exec = o("executed", 0, "");
    let one = o("pending_approval", 1, "");
    let two = o("pending_approval", 2, "");
    let denied = o("denied", 0, "constitution_denied");
    // effect → outcome for t.auto, t.approve, t.dual, t.approve-irr, t.dual-irr.
    let table = [
        ("none", [&exec, &one, &two, &one, &two]),
        // `allow` lifts `approve` only: not dual, not irreversible.
        ("allow", [&exec, &exec, &two, &one, &two]),
        ("require_approval", [&one, &one, &two, &one, &two]),
        ("require_dual", [&two, &two, &two, &two, &two]),
        ("deny", [&denied, &denied, &denied, &denied, &denied]),
    ];
    for (effect, expected) in table {
        for ((tool, _, _), want) in tools.iter().zip(expected) {
            let r = submit(&s.agent, tool, json!({"effect": effect})).await;
            assert_eq!(&outcome(&r), want, "{effect} on {tool}: {}", r.text);
            assert_eq!(r.body["constitution_version"], 1, "{}", r.text);
            let cited = ids(&r.body["cited_rules"]);
            if effect == "none" {
                assert!(cited.is_empty(), "{cited:?}");
                assert_eq!(stage(&r, "constitution")["verdict"], "pass");
            } else {
                assert_eq!(cited, [format!("rule-{}", effect.replace('_', "-"))]);
                assert_eq!(stage(&r, "constitution")["verdict"], effect);
            }
        }
    }

    // Low confidence: `allow` does not lift `approve` below the tool's minimum, and
    // without a rule an `auto` tool then needs a human.
    s.ws.tool(
        "t.conf",
        json!({"kind": "write", "irreversible": false, "policy": "approve", "min_confidence": 0.8, "connector": {"type": "record"}}),
    )
    .await;
    s.ws.tool(
        "t.conf-auto",
        json!({"kind": "write", "irreversible": false, "policy": "auto", "min_confidence": 0.8, "connector": {"type": "record"}}),
    )
    .await;
    let conf = |tool: &'static str, c: Option<f64>, effect: &'static str| {
        let agent = s.agent.clone();
        async move {
            let mut body = json!({"tool": tool, "payload": {"effect": effect}});
            if let Some(c) = c {
                body["confidence"] = json!(c);
            }
            agent.post("/v1/actions", body).await
        }
    };
    assert_eq!(outcome(&conf("t.conf", Some(0.9), "allow").await), exec);
    assert_eq!(outcome(&conf("t.conf", Some(0.5), "allow").await), one);
    assert_eq!(outcome(&conf("t.conf", None, "allow").await), one);
    assert_eq!(outcome(&conf("t.conf-auto", Some(0.5), "none").await), one);
    assert_eq!(outcome(&conf("t.conf-auto", Some(0.9), "none").await), exec);
    // A rule's demand is never lowered by a high confidence.
    assert_eq!(outcome(&conf("t.conf-auto", Some(0.99), "require_dual").await), two);

    // Several rules: every match is cited, the most restrictive wins.
    publish(
        &s.admin,
        json!([
            rule("big", "payload.amount > 1000", "require_approval"),
            rule("huge", "payload.amount > 100000", "require_dual"),
            rule("friendly", "payload.amount > 0", "allow"),
        ]),
    )
    .await
    .assert_status(201);
    let r = submit(&s.agent, "t.approve", json!({"amount": 500000})).await;
    assert_eq!(outcome(&r), two);
    assert_eq!(ids(&r.body["cited_rules"]), ["big", "huge", "friendly"]);
    let r = submit(&s.agent, "t.approve", json!({"amount": 5})).await;
    assert_eq!(outcome(&r), exec, "allow alone lifts approve");
    assert_eq!(r.body["constitution_version"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_see_the_agent_the_requester_the_resource_and_the_decision_records_them() {
    let s = scene("facts").await;
    s.ws.record_tool("crm.update", "write", "auto", false).await;
    let when = format!(
        "agent != null && agent.owner == '{}' && agent.id == '{}' && agent.name == 'test agent' && requester.role == 'member' \
         && requester.id == '{}' && resource != null && resource.startsWith('account:') && confidence > 0.5 && tool == 'crm.update'",
        s.dev_id, s.agent_id, s.dev_id
    );
    publish(&s.admin, json!([rule("agent-updates", &when, "require_dual")])).await.assert_status(201);
    let body = json!({"tool": "crm.update", "payload": {"x": 1}, "resource": "account:42", "confidence": 0.9});
    let r = s.agent.post("/v1/actions", body.clone()).await;
    assert_eq!(outcome(&r), o("pending_approval", 2, ""));
    // The same request from the person, not the agent: the rule does not match.
    let r2 = s.dev.post("/v1/actions", body).await;
    assert_eq!(outcome(&r2), o("executed", 0, ""));
    assert_eq!(ids(&r2.body["cited_rules"]), Vec::<String>::new());

    // The decision and the audit event carry the version and the citations.
    let id = r.body["id"].as_str().unwrap();
    let a = s.dev.get(&format!("/v1/actions/{id}")).await;
    assert_eq!(a.body["decision"]["constitution_version"], 1, "{}", a.text);
    assert_eq!(ids(&a.body["decision"]["cited_rules"]), ["agent-updates"]);
    let events = s.ws.owner.all_events().await;
    let requested = events.iter().find(|e| e["event_type"] == "action.requested" && e["resource"] == id).unwrap();
    assert_eq!(requested["data"]["constitution_version"], 1);
    assert_eq!(requested["data"]["cited_rules"], json!(["agent-updates"]));
    let approval = events.iter().find(|e| e["event_type"] == "approval.requested" && e["data"]["action_id"] == id).unwrap();
    assert_eq!(approval["data"]["cited_rules"], json!(["agent-updates"]));

    // A large payload (evaluated off the request threads) is judged the same way.
    publish(&s.admin, json!([rule("long-body", "size(payload.body) > 100000", "deny")])).await.assert_status(201);
    let r = submit(&s.agent, "crm.update", json!({"body": "x".repeat(200_000)})).await;
    assert_eq!(outcome(&r), o("denied", 0, "constitution_denied"));
    assert_eq!(ids(&r.body["cited_rules"]), ["long-body"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_refuses_every_broken_rule_with_its_position_and_publishes_nothing() {
    let s = scene("broken").await;
    let r = publish(
        &s.admin,
        json!([
            rule("fine", "tool == 'email.send'", "deny"),
            rule("typo", "tool == 'email.send' &&\n  paylod.amount > 1", "deny"),
            rule("syntax", "payload.amount >", "deny"),
            rule("number", "payload.amount + 1", "deny"),
            rule("fine", "true", "allow"),
            rule("Bad Id", "true", "allow"),
            rule("night", "now.getHours('Mars/Olympus') < 6", "deny"),
        ]),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.code(), "invalid_constitution");
    let error = r.body["error"].as_object().unwrap();
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "errors", "message"]);
    let errors = r.body["error"]["errors"].as_array().unwrap();
    let summary: Vec<(String, u64, String, Value, Value)> = errors
        .iter()
        .map(|e| {
            (
                e["rule_id"].as_str().unwrap().to_string(),
                e["index"].as_u64().unwrap(),
                e["code"].as_str().unwrap().to_string(),
                e["line"].clone(),
                e["column"].clone(),
            )
        })
        .collect();
    let row = |id: &str, index: u64, code: &str, line: Value, column: Value| (id.to_string(), index, code.to_string(), line, column);
    assert_eq!(
        summary,
        [
            row("typo", 1, "unknown_name", json!(2), json!(3)),
            row("syntax", 2, "syntax_error", json!(1), json!(17)),
            row("number", 3, "not_boolean", json!(1), json!(16)),
            row("fine", 4, "duplicate_rule_id", json!(null), json!(null)),
            row("Bad Id", 5, "invalid_rule_id", json!(null), json!(null)),
            row("night", 6, "invalid_time_zone", json!(1), json!(14)),
        ],
        "{}",
        r.text
    );
    for e in errors {
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    assert!(errors[0]["message"].as_str().unwrap().contains("line 2, column 3"), "{}", errors[0]);
    // Nothing was published, and nothing was logged.
    assert_eq!(s.admin.get("/v1/constitution").await.body["version"], Value::Null);
    assert!(!event_types(&s.ws.owner).await.iter().any(|t| t.starts_with("constitution.")));

    // Too many rules.
    let many: Vec<Value> = (0..257).map(|i| rule(&format!("r{i}"), "true", "allow")).collect();
    publish(&s.admin, json!(many)).await.assert_error(422, "too_many_rules");
    // Wrong shapes are the usual 422.
    publish(&s.admin, json!([{"id": "x1", "title": "t", "when": "true", "effect": "maybe"}])).await.assert_error(422, "invalid_field");
    publish(&s.admin, json!([{"id": "x1", "title": "t", "when": "true", "effect": "deny", "extra": 1}]))
        .await
        .assert_error(422, "invalid_field");
    // People only: a member cannot publish.
    publish(&s.dev, json!([])).await.assert_error(403, "permission_denied");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_that_fails_at_run_time_fails_closed_unless_told_otherwise() {
    let s = scene("runtime").await;
    s.ws.record_tool("crm.read", "read", "auto", false).await;
    s.ws.record_tool("email.send", "write", "approve", false).await;
    publish(&s.admin, json!([rule("many-items", "payload.count > 10", "require_approval")])).await.assert_status(201);
    // No `count`: the rule cannot be evaluated, is cited with its error, and holds the call.
    let r = submit(&s.agent, "crm.read", json!({"q": "acme"})).await;
    assert_eq!(outcome(&r), o("pending_approval", 1, ""));
    let cited = &r.body["cited_rules"][0];
    assert_eq!(cited["rule_id"], "many-items");
    assert_eq!(cited["effect"], "require_approval");
    assert!(cited["error"].as_str().unwrap().contains("could not be evaluated"), "{cited}");
    let st = stage(&r, "constitution");
    assert_eq!(st["verdict"], "require_approval");
    assert!(st["detail"].as_str().unwrap().contains("many-items"), "{st}");
    // A failing `allow` cannot lift a policy either: it counts as require_approval.
    publish(&s.admin, json!([rule("small", "payload.amount < 100", "allow")])).await.assert_status(201);
    let r = submit(&s.agent, "email.send", json!({"to": ["a@example.com"]})).await;
    assert_eq!(outcome(&r), o("pending_approval", 1, ""));
    assert_eq!(r.body["cited_rules"][0]["effect"], "require_approval");
    // A type error too.
    let r = submit(&s.agent, "email.send", json!({"amount": "lots"})).await;
    assert_eq!(outcome(&r), o("pending_approval", 1, ""));
    assert!(r.body["cited_rules"][0]["error"].is_string(), "{}", r.text);
    let r = submit(&s.agent, "email.send", json!({"amount": 5})).await;
    assert_eq!(outcome(&r), o("executed", 0, ""));

    // With `on_error: no_match` the author said a missing field means "not this rule".
    let mut lenient = rule("many-items", "payload.count > 10", "require_approval");
    lenient["on_error"] = json!("no_match");
    publish(&s.admin, json!([lenient])).await.assert_status(201);
    let r = submit(&s.agent, "crm.read", json!({"q": "acme"})).await;
    assert_eq!(outcome(&r), o("executed", 0, ""));
    assert_eq!(r.body["cited_rules"], json!([]));
    let r = submit(&s.agent, "crm.read", json!({"count": 11})).await;
    assert_eq!(outcome(&r), o("pending_approval", 1, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_are_immutable_numbered_and_readable_and_the_log_has_the_diff() {
    let s = scene("versions").await;
    let v1 = json!([rule("keep", "tool == 'a.b'", "deny"), rule("change", "tool == 'c.d'", "deny"), rule("drop", "tool == 'e.f'", "deny")]);
    let r = publish(&s.admin, v1.clone()).await;
    let body = r.assert_status(201);
    assert_eq!(body["version"], 1);
    assert_eq!(body["diff"], json!({"added": ["keep", "change", "drop"], "removed": [], "changed": []}));
    let v2 = json!([
        rule("keep", "tool == 'a.b'", "deny"),
        rule("change", "tool == 'c.d' || tool == 'c.e'", "require_dual"),
        rule("new", "true", "allow")
    ]);
    let r = publish(&s.ws.owner, v2.clone()).await;
    assert_eq!(r.assert_status(201)["version"], 2);

    // Current, history, and each version as it was published.
    let current = s.dev.get("/v1/constitution").await;
    assert_eq!(current.body["version"], 2);
    assert_eq!(current.body["published_by"], s.ws.owner_id.as_str());
    let normalised = |v: &Value| -> Value {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["description"] = json!("");
                r["on_error"] = json!("fail_closed");
                r
            })
            .collect()
    };
    assert_eq!(current.body["rules"], normalised(&v2));
    let list = s.dev.get("/v1/constitution/versions").await;
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.iter().map(|i| i["version"].as_i64().unwrap()).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(items[1]["rule_count"], 3);
    let page = s.dev.get("/v1/constitution/versions?limit=1").await;
    assert_eq!(page.body["next"], 2);
    let older = s.dev.get("/v1/constitution/versions?limit=1&before=2").await;
    assert_eq!(older.body["items"][0]["version"], 1);
    let one = s.dev.get("/v1/constitution/versions/1").await;
    assert_eq!(one.body["rules"], normalised(&v1));
    s.dev.get("/v1/constitution/versions/3").await.assert_error(404, "not_found");
    s.dev.get("/v1/constitution/versions/0").await.assert_error(400, "invalid_version");
    s.dev.get("/v1/constitution/versions/two").await.assert_error(400, "invalid_version");

    // The log: the diff against the previous version, with before and after.
    let events = s.ws.owner.all_events().await;
    let published: Vec<&Value> = events.iter().filter(|e| e["event_type"] == "constitution.published").collect();
    assert_eq!(published.len(), 2);
    let d = &published[1]["data"];
    assert_eq!(d["version"], 2);
    assert_eq!(d["previous_version"], 1);
    assert_eq!(d["added"], json!(["new"]));
    assert_eq!(d["removed"], json!(["drop"]));
    assert_eq!(d["changed"][0]["id"], "change");
    assert_eq!(d["changed"][0]["before"]["when"], "tool == 'c.d'");
    assert_eq!(d["changed"][0]["after"]["effect"], "require_dual");
    assert_eq!(d["rules_sha256"], current.body["rules_sha256"]);
    assert_eq!(published[1]["actor"]["id"], s.ws.owner_id.as_str());
    assert_eq!(published[1]["resource"], "constitution:2");

    // A stale edit is refused.
    let stale = s.admin.post("/v1/constitution/versions", json!({"rules": [], "base_version": 1})).await;
    stale.assert_error(409, "constitution_changed");
    // A version that does not exist is a mistake to say, not a conflict.
    let ahead = s.admin.post("/v1/constitution/versions", json!({"rules": [], "base_version": 99})).await;
    ahead.assert_error(422, "invalid_base_version");
    assert!(ahead.body["error"]["message"].as_str().unwrap().contains("the newest is 2"), "{}", ahead.body);
    let fresh = s.admin.post("/v1/constitution/versions", json!({"rules": [], "base_version": 2})).await;
    assert_eq!(fresh.assert_status(201)["version"], 3);
    // The rules in force, again: nothing to publish, and no new version.
    let again = s.admin.post("/v1/constitution/versions", json!({"rules": [], "base_version": 3})).await;
    again.assert_error(409, "constitution_unchanged");
    assert_eq!(s.dev.get("/v1/constitution").await.body["version"], 3);

    // Out of band, the database itself refuses to change or remove a published version.
    let mut db = s.server.out_of_band();
    let update = db.execute("UPDATE constitution_versions SET rules = '[]' WHERE version = 1", &[], false);
    assert!(update.unwrap_err().contains("UPDATE is refused"));
    let delete = db.execute("DELETE FROM constitution_versions WHERE version = 2", &[], false);
    assert!(delete.unwrap_err().contains("DELETE is refused"));
    drop(db);
    assert_eq!(s.dev.get("/v1/constitution/versions/1").await.body["rules"], normalised(&v1));
    assert_eq!(s.ws.owner.verify().await["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_decides_the_very_next_action() {
    let s = scene("epoch").await;
    s.ws.record_tool("crm.read", "read", "auto", false).await;
    let first = submit(&s.agent, "crm.read", json!({"q": 1})).await;
    assert_eq!(outcome(&first), o("executed", 0, ""));
    assert_eq!(first.body["constitution_version"], Value::Null);
    // Warm: the compiled constitution is cached now. A publish must still win at once.
    for (version, rules, want) in [
        (1, json!([rule("no-reads", "tool == 'crm.read'", "deny")]), o("denied", 0, "constitution_denied")),
        (2, json!([]), o("executed", 0, "")),
        (3, json!([rule("hold-reads", "tool == 'crm.read'", "require_approval")]), o("pending_approval", 1, "")),
    ] {
        submit(&s.agent, "crm.read", json!({"q": "warm"})).await;
        publish(&s.admin, rules).await.assert_status(201);
        let r = submit(&s.agent, "crm.read", json!({"q": 2})).await;
        assert_eq!(outcome(&r), want, "version {version}: {}", r.text);
        assert_eq!(r.body["constitution_version"], version);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_constitution_that_does_not_compile_refuses_every_action() {
    let mut s = scene("unusable").await;
    s.ws.record_tool("crm.read", "read", "auto", false).await;
    publish(&s.admin, json!([rule("fine", "tool == 'x.y'", "deny")])).await.assert_status(201);
    submit(&s.agent, "crm.read", json!({})).await.assert_status(201);
    // Someone with the database file appends a version that does not compile.
    s.server
        .out_of_band()
        .execute(
            "INSERT INTO constitution_versions (workspace_id, version, rules, rule_count, rules_sha256, published_by, published_at) \
             VALUES ($1, 2, $2, 1, 'x', $3, '2030-01-01T00:00:00.000000Z')",
            &[
                Raw::Text(s.ws.id.clone()),
                Raw::Text(json!([rule("broken", "payload.(", "allow")]).to_string()),
                Raw::Text(s.ws.owner_id.clone()),
            ],
            false,
        )
        .unwrap();
    s.server.restart().await;
    let agent = s.agent.at(&s.server.base);
    let admin = s.admin.at(&s.server.base);
    let before = admin.get("/v1/actions").await.body["items"].as_array().unwrap().len();
    let r = submit(&agent, "crm.read", json!({})).await;
    r.assert_error(503, "constitution_unavailable");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("version 2"), "{}", r.text);
    agent
        .post("/v1/actions", json!({"tool": "crm.read", "payload": {}, "dry_run": true}))
        .await
        .assert_error(503, "constitution_unavailable");
    admin.post("/v1/simulations", json!({"draft": {"rules": []}})).await.assert_error(503, "constitution_unavailable");
    assert_eq!(admin.get("/v1/actions").await.body["items"].as_array().unwrap().len(), before, "nothing was recorded");
    // A dry run of a draft does not need the broken version; publishing a fix restores the gate.
    let dry = agent.post("/v1/actions", json!({"tool": "crm.read", "payload": {}, "dry_run": true, "draft": {"rules": []}})).await;
    assert_eq!(dry.assert_status(200)["status"], "simulated");
    let fixed = publish(&admin, json!([])).await;
    assert_eq!(fixed.assert_status(201)["version"], 3);
    assert_eq!(outcome(&submit(&agent, "crm.read", json!({})).await), o("executed", 0, ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_tries_a_draft_on_one_action_and_records_nothing() {
    let s = scene("dryrun").await;
    s.ws.record_tool("email.send", "write", "approve", false).await;
    publish(&s.admin, json!([rule("rivals", "payload.to.exists(r, r.endsWith('@rival.com'))", "deny")])).await.assert_status(201);
    let payload = json!({"to": ["ceo@rival.com"], "subject": "hello"});
    let events_before = s.ws.owner.all_events().await.len();
    let actions_before = s.admin.get("/v1/actions").await.body["items"].as_array().unwrap().len();

    // In force: denied, citing version 1.
    let r = s.agent.post("/v1/actions", json!({"tool": "email.send", "payload": payload, "dry_run": true})).await;
    assert_eq!(outcome(&r), o("simulated", 0, "constitution_denied"));
    assert_eq!(r.body["constitution_version"], 1);
    assert_eq!(ids(&r.body["cited_rules"]), ["rivals"]);

    // Under a draft that allows mail to partners instead: lifted to run at once.
    let draft = json!({"rules": [rule("partners", "payload.to.all(r, r.endsWith('@rival.com'))", "allow")]});
    let r = s.agent.post("/v1/actions", json!({"tool": "email.send", "payload": payload, "dry_run": true, "draft": draft})).await;
    assert_eq!(outcome(&r), o("simulated", 0, ""));
    assert!(r.body["message"].as_str().unwrap().contains("under the draft: would be executed at once"), "{}", r.text);
    assert_eq!(r.body["constitution_version"], Value::Null);
    assert_eq!(ids(&r.body["cited_rules"]), ["partners"]);
    assert!(stage(&r, "constitution")["detail"].as_str().unwrap().contains("(draft)"), "{}", r.text);
    assert_eq!(stage(&r, "tool_policy")["verdict"], "pass");

    // Draft tool policies: the same action with email.send made dual, rules as in force.
    let draft = json!({"tools": {"email.send": {"policy": "approve-dual"}}});
    let r = s
        .agent
        .post("/v1/actions", json!({"tool": "email.send", "payload": {"to": ["a@b.example"]}, "dry_run": true, "draft": draft}))
        .await;
    assert_eq!(outcome(&r), o("simulated", 2, ""));
    assert_eq!(r.body["constitution_version"], 1);
    // A tool that exists only in the draft.
    let draft = json!({"tools": {"sms.send": {"kind": "write", "irreversible": true, "policy": "approve"}}});
    let r =
        s.agent.post("/v1/actions", json!({"tool": "sms.send", "payload": {"to": ["+33 1 23"]}, "dry_run": true, "draft": draft})).await;
    assert_eq!(outcome(&r), o("simulated", 1, ""));
    assert_eq!(stage(&r, "irreversible_floor")["verdict"], "require_approval");

    // Refusals: a draft outside a dry run, a draft that does not compile, a bad tool.
    let r = s.agent.post("/v1/actions", json!({"tool": "email.send", "payload": payload, "draft": {"rules": []}})).await;
    r.assert_error(422, "draft_requires_dry_run");
    let r = s
        .agent
        .post(
            "/v1/actions",
            json!({"tool": "email.send", "payload": payload, "dry_run": true, "draft": {"rules": [rule("x1", "nope(", "deny")]}}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "invalid_constitution"), "{}", r.text);
    assert_eq!(r.body["error"]["errors"][0]["rule_id"], "x1");
    let bad = json!({"tools": {"email.send": {"irreversible": true, "policy": "auto"}}});
    let r = s.agent.post("/v1/actions", json!({"tool": "email.send", "payload": payload, "dry_run": true, "draft": bad})).await;
    r.assert_error(422, "irreversible_requires_approval");
    let bad = json!({"tools": {"sms.send": {"policy": "auto"}}});
    let r = s.agent.post("/v1/actions", json!({"tool": "sms.send", "payload": payload, "dry_run": true, "draft": bad})).await;
    r.assert_error(422, "invalid_draft");

    // Nothing of any of that was recorded.
    assert_eq!(s.ws.owner.all_events().await.len(), events_before);
    assert_eq!(s.admin.get("/v1/actions").await.body["items"].as_array().unwrap().len(), actions_before);
}

/// Submits as `api` and returns the action's id, checking the status it got.
async fn act(api: &Api, tool: &str, payload: Value, status: &str) -> String {
    let r = submit(api, tool, payload).await;
    assert_eq!(r.body["status"], status, "{}", r.text);
    r.body["id"].as_str().unwrap().to_string()
}

/// (status, required approvals, cited rule ids) of one side of a what-if change.
type SideView = (String, u64, Vec<String>);

fn side(v: &Value) -> SideView {
    (v["status"].as_str().unwrap().to_string(), v["required_approvals"].as_u64().unwrap(), ids(&v["cited_rules"]))
}

fn sd(status: &str, required: u64, cited: &[&str]) -> SideView {
    (status.to_string(), required, cited.iter().map(|s| s.to_string()).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn what_if_replays_history_and_lists_exactly_what_would_change() {
    let s = scene("whatif").await;
    s.ws.record_tool("crm.read", "read", "auto", false).await;
    s.ws.record_tool("email.send", "write", "approve", false).await;
    s.ws.record_tool("payments.charge", "write", "approve-dual", true).await;
    let internal = rule("internal-mail", "tool == 'email.send' && payload.to.all(r, r.endsWith('@internal.example'))", "allow");
    publish(&s.admin, json!([internal])).await.assert_status(201);
    // The history, oldest first.
    let a1 = act(&s.agent, "crm.read", json!({"q": "acme"}), "executed").await;
    let a2 = act(&s.agent, "crm.read", json!({"q": "secret-project"}), "executed").await;
    let a3 = act(&s.agent, "email.send", json!({"to": ["x@rival.com"]}), "pending_approval").await;
    let a4 = act(&s.agent, "email.send", json!({"to": ["y@friend.org"]}), "pending_approval").await;
    let a5 = act(&s.agent, "payments.charge", json!({"amount": 50, "currency": "EUR"}), "pending_approval").await;
    let a6 = act(&s.agent, "email.send", json!({"to": ["z@internal.example"]}), "executed").await;
    let _ = (&a1, &a4, &a6);
    // An incident now: what-if compares policy, so it changes nothing below.
    s.ws.owner.put("/v1/killswitches/tools/email.send", json!({"engaged": true, "reason": "drill"})).await.assert_status(200);
    let events_before = s.ws.owner.all_events().await.len();

    let draft = json!({
        "rules": [
            internal,
            rule("no-rival", "tool == 'email.send' && payload.to.exists(r, r.endsWith('@rival.com'))", "deny"),
            rule("secret-reads", "tool == 'crm.read' && payload.q.contains('secret')", "require_approval"),
        ],
        "tools": {"payments.charge": {"policy": "approve"}},
    });
    let r = s.admin.post("/v1/simulations", json!({"draft": draft, "window": {"last": 100}})).await;
    let body = r.assert_status(200);
    let changes: Vec<(String, SideView, SideView)> = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["action_id"].as_str().unwrap().to_string(), side(&c["before"]), side(&c["after"])))
        .collect();
    assert_eq!(
        changes,
        [
            (a5.clone(), sd("pending_approval", 2, &[]), sd("pending_approval", 1, &[])),
            (a3.clone(), sd("pending_approval", 1, &[]), sd("denied", 0, &["no-rival"])),
            (a2.clone(), sd("executed", 0, &[]), sd("pending_approval", 1, &["secret-reads"])),
        ],
        "{}",
        r.text
    );
    assert_eq!(body["changes"][1]["after"]["code"], "constitution_denied");
    assert_eq!(body["changes"][0]["recorded_status"], "pending_approval");
    assert_eq!(body["changes"][0]["tool"], "payments.charge");
    assert_eq!(body["changes"][0]["agent_token_id"], s.agent_id.as_str());
    assert_eq!(
        body["totals"],
        json!({
            "replayed": 6, "skipped": 0, "changed": 3, "stricter": 2, "looser": 1,
            "newly_need_approval": 1, "newly_need_dual": 0, "newly_denied": 1, "no_longer_denied": 0,
            "newly_run_at_once": 0, "citations_changed": 0, "rule_errors_before": 0, "rule_errors_after": 0,
        })
    );
    assert_eq!(body["truncated"], false);
    assert_eq!(body["in_force_version"], 1);
    assert_eq!(body["window"]["scope"], "workspace");
    assert_eq!(body["window"]["complete"], true);
    assert_eq!(body["window"]["newest_action_id"], a6.as_str());
    assert_eq!(body["window"]["oldest_action_id"], a1.as_str());
    assert!(body["not_applied"].as_array().unwrap().contains(&json!("tool_kill_switch")));

    // The last two only.
    let r = s.admin.post("/v1/simulations", json!({"draft": draft, "window": {"last": 2}})).await;
    let b = r.assert_status(200);
    assert_eq!(b["totals"]["replayed"], 2);
    assert_eq!(b["changes"].as_array().unwrap().len(), 1);
    assert_eq!(b["changes"][0]["action_id"], a5.as_str());
    // Since a3 was recorded.
    let since = s.admin.get(&format!("/v1/actions/{a3}")).await.body["created_at"].as_str().unwrap().to_string();
    let r = s.admin.post("/v1/simulations", json!({"draft": draft, "window": {"since": since}})).await;
    let b = r.assert_status(200);
    assert_eq!(b["totals"]["replayed"], 4);
    assert_eq!(b["totals"]["changed"], 2);

    // A draft with no rules at all: the internal-mail allow goes, a6 would need a human.
    let r = s.admin.post("/v1/simulations", json!({"draft": {"rules": []}})).await;
    let b = r.assert_status(200);
    assert_eq!(b["totals"]["changed"], 1);
    assert_eq!(b["totals"]["newly_need_approval"], 1);
    assert_eq!(b["changes"][0]["action_id"], a6.as_str());
    assert_eq!(side(&b["changes"][0]["before"]), sd("executed", 0, &["internal-mail"]));
    assert_eq!(side(&b["changes"][0]["after"]), sd("pending_approval", 1, &[]));
    // Looser drafts are counted as such.
    let r = s.admin.post("/v1/simulations", json!({"draft": {"tools": {"email.send": {"policy": "auto"}}}})).await;
    let b = r.assert_status(200);
    assert_eq!(
        (b["totals"]["changed"].as_u64(), b["totals"]["newly_run_at_once"].as_u64(), b["totals"]["looser"].as_u64()),
        (Some(2), Some(2), Some(2))
    );
    // A draft rule that fails on history is counted.
    let r = s.admin.post("/v1/simulations", json!({"draft": {"rules": [rule("amounts", "payload.amount > 10", "require_dual")]}})).await;
    let b = r.assert_status(200);
    assert_eq!(b["totals"]["rule_errors_after"], 5, "{}", r.text);

    // No side effects: not one event, and the kill switch still holds.
    assert_eq!(s.ws.owner.all_events().await.len(), events_before);
    assert_eq!(submit(&s.agent, "email.send", json!({"to": ["a@internal.example"]})).await.body["status"], "blocked");

    // A member without actions:read replays only their own actions; the agent's are the dev's.
    let mine = s.dev.post("/v1/simulations", json!({"draft": draft})).await;
    assert_eq!(mine.assert_status(200)["window"]["scope"], "own");
    assert_eq!(mine.body["totals"]["replayed"], 7, "the blocked one too");
    let (_, other) = s.ws.member(&s.server, "member").await;
    let theirs = other.post("/v1/simulations", json!({"draft": draft})).await;
    assert_eq!(theirs.assert_status(200)["totals"]["replayed"], 0);
    assert_eq!(theirs.body["changes"], json!([]));

    // Bad windows and drafts.
    s.admin.post("/v1/simulations", json!({"draft": {}, "window": {"last": 0}})).await.assert_error(422, "invalid_window");
    s.admin.post("/v1/simulations", json!({"draft": {}, "window": {"last": 100001}})).await.assert_error(422, "invalid_window");
    s.admin.post("/v1/simulations", json!({"draft": {}, "window": {"since": "yesterday"}})).await.assert_error(422, "invalid_window");
    let r = s.admin.post("/v1/simulations", json!({"draft": {"rules": [rule("r1", "tool ==", "deny")]}})).await;
    assert_eq!((r.status, r.code()), (422, "invalid_constitution"));
    s.admin.post("/v1/simulations", json!({"window": {}})).await.assert_error(422, "invalid_field");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_if_decides_each_action_at_the_time_it_was_requested() {
    let s = scene("whatiftime").await;
    s.ws.record_tool("crm.read", "read", "auto", false).await;
    let early = act(&s.agent, "crm.read", json!({}), "executed").await;
    s.server.clock.advance(chrono::Duration::hours(2));
    let late = act(&s.agent, "crm.read", json!({}), "executed").await;
    let cutoff = countersign::clock::format_ts(s.server.clock.now() - chrono::Duration::hours(1));
    let draft = json!({"rules": [rule("old-reads", &format!("now < timestamp('{cutoff}')"), "deny")]});
    let r = s.admin.post("/v1/simulations", json!({"draft": draft})).await;
    let b = r.assert_status(200);
    assert_eq!(b["totals"]["changed"], 1, "{}", r.text);
    assert_eq!(b["changes"][0]["action_id"], early.as_str());
    assert_ne!(early, late);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_drafted_from_an_exception_compiles_matches_and_closes_the_class() {
    let s = scene("fromaction").await;
    s.ws.record_tool("email.send", "write", "auto", false).await;
    s.ws.record_tool("payments.charge", "write", "approve-dual", true).await;
    publish(&s.admin, json!([rule("existing", "tool == 'x.y'", "deny")])).await.assert_status(201);
    // The exception: mail to a rival went out at once.
    let exception = act(&s.agent, "email.send", json!({"to": ["ceo@rival.com"], "subject": "our roadmap"}), "executed").await;
    act(&s.agent, "email.send", json!({"to": ["team@friend.org"]}), "executed").await;

    let r = s.admin.post_empty(&format!("/v1/constitution/drafts/from-action/{exception}")).await;
    let d = r.assert_status(200).clone();
    assert_eq!(d["matches_action"], true);
    assert_eq!(d["base_version"], 1);
    assert_eq!(d["rule"]["effect"], "require_approval");
    assert_eq!(d["rule"]["id"], "email-send-rival-com");
    let when = d["rule"]["when"].as_str().unwrap();
    assert!(when.contains("tool == 'email.send'") && when.contains("r.endsWith('@rival.com')"), "{when}");
    assert!(d["explanation"].as_array().unwrap().len() >= 2);
    // The draft is the constitution in force plus the new rule.
    let draft_ids: Vec<&str> = d["draft"]["rules"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(draft_ids, ["existing", "email-send-rival-com"]);

    // Simulate it over history: exactly the exception would change.
    let sim = s.admin.post("/v1/simulations", json!({"draft": {"rules": d["draft"]["rules"]}})).await;
    let b = sim.assert_status(200);
    assert_eq!(b["totals"]["changed"], 1, "{}", sim.text);
    assert_eq!(b["changes"][0]["action_id"], exception.as_str());
    assert_eq!(side(&b["changes"][0]["after"]), sd("pending_approval", 1, &["email-send-rival-com"]));

    // Publish it: the same class of exception no longer runs unseen.
    publish(&s.admin, d["draft"]["rules"].clone()).await.assert_status(201);
    let again = submit(&s.agent, "email.send", json!({"to": ["cfo@rival.com"], "subject": "numbers"})).await;
    assert_eq!(outcome(&again), o("pending_approval", 1, ""));
    assert_eq!(ids(&again.body["cited_rules"]), ["email-send-rival-com"]);

    // An amount: rounded down to a threshold, with the currency and the resource prefix.
    let body = json!({"tool": "payments.charge", "payload": {"amount": 125000, "currency": "EUR"}, "resource": "invoice:42"});
    let charge = s.agent.post("/v1/actions", body).await;
    let id = charge.body["id"].as_str().unwrap();
    let d = s.admin.post_empty(&format!("/v1/constitution/drafts/from-action/{id}")).await;
    let rule = &d.assert_status(200)["rule"];
    assert_eq!(rule["effect"], "require_dual");
    let when = rule["when"].as_str().unwrap();
    for part in ["payload.amount >= 100000", "payload.currency == 'EUR'", "resource.startsWith('invoice:')"] {
        assert!(when.contains(part), "{part} in {when}");
    }
    publish(&s.admin, json!([rule])).await.assert_status(201);

    // The member who requested it may draft from their own action; not from others'.
    let mine = s.dev.post_empty(&format!("/v1/constitution/drafts/from-action/{exception}")).await;
    mine.assert_status(200);
    let owners = act(&s.ws.owner, "email.send", json!({"to": ["x@y.example"]}), "executed").await;
    s.dev.post_empty(&format!("/v1/constitution/drafts/from-action/{owners}")).await.assert_error(403, "permission_denied");
    s.admin.post_empty("/v1/constitution/drafts/from-action/act_01J00000000000000000000000").await.assert_error(404, "not_found");
    s.admin.post_empty("/v1/constitution/drafts/from-action/nope").await.assert_error(400, "invalid_id");
}

mod properties {
    use countersign::constitution::{self, AgentFacts, Facts, OnError, RequesterFacts, Rule};
    use countersign::gate::{self, Effect, Outcome, Policy, ToolKind, ToolRules};
    use countersign::simulation;
    use proptest::prelude::*;
    use serde_json::json;

    /// Conditions of every kind: true and false ones, ones that depend on the payload,
    /// ones that fail at run time (a missing field, a type error).
    fn arb_when() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("true".to_string()),
            Just("false".to_string()),
            (0i64..2000).prop_map(|n| format!("payload.amount > {n}")),
            Just("payload.missing > 1".to_string()),
            Just("payload.name + 1 > 2".to_string()),
            Just("tool == 'payments.charge'".to_string()),
            Just("confidence != null && confidence < 0.5".to_string()),
            Just("agent != null".to_string()),
            Just("payload.to.exists(r, r.endsWith('@rival.com'))".to_string()),
            Just("has(payload.to) && size(payload.to) > 1".to_string()),
        ];
        prop::collection::vec(atom, 1..3).prop_flat_map(|atoms| prop_oneof![Just(" && "), Just(" || ")].prop_map(move |op| atoms.join(op)))
    }

    fn arb_rule() -> impl Strategy<Value = (String, Effect, bool)> {
        (
            arb_when(),
            prop_oneof![Just(Effect::Allow), Just(Effect::RequireApproval), Just(Effect::RequireDual), Just(Effect::Deny)],
            any::<bool>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// No draft — any rules, any effects, any `on_error`, any tool policy a draft may
        /// set — makes an irreversible tool run without a human, or lowers what a cited
        /// rule demanded.
        #[test]
        fn no_draft_goes_below_the_irreversible_floor(
            specs in prop::collection::vec(arb_rule(), 0..6),
            policy in prop_oneof![Just(Policy::Auto), Just(Policy::Approve), Just(Policy::ApproveDual)],
            min in prop::option::of(0.0f64..1.0),
            confidence in prop::option::of(0.0f64..1.0),
            amount in 0i64..3000,
            name in prop_oneof![Just(json!("x")), Just(json!(3))],
            to in prop_oneof![Just(json!(["a@rival.com"])), Just(json!(["a@b.example", "c@d.example"])), Just(json!("not a list"))],
            agent in any::<bool>(),
        ) {
            let rules: Vec<Rule> = specs
                .iter()
                .enumerate()
                .map(|(i, (when, effect, lenient))| Rule {
                    id: format!("r{i}"),
                    title: format!("rule {i}"),
                    description: String::new(),
                    when: when.clone(),
                    effect: *effect,
                    on_error: if *lenient { OnError::NoMatch } else { OnError::FailClosed },
                })
                .collect();
            let compiled = constitution::compile(&rules, None).expect("the generated rules compile");
            // The draft sets the tool's policy; the irreversible floor refuses `auto`.
            let current = std::collections::HashMap::from([(
                "payments.charge".to_string(),
                ToolRules { name: "payments.charge".into(), kind: ToolKind::Write, irreversible: true, policy: Policy::Approve, min_confidence: None },
            )]);
            let draft: std::collections::BTreeMap<String, simulation::DraftTool> =
                serde_json::from_value(json!({"payments.charge": {"policy": policy, "min_confidence": min}})).unwrap();
            let tools = match simulation::draft_tools(&current, Some(&draft)) {
                Ok(t) => t,
                Err(e) => {
                    prop_assert_eq!(policy, Policy::Auto);
                    prop_assert_eq!(e.code, "irreversible_requires_approval");
                    // Even were it accepted, the gate itself would not let it run: below.
                    let mut t = current.clone();
                    t.get_mut("payments.charge").unwrap().policy = Policy::Auto;
                    t
                }
            };
            let tool = &tools["payments.charge"];
            let payload = json!({"amount": amount, "name": name, "to": to});
            let facts = Facts {
                tool: "payments.charge",
                payload: &payload,
                resource: None,
                agent: agent.then_some(AgentFacts { id: "tok_1", name: "a", owner: "usr_1" }),
                requester: RequesterFacts { id: "usr_1", email: "a@b.example", role: "member" },
                confidence,
                now: chrono::Utc::now(),
            };
            let verdict = compiled.evaluate(&facts);
            let d = gate::decide(&gate::Input {
                principal: "prop",
                is_agent: agent,
                in_scope: true,
                workspace_switch: None,
                tool_switch: None,
                agent_writes_enabled: true,
                tool,
                confidence,
                constitution: &verdict,
            });
            let required = match d.outcome {
                Outcome::Execute => 0,
                Outcome::NeedsApproval { required } => required,
                Outcome::Denied { .. } | Outcome::Blocked { .. } => 3,
            };
            prop_assert!(required >= 1, "an irreversible tool ran without a human: {:?}", d);
            match verdict.strongest() {
                Some(Effect::Deny) => prop_assert_eq!(required, 3),
                Some(Effect::RequireDual) => prop_assert!(required >= 2),
                _ => {}
            }
            // Every citation that carries an error is at least require_approval.
            for c in &verdict.citations {
                if c.error.is_some() {
                    prop_assert!(c.effect >= Effect::RequireApproval);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn what_if_pages_through_a_long_history_lists_at_most_a_thousand_and_counts_them_all() {
    use countersign::gate::Outcome;
    use countersign::store::{Actions, Origin, Store, WorkspaceId};

    let s = scene("whatiflong").await;
    s.ws.record_tool("crm.read", "read", "auto", false).await;
    // 2,500 recorded actions, written straight through the store (as the gate records them).
    let n = 2_500;
    let ws = WorkspaceId::trusted(s.ws.id.clone());
    let under = countersign::store::DecidedUnder {
        epoch: s.server.store.config_epoch().await.unwrap(),
        workspace_version: countersign::store::Tools::gate_context(&*s.server.store, &ws, "crm.read").await.unwrap().config_version,
    };
    let mut writes = Vec::new();
    for i in 0..n {
        let (store, ws, owner) = (s.server.store.clone(), ws.clone(), s.ws.owner_id.clone());
        writes.push(tokio::spawn(async move {
            let new = decided_action("crm.read", json!({"q": format!("query {i}"), "n": i}), &owner, None, Outcome::Execute, under);
            store.record_action(&ws, &Origin::system("test"), new).await.unwrap();
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    // Every read of an even `n` would need a human.
    let draft = json!({"rules": [rule("even", "payload.n % 2 == 0", "require_approval")]});
    let r = s.admin.post("/v1/simulations", json!({"draft": draft, "window": {"last": 100000}})).await;
    let b = r.assert_status(200);
    assert_eq!(b["totals"]["replayed"], n);
    assert_eq!(b["totals"]["changed"], n / 2);
    assert_eq!(b["totals"]["newly_need_approval"], n / 2);
    let listed: Vec<&str> = b["changes"].as_array().unwrap().iter().map(|c| c["action_id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 1000);
    assert_eq!(b["truncated"], true);
    assert!(listed.windows(2).all(|w| w[0] > w[1]), "newest first, each once");
    assert_eq!(b["window"]["complete"], true);
    // Across the page boundaries: the most recent 2,200 exactly, and of those the even ones
    // changed (the writes were concurrent, so count them from the list of actions).
    let r = s.admin.post("/v1/simulations", json!({"draft": draft, "window": {"last": 2200}})).await;
    let b = r.assert_status(200);
    assert_eq!(b["totals"]["replayed"], 2200);
    let mut newest = Vec::new();
    let mut before = String::new();
    while newest.len() < 2200 {
        let page = s.admin.get(&format!("/v1/actions?limit=200{before}")).await;
        let items = page.body["items"].as_array().unwrap().clone();
        before = format!("&before={}", items.last().unwrap()["id"].as_str().unwrap());
        newest.extend(items);
    }
    let even = newest.iter().filter(|a| a["payload"]["n"].as_u64().unwrap() % 2 == 0).count();
    assert_eq!(b["totals"]["changed"], even);
    assert_eq!(b["window"]["oldest_action_id"], newest[2199]["id"]);
    let all = &newest;
    assert_eq!(b["window"]["newest_action_id"], all[0]["id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_workspace_never_sees_or_is_decided_by_anothers_constitution() {
    let server = TestServer::start().await;
    let a = server.workspace("alpha").await;
    let b = server.workspace("beta").await;
    for ws in [&a, &b] {
        ws.record_tool("crm.read", "read", "auto", false).await;
    }
    publish(&b.owner, json!([rule("no-reads", "tool == 'crm.read'", "deny")])).await.assert_status(201);
    let b_action = submit(&b.owner, "crm.read", json!({"q": 1})).await;
    assert_eq!(b_action.body["status"], "denied");
    let b_action = b_action.body["id"].as_str().unwrap();

    // A's gate and A's reads know nothing of B's rules.
    assert_eq!(outcome(&submit(&a.owner, "crm.read", json!({"q": 1})).await), o("executed", 0, ""));
    assert_eq!(a.owner.get("/v1/constitution").await.body["version"], Value::Null);
    assert_eq!(a.owner.get("/v1/constitution/versions").await.body["items"], json!([]));
    a.owner.get("/v1/constitution/versions/1").await.assert_error(404, "not_found");
    // B's action is, to A, exactly a missing one.
    let foreign = a.owner.post_empty(&format!("/v1/constitution/drafts/from-action/{b_action}")).await;
    let missing = a
        .owner
        .post_empty(&format!("/v1/constitution/drafts/from-action/{}", countersign::ids::new_id(countersign::ids::IdKind::Action)))
        .await;
    foreign.assert_error(404, "not_found");
    missing.assert_error(404, "not_found");
    // A's what-if replays A's history only.
    let sim = a.owner.post("/v1/simulations", json!({"draft": {"rules": [rule("all", "true", "deny")]}})).await;
    let sim = sim.assert_status(200);
    assert_eq!(sim["totals"]["replayed"], 1);
    assert_ne!(sim["changes"][0]["action_id"], b_action);
    // And B's publish moved B only.
    assert_eq!(b.owner.get("/v1/constitution").await.body["version"], 1);
}
