//! The permission matrix: every route of the API × every built-in role, and agent
//! tokens whose powers are their scopes ∩ their owner's current role.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::*;

/// What a route call is aimed at.
#[derive(Clone, Copy, Debug)]
enum Target {
    None,
    /// A viewer the caller may re-role.
    Member,
    /// A custom role (read and changed).
    Role,
    /// A custom role nobody holds (deleted).
    SpareRole,
    /// An agent token owned by the caller.
    OwnToken,
    /// An agent token owned by another member.
    OthersToken,
    /// A `record` tool every role may read (`crm.read`).
    Tool,
    /// A tool whose kill switch the matrix engages (`spare.tool`).
    SpareTool,
    /// A tool the matrix deletes (`retired.tool`).
    RetiredTool,
    /// An action the owner submitted.
    Action,
    /// An approved action the owner submitted, ready to execute.
    ApprovedAction,
    /// A pending approval another admin requested.
    PendingApproval,
    /// The constitution version the owner published (1).
    ConstitutionVersion,
    /// A webhook subscription the owner made.
    Webhook,
    /// A delivered delivery of that subscription.
    WebhookDelivery,
    /// A session of the viewer `Member`.
    MemberSession,
}

/// One row of the matrix: a route, what it is called with, and who may call it: `o`wner,
/// `a`dmin, `m`ember, `v`iewer, and `t`, an agent token of the owner holding every scope
/// an agent may hold. Anyone not listed is refused with 403.
struct Case {
    method: &'static str,
    /// The path as the OpenAPI document writes it.
    template: &'static str,
    target: Target,
    body: fn(&Fixture) -> Option<Value>,
    allowed: &'static str,
    /// The status when allowed.
    ok: u16,
}

const fn case(
    method: &'static str,
    template: &'static str,
    target: Target,
    body: fn(&Fixture) -> Option<Value>,
    allowed: &'static str,
    ok: u16,
) -> Case {
    Case { method, template, target, body, allowed, ok }
}

fn no_body(_: &Fixture) -> Option<Value> {
    None
}

/// The whole authenticated API, in the order the matrix runs it: reads first, then
/// changes, then the two calls that change who the caller is (transfer, sign-out).
const CASES: &[Case] = &[
    case("GET", "/v1/me", Target::None, no_body, "oamvt", 200),
    // Your own sessions, any person; another member's needs members:manage.
    case("GET", "/v1/sessions", Target::None, no_body, "oamv-", 200),
    case("DELETE", "/v1/sessions/{id}", Target::MemberSession, no_body, "oa--", 204),
    // Any person, none of whom may lose their password to the matrix: the new one is the
    // current one, refused past authorisation (422 password_unchanged).
    case("POST", "/v1/me/password", Target::None, |_| Some(json!({"current_password": PASSWORD, "new_password": PASSWORD})), "oamv-", 422),
    case("GET", "/v1/workspace", Target::None, no_body, "oamvt", 200),
    case("GET", "/v1/settings", Target::None, no_body, "oamvt", 200),
    case("GET", "/v1/members", Target::None, no_body, "oamvt", 200),
    case("GET", "/v1/members/{id}", Target::Member, no_body, "oamvt", 200),
    case("GET", "/v1/roles", Target::None, no_body, "oamvt", 200),
    case("GET", "/v1/roles/{id}", Target::Role, no_body, "oamvt", 200),
    case("GET", "/v1/audit", Target::None, no_body, "oa-vt", 200),
    case("GET", "/v1/audit/verify", Target::None, no_body, "oa-vt", 200),
    case("GET", "/v1/tokens", Target::None, no_body, "oam-", 200),
    case("GET", "/v1/tokens/{id}", Target::OwnToken, no_body, "oam-", 200),
    case("GET", "/v1/tokens/{id}", Target::OthersToken, no_body, "oa--", 200),
    case("PATCH", "/v1/settings", Target::None, |_| Some(json!({"approval_ttl_seconds": 900})), "oa--", 200),
    case("POST", "/v1/members", Target::None, |f| Some(json!({"email": f.new_email, "password": PASSWORD, "role": "viewer"})), "oa--", 201),
    case("PATCH", "/v1/members/{id}", Target::Member, |_| Some(json!({"role": "member"})), "oa--", 200),
    case("POST", "/v1/roles", Target::None, |_| Some(json!({"name": "auditor", "permissions": ["audit:read"]})), "oa--", 201),
    case("PATCH", "/v1/roles/{id}", Target::Role, |_| Some(json!({"description": "changed by the matrix"})), "oa--", 200),
    case("DELETE", "/v1/roles/{id}", Target::SpareRole, no_body, "oa--", 204),
    case("POST", "/v1/tokens", Target::None, |_| Some(json!({"name": "matrix", "scopes": ["members:read"], "tools": ["*"]})), "oam-", 201),
    case("POST", "/v1/tokens/{id}/rotate", Target::OwnToken, no_body, "oam-", 200),
    // Nobody but its owner: the new secret would act as them (`not_token_owner`).
    case("POST", "/v1/tokens/{id}/rotate", Target::OthersToken, no_body, "----", 200),
    case("DELETE", "/v1/tokens/{id}", Target::OwnToken, no_body, "oam-", 200),
    case("DELETE", "/v1/tokens/{id}", Target::OthersToken, no_body, "oa--", 200),
    case("GET", "/v1/tools", Target::None, no_body, "oamvt", 200),
    case("GET", "/v1/tools/{name}", Target::Tool, no_body, "oamvt", 200),
    case(
        "PUT",
        "/v1/tools/{name}",
        Target::Tool,
        |_| {
            Some(
                json!({"kind": "read", "irreversible": false, "policy": "auto", "connector": {"type": "record"}, "description": "changed"}),
            )
        },
        "oa--",
        200,
    ),
    case("DELETE", "/v1/tools/{name}", Target::RetiredTool, no_body, "oa--", 200),
    case("GET", "/v1/killswitches", Target::None, no_body, "oamvt", 200),
    case("PUT", "/v1/killswitches/tools/{name}", Target::SpareTool, |_| Some(json!({"engaged": true, "reason": "matrix"})), "oa--t", 200),
    // Lifting a switch that is not engaged changes nothing, but still needs the power to lift.
    case("PUT", "/v1/killswitches/workspace", Target::None, |_| Some(json!({"engaged": false, "reason": "matrix"})), "oa--", 200),
    case("POST", "/v1/actions", Target::None, |_| Some(json!({"tool": "crm.read", "payload": {"q": "matrix"}})), "oam-t", 201),
    case("GET", "/v1/actions", Target::None, no_body, "oamvt", 200),
    case("GET", "/v1/actions/{id}", Target::Action, no_body, "oa-vt", 200),
    case("POST", "/v1/actions/{id}/execute", Target::ApprovedAction, |_| Some(json!({"payload": {"to": ["a@example.com"]}})), "o---t", 200),
    case("GET", "/v1/approvals", Target::None, no_body, "oamvt", 200),
    // A member reads the approvals they asked for; this one is another member's.
    case("GET", "/v1/approvals/{id}", Target::PendingApproval, no_body, "oa-vt", 200),
    case(
        "POST",
        "/v1/approvals/{id}/decisions",
        Target::PendingApproval,
        |f| Some(json!({"decision": "approve", "payload_sha256": f.pending_sha})),
        "oa--",
        200,
    ),
    case("GET", "/v1/audit/stream", Target::None, no_body, "oa-vt", 200),
    case("GET", "/v1/constitution", Target::None, no_body, "oamvt", 200),
    case("GET", "/v1/constitution/versions", Target::None, no_body, "oamvt", 200),
    case("GET", "/v1/constitution/versions/{version}", Target::ConstitutionVersion, no_body, "oamvt", 200),
    case("POST", "/v1/constitution/versions", Target::None, |_| Some(json!({"rules": []})), "oa--", 201),
    // Drafting from an action needs to read it: the member may not read the owner's.
    case("POST", "/v1/constitution/drafts/from-action/{id}", Target::Action, no_body, "oa-vt", 200),
    case(
        "POST",
        "/v1/simulations",
        Target::None,
        |_| Some(json!({"draft": {"rules": [matrix_rule()]}, "window": {"last": 10}})),
        "oam-t",
        200,
    ),
    case("GET", "/v1/audit/public-key", Target::None, no_body, "oa-vt", 200),
    case("GET", "/v1/audit/checkpoints/latest", Target::None, no_body, "oa-vt", 200),
    case("GET", "/v1/audit/checkpoints", Target::None, no_body, "oa-vt", 200),
    case("GET", "/v1/audit/export", Target::None, no_body, "oa--t", 200),
    case("GET", "/v1/exports/members.csv", Target::None, no_body, "oa--t", 200),
    case("GET", "/v1/exports/tokens.csv", Target::None, no_body, "oa--t", 200),
    case("GET", "/v1/exports/tools.csv", Target::None, no_body, "oa--t", 200),
    case("GET", "/v1/exports/approvals.csv", Target::None, no_body, "oa--t", 200),
    case("GET", "/v1/webhooks", Target::None, no_body, "oa--", 200),
    case("GET", "/v1/webhooks/{id}", Target::Webhook, no_body, "oa--", 200),
    case("GET", "/v1/webhooks/{id}/deliveries", Target::Webhook, no_body, "oa--", 200),
    case("POST", "/v1/webhooks", Target::None, |f| Some(json!({"url": f.receiver_url, "event_types": ["tool.created"]})), "oa--", 201),
    case("PATCH", "/v1/webhooks/{id}", Target::Webhook, |_| Some(json!({"description": "changed by the matrix"})), "oa--", 200),
    case("POST", "/v1/webhooks/{id}/rotate-secret", Target::Webhook, no_body, "oa--", 200),
    case("POST", "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", Target::WebhookDelivery, no_body, "oa--", 202),
    case("DELETE", "/v1/webhooks/{id}", Target::Webhook, no_body, "oa--", 200),
    case("POST", "/v1/workspace/transfer", Target::None, |f| Some(json!({"member_id": f.helper_id})), "o---", 200),
    case("DELETE", "/v1/sessions/current", Target::None, no_body, "oamv", 204),
];

/// A rule that matches nothing the matrix submits.
fn matrix_rule() -> Value {
    json!({"id": "matrix-rule", "title": "Nothing the matrix sends", "when": "tool == 'matrix.none'", "effect": "deny"})
}

/// Routes anyone may call without credentials.
const PUBLIC: &[(&str, &str)] = &[("GET", "/healthz"), ("GET", "/v1/openapi.json"), ("POST", "/v1/sessions")];

/// The callers: the four built-in roles, and an agent token (`t`).
const CALLERS: [(char, &str); 5] = [('o', "owner"), ('a', "admin"), ('m', "member"), ('v', "viewer"), ('t', "agent")];

/// The code a refusal carries: agents are refused what only people may do with their own
/// codes; everything else is `permission_denied`.
fn refusal_code(letter: char, c: &Case) -> &'static str {
    match (letter, c.method, c.template) {
        ('t', "POST", "/v1/tokens/{id}/rotate") | ('t', "DELETE", "/v1/tokens/{id}") => "humans_only",
        ('o' | 'a' | 'm' | 'v', "POST", "/v1/tokens/{id}/rotate") if matches!(c.target, Target::OthersToken) => "not_token_owner",
        ('t', "DELETE", "/v1/sessions/current") => "not_a_session",
        ('t', "POST", "/v1/me/password") | ('t', _, "/v1/sessions") | ('t', _, "/v1/sessions/{id}") => "humans_only",
        // Admins and members may execute actions, but only their own.
        ('a' | 'm', "POST", "/v1/actions/{id}/execute") => "not_your_action",
        _ => "permission_denied",
    }
}

/// A workspace set up so that every case is a valid request for the caller.
struct Fixture {
    ws: Workspace,
    caller: Api,
    /// The actor id the caller's events carry: its member id, or for the agent its token id.
    actor_id: String,
    /// An admin: owns `others_token`, and is whom ownership is transferred to.
    helper_id: String,
    helper: Api,
    member_id: String,
    role_id: String,
    spare_role_id: String,
    own_token: String,
    others_token: String,
    new_email: String,
    action_id: String,
    approved_action_id: String,
    pending_approval_id: String,
    pending_sha: String,
    receiver_url: String,
    webhook_id: String,
    delivery_id: String,
    member_session: String,
}

/// A webhook receiver that accepts everything.
async fn accepting_receiver() -> String {
    let app = axum::Router::new().route("/hook", axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

impl Fixture {
    async fn new(server: &TestServer, name: &str, role: &str) -> Fixture {
        let ws = server.workspace(name).await;
        let (helper_id, helper) = ws.member(server, "admin").await;
        let (others_token, _) = Workspace::token(&helper, &["members:read"], &["*"]).await;
        let member_id = ws.add_member(&format!("target@{name}.test"), "viewer").await;
        let member_session =
            server.sign_in(&format!("target@{name}.test")).await.get("/v1/me").await.body["credential_id"].as_str().unwrap().to_string();
        let mk_role = |n: &str| ws.owner.post("/v1/roles", json!({"name": n, "permissions": ["members:read"]}));
        let role_id = mk_role("reader").await.assert_status(201)["id"].as_str().unwrap().to_string();
        let spare_role_id = mk_role("spare").await.assert_status(201)["id"].as_str().unwrap().to_string();
        let (caller_id, caller) = match role {
            "owner" | "agent" => (ws.owner_id.clone(), ws.owner.clone()),
            // A viewer cannot create tokens, so make it a member first, let it create
            // its own token, then demote it: the viewer still owns that token.
            "viewer" => ws.member(server, "member").await,
            _ => ws.member(server, role).await,
        };
        let (own_token, _) = Workspace::token(&caller, &["members:read"], &["*"]).await;
        if role == "viewer" {
            ws.owner.patch(&format!("/v1/members/{caller_id}"), json!({"role": "viewer"})).await.assert_status(200);
        }
        let (caller, actor_id) = if role == "agent" {
            let (id, secret) = widest_token(&ws.owner).await;
            (ws.owner.as_token(&secret), id)
        } else {
            (caller, caller_id)
        };
        let me = caller.get("/v1/me").await;
        assert_eq!(me.body["member"]["role"], if role == "agent" { "owner" } else { role }, "{}", me.text);
        // The gate: tools, an action of the owner's, an approved one, and a pending
        // approval that someone other than the owner requested.
        ws.record_tool("crm.read", "read", "auto", false).await;
        ws.record_tool("email.send", "write", "approve", false).await;
        ws.record_tool("spare.tool", "read", "auto", false).await;
        ws.record_tool("retired.tool", "read", "auto", false).await;
        ws.agent_writes(true).await;
        let action_id = submit(&ws.owner, "crm.read", json!({"q": 1})).await.assert_status(201)["id"].as_str().unwrap().to_string();
        let approved = submit(&ws.owner, "email.send", json!({"to": ["a@example.com"]})).await;
        let d = json!({"decision": "approve", "payload_sha256": approved.body["payload_sha256"]});
        helper.post(&format!("/v1/approvals/{}/decisions", approved.body["approval_id"].as_str().unwrap()), d).await.assert_status(200);
        let pending = submit(&helper, "email.send", json!({"to": ["b@example.com"]})).await;
        assert_eq!(pending.body["status"], "pending_approval", "{}", pending.text);
        ws.owner.post("/v1/constitution/versions", json!({"rules": [matrix_rule()]})).await.assert_status(201);
        // A subscription to its own creation, delivered before the matrix runs (so no
        // attempt is in flight when it is redelivered).
        let receiver_url = accepting_receiver().await;
        let hook = ws.owner.post("/v1/webhooks", json!({"url": receiver_url, "event_types": ["webhook.created"]})).await;
        let webhook_id = hook.assert_status(201)["id"].as_str().unwrap().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let delivery_id = loop {
            let d = ws.owner.get(&format!("/v1/webhooks/{webhook_id}/deliveries")).await;
            if let Some(first) = d.assert_status(200)["items"].as_array().and_then(|a| a.first()).filter(|d| d["status"] == "delivered") {
                break first["id"].as_str().unwrap().to_string();
            }
            assert!(std::time::Instant::now() < deadline, "the fixture's webhook delivery was not delivered: {}", d.text);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        Fixture {
            ws,
            caller,
            actor_id,
            helper_id,
            helper,
            member_id,
            role_id,
            spare_role_id,
            own_token,
            others_token,
            new_email: format!("new@{name}.test"),
            action_id,
            approved_action_id: approved.body["id"].as_str().unwrap().to_string(),
            pending_approval_id: pending.body["approval_id"].as_str().unwrap().to_string(),
            pending_sha: pending.body["payload_sha256"].as_str().unwrap().to_string(),
            receiver_url,
            webhook_id,
            delivery_id,
            member_session,
        }
    }

    fn path(&self, c: &Case) -> String {
        let id = match c.target {
            Target::None => return c.template.to_string(),
            Target::Member => &self.member_id,
            Target::Role => &self.role_id,
            Target::SpareRole => &self.spare_role_id,
            Target::OwnToken => &self.own_token,
            Target::OthersToken => &self.others_token,
            Target::Tool => return c.template.replace("{name}", "crm.read"),
            Target::SpareTool => return c.template.replace("{name}", "spare.tool"),
            Target::RetiredTool => return c.template.replace("{name}", "retired.tool"),
            Target::Action => &self.action_id,
            Target::ApprovedAction => &self.approved_action_id,
            Target::PendingApproval => &self.pending_approval_id,
            Target::ConstitutionVersion => return c.template.replace("{version}", "1"),
            Target::Webhook => &self.webhook_id,
            Target::WebhookDelivery => return c.template.replace("{id}", &self.webhook_id).replace("{delivery_id}", &self.delivery_id),
            Target::MemberSession => &self.member_session,
        };
        c.template.replace("{id}", id)
    }
}

async fn call(api: &Api, method: &str, path: &str, body: Option<Value>) -> Resp {
    if path.starts_with("/v1/audit/stream") {
        // A stream never ends by itself: take the status and headers, and the body only
        // when it is an error.
        let mut req = reqwest::Client::new().get(format!("{}{path}", api.base));
        if let Some(t) = &api.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = if status == 200 { String::new() } else { resp.text().await.unwrap_or_default() };
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        return Resp { status, body, text, headers };
    }
    api.send(method.parse().unwrap(), path, body.map(|b| b.to_string().into_bytes()), &[]).await
}

/// Every permission an agent token may hold, as the server lists them.
async fn agent_scopes(api: &Api) -> Vec<String> {
    let roles = api.get("/v1/roles").await;
    let perms = roles.body["permissions"].as_array().expect("the permission vocabulary").clone();
    let scopes: Vec<String> =
        perms.iter().filter(|p| p["grantable_to_agents"] == true).map(|p| p["name"].as_str().unwrap().to_string()).collect();
    assert!(scopes.iter().any(|s| s == "actions:submit"), "{scopes:?}");
    scopes
}

/// An agent token of `api`'s member holding every scope an agent may hold: (id, secret).
async fn widest_token(api: &Api) -> (String, String) {
    let scopes = agent_scopes(api).await;
    Workspace::token(api, &scopes.iter().map(String::as_str).collect::<Vec<_>>(), &["*"]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_for_every_builtin_role_and_an_agent() {
    let server = TestServer::start().await;
    for (letter, role) in CALLERS {
        let f = Fixture::new(&server, &format!("matrix-{role}"), role).await;
        let settings_before = f.ws.owner.get("/v1/settings").await.body;
        for c in CASES {
            let r = call(&f.caller, c.method, &f.path(c), (c.body)(&f)).await;
            let what = format!("{role}: {} {} ({:?})", c.method, c.template, c.target);
            if c.allowed.contains(letter) {
                assert_eq!(r.status, c.ok, "{what} should be allowed: {}", r.text);
            } else {
                // Another member's session, to someone who may not manage members, is as
                // good as absent: which session ids exist is not theirs to learn.
                let status = if matches!((letter, c.template), ('m' | 'v', "/v1/sessions/{id}")) { 404 } else { 403 };
                assert_eq!(r.status, status, "{what} should be refused: {}", r.text);
                r.assert_error(status, if status == 404 { "not_found" } else { refusal_code(letter, c) });
            }
        }
        // The last two cases took effect only where allowed: a person's session has
        // ended (an agent has none), and only the owner's transfer made the helper owner.
        if letter == 't' {
            f.caller.get("/v1/me").await.assert_status(200);
        } else {
            f.caller.get("/v1/me").await.assert_error(401, "session_revoked");
        }
        let ws = f.helper.get("/v1/workspace").await;
        let owner = if letter == 'o' { &f.helper_id } else { &f.ws.owner_id };
        assert_eq!(ws.body["owner_id"], owner.as_str(), "{role}: {}", ws.text);
        if "oa".contains(letter) {
            continue;
        }
        // What was refused left no trace: the owner sees everything as it was.
        let owner = &f.ws.owner;
        assert_eq!(owner.get("/v1/settings").await.body, settings_before, "{role} changed the settings");
        let target = owner.get(&format!("/v1/members/{}", f.member_id)).await;
        assert_eq!(target.body["role"], "viewer", "{role} changed a role");
        let reader = owner.get(&format!("/v1/roles/{}", f.role_id)).await;
        assert_eq!(reader.body["description"], "", "{role} changed a custom role");
        owner.get(&format!("/v1/roles/{}", f.spare_role_id)).await.assert_status(200);
        let roles = owner.get("/v1/roles").await;
        assert_eq!(roles.body["items"].as_array().unwrap().len(), 6, "{role} added a role: {}", roles.text);
        let members = owner.get("/v1/members").await;
        assert!(!members.text.contains(&f.new_email), "{role} added a member");
        let others = owner.get(&format!("/v1/tokens/{}", f.others_token)).await;
        assert_eq!(others.body["state"], "active", "{role} revoked another member's token");
        assert!(others.body["rotated_at"].is_null(), "{role} rotated another member's token");
        // The log holds nothing the refused caller was refused.
        let mut refused = vec![
            "member.",
            "role.",
            "settings.",
            "tool.",
            "workspace.",
            "webhook.",
            "approval.granted",
            "approval.denied",
            "killswitch.lifted",
            "constitution.",
        ];
        if letter != 't' {
            refused.push("killswitch.engaged");
        }
        for e in owner.all_events().await {
            if e["actor"]["id"] == f.actor_id.as_str() {
                let t = e["event_type"].as_str().unwrap();
                assert!(!refused.iter().any(|r| t.starts_with(r)), "{role} left a {t} event: {e}");
            }
        }
        let tool = owner.get("/v1/tools/crm.read").await;
        assert_eq!(tool.body["description"], "", "{role} changed a tool");
        let hooks = owner.get("/v1/webhooks").await;
        let hooks = hooks.assert_status(200)["items"].as_array().unwrap();
        assert_eq!(hooks.len(), 1, "{role} added or deleted a webhook: {hooks:?}");
        assert_eq!(hooks[0]["description"], "", "{role} changed a webhook");
        assert!(hooks[0]["secret_rotated_at"].is_null(), "{role} rotated a webhook's secret");
        let pending = owner.get(&format!("/v1/approvals/{}", f.pending_approval_id)).await;
        assert_eq!(pending.body["approvals"], 0, "{role} decided an approval");
        let constitution = owner.get("/v1/constitution").await;
        assert_eq!(constitution.body["version"], 1, "{role} published a constitution: {}", constitution.text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_credentials_every_route_but_the_public_ones_is_401() {
    let server = TestServer::start().await;
    let ws = server.workspace("anon").await;
    let anon = server.anon();
    let garbage = server.with_token("csa_not-a-token");
    let some_id = ws.owner_id.clone();
    for c in CASES {
        let path = c.template.replace("{id}", &some_id);
        let body = Some(json!({}));
        call(&anon, c.method, &path, body.clone()).await.assert_error(401, "missing_credentials");
        call(&garbage, c.method, &path, body).await.assert_error(401, "invalid_token");
    }
    for (method, path) in PUBLIC {
        let r = call(&anon, method, path, Some(json!({"email": "owner@anon.test", "password": PASSWORD}))).await;
        assert!(r.status == 200 || r.status == 201, "{method} {path} without credentials: {} {}", r.status, r.text);
    }
}

/// The matrix above is only worth something if it is the whole API: every operation the
/// OpenAPI document describes (generated from the router) has a row, and every row is
/// in the document.
#[tokio::test(flavor = "multi_thread")]
async fn the_matrix_covers_every_route_in_the_openapi_document() {
    let server = TestServer::start().await;
    let doc = server.anon().get("/v1/openapi.json").await;
    let served: BTreeSet<(String, String)> = doc.body["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.to_uppercase(), path.clone())))
        .filter(|(m, _)| ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()))
        .collect();
    let covered: BTreeSet<(String, String)> = CASES
        .iter()
        .map(|c| (c.method.to_string(), c.template.to_string()))
        .chain(PUBLIC.iter().map(|(m, p)| (m.to_string(), p.to_string())))
        .collect();
    let missing: Vec<_> = served.difference(&covered).collect();
    assert!(missing.is_empty(), "routes with no row in the permission matrix (tests/api/permissions.rs): {missing:?}");
    let stale: Vec<_> = covered.difference(&served).collect();
    assert!(stale.is_empty(), "matrix rows for routes the server does not describe: {stale:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_token_gets_its_scopes_intersected_with_its_owners_role() {
    let server = TestServer::start().await;
    let ws = server.workspace("narrow").await;
    let (_, admin) = ws.member(&server, "admin").await;
    // The admin may read settings and members, but this token may only read the audit log.
    let (id, secret) = Workspace::token(&admin, &["audit:read"], &["email.*"]).await;
    let agent = admin.as_token(&secret);
    let me = agent.get("/v1/me").await;
    me.assert_status(200);
    assert_eq!(me.body["credential"], "agent_token");
    assert_eq!(me.body["credential_id"], id.as_str());
    assert_eq!(me.body["permissions"], json!(["audit:read"]));
    assert_eq!(me.body["tools"], json!(["email.*"]));
    agent.get("/v1/audit").await.assert_status(200);
    agent.get("/v1/settings").await.assert_error(403, "permission_denied");
    agent.get("/v1/members").await.assert_error(403, "permission_denied");
    // A member's token: its scopes are bounded by the member role at creation…
    let (_, member) = ws.member(&server, "member").await;
    let r = member.post("/v1/tokens", json!({"name": "greedy", "scopes": ["audit:read"], "tools": ["*"]})).await;
    r.assert_error(422, "scope_not_held");
    let (_, secret) = Workspace::token(&member, &["actions:submit", "members:read"], &["*"]).await;
    let agent = member.as_token(&secret);
    assert_eq!(agent.get("/v1/me").await.body["permissions"], json!(["actions:submit", "members:read"]));
    agent.get("/v1/members").await.assert_status(200);
    agent.get("/v1/audit").await.assert_error(403, "permission_denied");
    agent.get("/v1/roles").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_token_shrinks_when_its_owner_is_demoted_and_dies_when_they_are_deactivated() {
    let server = TestServer::start().await;
    let ws = server.workspace("demote").await;
    let (admin_id, admin) = ws.member(&server, "admin").await;
    let (token_id, secret) = Workspace::token(&admin, &["audit:read", "settings:read", "actions:submit", "members:read"], &["*"]).await;
    let agent = admin.as_token(&secret);
    agent.get("/v1/settings").await.assert_status(200);
    agent.get("/v1/audit").await.assert_status(200);

    // Demoted to member: the token keeps only what a member holds (settings:read,
    // actions:submit, members:read), from the very next request.
    ws.owner.patch(&format!("/v1/members/{admin_id}"), json!({"role": "member"})).await.assert_status(200);
    agent.get("/v1/audit").await.assert_error(403, "permission_denied");
    agent.get("/v1/settings").await.assert_status(200);
    assert_eq!(agent.get("/v1/me").await.body["permissions"], json!(["actions:submit", "members:read", "settings:read"]));

    // Demoted to viewer: actions:submit goes too, audit:read comes back (both hold it).
    ws.owner.patch(&format!("/v1/members/{admin_id}"), json!({"role": "viewer"})).await.assert_status(200);
    assert_eq!(agent.get("/v1/me").await.body["permissions"], json!(["audit:read", "members:read", "settings:read"]));
    agent.get("/v1/audit").await.assert_status(200);

    // Promoted back: the token regains its scopes, and never more than them.
    ws.owner.patch(&format!("/v1/members/{admin_id}"), json!({"role": "admin"})).await.assert_status(200);
    assert_eq!(agent.get("/v1/me").await.body["permissions"], json!(["actions:submit", "audit:read", "members:read", "settings:read"]));

    // Deactivated: the token dies at once, as does the session.
    ws.owner.patch(&format!("/v1/members/{admin_id}"), json!({"status": "deactivated"})).await.assert_status(200);
    agent.get("/v1/me").await.assert_error(401, "member_deactivated");
    admin.get("/v1/me").await.assert_error(401, "member_deactivated");
    // Reactivated: they may sign in again, but the token stays revoked.
    ws.owner.patch(&format!("/v1/members/{admin_id}"), json!({"status": "active"})).await.assert_status(200);
    agent.get("/v1/me").await.assert_error(401, "token_revoked");
    admin.get("/v1/me").await.assert_error(401, "session_revoked");
    let t = ws.owner.get(&format!("/v1/tokens/{token_id}")).await;
    assert_eq!(t.body["state"], "revoked", "{}", t.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_role_limits_its_members_tokens_too() {
    let server = TestServer::start().await;
    let ws = server.workspace("customtok").await;
    let role =
        ws.owner.post("/v1/roles", json!({"name": "tokenist", "permissions": ["tokens:create", "audit:read", "members:read"]})).await;
    let role_id = role.assert_status(201)["id"].as_str().unwrap().to_string();
    let (_, person) = ws.member(&server, "tokenist").await;
    let (_, secret) = Workspace::token(&person, &["audit:read", "members:read"], &["*"]).await;
    let agent = person.as_token(&secret);
    agent.get("/v1/audit").await.assert_status(200);
    // Taking audit:read out of the role takes it out of the token at once.
    ws.owner.patch(&format!("/v1/roles/{role_id}"), json!({"permissions": ["tokens:create", "members:read"]})).await.assert_status(200);
    agent.get("/v1/audit").await.assert_error(403, "permission_denied");
    assert_eq!(agent.get("/v1/me").await.body["permissions"], json!(["members:read"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn no_agent_token_can_hold_the_powers_that_govern_agents() {
    let server = TestServer::start().await;
    let ws = server.workspace("govern").await;
    // Deciding approvals, and changing the controls agents work under, are for people.
    for scope in [
        "approvals:decide",
        "members:manage",
        "roles:manage",
        "tokens:create",
        "tokens:manage",
        "killswitch:lift",
        "ownership:transfer",
        "settings:manage",
        "tools:manage",
        "constitution:publish",
    ] {
        let r = ws.owner.post("/v1/tokens", json!({"name": "x", "scopes": [scope], "tools": ["*"]})).await;
        r.assert_error(422, "scope_not_allowed");
        assert!(r.body["error"]["message"].as_str().unwrap().contains(scope), "{}", r.text);
    }
    // So an agent can never switch on its own writes.
    let (_, secret) = widest_token(&ws.owner).await;
    let agent = ws.owner.as_token(&secret);
    agent.patch("/v1/settings", json!({"agent_writes_enabled": true})).await.assert_error(403, "permission_denied");
    assert_eq!(ws.owner.get("/v1/settings").await.body["agent_writes_enabled"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_reads_the_approvals_they_asked_for_and_a_token_those_of_its_tools() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("email.send", "read", "approve", false).await;
    ws.record_tool("payments.charge", "read", "approve", false).await;
    let (_, ada) = ws.member(&server, "member").await;
    let (_, bob) = ws.member(&server, "member").await;
    let theirs = submit(&ada, "payments.charge", json!({"amount": 1200, "to": "cus_1"})).await;
    assert_eq!(theirs.body["status"], "pending_approval", "{}", theirs.body);
    let mine = submit(&bob, "email.send", json!({"to": "x@example.com"})).await;
    let (theirs, mine) = (theirs.body["approval_id"].as_str().unwrap(), mine.body["approval_id"].as_str().unwrap());
    let ids = |r: Resp| r.body["items"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();

    // Another member's approval, payload and all, is not a member's to read.
    assert_eq!(ids(bob.get("/v1/approvals").await), [mine]);
    bob.get(&format!("/v1/approvals/{theirs}")).await.assert_error(403, "permission_denied");
    assert_eq!(bob.get(&format!("/v1/approvals/{mine}")).await.status, 200);
    // Whoever decides approvals, or reads every action, sees the whole queue.
    let (_, viewer) = ws.member(&server, "viewer").await;
    for api in [&ws.owner, &viewer] {
        let mut all = ids(api.get("/v1/approvals").await);
        all.sort();
        let mut want = vec![theirs.to_string(), mine.to_string()];
        want.sort();
        assert_eq!(all, want);
    }
    // A token sees the approvals of the tools it covers.
    let (_, token) = Workspace::token(&ws.owner, &["approvals:read", "actions:read"], &["email.*"]).await;
    let agent = ws.owner.as_token(&token);
    assert_eq!(ids(agent.get("/v1/approvals").await), [mine]);
    agent.get(&format!("/v1/approvals/{theirs}")).await.assert_error(403, "tool_not_in_scope");
    // With `approvals:read` alone, a token is its owner's: the owner asked for none.
    let (_, token) = Workspace::token(&ws.owner, &["approvals:read"], &["*"]).await;
    assert!(ids(ws.owner.as_token(&token).get("/v1/approvals").await).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_reads_and_replays_only_the_tools_it_covers() {
    let server = TestServer::start().await;
    let ws = server.workspace("narrow").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    ws.record_tool("doc.edit", "read", "auto", false).await;
    // The owner's own actions, by hand, on both tools.
    let crm = submit(&ws.owner, "crm.read", json!({"q": "acme"})).await.assert_status(201)["id"].as_str().unwrap().to_string();
    let doc = submit(&ws.owner, "doc.edit", json!({"cc": "c@x.io"})).await.assert_status(201)["id"].as_str().unwrap().to_string();
    let (_, token) = Workspace::token(&ws.owner, &["actions:read", "tools:read", "actions:simulate"], &["crm.*"]).await;
    let agent = ws.owner.as_token(&token);
    let names =
        |r: &Resp, key: &str| r.body["items"].as_array().unwrap().iter().map(|x| x[key].as_str().unwrap().to_string()).collect::<Vec<_>>();

    assert_eq!(names(&agent.get("/v1/actions").await, "id"), [crm.as_str()]);
    agent.get(&format!("/v1/actions/{crm}")).await.assert_status(200);
    let r = agent.get(&format!("/v1/actions/{doc}")).await;
    r.assert_error(403, "tool_not_in_scope");
    assert!(!r.text.contains("c@x.io"));
    assert_eq!(names(&agent.get("/v1/tools").await, "name"), ["crm.read"]);
    // A tool outside it: the same answer whether it exists or not.
    agent.get("/v1/tools/doc.edit").await.assert_error(403, "tool_not_in_scope");
    agent.get("/v1/tools/no.such").await.assert_error(403, "tool_not_in_scope");
    agent.get("/v1/tools/crm.read").await.assert_status(200);
    // A what-if that would flip every action flips only what the token may see.
    let deny_all = json!({"draft": {"rules": [{"id": "all", "title": "No", "when": "true", "effect": "deny"}]}});
    let r = agent.post("/v1/simulations", deny_all.clone()).await;
    let flipped: Vec<String> =
        r.assert_status(200)["changes"].as_array().unwrap().iter().map(|c| c["action_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(flipped, [crm.as_str()], "{}", r.body);
    // The window's edges name only what it replayed: not the newer action on `doc.edit`.
    assert_eq!(r.body["window"]["newest_action_id"], crm.as_str());
    assert_eq!(r.body["window"]["oldest_action_id"], crm.as_str());
    assert!(!r.text.contains(&doc), "{}", r.text);
    // People are not limited by patterns.
    let r = ws.owner.post("/v1/simulations", deny_all).await;
    assert_eq!(r.assert_status(200)["changes"].as_array().unwrap().len(), 2);
    assert_eq!(names(&ws.owner.get("/v1/tools").await, "name").len(), 2);

    // Kill switches: a responder's token sees and engages only its own tools' switches.
    let stop = json!({"engaged": true, "reason": "incident 7"});
    ws.owner.put("/v1/killswitches/tools/doc.edit", stop.clone()).await.assert_status(200);
    let (_, responder) = Workspace::token(&ws.owner, &["killswitch:read", "killswitch:engage"], &["crm.*"]).await;
    let responder = ws.owner.as_token(&responder);
    for tool in ["doc.edit", "no.such"] {
        responder.put(&format!("/v1/killswitches/tools/{tool}"), stop.clone()).await.assert_error(403, "tool_not_in_scope");
    }
    responder.put("/v1/killswitches/tools/crm.read", stop.clone()).await.assert_status(200);
    let seen = responder.get("/v1/killswitches").await;
    let targets: Vec<&str> = seen.body["tools"].as_array().unwrap().iter().map(|s| s["target"].as_str().unwrap()).collect();
    assert_eq!(targets, ["crm.read"], "{}", seen.text);
    assert!(!seen.text.contains("doc.edit"), "{}", seen.text);
    assert_eq!(ws.owner.get("/v1/killswitches").await.body["tools"].as_array().unwrap().len(), 2);
}
