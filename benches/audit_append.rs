//! Durable audit appends per second under concurrency, beside this machine's own fsync
//! rate measured in the same run and the same directory; and `audit verify` events per
//! second.
//!
//! Every append here is a real store write through the group-commit writer: a settings
//! change and the audit event that records it, committed in one transaction with
//! `synchronous = FULL` before the caller hears back. So "appends per second" is durable
//! appends, and dividing by the fsync rate shows what group commit buys.
//!
//! Run (release build):
//!
//! ```sh
//! cargo bench --bench audit_append
//! ```
//!
//! `COUNTERSIGN_BENCH_DIR` picks the directory (default: Cargo's target tmp dir, on the
//! same disk as the build); `COUNTERSIGN_BENCH_SECONDS` the seconds per row (default 3);
//! `COUNTERSIGN_BENCH_VERIFY_EVENTS` the log length verified (default 100000).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use countersign::audit::Verifier;
use countersign::clock::Clock;
use countersign::store::{AuditLog, NewMember, Origin, SettingsChange, SqlStore, WorkspaceId, Workspaces};

const CONCURRENCY: [usize; 4] = [1, 8, 64, 256];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Appends 128 bytes and `fdatasync`s, in a loop, for `secs`: what one durable commit
/// costs this disk at the least (SQLite's WAL commit is an append and an fdatasync).
fn fsync_rate(dir: &Path, secs: f64) -> f64 {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path).expect("open probe file");
    let block = [0x5au8; 128];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f.write_all(&block).expect("write");
        f.sync_data().expect("fdatasync");
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(path);
    rate
}

struct Row {
    concurrency: usize,
    appends: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

/// Runs `concurrency` tasks, each changing the settings (one audit event per change) as
/// fast as its writes are acknowledged, for `secs`.
async fn appends(store: &Arc<SqlStore>, ws: &WorkspaceId, concurrency: usize, secs: f64, counter: &Arc<AtomicI64>) -> Row {
    let (head_before, _) = store.audit_head(ws).await.expect("head");
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (store, ws, counter) = (store.clone(), ws.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let by = Origin::system("bench");
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                // Each value is new, so each write really changes the settings and
                // appends its event (an unchanged value would append nothing).
                let ttl = 60 + counter.fetch_add(1, Ordering::Relaxed) % 600_000;
                let t = Instant::now();
                store
                    .update_settings(&ws, &by, SettingsChange { approval_ttl_seconds: Some(ttl), ..Default::default() })
                    .await
                    .expect("write");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    let elapsed = start.elapsed();
    let (head_after, _) = store.audit_head(ws).await.expect("head");
    let appends = (head_after - head_before) as u64;
    assert_eq!(appends, latencies.len() as u64, "every acknowledged write appended exactly one event");
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    Row { concurrency, appends, elapsed, p50: pct(0.50), p99: pct(0.99) }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported here.
    let base: PathBuf =
        std::env::var_os("COUNTERSIGN_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("bench dir");
    let tmp = tempfile::tempdir_in(&base).expect("temp dir");
    let secs: f64 = env_or("COUNTERSIGN_BENCH_SECONDS", 3.0);
    let verify_events: i64 = env_or("COUNTERSIGN_BENCH_VERIFY_EVENTS", 100_000);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    println!("Countersign: audit appends and verify");
    println!("data directory: {} ({cpus} CPUs)", tmp.path().display());
    println!();

    let fsyncs = fsync_rate(tmp.path(), 2.0);
    println!("fsync rate (append 128 B + fdatasync, same directory, 2 s): {fsyncs:.0} /s");
    println!();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let store = SqlStore::open_sqlite(&tmp.path().join("countersign.db"), Clock::system()).expect("open store");
        let owner =
            NewMember { email: "bench@example.test".into(), name: "Bench".into(), role: "owner".into(), password_hash: "unused".into() };
        let (ws, _) = store.create_workspace("bench", owner).await.expect("workspace");
        let ws = WorkspaceId::trusted(ws.id);
        let counter = Arc::new(AtomicI64::new(0));

        // Warm up: the file, the WAL, the statement caches.
        appends(&store, &ws, 8, 0.5, &counter).await;

        println!("durable audit appends ({secs} s per row; each append = a settings change + its event, committed)");
        println!("{:>11}  {:>10}  {:>12}  {:>8}  {:>8}  {:>9}", "concurrency", "appends", "appends/s", "× fsync", "p50 ms", "p99 ms");
        for c in CONCURRENCY {
            let r = appends(&store, &ws, c, secs, &counter).await;
            let rate = r.appends as f64 / r.elapsed.as_secs_f64();
            println!(
                "{:>11}  {:>10}  {:>12.0}  {:>8.1}  {:>8}  {:>9}",
                r.concurrency,
                r.appends,
                rate,
                rate / fsyncs,
                ms(r.p50),
                ms(r.p99)
            );
        }
        println!();

        // Grow the log to the verified length with the fastest writer.
        let (mut head, _) = store.audit_head(&ws).await.expect("head");
        while head < verify_events {
            appends(&store, &ws, 256, 1.0, &counter).await;
            head = store.audit_head(&ws).await.expect("head").0;
        }
        println!("audit verify over {head} events (best of 3)");
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let report = store.audit_verify(&ws).await.expect("verify");
            best = best.min(t.elapsed());
            assert!(report.ok, "the chain must verify: {report:?}");
            assert_eq!(report.events as i64, head);
        }
        println!(
            "  store (read from SQLite, hash, link): {:>9.0} events/s ({} s)",
            head as f64 / best.as_secs_f64(),
            format_args!("{:.2}", best.as_secs_f64())
        );

        // The same check on events already in memory: the hashing and linking alone,
        // which is also what `audit verify --file` does per line after parsing.
        let mut events = Vec::with_capacity(head as usize);
        let mut after = 0;
        loop {
            let page = store.audit_page(&ws, after, 1000).await.expect("page");
            let Some(last) = page.last() else { break };
            after = last.seq;
            events.extend(page);
        }
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let mut v = Verifier::new();
            for e in &events {
                v.push(e).expect("sound chain");
            }
            best = best.min(t.elapsed());
        }
        println!(
            "  in memory (hash, link):              {:>9.0} events/s ({:.2} s)",
            events.len() as f64 / best.as_secs_f64(),
            best.as_secs_f64()
        );
        store.engine().close();
    });
}
