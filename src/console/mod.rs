//! The console: a full-screen, keyboard-first terminal UI for operators.
//!
//! One event loop (terminal events, a clock tick, a render schedule, messages from
//! network tasks), one [`action::Action`] type, `App::update` for every state change, and
//! `ui::draw` — a pure function of the state — for every frame. Redraws coalesce: a burst
//! of events marks the state dirty and costs one frame at the next render tick. The
//! terminal is restored on quit, on a panic, and on SIGTERM/SIGHUP (an SSH drop).

pub mod action;
pub mod app;
pub mod dialogs;
pub mod keys;
pub mod net;
pub mod screens;
pub mod theme;
pub mod ui;
pub mod widgets;

#[cfg(test)]
mod tests;

use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures_util::StreamExt;

use action::Action;
use app::{App, Init};
use theme::Theme;

use crate::client::Client;

/// How often the screen may be redrawn at most (about 30 frames a second).
pub const FRAME: Duration = Duration::from_millis(33);

/// What the console starts with.
pub struct Options {
    pub server: String,
    pub token: Option<String>,
    pub email: String,
    pub theme: Theme,
    pub mouse: bool,
    pub bell: bool,
}

/// Runs the console until the user quits. Returns the process exit code.
pub fn run(opts: Options) -> u8 {
    // One thread: the console is I/O-bound, and allocating and freeing on one thread keeps
    // the allocator from fragmenting across threads as events stream in.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("start the async runtime");
    rt.block_on(run_async(opts))
}

async fn run_async(opts: Options) -> u8 {
    let mut terminal = ratatui::init();
    if opts.mouse {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture);
    }
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::EnableBracketedPaste);
    let size = terminal.size().map(|s| (s.width, s.height)).unwrap_or((80, 24));
    let has_token = opts.token.is_some();
    let client = Client::new(&opts.server, opts.token, "console");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Action>();
    let net = net::Net::new(client, tx);
    let mut app = App::new(Init {
        server: opts.server.clone(),
        email: opts.email.clone(),
        themes: Theme::available(crate::config::dir().as_deref()),
        theme: opts.theme,
        now: chrono::Utc::now(),
        size,
        bell: opts.bell,
        cwd: std::env::current_dir().unwrap_or_default(),
    });
    if !has_token {
        app.ask_sign_in(format!("Sign in to {}.", opts.server));
    }
    net.start_stream();

    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut render = tokio::time::interval(FRAME);
    render.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    #[cfg(unix)]
    let (mut term, mut hup) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::terminate()).expect("SIGTERM handler"), signal(SignalKind::hangup()).expect("SIGHUP handler"))
    };
    let mut dirty = true;
    'outer: loop {
        for e in app.take_effects() {
            if e == action::Effect::Quit {
                break 'outer;
            }
            net.run(e);
        }
        if app.quit {
            break;
        }
        #[cfg(unix)]
        let signalled = async {
            tokio::select! {
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<()>();
        tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => { app.update(Action::Key(k)); dirty = true; }
                Some(Ok(Event::Resize(w, h))) => { app.update(Action::Resize(w, h)); dirty = true; }
                Some(Ok(Event::Paste(p))) => { app.update(Action::Paste(p)); dirty = true; }
                // With --mouse: the wheel moves through lists like the arrow keys.
                Some(Ok(Event::Mouse(m))) => {
                    let code = match m.kind {
                        crossterm::event::MouseEventKind::ScrollUp => Some(crossterm::event::KeyCode::Up),
                        crossterm::event::MouseEventKind::ScrollDown => Some(crossterm::event::KeyCode::Down),
                        _ => None,
                    };
                    if let Some(code) = code {
                        app.update(Action::Key(crossterm::event::KeyEvent::from(code)));
                        dirty = true;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            Some(a) = rx.recv() => {
                app.update(a);
                // Take everything already waiting before drawing: a burst costs one frame.
                while let Ok(a) = rx.try_recv() {
                    app.update(a);
                }
                dirty = true;
            }
            _ = tick.tick() => { app.update(Action::Tick(chrono::Utc::now())); dirty = true; }
            _ = render.tick(), if dirty => {
                if terminal.draw(|f| ui::draw(f, &app)).is_err() {
                    break;
                }
                dirty = false;
            }
            _ = signalled => break,
        }
    }
    if opts.mouse {
        let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
    }
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableBracketedPaste);
    ratatui::restore();
    crate::cli::exit::OK
}
