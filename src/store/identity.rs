//! Workspaces, members, roles, sessions and agent tokens.

use async_trait::async_trait;
use serde_json::json;

use super::db::{Conn, DbError, Row};
use super::engine::WriteTx;
use super::{Origin, SqlStore, WorkspaceId};
use crate::audit::{Actor, EventDraft, GENESIS_HASH, Via};
use crate::error::{Error, Result};
use crate::ids::{IdKind, new_id};
use crate::model::{Member, MemberStatus, Role, Session, Settings, Token, TokenState, Workspace};
use crate::params;
use crate::permissions::{BuiltinRole, Permission, PermissionSet};

// ---------------------------------------------------------------------------------------
// Workspaces and settings
// ---------------------------------------------------------------------------------------

/// A change to workspace settings; absent fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct SettingsChange {
    pub agent_writes_enabled: Option<bool>,
    pub approval_ttl_seconds: Option<i64>,
}

#[async_trait]
pub trait Workspaces {
    /// Creates a workspace and its owner in one transaction (`admin init`).
    async fn create_workspace(&self, name: &str, owner: NewMember) -> Result<(Workspace, Member)>;
    /// Every workspace, for the admin command line.
    async fn list_workspaces(&self) -> Result<Vec<Workspace>>;
    async fn get_workspace(&self, ws: &WorkspaceId) -> Result<Workspace>;
    async fn get_settings(&self, ws: &WorkspaceId) -> Result<Settings>;
    async fn update_settings(&self, ws: &WorkspaceId, by: &Origin, change: SettingsChange) -> Result<Settings>;
}

const WORKSPACE_COLS: &str = "w.id, w.name, (SELECT id FROM members o WHERE o.workspace_id = w.id AND o.role = 'owner'), w.created_at";

fn workspace_from_row(r: &Row) -> Result<Workspace, DbError> {
    Ok(Workspace { id: r.text(0)?, name: r.text(1)?, owner_id: r.opt_text(2)?.unwrap_or_default(), created_at: r.text(3)? })
}

fn read_settings(conn: &mut dyn Conn, ws: &str) -> Result<Settings> {
    let row = conn
        .query_opt("SELECT agent_writes_enabled, approval_ttl_seconds FROM workspaces WHERE id = $1", params![ws])?
        .ok_or_else(|| Error::not_found("workspace", ws))?;
    Ok(Settings { agent_writes_enabled: row.bool(0)?, approval_ttl_seconds: row.int(1)? })
}

#[async_trait]
impl Workspaces for SqlStore {
    async fn create_workspace(&self, name: &str, owner: NewMember) -> Result<(Workspace, Member)> {
        let name = name.to_string();
        self.engine
            .write(move |tx| {
                let ws_id = new_id(IdKind::Workspace);
                tx.set_workspace(&ws_id)?;
                tx.config_changed();
                let now = tx.now_ts();
                // Names are unique across workspaces: the one cross-workspace read here.
                tx.set_all_workspaces()?;
                let exists = tx.query_opt("SELECT id FROM workspaces WHERE name = $1", params![&name])?;
                if exists.is_some() {
                    return Err(Error::conflict("workspace_exists", format!("a workspace named `{name}` already exists")));
                }
                tx.set_workspace(&ws_id)?;
                tx.execute("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)", params![&ws_id, &name, &now])?;
                tx.execute("INSERT INTO audit_heads (workspace_id, seq, hash) VALUES ($1, 0, $2)", params![&ws_id, GENESIS_HASH])?;
                let by = Origin::system("admin-init");
                tx.append(
                    &ws_id,
                    EventDraft::new("workspace.created", by.actor.clone(), by.via).resource(ws_id.clone()).data(json!({"name": name})),
                )?;
                let member = insert_member(tx, &ws_id, &by, owner.clone())?;
                let ws = Workspace { id: ws_id, name: name.clone(), owner_id: member.id.clone(), created_at: now };
                Ok((ws, member))
            })
            .await
    }

    async fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        self.engine
            .read(|conn| {
                conn.set_all_workspaces()?;
                let rows = conn.query(&format!("SELECT {WORKSPACE_COLS} FROM workspaces w ORDER BY w.created_at"), &[])?;
                Ok(rows.iter().map(workspace_from_row).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn get_workspace(&self, ws: &WorkspaceId) -> Result<Workspace> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let row = conn
                    .query_opt(&format!("SELECT {WORKSPACE_COLS} FROM workspaces w WHERE w.id = $1"), params![ws.as_str()])?
                    .ok_or_else(|| Error::not_found("workspace", ws.as_str()))?;
                Ok(workspace_from_row(&row)?)
            })
            .await
    }

    async fn get_settings(&self, ws: &WorkspaceId) -> Result<Settings> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                read_settings(conn, ws.as_str())
            })
            .await
    }

    async fn update_settings(&self, ws: &WorkspaceId, by: &Origin, change: SettingsChange) -> Result<Settings> {
        let (ws, by) = (ws.clone(), by.clone());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let before = {
                    let sql = format!(
                        "SELECT agent_writes_enabled, approval_ttl_seconds FROM workspaces WHERE id = $1{}",
                        tx.dialect().for_update()
                    );
                    let row = tx.query_opt(&sql, params![w])?.ok_or_else(|| Error::not_found("workspace", w))?;
                    Settings { agent_writes_enabled: row.bool(0)?, approval_ttl_seconds: row.int(1)? }
                };
                let after = Settings {
                    agent_writes_enabled: change.agent_writes_enabled.unwrap_or(before.agent_writes_enabled),
                    approval_ttl_seconds: change.approval_ttl_seconds.unwrap_or(before.approval_ttl_seconds),
                };
                if after == before {
                    return Ok(after);
                }
                tx.execute(
                    "UPDATE workspaces SET agent_writes_enabled = $2, approval_ttl_seconds = $3 WHERE id = $1",
                    params![w, after.agent_writes_enabled, after.approval_ttl_seconds],
                )?;
                tx.append(
                    w,
                    EventDraft::new("settings.updated", by.actor.clone(), by.via)
                        .resource(w)
                        .data(json!({"before": before, "after": after})),
                )?;
                Ok(after)
            })
            .await
    }
}

// ---------------------------------------------------------------------------------------
// Members
// ---------------------------------------------------------------------------------------

/// A member to create. `role` is a role key: a built-in name or a custom role's id.
#[derive(Clone, Debug)]
pub struct NewMember {
    pub email: String,
    pub name: String,
    pub role: String,
    pub password_hash: String,
}

/// A change to a member; absent fields stay as they are. `role` is a role key.
#[derive(Clone, Debug, Default)]
pub struct MemberChange {
    pub role: Option<String>,
    pub status: Option<MemberStatus>,
}

/// An account that might sign in with a given e-mail.
#[derive(Clone, Debug)]
pub struct SignInAccount {
    pub workspace_id: WorkspaceId,
    pub workspace_name: String,
    pub member_id: String,
    pub password_hash: String,
    pub active: bool,
}

/// The accounts a person's `workspace` (a name or an id) names: by id or name as written,
/// else by the same name in another case when that names exactly one (`Acme` for `acme`)
/// — a right password is not failed over a capital letter. Sign-in and `admin
/// reset-password` name workspaces by this one rule.
pub fn accounts_in(accounts: Vec<SignInAccount>, workspace: &str) -> Vec<SignInAccount> {
    let (exact, others): (Vec<_>, Vec<_>) =
        accounts.into_iter().partition(|a| a.workspace_name == workspace || a.workspace_id.as_str() == workspace);
    if !exact.is_empty() {
        return exact;
    }
    let folded: Vec<_> = others.into_iter().filter(|a| a.workspace_name.to_lowercase() == workspace.to_lowercase()).collect();
    if folded.len() == 1 { folded } else { Vec::new() }
}

#[async_trait]
pub trait Members {
    async fn list_members(&self, ws: &WorkspaceId) -> Result<Vec<Member>>;
    async fn get_member(&self, ws: &WorkspaceId, id: &str) -> Result<Member>;
    async fn create_member(&self, ws: &WorkspaceId, by: &Origin, new: NewMember) -> Result<Member>;
    /// Changes a role or status. Deactivating revokes the member's sessions and tokens
    /// in the same transaction.
    async fn update_member(&self, ws: &WorkspaceId, by: &Origin, id: &str, change: MemberChange) -> Result<Member>;
    /// Makes `to` the owner; the old owner becomes an admin.
    async fn transfer_ownership(&self, ws: &WorkspaceId, by: &Origin, to: &str) -> Result<(Member, Member)>;
    /// Resolves a role name (built-in or custom) to the key stored on members.
    async fn resolve_role(&self, ws: &WorkspaceId, name: &str) -> Result<Option<String>>;
    /// Every account with this e-mail, in any workspace: the one unscoped member read,
    /// because signing in is how a person names their workspace.
    async fn find_accounts(&self, email: &str) -> Result<Vec<SignInAccount>>;
    /// Replaces an active member's password and ends every session of theirs but `keep`
    /// (the one changing it, if any), in one write; the account's failed sign-ins are
    /// forgotten, so a reset also lifts a lockout. Audited as `event` (never with the
    /// hash). Returns how many sessions were ended.
    async fn set_password(&self, ws: &WorkspaceId, by: &Origin, change: PasswordChange) -> Result<u64>;
}

/// A new password for a member (see [`Members::set_password`]).
#[derive(Clone, Debug)]
pub struct PasswordChange {
    pub member_id: String,
    pub password_hash: String,
    /// The session to keep: the member's own, when they change it themselves.
    pub keep_session: Option<String>,
    /// `member.password_changed` (by the member) or `member.password_reset` (by an admin).
    pub event: &'static str,
}

const SESSION_COLS: &str = "id, member_id, client, created_at, expires_at";

fn session_from_row(r: &Row) -> Result<Session, DbError> {
    Ok(Session { id: r.text(0)?, member_id: r.text(1)?, client: r.text(2)?, created_at: r.text(3)?, expires_at: r.text(4)? })
}

const MEMBER_COLS: &str = "m.id, m.email, m.name, COALESCE(r.name, m.role), m.status, m.created_at, m.updated_at";
const MEMBER_FROM: &str = "members m LEFT JOIN roles r ON r.id = m.role AND r.workspace_id = m.workspace_id";

fn member_from_row(r: &Row) -> Result<Member, DbError> {
    Ok(Member {
        id: r.text(0)?,
        email: r.text(1)?,
        name: r.text(2)?,
        role: r.text(3)?,
        status: MemberStatus::parse(&r.text(4)?).unwrap_or(MemberStatus::Deactivated),
        created_at: r.text(5)?,
        updated_at: r.text(6)?,
    })
}

fn read_member(conn: &mut dyn Conn, ws: &str, id: &str) -> Result<Member> {
    let row = conn
        .query_opt(&format!("SELECT {MEMBER_COLS} FROM {MEMBER_FROM} WHERE m.workspace_id = $1 AND m.id = $2"), params![ws, id])?
        .ok_or_else(|| Error::not_found("member", id))?;
    Ok(member_from_row(&row)?)
}

fn read_member_tx(tx: &mut WriteTx<'_>, ws: &str, id: &str) -> Result<(Member, String)> {
    let sql = format!("SELECT {MEMBER_COLS}, m.role FROM {MEMBER_FROM} WHERE m.workspace_id = $1 AND m.id = $2");
    let row = tx.query_opt(&sql, params![ws, id])?.ok_or_else(|| Error::not_found("member", id))?;
    Ok((member_from_row(&row)?, row.text(7)?))
}

fn insert_member(tx: &mut WriteTx<'_>, ws: &str, by: &Origin, new: NewMember) -> Result<Member> {
    let id = new_id(IdKind::User);
    let now = tx.now_ts();
    let taken = tx.query_opt("SELECT id FROM members WHERE workspace_id = $1 AND email = $2", params![ws, &new.email])?;
    if taken.is_some() {
        return Err(Error::conflict("member_exists", format!("{} is already a member of this workspace", new.email)));
    }
    tx.execute(
        "INSERT INTO members (id, workspace_id, email, name, role, password_hash, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $7)",
        params![&id, ws, &new.email, &new.name, &new.role, &new.password_hash, &now],
    )?;
    let (member, _) = read_member_tx(tx, ws, &id)?;
    tx.append(
        ws,
        EventDraft::new("member.created", by.actor.clone(), by.via)
            .resource(id.clone())
            .data(json!({"email": member.email, "name": member.name, "role": member.role})),
    )?;
    Ok(member)
}

/// Refuses to make a credential for a member who is not active. Checked inside the write,
/// not only when the request was authenticated: a request authorised a moment before its
/// member was deactivated must not leave a session or token behind that would come back
/// to life on reactivation.
fn ensure_active(tx: &mut WriteTx<'_>, ws: &str, member_id: &str) -> Result<()> {
    let sql = format!("SELECT status FROM members WHERE workspace_id = $1 AND id = $2{}", tx.dialect().for_update());
    let row = tx.query_opt(&sql, params![ws, member_id])?.ok_or_else(|| Error::not_found("member", member_id))?;
    if row.text(0)? != MemberStatus::Active.as_str() {
        return Err(Error::unauthenticated("member_deactivated", "the member this credential would belong to has been deactivated"));
    }
    Ok(())
}

/// Revokes every live session and token of a member; returns how many of each.
fn revoke_credentials(tx: &mut WriteTx<'_>, ws: &str, member_id: &str) -> Result<(u64, u64)> {
    let now = tx.now_ts();
    let sessions = tx.execute(
        "UPDATE sessions SET revoked_at = $3 WHERE workspace_id = $1 AND member_id = $2 AND revoked_at IS NULL",
        params![ws, member_id, &now],
    )?;
    let tokens = tx.execute(
        "UPDATE tokens SET revoked_at = $3 WHERE workspace_id = $1 AND owner_id = $2 AND revoked_at IS NULL",
        params![ws, member_id, &now],
    )?;
    Ok((sessions, tokens))
}

#[async_trait]
impl Members for SqlStore {
    async fn list_members(&self, ws: &WorkspaceId) -> Result<Vec<Member>> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let rows = conn.query(
                    &format!("SELECT {MEMBER_COLS} FROM {MEMBER_FROM} WHERE m.workspace_id = $1 ORDER BY m.id"),
                    params![ws.as_str()],
                )?;
                Ok(rows.iter().map(member_from_row).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn get_member(&self, ws: &WorkspaceId, id: &str) -> Result<Member> {
        let (ws, id) = (ws.clone(), id.to_string());
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                read_member(conn, ws.as_str(), &id)
            })
            .await
    }

    async fn create_member(&self, ws: &WorkspaceId, by: &Origin, new: NewMember) -> Result<Member> {
        let (ws, by) = (ws.clone(), by.clone());
        self.engine
            .write(move |tx| {
                tx.set_workspace(ws.as_str())?;
                tx.workspace_config_changed(ws.as_str())?;
                insert_member(tx, ws.as_str(), &by, new.clone())
            })
            .await
    }

    async fn set_password(&self, ws: &WorkspaceId, by: &Origin, change: PasswordChange) -> Result<u64> {
        let (ws, by) = (ws.clone(), by.clone());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let now = tx.now_ts();
                let (member, _) = read_member_tx(tx, w, &change.member_id)?;
                if member.status != MemberStatus::Active {
                    return Err(Error::conflict("member_not_active", "this member is deactivated: reactivate them before setting a password"));
                }
                tx.execute(
                    "UPDATE members SET password_hash = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2",
                    params![w, &change.member_id, &change.password_hash, &now],
                )?;
                let ended = tx.execute(
                    "UPDATE sessions SET revoked_at = $3 WHERE workspace_id = $1 AND member_id = $2 AND revoked_at IS NULL AND ($4 IS NULL OR id <> $4)",
                    params![w, &change.member_id, &now, change.keep_session.clone()],
                )?;
                tx.execute("DELETE FROM auth_failures WHERE key = $1", params![account_key(&member.email)])?;
                tx.append(
                    w,
                    EventDraft::new(change.event, by.actor.clone(), by.via)
                        .resource(change.member_id.clone())
                        .data(json!({"member_id": change.member_id, "sessions_ended": ended})),
                )?;
                Ok(ended)
            })
            .await
    }

    async fn update_member(&self, ws: &WorkspaceId, by: &Origin, id: &str, change: MemberChange) -> Result<Member> {
        let (ws, by, id) = (ws.clone(), by.clone(), id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let (before, role_key) = read_member_tx(tx, w, &id)?;
                let is_owner = role_key == BuiltinRole::Owner.name();
                if let Some(role) = &change.role {
                    if role == BuiltinRole::Owner.name() {
                        return Err(Error::unprocessable(
                            "use_ownership_transfer",
                            "a workspace has exactly one owner; make someone the owner with POST /v1/workspace/transfer",
                        ));
                    }
                    if is_owner && *role != role_key {
                        return Err(Error::conflict(
                            "owner_role_fixed",
                            "the owner's role changes only by transferring ownership to another member",
                        ));
                    }
                }
                if is_owner && change.status == Some(MemberStatus::Deactivated) {
                    return Err(Error::conflict("owner_cannot_be_deactivated", "transfer ownership before deactivating the owner"));
                }
                let now = tx.now_ts();
                if let Some(role) = change.role.as_ref().filter(|r| **r != role_key) {
                    tx.execute(
                        "UPDATE members SET role = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2",
                        params![w, &id, role, &now],
                    )?;
                    let (after, _) = read_member_tx(tx, w, &id)?;
                    tx.append(
                        w,
                        EventDraft::new("member.role_changed", by.actor.clone(), by.via)
                            .resource(id.clone())
                            .data(json!({"before": before.role, "after": after.role})),
                    )?;
                }
                match change.status {
                    Some(MemberStatus::Deactivated) if before.status == MemberStatus::Active => {
                        tx.execute(
                            "UPDATE members SET status = 'deactivated', updated_at = $3 WHERE workspace_id = $1 AND id = $2",
                            params![w, &id, &now],
                        )?;
                        let (sessions, tokens) = revoke_credentials(tx, w, &id)?;
                        tx.append(
                            w,
                            EventDraft::new("member.deactivated", by.actor.clone(), by.via)
                                .resource(id.clone())
                                .data(json!({"email": before.email, "sessions_revoked": sessions, "tokens_revoked": tokens})),
                        )?;
                        super::actions::withdraw_open_approvals(tx, w, &by, super::actions::AskedBy::Member(&id))?;
                    }
                    Some(MemberStatus::Active) if before.status == MemberStatus::Deactivated => {
                        tx.execute(
                            "UPDATE members SET status = 'active', updated_at = $3 WHERE workspace_id = $1 AND id = $2",
                            params![w, &id, &now],
                        )?;
                        tx.append(
                            w,
                            EventDraft::new("member.reactivated", by.actor.clone(), by.via)
                                .resource(id.clone())
                                .data(json!({"email": before.email})),
                        )?;
                    }
                    _ => {}
                }
                Ok(read_member_tx(tx, w, &id)?.0)
            })
            .await
    }

    async fn transfer_ownership(&self, ws: &WorkspaceId, by: &Origin, to: &str) -> Result<(Member, Member)> {
        let (ws, by, to) = (ws.clone(), by.clone(), to.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let (target, target_role) = read_member_tx(tx, w, &to)?;
                if target_role == BuiltinRole::Owner.name() {
                    return Err(Error::conflict("already_owner", format!("{} is already the owner", target.email)));
                }
                if target.status != MemberStatus::Active {
                    return Err(Error::conflict("member_deactivated", format!("{} is deactivated; reactivate them first", target.email)));
                }
                let owner_id = tx
                    .query_opt("SELECT id FROM members WHERE workspace_id = $1 AND role = 'owner'", params![w])?
                    .map(|r| r.text(0))
                    .transpose()?
                    .ok_or_else(|| Error::internal("the workspace has no owner"))?;
                let now = tx.now_ts();
                // Demote first: the one-owner index must hold after every statement.
                tx.execute(
                    "UPDATE members SET role = 'admin', updated_at = $3 WHERE workspace_id = $1 AND id = $2",
                    params![w, &owner_id, &now],
                )?;
                tx.execute(
                    "UPDATE members SET role = 'owner', updated_at = $3 WHERE workspace_id = $1 AND id = $2",
                    params![w, &to, &now],
                )?;
                let (old_owner, _) = read_member_tx(tx, w, &owner_id)?;
                let (new_owner, _) = read_member_tx(tx, w, &to)?;
                tx.append(
                    w,
                    EventDraft::new("workspace.ownership_transferred", by.actor.clone(), by.via)
                        .resource(w)
                        .data(json!({"from": owner_id, "to": to, "previous_role_of_new_owner": target.role})),
                )?;
                Ok((old_owner, new_owner))
            })
            .await
    }

    async fn resolve_role(&self, ws: &WorkspaceId, name: &str) -> Result<Option<String>> {
        if BuiltinRole::from_name(name).is_some() {
            return Ok(Some(name.to_string()));
        }
        let (ws, name) = (ws.clone(), name.to_string());
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let row = conn.query_opt("SELECT id FROM roles WHERE workspace_id = $1 AND name = $2", params![ws.as_str(), &name])?;
                Ok(row.map(|r| r.text(0)).transpose()?)
            })
            .await
    }

    async fn find_accounts(&self, email: &str) -> Result<Vec<SignInAccount>> {
        let email = email.to_string();
        self.engine
            .read(move |conn| {
                // Signing in is how a person names their workspace: every account with this e-mail.
                conn.set_all_workspaces()?;
                let rows = conn.query(
                    "SELECT m.workspace_id, w.name, m.id, m.password_hash, m.status FROM members m JOIN workspaces w ON w.id = m.workspace_id WHERE m.email = $1 ORDER BY m.id",
                    params![&email],
                )?;
                rows.iter()
                    .map(|r| {
                        Ok(SignInAccount {
                            workspace_id: WorkspaceId::trusted(r.text(0)?),
                            workspace_name: r.text(1)?,
                            member_id: r.text(2)?,
                            password_hash: r.text(3)?,
                            active: r.text(4)? == "active",
                        })
                    })
                    .collect()
            })
            .await
    }
}

// ---------------------------------------------------------------------------------------
// Custom roles
// ---------------------------------------------------------------------------------------

/// A change to a custom role; absent fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct RoleChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub permissions: Option<PermissionSet>,
}

#[async_trait]
pub trait Roles {
    /// Built-in roles first, then custom roles by name; each with its member count.
    async fn list_roles(&self, ws: &WorkspaceId) -> Result<Vec<Role>>;
    async fn get_role(&self, ws: &WorkspaceId, id: &str) -> Result<Role>;
    async fn create_role(&self, ws: &WorkspaceId, by: &Origin, name: &str, description: &str, permissions: PermissionSet) -> Result<Role>;
    async fn update_role(&self, ws: &WorkspaceId, by: &Origin, id: &str, change: RoleChange) -> Result<Role>;
    /// Refused while any member holds the role.
    async fn delete_role(&self, ws: &WorkspaceId, by: &Origin, id: &str) -> Result<()>;
}

fn perms_json(p: &PermissionSet) -> String {
    serde_json::to_string(&p.iter().map(|p| p.as_str()).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

/// Reads a stored permission list. A name this build does not know (written by a newer
/// one) grants nothing.
fn perms_from_json(text: &str) -> PermissionSet {
    serde_json::from_str::<Vec<String>>(text).unwrap_or_default().iter().filter_map(|s| s.parse::<Permission>().ok()).collect()
}

fn custom_role_from_row(r: &Row) -> Result<Role, DbError> {
    Ok(Role {
        id: Some(r.text(0)?),
        name: r.text(1)?,
        builtin: false,
        description: r.text(2)?,
        permissions: perms_from_json(&r.text(3)?).into_iter().collect(),
        members: r.int(4)?,
    })
}

const ROLE_SELECT: &str = "SELECT r.id, r.name, r.description, r.permissions, \
     (SELECT COUNT(*) FROM members m WHERE m.workspace_id = r.workspace_id AND m.role = r.id AND m.status = 'active') \
     FROM roles r WHERE r.workspace_id = $1";

fn read_role(conn: &mut dyn Conn, ws: &str, id: &str) -> Result<Role> {
    let row = conn.query_opt(&format!("{ROLE_SELECT} AND r.id = $2"), params![ws, id])?.ok_or_else(|| Error::not_found("role", id))?;
    Ok(custom_role_from_row(&row)?)
}

fn role_name_free(conn: &mut dyn Conn, ws: &str, name: &str, except: Option<&str>) -> Result<()> {
    if BuiltinRole::from_name(name).is_some() {
        return Err(Error::conflict("role_exists", format!("`{name}` is a built-in role")));
    }
    let row = conn.query_opt("SELECT id FROM roles WHERE workspace_id = $1 AND name = $2", params![ws, name])?;
    match row {
        Some(r) if Some(r.text(0)?.as_str()) != except => {
            Err(Error::conflict("role_exists", format!("a role named `{name}` already exists")))
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl Roles for SqlStore {
    async fn list_roles(&self, ws: &WorkspaceId) -> Result<Vec<Role>> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                let mut out = Vec::new();
                for role in BuiltinRole::ALL {
                    let count = conn
                        .query_opt(
                            "SELECT COUNT(*) FROM members WHERE workspace_id = $1 AND role = $2 AND status = 'active'",
                            params![w, role.name()],
                        )?
                        .map(|r| r.int(0))
                        .transpose()?
                        .unwrap_or(0);
                    out.push(Role {
                        id: None,
                        name: role.name().to_string(),
                        builtin: true,
                        description: role.describe().to_string(),
                        permissions: role.permissions().into_iter().collect(),
                        members: count,
                    });
                }
                for row in conn.query(&format!("{ROLE_SELECT} ORDER BY r.name"), params![w])? {
                    out.push(custom_role_from_row(&row)?);
                }
                Ok(out)
            })
            .await
    }

    async fn get_role(&self, ws: &WorkspaceId, id: &str) -> Result<Role> {
        let (ws, id) = (ws.clone(), id.to_string());
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                read_role(conn, ws.as_str(), &id)
            })
            .await
    }

    async fn create_role(&self, ws: &WorkspaceId, by: &Origin, name: &str, description: &str, permissions: PermissionSet) -> Result<Role> {
        let (ws, by, name, description) = (ws.clone(), by.clone(), name.to_string(), description.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                role_name_free(&mut *tx, w, &name, None)?;
                let id = new_id(IdKind::Role);
                let now = tx.now_ts();
                tx.execute(
                    "INSERT INTO roles (id, workspace_id, name, description, permissions, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    params![&id, w, &name, &description, perms_json(&permissions), &now],
                )?;
                let role = read_role(&mut *tx, w, &id)?;
                tx.append(
                    w,
                    EventDraft::new("role.created", by.actor.clone(), by.via)
                        .resource(id.clone())
                        .data(json!({"name": role.name, "permissions": role.permissions})),
                )?;
                Ok(role)
            })
            .await
    }

    async fn update_role(&self, ws: &WorkspaceId, by: &Origin, id: &str, change: RoleChange) -> Result<Role> {
        let (ws, by, id) = (ws.clone(), by.clone(), id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let before = read_role(&mut *tx, w, &id)?;
                if let Some(name) = &change.name {
                    role_name_free(&mut *tx, w, name, Some(&id))?;
                }
                let name = change.name.clone().unwrap_or_else(|| before.name.clone());
                let description = change.description.clone().unwrap_or_else(|| before.description.clone());
                let permissions = change.permissions.clone().unwrap_or_else(|| before.permissions.iter().copied().collect());
                tx.execute(
                    "UPDATE roles SET name = $3, description = $4, permissions = $5, updated_at = $6 WHERE workspace_id = $1 AND id = $2",
                    params![w, &id, &name, &description, perms_json(&permissions), tx.now_ts()],
                )?;
                let after = read_role(&mut *tx, w, &id)?;
                tx.append(
                    w,
                    EventDraft::new("role.updated", by.actor.clone(), by.via).resource(id.clone()).data(json!({
                        "before": {"name": before.name, "permissions": before.permissions},
                        "after": {"name": after.name, "permissions": after.permissions},
                    })),
                )?;
                Ok(after)
            })
            .await
    }

    async fn delete_role(&self, ws: &WorkspaceId, by: &Origin, id: &str) -> Result<()> {
        let (ws, by, id) = (ws.clone(), by.clone(), id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let role = read_role(&mut *tx, w, &id)?;
                let holders = tx
                    .query_opt("SELECT COUNT(*) FROM members WHERE workspace_id = $1 AND role = $2", params![w, &id])?
                    .map(|r| r.int(0))
                    .transpose()?
                    .unwrap_or(0);
                if holders > 0 {
                    return Err(Error::conflict(
                        "role_in_use",
                        format!("{holders} member(s) hold the role `{}`; give them another role first", role.name),
                    ));
                }
                tx.execute("DELETE FROM roles WHERE workspace_id = $1 AND id = $2", params![w, &id])?;
                tx.append(
                    w,
                    EventDraft::new("role.deleted", by.actor.clone(), by.via)
                        .resource(id.clone())
                        .data(json!({"name": role.name, "permissions": role.permissions})),
                )?;
                Ok(())
            })
            .await
    }
}

// ---------------------------------------------------------------------------------------
// Sessions, tokens and authentication lookups
// ---------------------------------------------------------------------------------------

/// What a presented secret turned out to be, with everything authorisation needs.
#[derive(Clone, Debug)]
pub struct AuthSubject {
    pub workspace_id: WorkspaceId,
    pub workspace_name: String,
    pub member_id: String,
    pub member_email: String,
    pub member_name: String,
    pub member_active: bool,
    /// The member's role name (built-in or custom).
    pub role_name: String,
    /// What the member's role allows right now.
    pub role_permissions: PermissionSet,
    pub credential: AuthCredential,
    /// The stored hash the secret was found under, for a constant-time recheck.
    pub secret_hash: String,
}

#[derive(Clone, Debug)]
pub enum AuthCredential {
    Session {
        id: String,
        client: String,
        expires_at: String,
        revoked: bool,
    },
    Token {
        id: String,
        name: String,
        scopes: Vec<String>,
        tools: Vec<String>,
        expires_at: Option<String>,
        last_used_at: Option<String>,
        revoked: bool,
    },
}

/// A session to create: the secret's hash, never the secret.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub member_id: String,
    pub secret_hash: String,
    /// `console` or `api`.
    pub client: String,
    pub expires_at: String,
    /// The client's address, for the audit log.
    pub address: String,
}

/// An agent token to create.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub owner_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub tools: Vec<String>,
    pub secret_hash: String,
    pub hint: String,
    pub expires_at: Option<String>,
}

/// The rate-limit key of an account's failed sign-ins (`email` normalised).
pub fn account_key(email: &str) -> String {
    format!("account:{email}")
}

/// The rate-limit key of a client address's failed sign-ins.
pub fn address_key(address: &str) -> String {
    format!("address:{address}")
}

/// A failed sign-in (or wrong current password), to count and audit.
#[derive(Clone, Debug)]
pub struct SignInFailure {
    /// The rate-limit keys it counts under (`account:…`, `address:…`).
    pub keys: Vec<String>,
    /// Each account tried, by workspace: each workspace's log records it.
    pub accounts: Vec<(WorkspaceId, String)>,
    pub email: String,
    pub address: String,
    pub reason: &'static str,
    pub via: Via,
    /// Who tried, when known (a signed-in member); otherwise the sign-in itself.
    pub by: Option<Actor>,
}

#[async_trait]
pub trait Sessions {
    async fn create_session(&self, ws: &WorkspaceId, by: &Origin, new: NewSession) -> Result<Session>;
    async fn revoke_session(&self, ws: &WorkspaceId, by: &Origin, session_id: &str) -> Result<()>;
    /// A member's sessions still in force (not ended, not expired), newest first.
    async fn list_sessions(&self, ws: &WorkspaceId, member_id: &str) -> Result<Vec<Session>>;
    /// One session, in force or not.
    async fn get_session(&self, ws: &WorkspaceId, id: &str) -> Result<Session>;
    /// Finds the session a secret's hash belongs to, in whatever workspace.
    async fn lookup_session(&self, secret_hash: &str) -> Result<Option<AuthSubject>>;
    /// Records a failed sign-in under each rate-limit key, and on the audit log of each
    /// workspace whose account was tried (an e-mail may have accounts in several).
    async fn record_sign_in_failure(&self, failure: SignInFailure) -> Result<()>;
    /// How many failures each key has at or after `since`, and when the oldest of them was.
    async fn count_sign_in_failures(&self, keys: Vec<String>, since: &str) -> Result<Vec<(i64, Option<String>)>>;
    /// Forgets an account's failures after it signs in.
    async fn clear_sign_in_failures(&self, key: &str) -> Result<()>;
    /// Forgets failures older than `before`.
    async fn prune_sign_in_failures(&self, before: &str) -> Result<u64>;
}

#[async_trait]
pub trait Tokens {
    async fn create_token(&self, ws: &WorkspaceId, by: &Origin, new: NewToken) -> Result<Token>;
    /// Lists tokens, all of them or one owner's.
    async fn list_tokens(&self, ws: &WorkspaceId, owner: Option<&str>) -> Result<Vec<Token>>;
    async fn get_token(&self, ws: &WorkspaceId, id: &str) -> Result<Token>;
    /// Replaces the secret; the old one stops working when this commits. `seen_hint` is the
    /// hint of the secret the caller meant to replace: if another rotation replaced it
    /// first, this one is refused (`token_rotated_concurrently`) rather than handing out a
    /// secret the first caller's answer had already made the token's.
    async fn rotate_token(&self, ws: &WorkspaceId, by: &Origin, id: &str, secret_hash: &str, hint: &str, seen_hint: &str) -> Result<Token>;
    async fn revoke_token(&self, ws: &WorkspaceId, by: &Origin, id: &str) -> Result<Token>;
    /// Finds the token a secret's hash belongs to, in whatever workspace.
    async fn lookup_token(&self, secret_hash: &str) -> Result<Option<AuthSubject>>;
    /// Records use. Not audited: it is bookkeeping, written at most once a minute.
    async fn touch_token(&self, ws: &WorkspaceId, id: &str, at: &str) -> Result<()>;
}

const TOKEN_COLS: &str = "id, name, owner_id, scopes, tools, secret_hint, created_at, expires_at, last_used_at, rotated_at, revoked_at";

fn token_from_row(r: &Row, now: &str) -> Result<Token, DbError> {
    let expires_at = r.opt_text(7)?;
    let revoked_at = r.opt_text(10)?;
    let state = if revoked_at.is_some() {
        TokenState::Revoked
    } else if expires_at.as_deref().is_some_and(|e| e <= now) {
        TokenState::Expired
    } else {
        TokenState::Active
    };
    Ok(Token {
        id: r.text(0)?,
        name: r.text(1)?,
        owner_id: r.text(2)?,
        scopes: r.json(3)?,
        tools: r.json(4)?,
        hint: r.text(5)?,
        created_at: r.text(6)?,
        expires_at,
        last_used_at: r.opt_text(8)?,
        rotated_at: r.opt_text(9)?,
        revoked_at,
        state,
    })
}

fn read_token(conn: &mut dyn Conn, ws: &str, id: &str, now: &str) -> Result<Token> {
    let row = conn
        .query_opt(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE workspace_id = $1 AND id = $2"), params![ws, id])?
        .ok_or_else(|| Error::not_found("token", id))?;
    Ok(token_from_row(&row, now)?)
}

/// The member columns every authentication lookup returns, after the credential's own.
const SUBJECT_MEMBER_COLS: &str = "m.workspace_id, w.name, m.id, m.email, m.name, m.status, m.role, r.name, r.permissions";
const SUBJECT_MEMBER_FROM: &str = "JOIN members m ON m.id = c.{owner} JOIN workspaces w ON w.id = m.workspace_id \
     LEFT JOIN roles r ON r.id = m.role AND r.workspace_id = m.workspace_id";

fn subject_from_row(r: &Row, first: usize, credential: AuthCredential, secret_hash: String) -> Result<AuthSubject, DbError> {
    let role_key = r.text(first + 6)?;
    let (role_name, role_permissions) = match BuiltinRole::from_name(&role_key) {
        Some(b) => (b.name().to_string(), b.permissions()),
        None => (r.opt_text(first + 7)?.unwrap_or(role_key), r.opt_text(first + 8)?.map(|p| perms_from_json(&p)).unwrap_or_default()),
    };
    Ok(AuthSubject {
        workspace_id: WorkspaceId::trusted(r.text(first)?),
        workspace_name: r.text(first + 1)?,
        member_id: r.text(first + 2)?,
        member_email: r.text(first + 3)?,
        member_name: r.text(first + 4)?,
        member_active: r.text(first + 5)? == "active",
        role_name,
        role_permissions,
        credential,
        secret_hash,
    })
}

#[async_trait]
impl Sessions for SqlStore {
    async fn create_session(&self, ws: &WorkspaceId, by: &Origin, new: NewSession) -> Result<Session> {
        let (ws, by) = (ws.clone(), by.clone());
        let NewSession { member_id, secret_hash, client, expires_at, address } = new;
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                ensure_active(tx, w, &member_id)?;
                let id = new_id(IdKind::Session);
                let now = tx.now_ts();
                tx.execute(
                    "INSERT INTO sessions (id, workspace_id, member_id, secret_hash, client, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    params![&id, w, &member_id, &secret_hash, &client, &now, &expires_at],
                )?;
                tx.append(
                    w,
                    EventDraft::new("session.created", by.actor.clone(), by.via)
                        .resource(id.clone())
                        .data(json!({"member_id": member_id, "client": client, "address": address, "expires_at": expires_at})),
                )?;
                Ok(Session { id, member_id: member_id.clone(), client: client.clone(), created_at: now, expires_at: expires_at.clone() })
            })
            .await
    }

    async fn revoke_session(&self, ws: &WorkspaceId, by: &Origin, session_id: &str) -> Result<()> {
        let (ws, by, id) = (ws.clone(), by.clone(), session_id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let now = tx.now_ts();
                let n = tx.execute(
                    "UPDATE sessions SET revoked_at = $3 WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
                    params![w, &id, &now],
                )?;
                if n == 0 {
                    return Err(Error::not_found("session", &id));
                }
                tx.append(w, EventDraft::new("session.revoked", by.actor.clone(), by.via).resource(id.clone()))?;
                Ok(())
            })
            .await
    }

    async fn list_sessions(&self, ws: &WorkspaceId, member_id: &str) -> Result<Vec<Session>> {
        let (ws, member_id) = (ws.clone(), member_id.to_string());
        let now = crate::clock::format_ts(self.clock.now());
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let rows = conn.query(
                    &format!(
                        "SELECT {SESSION_COLS} FROM sessions \
                         WHERE workspace_id = $1 AND member_id = $2 AND revoked_at IS NULL AND expires_at > $3 ORDER BY id DESC"
                    ),
                    params![ws.as_str(), &member_id, &now],
                )?;
                Ok(rows.iter().map(session_from_row).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn get_session(&self, ws: &WorkspaceId, id: &str) -> Result<Session> {
        let (ws, id) = (ws.clone(), id.to_string());
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let row = conn
                    .query_opt(
                        &format!("SELECT {SESSION_COLS} FROM sessions WHERE workspace_id = $1 AND id = $2"),
                        params![ws.as_str(), &id],
                    )?
                    .ok_or_else(|| Error::not_found("session", &id))?;
                Ok(session_from_row(&row)?)
            })
            .await
    }

    async fn lookup_session(&self, secret_hash: &str) -> Result<Option<AuthSubject>> {
        let secret_hash = secret_hash.to_string();
        self.engine
            .read(move |conn| {
                // Finding the workspace a secret belongs to is cross-workspace by nature.
                conn.set_all_workspaces()?;
                let sql = format!(
                    "SELECT c.id, c.client, c.expires_at, c.revoked_at, c.secret_hash, {SUBJECT_MEMBER_COLS} FROM sessions c {} WHERE c.secret_hash = $1",
                    SUBJECT_MEMBER_FROM.replace("{owner}", "member_id")
                );
                let Some(r) = conn.query_opt(&sql, params![&secret_hash])? else { return Ok(None) };
                let credential = AuthCredential::Session { id: r.text(0)?, client: r.text(1)?, expires_at: r.text(2)?, revoked: r.opt_text(3)?.is_some() };
                Ok(Some(subject_from_row(&r, 5, credential, r.text(4)?)?))
            })
            .await
    }

    async fn record_sign_in_failure(&self, failure: SignInFailure) -> Result<()> {
        let SignInFailure { keys, accounts, email, address, reason, via, by } = failure;
        self.engine
            .write(move |tx| {
                let now = tx.now_ts();
                for key in &keys {
                    tx.execute("INSERT INTO auth_failures (key, at) VALUES ($1, $2)", params![key, &now])?;
                }
                for (ws, member_id) in accounts.iter().cloned() {
                    tx.set_workspace(ws.as_str())?;
                    tx.append(
                        ws.as_str(),
                        // Whoever tried is nobody the log knows (only their address, in the data),
                        // not the member whose account was tried: that one is the resource.
                        EventDraft::new("session.failed", by.clone().unwrap_or_else(|| Actor::system("sign-in")), via)
                            .resource(member_id)
                            .outcome(crate::audit::outcome::FAILURE)
                            .data(json!({"email": email, "address": address, "reason": reason})),
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn count_sign_in_failures(&self, keys: Vec<String>, since: &str) -> Result<Vec<(i64, Option<String>)>> {
        let since = since.to_string();
        self.engine
            .read(move |conn| {
                keys.iter()
                    .map(|k| {
                        let r =
                            conn.query_opt("SELECT COUNT(*), MIN(at) FROM auth_failures WHERE key = $1 AND at >= $2", params![k, &since])?;
                        Ok(match r {
                            Some(r) => (r.int(0)?, r.opt_text(1)?),
                            None => (0, None),
                        })
                    })
                    .collect()
            })
            .await
    }

    async fn clear_sign_in_failures(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.engine
            .write(move |tx| {
                tx.execute("DELETE FROM auth_failures WHERE key = $1", params![&key])?;
                Ok(())
            })
            .await
    }

    async fn prune_sign_in_failures(&self, before: &str) -> Result<u64> {
        let before = before.to_string();
        self.engine.write(move |tx| Ok(tx.execute("DELETE FROM auth_failures WHERE at < $1", params![&before])?)).await
    }
}

#[async_trait]
impl Tokens for SqlStore {
    async fn create_token(&self, ws: &WorkspaceId, by: &Origin, new: NewToken) -> Result<Token> {
        let (ws, by) = (ws.clone(), by.clone());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                ensure_active(tx, w, &new.owner_id)?;
                let id = new_id(IdKind::Token);
                let now = tx.now_ts();
                tx.execute(
                    "INSERT INTO tokens (id, workspace_id, owner_id, name, scopes, tools, secret_hash, secret_hint, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    params![
                        &id,
                        w,
                        &new.owner_id,
                        &new.name,
                        serde_json::to_string(&new.scopes).unwrap_or_default(),
                        serde_json::to_string(&new.tools).unwrap_or_default(),
                        &new.secret_hash,
                        &new.hint,
                        &now,
                        new.expires_at.clone()
                    ],
                )?;
                let token = read_token(&mut *tx, w, &id, &now)?;
                tx.append(
                    w,
                    EventDraft::new("token.created", by.actor.clone(), by.via).resource(id.clone()).data(json!({
                        "name": token.name, "owner_id": token.owner_id, "scopes": token.scopes, "tools": token.tools,
                        "expires_at": token.expires_at, "hint": token.hint,
                    })),
                )?;
                Ok(token)
            })
            .await
    }

    async fn list_tokens(&self, ws: &WorkspaceId, owner: Option<&str>) -> Result<Vec<Token>> {
        let (ws, owner) = (ws.clone(), owner.map(str::to_string));
        let now = self.now_ts();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let rows = match &owner {
                    Some(o) => conn.query(
                        &format!("SELECT {TOKEN_COLS} FROM tokens WHERE workspace_id = $1 AND owner_id = $2 ORDER BY id"),
                        params![ws.as_str(), o],
                    )?,
                    None => {
                        conn.query(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE workspace_id = $1 ORDER BY id"), params![ws.as_str()])?
                    }
                };
                Ok(rows.iter().map(|r| token_from_row(r, &now)).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn get_token(&self, ws: &WorkspaceId, id: &str) -> Result<Token> {
        let (ws, id) = (ws.clone(), id.to_string());
        let now = self.now_ts();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                read_token(conn, ws.as_str(), &id, &now)
            })
            .await
    }

    async fn rotate_token(&self, ws: &WorkspaceId, by: &Origin, id: &str, secret_hash: &str, hint: &str, seen_hint: &str) -> Result<Token> {
        let (ws, by, id, secret_hash, hint) = (ws.clone(), by.clone(), id.to_string(), secret_hash.to_string(), hint.to_string());
        let seen_hint = seen_hint.to_string();
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let now = tx.now_ts();
                let before = read_token(&mut *tx, w, &id, &now)?;
                match before.state {
                    TokenState::Revoked => {
                        return Err(Error::conflict("token_revoked", "a revoked token cannot be rotated; create a new one"));
                    }
                    TokenState::Expired => {
                        return Err(Error::conflict("token_expired", "an expired token cannot be rotated; create a new one"));
                    }
                    TokenState::Active => {}
                }
                if before.hint != seen_hint {
                    return Err(Error::conflict(
                        "token_rotated_concurrently",
                        "another rotation replaced this token's secret just now: its secret is the one that rotation returned; rotate again only if you must",
                    ));
                }
                tx.execute(
                    "UPDATE tokens SET secret_hash = $3, secret_hint = $4, rotated_at = $5 WHERE workspace_id = $1 AND id = $2",
                    params![w, &id, &secret_hash, &hint, &now],
                )?;
                let after = read_token(&mut *tx, w, &id, &now)?;
                tx.append(
                    w,
                    EventDraft::new("token.rotated", by.actor.clone(), by.via)
                        .resource(id.clone())
                        .data(json!({"name": after.name, "owner_id": after.owner_id, "previous_hint": before.hint, "hint": after.hint})),
                )?;
                Ok(after)
            })
            .await
    }

    async fn revoke_token(&self, ws: &WorkspaceId, by: &Origin, id: &str) -> Result<Token> {
        let (ws, by, id) = (ws.clone(), by.clone(), id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                tx.workspace_config_changed(w)?;
                let now = tx.now_ts();
                let before = read_token(&mut *tx, w, &id, &now)?;
                if before.state == TokenState::Revoked {
                    return Ok(before);
                }
                tx.execute("UPDATE tokens SET revoked_at = $3 WHERE workspace_id = $1 AND id = $2", params![w, &id, &now])?;
                tx.append(
                    w,
                    EventDraft::new("token.revoked", by.actor.clone(), by.via)
                        .resource(id.clone())
                        .data(json!({"name": before.name, "owner_id": before.owner_id, "hint": before.hint})),
                )?;
                super::actions::withdraw_open_approvals(tx, w, &by, super::actions::AskedBy::Token(&id))?;
                read_token(&mut *tx, w, &id, &now)
            })
            .await
    }

    async fn lookup_token(&self, secret_hash: &str) -> Result<Option<AuthSubject>> {
        let secret_hash = secret_hash.to_string();
        self.engine
            .read(move |conn| {
                // Finding the workspace a secret belongs to is cross-workspace by nature.
                conn.set_all_workspaces()?;
                let sql = format!(
                    "SELECT c.id, c.name, c.scopes, c.tools, c.expires_at, c.last_used_at, c.revoked_at, c.secret_hash, {SUBJECT_MEMBER_COLS} FROM tokens c {} WHERE c.secret_hash = $1",
                    SUBJECT_MEMBER_FROM.replace("{owner}", "owner_id")
                );
                let Some(r) = conn.query_opt(&sql, params![&secret_hash])? else { return Ok(None) };
                let credential = AuthCredential::Token {
                    id: r.text(0)?,
                    name: r.text(1)?,
                    scopes: r.json(2)?,
                    tools: r.json(3)?,
                    expires_at: r.opt_text(4)?,
                    last_used_at: r.opt_text(5)?,
                    revoked: r.opt_text(6)?.is_some(),
                };
                Ok(Some(subject_from_row(&r, 8, credential, r.text(7)?)?))
            })
            .await
    }

    async fn touch_token(&self, ws: &WorkspaceId, id: &str, at: &str) -> Result<()> {
        let (ws, id, at) = (ws.clone(), id.to_string(), at.to_string());
        self.engine
            .write(move |tx| {
                tx.set_workspace(ws.as_str())?;
                tx.execute("UPDATE tokens SET last_used_at = $3 WHERE workspace_id = $1 AND id = $2", params![ws.as_str(), &id, &at])?;
                Ok(())
            })
            .await
    }
}
