//! Signing in and out, and "who am I".

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::{format_ts, parse_ts};
use crate::error::{Error, Result};
use crate::model::Member;
use crate::names;
use crate::secrets::{self, SecretKind};
use crate::server::AppState;
use crate::server::auth::{Auth, CallerKind, need};
use crate::server::error::ErrorBody;
use crate::server::extract::Body;
use crate::store::{NewSession, Origin, SignInFailure, WorkspaceId};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub email: String,
    pub password: String,
    /// Which workspace, by name or id; needed only when the e-mail belongs to several.
    pub workspace: Option<String>,
    /// `console` or `api` (the default): recorded on the session.
    pub client: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SignedIn {
    /// The session secret: send it as `Authorization: Bearer <token>`. Shown once.
    pub token: String,
    pub expires_at: String,
    pub session_id: String,
    pub workspace: WorkspaceRef,
    pub member: Member,
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceRef {
    pub id: String,
    pub name: String,
}

/// Signs a person in with e-mail and password.
///
/// Failed attempts are limited per account and per client address; past the limit the
/// answer is 429 with `Retry-After`, and the password is not even checked.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", security(()), request_body = SignIn, responses(
    (status = 201, body = SignedIn),
    (status = 401, description = "wrong e-mail or password", body = ErrorBody),
    (status = 409, description = "the e-mail belongs to several workspaces: name one", body = ErrorBody),
    (status = 429, description = "too many failed attempts", body = ErrorBody),
))]
pub async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Body(req): Body<SignIn>,
) -> Result<(StatusCode, Json<SignedIn>)> {
    let email = names::normalize_email(&req.email);
    if email.len() > 254 || req.password.len() > secrets::MAX_PASSWORD_BYTES {
        return Err(Error::unauthenticated("invalid_credentials", "the e-mail or password is wrong"));
    }
    let client = match req.client.as_deref() {
        None | Some("api") => "api",
        Some("console") => "console",
        Some(other) => return Err(Error::unprocessable("invalid_field", format!("client: `{other}` is not `console` or `api`"))),
    };
    // Failures are recorded as coming through what the client said it was, as its session would be.
    let via = if client == "console" { crate::audit::Via::Console } else { crate::audit::Via::Api };
    let address = peer.ip().to_string();
    let (account_key, address_key) = (crate::store::account_key(&email), crate::store::address_key(&address));
    // Held until this attempt's outcome is on record (dropped at return).
    let _attempt = check_rate_limit(&state, &account_key, &address_key).await?;

    let mut accounts = state.store.find_accounts(&email).await?;
    if let Some(w) = &req.workspace {
        accounts = crate::store::accounts_in(accounts, w);
    }
    // Check the password against every candidate (or a decoy when there are none), so an
    // unknown e-mail takes as long as a wrong password.
    let password = req.password.clone();
    let hashes: Vec<String> = accounts.iter().map(|a| a.password_hash.clone()).collect();
    let matches: Vec<bool> = state
        .with_password_slot(move || {
            if hashes.is_empty() {
                let _ = secrets::verify_password(&password, secrets::decoy_password_hash());
                return Vec::new();
            }
            hashes.iter().map(|h| secrets::verify_password(&password, h)).collect()
        })
        .await?;
    let matched: Vec<_> = accounts.iter().zip(&matches).filter(|(_, ok)| **ok).map(|(a, _)| a.clone()).collect();

    let account = match matched.as_slice() {
        [one] => one.clone(),
        [] => {
            // Audit the failure on the log of every account the password was tried
            // against: with several, each was attacked, not just one.
            let audited = accounts.iter().map(|a| (a.workspace_id.clone(), a.member_id.clone())).collect();
            state
                .store
                .record_sign_in_failure(SignInFailure {
                    keys: vec![account_key.clone(), address_key],
                    accounts: audited,
                    email: email.clone(),
                    address: address.clone(),
                    reason: "wrong_password",
                    via,
                    by: None,
                })
                .await?;
            return Err(Error::unauthenticated("invalid_credentials", "the e-mail or password is wrong"));
        }
        several => {
            let names: Vec<&str> = several.iter().map(|a| a.workspace_name.as_str()).collect();
            return Err(Error::conflict(
                "workspace_required",
                format!("this e-mail has accounts in several workspaces ({}); say which with `workspace`", names.join(", ")),
            ));
        }
    };
    if !account.active {
        // The right password for a deactivated account is still a failed sign-in: counted
        // against the limits and audited, since a former member trying is worth knowing.
        let audited = vec![(account.workspace_id.clone(), account.member_id.clone())];
        state
            .store
            .record_sign_in_failure(SignInFailure {
                keys: vec![account_key, address_key],
                accounts: audited,
                email: email.clone(),
                address: address.clone(),
                reason: "member_deactivated",
                via,
                by: None,
            })
            .await?;
        return Err(Error::unauthenticated("member_deactivated", "this account has been deactivated; ask an admin of the workspace"));
    }

    let secret = secrets::generate(SecretKind::Session);
    let ttl = chrono::Duration::from_std(state.config.session_ttl).unwrap_or(chrono::Duration::hours(12));
    let expires_at = format_ts(state.clock.now() + ttl);
    let ws = account.workspace_id.clone();
    let by = Origin { actor: crate::audit::Actor::user(&account.member_id), via };
    state.store.clear_sign_in_failures(&account_key).await?;
    let session = state
        .store
        .create_session(
            &ws,
            &by,
            NewSession {
                member_id: account.member_id.clone(),
                secret_hash: secrets::storage_hash(&secret),
                client: client.to_string(),
                expires_at,
                address,
            },
        )
        .await?;
    let member = state.store.get_member(&ws, &account.member_id).await?;
    let permissions = permissions_of(&state, &ws, &member.role).await?;
    Ok((
        StatusCode::CREATED,
        Json(SignedIn {
            token: secret,
            expires_at: session.expires_at,
            session_id: session.id,
            workspace: WorkspaceRef { id: ws.to_string(), name: account.workspace_name },
            member,
            permissions,
        }),
    ))
}

async fn permissions_of(state: &AppState, ws: &WorkspaceId, role: &str) -> Result<Vec<String>> {
    let roles = state.store.list_roles(ws).await?;
    Ok(roles
        .into_iter()
        .find(|r| r.name == role)
        .map(|r| r.permissions.iter().map(|p| p.as_str().to_string()).collect())
        .unwrap_or_default())
}

/// A sign-in attempt under way, counted against its keys' limits until dropped: by then a
/// failure is on record (or the attempt succeeded and the account's failures were cleared).
pub struct Attempt {
    state: AppState,
    keys: [String; 2],
}

impl Drop for Attempt {
    fn drop(&mut self) {
        let mut in_flight = self.state.sign_ins_in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for key in &self.keys {
            if let Some(n) = in_flight.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    in_flight.remove(key);
                }
            }
        }
    }
}

/// Refuses with 429 when the account or the address has used up its failed attempts,
/// counting those on record and those being checked now; otherwise counts this one in.
///
/// Checking the record alone let a burst of simultaneous guesses all pass the check
/// before any failed: 54 guesses instead of 5. Across replicas (PostgreSQL), each may have
/// at most the limit in flight.
async fn check_rate_limit(state: &AppState, account_key: &str, address_key: &str) -> Result<Attempt> {
    let window = chrono::Duration::from_std(state.config.sign_in_window).unwrap_or(chrono::Duration::minutes(15));
    let now = state.clock.now();
    let since = format_ts(now - window);
    let counts = state.store.count_sign_in_failures(vec![account_key.to_string(), address_key.to_string()], &since).await?;
    let limits = [state.config.sign_in_per_account, state.config.sign_in_per_address];
    let keys = [account_key.to_string(), address_key.to_string()];
    let mut in_flight = state.sign_ins_in_flight.lock().unwrap_or_else(|e| e.into_inner());
    for (((count, oldest), limit), key) in counts.iter().zip(limits).zip(&keys) {
        // An attempt in flight, once failed, is on record too: counted twice for a moment,
        // which errs on the side of refusing.
        let count = count + i64::from(in_flight.get(key).copied().unwrap_or(0));
        if count >= limit {
            let retry = oldest
                .as_deref()
                .and_then(parse_ts)
                .map(|t| (t + window - now).num_seconds().max(1) as u64)
                // Only attempts still being checked: they end within a second or so.
                .unwrap_or(1);
            return Err(Error::rate_limited(
                retry,
                format!("too many failed sign-ins for this account or from this address; try again in {}", human_duration(retry)),
            ));
        }
    }
    for key in &keys {
        *in_flight.entry(key.clone()).or_default() += 1;
    }
    drop(in_flight);
    Ok(Attempt { state: state.clone(), keys })
}

/// "14 minutes", "40 seconds": for messages.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..=1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=119 => "1 minute".into(),
        120..=3599 => format!("{} minutes", secs.div_ceil(60)),
        _ => format!("{} hours", secs.div_ceil(3600)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current_password: String,
    /// At least 12 characters.
    pub new_password: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PasswordChanged {
    /// How many of your other sessions were ended (this one goes on).
    pub sessions_ended: u64,
}

/// Changes your own password, given the current one. Every other session of yours ends
/// at once: whoever may have learnt the old password is signed out. A wrong current
/// password counts as a failed sign-in against the account's limit.
#[utoipa::path(post, path = "/v1/me/password", tag = "sessions", request_body = ChangePassword, responses(
    (status = 200, body = PasswordChanged),
    (status = 403, description = "wrong_password, humans_only", body = ErrorBody),
    (status = 422, description = "weak_password, password_unchanged", body = ErrorBody),
    (status = 429, description = "too many failed attempts", body = ErrorBody),
))]
pub async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    caller: Auth<need::Authenticated>,
    Body(req): Body<ChangePassword>,
) -> Result<Json<PasswordChanged>> {
    caller.require_human("changing a password")?;
    let CallerKind::Human { session_id, .. } = &caller.kind else { unreachable!("checked just above") };
    if req.current_password.len() > secrets::MAX_PASSWORD_BYTES {
        return Err(Error::forbidden("wrong_password", "the current password is wrong"));
    }
    secrets::check_password_policy(&req.new_password).map_err(|m| Error::unprocessable("weak_password", m))?;
    if req.new_password == req.current_password {
        return Err(Error::unprocessable("password_unchanged", "the new password is the current one: choose another"));
    }
    let email = names::normalize_email(&caller.member_email);
    let (account_key, address_key) = (crate::store::account_key(&email), crate::store::address_key(&peer.ip().to_string()));
    let _attempt = check_rate_limit(&state, &account_key, &address_key).await?;
    let account = state
        .store
        .find_accounts(&email)
        .await?
        .into_iter()
        .find(|a| a.workspace_id == caller.workspace && a.member_id == caller.member_id)
        .ok_or_else(|| Error::unauthenticated("member_deactivated", "this account is no longer active"))?;
    let (current, stored) = (req.current_password, account.password_hash);
    let new = req.new_password;
    let (matches, new_hash) =
        state.with_password_slot(move || (secrets::verify_password(&current, &stored), secrets::hash_password(&new))).await?;
    if !matches {
        let audited = vec![(caller.workspace.clone(), caller.member_id.clone())];
        state
            .store
            .record_sign_in_failure(SignInFailure {
                keys: vec![account_key, address_key],
                accounts: audited,
                email: email.clone(),
                address: peer.ip().to_string(),
                reason: "wrong_current_password",
                via: caller.via,
                by: Some(caller.origin().actor),
            })
            .await?;
        return Err(Error::forbidden("wrong_password", "the current password is wrong"));
    }
    let change = crate::store::PasswordChange {
        member_id: caller.member_id.clone(),
        password_hash: new_hash,
        keep_session: Some(session_id.clone()),
        event: "member.password_changed",
    };
    let sessions_ended = state.store.set_password(&caller.workspace, &caller.origin(), change).await?;
    Ok(Json(PasswordChanged { sessions_ended }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SessionsQuery {
    /// Whose sessions (`usr_…`): yours when left out; another member's needs `members:manage`.
    pub member_id: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub member_id: String,
    /// `console` or `api`.
    pub client: String,
    pub created_at: String,
    pub expires_at: String,
    /// The session this request came with.
    pub current: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub items: Vec<SessionView>,
}

/// A member's sessions still in force, newest first: yours, or (with `members:manage`)
/// another member's. Never a secret.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(SessionsQuery), responses(
    (status = 200, body = SessionList),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Auth<need::Authenticated>,
    crate::server::extract::Query(q): crate::server::extract::Query<SessionsQuery>,
) -> Result<Json<SessionList>> {
    caller.require_human("reading sessions")?;
    let member_id = match q.member_id {
        Some(id) if id != caller.member_id => {
            crate::ids::parse(crate::ids::IdKind::User, &id)?;
            caller.require(crate::permissions::Permission::MembersManage)?;
            state.store.get_member(&caller.workspace, &id).await?;
            id
        }
        _ => caller.member_id.clone(),
    };
    let CallerKind::Human { session_id: current, .. } = &caller.kind else { unreachable!("checked by require_human") };
    let items = state
        .store
        .list_sessions(&caller.workspace, &member_id)
        .await?
        .into_iter()
        .map(|s| SessionView {
            current: s.id == *current,
            id: s.id,
            member_id: s.member_id,
            client: s.client,
            created_at: s.created_at,
            expires_at: s.expires_at,
        })
        .collect();
    Ok(Json(SessionList { items }))
}

/// Ends one session at once: one of yours (a lost laptop), or with `members:manage`
/// another member's, as for changing them (the owner's only by the owner; not someone who
/// holds powers you do not).
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "session id (`ses_…`)")), responses(
    (status = 204, description = "ended"),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn end_session(
    State(state): State<AppState>,
    caller: Auth<need::Authenticated>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode> {
    caller.require_human("ending sessions")?;
    crate::ids::parse(crate::ids::IdKind::Session, &id)?;
    let manages = caller.can(crate::permissions::Permission::MembersManage);
    let session = state.store.get_session(&caller.workspace, &id).await?;
    // Without members:manage, another member's session is as good as absent: the answer
    // says nothing of which session ids exist.
    let expired = parse_ts(&session.expires_at).is_none_or(|t| t <= state.clock.now());
    if expired || (session.member_id != caller.member_id && !manages) {
        return Err(Error::not_found("session", &id));
    }
    if session.member_id != caller.member_id {
        let target = state.store.get_member(&caller.workspace, &session.member_id).await?;
        super::members::ensure_may_change(&state, &caller, &target).await?;
    }
    // Ended already: 404 from the store, as for any session not in force.
    state.store.revoke_session(&caller.workspace, &caller.origin(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends the caller's session.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions", responses(
    (status = 204, description = "signed out"),
    (status = 401, body = ErrorBody),
    (status = 403, description = "agent tokens have no session", body = ErrorBody),
))]
pub async fn sign_out(State(state): State<AppState>, caller: Auth<need::Authenticated>) -> Result<StatusCode> {
    let CallerKind::Human { session_id, .. } = &caller.kind else {
        return Err(Error::forbidden(
            "not_a_session",
            "this is an agent token, which has no session to end; its owner (or an admin) revokes it with DELETE /v1/tokens/{id}",
        ));
    };
    state.store.revoke_session(&caller.workspace, &caller.origin(), session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub workspace: WorkspaceRef,
    pub member: Member,
    /// `session` or `agent_token`.
    pub credential: String,
    /// The session or token id.
    pub credential_id: String,
    pub expires_at: Option<String>,
    /// What this credential may do now.
    pub permissions: Vec<String>,
    /// For agent tokens: the tool patterns it may call.
    pub tools: Option<Vec<String>>,
}

/// Who the caller is and what they may do right now.
#[utoipa::path(get, path = "/v1/me", tag = "sessions", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(State(state): State<AppState>, caller: Auth<need::Authenticated>) -> Result<Json<Me>> {
    let member = state.store.get_member(&caller.workspace, &caller.member_id).await?;
    let (credential, credential_id, expires_at, tools) = match &caller.kind {
        CallerKind::Human { session_id, expires_at } => ("session", session_id.clone(), Some(expires_at.clone()), None),
        CallerKind::Agent { token_id, expires_at, tools, .. } => ("agent_token", token_id.clone(), expires_at.clone(), Some(tools.clone())),
    };
    Ok(Json(Me {
        workspace: WorkspaceRef { id: caller.workspace.to_string(), name: caller.workspace_name.clone() },
        member,
        credential: credential.to_string(),
        credential_id,
        expires_at,
        permissions: caller.permissions.iter().map(|p| p.as_str().to_string()).collect(),
        tools,
    }))
}
