//! Dialogs: one file each. A dialog sees every key while it is open and answers with
//! an [`Outcome`]; what it confirms comes back as a [`PendingOp`] for the app to run.

mod confirm;
mod form;
mod help;
mod kill_picker;
mod message;
mod reason;
mod secret;
mod sign_in;
mod tool_picker;
mod typed;

pub use confirm::Confirm;
pub use form::{Field, Form, Purpose};
pub use help::Help;
pub use kill_picker::KillPicker;
pub use message::Message;
pub use reason::{Reason, ReasonFor};
pub use secret::Secret;
pub use sign_in::SignIn;
pub use tool_picker::ToolPicker;
pub use typed::Typed;

use crossterm::event::KeyEvent;
use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, BorderType, Clear};

use super::app::Screen;
use super::theme::Theme;

/// Something a dialog confirmed, for the app to carry out.
#[derive(Clone, Debug, PartialEq)]
pub enum PendingOp {
    Approve {
        id: String,
        tool: String,
        payload_sha256: String,
    },
    Deny {
        id: String,
        tool: String,
        payload_sha256: String,
        reason: String,
    },
    Switch {
        tool: Option<String>,
        engaged: bool,
        reason: String,
    },
    SignIn {
        email: String,
        password: String,
    },
    Access(AccessOp),
    /// Quit although a draft would be lost.
    Quit,
    /// Start a dry run of this tool in Simulate.
    SimulateTool(String),
    Publish {
        rules: Vec<crate::constitution::Rule>,
        base_version: i64,
    },
    /// Export the whole audit log to `path` (absolute; it does not exist yet).
    ExportAudit {
        path: std::path::PathBuf,
        format: crate::export_file::Format,
    },
}

/// A change to members, roles or tokens.
#[derive(Clone, Debug, PartialEq)]
pub enum AccessOp {
    CreateMember { email: String, name: String, role: String, password: String },
    ChangeRole { id: String, role: String },
    SetMemberActive { id: String, active: bool },
    TransferOwnership { id: String },
    CreateRole { name: String, description: String, permissions: Vec<String> },
    UpdateRole { id: String, permissions: Vec<String> },
    DeleteRole { id: String },
    CreateToken { name: String, scopes: Vec<String>, tools: Vec<String>, expires_in_seconds: Option<i64> },
    RotateToken { id: String, name: String },
    RevokeToken { id: String },
}

/// What a key did to a dialog.
pub enum Outcome {
    Stay,
    Close,
    Next(Box<Dialog>),
    Run(PendingOp),
}

// At most one dialog is open at a time: boxing its variants buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Dialog {
    Confirm(Confirm),
    Reason(Box<Reason>),
    KillPicker(KillPicker),
    ToolPicker(ToolPicker),
    Help(Help),
    Message(Message),
    SignIn(Box<SignIn>),
    Form(Box<Form>),
    Secret(Secret),
    Typed(Box<Typed>),
}

impl Dialog {
    pub fn help(screen: Screen) -> Dialog {
        Dialog::Help(Help::new(screen))
    }

    pub fn kill_picker(options: Vec<Option<String>>, engaged: Vec<Option<String>>) -> Dialog {
        Dialog::KillPicker(KillPicker::new(options, engaged))
    }

    pub fn tool_picker(tools: Vec<String>, current: Option<String>) -> Dialog {
        Dialog::ToolPicker(ToolPicker::new(tools, current))
    }

    pub fn kill_reason(tool: Option<String>) -> Dialog {
        Dialog::Reason(Box::new(Reason::new(ReasonFor::Engage { tool })))
    }

    pub fn sign_in(email: &str, why: String) -> Dialog {
        Dialog::SignIn(Box::new(SignIn::new(email, why)))
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Outcome {
        match self {
            Dialog::Confirm(d) => d.on_key(key),
            Dialog::Reason(d) => d.on_key(key),
            Dialog::KillPicker(d) => d.on_key(key),
            Dialog::ToolPicker(d) => d.on_key(key),
            Dialog::Help(_) | Dialog::Message(_) => Outcome::Close,
            Dialog::SignIn(d) => d.on_key(key),
            Dialog::Form(d) => d.on_key(key),
            Dialog::Secret(d) => d.on_key(key),
            Dialog::Typed(d) => d.on_key(key),
        }
    }

    pub fn paste(&mut self, text: &str) {
        match self {
            Dialog::Reason(d) => d.paste(text),
            Dialog::SignIn(d) => d.paste(text),
            Dialog::Form(d) => d.paste(text),
            Dialog::Typed(d) => d.paste(text),
            _ => {}
        }
    }

    pub fn draw(&self, f: &mut Frame, area: Rect, theme: &Theme) {
        match self {
            Dialog::Confirm(d) => d.draw(f, area, theme),
            Dialog::Reason(d) => d.draw(f, area, theme),
            Dialog::KillPicker(d) => d.draw(f, area, theme),
            Dialog::ToolPicker(d) => d.draw(f, area, theme),
            Dialog::Help(d) => d.draw(f, area, theme),
            Dialog::Message(d) => d.draw(f, area, theme),
            Dialog::SignIn(d) => d.draw(f, area, theme),
            Dialog::Form(d) => d.draw(f, area, theme),
            Dialog::Secret(d) => d.draw(f, area, theme),
            Dialog::Typed(d) => d.draw(f, area, theme),
        }
    }
}

/// A box of `width` as tall as `text` once wrapped inside it (and its borders), so the
/// last line — the keys that answer it — is never pushed out of sight; the text drawn in it.
pub fn text_box(f: &mut Frame, area: Rect, width: u16, text: Vec<Line<'static>>, title: &str, theme: &Theme, danger: bool) {
    let paragraph = ratatui::widgets::Paragraph::new(text).wrap(ratatui::widgets::Wrap { trim: false });
    let inner_width = width.min(area.width).saturating_sub(2).max(1);
    let height = u16::try_from(paragraph.line_count(inner_width)).unwrap_or(u16::MAX).saturating_add(2);
    let inner = frame_box(f, area, width, height, title, theme, danger);
    f.render_widget(paragraph, inner);
}

/// A centred box `width` × `height` (clipped to the screen), cleared, with a border and
/// a title; returns the inside.
pub fn frame_box(f: &mut Frame, area: Rect, width: u16, height: u16, title: &str, theme: &Theme, danger: bool) -> Rect {
    let [row] = Layout::vertical([Constraint::Length(height.min(area.height))]).flex(Flex::Center).areas(area);
    let [rect] = Layout::horizontal([Constraint::Length(width.min(area.width))]).flex(Flex::Center).areas(row);
    f.render_widget(Clear, rect);
    let border = if danger { theme.danger } else { theme.accent };
    let block = Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(border)
        .title(Line::styled(format!(" {title} "), if danger { theme.danger } else { theme.title }))
        .style(theme.base);
    let inner = block.inner(rect);
    f.render_widget(block, rect);
    inner
}
