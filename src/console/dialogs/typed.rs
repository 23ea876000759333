//! A confirmation that must be typed: for what cannot be undone by the person doing it,
//! such as giving the workspace away.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use super::{Outcome, PendingOp, text_box};
use crate::console::theme::Theme;

pub struct Typed {
    pub title: String,
    pub lines: Vec<String>,
    /// What must be typed, exactly.
    pub expect: String,
    pub typed: String,
    pub op: PendingOp,
}

impl Typed {
    pub fn paste(&mut self, s: &str) {
        self.typed.push_str(s.trim());
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Esc => Outcome::Close,
            KeyCode::Enter if self.typed == self.expect => Outcome::Run(self.op.clone()),
            KeyCode::Enter => Outcome::Stay,
            KeyCode::Backspace => {
                self.typed.pop();
                Outcome::Stay
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.typed.push(c);
                Outcome::Stay
            }
            _ => Outcome::Stay,
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let mut text: Vec<Line> = self.lines.iter().map(|l| Line::styled(l.clone(), theme.base)).collect();
        text.push(Line::default());
        text.push(Line::styled(format!("Type `{}` to confirm:", self.expect), theme.warn));
        let matches = self.typed == self.expect;
        text.push(Line::from(vec![
            Span::styled(self.typed.clone(), if matches { theme.ok } else { theme.base }),
            Span::styled("█", theme.accent),
        ]));
        text.push(Line::default());
        text.push(Line::from(vec![
            Span::styled("enter", if matches { theme.key } else { theme.disabled }),
            Span::styled(" confirm   ", theme.muted),
            Span::styled("esc", theme.key),
            Span::styled(" cancel", theme.muted),
        ]));
        text_box(f, area, 70, text, &self.title, theme, true);
    }
}
