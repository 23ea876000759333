//! Every key binding, in one place: what each key means on each screen, and the help
//! text the footer and the `?` overlay show for it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::app::Screen;

/// A key's meaning, independent of the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Quit,
    Help,
    Palette,
    Filter,
    Up,
    Down,
    Top,
    Bottom,
    PageDown,
    PageUp,
    Open,
    Back,
    Approve,
    Deny,
    Kill,
    Lift,
    PauseTail,
    Verify,
    Refresh,
    Screen(Screen),
    NextScreen,
    PrevScreen,
}

/// Maps a key to its command on `screen`. Dialogs and text inputs see keys first.
pub fn command(screen: Screen, key: KeyEvent) -> Option<Command> {
    use Command::*;
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    Some(match (key.code, ctrl) {
        (KeyCode::Char('c'), true) => Quit,
        (KeyCode::Char('d'), true) => PageDown,
        (KeyCode::Char('u'), true) => PageUp,
        (KeyCode::Char('r'), true) => Refresh,
        (KeyCode::Char('q'), false) => Quit,
        (KeyCode::Char('?'), _) => Help,
        (KeyCode::Char(':'), _) => Palette,
        (KeyCode::Char('/'), _) => Filter,
        (KeyCode::Char('k'), false) | (KeyCode::Up, _) => Up,
        (KeyCode::Char('j'), false) | (KeyCode::Down, _) => Down,
        (KeyCode::Char('g'), false) | (KeyCode::Home, _) => Top,
        (KeyCode::Char('G'), _) | (KeyCode::End, _) => Bottom,
        (KeyCode::PageDown, _) => PageDown,
        (KeyCode::PageUp, _) => PageUp,
        (KeyCode::Enter, _) => Open,
        (KeyCode::Esc, _) => Back,
        (KeyCode::Char('K'), _) => Kill,
        (KeyCode::Tab, _) => NextScreen,
        (KeyCode::BackTab, _) => PrevScreen,
        (KeyCode::Char(c @ '1'..='5'), false) => Screen(super::app::Screen::ALL[(c as u8 - b'1') as usize]),
        (KeyCode::Char('a'), false) if screen == super::app::Screen::Approvals => Approve,
        (KeyCode::Char('d'), false) if screen == super::app::Screen::Approvals => Deny,
        (KeyCode::Char(' '), _) if screen == super::app::Screen::Audit => PauseTail,
        (KeyCode::Char('v'), false) if screen == super::app::Screen::Audit => Verify,
        (KeyCode::Char('l'), false) if screen == super::app::Screen::Switches => Lift,
        _ => return None,
    })
}

/// (keys, what they do) for the `?` overlay, per screen.
pub fn help(screen: Screen) -> Vec<(&'static str, &'static str)> {
    let mut out = vec![
        ("1–5 tab S-tab", "switch screens"),
        ("j k ↑ ↓", "move"),
        ("g G", "first, last"),
        ("ctrl-d ctrl-u", "page down, up"),
        ("/", "filter the list"),
        (":", "command palette"),
        ("K", "kill switch: stop a tool or everything"),
        ("ctrl-r", "refresh"),
        ("?", "this help"),
        ("q ctrl-c", "quit"),
    ];
    let screen_keys: &[(&str, &str)] = match screen {
        Screen::Approvals => &[
            ("enter", "open the approval"),
            ("esc", "back to the queue"),
            ("a", "approve (asks to confirm)"),
            ("d", "deny (asks for a reason)"),
        ],
        Screen::Audit => &[("space", "pause / follow the tail"), ("enter", "open the event"), ("esc", "back"), ("v", "verify the chain")],
        Screen::Switches => &[("K", "engage a switch"), ("l", "lift the selected switch")],
        Screen::Access | Screen::Simulate => &[],
    };
    out.splice(0..0, screen_keys.iter().copied());
    out
}

/// The few keys the footer shows for a screen: (key, label).
pub fn footer(screen: Screen, detail_open: bool) -> Vec<(&'static str, &'static str)> {
    match (screen, detail_open) {
        (Screen::Approvals, false) => {
            vec![("enter", "open"), ("a", "approve"), ("d", "deny"), ("/", "filter"), ("K", "kill"), ("?", "help"), ("q", "quit")]
        }
        (Screen::Approvals, true) => {
            vec![("j/k", "scroll"), ("a", "approve"), ("d", "deny"), ("esc", "back"), ("K", "kill"), ("?", "help")]
        }
        (Screen::Audit, false) => {
            vec![("space", "pause"), ("enter", "open"), ("/", "filter"), ("v", "verify"), ("K", "kill"), ("?", "help"), ("q", "quit")]
        }
        (Screen::Audit, true) => vec![("j/k", "scroll"), ("esc", "back"), ("v", "verify"), ("?", "help")],
        (Screen::Switches, _) => vec![("K", "engage"), ("l", "lift"), ("j/k", "move"), ("?", "help"), ("q", "quit")],
        (Screen::Access | Screen::Simulate, _) => vec![("1–5", "screens"), ("K", "kill"), ("?", "help"), ("q", "quit")],
    }
}
