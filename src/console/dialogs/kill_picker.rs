//! The first step of the kill-switch dialog: what to stop.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Dialog, Outcome, frame_box};
use crate::console::theme::Theme;

pub struct KillPicker {
    /// `None` is the whole workspace.
    pub options: Vec<Option<String>>,
    pub engaged: Vec<Option<String>>,
    pub selected: usize,
}

impl KillPicker {
    pub fn new(options: Vec<Option<String>>, engaged: Vec<Option<String>>) -> KillPicker {
        KillPicker { options, engaged, selected: 0 }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Esc | KeyCode::Char('n') => Outcome::Close,
            KeyCode::Char('j') | KeyCode::Down => {
                self.selected = (self.selected + 1).min(self.options.len().saturating_sub(1));
                Outcome::Stay
            }
            KeyCode::Char('k') | KeyCode::Up => {
                self.selected = self.selected.saturating_sub(1);
                Outcome::Stay
            }
            KeyCode::Enter => match self.options.get(self.selected) {
                Some(t) if self.engaged.contains(t) => Outcome::Stay,
                Some(t) => Outcome::Next(Box::new(Dialog::kill_reason(t.clone()))),
                None => Outcome::Close,
            },
            _ => Outcome::Stay,
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let visible = (area.height.saturating_sub(8) as usize).max(3);
        let height = (self.options.len().min(visible) as u16) + 5;
        let inner = frame_box(f, area, 60, height, "Kill switch — what to stop?", theme, true);
        let offset = self.selected.saturating_sub(visible.saturating_sub(1));
        let mut lines: Vec<Line> = Vec::new();
        for (i, opt) in self.options.iter().enumerate().skip(offset).take(visible) {
            let label = match opt {
                None => "the whole workspace (every tool)".to_string(),
                Some(t) => t.clone(),
            };
            let engaged = self.engaged.contains(opt);
            let mark = if i == self.selected { "▸ " } else { "  " };
            let style = if i == self.selected {
                theme.selection
            } else if engaged {
                theme.disabled
            } else {
                theme.base
            };
            let mut spans = vec![Span::styled(format!("{mark}{label}"), style)];
            if engaged {
                spans.push(Span::styled("  (already engaged)", theme.muted));
            }
            lines.push(Line::from(spans));
        }
        lines.push(Line::default());
        lines.push(Line::from(vec![
            Span::styled("enter", theme.key),
            Span::styled(" choose   ", theme.muted),
            Span::styled("esc", theme.key),
            Span::styled(" cancel", theme.muted),
        ]));
        f.render_widget(Paragraph::new(lines), inner);
    }
}
