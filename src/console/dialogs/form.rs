//! A form: text fields, a choice, a checklist. Used to add members, make roles, create
//! tokens and export the audit log. `tab` moves between fields, `enter` on the last field (or `ctrl-s`
//! anywhere) submits, `esc` cancels. What the fields mean is the caller's: the form
//! hands back its values with the purpose it was opened for.

use std::collections::BTreeSet;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Outcome, frame_box};
use crate::console::theme::Theme;

/// One field.
#[derive(Clone, Debug)]
pub enum Field {
    Text { label: String, value: String, secret: bool, hint: String },
    Choice { label: String, options: Vec<String>, selected: usize },
    Checklist { label: String, options: Vec<(String, String)>, checked: BTreeSet<usize>, cursor: usize },
}

/// What a form is for, so its values can be turned into an operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Purpose {
    NewMember,
    ChangeRole {
        id: String,
        email: String,
    },
    NewRole,
    EditRole {
        id: String,
        name: String,
    },
    NewToken,
    /// Export the whole audit log to a file in `dir` (unless the name given says where);
    /// `default_stem` names it when no name is given (the format's extension is added).
    ExportAudit {
        default_stem: String,
        dir: std::path::PathBuf,
    },
}

pub struct Form {
    pub title: String,
    pub purpose: Purpose,
    pub fields: Vec<Field>,
    pub focus: usize,
    pub error: Option<String>,
}

/// Takes `i` out of `set` if it was in, else puts it in.
fn toggle(set: &mut BTreeSet<usize>, i: usize) {
    if !set.remove(&i) {
        set.insert(i);
    }
}

/// A form's box width, at most.
const WIDTH: u16 = 86;

impl Form {
    pub fn text(&self, i: usize) -> String {
        match self.fields.get(i) {
            Some(Field::Text { value, .. }) => value.trim().to_string(),
            _ => String::new(),
        }
    }

    pub fn choice(&self, i: usize) -> String {
        match self.fields.get(i) {
            Some(Field::Choice { options, selected, .. }) => options.get(*selected).cloned().unwrap_or_default(),
            _ => String::new(),
        }
    }

    pub fn checked(&self, i: usize) -> Vec<String> {
        match self.fields.get(i) {
            Some(Field::Checklist { options, checked, .. }) => {
                checked.iter().filter_map(|c| options.get(*c).map(|o| o.0.clone())).collect()
            }
            _ => Vec::new(),
        }
    }

    pub fn paste(&mut self, s: &str) {
        if let Some(Field::Text { value, .. }) = self.fields.get_mut(self.focus) {
            value.push_str(&s.replace(['\n', '\r'], ""));
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let last = self.fields.len().saturating_sub(1);
        match key.code {
            KeyCode::Esc => return Outcome::Close,
            KeyCode::Char('s') if ctrl => return self.submit(),
            KeyCode::Tab => {
                self.focus = (self.focus + 1) % self.fields.len().max(1);
                return Outcome::Stay;
            }
            KeyCode::BackTab => {
                self.focus = (self.focus + self.fields.len() - 1) % self.fields.len().max(1);
                return Outcome::Stay;
            }
            KeyCode::Enter if self.focus == last => return self.submit(),
            KeyCode::Enter => {
                self.focus += 1;
                return Outcome::Stay;
            }
            _ => {}
        }
        self.error = None;
        match self.fields.get_mut(self.focus) {
            Some(Field::Text { value, .. }) => match key.code {
                KeyCode::Backspace => {
                    value.pop();
                }
                KeyCode::Char(c) if !ctrl => value.push(c),
                _ => {}
            },
            Some(Field::Choice { label, options, selected }) => match key.code {
                KeyCode::Left | KeyCode::Up | KeyCode::Char('k') | KeyCode::Char('h') => *selected = selected.saturating_sub(1),
                KeyCode::Right | KeyCode::Down | KeyCode::Char('j') | KeyCode::Char('l') => {
                    *selected = (*selected + 1).min(options.len().saturating_sub(1))
                }
                // Typing where nothing is typed: say so, rather than drop the keys unseen.
                KeyCode::Char(_) if !ctrl => self.error = Some(format!("{label} is a choice: ←/→ picks one; tab moves to the next field")),
                _ => {}
            },
            Some(Field::Checklist { label, options, checked, cursor }) => match key.code {
                KeyCode::Up | KeyCode::Char('k') => *cursor = cursor.saturating_sub(1),
                KeyCode::Down | KeyCode::Char('j') => *cursor = (*cursor + 1).min(options.len().saturating_sub(1)),
                KeyCode::Char(' ') | KeyCode::Char('x') => toggle(checked, *cursor),
                KeyCode::Char(_) if !ctrl => {
                    self.error = Some(format!("{label} is a list: j/k moves, space ticks; tab moves to the next field"))
                }
                _ => {}
            },
            None => {}
        }
        Outcome::Stay
    }

    fn submit(&mut self) -> Outcome {
        let op = match self.purpose {
            Purpose::ExportAudit { .. } => super::super::screens::audit::op_from_form(self),
            _ => super::super::screens::access::op_from_form(self),
        };
        match op {
            Ok(op) => Outcome::Run(op),
            Err(e) => {
                self.error = Some(e);
                Outcome::Stay
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let mut lines: Vec<Line> = Vec::new();
        let visible_checks = (area.height.saturating_sub(10) as usize).clamp(4, 14);
        // The box's inner width (see `frame_box`): what a checklist's descriptions have
        // left after the mark and the name, cut with `…` rather than by the border.
        let inner_width = area.width.min(WIDTH).saturating_sub(2) as usize;
        for (i, field) in self.fields.iter().enumerate() {
            let focused = i == self.focus;
            let label_style = if focused { theme.accent } else { theme.muted };
            match field {
                Field::Text { label, value, secret, hint } => {
                    let shown = if *secret { "•".repeat(value.chars().count()) } else { value.clone() };
                    let mut spans = vec![Span::styled(format!("{label:>12}  "), label_style), Span::styled(shown, theme.base)];
                    if focused {
                        spans.push(Span::styled("█", theme.accent));
                    }
                    if value.is_empty() && !hint.is_empty() {
                        let room = inner_width.saturating_sub(14 + 1 + 2);
                        spans.push(Span::styled(format!("  {}", crate::console::widgets::clip(hint, room)), theme.disabled));
                    }
                    lines.push(Line::from(spans));
                }
                Field::Choice { label, options, selected } => {
                    let mut spans = vec![Span::styled(format!("{label:>12}  "), label_style)];
                    for (j, o) in options.iter().enumerate() {
                        // Brackets mark the choice without colour, too.
                        let (text, style) = if j == *selected {
                            (format!("[{o}]"), if focused { theme.selection } else { theme.title })
                        } else {
                            (format!(" {o} "), theme.muted)
                        };
                        spans.push(Span::styled(text, style));
                    }
                    lines.push(Line::from(spans));
                }
                Field::Checklist { label, options, checked, cursor } => {
                    lines.push(Line::styled(format!("{label:>12}  ({} chosen; space toggles)", checked.len()), label_style));
                    let start = cursor.saturating_sub(visible_checks.saturating_sub(1));
                    for (j, (name, what)) in options.iter().enumerate().skip(start).take(visible_checks) {
                        let mark = if checked.contains(&j) { "[x]" } else { "[ ]" };
                        let style = if focused && j == *cursor { theme.selection } else { theme.base };
                        lines.push(Line::from(vec![
                            Span::styled(format!("{:>14}{mark} {name:<22}", ""), style),
                            Span::styled(crate::console::widgets::clip(what, inner_width.saturating_sub(40).max(8)), theme.muted),
                        ]));
                    }
                }
            }
        }
        lines.push(Line::default());
        if let Some(e) = &self.error {
            lines.push(Line::styled(e.clone(), theme.danger));
        }
        lines.push(Line::from(vec![
            Span::styled("tab", theme.key),
            Span::styled(" next field  ", theme.muted),
            Span::styled("ctrl-s", theme.key),
            Span::styled(" save  ", theme.muted),
            Span::styled("esc", theme.key),
            Span::styled(" cancel", theme.muted),
        ]));
        let inner = frame_box(f, area, WIDTH, lines.len() as u16 + 2, &self.title, theme, false);
        f.render_widget(Paragraph::new(lines), inner);
    }
}
