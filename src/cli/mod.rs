//! The command line: one binary, subcommands, exit codes that mean something.

pub mod admin;
mod audit;
mod console;
mod demo;
mod hash;
mod login;
pub mod serve;
pub mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// What each exit code means. Scripts may rely on these.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// Something failed at run time: a file, the network, the store.
    pub const FAILURE: u8 = 1;
    /// The command line or its input was wrong (bad flags, bad JSON).
    pub const USAGE: u8 = 2;
    /// A verification ran and failed: the audit chain does not hold.
    pub const VERIFY_FAILED: u8 = 3;
}

const AFTER_HELP: &str = "\
Exit codes: 0 success; 1 failure at run time; 2 bad usage or input; 3 verification failed.

Start here:
  countersign admin init --data-dir ./data --workspace acme --email you@example.com
  countersign serve --data-dir ./data
Docs: README.md and docs/ in the source tree.";

#[derive(Parser)]
#[command(
    name = "countersign",
    version,
    about = "A governance gateway for AI-agent actions, with a keyboard-first console",
    long_about = "Countersign decides whether each tool call an AI agent wants to make runs now, waits \
for one or two humans, or is refused, and records every step in a tamper-evident audit log.",
    after_help = AFTER_HELP
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no command: open the console.
    #[command(flatten)]
    console: console::Args,
}

#[derive(Subcommand)]
enum Command {
    /// Open the console (also what `countersign` alone does).
    Tui(console::Args),
    /// The whole product in one command: a server, a seeded workspace, a simulated
    /// agent, and the console signed in as an admin.
    Demo(demo::Args),
    /// Sign in to a server and store the session for the console.
    Login(login::Args),
    /// End the stored session, on the server and on this machine.
    Logout(login::LogoutArgs),
    /// Run the server.
    Serve(serve::Args),
    /// Set up and administer a store (first workspace, owners, migrations, keys).
    #[command(subcommand)]
    Admin(admin::Command),
    /// Verify or export the audit log.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Print the RFC 8785 canonical form and SHA-256 of a JSON payload.
    Hash(hash::Args),
    /// Where your settings, session and themes live, and what can be set.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print shell completions: `countersign completions bash > ~/.local/share/bash-completion/completions/countersign`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the configuration directory and the files in it.
    Path,
    /// Print the console's key commands, for rebinding in config.toml.
    Keys,
}

/// Where a data directory keeps its database.
pub fn db_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("countersign.db")
}

/// Runs the command line and returns the process's exit code.
pub fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let code = match cli.command {
        None => console::run(cli.console),
        Some(Command::Tui(args)) => console::run(args),
        Some(Command::Demo(args)) => demo::run(args),
        Some(Command::Login(args)) => login::run(args),
        Some(Command::Logout(args)) => login::logout(args),
        Some(Command::Serve(args)) => serve::run(args),
        Some(Command::Admin(cmd)) => {
            serve::init_command_logging();
            admin::run(cmd)
        }
        Some(Command::Audit(cmd)) => {
            serve::init_command_logging();
            audit::run(cmd)
        }
        Some(Command::Hash(args)) => hash::run(args),
        Some(Command::Config(ConfigCommand::Path)) => config_path(),
        Some(Command::Config(ConfigCommand::Keys)) => {
            for (name, default, what) in crate::console::keys::REBINDABLE {
                println!("{name:<10} default {default:<8} {what}");
            }
            exit::OK
        }
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "countersign", &mut std::io::stdout());
            exit::OK
        }
    };
    ExitCode::from(code)
}

fn config_path() -> u8 {
    match crate::config::dir() {
        Some(d) => {
            println!("{}", d.display());
            for (file, what) in [
                ("config.toml", "settings: server, theme, bell, mouse, [keys]"),
                ("session.json", "the stored session (mode 0600)"),
                ("themes/", "your own themes, NAME.toml"),
            ] {
                let mark = if d.join(file.trim_end_matches('/')).exists() { "present" } else { "absent" };
                println!("  {file:<13} {mark:<8} {what}");
            }
            exit::OK
        }
        None => fail(exit::FAILURE, "there is no configuration directory on this system; set COUNTERSIGN_CONFIG_DIR"),
    }
}

/// Prints an error the way every command does: `countersign: <what>`, plus a hint.
pub fn fail(code: u8, message: impl std::fmt::Display) -> u8 {
    eprintln!("countersign: {message}");
    code
}

/// A runtime for commands that talk to the store or the network.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("start the async runtime")
}
