//! The permission vocabulary and the built-in roles: the one place that says who may
//! do what.
//!
//! A permission is a `resource:verb` string. Roles are sets of permissions; agent
//! tokens carry scopes, which are permissions too. Every route names the permission it
//! needs (see `server::auth`), and this module is the only place that knows which role
//! holds which.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

macro_rules! permissions {
    ($( $variant:ident => $text:literal, $what:literal; )*) => {
        /// One thing a caller may be allowed to do.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Permission { $( $variant, )* }

        impl Permission {
            /// Every permission, in a stable order.
            pub const ALL: &'static [Permission] = &[ $( Permission::$variant, )* ];

            /// The `resource:verb` string.
            pub const fn as_str(self) -> &'static str {
                match self { $( Permission::$variant => $text, )* }
            }

            /// What the permission allows, in a few words, for help screens and errors.
            pub const fn describe(self) -> &'static str {
                match self { $( Permission::$variant => $what, )* }
            }
        }

        impl FromStr for Permission {
            type Err = UnknownPermission;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $( $text => Ok(Permission::$variant), )* _ => Err(UnknownPermission(s.to_string())) }
            }
        }
    };
}

permissions! {
    ActionsSubmit => "actions:submit", "submit actions for the gate to decide";
    ActionsRead => "actions:read", "read every action in the workspace (without it, only your own)";
    ActionsSimulate => "actions:simulate", "dry-run actions and run what-if simulations";
    ApprovalsRead => "approvals:read", "see the approval queue and approvals";
    ApprovalsDecide => "approvals:decide", "approve or deny pending approvals (humans only)";
    AuditRead => "audit:read", "read, stream and verify the audit log";
    AuditExport => "audit:export", "export the audit log and workspace data";
    KillswitchRead => "killswitch:read", "see kill switches";
    KillswitchEngage => "killswitch:engage", "engage a kill switch";
    KillswitchLift => "killswitch:lift", "lift an engaged kill switch";
    ToolsRead => "tools:read", "see tools and their policies";
    ToolsManage => "tools:manage", "create and change tools, policies and connectors";
    ConstitutionRead => "constitution:read", "read the constitution and its versions";
    ConstitutionPublish => "constitution:publish", "publish a new constitution version";
    MembersRead => "members:read", "see members and roles";
    MembersManage => "members:manage", "add members, change roles, deactivate members";
    RolesManage => "roles:manage", "create, change and delete custom roles";
    TokensCreate => "tokens:create", "create, rotate and revoke your own agent tokens";
    TokensManage => "tokens:manage", "see and revoke every agent token (only its owner rotates one)";
    SettingsRead => "settings:read", "see workspace settings";
    SettingsManage => "settings:manage", "change workspace settings, including agent writes";
    WebhooksManage => "webhooks:manage", "create and change webhook subscriptions";
    OwnershipTransfer => "ownership:transfer", "transfer ownership of the workspace (owner only)";
}

/// A string that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a permission; permissions look like `actions:submit` (see GET /v1/roles for the list)")]
pub struct UnknownPermission(pub String);

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Permission {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Permission {
    /// Whether an agent token may ever carry this permission.
    ///
    /// Agents act; humans govern. Deciding approvals is the brief's hard line. Managing
    /// identity (members, roles, tokens), lifting a kill switch and transferring
    /// ownership are held back for the same reason: an agent that could do them could
    /// undo the controls that constrain it. So are changing settings (the agent-write
    /// control is a setting), tools (their policies) and the constitution (its rules):
    /// with any of them an agent could switch off the gate that stands in its way. And
    /// managing webhooks: a subscription sends the whole audit log to any URL.
    pub const fn grantable_to_agents(self) -> bool {
        !matches!(
            self,
            Permission::ApprovalsDecide
                | Permission::MembersManage
                | Permission::RolesManage
                | Permission::TokensCreate
                | Permission::TokensManage
                | Permission::KillswitchLift
                | Permission::OwnershipTransfer
                | Permission::SettingsManage
                | Permission::ToolsManage
                | Permission::ConstitutionPublish
                | Permission::WebhooksManage
        )
    }

    /// Whether an agent token's tool patterns bound what this permission reaches (the
    /// routes behind it check `Caller::covers_tool`): held by a token with no pattern at
    /// all, it reaches nothing.
    pub const fn limited_by_tools(self) -> bool {
        matches!(
            self,
            Permission::ActionsSubmit
                | Permission::ActionsRead
                | Permission::ActionsSimulate
                | Permission::ApprovalsRead
                | Permission::ToolsRead
        )
    }

    /// Whether a custom role may include this permission. Ownership is the Owner's alone.
    pub const fn grantable_to_custom_roles(self) -> bool {
        !matches!(self, Permission::OwnershipTransfer)
    }
}

/// A set of permissions.
pub type PermissionSet = BTreeSet<Permission>;

/// The four roles every workspace has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuiltinRole {
    Owner,
    Admin,
    Member,
    Viewer,
}

impl BuiltinRole {
    pub const ALL: [BuiltinRole; 4] = [BuiltinRole::Owner, BuiltinRole::Admin, BuiltinRole::Member, BuiltinRole::Viewer];

    pub const fn name(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "owner",
            BuiltinRole::Admin => "admin",
            BuiltinRole::Member => "member",
            BuiltinRole::Viewer => "viewer",
        }
    }

    pub const fn describe(self) -> &'static str {
        match self {
            BuiltinRole::Owner => "every power; one per workspace; transfers ownership",
            BuiltinRole::Admin => {
                "tools, policies, constitution, members, tokens, webhooks, audit, settings; lifts kill switches; decides approvals"
            }
            BuiltinRole::Member => "submits actions through its own agent tokens, requests approvals, reads its own runs",
            BuiltinRole::Viewer => "read-only: runs, approvals, audit",
        }
    }

    pub fn from_name(name: &str) -> Option<BuiltinRole> {
        BuiltinRole::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The permissions this role holds.
    pub fn permissions(self) -> PermissionSet {
        use Permission::*;
        match self {
            BuiltinRole::Owner => Permission::ALL.iter().copied().collect(),
            BuiltinRole::Admin => Permission::ALL.iter().copied().filter(|p| *p != OwnershipTransfer).collect(),
            BuiltinRole::Member => [
                ActionsSubmit,
                ActionsSimulate,
                ApprovalsRead,
                KillswitchRead,
                ToolsRead,
                ConstitutionRead,
                MembersRead,
                TokensCreate,
                SettingsRead,
            ]
            .into_iter()
            .collect(),
            BuiltinRole::Viewer => {
                [ActionsRead, ApprovalsRead, AuditRead, KillswitchRead, ToolsRead, ConstitutionRead, MembersRead, SettingsRead]
                    .into_iter()
                    .collect()
            }
        }
    }
}

/// Parses a list of permission strings, naming the first unknown one.
pub fn parse_set<S: AsRef<str>>(items: &[S]) -> Result<PermissionSet, UnknownPermission> {
    items.iter().map(|s| s.as_ref().parse()).collect()
}

/// Whether a tool name matches a token's tool pattern: `*` matches every tool,
/// `email.*` matches `email.send` and `email.draft.create`, anything else must be exact.
pub fn tool_matches(pattern: &str, tool: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => tool.len() > prefix.len() + 1 && tool.starts_with(prefix) && tool.as_bytes()[prefix.len()] == b'.',
        None => pattern == tool,
    }
}

/// Whether `pattern` is a well-formed tool pattern (see [`tool_matches`]).
pub fn valid_tool_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let name = pattern.strip_suffix(".*").unwrap_or(pattern);
    crate::names::valid_tool_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_round_trips_through_its_string() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), *p);
            let (resource, verb) = p.as_str().split_once(':').unwrap();
            assert!(!resource.is_empty() && !verb.is_empty());
        }
        assert!("actions:fly".parse::<Permission>().is_err());
    }

    #[test]
    fn roles_nest_owner_over_admin_over_viewer() {
        let owner = BuiltinRole::Owner.permissions();
        let admin = BuiltinRole::Admin.permissions();
        assert!(admin.is_subset(&owner));
        assert!(!admin.contains(&Permission::OwnershipTransfer));
        assert!(BuiltinRole::Viewer.permissions().is_subset(&admin));
        assert!(BuiltinRole::Member.permissions().is_subset(&admin));
        assert!(!BuiltinRole::Viewer.permissions().contains(&Permission::ActionsSubmit));
        assert!(!BuiltinRole::Member.permissions().contains(&Permission::ApprovalsDecide));
    }

    #[test]
    fn agents_can_never_decide() {
        assert!(!Permission::ApprovalsDecide.grantable_to_agents());
        // Nor change the controls they work under.
        assert!(!Permission::SettingsManage.grantable_to_agents());
        assert!(!Permission::ToolsManage.grantable_to_agents());
        assert!(!Permission::ConstitutionPublish.grantable_to_agents());
        assert!(Permission::ActionsSubmit.grantable_to_agents());
    }

    #[test]
    fn tool_patterns() {
        assert!(tool_matches("*", "email.send"));
        assert!(tool_matches("email.*", "email.send"));
        assert!(tool_matches("email.*", "email.draft.create"));
        assert!(!tool_matches("email.*", "email"));
        assert!(!tool_matches("email.*", "emailx.send"));
        assert!(tool_matches("crm.read", "crm.read"));
        assert!(!tool_matches("crm.read", "crm.readall"));
        assert!(valid_tool_pattern("email.*"));
        assert!(!valid_tool_pattern("email*"));
        assert!(!valid_tool_pattern(""));
    }
}
