//! The store: everything Countersign remembers, behind one trait.
//!
//! [`Store`] is the whole API; it is made of one trait per resource so each lives in
//! its own file. Every call that touches a workspace's data takes a [`WorkspaceId`],
//! which only the authentication layer (and the admin tools) can make, so no caller can
//! forget whose data it means. The only calls without one are those that find the
//! workspace in the first place: looking up a secret, finding an account by e-mail,
//! creating a workspace.
//!
//! [`SqlStore`] implements it once, over [`db::Conn`]; SQLite and PostgreSQL differ
//! only below that line.

pub mod db;
pub mod engine;
pub mod migrate;
pub mod postgres;
pub mod sqlite;

mod actions;
mod audit_log;
mod checkpoints;
mod constitution;
mod exports;
mod gate;
mod identity;
mod webhooks;

use std::path::Path;
use std::sync::Arc;

pub use actions::{
    ActionFilter, Actions, ApprovalQuery, Approvals, Basis, DecisionRequest, ExecuteRequest, IdempotencyKey, NewAction, Standing,
    Submitted, record_receipt,
};
pub use audit_log::{AuditLog, AuditRange, MAX_PAGE as AUDIT_MAX_PAGE, valid_type_pattern};
pub use checkpoints::{Checkpoints, MAX_CHECKPOINT_PAGE};
pub use constitution::{
    ChangedRule, ConstitutionVersion, Constitutions, History, People, ReplayAction, ReplayPage, ReplayQuery, RuleDiff, VersionSummary,
    diff_rules, rules_sha256,
};
pub use engine::DecidedUnder;
pub use exports::{DataExports, MAX_EXPORT_PAGE};
pub use gate::{GateContext, KillSwitchStore, SwitchTarget, ToolDef, Tools};
pub use identity::{
    AuthCredential, AuthSubject, MemberChange, Members, NewMember, NewSession, NewToken, PasswordChange, RoleChange, Roles, Sessions,
    SettingsChange, SignInAccount, SignInFailure, Tokens, Workspaces, account_key, accounts_in, address_key,
};
pub use webhooks::{AttemptResult, ClaimedDelivery, DeliveryJob, MAX_DELIVERY_PAGE, MAX_WEBHOOKS, NewWebhook, WebhookChange, Webhooks};

use crate::audit::{Actor, Via};
use crate::clock::Clock;
use crate::error::{Error, Result};
use engine::Engine;

/// A workspace the caller has been authenticated into.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceId(String);

impl WorkspaceId {
    /// Vouches for a workspace id. Only the authentication layer and the admin command
    /// line call this: everywhere else a `WorkspaceId` arrives from them.
    pub fn trusted(id: impl Into<String>) -> Self {
        WorkspaceId(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who is making a change, and through which door: recorded on its audit event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub actor: Actor,
    pub via: Via,
}

impl Origin {
    pub fn system(task: &str) -> Self {
        Origin { actor: Actor::system(task), via: Via::System }
    }
}

/// Everything the server asks of a store.
#[async_trait::async_trait]
pub trait Store:
    Workspaces
    + Members
    + Roles
    + Sessions
    + Tokens
    + AuditLog
    + Tools
    + KillSwitchStore
    + Actions
    + Approvals
    + Webhooks
    + Constitutions
    + History
    + Checkpoints
    + DataExports
    + Send
    + Sync
{
    /// Finishes queued writes and closes connections.
    fn close(&self);

    /// The configuration epoch. It moves whenever a change to identity or configuration
    /// (members, roles, sessions, tokens, settings, tools, kill switches, constitution)
    /// commits, before that change is acknowledged, on every replica: SQLite's is a
    /// counter in the one process that writes; PostgreSQL's is a row moved in the
    /// transaction of each such change and read here on every call. Whatever was read
    /// while it had a given value may be reused for as long as it keeps that value. An
    /// epoch that cannot be read is an error: the caller refuses rather than trust a cache.
    async fn config_epoch(&self) -> Result<u64>;

    /// Sets the function told about every committed batch of audit events, in chain
    /// order (the live stream).
    fn on_commit(&self, hook: engine::CommitHook);
}

/// The store over SQL, for either database.
pub struct SqlStore {
    engine: Engine,
    clock: Clock,
}

impl SqlStore {
    /// Opens (creating if needed) the SQLite store at `path`, applying migrations.
    pub fn open_sqlite(path: &Path, clock: Clock) -> Result<Arc<SqlStore>> {
        let connector = sqlite::SqliteConnector::new(path);
        Self::open(&connector, sqlite::MIGRATIONS, clock)
    }

    /// Opens a store through any connector, applying its migrations first.
    pub fn open(connector: &dyn db::Connector, migrations: &[migrate::Migration], clock: Clock) -> Result<Arc<SqlStore>> {
        let mut conn = connector.open_writer().map_err(Error::from)?;
        migrate::apply(&mut *conn, migrations).map_err(|e| Error::unavailable("store_migration_failed", e.to_string()))?;
        drop(conn);
        Self::start(connector, clock)
    }

    /// Opens a store whose schema someone else keeps (`countersign admin migrate`, run as
    /// the tables' owner): refuses unless it is exactly at the latest migration.
    pub fn open_migrated(connector: &dyn db::Connector, migrations: &[migrate::Migration], clock: Clock) -> Result<Arc<SqlStore>> {
        let mut conn = connector.open_writer().map_err(Error::from)?;
        migrate::check(&mut *conn, migrations).map_err(|e| Error::unavailable("store_not_migrated", e.to_string()))?;
        drop(conn);
        Self::start(connector, clock)
    }

    fn start(connector: &dyn db::Connector, clock: Clock) -> Result<Arc<SqlStore>> {
        let engine = Engine::start(connector, clock.clone()).map_err(Error::from)?;
        Ok(Arc::new(SqlStore { engine, clock }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Now, as stored text, from the store's clock.
    pub(crate) fn now_ts(&self) -> String {
        crate::clock::format_ts(self.clock.now())
    }
}

#[async_trait::async_trait]
impl Store for SqlStore {
    fn close(&self) {
        self.engine.close();
    }

    async fn config_epoch(&self) -> Result<u64> {
        if self.engine.dialect().bump_epoch().is_none() {
            return Ok(self.engine.epoch());
        }
        self.engine
            .read_one(|conn| {
                let row = conn
                    .query_opt("SELECT epoch FROM config_epoch WHERE id = 1", &[])?
                    .ok_or_else(|| Error::unavailable("store_unavailable", "the configuration epoch cannot be read"))?;
                Ok(row.int(0)? as u64)
            })
            .await
    }

    fn on_commit(&self, hook: engine::CommitHook) {
        self.engine.set_commit_hook(hook);
    }
}
