//! The records the API returns, shared by the server, the store and the client.
//!
//! These are the nouns of the product as a caller sees them. They never carry a secret:
//! password hashes and token hashes stay inside the store.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::permissions::Permission;

/// A tenant. Everything belongs to exactly one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub created_at: String,
}

/// Workspace-wide settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Settings {
    /// While false (the default), `write` tools are refused to agent tokens.
    pub agent_writes_enabled: bool,
    /// How long an approval stays open unless the tool says otherwise.
    pub approval_ttl_seconds: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    Deactivated,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::Deactivated => "deactivated",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(MemberStatus::Active),
            "deactivated" => Some(MemberStatus::Deactivated),
            _ => None,
        }
    }
}

/// A person in a workspace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub id: String,
    pub email: String,
    pub name: String,
    /// `owner`, `admin`, `member`, `viewer`, or a custom role's name.
    pub role: String,
    pub status: MemberStatus,
    pub created_at: String,
    pub updated_at: String,
}

/// A role: built-in or custom, with what it allows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Role {
    /// Custom roles have an id (`rol_…`); built-in roles have none.
    pub id: Option<String>,
    pub name: String,
    pub builtin: bool,
    pub description: String,
    #[schema(value_type = Vec<String>)]
    pub permissions: Vec<Permission>,
    /// How many members hold it.
    pub members: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

/// An agent token, as listed: never its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    /// The public id (like Vault's accessor): lists, rotates and revokes the token.
    pub id: String,
    pub name: String,
    /// The member who created it; its powers never exceed theirs.
    pub owner_id: String,
    /// Permissions granted (intersected with the owner's role on every request).
    pub scopes: Vec<String>,
    /// Tool name patterns (`email.*`, `*`).
    pub tools: Vec<String>,
    /// The first characters of the secret, to tell tokens apart.
    pub hint: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub rotated_at: Option<String>,
    pub revoked_at: Option<String>,
    pub state: TokenState,
}

/// A signed-in human's session, as listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: String,
    pub member_id: String,
    pub client: String,
    pub created_at: String,
    pub expires_at: String,
}

/// A page of a list.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<String>,
}
