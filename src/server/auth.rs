//! Authentication, workspace resolution and permission checks: the one door every
//! route goes through.
//!
//! A handler asks for `Auth<need::X>`; the extractor reads the bearer secret, refuses a
//! malformed one before touching the store, finds its session or token, checks it is
//! live, works out what the caller may do right now, and refuses with 403 unless that
//! includes `X`. The handler then gets a [`Caller`] whose `workspace` scopes every store
//! call it makes. No route checks a permission on its own.
//!
//! An agent token's powers are its scopes ∩ its owner's current role, minus what agents
//! may never hold, recomputed on every request: demote the owner and the token shrinks
//! at once; deactivate them and it dies.

use std::marker::PhantomData;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use crate::audit::{Actor, Via};
use crate::clock::parse_ts;
use crate::error::{Error, Result};
use crate::permissions::{self, Permission, PermissionSet};
use crate::secrets::{self, SecretKind};
use crate::store::{AuthCredential, AuthSubject, Origin, WorkspaceId};

/// Who is calling, in which workspace, and what they may do.
#[derive(Clone, Debug)]
pub struct Caller {
    pub workspace: WorkspaceId,
    pub workspace_name: String,
    /// The human: the signed-in member, or the member who owns the agent token.
    pub member_id: String,
    pub member_email: String,
    pub member_name: String,
    pub role: String,
    /// What this caller may do on this request.
    pub permissions: PermissionSet,
    pub kind: CallerKind,
    pub via: Via,
    /// The store's configuration epoch, read when this request was authenticated: reads
    /// cached under it (the gate's) are as fresh as the request.
    pub epoch: u64,
}

#[derive(Clone, Debug)]
pub enum CallerKind {
    Human { session_id: String, expires_at: String },
    Agent { token_id: String, token_name: String, tools: Vec<String>, expires_at: Option<String> },
}

impl Caller {
    /// The actor and door recorded on this caller's audit events.
    pub fn origin(&self) -> Origin {
        let actor = match &self.kind {
            CallerKind::Human { .. } => Actor::user(&self.member_id),
            CallerKind::Agent { token_id, .. } => Actor::agent(token_id),
        };
        Origin { actor, via: self.via }
    }

    pub fn is_agent(&self) -> bool {
        matches!(self.kind, CallerKind::Agent { .. })
    }

    pub fn can(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    /// Refuses unless the caller holds `p`, saying why in terms of role or token.
    pub fn require(&self, p: Permission) -> Result<()> {
        if self.can(p) {
            return Ok(());
        }
        Err(match &self.kind {
            CallerKind::Human { .. } => Error::forbidden(
                "permission_denied",
                format!("this needs the `{p}` permission, which your role (`{}`) does not grant", self.role),
            ),
            CallerKind::Agent { .. } if !p.grantable_to_agents() => {
                Error::forbidden("permission_denied", format!("`{p}` is reserved for humans: no agent token can hold it"))
            }
            CallerKind::Agent { .. } => Error::forbidden(
                "permission_denied",
                format!(
                    "this needs the `{p}` permission, which this token does not hold (its scopes, limited by its owner's role `{}`)",
                    self.role
                ),
            ),
        })
    }

    /// Refuses agent tokens: for things only a person may do.
    pub fn require_human(&self, what: &str) -> Result<()> {
        if self.is_agent() {
            return Err(Error::forbidden(
                "humans_only",
                format!("{what} is for people signed in with their own account, not agent tokens"),
            ));
        }
        Ok(())
    }

    /// For agents: whether the token's tool patterns cover `tool`. Humans are not
    /// limited by tool patterns.
    pub fn covers_tool(&self, tool: &str) -> bool {
        match &self.kind {
            CallerKind::Human { .. } => true,
            CallerKind::Agent { tools, .. } => tools.iter().any(|p| permissions::tool_matches(p, tool)),
        }
    }

    /// Refuses a tool the caller named outside its token's patterns, before any lookup:
    /// the same answer whether or not the tool exists, so a token learns nothing of tools
    /// beyond its own.
    pub fn require_tool(&self, tool: &str) -> Result<()> {
        if !self.covers_tool(tool) {
            return Err(Error::forbidden("tool_not_in_scope", format!("`{tool}` is outside this token's tools")));
        }
        Ok(())
    }
}

/// A permission a route needs, as a type, so the route's signature says it.
pub trait Need {
    const PERMISSION: Option<Permission>;
}

/// The permission markers routes name in `Auth<need::…>`.
pub mod need {
    use super::Need;
    use crate::permissions::Permission;

    /// Any authenticated caller.
    pub struct Authenticated;
    impl Need for Authenticated {
        const PERMISSION: Option<Permission> = None;
    }

    macro_rules! needs {
        ($($name:ident),* $(,)?) => { $(
            pub struct $name;
            impl Need for $name { const PERMISSION: Option<Permission> = Some(Permission::$name); }
        )* };
    }
    needs!(
        ActionsSubmit,
        ActionsRead,
        ActionsSimulate,
        ApprovalsRead,
        ApprovalsDecide,
        AuditRead,
        AuditExport,
        KillswitchRead,
        KillswitchEngage,
        KillswitchLift,
        ToolsRead,
        ToolsManage,
        ConstitutionRead,
        ConstitutionPublish,
        MembersRead,
        MembersManage,
        RolesManage,
        TokensCreate,
        TokensManage,
        SettingsRead,
        SettingsManage,
        WebhooksManage,
        OwnershipTransfer,
    );
}

/// An authenticated caller who holds `N`'s permission.
pub struct Auth<N: Need>(pub Caller, PhantomData<N>);

impl<N: Need> std::ops::Deref for Auth<N> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<N: Need + Send + Sync> FromRequestParts<AppState> for Auth<N> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = authenticate(parts, state).await?;
        if let Some(p) = N::PERMISSION {
            caller.require(p)?;
        }
        Ok(Auth(caller, PhantomData))
    }
}

/// The header our own console sends so its changes are recorded as `via: console`.
pub const CLIENT_HEADER: &str = "x-countersign-client";

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Caller> {
    let header_value = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Error::unauthenticated(
            "missing_credentials",
            "send `Authorization: Bearer <token>`: a session from POST /v1/sessions, or an agent token",
        )
    })?;
    // Two credentials: which one acts is a guess a proxy and this server could make
    // differently. Neither does.
    if parts.headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        return Err(Error::unauthenticated("invalid_authorization_header", "send one Authorization header, not several"));
    }
    let text = header_value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| Error::unauthenticated("invalid_authorization_header", "the Authorization header must be `Bearer <token>`"))?;
    let kind = secrets::recognize(text).ok_or_else(|| {
        Error::unauthenticated(
            "invalid_token",
            "that is not a valid Countersign token (wrong prefix, length or checksum); check it was copied whole",
        )
    })?;
    let hash = secrets::storage_hash(text);
    // Read on every request (one round trip on PostgreSQL, so that a change committed
    // through any replica is seen by the very next request); unreadable means refused.
    let epoch = state.store.config_epoch().await?;
    let found = match state.auth_cache.get(&hash, epoch) {
        Some(hit) => Some(hit),
        None => {
            let found = match kind {
                SecretKind::Session => state.store.lookup_session(&hash).await?,
                SecretKind::AgentToken => state.store.lookup_token(&hash).await?,
            };
            if let Some(f) = &found {
                state.auth_cache.put(hash.clone(), epoch, f.clone());
            }
            found
        }
    };
    let subject = found
        .filter(|s| secrets::constant_time_eq(&s.secret_hash, &hash))
        .ok_or_else(|| Error::unauthenticated("invalid_token", "the token is not recognised; it may have been rotated"))?;
    let now = state.clock.now();
    if !subject.member_active {
        return Err(Error::unauthenticated("member_deactivated", "the member this credential belongs to has been deactivated"));
    }
    let via_console = parts.headers.get(CLIENT_HEADER).and_then(|v| v.to_str().ok()) == Some("console");
    let AuthSubject { workspace_id, workspace_name, member_id, member_email, member_name, role_name, role_permissions, credential, .. } =
        subject;
    let (kind, permissions, via) = match credential {
        AuthCredential::Session { id, expires_at, revoked, .. } => {
            if revoked {
                return Err(Error::unauthenticated("session_revoked", "this session has ended; sign in again"));
            }
            if parse_ts(&expires_at).is_none_or(|t| t <= now) {
                return Err(Error::unauthenticated("session_expired", "this session has expired; sign in again"));
            }
            let via = if via_console { Via::Console } else { Via::Api };
            (CallerKind::Human { session_id: id, expires_at }, role_permissions, via)
        }
        AuthCredential::Token { id, name, scopes, tools, expires_at, last_used_at, revoked } => {
            if revoked {
                return Err(Error::unauthenticated("token_revoked", "this agent token has been revoked"));
            }
            if expires_at.as_deref().and_then(parse_ts).is_some_and(|t| t <= now) {
                return Err(Error::unauthenticated("token_expired", "this agent token has expired"));
            }
            let granted: PermissionSet = scopes.iter().filter_map(|s| s.parse::<Permission>().ok()).collect();
            let effective = granted.intersection(&role_permissions).copied().filter(|p| p.grantable_to_agents()).collect();
            state.note_token_use(&workspace_id, &id, last_used_at.as_deref(), now);
            (CallerKind::Agent { token_id: id, token_name: name, tools, expires_at }, effective, Via::Agent)
        }
    };
    Ok(Caller {
        workspace: workspace_id,
        workspace_name,
        member_id,
        member_email,
        member_name,
        role: role_name,
        permissions,
        kind,
        via,
        epoch,
    })
}
