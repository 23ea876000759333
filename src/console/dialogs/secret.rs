//! Shows a new token's secret, once. It says so, offers to copy it to the terminal's
//! clipboard (OSC 52, which works over SSH in most terminals), and closes only when asked.

use crossterm::event::{KeyCode, KeyEvent};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};

use super::{Outcome, text_box};
use crate::console::theme::Theme;

pub struct Secret {
    pub title: String,
    pub name: String,
    pub secret: String,
    pub copied: bool,
    /// `esc` was pressed once: it is the reflex for "back", and the secret cannot be
    /// shown again, so the first press only asks.
    pub leaving: bool,
}

impl Secret {
    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        match key.code {
            KeyCode::Char('c') => {
                self.copied = copy_osc52(&self.secret);
                Outcome::Stay
            }
            KeyCode::Enter => Outcome::Close,
            KeyCode::Esc if self.leaving => Outcome::Close,
            KeyCode::Esc => {
                self.leaving = true;
                Outcome::Stay
            }
            _ => Outcome::Stay,
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        let mut lines = vec![
            Line::styled(format!("The secret of `{}`:", self.name), theme.base),
            Line::default(),
            Line::styled(self.secret.clone(), theme.accent),
            Line::default(),
            Line::styled("This is the only time it is shown. Countersign keeps only its hash: store it now.", theme.warn),
            Line::default(),
        ];
        if self.leaving {
            lines.push(Line::styled("Close without storing it? esc again closes; it will not be shown again.", theme.danger));
        }
        if self.copied {
            lines.push(Line::styled("Sent to the clipboard by OSC 52 (tmux and some terminals ignore it).", theme.ok));
        }
        lines.push(Line::from(vec![
            Span::styled("c", theme.key),
            Span::styled(" copy to clipboard   ", theme.muted),
            Span::styled("enter", theme.key),
            Span::styled(" I have stored it", theme.muted),
        ]));
        text_box(f, area, 72, lines, &self.title, theme, false);
    }
}

/// Puts text on the terminal's clipboard with an OSC 52 escape.
fn copy_osc52(text: &str) -> bool {
    use base64::Engine as _;
    use std::io::Write;
    let seq = format!("\x1b]52;c;{}\x07", base64::engine::general_purpose::STANDARD.encode(text));
    std::io::stdout().write_all(seq.as_bytes()).and_then(|_| std::io::stdout().flush()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_asks_before_the_secret_is_gone_and_enter_does_not() {
        let secret = || Secret { title: "t".into(), name: "n".into(), secret: "csa_x".into(), copied: false, leaving: false };
        let mut d = secret();
        assert!(matches!(d.on_key(KeyEvent::from(KeyCode::Esc)), Outcome::Stay));
        assert!(d.leaving);
        assert!(matches!(d.on_key(KeyEvent::from(KeyCode::Esc)), Outcome::Close));
        assert!(matches!(secret().on_key(KeyEvent::from(KeyCode::Enter)), Outcome::Close));
    }
}
