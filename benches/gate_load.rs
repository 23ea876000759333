//! Load benchmark for the gate: `cargo bench --bench gate_load`.
//!
//! Starts the real `countersign serve` (release build) on loopback with a fresh data
//! directory, then drives it over HTTP from this process and reports, in one run:
//! - the machine's fsync rate (what durability costs here);
//! - `GET /healthz` throughput (what plain HTTP costs here), and its latency at a fixed
//!   2,000 requests per second (the floor under the decisions' latency at that rate);
//!   the same for a plain threaded responder with nothing of Countersign in it, so what
//!   the machine does to loopback HTTP is told from what the server does;
//! - durable decisions per second for `POST /v1/actions` on an `auto` tool with the
//!   `record` connector, at increasing concurrency, with p50/p99 latency;
//! - latency at a fixed 2,000 decisions per second (open loop: latency is measured from
//!   when each request was due, so a stall is not hidden), with the machine watched
//!   beside it (the disk's fsync latency, the hypervisor's steal time, and how late a
//!   plain thread wakes);
//! - dry runs per second: the whole pipeline over HTTP with nothing written, the ceiling
//!   any store leaves room for;
//! - full approval cycles per second (submit → approve → execute).
//!
//! Every decision counted was answered 201 with `status: executed`, which the server
//! only sends after the action and its audit events are committed and fsynced.
//! `GATE_LOAD_SECONDS` sets the length of each step (default 5). `GATE_LOAD_FLOORS_ONLY=N`
//! runs only the two floors, N times over, and stops. `GATE_LOAD_HOLD=N` holds decisions
//! at N connections for the step's length, then dry runs the same, printing the server's
//! process id first (to attach a profiler), and stops. Both processes keep the memory they
//! free (`countersign::memory`); `MIMALLOC_PURGE_DELAY=1000` runs both with mimalloc's
//! default instead, to see what that costs here.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The same allocator as the server binary, so the store-only figures match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSWORD: &str = "benchmark password 1";

#[path = "support/lean_http.rs"]
mod lean_http;
#[path = "support/serve_log.rs"]
mod serve_log;
use lean_http::{BlockingRaw, Raw, request};

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn fsync_rate(dir: &std::path::Path, for_secs: f64) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = [7u8; 512];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < for_secs {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    let _ = std::fs::remove_file(path);
    n as f64 / start.elapsed().as_secs_f64()
}

/// Watches the machine beside a step, about a hundred times a second (light enough not
/// to load what the step measures), so a stall in the step's tail can be told apart:
/// - the disk: one small write and `fdatasync` per sample (a decision's latency includes
///   one sync of the log, so a disk that stalls shows here and in the step alike);
/// - the hypervisor: the machine's steal time from `/proc/stat` (time our virtual CPUs
///   were ready to run while the host ran something else);
/// - the scheduler: how late the probe's own 10 ms sleep ends. A plain thread that wakes
///   hundreds of milliseconds late was not running, whatever the gate was doing.
struct MachineProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<ProbeSamples>,
}

#[derive(Default)]
struct ProbeSamples {
    fsync_us: Vec<u64>,
    /// How late each 10 ms sleep ended.
    woke_late_us: Vec<u64>,
    /// Steal time, all CPUs, in each sample's interval. `/proc/stat` counts in 10 ms
    /// ticks, so a sample reads 0 or a tick or two: a long theft shows as a run of them.
    steal_ms: Vec<u64>,
}

/// The most consecutive samples that each saw some steal time.
fn longest_run(steal_ms: &[u64]) -> usize {
    steal_ms.split(|&ms| ms == 0).map(<[u64]>::len).max().unwrap_or(0)
}

/// The machine's steal time so far, all CPUs, in milliseconds (`/proc/stat` counts it in
/// ticks of 1/100 s); 0 where there is no such file.
fn steal_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or_default();
    // cpu  user nice system idle iowait irq softirq steal …
    cpu.split_whitespace().nth(8).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0) * 10
}

impl MachineProbe {
    fn start(dir: &std::path::Path) -> MachineProbe {
        let path = dir.join("fsync-sampler");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut f = std::fs::File::create(&path).unwrap();
            let mut s = ProbeSamples::default();
            let mut steal = steal_ms();
            let tick = Duration::from_millis(10);
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                f.write_all(&[7u8; 512]).unwrap();
                f.sync_data().unwrap();
                s.fsync_us.push(t.elapsed().as_micros() as u64);
                let t = Instant::now();
                std::thread::sleep(tick);
                s.woke_late_us.push(t.elapsed().saturating_sub(tick).as_micros() as u64);
                let now = steal_ms();
                s.steal_ms.push(now.saturating_sub(steal));
                steal = now;
            }
            let _ = std::fs::remove_file(path);
            s
        });
        MachineProbe { stop, thread }
    }

    /// "machine beside it (… samples): fsync p50 … ms, p99 … ms, max … ms; probe woke late
    /// p99 … ms, max … ms; steal … ms in all, in at most … samples running".
    fn finish(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let mut s = self.thread.join().unwrap();
        format!(
            "machine beside it ({} samples): fsync p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; probe woke late p99 {:.2} ms, max {:.2} ms; steal {} ms in all, in at most {} samples running",
            s.fsync_us.len(),
            percentile_ms(&mut s.fsync_us, 0.5),
            percentile_ms(&mut s.fsync_us, 0.99),
            percentile_ms(&mut s.fsync_us, 1.0),
            percentile_ms(&mut s.woke_late_us, 0.99),
            percentile_ms(&mut s.woke_late_us, 1.0),
            s.steal_ms.iter().sum::<u64>(),
            longest_run(&s.steal_ms)
        )
    }
}

/// The environment variable that makes this binary the plain responder.
const PLAIN_RESPONDER: &str = "GATE_LOAD_PLAIN_RESPONDER";

/// [`lean_http::plain_responder`] in a process of its own (this binary, run again), so it
/// shares the machine with the load generator as `countersign serve` does.
struct PlainResponder {
    child: std::process::Child,
    addr: String,
}

impl PlainResponder {
    fn start() -> PlainResponder {
        // Its standard input stays open as long as this process lives: it ends with us,
        // however we end.
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(PLAIN_RESPONDER, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        PlainResponder { child, addr: line.trim().to_string() }
    }
}

impl Drop for PlainResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Server {
    child: std::process::Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// The decisions every step sends: a hundred distinct payloads, so the log is not one
/// repeated hash; as dry runs, the same with nothing written.
fn decision_requests(addr: &str, agent: &str, dry_run: bool) -> Arc<Vec<Vec<u8>>> {
    Arc::new(
        (0..100)
            .map(|i| {
                let mut body = json!({"tool": "crm.read", "payload": {"query": "customer", "page": i, "fields": ["name", "email", "plan"]}, "confidence": 0.93});
                if dry_run {
                    body["dry_run"] = json!(true);
                }
                request("POST", addr, "/v1/actions", Some(agent), Some(&body))
            })
            .collect(),
    )
}

fn start_server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_countersign");
    let mut init = Command::new(exe)
        .args(["admin", "init", "--workspace", "bench", "--email", "owner@bench.test", "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(init.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(init.wait().unwrap().success());
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir.path())
        // Access logs off: at tens of thousands of requests a second they would measure
        // the terminal, not the gate. Warnings and errors still print.
        .env("RUST_LOG", "warn,countersign::cli=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://{}", serve_log::listening_addr(child.stderr.take().unwrap()));
    Server { child, base, _dir: dir }
}

impl Server {
    /// The size of the store's write-ahead log file now (beside `countersign.db`), in MiB.
    fn wal_mib(&self) -> f64 {
        let len = std::fs::metadata(self._dir.path().join("countersign.db-wal")).map_or(0, |m| m.len());
        len as f64 / (1024.0 * 1024.0)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(1024).tcp_nodelay(true).build().unwrap()
}

async fn call(c: &reqwest::Client, method: reqwest::Method, url: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut r = c.request(method, url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let v = resp.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

struct Setup {
    agent: String,
    approver: String,
    owner: String,
}

async fn setup(c: &reqwest::Client, base: &str) -> Setup {
    let (_, s) = call(
        c,
        reqwest::Method::POST,
        &format!("{base}/v1/sessions"),
        None,
        Some(&json!({"email": "owner@bench.test", "password": PASSWORD})),
    )
    .await;
    let owner = s["token"].as_str().unwrap().to_string();
    let put = |name: &str, policy: &str| json!({"kind": "read", "irreversible": false, "policy": policy, "connector": {"type": "record"}, "description": name});
    call(c, reqwest::Method::PUT, &format!("{base}/v1/tools/crm.read"), Some(&owner), Some(&put("crm.read", "auto"))).await;
    call(c, reqwest::Method::PUT, &format!("{base}/v1/tools/email.send"), Some(&owner), Some(&put("email.send", "approve"))).await;
    let (st, t) = call(
        c,
        reqwest::Method::POST,
        &format!("{base}/v1/tokens"),
        Some(&owner),
        Some(&json!({"name": "bench agent", "scopes": ["actions:submit"], "tools": ["*"]})),
    )
    .await;
    assert_eq!(st, 201, "{t}");
    // The approver is another person: the requester (the token's owner) never counts.
    let (st, m) = call(
        c,
        reqwest::Method::POST,
        &format!("{base}/v1/members"),
        Some(&owner),
        Some(&json!({"email": "approver@bench.test", "password": PASSWORD, "role": "admin"})),
    )
    .await;
    assert_eq!(st, 201, "{m}");
    let (_, a) = call(
        c,
        reqwest::Method::POST,
        &format!("{base}/v1/sessions"),
        None,
        Some(&json!({"email": "approver@bench.test", "password": PASSWORD})),
    )
    .await;
    Setup { agent: t["token"].as_str().unwrap().to_string(), approver: a["token"].as_str().unwrap().to_string(), owner }
}

#[derive(Default)]
struct Stats {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u64>,
    /// Open loop only: how late the load generator woke to send a request it was waiting
    /// for (its own lateness).
    late_us: Vec<u64>,
    /// Open loop only: how late each request left that was already due when a connection
    /// came free for it (every connection busy: a slow server, not the generator).
    queued_us: Vec<u64>,
    secs: f64,
}

fn percentile_ms(us: &mut [u64], p: f64) -> f64 {
    if us.is_empty() {
        return 0.0;
    }
    us.sort_unstable();
    let i = ((us.len() as f64 - 1.0) * p).round() as usize;
    us[i] as f64 / 1000.0
}

impl Stats {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    fn pct(&mut self, p: f64) -> f64 {
        percentile_ms(&mut self.latencies_us, p)
    }
    /// How late the open loop's requests left, and why (open loop).
    fn lateness(&mut self) -> String {
        format!(
            "generator woke late: p99 {:.2} ms, max {:.2} ms; {} waited for a free connection (longest {:.2} ms)",
            percentile_ms(&mut self.late_us, 0.99),
            percentile_ms(&mut self.late_us, 1.0),
            self.queued_us.len(),
            percentile_ms(&mut self.queued_us, 1.0)
        )
    }
}

/// Closed loop: `concurrency` workers, each on its own connection, sending the next
/// request when the last answers. `check` says whether an answer counts as done.
async fn closed_loop(addr: &str, concurrency: usize, secs: f64, requests: Arc<Vec<Vec<u8>>>, check: fn(u16, &[u8]) -> bool) -> Stats {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let (stop, requests) = (stop.clone(), requests.clone());
        let mut conn = Raw::connect(addr).await;
        workers.push(tokio::spawn(async move {
            let mut s = Stats::default();
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let ok = match conn.send(&requests[i % requests.len()]).await {
                    Ok((status, body)) => check(status, body),
                    Err(_) => false,
                };
                if ok {
                    s.ok += 1;
                    s.latencies_us.push(t.elapsed().as_micros() as u64);
                } else {
                    s.errors += 1;
                }
                i += concurrency;
            }
            s
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Stats::default();
    for w in workers {
        let s = w.await.unwrap();
        total.ok += s.ok;
        total.errors += s.errors;
        total.latencies_us.extend(s.latencies_us);
    }
    total.secs = start.elapsed().as_secs_f64();
    total
}

/// Sends `rate` requests a second for `secs` seconds, each when it is due, whatever became
/// of the ones before (an open loop), and measures each from when it was due, so a stall of
/// the server is counted in full rather than hidden by a loop that waits for it.
///
/// Paced by plain threads on blocking sockets, each taking the next request due, sleeping
/// until then and sending it. On this machine a tokio timer wakes 1 ms late at the median
/// and up to tens of ms late at the tail, while a thread's sleep is 0.1 ms late: paced by
/// the runtime, the loop measured itself (`/healthz`, whose answers took under 2 ms, had a
/// p99 of 19–29 ms). How late requests left is kept apart by cause: the generator waking
/// late (`late_us`), or every connection busy behind a slow server (`queued_us`).
async fn open_loop(addr: &str, rate: f64, secs: f64, requests: Arc<Vec<Vec<u8>>>, check: fn(u16, &[u8]) -> bool) -> Stats {
    /// More than are ever in flight at 2,000/s unless the server stalls; a request due
    /// while all are busy waits for one, and that wait is counted in its latency.
    const THREADS: usize = 64;
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        let mut conns: Vec<BlockingRaw> = (0..THREADS).map(|_| BlockingRaw::connect(&addr)).collect();
        // Each connection answers one request first (not counted), and the clock starts
        // once all the threads can have started: the step measures the gate at that rate,
        // not a server meeting 64 new connections or a process starting 64 threads.
        for conn in &mut conns {
            match conn.send(&requests[0]) {
                Ok((status, body)) if check(status, body) => {}
                Ok((status, body)) => panic!("a warm-up request was answered {status}: {}", String::from_utf8_lossy(body)),
                Err(e) => panic!("a warm-up request failed: {e}"),
            }
        }
        let total = (rate * secs) as u64;
        let next = AtomicU64::new(0);
        let start = Instant::now() + Duration::from_millis(50);
        let parts: Vec<Stats> = std::thread::scope(|scope| {
            let workers: Vec<_> = conns
                .into_iter()
                .map(|mut conn| {
                    let (next, requests, addr) = (&next, &requests, &addr);
                    scope.spawn(move || {
                        let mut s = Stats::default();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= total {
                                return s;
                            }
                            let due = start + Duration::from_secs_f64(i as f64 / rate);
                            match due.checked_duration_since(Instant::now()) {
                                Some(wait) => {
                                    std::thread::sleep(wait);
                                    s.late_us.push(due.elapsed().as_micros() as u64);
                                }
                                None => s.queued_us.push(due.elapsed().as_micros() as u64),
                            }
                            match conn.send(&requests[i as usize % requests.len()]) {
                                Ok((status, body)) if check(status, body) => {
                                    s.ok += 1;
                                    s.latencies_us.push(due.elapsed().as_micros() as u64);
                                }
                                Ok(_) => s.errors += 1,
                                Err(_) => {
                                    // The connection may be half-way through an answer: a
                                    // new one, so the rest of the step is not lost with it.
                                    s.errors += 1;
                                    conn = BlockingRaw::connect(addr);
                                }
                            }
                        }
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut all = Stats { secs: start.elapsed().as_secs_f64(), ..Stats::default() };
        for p in parts {
            all.ok += p.ok;
            all.errors += p.errors;
            all.latencies_us.extend(p.latencies_us);
            all.late_us.extend(p.late_us);
            all.queued_us.extend(p.queued_us);
        }
        all
    })
    .await
    .unwrap()
}

fn executed(status: u16, body: &[u8]) -> bool {
    status == 201 && contains(body, br#""status":"executed""#)
}

fn simulated(status: u16, body: &[u8]) -> bool {
    status == 200 && contains(body, b"\"status\":\"simulated\"")
}

fn healthy(status: u16, _: &[u8]) -> bool {
    status == 200
}

/// One approval cycle on one connection: submit, approve (as another person), execute.
async fn approval_cycle(agent: &mut Raw, approver: &mut Raw, host: &str, s: &Setup, i: u64) -> bool {
    let payload = json!({"to": [format!("customer{i}@example.com")], "subject": "Renewal", "body": "Your plan renews on the 1st."});
    let sub = request("POST", host, "/v1/actions", Some(&s.agent), Some(&json!({"tool": "email.send", "payload": payload})));
    let Ok((201, body)) = agent.send(&sub).await else { return false };
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return false };
    let (Some(apv), Some(id)) = (v["approval_id"].as_str(), v["id"].as_str()) else { return false };
    let decide = request(
        "POST",
        host,
        &format!("/v1/approvals/{apv}/decisions"),
        Some(&s.approver),
        Some(&json!({"decision": "approve", "payload_sha256": v["payload_sha256"]})),
    );
    if !matches!(approver.send(&decide).await, Ok((200, _))) {
        return false;
    }
    let ex = request("POST", host, &format!("/v1/actions/{id}/execute"), Some(&s.agent), Some(&json!({"payload": payload})));
    matches!(agent.send(&ex).await, Ok((200, b)) if contains(b, br#""status":"executed""#))
}

/// CPU seconds this process has used (all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The store alone, no HTTP: durable decisions per second and CPU per decision, to show
/// how the gate's cost divides between the store and the HTTP layer.
fn store_only(secs: f64) {
    use countersign::gate::{Outcome, Policy, Stage};
    use countersign::model::DecisionRecord;
    use countersign::store::{Actions, NewAction, NewMember, Origin, SqlStore, Store, WorkspaceId, Workspaces};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let store = SqlStore::open_sqlite(&dir.path().join("store.db"), countersign::clock::Clock::system()).unwrap();
        let owner = NewMember { email: "o@bench.test".into(), name: "o".into(), role: "owner".into(), password_hash: "-".into() };
        let (ws, owner) = store.create_workspace("bench", owner).await.unwrap();
        let ws = WorkspaceId::trusted(ws.id);
        let under = countersign::store::DecidedUnder {
            epoch: store.config_epoch().await.unwrap(),
            workspace_version: countersign::store::Tools::gate_context(&*store, &ws, "crm.read").await.unwrap().config_version,
        };
        let trace: Vec<Stage> = [
            "authenticate",
            "scope",
            "workspace_kill_switch",
            "tool_kill_switch",
            "agent_write_control",
            "constitution",
            "confidence_gate",
            "irreversible_floor",
            "tool_policy",
            "outcome",
        ]
        .iter()
        .map(|s| Stage { stage: s.to_string(), verdict: "pass".into(), detail: "a sentence of detail about the stage".into() })
        .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let cpu0 = cpu_seconds();
        let start = Instant::now();
        let workers: Vec<_> = (0..64)
            .map(|w| {
                let (store, ws, requester, trace, stop, done) =
                    (store.clone(), ws.clone(), owner.id.clone(), trace.clone(), stop.clone(), done.clone());
                tokio::spawn(async move {
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let payload = json!({"query": "customer", "page": i % 100, "fields": ["name", "email", "plan"]});
                        let pinned = countersign::canonical::pin(&payload).unwrap();
                        let new = NewAction {
                            tool: "crm.read".into(),
                            payload: pinned.canonical,
                            payload_value: payload,
                            payload_sha256: pinned.sha256,
                            resource: None,
                            current: None,
                            current_value: None,
                            reason: None,
                            confidence: Some(0.93),
                            requester_id: requester.clone(),
                            agent_token_id: Some("tok_bench".into()),
                            decision: DecisionRecord {
                                trace: trace.clone(),
                                cited_rules: vec![],
                                constitution_version: None,
                                code: None,
                                message: None,
                            },
                            outcome: Outcome::Execute,
                            policy: Policy::Auto,
                            approval_ttl_seconds: 60,
                            record_now: true,
                            idempotency: None,
                            decided_under: under,
                        };
                        let by = Origin { actor: countersign::audit::Actor::agent("tok_bench"), via: countersign::audit::Via::Agent };
                        store.record_action(&ws, &by, new).await.unwrap();
                        done.fetch_add(1, Ordering::Relaxed);
                        i += 64;
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.await.unwrap();
        }
        let n = done.load(Ordering::Relaxed) as f64;
        let el = start.elapsed().as_secs_f64();
        println!(
            "store only (no HTTP), 64 concurrent: {:.0} durable decisions/s, {:.0} µs of CPU per decision (writer and callers)\n",
            n / el,
            (cpu_seconds() - cpu0) * 1e6 / n
        );
        store.engine().close();
    });
}

/// Plain HTTP on this machine: `requests` as fast as 64 connections go, then at a fixed
/// 2,000 per second (the same open loop as the decisions' latency step) with the machine
/// watched beside it. Prints both; returns the first. On `/healthz` this is the floor under
/// the gate's targets: what it shows beyond a millisecond or two is not the gate's work.
async fn floors(name: &str, addr: &str, secs: f64, requests: Arc<Vec<Vec<u8>>>, probe_dir: &std::path::Path) -> Stats {
    let mut fastest = closed_loop(addr, 64, secs, requests.clone(), healthy).await;
    println!(
        "{name}, 64 connections: {:.0} per second (p50 {:.2} ms, p99 {:.2} ms)\n",
        fastest.rate(),
        fastest.pct(0.5),
        fastest.pct(0.99)
    );
    let probe = MachineProbe::start(probe_dir);
    let mut fixed = open_loop(addr, 2000.0, secs, requests, healthy).await;
    let machine = probe.finish();
    let late = fixed.lateness();
    println!(
        "{name} at a fixed 2,000/s (open loop): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, errors {}; {late}; {machine}\n",
        fixed.pct(0.5),
        fixed.pct(0.99),
        fixed.pct(0.999),
        fixed.pct(1.0),
        fixed.errors,
    );
    fastest
}

async fn closed_loop_owned(addr: String, concurrency: usize, secs: f64, requests: Arc<Vec<Vec<u8>>>) -> Stats {
    closed_loop(&addr, concurrency, secs, requests, executed).await
}

/// Reads the live stream for `secs`: events received, the delay of each from its
/// append (the event's `ts`, stamped when its write job ran, before the commit) to its
/// arrival here, and whether the server said this client lagged.
async fn sse_client(base: &str, owner: &str, secs: f64) -> (u64, Vec<u64>, bool) {
    use futures_util::StreamExt;
    let c = reqwest::Client::new();
    // From the head: live events only, not the history before the step.
    let page: Value = c.get(format!("{base}/v1/audit?tail=1")).bearer_auth(owner).send().await.unwrap().json().await.unwrap();
    let head = page["next_after_seq"].as_i64().unwrap();
    let resp = c.get(format!("{base}/v1/audit/stream?after_seq={head}")).bearer_auth(owner).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
    let (mut received, mut delays, mut lagged) = (0u64, Vec::new(), false);
    let mut buf: Vec<u8> = Vec::new();
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await {
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            if line.starts_with(b"event: lagged") {
                lagged = true;
            }
            let Some(data) = line.strip_prefix(b"data: ") else { continue };
            let Ok(event) = serde_json::from_slice::<Value>(data) else { continue };
            let Some(ts) = event["ts"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else { continue };
            received += 1;
            let delay = chrono::Utc::now().signed_duration_since(ts).num_microseconds().unwrap_or(0).max(0);
            delays.push(delay as u64);
        }
    }
    (received, delays, lagged)
}

fn main() {
    // As the server does (see `countersign::memory`): the load generator, too, keeps the
    // memory it frees, so neither side of the loop stalls re-faulting it.
    countersign::memory::keep_freed_memory();
    if std::env::var_os(PLAIN_RESPONDER).is_some() {
        // This binary, run again as the plain responder (see `PlainResponder`).
        println!("{}", lean_http::plain_responder());
        // Serves until the benchmark that started it is gone (its end of stdin closes).
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: f64 = std::env::var("GATE_LOAD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let floors_only: Option<usize> = std::env::var("GATE_LOAD_FLOORS_ONLY")
        .ok()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("GATE_LOAD_FLOORS_ONLY is a number of rounds, not {n:?}")));
    let hold: Option<usize> = std::env::var("GATE_LOAD_HOLD")
        .ok()
        .map(|n| n.parse().unwrap_or_else(|_| panic!("GATE_LOAD_HOLD is a number of connections, not {n:?}")));
    let probe_dir = tempfile::tempdir().unwrap();
    let fsyncs = (floors_only.is_none() && hold.is_none()).then(|| fsync_rate(probe_dir.path(), 2.0));
    if floors_only.is_none() && hold.is_none() {
        store_only(secs);
    }
    let server = start_server();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let c = client();
        let base = server.base.clone();
        let addr = base.trim_start_matches("http://").to_string();
        let s = Arc::new(setup(&c, &base).await);
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        println!("# gate_load: {cpus} CPUs, {secs} s per step, server and load generator on the same machine\n");
        if let Some(fsyncs) = fsyncs {
            println!("fsync (512-byte write + fdatasync, same disk): {fsyncs:.0} per second\n");
        }

        let health = Arc::new(vec![request("GET", &addr, "/healthz", None, None)]);
        if let Some(conns) = hold {
            println!("server pid {}", server.child.id());
            let h = closed_loop(&addr, 64, secs, health.clone(), healthy).await.rate();
            println!("GET /healthz, 64 connections: {h:.0}/s");
            let mut st = closed_loop(&addr, conns, secs, decision_requests(&addr, &s.agent, false), executed).await;
            println!(
                "decisions, {conns} connections: {:.0}/s ({:.2} of healthz/s), p50 {:.2} ms, p99 {:.2} ms, errors {}",
                st.rate(),
                st.rate() / h,
                st.pct(0.5),
                st.pct(0.99),
                st.errors
            );
            let mut st = closed_loop(&addr, conns, secs, decision_requests(&addr, &s.agent, true), simulated).await;
            println!(
                "dry runs, {conns} connections: {:.0}/s ({:.2} of healthz/s), p50 {:.2} ms, p99 {:.2} ms, errors {}",
                st.rate(),
                st.rate() / h,
                st.pct(0.5),
                st.pct(0.99),
                st.errors
            );
            return;
        }
        // The same requests to a responder with nothing of Countersign in it: the machine's
        // own loopback HTTP, its rate and its stalls, measured in the same run.
        let plain = PlainResponder::start();
        let plain_get = Arc::new(vec![request("GET", &plain.addr, "/healthz", None, None)]);
        if let Some(rounds) = floors_only {
            for _ in 0..rounds {
                floors("GET /healthz", &addr, secs, health.clone(), server._dir.path()).await;
                floors("plain responder", &plain.addr, secs, plain_get.clone(), server._dir.path()).await;
            }
            return;
        }
        let h = floors("GET /healthz", &addr, secs, health.clone(), server._dir.path()).await;
        floors("plain responder", &plain.addr, secs, plain_get, server._dir.path()).await;
        drop(plain);

        let submits = decision_requests(&addr, &s.agent, false);
        {
            let mut probe = Raw::connect(&addr).await;
            let (st, body) = probe.send(&submits[0]).await.unwrap();
            assert!(executed(st, body), "a probe decision failed: {st} {}", String::from_utf8_lossy(body));
        }
        let probe = MachineProbe::start(server._dir.path());
        let mut fresh = open_loop(&addr, 2000.0, secs, submits.clone(), executed).await;
        let machine = probe.finish();
        let late = fresh.lateness();
        println!(
            "fixed 2,000 decisions/s (open loop) on a fresh store: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, errors {}; WAL {:.1} MiB; {}; {machine}\n",
            fresh.rate(),
            fresh.pct(0.5),
            fresh.pct(0.99),
            fresh.pct(0.999),
            fresh.pct(1.0),
            fresh.errors,
            server.wal_mib(),
            late
        );
        println!("| connections | durable decisions/s | p50 ms | p99 ms | errors |");
        println!("|---:|---:|---:|---:|---:|");
        let mut best = 0.0f64;
        for conc in [1usize, 8, 32, 64, 128, 256] {
            let mut st = closed_loop(&addr, conc, secs, submits.clone(), executed).await;
            best = best.max(st.rate());
            println!("| {conc} | {:.0} | {:.2} | {:.2} | {} |", st.rate(), st.pct(0.5), st.pct(0.99), st.errors);
        }
        println!();
        let probe = MachineProbe::start(server._dir.path());
        let mut fixed = open_loop(&addr, 2000.0, secs, submits.clone(), executed).await;
        let machine = probe.finish();
        let late = fixed.lateness();
        println!(
            "fixed 2,000 decisions/s (open loop) after the saturation steps: achieved {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms, errors {}; WAL {:.1} MiB; {}; {machine}",
            fixed.rate(),
            fixed.pct(0.5),
            fixed.pct(0.99),
            fixed.pct(0.999),
            fixed.pct(1.0),
            fixed.errors,
            server.wal_mib(),
            late
        );
        println!("best decisions/s ÷ healthz/s = {:.2}\n", best / h.rate());
        // The ceiling the store leaves room for: the same requests as dry runs go through
        // HTTP, authentication and the whole pipeline, and write nothing.
        let dry = decision_requests(&addr, &s.agent, true);
        let mut d = closed_loop(&addr, 64, secs, dry, simulated).await;
        println!(
            "dry runs (whole pipeline, nothing written), 64 connections: {:.0} per second (p50 {:.2} ms, p99 {:.2} ms, errors {}), {:.2} of healthz/s\n",
            d.rate(),
            d.pct(0.5),
            d.pct(0.99),
            d.errors,
            d.rate() / h.rate()
        );

        // One live-stream client while the gate runs flat out (64 connections).
        let (received, mut delays_us, lagged) = {
            let load = tokio::spawn(closed_loop_owned(addr.clone(), 64, secs, submits.clone()));
            let r = sse_client(&base, &s.owner, secs).await;
            let st = load.await.unwrap();
            println!("gate under the stream: {:.0} durable decisions/s at 64 connections", st.rate());
            r
        };
        delays_us.sort_unstable();
        let pct = |p: f64| {
            delays_us.get(((delays_us.len() as f64 * p) as usize).min(delays_us.len().saturating_sub(1))).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "one SSE client (GET /v1/audit/stream) meanwhile: {:.0} events/s received, append → receipt p50 {:.2} ms, p99 {:.2} ms, lagged: {lagged}\n",
            received as f64 / secs,
            pct(0.5),
            pct(0.99)
        );

        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut workers = Vec::new();
        for w in 0..32u64 {
            let (stop, done, s, addr) = (stop.clone(), done.clone(), s.clone(), addr.clone());
            let (mut agent, mut approver) = (Raw::connect(&addr).await, Raw::connect(&addr).await);
            workers.push(tokio::spawn(async move {
                let mut i = w;
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if approval_cycle(&mut agent, &mut approver, &addr, &s, i).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors += 1;
                    }
                    i += 32;
                }
                errors
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut errors = 0;
        for w in workers {
            errors += w.await.unwrap();
        }
        let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        println!("approval cycles (submit → approve → execute), 32 workers: {rate:.0} per second, errors {errors}");
        drop(server);
    });
}
