//! The `?` overlay: every key of the current screen.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::frame_box;
use crate::console::app::Screen;
use crate::console::keys;
use crate::console::theme::Theme;

pub struct Help {
    pub screen: Screen,
}

impl Help {
    pub fn new(screen: Screen) -> Help {
        Help { screen }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let entries = keys::help(self.screen);
        let height = entries.len() as u16 + 4;
        let inner = frame_box(f, area, 62, height, &format!("Keys — {}", self.screen.title()), theme, false);
        let mut lines: Vec<Line> = entries
            .iter()
            .map(|(k, what)| Line::from(vec![Span::styled(format!("{k:>15}  "), theme.key), Span::styled(*what, theme.base)]))
            .collect();
        lines.push(Line::default());
        lines.push(Line::styled("any key closes this", theme.muted));
        f.render_widget(Paragraph::new(lines), inner);
    }
}
