//! The approval queue: soonest expiry first, the exact payload, its diff, its hash, and
//! approve/deny behind a confirmation.

use std::collections::HashMap;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Wrap};

use crate::approval::Verdict;
use crate::client::ClientError;
use crate::console::action::Effect;
use crate::console::app::App;
use crate::console::dialogs::{Confirm, Dialog, PendingOp, Reason, ReasonFor};
use crate::console::keys::Command;
use crate::console::widgets::{self, clip, countdown, diff, fields};
use crate::model::Approval;

#[derive(Default)]
pub struct Approvals {
    /// The pending queue, soonest expiry first.
    pub items: Vec<Approval>,
    /// Positions in `items` that pass the filter, kept current on every change so a
    /// frame never scans the whole queue.
    view: Vec<usize>,
    pub filter: String,
    /// The selected approval, by id: new arrivals never move it.
    pub selected: Option<String>,
    /// Its position in `view`.
    pub cursor: usize,
    /// Approvals fetched in full (payload, current, reasons), by id.
    pub details: HashMap<String, Approval>,
    /// Whether the detail is open (full-screen when the terminal is narrow).
    pub open: bool,
    /// The approval open in the detail left the queue: nothing is selected until the
    /// person moves, so a reflexive `a` can never land on the approval that slid into its
    /// place, which they have not read.
    pub gone: bool,
    /// The last approval this console decided, so its leaving the queue is not reported
    /// as news.
    pub decided: Option<String>,
    pub scroll: u16,
    pub loaded: bool,
    pub inflight: bool,
    pub stale: bool,
}

impl Approvals {
    pub fn visible_len(&self) -> usize {
        self.view.len()
    }

    pub fn visible(&self, i: usize) -> Option<&Approval> {
        self.view.get(i).and_then(|&p| self.items.get(p))
    }

    pub fn current(&self) -> Option<&Approval> {
        if self.gone { None } else { self.visible(self.cursor) }
    }

    fn matches(filter: &str, a: &Approval) -> bool {
        if filter.is_empty() {
            return true;
        }
        let f = filter.to_lowercase();
        [Some(a.tool.as_str()), a.agent_name.as_deref(), a.requester_email.as_deref(), a.resource.as_deref(), Some(a.id.as_str())]
            .into_iter()
            .flatten()
            .any(|s| s.to_lowercase().contains(&f))
    }

    fn rebuild(&mut self) {
        self.view = (0..self.items.len()).filter(|&i| Self::matches(&self.filter, &self.items[i])).collect();
        let found = self.selected.as_ref().and_then(|id| self.view.iter().position(|&p| self.items[p].id == *id));
        self.cursor = match (&self.selected, found) {
            (_, Some(at)) => at,
            (Some(_), None) => {
                // The approval being read left the queue (decided, expired, consumed): never
                // show another one in its place, half-way down, as if it were the same.
                self.gone |= self.open;
                self.open = false;
                self.scroll = 0;
                self.cursor.min(self.view.len().saturating_sub(1))
            }
            (None, None) => 0,
        };
        self.selected = self.current().map(|a| a.id.clone());
    }

    pub fn set_filter(&mut self, f: String) {
        self.filter = f;
        self.rebuild();
    }

    /// Replaces the queue, keeping the selection on the same approval if it is still there.
    pub fn set_items(&mut self, mut items: Vec<Approval>) {
        items.sort_by(|a, b| a.expires_at.cmp(&b.expires_at).then_with(|| a.id.cmp(&b.id)));
        self.items = items;
        self.loaded = true;
        let keep: std::collections::HashSet<&str> = self.items.iter().map(|a| a.id.as_str()).collect();
        self.details.retain(|id, _| keep.contains(id.as_str()));
        self.rebuild();
    }

    /// Selects the pending approval `id`, clearing a filter that hides it. False if it is
    /// not in the queue.
    pub fn reveal(&mut self, id: &str) -> bool {
        if !self.items.iter().any(|a| a.id == id) {
            return false;
        }
        if !self.view.iter().any(|&p| self.items[p].id == id) {
            self.set_filter(String::new());
        }
        match self.view.iter().position(|&p| self.items[p].id == id) {
            Some(at) => {
                self.select(at);
                true
            }
            None => false,
        }
    }

    pub fn put_detail(&mut self, a: Approval) {
        self.details.insert(a.id.clone(), a);
    }

    /// Takes a decision's answer, which says where the approval stands but carries
    /// neither payload nor trace: what was already fetched in full is kept.
    fn merge_detail(&mut self, mut a: Approval) {
        if let Some(had) = self.details.remove(&a.id) {
            a.payload = a.payload.or(had.payload);
            a.current = a.current.or(had.current);
            a.decision = a.decision.or(had.decision);
        }
        self.details.insert(a.id.clone(), a);
    }

    fn select(&mut self, cursor: usize) -> Option<Effect> {
        if self.view.is_empty() {
            return None;
        }
        self.cursor = cursor.min(self.view.len() - 1);
        self.gone = false;
        self.scroll = 0;
        let id = self.current()?.id.clone();
        self.selected = Some(id.clone());
        (!self.details.contains_key(&id)).then_some(Effect::FetchApproval(id))
    }
}

/// The queue changed on the server: fetch it (once, however many events say so).
pub fn stale(app: &mut App) {
    if app.approvals.inflight {
        app.approvals.stale = true;
    } else {
        app.approvals.inflight = true;
        app.effect(Effect::FetchApprovals);
    }
}

pub fn on_list(app: &mut App, r: Result<Vec<Approval>, ClientError>) {
    app.approvals.inflight = false;
    match r {
        Ok(items) => {
            // The queue names the agents and people it shows: whoever cannot list tokens or
            // members (an approver) still reads `agent billing-agent` in the audit tail,
            // not a token id. What the Access lists say, when loaded, is kept.
            for a in &items {
                if let (Some(id), Some(name)) = (&a.agent_token_id, &a.agent_name) {
                    app.names.entry(id.clone()).or_insert_with(|| format!("agent {name}"));
                }
                if let Some(email) = &a.requester_email {
                    app.names.entry(a.requester_id.clone()).or_insert_with(|| email.clone());
                }
            }
            // A decision half-made on an approval that is no longer pending: close it
            // rather than let a `y` meet a refusal.
            if let Some(id) = deciding(app)
                && !items.iter().any(|a| a.id == id)
            {
                app.dialog = None;
                app.warn("That approval is no longer pending (decided by someone else, expired or used); nothing was sent.");
            }
            // The approval open in the detail left the queue, and not by this console's
            // own decision: say so, since the detail closes under the person's eyes.
            let lost = match (&app.approvals.selected, app.approvals.open) {
                (Some(id), true) if !items.iter().any(|a| a.id == *id) && app.approvals.decided.as_ref() != Some(id) => {
                    app.approvals.items.iter().find(|a| a.id == *id).map(|a| a.tool.clone())
                }
                _ => None,
            };
            app.approvals.set_items(items);
            if let Some(tool) = lost {
                app.warn(format!(
                    "The {tool} approval you were reading left the queue (decided by someone else, expired or used). Nothing is selected: j/k picks one."
                ));
            }
            if let Some(a) = app.approvals.current()
                && !app.approvals.details.contains_key(&a.id)
            {
                let id = a.id.clone();
                app.effect(Effect::FetchApproval(id));
            }
        }
        Err(e) if e.needs_sign_in() => app.ask_sign_in(e.to_string()),
        Err(e) => app.warn(format!("Could not load the queue: {e}")),
    }
    if std::mem::take(&mut app.approvals.stale) {
        stale(app);
    }
}

pub fn on_decided(app: &mut App, verdict: Verdict, r: Result<Approval, ClientError>) {
    match r {
        Ok(a) => {
            let text = match (verdict, a.state) {
                (Verdict::Deny, _) => format!("Denied {} — it will not run.", a.tool),
                (Verdict::Approve, crate::approval::State::Approved) => format!("Approved {} — the agent may now run it once.", a.tool),
                (Verdict::Approve, _) => {
                    format!("Approved {} ({} of {}) — it needs one more approval, from someone else.", a.tool, a.approvals, a.required)
                }
            };
            app.say(text);
            app.approvals.decided = Some(a.id.clone());
            app.approvals.merge_detail(a);
        }
        Err(e) if e.needs_sign_in() => app.ask_sign_in(e.to_string()),
        Err(e) => app.warn(format!("Not decided: {e}")),
    }
    stale(app);
}

pub fn on_command(app: &mut App, cmd: Command) {
    let page = app.size.1.saturating_sub(8).max(1) as usize;
    if cmd == Command::Bottom && app.approvals.open {
        // The end of the detail, not the last approval.
        let lines = app.approvals.current().map_or(0, |x| detail_lines(app, x, detail_width(app.size.0)).len());
        app.approvals.scroll = lines.saturating_sub(page) as u16;
        return;
    }
    let a = &mut app.approvals;
    let fetch = match cmd {
        Command::Up if a.open => {
            a.scroll = a.scroll.saturating_sub(1);
            None
        }
        Command::Down if a.open => {
            a.scroll = a.scroll.saturating_add(1);
            None
        }
        Command::PageDown if a.open => {
            a.scroll = a.scroll.saturating_add(page as u16);
            None
        }
        Command::PageUp if a.open => {
            a.scroll = a.scroll.saturating_sub(page as u16);
            None
        }
        Command::Top if a.open => {
            a.scroll = 0;
            None
        }
        // Nothing selected: the first move selects the row under the cursor.
        Command::Up | Command::Down if a.gone => a.select(a.cursor),
        Command::Up => a.select(a.cursor.saturating_sub(1)),
        Command::Down => a.select(a.cursor + 1),
        Command::Top => a.select(0),
        Command::Bottom => a.select(a.view.len().saturating_sub(1)),
        Command::PageDown => a.select(a.cursor + page),
        Command::PageUp => a.select(a.cursor.saturating_sub(page)),
        Command::Open => {
            if a.gone {
                a.select(a.cursor);
            }
            a.open = a.current().is_some();
            a.scroll = 0;
            a.current().filter(|x| !a.details.contains_key(&x.id)).map(|x| Effect::FetchApproval(x.id.clone()))
        }
        Command::Back => {
            a.open = false;
            a.scroll = 0;
            None
        }
        Command::Approve => {
            ask(app, Verdict::Approve);
            None
        }
        Command::Deny => {
            ask(app, Verdict::Deny);
            None
        }
        Command::SimulateThis => {
            simulate_this(app);
            None
        }
        Command::RuleFromThis => {
            if let Some(why) = app.missing("constitution:read", "draft rules") {
                app.warn(why);
            } else if let Some(a) = app.approvals.current() {
                let id = a.action_id.clone();
                app.say(format!("Drafting a rule from {id}…"));
                app.effect(Effect::DraftFromAction(id));
            }
            None
        }
        _ => None,
    };
    if let Some(e) = fetch {
        app.effect(e);
    }
}

/// Opens Simulate with a dry run of the selected approval's action: its exact payload,
/// `current`, confidence and resource, ready to edit.
fn simulate_this(app: &mut App) {
    let Some(a) = app.approvals.current() else {
        app.warn("Nothing is selected.");
        return;
    };
    let Some(d) = app.approvals.details.get(&a.id).filter(|d| d.payload.is_some()) else {
        let id = a.id.clone();
        app.warn("The approval's payload is still loading; try again in a moment.");
        app.effect(Effect::FetchApproval(id));
        return;
    };
    let fields =
        crate::console::screens::simulate::request_from(d.payload.as_ref(), d.current.as_ref(), d.confidence, d.resource.as_deref());
    let origin =
        crate::console::screens::simulate::Origin { action_id: d.action_id.clone(), payload: d.payload.clone().unwrap_or_default() };
    let tool = d.tool.clone();
    app.show(crate::console::app::Screen::Simulate);
    app.simulate.start(tool, fields, Some(origin));
}

/// Opens the confirmation for approving, or the reason for denying, the selected approval.
fn ask(app: &mut App, verdict: Verdict) {
    let what = if verdict == Verdict::Approve { "approve" } else { "deny" };
    if let Some(why) = app.missing("approvals:decide", &format!("{what} approvals")) {
        app.warn(why);
        return;
    }
    let Some(a) = app.approvals.current().cloned() else {
        app.warn("Nothing is selected.");
        return;
    };
    if a.requester_id == app.session.member_id {
        app.warn("You requested this action: someone else must decide it.");
        return;
    }
    if a.decisions.iter().any(|d| d.member_id == app.session.member_id) {
        app.warn("You have already decided this one: a second person must.");
        return;
    }
    let short = &a.payload_sha256[..12];
    let stopped = stopped_by(app, &a.tool);
    app.dialog = Some(match verdict {
        Verdict::Approve => {
            let count = if a.required == 2 {
                format!("This is approval {} of 2.", a.approvals + 1)
            } else {
                "One approval lets it run once.".into()
            };
            let mut lines = vec![
                format!("Approve `{}` with payload {short}… (SHA-256)", a.tool),
                format!("requested by {}", a.requester_email.as_deref().unwrap_or(&a.requester_id)),
                count,
                "The hash you saw is sent with your decision: if the payload changed, it is refused.".into(),
            ];
            if let Some(switch) = stopped {
                lines.push(format!("■ {switch}: the approved action cannot run until it is lifted."));
            }
            Dialog::Confirm(Confirm {
                title: format!("Approve {}?", a.tool),
                lines,
                danger: false,
                op: PendingOp::Approve { id: a.id.clone(), tool: a.tool.clone(), payload_sha256: a.payload_sha256.clone() },
            })
        }
        Verdict::Deny => Dialog::Reason(Box::new(Reason::new(ReasonFor::Deny {
            id: a.id.clone(),
            tool: a.tool.clone(),
            payload_sha256: a.payload_sha256.clone(),
        }))),
    });
}

/// The approval the open dialog is about to decide, if it is one.
fn deciding(app: &App) -> Option<String> {
    match app.dialog.as_ref()? {
        Dialog::Confirm(Confirm { op: PendingOp::Approve { id, .. } | PendingOp::Deny { id, .. }, .. }) => Some(id.clone()),
        Dialog::Reason(r) => match &r.purpose {
            ReasonFor::Deny { id, .. } => Some(id.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// The engaged kill switch that stops `tool`, said for a person, if any.
fn stopped_by(app: &App, tool: &str) -> Option<String> {
    let engaged = app.engaged();
    let (target, reason) =
        engaged.iter().find(|(t, _)| t.is_none()).or_else(|| engaged.iter().find(|(t, _)| t.as_deref() == Some(tool)))?;
    let what = match target {
        None => "The whole workspace is stopped by a kill switch".to_string(),
        Some(t) => format!("{t} is stopped by a kill switch"),
    };
    Some(if reason.is_empty() { what } else { format!("{what} ({})", clip(reason, 60)) })
}

// ---------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------

/// From this width the queue and the open approval's detail share the screen.
const WIDE: u16 = 120;
/// The queue's width beside the detail, which gets the rest: a 64-digit hash must fit on
/// one line.
const LIST_BESIDE: u16 = 50;

/// The columns the detail's text has on a screen `width` wide (its left edge, when beside
/// the queue, takes one).
fn detail_width(width: u16) -> usize {
    if width >= WIDE { width.saturating_sub(LIST_BESIDE + 1) as usize } else { width as usize }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let a = &app.approvals;
    if area.width >= WIDE {
        let [list, detail] = Layout::horizontal([Constraint::Length(LIST_BESIDE), Constraint::Fill(1)]).areas(area);
        draw_list(f, list, app);
        draw_detail(f, detail, app);
    } else if a.open {
        draw_detail(f, area, app);
    } else {
        draw_list(f, area, app);
    }
}

fn draw_list(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let a = &app.approvals;
    let title = if a.filter.is_empty() {
        format!(" Pending approvals ({}) ", a.items.len())
    } else {
        format!(" Pending approvals ({} of {}, filter: {}) ", a.visible_len(), a.items.len(), a.filter)
    };
    let block = Block::default().borders(Borders::TOP).border_style(t.border).title(Line::styled(title, t.title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if !a.loaded {
        f.render_widget(Paragraph::new(Line::styled("Loading the queue…", t.muted)), inner);
        return;
    }
    if a.visible_len() == 0 {
        let msg = if a.items.is_empty() {
            "Nothing waits for a decision. New requests appear here as they arrive."
        } else {
            "No approval matches the filter (esc in / clears it)."
        };
        f.render_widget(Paragraph::new(Line::styled(msg, t.muted)).wrap(Wrap { trim: true }), inner);
        return;
    }
    let height = inner.height.saturating_sub(1) as usize;
    let start = super::window_start(a.cursor, a.visible_len(), height);
    // Beside the detail there is no room for the agent column.
    let narrow = area.width < 80;
    let (header, widths) = if narrow {
        (
            Row::new(["TTL", "TOOL", "REQUESTER", "OK", "CONF"]),
            vec![Constraint::Length(6), Constraint::Length(18), Constraint::Fill(1), Constraint::Length(3), Constraint::Length(4)],
        )
    } else {
        (
            Row::new(["TTL", "TOOL", "AGENT", "REQUESTER", "OK", "CONF"]),
            vec![
                Constraint::Length(7),
                Constraint::Fill(2),
                Constraint::Fill(2),
                Constraint::Fill(3),
                Constraint::Length(3),
                Constraint::Length(4),
            ],
        )
    };
    let cols = widgets::column_widths(inner.width, &widths);
    let mut selected = None;
    let rows: Vec<Row> = (start..(start + height).min(a.visible_len()))
        .filter_map(|i| a.visible(i).map(|x| (i, x)))
        .enumerate()
        .map(|(at, (i, x))| {
            if i == a.cursor && !a.gone {
                selected = Some(at);
            }
            let (ttl, secs) = countdown(app.now, &x.expires_at);
            let ttl_style = if secs < 120 {
                t.danger
            } else if secs < 600 {
                t.warn
            } else {
                t.base
            };
            // Urgency that reads without colour too (NO_COLOR, a monochrome terminal).
            let ttl = if secs < 120 { format!("!{ttl}") } else { ttl };
            let who = x.agent_name.clone().unwrap_or_else(|| "(person)".into());
            let need = format!("{}/{}", x.approvals, x.required);
            let conf = x.confidence.map_or("—".to_string(), |c| format!("{c:.2}"));
            let conf_style = if x.confidence.is_some_and(|c| c < 0.5) { t.warn } else { t.base };
            let requester = x.requester_email.as_deref().unwrap_or(&x.requester_id);
            // A stopped tool is marked: approving it is allowed, running it is not.
            // Each cut with `…` to its column: two long tool names cut silently at the
            // same place look like one tool.
            let tool = if stopped_by(app, &x.tool).is_some() {
                Cell::from(Span::styled(format!("■ {}", widgets::clip_middle(&x.tool, cols[1].saturating_sub(2))), t.danger))
            } else {
                Cell::from(widgets::clip_middle(&x.tool, cols[1]))
            };
            let mut cells = vec![Cell::from(Span::styled(ttl, ttl_style)), tool];
            if narrow {
                cells.push(Cell::from(clip(requester, cols[2])));
            } else {
                cells.push(Cell::from(clip(&who, cols[2])));
                cells.push(Cell::from(clip(requester, cols[3])));
            }
            cells.push(Cell::from(need));
            cells.push(Cell::from(Span::styled(conf, conf_style)));
            Row::new(cells).style(t.base)
        })
        .collect();
    let table = Table::new(rows, widths).header(header.style(t.muted)).column_spacing(1);
    widgets::selectable_table(f, table, inner, selected, t.selection);
}

/// The lines of an approval's detail: everything an approver must see.
pub fn detail_lines(app: &App, base: &Approval, width: usize) -> Vec<Line<'static>> {
    let t = &app.theme;
    let full = app.approvals.details.get(&base.id);
    let a = full.unwrap_or(base);
    let mut out: Vec<Line<'static>> = Vec::new();
    let (ttl, secs) = countdown(app.now, &a.expires_at);
    let ttl_style = if secs < 120 { t.danger } else { t.warn };
    out.push(Line::from(vec![
        Span::styled(a.tool.clone(), t.title),
        Span::styled(
            format!("  {}  ", serde_json::to_value(a.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()),
            t.muted,
        ),
        Span::styled(format!("expires in {ttl}"), ttl_style),
    ]));
    let approvers: Vec<String> = a.decisions.iter().map(|d| d.member_email.clone().unwrap_or(d.member_id.clone())).collect();
    let so_far = if approvers.is_empty() { "nobody yet".to_string() } else { approvers.join(", ") };
    let need = match (a.required, a.approvals) {
        // Worded alike everywhere: "approvals", counted, "of 2".
        (1, 0) => "needs one approval".to_string(),
        (2, 0) => "needs two approvals, from two people".to_string(),
        (r, n) if n >= r => "approved".to_string(),
        (r, n) => format!("needs one more approval ({n} of {r})"),
    };
    out.push(Line::from(vec![Span::styled(need, t.accent), Span::styled(format!(" · approved so far: {so_far}"), t.base)]));
    // Now, not when it was asked: the trace below is the gate's decision at request time.
    if let Some(switch) = stopped_by(app, &a.tool) {
        out.extend(widgets::hanging(
            vec![Span::styled("■ ", t.danger)],
            &format!("{switch}: it cannot run now, even if approved."),
            t.danger,
            width,
        ));
    }
    let agent = a.agent_name.as_deref().map(|n| format!(" via agent \"{n}\"")).unwrap_or_default();
    out.push(Line::styled(format!("requested by {}{agent}", a.requester_email.as_deref().unwrap_or(&a.requester_id)), t.base));
    let conf = a.confidence.map_or("not given".to_string(), |c| format!("{c:.2}"));
    let res = a.resource.as_deref().map(|r| format!(" · resource {r}")).unwrap_or_default();
    out.push(Line::styled(format!("confidence {conf}{res}"), t.base));
    if let Some(r) = &a.reason {
        out.extend(widgets::hanging(vec![Span::styled("reason: ", t.muted)], &widgets::printable(r), t.base, width));
    }
    out.push(Line::styled("SHA-256 of the canonical payload (your decision is pinned to it):", t.muted));
    out.push(Line::styled(a.payload_sha256.clone(), t.accent));
    let Some(full) = full else {
        out.push(Line::default());
        out.push(Line::styled("Loading the payload…", t.muted));
        return out;
    };
    let payload = full.payload.clone().unwrap_or_default();
    out.push(Line::default());
    out.push(Line::styled("── Fields ──", t.title));
    for (k, v, kind) in fields::rows(&payload) {
        let style = match kind {
            fields::Kind::Amount => t.warn,
            fields::Kind::Recipients => t.accent,
            fields::Kind::Plain => t.base,
        };
        out.extend(widgets::hanging(vec![Span::styled(widgets::pad(&clip(&k, 15), 16), t.muted)], &v, style, width));
    }
    out.push(Line::default());
    out.push(Line::styled("── Diff: current → proposed ──", t.title));
    let new = diff::pretty(&payload);
    match &full.current {
        Some(cur) => out.extend(diff::lines(&diff::pretty(cur), &new, t, width)),
        None => {
            out.push(Line::styled("(no current state was given: everything is new)", t.muted));
            out.extend(diff::lines("", &new, t, width));
        }
    }
    if let Some(d) = &full.decision {
        out.push(Line::default());
        out.push(Line::styled("── Why it waits (the gate's decision when it was asked) ──", t.title));
        for c in &d.cited_rules {
            let err = c.error.as_deref().map(|e| format!(" (failed: {e})")).unwrap_or_default();
            out.push(Line::styled(format!("rule {} → {}{err}  {}", c.rule_id, c.effect.as_str(), c.title), t.warn));
        }
        let rows: Vec<widgets::TraceRow> = d
            .trace
            .iter()
            .map(|s| {
                let style = if s.verdict == "pass" { t.muted } else { t.base };
                widgets::TraceRow {
                    stage: s.stage.clone(),
                    verdict: s.verdict.clone(),
                    detail: s.detail.clone(),
                    stage_style: style,
                    verdict_style: style,
                    detail_style: style,
                }
            })
            .collect();
        out.extend(widgets::trace(&rows, 0, width));
    }
    out
}

fn draw_detail(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    // Beside the queue a left edge divides the two; alone, it has a top rule like every
    // other screen (a corner with one edge reads as a box drawn half-way).
    let borders = if area.x > 0 { Borders::TOP | Borders::LEFT } else { Borders::TOP };
    let block = Block::default().borders(borders).border_style(t.border).title(Line::styled(" Approval ", t.title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(a) = app.approvals.current() else {
        f.render_widget(Paragraph::new(Line::styled("Select an approval to see its payload.", t.muted)), inner);
        return;
    };
    let lines = detail_lines(app, a, inner.width as usize);
    f.render_widget(Paragraph::new(lines).scroll((app.approvals.scroll, 0)).wrap(Wrap { trim: false }), inner);
}
