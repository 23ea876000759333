//! "Are you sure?": names exactly what will happen; `y` does it, `n` or `esc` does not.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use super::{Outcome, PendingOp, text_box};
use crate::console::theme::Theme;

pub struct Confirm {
    pub title: String,
    pub lines: Vec<String>,
    /// Whether this is destructive or stops things (drawn in the danger style).
    pub danger: bool,
    pub op: PendingOp,
}

impl Confirm {
    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Char('y') | KeyCode::Char('Y') => Outcome::Run(self.op.clone()),
            KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => Outcome::Close,
            _ => Outcome::Stay,
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        // Tall enough for every line once wrapped: the y/n hint must never be cut off.
        let mut text: Vec<Line> = self.lines.iter().map(|l| Line::styled(l.clone(), theme.base)).collect();
        text.push(Line::default());
        text.push(Line::from(vec![
            Span::styled("y", theme.key),
            Span::styled(" confirm   ", theme.muted),
            Span::styled("n", theme.key),
            Span::styled("/", theme.muted),
            Span::styled("esc", theme.key),
            Span::styled(" cancel", theme.muted),
        ]));
        text_box(f, area, 64, text, &self.title, theme, self.danger);
    }
}
