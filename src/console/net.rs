//! The console's network side: effects run as tasks that send their results back as
//! actions, and one long-lived task keeps the live audit stream connected.
//!
//! Nothing here touches the console's state: drawing never waits on the network.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};

use super::action::{Action, Effect, NetMsg, StreamMsg};
use super::screens::audit::PAGE;
use crate::client::{Client, StreamItem};

/// How many events the tail shows when it first opens.
const INITIAL_TAIL: u32 = 200;

#[derive(Clone)]
pub struct Net {
    client: Arc<RwLock<Client>>,
    tx: mpsc::UnboundedSender<Action>,
    credential: watch::Sender<u64>,
}

impl Net {
    pub fn new(client: Client, tx: mpsc::UnboundedSender<Action>) -> Net {
        Net { client: Arc::new(RwLock::new(client)), tx, credential: watch::channel(0).0 }
    }

    fn client(&self) -> Client {
        self.client.read().expect("client lock").clone()
    }

    fn send(&self, m: NetMsg) {
        let _ = self.tx.send(Action::Net(m));
    }

    /// Carries out one effect in the background.
    pub fn run(&self, effect: Effect) {
        let net = self.clone();
        let c = self.client();
        match effect {
            Effect::Quit => {}
            Effect::Bell => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(b"\x07").and_then(|_| std::io::stdout().flush());
            }
            Effect::NewCredential(token) => {
                let fresh = c.with_token(Some(token));
                *self.client.write().expect("client lock") = fresh;
                self.credential.send_modify(|n| *n += 1);
            }
            Effect::FetchMe => {
                tokio::spawn(async move { net.send(NetMsg::Me(c.me().await)) });
            }
            Effect::FetchApprovals => {
                tokio::spawn(async move { net.send(NetMsg::Approvals(c.approvals("pending", 500).await)) });
            }
            Effect::FetchApproval(id) => {
                tokio::spawn(async move { net.send(NetMsg::Approval(c.approval(&id).await)) });
            }
            Effect::Decide { id, verdict, payload_sha256, reason } => {
                tokio::spawn(async move {
                    let result = c.decide(&id, verdict, &payload_sha256, reason.as_deref()).await;
                    net.send(NetMsg::Decided { verdict, result });
                });
            }
            Effect::FetchNames => {
                tokio::spawn(async move {
                    let mut names = Vec::new();
                    if let Ok(members) = c.members().await {
                        names.extend(members.into_iter().map(|m| (m.id, m.email)));
                    }
                    if let Ok(tokens) = c.tokens().await {
                        names.extend(tokens.into_iter().map(|t| (t.id, format!("agent {}", t.name))));
                    }
                    net.send(NetMsg::Names(names));
                });
            }
            Effect::FetchAccess => {
                tokio::spawn(async move {
                    let members = c.members().await;
                    let roles = c.raw("GET", "/v1/roles", None).await;
                    let tokens = c.tokens().await;
                    if let Err(e) = &members
                        && e.needs_sign_in()
                    {
                        net.send(NetMsg::AccessDone(Err(e.clone())));
                        return;
                    }
                    let roles = roles
                        .ok()
                        .and_then(|v| serde_json::from_value::<crate::server::routes::roles::RoleList>(v).ok())
                        .map(|r| (r.items, r.permissions));
                    net.send(NetMsg::Access(super::screens::access::AccessData { members: members.ok(), roles, tokens: tokens.ok() }));
                });
            }
            Effect::Access(op) => {
                tokio::spawn(async move { net.send(NetMsg::AccessDone(run_access(&c, op).await)) });
            }
            Effect::FetchTools => {
                tokio::spawn(async move { net.send(NetMsg::Tools(c.tools().await)) });
            }
            Effect::FetchSwitches => {
                tokio::spawn(async move { net.send(NetMsg::Switches(c.killswitches().await)) });
            }
            Effect::SetSwitch { tool, engaged, reason } => {
                tokio::spawn(async move {
                    let result = c.set_killswitch(tool.as_deref(), engaged, &reason).await;
                    net.send(NetMsg::SwitchSet { tool, engaged, result });
                });
            }
            Effect::FetchConstitution => {
                tokio::spawn(async move { net.send(NetMsg::Constitution(c.raw("GET", "/v1/constitution", None).await)) });
            }
            Effect::DryRun { body, under_draft } => {
                tokio::spawn(async move {
                    let sent = body["payload"].clone();
                    let result = c.raw("POST", "/v1/actions", Some(body)).await;
                    net.send(NetMsg::DryRun { under_draft, sent, result });
                });
            }
            Effect::WhatIf(body) => {
                // A what-if may wait its turn behind another, then replay for up to 20 s.
                tokio::spawn(async move {
                    let result = c.raw_with_timeout("POST", "/v1/simulations", Some(body), std::time::Duration::from_secs(90)).await;
                    net.send(NetMsg::WhatIf(result));
                });
            }
            Effect::DraftFromAction(id) => {
                tokio::spawn(async move {
                    let path = format!("/v1/constitution/drafts/from-action/{id}");
                    net.send(NetMsg::Drafted(c.raw("POST", &path, None).await));
                });
            }
            Effect::Publish { rules, base_version } => {
                tokio::spawn(async move {
                    let body = serde_json::json!({"rules": rules, "base_version": base_version});
                    net.send(NetMsg::Published(c.raw("POST", "/v1/constitution/versions", Some(body)).await));
                });
            }
            Effect::ExportAudit { path, format } => {
                tokio::spawn(async move {
                    let result = async {
                        let resp = c.audit_export(format.as_str()).await?;
                        crate::export_file::download(resp, &path).await.map_err(crate::client::ClientError::Local)
                    };
                    net.send(NetMsg::Exported(result.await));
                });
            }
            Effect::Verify => {
                tokio::spawn(async move { net.send(NetMsg::Verified(c.verify().await)) });
            }
            Effect::LoadOlder { before_seq } => {
                tokio::spawn(async move {
                    let after = (before_seq - 1 - PAGE).max(0);
                    let r = c.audit_page(after, (before_seq - 1 - after).max(1) as u32).await.map(|p| p.events);
                    net.send(NetMsg::Older(r));
                });
            }
            Effect::SignIn { email, password } => {
                tokio::spawn(async move {
                    let r = c.with_token(None).sign_in(&email, &password, None).await;
                    if let Ok(s) = &r {
                        let stored = crate::config::StoredSession {
                            server: c.base().to_string(),
                            token: s.token.clone(),
                            expires_at: s.expires_at.clone(),
                            workspace: s.workspace.name.clone(),
                            email: s.member.email.clone(),
                        };
                        let _ = crate::config::save_session(&stored);
                    }
                    net.send(NetMsg::SignedIn(r));
                });
            }
        }
    }

    /// Keeps the live stream connected: resumes after the last event it delivered, with
    /// growing pauses between failed attempts, and starts again at once with a new
    /// credential.
    pub fn start_stream(&self) {
        let net = self.clone();
        let mut credential = self.credential.subscribe();
        tokio::spawn(async move {
            let mut last: Option<i64> = None;
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                net.send(NetMsg::Stream(StreamMsg::Connecting { attempt }));
                let c = net.client();
                let outcome = async {
                    let after = match last {
                        Some(s) => s,
                        None => {
                            // First time: the most recent events, then live from there.
                            // (The stream backfills them from the store.)
                            let page = c.audit_tail(INITIAL_TAIL).await?;
                            page.first().map_or(0, |e| e.seq - 1)
                        }
                    };
                    let stream = c.stream(after).await?;
                    Ok::<_, crate::client::ClientError>((after, stream))
                }
                .await;
                let (after, stream) = match outcome {
                    Ok(x) => x,
                    Err(e) if e.code() == "resume_point_ahead" => {
                        // The server's log is behind what this console saw (restored from a
                        // backup, or another server): start again from its newest events.
                        last = None;
                        let error =
                            "the server's log ends before the last event shown here (restored?); starting again from its newest events";
                        net.send(NetMsg::Stream(StreamMsg::Down { error: error.into(), attempt, retry_in: Duration::ZERO }));
                        continue;
                    }
                    Err(e) if e.needs_sign_in() => {
                        net.send(NetMsg::Stream(StreamMsg::Unauthorized(e.to_string())));
                        let _ = credential.changed().await;
                        attempt = 0;
                        continue;
                    }
                    Err(e) => {
                        let wait = backoff(attempt);
                        net.send(NetMsg::Stream(StreamMsg::Down { error: e.to_string(), attempt, retry_in: wait }));
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = credential.changed() => attempt = 0,
                        }
                        continue;
                    }
                };
                last = Some(after);
                net.send(NetMsg::Stream(StreamMsg::Connected));
                attempt = 0;
                let mut stream = std::pin::pin!(stream);
                let ended = loop {
                    tokio::select! {
                        item = stream.next() => match item {
                            Some(Ok(StreamItem::Event(e))) => {
                                last = Some(e.seq);
                                net.send(NetMsg::Stream(StreamMsg::Event(e)));
                            }
                            Some(Ok(StreamItem::Lagged { .. })) => break "the console fell behind the live stream; resuming".to_string(),
                            Some(Err(e)) => break e.to_string(),
                            None => break "the server closed the stream".to_string(),
                        },
                        _ = credential.changed() => break "signed in again".to_string(),
                    }
                };
                attempt += 1;
                let wait = backoff(attempt).min(Duration::from_millis(500));
                net.send(NetMsg::Stream(StreamMsg::Down { error: ended, attempt, retry_in: wait }));
                tokio::time::sleep(wait).await;
            }
        });
    }
}

/// 0.5 s, 1 s, 2 s, 4 s, 8 s, then 10 s between attempts.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(6)).min(10_000))
}

/// Carries out a change to members, roles or tokens: (what to say, a secret to show).
async fn run_access(c: &Client, op: super::dialogs::AccessOp) -> Result<(String, Option<(String, String)>), crate::client::ClientError> {
    use super::dialogs::AccessOp::*;
    use serde_json::json;
    Ok(match op {
        CreateMember { email, name, role, password } => {
            let name = if name.is_empty() { None } else { Some(name) };
            c.raw("POST", "/v1/members", Some(json!({"email": email, "name": name, "role": role, "password": password}))).await?;
            (format!("Added {email} as {role}."), None)
        }
        ChangeRole { id, role } => {
            let m = c.raw("PATCH", &format!("/v1/members/{id}"), Some(json!({"role": role}))).await?;
            (format!("{} is now {role}.", m["email"].as_str().unwrap_or("The member")), None)
        }
        SetMemberActive { id, active } => {
            let status = if active { "active" } else { "deactivated" };
            let m = c.raw("PATCH", &format!("/v1/members/{id}"), Some(json!({"status": status}))).await?;
            let who = m["email"].as_str().unwrap_or("The member").to_string();
            (
                if active {
                    format!("{who} can sign in again.")
                } else {
                    format!("{who} is deactivated: their sessions and tokens no longer work.")
                },
                None,
            )
        }
        TransferOwnership { id } => {
            let t = c.raw("POST", "/v1/workspace/transfer", Some(json!({"member_id": id}))).await?;
            (format!("{} owns the workspace now; you are an admin.", t["owner"]["email"].as_str().unwrap_or("They")), None)
        }
        CreateRole { name, description, permissions } => {
            let description = if description.is_empty() { None } else { Some(description) };
            c.raw("POST", "/v1/roles", Some(json!({"name": name, "description": description, "permissions": permissions}))).await?;
            (format!("Created the role `{name}`."), None)
        }
        UpdateRole { id, permissions } => {
            let r = c.raw("PATCH", &format!("/v1/roles/{id}"), Some(json!({"permissions": permissions}))).await?;
            (format!("Updated `{}`: its members' powers changed at once.", r["name"].as_str().unwrap_or("the role")), None)
        }
        DeleteRole { id } => {
            c.raw("DELETE", &format!("/v1/roles/{id}"), None).await?;
            ("Deleted the role.".into(), None)
        }
        CreateToken { name, scopes, tools, expires_in_seconds } => {
            let t = c
                .raw(
                    "POST",
                    "/v1/tokens",
                    Some(json!({"name": name, "scopes": scopes, "tools": tools, "expires_in_seconds": expires_in_seconds})),
                )
                .await?;
            let secret = t["token"].as_str().unwrap_or_default().to_string();
            (format!("Created the token `{name}`."), Some((name, secret)))
        }
        RotateToken { id, name } => {
            let t = c.raw("POST", &format!("/v1/tokens/{id}/rotate"), None).await?;
            let secret = t["token"].as_str().unwrap_or_default().to_string();
            (format!("Rotated `{name}`: the old secret no longer works."), Some((name, secret)))
        }
        RevokeToken { id } => {
            let t = c.raw("DELETE", &format!("/v1/tokens/{id}"), None).await?;
            (format!("Revoked `{}`.", t["name"].as_str().unwrap_or("the token")), None)
        }
    })
}
