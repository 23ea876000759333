//! The live audit tail: follow or pause, filter, open one event, verify the chain, export
//! the whole log to a file.
//!
//! Memory is bounded: the tail keeps a ring of the most recent events, and older ones are
//! paged from the server on demand into a bounded window before it. Frames draw only the
//! rows on screen; the filtered view is kept current as events arrive, so a frame never
//! scans the ring.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Wrap};

use crate::audit::{ActorKind, AuditEvent, VerifyReport, outcome};
use crate::client::ClientError;
use crate::console::action::Effect;
use crate::console::app::App;
use crate::console::dialogs::{Dialog, Field, Form, Message, PendingOp, Purpose};
use crate::console::keys::Command;
use crate::console::widgets::{self, clip, printable};
use crate::export_file::{Downloaded, Format};

/// The most recent events kept in memory.
pub const RING: usize = 10_000;
/// The most older events paged in before the ring.
pub const OLDER: usize = 5_000;
/// Events per page when paging backwards.
pub const PAGE: i64 = 500;

/// One event as the tail keeps it: the fields it shows and filters on, and the event's
/// JSON for the detail view. Compact on purpose: the tail holds thousands.
#[derive(Clone, Debug, PartialEq)]
pub struct TailEvent {
    pub seq: i64,
    pub ts: Box<str>,
    pub event_type: Box<str>,
    pub actor_kind: crate::audit::ActorKind,
    pub actor_id: Box<str>,
    pub resource: Option<Box<str>>,
    pub outcome: Box<str>,
    /// The tool the event is about, if any (`data.tool` or `data.target`).
    pub tool: Option<Box<str>>,
    /// The whole event as JSON, exactly as received.
    pub raw: Box<str>,
}

impl From<&AuditEvent> for TailEvent {
    fn from(e: &AuditEvent) -> TailEvent {
        let tool = e.data.get("tool").or_else(|| e.data.get("target")).and_then(|v| v.as_str()).map(Box::from);
        TailEvent {
            seq: e.seq,
            ts: e.ts.as_str().into(),
            event_type: e.event_type.as_str().into(),
            actor_kind: e.actor.kind,
            actor_id: e.actor.id.as_str().into(),
            resource: e.resource.as_deref().map(Box::from),
            outcome: e.outcome.as_str().into(),
            tool,
            raw: serde_json::to_string(e).unwrap_or_default().into(),
        }
    }
}

/// The approval an event is about, if any: its `approval_id`, or an approval's id as its
/// resource.
pub fn approval_of(e: &TailEvent) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&e.raw).ok()?;
    v["data"]["approval_id"].as_str().or(e.resource.as_deref().filter(|r| r.starts_with("apv_"))).map(str::to_string)
}

/// The parsed filter: `type:approval.*`, `actor:usr_…`, `tool:email.send`,
/// `outcome:denied`, and free words matched anywhere.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub types: Vec<String>,
    pub actor: Option<String>,
    pub tool: Option<String>,
    pub outcome: Option<String>,
    pub words: Vec<String>,
}

impl Filter {
    pub fn parse(text: &str) -> Filter {
        let mut f = Filter::default();
        for term in text.split_whitespace() {
            match term.split_once(':') {
                Some(("type", v)) => f.types.push(v.to_string()),
                Some(("actor", v)) => f.actor = Some(v.to_string()),
                Some(("tool", v)) => f.tool = Some(v.to_string()),
                Some(("outcome", v)) => f.outcome = Some(v.to_string()),
                _ => f.words.push(term.to_lowercase()),
            }
        }
        f
    }

    pub fn matches(&self, e: &TailEvent) -> bool {
        let ty = self.types.is_empty()
            || self.types.iter().any(|t| match t.strip_suffix('*') {
                Some(p) => e.event_type.starts_with(p),
                None => *e.event_type == **t,
            });
        let actor = self.actor.as_ref().is_none_or(|a| e.actor_id.starts_with(a.as_str()));
        let tool = self.tool.as_ref().is_none_or(|t| e.tool.as_deref() == Some(t.as_str()));
        let outcome = self.outcome.as_ref().is_none_or(|o| *e.outcome == **o);
        // Free words look at everything a row says, shown or not (at 80 columns the
        // outcome is not; the tool never is).
        let words = self.words.iter().all(|w| {
            e.event_type.contains(w.as_str())
                || e.actor_id.to_lowercase().contains(w.as_str())
                || e.resource.as_deref().is_some_and(|r| r.to_lowercase().contains(w.as_str()))
                || e.tool.as_deref().is_some_and(|t| t.to_lowercase().contains(w.as_str()))
                || e.outcome.contains(w.as_str())
        });
        ty && actor && tool && outcome && words
    }
}

pub struct Audit {
    /// Older events paged in on demand, then the ring of recent ones: together one
    /// contiguous run of seqs.
    older: VecDeque<TailEvent>,
    ring: VecDeque<TailEvent>,
    /// Seqs that pass the filter, in order.
    view: VecDeque<i64>,
    pub filter_text: String,
    filter: Filter,
    /// Follow mode: the cursor stays on the newest event.
    pub follow: bool,
    /// Matching events that arrived while paused.
    pub paused_new: usize,
    pub cursor: usize,
    /// The event whose detail is open: a copy, so it stays put while the tail follows
    /// new events underneath and after the ring has let it go.
    pub open: Option<TailEvent>,
    pub scroll: u16,
    /// The last seq received: the stream resumes after it.
    pub last_seq: i64,
    pub loading_older: bool,
    /// No events exist before the oldest held.
    pub at_start: bool,
    /// The file an export is being written to, and in what format, while it runs.
    pub exporting: Option<(PathBuf, Format)>,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            older: VecDeque::new(),
            ring: VecDeque::new(),
            view: VecDeque::new(),
            filter_text: String::new(),
            filter: Filter::default(),
            follow: true,
            paused_new: 0,
            cursor: 0,
            open: None,
            scroll: 0,
            last_seq: 0,
            loading_older: false,
            at_start: false,
            exporting: None,
        }
    }
}

impl Audit {
    fn first_seq(&self) -> Option<i64> {
        self.older.front().or(self.ring.front()).map(|e| e.seq)
    }

    /// The event with `seq`, if held.
    pub fn get(&self, seq: i64) -> Option<&TailEvent> {
        if let Some(f) = self.older.front()
            && seq >= f.seq
            && let Some(e) = self.older.get((seq - f.seq) as usize)
        {
            return Some(e);
        }
        let f = self.ring.front()?;
        if seq < f.seq {
            return None;
        }
        self.ring.get((seq - f.seq) as usize)
    }

    pub fn len(&self) -> usize {
        self.view.len()
    }

    pub fn is_empty(&self) -> bool {
        self.view.is_empty()
    }

    pub fn held(&self) -> usize {
        self.older.len() + self.ring.len()
    }

    pub fn at(&self, i: usize) -> Option<&TailEvent> {
        self.view.get(i).and_then(|s| self.get(*s))
    }

    pub fn current(&self) -> Option<&TailEvent> {
        self.at(self.cursor)
    }

    /// Adds a live event. Returns false for one already held (a resumed stream may
    /// repeat nothing, but this makes sure).
    pub fn push(&mut self, e: AuditEvent) -> bool {
        if e.seq <= self.last_seq {
            return false;
        }
        let e = TailEvent::from(&e);
        if self.ring.back().is_some_and(|b| e.seq != b.seq + 1) {
            // A gap means the tail no longer holds a contiguous run: start it again here.
            self.ring.clear();
            self.older.clear();
            self.view.clear();
            self.cursor = 0;
        }
        self.last_seq = e.seq;
        let matches = self.filter.matches(&e);
        if matches {
            self.view.push_back(e.seq);
            if !self.follow {
                self.paused_new += 1;
            }
        }
        self.ring.push_back(e);
        if self.ring.len() > RING {
            // The run before the ring would no longer be contiguous with it.
            self.older.clear();
            let dropped = self.ring.pop_front().map(|d| d.seq).unwrap_or_default();
            self.at_start = false;
            while self.view.front().is_some_and(|s| *s <= dropped) {
                self.view.pop_front();
                self.cursor = self.cursor.saturating_sub(1);
            }
        }
        if self.follow {
            self.cursor = self.view.len().saturating_sub(1);
        }
        true
    }

    /// Puts a page of older events before what is held.
    pub fn prepend(&mut self, mut events: Vec<AuditEvent>) {
        events.sort_by_key(|e| e.seq);
        let Some(first) = self.first_seq() else { return };
        let page: Vec<TailEvent> = events.iter().filter(|e| e.seq < first).map(TailEvent::from).collect();
        if page.is_empty() || page.last().is_some_and(|e| e.seq != first - 1) {
            self.at_start = true;
            return;
        }
        if page.first().is_some_and(|e| e.seq == 1) {
            self.at_start = true;
        }
        let added: Vec<i64> = page.iter().filter(|e| self.filter.matches(e)).map(|e| e.seq).collect();
        for e in page.into_iter().rev() {
            self.older.push_front(e);
        }
        for s in added.iter().rev() {
            self.view.push_front(*s);
        }
        self.cursor += added.len();
        while self.older.len() > OLDER {
            self.older.pop_back();
        }
        if self.older.len() >= OLDER {
            self.at_start = true;
        }
    }

    pub fn set_filter(&mut self, text: String) {
        let keep = self.current().map(|e| e.seq);
        self.filter = Filter::parse(&text);
        self.filter_text = text;
        self.view = self.older.iter().chain(self.ring.iter()).filter(|e| self.filter.matches(e)).map(|e| e.seq).collect();
        self.cursor = match keep {
            Some(s) if !self.follow => self.view.iter().position(|x| *x >= s).unwrap_or(self.view.len().saturating_sub(1)),
            _ => self.view.len().saturating_sub(1),
        };
        // "New" while paused: what the new filter shows below the paused position.
        if !self.follow {
            self.paused_new = self.view.len().saturating_sub(self.cursor + 1);
        }
    }
}

pub fn on_command(app: &mut App, cmd: Command) {
    let page = app.size.1.saturating_sub(8).max(1) as usize;
    if cmd == Command::Bottom
        && let Some(e) = &app.audit.open
    {
        // The end of the detail, not the newest event.
        let lines = detail_lines(app, e, app.size.0 as usize).len();
        app.audit.scroll = lines.saturating_sub(page) as u16;
        return;
    }
    let a = &mut app.audit;
    match cmd {
        Command::PauseTail => {
            a.follow = !a.follow;
            if a.follow {
                a.paused_new = 0;
                a.cursor = a.view.len().saturating_sub(1);
            }
        }
        Command::Up if a.open.is_some() => a.scroll = a.scroll.saturating_sub(1),
        Command::Down if a.open.is_some() => a.scroll = a.scroll.saturating_add(1),
        Command::PageUp if a.open.is_some() => a.scroll = a.scroll.saturating_sub(page as u16),
        Command::PageDown if a.open.is_some() => a.scroll = a.scroll.saturating_add(page as u16),
        Command::Top if a.open.is_some() => a.scroll = 0,
        Command::Open => {
            a.open = a.current().cloned();
            a.scroll = 0;
        }
        Command::Back => a.open = None,
        Command::Up | Command::PageUp | Command::Top => {
            a.follow = false;
            a.cursor = match cmd {
                Command::Up => a.cursor.saturating_sub(1),
                Command::PageUp => a.cursor.saturating_sub(page),
                _ => 0,
            };
            if a.cursor == 0
                && !a.at_start
                && !a.loading_older
                && let Some(first) = a.first_seq()
            {
                a.loading_older = true;
                app.effect(Effect::LoadOlder { before_seq: first });
            }
        }
        Command::Down | Command::PageDown => {
            let step = if cmd == Command::Down { 1 } else { page };
            a.cursor = (a.cursor + step).min(a.view.len().saturating_sub(1));
        }
        Command::Bottom => {
            a.follow = true;
            a.paused_new = 0;
            a.cursor = a.view.len().saturating_sub(1);
        }
        Command::Verify => {
            if let Some(why) = app.missing("audit:read", "verify the audit chain") {
                app.warn(why);
            } else {
                app.say("Verifying the whole chain…");
                app.effect(Effect::Verify);
            }
        }
        Command::Export => ask_export(app),
        _ => {}
    }
}

/// Opens the export form: a file name (a default one when left empty) and a format.
fn ask_export(app: &mut App) {
    if let Some(why) = app.missing("audit:export", "export the audit log") {
        app.warn(why);
        return;
    }
    if let Some((path, _)) = &app.audit.exporting {
        app.warn(format!("An export to {} is still running.", path.display()));
        return;
    }
    let default_stem = default_stem(&app.session.workspace, app.now);
    let hint = format!("{default_stem}.<format> in {}", app.cwd.display());
    app.dialog = Some(Dialog::Form(Box::new(Form {
        title: "Export the whole audit log".into(),
        purpose: Purpose::ExportAudit { default_stem, dir: app.cwd.clone() },
        fields: vec![
            Field::Text { label: "File".into(), value: String::new(), secret: false, hint },
            Field::Choice { label: "Format".into(), options: vec!["jsonl".into(), "csv".into()], selected: 0 },
        ],
        focus: 0,
        error: None,
    })));
}

/// `countersign-audit-<workspace>-<UTC time>`: sorts by time, says whose log it is.
fn default_stem(workspace: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let ws: String = workspace.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')).collect();
    let ws = if ws.is_empty() { "workspace".to_string() } else { ws };
    format!("countersign-audit-{ws}-{}", now.format("%Y%m%d-%H%M%S"))
}

/// Turns the export form into an operation: where (absolute, not there yet) and how.
pub fn op_from_form(f: &Form) -> Result<PendingOp, String> {
    let Purpose::ExportAudit { default_stem, dir } = &f.purpose else { return Err("this form is not an export".into()) };
    let format = if f.choice(1) == "csv" { Format::Csv } else { Format::Jsonl };
    let typed = f.text(0);
    let name = if typed.is_empty() { format!("{default_stem}.{}", format.as_str()) } else { typed };
    let path = resolve(dir, &name).ok_or("There is no home directory to put `~/` in; give the file's full path.")?;
    if path.is_dir() {
        return Err(format!("{} is a directory: give a file name.", path.display()));
    }
    // A dangling link counts: something is at that name.
    if path.symlink_metadata().is_ok() {
        return Err(format!("{} already exists: choose another name (an export never replaces a file).", path.display()));
    }
    match path.parent() {
        Some(dir) if dir.is_dir() => {}
        Some(dir) => return Err(format!("There is no directory {}.", dir.display())),
        None => return Err("Give a file name, not a directory.".into()),
    }
    Ok(PendingOp::ExportAudit { path, format })
}

/// A typed file name as a path: `~/` is the home directory, anything else relative is
/// relative to `dir` (where the console was started).
fn resolve(dir: &Path, name: &str) -> Option<PathBuf> {
    match name.strip_prefix("~/") {
        Some(rest) => Some(dirs::home_dir()?.join(rest)),
        None if name == "~" => dirs::home_dir(),
        None => Some(dir.join(name)),
    }
}

/// Starts the export confirmed in the form.
pub fn start_export(app: &mut App, path: PathBuf, format: Format) {
    app.say(format!("Exporting the whole audit log to {}…", path.display()));
    app.audit.exporting = Some((path.clone(), format));
    app.effect(Effect::ExportAudit { path, format });
}

pub fn on_exported(app: &mut App, r: Result<Downloaded, ClientError>) {
    let (path, format) = app.audit.exporting.take().unzip();
    // "Exporting…" is no longer true, whatever happened.
    if app.toast.as_ref().is_some_and(|t| !t.error) {
        app.toast = None;
    }
    let d = match r {
        Ok(d) => d,
        Err(e) if e.needs_sign_in() => return app.ask_sign_in(e.to_string()),
        Err(e) => {
            let to = path.map(|p| format!(" to {}", p.display())).unwrap_or_default();
            app.dialog = Some(Dialog::Message(Message {
                title: "Export failed".into(),
                lines: vec![format!("Nothing was written{to}."), e.to_string()],
                bad: true,
            }));
            return;
        }
    };
    let events = d.head_seq.map_or_else(|| "The log".to_string(), |h| format!("{h} events (seq 1–{h})"));
    let mut lines = vec![format!("{events}, {}, written to:", size(d.bytes)), d.path.display().to_string(), String::new()];
    if !d.complete {
        lines.push("The server did not mark it complete: it is not the whole chain, and will not verify.".into());
    } else if format != Some(Format::Csv) {
        lines.push("It verifies offline, without the server:".into());
        lines.push(format!("countersign audit verify --file {}", shell_word(&d.path)));
    } else {
        lines.push("CSV for spreadsheets (cells that could run as formulas are neutralised);".into());
        lines.push("export JSONL to verify the chain offline.".into());
    }
    app.dialog = Some(Dialog::Message(Message { title: "Audit log exported".into(), lines, bad: false }));
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b < 1024 => format!("{b} bytes"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

/// A path as one shell word, quoted when it needs to be.
fn shell_word(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c)) { s } else { format!("'{}'", s.replace('\'', "'\\''")) }
}

pub fn on_older(app: &mut App, r: Result<Vec<AuditEvent>, ClientError>) {
    app.audit.loading_older = false;
    match r {
        Ok(events) => app.audit.prepend(events),
        Err(e) => app.warn(format!("Could not load older events: {e}")),
    }
}

pub fn on_verified(app: &mut App, r: Result<VerifyReport, ClientError>) {
    app.dialog = Some(Dialog::Message(match r {
        Ok(v) if v.ok => Message {
            title: "Audit chain verified".into(),
            lines: vec![
                format!("All {} events hold: every hash matches and every link is intact.", v.events),
                format!("Head: seq {} hash {}", v.head_seq, v.head_hash),
            ],
            bad: false,
        },
        Ok(v) => Message {
            title: "AUDIT CHAIN BROKEN".into(),
            lines: vec![
                format!("The chain breaks at seq {}.", v.first_broken_seq.unwrap_or_default()),
                v.reason.unwrap_or_default(),
                format!("{} events before it verified (last good seq {}).", v.events, v.head_seq),
            ],
            bad: true,
        },
        Err(e) => Message { title: "Could not verify".into(), lines: vec![e.to_string()], bad: true },
    }));
}

// ---------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------

/// The widest label column of an event's detail; a longer data field name is cut with `…`.
const MAX_LABEL: usize = 24;

/// One event, as a person reads it: what happened, who did it and through what, the
/// event's own data field by field, and its place in the chain. Member and token ids are
/// named when the Access lists are loaded; the ids stay, since they are what the log holds.
pub fn detail_lines(app: &App, e: &TailEvent, width: usize) -> Vec<Line<'static>> {
    let t = &app.theme;
    let Ok(ev) = serde_json::from_str::<AuditEvent>(&e.raw) else {
        // Not expected (the tail wrote it), but never hide what arrived.
        return e.raw.lines().map(|l| Line::styled(printable(l), t.base)).collect();
    };
    // As wide as this event's longest label, and a space: labels never run into values.
    let scalar_keys = ev.data.as_object().into_iter().flatten().filter(|(_, v)| !v.is_object() && !v.is_array()).map(|(k, _)| k.as_str());
    let label_width = ["payload sha256", "prev hash", "resource", "outcome", "event id"]
        .into_iter()
        .chain(scalar_keys)
        .map(widgets::cols)
        .max()
        .unwrap_or(0)
        .min(MAX_LABEL)
        + 1;
    let row = |label: &str, value: &str, style| {
        let label = widgets::pad(&widgets::clip(&printable(label), label_width - 1), label_width);
        widgets::hanging(vec![Span::styled(label, t.muted)], &printable(value), style, width)
    };
    let mut out = vec![
        Line::styled(ev.event_type.clone(), t.title),
        Line::styled(format!("seq {} · {} · {}", ev.seq, ev.ts, widgets::ago(app.now, &ev.ts)), t.muted),
        Line::default(),
    ];
    let kind = match ev.actor.kind {
        ActorKind::User => "member",
        ActorKind::Agent => "agent",
        ActorKind::System => "system task",
    };
    // A known name already says what it is: an e-mail, or "agent <name>".
    let actor = match app.names.get(&ev.actor.id) {
        Some(name) => format!("{name} ({})", ev.actor.id),
        None => format!("{kind} {}", ev.actor.id),
    };
    out.extend(row("actor", &actor, t.base));
    out.extend(row("via", ev.via.as_str(), t.base));
    if let Some(r) = &ev.resource {
        out.extend(row("resource", r, t.base));
    }
    out.extend(row("outcome", &ev.outcome, outcome_style(t, &ev.outcome)));
    if let Some(h) = &ev.payload_sha256 {
        out.extend(row("payload sha256", h, t.accent));
    }
    out.push(Line::default());
    out.push(Line::styled("── Data ──", t.title));
    match &ev.data {
        serde_json::Value::Object(m) if m.is_empty() => out.push(Line::styled("(none)", t.muted)),
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                        out.push(Line::styled(k.clone(), t.muted));
                        let pretty = serde_json::to_string_pretty(v).unwrap_or_default();
                        out.extend(pretty.lines().map(|l| Line::styled(format!("  {}", printable(l)), t.base)));
                    }
                    serde_json::Value::String(text) => out.extend(row(k, text, t.base)),
                    other => out.extend(row(k, &other.to_string(), t.base)),
                }
            }
        }
        other => out.push(Line::styled(printable(&other.to_string()), t.base)),
    }
    out.push(Line::default());
    out.push(Line::styled("── Chain ──", t.title));
    out.extend(row("event id", &ev.id, t.base));
    out.extend(row("prev hash", &ev.prev_hash, t.muted));
    out.extend(row("hash", &ev.hash, t.accent));
    out
}

/// Refusals stand out, failures more; the rest is plain.
fn outcome_style(t: &crate::console::theme::Theme, outcome: &str) -> ratatui::style::Style {
    match outcome {
        outcome::DENIED | outcome::BLOCKED => t.warn,
        outcome::FAILURE => t.danger,
        _ => t.base,
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let a = &app.audit;
    let state = if a.follow { "following".to_string() } else { format!("paused, {} new", a.paused_new) };
    let filter = if a.filter_text.is_empty() { String::new() } else { format!(", filter: {}", a.filter_text) };
    let title = format!(" Audit log ({state}{filter}) ");
    let title_style = if a.follow { t.title } else { t.warn };
    let block = Block::default().borders(Borders::TOP).border_style(t.border).title(Line::styled(title, title_style));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if let Some(e) = &a.open {
        let lines = detail_lines(app, e, inner.width as usize);
        f.render_widget(Paragraph::new(lines).scroll((a.scroll, 0)).wrap(Wrap { trim: false }), inner);
        return;
    }
    if a.is_empty() {
        let msg = if a.held() == 0 { "Waiting for events…" } else { "No event matches the filter (esc in / clears it)." };
        f.render_widget(Paragraph::new(Line::styled(msg, t.muted)), inner);
        return;
    }
    let height = inner.height.saturating_sub(1) as usize;
    let start = super::window_start(a.cursor, a.len(), height);
    let wide = inner.width >= 110;
    let mut selected = None;
    let rows: Vec<Row> = (start..(start + height).min(a.len()))
        .filter_map(|i| a.at(i).map(|e| (i, e)))
        .enumerate()
        .map(|(at, (i, e))| {
            if i == a.cursor {
                selected = Some(at);
            }
            let style = outcome_style(t, &e.outcome);
            let time = e.ts.get(11..19).unwrap_or("").to_string();
            // Cut as a whole, so the `…` is never itself cut off by the column.
            let actor = match app.names.get(&*e.actor_id) {
                Some(name) => clip(name, if wide { 30 } else { 20 }),
                None => clip(&format!("{}:{}", e.actor_kind.as_str(), e.actor_id), if wide { 30 } else { 20 }),
            };
            let mut cells = vec![
                Cell::from(Span::styled(e.seq.to_string(), t.muted)),
                Cell::from(time),
                Cell::from(Span::styled(clip(&e.event_type, if wide { 26 } else { 22 }), style)),
                Cell::from(actor),
                Cell::from(clip(e.resource.as_deref().unwrap_or(""), if wide { 34 } else { 12 })),
            ];
            // The outcome in words, since colour alone does not read in 16 colours or none;
            // at 80 columns only when it is not a success, which is what a scan looks for.
            if wide || &*e.outcome != "success" {
                cells.push(Cell::from(Span::styled(e.outcome.to_string(), style)));
            }
            Row::new(cells)
        })
        .collect();
    let (header, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec!["SEQ", "TIME", "EVENT", "ACTOR", "RESOURCE", "OUTCOME"],
            vec![
                Constraint::Length(7),
                Constraint::Length(8),
                Constraint::Length(26),
                Constraint::Fill(2),
                Constraint::Fill(2),
                Constraint::Length(8),
            ],
        )
    } else {
        (
            vec!["SEQ", "TIME", "EVENT", "ACTOR", "RESOURCE", "OUTCOME"],
            vec![
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(22),
                Constraint::Length(20),
                Constraint::Fill(1),
                Constraint::Length(7),
            ],
        )
    };
    let table = Table::new(rows, widths).header(Row::new(header).style(t.muted)).column_spacing(1);
    crate::console::widgets::selectable_table(f, table, inner, selected, t.selection);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, EventDraft, GENESIS_HASH, Via};

    fn ev(seq: i64, t: &'static str) -> AuditEvent {
        AuditEvent::seal(
            EventDraft::new(t, Actor::user("usr_1"), Via::Api),
            "org_1",
            seq - 1,
            GENESIS_HASH,
            "2026-01-01T00:00:00.000000Z".into(),
        )
    }

    #[test]
    fn the_ring_is_bounded_and_the_view_follows_it() {
        let mut a = Audit::default();
        for s in 1..=(RING as i64 + 100) {
            assert!(a.push(ev(s, "action.requested")));
        }
        assert_eq!(a.held(), RING);
        assert_eq!(a.len(), RING);
        assert_eq!(a.at(0).unwrap().seq, 101);
        assert_eq!(a.current().unwrap().seq, RING as i64 + 100);
        assert!(!a.push(ev(50, "action.requested")), "old seqs are not taken again");
    }

    #[test]
    fn pausing_counts_new_matching_events_and_keeps_the_cursor() {
        let mut a = Audit::default();
        a.set_filter("type:approval.*".into());
        a.push(ev(1, "approval.requested"));
        a.follow = false;
        a.push(ev(2, "action.requested"));
        a.push(ev(3, "approval.granted"));
        assert_eq!(a.paused_new, 1);
        assert_eq!(a.cursor, 0);
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn older_pages_go_before_the_ring() {
        let mut a = Audit::default();
        for s in 501..=510 {
            a.push(ev(s, "x.y"));
        }
        a.prepend((1..=500).map(|s| ev(s, "x.y")).collect());
        assert_eq!(a.held(), 510);
        assert_eq!(a.at(0).unwrap().seq, 1);
        assert!(a.at_start);
    }
}
