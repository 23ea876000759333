//! Sign-in, sessions, members and the audit trail they leave.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn owner_signs_in_and_the_chain_verifies() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let me = ws.owner.get("/v1/me").await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body["member"]["role"], "owner");
    assert_eq!(me.body["credential"], "session");

    let v = ws.owner.get("/v1/audit/verify").await;
    assert_eq!(v.body["ok"], true, "{}", v.body);
    let events = ws.owner.all_events().await;
    let types: Vec<&str> = events.iter().map(|e| e["event_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["workspace.created", "member.created", "session.created"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_refused_and_audited_without_the_password() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let r = server.anon().post("/v1/sessions", json!({"email": "owner@acme.test", "password": "not the password!"})).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "invalid_credentials");
    let events = ws.owner.all_events().await;
    let failed = events.iter().find(|e| e["event_type"] == "session.failed").expect("a session.failed event");
    assert_eq!(failed["outcome"], "failure");
    assert!(!failed.to_string().contains("not the password!"));
}
