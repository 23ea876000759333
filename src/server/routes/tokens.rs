//! Agent tokens: created by a person, owned by them, never more powerful than them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::clock::format_ts;
use crate::error::{Error, Result};
use crate::ids::{self, IdKind};
use crate::model::Token;
use crate::names;
use crate::permissions::{self, Permission};
use crate::secrets::{self, SecretKind};
use crate::server::AppState;
use crate::server::auth::{Auth, Caller, need};
use crate::server::error::ErrorBody;
use crate::server::extract::{Body, Query};
use crate::store::NewToken;

/// The longest a token may be set to live: two years.
pub const MAX_TOKEN_LIFETIME_SECONDS: i64 = 2 * 365 * 24 * 3600;
/// At most this many scopes and tool patterns per token.
pub const MAX_TOKEN_LIST: usize = 64;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for, e.g. `billing-agent (prod)`.
    pub name: String,
    /// Permissions, e.g. `["actions:submit"]`. Never `approvals:decide`.
    pub scopes: Vec<String>,
    /// Tool name patterns the token may submit: `email.*`, `crm.read`, `*`. At least one
    /// when a scope reaches tools (`actions:*`, `approvals:read`, `tools:read`).
    pub tools: Vec<String>,
    /// Lifetime, 60 seconds to 2 years. Without it the token lives until revoked.
    pub expires_in_seconds: Option<i64>,
}

/// A token with its secret: returned once, at creation or rotation.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenWithSecret {
    /// The secret. It is shown this once and cannot be recovered: store it now.
    pub token: String,
    #[serde(flatten)]
    pub record: Token,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this member's tokens (`usr_…`). Without `tokens:manage` you see only your own.
    pub owner: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<Token>,
}

fn check_create(caller: &Caller, req: &CreateToken) -> Result<()> {
    if !names::valid_display_name(&req.name) {
        return Err(Error::unprocessable("invalid_name", "a token name is 1 to 100 characters, without control characters"));
    }
    if req.scopes.len() > MAX_TOKEN_LIST || req.tools.len() > MAX_TOKEN_LIST {
        return Err(Error::unprocessable(
            "too_many_entries",
            format!("a token has at most {MAX_TOKEN_LIST} scopes and {MAX_TOKEN_LIST} tool patterns"),
        ));
    }
    let scopes = permissions::parse_set(&req.scopes).map_err(|e| Error::unprocessable("unknown_permission", e.to_string()))?;
    if scopes.is_empty() {
        return Err(Error::unprocessable(
            "invalid_field",
            "scopes: a token needs at least one permission (e.g. `actions:submit`); without one it can do nothing",
        ));
    }
    if let Some(p) = scopes.iter().find(|p| !p.grantable_to_agents()) {
        let why = if *p == Permission::ApprovalsDecide {
            "approvals are decided by people, never by agents"
        } else {
            "it governs the controls agents work under"
        };
        return Err(Error::unprocessable("scope_not_allowed", format!("agent tokens cannot hold `{p}`: {why}")));
    }
    if let Some(p) = scopes.iter().find(|p| !caller.can(**p)) {
        return Err(Error::unprocessable("scope_not_held", format!("you cannot give a token `{p}`: your role does not grant it to you")));
    }
    if req.tools.is_empty()
        && let Some(p) = scopes.iter().find(|p| p.limited_by_tools())
    {
        return Err(Error::unprocessable(
            "invalid_field",
            format!("tools: `{p}` reaches only the tools a token's patterns cover; give at least one (`crm.*`, or `*` for every tool)"),
        ));
    }
    if let Some(bad) = req.tools.iter().find(|t| !permissions::valid_tool_pattern(t)) {
        let shown: String = bad.chars().take(80).collect();
        return Err(Error::unprocessable(
            "invalid_tool_pattern",
            format!("`{shown}` is not a tool pattern; use a tool name, `prefix.*`, or `*`"),
        ));
    }
    if let Some(s) = req.expires_in_seconds
        && !(60..=MAX_TOKEN_LIFETIME_SECONDS).contains(&s)
    {
        return Err(Error::unprocessable(
            "invalid_expiry",
            format!("expires_in_seconds must be between 60 and {MAX_TOKEN_LIFETIME_SECONDS} (2 years)"),
        ));
    }
    Ok(())
}

/// Creates an agent token owned by the caller. The secret is in the answer, once.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateToken, responses(
    (status = 201, body = TokenWithSecret),
    (status = 403, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Auth<need::TokensCreate>,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, Json<TokenWithSecret>)> {
    caller.require_human("creating agent tokens")?;
    check_create(&caller, &req)?;
    let secret = secrets::generate(SecretKind::AgentToken);
    let expires_at = req.expires_in_seconds.map(|s| format_ts(state.clock.now() + chrono::Duration::seconds(s)));
    let mut scopes: Vec<String> = permissions::parse_set(&req.scopes).unwrap_or_default().iter().map(|p| p.as_str().to_string()).collect();
    scopes.dedup();
    let mut tools = req.tools.clone();
    tools.sort();
    tools.dedup();
    let new = NewToken {
        owner_id: caller.member_id.clone(),
        name: req.name,
        scopes,
        tools,
        secret_hash: secrets::storage_hash(&secret),
        hint: secrets::hint(&secret),
        expires_at,
    };
    let record = state.store.create_token(&caller.workspace, &caller.origin(), new).await?;
    Ok((StatusCode::CREATED, Json(TokenWithSecret { token: secret, record })))
}

/// Lists tokens: everyone's with `tokens:manage`, otherwise your own.
#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", params(ListQuery), responses(
    (status = 200, body = TokenList),
    (status = 403, body = ErrorBody),
))]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Auth<need::Authenticated>,
    Query(q): Query<ListQuery>,
) -> Result<Json<TokenList>> {
    if let Some(o) = &q.owner {
        ids::parse(IdKind::User, o)?;
    }
    let owner = if caller.can(Permission::TokensManage) {
        q.owner
    } else {
        caller.require(Permission::TokensCreate)?;
        match q.owner {
            Some(o) if o != caller.member_id => {
                return Err(Error::forbidden("permission_denied", "seeing other members' tokens needs the `tokens:manage` permission"));
            }
            _ => Some(caller.member_id.clone()),
        }
    };
    Ok(Json(TokenList { items: state.store.list_tokens(&caller.workspace, owner.as_deref()).await? }))
}

/// Loads a token the caller may read or change (`doing` says which, for the refusal):
/// their own, or any with `tokens:manage`.
async fn manageable(state: &AppState, caller: &Caller, id: &str, doing: &str) -> Result<Token> {
    ids::parse(IdKind::Token, id)?;
    let token = state.store.get_token(&caller.workspace, id).await?;
    if caller.can(Permission::TokensManage) {
        return Ok(token);
    }
    caller.require(Permission::TokensCreate)?;
    if token.owner_id != caller.member_id {
        return Err(Error::forbidden("permission_denied", format!("{doing} other members' tokens needs the `tokens:manage` permission")));
    }
    Ok(token)
}

/// One token (never its secret).
#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "token id (`tok_…`)")), responses(
    (status = 200, body = Token),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn get_token(State(state): State<AppState>, caller: Auth<need::Authenticated>, Path(id): Path<String>) -> Result<Json<Token>> {
    Ok(Json(manageable(&state, &caller, &id, "reading").await?))
}

/// Replaces a token's secret. The old secret stops working at once; the new one is in
/// the answer, once. Only the token's owner may: the new secret acts as its owner, so
/// anyone else rotating it would take the owner's powers (and count as them when asking
/// for an approval they then gave). `tokens:manage` revokes other members' tokens instead.
#[utoipa::path(post, path = "/v1/tokens/{id}/rotate", tag = "tokens", params(("id" = String, Path, description = "token id")), responses(
    (status = 200, body = TokenWithSecret),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, description = "revoked or expired", body = ErrorBody),
))]
pub async fn rotate_token(
    State(state): State<AppState>,
    caller: Auth<need::Authenticated>,
    Path(id): Path<String>,
) -> Result<Json<TokenWithSecret>> {
    caller.require_human("rotating agent tokens")?;
    ids::parse(IdKind::Token, &id)?;
    // Whose it is comes first: no permission lets anyone else rotate it, so saying one is
    // missing would mislead.
    let token = state.store.get_token(&caller.workspace, &id).await?;
    if token.owner_id != caller.member_id {
        return Err(Error::forbidden(
            "not_token_owner",
            "only the member who owns a token can rotate it: its new secret acts as them; to stop it, revoke it (DELETE /v1/tokens/{id}) and its owner can create another",
        ));
    }
    caller.require(Permission::TokensCreate)?;
    let secret = secrets::generate(SecretKind::AgentToken);
    let record = state
        .store
        .rotate_token(&caller.workspace, &caller.origin(), &id, &secrets::storage_hash(&secret), &secrets::hint(&secret), &token.hint)
        .await?;
    Ok(Json(TokenWithSecret { token: secret, record }))
}

/// Revokes a token at once. What it did stays in the audit log.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "token id")), responses(
    (status = 200, body = Token),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn revoke_token(State(state): State<AppState>, caller: Auth<need::Authenticated>, Path(id): Path<String>) -> Result<Json<Token>> {
    caller.require_human("revoking agent tokens")?;
    manageable(&state, &caller, &id, "revoking").await?;
    Ok(Json(state.store.revoke_token(&caller.workspace, &caller.origin(), &id).await?))
}
