//! `countersign` / `countersign tui`: the console, with the stored session unless told
//! otherwise.

use super::{exit, fail};
use crate::config;
use crate::console::{self, theme::Theme};

/// Where the console looks when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8750";

#[derive(clap::Args, Clone, Default)]
pub struct Args {
    /// The server (default: the stored session's, then config.toml's, then 127.0.0.1:8750).
    #[arg(long, env = "COUNTERSIGN_SERVER")]
    pub server: Option<String>,
    /// A session or agent token to use instead of the stored session.
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A theme: dark (default), light, high-contrast, ansi16, or one of your own.
    #[arg(long)]
    pub theme: Option<String>,
    /// Let the mouse select and scroll (off by default, so text stays selectable over SSH).
    #[arg(long)]
    pub mouse: bool,
}

pub fn run(args: Args) -> u8 {
    let settings = match config::load_settings() {
        Ok(s) => s,
        Err(e) => return fail(exit::USAGE, e),
    };
    let stored = config::load_session();
    let server = args
        .server
        .clone()
        .or_else(|| stored.as_ref().map(|s| s.server.clone()))
        .or(settings.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.into());
    let (token, email) = match (&args.token, &stored) {
        (Some(t), _) => (Some(t.clone()), String::new()),
        (None, Some(s)) if s.server.trim_end_matches('/') == server.trim_end_matches('/') => (Some(s.token.clone()), s.email.clone()),
        _ => (None, String::new()),
    };
    if let Err(e) = crate::console::keys::set_overrides(&settings.keys) {
        return fail(exit::USAGE, e);
    }
    let theme = match Theme::resolve(args.theme.as_deref().or(settings.theme.as_deref()), config::dir().as_deref()) {
        Ok(t) => t,
        Err(e) => return fail(exit::USAGE, e),
    };
    console::run(console::Options { server, token, email, theme, mouse: args.mouse || settings.mouse, bell: settings.bell })
}
