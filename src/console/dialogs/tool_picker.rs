//! Which tool a dry run calls: the workspace's tools, typed to narrow them.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::{Outcome, PendingOp, frame_box};
use crate::console::theme::Theme;

pub struct ToolPicker {
    pub tools: Vec<String>,
    /// Typed letters: only tools containing them are offered.
    pub filter: String,
    pub selected: usize,
}

impl ToolPicker {
    pub fn new(tools: Vec<String>, current: Option<String>) -> ToolPicker {
        let selected = current.and_then(|c| tools.iter().position(|t| *t == c)).unwrap_or(0);
        ToolPicker { tools, filter: String::new(), selected }
    }

    fn offered(&self) -> Vec<&String> {
        self.tools.iter().filter(|t| t.contains(&self.filter)).collect()
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        let len = self.offered().len();
        match key.code {
            KeyCode::Esc => return Outcome::Close,
            KeyCode::Down => self.selected = (self.selected + 1).min(len.saturating_sub(1)),
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Enter => {
                return match self.offered().get(self.selected) {
                    Some(t) => Outcome::Run(PendingOp::SimulateTool((*t).clone())),
                    None => Outcome::Stay,
                };
            }
            KeyCode::Backspace => {
                self.filter.pop();
                self.selected = 0;
            }
            KeyCode::Char(c) if !c.is_control() => {
                self.filter.push(c);
                self.selected = 0;
            }
            _ => {}
        }
        Outcome::Stay
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let offered = self.offered();
        let visible = (area.height.saturating_sub(9) as usize).max(3);
        let height = (offered.len().clamp(1, visible) as u16) + 6;
        let inner = frame_box(f, area, 50, height, "Dry run — which tool?", theme, false);
        let mut lines =
            vec![Line::from(vec![Span::styled("filter: ", theme.muted), Span::styled(format!("{}█", self.filter), theme.base)])];
        lines.push(Line::default());
        if offered.is_empty() {
            lines.push(Line::styled("No tool matches.", theme.muted));
        }
        let offset = self.selected.saturating_sub(visible.saturating_sub(1));
        for (i, t) in offered.iter().enumerate().skip(offset).take(visible) {
            let (mark, style) = if i == self.selected { ("▸ ", theme.selection) } else { ("  ", theme.base) };
            lines.push(Line::styled(format!("{mark}{t}"), style));
        }
        lines.push(Line::default());
        lines.push(Line::from(vec![
            Span::styled("↑ ↓", theme.key),
            Span::styled(" move   ", theme.muted),
            Span::styled("enter", theme.key),
            Span::styled(" choose   ", theme.muted),
            Span::styled("esc", theme.key),
            Span::styled(" cancel", theme.muted),
        ]));
        f.render_widget(Paragraph::new(lines), inner);
    }
}
