//! `countersign login` and `logout`: a session for the console, stored for this user.

use std::io::{BufRead, IsTerminal, Write};

use super::{exit, fail};
use crate::client::{Client, ClientError};
use crate::config;

#[derive(clap::Args)]
pub struct Args {
    /// The server to sign in to.
    #[arg(long, env = "COUNTERSIGN_SERVER", default_value = super::console::DEFAULT_SERVER)]
    server: String,
    /// Your e-mail (asked for when not given).
    #[arg(long)]
    email: Option<String>,
    /// The workspace, when your e-mail has accounts in several.
    #[arg(long)]
    workspace: Option<String>,
}

fn ask(prompt: &str) -> std::io::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}

pub fn run(args: Args) -> u8 {
    let interactive = std::io::stdin().is_terminal();
    let email = match args.email {
        Some(e) => e,
        None if interactive => match ask("E-mail: ") {
            Ok(e) => e,
            Err(e) => return fail(exit::FAILURE, e),
        },
        None => return fail(exit::USAGE, "give --email when standard input is not a terminal"),
    };
    let password = if interactive {
        match rpassword::prompt_password("Password: ") {
            Ok(p) => p,
            Err(e) => return fail(exit::FAILURE, e),
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            return fail(exit::FAILURE, e);
        }
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        // Sent, it would only count as a failed sign-in against the account.
        return fail(exit::USAGE, "no password was given; nothing was sent");
    }
    let client = Client::new(&args.server, None, "console");
    let rt = super::runtime();
    match rt.block_on(client.sign_in(&email, &password, args.workspace.as_deref())) {
        Ok(s) => {
            let stored = config::StoredSession {
                server: client.base().to_string(),
                token: s.token,
                expires_at: s.expires_at.clone(),
                workspace: s.workspace.name.clone(),
                email: s.member.email.clone(),
            };
            match config::save_session(&stored) {
                Ok(path) => {
                    println!("Signed in to `{}` as {} ({}) until {}.", s.workspace.name, s.member.email, s.member.role, s.expires_at);
                    println!("Session stored in {} (readable by you only). Run `countersign` to open the console.", path.display());
                    exit::OK
                }
                Err(e) => fail(exit::FAILURE, format!("signed in, but the session could not be stored: {e}")),
            }
        }
        Err(e) if e.code() == "workspace_required" => {
            fail(exit::FAILURE, format!("sign-in failed: {e} — run it again with --workspace NAME"))
        }
        Err(e) => fail(exit::FAILURE, format!("sign-in failed: {e}")),
    }
}

#[derive(clap::Args, Debug, Default)]
pub struct LogoutArgs {
    /// Remove the stored session from this machine even when the server cannot be reached
    /// to end it (it then stays valid on the server until it expires).
    #[arg(long)]
    pub local: bool,
}

pub fn logout(args: LogoutArgs) -> u8 {
    let Some(s) = config::load_session() else {
        println!("No stored session.");
        return exit::OK;
    };
    let client = Client::new(&s.server, Some(s.token.clone()), "console");
    let ended = super::runtime().block_on(client.sign_out());
    if let Err(ClientError::Unreachable(e)) = &ended
        && !args.local
    {
        // Forgetting the session here would leave it working there, for whoever holds a
        // copy, with nothing on this machine to end it with.
        return fail(
            exit::FAILURE,
            format!(
                "could not reach {} to end the session ({e}); it is still valid there until {}. The stored session is kept: \
                 run `countersign logout` again when the server is reachable, or `countersign logout --local` to remove it from this machine only",
                s.server, s.expires_at
            ),
        );
    }
    if let Err(e) = config::clear_session() {
        return fail(exit::FAILURE, format!("could not remove the stored session: {e}"));
    }
    match ended {
        Ok(()) => println!("Signed out of {}; the stored session is removed.", s.server),
        Err(ClientError::Unreachable(e)) => {
            println!(
                "The stored session is removed from this machine. {} could not be reached ({e}): the session stays valid there until {}.",
                s.server, s.expires_at
            )
        }
        // Expired or revoked already: nothing is left to end.
        Err(e) if e.needs_sign_in() => println!("The stored session is removed; the server had already ended it ({e})."),
        Err(e) => println!("The stored session is removed; the server answered: {e}."),
    }
    exit::OK
}
