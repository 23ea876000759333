//! A message that needs reading (a verification result): any key closes it.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::Line;

use super::text_box;
use crate::console::theme::Theme;

pub struct Message {
    pub title: String,
    pub lines: Vec<String>,
    pub bad: bool,
}

impl Message {
    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let style = if self.bad { theme.danger } else { theme.base };
        let mut text: Vec<Line> = self.lines.iter().map(|l| Line::styled(l.clone(), style)).collect();
        text.push(Line::default());
        text.push(Line::styled("any key closes this", theme.muted));
        text_box(f, area, 70, text, &self.title, theme, self.bad);
    }
}
