//! Members and roles: adding people, changing roles, deactivating, exactly one owner and
//! its transfer, nobody granting more than they hold, custom roles.

use serde_json::{Value, json};

use crate::support::*;

async fn owners(api: &Api) -> Vec<String> {
    let list = api.get("/v1/members").await;
    list.body["items"].as_array().unwrap().iter().filter(|m| m["role"] == "owner").map(|m| m["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn members_are_added_with_a_role_and_can_sign_in() {
    let server = TestServer::start().await;
    let ws = server.workspace("add").await;
    let r = ws.owner.post("/v1/members", json!({"email": "Ada@Add.test", "password": PASSWORD, "role": "member", "name": "Ada"})).await;
    let m = r.assert_status(201).clone();
    assert_eq!(m["email"], "ada@add.test", "e-mails are stored lower-case");
    assert_eq!(m["role"], "member");
    assert_eq!(m["status"], "active");
    assert_eq!(m["name"], "Ada");
    assert!(m.get("password").is_none() && m.get("password_hash").is_none(), "{m}");
    let ada = server.sign_in("ada@add.test").await;
    assert_eq!(ada.get("/v1/me").await.body["member"]["role"], "member");
    // The same e-mail twice is a conflict and changes nothing.
    let events = ws.owner.all_events().await.len();
    let r = ws.owner.post("/v1/members", json!({"email": "ada@add.test", "password": PASSWORD, "role": "viewer"})).await;
    r.assert_error(409, "member_exists");
    assert_eq!(ws.owner.all_events().await.len(), events);
    // Bad fields are refused, each with its code, and leave nothing behind.
    for (body, code) in [
        (json!({"email": "not-an-email", "password": PASSWORD, "role": "viewer"}), "invalid_email"),
        (json!({"email": "b@add.test", "password": "short", "role": "viewer"}), "weak_password"),
        (json!({"email": "b@add.test", "password": PASSWORD, "role": "wizard"}), "unknown_role"),
        (json!({"email": "b@add.test", "password": PASSWORD, "role": "owner"}), "use_ownership_transfer"),
    ] {
        ws.owner.post("/v1/members", body).await.assert_error(422, code);
    }
    assert_eq!(ws.owner.get("/v1/members").await.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(ws.owner.all_events().await.len(), events);
    let created = ws.owner.all_events().await.into_iter().filter(|e| e["event_type"] == "member.created").count();
    assert_eq!(created, 2, "the owner and Ada");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_change_takes_effect_on_the_next_request() {
    let server = TestServer::start().await;
    let ws = server.workspace("rerole").await;
    let (id, person) = ws.member(&server, "viewer").await;
    person.get("/v1/audit").await.assert_status(200);
    person.patch("/v1/settings", json!({"approval_ttl_seconds": 600})).await.assert_error(403, "permission_denied");
    let r = ws.owner.patch(&format!("/v1/members/{id}"), json!({"role": "admin"})).await;
    assert_eq!(r.assert_status(200)["role"], "admin");
    person.patch("/v1/settings", json!({"approval_ttl_seconds": 600})).await.assert_status(200);
    ws.owner.patch(&format!("/v1/members/{id}"), json!({"role": "member"})).await.assert_status(200);
    person.get("/v1/audit").await.assert_error(403, "permission_denied");
    let changes: Vec<Value> = ws.owner.all_events().await.into_iter().filter(|e| e["event_type"] == "member.role_changed").collect();
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0]["data"], json!({"before": "viewer", "after": "admin"}));
    assert_eq!(changes[1]["data"], json!({"before": "admin", "after": "member"}));
    ws.owner.patch(&format!("/v1/members/{id}"), json!({})).await.assert_error(422, "nothing_to_change");
}

#[tokio::test(flavor = "multi_thread")]
async fn deactivation_kills_sessions_and_tokens_at_once() {
    let server = TestServer::start().await;
    let ws = server.workspace("kill").await;
    let (id, admin) = ws.member(&server, "admin").await;
    let (t1, s1) = Workspace::token(&admin, &["members:read"], &["*"]).await;
    let (t2, s2) = Workspace::token(&admin, &["audit:read"], &["*"]).await;
    let r = ws.owner.patch(&format!("/v1/members/{id}"), json!({"status": "deactivated"})).await;
    assert_eq!(r.assert_status(200)["status"], "deactivated");
    admin.get("/v1/me").await.assert_error(401, "member_deactivated");
    admin.as_token(&s1).get("/v1/members").await.assert_error(401, "member_deactivated");
    admin.as_token(&s2).get("/v1/audit").await.assert_error(401, "member_deactivated");
    for t in [&t1, &t2] {
        assert_eq!(ws.owner.get(&format!("/v1/tokens/{t}")).await.body["state"], "revoked");
    }
    let e = ws.owner.all_events().await.into_iter().find(|e| e["event_type"] == "member.deactivated").unwrap();
    assert_eq!(e["resource"], id.as_str());
    assert_eq!(e["data"]["tokens_revoked"], 2);
    assert_eq!(e["data"]["sessions_revoked"], 1);
    // Reactivation lets them sign in again; their tokens stay dead.
    ws.owner.patch(&format!("/v1/members/{id}"), json!({"status": "active"})).await.assert_status(200);
    let email = ws.owner.get(&format!("/v1/members/{id}")).await.body["email"].as_str().unwrap().to_string();
    server.sign_in(&email).await.get("/v1/me").await.assert_status(200);
    admin.as_token(&s1).get("/v1/members").await.assert_error(401, "token_revoked");
    assert!(ws.owner.event_types().await.contains(&"member.reactivated".to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn there_is_exactly_one_owner_who_cannot_be_demoted_or_deactivated() {
    let server = TestServer::start().await;
    let ws = server.workspace("one").await;
    let owner_path = format!("/v1/members/{}", ws.owner_id);
    let (_, admin) = ws.member(&server, "admin").await;
    // Not by an admin…
    admin.patch(&owner_path, json!({"role": "viewer"})).await.assert_error(403, "owner_protected");
    admin.patch(&owner_path, json!({"status": "deactivated"})).await.assert_error(403, "owner_protected");
    // …nor by the owner themself.
    ws.owner.patch(&owner_path, json!({"role": "admin"})).await.assert_error(409, "owner_role_fixed");
    ws.owner.patch(&owner_path, json!({"status": "deactivated"})).await.assert_error(409, "owner_cannot_be_deactivated");
    ws.owner.patch(&owner_path, json!({"role": "owner"})).await.assert_error(422, "use_ownership_transfer");
    // Nobody is made a second owner.
    let (id, _) = ws.member(&server, "member").await;
    ws.owner.patch(&format!("/v1/members/{id}"), json!({"role": "owner"})).await.assert_error(422, "use_ownership_transfer");
    assert_eq!(owners(&ws.owner).await, vec![ws.owner_id.clone()]);
    ws.owner.get("/v1/me").await.assert_status(200);
    assert_eq!(ws.owner.get("/v1/me").await.body["member"]["status"], "active");
}

#[tokio::test(flavor = "multi_thread")]
async fn ownership_transfers_only_from_the_owner_and_the_old_owner_becomes_admin() {
    let server = TestServer::start().await;
    let ws = server.workspace("transfer").await;
    let (admin_id, admin) = ws.member(&server, "admin").await;
    let (viewer_id, _) = ws.member(&server, "viewer").await;
    // An admin cannot take or give ownership.
    admin.post("/v1/workspace/transfer", json!({"member_id": admin_id})).await.assert_error(403, "permission_denied");
    ws.owner.post("/v1/workspace/transfer", json!({"member_id": ws.owner_id})).await.assert_error(409, "already_owner");
    // Not to a deactivated member.
    ws.owner.patch(&format!("/v1/members/{viewer_id}"), json!({"status": "deactivated"})).await.assert_status(200);
    ws.owner.post("/v1/workspace/transfer", json!({"member_id": viewer_id})).await.assert_error(409, "member_deactivated");
    assert_eq!(owners(&ws.owner).await, vec![ws.owner_id.clone()]);

    let r = ws.owner.post("/v1/workspace/transfer", json!({"member_id": admin_id})).await;
    let body = r.assert_status(200).clone();
    assert_eq!(body["owner"]["id"], admin_id.as_str());
    assert_eq!(body["owner"]["role"], "owner");
    assert_eq!(body["previous_owner"]["id"], ws.owner_id.as_str());
    assert_eq!(body["previous_owner"]["role"], "admin");
    assert_eq!(owners(&admin).await, vec![admin_id.clone()]);
    assert_eq!(admin.get("/v1/workspace").await.body["owner_id"], admin_id.as_str());
    // Powers move with it, on the next request, on the same sessions.
    assert!(admin.get("/v1/me").await.body["permissions"].as_array().unwrap().contains(&json!("ownership:transfer")));
    let old = ws.owner.get("/v1/me").await;
    assert_eq!(old.body["member"]["role"], "admin");
    assert!(!old.body["permissions"].as_array().unwrap().contains(&json!("ownership:transfer")));
    ws.owner.post("/v1/workspace/transfer", json!({"member_id": ws.owner_id})).await.assert_error(403, "permission_denied");
    // The old owner is now an ordinary admin: the new owner can change them.
    admin.patch(&format!("/v1/members/{}", ws.owner_id), json!({"role": "member"})).await.assert_status(200);
    let e = admin.all_events().await.into_iter().find(|e| e["event_type"] == "workspace.ownership_transferred").unwrap();
    assert_eq!(e["data"]["from"], ws.owner_id.as_str());
    assert_eq!(e["data"]["to"], admin_id.as_str());
    assert_eq!(e["actor"]["id"], ws.owner_id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn nobody_grants_more_than_they_hold() {
    let server = TestServer::start().await;
    let ws = server.workspace("grant").await;
    // A people manager: may add members and manage roles, but holds little else.
    let r = ws.owner.post("/v1/roles", json!({"name": "people", "permissions": ["members:read", "members:manage", "roles:manage"]})).await;
    r.assert_status(201);
    let (_, manager) = ws.member(&server, "people").await;
    let add = |role: &str| json!({"email": format!("{role}-x@grant.test"), "password": PASSWORD, "role": role});
    manager.post("/v1/members", add("admin")).await.assert_error(403, "cannot_grant");
    manager.post("/v1/members", add("viewer")).await.assert_error(403, "cannot_grant");
    // A role no wider than their own is fine.
    manager.post("/v1/members", add("people")).await.assert_status(201);
    // Nor can they make a role with powers they lack, or widen one.
    let r = manager.post("/v1/roles", json!({"name": "sneaky", "permissions": ["audit:read"]})).await;
    r.assert_error(403, "cannot_grant");
    let narrow = manager.post("/v1/roles", json!({"name": "narrow", "permissions": ["members:read"]})).await;
    let narrow_id = narrow.assert_status(201)["id"].as_str().unwrap().to_string();
    let r = manager.patch(&format!("/v1/roles/{narrow_id}"), json!({"permissions": ["members:read", "settings:manage"]})).await;
    r.assert_error(403, "cannot_grant");
    // Nor promote someone (whom they outrank) beyond themselves.
    let (viewer_id, _) = ws.member(&server, "narrow").await;
    manager.patch(&format!("/v1/members/{viewer_id}"), json!({"role": "admin"})).await.assert_error(403, "cannot_grant");
    // Ownership is never part of a custom role, even for the owner.
    let r = ws.owner.post("/v1/roles", json!({"name": "crown", "permissions": ["ownership:transfer"]})).await;
    r.assert_error(422, "permission_not_grantable");
    // None of the refusals changed anything.
    let roles = ws.owner.get("/v1/roles").await;
    let names: Vec<&str> = roles.body["items"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["owner", "admin", "member", "viewer", "narrow", "people"]);
    let narrow = ws.owner.get(&format!("/v1/roles/{narrow_id}")).await;
    assert_eq!(narrow.body["permissions"], json!(["members:read"]));
    assert_eq!(ws.owner.get(&format!("/v1/members/{viewer_id}")).await.body["role"], "narrow");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_roles_are_created_used_changed_at_once_and_deleted_when_unused() {
    let server = TestServer::start().await;
    let ws = server.workspace("custom").await;
    let r = ws
        .owner
        .post(
            "/v1/roles",
            json!({"name": "approver", "description": "decides", "permissions": ["approvals:read", "approvals:decide", "audit:read"]}),
        )
        .await;
    let role = r.assert_status(201).clone();
    let role_id = role["id"].as_str().unwrap().to_string();
    assert!(role_id.starts_with("rol_"));
    assert_eq!(role["builtin"], false);
    assert_eq!(role["permissions"], json!(["approvals:read", "approvals:decide", "audit:read"]));
    ws.owner.post("/v1/roles", json!({"name": "approver", "permissions": []})).await.assert_error(409, "role_exists");
    ws.owner.post("/v1/roles", json!({"name": "admin", "permissions": []})).await.assert_error(409, "role_exists");
    ws.owner.post("/v1/roles", json!({"name": "Bad Name", "permissions": []})).await.assert_error(422, "invalid_name");
    ws.owner.post("/v1/roles", json!({"name": "fly", "permissions": ["actions:fly"]})).await.assert_error(422, "unknown_permission");

    let (id, person) = ws.member(&server, "approver").await;
    let me = person.get("/v1/me").await;
    assert_eq!(me.body["member"]["role"], "approver");
    assert_eq!(me.body["permissions"], json!(["approvals:read", "approvals:decide", "audit:read"]));
    person.get("/v1/audit").await.assert_status(200);
    person.get("/v1/members").await.assert_error(403, "permission_denied");
    assert_eq!(ws.owner.get(&format!("/v1/roles/{role_id}")).await.body["members"], 1);

    // Changing the role changes its holders' powers on their next request.
    let r = ws.owner.patch(&format!("/v1/roles/{role_id}"), json!({"permissions": ["approvals:read", "members:read"]})).await;
    r.assert_status(200);
    person.get("/v1/audit").await.assert_error(403, "permission_denied");
    person.get("/v1/members").await.assert_status(200);
    // Renaming keeps the holders.
    ws.owner.patch(&format!("/v1/roles/{role_id}"), json!({"name": "reviewer"})).await.assert_status(200);
    assert_eq!(person.get("/v1/me").await.body["member"]["role"], "reviewer");

    // Deleting is refused while anyone holds it, even a deactivated member.
    ws.owner.delete(&format!("/v1/roles/{role_id}")).await.assert_error(409, "role_in_use");
    ws.owner.patch(&format!("/v1/members/{id}"), json!({"status": "deactivated"})).await.assert_status(200);
    ws.owner.delete(&format!("/v1/roles/{role_id}")).await.assert_error(409, "role_in_use");
    ws.owner.patch(&format!("/v1/members/{id}"), json!({"role": "viewer"})).await.assert_status(200);
    ws.owner.delete(&format!("/v1/roles/{role_id}")).await.assert_status(204);
    ws.owner.get(&format!("/v1/roles/{role_id}")).await.assert_error(404, "not_found");
    ws.owner.delete(&format!("/v1/roles/{role_id}")).await.assert_error(404, "not_found");
    let types = ws.owner.event_types().await;
    for t in ["role.created", "role.updated", "role.deleted"] {
        assert!(types.contains(&t.to_string()), "no {t}: {types:?}");
    }
    assert_eq!(types.iter().filter(|t| *t == "role.updated").count(), 2);
}

/// A request authorised a moment before its member was deactivated must not leave a
/// credential behind that would come back to life on reactivation: the store itself
/// refuses to make a session or token for a deactivated member. (The race's second half,
/// played deterministically against the store the server uses.)
#[tokio::test(flavor = "multi_thread")]
async fn no_credential_is_made_for_a_deactivated_member_even_by_a_request_already_authorised() {
    use countersign::audit::{Actor, Via};
    use countersign::secrets::{self, SecretKind};
    use countersign::store::{NewToken, Origin, Sessions, Tokens, WorkspaceId};

    let server = TestServer::start().await;
    let ws = server.workspace("late").await;
    let (id, _) = ws.member(&server, "admin").await;
    ws.owner.patch(&format!("/v1/members/{id}"), json!({"status": "deactivated"})).await.assert_status(200);
    let events = ws.owner.all_events().await.len();

    let wsid = WorkspaceId::trusted(ws.id.clone());
    let by = Origin { actor: Actor::user(&id), via: Via::Api };
    let token = secrets::generate(SecretKind::AgentToken);
    let new = NewToken {
        owner_id: id.clone(),
        name: "late".into(),
        scopes: vec!["members:read".into()],
        tools: vec!["*".into()],
        secret_hash: secrets::storage_hash(&token),
        hint: secrets::hint(&token),
        expires_at: None,
    };
    let refused = server.store.create_token(&wsid, &by, new).await.expect_err("a token for a deactivated member");
    assert_eq!(refused.code, "member_deactivated");
    let session = secrets::generate(SecretKind::Session);
    let expires = countersign::clock::format_ts(server.clock.now() + chrono::Duration::hours(1));
    let refused = server
        .store
        .create_session(
            &wsid,
            &by,
            countersign::store::NewSession {
                member_id: id.clone(),
                secret_hash: secrets::storage_hash(&session),
                client: "api".into(),
                expires_at: expires.clone(),
                address: "127.0.0.1".into(),
            },
        )
        .await
        .expect_err("a session for a deactivated member");
    assert_eq!(refused.code, "member_deactivated");
    assert_eq!(ws.owner.all_events().await.len(), events, "nothing was written");

    // Reactivated: neither credential exists.
    ws.owner.patch(&format!("/v1/members/{id}"), json!({"status": "active"})).await.assert_status(200);
    server.with_token(&token).get("/v1/me").await.assert_error(401, "invalid_token");
    server.with_token(&session).get("/v1/me").await.assert_error(401, "invalid_token");
    assert_eq!(ws.owner.get(&format!("/v1/tokens?owner={id}")).await.body["items"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_role_cannot_change_members_more_powerful_than_itself() {
    let server = TestServer::start().await;
    let ws = server.workspace("ranks").await;
    ws.owner
        .post("/v1/roles", json!({"name": "people", "permissions": ["members:read", "members:manage", "approvals:read"]}))
        .await
        .assert_status(201);
    let (_, people) = ws.member(&server, "people").await;
    let (admin_id, _) = ws.member(&server, "admin").await;
    let (viewer_id, _) = ws.member(&server, "viewer").await;
    // An admin holds powers the people-manager does not: refused, and nothing changes.
    people.patch(&format!("/v1/members/{admin_id}"), json!({"status": "deactivated"})).await.assert_error(403, "member_outranks_you");
    people.patch(&format!("/v1/members/{admin_id}"), json!({"role": "viewer"})).await.assert_error(403, "member_outranks_you");
    assert_eq!(ws.owner.get(&format!("/v1/members/{admin_id}")).await.body["status"], "active");
    // A viewer's powers are not all held by `people` either (audit:read): refused too.
    people.patch(&format!("/v1/members/{viewer_id}"), json!({"status": "deactivated"})).await.assert_error(403, "member_outranks_you");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_editor_cannot_change_a_role_that_holds_powers_they_do_not() {
    let server = TestServer::start().await;
    let ws = server.workspace("rolestrip").await;
    let oncall = ws
        .owner
        .post("/v1/roles", json!({"name": "oncall", "permissions": ["killswitch:read", "killswitch:engage", "killswitch:lift"]}))
        .await;
    let oncall = oncall.assert_status(201)["id"].as_str().unwrap().to_string();
    ws.owner.post("/v1/roles", json!({"name": "rolesmith", "permissions": ["roles:manage", "killswitch:read"]})).await.assert_status(201);
    let (_, smith) = ws.member(&server, "rolesmith").await;
    // Stripping the on-call's lift would take away a power the editor does not hold.
    let r = smith.patch(&format!("/v1/roles/{oncall}"), json!({"permissions": ["killswitch:read"]})).await;
    r.assert_error(403, "role_outranks_you");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("killswitch:"), "{}", r.body);
    smith.patch(&format!("/v1/roles/{oncall}"), json!({"name": "renamed"})).await.assert_error(403, "role_outranks_you");
    let role = ws.owner.get("/v1/roles").await;
    let kept = role.body["items"].as_array().unwrap().iter().find(|r| r["id"] == oncall.as_str()).unwrap().clone();
    assert_eq!((kept["name"].as_str(), kept["permissions"].as_array().unwrap().len()), (Some("oncall"), 3));
    // A role within the editor's powers can be changed; an empty change is refused.
    let mine = smith.post("/v1/roles", json!({"name": "reader", "permissions": ["killswitch:read"]})).await;
    let mine = mine.assert_status(201)["id"].as_str().unwrap().to_string();
    smith.patch(&format!("/v1/roles/{mine}"), json!({"description": "reads switches"})).await.assert_status(200);
    smith.patch(&format!("/v1/roles/{mine}"), json!({})).await.assert_error(422, "nothing_to_change");
    let updates = ws.owner.all_events().await.into_iter().filter(|e| e["event_type"] == "role.updated").count();
    assert_eq!(updates, 1, "refusals and empty changes leave no event");
}
