//! Exports: the audit log as JSONL or CSV, and the workspace's data as CSV ("your data is
//! yours").
//!
//! Exports stream. A task reads the store a page at a time (by `seq` for the log, by id
//! for approvals) and hands each encoded page to the response body through a channel
//! that holds two pages, so memory stays constant over any length of log and a slow
//! client slows only its own task. An export that cannot finish (the store fails, the
//! server shuts down) ends with a broken connection, never a clean end of body: a
//! truncated file must not look complete.
//!
//! A log export covers the events up to the head at the moment it starts (the
//! `X-Countersign-Head-Seq` response header), so it ends even while the log grows.

use std::fmt::Write as _;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditEvent;
use crate::csv;
use crate::error::{Error, Result};
use crate::export_file::Format;
use crate::model::{Approval, Connector, Member, Token, Tool};
use crate::server::AppState;
use crate::server::auth::{Auth, need};
use crate::server::error::ErrorBody;
use crate::server::extract::Query;
use crate::store::{AuditRange, Store, WorkspaceId};

/// Events (or approvals) read from the store per page.
pub const EXPORT_PAGE: i64 = 1000;

/// The media type of a JSONL export.
pub const JSONL_TYPE: &str = "application/jsonl";
/// The media type of a CSV export (RFC 4180, with its header row).
pub const CSV_TYPE: &str = "text/csv; charset=utf-8; header=present";

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `jsonl` (default: the events exactly as stored, one per line, verifiable offline)
    /// or `csv` (for spreadsheets).
    pub format: Option<String>,
    /// Only events with `ts` at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only events with `ts` before this RFC 3339 time.
    pub until: Option<String>,
    /// Comma-separated event types; `approval.*` matches a family.
    pub types: Option<String>,
}

/// The workspace's audit log as a file.
///
/// JSONL lines are the events exactly as stored, so an export of the whole log verifies
/// offline (`countersign audit verify --file`). With `since`, `until` or `types` the file
/// leaves events out and is **not a complete chain**: verifying it reports the missing
/// seqs. CSV escapes per RFC 4180 and prefixes a `'` to any cell a spreadsheet would run
/// as a formula (starting with `=`, `+`, `-`, `@`, tab or CR).
///
/// Response headers: `Content-Disposition: attachment; filename="countersign-audit-<workspace>-<date>.<ext>"`,
/// `X-Countersign-Head-Seq` (the last seq the export covers) and `X-Countersign-Export`
/// (`complete` or `filtered`).
#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(ExportQuery), responses(
    (status = 200, description = "The events, streamed", content(
        (String = "application/jsonl"),
        (String = "text/csv"),
    )),
    (status = 400, body = ErrorBody),
    (status = 403, body = ErrorBody),
))]
pub async fn export_audit(
    State(state): State<AppState>,
    caller: Auth<need::AuditExport>,
    Query(q): Query<ExportQuery>,
) -> Result<Response> {
    let asked = q.format.as_deref().unwrap_or("jsonl");
    let Some(format) = Format::parse(asked) else {
        let shown: String = asked.chars().filter(|c| c.is_ascii_graphic()).take(20).collect();
        return Err(Error::bad_request("invalid_query", format!("format must be `jsonl` or `csv`, not `{shown}`")));
    };
    let mut range = AuditRange::parse(q.since.as_deref(), q.until.as_deref(), q.types.as_deref())?;
    let (head, _) = state.store.audit_head(&caller.workspace).await?;
    range.through_seq = Some(head);
    let filtered = range.is_filtered();
    let content_type = match format {
        Format::Jsonl => JSONL_TYPE,
        Format::Csv => CSV_TYPE,
    };
    let pages = AuditPages { store: state.store.clone(), ws: caller.workspace.clone(), range, after: 0, format, started: false };
    let mut response =
        attachment(content_type, &file_name(&state, "audit", &caller.workspace_name, format.as_str()), stream(&state.shutdown, pages));
    let h = response.headers_mut();
    h.insert("x-countersign-head-seq", HeaderValue::from(head));
    h.insert("x-countersign-export", HeaderValue::from_static(if filtered { "filtered" } else { "complete" }));
    Ok(response)
}

/// Every member, as CSV: id, e-mail, name, role, status, times. Never a password hash.
#[utoipa::path(get, path = "/v1/exports/members.csv", tag = "exports", responses(
    (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
    (status = 403, body = ErrorBody),
))]
pub async fn members_csv(State(state): State<AppState>, caller: Auth<need::AuditExport>) -> Result<Response> {
    let members = state.store.list_members(&caller.workspace).await?;
    let mut out = csv::row(&MEMBER_HEADER);
    for m in &members {
        out.push_str(&member_row(m));
    }
    Ok(attachment(CSV_TYPE, &file_name(&state, "members", &caller.workspace_name, "csv"), Body::from(out)))
}

/// Every agent token, as CSV: its public id, name, owner, scopes, tool patterns, hint
/// (the first characters, as the API shows them), state and times. Never the secret or
/// its hash.
#[utoipa::path(get, path = "/v1/exports/tokens.csv", tag = "exports", responses(
    (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
    (status = 403, body = ErrorBody),
))]
pub async fn tokens_csv(State(state): State<AppState>, caller: Auth<need::AuditExport>) -> Result<Response> {
    let tokens = state.store.list_tokens(&caller.workspace, None).await?;
    let mut out = csv::row(&TOKEN_HEADER);
    for t in &tokens {
        out.push_str(&token_row(t));
    }
    Ok(attachment(CSV_TYPE, &file_name(&state, "tokens", &caller.workspace_name, "csv"), Body::from(out)))
}

/// Every tool, as CSV: its policy and connector. Secret headers by name only, never a
/// value.
#[utoipa::path(get, path = "/v1/exports/tools.csv", tag = "exports", responses(
    (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
    (status = 403, body = ErrorBody),
))]
pub async fn tools_csv(State(state): State<AppState>, caller: Auth<need::AuditExport>) -> Result<Response> {
    let tools = state.store.list_tools(&caller.workspace).await?;
    let mut out = csv::row(&TOOL_HEADER);
    for t in &tools {
        out.push_str(&tool_row(t));
    }
    Ok(attachment(CSV_TYPE, &file_name(&state, "tools", &caller.workspace_name, "csv"), Body::from(out)))
}

/// Every approval in every state, oldest first, as CSV, with who decided what. Streamed.
#[utoipa::path(get, path = "/v1/exports/approvals.csv", tag = "exports", responses(
    (status = 200, description = "CSV with a header row", content_type = "text/csv", body = String),
    (status = 403, body = ErrorBody),
))]
pub async fn approvals_csv(State(state): State<AppState>, caller: Auth<need::AuditExport>) -> Result<Response> {
    let pages = ApprovalPages { store: state.store.clone(), ws: caller.workspace.clone(), after: None, started: false };
    Ok(attachment(CSV_TYPE, &file_name(&state, "approvals", &caller.workspace_name, "csv"), stream(&state.shutdown, pages)))
}

// ---------------------------------------------------------------------------------------
// Responses

/// `countersign-<what>-<workspace>-<YYYY-MM-DD>.<ext>`, with the workspace name reduced
/// to characters that are safe in a header and a file name.
fn file_name(state: &AppState, what: &str, workspace: &str, ext: &str) -> String {
    let mut safe: String =
        workspace.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).take(60).collect();
    if safe.trim_matches('-').is_empty() {
        safe = "workspace".into();
    }
    format!("countersign-{what}-{safe}-{}.{ext}", state.clock.now().format("%Y-%m-%d"))
}

fn attachment(content_type: &'static str, file_name: &str, body: Body) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// A source of encoded pages: `Ok(None)` is the end.
#[async_trait]
trait Pages: Send + 'static {
    async fn next_page(&mut self) -> Result<Option<Bytes>>;
}

enum Msg {
    Page(Bytes),
    End,
    Failed(String),
}

/// Streams `pages` into a response body, in constant memory (see the module notes).
fn stream(shutdown: &CancellationToken, mut pages: impl Pages) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(2);
    tokio::spawn(async move {
        loop {
            let msg = match pages.next_page().await {
                Ok(Some(b)) => Msg::Page(b),
                Ok(None) => Msg::End,
                Err(e) => {
                    tracing::warn!(error = %e, "an export stopped before its end");
                    Msg::Failed(e.message)
                }
            };
            let last = !matches!(msg, Msg::Page(_));
            // A closed channel means the client went away: stop reading.
            if tx.send(msg).await.is_err() || last {
                return;
            }
        }
    });
    let shutdown = shutdown.clone();
    let body = futures_util::stream::unfold(Some(rx), move |rx| {
        let shutdown = shutdown.clone();
        async move {
            let mut rx = rx?;
            let incomplete = |why: &str| std::io::Error::other(format!("the export is incomplete: {why}"));
            tokio::select! {
                biased;
                msg = rx.recv() => match msg {
                    Some(Msg::Page(b)) => Some((Ok(b), Some(rx))),
                    Some(Msg::End) => None,
                    Some(Msg::Failed(why)) => Some((Err(incomplete(&why)), None)),
                    None => Some((Err(incomplete("the export task stopped")), None)),
                },
                _ = shutdown.cancelled() => Some((Err(incomplete("the server is shutting down")), None)),
            }
        }
    });
    Body::from_stream(body)
}

struct AuditPages {
    store: std::sync::Arc<dyn Store>,
    ws: WorkspaceId,
    range: AuditRange,
    after: i64,
    format: Format,
    started: bool,
}

#[async_trait]
impl Pages for AuditPages {
    async fn next_page(&mut self) -> Result<Option<Bytes>> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            if self.format == Format::Csv {
                out.extend_from_slice(csv::row(&csv::AUDIT_HEADER).as_bytes());
            }
        }
        let page = self.store.audit_range(&self.ws, self.after, &self.range, EXPORT_PAGE).await?;
        let Some(last) = page.last() else {
            return Ok((!out.is_empty()).then(|| Bytes::from(out)));
        };
        self.after = last.seq;
        out.reserve(page.len() * 512);
        for e in &page {
            encode_event(&mut out, e, self.format)?;
        }
        Ok(Some(Bytes::from(out)))
    }
}

fn encode_event(out: &mut Vec<u8>, e: &AuditEvent, format: Format) -> Result<()> {
    match format {
        Format::Jsonl => {
            serde_json::to_writer(&mut *out, e).map_err(|err| Error::internal(format!("cannot encode event {}: {err}", e.seq)))?;
            out.push(b'\n');
        }
        Format::Csv => out.extend_from_slice(csv::audit_row(e).as_bytes()),
    }
    Ok(())
}

struct ApprovalPages {
    store: std::sync::Arc<dyn Store>,
    ws: WorkspaceId,
    after: Option<String>,
    started: bool,
}

#[async_trait]
impl Pages for ApprovalPages {
    async fn next_page(&mut self) -> Result<Option<Bytes>> {
        let mut out = String::new();
        if !self.started {
            self.started = true;
            out.push_str(&csv::row(&APPROVAL_HEADER));
        }
        let page = self.store.approvals_page(&self.ws, self.after.as_deref(), EXPORT_PAGE).await?;
        if let Some(last) = page.last() {
            self.after = Some(last.id.clone());
        }
        for a in &page {
            out.push_str(&approval_row(a));
        }
        Ok((!out.is_empty()).then(|| Bytes::from(out)))
    }
}

// ---------------------------------------------------------------------------------------
// Rows

fn text<T: serde::Serialize>(v: &T) -> String {
    crate::store::engine::enum_text(v)
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

pub const MEMBER_HEADER: [&str; 7] = ["id", "email", "name", "role", "status", "created_at", "updated_at"];

fn member_row(m: &Member) -> String {
    csv::row(&[
        m.id.as_str(),
        m.email.as_str(),
        m.name.as_str(),
        m.role.as_str(),
        m.status.as_str(),
        m.created_at.as_str(),
        m.updated_at.as_str(),
    ])
}

pub const TOKEN_HEADER: [&str; 12] =
    ["id", "name", "owner_id", "scopes", "tools", "hint", "state", "created_at", "expires_at", "last_used_at", "rotated_at", "revoked_at"];

fn token_row(t: &Token) -> String {
    csv::row(&[
        t.id.clone(),
        t.name.clone(),
        t.owner_id.clone(),
        t.scopes.join(" "),
        t.tools.join(" "),
        t.hint.clone(),
        text(&t.state),
        t.created_at.clone(),
        opt(&t.expires_at),
        opt(&t.last_used_at),
        opt(&t.rotated_at),
        opt(&t.revoked_at),
    ])
}

pub const TOOL_HEADER: [&str; 14] = [
    "name",
    "description",
    "kind",
    "irreversible",
    "policy",
    "min_confidence",
    "approval_ttl_seconds",
    "connector",
    "url",
    "headers",
    "secret_header_names",
    "timeout_ms",
    "created_at",
    "updated_at",
];

fn tool_row(t: &Tool) -> String {
    let (url, headers, secret_names, timeout) = match &t.connector {
        Connector::Record {} => (String::new(), String::new(), String::new(), String::new()),
        Connector::Http { url, headers, secret_headers, secret_query, timeout_ms } => {
            // Plain headers are configuration the API shows; secret headers by name only.
            let mut plain = String::new();
            for (k, v) in headers {
                let _ = write!(plain, "{}{k}: {v}", if plain.is_empty() { "" } else { "\n" });
            }
            let mut names: Vec<String> = secret_headers.iter().flatten().map(|(k, _)| k.clone()).collect();
            names.extend(secret_query.iter().flatten().map(|(k, _)| format!("?{k}")));
            (url.clone(), plain, names.join(" "), opt(timeout_ms))
        }
    };
    csv::row(&[
        t.name.clone(),
        t.description.clone(),
        text(&t.kind),
        t.irreversible.to_string(),
        text(&t.policy),
        opt(&t.min_confidence),
        opt(&t.approval_ttl_seconds),
        t.connector.type_name().to_string(),
        url,
        headers,
        secret_names,
        timeout,
        t.created_at.clone(),
        t.updated_at.clone(),
    ])
}

pub const APPROVAL_HEADER: [&str; 21] = [
    "id",
    "action_id",
    "tool",
    "state",
    "policy",
    "required",
    "approvals",
    "decisions",
    "requester_id",
    "requester_email",
    "agent_token_id",
    "agent_name",
    "payload_sha256",
    "resource",
    "reason",
    "confidence",
    "created_at",
    "expires_at",
    "decided_at",
    "consumed_at",
    "decision_reasons",
];

fn approval_row(a: &Approval) -> String {
    // `usr_1:approve usr_2:deny`, and each decider's reason on its own line.
    let decisions: Vec<String> = a.decisions.iter().map(|d| format!("{}:{}", d.member_id, text(&d.decision))).collect();
    let reasons: Vec<String> = a.decisions.iter().filter_map(|d| d.reason.as_ref().map(|r| format!("{}: {r}", d.member_id))).collect();
    csv::row(&[
        a.id.clone(),
        a.action_id.clone(),
        a.tool.clone(),
        text(&a.state),
        text(&a.policy),
        a.required.to_string(),
        a.approvals.to_string(),
        decisions.join(" "),
        a.requester_id.clone(),
        opt(&a.requester_email),
        opt(&a.agent_token_id),
        opt(&a.agent_name),
        a.payload_sha256.clone(),
        opt(&a.resource),
        opt(&a.reason),
        opt(&a.confidence),
        a.created_at.clone(),
        a.expires_at.clone(),
        opt(&a.decided_at),
        opt(&a.consumed_at),
        reasons.join("\n"),
    ])
}
