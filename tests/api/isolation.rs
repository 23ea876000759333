//! Workspace isolation: an id from another workspace behaves exactly like a missing one,
//! and an id that is not even shaped like one is a 400.

use serde_json::{Value, json};

use countersign::ids::{IdKind, new_id};

use crate::support::*;

/// Every route that takes an id, in the path or the body, with the id's kind.
const ID_ROUTES: &[(&str, &str, IdKind)] = &[
    ("GET", "/v1/members/{id}", IdKind::User),
    ("PATCH", "/v1/members/{id}", IdKind::User),
    ("GET", "/v1/roles/{id}", IdKind::Role),
    ("PATCH", "/v1/roles/{id}", IdKind::Role),
    ("DELETE", "/v1/roles/{id}", IdKind::Role),
    ("GET", "/v1/tokens/{id}", IdKind::Token),
    ("POST", "/v1/tokens/{id}/rotate", IdKind::Token),
    ("DELETE", "/v1/tokens/{id}", IdKind::Token),
    ("POST", "/v1/workspace/transfer", IdKind::User),
    ("GET", "/v1/webhooks/{id}", IdKind::Webhook),
    ("PATCH", "/v1/webhooks/{id}", IdKind::Webhook),
    ("DELETE", "/v1/webhooks/{id}", IdKind::Webhook),
    ("POST", "/v1/webhooks/{id}/rotate-secret", IdKind::Webhook),
    ("GET", "/v1/webhooks/{id}/deliveries", IdKind::Webhook),
];

fn body_for(method: &str, path: &str, id: &str) -> Option<Value> {
    match (method, path) {
        ("PATCH", "/v1/members/{id}") => Some(json!({"role": "viewer"})),
        ("PATCH", "/v1/roles/{id}") => Some(json!({"description": "probed"})),
        ("PATCH", "/v1/webhooks/{id}") => Some(json!({"description": "probed"})),
        ("POST", "/v1/workspace/transfer") => Some(json!({"member_id": id})),
        _ => None,
    }
}

async fn probe(api: &Api, method: &str, template: &str, id: &str) -> Resp {
    let path = template.replace("{id}", id);
    api.send(method.parse().unwrap(), &path, body_for(method, template, id).map(|b| b.to_string().into_bytes()), &[]).await
}

/// Two workspaces, each with a member, a custom role and a token.
struct Pair {
    a: Workspace,
    b: Workspace,
    b_member: String,
    b_role: String,
    b_token: String,
    b_webhook: String,
}

async fn pair(server: &TestServer) -> Pair {
    let a = server.workspace("alpha").await;
    let b = server.workspace("beta").await;
    let b_member = b.add_member("someone@beta.test", "member").await;
    let b_role = b.owner.post("/v1/roles", json!({"name": "beta-role", "permissions": ["audit:read"]})).await;
    let b_role = b_role.assert_status(201)["id"].as_str().unwrap().to_string();
    let (b_token, _) = Workspace::token(&b.owner, &["audit:read"], &["*"]).await;
    let b_webhook = b.owner.post("/v1/webhooks", json!({"url": "http://127.0.0.1:9/hook", "event_types": ["tool.created"]})).await;
    let b_webhook = b_webhook.assert_status(201)["id"].as_str().unwrap().to_string();
    Pair { a, b, b_member, b_role, b_token, b_webhook }
}

impl Pair {
    fn b_id(&self, kind: IdKind) -> &str {
        match kind {
            IdKind::User => &self.b_member,
            IdKind::Role => &self.b_role,
            IdKind::Token => &self.b_token,
            IdKind::Webhook => &self.b_webhook,
            _ => unreachable!(),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_from_another_workspace_is_exactly_a_missing_id() {
    let server = TestServer::start().await;
    let p = pair(&server).await;
    let b_events_before = p.b.owner.all_events().await.len();
    for (method, template, kind) in ID_ROUTES {
        let theirs = p.b_id(*kind).to_string();
        let missing = new_id(*kind);
        let foreign = probe(&p.a.owner, method, template, &theirs).await;
        let absent = probe(&p.a.owner, method, template, &missing).await;
        let what = format!("{method} {template}");
        foreign.assert_error(404, "not_found");
        absent.assert_error(404, "not_found");
        // Byte for byte the same, once each id is replaced by a placeholder: nothing tells
        // "exists elsewhere" from "does not exist".
        assert_eq!(foreign.text.replace(&theirs, "ID"), absent.text.replace(&missing, "ID"), "{what}");
        let headers = |r: &Resp| {
            let mut h: Vec<(String, String)> = r
                .headers
                .iter()
                // Each answer's own request id differs by design, never by what exists.
                .filter(|(k, _)| !["date", "content-length", "x-request-id"].contains(&k.as_str()))
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
            h.sort();
            h
        };
        assert_eq!(headers(&foreign), headers(&absent), "{what}: headers differ");
    }
    // Workspace B is untouched: its member, role and token are as they were, and its log
    // holds nothing new.
    let member = p.b.owner.get(&format!("/v1/members/{}", p.b_member)).await;
    assert_eq!(member.body["role"], "member");
    let role = p.b.owner.get(&format!("/v1/roles/{}", p.b_role)).await;
    assert_eq!(role.body["description"], "");
    let token = p.b.owner.get(&format!("/v1/tokens/{}", p.b_token)).await;
    assert_eq!(token.body["state"], "active");
    assert!(token.body["rotated_at"].is_null());
    let hook = p.b.owner.get(&format!("/v1/webhooks/{}", p.b_webhook)).await;
    assert_eq!((&hook.assert_status(200)["description"], &hook.body["secret_rotated_at"]), (&json!(""), &Value::Null));
    assert_eq!(p.b.owner.get("/v1/workspace").await.body["owner_id"], p.b.owner_id.as_str());
    assert_eq!(p.b.owner.all_events().await.len(), b_events_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_show_only_the_callers_workspace() {
    let server = TestServer::start().await;
    let p = pair(&server).await;
    let members = p.a.owner.get("/v1/members").await;
    assert_eq!(members.body["items"].as_array().unwrap().len(), 1, "{}", members.text);
    assert!(!members.text.contains(&p.b_member));
    let roles = p.a.owner.get("/v1/roles").await;
    assert!(!roles.text.contains("beta-role"), "{}", roles.text);
    let tokens = p.a.owner.get("/v1/tokens").await;
    assert_eq!(tokens.body["items"], json!([]), "{}", tokens.text);
    let hooks = p.a.owner.get("/v1/webhooks").await;
    assert_eq!(hooks.body["items"], json!([]), "{}", hooks.text);
    // Filtering by another workspace's member finds nothing, as for a missing member.
    let foreign = p.a.owner.get(&format!("/v1/tokens?owner={}", p.b.owner_id)).await;
    let absent = p.a.owner.get(&format!("/v1/tokens?owner={}", new_id(IdKind::User))).await;
    assert_eq!(foreign.body, json!({"items": []}));
    assert_eq!(foreign.body, absent.body);
    let audit = p.a.owner.all_events().await;
    assert!(audit.iter().all(|e| e["workspace_id"] == p.a.id.as_str()));
    // A role name from workspace B is no role in workspace A.
    let r = p.a.owner.post("/v1/members", json!({"email": "x@alpha.test", "password": PASSWORD, "role": "beta-role"})).await;
    r.assert_error(422, "unknown_role");
    // And a token from B works only in B.
    let (_, secret) = Workspace::token(&p.b.owner, &["members:read"], &["*"]).await;
    let agent = p.b.owner.as_token(&secret);
    let seen = agent.get("/v1/members").await;
    assert!(seen.text.contains(&p.b_member) && !seen.text.contains(&p.a.owner_id), "{}", seen.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_id_is_400_invalid_id() {
    let server = TestServer::start().await;
    let p = pair(&server).await;
    for (method, template, kind) in ID_ROUTES {
        let wrong_kind = if *kind == IdKind::Token { new_id(IdKind::User) } else { new_id(IdKind::Token) };
        let bad_ulid = format!("{}_{}", kind.prefix(), "I".repeat(26));
        let short = format!("{}_123", kind.prefix());
        for bad in [wrong_kind.as_str(), bad_ulid.as_str(), short.as_str(), "nonsense", "%20", &"x".repeat(5000)] {
            let r = probe(&p.a.owner, method, template, bad).await;
            r.assert_error(400, "invalid_id");
            assert!(r.text.len() < 1000, "{method} {template}: the error echoes too much: {} bytes", r.text.len());
        }
    }
}
