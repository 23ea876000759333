//! Kill switches: who engaged what, when and why; lift with a reason.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

use crate::client::{ClientError, SwitchSet};
use crate::console::app::App;
use crate::console::dialogs::{Dialog, Reason, ReasonFor};
use crate::console::keys::Command;
use crate::console::widgets::{ago, clip};
use crate::model::{KillSwitch, KillSwitches};

#[derive(Default)]
pub struct Switches {
    pub data: Option<KillSwitches>,
    pub cursor: usize,
}

impl Switches {
    /// New data; the cursor stays on the switch it was on, wherever that one sorts now (a
    /// lifted switch moves down the list: the row that slid under the cursor is another
    /// switch, maybe engaged, and a second `l` would lift it).
    pub fn set(&mut self, s: KillSwitches) {
        let selected = self.rows().into_iter().nth(self.cursor).map(|(target, _)| target);
        self.data = Some(s);
        let rows = self.rows();
        self.cursor = selected
            .and_then(|t| rows.iter().position(|(target, _)| *target == t))
            .unwrap_or(self.cursor)
            .min(rows.len().saturating_sub(1));
    }

    /// The workspace's switch, then each tool's, engaged first.
    pub fn rows(&self) -> Vec<(Option<String>, KillSwitch)> {
        let Some(d) = &self.data else { return Vec::new() };
        let mut tools: Vec<&KillSwitch> = d.tools.iter().collect();
        tools.sort_by_key(|s| (!s.engaged, s.target.clone()));
        std::iter::once((None, d.workspace.clone())).chain(tools.into_iter().map(|s| (Some(s.target.clone()), s.clone()))).collect()
    }

    /// The engaged switches and their reasons.
    pub fn engaged(&self) -> Vec<(Option<String>, String)> {
        self.rows().into_iter().filter(|(_, s)| s.engaged).map(|(t, s)| (t, s.reason.unwrap_or_default())).collect()
    }
}

pub fn on_command(app: &mut App, cmd: Command) {
    let n = app.switches.rows().len();
    match cmd {
        Command::Up => app.switches.cursor = app.switches.cursor.saturating_sub(1),
        Command::Down => app.switches.cursor = (app.switches.cursor + 1).min(n.saturating_sub(1)),
        Command::Top => app.switches.cursor = 0,
        Command::Bottom => app.switches.cursor = n.saturating_sub(1),
        Command::Lift | Command::Open => {
            let Some((target, s)) = app.switches.rows().into_iter().nth(app.switches.cursor) else { return };
            if !s.engaged {
                app.warn("That switch is not engaged. K engages one.");
                return;
            }
            ask_lift(app, target);
        }
        _ => {}
    }
}

/// `:lift`, `:lift workspace` or `:lift TOOL`. Bare, it lifts the one engaged switch, or
/// asks which when there are several; a switch that is not engaged is never "lifted" (that
/// would only write an audit event and leave the operator thinking something changed).
pub fn lift_by_name(app: &mut App, arg: &str) {
    if app.switches.data.is_none() {
        return app.say("The kill switches are still loading: try again in a moment.");
    }
    let engaged = app.engaged();
    let target = match arg {
        "" => match engaged.as_slice() {
            [] => return app.say("No kill switch is engaged: nothing to lift."),
            [(only, _)] => only.clone(),
            many => {
                app.switches.cursor = 0;
                return app.say(format!("{} switches are engaged: pick one and press l (or :lift workspace, :lift TOOL).", many.len()));
            }
        },
        "workspace" => None,
        tool => Some(tool.to_string()),
    };
    if !engaged.iter().any(|(t, _)| *t == target) {
        let what = target.as_deref().map_or("The workspace".to_string(), |t| format!("`{t}`"));
        return app.warn(format!("{what} is not stopped: nothing to lift."));
    }
    ask_lift(app, target);
}

/// Asks for the reason to lift a switch (after checking the permission).
pub fn ask_lift(app: &mut App, target: Option<String>) {
    if let Some(why) = app.missing("killswitch:lift", "lift a kill switch") {
        app.warn(why);
        return;
    }
    app.dialog = Some(Dialog::Reason(Box::new(Reason::new(ReasonFor::Lift { tool: target }))));
}

pub fn on_set(app: &mut App, tool: Option<String>, engaged: bool, r: Result<SwitchSet, ClientError>) {
    let what = tool.as_deref().map(|t| format!("`{t}`")).unwrap_or_else(|| "the workspace".into());
    match r {
        Ok(s) if !s.changed && engaged => app.say(format!(
            "{} was already stopped ({}); your reason is on the audit log.",
            capitalised(&what),
            s.switch.reason.as_deref().unwrap_or("no reason given")
        )),
        Ok(s) if !s.changed => app.say(format!("{} was not stopped; your reason is on the audit log.", capitalised(&what))),
        Ok(_) if engaged => app.say(format!("Kill switch engaged: {what} is stopped.")),
        Ok(_) => {
            // The workspace running again does not run a tool whose own switch is on.
            let still: Vec<String> =
                app.engaged().into_iter().filter_map(|(t, _)| t).filter(|t| tool.as_deref() != Some(t.as_str())).collect();
            match (&tool, still.as_slice()) {
                (None, []) => app.say("Kill switch lifted: the workspace runs again."),
                (None, still) => app.say(format!(
                    "Kill switch lifted: the workspace runs again, but not {} (their own switches are on).",
                    still.join(", ")
                )),
                (Some(_), _) => app.say(format!("Kill switch lifted: {what} runs again.")),
            }
        }
        Err(e) if e.needs_sign_in() => app.ask_sign_in(e.to_string()),
        Err(e @ ClientError::Unreachable(_)) => {
            // The request may never have arrived. Reloading the switches would fail the same
            // way and put its own message in place of this one; they reload on reconnecting.
            let state = if engaged { "treat it as still running" } else { "treat it as still stopped" };
            return app.warn(format!("Kill switch NOT confirmed for {what}: {state}, and try again. {e}"));
        }
        Err(e) => {
            let state = if engaged { "NOT engaged: it still runs" } else { "NOT lifted: it stays stopped" };
            app.warn(format!("Kill switch for {what} {state}. {e}"))
        }
    }
    app.effect(crate::console::action::Effect::FetchSwitches);
}

/// "the workspace" at the start of a sentence.
fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let rows_data = app.switches.rows();
    let engaged = rows_data.iter().filter(|(_, s)| s.engaged).count();
    let block = Block::default()
        .borders(Borders::TOP)
        .border_style(t.border)
        .title(Line::styled(format!(" Kill switches ({engaged} engaged) "), t.title));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.switches.data.is_none() {
        f.render_widget(Paragraph::new(Line::styled("Loading…", t.muted)), inner);
        return;
    }
    let can_lift = app.can("killswitch:lift");
    // The target as wide as the longest name needs (a third of the width at most), cut
    // with `…` beyond: two long names cut silently at the same place read as one switch.
    let name_width = rows_data
        .iter()
        .map(|(target, _)| target.as_deref().map_or(22, crate::console::widgets::cols))
        .max()
        .unwrap_or(0)
        .clamp(22, (inner.width as usize / 3).max(22));
    // The reason gets what the other columns leave, and says when it is cut.
    let reason_width = (inner.width as usize).saturating_sub(name_width + 8 + 16 + 8 + 4).max(10);
    let rows: Vec<Row> = rows_data
        .iter()
        .map(|(target, s)| {
            let name = crate::console::widgets::clip_middle(target.as_deref().unwrap_or("workspace (all tools)"), name_width);
            let state = if s.engaged { Span::styled("ENGAGED", t.danger) } else { Span::styled("off", t.ok) };
            let row = Row::new(vec![
                Cell::from(name),
                Cell::from(state),
                // A lifted switch keeps the reason it was lifted for: say which it is.
                Cell::from(clip(
                    &match (s.engaged, s.reason.as_deref()) {
                        (false, Some(r)) if !r.is_empty() => format!("lifted: {r}"),
                        (_, r) => r.unwrap_or("").to_string(),
                    },
                    reason_width,
                )),
                Cell::from(clip(s.changed_by.as_deref().map(|id| app.names.get(id).map(String::as_str).unwrap_or(id)).unwrap_or(""), 16)),
                Cell::from(s.changed_at.as_deref().map(|c| ago(app.now, c)).unwrap_or_default()),
            ]);
            row.style(t.base)
        })
        .collect();
    let widths =
        [Constraint::Length(name_width as u16), Constraint::Length(8), Constraint::Fill(3), Constraint::Length(16), Constraint::Length(8)];
    let header = Row::new(["TARGET", "STATE", "REASON", "BY", "WHEN"]).style(t.muted);
    let [table, note] = ratatui::layout::Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(inner);
    let selected = (app.switches.cursor < rows.len()).then_some(app.switches.cursor);
    crate::console::widgets::selectable_table(f, Table::new(rows, widths).header(header).column_spacing(1), table, selected, t.selection);
    let hint = if can_lift {
        Line::from(vec![
            Span::styled("K", t.key),
            Span::styled(" engage  ", t.muted),
            Span::styled("l", t.key),
            Span::styled(" lift the selected switch", t.muted),
        ])
    } else {
        Line::from(vec![
            Span::styled("K", t.key),
            Span::styled(" engage  ", t.muted),
            Span::styled("l lift (needs killswitch:lift, which your role does not grant)", t.disabled),
        ])
    };
    f.render_widget(hint, note);
}
