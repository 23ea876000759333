//! `countersign serve`: the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::store::{self, Purpose};
use super::{exit, fail};
use crate::checkpoint::{self, Signer};
use crate::clock::Clock;
use crate::server::{self, AppState, ServerConfig};
use crate::vault::{self, MasterKeys};

#[derive(clap::Args)]
pub struct Args {
    /// The data directory made by `countersign admin init`: the SQLite store, and the
    /// master key file unless one is given otherwise.
    #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
    data_dir: PathBuf,
    /// Use this PostgreSQL database instead of the data directory's SQLite file, e.g.
    /// `postgres://countersign_app:…@db:5432/countersign`, so that several replicas share one
    /// store. Connect as the server's role (a member of `countersign_server`, not the
    /// tables' owner); the schema must be current (`countersign admin migrate`). See
    /// docs/OPERATIONS.md.
    #[arg(long, env = "COUNTERSIGN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Address to listen on. Put TLS in front (a reverse proxy) for anything but loopback.
    #[arg(long, env = "COUNTERSIGN_LISTEN", default_value = "127.0.0.1:8750")]
    listen: SocketAddr,
    /// Log format: `human` for a terminal, `json` for a log pipeline.
    #[arg(long, env = "COUNTERSIGN_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
    /// How long a sign-in lasts, in hours (1 to 720).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=720))]
    session_hours: u64,
    /// How long a finished webhook delivery (delivered, or given up) stays in the
    /// delivery log, in days. The events themselves stay in the audit log.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3650))]
    webhook_delivery_days: u64,
    /// The master key that seals connector and webhook secrets (a file holding base64 of
    /// 32 bytes). Without it: the environment variable COUNTERSIGN_MASTER_KEY (the base64
    /// itself), else `master.key` in the data directory.
    #[arg(long)]
    master_key_file: Option<PathBuf>,
    /// A previous master key, to open secrets sealed before a rotation.
    #[arg(long)]
    previous_master_key_file: Option<PathBuf>,
    /// The Ed25519 key that signs audit checkpoints (base64 of a 32-byte seed). Default:
    /// `signing.key` in the data directory, created (0600) if missing.
    #[arg(long)]
    signing_key_file: Option<PathBuf>,
}

/// Loads the checkpoint signing key: the given file (which must exist), else
/// `signing.key` in the data directory, created with a fresh key if missing.
pub fn load_signer(data_dir: &std::path::Path, file: Option<&std::path::Path>) -> Result<Signer, String> {
    let signer = match file {
        Some(path) => Signer::from_file(path)?,
        None => {
            let path = data_dir.join(checkpoint::KEY_FILE);
            let (signer, created) = Signer::load_or_create(&path)?;
            if created {
                tracing::info!(path = %path.display(), key_id = signer.key_id(), "created a new audit checkpoint signing key");
            }
            warn_if_shared(&path);
            signer
        }
    };
    Ok(signer)
}

/// Warns when a key file can be read by anyone but its owner.
fn warn_if_shared(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the signing key file is readable by others; run `chmod 600` on it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Loads the master keys: the environment first, then the key file.
pub fn load_keys(
    data_dir: &std::path::Path,
    file: Option<&std::path::Path>,
    previous: Option<&std::path::Path>,
) -> Result<MasterKeys, String> {
    // What is named on the command line wins, then the environment, then the default file.
    let current = match (file, std::env::var(vault::ENV_KEY)) {
        (Some(path), _) if path.exists() => MasterKeys::from_file(path)?,
        (Some(path), _) => return Err(format!("the master key file {} does not exist", path.display())),
        (None, Ok(text)) if !text.trim().is_empty() => MasterKeys::from_base64(&text).map_err(|e| format!("{}: {e}", vault::ENV_KEY))?,
        (None, _) => {
            let path = data_dir.join("master.key");
            if path.exists() {
                MasterKeys::from_file(&path)?
            } else {
                tracing::warn!("no master key ({} or {}): tools cannot have secret headers", vault::ENV_KEY, path.display());
                MasterKeys::none()
            }
        }
    };
    match previous {
        Some(p) => Ok(current.with_previous(MasterKeys::from_file(p)?)),
        None => Ok(current),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Sets up logging. `RUST_LOG` overrides the level (default `info`).
pub fn init_logging(format: LogFormat) {
    init_logging_at(format, "info");
}

/// Logging for one-shot commands: warnings and errors only unless `RUST_LOG` says otherwise.
pub fn init_command_logging() {
    init_logging_at(LogFormat::Human, "warn");
}

fn init_logging_at(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Internal errors off: with them on, a log line that cannot be written (standard error
    // is a pipe whose reader went away) makes tracing-subscriber `eprintln!`, which panics
    // the request being logged.
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

pub fn run(args: Args) -> u8 {
    init_logging(args.log_format);
    let clock = Clock::system();
    // Held until the process ends: one server per SQLite store, and no admin command that
    // would change what it holds in memory while it runs.
    // (A directory that does not exist holds no store: opening it says so below.)
    let sqlite = store::on_sqlite(args.database_url.as_deref()) && args.data_dir.exists();
    let _lock = match sqlite.then(|| store::lock_data_dir(&args.data_dir, "starting another on the same store")) {
        Some(Err(e)) => return fail(exit::FAILURE, e),
        Some(Ok(lock)) => Some(lock),
        None => None,
    };
    // Opened before the runtime starts: the PostgreSQL client blocks, on its own threads.
    let store = match store::open(Some(&args.data_dir), args.database_url.as_deref(), Purpose::Serve, clock.clone()) {
        Ok(s) => s,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let where_ = store::describe(Some(&args.data_dir), args.database_url.as_deref());
    let rt = super::runtime();
    rt.block_on(async move {
        let config = ServerConfig {
            session_ttl: Duration::from_secs(args.session_hours * 3600),
            webhook_delivery_retention: Duration::from_secs(args.webhook_delivery_days * 24 * 3600),
            ..ServerConfig::default()
        };
        let keys = match load_keys(&args.data_dir, args.master_key_file.as_deref(), args.previous_master_key_file.as_deref()) {
            Ok(k) => k,
            Err(e) => return fail(exit::FAILURE, e),
        };
        let signer = match load_signer(&args.data_dir, args.signing_key_file.as_deref()) {
            Ok(s) => s,
            Err(e) => return fail(exit::FAILURE, e),
        };
        tracing::info!(key_id = signer.key_id(), "audit checkpoints are signed with key {}", signer.key_id());
        let state = AppState::with_signer(store, clock, config, keys, signer);
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => return fail(exit::FAILURE, format!("cannot listen on {}: {e}", args.listen)),
        };
        let running = match server::start(listener, state.clone()).await {
            Ok(r) => r,
            Err(e) => return fail(exit::FAILURE, e),
        };
        tracing::info!(addr = %running.addr, store = %where_, "countersign is serving on http://{}", running.addr);
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        state.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(30), running.shutdown()).await {
            Ok(Ok(())) => {
                tracing::info!("stopped");
                exit::OK
            }
            Ok(Err(e)) => fail(exit::FAILURE, e),
            Err(_) => fail(exit::FAILURE, "in-flight requests did not finish within 30 seconds; stopping anyway"),
        }
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
