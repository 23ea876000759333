//! Running a tool call: the `http` connector. (`record` runs inside the store's
//! transaction; see `store::record_receipt`.)
//!
//! Secret header values are opened from the vault only here, just before the request,
//! and never logged: errors are reported without the URL's query and without headers.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::canonical;
use crate::model::{Action, Connector, Tool};
use crate::store::WorkspaceId;
use crate::vault::{self, MasterKeys};

/// How much of a receiver's answer is kept on the action.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Receiver timeout when the tool sets none.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// The receiver timeouts a tool may set.
pub const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=30_000;
/// How long after an action starts `executing` its call is known to be over: the longest
/// timeout, and as long again for reading the tool beforehand and recording the result
/// after. An action still `executing` by then was cut off by a server that stopped
/// mid-call; the sweeper records it as failed, outcome unknown (`execution_interrupted`).
pub const INTERRUPTED_AFTER: chrono::Duration = chrono::Duration::milliseconds(2 * *TIMEOUT_MS.end() as i64);

/// The innermost cause of an error ("Connection refused (os error 111)"), which says
/// more than the outer ones ("error sending request"). Never the URL.
fn root_cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Calls the tool's `http` connector with the action's payload. Returns what to record
/// and whether the call succeeded (a 2xx answer).
pub async fn run_http(client: &reqwest::Client, keys: &MasterKeys, ws: &WorkspaceId, tool: &Tool, action: &Action) -> (Value, bool) {
    let Connector::Http { url, headers, secret_headers, secret_query, timeout_ms } = &tool.connector else {
        return (json!({"connector": "http", "error": "the tool's connector is not http"}), false);
    };
    let body = match canonical::canonicalize_value(&action.payload) {
        Ok(b) => b,
        Err(e) => return (json!({"connector": "http", "error": format!("the payload could not be serialised: {e}")}), false),
    };
    let timeout = Duration::from_millis(timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
    let mut target = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => {
            return (json!({"connector": "http", "error": format!("the tool's URL cannot be used ({e}); the call was not made")}), false);
        }
    };
    for (k, sealed) in secret_query.iter().flatten() {
        match keys.open(sealed, &vault::query_aad(ws.as_str(), &tool.name, k)) {
            Ok(v) => {
                target.query_pairs_mut().append_pair(k, &v);
            }
            // Fail closed, as for a header.
            Err(e) => {
                return (
                    json!({"connector": "http", "error": format!("secret query parameter `{k}` could not be opened ({e}); the call was not made")}),
                    false,
                );
            }
        }
    }
    let mut req = client
        .post(target)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("countersign-action-id", &action.id)
        .header("countersign-payload-sha256", &action.payload_sha256)
        .header("idempotency-key", &action.id);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    for (k, sealed) in secret_headers.iter().flatten() {
        match keys.open(sealed, &vault::header_aad(ws.as_str(), &tool.name, k)) {
            Ok(v) => req = req.header(k, v),
            // Fail closed: without its credentials the call is not made at all.
            Err(e) => {
                return (
                    json!({"connector": "http", "error": format!("secret header `{k}` could not be opened ({e}); the call was not made")}),
                    false,
                );
            }
        }
    }
    let started = std::time::Instant::now();
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            // Say what an operator needs to decide whether to submit again: a call that
            // timed out may have been acted on; one that never connected was not.
            let (code, what) = if e.is_timeout() {
                (
                    "timeout",
                    format!(
                        "no answer within {} ms; the receiver may still have acted on the call, so check there before submitting it again",
                        timeout.as_millis()
                    ),
                )
            } else if e.is_connect() {
                ("unreachable", format!("could not connect to the receiver ({}); the call was not delivered", root_cause(e)))
            } else {
                ("request_failed", format!("the call failed ({})", root_cause(e)))
            };
            return (json!({"connector": "http", "code": code, "error": what, "url": redacted(url)}), false);
        }
    };
    let status = resp.status();
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        let room = MAX_RESPONSE_BYTES - kept.len();
        if chunk.len() > room {
            kept.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        kept.extend_from_slice(&chunk);
    }
    let body = match serde_json::from_slice::<Value>(&kept) {
        Ok(v) if !truncated => v,
        _ => Value::String(String::from_utf8_lossy(&kept).into_owned()),
    };
    let result = json!({
        "connector": "http",
        "status": status.as_u16(),
        "body": body,
        "truncated": truncated,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    (result, status.is_success())
}

/// The URL without its query or fragment, safe to record.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => String::new(),
    }
}
