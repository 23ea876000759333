//! `countersign admin`: setting up a data directory.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use super::store::{self, Purpose};
use super::{exit, fail};
use crate::clock::Clock;
use crate::names;
use crate::permissions::BuiltinRole;
use crate::secrets;
use crate::store::{NewMember, Workspaces};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a workspace and its owner. The first run creates the data directory; later
    /// runs on the same directory add further workspaces, each with its own owner.
    ///
    /// The owner's password is read from a prompt, or from standard input when that is
    /// not a terminal (one line). It is never taken as an argument, where it would land
    /// in shell history and process listings.
    Init(InitArgs),
    /// Bring a PostgreSQL database's schema up to date, and say which version it is at.
    ///
    /// Run it as the role that owns (or will own) the tables, not as the server's role: the
    /// server's role may not change the schema, and `serve` refuses a database that is not
    /// current. It creates the group role `countersign_server` if it can (else create it
    /// first) and grants it what a server replica needs. With a data directory instead, it
    /// migrates the SQLite file (which `serve` also does on its own).
    Migrate {
        /// The database, as its owner: `postgres://countersign_owner:…@host/countersign`.
        #[arg(long, env = "COUNTERSIGN_MIGRATE_DATABASE_URL", hide_env_values = true, conflicts_with = "data_dir")]
        database_url: Option<String>,
        #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List the workspaces in a store.
    Workspaces {
        #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// A PostgreSQL store instead of the data directory's SQLite file.
        #[arg(long, env = "COUNTERSIGN_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Write a new random master key to a file (mode 0600) for a rotation.
    GenerateMasterKey {
        /// Where to write it; the file must not exist yet.
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace the key that signs audit checkpoints with a fresh one.
    ///
    /// The old private key is destroyed; its public key is kept beside the key file as
    /// `signing-key-<key_id>.pub` (and printed), so checkpoints it signed still verify.
    /// The server signs with the new key once restarted (every replica, with this same
    /// key file). See docs/OPERATIONS.md.
    RotateSigningKey {
        /// The data directory whose `signing.key` is replaced.
        #[arg(long, env = "COUNTERSIGN_DATA_DIR", required_unless_present = "signing_key_file")]
        data_dir: Option<PathBuf>,
        /// The key file to replace, when the server is given one with --signing-key-file.
        #[arg(long)]
        signing_key_file: Option<PathBuf>,
    },
    /// Set a new password for a member who cannot sign in: forgotten, or locked out by
    /// failed attempts. Ends every session of theirs and forgets the account's failed
    /// sign-ins; audited as `member.password_reset`.
    ///
    /// For the owner above all, whom nobody in the workspace outranks. The password is
    /// read from a prompt, or one line of standard input. On the embedded store, run it
    /// with the server stopped (it refuses otherwise); on PostgreSQL, running servers
    /// take the change at once.
    ResetPassword {
        /// The data directory (its SQLite store).
        #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
        data_dir: PathBuf,
        /// A PostgreSQL store instead of the data directory's SQLite file.
        #[arg(long, env = "COUNTERSIGN_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// The member's e-mail.
        #[arg(long)]
        email: String,
        /// The workspace, by name or id: needed when the e-mail is a member of several.
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Re-seal every connector and webhook secret under a new master key.
    ///
    /// Run it with the server stopped (on the embedded store it refuses otherwise). Then
    /// make the new key the server's (replace master.key, or point --master-key-file or
    /// COUNTERSIGN_MASTER_KEY at it) and start the server. See docs/OPERATIONS.md.
    RotateMasterKey {
        /// The data directory (its SQLite store, and its master.key as the default old key).
        #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
        data_dir: PathBuf,
        /// A PostgreSQL store instead of the data directory's SQLite file.
        #[arg(long, env = "COUNTERSIGN_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// The new key (from `generate-master-key`).
        #[arg(long)]
        new_key_file: PathBuf,
        /// The key in use now. Without it: COUNTERSIGN_MASTER_KEY, else master.key in the data directory.
        #[arg(long)]
        old_key_file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// The data directory (created with mode 0700 if missing): the SQLite store and the
    /// master key.
    #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
    data_dir: PathBuf,
    /// Create the workspace in this PostgreSQL database instead (migrated first with
    /// `countersign admin migrate`); the data directory then holds only the master key.
    #[arg(long, env = "COUNTERSIGN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
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
        Command::Migrate { database_url, data_dir } => migrate(data_dir.as_deref(), database_url.as_deref()),
        Command::Workspaces { data_dir, database_url } => list(data_dir.as_deref(), database_url.as_deref()),
        Command::GenerateMasterKey { out } => match crate::vault::generate_key_file(&out) {
            Ok(()) => {
                println!("Wrote a new master key to {}. Keep it secret; back it up.", out.display());
                exit::OK
            }
            Err(e) => fail(exit::FAILURE, format!("cannot write {}: {e}", out.display())),
        },
        Command::RotateSigningKey { data_dir, signing_key_file } => {
            let path = match (signing_key_file, data_dir) {
                (Some(file), _) => file,
                (None, Some(dir)) => dir.join("signing.key"),
                (None, None) => return fail(exit::USAGE, "give --data-dir or --signing-key-file"),
            };
            if !path.exists() {
                return fail(
                    exit::FAILURE,
                    format!("there is no signing key at {} to rotate (`serve` makes one when it first starts)", path.display()),
                );
            }
            match crate::checkpoint::rotate_key_file(&path) {
                Ok(r) => {
                    println!(
                        "Retired signing key {}. Its private key is gone; its public key is kept in {}:",
                        r.old.key_id,
                        r.old_public_key_file.display()
                    );
                    println!("  {}", r.old.public_key);
                    println!(
                        "Checkpoints it signed verify with `countersign audit verify --checkpoint FILE --public-key {}`.",
                        r.old.public_key
                    );
                    println!("New signing key {} in {}, public key:", r.new.key_id, path.display());
                    println!("  {}", r.new.public_key);
                    println!("Restart the server (every replica, with this key file) to sign with it; until then the old key signs.");
                    exit::OK
                }
                Err(e) => fail(exit::FAILURE, e),
            }
        }
        Command::ResetPassword { data_dir, database_url, email, workspace } => {
            reset_password(&data_dir, database_url.as_deref(), &email, workspace.as_deref())
        }
        Command::RotateMasterKey { data_dir, database_url, new_key_file, old_key_file } => {
            rotate(&data_dir, database_url.as_deref(), &new_key_file, old_key_file.as_deref())
        }
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

/// A new password from a prompt (twice), or one line of standard input. `whose`: "Owner's".
fn read_password(whose: &str, command: &str) -> Result<String, String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password(format!("{whose} password (at least 12 characters): ")).map_err(|e| e.to_string())?;
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
            return Err(format!(
                "no password on standard input; pipe one line, e.g. `printf '%s\\n' \"$PW\" | countersign admin {command} …`"
            ));
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
    // Sign-in and `--workspace` take a name or an id: a name that reads as an id would name
    // another workspace, or none.
    if args.workspace.to_ascii_lowercase().starts_with("org_") {
        return fail(exit::USAGE, "a workspace name may not start with `org_`, which is how workspace ids start");
    }
    let name = args.name.clone().unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_string());
    if !names::valid_display_name(&name) {
        return fail(exit::USAGE, "the owner's name must be 1 to 100 characters, without control characters");
    }
    let password = match read_password("Owner's", "init") {
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
    let signing_key = args.data_dir.join(crate::checkpoint::KEY_FILE);
    let signer = match crate::checkpoint::Signer::load_or_create(&signing_key) {
        Ok((s, _)) => s,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let store = match store::open(Some(&args.data_dir), args.database_url.as_deref(), Purpose::Create, Clock::system()) {
        Ok(s) => s,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let rt = super::runtime();
    let outcome = rt.block_on(async {
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
            match &args.database_url {
                Some(_) => println!("  countersign serve --data-dir {dir} --database-url …"),
                None => println!("  countersign serve --data-dir {dir}"),
            }
            println!("  curl -s http://127.0.0.1:8750/v1/sessions -d '{{\"email\":\"{}\",\"password\":\"…\"}}'", member.email);
            println!();
            let public = signer.public_key();
            println!("Audit checkpoints are signed with Ed25519 key {} ({}).", public.key_id, signing_key.display());
            println!("Its public key, to keep where the server cannot change it (audit verify --public-key):");
            println!("  {}", public.public_key);
            println!();
            if args.database_url.is_some() {
                println!("Back up {dir}: it holds the master key and the signing key, which every replica needs; back the");
                println!("database up with PostgreSQL's tools (see docs/OPERATIONS.md).");
            } else {
                println!("Back up {dir}: it holds the database and the keys. For production, move master.key out of it");
                println!("(see docs/OPERATIONS.md): the key that seals connector secrets should not sit beside them.");
            }
            exit::OK
        }
        Err(e) => fail(exit::FAILURE, e),
    }
}

fn migrate(data_dir: Option<&Path>, database_url: Option<&str>) -> u8 {
    use crate::store::migrate;
    use crate::store::postgres::{self, PgConnector};
    let Some(url) = database_url.filter(|u| !u.trim().is_empty()) else {
        // SQLite: opening the file applies its migrations.
        let Some(dir) = data_dir else { return fail(exit::USAGE, "give --database-url (PostgreSQL) or --data-dir (SQLite)") };
        return match store::open(Some(dir), None, Purpose::Admin, Clock::system()) {
            Ok(s) => {
                s.engine().close();
                let latest = crate::store::sqlite::MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
                println!("The store in {} is at schema version {latest}.", dir.display());
                exit::OK
            }
            Err(e) => fail(exit::FAILURE, e),
        };
    };
    if !postgres::is_postgres_url(url) {
        return fail(exit::USAGE, "--database-url must be a postgres:// (or postgresql://) URL");
    }
    let mut conn = match PgConnector::new(url).and_then(|c| c.open()) {
        Ok(c) => c,
        Err(e) => return fail(exit::FAILURE, format!("cannot connect to {}: {e}", store::redact(url))),
    };
    if let Err(e) = postgres::check_version(&mut conn) {
        return fail(exit::FAILURE, e);
    }
    match migrate::apply(&mut conn, postgres::MIGRATIONS) {
        Ok(done) => {
            if done.from == done.to {
                println!("The database is at schema version {}: nothing to do.", done.to);
            } else {
                for m in postgres::MIGRATIONS.iter().filter(|m| m.version > done.from) {
                    println!("Applied migration {} ({}).", m.version, m.name);
                }
                println!("The database is now at schema version {} (was {}).", done.to, done.from);
            }
            println!("Server replicas connect as a role that is a member of `{}` (see docs/OPERATIONS.md).", postgres::SERVER_ROLE);
            exit::OK
        }
        Err(e) => fail(exit::FAILURE, format!("migration stopped: {e}")),
    }
}

fn list(data_dir: Option<&Path>, database_url: Option<&str>) -> u8 {
    let store = match store::open(data_dir, database_url, Purpose::Admin, Clock::system()) {
        Ok(s) => s,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let rt = super::runtime();
    rt.block_on(async {
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

fn reset_password(data_dir: &Path, database_url: Option<&str>, email: &str, workspace: Option<&str>) -> u8 {
    use crate::store::Members;
    let email = names::normalize_email(email);
    let _lock = match store::on_sqlite(database_url).then(|| store::lock_data_dir(data_dir, "resetting a password")) {
        Some(Err(e)) => return fail(exit::FAILURE, e),
        lock => lock,
    };
    let store = match store::open(Some(data_dir), database_url, Purpose::Admin, Clock::system()) {
        Ok(s) => s,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let rt = super::runtime();
    let accounts = match rt.block_on(store.find_accounts(&email)) {
        Ok(a) => a,
        Err(e) => return fail(exit::FAILURE, e.message),
    };
    let named = match workspace {
        Some(w) => crate::store::accounts_in(accounts, w),
        None => accounts,
    };
    let account = match named.as_slice() {
        [one] => one.clone(),
        [] if workspace.is_some() => return fail(exit::FAILURE, format!("{email} is not a member of that workspace")),
        [] => return fail(exit::FAILURE, format!("no member has the e-mail {email} in this store")),
        several => {
            let names: Vec<&str> = several.iter().map(|a| a.workspace_name.as_str()).collect();
            return fail(
                exit::USAGE,
                format!("{email} is a member of several workspaces ({}): say which with --workspace", names.join(", ")),
            );
        }
    };
    let password = match read_password(&format!("{email}'s new"), "reset-password") {
        Ok(p) => p,
        Err(e) => return fail(exit::USAGE, e),
    };
    if let Err(e) = secrets::check_password_policy(&password) {
        return fail(exit::USAGE, e);
    }
    let change = crate::store::PasswordChange {
        member_id: account.member_id.clone(),
        password_hash: secrets::hash_password(&password),
        keep_session: None,
        event: "member.password_reset",
    };
    let outcome = rt.block_on(store.set_password(&account.workspace_id, &crate::store::Origin::system("admin reset-password"), change));
    store.engine().close();
    match outcome {
        Ok(ended) => {
            println!(
                "Set a new password for {email} in `{}`: {ended} session(s) ended, failed sign-ins forgotten. They can sign in with it now.",
                account.workspace_name
            );
            exit::OK
        }
        Err(e) => fail(exit::FAILURE, e.message),
    }
}

fn rotate(data_dir: &Path, database_url: Option<&str>, new_key_file: &Path, old_key_file: Option<&Path>) -> u8 {
    use crate::model::Connector;
    use crate::store::{Tools, Webhooks};
    use crate::vault::{MasterKeys, header_aad, query_aad, webhook_secret_aad};
    let old = match super::serve::load_keys(data_dir, old_key_file, None) {
        Ok(k) if k.is_configured() => k,
        Ok(_) => return fail(exit::FAILURE, "no current master key found to open the existing secrets with"),
        Err(e) => return fail(exit::FAILURE, e),
    };
    let new = match MasterKeys::from_file(new_key_file) {
        Ok(k) => k,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let _lock = match store::on_sqlite(database_url).then(|| store::lock_data_dir(data_dir, "rotating the master key")) {
        Some(Err(e)) => return fail(exit::FAILURE, e),
        lock => lock,
    };
    let store = match store::open(Some(data_dir), database_url, Purpose::Admin, Clock::system()) {
        Ok(s) => s,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let both = new.clone().with_previous(old);
    let rt = super::runtime();
    let outcome: Result<(usize, usize, usize), String> = rt.block_on(async {
        let all = store.all_sealed_connectors().await.map_err(|e| e.message)?;
        let (mut tools, mut values, mut hooks) = (0, 0, 0);
        for (ws, tool, connector) in all {
            let Connector::Http { url, headers, secret_headers, secret_query, timeout_ms } = connector else { continue };
            if secret_headers.iter().chain(secret_query.iter()).all(|s| s.is_empty()) {
                continue;
            }
            // Each value opened under either key and sealed under the new one, in its place.
            let mut reseal = |secrets: Option<std::collections::BTreeMap<String, String>>,
                              aad: &dyn Fn(&str) -> String,
                              what: &str|
             -> Result<Option<std::collections::BTreeMap<String, String>>, String> {
                let Some(secrets) = secrets else { return Ok(None) };
                let mut resealed = std::collections::BTreeMap::new();
                for (name, sealed) in secrets {
                    let plain = both.open(&sealed, &aad(&name)).map_err(|e| format!("tool `{tool}` {what} `{name}`: {e}"))?;
                    resealed.insert(name.clone(), both.seal(&plain, &aad(&name)).map_err(|e| e.to_string())?);
                    values += 1;
                }
                Ok(Some(resealed))
            };
            let secret_headers = reseal(secret_headers, &|n| header_aad(ws.as_str(), &tool, n), "header")?;
            let secret_query = reseal(secret_query, &|n| query_aad(ws.as_str(), &tool, n), "query parameter")?;
            let c = Connector::Http { url, headers, secret_headers, secret_query, timeout_ms };
            store.reseal_connector(&ws, &tool, c).await.map_err(|e| e.message)?;
            tools += 1;
        }
        // Webhook signing secrets (and a rotated-out one still in its grace period).
        for (ws, id, secret, previous) in store.all_sealed_webhook_secrets().await.map_err(|e| e.message)? {
            let aad = webhook_secret_aad(ws.as_str(), &id);
            let reseal = |sealed: &str| -> Result<String, String> {
                let plain = both.open(sealed, &aad).map_err(|e| format!("webhook `{id}` secret: {e}"))?;
                both.seal(&plain, &aad).map_err(|e| e.to_string())
            };
            let secret = reseal(&secret)?;
            let previous = previous.as_deref().map(reseal).transpose()?;
            store.reseal_webhook_secrets(&ws, &id, secret, previous).await.map_err(|e| e.message)?;
            hooks += 1;
        }
        store.engine().close();
        Ok((tools, values, hooks))
    });
    match outcome {
        Ok((tools, values, hooks)) => {
            println!(
                "Re-sealed {values} secret value(s) of {tools} tool(s) (headers and query parameters) under key {}.",
                new.current_id().unwrap_or("?")
            );
            println!("Re-sealed the signing secrets of {hooks} webhook(s).");
            println!("Now make {} the server's master key and start the server.", new_key_file.display());
            exit::OK
        }
        Err(e) => fail(exit::FAILURE, format!("rotation stopped, nothing after this point was changed: {e}")),
    }
}
