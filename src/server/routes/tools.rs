//! Tools: what agents may ask to call, and how each call is gated.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::workspace::check_ttl;
use crate::error::{Error, Result};
use crate::gate::{Policy, ToolKind};
use crate::model::{Connector, Tool};
use crate::names;
use crate::server::AppState;
use crate::server::auth::{Auth, need};
use crate::server::connectors;
use crate::server::error::ErrorBody;
use crate::server::extract::Body;
use crate::store::{ToolDef, WorkspaceId};
use crate::vault;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTool {
    /// `read` or `write`. While agent writes are off, agents cannot call `write` tools.
    pub kind: ToolKind,
    /// Irreversible tools always need at least one human.
    pub irreversible: bool,
    /// `auto`, `approve` or `approve-dual`.
    pub policy: Policy,
    /// 0 to 1: below it (or when the agent gives none), a call needs an approval.
    pub min_confidence: Option<f64>,
    /// Approval lifetime, 60 s to 7 days; the workspace default when absent.
    pub approval_ttl_seconds: Option<i64>,
    pub connector: Connector,
    pub description: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ToolList {
    pub items: Vec<Tool>,
}

/// What `DELETE /v1/tools/{name}` removed.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeletedTool {
    /// The tool as it was (secret values masked).
    pub tool: Tool,
    /// Its approvals still pending or approved and not yet run: withdrawn, so none of them
    /// can run (each an `approval.withdrawn` event).
    pub approvals_withdrawn: usize,
}

/// Headers a connector may not set: they belong to the HTTP exchange or to Countersign.
const RESERVED_HEADERS: &[&str] =
    &["host", "content-length", "content-type", "transfer-encoding", "connection", "te", "upgrade", "idempotency-key"];
const MAX_HEADERS: usize = 32;
const MAX_HEADER_VALUE: usize = 4096;

fn check_header(name: &str, value: &str, secret: bool) -> Result<()> {
    let lower = name.to_ascii_lowercase();
    let token = !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        let shown: String = name.chars().take(60).collect();
        return Err(Error::unprocessable("invalid_header", format!("`{shown}` is not a valid HTTP header name")));
    }
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("countersign-") {
        return Err(Error::unprocessable("invalid_header", format!("`{name}` is set by Countersign itself and cannot be configured")));
    }
    if value.len() > MAX_HEADER_VALUE || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        let what = if secret { "secret header" } else { "header" };
        return Err(Error::unprocessable(
            "invalid_header",
            format!("the value of {what} `{name}` must be at most {MAX_HEADER_VALUE} bytes, without line breaks"),
        ));
    }
    Ok(())
}

/// Plain header names that carry credentials by convention (exactly, or as a part of the
/// name): a plain header is shown by the API and kept in the audit log, so these go in
/// `secret_headers` instead.
const CREDENTIAL_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie"];
const CREDENTIAL_HEADER_PARTS: &[&str] =
    &["token", "secret", "password", "passwd", "apikey", "api-key", "api_key", "auth", "signature", "credential"];

fn check_plain_header_is_not_a_credential(name: &str) -> Result<()> {
    let lower = name.to_ascii_lowercase();
    if CREDENTIAL_HEADERS.contains(&lower.as_str()) || CREDENTIAL_HEADER_PARTS.iter().any(|p| lower.contains(p)) {
        return Err(Error::unprocessable(
            "invalid_header",
            format!(
                "`{name}` looks like a credential, and a plain header is shown by the API and kept in the audit log: \
                 put it in connector.secret_headers"
            ),
        ));
    }
    Ok(())
}

/// Header names are case-insensitive: the same header given twice (`X-Api-Key` and
/// `x-api-key`) would be sent twice, and which one a receiver reads is its own choice.
fn check_distinct_headers<'a>(names: impl Iterator<Item = &'a String>) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in names {
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(Error::unprocessable(
                "invalid_header",
                format!("`{name}` is given twice (header names are case-insensitive): give it once"),
            ));
        }
    }
    Ok(())
}

const MAX_SECRET_QUERY: usize = 8;

fn check_query_param(name: &str, value: &str) -> Result<()> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        let shown: String = name.chars().take(60).collect();
        return Err(Error::unprocessable(
            "invalid_query_param",
            format!("`{shown}` is not a query parameter name Countersign accepts (1 to 64 of A-Z a-z 0-9 _ . -)"),
        ));
    }
    if value.len() > MAX_HEADER_VALUE || value.chars().any(char::is_control) {
        return Err(Error::unprocessable(
            "invalid_query_param",
            format!("the value of secret query parameter `{name}` must be at most {MAX_HEADER_VALUE} bytes, without control characters"),
        ));
    }
    Ok(())
}

/// Seals the secrets sent, or keeps those stored when none were sent — but only for the
/// same receiver: credentials never follow a tool to another host, or whoever may manage
/// tools could point it at a server of theirs and collect them.
fn seal_or_keep(
    sent: Option<BTreeMap<String, String>>,
    stored: Option<&BTreeMap<String, String>>,
    same_receiver: bool,
    required: (&'static str, &str),
    mut seal: impl FnMut(&str, &str) -> Result<String>,
) -> Result<Option<BTreeMap<String, String>>> {
    match sent {
        Some(secrets) => secrets.into_iter().map(|(k, v)| seal(&k, &v).map(|sealed| (k, sealed))).collect::<Result<_>>().map(Some),
        None => match stored {
            Some(kept) if !kept.is_empty() && !same_receiver => {
                let (code, field) = required;
                Err(Error::unprocessable(
                    code,
                    format!(
                        "the connector now points at another receiver (scheme, host or port changed), and stored secrets never \
                         follow it there: send connector.{field} again for the new receiver ({{}} to have none)"
                    ),
                ))
            }
            Some(kept) if !kept.is_empty() => Ok(Some(kept.clone())),
            _ => Ok(None),
        },
    }
}

/// Validates a connector as sent and seals its secret values. `existing` is the stored
/// connector, whose sealed secrets are kept when the request leaves them out.
fn prepare_connector(state: &AppState, ws: &WorkspaceId, tool: &str, sent: Connector, existing: Option<&Connector>) -> Result<Connector> {
    let Connector::Http { url, headers, secret_headers, secret_query, timeout_ms } = sent else {
        return Ok(Connector::Record {});
    };
    // One rule for every URL Countersign calls.
    let parsed = crate::call_url::check("connector.url", &url, "put it in connector.secret_query or connector.secret_headers")
        .map_err(|m| Error::unprocessable("invalid_url", m))?;
    if let Some(t) = timeout_ms
        && !connectors::TIMEOUT_MS.contains(&t)
    {
        return Err(Error::unprocessable(
            "invalid_timeout",
            format!("connector.timeout_ms must be between {} and {}", connectors::TIMEOUT_MS.start(), connectors::TIMEOUT_MS.end()),
        ));
    }
    // Before any sealing (it costs), and again below with the secrets kept.
    if headers.len() + secret_headers.as_ref().map_or(0, BTreeMap::len) > MAX_HEADERS {
        return Err(Error::unprocessable("invalid_header", format!("a connector has at most {MAX_HEADERS} headers")));
    }
    for (k, v) in &headers {
        check_header(k, v, false)?;
        check_plain_header_is_not_a_credential(k)?;
    }
    check_distinct_headers(headers.keys())?;
    if let Some(sent) = &secret_headers {
        check_distinct_headers(sent.keys())?;
    }
    if secret_query.as_ref().map_or(0, BTreeMap::len) > MAX_SECRET_QUERY {
        return Err(Error::unprocessable(
            "invalid_query_param",
            format!("a connector has at most {MAX_SECRET_QUERY} secret query parameters"),
        ));
    }
    let (stored_headers, stored_query, same_receiver) = match existing {
        Some(Connector::Http { url: before, secret_headers, secret_query, .. }) => {
            (secret_headers.as_ref(), secret_query.as_ref(), same_origin(before, &parsed))
        }
        _ => (None, None, true),
    };
    let sealing_failed = |e: vault::VaultError| Error::unavailable("master_key_unavailable", format!("secrets cannot be stored: {e}"));
    let sealed = seal_or_keep(secret_headers, stored_headers, same_receiver, ("secret_headers_required", "secret_headers"), |k, v| {
        check_header(k, v, true)?;
        state.keys.seal(v, &vault::header_aad(ws.as_str(), tool, k)).map_err(sealing_failed)
    })?;
    let sealed_query = seal_or_keep(secret_query, stored_query, same_receiver, ("secret_query_required", "secret_query"), |k, v| {
        check_query_param(k, v)?;
        state.keys.seal(v, &vault::query_aad(ws.as_str(), tool, k)).map_err(sealing_failed)
    })?;
    // Counted and compared once the secrets are settled, sent or kept.
    let secrets = sealed.as_ref().map_or(0, BTreeMap::len);
    if headers.len() + secrets > MAX_HEADERS {
        return Err(Error::unprocessable("invalid_header", format!("a connector has at most {MAX_HEADERS} headers")));
    }
    if let Some(k) = sealed.iter().flatten().map(|(k, _)| k).find(|k| headers.keys().any(|h| h.eq_ignore_ascii_case(k))) {
        return Err(Error::unprocessable("invalid_header", format!("`{k}` is both a plain and a secret header")));
    }
    if let Some(k) = sealed_query.iter().flatten().map(|(k, _)| k).find(|k| parsed.query_pairs().any(|(q, _)| q == k.as_str())) {
        return Err(Error::unprocessable(
            "invalid_query_param",
            format!("`{k}` is both in connector.url's query and a secret query parameter"),
        ));
    }
    Ok(Connector::Http { url: parsed.to_string(), headers, secret_headers: sealed, secret_query: sealed_query, timeout_ms })
}

/// Whether a stored connector URL and a new one reach the same receiver: scheme, host
/// and port (the default port counts as given).
fn same_origin(stored: &str, new: &reqwest::Url) -> bool {
    reqwest::Url::parse(stored).is_ok_and(|old| old.origin() == new.origin())
}

/// Creates or replaces a tool (audited with before and after; secrets masked).
#[utoipa::path(put, path = "/v1/tools/{name}", tag = "tools", request_body = PutTool, params(("name" = String, Path, description = "tool name, e.g. `email.send`")), responses(
    (status = 200, description = "replaced", body = Tool),
    (status = 201, description = "created", body = Tool),
    (status = 403, body = ErrorBody),
    (status = 422, body = ErrorBody),
))]
pub async fn put_tool(
    State(state): State<AppState>,
    caller: Auth<need::ToolsManage>,
    Path(name): Path<String>,
    Body(req): Body<PutTool>,
) -> Result<(StatusCode, Json<Tool>)> {
    names::check_tool_name(&name)?;
    if req.irreversible && req.policy == Policy::Auto {
        return Err(Error::unprocessable(
            "irreversible_requires_approval",
            "an irreversible tool always needs a human: `auto` would let it run unseen; use `approve` or `approve-dual`",
        ));
    }
    if let Some(c) = req.min_confidence
        && !(0.0..=1.0).contains(&c)
    {
        return Err(Error::unprocessable("invalid_confidence", "min_confidence must be between 0 and 1"));
    }
    if let Some(ttl) = req.approval_ttl_seconds {
        check_ttl("approval_ttl_seconds", ttl)?;
    }
    let description = req.description.unwrap_or_default();
    if !names::valid_free_text(&description, 500, true) {
        return Err(Error::unprocessable(
            "invalid_description",
            "a description is at most 500 characters, without control characters (line breaks and tabs aside) or bidirectional controls",
        ));
    }
    let existing = state.store.get_tool_sealed(&caller.workspace, &name).await?;
    let connector = prepare_connector(&state, &caller.workspace, &name, req.connector, existing.as_ref().map(|t| &t.connector))?;
    let def = ToolDef {
        name,
        description,
        kind: req.kind,
        irreversible: req.irreversible,
        policy: req.policy,
        min_confidence: req.min_confidence,
        approval_ttl_seconds: req.approval_ttl_seconds,
        connector,
    };
    let (tool, created) = state.store.put_tool(&caller.workspace, &caller.origin(), def).await?;
    Ok((if created { StatusCode::CREATED } else { StatusCode::OK }, Json(tool)))
}

/// Every tool, secrets masked.
#[utoipa::path(get, path = "/v1/tools", tag = "tools", responses((status = 200, body = ToolList), (status = 403, body = ErrorBody)))]
pub async fn list_tools(State(state): State<AppState>, caller: Auth<need::ToolsRead>) -> Result<Json<ToolList>> {
    // A token learns of the tools its patterns cover, and no others.
    let mut items = state.store.list_tools(&caller.workspace).await?;
    items.retain(|t| caller.covers_tool(&t.name));
    Ok(Json(ToolList { items }))
}

/// One tool, secrets masked.
#[utoipa::path(get, path = "/v1/tools/{name}", tag = "tools", params(("name" = String, Path, description = "tool name")), responses(
    (status = 200, body = Tool),
    (status = 403, description = "tool_not_in_scope (outside a token's tools, whether or not it exists)", body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
pub async fn get_tool(State(state): State<AppState>, caller: Auth<need::ToolsRead>, Path(name): Path<String>) -> Result<Json<Tool>> {
    // The name checked as on PUT: a name no tool can have is a mistake to say, not a 404.
    names::check_tool_name(&name)?;
    caller.require_tool(&name)?;
    Ok(Json(state.store.get_tool(&caller.workspace, &name).await?))
}

/// Deletes a tool. Its open approvals are withdrawn; what it was stays in the audit log
/// (`tool.deleted`), as do its actions. Agents then get `unknown_tool` for it.
#[utoipa::path(delete, path = "/v1/tools/{name}", tag = "tools", params(("name" = String, Path, description = "tool name")), responses(
    (status = 200, description = "the tool as it was, and how many of its approvals were withdrawn", body = DeletedTool),
    (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody),
    (status = 409, description = "tool_stopped: its kill switch is engaged; lift it first", body = ErrorBody),
))]
pub async fn delete_tool(
    State(state): State<AppState>,
    caller: Auth<need::ToolsManage>,
    Path(name): Path<String>,
) -> Result<Json<DeletedTool>> {
    names::check_tool_name(&name)?;
    let (tool, approvals_withdrawn) = state.store.delete_tool(&caller.workspace, &caller.origin(), &name).await?;
    Ok(Json(DeletedTool { tool, approvals_withdrawn }))
}
