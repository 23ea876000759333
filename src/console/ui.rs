//! Drawing: a pure function of the state. It never waits on anything and never changes
//! the state; the same state always draws the same screen.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::app::{App, Conn, Input, Screen};
use super::keys;
use super::screens;

/// The smallest terminal the console draws in.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;
/// At most this many lines name engaged kill switches (at 80 columns, room for about twenty).
const MAX_BANNER_LINES: usize = 4;

/// Whether the console is too small to draw: then only `q` and `ctrl-c` act, since nothing
/// a key would change can be seen.
pub fn too_small_for(size: (u16, u16)) -> bool {
    size.0 < MIN_WIDTH || size.1 < MIN_HEIGHT
}

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    f.render_widget(Block::default().style(app.theme.base), area);
    if too_small_for((area.width, area.height)) {
        too_small(f, area, app);
        return;
    }
    let banners = banner_lines(app);
    let toast_lines = toast_lines(app, area.width);
    let [header, banner, tabs, body, toast, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banners.len() as u16),
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(toast_lines.len().max(1) as u16),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(f, header, app);
    f.render_widget(Paragraph::new(banners), banner);
    draw_tabs(f, tabs, app);
    match app.screen {
        Screen::Approvals => screens::approvals::draw(f, body, app),
        Screen::Audit => screens::audit::draw(f, body, app),
        Screen::Switches => screens::switches::draw(f, body, app),
        Screen::Access => screens::access::draw(f, body, app),
        Screen::Simulate => screens::simulate::draw(f, body, app),
    }
    f.render_widget(Paragraph::new(toast_lines), toast);
    draw_footer(f, footer, app);
    if let Some(d) = &app.dialog {
        d.draw(f, body, &app.theme);
    }
}

fn too_small(f: &mut Frame, area: Rect, app: &App) {
    let mut text = vec![
        Line::styled("Terminal too small", app.theme.danger),
        Line::styled(format!("{}×{} — Countersign needs at least {MIN_WIDTH}×{MIN_HEIGHT}.", area.width, area.height), app.theme.base),
        Line::styled(
            if app.quit_loses_work() {
                "Enlarge the window: q asks before quitting (unsaved work); ctrl-c quits now."
            } else {
                "Enlarge the window; until then only q works: it quits."
            },
            app.theme.muted,
        ),
    ];
    // Whatever else is hidden, a stopped workspace or tool is not.
    let engaged = app.engaged();
    if !engaged.is_empty() {
        let names: Vec<&str> = engaged.iter().map(|(tool, _)| banner_name(tool)).collect();
        text.insert(0, Line::styled(format!("■ KILL SWITCH ENGAGED: {}", names.join(" · ")), app.theme.banner));
    }
    let [mid] = Layout::vertical([Constraint::Length(text.len() as u16 + 2)]).flex(ratatui::layout::Flex::Center).areas(area);
    f.render_widget(Paragraph::new(text).alignment(Alignment::Center).wrap(Wrap { trim: true }), mid);
}

fn draw_header(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let s = &app.session;
    let conn = match &app.conn {
        Conn::Connected => Span::styled("● live", t.ok),
        Conn::Connecting { .. } => Span::styled("◌ connecting", t.warn),
        Conn::Down { .. } => Span::styled("✕ DISCONNECTED", t.danger),
    };
    let role = if s.role.is_empty() { String::new() } else { format!(" ({})", s.role) };
    let server = s.server.trim_start_matches("http://").trim_start_matches("https://");
    let ws = if s.workspace.is_empty() { "…".to_string() } else { s.workspace.clone() };
    let line = Line::from(vec![
        Span::styled(" countersign ", t.accent),
        Span::styled("│ ", t.border),
        Span::styled(ws, t.title),
        Span::styled(" │ ", t.border),
        Span::styled(format!("{}{role}", s.email), t.base),
        Span::styled(" │ ", t.border),
        Span::styled(server.to_string(), t.muted),
        Span::styled(" │ ", t.border),
        conn,
    ]);
    f.render_widget(Paragraph::new(line), area);
}

/// How a banner names an engaged switch: its tool, or the whole workspace in capitals.
fn banner_name(tool: &Option<String>) -> &str {
    tool.as_deref().unwrap_or("WORKSPACE")
}

/// Unmissable lines: engaged kill switches, and a lost connection.
pub fn banner_lines(app: &App) -> Vec<Line<'static>> {
    let t = &app.theme;
    let mut out = Vec::new();
    let engaged = app.engaged();
    if !engaged.is_empty() {
        let what: Vec<String> = engaged
            .iter()
            .map(|(tool, reason)| {
                let name = banner_name(tool);
                if reason.is_empty() { name.to_string() } else { format!("{name} ({reason})") }
            })
            .collect();
        let width = app.size.0 as usize;
        let full = format!(" ■ KILL SWITCH ENGAGED: {} ", what.join(" · "));
        if super::widgets::cols(&full) <= width {
            out.push(Line::styled(super::widgets::pad(&full, width), t.banner));
        } else {
            // Every engaged switch by name, on as many lines as that takes (reasons are on
            // the Switches screen): a switch left off this line is one nobody knows is on.
            let names: Vec<&str> = engaged.iter().map(|(tool, _)| banner_name(tool)).collect();
            let text = format!("■ KILL SWITCHES ENGAGED ({}): {} — reasons on 5 Switches", names.len(), names.join(" · "));
            for line in super::widgets::wrap(&text, width.saturating_sub(2), MAX_BANNER_LINES) {
                out.push(Line::styled(super::widgets::pad(&format!(" {line}"), width), t.banner));
            }
        }
    }
    if let Conn::Down { error, attempt, retry_at } = &app.conn {
        let secs = (*retry_at - app.now).num_seconds().max(0);
        // What to do first; the cause last, where the width cuts it.
        let text = format!(" DISCONNECTED — retrying in {secs}s (attempt {attempt}); data may be stale — {error}");
        out.push(Line::styled(super::widgets::pad(&super::widgets::clip(&text, app.size.0 as usize), app.size.0 as usize), t.banner));
    }
    out
}

fn draw_tabs(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let mut spans = vec![Span::raw(" ")];
    for (i, s) in Screen::ALL.iter().enumerate() {
        let count = match s {
            Screen::Approvals if app.approvals.loaded => format!(" ({})", app.approvals.items.len()),
            Screen::Switches => {
                let n = app.engaged().len();
                if n > 0 { format!(" ({n}!)") } else { String::new() }
            }
            _ => String::new(),
        };
        let label = format!(" {} {}{count} ", i + 1, s.title());
        spans.push(Span::styled(label, if *s == app.screen { t.selection } else { t.muted }));
        spans.push(Span::raw(" "));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The message above the footer (a palette error, else the toast), wrapped to the width:
/// up to three lines, taken from the screen above, so a long refusal is read whole rather
/// than cut at the edge of an 80-column terminal.
fn toast_lines(app: &App, width: u16) -> Vec<Line<'static>> {
    let (text, style) = match (&app.input, &app.toast) {
        (Some(Input::Palette { error: Some(e), .. }), _) => (e.as_str(), app.theme.danger),
        (_, Some(toast)) => (toast.text.as_str(), if toast.error { app.theme.danger } else { app.theme.ok }),
        _ => return Vec::new(),
    };
    let text = super::widgets::printable(text);
    super::widgets::wrap(&text, width as usize, 3).into_iter().map(|l| Line::styled(l, style)).collect()
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let line = match &app.input {
        Some(Input::Filter(text)) => Line::from(vec![
            Span::styled("/", t.key),
            Span::styled(text.clone(), t.base),
            Span::styled("█", t.accent),
            Span::styled("   enter keep · esc clear", t.muted),
        ]),
        Some(Input::Palette { text, .. }) => Line::from(vec![
            Span::styled(":", t.key),
            Span::styled(text.clone(), t.base),
            Span::styled("█", t.accent),
            Span::styled("   tab complete · enter run · esc cancel", t.muted),
        ]),
        None => {
            let open = match app.screen {
                Screen::Approvals => app.approvals.open,
                Screen::Audit => app.audit.open.is_some(),
                _ => false,
            };
            let mut spans = Vec::new();
            let offered = if app.screen == Screen::Simulate {
                super::screens::simulate::footer(&app.simulate)
            } else {
                keys::footer(app.screen, open)
            };
            for (k, mut label) in offered {
                // `space` toggles: say what it will do.
                if app.screen == Screen::Audit && k == "space" && !app.audit.follow {
                    label = "follow";
                }
                let disabled = match (app.screen, k) {
                    (Screen::Simulate, "P") => !app.can("constitution:publish"),
                    (Screen::Simulate, "r") if app.simulate.mode == super::screens::simulate::Mode::Draft => !app.can("actions:simulate"),
                    (Screen::Simulate, _) => false,
                    (Screen::Approvals, "R") => !app.can("constitution:read"),
                    (_, "a" | "d") => !app.session.known || !app.can("approvals:decide"),
                    (_, "K" | "engage") => app.session.known && !app.can("killswitch:engage"),
                    (_, "l") => app.session.known && !app.can("killswitch:lift"),
                    (_, "v") => app.session.known && !app.can("audit:read"),
                    _ => false,
                } && app.session.known;
                // "The keys that work here": one this role cannot use is not offered (pressed
                // anyway, it says which permission it needs; `?` lists every key).
                if disabled {
                    continue;
                }
                spans.push(Span::styled(format!(" {k}"), t.key));
                spans.push(Span::styled(format!(" {label} "), t.muted));
            }
            Line::from(spans)
        }
    };
    f.render_widget(Paragraph::new(line), area);
}
