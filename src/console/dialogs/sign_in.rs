//! Sign in again, inside the console, when the session has expired or been revoked.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use tui_textarea::TextArea;

use super::{Outcome, PendingOp, frame_box};
use crate::console::theme::Theme;

pub struct SignIn {
    pub email: TextArea<'static>,
    pub password: TextArea<'static>,
    /// 0: e-mail, 1: password.
    pub focus: usize,
    pub why: String,
}

impl SignIn {
    pub fn new(email: &str, why: String) -> SignIn {
        let mut e = TextArea::new(vec![email.to_string()]);
        e.move_cursor(tui_textarea::CursorMove::End);
        let mut p = TextArea::default();
        p.set_mask_char('•');
        SignIn { email: e, password: p, focus: if email.is_empty() { 0 } else { 1 }, why }
    }

    pub fn paste(&mut self, s: &str) {
        let s = s.replace(['\n', '\r'], "");
        if self.focus == 0 {
            self.email.insert_str(s);
        } else {
            self.password.insert_str(s);
        }
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Tab | KeyCode::BackTab | KeyCode::Up | KeyCode::Down => {
                self.focus = 1 - self.focus;
                Outcome::Stay
            }
            KeyCode::Enter => {
                let email = self.email.clone().into_lines().join("").trim().to_string();
                let password = self.password.clone().into_lines().join("");
                if email.is_empty() {
                    self.focus = 0;
                    return Outcome::Stay;
                }
                if password.is_empty() {
                    self.focus = 1;
                    return Outcome::Stay;
                }
                Outcome::Run(PendingOp::SignIn { email, password })
            }
            KeyCode::Esc => Outcome::Stay,
            _ => {
                if self.focus == 0 {
                    self.email.input(key);
                } else {
                    self.password.input(key);
                }
                Outcome::Stay
            }
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let inner = frame_box(f, area, 60, 12, "Sign in again", theme, false);
        let [why, e, p, keys] =
            Layout::vertical([Constraint::Length(2), Constraint::Length(3), Constraint::Length(3), Constraint::Length(1)]).areas(inner);
        f.render_widget(Paragraph::new(Line::styled(self.why.clone(), theme.warn)).wrap(Wrap { trim: true }), why);
        for (i, (area, field, label)) in [(e, &self.email, "E-mail"), (p, &self.password, "Password")].into_iter().enumerate() {
            let mut t = field.clone();
            let style = if i == self.focus { theme.accent } else { theme.border };
            t.set_block(Block::bordered().border_style(style).title(Line::styled(label, style)));
            t.set_style(theme.base);
            f.render_widget(&t, area);
        }
        f.render_widget(
            Line::from(vec![
                Span::styled("tab", theme.key),
                Span::styled(" next field   ", theme.muted),
                Span::styled("enter", theme.key),
                Span::styled(" sign in", theme.muted),
            ]),
            keys,
        );
    }
}
