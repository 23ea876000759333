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
        // How to close it is in the title: a short terminal (a kill-switch banner takes a
        // line) cuts the bottom of the box, never the way out.
        let height = entries.len() as u16 + 2;
        let title = format!("Keys — {} (any key closes this)", self.screen.title());
        let inner = frame_box(f, area, 76, height, &title, theme, false);
        let lines: Vec<Line> = entries
            .iter()
            .map(|(k, what)| Line::from(vec![Span::styled(format!("{k:>15}  "), theme.key), Span::styled(*what, theme.base)]))
            .collect();
        f.render_widget(Paragraph::new(lines), inner);
    }
}
