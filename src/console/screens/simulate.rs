//! Simulate: try one action before an agent sends it (a dry run), and try a draft
//! constitution on recorded history (what-if) before publishing it.
//!
//! Two modes share the screen. In each, a text area holds JSON the person edits; it is
//! checked on every change (JSON first, then, for rules, compiled with the same compiler
//! the server uses), so the first problem and its position show while typing, before
//! anything is sent. Nothing here writes anything but a publish, which asks first.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use serde_json::{Map, Value, json};
use tui_textarea::TextArea;

use crate::client::ClientError;
use crate::console::action::Effect;
use crate::console::app::App;
use crate::console::dialogs::{Confirm, Dialog, Message, PendingOp};
use crate::console::keys::Command;
use crate::console::theme::Theme;
use crate::console::widgets::{self, clip, diff, printable};
use crate::constitution::Rule;

/// How many recorded actions a what-if replays: `w` cycles through them.
pub const WINDOWS: [u32; 3] = [100, 1_000, 10_000];

/// The fields a dry run's request may carry besides the tool (see `POST /v1/actions`).
const REQUEST_FIELDS: &[&str] = &["payload", "current", "confidence", "resource", "reason"];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    DryRun,
    Draft,
}

/// Whether an editor's text can be used, as of the last change.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// Usable; what it holds, for a person.
    Ok(String),
    /// Not usable; the first problem, with its position.
    Bad(String),
}

/// The action a dry run started from, to diff the edited payload against.
#[derive(Clone, Debug)]
pub struct Origin {
    pub action_id: String,
    pub payload: Value,
}

/// The constitution in force, as last read.
#[derive(Clone, Debug, Default)]
pub struct InForce {
    pub version: Option<i64>,
    pub rules: Vec<Rule>,
}

pub struct Simulate {
    pub mode: Mode,
    /// Whether keys go to the editor of the current mode.
    pub editing: bool,
    pub tool: Option<String>,
    pub request: TextArea<'static>,
    pub request_check: Check,
    pub origin: Option<Origin>,
    /// The last dry run's answer, whether it ran under the draft, and the payload sent.
    pub dry: Option<(Value, bool, Value)>,
    pub rules: TextArea<'static>,
    pub rules_check: Check,
    /// The rules as compiled from the editor, when they compile.
    parsed_rules: Option<Vec<Rule>>,
    /// Whether the person changed the rules since they were loaded.
    pub dirty: bool,
    /// The version the draft started from (0: none was published), sent with a publish.
    pub base_version: i64,
    pub in_force: Option<InForce>,
    pub window: usize,
    pub whatif: Option<Value>,
    /// The rules were edited after the what-if ran: its results are for an earlier draft.
    pub whatif_stale: bool,
    pub cursor: usize,
    pub scroll: u16,
    pub dry_busy: bool,
    pub whatif_busy: bool,
    pub loaded: bool,
    /// A publish was refused because another version was published: the next read of
    /// the constitution moves the draft's base to it (the confirmation then shows the
    /// draft's diff against that version).
    rebase: bool,
}

impl Default for Simulate {
    fn default() -> Simulate {
        let mut s = Simulate {
            mode: Mode::DryRun,
            editing: false,
            tool: None,
            request: editor(""),
            request_check: Check::Bad("pick a tool (t) or start from an approval (s in its detail)".into()),
            origin: None,
            dry: None,
            rules: editor("[]"),
            rules_check: Check::Ok("no rules".into()),
            parsed_rules: Some(Vec::new()),
            dirty: false,
            base_version: 0,
            in_force: None,
            window: 1,
            whatif: None,
            whatif_stale: false,
            cursor: 0,
            scroll: 0,
            dry_busy: false,
            whatif_busy: false,
            loaded: false,
            rebase: false,
        };
        s.check_request();
        s
    }
}

fn editor(text: &str) -> TextArea<'static> {
    let mut t = TextArea::new(text.lines().map(str::to_string).collect());
    t.set_cursor_line_style(ratatui::style::Style::default());
    t.set_tab_length(2);
    t
}

/// A JSON parse error as a person reads it: the position, then what is wrong.
fn json_problem(e: &serde_json::Error) -> String {
    let what = e.to_string();
    // serde_json appends " at line L column C"; say the position first instead.
    let what = what.split(" at line ").next().unwrap_or(&what).to_string();
    format!("line {}, column {}: {what}", e.line(), e.column())
}

impl Simulate {
    fn request_text(&self) -> String {
        self.request.lines().join("\n")
    }

    fn rules_text(&self) -> String {
        self.rules.lines().join("\n")
    }

    fn check_request(&mut self) {
        self.request_check = match self.request_body() {
            Ok(_) => Check::Ok(format!("valid request for {}", self.tool.as_deref().unwrap_or("?"))),
            Err(e) => Check::Bad(e),
        };
    }

    /// The dry run's body, or the first problem with what is in the editor.
    pub fn request_body(&self) -> Result<Value, String> {
        let Some(tool) = &self.tool else { return Err("pick a tool (t) or start from an approval (s in its detail)".into()) };
        let v: Value = serde_json::from_str(&self.request_text()).map_err(|e| json_problem(&e))?;
        let Value::Object(mut fields) = v else { return Err("the request must be a JSON object: {\"payload\": {…}, …}".into()) };
        if let Some(k) = fields.keys().find(|k| !REQUEST_FIELDS.contains(&k.as_str())) {
            return Err(format!("unknown field `{k}`: a request has {}", REQUEST_FIELDS.join(", ")));
        }
        if !fields.contains_key("payload") {
            return Err("`payload` is missing: the tool's arguments go there".into());
        }
        if let Some(c) = fields.get("confidence")
            && !c.is_null()
            && !c.as_f64().is_some_and(|c| (0.0..=1.0).contains(&c))
        {
            return Err("`confidence` must be a number from 0 to 1".into());
        }
        fields.retain(|_, v| !v.is_null());
        fields.insert("tool".into(), json!(tool));
        fields.insert("dry_run".into(), json!(true));
        Ok(Value::Object(fields))
    }

    fn check_rules(&mut self) {
        let parsed: Result<Vec<Rule>, String> = serde_json::from_str(&self.rules_text()).map_err(|e| json_problem(&e));
        match parsed {
            Err(e) => {
                self.parsed_rules = None;
                self.rules_check = Check::Bad(e);
            }
            Ok(rules) if rules.len() > crate::simulation::MAX_RULES => {
                self.parsed_rules = None;
                self.rules_check =
                    Check::Bad(format!("a constitution has at most {} rules; this one has {}", crate::simulation::MAX_RULES, rules.len()));
            }
            Ok(rules) => match crate::constitution::compile(&rules, None) {
                Ok(_) => {
                    self.rules_check = Check::Ok(match rules.len() {
                        0 => "no rules: compiles".into(),
                        1 => "1 rule compiles".into(),
                        n => format!("{n} rules compile"),
                    });
                    self.parsed_rules = Some(rules);
                }
                Err(errors) => {
                    self.parsed_rules = None;
                    // Rule positions are within the rule's `when`, not the editor's lines.
                    let first = errors.first().map(|e| e.message.replacen(", line ", ", in `when` line ", 1)).unwrap_or_default();
                    self.rules_check = Check::Bad(match errors.len() {
                        1 => first,
                        n => format!("{first} (and {} more)", n - 1),
                    });
                }
            },
        }
    }

    /// The draft's rules when they compile and differ from those in force: what a dry run
    /// and a what-if should be decided under.
    pub fn draft_rules(&self) -> Option<&Vec<Rule>> {
        let rules = self.parsed_rules.as_ref()?;
        let in_force = self.in_force.as_ref().map_or(&[][..], |c| &c.rules[..]);
        (rules[..] != *in_force).then_some(rules)
    }

    /// Starts a dry run of `tool` with `fields` (`payload`, `current`, …).
    pub fn start(&mut self, tool: String, fields: Value, origin: Option<Origin>) {
        self.mode = Mode::DryRun;
        self.tool = Some(tool);
        self.request = editor(&diff::pretty(&fields));
        self.origin = origin;
        self.dry = None;
        self.scroll = 0;
        self.check_request();
    }

    /// Loads rules into the draft editor, as of `base_version`.
    pub fn load_rules(&mut self, rules: &Value, base_version: i64, dirty: bool) {
        self.rules = editor(&diff::pretty(rules));
        self.base_version = base_version;
        self.dirty = dirty;
        self.whatif = None;
        self.cursor = 0;
        self.check_rules();
    }

    /// Frames the editors for the current mode, focus and theme. Run after every update,
    /// since drawing gets the state read-only and must draw the text areas themselves.
    pub fn style_editors(&mut self, t: &Theme) {
        let editing = self.editing;
        let dirty = self.dirty;
        for (ta, what, mode) in [(&mut self.request, "request", Mode::DryRun), (&mut self.rules, "draft rules", Mode::Draft)] {
            let what = if mode == Mode::Draft && dirty { "draft rules (edited)" } else { what };
            let focused = editing && self.mode == mode;
            let title = if focused { format!(" {what} — editing: esc done · F5 run ") } else { format!(" {what} — e edit · r run ") };
            ta.set_block(Block::bordered().border_style(if focused { t.accent } else { t.border }).title(Line::styled(title, t.title)));
            ta.set_style(t.base);
            ta.set_cursor_style(if focused { t.selection } else { t.base });
        }
    }

    fn changes(&self) -> &[Value] {
        self.whatif.as_ref().and_then(|w| w["changes"].as_array()).map_or(&[], |v| &v[..])
    }
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// Opens the screen: reads the constitution in force the first time.
pub fn on_show(app: &mut App) {
    // Again while unknown: a failed read is not the final word.
    if !app.simulate.loaded || app.simulate.in_force.is_none() {
        app.simulate.loaded = true;
        app.effect(Effect::FetchConstitution);
    }
}

pub fn on_command(app: &mut App, cmd: Command) {
    let page = app.size.1.saturating_sub(10).max(1) as usize;
    let s = &mut app.simulate;
    match cmd {
        Command::TabLeft | Command::TabRight => {
            s.mode = if s.mode == Mode::DryRun { Mode::Draft } else { Mode::DryRun };
            s.scroll = 0;
        }
        // With what-if results listed, `enter` explains the selected one; `e` still edits.
        Command::Open if s.mode == Mode::Draft && !s.changes().is_empty() => open_change(app),
        Command::Edit | Command::Open => {
            if s.mode == Mode::DryRun && s.tool.is_none() {
                pick_tool(app);
            } else {
                s.editing = true;
            }
        }
        Command::PickTool => pick_tool(app),
        Command::Window => {
            s.window = (s.window + 1) % WINDOWS.len();
            let n = WINDOWS[s.window];
            app.say(format!("What-if replays the last {n} actions."));
        }
        Command::Run => run(app),
        Command::Publish => ask_publish(app),
        Command::Up if s.mode == Mode::Draft && !s.changes().is_empty() => s.cursor = s.cursor.saturating_sub(1),
        Command::Down if s.mode == Mode::Draft && !s.changes().is_empty() => {
            s.cursor = (s.cursor + 1).min(s.changes().len() - 1);
        }
        Command::Top if s.mode == Mode::Draft => s.cursor = 0,
        Command::Bottom if s.mode == Mode::Draft => s.cursor = s.changes().len().saturating_sub(1),
        Command::Up => s.scroll = s.scroll.saturating_sub(1),
        Command::Down => s.scroll = s.scroll.saturating_add(1),
        Command::PageDown => s.scroll = s.scroll.saturating_add(page as u16),
        Command::PageUp => s.scroll = s.scroll.saturating_sub(page as u16),
        Command::Back => s.scroll = 0,
        _ => {}
    }
}

/// A key while the editor has focus: `esc` leaves it, F5 runs, the rest edits.
pub fn on_edit_key(app: &mut App, key: KeyEvent) {
    match key.code {
        KeyCode::Esc => {
            let s = &mut app.simulate;
            s.editing = false;
            // Back to the start of the line, so the view is not left scrolled sideways.
            s.request.move_cursor(tui_textarea::CursorMove::Head);
            s.rules.move_cursor(tui_textarea::CursorMove::Head);
        }
        KeyCode::F(5) => run(app),
        _ => {
            let s = &mut app.simulate;
            match s.mode {
                Mode::DryRun => {
                    if s.request.input(key) {
                        s.check_request();
                    }
                }
                Mode::Draft => {
                    if s.rules.input(key) {
                        s.dirty = true;
                        s.whatif_stale = s.whatif.is_some();
                        s.check_rules();
                    }
                }
            }
        }
    }
}

pub fn paste(app: &mut App, text: &str) {
    // Some terminals paste line breaks as CR alone.
    let text = &text.replace("\r\n", "\n").replace('\r', "\n");
    let s = &mut app.simulate;
    match s.mode {
        Mode::DryRun => {
            s.request.insert_str(text);
            s.check_request();
        }
        Mode::Draft => {
            s.rules.insert_str(text);
            s.dirty = true;
            s.whatif_stale = s.whatif.is_some();
            s.check_rules();
        }
    }
}

fn pick_tool(app: &mut App) {
    if app.tools.is_empty() {
        app.effect(Effect::FetchTools);
        app.warn("No tools are known yet; try again in a moment.");
        return;
    }
    let names = app.tools.iter().map(|t| t.name.clone()).collect();
    app.dialog = Some(Dialog::tool_picker(names, app.simulate.tool.clone()));
}

/// A tool was picked: a fresh request for it.
pub fn picked(app: &mut App, tool: String) {
    app.show(crate::console::app::Screen::Simulate);
    app.simulate.start(tool, json!({"payload": {}}), None);
    app.simulate.editing = true;
}

fn run(app: &mut App) {
    match app.simulate.mode {
        Mode::DryRun => run_dry(app),
        Mode::Draft => run_whatif(app),
    }
}

fn run_dry(app: &mut App) {
    if let Some(why) = app.missing_any(&["actions:simulate", "actions:submit"], "dry-run actions") {
        app.warn(why);
        return;
    }
    let s = &mut app.simulate;
    let mut body = match s.request_body() {
        Ok(b) => b,
        Err(e) => {
            app.warn(format!("Not sent: {e}"));
            return;
        }
    };
    if s.dry_busy {
        app.warn("A dry run is already on its way.");
        return;
    }
    let under_draft = match s.draft_rules() {
        Some(rules) => {
            body["draft"] = json!({"rules": rules});
            true
        }
        None => false,
    };
    s.dry_busy = true;
    app.effect(Effect::DryRun { body, under_draft });
}

fn run_whatif(app: &mut App) {
    if let Some(why) = app.missing("actions:simulate", "run what-if") {
        app.warn(why);
        return;
    }
    let s = &mut app.simulate;
    let Some(rules) = &s.parsed_rules else {
        let why = match &s.rules_check {
            Check::Bad(e) => e.clone(),
            Check::Ok(_) => String::new(),
        };
        app.warn(format!("The draft does not compile: {why}"));
        return;
    };
    if s.whatif_busy {
        app.warn("A what-if is already running.");
        return;
    }
    let body = json!({"draft": {"rules": rules}, "window": {"last": WINDOWS[s.window]}});
    s.whatif_busy = true;
    s.cursor = 0;
    app.effect(Effect::WhatIf(body));
}

fn ask_publish(app: &mut App) {
    if let Some(why) = app.missing("constitution:publish", "publish the constitution") {
        app.warn(why);
        return;
    }
    let s = &app.simulate;
    let Some(rules) = s.parsed_rules.clone() else {
        app.warn("The draft does not compile: fix it before publishing.");
        return;
    };
    let in_force = s.in_force.clone().unwrap_or_default();
    let d = crate::store::diff_rules(&in_force.rules, &rules);
    if d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty() {
        app.warn("The draft is the constitution in force: there is nothing to publish.");
        return;
    }
    let list = |ids: &[String]| match ids.len() {
        0 => "none".to_string(),
        n if n <= 4 => ids.join(", "),
        n => format!("{} and {} more", ids[..3].join(", "), n - 3),
    };
    let changed: Vec<String> = d.changed.iter().map(|c| c.id.clone()).collect();
    let next = s.base_version + 1;
    let mut lines = vec![
        format!(
            "Publish version {next} of the constitution ({}), {}.",
            plural(rules.len(), "rule", "rules"),
            if s.base_version == 0 { "the first".to_string() } else { format!("replacing version {}", s.base_version) }
        ),
        format!("added: {}", list(&d.added)),
        format!("removed: {}", list(&d.removed)),
        format!("changed: {}", list(&changed)),
        "It decides every action from the next one on; versions are never edited or deleted.".into(),
    ];
    if in_force.version.unwrap_or(0) != s.base_version {
        lines.insert(1, format!("Version {} was published since you started: the server will refuse this.", in_force.version.unwrap_or(0)));
    }
    app.dialog = Some(Dialog::Confirm(Confirm {
        title: format!("Publish constitution version {next}?"),
        lines,
        danger: false,
        op: PendingOp::Publish { rules, base_version: s.base_version },
    }));
}

fn open_change(app: &mut App) {
    let Some(c) = app.simulate.changes().get(app.simulate.cursor).cloned() else { return };
    let side = |v: &Value| {
        let mut out = vec![format!("  {}", outcome(v))];
        for r in v["cited_rules"].as_array().into_iter().flatten() {
            let err = r["error"].as_str().map(|e| format!(" (failed: {e})")).unwrap_or_default();
            out.push(format!("  cites `{}` ({}): {}{err}", str_of(&r["rule_id"]), str_of(&r["effect"]), str_of(&r["title"])));
        }
        if v["cited_rules"].as_array().is_none_or(|a| a.is_empty()) {
            out.push("  cites no rule".into());
        }
        out
    };
    let who = app.names.get(str_of(&c["requester_id"])).cloned().unwrap_or_else(|| str_of(&c["requester_id"]).to_string());
    let mut lines = vec![
        format!("{} — {}, requested {} by {who}", str_of(&c["action_id"]), str_of(&c["tool"]), str_of(&c["created_at"])),
        format!("recorded as {}", str_of(&c["recorded_status"])),
        "Now (in force):".into(),
    ];
    lines.extend(side(&c["before"]));
    lines.push("Under the draft:".into());
    lines.extend(side(&c["after"]));
    app.dialog = Some(Dialog::Message(Message { title: "What would change".into(), lines, bad: false }));
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// An outcome in a dozen characters, for the list: `enter` shows it whole.
fn short_outcome(v: &Value) -> String {
    match (str_of(&v["status"]), v["required_approvals"].as_i64()) {
        ("executed", _) => "runs at once".into(),
        ("pending_approval", Some(2)) => "needs two".into(),
        ("pending_approval", _) => "needs one".into(),
        (s, _) => clip(s, 12),
    }
}

/// `executed`, `pending_approval (2)`, `denied: constitution_denied`.
fn outcome(v: &Value) -> String {
    let status = str_of(&v["status"]);
    match (status, v["required_approvals"].as_i64(), v["code"].as_str()) {
        ("pending_approval", Some(n), _) => format!("pending_approval ({n})"),
        (s, _, Some(code)) if !code.is_empty() => format!("{s}: {code}"),
        (s, _, _) => s.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

pub fn on_constitution(app: &mut App, r: Result<Value, ClientError>) {
    match r {
        Ok(v) => {
            let version = v["version"].as_i64();
            let rules: Vec<Rule> = serde_json::from_value(v["rules"].clone()).unwrap_or_default();
            let s = &mut app.simulate;
            s.in_force = Some(InForce { version, rules });
            if !s.dirty {
                s.load_rules(&v["rules"], version.unwrap_or(0), false);
            } else if std::mem::take(&mut s.rebase) {
                s.base_version = version.unwrap_or(0);
                app.warn(format!(
                    "Version {} was published meanwhile. Your draft is kept: P shows its diff against that version.",
                    version.unwrap_or(0)
                ));
            }
        }
        Err(e) if e.needs_sign_in() => app.ask_sign_in(e.to_string()),
        Err(e) => app.warn(format!("Could not read the constitution: {e}")),
    }
}

pub fn on_dry_run(app: &mut App, under_draft: bool, sent: Value, r: Result<Value, ClientError>) {
    app.simulate.dry_busy = false;
    match r {
        // The answer never changes whether keys go to the editor: the person may be typing.
        Ok(v) => {
            app.simulate.dry = Some((v, under_draft, sent));
            app.simulate.scroll = 0;
        }
        Err(e) if e.needs_sign_in() => app.ask_sign_in(e.to_string()),
        Err(e) => app.warn(format!("Dry run refused ({}): {e}", e.code())),
    }
}

pub fn on_whatif(app: &mut App, r: Result<Value, ClientError>) {
    app.simulate.whatif_busy = false;
    match r {
        Ok(v) => {
            app.simulate.whatif = Some(v);
            app.simulate.whatif_stale = false;
            app.simulate.cursor = 0;
        }
        Err(e) if e.needs_sign_in() => app.ask_sign_in(e.to_string()),
        Err(e) => app.warn(format!("What-if refused ({}): {e}", e.code())),
    }
}

pub fn on_drafted(app: &mut App, r: Result<Value, ClientError>) {
    match r {
        Ok(v) => {
            app.show(crate::console::app::Screen::Simulate);
            if app.simulate.dirty && app.simulate.parsed_rules.is_none() {
                // An edited draft that does not parse has nowhere to take the rule, and
                // replacing it would lose the edits.
                app.simulate.mode = Mode::Draft;
                return app.warn(format!(
                    "Your edited draft does not parse, so `{}` was not added: fix the draft (e edit), then press R again.",
                    str_of(&v["rule"]["id"])
                ));
            }
            let s = &mut app.simulate;
            s.mode = Mode::Draft;
            s.editing = false;
            // An edited draft is kept: the new rule goes at its end.
            let appended = match (&s.parsed_rules, s.dirty) {
                (Some(current), true) => {
                    let mut rules = serde_json::to_value(current).unwrap_or_else(|_| json!([]));
                    if let Some(list) = rules.as_array_mut() {
                        list.push(v["rule"].clone());
                    }
                    let base = s.base_version;
                    s.load_rules(&rules, base, true);
                    true
                }
                _ => {
                    s.load_rules(&v["draft"]["rules"], v["base_version"].as_i64().unwrap_or(0), true);
                    false
                }
            };
            // Show the drafted rule, not the top of the list.
            let id = format!("\"id\": \"{}\"", str_of(&v["rule"]["id"]));
            if let Some(row) = s.rules.lines().iter().position(|l| l.contains(&id)) {
                s.rules.move_cursor(tui_textarea::CursorMove::Jump(row as u16, 0));
            }
            // Short enough for 80 columns: the rule's description names the action.
            let matches = if v["matches_action"] == json!(true) { "matches the action" } else { "does NOT match the action" };
            let where_ = if appended { ", added to your draft" } else { "" };
            app.say(format!("Drafted `{}`{where_}: {matches}. e edit · r what-if · P publish", str_of(&v["rule"]["id"])));
        }
        Err(e) if e.needs_sign_in() => app.ask_sign_in(e.to_string()),
        Err(e) => app.warn(format!("Could not draft a rule: {e}")),
    }
}

pub fn on_published(app: &mut App, r: Result<Value, ClientError>) {
    match r {
        Ok(v) => {
            let version = v["version"].as_i64().unwrap_or(0);
            let s = &mut app.simulate;
            s.dirty = false;
            s.whatif = None;
            s.base_version = version;
            app.say(format!("Published constitution version {version}: it decides the next action."));
            app.effect(Effect::FetchConstitution);
        }
        Err(e) if e.needs_sign_in() => app.ask_sign_in(e.to_string()),
        Err(e) if e.code() == "constitution_changed" => {
            app.simulate.rebase = true;
            app.effect(Effect::FetchConstitution);
            app.warn(format!("Not published: {e}"));
        }
        Err(e) => app.warn(format!("Not published ({}): {e}", e.code())),
    }
}

// ---------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let s = &app.simulate;
    let [tabs, body] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    let tab = |label: &'static str, on: bool| Span::styled(format!(" {label} "), if on { t.selection } else { t.muted });
    let mut spans = vec![tab("Dry run", s.mode == Mode::DryRun), Span::raw(" "), tab("Draft rules", s.mode == Mode::Draft)];
    let status = match s.mode {
        Mode::DryRun => format!("   tool: {}", s.tool.as_deref().unwrap_or("none (t picks one)")),
        Mode::Draft => {
            let v = match &s.in_force {
                None => "unknown (reading…)".to_string(),
                Some(c) => c.version.map_or("none published".to_string(), |v| format!("v{v}")),
            };
            format!("   in force: {v} · what-if over the last {}", WINDOWS[s.window])
        }
    };
    spans.push(Span::styled(status, t.muted));
    f.render_widget(Paragraph::new(Line::from(spans)), tabs);

    let (editor_area, result_area) = if body.width >= 100 {
        let [a, b] = Layout::horizontal([Constraint::Percentage(50), Constraint::Fill(1)]).areas(body);
        (a, b)
    } else {
        let h = (body.height / 2).clamp(5, 12);
        let [a, b] = Layout::vertical([Constraint::Length(h), Constraint::Fill(1)]).areas(body);
        (a, b)
    };
    draw_editor(f, editor_area, app);
    match s.mode {
        Mode::DryRun => draw_dry(f, result_area, app),
        Mode::Draft => draw_whatif(f, result_area, app),
    }
}

fn draw_editor(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let s = &app.simulate;
    let (text, check) = match s.mode {
        Mode::DryRun => (&s.request, &s.request_check),
        Mode::Draft => (&s.rules, &s.rules_check),
    };
    let [edit, status] = Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(area);
    // Drawn as it is, not a copy: the text area keeps its own scroll position, which a
    // copy would forget every frame (see `Simulate::style_editors` for its frame).
    f.render_widget(text, edit);
    let line = match check {
        Check::Ok(m) => Line::styled(clip(&format!("✓ {m}"), area.width as usize), t.ok),
        Check::Bad(m) => Line::styled(clip(&format!("✕ {m}"), area.width as usize), t.danger),
    };
    f.render_widget(line, status);
}

fn draw_dry(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let s = &app.simulate;
    let block =
        Block::default().borders(Borders::TOP).border_style(t.border).title(Line::styled(" Dry run: what the gate would do ", t.title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let mut lines: Vec<Line> = Vec::new();
    match (&s.dry, s.dry_busy) {
        (_, true) => lines.push(Line::styled("Asking the gate…", t.muted)),
        (None, false) => {
            lines.push(Line::styled("Nothing run yet.", t.muted));
            lines.push(Line::styled(
                "Edit the request (e), then run it (r, or F5 while editing). The full pipeline decides it — kill switches, agent-write control, rules, confidence, policy — and nothing is recorded or run.",
                t.muted,
            ));
            if s.draft_rules().is_some() {
                lines.push(Line::styled("Your edited draft rules (Draft rules tab) will be used instead of those in force.", t.warn));
            }
        }
        (Some((v, under_draft, sent)), false) => dry_lines(&mut lines, v, *under_draft, sent, s, t, inner.width as usize),
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }).scroll((s.scroll, 0)), inner);
}

fn outcome_style(t: &Theme, status: &str) -> ratatui::style::Style {
    match status {
        // `execute` is the gate's outcome verdict; `executed` the recorded status.
        "execute" | "executed" => t.ok,
        "pending_approval" => t.warn,
        _ => t.danger,
    }
}

fn dry_lines(lines: &mut Vec<Line<'static>>, v: &Value, under_draft: bool, sent: &Value, s: &Simulate, t: &Theme, width: usize) {
    // A dry run answers `simulated`; what it would be is in the outcome stage.
    let trace = v["trace"].as_array().map_or(&[][..], |a| &a[..]);
    let would = trace.iter().find(|st| st["stage"] == "outcome").map(|st| str_of(&st["verdict"]).to_string()).unwrap_or_default();
    let status = would.split(' ').next().unwrap_or("").to_string();
    let headline = match would.as_str() {
        "" => str_of(&v["status"]).to_string(),
        "execute" => "executed at once".to_string(),
        w => w.to_string(),
    };
    lines.push(Line::from(vec![Span::styled("Would be: ", t.muted), Span::styled(headline, outcome_style(t, &status))]));
    if let Some(code) = v["code"].as_str() {
        lines.push(Line::from(vec![Span::styled("code: ", t.muted), Span::styled(code.to_string(), t.danger)]));
    }
    let under = if under_draft {
        "under your draft rules".to_string()
    } else {
        match v["constitution_version"].as_i64() {
            Some(n) => format!("under constitution version {n}"),
            None => "with no constitution published".into(),
        }
    };
    lines.push(Line::styled(under, t.muted));
    lines.push(Line::styled(format!("payload sha256 {}", str_of(&v["payload_sha256"])), t.muted));
    lines.push(Line::default());
    lines.push(Line::styled("Trace", t.title));
    let rows: Vec<widgets::TraceRow> = trace
        .iter()
        .map(|st| {
            let verdict = str_of(&st["verdict"]).to_string();
            let verdict_style = match verdict.as_str() {
                "pass" | "allow" | "skip" => t.ok,
                "require_approval" | "require_dual" => t.warn,
                _ if st["stage"] == "outcome" => outcome_style(t, verdict.split(' ').next().unwrap_or("")),
                _ => t.danger,
            };
            widgets::TraceRow {
                stage: str_of(&st["stage"]).to_string(),
                verdict,
                detail: str_of(&st["detail"]).to_string(),
                stage_style: t.base,
                verdict_style,
                detail_style: t.muted,
            }
        })
        .collect();
    lines.extend(widgets::trace(&rows, 2, width));
    lines.push(Line::default());
    let cited = v["cited_rules"].as_array().map_or(&[][..], |a| &a[..]);
    lines.push(Line::styled(if cited.is_empty() { "Cited rules: none".to_string() } else { "Cited rules".to_string() }, t.title));
    for r in cited {
        let err = r["error"].as_str().map(|e| format!(" — failed: {e}")).unwrap_or_default();
        let lead = vec![
            Span::styled(format!("  {} ", str_of(&r["rule_id"])), t.accent),
            Span::styled(format!("({}) ", str_of(&r["effect"])), t.warn),
        ];
        lines.extend(widgets::hanging(lead, &printable(&format!("{}{err}", str_of(&r["title"]))), t.base, width));
    }
    if let Some(o) = &s.origin {
        lines.push(Line::default());
        // Decided for the person at the console, who is not the agent that asked.
        lines.push(Line::styled(
            format!(
                "Decided for you, not for the agent that sent {}: scope, agent-write control and rules on `agent` may differ.",
                o.action_id
            ),
            t.warn,
        ));
        let old = diff::pretty(&o.payload);
        // The payload that was sent, not what the editor holds now.
        let new = diff::pretty(sent);
        if old == new {
            lines.push(Line::styled(format!("Payload: as in {} (unchanged)", o.action_id), t.muted));
        } else {
            lines.push(Line::styled(format!("Payload: {} → edited", o.action_id), t.title));
            lines.extend(diff::lines(&old, &new, t, width));
        }
    }
}

fn draw_whatif(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let s = &app.simulate;
    let block = Block::default()
        .borders(Borders::TOP)
        .border_style(t.border)
        .title(Line::styled(" What-if: recorded actions under the draft ", t.title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(w) = (!s.whatif_busy).then_some(s.whatif.as_ref()).flatten() else {
        let text = if s.whatif_busy {
            vec![Line::styled(format!("Replaying the last {} actions…", WINDOWS[s.window]), t.muted)]
        } else {
            let mut v = vec![
                Line::styled(format!("r replays the last {} recorded actions under the draft (w: how many).", WINDOWS[s.window]), t.muted),
                Line::styled(
                    "Each is decided now under what is in force and under the draft; every outcome that would change is listed.",
                    t.muted,
                ),
            ];
            if app.can("constitution:publish") {
                v.push(Line::styled("P publishes the draft (you will confirm the version diff).", t.muted));
            }
            v
        };
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), inner);
        return;
    };
    let n = |k: &str| w["totals"][k].as_i64().unwrap_or(0);
    let window = &w["window"];
    let mut head = vec![
        Line::from(vec![
            Span::styled(format!("{} replayed · ", n("replayed")), t.base),
            Span::styled(format!("{} would change", n("changed")), if n("changed") > 0 { t.warn } else { t.ok }),
        ]),
        // Each count stays with its words when the line wraps (no-break spaces inside).
        Line::styled(
            [
                ("newly denied", n("newly_denied")),
                ("need an approval", n("newly_need_approval")),
                ("need two approvals", n("newly_need_dual")),
                ("no longer denied", n("no_longer_denied")),
                ("run at once", n("newly_run_at_once")),
            ]
            .iter()
            .map(|(what, k)| format!("{what}: {k}").replace(' ', "\u{a0}"))
            .collect::<Vec<_>>()
            .join(" · "),
            t.muted,
        ),
    ];
    let mut notes = Vec::new();
    if s.whatif_stale {
        notes.push("the draft changed since: r runs it again".to_string());
    }
    if window["complete"] == json!(false) {
        notes.push(format!("stopped early ({})", str_of(&window["stopped_by"])));
    }
    if w["truncated"] == json!(true) {
        notes.push("only the first 1000 changes are listed".into());
    }
    if n("rule_errors_after") > 0 {
        notes.push(format!("{} failed to evaluate under the draft", n("rule_errors_after")));
    }
    if n("skipped") > 0 {
        notes.push(format!("{} skipped (tool gone)", n("skipped")));
    }
    if window["scope"] == "own" {
        notes.push("your own actions only".into());
    }
    if !notes.is_empty() {
        head.push(Line::styled(notes.join(" · "), t.warn));
    }
    // Its height once wrapped, so no caveat is cut off.
    let width = inner.width.max(1) as usize;
    let head_h = head.iter().map(|l| l.width().div_ceil(width).max(1) as u16).sum::<u16>() + 1;
    let [h, list] = Layout::vertical([Constraint::Length(head_h), Constraint::Fill(1)]).areas(inner);
    f.render_widget(Paragraph::new(head).wrap(Wrap { trim: true }), h);
    let changes = s.changes();
    if changes.is_empty() {
        f.render_widget(Paragraph::new(Line::styled("No outcome would change.", t.ok)), list);
        return;
    }
    let height = list.height as usize;
    let start = super::window_start(s.cursor, changes.len(), height);
    let mut lines = Vec::new();
    for (i, c) in changes.iter().enumerate().skip(start).take(height) {
        let time = str_of(&c["created_at"]).get(5..16).unwrap_or("").replace('T', " ");
        let before = short_outcome(&c["before"]);
        let after = short_outcome(&c["after"]);
        let text = format!("{time}  {:<16} {before:<12} → ", clip(str_of(&c["tool"]), 16));
        let row_style = if i == s.cursor { t.selection } else { t.base };
        let after_style = if i == s.cursor { t.selection } else { outcome_style(t, str_of(&c["after"]["status"])) };
        let mark = if i == s.cursor { "▸ " } else { "  " };
        lines.push(Line::from(vec![Span::styled(format!("{mark}{text}"), row_style), Span::styled(after, after_style)]));
    }
    f.render_widget(Paragraph::new(lines), list);
}

/// What the footer offers on this screen.
pub fn footer(s: &Simulate) -> Vec<(&'static str, &'static str)> {
    if s.editing {
        return vec![("esc", "done editing"), ("F5", "run")];
    }
    match s.mode {
        Mode::DryRun => vec![("←/→", "mode"), ("t", "tool"), ("e", "edit"), ("r", "run"), ("j/k", "scroll"), ("K", "kill"), ("?", "help")],
        // `enter` explains a change when what-if listed some; otherwise it edits.
        Mode::Draft if !s.changes().is_empty() => {
            vec![("←/→", "mode"), ("e", "edit"), ("r", "what-if"), ("w", "window"), ("enter", "why"), ("P", "publish"), ("K", "kill")]
        }
        Mode::Draft => {
            vec![("←/→", "mode"), ("e", "edit"), ("r", "what-if"), ("w", "window"), ("P", "publish"), ("K", "kill"), ("?", "help")]
        }
    }
}

/// Every field of a request that the approval carries, for a dry run started from it.
pub fn request_from(payload: Option<&Value>, current: Option<&Value>, confidence: Option<f64>, resource: Option<&str>) -> Value {
    let mut m = Map::new();
    m.insert("payload".into(), payload.cloned().unwrap_or_else(|| json!({})));
    if let Some(c) = current {
        m.insert("current".into(), c.clone());
    }
    if let Some(c) = confidence {
        m.insert("confidence".into(), json!(c));
    }
    if let Some(r) = resource {
        m.insert("resource".into(), json!(r));
    }
    Value::Object(m)
}

/// "1 rule", "3 rules".
fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
