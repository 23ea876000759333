//! Restarting the server on the same data directory keeps everything, and the audit
//! chain carries on where it stopped.

use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_sessions_tokens_members_roles_settings_and_the_chain() {
    let mut server = TestServer::start().await;
    let ws = server.workspace("durable").await;
    let (member_id, member) = ws.member(&server, "member").await;
    let role = ws.owner.post("/v1/roles", json!({"name": "auditor", "permissions": ["audit:read"]})).await;
    let role_id = role.assert_status(201)["id"].as_str().unwrap().to_string();
    let (_, agent_secret) = Workspace::token(&member, &["members:read"], &["*"]).await;
    let (revoked_id, revoked_secret) = Workspace::token(&ws.owner, &["members:read"], &["*"]).await;
    ws.owner.delete(&format!("/v1/tokens/{revoked_id}")).await.assert_status(200);
    let (signed_out_id, signed_out) = ws.member(&server, "viewer").await;
    signed_out.delete("/v1/sessions/current").await.assert_status(204);
    ws.owner.patch("/v1/settings", json!({"approval_ttl_seconds": 1234})).await.assert_status(200);

    let members = ws.owner.get("/v1/members").await.body;
    let roles = ws.owner.get("/v1/roles").await.body;
    let tokens = ws.owner.get("/v1/tokens").await.body;
    let events = ws.owner.all_events().await;
    let head = events.last().unwrap().clone();

    for round in 0..2 {
        server.restart().await;
        // Same credentials, new port.
        let owner = ws.owner.at(&server.base);
        let member = member.at(&server.base);
        owner.get("/v1/me").await.assert_status(200);
        member.get("/v1/me").await.assert_status(200);
        member.as_token(&agent_secret).get("/v1/members").await.assert_status(200);
        member.as_token(&revoked_secret).get("/v1/members").await.assert_error(401, "token_revoked");
        signed_out.at(&server.base).get("/v1/me").await.assert_error(401, "session_revoked");
        if round == 0 {
            // Exactly as before (the second round follows a role change of its own).
            assert_eq!(owner.get("/v1/members").await.body, members);
            assert_eq!(owner.get("/v1/roles").await.body, roles);
        }
        let id_and_state = |list: &serde_json::Value| -> Vec<(String, String)> {
            list["items"].as_array().unwrap().iter().map(|t| (t["id"].to_string(), t["state"].to_string())).collect()
        };
        assert_eq!(id_and_state(&owner.get("/v1/tokens").await.body), id_and_state(&tokens), "round {round}");
        assert_eq!(owner.get("/v1/settings").await.body["approval_ttl_seconds"], 1234);
        assert_eq!(owner.get(&format!("/v1/roles/{role_id}")).await.body["permissions"], json!(["audit:read"]));
        let before = owner.all_events().await;
        assert_eq!(&before[..events.len()], &events[..], "the log survived unchanged");
        assert_eq!(owner.verify().await["ok"], true);

        // The chain continues: the next event follows the last one before the restart.
        let last = before.last().unwrap().clone();
        owner
            .patch(&format!("/v1/members/{member_id}"), json!({"role": if round == 0 { "viewer" } else { "member" }}))
            .await
            .assert_status(200);
        let after = owner.all_events().await;
        assert_eq!(after.len(), before.len() + 1);
        let next = after.last().unwrap();
        assert_eq!(next["seq"], last["seq"].as_i64().unwrap() + 1);
        assert_eq!(next["prev_hash"], last["hash"]);
        let v = owner.verify().await;
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["head_seq"], next["seq"]);
    }
    assert!(head["seq"].as_i64().unwrap() > 5);
    let (code, out, err) = server.cli_verify();
    assert_eq!(code, 0, "{out}{err}");
    // A person signed out before the restarts signs in again after them.
    let email = ws.owner.at(&server.base).get(&format!("/v1/members/{signed_out_id}")).await.body["email"].as_str().unwrap().to_string();
    server.sign_in(&email).await.get("/v1/me").await.assert_status(200);
}
