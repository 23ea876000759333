//! `countersign audit`: verify the chain, export the log.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::store::{self, Purpose};
use super::{exit, fail};
use crate::audit::{AuditEvent, Verifier, VerifyReport};
use crate::clock::Clock;
use crate::store::{AuditLog, SqlStore, WorkspaceId, Workspaces};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Recompute the hash chain and name the first broken `seq`. Exit 0 when it holds,
    /// 3 when it does not.
    Verify(VerifyArgs),
    /// Export a workspace's log as JSONL (verifiable offline) or CSV (for spreadsheets).
    Export(ExportArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["data_dir", "database_url", "file"])))]
pub struct VerifyArgs {
    /// Verify the store in this data directory (every workspace, or `--workspace`).
    #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Verify this PostgreSQL store instead.
    #[arg(long, env = "COUNTERSIGN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Verify an exported JSONL file instead, offline.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Only this workspace (name or id).
    #[arg(long)]
    workspace: Option<String>,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("store").required(true).multiple(true).args(["data_dir", "database_url"])))]
pub struct ExportArgs {
    #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Export from this PostgreSQL store instead of the data directory's SQLite file.
    #[arg(long, env = "COUNTERSIGN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// The workspace (name or id).
    #[arg(long)]
    workspace: String,
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

pub fn run(cmd: Command) -> u8 {
    match cmd {
        Command::Verify(a) => match (&a.data_dir, &a.database_url, &a.file) {
            (_, _, Some(file)) => verify_file(file),
            (None, None, None) => fail(exit::USAGE, "give --data-dir, --database-url or --file"),
            (dir, url, None) => verify_store(dir.as_deref(), url.as_deref(), a.workspace.as_deref()),
        },
        Command::Export(a) => export(a),
    }
}

fn report(label: &str, r: &VerifyReport) -> u8 {
    if r.ok {
        println!("{label}: ok, {} events, head seq {} hash {}", r.events, r.head_seq, r.head_hash);
        exit::OK
    } else {
        println!(
            "{label}: BROKEN at seq {}: {}",
            r.first_broken_seq.unwrap_or_default(),
            r.reason.as_deref().unwrap_or("the chain does not hold")
        );
        println!("{label}: {} events before it verified (last good seq {})", r.events, r.head_seq);
        exit::VERIFY_FAILED
    }
}

/// Verifies an exported JSONL file, one event per line, in constant memory.
pub fn verify_file(path: &Path) -> u8 {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(exit::FAILURE, format!("cannot read {}: {e}", path.display())),
    };
    let mut verifier = Verifier::new();
    let mut broken = None;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return fail(exit::FAILURE, format!("cannot read {}: {e}", path.display())),
        };
        if line.trim().is_empty() {
            continue;
        }
        let event: AuditEvent = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                let (seq, _) = verifier.head();
                broken = Some(crate::audit::Break { seq: seq + 1, reason: format!("line {} is not an audit event: {e}", n + 1) });
                break;
            }
        };
        if let Err(b) = verifier.push(&event) {
            broken = Some(b);
            break;
        }
    }
    report(&path.display().to_string(), &VerifyReport::from(&verifier, broken))
}

async fn find_workspace(store: &SqlStore, wanted: &str) -> Result<WorkspaceId, String> {
    let all = store.list_workspaces().await.map_err(|e| e.message)?;
    all.into_iter()
        .find(|w| w.name == wanted || w.id == wanted)
        .map(|w| WorkspaceId::trusted(w.id))
        .ok_or_else(|| format!("there is no workspace `{wanted}` in this data directory"))
}

fn open(dir: Option<&Path>, database_url: Option<&str>) -> Result<std::sync::Arc<SqlStore>, String> {
    store::open(dir, database_url, Purpose::Admin, Clock::system())
}

fn verify_store(dir: Option<&Path>, database_url: Option<&str>, only: Option<&str>) -> u8 {
    let store = match open(dir, database_url) {
        Ok(s) => s,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let code = super::runtime().block_on(async {
        let targets: Vec<(String, WorkspaceId)> = match only {
            Some(w) => match find_workspace(&store, w).await {
                Ok(id) => vec![(w.to_string(), id)],
                Err(e) => return fail(exit::FAILURE, e),
            },
            None => match store.list_workspaces().await {
                Ok(all) => all.into_iter().map(|w| (w.name, WorkspaceId::trusted(w.id))).collect(),
                Err(e) => return fail(exit::FAILURE, e.message),
            },
        };
        let mut code = exit::OK;
        for (name, ws) in targets {
            match store.audit_verify(&ws).await {
                Ok(r) => code = code.max(report(&format!("workspace {name} ({ws})"), &r)),
                Err(e) => return fail(exit::FAILURE, e.message),
            }
        }
        code
    });
    store.engine().close();
    code
}

fn export(a: ExportArgs) -> u8 {
    let store = match open(a.data_dir.as_deref(), a.database_url.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => return fail(exit::FAILURE, format!("cannot write {}: {e}", p.display())),
        },
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let code = super::runtime().block_on(async {
        let ws = match find_workspace(&store, &a.workspace).await {
            Ok(id) => id,
            Err(e) => return fail(exit::FAILURE, e),
        };
        if matches!(a.format, Format::Csv)
            && let Err(e) = out.write_all(crate::csv::row(&crate::csv::AUDIT_HEADER).as_bytes())
        {
            return fail(exit::FAILURE, e);
        }
        let mut after = 0;
        loop {
            let page = match store.audit_page(&ws, after, 1000).await {
                Ok(p) => p,
                Err(e) => return fail(exit::FAILURE, e.message),
            };
            if page.is_empty() {
                break;
            }
            for e in &page {
                let line = match a.format {
                    Format::Jsonl => serde_json::to_string(e).map(|mut s| {
                        s.push('\n');
                        s
                    }),
                    Format::Csv => Ok(crate::csv::audit_row(e)),
                };
                let written = line.map_err(std::io::Error::other).and_then(|l| out.write_all(l.as_bytes()));
                if let Err(e) = written {
                    return fail(exit::FAILURE, e);
                }
            }
            after = page.last().map_or(after, |e| e.seq);
        }
        match out.flush() {
            Ok(()) => exit::OK,
            Err(e) => fail(exit::FAILURE, e),
        }
    });
    store.engine().close();
    code
}
