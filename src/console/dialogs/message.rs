//! A message that needs reading (a verification result): any key closes it.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Wrap};

use super::frame_box;
use crate::console::theme::Theme;

pub struct Message {
    pub title: String,
    pub lines: Vec<String>,
    pub bad: bool,
}

impl Message {
    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let inner = frame_box(f, area, 70, self.lines.len() as u16 + 4, &self.title, theme, self.bad);
        let style = if self.bad { theme.danger } else { theme.base };
        let mut text: Vec<Line> = self.lines.iter().map(|l| Line::styled(l.clone(), style)).collect();
        text.push(Line::default());
        text.push(Line::styled("any key closes this", theme.muted));
        f.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }), inner);
    }
}
