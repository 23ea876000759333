//! `countersign admin`: setting up a data directory.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use super::{db_path, exit, fail};
use crate::clock::Clock;
use crate::names;
use crate::permissions::BuiltinRole;
use crate::secrets;
use crate::store::{NewMember, SqlStore, Workspaces};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a workspace and its owner. The first run creates the data directory; later
    /// runs on the same directory add further workspaces, each with its own owner.
    ///
    /// The owner's password is read from a prompt, or from standard input when that is
    /// not a terminal (one line). It is never taken as an argument, where it would land
    /// in shell history and process listings.
    Init(InitArgs),
    /// List the workspaces in a data directory.
    Workspaces {
        #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// The data directory (created with mode 0700 if missing).
    #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
    data_dir: PathBuf,
    /// The workspace's name, e.g. `acme`.
    #[arg(long)]
    workspace: String,
    /// The owner's e-mail: they sign in with it.
    #[arg(long)]
    email: String,
    /// The owner's display name (default: the part of the e-mail before `@`).
    #[arg(long)]
    name: Option<String>,
}

pub fn run(cmd: Command) -> u8 {
    match cmd {
        Command::Init(args) => init(args),
        Command::Workspaces { data_dir } => list(&data_dir),
    }
}

/// Creates a directory only its owner can read.
pub fn ensure_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password("Owner's password (at least 12 characters): ").map_err(|e| e.to_string())?;
        secrets::check_password_policy(&first)?;
        let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != again {
            return Err("the two passwords differ".into());
        }
        Ok(first)
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line).map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            return Err("no password on standard input; pipe one line, e.g. `printf '%s\\n' \"$PW\" | countersign admin init …`".into());
        }
        Ok(pw)
    }
}

fn init(args: InitArgs) -> u8 {
    let email = names::normalize_email(&args.email);
    if !names::valid_email(&email) {
        return fail(exit::USAGE, format!("`{}` is not an e-mail address", args.email));
    }
    if !names::valid_display_name(&args.workspace) {
        return fail(exit::USAGE, "the workspace name must be 1 to 100 characters, without control characters");
    }
    let name = args.name.clone().unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
    if !names::valid_display_name(&name) {
        return fail(exit::USAGE, "the owner's name must be 1 to 100 characters, without control characters");
    }
    let password = match read_password() {
        Ok(p) => p,
        Err(e) => return fail(exit::USAGE, e),
    };
    if let Err(e) = secrets::check_password_policy(&password) {
        return fail(exit::USAGE, e);
    }
    if let Err(e) = ensure_private_dir(&args.data_dir) {
        return fail(exit::FAILURE, format!("cannot create {}: {e}", args.data_dir.display()));
    }
    let key_file = args.data_dir.join("master.key");
    if !key_file.exists()
        && std::env::var(crate::vault::ENV_KEY).is_err()
        && let Err(e) = crate::vault::generate_key_file(&key_file)
    {
        return fail(exit::FAILURE, format!("cannot write the master key {}: {e}", key_file.display()));
    }
    let db = db_path(&args.data_dir);
    let rt = super::runtime();
    let outcome = rt.block_on(async {
        let store = SqlStore::open_sqlite(&db, Clock::system()).map_err(|e| e.message)?;
        let password_hash = secrets::hash_password(&password);
        let owner = NewMember { email: email.clone(), name, role: BuiltinRole::Owner.name().to_string(), password_hash };
        let created = store.create_workspace(&args.workspace, owner).await.map_err(|e| e.message);
        store.engine().close();
        created
    });
    match outcome {
        Ok((ws, member)) => {
            let dir = args.data_dir.display();
            println!("Created workspace `{}` ({}) with owner {} ({}).", ws.name, ws.id, member.email, member.id);
            println!();
            println!("Next:");
            println!("  countersign serve --data-dir {dir}");
            println!("  curl -s http://127.0.0.1:8750/v1/sessions -d '{{\"email\":\"{}\",\"password\":\"…\"}}'", member.email);
            println!();
            println!("Back up {dir}: it holds the database and the keys. For production, move master.key out of it");
            println!("(see docs/OPERATIONS.md): the key that seals connector secrets should not sit beside them.");
            exit::OK
        }
        Err(e) => fail(exit::FAILURE, e),
    }
}

fn list(data_dir: &Path) -> u8 {
    let db = db_path(data_dir);
    if !db.exists() {
        return fail(exit::FAILURE, format!("there is no Countersign data in {}", data_dir.display()));
    }
    let rt = super::runtime();
    rt.block_on(async {
        let store = match SqlStore::open_sqlite(&db, Clock::system()) {
            Ok(s) => s,
            Err(e) => return fail(exit::FAILURE, e.message),
        };
        let listed = store.list_workspaces().await;
        store.engine().close();
        match listed {
            Ok(list) => {
                for w in list {
                    println!("{}\t{}\towner {}\tcreated {}", w.id, w.name, w.owner_id, w.created_at);
                }
                exit::OK
            }
            Err(e) => fail(exit::FAILURE, e.message),
        }
    })
}
