//! PostgreSQL only: row-level security seen through raw connections, the append-only audit
//! table under each role, `admin migrate` and the roles `serve` refuses, and two replicas
//! on one database behaving as one server.
//!
//! On SQLite there is no second role to fence and no second replica: each test says it is
//! skipped, and why, and passes. `COUNTERSIGN_TEST_STORE=postgres` runs them (`.ci/run`
//! does).

use std::time::Duration;

use countersign::store::Approvals;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::*;

/// Returns early (saying so) unless the suite runs on PostgreSQL.
macro_rules! postgres_only {
    () => {
        if !on_postgres() {
            eprintln!("skipped on SQLite: this test needs PostgreSQL (run with COUNTERSIGN_TEST_STORE=postgres)");
            return;
        }
    };
}

/// Every table row-level security fences: each workspace-owned table (and `workspaces`).
const FENCED: &[&str] = &[
    "workspaces",
    "roles",
    "members",
    "sessions",
    "tokens",
    "audit_events",
    "audit_heads",
    "audit_checkpoints",
    "tools",
    "killswitches",
    "actions",
    "approvals",
    "approval_decisions",
    "idempotency_keys",
    "webhooks",
    "webhook_deliveries",
];

fn fence_column(table: &str) -> &'static str {
    if table == "workspaces" { "id" } else { "workspace_id" }
}

/// Something in every fenced table of a workspace: a member, a custom role, a token, a
/// tool, a kill switch, actions with an approval and a decision, an idempotency key, a
/// webhook with a delivery.
async fn populate(server: &TestServer, name: &str) -> Workspace {
    let ws = server.workspace(name).await;
    let (_, admin) = ws.member(server, "admin").await;
    let r = ws.owner.post("/v1/roles", json!({"name": "approver", "permissions": ["approvals:decide", "approvals:read"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    Workspace::token(&ws.owner, &["actions:submit"], &["*"]).await;
    let hook = ws.owner.post("/v1/webhooks", json!({"url": "http://127.0.0.1:9/hook", "event_types": ["action.*"]})).await;
    assert_eq!(hook.status, 201, "{}", hook.body);
    ws.record_tool("crm.read", "read", "auto", false).await;
    ws.record_tool("email.send", "write", "approve", false).await;
    let r = ws
        .owner
        .send(
            reqwest::Method::POST,
            "/v1/actions",
            Some(json!({"tool": "crm.read", "payload": {}}).to_string().into_bytes()),
            &[("Idempotency-Key", "k1")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let pending = submit(&ws.owner, "email.send", json!({"to": "x@example.com"})).await;
    let approval = pending.body["approval_id"].as_str().unwrap();
    let d = admin
        .post(
            &format!("/v1/approvals/{approval}/decisions"),
            json!({"decision": "approve", "payload_sha256": pending.body["payload_sha256"]}),
        )
        .await;
    assert_eq!(d.status, 200, "{}", d.body);
    ws.owner.put("/v1/killswitches/tools/email.send", json!({"engaged": true, "reason": "drill"})).await.assert_status(200);
    // A signed checkpoint of the head, kept.
    ws.owner.get("/v1/audit/checkpoints/latest").await.assert_status(200);
    ws
}

/// Rows per fenced table, as `role` sees them in one transaction after `setup` statements.
fn counts(url: &str, setup: &'static str, only: Option<&str>) -> Vec<(String, i64)> {
    let only = only.map(str::to_string);
    TestDb::with(url, move |c| {
        let mut tx = c.transaction().unwrap();
        if !setup.is_empty() {
            tx.batch_execute(setup).unwrap();
        }
        FENCED
            .iter()
            .map(|t| {
                let sql = match &only {
                    None => format!("SELECT COUNT(*) FROM {t}"),
                    Some(ws) => format!("SELECT COUNT(*) FROM {t} WHERE {} = '{ws}'", fence_column(t)),
                };
                (t.to_string(), tx.query_one(&sql, &[]).unwrap().get::<_, i64>(0))
            })
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn row_level_security_shows_a_raw_connection_nothing_but_its_own_workspace() {
    postgres_only!();
    let server = TestServer::start().await;
    let a = populate(&server, "alpha").await;
    let b = populate(&server, "bravo").await;
    let db = server.db.clone().unwrap();

    // Every table with a workspace column is fenced, and forced (its owner is fenced too):
    // a table added by a later migration without a fence fails here.
    let fenced: Vec<(String, bool, bool)> = TestDb::with(&db.superuser_url, |c| {
        c.query(
            "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND (EXISTS (SELECT 1 FROM information_schema.columns k \
               WHERE k.table_schema = 'public' AND k.table_name = c.relname AND k.column_name = 'workspace_id') OR c.relname = 'workspaces') \
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    });
    let mut expected: Vec<&str> = FENCED.to_vec();
    expected.sort();
    assert!(fenced.len() >= expected.len(), "{fenced:?}");
    for (table, rls, forced) in &fenced {
        assert!(*rls && *forced, "{table} is not fenced by forced row-level security");
    }
    for t in &expected {
        assert!(fenced.iter().any(|(n, _, _)| n == t), "{t} is missing from {fenced:?}");
    }

    // As the server's role, with no workspace set: nothing, from every table.
    for (table, n) in counts(&db.server_url, "", None) {
        assert_eq!(n, 0, "{table}: {n} rows visible with no workspace set");
    }
    // Set to A: every one of A's tables has rows, and not one of B's rows shows.
    let as_a = "SELECT set_config('app.workspace_id', current_setting('app.a'), true)";
    let setup_a: &'static str = Box::leak(format!("SET LOCAL app.a = '{}'; {as_a}", a.id).into_boxed_str());
    for (table, n) in counts(&db.server_url, setup_a, Some(&a.id)) {
        assert!(n > 0, "{table}: A sees none of its own rows");
    }
    for (table, n) in counts(&db.server_url, setup_a, Some(&b.id)) {
        assert_eq!(n, 0, "{table}: A sees {n} of B's rows");
    }
    // The owner of the tables is fenced the same way (FORCE ROW LEVEL SECURITY).
    for (table, n) in counts(&db.owner_url, "", None) {
        assert_eq!(n, 0, "{table}: the owner sees {n} rows with no workspace set");
    }
    for (table, n) in counts(&db.owner_url, setup_a, Some(&b.id)) {
        assert_eq!(n, 0, "{table}: the owner fenced to A sees {n} of B's rows");
    }

    // Writes are fenced too: fenced to A, B's rows cannot be changed, not even with the
    // cross-workspace read opt-in, and a row for B cannot be written.
    let (b_id, a_id) = (b.id.clone(), a.id.clone());
    let refused = TestDb::with(&db.server_url, move |c| {
        let mut tx = c.transaction().unwrap();
        tx.execute("SELECT set_config('app.workspace_id', $1, true), set_config('app.all_workspaces', 'on', true)", &[&a_id]).unwrap();
        let seen = tx.query_one("SELECT COUNT(*) FROM members WHERE workspace_id = $1", &[&b_id]).unwrap().get::<_, i64>(0);
        let changed = tx.execute("UPDATE members SET name = 'pwned' WHERE workspace_id = $1", &[&b_id]).unwrap();
        let inserted = tx
            .execute("INSERT INTO killswitches (workspace_id, target, engaged, reason) VALUES ($1, 'workspace', TRUE, 'from A')", &[&b_id])
            .map_err(|e| e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default());
        (seen, changed, inserted)
    });
    assert!(refused.0 > 0, "the opt-in reads across workspaces");
    assert_eq!(refused.1, 0, "an update of B's rows fenced to A changed something");
    assert!(refused.2.as_ref().is_err_and(|m| m.contains("row-level security")), "{:?}", refused.2);

    // And nothing of the above leaked into B through the API.
    let members = b.owner.get("/v1/members").await;
    assert!(!members.text.contains("pwned"), "{}", members.text);
    assert_eq!(b.owner.get("/v1/killswitches").await.body["workspace"]["engaged"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_table_refuses_update_delete_and_truncate_for_the_server_and_the_owner() {
    postgres_only!();
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let before = ws.owner.all_events().await;
    let db = server.db.clone().unwrap();
    for (who, url, expected) in [
        ("server", &db.server_url, "permission denied"),
        ("owner", &db.owner_url, "append-only"),
        ("superuser", &db.superuser_url, "append-only"),
    ] {
        let ws_id = ws.id.clone();
        let errors: Vec<String> = TestDb::with(url, move |c| {
            ["UPDATE audit_events SET outcome = 'failure'", "DELETE FROM audit_events", "TRUNCATE audit_events"]
                .iter()
                .map(|stmt| {
                    let mut tx = c.transaction().unwrap();
                    tx.execute("SELECT set_config('app.workspace_id', $1, true)", &[&ws_id]).unwrap();
                    match tx.batch_execute(stmt) {
                        Ok(()) => format!("{stmt}: accepted"),
                        Err(e) => e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string()),
                    }
                })
                .collect()
        });
        for e in &errors {
            assert!(e.contains(expected), "as the {who}: {e}");
        }
    }
    // The server's role may append and read, nothing else.
    let grants: Vec<String> = TestDb::with(&db.superuser_url, |c| {
        c.query(
            "SELECT privilege_type::text FROM information_schema.role_table_grants WHERE table_name = 'audit_events' AND grantee = 'countersign_server' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    });
    assert_eq!(grants, ["INSERT", "SELECT"]);
    assert_eq!(ws.owner.all_events().await, before);
    assert_eq!(ws.owner.verify().await["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_migrate_builds_the_schema_once_and_serve_refuses_unfenced_roles() {
    postgres_only!();
    let db = Cluster::get().empty();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = bin_command(None).args(args).env("RUST_LOG", "warn").output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The server's role cannot serve a database nobody has migrated, and says what to do.
    let (code, _, err) = run(&["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0", "--database-url", &db.server_url]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("countersign admin migrate"), "{err}");
    // Nor can it migrate: it owns nothing and may create nothing.
    let (code, _, err) = run(&["admin", "migrate", "--database-url", &db.server_url]);
    assert_eq!(code, 1, "{err}");
    // The owner migrates: every version, then nothing to do.
    let (code, out, err) = run(&["admin", "migrate", "--database-url", &db.owner_url]);
    assert_eq!(code, 0, "{out}{err}");
    let latest = countersign::store::postgres::MIGRATIONS.len();
    assert_eq!(latest, countersign::store::sqlite::MIGRATIONS.len(), "both stores have every migration");
    for m in countersign::store::postgres::MIGRATIONS {
        assert!(out.contains(&format!("Applied migration {} ({})", m.version, m.name)), "{out}");
    }
    assert!(out.contains(&format!("now at schema version {latest} (was 0)")), "{out}");
    let (code, out, _) = run(&["admin", "migrate", "--database-url", &db.owner_url]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("at schema version {latest}: nothing to do")), "{out}");
    // `serve` refuses roles that row-level security would not fence.
    let (code, _, err) = run(&["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0", "--database-url", &db.superuser_url]);
    assert_eq!(code, 1);
    assert!(err.contains("superuser"), "{err}");
    let (code, _, err) = run(&["serve", "--data-dir", &dir, "--listen", "127.0.0.1:0", "--database-url", &db.owner_url]);
    assert_eq!(code, 1);
    assert!(err.contains("owns the tables"), "{err}");
    // The server's role can now set up a workspace, and the chain verifies.
    let mut init = bin_command(None)
        .args(["admin", "init", "--data-dir", &dir, "--workspace", "acme", "--email", "o@acme.test", "--database-url", &db.server_url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut init.stdin.take().unwrap(), format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = init.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, out, err) = run(&["audit", "verify", "--database-url", &db.server_url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("workspace acme") && out.contains("ok, 2 events"), "{out}");
}

/// Two replicas on one database, and a workspace with an agent, an approver and tools.
struct Pair {
    a: TestServer,
    b: TestServer,
    ws: Workspace,
    /// The agent's token, and an admin's session, usable on either replica.
    agent: String,
    admin: String,
}

async fn pair() -> Pair {
    let a = TestServer::start().await;
    let b = a.replica().await;
    let ws = a.workspace("acme").await;
    let (_, dev) = ws.member(&a, "member").await;
    let (_, agent) = Workspace::token(&dev, &["actions:submit"], &["*"]).await;
    let (_, admin) = ws.member(&a, "admin").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    ws.record_tool("email.send", "write", "approve", false).await;
    ws.agent_writes(true).await;
    let admin = admin.token.clone().unwrap();
    Pair { a, b, ws, agent, admin }
}

#[tokio::test(flavor = "multi_thread")]
async fn of_concurrent_executions_through_two_replicas_exactly_one_runs() {
    postgres_only!();
    let p = pair().await;
    let (agent_a, agent_b) = (p.a.with_token(&p.agent), p.b.with_token(&p.agent));
    let payload = json!({"to": ["a@example.com"], "subject": "once"});
    let r = submit(&agent_a, "email.send", payload.clone()).await;
    let (approval, action) = (r.body["approval_id"].as_str().unwrap().to_string(), r.body["id"].as_str().unwrap().to_string());
    // Approved through the other replica.
    let d = p
        .b
        .with_token(&p.admin)
        .post(&format!("/v1/approvals/{approval}/decisions"), json!({"decision": "approve", "payload_sha256": r.body["payload_sha256"]}))
        .await;
    assert_eq!(d.status, 200, "{}", d.body);
    let attempts: Vec<_> = (0..32)
        .map(|i| {
            let api = if i % 2 == 0 { agent_a.clone() } else { agent_b.clone() };
            let (action, payload) = (action.clone(), payload.clone());
            tokio::spawn(async move { api.post(&format!("/v1/actions/{action}/execute"), json!({"payload": payload})).await })
        })
        .collect();
    let mut ran = Vec::new();
    for (i, a) in attempts.into_iter().enumerate() {
        let r = a.await.unwrap();
        match r.status {
            200 => ran.push(i % 2),
            409 => assert_eq!(r.code(), "approval_consumed", "{}", r.body),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(ran.len(), 1, "exactly one execution ran");
    let types = p.ws.owner.event_types().await;
    assert_eq!(types.iter().filter(|t| *t == "approval.consumed").count(), 1);
    assert_eq!(types.iter().filter(|t| *t == "action.executed").count(), 1);
    assert_eq!(p.ws.owner.verify().await["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_switch_engaged_through_one_replica_blocks_the_next_call_through_the_other() {
    postgres_only!();
    let p = pair().await;
    let agent_b = p.b.with_token(&p.agent);
    // B has authenticated this token and read this tool's gate context: both are cached.
    for i in 0..3 {
        assert_eq!(submit(&agent_b, "crm.read", json!({"i": i})).await.body["status"], "executed");
    }
    let on = p.a.with_token(&p.admin).put("/v1/killswitches/workspace", json!({"engaged": true, "reason": "incident 7"})).await;
    assert_eq!(on.body["engaged"], true, "{}", on.body);
    // The very next call through B is blocked.
    let blocked = submit(&agent_b, "crm.read", json!({"i": 3})).await;
    assert_eq!(blocked.body["status"], "blocked", "{}", blocked.body);
    assert_eq!(blocked.body["code"], "workspace_kill_switch");
    // Lifted through B, the next call through A runs.
    p.b.with_token(&p.admin).put("/v1/killswitches/workspace", json!({"engaged": false, "reason": "over"})).await.assert_status(200);
    assert_eq!(submit(&p.a.with_token(&p.agent), "crm.read", json!({"i": 4})).await.body["status"], "executed");
    // The same for a token revoked through A: B refuses it on the very next call.
    let (token_id, secret) = Workspace::token(&p.ws.owner, &["actions:submit"], &["*"]).await;
    let on_b = p.b.with_token(&secret);
    assert_eq!(submit(&on_b, "crm.read", json!({})).await.status, 201);
    p.ws.owner.delete(&format!("/v1/tokens/{token_id}")).await.assert_status(200);
    submit(&on_b, "crm.read", json!({})).await.assert_error(401, "token_revoked");
}

#[tokio::test(flavor = "multi_thread")]
async fn chains_stay_whole_when_both_replicas_append_to_two_workspaces_at_once() {
    postgres_only!();
    let a = TestServer::start().await;
    let b = a.replica().await;
    let one = a.workspace("one").await;
    let two = a.workspace("two").await;
    for ws in [&one, &two] {
        ws.record_tool("crm.read", "read", "auto", false).await;
    }
    let before: Vec<usize> = vec![one.owner.all_events().await.len(), two.owner.all_events().await.len()];
    // Both replicas, both workspaces, all at once: batches on each replica mix the two
    // workspaces, so the replicas' transactions contend for both chain heads.
    let per = 40;
    let mut calls = Vec::new();
    for i in 0..per {
        for (w, ws) in [&one, &two].into_iter().enumerate() {
            for server in [&a, &b] {
                let api = ws.owner.at(&server.base);
                calls.push(tokio::spawn(async move { submit(&api, "crm.read", json!({"i": i, "w": w})).await }));
            }
        }
    }
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.body["status"], "executed");
    }
    for (k, ws) in [&one, &two].into_iter().enumerate() {
        let events = ws.owner.all_events().await;
        assert_eq!(events.len(), before[k] + 2 * per * 2, "two events per action");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["seq"], (i + 1) as i64);
            if i > 0 {
                assert_eq!(e["prev_hash"], events[i - 1]["hash"]);
            }
        }
        let v = ws.owner.verify().await;
        assert_eq!(v["ok"], true, "{v}");
    }
    let (code, out, err) = a.cli_verify();
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.contains(": ok, ")).count(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_through_both_replicas_makes_one_action() {
    postgres_only!();
    let p = pair().await;
    let body = json!({"tool": "crm.read", "payload": {"q": "x"}}).to_string().into_bytes();
    for round in 0..12 {
        let key = format!("race-{round}");
        let calls: Vec<_> = [&p.a, &p.b]
            .into_iter()
            .map(|s| {
                let (api, body, key) = (s.with_token(&p.agent), body.clone(), key.clone());
                tokio::spawn(async move {
                    api.send(reqwest::Method::POST, "/v1/actions", Some(body), &[("Idempotency-Key", key.as_str())]).await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for c in calls {
            let r = c.await.unwrap();
            // Never a generic conflict, never a second action: a replay of the first answer.
            assert_eq!(r.status, 201, "{}", r.body);
            ids.push(r.body["id"].as_str().unwrap().to_string());
        }
        assert_eq!(ids[0], ids[1], "round {round}: two actions for one key");
    }
    let list = p.ws.owner.get("/v1/actions?tool=crm.read&limit=200").await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiry_is_recorded_once_when_both_replicas_sweep() {
    postgres_only!();
    let p = pair().await;
    p.ws.tool(
        "email.send",
        json!({"kind": "write", "irreversible": false, "policy": "approve", "approval_ttl_seconds": 60, "connector": {"type": "record"}}),
    )
    .await;
    let mut approvals = Vec::new();
    for i in 0..5 {
        let r = submit(&p.a.with_token(&p.agent), "email.send", json!({"i": i})).await;
        approvals.push(r.body["approval_id"].as_str().unwrap().to_string());
    }
    // One clock for both replicas (as in production, where they share real time).
    p.a.clock.advance(chrono::Duration::seconds(61));
    // Both replicas sweep at once (and their background sweepers may too).
    let (x, y) = tokio::join!(p.a.store.expire_due(200), p.b.store.expire_due(200));
    x.unwrap();
    y.unwrap();
    let admin = p.b.with_token(&p.admin);
    for id in &approvals {
        assert_eq!(admin.get(&format!("/v1/approvals/{id}")).await.body["state"], "expired");
    }
    let expired: Vec<Value> = p.ws.owner.all_events().await.into_iter().filter(|e| e["event_type"] == "approval.expired").collect();
    assert_eq!(expired.len(), approvals.len(), "one expiry event per approval: {expired:?}");
    assert_eq!(p.ws.owner.verify().await["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_console_on_one_replica_sees_events_written_through_the_other() {
    postgres_only!();
    let p = pair().await;
    let owner_a = p.ws.owner.clone();
    let last = owner_a.all_events().await.last().unwrap()["seq"].as_i64().unwrap();
    // A console's stream on replica A, from where it is now.
    let resp = reqwest::Client::new()
        .get(format!("{}/v1/audit/stream", p.a.base))
        .bearer_auth(owner_a.token.as_deref().unwrap())
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = resp.bytes_stream().eventsource();
    // Writes through replica B: actions, then a kill switch.
    let agent_b = p.b.with_token(&p.agent);
    for i in 0..3 {
        submit(&agent_b, "crm.read", json!({"i": i})).await;
    }
    p.b.with_token(&p.admin)
        .put("/v1/killswitches/tools/email.send", json!({"engaged": true, "reason": "seen everywhere"}))
        .await
        .assert_status(200);
    let mut seen = Vec::new();
    while seen.len() < 7 {
        let e = tokio::time::timeout(Duration::from_secs(10), events.next()).await.expect("an event within 10 s").unwrap().unwrap();
        if e.event != "audit" {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        seen.push((v["seq"].as_i64().unwrap(), v["event_type"].as_str().unwrap().to_string(), v["data"].clone()));
    }
    let seqs: Vec<i64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(seqs, ((last + 1)..=(last + 7)).collect::<Vec<_>>(), "no gap, no repeat");
    let types: Vec<&str> = seen.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(types.iter().filter(|t| **t == "action.executed").count(), 3, "{types:?}");
    assert_eq!(types.last(), Some(&"killswitch.engaged"));
    assert_eq!(seen.last().unwrap().2["reason"], "seen everywhere");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_switch_engaged_on_one_replica_stops_what_another_decided_before_it() {
    postgres_only!();
    let a = TestServer::start().await;
    let ws = a.workspace("acme").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    let (_, secret) = Workspace::token(&ws.owner, &["actions:submit"], &["*"]).await;
    let agent = a.with_token(&secret);
    let b = a.replica().await;
    let owner_b = b.sign_in("owner@acme.test").await;
    let db = a.db.clone().unwrap();

    // Someone holds the workspace's chain head, so both writes below queue behind it, in
    // order: first the switch (on replica B), then an action replica A decided meanwhile,
    // under the switch as it was (B's change is not committed yet).
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (locked, is_locked) = std::sync::mpsc::channel::<()>();
    let (url, ws_id) = (db.superuser_url.clone(), ws.id.clone());
    let holder = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let mut tx = c.transaction().unwrap();
        tx.query("SELECT seq FROM audit_heads WHERE workspace_id = $1 FOR UPDATE", &[&ws_id]).unwrap();
        locked.send(()).unwrap();
        held.recv().unwrap();
        tx.commit().unwrap();
    });
    is_locked.recv().unwrap();
    let waiting = |n: i64| {
        let url = db.superuser_url.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let url = url.clone();
                let queued: i64 =
                    TestDb::with(&url, |c| c.query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[]).unwrap().get(0));
                if queued >= n {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "{n} writes never queued ({queued})");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let engage = tokio::spawn({
        let owner_b = owner_b.clone();
        async move { owner_b.put("/v1/killswitches/tools/crm.read", json!({"engaged": true, "reason": "incident 9"})).await }
    });
    waiting(1).await;
    let action = tokio::spawn({
        let agent = agent.clone();
        async move { submit(&agent, "crm.read", json!({"q": "during"})).await }
    });
    waiting(2).await;
    release.send(()).unwrap();
    holder.join().unwrap();

    engage.await.unwrap().assert_status(200);
    let r = action.await.unwrap();
    r.assert_error(409, "rules_changed");
    // The log agrees: nothing ran after the switch, on either replica.
    let events = ws.owner.all_events().await;
    let engaged = events.iter().position(|e| e["event_type"] == "killswitch.engaged").expect("the switch is on the log");
    assert!(!events[engaged..].iter().any(|e| e["event_type"] == "action.executed"), "an action ran after the switch");
    let again = submit(&agent, "crm.read", json!({"q": "after"})).await;
    assert_eq!(again.body["code"], "tool_kill_switch", "{}", again.body);
}
