//! Console benchmarks: `cargo bench --bench console`.
//!
//! 1. Frame time of the approvals and audit screens with 10, 10,000 and 100,000 pending
//!    approvals and a tail fed 1,000,000 events: drawing must cost what is visible, not
//!    what is held.
//! 2. Memory: how much the console's resident set grows while its tail takes 1,000,000
//!    events (the tail keeps a bounded ring).
//! 3. Delay from an audit append (the moment the server publishes the committed event)
//!    to its appearance on the screen of the real console binary in a pseudo-terminal,
//!    with 5,000 events a second being appended.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use countersign::approval::State;
use countersign::audit::{Actor, AuditEvent, EventDraft, GENESIS_HASH, Via};
use countersign::console::action::{Action, NetMsg, StreamMsg};
use countersign::console::app::{App, Init};
use countersign::console::theme::Theme;
use countersign::gate::Policy;
use countersign::model::{Approval, Member, MemberStatus};
use countersign::server::routes::sessions::{Me, WorkspaceRef};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn me() -> Me {
    Me {
        workspace: WorkspaceRef { id: "org_1".into(), name: "acme".into() },
        member: Member {
            id: "usr_1".into(),
            email: "ada@acme.test".into(),
            name: "Ada".into(),
            role: "admin".into(),
            status: MemberStatus::Active,
            created_at: String::new(),
            updated_at: String::new(),
        },
        credential: "session".into(),
        credential_id: "ses_1".into(),
        expires_at: None,
        permissions: vec!["approvals:read".into(), "approvals:decide".into(), "audit:read".into()],
        tools: None,
    }
}

fn approvals(n: usize) -> Vec<Approval> {
    let now = Utc::now();
    (0..n)
        .map(|i| Approval {
            id: format!("apv_{i:08}"),
            action_id: format!("act_{i:08}"),
            tool: ["email.send", "payments.charge", "milestones.update"][i % 3].into(),
            state: State::Pending,
            policy: Policy::Approve,
            required: 1 + (i % 2) as u8,
            approvals: 0,
            decisions: vec![],
            requester_id: "usr_dev".into(),
            requester_email: Some("dev@acme.test".into()),
            agent_token_id: Some("tok_1".into()),
            agent_name: Some("billing-agent".into()),
            payload_sha256: format!("{i:064x}"),
            resource: None,
            reason: Some("monthly run".into()),
            confidence: Some(0.5 + (i % 50) as f64 / 100.0),
            created_at: countersign::clock::format_ts(now),
            expires_at: countersign::clock::format_ts(now + chrono::Duration::seconds(60 + i as i64)),
            decided_at: None,
            consumed_at: None,
            payload: None,
            current: None,
            decision: None,
        })
        .collect()
}

fn events(from: i64, n: i64) -> impl Iterator<Item = AuditEvent> {
    (from..from + n).map(|seq| {
        let draft = EventDraft::new("action.executed", Actor::agent("tok_1"), Via::Agent)
            .resource(format!("act_{seq}"))
            .data(serde_json::json!({"tool": "crm.read"}));
        AuditEvent::seal(draft, "org_1", seq - 1, GENESIS_HASH, "2026-11-23T10:00:00.000000Z".into())
    })
}

fn app() -> App {
    let mut a = App::new(Init {
        server: "http://127.0.0.1:8750".into(),
        email: "ada@acme.test".into(),
        theme: Theme::default_theme(),
        themes: vec![],
        now: Utc::now(),
        size: (120, 40),
        bell: false,
        cwd: std::env::temp_dir(),
    });
    a.update(Action::Net(NetMsg::Me(Ok(me()))));
    a.update(Action::Net(NetMsg::Stream(StreamMsg::Connected)));
    a.take_effects();
    a
}

/// Median and p99 of `frames` draws, in microseconds.
fn frame_time(app: &App, frames: usize) -> (f64, f64) {
    let mut t = Terminal::new(TestBackend::new(app.size.0, app.size.1)).unwrap();
    let mut samples: Vec<f64> = (0..frames)
        .map(|_| {
            let start = Instant::now();
            t.draw(|f| countersign::console::ui::draw(f, app)).unwrap();
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (samples[frames / 2], samples[frames * 99 / 100])
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Memory first, in a fresh process, so nothing else the benchmark made is counted.
fn memory() {
    let start_rss = rss_kib();
    let mut a = app();
    a.update(Action::Key(crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Char('2'))));
    for e in events(1, 10) {
        a.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(e)))));
    }
    let (small, _) = frame_time(&a, 400);
    let before = rss_kib();
    let start = Instant::now();
    for e in events(11, 999_990) {
        a.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(e)))));
    }
    let took = start.elapsed();
    let after = rss_kib();
    let (big, big99) = frame_time(&a, 400);
    println!("## The audit tail and 1,000,000 events\n");
    println!(
        "frame after 1,000,000 events: {big:.0} µs (p99 {big99:.0} µs); after 10: {small:.0} µs (10 rows drawn instead of a full screen)"
    );
    println!(
        "resident set: {:.1} MiB at start, {:.1} MiB before the million, {:.1} MiB after (target under 50 MiB); {} events held; {:.0} events/s through update\n",
        start_rss as f64 / 1024.0,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        a.audit.held(),
        1e6 / took.as_secs_f64()
    );
}

fn frames() {
    println!("## Frame time (120×40, median / p99 per frame)\n");
    println!("| held | approvals screen | audit screen |");
    println!("|---|---:|---:|");
    let mut base = None;
    for n in [10usize, 10_000, 100_000] {
        let mut a = app();
        a.update(Action::Net(NetMsg::Approvals(Ok(approvals(n)))));
        for e in events(1, 200) {
            a.update(Action::Net(NetMsg::Stream(StreamMsg::Event(Box::new(e)))));
        }
        let (ap50, ap99) = frame_time(&a, 400);
        a.update(Action::Key(crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Char('2'))));
        let (au50, au99) = frame_time(&a, 400);
        println!("| {n} pending approvals | {ap50:.0} µs / {ap99:.0} µs | {au50:.0} µs / {au99:.0} µs |");
        if n == 10 {
            base = Some(ap50);
        } else if n == 100_000 {
            println!("\napprovals frame, 100,000 vs 10 pending: {:.2}× (target ≤ 1.5×)", ap50 / base.unwrap_or(ap50));
        }
    }
    println!();
}

/// A process's memory figure from /proc, in KiB.
fn proc_kib(pid: Option<u32>, field: &str) -> u64 {
    pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// The appearance delay: a real server in this process, the real console in a pty.
fn appearance_delay() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (state, base, token) = rt.block_on(async {
        let clock = countersign::clock::Clock::system();
        let store = countersign::store::SqlStore::open_sqlite(&dir.path().join("countersign.db"), clock.clone()).unwrap();
        let hash = countersign::secrets::hash_password("benchmark password");
        let owner =
            countersign::store::NewMember { email: "ada@acme.test".into(), name: "Ada".into(), role: "owner".into(), password_hash: hash };
        use countersign::store::Workspaces;
        store.create_workspace("acme", owner).await.unwrap();
        let state = countersign::server::AppState::new(store, clock, Default::default(), countersign::vault::MasterKeys::none());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = countersign::server::start(listener, state.clone()).await.unwrap();
        let base = format!("http://{}", running.addr);
        std::mem::forget(running);
        let c = countersign::client::Client::new(&base, None, "api");
        let s = c.sign_in("ada@acme.test", "benchmark password", None).await.unwrap();
        (state, base, s.token)
    });

    // The console, on its audit screen.
    let pty =
        portable_pty::native_pty_system().openpty(portable_pty::PtySize { rows: 40, cols: 120, pixel_width: 0, pixel_height: 0 }).unwrap();
    let mut cmd = portable_pty::CommandBuilder::new(env!("CARGO_BIN_EXE_countersign"));
    cmd.env("COUNTERSIGN_SERVER", &base);
    cmd.env("COUNTERSIGN_TOKEN", &token);
    cmd.env("COUNTERSIGN_CONFIG_DIR", dir.path());
    cmd.env("TERM", "xterm-256color");
    let mut child = pty.slave.spawn_command(cmd).unwrap();
    let mut reader = pty.master.try_clone_reader().unwrap();
    let mut writer = pty.master.take_writer().unwrap();
    let seen: Arc<Mutex<std::collections::HashMap<i64, Instant>>> = Arc::default();
    let parser =
        Arc::new(Mutex::new(vt100::Parser::new(std::num::NonZeroU16::new(40).unwrap(), std::num::NonZeroU16::new(120).unwrap(), 0)));
    {
        let (seen, parser) = (seen.clone(), parser.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                let mut p = parser.lock().unwrap();
                p.process(&buf[..n]);
                let text = p.screen().contents();
                let mut s = seen.lock().unwrap();
                for line in text.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())) {
                    if let Some(seq) = line.split_whitespace().next().and_then(|x| x.parse::<i64>().ok()) {
                        s.entry(seq).or_insert(now);
                    }
                }
            }
        });
    }
    std::thread::sleep(Duration::from_secs(2));
    writer.write_all(b"2").unwrap();
    writer.flush().unwrap();
    std::thread::sleep(Duration::from_secs(1));

    let idle = proc_kib(child.process_id(), "VmRSS:");
    // Record when each event is published, then append 5,000 a second for 10 seconds.
    let published: Arc<Mutex<std::collections::HashMap<i64, Instant>>> = Arc::default();
    let ws = countersign::store::WorkspaceId::trusted(rt.block_on(async { state.store.list_workspaces().await.unwrap()[0].id.clone() }));
    {
        let mut rx = state.hub.subscribe();
        let published = published.clone();
        rt.spawn(async move {
            while let Ok(e) = rx.recv().await {
                published.lock().unwrap().insert(e.seq, Instant::now());
            }
        });
    }
    let rate = 5000.0;
    let secs = 10.0;
    rt.block_on(async {
        let origin = countersign::store::Origin::system("benchmark");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let start = Instant::now();
        let mut sent = 0u64;
        let mut tasks = Vec::new();
        while start.elapsed().as_secs_f64() < secs {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            while sent < due {
                sent += 1;
                let (store, ws, origin) = (state.store.clone(), ws.clone(), origin.clone());
                let ttl = 60 + (sent % 1000) as i64;
                tasks.push(tokio::spawn(async move {
                    let _ = store
                        .update_settings(
                            &ws,
                            &origin,
                            countersign::store::SettingsChange { approval_ttl_seconds: Some(ttl), agent_writes_enabled: None },
                        )
                        .await;
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let seen = seen.lock().unwrap();
    let published = published.lock().unwrap();
    let mut delays: Vec<f64> =
        published.iter().filter_map(|(seq, t0)| seen.get(seq).map(|t1| t1.saturating_duration_since(*t0).as_secs_f64() * 1000.0)).collect();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| delays.get(((delays.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(f64::NAN);
    println!("## Append → on screen, {rate:.0} events/s for {secs:.0} s (real console binary in a pty, 120×40)\n");
    println!(
        "events appended: {}, of which shown on screen: {} (a 40-row tail scrolls past most at this rate)",
        published.len(),
        delays.len()
    );
    println!("delay p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 under 100 ms)", pct(0.5), pct(0.99), pct(1.0));
    let after = proc_kib(child.process_id(), "VmRSS:");
    let peak = proc_kib(child.process_id(), "VmHWM:");
    println!(
        "the console process's resident set: {:.1} MiB before the appends, {:.1} MiB after, peak {:.1} MiB",
        idle as f64 / 1024.0,
        after as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let _ = writer.write_all(b"q");
    let _ = writer.flush();
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
}

fn main() {
    println!("# console benchmarks\n");
    memory();
    frames();
    appearance_delay();
}
