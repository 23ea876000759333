//! The audit chain: it verifies after a mixed workload, records every change, never holds
//! a secret, refuses UPDATE and DELETE, and names the exact `seq` where out-of-band
//! tampering broke it: through the API, the command line, and an exported file.

use serde_json::{Value, json};

use countersign::secrets;

use crate::support::*;

/// Everything secret a workload handled, to look for in the log afterwards.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn add(&mut self, s: impl Into<String>) {
        let s = s.into();
        self.0.push(secrets::storage_hash(&s));
        self.0.push(s);
    }
    fn add_api(&mut self, api: &Api) {
        self.add(api.token.clone().expect("a signed-in client"));
    }
    #[track_caller]
    fn assert_absent(&self, what: &str, text: &str) {
        assert!(!text.is_empty(), "{what} is empty");
        for s in &self.0 {
            assert!(!text.contains(s.as_str()), "{what} contains a secret ({}…)", &s[..8]);
        }
    }
}

const MEMBER_PASSWORD: &str = "a different passphrase 42";
const WRONG_PASSWORD: &str = "guessing wrongly 123";

/// A workload that touches every kind of change the log records. Returns the secrets
/// it saw and the event types it must have produced.
async fn mixed_workload(server: &TestServer, ws: &Workspace) -> Secrets {
    let mut s = Secrets::default();
    s.add(PASSWORD);
    s.add(MEMBER_PASSWORD);
    s.add(WRONG_PASSWORD);
    s.add_api(&ws.owner);
    let domain = format!("{}.test", ws.name);
    let r = ws.owner.post("/v1/members", json!({"email": format!("ann@{domain}"), "password": MEMBER_PASSWORD, "role": "admin"})).await;
    let ann_id = r.assert_status(201)["id"].as_str().unwrap().to_string();
    let ann = {
        let r = server.anon().post("/v1/sessions", json!({"email": format!("ann@{domain}"), "password": MEMBER_PASSWORD})).await;
        server.with_token(r.assert_status(201)["token"].as_str().unwrap())
    };
    s.add_api(&ann);
    let (bob_id, bob) = ws.member(server, "member").await;
    s.add_api(&bob);
    server
        .anon()
        .post("/v1/sessions", json!({"email": format!("ann@{domain}"), "password": WRONG_PASSWORD}))
        .await
        .assert_error(401, "invalid_credentials");

    let role = ws.owner.post("/v1/roles", json!({"name": "oncall", "permissions": ["killswitch:read", "killswitch:engage"]})).await;
    let role_id = role.assert_status(201)["id"].as_str().unwrap().to_string();
    ws.owner.patch(&format!("/v1/roles/{role_id}"), json!({"permissions": ["killswitch:read"]})).await.assert_status(200);
    let spare = ws.owner.post("/v1/roles", json!({"name": "spare", "permissions": []})).await.assert_status(201)["id"]
        .as_str()
        .unwrap()
        .to_string();
    ws.owner.delete(&format!("/v1/roles/{spare}")).await.assert_status(204);
    ws.owner.patch(&format!("/v1/members/{bob_id}"), json!({"role": "oncall"})).await.assert_status(200);

    let (t1, secret1) = Workspace::token(&ann, &["members:read"], &["*"]).await;
    s.add(&secret1);
    ann.as_token(&secret1).get("/v1/members").await.assert_status(200);
    let rotated = ann.post_empty(&format!("/v1/tokens/{t1}/rotate")).await.assert_status(200)["token"].as_str().unwrap().to_string();
    s.add(&rotated);
    let (t2, secret2) = Workspace::token(&ws.owner, &["audit:read"], &["email.*"]).await;
    s.add(&secret2);
    ws.owner.delete(&format!("/v1/tokens/{t2}")).await.assert_status(200);

    ws.owner.patch("/v1/settings", json!({"agent_writes_enabled": true, "approval_ttl_seconds": 600})).await.assert_status(200);
    ws.owner.patch(&format!("/v1/members/{bob_id}"), json!({"status": "deactivated"})).await.assert_status(200);
    ws.owner.patch(&format!("/v1/members/{bob_id}"), json!({"status": "active"})).await.assert_status(200);
    ann.delete("/v1/sessions/current").await.assert_status(204);
    ws.owner.post("/v1/workspace/transfer", json!({"member_id": ann_id})).await.assert_status(200);
    s
}

/// Every event type the workload above must leave.
const WORKLOAD_EVENTS: &[&str] = &[
    "workspace.created",
    "member.created",
    "session.created",
    "session.failed",
    "role.created",
    "role.updated",
    "role.deleted",
    "member.role_changed",
    "token.created",
    "token.rotated",
    "token.revoked",
    "settings.updated",
    "member.deactivated",
    "member.reactivated",
    "session.revoked",
    "workspace.ownership_transferred",
];

/// Every row of the audit table, as text, straight from the store (the file, or the
/// database as its superuser).
fn raw_audit_rows(server: &TestServer) -> String {
    let rows = server.out_of_band().dump("audit_events");
    assert!(!rows.trim().is_empty(), "the audit table was read");
    rows
}

fn export(server: &TestServer, workspace: &str, format: &str, name: &str) -> std::path::PathBuf {
    let path = server.dir.join(name);
    let (code, out, err) = server.cli(&[
        "audit",
        "export",
        "--data-dir",
        server.dir.to_str().unwrap(),
        "--workspace",
        workspace,
        "--format",
        format,
        "--output",
        path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "export failed: {out}{err}");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_mixed_workload_the_chain_verifies_records_every_change_and_holds_no_secret() {
    let server = TestServer::start().await;
    let ws = server.workspace("mixed").await;
    let other = server.workspace("other").await;
    let secrets = mixed_workload(&server, &ws).await;
    let viewer = ws.owner.clone();

    let events = viewer.all_events().await;
    let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    for t in WORKLOAD_EVENTS {
        assert!(types.contains(t), "no {t} event in {types:?}");
    }
    // Gapless, linked, each in its own workspace, each with the fields the brief names.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], (i + 1) as i64, "{e}");
        assert_eq!(e["workspace_id"], ws.id.as_str());
        assert!(e["id"].as_str().unwrap().starts_with("evt_"));
        assert!(e["ts"].as_str().unwrap().ends_with('Z'));
        assert!(["user", "agent", "system"].contains(&e["actor"]["kind"].as_str().unwrap()), "{e}");
        assert!(["console", "api", "agent", "system"].contains(&e["via"].as_str().unwrap()), "{e}");
        assert_eq!(e["hash"].as_str().unwrap().len(), 64);
        if i > 0 {
            assert_eq!(e["prev_hash"], events[i - 1]["hash"], "seq {} does not link to its predecessor", i + 1);
        }
    }
    let failed = events.iter().find(|e| e["event_type"] == "session.failed").unwrap();
    assert_eq!(failed["outcome"], "failure");

    let v = viewer.verify().await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["events"], events.len() as u64);
    assert_eq!(v["head_seq"], events.len() as u64);
    assert_eq!(v["head_hash"], events.last().unwrap()["hash"]);
    assert!(v.get("first_broken_seq").is_none(), "{v}");
    assert_eq!(other.owner.verify().await["ok"], true);

    // The real binary agrees, on the live data directory.
    let (code, out, err) = server.cli_verify();
    assert_eq!(code, 0, "audit verify: {out}{err}");
    assert!(out.contains(&format!("ok, {} events", events.len())), "{out}");

    // No secret anywhere: not in the API's pages, the exports, or the raw table.
    secrets.assert_absent("the audit API", &serde_json::to_string(&events).unwrap());
    let jsonl = std::fs::read_to_string(export(&server, "mixed", "jsonl", "mixed.jsonl")).unwrap();
    secrets.assert_absent("the JSONL export", &jsonl);
    let csv = std::fs::read_to_string(export(&server, "mixed", "csv", "mixed.csv")).unwrap();
    secrets.assert_absent("the CSV export", &csv);
    secrets.assert_absent("the audit_events table", &raw_audit_rows(&server));
    assert_eq!(csv.lines().count(), events.len() + 1, "a header and one row per event");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_refuses_update_and_delete_on_audit_events() {
    let server = TestServer::start().await;
    let ws = server.workspace("triggers").await;
    let before = ws.owner.all_events().await;
    // Out of band, as the file's holder or the database's superuser: the triggers refuse.
    let mut db = server.out_of_band();
    let update = db.execute("UPDATE audit_events SET data = '{}' WHERE seq = 1", &[], false);
    assert!(update.unwrap_err().contains("append-only"));
    let delete = db.execute("DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)", &[], false);
    assert!(delete.unwrap_err().contains("append-only"));
    let wipe = db.execute("DELETE FROM audit_events", &[], false);
    assert!(wipe.is_err());
    drop(db);
    assert_eq!(ws.owner.all_events().await, before);
    assert_eq!(ws.owner.verify().await["ok"], true);
}

/// Asserts the API and the command line both say the chain breaks at exactly `seq`.
async fn assert_broken_at(server: &TestServer, ws: &Workspace, seq: i64) {
    let v = ws.owner.verify().await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["first_broken_seq"], seq, "{v}");
    assert_eq!(v["head_seq"], seq - 1, "the last sound link: {v}");
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    let (code, out, err) = server.cli_verify();
    assert_eq!(code, 3, "audit verify should fail with 3: {out}{err}");
    assert!(out.contains(&format!("BROKEN at seq {seq}:")), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_changed_out_of_band_is_named_by_its_seq() {
    let server = TestServer::start().await;
    let ws = server.workspace("tamper").await;
    let untouched = server.workspace("bystander").await;
    mixed_workload(&server, &ws).await;
    let events = ws.owner.all_events().await;
    let target = events.iter().find(|e| e["event_type"] == "member.role_changed").unwrap()["seq"].as_i64().unwrap();
    assert!(target > 1 && target < events.len() as i64);

    // Someone with the database in hand (append-only triggers out of the way) makes the
    // role change say `owner`.
    let mut data = events[(target - 1) as usize]["data"].clone();
    data["after"] = json!("owner");
    let n = server
        .out_of_band()
        .execute(
            "UPDATE audit_events SET data = $1 WHERE workspace_id = $2 AND seq = $3",
            &[Raw::Text(data.to_string()), Raw::Text(ws.id.clone()), Raw::Int(target)],
            true,
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_broken_at(&server, &ws, target).await;
    // The other workspace's chain is not affected.
    assert_eq!(untouched.owner.verify().await["ok"], true);
    let dir = server.dir.to_str().unwrap().to_string();
    let (code, out, _) = server.cli(&["audit", "verify", "--data-dir", &dir, "--workspace", "bystander"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rehashed_forgery_breaks_the_next_link() {
    let server = TestServer::start().await;
    let ws = server.workspace("forge").await;
    mixed_workload(&server, &ws).await;
    let events = ws.owner.all_events().await;
    let target = events.iter().find(|e| e["event_type"] == "token.revoked").unwrap()["seq"].as_i64().unwrap();
    // Change the event and recompute its own hash correctly: the next event's prev_hash
    // still names the original.
    let mut forged: countersign::audit::AuditEvent = serde_json::from_value(events[(target - 1) as usize].clone()).unwrap();
    forged.outcome = "failure".into();
    forged.hash = forged.compute_hash();
    let n = server
        .out_of_band()
        .execute(
            "UPDATE audit_events SET outcome = $1, hash = $2 WHERE workspace_id = $3 AND seq = $4",
            &[Raw::Text(forged.outcome.clone()), Raw::Text(forged.hash.clone()), Raw::Text(ws.id.clone()), Raw::Int(target)],
            true,
        )
        .unwrap();
    assert_eq!(n, 1);
    assert_broken_at(&server, &ws, target + 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_event_is_caught_in_the_middle_and_at_the_end() {
    let server = TestServer::start().await;
    let ws = server.workspace("gone").await;
    mixed_workload(&server, &ws).await;
    let last = ws.owner.all_events().await.len() as i64;
    let mut db = server.out_of_band();
    // The last event: the chain head still remembers it.
    let n = db
        .execute("DELETE FROM audit_events WHERE workspace_id = $1 AND seq = $2", &[Raw::Text(ws.id.clone()), Raw::Int(last)], true)
        .unwrap();
    assert_eq!(n, 1);
    assert_broken_at(&server, &ws, last).await;
    // One in the middle: the gap is named.
    let n = db.execute("DELETE FROM audit_events WHERE workspace_id = $1 AND seq = 5", &[Raw::Text(ws.id.clone())], true).unwrap();
    assert_eq!(n, 1);
    drop(db);
    assert_broken_at(&server, &ws, 5).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exported_jsonl_file_verifies_offline_and_a_changed_line_is_named() {
    let server = TestServer::start().await;
    let ws = server.workspace("export").await;
    mixed_workload(&server, &ws).await;
    let events = ws.owner.all_events().await;
    let path = export(&server, "export", "jsonl", "export.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len());
    for (line, event) in lines.iter().zip(&events) {
        assert_eq!(&serde_json::from_str::<Value>(line).unwrap(), event, "the export differs from the API");
    }
    // Offline: the server can be gone.
    let mut server = server;
    server.stop().await;
    let file = path.to_str().unwrap().to_string();
    let (code, out, err) = server.cli(&["audit", "verify", "--file", &file]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("ok, {} events", events.len())), "{out}");

    // Change one field on one line.
    let target = 7usize;
    let mut event: Value = serde_json::from_str(lines[target - 1]).unwrap();
    assert_eq!(event["seq"], target as i64);
    event["actor"]["id"] = json!("usr_01AAAAAAAAAAAAAAAAAAAAAAAA");
    let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    changed[target - 1] = event.to_string();
    let tampered = server.dir.join("tampered.jsonl");
    std::fs::write(&tampered, changed.join("\n") + "\n").unwrap();
    let (code, out, err) = server.cli(&["audit", "verify", "--file", tampered.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains(&format!("BROKEN at seq {target}:")), "{out}");

    // A line that is not an event at all is named by the seq it should have held.
    let mut garbled: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    garbled[2] = "{\"seq\": 3, \"nonsense\": true}".into();
    std::fs::write(&tampered, garbled.join("\n") + "\n").unwrap();
    let (code, out, _) = server.cli(&["audit", "verify", "--file", tampered.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("BROKEN at seq 3:"), "{out}");

    // Two lines swapped.
    let mut swapped: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    swapped.swap(9, 10);
    std::fs::write(&tampered, swapped.join("\n") + "\n").unwrap();
    let (code, out, _) = server.cli(&["audit", "verify", "--file", tampered.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("BROKEN at seq 10:"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_command_line_says_what_is_wrong_with_its_input() {
    let server = TestServer::start().await;
    let dir = server.dir.to_str().unwrap().to_string();
    let (code, _, err) = cli_bare(&["audit", "verify"]);
    assert_eq!(code, 2, "no source is a usage error: {err}");
    let (code, _, err) = server.cli(&["audit", "verify", "--file", &format!("{dir}/missing.jsonl")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing.jsonl"), "{err}");
    let (code, _, err) = server.cli(&["audit", "export", "--data-dir", &dir, "--workspace", "nope"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nope"), "{err}");
}

/// Many writes at once share transactions (group commit); each still gets its own place
/// in its own workspace's chain, and a refused write in the middle of a batch takes
/// nothing else down with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_in_two_workspaces_keep_both_chains_whole() {
    use futures_util::future::join_all;
    let server = TestServer::start().await;
    let a = server.workspace("conc-a").await;
    let b = server.workspace("conc-b").await;
    let (a_before, b_before) = (a.owner.all_events().await.len(), b.owner.all_events().await.len());

    let settings = (0..40).map(|i| {
        let api = a.owner.clone();
        async move { api.patch("/v1/settings", json!({"approval_ttl_seconds": 600 + i})).await.status }
    });
    let dups = (0..20).map(|_| {
        let api = a.owner.clone();
        async move { api.post("/v1/roles", json!({"name": "dup", "permissions": ["audit:read"]})).await.status }
    });
    let tokens = (0..40).map(|i| {
        let api = b.owner.clone();
        async move { api.post("/v1/tokens", json!({"name": format!("t{i}"), "scopes": ["actions:submit"], "tools": ["*"]})).await.status }
    });
    let (settings, dups, tokens) = tokio::join!(join_all(settings), join_all(dups), join_all(tokens));
    assert!(settings.iter().all(|s| *s == 200), "{settings:?}");
    assert!(tokens.iter().all(|s| *s == 201), "{tokens:?}");
    assert_eq!(dups.iter().filter(|s| **s == 201).count(), 1, "exactly one `dup` role: {dups:?}");
    assert_eq!(dups.iter().filter(|s| **s == 409).count(), 19, "{dups:?}");

    let a_events = a.owner.all_events().await;
    let b_events = b.owner.all_events().await;
    assert_eq!(a_events.len(), a_before + 40 + 1);
    assert_eq!(b_events.len(), b_before + 40);
    for events in [&a_events, &b_events] {
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["seq"], (i + 1) as i64);
        }
    }
    assert_eq!(a_events.iter().filter(|e| e["event_type"] == "role.created").count(), 1);
    assert_eq!(a.owner.verify().await["ok"], true);
    assert_eq!(b.owner.verify().await["ok"], true);
    let (code, out, err) = server.cli_verify();
    assert_eq!(code, 0, "{out}{err}");
}

/// Requests from the console are recorded as coming through it.
#[tokio::test(flavor = "multi_thread")]
async fn events_record_the_door_a_change_came_through() {
    let server = TestServer::start().await;
    let ws = server.workspace("doors").await;
    let body = Some(json!({"approval_ttl_seconds": 700}).to_string().into_bytes());
    let r = ws.owner.send(reqwest::Method::PATCH, "/v1/settings", body, &[("x-countersign-client", "console")]).await;
    r.assert_status(200);
    ws.owner.patch("/v1/settings", json!({"approval_ttl_seconds": 800})).await.assert_status(200);
    let events: Vec<Value> = ws.owner.all_events().await.into_iter().filter(|e| e["event_type"] == "settings.updated").collect();
    assert_eq!(events[0]["via"], "console");
    assert_eq!(events[1]["via"], "api");
    for e in &events {
        assert_eq!(e["actor"], json!({"kind": "user", "id": ws.owner_id}));
    }
    assert_eq!(
        events[1]["data"],
        json!({"before": {"agent_writes_enabled": false, "approval_ttl_seconds": 700}, "after": {"agent_writes_enabled": false, "approval_ttl_seconds": 800}})
    );
    let created = ws.owner.all_events().await.into_iter().find(|e| e["event_type"] == "workspace.created").unwrap();
    assert_eq!(created["actor"]["kind"], "system");
    assert_eq!(created["via"], "system");
}
