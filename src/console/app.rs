//! The console's state and its one update function.
//!
//! `App::update` is the only place state changes: it takes an [`Action`], changes the
//! state, and queues [`Effect`]s for the runtime. It never waits on anything. Drawing
//! (`super::ui::draw`) is a pure function of the state.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::action::{Action, Effect, NetMsg, StreamMsg};
use super::dialogs::{Dialog, Outcome, PendingOp};
use super::keys::{self, Command};
use super::screens::{access::Access, approvals::Approvals, audit::Audit, simulate::Simulate, switches::Switches};
use super::theme::Theme;
use crate::approval::Verdict;
use crate::client::ClientError;
use crate::model::Tool;

/// The screens, in the order the number keys reach them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Approvals,
    Audit,
    Access,
    Simulate,
    Switches,
}

impl Screen {
    pub const ALL: [Screen; 5] = [Screen::Approvals, Screen::Audit, Screen::Access, Screen::Simulate, Screen::Switches];

    pub fn title(self) -> &'static str {
        match self {
            Screen::Approvals => "Approvals",
            Screen::Audit => "Audit",
            Screen::Access => "Access",
            Screen::Simulate => "Simulate",
            Screen::Switches => "Switches",
        }
    }

    pub fn index(self) -> usize {
        Screen::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    fn by_name(name: &str) -> Option<Screen> {
        Screen::ALL.into_iter().find(|s| s.title().eq_ignore_ascii_case(name))
    }
}

/// Who is signed in, where.
#[derive(Clone, Debug, Default)]
pub struct Session {
    pub server: String,
    pub workspace: String,
    pub email: String,
    pub member_id: String,
    pub role: String,
    pub permissions: BTreeSet<String>,
    /// Whether `Me` has answered yet.
    pub known: bool,
}

/// The live stream's connection.
#[derive(Clone, Debug, PartialEq)]
pub enum Conn {
    Connecting { attempt: u32 },
    Connected,
    Down { error: String, attempt: u32, retry_at: DateTime<Utc> },
}

/// A short message at the bottom of the screen.
#[derive(Clone, Debug, PartialEq)]
pub struct Toast {
    pub text: String,
    pub error: bool,
    pub until: DateTime<Utc>,
}

/// A line being typed at the bottom: a filter or a command.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Filter(String),
    Palette { text: String, error: Option<String> },
}

/// The palette's commands, for completion.
pub const PALETTE: &[&str] = &[
    "approvals",
    "audit",
    "access",
    "members",
    "roles",
    "tokens",
    "simulate",
    "switches",
    "kill ",
    "lift ",
    "theme ",
    "verify",
    "export",
    "help",
    "q",
];

pub struct App {
    pub theme: Theme,
    pub themes: Vec<String>,
    pub session: Session,
    pub conn: Conn,
    pub screen: Screen,
    pub now: DateTime<Utc>,
    pub size: (u16, u16),
    pub approvals: Approvals,
    pub audit: Audit,
    pub switches: Switches,
    pub access: Access,
    pub simulate: Simulate,
    pub tools: Vec<Tool>,
    /// Display names for ids: members' e-mails, agent tokens' names.
    pub names: std::collections::HashMap<String, String>,
    pub dialog: Option<Dialog>,
    pub input: Option<Input>,
    pub toast: Option<Toast>,
    /// Ring the bell when an approval is requested.
    pub bell: bool,
    /// The directory the console was started in: where an export goes unless told
    /// otherwise.
    pub cwd: std::path::PathBuf,
    pub quit: bool,
    effects: Vec<Effect>,
}

/// How the console starts.
pub struct Init {
    pub server: String,
    pub email: String,
    pub theme: Theme,
    pub themes: Vec<String>,
    pub now: DateTime<Utc>,
    pub size: (u16, u16),
    pub bell: bool,
    pub cwd: std::path::PathBuf,
}

impl App {
    pub fn new(init: Init) -> App {
        let mut app = App {
            theme: init.theme,
            themes: init.themes,
            session: Session { server: init.server, email: init.email, ..Session::default() },
            conn: Conn::Connecting { attempt: 1 },
            screen: Screen::Approvals,
            now: init.now,
            size: init.size,
            approvals: Approvals::default(),
            audit: Audit::default(),
            switches: Switches::default(),
            access: Access::default(),
            simulate: Simulate::default(),
            tools: Vec::new(),
            names: Default::default(),
            dialog: None,
            input: None,
            toast: None,
            bell: init.bell,
            cwd: init.cwd,
            quit: false,
            effects: Vec::new(),
        };
        app.effects.extend([Effect::FetchMe, Effect::FetchApprovals, Effect::FetchSwitches, Effect::FetchTools, Effect::FetchNames]);
        app
    }

    /// The effects queued since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn effect(&mut self, e: Effect) {
        self.effects.push(e);
    }

    /// Whether the signed-in person holds a permission.
    pub fn can(&self, permission: &str) -> bool {
        self.session.permissions.contains(permission)
    }

    /// Why an action is not available, or None when it is.
    pub fn missing(&self, permission: &str, what: &str) -> Option<String> {
        if !self.session.known || self.can(permission) {
            return None;
        }
        Some(format!("You cannot {what}: your role ({}) does not grant `{permission}`.", self.session.role))
    }

    /// As [`App::missing`], when any one of `permissions` will do.
    pub fn missing_any(&self, permissions: &[&str], what: &str) -> Option<String> {
        if !self.session.known || permissions.iter().any(|p| self.can(p)) {
            return None;
        }
        let named: Vec<String> = permissions.iter().map(|p| format!("`{p}`")).collect();
        Some(format!("You cannot {what}: your role ({}) grants none of {}.", self.session.role, named.join(", ")))
    }

    pub fn say(&mut self, text: impl Into<String>) {
        self.toast = Some(Toast { text: text.into(), error: false, until: self.now + chrono::Duration::seconds(4) });
    }

    pub fn warn(&mut self, text: impl Into<String>) {
        self.toast = Some(Toast { text: text.into(), error: true, until: self.now + chrono::Duration::seconds(6) });
    }

    /// The engaged kill switches: `None` is the workspace's.
    pub fn engaged(&self) -> Vec<(Option<String>, String)> {
        self.switches.engaged()
    }

    pub fn update(&mut self, action: Action) {
        match action {
            Action::Key(key) => self.on_key(key),
            Action::Paste(text) => {
                if let Some(d) = &mut self.dialog {
                    d.paste(&text);
                } else if self.screen == Screen::Simulate && self.simulate.editing && self.input.is_none() {
                    super::screens::simulate::paste(self, &text);
                } else if let Some(Input::Filter(f)) | Some(Input::Palette { text: f, .. }) = &mut self.input {
                    f.push_str(&text.replace(['\n', '\r'], " "));
                    self.apply_filter();
                }
            }
            Action::Resize(w, h) => self.size = (w, h),
            Action::Tick(now) => {
                self.now = now;
                if self.toast.as_ref().is_some_and(|t| t.until <= now) {
                    self.toast = None;
                }
            }
            Action::Net(msg) => self.on_net(msg),
        }
        self.simulate.style_editors(&self.theme);
    }

    /// Whether quitting now would lose something (a running export, an unpublished draft),
    /// so `q` asks first.
    pub fn quit_loses_work(&self) -> bool {
        self.audit.exporting.is_some() || self.simulate.dirty
    }

    /// Quits, unless that would lose an edited, unpublished draft: then asks first.
    fn ask_quit(&mut self) {
        if let Some((path, _)) = &self.audit.exporting {
            self.dialog = Some(Dialog::Confirm(super::dialogs::Confirm {
                title: "Quit and stop the export?".into(),
                lines: vec![
                    format!("The audit log is still being exported to {}.", path.display()),
                    "Quitting stops it; nothing is left behind but what was there before.".into(),
                    "Quit anyway?".into(),
                ],
                danger: true,
                op: PendingOp::Quit,
            }));
            return;
        }
        if self.simulate.dirty {
            self.dialog = Some(Dialog::Confirm(super::dialogs::Confirm {
                title: "Quit and lose your draft?".into(),
                lines: vec![
                    "Your edited draft rules (Simulate) are not published and are not saved anywhere.".into(),
                    "Quit anyway?".into(),
                ],
                danger: true,
                op: PendingOp::Quit,
            }));
            return;
        }
        self.quit = true;
        self.effect(Effect::Quit);
    }

    fn on_key(&mut self, key: KeyEvent) {
        if key.kind == crossterm::event::KeyEventKind::Release {
            return;
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            self.quit = true;
            self.effect(Effect::Quit);
            return;
        }
        if super::ui::too_small_for(self.size) {
            // Nothing on screen but "too small": a key that approved, denied or opened a
            // dialog would act on what nobody can see.
            // Its question could not be seen either: with work to lose, `q` waits for a
            // window it can ask in (the screen says so; ctrl-c still quits at once).
            if key.code == KeyCode::Char('q') && self.dialog.is_none() && self.input.is_none() && !self.quit_loses_work() {
                self.ask_quit();
            }
            return;
        }
        if let Some(mut dialog) = self.dialog.take() {
            match dialog.on_key(key) {
                Outcome::Stay => self.dialog = Some(dialog),
                Outcome::Close => {}
                Outcome::Next(next) => self.dialog = Some(*next),
                Outcome::Run(op) => self.run(op),
            }
            return;
        }
        if self.input.is_some() {
            self.on_input_key(key);
            return;
        }
        if self.screen == Screen::Simulate && self.simulate.editing {
            super::screens::simulate::on_edit_key(self, key);
            return;
        }
        let Some(cmd) = keys::command(self.screen, key) else { return };
        self.on_command(cmd);
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Quit => self.ask_quit(),
            Command::Help => self.dialog = Some(Dialog::help(self.screen)),
            Command::Palette => self.input = Some(Input::Palette { text: String::new(), error: None }),
            Command::Filter => {
                let current = match self.screen {
                    Screen::Approvals => self.approvals.filter.clone(),
                    Screen::Audit => self.audit.filter_text.clone(),
                    _ => String::new(),
                };
                if matches!(self.screen, Screen::Approvals | Screen::Audit) {
                    self.input = Some(Input::Filter(current));
                } else {
                    self.say("There is nothing to filter here: / filters the Approvals queue and the Audit tail.");
                }
            }
            Command::Screen(s) => self.show(s),
            Command::NextScreen => self.show(Screen::ALL[(self.screen.index() + 1) % Screen::ALL.len()]),
            Command::PrevScreen => self.show(Screen::ALL[(self.screen.index() + Screen::ALL.len() - 1) % Screen::ALL.len()]),
            Command::Kill => self.open_kill_dialog(None),
            Command::Refresh => {
                self.effects.extend([Effect::FetchApprovals, Effect::FetchSwitches, Effect::FetchTools, Effect::FetchMe]);
                if self.access.loaded || self.screen == Screen::Access {
                    self.effect(Effect::FetchAccess);
                }
                if self.simulate.loaded {
                    self.effect(Effect::FetchConstitution);
                }
            }
            Command::Approve | Command::Deny if self.screen != Screen::Approvals => self.decide_from_here(cmd),
            other => match self.screen {
                Screen::Approvals => super::screens::approvals::on_command(self, other),
                Screen::Audit => super::screens::audit::on_command(self, other),
                Screen::Switches => super::screens::switches::on_command(self, other),
                Screen::Access => super::screens::access::on_command(self, other),
                Screen::Simulate => super::screens::simulate::on_command(self, other),
            },
        }
    }

    /// `a` or `d` away from the queue: on an audit event about an approval still in the
    /// queue, opens that approval and asks, as on the Approvals screen; anywhere else,
    /// says where deciding happens.
    fn decide_from_here(&mut self, cmd: Command) {
        let about = match self.screen {
            Screen::Audit => self.audit.open.as_ref().or(self.audit.current()).and_then(super::screens::audit::approval_of),
            _ => None,
        };
        let Some(id) = about else {
            return self.say("a and d decide approvals: 1 opens the queue.");
        };
        if !self.approvals.reveal(&id) {
            return self.warn(format!("{id} is not waiting for a decision: it was decided, expired, used or withdrawn."));
        }
        self.show(Screen::Approvals);
        super::screens::approvals::on_command(self, Command::Open);
        super::screens::approvals::on_command(self, cmd);
    }

    fn on_input_key(&mut self, key: KeyEvent) {
        let Some(input) = self.input.take() else { return };
        match input {
            Input::Filter(mut text) => match key.code {
                KeyCode::Esc => {
                    text.clear();
                    self.set_filter(text);
                }
                KeyCode::Enter => self.set_filter(text),
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.set_filter(String::new());
                    self.input = Some(Input::Filter(String::new()));
                }
                KeyCode::Backspace => {
                    text.pop();
                    self.set_filter(text.clone());
                    self.input = Some(Input::Filter(text));
                }
                KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                    text.push(c);
                    self.set_filter(text.clone());
                    self.input = Some(Input::Filter(text));
                }
                _ => self.input = Some(Input::Filter(text)),
            },
            Input::Palette { mut text, .. } => match key.code {
                KeyCode::Esc => {}
                KeyCode::Enter => self.run_palette(text.trim()),
                KeyCode::Tab => {
                    let completed = complete(&text, &self.tools, &self.themes);
                    // Nothing more to add: say what could follow instead.
                    let error = (completed == text)
                        .then(|| candidates(&text, &self.tools, &self.themes).1)
                        .filter(|c| c.len() > 1)
                        .map(|c| format!("one of: {}", c.iter().map(|s| s.trim_end()).collect::<Vec<_>>().join(", ")));
                    self.input = Some(Input::Palette { text: completed, error });
                }
                KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.input = Some(Input::Palette { text: String::new(), error: None });
                }
                KeyCode::Backspace => {
                    text.pop();
                    self.input = Some(Input::Palette { text, error: None });
                }
                KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                    text.push(c);
                    self.input = Some(Input::Palette { text, error: None });
                }
                _ => self.input = Some(Input::Palette { text, error: None }),
            },
        }
    }

    fn set_filter(&mut self, text: String) {
        match self.screen {
            Screen::Approvals => self.approvals.set_filter(text),
            Screen::Audit => self.audit.set_filter(text),
            _ => {}
        }
    }

    fn apply_filter(&mut self) {
        if let Some(Input::Filter(f)) = &self.input {
            let f = f.clone();
            self.set_filter(f);
        }
    }

    fn run_palette(&mut self, text: &str) {
        let (cmd, arg) = match text.split_once(' ') {
            Some((c, a)) => (c, a.trim()),
            None => (text, ""),
        };
        match cmd {
            "" => {}
            "q" | "quit" => self.ask_quit(),
            "help" => self.dialog = Some(Dialog::help(self.screen)),
            "verify" => {
                self.screen = Screen::Audit;
                super::screens::audit::on_command(self, Command::Verify);
            }
            "export" => {
                self.screen = Screen::Audit;
                super::screens::audit::on_command(self, Command::Export);
            }
            "kill" => self.open_kill_dialog(Some(arg)),
            "lift" => {
                self.screen = Screen::Switches;
                super::screens::switches::lift_by_name(self, arg);
            }
            "theme" => match Theme::resolve(Some(arg), None)
                .or_else(|_| Theme::built_in(arg).ok_or_else(|| format!("there is no theme `{arg}`")))
            {
                Ok(t) if !arg.is_empty() => {
                    self.theme = t;
                    self.say(format!("Theme: {arg}"));
                }
                _ => {
                    self.input = Some(Input::Palette { text: text.to_string(), error: Some(format!("themes: {}", self.themes.join(", "))) })
                }
            },
            "members" | "roles" | "tokens" => {
                self.show(Screen::Access);
                super::screens::access::show_tab(self, cmd);
            }
            name => match Screen::by_name(name) {
                Some(s) => self.show(s),
                None => {
                    let error = format!("`{name}` is not a command: tab lists them all (tokens, kill TOOL, lift, theme NAME…)");
                    self.input = Some(Input::Palette { text: text.to_string(), error: Some(error) });
                }
            },
        }
    }

    /// Switches to a screen, loading what it shows the first time.
    pub fn show(&mut self, s: Screen) {
        if s != self.screen {
            // A message about the screen being left means nothing on the next one.
            self.toast = None;
        }
        self.screen = s;
        // Members, roles and tokens change without events for everything shown (a token's
        // last use): read them again each time the screen is opened.
        if s == Screen::Access {
            self.effect(Effect::FetchAccess);
        }
        if s == Screen::Simulate {
            super::screens::simulate::on_show(self);
        }
    }

    /// Opens the kill-switch dialog, from any screen. `target`: a tool name or
    /// `workspace` to preselect, from `:kill NAME`.
    pub fn open_kill_dialog(&mut self, target: Option<&str>) {
        if let Some(why) = self.missing("killswitch:engage", "engage a kill switch") {
            self.warn(why);
            return;
        }
        if self.tools.is_empty() {
            self.effect(Effect::FetchTools);
        }
        let mut options: Vec<Option<String>> = vec![None];
        options.extend(self.tools.iter().map(|t| Some(t.name.clone())));
        let engaged: Vec<Option<String>> = self.engaged().into_iter().map(|(t, _)| t).collect();
        match target.filter(|t| !t.is_empty()) {
            Some(name) if name.contains(char::is_whitespace) => {
                self.warn(":kill takes one name (a tool, or workspace); the reason is asked next.");
            }
            Some(name) => {
                let wanted = if name == "workspace" { None } else { Some(name.to_string()) };
                if wanted.is_some() && !options.contains(&wanted) {
                    self.warn(format!("There is no tool `{name}`."));
                    return;
                }
                if engaged.contains(&wanted) {
                    // Asking why would suggest it is not stopped yet.
                    let what = wanted.as_deref().map_or("The workspace".to_string(), |t| format!("`{t}`"));
                    self.say(format!("{what} is already stopped (5 Switches shows why)."));
                    return;
                }
                self.dialog = Some(Dialog::kill_reason(wanted));
            }
            None => self.dialog = Some(Dialog::kill_picker(options, engaged)),
        }
    }

    /// Carries out what a dialog confirmed.
    fn run(&mut self, op: PendingOp) {
        match op {
            PendingOp::Approve { id, payload_sha256, .. } => {
                self.effect(Effect::Decide { id, verdict: Verdict::Approve, payload_sha256, reason: None });
            }
            PendingOp::Deny { id, payload_sha256, reason, .. } => {
                self.effect(Effect::Decide { id, verdict: Verdict::Deny, payload_sha256, reason: Some(reason) });
            }
            PendingOp::Switch { tool, engaged, reason } => self.effect(Effect::SetSwitch { tool, engaged, reason }),
            PendingOp::SignIn { email, password } => self.effect(Effect::SignIn { email, password }),
            PendingOp::Access(op) => self.effect(Effect::Access(op)),
            PendingOp::Quit => {
                self.quit = true;
                self.effect(Effect::Quit);
            }
            PendingOp::SimulateTool(tool) => super::screens::simulate::picked(self, tool),
            PendingOp::Publish { rules, base_version } => self.effect(Effect::Publish { rules, base_version }),
            PendingOp::ExportAudit { path, format } => super::screens::audit::start_export(self, path, format),
        }
    }

    fn on_error(&mut self, what: &str, e: &ClientError) {
        if e.needs_sign_in() {
            self.ask_sign_in(e.to_string());
            return;
        }
        self.warn(format!("{what}: {e}"));
    }

    /// Opens the sign-in dialog (an expired or revoked session).
    pub fn ask_sign_in(&mut self, why: String) {
        if !matches!(self.dialog, Some(Dialog::SignIn(_))) {
            self.dialog = Some(Dialog::sign_in(&self.session.email, why));
        }
    }

    fn on_net(&mut self, msg: NetMsg) {
        match msg {
            NetMsg::Me(Ok(me)) => {
                self.session.workspace = me.workspace.name;
                self.session.email = me.member.email;
                self.session.member_id = me.member.id;
                self.session.role = me.member.role;
                self.session.permissions = me.permissions.into_iter().collect();
                self.session.known = true;
            }
            NetMsg::Me(Err(e)) => self.on_error("Could not load your account", &e),
            NetMsg::Approvals(r) => super::screens::approvals::on_list(self, r),
            NetMsg::Approval(Ok(a)) => self.approvals.put_detail(a),
            NetMsg::Approval(Err(e)) => self.on_error("Could not load the approval", &e),
            NetMsg::Decided { verdict, result } => super::screens::approvals::on_decided(self, verdict, result),
            NetMsg::Tools(Ok(t)) => self.tools = t,
            NetMsg::Tools(Err(e)) => self.on_error("Could not load tools", &e),
            NetMsg::Switches(Ok(s)) => self.switches.set(s),
            NetMsg::Switches(Err(e)) => self.on_error("Could not load kill switches", &e),
            NetMsg::SwitchSet { tool, engaged, result } => super::screens::switches::on_set(self, tool, engaged, result),
            NetMsg::Verified(r) => super::screens::audit::on_verified(self, r),
            NetMsg::Older(r) => super::screens::audit::on_older(self, r),
            NetMsg::Stream(m) => self.on_stream(m),
            NetMsg::SignedIn(Ok(s)) => {
                self.dialog = None;
                self.say(format!("Signed in as {}", s.member.email));
                self.effects.extend([
                    Effect::NewCredential(s.token),
                    Effect::FetchMe,
                    Effect::FetchApprovals,
                    Effect::FetchSwitches,
                    Effect::FetchTools,
                ]);
            }
            NetMsg::Names(names) => self.names.extend(names),
            NetMsg::Access(d) => super::screens::access::on_data(self, d),
            NetMsg::AccessDone(r) => super::screens::access::on_done(self, r),
            NetMsg::Constitution(r) => super::screens::simulate::on_constitution(self, r),
            NetMsg::DryRun { under_draft, sent, result } => super::screens::simulate::on_dry_run(self, under_draft, sent, result),
            NetMsg::WhatIf(r) => super::screens::simulate::on_whatif(self, r),
            NetMsg::Drafted(r) => super::screens::simulate::on_drafted(self, r),
            NetMsg::Published(r) => super::screens::simulate::on_published(self, r),
            NetMsg::Exported(r) => super::screens::audit::on_exported(self, r),
            NetMsg::SignedIn(Err(e)) => {
                let why = e.to_string();
                self.dialog = Some(Dialog::sign_in(&self.session.email, why));
            }
        }
    }

    fn on_stream(&mut self, m: StreamMsg) {
        match m {
            StreamMsg::Connecting { attempt } => {
                if !matches!(self.conn, Conn::Down { .. }) {
                    self.conn = Conn::Connecting { attempt };
                }
            }
            StreamMsg::Connected => {
                let was_down = !matches!(self.conn, Conn::Connected);
                self.conn = Conn::Connected;
                if was_down {
                    // Whatever changed while we were away: the queue and the switches.
                    self.effects.extend([Effect::FetchApprovals, Effect::FetchSwitches]);
                }
            }
            StreamMsg::Down { error, attempt, retry_in } => {
                let retry_at = self.now + chrono::Duration::from_std(retry_in).unwrap_or_default();
                self.conn = Conn::Down { error, attempt, retry_at };
            }
            StreamMsg::Unauthorized(why) => self.ask_sign_in(why),
            StreamMsg::Event(e) => {
                let kind = e.event_type.clone();
                if self.audit.push(*e) {
                    if kind.starts_with("approval.") {
                        super::screens::approvals::stale(self);
                        if kind == "approval.requested" && self.bell {
                            self.effect(Effect::Bell);
                        }
                    }
                    if kind.starts_with("killswitch.") {
                        self.effect(Effect::FetchSwitches);
                    }
                    if kind.starts_with("tool.") {
                        self.effect(Effect::FetchTools);
                    }
                    if kind == "constitution.published" && self.simulate.loaded {
                        self.effect(Effect::FetchConstitution);
                    }
                    if kind.starts_with("member.") || kind.starts_with("role.") || kind == "workspace.ownership_transferred" {
                        self.effect(Effect::FetchMe);
                    }
                    if kind == "member.created" || kind == "token.created" {
                        self.effect(Effect::FetchNames);
                    }
                    let access = ["member.", "role.", "token.", "workspace.ownership"];
                    if self.access.loaded && access.iter().any(|p| kind.starts_with(p)) {
                        self.effect(Effect::FetchAccess);
                    }
                }
            }
        }
    }
}

/// Completes a palette line: a command, then a tool or theme name.
pub fn complete(text: &str, tools: &[Tool], themes: &[String]) -> String {
    let (verb, found) = candidates(text, tools, themes);
    match found.as_slice() {
        [one] => format!("{verb}{one}"),
        [] => text.to_string(),
        many => format!("{verb}{}", common_prefix(many.iter().map(String::as_str)).unwrap_or_default()),
    }
}

/// What could complete a palette line: the part kept (`kill `, `theme `, or nothing) and
/// the names that fit after it.
pub fn candidates(text: &str, tools: &[Tool], themes: &[String]) -> (String, Vec<String>) {
    if let Some(arg) = text.strip_prefix("kill ").or_else(|| text.strip_prefix("lift ")) {
        let names = std::iter::once("workspace").chain(tools.iter().map(|t| t.name.as_str()));
        return (text[..5].to_string(), names.filter(|n| n.starts_with(arg)).map(str::to_string).collect());
    }
    if let Some(arg) = text.strip_prefix("theme ") {
        return ("theme ".into(), themes.iter().filter(|n| n.starts_with(arg)).cloned().collect());
    }
    (String::new(), PALETTE.iter().filter(|c| c.starts_with(text)).map(|c| c.to_string()).collect())
}

fn common_prefix<'a>(mut items: impl Iterator<Item = &'a str>) -> Option<String> {
    let first = items.next()?;
    let mut prefix = first.to_string();
    for s in items {
        while !s.starts_with(&prefix) {
            prefix.pop();
        }
    }
    Some(prefix)
}
