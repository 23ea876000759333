//! Asking why: for a deny, and for engaging or lifting a kill switch. A reason is
//! required; it goes on the audit log and every console shows it.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use tui_textarea::TextArea;

use super::{Confirm, Dialog, Outcome, PendingOp, frame_box};
use crate::console::theme::Theme;

#[derive(Clone, Debug, PartialEq)]
pub enum ReasonFor {
    Deny { id: String, tool: String, payload_sha256: String },
    Engage { tool: Option<String> },
    Lift { tool: Option<String> },
}

pub struct Reason {
    pub purpose: ReasonFor,
    pub text: TextArea<'static>,
    pub error: Option<String>,
}

/// How a kill-switch target reads in a sentence.
pub fn target_name(tool: &Option<String>) -> String {
    match tool {
        None => "the whole workspace".into(),
        Some(t) => format!("`{t}`"),
    }
}

impl Reason {
    pub fn new(purpose: ReasonFor) -> Reason {
        let mut text = TextArea::default();
        text.set_placeholder_text("type the reason, then enter");
        text.set_cursor_line_style(ratatui::style::Style::default());
        Reason { purpose, text, error: None }
    }

    fn value(&self) -> String {
        self.text.clone().into_lines().join(" ").trim().to_string()
    }

    pub fn paste(&mut self, s: &str) {
        self.text.insert_str(s.replace(['\n', '\r'], " "));
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Esc => Outcome::Close,
            KeyCode::Enter => {
                let reason = self.value();
                if reason.is_empty() {
                    self.error = Some("A reason is required.".into());
                    return Outcome::Stay;
                }
                if reason.chars().count() > 500 {
                    self.error = Some("At most 500 characters.".into());
                    return Outcome::Stay;
                }
                Outcome::Next(Box::new(Dialog::Confirm(self.confirmation(reason))))
            }
            _ => {
                self.text.input(key);
                self.error = None;
                Outcome::Stay
            }
        }
    }

    fn confirmation(&self, reason: String) -> Confirm {
        match &self.purpose {
            ReasonFor::Deny { id, tool, payload_sha256 } => Confirm {
                title: format!("Deny {tool}?"),
                lines: vec![
                    format!("Deny `{tool}` with payload {}…", &payload_sha256[..payload_sha256.len().min(12)]),
                    format!("Reason: {reason}"),
                    "One deny ends the approval: the action will not run.".into(),
                ],
                danger: true,
                op: PendingOp::Deny { id: id.clone(), tool: tool.clone(), payload_sha256: payload_sha256.clone(), reason },
            },
            ReasonFor::Engage { tool } => Confirm {
                title: "Engage the kill switch?".into(),
                lines: vec![
                    format!("Stop {} now.", target_name(tool)),
                    format!("Reason: {reason}"),
                    match tool {
                        None => "Every call is blocked, and no approval can be used, until someone lifts it.".into(),
                        Some(t) => format!("Every call of {t} is blocked, and no approval for it can be used, until someone lifts it."),
                    },
                ],
                danger: true,
                op: PendingOp::Switch { tool: tool.clone(), engaged: true, reason },
            },
            ReasonFor::Lift { tool } => Confirm {
                title: "Lift the kill switch?".into(),
                lines: vec![format!("Let {} run again.", target_name(tool)), format!("Reason: {reason}")],
                danger: false,
                op: PendingOp::Switch { tool: tool.clone(), engaged: false, reason },
            },
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let (title, prompt, danger) = match &self.purpose {
            ReasonFor::Deny { tool, payload_sha256, .. } => {
                (format!("Deny {tool}"), format!("Why deny `{tool}` ({}…)?", &payload_sha256[..payload_sha256.len().min(12)]), true)
            }
            ReasonFor::Engage { tool } => ("Kill switch — why?".to_string(), format!("Why stop {}?", target_name(tool)), true),
            ReasonFor::Lift { tool } => ("Lift kill switch — why?".to_string(), format!("Why let {} run again?", target_name(tool)), false),
        };
        let inner = frame_box(f, area, 64, 9, &title, theme, danger);
        let [p, input, err, keys] =
            Layout::vertical([Constraint::Length(1), Constraint::Length(3), Constraint::Length(1), Constraint::Length(1)]).areas(inner);
        f.render_widget(Paragraph::new(Line::styled(prompt, theme.base)).wrap(Wrap { trim: true }), p);
        let mut text = self.text.clone();
        text.set_block(Block::bordered().border_style(theme.border));
        text.set_style(theme.base);
        f.render_widget(&text, input);
        if let Some(e) = &self.error {
            f.render_widget(Line::styled(e.clone(), theme.danger), err);
        }
        f.render_widget(
            Line::from(vec![
                Span::styled("enter", theme.key),
                Span::styled(" next   ", theme.muted),
                Span::styled("esc", theme.key),
                Span::styled(" cancel", theme.muted),
            ]),
            keys,
        );
    }
}
