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
    // Every secret sent, so that a receiver echoing one back does not put it in the
    // action's result, the audit log and every reader's view.
    let mut sent_secrets: Vec<String> = Vec::new();
    for (k, sealed) in secret_query.iter().flatten() {
        match keys.open(sealed, &vault::query_aad(ws.as_str(), &tool.name, k)) {
            Ok(v) => {
                target.query_pairs_mut().append_pair(k, &v);
                sent_secrets.push(v.to_string());
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
            Ok(v) => {
                sent_secrets.push(v.to_string());
                req = req.header(k, v);
            }
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
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    let redacted_secrets = redact_secrets(&mut text, &sent_secrets, truncated);
    // Kept as JSON only if it is JSON that RFC 8785 keeps exactly: the result is hashed
    // into the audit log, and a number like 9007199254740993 would be rounded there
    // while the action showed it whole. Anything else is kept as the text received.
    let body = match canonical::parse(text.as_bytes()) {
        Ok(v) if !truncated => v,
        _ => Value::String(text),
    };
    let mut result = json!({
        "connector": "http",
        "status": status.as_u16(),
        "body": body,
        "truncated": truncated,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    if redacted_secrets {
        result["secrets_redacted"] = Value::Bool(true);
    }
    (result, status.is_success())
}

/// What a redacted secret reads as in a recorded answer.
pub const REDACTED: &str = "[redacted]";

/// Replaces every secret value sent with the call, as written and as written inside a
/// JSON string, in the receiver's answer; when the answer was cut short, also a secret's
/// beginning left at its end. Values shorter than 4 characters are left: replacing them
/// would garble the answer and they protect nothing. Says whether anything was replaced.
fn redact_secrets(text: &mut String, secrets: &[String], truncated: bool) -> bool {
    let mut any = false;
    for secret in secrets.iter().filter(|s| s.chars().count() >= 4) {
        // As sent, as JSON writes it inside a string, and as a query string carries it
        // (a receiver echoing its URL shows `+`, `/` and `=` percent-encoded).
        let quoted = serde_json::to_string(secret).unwrap_or_default();
        let escaped = quoted.strip_prefix('"').and_then(|q| q.strip_suffix('"')).unwrap_or(&quoted);
        let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        for form in [secret.as_str(), escaped, encoded.as_str()] {
            if text.contains(form) {
                *text = text.replace(form, REDACTED);
                any = true;
            }
        }
        if truncated {
            let cut = (4..secret.len()).rev().filter(|&n| secret.is_char_boundary(n)).find(|&n| text.ends_with(&secret[..n]));
            if let Some(n) = cut {
                text.truncate(text.len() - n);
                text.push_str(REDACTED);
                any = true;
            }
        }
    }
    any
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
