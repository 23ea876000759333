//! Sessions: sign-in, sign-out, expiry, deactivation, and the sign-in rate limits.

use std::time::Duration;

use serde_json::json;

use countersign::server::ServerConfig;

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_returns_a_session_that_sign_out_ends() {
    let server = TestServer::start().await;
    let ws = server.workspace("signout").await;
    let r = server.anon().post("/v1/sessions", json!({"email": "owner@signout.test", "password": PASSWORD})).await;
    let body = r.assert_status(201).clone();
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("css_"));
    assert!(body["expires_at"].is_string());
    assert_eq!(body["member"]["id"], ws.owner_id.as_str());
    let session = server.with_token(token);
    session.get("/v1/me").await.assert_status(200);
    session.delete("/v1/sessions/current").await.assert_status(204);
    session.get("/v1/me").await.assert_error(401, "session_revoked");
    session.delete("/v1/sessions/current").await.assert_error(401, "session_revoked");
    // Other sessions of the same person live on.
    ws.owner.get("/v1/me").await.assert_status(200);
    // Sign-in and sign-out are in the log; the secret is not.
    let events = ws.owner.all_events().await;
    assert!(events.iter().any(|e| e["event_type"] == "session.revoked" && e["resource"] == body["session_id"]));
    assert!(!serde_json::to_string(&events).unwrap().contains(token));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_expires_by_the_servers_clock() {
    let config = ServerConfig { session_ttl: Duration::from_secs(3600), ..ServerConfig::default() };
    let server = TestServer::start_with(config).await;
    let ws = server.workspace("expire").await;
    ws.owner.get("/v1/me").await.assert_status(200);
    server.clock.advance(chrono::Duration::minutes(59));
    ws.owner.get("/v1/me").await.assert_status(200);
    server.clock.advance(chrono::Duration::minutes(2));
    ws.owner.get("/v1/me").await.assert_error(401, "session_expired");
    // Signing in again gives a fresh hour.
    let again = server.sign_in("owner@expire.test").await;
    again.get("/v1/me").await.assert_status(200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deactivated_members_sessions_die_at_once_and_they_cannot_sign_in() {
    let server = TestServer::start().await;
    let ws = server.workspace("deact").await;
    let (id, admin) = ws.member(&server, "admin").await;
    let email = admin.get("/v1/me").await.body["member"]["email"].as_str().unwrap().to_string();
    let second = server.sign_in(&email).await;
    let r = ws.owner.patch(&format!("/v1/members/{id}"), json!({"status": "deactivated"})).await;
    assert_eq!(r.assert_status(200)["status"], "deactivated");
    admin.get("/v1/me").await.assert_error(401, "member_deactivated");
    second.get("/v1/me").await.assert_error(401, "member_deactivated");
    let r = server.anon().post("/v1/sessions", json!({"email": email, "password": PASSWORD})).await;
    r.assert_error(401, "member_deactivated");
    let event = ws.owner.all_events().await.into_iter().find(|e| e["event_type"] == "member.deactivated").expect("event");
    assert_eq!(event["data"]["sessions_revoked"], 2, "{event}");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_unknown_credentials_get_one_answer() {
    let server = TestServer::start().await;
    let _ws = server.workspace("creds").await;
    let wrong = server.anon().post("/v1/sessions", json!({"email": "owner@creds.test", "password": "wrong password!!"})).await;
    let unknown = server.anon().post("/v1/sessions", json!({"email": "nobody@creds.test", "password": PASSWORD})).await;
    wrong.assert_error(401, "invalid_credentials");
    unknown.assert_error(401, "invalid_credentials");
    assert_eq!(wrong.text, unknown.text, "an unknown e-mail must look like a wrong password");
    // E-mail is matched case-insensitively.
    let r = server.anon().post("/v1/sessions", json!({"email": "Owner@Creds.TEST", "password": PASSWORD})).await;
    r.assert_status(201);
}

fn limited(per_account: i64, per_address: i64) -> ServerConfig {
    ServerConfig {
        sign_in_per_account: per_account,
        sign_in_per_address: per_address,
        sign_in_window: Duration::from_secs(600),
        ..ServerConfig::default()
    }
}

fn retry_after(r: &Resp) -> i64 {
    let v = r.headers.get("retry-after").unwrap_or_else(|| panic!("429 without Retry-After: {:?}", r.headers));
    v.to_str().unwrap().parse().expect("Retry-After in seconds")
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_sign_ins_are_limited_per_account() {
    let server = TestServer::start_with(limited(3, 100)).await;
    let ws = server.workspace("acct").await;
    let anon = server.anon();
    let wrong = json!({"email": "owner@acct.test", "password": "not the password"});
    let right = json!({"email": "owner@acct.test", "password": PASSWORD});
    for _ in 0..3 {
        anon.post("/v1/sessions", wrong.clone()).await.assert_error(401, "invalid_credentials");
    }
    let r = anon.post("/v1/sessions", wrong.clone()).await;
    r.assert_error(429, "rate_limited");
    let wait = retry_after(&r);
    assert!((1..=600).contains(&wait), "Retry-After {wait}");
    // While limited, even the right password is refused (and not checked).
    anon.post("/v1/sessions", right.clone()).await.assert_error(429, "rate_limited");
    // Another account from the same address is not limited by this one.
    ws.add_member("other@acct.test", "viewer").await;
    anon.post("/v1/sessions", json!({"email": "other@acct.test", "password": PASSWORD})).await.assert_status(201);
    // Halfway through the wait: still limited.
    server.clock.advance(chrono::Duration::seconds(wait / 2));
    anon.post("/v1/sessions", right.clone()).await.assert_error(429, "rate_limited");
    // Past the window: the right password works.
    server.clock.advance(chrono::Duration::seconds(wait - wait / 2 + 1));
    anon.post("/v1/sessions", right.clone()).await.assert_status(201);
    // Success clears the account's count: three more failures are allowed before a 429.
    for _ in 0..3 {
        anon.post("/v1/sessions", wrong.clone()).await.assert_error(401, "invalid_credentials");
    }
    anon.post("/v1/sessions", right).await.assert_error(429, "rate_limited");
    // Every failure was audited on the account's log; the refusals while limited were not
    // password checks and left no failure event.
    let failed = ws.owner.all_events().await.into_iter().filter(|e| e["event_type"] == "session.failed").count();
    assert_eq!(failed, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_guesses_sent_at_once_gets_no_more_than_the_limit() {
    let server = TestServer::start_with(limited(5, 100)).await;
    let ws = server.workspace("burst").await;
    let anon = server.anon();
    let wrong = json!({"email": "owner@burst.test", "password": "not the password"});
    let answers = futures_util::future::join_all((0..40).map(|_| anon.post("/v1/sessions", wrong.clone()))).await;
    let checked = answers.iter().filter(|r| r.status == 401).count();
    let refused = answers.iter().filter(|r| r.status == 429).count();
    assert_eq!(checked + refused, 40, "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    // Sent together, they all arrived before any had failed: the ones still being checked
    // count too.
    assert!((1..=5).contains(&checked), "{checked} passwords were checked against a limit of 5");
    let failed = ws.owner.all_events().await.into_iter().filter(|e| e["event_type"] == "session.failed").count();
    assert_eq!(failed, checked);
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_sign_ins_are_limited_per_address() {
    let server = TestServer::start_with(limited(100, 4)).await;
    let _ws = server.workspace("addr").await;
    let anon = server.anon();
    // Four different e-mails, none known: the address is what they share.
    for i in 0..4 {
        let r = anon.post("/v1/sessions", json!({"email": format!("guess{i}@addr.test"), "password": "whatever it is"})).await;
        r.assert_error(401, "invalid_credentials");
    }
    let r = anon.post("/v1/sessions", json!({"email": "owner@addr.test", "password": PASSWORD})).await;
    r.assert_error(429, "rate_limited");
    let wait = retry_after(&r);
    assert!((1..=600).contains(&wait), "Retry-After {wait}");
    server.clock.advance(chrono::Duration::seconds(wait + 1));
    anon.post("/v1/sessions", json!({"email": "owner@addr.test", "password": PASSWORD})).await.assert_status(201);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deactivated_members_attempt_to_sign_in_is_a_failed_sign_in_in_the_log() {
    let server = TestServer::start().await;
    let ws = server.workspace("leaver").await;
    let id = ws.add_member("leaver@leaver.test", "admin").await;
    ws.owner.patch(&format!("/v1/members/{id}"), json!({"status": "deactivated"})).await.assert_status(200);
    let r = server.anon().post("/v1/sessions", json!({"email": "leaver@leaver.test", "password": PASSWORD})).await;
    r.assert_error(401, "member_deactivated");
    let events = ws.owner.all_events().await;
    let failed = events.iter().find(|e| e["event_type"] == "session.failed").expect("the attempt is audited");
    assert_eq!(failed["resource"], id.as_str());
    // Whoever tried is not known to be the member: the actor is the sign-in, not them.
    assert_eq!((failed["actor"]["kind"].as_str(), failed["actor"]["id"].as_str()), (Some("system"), Some("sign-in")));
    assert_eq!(failed["outcome"], "failure");
    assert_eq!(failed["data"]["reason"], "member_deactivated");
    assert!(!events.iter().any(|e| e["event_type"] == "session.created" && e["data"]["member_id"] == id.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_email_in_two_workspaces_names_its_workspace_and_failures_reach_both_logs() {
    let server = TestServer::start().await;
    let a = server.workspace("first").await;
    let b = server.workspace("second").await;
    let a_id = a.add_member("both@example.test", "viewer").await;
    let b_id = b.add_member("both@example.test", "admin").await;
    let anon = server.anon();
    // The same password opens both: the person must say which.
    let r = anon.post("/v1/sessions", json!({"email": "both@example.test", "password": PASSWORD})).await;
    r.assert_error(409, "workspace_required");
    let r = anon.post("/v1/sessions", json!({"email": "both@example.test", "password": PASSWORD, "workspace": "second"})).await;
    let body = r.assert_status(201).clone();
    assert_eq!(body["member"]["id"], b_id.as_str());
    assert_eq!(body["member"]["role"], "admin");
    let r = anon.post("/v1/sessions", json!({"email": "both@example.test", "password": PASSWORD, "workspace": a.id})).await;
    assert_eq!(r.assert_status(201)["member"]["id"], a_id.as_str());
    // The name in another case names the same workspace: no failed sign-in over a capital.
    let r = anon.post("/v1/sessions", json!({"email": "both@example.test", "password": PASSWORD, "workspace": "SECOND"})).await;
    assert_eq!(r.assert_status(201)["member"]["id"], b_id.as_str());
    // A wrong password was tried against both accounts: both workspaces' logs say so.
    anon.post("/v1/sessions", json!({"email": "both@example.test", "password": "wrong for both"}))
        .await
        .assert_error(401, "invalid_credentials");
    for (ws, id) in [(&a, &a_id), (&b, &b_id)] {
        let events = ws.owner.all_events().await;
        let failed: Vec<_> = events.iter().filter(|e| e["event_type"] == "session.failed").collect();
        assert_eq!(failed.len(), 1, "{}: {failed:?}", ws.name);
        assert_eq!(failed[0]["resource"], id.as_str());
        assert!(events.iter().all(|e| e["workspace_id"] == ws.id.as_str()));
        assert_eq!(ws.owner.verify().await["ok"], true);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_changes_their_password_and_their_other_sessions_end() {
    let server = TestServer::start().await;
    let ws = server.workspace("pw").await;
    let (_, member) = ws.member(&server, "member").await;
    let email = member.get("/v1/me").await.body["member"]["email"].as_str().unwrap().to_string();
    let elsewhere = server.sign_in(&email).await;
    let change = |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let fresh = "another long passphrase";
    member.post("/v1/me/password", change("not it at all", fresh)).await.assert_error(403, "wrong_password");
    member.post("/v1/me/password", change(PASSWORD, "short")).await.assert_error(422, "weak_password");
    member.post("/v1/me/password", change(PASSWORD, PASSWORD)).await.assert_error(422, "password_unchanged");
    let r = member.post("/v1/me/password", change(PASSWORD, fresh)).await;
    assert_eq!(r.assert_status(200)["sessions_ended"], 1);
    // This session goes on; the other is over; only the new password signs in.
    member.get("/v1/me").await.assert_status(200);
    elsewhere.get("/v1/me").await.assert_error(401, "session_revoked");
    let anon = server.anon();
    anon.post("/v1/sessions", json!({"email": email, "password": PASSWORD})).await.assert_error(401, "invalid_credentials");
    anon.post("/v1/sessions", json!({"email": email, "password": fresh})).await.assert_status(201);
    // The wrong guess counted as a failed sign-in; the change is audited, without the hash.
    let events = ws.owner.all_events().await;
    assert!(events.iter().any(|e| e["event_type"] == "session.failed" && e["data"]["reason"] == "wrong_current_password"));
    let changed: Vec<_> = events.iter().filter(|e| e["event_type"] == "member.password_changed").collect();
    assert_eq!(changed.len(), 1);
    assert!(!changed[0].to_string().contains("argon2"));
    // Agents have no password.
    let (_, token) = Workspace::token(&member, &["actions:submit"], &["*"]).await;
    member.as_token(&token).post("/v1/me/password", change(fresh, "yet another passphrase")).await.assert_error(403, "humans_only");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_sees_and_ends_their_own_sessions_and_an_admin_a_members() {
    let server = TestServer::start().await;
    let ws = server.workspace("laptops").await;
    let (member_id, member) = ws.member(&server, "member").await;
    let email = member.get("/v1/me").await.body["member"]["email"].as_str().unwrap().to_string();
    let lost = server.sign_in(&email).await;
    let lost_id = lost.get("/v1/me").await.body["credential_id"].as_str().unwrap().to_string();
    let mine = member.get("/v1/sessions").await;
    let items = mine.assert_status(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{}", mine.text);
    assert_eq!(items.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(!mine.text.contains("css_"), "no secret in a listing");
    // The lost laptop's session ends at once; this one goes on.
    assert_eq!(member.delete(&format!("/v1/sessions/{lost_id}")).await.status, 204);
    lost.get("/v1/me").await.assert_error(401, "session_revoked");
    member.get("/v1/me").await.assert_status(200);
    member.delete(&format!("/v1/sessions/{lost_id}")).await.assert_error(404, "not_found");
    assert_eq!(member.get("/v1/sessions").await.body["items"].as_array().unwrap().len(), 1);
    // Another member's: with members:manage, and not someone who outranks you.
    member.get(&format!("/v1/sessions?member_id={}", ws.owner_id)).await.assert_error(403, "permission_denied");
    let (_, admin) = ws.member(&server, "admin").await;
    let theirs = admin.get(&format!("/v1/sessions?member_id={member_id}")).await;
    let their_id = theirs.assert_status(200)["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(theirs.body["items"][0]["current"], false);
    let owner_session =
        admin.get(&format!("/v1/sessions?member_id={}", ws.owner_id)).await.body["items"][0]["id"].as_str().unwrap().to_string();
    admin.delete(&format!("/v1/sessions/{owner_session}")).await.assert_error(403, "owner_protected");
    // Without members:manage, another's session is as good as absent.
    member.delete(&format!("/v1/sessions/{owner_session}")).await.assert_error(404, "not_found");
    assert_eq!(admin.delete(&format!("/v1/sessions/{their_id}")).await.status, 204);
    member.get("/v1/me").await.assert_error(401, "session_revoked");
    admin.delete("/v1/sessions/ses_not-an-id").await.assert_error(400, "invalid_id");
}
