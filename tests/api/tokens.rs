//! Agent tokens: the secret shown once, rotation, revocation and expiry taking effect on
//! the very next request, the checksum, the scopes a token may carry, `last_used_at`.

use std::time::{Duration, Instant};

use serde_json::json;

use countersign::secrets::{self, SecretKind};

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_is_shown_once_and_never_again() {
    let server = TestServer::start().await;
    let ws = server.workspace("once").await;
    let r = ws.owner.post("/v1/tokens", json!({"name": "billing agent", "scopes": ["actions:submit"], "tools": ["email.*"]})).await;
    let body = r.assert_status(201).clone();
    // No cache on the way keeps a copy of the one answer that holds it.
    assert_eq!(r.headers["cache-control"], "no-store");
    // Every answer names its request, for support to find it in the server's log.
    assert!(r.headers["x-request-id"].to_str().unwrap().starts_with("req_"), "{:?}", r.headers);
    let secret = body["token"].as_str().unwrap().to_string();
    let id = body["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("csa_"), "{secret}");
    assert_eq!(secrets::recognize(&secret), Some(SecretKind::AgentToken));
    assert!(id.starts_with("tok_"));
    assert_eq!(body["owner_id"], ws.owner_id.as_str());
    assert_eq!(body["state"], "active");
    // The hint identifies it without revealing it.
    let hint = body["hint"].as_str().unwrap();
    assert!(secret.starts_with(hint.trim_end_matches('…')) && hint.chars().count() < 12, "{hint}");

    let one = ws.owner.get(&format!("/v1/tokens/{id}")).await;
    let list = ws.owner.get("/v1/tokens").await;
    one.assert_status(200);
    list.assert_status(200);
    assert_eq!(one.body["id"], id.as_str());
    assert!(one.body.get("token").is_none(), "{}", one.text);
    assert_eq!(list.body["items"][0]["id"], id.as_str());
    for text in [&one.text, &list.text] {
        assert!(!text.contains(&secret), "the secret came back: {text}");
        assert!(!text.contains(&secrets::storage_hash(&secret)), "the secret's hash came back: {text}");
    }
    // It works, and it is the agent's.
    let me = ws.owner.as_token(&secret).get("/v1/me").await;
    assert_eq!(me.body["credential_id"], id.as_str(), "{}", me.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_stops_the_old_secret_on_the_next_request() {
    let server = TestServer::start().await;
    let ws = server.workspace("rotate").await;
    let (id, old) = Workspace::token(&ws.owner, &["members:read"], &["*"]).await;
    let agent = ws.owner.as_token(&old);
    agent.get("/v1/members").await.assert_status(200);
    let r = ws.owner.post_empty(&format!("/v1/tokens/{id}/rotate")).await;
    let body = r.assert_status(200).clone();
    let new = body["token"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(body["id"], id.as_str(), "rotation keeps the id");
    assert!(body["rotated_at"].is_string());
    agent.get("/v1/members").await.assert_error(401, "invalid_token");
    let fresh = ws.owner.as_token(&new);
    fresh.get("/v1/members").await.assert_status(200);
    assert_eq!(fresh.get("/v1/me").await.body["credential_id"], id.as_str());
    // The new secret is not shown again either.
    let listed = ws.owner.get("/v1/tokens").await;
    assert!(!listed.text.contains(&new));
    // Rotating again retires the second secret too.
    let third = ws.owner.post_empty(&format!("/v1/tokens/{id}/rotate")).await.assert_status(200)["token"].as_str().unwrap().to_string();
    fresh.get("/v1/me").await.assert_error(401, "invalid_token");
    ws.owner.as_token(&third).get("/v1/me").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_takes_effect_on_the_next_request_and_is_final() {
    let server = TestServer::start().await;
    let ws = server.workspace("revoke").await;
    let (id, secret) = Workspace::token(&ws.owner, &["members:read"], &["*"]).await;
    let agent = ws.owner.as_token(&secret);
    agent.get("/v1/members").await.assert_status(200);
    let r = ws.owner.delete(&format!("/v1/tokens/{id}")).await;
    assert_eq!(r.assert_status(200)["state"], "revoked");
    agent.get("/v1/members").await.assert_error(401, "token_revoked");
    // Revoking again changes nothing; rotating a revoked token is refused.
    assert_eq!(ws.owner.delete(&format!("/v1/tokens/{id}")).await.assert_status(200)["state"], "revoked");
    ws.owner.post_empty(&format!("/v1/tokens/{id}/rotate")).await.assert_error(409, "token_revoked");
    agent.get("/v1/me").await.assert_error(401, "token_revoked");
    // It is still listed, as revoked, and what it did stays in the log.
    let t = ws.owner.get(&format!("/v1/tokens/{id}")).await;
    assert_eq!(t.body["state"], "revoked");
    assert!(t.body["revoked_at"].is_string());
    let revoked: Vec<_> = ws.owner.all_events().await.into_iter().filter(|e| e["event_type"] == "token.revoked").collect();
    assert_eq!(revoked.len(), 1, "revoking twice writes one event");
    assert_eq!(revoked[0]["resource"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_is_refused_on_the_next_request() {
    let server = TestServer::start().await;
    let ws = server.workspace("expiry").await;
    let r =
        ws.owner.post("/v1/tokens", json!({"name": "short", "scopes": ["members:read"], "tools": ["*"], "expires_in_seconds": 60})).await;
    let body = r.assert_status(201).clone();
    let (id, secret) = (body["id"].as_str().unwrap().to_string(), body["token"].as_str().unwrap().to_string());
    assert!(body["expires_at"].is_string());
    let agent = ws.owner.as_token(&secret);
    agent.get("/v1/members").await.assert_status(200);
    server.clock.advance(chrono::Duration::seconds(59));
    agent.get("/v1/members").await.assert_status(200);
    server.clock.advance(chrono::Duration::seconds(2));
    agent.get("/v1/members").await.assert_error(401, "token_expired");
    let t = ws.owner.get(&format!("/v1/tokens/{id}")).await;
    assert_eq!(t.body["state"], "expired", "{}", t.text);
    ws.owner.post_empty(&format!("/v1/tokens/{id}/rotate")).await.assert_error(409, "token_expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn expiry_outside_the_allowed_range_is_refused() {
    let server = TestServer::start().await;
    let ws = server.workspace("range").await;
    for bad in [0, 59, -1, 2 * 365 * 24 * 3600 + 1] {
        let r = ws
            .owner
            .post("/v1/tokens", json!({"name": "x", "scopes": ["actions:submit"], "tools": ["*"], "expires_in_seconds": bad}))
            .await;
        r.assert_error(422, "invalid_expiry");
    }
    assert_eq!(ws.owner.get("/v1/tokens").await.body["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mistyped_secret_fails_its_checksum_before_any_lookup() {
    let server = TestServer::start().await;
    let ws = server.workspace("typo").await;
    let (_, secret) = Workspace::token(&ws.owner, &["members:read"], &["*"]).await;
    let typo = typo(&secret);
    assert_ne!(typo, secret);
    let r = ws.owner.as_token(&typo).get("/v1/members").await;
    r.assert_error(401, "invalid_token");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("checksum"), "{}", r.text);
    assert!(r.headers.get("www-authenticate").is_some());
    // Truncated, or with a session's prefix: the same.
    ws.owner.as_token(&secret[..secret.len() - 1]).get("/v1/me").await.assert_error(401, "invalid_token");
    ws.owner.as_token(&secret.replacen("csa_", "css_", 1)).get("/v1/me").await.assert_error(401, "invalid_token");
    // A well-formed secret that was never issued passes the checksum and is not found.
    let unknown = secrets::generate(SecretKind::AgentToken);
    let r = ws.owner.as_token(&unknown).get("/v1/me").await;
    r.assert_error(401, "invalid_token");
    assert!(!r.body["error"]["message"].as_str().unwrap().contains("checksum"), "{}", r.text);
    // Not `Bearer`: refused with its own code.
    let r = ws.owner.anon().send(reqwest::Method::GET, "/v1/me", None, &[("authorization", &format!("Basic {secret}"))]).await;
    r.assert_error(401, "invalid_authorization_header");
    // Two credentials: neither is taken.
    let both = [("authorization", format!("Bearer {secret}")), ("authorization", format!("Bearer {unknown}"))];
    let headers: Vec<(&str, &str)> = both.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = ws.owner.anon().send(reqwest::Method::GET, "/v1/me", None, &headers).await;
    r.assert_error(401, "invalid_authorization_header");
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_a_token_may_not_carry_are_refused() {
    let server = TestServer::start().await;
    let ws = server.workspace("scopes").await;
    let r = ws.owner.post("/v1/tokens", json!({"name": "decider", "scopes": ["approvals:decide"], "tools": ["*"]})).await;
    r.assert_error(422, "scope_not_allowed");
    let r = ws.owner.post("/v1/tokens", json!({"name": "x", "scopes": ["actions:fly"], "tools": ["*"]})).await;
    r.assert_error(422, "unknown_permission");
    let r = ws.owner.post("/v1/tokens", json!({"name": "x", "scopes": ["actions:submit"], "tools": ["email*"]})).await;
    r.assert_error(422, "invalid_tool_pattern");
    let r = ws.owner.post("/v1/tokens", json!({"name": "", "scopes": ["actions:submit"], "tools": ["*"]})).await;
    r.assert_error(422, "invalid_name");
    // A token that may do nothing is a mistake, not a token.
    let r = ws.owner.post("/v1/tokens", json!({"name": "x", "scopes": [], "tools": ["*"]})).await;
    r.assert_error(422, "invalid_field");
    // So is one whose scopes reach only tools, with no tool to reach.
    let r = ws.owner.post("/v1/tokens", json!({"name": "x", "scopes": ["audit:read", "actions:submit"], "tools": []})).await;
    r.assert_error(422, "invalid_field");
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("tools:") && message.contains("`actions:submit`"), "{}", r.text);
    // A member cannot give a token what the member role does not hold.
    let (_, member) = ws.member(&server, "member").await;
    let r = member.post("/v1/tokens", json!({"name": "x", "scopes": ["audit:read"], "tools": ["*"]})).await;
    r.assert_error(422, "scope_not_held");
    // None of the refusals left a token or an event.
    assert_eq!(ws.owner.get("/v1/tokens").await.body["items"], json!([]));
    assert!(!ws.owner.event_types().await.iter().any(|t| t == "token.created"));
    // A log shipper's token reaches no tool and needs no pattern.
    let r = ws.owner.post("/v1/tokens", json!({"name": "shipper", "scopes": ["audit:read"], "tools": []})).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Waits (bounded) for the token's `last_used_at`, which is written in the background so
/// a request never waits on it.
async fn last_used(api: &Api, id: &str, not: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = api.get(&format!("/v1/tokens/{id}")).await;
        if let Some(at) = t.body["last_used_at"].as_str()
            && Some(at) != not
        {
            return at.to_string();
        }
        assert!(Instant::now() < deadline, "last_used_at was never written: {}", t.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn last_used_at_is_recorded_after_use() {
    let server = TestServer::start().await;
    let ws = server.workspace("lastused").await;
    let (id, secret) = Workspace::token(&ws.owner, &["members:read"], &["*"]).await;
    let t = ws.owner.get(&format!("/v1/tokens/{id}")).await;
    assert!(t.body["last_used_at"].is_null(), "unused tokens have no last_used_at: {}", t.text);
    let agent = ws.owner.as_token(&secret);
    agent.get("/v1/members").await.assert_status(200);
    let first = last_used(&ws.owner, &id, None).await;
    let created = t.body["created_at"].as_str().unwrap();
    assert!(first.as_str() >= created, "{first} < {created}");
    // Used again two minutes later (by the server's clock): it moves forward.
    server.clock.advance(chrono::Duration::minutes(2));
    agent.get("/v1/members").await.assert_status(200);
    let second = last_used(&ws.owner, &id, Some(&first)).await;
    assert!(second > first, "{second} <= {first}");
    // Bookkeeping, not an audited change.
    assert!(!ws.owner.event_types().await.iter().any(|t| t.contains("used")));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_managed_by_people_only() {
    let server = TestServer::start().await;
    let ws = server.workspace("humans").await;
    let (id, secret) = Workspace::token(&ws.owner, &["members:read"], &["*"]).await;
    let agent = ws.owner.as_token(&secret);
    agent.post("/v1/tokens", json!({"name": "child", "scopes": [], "tools": ["*"]})).await.assert_error(403, "permission_denied");
    agent.post_empty(&format!("/v1/tokens/{id}/rotate")).await.assert_error(403, "humans_only");
    agent.delete(&format!("/v1/tokens/{id}")).await.assert_error(403, "humans_only");
    agent.delete("/v1/sessions/current").await.assert_error(403, "not_a_session");
    agent.get("/v1/me").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_its_owner_rotates_a_token_even_with_tokens_manage() {
    let server = TestServer::start().await;
    let ws = server.workspace("takeover").await;
    let (member_id, member) = ws.member(&server, "member").await;
    let (id, secret) = Workspace::token(&member, &["actions:submit"], &["*"]).await;
    // An admin (or owner) may revoke it, but a new secret would act as its owner: refused.
    let (_, admin) = ws.member(&server, "admin").await;
    for other in [&admin, &ws.owner] {
        other.post_empty(&format!("/v1/tokens/{id}/rotate")).await.assert_error(403, "not_token_owner");
    }
    member.as_token(&secret).get("/v1/me").await.assert_status(200);
    // Its owner may, and the event says whose token it was.
    member.post_empty(&format!("/v1/tokens/{id}/rotate")).await.assert_status(200);
    let events = ws.owner.all_events().await;
    let rotated: Vec<&serde_json::Value> = events.iter().filter(|e| e["event_type"] == "token.rotated").collect();
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0]["data"]["owner_id"], member_id.as_str());
    admin.delete(&format!("/v1/tokens/{id}")).await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_rotations_hand_out_no_secret_that_was_never_the_tokens() {
    let server = TestServer::start().await;
    let ws = server.workspace("race").await;
    let (id, _) = Workspace::token(&ws.owner, &["members:read"], &["*"]).await;
    let path = format!("/v1/tokens/{id}/rotate");
    let answers = futures_util::future::join_all((0..12).map(|_| ws.owner.post_empty(&path))).await;
    let rotated: Vec<String> = answers.iter().filter(|r| r.status == 200).map(|r| r.body["token"].as_str().unwrap().to_string()).collect();
    for r in answers.iter().filter(|r| r.status != 200) {
        r.assert_error(409, "token_rotated_concurrently");
    }
    assert!(!rotated.is_empty());
    // Each secret handed out replaced the one its caller saw: the chain of rotations is
    // one line, so exactly one of them (the last) works, and each is on the log.
    let mut working = Vec::new();
    for secret in &rotated {
        if ws.owner.as_token(secret).get("/v1/me").await.status == 200 {
            working.push(secret.clone());
        }
    }
    assert_eq!(working.len(), 1, "{} rotations answered 200", rotated.len());
    let events = ws.owner.all_events().await.into_iter().filter(|e| e["event_type"] == "token.rotated").count();
    assert_eq!(events, rotated.len());
    // The rule itself, with no race to win: a rotation of a secret already replaced is
    // refused, and changes nothing.
    let stale = "csa_gone…";
    let wsid = countersign::store::WorkspaceId::trusted(ws.id.clone());
    let by = countersign::store::Origin::system("test");
    let r = server.state().store.rotate_token(&wsid, &by, &id, "x", "csa_new…", stale).await;
    assert_eq!(r.unwrap_err().code, "token_rotated_concurrently");
    ws.owner.as_token(&working[0]).get("/v1/me").await.assert_status(200);
}
