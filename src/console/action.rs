//! The one vocabulary of things that happen to the console, and of what it asks for.
//!
//! Everything that changes the console's state arrives as an [`Action`]: a key, a paste,
//! a resize, the clock, or a message from a network task. `App::update` turns actions into
//! new state and [`Effect`]s; the runtime carries effects out (in tasks) and feeds their
//! results back as actions. Drawing reads the state and nothing else.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crossterm::event::KeyEvent;

use crate::approval::Verdict;
use crate::audit::{AuditEvent, VerifyReport};
use crate::client::ClientError;
use crate::model::{Approval, KillSwitches, Tool};
use crate::server::routes::sessions::{Me, SignedIn};

// Actions travel one at a time through a channel; their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Action {
    Key(KeyEvent),
    Paste(String),
    Resize(u16, u16),
    /// The clock: TTL countdowns and retry timers move on it.
    Tick(DateTime<Utc>),
    Net(NetMsg),
}

/// Results from the network tasks.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum NetMsg {
    Me(Result<Me, ClientError>),
    Approvals(Result<Vec<Approval>, ClientError>),
    Approval(Result<Approval, ClientError>),
    Decided {
        verdict: Verdict,
        result: Result<Approval, ClientError>,
    },
    Tools(Result<Vec<Tool>, ClientError>),
    Switches(Result<KillSwitches, ClientError>),
    SwitchSet {
        tool: Option<String>,
        engaged: bool,
        result: Result<crate::client::SwitchSet, ClientError>,
    },
    Verified(Result<VerifyReport, ClientError>),
    /// A page of events older than what the tail holds.
    Older(Result<Vec<AuditEvent>, ClientError>),
    Stream(StreamMsg),
    SignedIn(Result<SignedIn, ClientError>),
    /// Names for ids (members' e-mails, tokens' names), to show people rather than ids.
    Names(Vec<(String, String)>),
    Access(super::screens::access::AccessData),
    /// A change to members, roles or tokens: what to say, and a secret to show once.
    AccessDone(Result<(String, Option<(String, String)>), ClientError>),
    /// The constitution in force (`GET /v1/constitution`).
    Constitution(Result<serde_json::Value, ClientError>),
    /// A dry run's answer, and whether it ran under the draft rules.
    DryRun {
        under_draft: bool,
        /// The payload that was sent, to diff the answer against.
        sent: serde_json::Value,
        result: Result<serde_json::Value, ClientError>,
    },
    WhatIf(Result<serde_json::Value, ClientError>),
    /// A rule drafted from an action.
    Drafted(Result<serde_json::Value, ClientError>),
    Published(Result<serde_json::Value, ClientError>),
    /// An export of the audit log, written (or not) to a file.
    Exported(Result<crate::export_file::Downloaded, ClientError>),
}

/// What the live stream task reports.
#[derive(Debug)]
pub enum StreamMsg {
    Connecting {
        attempt: u32,
    },
    Connected,
    Event(Box<AuditEvent>),
    /// The connection dropped; the task retries after `retry_in`.
    Down {
        error: String,
        attempt: u32,
        retry_in: Duration,
    },
    /// The server no longer accepts the credential: sign in again.
    Unauthorized(String),
}

/// What the console asks the runtime to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    FetchMe,
    FetchApprovals,
    FetchApproval(String),
    Decide {
        id: String,
        verdict: Verdict,
        payload_sha256: String,
        reason: Option<String>,
    },
    FetchTools,
    FetchNames,
    FetchAccess,
    Access(super::dialogs::AccessOp),
    FetchSwitches,
    SetSwitch {
        tool: Option<String>,
        engaged: bool,
        reason: String,
    },
    Verify,
    /// Events before `before_seq`, to page the tail backwards.
    LoadOlder {
        before_seq: i64,
    },
    SignIn {
        email: String,
        password: String,
    },
    /// The credential changed: the stream must reconnect with it.
    NewCredential(String),
    FetchConstitution,
    /// `POST /v1/actions` with `dry_run: true` (and the draft rules, when `under_draft`).
    DryRun {
        body: serde_json::Value,
        under_draft: bool,
    },
    /// `POST /v1/simulations`.
    WhatIf(serde_json::Value),
    /// `POST /v1/constitution/drafts/from-action/{id}`.
    DraftFromAction(String),
    Publish {
        rules: Vec<crate::constitution::Rule>,
        base_version: i64,
    },
    /// Download the whole audit log into a file.
    ExportAudit {
        path: std::path::PathBuf,
        format: crate::export_file::Format,
    },
    /// Ring the terminal bell.
    Bell,
    Quit,
}
