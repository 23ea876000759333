//! Audit export benchmark: `cargo bench --bench export_rate`.
//!
//! Fills a data directory's audit log straight through the store API (the same
//! `WriteTx::append` every change uses: real hashes, real chain), then starts the real
//! `countersign serve` (release build) on loopback and downloads
//! `GET /v1/audit/export` as JSONL and as CSV over HTTP, reporting:
//! - events per second and MB per second for each format (median of 3 runs), each run
//!   checked complete: the event count matches the `X-Countersign-Head-Seq` header;
//! - the server's resident memory after sign-in (VmRSS) and its peak over its whole life
//!   (VmHWM, from /proc/<pid>/status) once the exports are done.
//!
//! It runs two phases on the same directory, the second with four times the events of
//! the first, each with a fresh server process: if exports stream in constant memory,
//! the peak does not grow with the log. `EXPORT_RATE_EVENTS` sets the larger size
//! (default 200000).

#[path = "support/serve_log.rs"]
mod serve_log;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use countersign::audit::{Actor, EventDraft, Via};
use countersign::clock::Clock;
use countersign::store::{SqlStore, Workspaces};
use serde_json::{Value, json};

const PASSWORD: &str = "benchmark password 1";

/// Appends events until the log holds `total`, 1000 per write job.
fn fill(dir: &std::path::Path, total: u64) -> u64 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = SqlStore::open_sqlite(&dir.join("countersign.db"), Clock::system()).unwrap();
        let ws = store.list_workspaces().await.unwrap().remove(0).id;
        let wsid = countersign::store::WorkspaceId::trusted(ws.clone());
        let (mut have, _) = countersign::store::AuditLog::audit_head(&*store, &wsid).await.unwrap();
        while (have as u64) < total {
            let n = (total - have as u64).min(1000);
            let ws = ws.clone();
            let first = have;
            store
                .engine()
                .write(move |tx| {
                    for i in 0..n as i64 {
                        let seq = first + i + 1;
                        // Shaped like an executed action: ids, a tool, a hash, a small result.
                        let draft = EventDraft::new("action.executed", Actor::agent("tok_01JBENCHAGENT0000000000000"), Via::Agent)
                            .resource(format!("act_01JBENCH{seq:018}"))
                            .payload_sha256(format!("{:064x}", seq))
                            .data(json!({
                                "action_id": format!("act_01JBENCH{seq:018}"),
                                "tool": "crm.update",
                                "connector": "record",
                                "result": {"receipt": format!("rcpt_{seq}"), "ok": true, "note": "updated, as asked"},
                            }));
                        tx.append(&ws, draft)?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
            have += n as i64;
        }
        store.engine().close();
        have as u64
    })
}

struct Server {
    child: std::process::Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir)
        // Access logs off: the export is one request, but keep the terminal out of it.
        .env("RUST_LOG", "warn,countersign::cli=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://{}", serve_log::listening_addr(child.stderr.take().unwrap()));
    Server { child, base }
}

/// A line of /proc/<pid>/status, in MiB.
fn proc_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().unwrap_or(0.0)))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// One download: (seconds, events, bytes).
async fn download(client: &reqwest::Client, base: &str, token: &str, format: &str) -> (f64, u64, u64) {
    use futures_util::StreamExt;
    let start = Instant::now();
    let resp = client.get(format!("{base}/v1/audit/export?format={format}")).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let head: u64 = resp.headers()["x-countersign-head-seq"].to_str().unwrap().parse().unwrap();
    let mut body = resp.bytes_stream();
    let (mut bytes, mut newlines) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the export completes");
        bytes += chunk.len() as u64;
        newlines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    // JSONL: one line per event. CSV: a header, then one record per event (no cell of
    // these events holds a line break).
    let events = if format == "csv" { newlines - 1 } else { newlines };
    assert_eq!(events, head, "{format}: every event up to the head, no more, no less");
    (secs, events, bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let large: u64 = std::env::var("EXPORT_RATE_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let mut init = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["admin", "init", "--workspace", "bench", "--email", "owner@bench.test", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(init.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(init.wait().unwrap().success());

    println!("Audit export over HTTP on loopback (release build, {} cores)", std::thread::available_parallelism().map_or(0, |n| n.get()));
    println!();
    println!(
        "| events in log | format | time (s) | events/s | MB/s | export size (MB) | server RSS before (MiB) | server peak RSS (VmHWM, MiB) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for size in [large / 4, large] {
        let t = Instant::now();
        let have = fill(dir.path(), size);
        eprintln!("filled the log to {have} events in {:.1} s", t.elapsed().as_secs_f64());
        let server = start_server(dir.path());
        let pid = server.child.id();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let client = reqwest::Client::new();
            let r: Value = client
                .post(format!("{}/v1/sessions", server.base))
                .json(&json!({"email": "owner@bench.test", "password": PASSWORD}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = r["token"].as_str().unwrap().to_string();
            let rss_before = proc_mib(pid, "VmRSS:");
            for format in ["jsonl", "csv"] {
                let mut secs = Vec::new();
                let (mut events, mut bytes) = (0, 0);
                for _ in 0..3 {
                    let (s, e, b) = download(&client, &server.base, &token, format).await;
                    secs.push(s);
                    (events, bytes) = (e, b);
                }
                let s = median(secs);
                let mb = bytes as f64 / 1e6;
                println!(
                    "| {events} | {format} | {s:.2} | {:.0} | {:.0} | {mb:.0} | {rss_before:.1} | {:.1} |",
                    events as f64 / s,
                    mb / s,
                    proc_mib(pid, "VmHWM:")
                );
            }
        });
        drop(server);
    }
}
