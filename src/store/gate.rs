//! Tools, kill switches, and the one read the gate makes per action.

use async_trait::async_trait;
use serde_json::json;

use super::db::{Conn, DbError, Row};
use super::{Origin, SqlStore, WorkspaceId};
use crate::audit::EventDraft;
use crate::error::{Error, Result};
use crate::gate::{Engaged, Policy, ToolKind};
use crate::model::{Connector, KillSwitch, KillSwitches, Settings, Tool};
use crate::params;

/// A tool to create or replace. Its connector's secret values are already sealed.
#[derive(Clone, Debug)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    pub kind: ToolKind,
    pub irreversible: bool,
    pub policy: Policy,
    pub min_confidence: Option<f64>,
    pub approval_ttl_seconds: Option<i64>,
    pub connector: Connector,
}

/// Which kill switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchTarget {
    Workspace,
    Tool(String),
}

impl SwitchTarget {
    fn key(&self) -> String {
        match self {
            SwitchTarget::Workspace => "workspace".into(),
            SwitchTarget::Tool(t) => format!("tool:{t}"),
        }
    }
    fn label(&self) -> String {
        match self {
            SwitchTarget::Workspace => "workspace".into(),
            SwitchTarget::Tool(t) => t.clone(),
        }
    }
}

/// Everything the pipeline reads about a workspace and a tool, in one round trip.
#[derive(Clone, Debug)]
pub struct GateContext {
    /// The tool with its connector as stored (secret values sealed).
    pub tool: Option<Tool>,
    pub workspace_switch: Option<Engaged>,
    pub tool_switch: Option<Engaged>,
    pub settings: Settings,
    /// The workspace's configuration version these were read at (see
    /// `engine::DecidedUnder`).
    pub config_version: i64,
}

#[async_trait]
pub trait Tools {
    /// Creates or replaces a tool; returns it (masked) and whether it was new.
    async fn put_tool(&self, ws: &WorkspaceId, by: &Origin, def: ToolDef) -> Result<(Tool, bool)>;
    async fn list_tools(&self, ws: &WorkspaceId) -> Result<Vec<Tool>>;
    /// One tool, secrets masked.
    async fn get_tool(&self, ws: &WorkspaceId, name: &str) -> Result<Tool>;
    /// One tool with its connector as stored (secret values sealed), for execution and
    /// for keeping secrets on update. Never returned to a caller.
    async fn get_tool_sealed(&self, ws: &WorkspaceId, name: &str) -> Result<Option<Tool>>;
    /// What the gate needs to decide on `tool`.
    async fn gate_context(&self, ws: &WorkspaceId, tool: &str) -> Result<GateContext>;
    /// Every tool of every workspace with its sealed connector: for master-key rotation.
    async fn all_sealed_connectors(&self) -> Result<Vec<(WorkspaceId, String, Connector)>>;
    /// Replaces a tool's sealed connector without an audit event: for master-key
    /// rotation, which changes the ciphertext, not the configuration.
    async fn reseal_connector(&self, ws: &WorkspaceId, tool: &str, connector: Connector) -> Result<()>;
    /// Deletes a tool (audited with what it was, secrets masked); returns it and how many
    /// of its open approvals were withdrawn. Refused while its kill switch is engaged.
    async fn delete_tool(&self, ws: &WorkspaceId, by: &Origin, name: &str) -> Result<(Tool, usize)>;
}

#[async_trait]
pub trait KillSwitchStore {
    async fn killswitches(&self, ws: &WorkspaceId) -> Result<KillSwitches>;
    /// Engages or lifts a switch; returns its state and whether it changed. A change is
    /// audited; asking for the state it is already in changes nothing.
    async fn set_killswitch(
        &self,
        ws: &WorkspaceId,
        by: &Origin,
        target: SwitchTarget,
        engaged: bool,
        reason: &str,
    ) -> Result<(KillSwitch, bool)>;
}

const TOOL_COLS: &str =
    "name, description, kind, irreversible, policy, min_confidence, approval_ttl_seconds, connector, created_at, updated_at";

fn tool_from_row(r: &Row) -> Result<Tool, DbError> {
    let bad = |c, what: &str| DbError::Decode { column: c, message: format!("unknown {what}") };
    Ok(Tool {
        name: r.text(0)?,
        description: r.text(1)?,
        kind: ToolKind::parse(&r.text(2)?).ok_or_else(|| bad(2, "kind"))?,
        irreversible: r.bool(3)?,
        policy: Policy::parse(&r.text(4)?).ok_or_else(|| bad(4, "policy"))?,
        min_confidence: r.opt_real(5)?,
        approval_ttl_seconds: r.opt_int(6)?,
        connector: r.json(7)?,
        created_at: r.text(8)?,
        updated_at: r.text(9)?,
    })
}

fn masked(mut t: Tool) -> Tool {
    t.connector = t.connector.masked();
    t
}

fn read_tool(conn: &mut dyn Conn, ws: &str, name: &str) -> Result<Option<Tool>, DbError> {
    conn.query_opt(&format!("SELECT {TOOL_COLS} FROM tools WHERE workspace_id = $1 AND name = $2"), params![ws, name])?
        .map(|r| tool_from_row(&r))
        .transpose()
}

fn read_switch(conn: &mut dyn Conn, ws: &str, key: &str) -> Result<Option<Engaged>, DbError> {
    let row = conn.query_opt(
        "SELECT reason, changed_by FROM killswitches WHERE workspace_id = $1 AND target = $2 AND engaged = TRUE",
        params![ws, key],
    )?;
    row.map(|r| Ok(Engaged { reason: r.opt_text(0)?.unwrap_or_default(), by: r.opt_text(1)?.unwrap_or_default() })).transpose()
}

fn switch_from_row(r: &Row) -> Result<KillSwitch, DbError> {
    let target = r.text(0)?;
    Ok(KillSwitch {
        target: target.strip_prefix("tool:").unwrap_or(&target).to_string(),
        engaged: r.bool(1)?,
        reason: r.opt_text(2)?,
        changed_by: r.opt_text(3)?,
        changed_at: r.opt_text(4)?,
    })
}

#[async_trait]
impl Tools for SqlStore {
    async fn put_tool(&self, ws: &WorkspaceId, by: &Origin, def: ToolDef) -> Result<(Tool, bool)> {
        let (ws, by) = (ws.clone(), by.clone());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let now = tx.now_ts();
                let before = {
                    let sql = format!("SELECT {TOOL_COLS} FROM tools WHERE workspace_id = $1 AND name = $2{}", tx.dialect().for_update());
                    tx.query_opt(&sql, params![w, &def.name])?.map(|r| tool_from_row(&r)).transpose()?
                };
                let connector = serde_json::to_string(&def.connector).map_err(|e| Error::internal(e.to_string()))?;
                let params = params![
                    w,
                    &def.name,
                    &def.description,
                    def.kind.as_str(),
                    def.irreversible,
                    def.policy.as_str(),
                    def.min_confidence,
                    def.approval_ttl_seconds,
                    &connector,
                    &now
                ];
                if before.is_some() {
                    tx.execute(
                        "UPDATE tools SET description = $3, kind = $4, irreversible = $5, policy = $6, min_confidence = $7, \
                         approval_ttl_seconds = $8, connector = $9, updated_at = $10 WHERE workspace_id = $1 AND name = $2",
                        params,
                    )?;
                } else {
                    tx.execute(
                        "INSERT INTO tools (workspace_id, name, description, kind, irreversible, policy, min_confidence, approval_ttl_seconds, connector, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                        params,
                    )?;
                }
                let after = masked(
                    read_tool(&mut *tx, w, &def.name)?.ok_or_else(|| Error::internal("the tool vanished while being written"))?,
                );
                let created = before.is_none();
                let event = if created { "tool.created" } else { "tool.updated" };
                tx.append(
                    w,
                    EventDraft::new(event, by.actor.clone(), by.via)
                        .resource(format!("tool:{}", def.name))
                        .data(json!({"before": before.map(masked), "after": after})),
                )?;
                Ok((after, created))
            })
            .await
    }

    async fn list_tools(&self, ws: &WorkspaceId) -> Result<Vec<Tool>> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let rows =
                    conn.query(&format!("SELECT {TOOL_COLS} FROM tools WHERE workspace_id = $1 ORDER BY name"), params![ws.as_str()])?;
                Ok(rows.iter().map(|r| tool_from_row(r).map(masked)).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn get_tool(&self, ws: &WorkspaceId, name: &str) -> Result<Tool> {
        self.get_tool_sealed(ws, name).await?.map(masked).ok_or_else(|| Error::not_found("tool", name))
    }

    async fn get_tool_sealed(&self, ws: &WorkspaceId, name: &str) -> Result<Option<Tool>> {
        let (ws, name) = (ws.clone(), name.to_string());
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                Ok(read_tool(conn, ws.as_str(), &name)?)
            })
            .await
    }

    async fn gate_context(&self, ws: &WorkspaceId, tool: &str) -> Result<GateContext> {
        let (ws, tool) = (ws.clone(), tool.to_string());
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                // The version first: a change committed while the rest is read moves it, and
                // the decision is refused as stale rather than made on a mixture.
                let settings_row = conn
                    .query_opt(
                        "SELECT agent_writes_enabled, approval_ttl_seconds, config_version FROM workspaces WHERE id = $1",
                        params![w],
                    )?
                    .ok_or_else(|| Error::not_found("workspace", w))?;
                Ok(GateContext {
                    tool: read_tool(conn, w, &tool)?,
                    workspace_switch: read_switch(conn, w, "workspace")?,
                    tool_switch: read_switch(conn, w, &format!("tool:{tool}"))?,
                    settings: Settings { agent_writes_enabled: settings_row.bool(0)?, approval_ttl_seconds: settings_row.int(1)? },
                    config_version: settings_row.int(2)?,
                })
            })
            .await
    }

    async fn all_sealed_connectors(&self) -> Result<Vec<(WorkspaceId, String, Connector)>> {
        self.engine
            .read(|conn| {
                conn.set_all_workspaces()?;
                let rows = conn.query("SELECT workspace_id, name, connector FROM tools ORDER BY workspace_id, name", &[])?;
                rows.iter().map(|r| Ok((WorkspaceId::trusted(r.text(0)?), r.text(1)?, r.json(2)?))).collect()
            })
            .await
    }

    async fn reseal_connector(&self, ws: &WorkspaceId, tool: &str, connector: Connector) -> Result<()> {
        let (ws, tool) = (ws.clone(), tool.to_string());
        let text = serde_json::to_string(&connector).map_err(|e| Error::internal(e.to_string()))?;
        self.engine
            .write(move |tx| {
                tx.set_workspace(ws.as_str())?;
                tx.execute("UPDATE tools SET connector = $3 WHERE workspace_id = $1 AND name = $2", params![ws.as_str(), &tool, &text])?;
                Ok(())
            })
            .await
    }

    async fn delete_tool(&self, ws: &WorkspaceId, by: &Origin, name: &str) -> Result<(Tool, usize)> {
        let (ws, by, name) = (ws.clone(), by.clone(), name.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let sql = format!("SELECT {TOOL_COLS} FROM tools WHERE workspace_id = $1 AND name = $2{}", tx.dialect().for_update());
                let Some(tool) = tx.query_opt(&sql, params![w, &name])?.map(|r| tool_from_row(&r)).transpose()? else {
                    return Err(Error::not_found("tool", &name));
                };
                // First, so that a switch engaged at the same moment (which moves the
                // workspace's configuration too) either is seen below or comes after.
                // Decisions made under the old tools see the change and are made again.
                tx.workspace_config_changed(w)?;
                let switch = SwitchTarget::Tool(name.clone());
                // A tool's engaged switch is part of an incident: the responder lifts it,
                // not an admin's clean-up.
                if let Some(engaged) = read_switch(&mut *tx, w, &switch.key())? {
                    return Err(Error::conflict(
                        "tool_stopped",
                        format!(
                            "the kill switch for `{name}` is engaged ({}; by {}): lift it first (PUT /v1/killswitches/tools/{name}), then delete the tool",
                            engaged.reason, engaged.by
                        ),
                    ));
                }
                let withdrawn = super::actions::withdraw_open_approvals(tx, w, &by, super::actions::AskedBy::Tool(&name))?;
                tx.execute("DELETE FROM tools WHERE workspace_id = $1 AND name = $2", params![w, &name])?;
                // Its lifted switch goes with it; what became of the switch is in the log.
                tx.execute("DELETE FROM killswitches WHERE workspace_id = $1 AND target = $2 AND engaged = FALSE", params![w, &switch.key()])?;
                let before = masked(tool);
                tx.append(
                    w,
                    EventDraft::new("tool.deleted", by.actor.clone(), by.via)
                        .resource(format!("tool:{name}"))
                        .data(json!({"before": before, "approvals_withdrawn": withdrawn})),
                )?;
                Ok((before, withdrawn))
            })
            .await
    }
}

#[async_trait]
impl KillSwitchStore for SqlStore {
    async fn killswitches(&self, ws: &WorkspaceId) -> Result<KillSwitches> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                let rows = conn.query(
                    "SELECT target, engaged, reason, changed_by, changed_at FROM killswitches WHERE workspace_id = $1 ORDER BY target",
                    params![w],
                )?;
                let mut workspace =
                    KillSwitch { target: "workspace".into(), engaged: false, reason: None, changed_by: None, changed_at: None };
                let mut tools = Vec::new();
                for r in &rows {
                    let s = switch_from_row(r)?;
                    if r.text(0)? == "workspace" {
                        workspace = s;
                    } else {
                        tools.push(s);
                    }
                }
                Ok(KillSwitches { workspace, tools })
            })
            .await
    }

    async fn set_killswitch(
        &self,
        ws: &WorkspaceId,
        by: &Origin,
        target: SwitchTarget,
        engaged: bool,
        reason: &str,
    ) -> Result<(KillSwitch, bool)> {
        let (ws, by, reason) = (ws.clone(), by.clone(), reason.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let key = target.key();
                let sql = format!(
                    "SELECT target, engaged, reason, changed_by, changed_at FROM killswitches WHERE workspace_id = $1 AND target = $2{}",
                    tx.dialect().for_update()
                );
                let current = tx.query_opt(&sql, params![w, &key])?.map(|r| switch_from_row(&r)).transpose()?;
                // Already as asked (two responders at once, say): nothing changes, but the
                // attempt and its reason are recorded — they are part of the incident.
                let unchanged = match &current {
                    Some(c) if c.engaged == engaged => Some(c.clone()),
                    None if !engaged => Some(KillSwitch { target: target.label(), engaged: false, reason: None, changed_by: None, changed_at: None }),
                    _ => None,
                };
                if let Some(as_is) = unchanged {
                    tx.append(
                        w,
                        EventDraft::new("killswitch.unchanged", by.actor.clone(), by.via)
                            .resource(format!("killswitch:{}", target.label()))
                            .data(json!({"target": target.label(), "engaged": engaged, "reason": reason, "set_by": as_is.changed_by, "set_reason": as_is.reason})),
                    )?;
                    return Ok((as_is, false));
                }
                tx.workspace_config_changed(w)?;
                let now = tx.now_ts();
                tx.execute(
                    "INSERT INTO killswitches (workspace_id, target, engaged, reason, changed_by, changed_at) VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (workspace_id, target) DO UPDATE SET engaged = $3, reason = $4, changed_by = $5, changed_at = $6",
                    params![w, &key, engaged, &reason, &by.actor.id, &now],
                )?;
                let event = if engaged { "killswitch.engaged" } else { "killswitch.lifted" };
                tx.append(
                    w,
                    EventDraft::new(event, by.actor.clone(), by.via)
                        .resource(format!("killswitch:{}", target.label()))
                        .data(json!({"target": target.label(), "reason": reason})),
                )?;
                let state = KillSwitch { target: target.label(), engaged, reason: Some(reason.clone()), changed_by: Some(by.actor.id.clone()), changed_at: Some(now) };
                Ok((state, true))
            })
            .await
    }
}
