//! Access: members, roles and agent tokens. The screen offers only what the signed-in
//! role allows, and says why the rest is not available.

use std::collections::BTreeSet;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Wrap};

use crate::client::ClientError;
use crate::console::action::Effect;
use crate::console::app::App;
use crate::console::dialogs::{AccessOp, Confirm, Dialog, Field, Form, PendingOp, Purpose, Secret, Typed};
use crate::console::keys::Command;
use crate::console::widgets::{ago, clip};
use crate::model::{Member, MemberStatus, Role, Token, TokenState};
use crate::server::routes::roles::PermissionInfo;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tab {
    #[default]
    Members,
    Roles,
    Tokens,
}

impl Tab {
    const ALL: [Tab; 3] = [Tab::Members, Tab::Roles, Tab::Tokens];
    fn title(self) -> &'static str {
        match self {
            Tab::Members => "Members",
            Tab::Roles => "Roles",
            Tab::Tokens => "Tokens",
        }
    }
}

#[derive(Default)]
pub struct Access {
    pub tab: Tab,
    pub members: Vec<Member>,
    pub roles: Vec<Role>,
    pub catalog: Vec<PermissionInfo>,
    pub tokens: Vec<Token>,
    pub cursor: [usize; 3],
    pub loaded: bool,
}

impl Access {
    fn len(&self) -> usize {
        match self.tab {
            Tab::Members => self.members.len(),
            Tab::Roles => self.roles.len(),
            Tab::Tokens => self.tokens.len(),
        }
    }
    fn cursor(&self) -> usize {
        self.cursor[self.tab as usize]
    }
    fn set_cursor(&mut self, c: usize) {
        let n = self.len();
        self.cursor[self.tab as usize] = c.min(n.saturating_sub(1));
    }
}

/// What the server sent about access.
#[derive(Debug, Default)]
pub struct AccessData {
    pub members: Option<Vec<Member>>,
    pub roles: Option<(Vec<Role>, Vec<PermissionInfo>)>,
    pub tokens: Option<Vec<Token>>,
}

pub fn on_data(app: &mut App, d: AccessData) {
    let a = &mut app.access;
    if let Some(m) = d.members {
        a.members = m;
    }
    if let Some((r, c)) = d.roles {
        a.roles = r;
        a.catalog = c;
    }
    if let Some(t) = d.tokens {
        a.tokens = t;
    }
    a.loaded = true;
    // Keep each list's cursor on the list after it shrank.
    let current = a.tab;
    for tab in Tab::ALL {
        a.tab = tab;
        let c = a.cursor();
        a.set_cursor(c);
    }
    a.tab = current;
}

/// The result of a change: a message, and a secret to show once.
pub fn on_done(app: &mut App, result: Result<(String, Option<(String, String)>), ClientError>) {
    match result {
        Ok((message, secret)) => {
            app.say(message);
            if let Some((name, token)) = secret {
                app.dialog = Some(Dialog::Secret(Secret {
                    title: "New agent token — shown once".into(),
                    name,
                    secret: token,
                    copied: false,
                    leaving: false,
                }));
            }
        }
        Err(e) if e.needs_sign_in() => app.ask_sign_in(e.to_string()),
        Err(e) => app.warn(format!("Not changed: {e}")),
    }
    app.effect(Effect::FetchAccess);
}

fn role_names(app: &App, include_owner: bool) -> Vec<String> {
    app.access.roles.iter().map(|r| r.name.clone()).filter(|n| include_owner || n != "owner").collect()
}

fn scope_options(app: &App) -> Vec<(String, String)> {
    // Offer only what agents may hold and this person holds: anything else is refused.
    app.access
        .catalog
        .iter()
        .filter(|p| p.grantable_to_agents && app.can(&p.name))
        .map(|p| (p.name.clone(), p.description.clone()))
        .collect()
}

/// `:members`, `:roles`, `:tokens`: that tab of Access.
pub fn show_tab(app: &mut App, name: &str) {
    if let Some(tab) = Tab::ALL.into_iter().find(|t| t.title().eq_ignore_ascii_case(name)) {
        app.access.tab = tab;
    }
}

pub fn on_command(app: &mut App, cmd: Command) {
    let page = app.size.1.saturating_sub(8).max(1) as usize;
    match cmd {
        Command::TabLeft => app.access.tab = Tab::ALL[(app.access.tab as usize + 2) % 3],
        Command::TabRight => app.access.tab = Tab::ALL[(app.access.tab as usize + 1) % 3],
        Command::Up => {
            let c = app.access.cursor().saturating_sub(1);
            app.access.set_cursor(c);
        }
        Command::Down => {
            let c = app.access.cursor() + 1;
            app.access.set_cursor(c);
        }
        Command::PageDown => {
            let c = app.access.cursor() + page;
            app.access.set_cursor(c);
        }
        Command::PageUp => {
            let c = app.access.cursor().saturating_sub(page);
            app.access.set_cursor(c);
        }
        Command::Top => app.access.set_cursor(0),
        Command::Bottom => app.access.set_cursor(usize::MAX),
        Command::New => new(app),
        Command::Edit => edit(app),
        Command::Remove => remove(app),
        Command::Rotate => rotate(app),
        Command::Transfer => transfer(app),
        _ => {}
    }
}

fn new(app: &mut App) {
    let form = match app.access.tab {
        Tab::Members => {
            if let Some(why) = app.missing("members:manage", "add members") {
                return app.warn(why);
            }
            let roles = role_names(app, false);
            Form {
                title: "Add a member".into(),
                purpose: Purpose::NewMember,
                fields: vec![
                    Field::Text { label: "E-mail".into(), value: String::new(), secret: false, hint: String::new() },
                    Field::Text { label: "Name".into(), value: String::new(), secret: false, hint: "(optional)".into() },
                    Field::Choice {
                        label: "Role".into(),
                        // The least power that is still useful, unless chosen otherwise.
                        selected: roles.iter().position(|r| r == "member").unwrap_or(0),
                        options: roles,
                    },
                    Field::Text {
                        label: "Password".into(),
                        value: String::new(),
                        secret: true,
                        hint: "first password, 12+ characters".into(),
                    },
                ],
                focus: 0,
                error: None,
            }
        }
        Tab::Roles => {
            if let Some(why) = app.missing("roles:manage", "create roles") {
                return app.warn(why);
            }
            let options = app
                .access
                .catalog
                .iter()
                .filter(|p| p.name != "ownership:transfer" && app.can(&p.name))
                .map(|p| (p.name.clone(), p.description.clone()))
                .collect();
            Form {
                title: "New custom role".into(),
                purpose: Purpose::NewRole,
                fields: vec![
                    Field::Text { label: "Name".into(), value: String::new(), secret: false, hint: "e.g. approver".into() },
                    Field::Text { label: "Description".into(), value: String::new(), secret: false, hint: "(optional)".into() },
                    Field::Checklist { label: "Permissions".into(), options, checked: BTreeSet::new(), cursor: 0 },
                ],
                focus: 0,
                error: None,
            }
        }
        Tab::Tokens => {
            if let Some(why) = app.missing("tokens:create", "create agent tokens") {
                return app.warn(why);
            }
            let options = scope_options(app);
            let submit = options.iter().position(|(n, _)| n == "actions:submit");
            Form {
                title: "New agent token".into(),
                purpose: Purpose::NewToken,
                fields: vec![
                    Field::Text {
                        label: "Name".into(),
                        value: String::new(),
                        secret: false,
                        hint: "what it is for, e.g. billing-agent".into(),
                    },
                    Field::Checklist { label: "Scopes".into(), options, checked: submit.into_iter().collect(), cursor: 0 },
                    Field::Text {
                        label: "Tools".into(),
                        value: "*".into(),
                        secret: false,
                        hint: "patterns, comma-separated: email.*, crm.read".into(),
                    },
                    Field::Choice {
                        label: "Expires".into(),
                        options: vec!["never".into(), "1 day".into(), "30 days".into(), "90 days".into(), "1 year".into()],
                        selected: 3,
                    },
                ],
                focus: 0,
                error: None,
            }
        }
    };
    app.dialog = Some(Dialog::Form(Box::new(form)));
}

fn edit(app: &mut App) {
    let c = app.access.cursor();
    match app.access.tab {
        Tab::Members => {
            if let Some(why) = app.missing("members:manage", "change roles") {
                return app.warn(why);
            }
            let Some(m) = app.access.members.get(c).cloned() else { return };
            if m.role == "owner" {
                return app.warn("The owner's role changes only by transferring ownership (O).");
            }
            let options = role_names(app, false);
            let selected = options.iter().position(|r| *r == m.role).unwrap_or(0);
            app.dialog = Some(Dialog::Form(Box::new(Form {
                title: format!("Change the role of {}", m.email),
                purpose: Purpose::ChangeRole { id: m.id.clone(), email: m.email.clone() },
                fields: vec![Field::Choice { label: "Role".into(), options, selected }],
                focus: 0,
                error: None,
            })));
        }
        Tab::Roles => {
            if let Some(why) = app.missing("roles:manage", "edit roles") {
                return app.warn(why);
            }
            let Some(r) = app.access.roles.get(c).cloned() else { return };
            let Some(id) = r.id.clone() else {
                return app.warn(format!("`{}` is a built-in role: make a custom role to change what it allows.", r.name));
            };
            let options: Vec<(String, String)> = app
                .access
                .catalog
                .iter()
                .filter(|p| p.name != "ownership:transfer")
                .map(|p| (p.name.clone(), p.description.clone()))
                .collect();
            let checked =
                options.iter().enumerate().filter(|(_, (n, _))| r.permissions.iter().any(|p| p.as_str() == n)).map(|(i, _)| i).collect();
            app.dialog = Some(Dialog::Form(Box::new(Form {
                title: format!("Permissions of `{}`", r.name),
                purpose: Purpose::EditRole { id, name: r.name.clone() },
                fields: vec![Field::Checklist { label: "Permissions".into(), options, checked, cursor: 0 }],
                focus: 0,
                error: None,
            })));
        }
        Tab::Tokens => {}
    }
}

fn remove(app: &mut App) {
    let c = app.access.cursor();
    match app.access.tab {
        Tab::Members => {
            if let Some(why) = app.missing("members:manage", "deactivate members") {
                return app.warn(why);
            }
            let Some(m) = app.access.members.get(c).cloned() else { return };
            if m.role == "owner" {
                return app.warn("Transfer ownership before deactivating the owner.");
            }
            let active = m.status == MemberStatus::Active;
            let tokens = app.access.tokens.iter().filter(|t| t.owner_id == m.id && t.state == TokenState::Active).count();
            let lines = if active {
                vec![
                    format!("Deactivate {} ({})?", m.email, m.role),
                    "This ends their sessions now and revokes their agent tokens".into(),
                    format!(
                        "({tokens} active {} that you can see). Reactivating later does not bring {} back.",
                        if tokens == 1 { "token" } else { "tokens" },
                        if tokens == 1 { "it" } else { "them" }
                    ),
                ]
            } else {
                vec![format!("Reactivate {}? They can sign in again; their old tokens stay revoked.", m.email)]
            };
            app.dialog = Some(Dialog::Confirm(Confirm {
                title: if active { "Deactivate member?".into() } else { "Reactivate member?".into() },
                lines,
                danger: active,
                op: PendingOp::Access(AccessOp::SetMemberActive { id: m.id, active: !active }),
            }));
        }
        Tab::Roles => {
            if let Some(why) = app.missing("roles:manage", "delete roles") {
                return app.warn(why);
            }
            let Some(r) = app.access.roles.get(c).cloned() else { return };
            let Some(id) = r.id else { return app.warn("Built-in roles cannot be deleted.") };
            if r.members > 0 {
                return app.warn(format!("{} member(s) hold `{}`: give them another role first.", r.members, r.name));
            }
            app.dialog = Some(Dialog::Confirm(Confirm {
                title: "Delete role?".into(),
                lines: vec![format!("Delete the custom role `{}`? Nobody holds it.", r.name)],
                danger: true,
                op: PendingOp::Access(AccessOp::DeleteRole { id }),
            }));
        }
        Tab::Tokens => {
            let Some(t) = app.access.tokens.get(c).cloned() else { return };
            if !manages(app, &t) {
                return app.warn("Revoking other members' tokens needs `tokens:manage`.");
            }
            if t.state == TokenState::Revoked {
                return app.warn("That token is already revoked.");
            }
            app.dialog = Some(Dialog::Confirm(Confirm {
                title: "Revoke token?".into(),
                lines: vec![
                    format!("Revoke `{}` ({})?", t.name, t.hint),
                    "It stops working on its next request. What it did stays in the audit log.".into(),
                ],
                danger: true,
                op: PendingOp::Access(AccessOp::RevokeToken { id: t.id }),
            }));
        }
    }
}

fn manages(app: &App, t: &Token) -> bool {
    app.can("tokens:manage") || (app.can("tokens:create") && t.owner_id == app.session.member_id)
}

fn rotate(app: &mut App) {
    if app.access.tab != Tab::Tokens {
        return;
    }
    let Some(t) = app.access.tokens.get(app.access.cursor()).cloned() else { return };
    if t.owner_id != app.session.member_id {
        // The server refuses it too (not_token_owner): a new secret would act as its owner.
        return app.warn("Only a token's owner can rotate it: its new secret acts as them. x revokes it instead.");
    }
    if !manages(app, &t) {
        return app.warn("Rotating your tokens needs `tokens:create`.");
    }
    if t.state != TokenState::Active {
        return app.warn("Only an active token can be rotated.");
    }
    app.dialog = Some(Dialog::Confirm(Confirm {
        title: "Rotate token?".into(),
        lines: vec![format!("Give `{}` a new secret?", t.name), "The old secret stops working at once; the new one is shown once.".into()],
        danger: false,
        op: PendingOp::Access(AccessOp::RotateToken { id: t.id, name: t.name }),
    }));
}

fn transfer(app: &mut App) {
    if app.access.tab != Tab::Members {
        return;
    }
    if let Some(why) = app.missing("ownership:transfer", "transfer ownership") {
        return app.warn(why);
    }
    let Some(m) = app.access.members.get(app.access.cursor()).cloned() else { return };
    if m.role == "owner" || m.status != MemberStatus::Active {
        return app.warn("Choose an active member other than the owner.");
    }
    app.dialog = Some(Dialog::Typed(Box::new(Typed {
        title: "Transfer ownership".into(),
        lines: vec![
            format!("Make {} the owner of this workspace.", m.email),
            "You become an admin. Only the new owner can give it back.".into(),
        ],
        expect: m.email.clone(),
        typed: String::new(),
        op: PendingOp::Access(AccessOp::TransferOwnership { id: m.id }),
    })));
}

/// Turns a submitted form into an operation, or says what is missing.
pub fn op_from_form(f: &Form) -> Result<PendingOp, String> {
    let op = match &f.purpose {
        Purpose::NewMember => {
            let email = f.text(0);
            if email.is_empty() {
                return Err("An e-mail address is needed.".into());
            }
            if !crate::names::valid_email(&email) {
                return Err(format!("`{}` is not an e-mail address (like ada@example.com).", clip(&email, 40)));
            }
            let password = match f.fields.get(3) {
                Some(Field::Text { value, .. }) => value.clone(),
                _ => String::new(),
            };
            if password.chars().count() < crate::secrets::MIN_PASSWORD_CHARS {
                return Err(format!("The password needs at least {} characters.", crate::secrets::MIN_PASSWORD_CHARS));
            }
            AccessOp::CreateMember { email, name: f.text(1), role: f.choice(2), password }
        }
        Purpose::ChangeRole { id, .. } => AccessOp::ChangeRole { id: id.clone(), role: f.choice(0) },
        Purpose::NewRole => {
            let name = f.text(0);
            if !crate::names::valid_role_name(&name) {
                return Err("Role names are 2–40 characters of a-z, 0-9, - and _, starting with a letter.".into());
            }
            AccessOp::CreateRole { name, description: f.text(1), permissions: f.checked(2) }
        }
        Purpose::EditRole { id, .. } => AccessOp::UpdateRole { id: id.clone(), permissions: f.checked(0) },
        Purpose::ExportAudit { .. } => return Err("this form is not a change to members, roles or tokens".into()),
        Purpose::NewToken => {
            let name = f.text(0);
            if name.is_empty() {
                return Err("Give the token a name that says what it is for.".into());
            }
            let scopes = f.checked(1);
            if scopes.is_empty() {
                return Err("Choose at least one scope.".into());
            }
            let tools: Vec<String> = f.text(2).split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
            if tools.is_empty()
                && let Some(p) =
                    scopes.iter().filter_map(|s| s.parse::<crate::permissions::Permission>().ok()).find(|p| p.limited_by_tools())
            {
                return Err(format!("Give at least one tool pattern (`*` for every tool): `{p}` reaches only the tools a token covers."));
            }
            let expires_in_seconds = match f.choice(3).as_str() {
                "1 day" => Some(86_400),
                "30 days" => Some(30 * 86_400),
                "90 days" => Some(90 * 86_400),
                "1 year" => Some(365 * 86_400),
                _ => None,
            };
            AccessOp::CreateToken { name, scopes, tools, expires_in_seconds }
        }
    };
    Ok(PendingOp::Access(op))
}

// ---------------------------------------------------------------------------------------

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let a = &app.access;
    let [tabs, body, hint] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1), Constraint::Length(1)]).areas(area);
    let mut spans = vec![Span::styled(" ", t.base)];
    for tab in Tab::ALL {
        let n = match tab {
            Tab::Members => a.members.len(),
            Tab::Roles => a.roles.len(),
            Tab::Tokens => a.tokens.len(),
        };
        spans.push(Span::styled(format!(" {} ({n}) ", tab.title()), if tab == a.tab { t.selection } else { t.muted }));
        spans.push(Span::raw(" "));
    }
    spans.push(Span::styled("  ←/→ switch", t.muted));
    f.render_widget(Paragraph::new(Line::from(spans)), tabs);
    let block = Block::default().borders(Borders::TOP).border_style(t.border);
    let inner = block.inner(body);
    f.render_widget(block, body);
    if !a.loaded {
        f.render_widget(Paragraph::new(Line::styled("Loading…", t.muted)), inner);
        return;
    }
    let height = inner.height.saturating_sub(1) as usize;
    let cursor = a.cursor();
    let start = super::window_start(cursor, a.len(), height);
    let wide = inner.width >= 110;
    let (header, rows, widths): (Vec<&str>, Vec<Row>, Vec<Constraint>) = match a.tab {
        Tab::Members => (
            vec!["E-MAIL", "NAME", "ROLE", "STATUS", "SINCE"],
            a.members
                .iter()
                .skip(start)
                .take(height)
                .map(|m| {
                    let status =
                        if m.status == MemberStatus::Active { Span::styled("active", t.ok) } else { Span::styled("deactivated", t.warn) };
                    Row::new(vec![
                        Cell::from(clip(&m.email, 30)),
                        Cell::from(clip(&m.name, 16)),
                        Cell::from(m.role.clone()),
                        Cell::from(status),
                        Cell::from(ago(app.now, &m.created_at)),
                    ])
                    .style(t.base)
                })
                .collect(),
            vec![Constraint::Fill(3), Constraint::Fill(2), Constraint::Length(10), Constraint::Length(11), Constraint::Length(8)],
        ),
        Tab::Roles => (
            vec!["ROLE", "KIND", "MEMBERS", "PERMISSIONS"],
            a.roles
                .iter()
                .skip(start)
                .take(height)
                .map(|r| {
                    let perms = r.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(" ");
                    let kind = if r.builtin { "built-in" } else { "custom" };
                    Row::new(vec![
                        Cell::from(r.name.clone()),
                        Cell::from(kind),
                        Cell::from(r.members.to_string()),
                        Cell::from(clip(&perms, if wide { 80 } else { 44 })),
                    ])
                    .style(t.base)
                })
                .collect(),
            vec![Constraint::Length(12), Constraint::Length(8), Constraint::Length(7), Constraint::Fill(1)],
        ),
        Tab::Tokens => (
            if wide {
                vec!["NAME", "OWNER", "SCOPES", "TOOLS", "EXPIRES", "LAST USED", "STATE"]
            } else {
                vec!["NAME", "OWNER", "SCOPES", "LAST USED", "STATE"]
            },
            a.tokens
                .iter()
                .skip(start)
                .take(height)
                .map(|tok| {
                    let owner = app.names.get(&tok.owner_id).cloned().unwrap_or_else(|| tok.owner_id.clone());
                    let state = match tok.state {
                        TokenState::Active => Span::styled("active", t.ok),
                        TokenState::Expired => Span::styled("expired", t.warn),
                        TokenState::Revoked => Span::styled("revoked", t.danger),
                    };
                    let used = tok.last_used_at.as_deref().map(|u| ago(app.now, u)).unwrap_or_else(|| "never".into());
                    let mut cells = vec![
                        Cell::from(clip(&tok.name, 18)),
                        Cell::from(clip(&owner, 18)),
                        Cell::from(clip(&tok.scopes.join(" "), if wide { 30 } else { 16 })),
                    ];
                    if wide {
                        cells.push(Cell::from(clip(&tok.tools.join(" "), 16)));
                        cells.push(Cell::from(
                            tok.expires_at.as_deref().map(|e| e.get(..10).unwrap_or(e).to_string()).unwrap_or_else(|| "never".into()),
                        ));
                    }
                    cells.push(Cell::from(used));
                    cells.push(Cell::from(state));
                    Row::new(cells).style(t.base)
                })
                .collect(),
            if wide {
                vec![
                    Constraint::Fill(2),
                    Constraint::Fill(2),
                    Constraint::Fill(3),
                    Constraint::Fill(2),
                    Constraint::Length(10),
                    Constraint::Length(9),
                    Constraint::Length(7),
                ]
            } else {
                vec![Constraint::Fill(2), Constraint::Fill(2), Constraint::Fill(2), Constraint::Length(9), Constraint::Length(7)]
            },
        ),
    };
    let table = Table::new(rows, widths).header(Row::new(header).style(t.muted)).column_spacing(1);
    crate::console::widgets::selectable_table(f, table, inner, cursor.checked_sub(start), t.selection);
    let offers: Vec<(&str, &str, Option<&str>)> = match a.tab {
        Tab::Members => vec![
            ("n", "add", Some("members:manage")),
            ("e", "role", Some("members:manage")),
            ("x", "(de)activate", Some("members:manage")),
            ("O", "transfer ownership", Some("ownership:transfer")),
        ],
        Tab::Roles => {
            vec![("n", "new role", Some("roles:manage")), ("e", "permissions", Some("roles:manage")), ("x", "delete", Some("roles:manage"))]
        }
        Tab::Tokens => vec![("n", "new token", Some("tokens:create")), ("r", "rotate", None), ("x", "revoke", None)],
    };
    let mut spans = Vec::new();
    for (k, label, needs) in offers {
        let ok = needs.is_none_or(|p| !app.session.known || app.can(p));
        spans.push(Span::styled(format!(" {k}"), if ok { t.key } else { t.disabled }));
        let text = if ok { format!(" {label} ") } else { format!(" {label} (needs {}) ", needs.unwrap_or_default()) };
        spans.push(Span::styled(text, if ok { t.muted } else { t.disabled }));
    }
    f.render_widget(Paragraph::new(Line::from(spans)).wrap(Wrap { trim: true }), hint);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_form(scopes: &[&str], tools: &str) -> Form {
        let options: Vec<(String, String)> = ["actions:submit", "audit:read"].iter().map(|s| (s.to_string(), String::new())).collect();
        let checked = options.iter().enumerate().filter(|(_, o)| scopes.contains(&o.0.as_str())).map(|(i, _)| i).collect();
        Form {
            title: "New agent token".into(),
            purpose: Purpose::NewToken,
            fields: vec![
                Field::Text { label: "Name".into(), value: "shipper".into(), secret: false, hint: String::new() },
                Field::Checklist { label: "Scopes".into(), options, checked, cursor: 0 },
                Field::Text { label: "Tools".into(), value: tools.into(), secret: false, hint: String::new() },
                Field::Choice { label: "Expires".into(), options: vec!["never".into()], selected: 0 },
            ],
            focus: 0,
            error: None,
        }
    }

    #[test]
    fn a_token_that_reaches_tools_needs_a_tool_pattern_and_a_log_shippers_does_not() {
        let Err(err) = op_from_form(&token_form(&["actions:submit"], " , ")) else { panic!("a token that reaches no tool was accepted") };
        assert!(err.contains("`actions:submit`") && err.contains("tool pattern"), "{err}");
        match op_from_form(&token_form(&["audit:read"], "")) {
            Ok(PendingOp::Access(AccessOp::CreateToken { tools, scopes, .. })) => {
                assert!(tools.is_empty());
                assert_eq!(scopes, ["audit:read"]);
            }
            other => panic!("a log shipper's token was not created: {:?}", other.err()),
        }
    }
}
