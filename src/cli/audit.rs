//! `countersign audit`: verify the chain (against a signed checkpoint too), export the log.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use super::store::{self, Purpose};
use super::{exit, fail};
use crate::audit::{AuditEvent, Break, GENESIS_HASH, Verifier, VerifyReport};
use crate::checkpoint::{Checkpoint, PublicKey};
use crate::clock::Clock;
use crate::export_file::{Existing, Format, PartialFile};
use crate::store::{AuditLog, AuditRange, SqlStore, WorkspaceId, Workspaces};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Recompute the hash chain and name the first broken `seq`. Exit 0 when it holds,
    /// 3 when it does not.
    ///
    /// With `--checkpoint`, also prove that the log extends a signed checkpoint kept
    /// earlier (from `GET /v1/audit/checkpoints/latest`): the signature verifies, the log
    /// still holds the checkpoint's seq with exactly its hash, and the chain holds from
    /// genesis through the end. A truncated or rewritten tail exits 3, naming the seq.
    Verify(VerifyArgs),
    /// Export a workspace's log as JSONL (verifiable offline) or CSV (for spreadsheets),
    /// from a data directory or from a server.
    Export(ExportArgs),
}

#[derive(clap::Args)]
pub struct VerifyArgs {
    /// Verify the store in this data directory (every workspace, or `--workspace`, or
    /// the checkpoint's).
    #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Verify this PostgreSQL store (as with `--data-dir`) instead of a data directory's
    /// SQLite file.
    #[arg(long, env = "COUNTERSIGN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Verify an exported JSONL file instead, offline.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Verify a server's log online: fetch its JSONL export (the token's workspace) and
    /// check it here, e.g. `http://127.0.0.1:8750`.
    #[arg(long)]
    server: Option<String>,
    /// The bearer token for `--server` (needs `audit:export`).
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only this workspace (name or id), with `--data-dir`.
    #[arg(long)]
    workspace: Option<String>,
    /// A checkpoint JSON kept earlier: prove that the log extends it.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// The server's public key (base64, from `GET /v1/audit/public-key` or `admin init`)
    /// that must have signed the checkpoint. Without it, the key inside the checkpoint
    /// is used, which proves the checkpoint was not altered but not who signed it.
    #[arg(long, requires = "checkpoint")]
    public_key: Option<String>,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Export from the store in this data directory, offline.
    #[arg(long, env = "COUNTERSIGN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Export from this PostgreSQL store (as with `--data-dir`) instead of a data
    /// directory's SQLite file.
    #[arg(long, env = "COUNTERSIGN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Export from a server over HTTP instead, e.g. `http://127.0.0.1:8750` (the
    /// token's workspace).
    #[arg(long)]
    server: Option<String>,
    /// The bearer token for `--server` (needs `audit:export`).
    #[arg(long, env = "COUNTERSIGN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The workspace (name or id), with `--data-dir`.
    #[arg(long)]
    workspace: Option<String>,
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Only events at or after this RFC 3339 time. A filtered export is not a complete
    /// chain and does not verify.
    #[arg(long)]
    since: Option<String>,
    /// Only events before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only these event types, comma-separated; `approval.*` matches a family.
    #[arg(long)]
    types: Option<String>,
    /// Write here instead of standard output. The file appears only once the export is
    /// complete (it is written beside it first, as `<output>.partial`).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run(cmd: Command) -> u8 {
    match cmd {
        Command::Verify(a) => verify(a),
        Command::Export(a) => export(a),
    }
}

fn verify(a: VerifyArgs) -> u8 {
    let checkpoint = match &a.checkpoint {
        Some(path) => match load_checkpoint(path, a.public_key.as_deref()) {
            Ok(c) => Some(c),
            Err(code) => return code,
        },
        None => None,
    };
    // `--server` and `--file` win over a store that may come from the environment.
    match (&a.server, &a.file, &a.data_dir, &a.database_url) {
        (Some(server), _, _, _) => match &a.token {
            Some(token) => verify_server(server, token, checkpoint.as_ref()),
            None => fail(exit::USAGE, "--server needs --token (or COUNTERSIGN_TOKEN)"),
        },
        (None, Some(file), _, _) => verify_file(file, checkpoint.as_ref()),
        (None, None, None, None) => fail(exit::USAGE, "give --data-dir, --database-url, --file or --server"),
        (None, None, dir, url) => verify_store(dir.as_deref(), url.as_deref(), a.workspace.as_deref(), checkpoint.as_ref()),
    }
}

// ---------------------------------------------------------------------------------------
// Checkpoints

/// Reads a checkpoint and checks its signature, saying which key was used. A file that
/// is not a checkpoint is bad input (2); a signature that does not verify is a failed
/// verification (3).
fn load_checkpoint(path: &Path, public_key: Option<&str>) -> Result<Checkpoint, u8> {
    let text = std::fs::read_to_string(path).map_err(|e| fail(exit::FAILURE, format!("cannot read {}: {e}", path.display())))?;
    let checkpoint: Checkpoint = serde_json::from_str(&text).map_err(|e| {
        fail(exit::USAGE, format!("{} is not a checkpoint (the JSON of GET /v1/audit/checkpoints/latest): {e}", path.display()))
    })?;
    let trusted = match public_key {
        Some(k) => Some(PublicKey::from_base64(k).map_err(|e| fail(exit::USAGE, format!("--public-key: {e}")))?),
        None => None,
    };
    if let Err(e) = checkpoint.verify(trusted.as_ref()) {
        println!("checkpoint {}: REFUSED: {e}", path.display());
        return Err(exit::VERIFY_FAILED);
    }
    let how = match &trusted {
        Some(k) => format!("verified with the public key given by --public-key (key {})", k.key_id),
        None => format!(
            "verified with the public key inside the checkpoint (key {}); pass --public-key to pin the server's key",
            checkpoint.key_id
        ),
    };
    println!(
        "checkpoint: workspace {} seq {} hash {} signed {}: signature {how}",
        checkpoint.workspace_id, checkpoint.seq, checkpoint.hash, checkpoint.ts
    );
    Ok(checkpoint)
}

/// Whether a log whose chain holds through `head_seq`, and which has `found` as the hash
/// at the checkpoint's seq (if it reaches it), extends the checkpoint.
fn checkpoint_verdict(c: &Checkpoint, head_seq: i64, found: Option<&str>) -> Result<String, (i64, String)> {
    if c.seq == 0 {
        return if c.hash == GENESIS_HASH {
            Ok("extends the checkpoint (an empty log's genesis)".into())
        } else {
            Err((0, "the checkpoint signs seq 0 with a hash other than the genesis hash".into()))
        };
    }
    match found {
        None => Err((
            c.seq,
            format!(
                "TRUNCATED: the checkpoint signed seq {} but the log ends at seq {head_seq}: events {}..={} were removed",
                c.seq,
                head_seq + 1,
                c.seq
            ),
        )),
        Some(h) if h != c.hash => Err((
            c.seq,
            format!(
                "REWRITTEN: seq {} has hash {h} but the checkpoint signed hash {}: the log was changed at or before seq {}",
                c.seq, c.hash, c.seq
            ),
        )),
        Some(_) => Ok(format!("extends the checkpoint: seq {} has the signed hash, and the chain holds through seq {head_seq}", c.seq)),
    }
}

// ---------------------------------------------------------------------------------------
// Verifying a stream of events (a file, a server's export)

/// Checks events one at a time against the chain and, optionally, a checkpoint, in
/// constant memory.
struct ChainCheck<'a> {
    verifier: Verifier,
    checkpoint: Option<&'a Checkpoint>,
    /// The hash found at the checkpoint's seq, once reached.
    at_checkpoint: Option<String>,
    broken: Option<Break>,
}

impl<'a> ChainCheck<'a> {
    fn new(checkpoint: Option<&'a Checkpoint>) -> Self {
        // Knowing the workspace up front refuses another workspace's log at its first event.
        let verifier = match checkpoint {
            Some(c) => Verifier::resume(&c.workspace_id, 0, GENESIS_HASH),
            None => Verifier::new(),
        };
        ChainCheck { verifier, checkpoint, at_checkpoint: None, broken: None }
    }

    /// Checks one line of a JSONL file; false once the chain is broken.
    fn push_line(&mut self, line: &str, number: usize) -> bool {
        if line.trim().is_empty() {
            return self.broken.is_none();
        }
        match serde_json::from_str::<AuditEvent>(line) {
            Ok(e) => self.push(&e),
            Err(e) => {
                let seq = self.verifier.head().0 + 1;
                self.broken = Some(Break { seq, reason: format!("line {number} is not an audit event: {e}") });
                false
            }
        }
    }

    /// Checks the next event; false once the chain is broken.
    fn push(&mut self, e: &AuditEvent) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let (last, _) = self.verifier.head();
        let expected = last + 1;
        if e.seq != expected {
            let reason = if e.seq > expected {
                let start = if last == 0 {
                    format!("the events start at seq {}, not 1", e.seq)
                } else {
                    format!("the events jump from seq {last} to seq {}", e.seq)
                };
                format!(
                    "{start}: seq {expected}..={} are missing. This is not a complete log — a filtered export \
                     (since, until or types) leaves events out and cannot prove the chain; export without filters to verify",
                    e.seq - 1
                )
            } else {
                format!("seq {} comes again or out of order after seq {last}", e.seq)
            };
            self.broken = Some(Break { seq: expected, reason });
            return false;
        }
        if let Err(b) = self.verifier.push(e) {
            self.broken = Some(b);
            return false;
        }
        if self.checkpoint.is_some_and(|c| c.seq == e.seq) {
            self.at_checkpoint = Some(e.hash.clone());
        }
        true
    }

    /// Prints the outcome under `label` and returns the exit code.
    fn finish(self, label: &str) -> u8 {
        let report = VerifyReport::from(&self.verifier, self.broken);
        let code = report_chain(label, &report);
        match self.checkpoint {
            Some(c) if report.ok => report_checkpoint(label, c, report.head_seq, self.at_checkpoint.as_deref()),
            Some(_) => {
                println!("{label}: the checkpoint cannot be proven: the chain is broken");
                code
            }
            None => code,
        }
    }
}

fn report_chain(label: &str, r: &VerifyReport) -> u8 {
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

fn report_checkpoint(label: &str, c: &Checkpoint, head_seq: i64, found: Option<&str>) -> u8 {
    match checkpoint_verdict(c, head_seq, found) {
        Ok(msg) => {
            println!("{label}: {msg}");
            exit::OK
        }
        Err((seq, msg)) => {
            println!("{label}: BROKEN at seq {seq}: {msg}");
            exit::VERIFY_FAILED
        }
    }
}

/// Verifies an exported JSONL file, one event per line, in constant memory.
fn verify_file(path: &Path, checkpoint: Option<&Checkpoint>) -> u8 {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return fail(exit::FAILURE, format!("cannot read {}: {e}", path.display())),
    };
    let mut check = ChainCheck::new(checkpoint);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return fail(exit::FAILURE, format!("cannot read {}: {e}", path.display())),
        };
        if !check.push_line(&line, n + 1) {
            break;
        }
    }
    check.finish(&path.display().to_string())
}

// ---------------------------------------------------------------------------------------
// Talking to a server

fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .user_agent(concat!("countersign-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot start an HTTP client: {e}"))
}

/// Starts `GET /v1/audit/export` and returns the response once it is a 200.
async fn start_export(server: &str, token: &str, params: &[(&str, &str)]) -> Result<reqwest::Response, String> {
    let base = server.trim_end_matches('/');
    let mut url = reqwest::Url::parse(&format!("{base}/v1/audit/export")).map_err(|e| format!("--server `{server}` is not a URL: {e}"))?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    let client = http_client()?;
    let resp = client.get(url).bearer_auth(token).send().await.map_err(|e| format!("cannot reach {base}: {e}"))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or("no explanation given");
    let code = body["error"]["code"].as_str().unwrap_or("unknown");
    Err(format!("the server refused the export ({status}, {code}): {message}"))
}

fn verify_server(server: &str, token: &str, checkpoint: Option<&Checkpoint>) -> u8 {
    use futures_util::StreamExt;
    super::runtime().block_on(async {
        let resp = match start_export(server, token, &[("format", "jsonl")]).await {
            Ok(r) => r,
            Err(e) => return fail(exit::FAILURE, e),
        };
        let mut check = ChainCheck::new(checkpoint);
        let mut body = resp.bytes_stream();
        let mut pending: Vec<u8> = Vec::new();
        let mut lines = 0usize;
        let mut going = true;
        while going {
            let chunk = match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return fail(exit::FAILURE, format!("the export was cut off before its end: {e}")),
                None => break,
            };
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
                lines += 1;
                let line = String::from_utf8_lossy(&pending[start..start + i]).into_owned();
                start += i + 1;
                if !check.push_line(&line, lines) {
                    going = false;
                    break;
                }
            }
            pending.drain(..start);
        }
        if going && !pending.is_empty() {
            check.push_line(&String::from_utf8_lossy(&pending), lines + 1);
        }
        check.finish(server.trim_end_matches('/'))
    })
}

// ---------------------------------------------------------------------------------------
// The store in a data directory

async fn find_workspace(store: &SqlStore, wanted: &str) -> Result<WorkspaceId, String> {
    let all = store.list_workspaces().await.map_err(|e| e.message)?;
    all.into_iter()
        .find(|w| w.name == wanted || w.id == wanted)
        .map(|w| WorkspaceId::trusted(w.id))
        .ok_or_else(|| format!("there is no workspace `{wanted}` in this data directory"))
}

/// The store in a data directory, or the PostgreSQL database named (opened before any
/// runtime starts: the PostgreSQL client blocks on its own threads).
fn open(dir: Option<&Path>, database_url: Option<&str>) -> Result<std::sync::Arc<SqlStore>, String> {
    store::open(dir, database_url, Purpose::Admin, Clock::system())
}

fn verify_store(dir: Option<&Path>, database_url: Option<&str>, only: Option<&str>, checkpoint: Option<&Checkpoint>) -> u8 {
    let store = match open(dir, database_url) {
        Ok(s) => s,
        Err(e) => return fail(exit::FAILURE, e),
    };
    let code = super::runtime().block_on(async {
        let targets: Vec<(String, WorkspaceId)> = match (only, checkpoint) {
            (Some(w), _) => match find_workspace(&store, w).await {
                Ok(id) if checkpoint.is_some_and(|c| c.workspace_id != id.as_str()) => {
                    return fail(
                        exit::USAGE,
                        format!("the checkpoint is for workspace {}, not `{w}`", checkpoint.map_or("", |c| &c.workspace_id)),
                    );
                }
                Ok(id) => vec![(w.to_string(), id)],
                Err(e) => return fail(exit::FAILURE, e),
            },
            (None, Some(c)) => match find_workspace(&store, &c.workspace_id).await {
                Ok(id) => vec![(c.workspace_id.clone(), id)],
                Err(e) => return fail(exit::VERIFY_FAILED, format!("the checkpoint's workspace is missing: {e}")),
            },
            (None, None) => match store.list_workspaces().await {
                Ok(all) => all.into_iter().map(|w| (w.name, WorkspaceId::trusted(w.id))).collect(),
                Err(e) => return fail(exit::FAILURE, e.message),
            },
        };
        let mut code = exit::OK;
        for (name, ws) in targets {
            let label = format!("workspace {name} ({ws})");
            let report = match store.audit_verify(&ws).await {
                Ok(r) => r,
                Err(e) => return fail(exit::FAILURE, e.message),
            };
            code = code.max(report_chain(&label, &report));
            if let Some(c) = checkpoint {
                if !report.ok {
                    println!("{label}: the checkpoint cannot be proven: the chain is broken");
                    continue;
                }
                let found = match store.audit_page(&ws, c.seq - 1, 1).await {
                    Ok(page) => page.into_iter().find(|e| e.seq == c.seq).map(|e| e.hash),
                    Err(e) => return fail(exit::FAILURE, e.message),
                };
                code = code.max(report_checkpoint(&label, c, report.head_seq, found.as_deref()));
            }
        }
        code
    });
    store.engine().close();
    code
}

// ---------------------------------------------------------------------------------------
// Export

/// Where an export goes: standard output, or a file that appears only once complete
/// ([`PartialFile`], removed when dropped unfinished), so a failed export never leaves a
/// file that looks whole.
enum Output {
    Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>),
    File(PartialFile),
}

impl Output {
    fn open(path: Option<&Path>) -> Result<Output, String> {
        match path {
            None => Ok(Output::Stdout(std::io::BufWriter::new(std::io::stdout().lock()))),
            Some(p) => PartialFile::create(p, Existing::Replace).map(Output::File),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        match self {
            Output::Stdout(out) => out.write_all(bytes).map_err(|e| format!("cannot write the export: {e}")),
            Output::File(f) => f.write(bytes),
        }
    }

    fn finish(self) -> Result<(), String> {
        match self {
            Output::Stdout(mut out) => out.flush().map_err(|e| format!("cannot write the export: {e}")),
            Output::File(f) => f.finish().map(drop),
        }
    }
}

fn export(a: ExportArgs) -> u8 {
    // Checked here, by the rule the server checks them by, whichever exports: bad input is
    // exit 2 either way.
    let range = match AuditRange::parse(a.since.as_deref(), a.until.as_deref(), a.types.as_deref()) {
        Ok(r) => r,
        Err(e) => return fail(exit::USAGE, e.message),
    };
    let outcome = if let Some(server) = &a.server {
        match &a.token {
            Some(token) => export_server(&a, server, token),
            None => return fail(exit::USAGE, "--server needs --token (or COUNTERSIGN_TOKEN)"),
        }
    } else if a.data_dir.is_some() || a.database_url.is_some() {
        let Some(ws) = &a.workspace else { return fail(exit::USAGE, "--data-dir or --database-url needs --workspace (a name or id)") };
        export_store(&a, ws, range)
    } else {
        return fail(exit::USAGE, "give --data-dir or --database-url (with --workspace), or --server (with --token)");
    };
    match outcome {
        Ok(()) => exit::OK,
        Err(e) => fail(exit::FAILURE, e),
    }
}

fn export_server(a: &ExportArgs, server: &str, token: &str) -> Result<(), String> {
    let mut params = vec![("format", a.format.as_str())];
    for (k, v) in [("since", &a.since), ("until", &a.until), ("types", &a.types)] {
        if let Some(v) = v {
            params.push((k, v.as_str()));
        }
    }
    super::runtime().block_on(async {
        let resp = start_export(server, token, &params).await?;
        // On any error `out` is dropped, and a partial file with it.
        let mut out = Output::open(a.output.as_deref())?;
        crate::export_file::copy_body(resp, |bytes| out.write(bytes)).await?;
        out.finish()
    })
}

fn export_store(a: &ExportArgs, workspace: &str, mut range: AuditRange) -> Result<(), String> {
    let store = open(a.data_dir.as_deref(), a.database_url.as_deref())?;
    let result = super::runtime().block_on(async {
        let ws = find_workspace(&store, workspace).await?;
        let (head, _) = store.audit_head(&ws).await.map_err(|e| e.message)?;
        range.through_seq = Some(head);
        let mut out = Output::open(a.output.as_deref())?;
        write_store_export(&store, &ws, &range, a.format, &mut out).await?;
        out.finish()
    });
    store.engine().close();
    result
}

async fn write_store_export(
    store: &SqlStore,
    ws: &WorkspaceId,
    range: &AuditRange,
    format: Format,
    out: &mut Output,
) -> Result<(), String> {
    if matches!(format, Format::Csv) {
        out.write(crate::csv::row(&crate::csv::AUDIT_HEADER).as_bytes())?;
    }
    let mut after = 0;
    loop {
        let page = store.audit_range(ws, after, range, 1000).await.map_err(|e| e.message)?;
        let Some(last) = page.last() else { return Ok(()) };
        after = last.seq;
        let mut buf = Vec::with_capacity(page.len() * 512);
        for e in &page {
            match format {
                Format::Jsonl => {
                    serde_json::to_writer(&mut buf, e).map_err(|err| format!("cannot encode event {}: {err}", e.seq))?;
                    buf.push(b'\n');
                }
                Format::Csv => buf.extend_from_slice(crate::csv::audit_row(e).as_bytes()),
            }
        }
        out.write(&buf)?;
    }
}
