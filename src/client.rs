//! The typed API client, shared by the console and the command line.
//!
//! One method per call the clients make, returning the server's own record types. Every
//! failure is a [`ClientError`] that says whether it was the server refusing (with its
//! stable code), the network, or an answer we could not read.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::approval::Verdict;
use crate::audit::{AuditEvent, VerifyReport};
use crate::model::{Approval, KillSwitch, KillSwitches, Tool};
use crate::server::error::ErrorBody;
use crate::server::routes::approvals::ApprovalList;
use crate::server::routes::audit::EventPage;
use crate::server::routes::sessions::{Me, SignedIn};
use crate::server::routes::tools::ToolList;

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message}")]
    Api { status: u16, code: String, message: String },
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach the server: {0}")]
    Unreachable(String),
    /// The server answered something this client cannot read.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// This side failed: a file that could not be written, say. Says what and where.
    #[error("{0}")]
    Local(String),
}

impl ClientError {
    /// The credential is no longer accepted: sign in again.
    pub fn needs_sign_in(&self) -> bool {
        matches!(self, ClientError::Api { status: 401, .. })
    }

    pub fn code(&self) -> &str {
        match self {
            ClientError::Api { code, .. } => code,
            ClientError::Unreachable(_) => "unreachable",
            ClientError::Protocol(_) => "protocol",
            ClientError::Local(_) => "local",
        }
    }
}

/// The error a refusal's body describes (`{"error": {code, message}}`), or a plain one.
fn api_error(status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ClientError::Api { status, code: b.error.code, message: b.error.message },
        Err(_) => ClientError::Api { status, code: "http_error".into(), message: format!("the server answered {status}") },
    }
}

/// The header our console sends so its changes are recorded `via: console`.
pub const CLIENT_HEADER: &str = crate::server::auth::CLIENT_HEADER;

/// A client for one server, with or without a credential.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    via: &'static str,
}

/// One item from the live audit stream.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    Event(Box<AuditEvent>),
    /// The server says this client fell behind; resume after this seq.
    Lagged {
        resume_after_seq: i64,
    },
}

/// A kill switch as a change left it (`PUT /v1/killswitches/…`).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct SwitchSet {
    #[serde(flatten)]
    pub switch: KillSwitch,
    /// `false`: it already was as asked, and keeps the reason it was set with.
    pub changed: bool,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:8750`). `via` is `console` or `api`.
    pub fn new(base: &str, token: Option<String>, via: &'static str) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // The server closes a connection idle for its header deadline (30 s by
            // default): drop pooled ones well before, never reuse one as it closes.
            .pool_idle_timeout(crate::server::READ_TIMEOUT / 2)
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("build the HTTP client");
        Client { http, base: base.trim_end_matches('/').to_string(), token, via }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The same server with another credential.
    pub fn with_token(&self, token: Option<String>) -> Client {
        Client { token, ..self.clone() }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base)).header(CLIENT_HEADER, self.via);
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, ClientError> {
        self.send_within(req, Duration::from_secs(20)).await
    }

    async fn send_within<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder, timeout: Duration) -> Result<T, ClientError> {
        let resp = req.timeout(timeout).send().await.map_err(|e| ClientError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable(e.without_url().to_string()))?;
        if status >= 400 {
            return Err(api_error(status, &bytes));
        }
        if bytes.is_empty() {
            return serde_json::from_value(serde_json::Value::Null).map_err(|e| ClientError::Protocol(e.to_string()));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    async fn post<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    async fn put<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        self.send(self.request(reqwest::Method::PUT, path).json(body)).await
    }

    /// Any call, for tools and scripts that speak JSON directly.
    pub async fn raw(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<serde_json::Value, ClientError> {
        self.raw_with_timeout(method, path, body, Duration::from_secs(20)).await
    }

    /// As [`Client::raw`], for a call that may take longer than the usual 20 seconds.
    pub async fn raw_with_timeout(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut req = self.request(m, path);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send_within(req, timeout).await
    }

    // -- sessions ------------------------------------------------------------------------

    pub async fn sign_in(&self, email: &str, password: &str, workspace: Option<&str>) -> Result<SignedIn, ClientError> {
        let client = if self.via == "console" { "console" } else { "api" };
        self.post("/v1/sessions", &json!({"email": email, "password": password, "workspace": workspace, "client": client})).await
    }

    pub async fn sign_out(&self) -> Result<(), ClientError> {
        let _: serde_json::Value = self.send(self.request(reqwest::Method::DELETE, "/v1/sessions/current")).await?;
        Ok(())
    }

    pub async fn me(&self) -> Result<Me, ClientError> {
        self.get("/v1/me").await
    }

    // -- the gate ------------------------------------------------------------------------

    pub async fn approvals(&self, state: &str, limit: u32) -> Result<Vec<Approval>, ClientError> {
        let list: ApprovalList = self.get(&format!("/v1/approvals?state={state}&limit={limit}")).await?;
        Ok(list.items)
    }

    pub async fn approval(&self, id: &str) -> Result<Approval, ClientError> {
        self.get(&format!("/v1/approvals/{id}")).await
    }

    pub async fn decide(&self, id: &str, verdict: Verdict, payload_sha256: &str, reason: Option<&str>) -> Result<Approval, ClientError> {
        let body = json!({"decision": verdict, "payload_sha256": payload_sha256, "reason": reason});
        self.post(&format!("/v1/approvals/{id}/decisions"), &body).await
    }

    pub async fn members(&self) -> Result<Vec<crate::model::Member>, ClientError> {
        let list: crate::server::routes::members::MemberList = self.get("/v1/members").await?;
        Ok(list.items)
    }

    pub async fn tokens(&self) -> Result<Vec<crate::model::Token>, ClientError> {
        let list: crate::server::routes::tokens::TokenList = self.get("/v1/tokens").await?;
        Ok(list.items)
    }

    pub async fn tools(&self) -> Result<Vec<Tool>, ClientError> {
        let list: ToolList = self.get("/v1/tools").await?;
        Ok(list.items)
    }

    pub async fn killswitches(&self) -> Result<KillSwitches, ClientError> {
        self.get("/v1/killswitches").await
    }

    /// Engages or lifts a switch: `tool` None is the workspace's.
    pub async fn set_killswitch(&self, tool: Option<&str>, engaged: bool, reason: &str) -> Result<SwitchSet, ClientError> {
        let path = match tool {
            None => "/v1/killswitches/workspace".to_string(),
            Some(t) => format!("/v1/killswitches/tools/{t}"),
        };
        self.put(&path, &json!({"engaged": engaged, "reason": reason})).await
    }

    // -- audit ---------------------------------------------------------------------------

    pub async fn audit_page(&self, after_seq: i64, limit: u32) -> Result<EventPage, ClientError> {
        self.get(&format!("/v1/audit?after_seq={after_seq}&limit={limit}")).await
    }

    /// The most recent `n` events, oldest first.
    pub async fn audit_tail(&self, n: u32) -> Result<Vec<AuditEvent>, ClientError> {
        let page: EventPage = self.get(&format!("/v1/audit?tail={n}")).await?;
        Ok(page.events)
    }

    pub async fn verify(&self) -> Result<VerifyReport, ClientError> {
        self.get("/v1/audit/verify").await
    }

    /// Starts an export of the whole log (`GET /v1/audit/export`, `format` `jsonl` or
    /// `csv`) and returns the response once the server has accepted it; its body is the
    /// export (see [`crate::export_file::download`]).
    pub async fn audit_export(&self, format: &str) -> Result<reqwest::Response, ClientError> {
        // The body may take minutes (its own stall limit applies to it); the answer's head
        // comes at once or not at all.
        let send = self.request(reqwest::Method::GET, &format!("/v1/audit/export?format={format}")).send();
        let resp = tokio::time::timeout(Duration::from_secs(30), send)
            .await
            .map_err(|_| ClientError::Unreachable("the server did not start the export within 30 s".into()))?
            .map_err(|e| ClientError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        if status >= 400 {
            return Err(api_error(status, &resp.bytes().await.unwrap_or_default()));
        }
        Ok(resp)
    }

    /// Opens the live stream after `after_seq`. The stream ends when the connection does;
    /// callers reconnect with the last seq they saw.
    pub async fn stream(&self, after_seq: i64) -> Result<impl Stream<Item = Result<StreamItem, ClientError>> + use<>, ClientError> {
        use eventsource_stream::Eventsource;
        let resp = self
            .request(reqwest::Method::GET, "/v1/audit/stream")
            .header("Last-Event-ID", after_seq.to_string())
            .send()
            .await
            .map_err(|e| ClientError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status().as_u16();
        if status >= 400 {
            return Err(api_error(status, &resp.bytes().await.unwrap_or_default()));
        }
        Ok(resp.bytes_stream().eventsource().filter_map(|item| async move {
            match item {
                Err(e) => Some(Err(ClientError::Unreachable(e.to_string()))),
                Ok(ev) if ev.event == "audit" => Some(
                    serde_json::from_str::<AuditEvent>(&ev.data)
                        .map(|e| StreamItem::Event(Box::new(e)))
                        .map_err(|e| ClientError::Protocol(e.to_string())),
                ),
                Ok(ev) if ev.event == "lagged" => {
                    let v: serde_json::Value = serde_json::from_str(&ev.data).unwrap_or_default();
                    Some(Ok(StreamItem::Lagged { resume_after_seq: v["resume_after_seq"].as_i64().unwrap_or(0) }))
                }
                Ok(_) => None,
            }
        }))
    }
}
