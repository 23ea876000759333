//! `countersign demo`: see the whole product in one command.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{exit, fail};
use crate::console::{self, theme::Theme};
use crate::demo::{self, PASSWORD, PEOPLE};

#[derive(clap::Args)]
pub struct Args {
    /// Keep the data here (default: a fresh temporary directory, removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run the server and the agent without the console; print the URL and accounts.
    #[arg(long)]
    headless: bool,
    /// How many actions the simulated agent submits a minute.
    #[arg(long, default_value_t = 12.0)]
    rate: f64,
    /// Where the server listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The console's theme.
    #[arg(long)]
    theme: Option<String>,
}

pub fn run(args: Args) -> u8 {
    let (dir, _temp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => match tempfile::Builder::new().prefix("countersign-demo-").tempdir() {
            Ok(t) => (t.path().to_path_buf(), Some(t)),
            Err(e) => return fail(exit::FAILURE, format!("cannot make a temporary directory: {e}")),
        },
    };
    let theme = match Theme::resolve(args.theme.as_deref(), crate::config::dir().as_deref()) {
        Ok(t) => t,
        Err(e) => return fail(exit::USAGE, e),
    };
    // Server logs go to a file: the console owns the terminal.
    if let Ok(log) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("demo.log")) {
        let _ = tracing_subscriber::fmt().with_writer(std::sync::Mutex::new(log)).with_ansi(false).try_init();
    }
    let rt = super::runtime();
    let started = rt.block_on(demo::start(&dir, args.listen, args.rate));
    let d = match started {
        Ok(d) => d,
        Err(e) => return fail(exit::FAILURE, format!("the demo could not start: {}", e.message)),
    };
    let code = if args.headless {
        println!("Countersign demo: {}   (data in {})", d.base, dir.display());
        println!();
        println!("Accounts, all with the password `{PASSWORD}`:");
        for (email, role, what) in PEOPLE {
            println!("  {email:<18} {role:<9} {what}");
        }
        println!();
        println!("The simulated agent submits {} actions a minute with the token {}…", args.rate, &d.agent_token[..12]);
        println!("Open the console elsewhere: countersign login --server {} --email ada@acme.test", d.base);
        println!("Ctrl-C stops the demo.");
        rt.block_on(super::serve::wait_for_signal());
        exit::OK
    } else {
        let c = crate::client::Client::new(&d.base, None, "console");
        let token = match rt.block_on(c.sign_in("ada@acme.test", PASSWORD, None)) {
            Ok(s) => s.token,
            Err(e) => return fail(exit::FAILURE, format!("the demo could not sign in: {e}")),
        };
        console::run(console::Options {
            server: d.base.clone(),
            token: Some(token),
            email: "ada@acme.test".into(),
            theme,
            mouse: false,
            bell: false,
        })
    };
    d.agent.abort();
    let state = d.running.state.clone();
    state.shutdown.cancel();
    let _ = rt.block_on(d.running.shutdown());
    code
}
