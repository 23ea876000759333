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
    /// Index into what is offered (see `offered`).
    pub selected: usize,
    /// After `/`: only the options whose name contains this are offered.
    pub filter: Option<String>,
    /// Why the last `enter` did nothing.
    pub note: Option<&'static str>,
}

const WORKSPACE: &str = "the whole workspace (every tool)";

fn label(opt: &Option<String>) -> &str {
    opt.as_deref().unwrap_or(WORKSPACE)
}

impl KillPicker {
    pub fn new(options: Vec<Option<String>>, engaged: Vec<Option<String>>) -> KillPicker {
        KillPicker { options, engaged, selected: 0, filter: None, note: None }
    }

    /// The options on offer, narrowed by the filter.
    fn offered(&self) -> Vec<&Option<String>> {
        let wanted = self.filter.as_deref().unwrap_or("").to_lowercase();
        self.options.iter().filter(|o| label(o).to_lowercase().contains(&wanted)).collect()
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        self.note = None;
        let len = self.offered().len();
        let last = len.saturating_sub(1);
        match (key.code, &mut self.filter) {
            (KeyCode::Down, _) => self.selected = (self.selected + 1).min(last),
            (KeyCode::Up, _) => self.selected = self.selected.saturating_sub(1),
            (KeyCode::Enter, _) => {
                return match self.offered().get(self.selected) {
                    Some(t) if self.engaged.contains(t) => {
                        self.note = Some("already engaged: lift it on 5 Switches, or choose another");
                        Outcome::Stay
                    }
                    Some(t) => Outcome::Next(Box::new(Dialog::kill_reason((*t).clone()))),
                    None => Outcome::Stay,
                };
            }
            // Typing narrows the list; `esc` clears what was typed before it closes.
            (KeyCode::Esc, Some(_)) => {
                self.filter = None;
                self.selected = 0;
            }
            (KeyCode::Backspace, Some(f)) => {
                f.pop();
                self.selected = 0;
            }
            (KeyCode::Char(c), Some(f)) if !c.is_control() => {
                f.push(c);
                self.selected = 0;
            }
            (KeyCode::Esc | KeyCode::Char('n'), None) => return Outcome::Close,
            (KeyCode::Char('/'), None) => {
                self.filter = Some(String::new());
                self.selected = 0;
            }
            (KeyCode::Char('j'), None) => self.selected = (self.selected + 1).min(last),
            (KeyCode::Char('k'), None) => self.selected = self.selected.saturating_sub(1),
            (KeyCode::Char('g'), None) => self.selected = 0,
            (KeyCode::Char('G'), None) => self.selected = last,
            _ => {}
        }
        Outcome::Stay
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let offered = self.offered();
        let visible = (area.height.saturating_sub(10) as usize).max(3);
        let shown = offered.len().clamp(1, visible);
        // The filter line, the list, where it goes on, the keys; and the borders.
        let height = shown as u16 + 5;
        let inner = frame_box(f, area, 60, height, "Kill switch — what to stop?", theme, true);
        let offset = self.selected.saturating_sub(visible.saturating_sub(1));
        let mut lines: Vec<Line> = vec![match &self.filter {
            Some(text) => Line::from(vec![Span::styled("filter: ", theme.muted), Span::styled(format!("{text}█"), theme.base)]),
            None => {
                let n = self.options.len();
                Line::styled(format!("{n} target{} · / filters by name", if n == 1 { "" } else { "s" }), theme.muted)
            }
        }];
        if offered.is_empty() {
            lines.push(Line::styled("  nothing matches", theme.muted));
        }
        for (i, opt) in offered.iter().enumerate().skip(offset).take(visible) {
            let engaged = self.engaged.contains(opt);
            let mark = if i == self.selected { "▸ " } else { "  " };
            let style = if i == self.selected {
                theme.selection
            } else if engaged {
                theme.disabled
            } else {
                theme.base
            };
            let mut spans = vec![Span::styled(format!("{mark}{}", label(opt)), style)];
            if engaged {
                spans.push(Span::styled("  (already engaged)", theme.muted));
            }
            lines.push(Line::from(spans));
        }
        // Where the list goes on, say so: the one to stop may be out of sight.
        let below = offered.len().saturating_sub(offset + visible);
        lines.push(match (offset, below) {
            (0, 0) => Line::default(),
            (above, below) => Line::styled(format!("  {above} more above · {below} more below (j/k, g/G)"), theme.muted),
        });
        lines.push(match self.note {
            Some(note) => Line::styled(note, theme.warn),
            None => Line::from(vec![
                Span::styled("enter", theme.key),
                Span::styled(" choose   ", theme.muted),
                Span::styled("/", theme.key),
                Span::styled(" filter   ", theme.muted),
                Span::styled("esc", theme.key),
                Span::styled(" cancel", theme.muted),
            ]),
        });
        f.render_widget(Paragraph::new(lines), inner);
    }
}
