//! Durable decisions per second on PostgreSQL with one and with two replicas, beside
//! SQLite: `cargo bench --bench replicas`.
//!
//! Starts a PostgreSQL cluster of its own from the machine's binaries with PostgreSQL's
//! durable defaults (fsync on, synchronous commit, full-page writes), migrates a database
//! as its owner (`countersign admin migrate`), creates the workspace through the server's
//! role (`admin init --database-url`), and runs the real `countersign serve` (release
//! build): once on SQLite, once on PostgreSQL, then as two replicas on the same database
//! with the load spread evenly over both. Every decision counted was answered 201 with
//! `status: executed`, sent only after the action and its audit events committed.
//!
//! While the two replicas are loaded it samples where the time goes: CPU seconds of the
//! replicas, of PostgreSQL's processes and of this load generator (from /proc), and what
//! PostgreSQL's active backends were waiting on (`pg_stat_activity`, every 10 ms).
//! `REPLICAS_SECONDS` sets the length of each step (default 5).

#![allow(dead_code)]

#[path = "../tests/api/cluster.rs"]
mod cluster;
#[path = "support/lean_http.rs"]
mod lean_http;
#[path = "support/serve_log.rs"]
mod serve_log;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lean_http::{Raw, request};
use serde_json::{Value, json};

const PASSWORD: &str = "benchmark password 1";
const EXE: &str = env!("CARGO_BIN_EXE_countersign");

struct Server {
    child: std::process::Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn init(dir: &std::path::Path, url: Option<&str>) {
    let mut c = Command::new(EXE);
    c.args(["admin", "init", "--workspace", "bench", "--email", "owner@bench.test", "--data-dir"]).arg(dir);
    if let Some(u) = url {
        c.args(["--database-url", u]);
    }
    let mut child = c.stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success(), "admin init");
}

fn serve(dir: &std::path::Path, url: Option<&str>) -> Server {
    let mut c = Command::new(EXE);
    c.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"]).arg(dir);
    if let Some(u) = url {
        c.args(["--database-url", u]);
    }
    let mut child = c.env("RUST_LOG", "warn,countersign::cli=info").stderr(Stdio::piped()).spawn().unwrap();
    let addr = serve_log::listening_addr(child.stderr.take().unwrap());
    Server { child, addr }
}

/// Signs in, makes an `auto` record tool and an agent token; returns the token.
async fn setup(addr: &str) -> String {
    let mut c = Raw::connect(addr).await;
    let (st, body) = c
        .send(&request("POST", addr, "/v1/sessions", None, Some(&json!({"email": "owner@bench.test", "password": PASSWORD}))))
        .await
        .unwrap();
    assert_eq!(st, 201);
    let owner = serde_json::from_slice::<Value>(body).unwrap()["token"].as_str().unwrap().to_string();
    let tool = json!({"kind": "read", "irreversible": false, "policy": "auto", "connector": {"type": "record"}});
    let (st, _) = c.send(&request("PUT", addr, "/v1/tools/crm.read", Some(&owner), Some(&tool))).await.unwrap();
    assert!(st == 201 || st == 200);
    let (st, body) = c
        .send(&request(
            "POST",
            addr,
            "/v1/tokens",
            Some(&owner),
            Some(&json!({"name": "bench agent", "scopes": ["actions:submit"], "tools": ["*"]})),
        ))
        .await
        .unwrap();
    assert_eq!(st, 201);
    serde_json::from_slice::<Value>(body).unwrap()["token"].as_str().unwrap().to_string()
}

fn executed(status: u16, body: &[u8]) -> bool {
    let needle = br#""status":"executed""#;
    status == 201 && body.windows(needle.len()).any(|w| w == needle)
}

struct Run {
    ok: u64,
    errors: u64,
    secs: f64,
    lat_us: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    fn pct(&mut self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        self.lat_us.sort_unstable();
        self.lat_us[((self.lat_us.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
    }
}

/// Closed loop over `addrs`: `concurrency` connections spread evenly over the replicas.
async fn closed_loop(addrs: &[String], token: &str, concurrency: usize, secs: f64) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let addr = addrs[w % addrs.len()].clone();
        let requests: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                let body = json!({"tool": "crm.read", "payload": {"query": "customer", "page": i, "w": w}, "confidence": 0.93});
                request("POST", &addr, "/v1/actions", Some(token), Some(&body))
            })
            .collect();
        let stop = stop.clone();
        let mut conn = Raw::connect(&addr).await;
        workers.push(tokio::spawn(async move {
            let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match conn.send(&requests[i % requests.len()]).await {
                    Ok((s, b)) if executed(s, b) => {
                        ok += 1;
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    _ => errors += 1,
                }
                i += 1;
            }
            (ok, errors, lat)
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut run = Run { ok: 0, errors: 0, secs: 0.0, lat_us: Vec::new() };
    for w in workers {
        let (ok, errors, lat) = w.await.unwrap();
        run.ok += ok;
        run.errors += errors;
        run.lat_us.extend(lat);
    }
    run.secs = start.elapsed().as_secs_f64();
    run
}

/// CPU seconds (user + system) a process and its threads have used.
fn cpu_secs(pid: u32) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            let (u, k): (f64, f64) = (rest.get(11)?.parse().ok()?, rest.get(12)?.parse().ok()?);
            Some((u + k) / ticks)
        })
        .unwrap_or(0.0)
}

/// Every PostgreSQL process of the cluster (the postmaster's children and itself).
fn postgres_pids() -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres") {
            out.push(pid);
        }
    }
    out
}

async fn measure(label: &str, addrs: &[String], token: &str, secs: f64, levels: &[usize]) -> f64 {
    let mut best = 0.0f64;
    for &conc in levels {
        let mut r = closed_loop(addrs, token, conc, secs).await;
        best = best.max(r.rate());
        println!("| {label} | {conc} | {:.0} | {:.2} | {:.2} | {} |", r.rate(), r.pct(0.5), r.pct(0.99), r.errors);
    }
    best
}

/// Where the time went during a measurement.
struct Where {
    wall: f64,
    replicas: f64,
    postgres: f64,
    load: f64,
    samples: u64,
    waits: Vec<(String, u64)>,
}

/// Runs `f` while sampling CPU use and PostgreSQL's wait events.
fn sampled<T>(superuser_url: &str, replicas: &[u32], f: impl FnOnce() -> T) -> (T, Where) {
    let pg_pids = postgres_pids();
    let cpu = || -> (f64, f64, f64) {
        (replicas.iter().map(|p| cpu_secs(*p)).sum(), pg_pids.iter().map(|p| cpu_secs(*p)).sum(), cpu_secs(std::process::id()))
    };
    let before = cpu();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let url = superuser_url.to_string();
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut waits: BTreeMap<String, u64> = BTreeMap::new();
            let mut samples = 0u64;
            while sampling.load(Ordering::Relaxed) {
                samples += 1;
                for r in c
                    .query(
                        "SELECT CASE WHEN state = 'active' THEN 'active, ' || COALESCE(wait_event_type || ':' || wait_event, 'on CPU') \
                                     WHEN state = 'idle in transaction' THEN 'in a transaction, waiting for the replica' \
                                     ELSE 'idle' END \
                         FROM pg_stat_activity WHERE usename = 'cs_server' AND pid <> pg_backend_pid()",
                        &[],
                    )
                    .unwrap()
                {
                    *waits.entry(r.get::<_, String>(0)).or_default() += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (samples, waits)
        })
    };
    let started = Instant::now();
    let out = f();
    let wall = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let (samples, waits) = sampler.join().unwrap();
    let after = cpu();
    let mut waits: Vec<_> = waits.into_iter().collect();
    waits.sort_by_key(|w| std::cmp::Reverse(w.1));
    (out, Where { wall, replicas: after.0 - before.0, postgres: after.1 - before.1, load: after.2 - before.2, samples, waits })
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs: f64 = std::env::var("REPLICAS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let levels = [32usize, 128, 256];
    let cluster = cluster::Cluster::start_durable();
    let db = cluster.fresh();
    let (sqlite_dir, pg_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    init(sqlite_dir.path(), None);
    init(pg_dir.path(), Some(&db.server_url));
    let mut superuser = cluster.superuser("postgres");
    let (fsync_setting, sync_commit): (String, String) = {
        let f = superuser.query_one("SHOW fsync", &[]).unwrap().get(0);
        let s = superuser.query_one("SHOW synchronous_commit", &[]).unwrap().get(0);
        (f, s)
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!("# replicas: {cpus} CPUs, {secs} s per step; PostgreSQL fsync={fsync_setting}, synchronous_commit={sync_commit}\n");
    println!("| store | connections | durable decisions/s | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");

    let sqlite = serve(sqlite_dir.path(), None);
    let sqlite_best = rt.block_on(async {
        let token = setup(&sqlite.addr).await;
        measure("SQLite, 1 server", std::slice::from_ref(&sqlite.addr), &token, secs, &levels).await
    });
    drop(sqlite);

    let one = serve(pg_dir.path(), Some(&db.server_url));
    let token = rt.block_on(setup(&one.addr));
    let (one_best, one_where) = sampled(&db.superuser_url, &[one.child.id()], || {
        rt.block_on(measure("PostgreSQL, 1 replica", std::slice::from_ref(&one.addr), &token, secs, &levels))
    });

    let two = serve(pg_dir.path(), Some(&db.server_url));
    let addrs = vec![one.addr.clone(), two.addr.clone()];
    let (two_best, two_where) = sampled(&db.superuser_url, &[one.child.id(), two.child.id()], || {
        rt.block_on(measure("PostgreSQL, 2 replicas", &addrs, &token, secs, &levels))
    });

    println!();
    println!("best: SQLite {sqlite_best:.0}/s; PostgreSQL 1 replica {one_best:.0}/s; 2 replicas {two_best:.0}/s");
    for (label, w) in [("one replica", one_where), ("two replicas", two_where)] {
        println!();
        println!(
            "While {label} {} loaded ({:.1} s of wall time, {cpus} CPUs = {:.1} CPU-seconds available):",
            if label == "one replica" { "was" } else { "were" },
            w.wall,
            w.wall * cpus as f64
        );
        println!("  CPU seconds: replicas {:.1}, PostgreSQL {:.1}, load generator {:.1}", w.replicas, w.postgres, w.load);
        println!("  the replicas' database connections, on average over {} samples (every 10 ms), by what they were doing:", w.samples);
        for (what, n) in w.waits.iter().filter(|(w, _)| w != "idle").take(6) {
            println!("    {what:<40} {:.2}", *n as f64 / w.samples.max(1) as f64);
        }
    }
    drop(two);
    drop(one);
    drop(cluster);
}
