//! The real console binary in a pseudo-terminal against a real server: signing in,
//! approving by keys, engaging a kill switch by keys, riding out a server restart,
//! creating and revoking a token by keys, a dry run of a payload edited by keys, a rule
//! drafted from an approval, tried on history and published by keys, and the whole audit
//! log exported by keys.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use serde_json::json;

use crate::support::*;

/// A console running in a pseudo-terminal, its screen parsed by a VT100 emulator.
pub struct Console {
    screen: Arc<Mutex<vt100::Parser>>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    _config: tempfile::TempDir,
}

impl Console {
    pub fn start(server: &str, rows: u16, cols: u16, args: &[&str]) -> Console {
        Self::start_in(None, server, rows, cols, args)
    }

    /// As [`Console::start`], started in the directory `cwd`.
    pub fn start_in(cwd: Option<&std::path::Path>, server: &str, rows: u16, cols: u16, args: &[&str]) -> Console {
        let pty = native_pty_system().openpty(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 }).expect("open a pty");
        let config = tempfile::tempdir().unwrap();
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_countersign"));
        cmd.args(args);
        cmd.env("COUNTERSIGN_SERVER", server);
        cmd.env("COUNTERSIGN_CONFIG_DIR", config.path());
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("COUNTERSIGN_TOKEN");
        cmd.env_remove("NO_COLOR");
        if let Some(dir) = cwd {
            cmd.cwd(dir);
        }
        let child = pty.slave.spawn_command(cmd).expect("spawn the console");
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().unwrap();
        let writer = pty.master.take_writer().unwrap();
        let screen =
            Arc::new(Mutex::new(vt100::Parser::new(std::num::NonZeroU16::new(rows).unwrap(), std::num::NonZeroU16::new(cols).unwrap(), 0)));
        let feed = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                feed.lock().unwrap().process(&buf[..n]);
            }
        });
        // The master must outlive the child; leak it into the reader's lifetime.
        std::mem::forget(pty.master);
        Console { screen, writer, child, _config: config }
    }

    pub fn text(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Waits until the screen shows `needle`, up to `secs` seconds.
    pub fn wait_for(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the console never showed {needle:?}; the screen was:\n{}", self.text());
    }

    /// Waits until the screen no longer shows `needle`, up to `secs` seconds.
    pub fn wait_gone(&self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.text().contains(needle) {
            assert!(Instant::now() < deadline, "the console kept showing {needle:?}:\n{}", self.text());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn send(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    /// Signs in through the dialog the console opens when it has no session.
    pub fn sign_in(&mut self, email: &str) {
        self.wait_for("Sign in again", 10);
        self.send(email);
        self.send("\t");
        self.send(PASSWORD);
        self.send("\r");
    }

    pub fn quit(mut self) -> bool {
        self.send("q");
        self.wait_exit()
    }

    /// Waits for the console to exit after a `q` already sent.
    pub fn quit_after_q(mut self) -> bool {
        self.wait_exit()
    }

    fn wait_exit(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        false
    }
}

async fn setup() -> (TestServer, Workspace, Api) {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("email.send", "write", "approve", false).await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    ws.agent_writes(true).await;
    let (_, dev) = ws.member(&server, "member").await;
    let (_, secret) = Workspace::token(&dev, &["actions:submit"], &["*"]).await;
    (server, ws, dev.as_token(&secret))
}

#[tokio::test(flavor = "multi_thread")]
async fn approving_by_keys_shows_the_grant_and_the_execution_in_the_tail() {
    let (server, ws, agent) = setup().await;
    ws.owner.post("/v1/members", json!({"email": "ada@acme.test", "password": PASSWORD, "role": "admin"})).await.assert_status(201);
    let payload = json!({"to": ["ops@example.com"], "subject": "Invoice 7"});
    let pending = submit(&agent, "email.send", payload.clone()).await;
    assert_eq!(pending.body["status"], "pending_approval");

    let mut console = Console::start(&server.base, 24, 80, &[]);
    console.sign_in("ada@acme.test");
    console.wait_for("ada@acme.test (admin)", 10);
    console.wait_for("email.send", 10);
    console.send("a");
    console.wait_for("Approve email.send?", 5);
    let short = &pending.body["payload_sha256"].as_str().unwrap()[..12];
    assert!(console.text().contains(short), "the confirmation names the short hash:\n{}", console.text());
    console.send("y");
    console.wait_for("Approved email.send", 10);

    // The agent runs it, and the tail shows both events.
    let ran = agent.post(&format!("/v1/actions/{}/execute", pending.body["id"].as_str().unwrap()), json!({"payload": payload})).await;
    assert_eq!(ran.body["status"], "executed", "{}", ran.body);
    console.send("2");
    console.wait_for("approval.granted", 10);
    console.wait_for("action.executed", 10);
    assert!(console.quit(), "the console exits cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_switch_engaged_by_keys_blocks_the_agents_next_call() {
    let (server, ws, agent) = setup().await;
    let _ = ws;
    let mut console = Console::start(&server.base, 24, 80, &[]);
    console.sign_in("owner@acme.test");
    console.wait_for("(owner)", 10);
    console.send("K");
    console.wait_for("what to stop?", 5);
    // The list: the workspace, then the tools by name; pick `email.send`.
    console.wait_for("email.send", 5);
    console.send("jj");
    console.send("\r");
    console.wait_for("Why stop `email.send`?", 5);
    console.send("bad template");
    console.send("\r");
    console.wait_for("Engage the kill switch?", 5);
    console.send("y");
    console.wait_for("KILL SWITCH ENGAGED: email.send (bad template)", 10);
    let r = submit(&agent, "email.send", json!({"to": ["a@example.com"]})).await;
    assert_eq!(r.body["status"], "blocked", "{}", r.body);
    assert_eq!(r.body["code"], "tool_kill_switch");
    assert!(console.quit());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_reconnects_after_a_restart_and_the_tail_has_no_gap() {
    let (mut server, ws, agent) = setup().await;
    let mut console = Console::start(&server.base, 40, 120, &[]);
    console.sign_in("owner@acme.test");
    console.wait_for("● live", 10);
    submit(&agent, "crm.read", json!({"n": "before"})).await;
    console.send("2");
    console.wait_for("action.executed", 10);

    server.restart_same_port().await;
    // Events written after the restart arrive, after the ones before, with no gap.
    submit(&agent, "crm.read", json!({"n": "after"})).await;
    let total = ws.owner.all_events().await.len() as i64;
    // Table rows start at the first column with the seq; nothing else on screen does.
    let seqs = |text: &str| -> Vec<i64> {
        text.lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seqs(&console.text()).contains(&total) {
        assert!(Instant::now() < deadline, "the tail never reached seq {total}:\n{}", console.text());
        std::thread::sleep(Duration::from_millis(25));
    }
    console.wait_for("● live", 10);
    let text = console.text();
    let shown = seqs(&text);
    assert!(shown.len() > 3, "{text}");
    for w in shown.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap or repeat in the tail:\n{text}");
    }
    assert!(console.quit());
}

/// The row of `name` in the list under the `NAME` header, counted from 0.
fn row_of(text: &str, name: &str) -> usize {
    let rows: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("NAME ")).skip(1).collect();
    rows.iter().position(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no row {name}:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_created_by_keys_works_with_the_secret_shown_once_and_stops_when_revoked_by_keys() {
    let (server, _ws, _agent) = setup().await;
    let mut console = Console::start(&server.base, 40, 120, &[]);
    console.sign_in("owner@acme.test");
    console.wait_for("(owner)", 10);
    console.send("3");
    console.wait_for("Members (", 10);
    console.send("ll");
    console.wait_for("Tokens (1)", 10);
    console.send("n");
    console.wait_for("New agent token", 5);
    console.send("ci-agent");
    console.send("\x13");
    console.wait_for("shown once", 10);
    let text = console.text();
    let secret = text
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .find(|w| w.starts_with("csa_"))
        .unwrap_or_else(|| panic!("no secret on screen:\n{text}"))
        .to_string();
    assert!(text.contains("This is the only time it is shown"), "{text}");

    // The secret, as shown, is a working credential.
    let ci = Api::new(&server.base, Some(&secret));
    let r = submit(&ci, "crm.read", json!({"q": "from the console's token"})).await;
    assert_eq!(r.body["status"], "executed", "{}", r.body);

    // Stored: it is never shown again.
    console.send("\r");
    console.wait_gone("shown once", 5);
    console.wait_for("Tokens (2)", 10);
    assert!(!console.text().contains(&secret), "the secret is gone from the screen:\n{}", console.text());

    // Revoke it by keys; the next call with it is refused.
    let text = console.text();
    let row = row_of(&text, "ci-agent");
    console.send(&"j".repeat(row));
    console.send("x");
    console.wait_for("Revoke `ci-agent`", 5);
    console.send("y");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !console.text().lines().any(|l| l.starts_with("ci-agent") && l.contains("revoked")) {
        assert!(Instant::now() < deadline, "the list never showed ci-agent revoked:\n{}", console.text());
        std::thread::sleep(Duration::from_millis(25));
    }
    let refused = submit(&ci, "crm.read", json!({"q": "after revoke"})).await;
    refused.assert_error(401, "token_revoked");
    assert!(console.quit());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_of_a_payload_edited_by_keys_shows_the_rule_that_decides_it_and_records_nothing() {
    let (server, ws, _agent) = setup().await;
    let rule = json!({"id": "no-rival-mail", "title": "No mail to rival.com", "when": "tool == 'email.send' && payload.to.exists(r, r.endsWith('@rival.com'))", "effect": "deny"});
    ws.owner.post("/v1/constitution/versions", json!({"rules": [rule]})).await.assert_status(201);
    // The newest recorded action and the audit head: a dry run moves neither.
    let newest = || async { ws.owner.get("/v1/actions?limit=1").await.body["items"].clone() };
    let before = newest().await;

    let mut console = Console::start(&server.base, 40, 120, &[]);
    console.sign_in("owner@acme.test");
    console.wait_for("(owner)", 10);
    console.send("4");
    console.wait_for("Dry run", 5);
    console.send("t");
    console.wait_for("which tool?", 5);
    console.send("email");
    console.send("\r");
    console.wait_for("editing", 5);
    // `{"payload": {}}` → `{"payload": {"to": ["ceo@rival.com"]}}`: down, end, left, type.
    console.send("\x1b[B");
    console.send("\x1b[F");
    console.send("\x1b[D");
    console.send(r#""to": ["ceo@rival.com"]"#);
    console.wait_for(r#""payload": {"to": ["ceo@rival.com"]}"#, 5);
    console.wait_for("valid request for email.send", 5);
    console.send("\x1b[15~");
    // Each part of the answer waited for: the terminal may have parsed only part of a frame.
    for needle in ["Would be: denied", "no-rival-mail", "constitution_denied", "under constitution version 1"] {
        console.wait_for(needle, 10);
    }

    // An allowed recipient, edited in place (the editor still has the keys): the same rule
    // no longer applies.
    console.send(&"\x1b[D".repeat(r#"rival.com"]"#.len()));
    console.send(&"\x7f".repeat("@".len()));
    console.send("@acme.");
    console.send("\x1b[15~");
    console.wait_for("Would be: pending_approval (1)", 10);
    // The rest of the same frame (the terminal may have parsed only part of it so far).
    console.wait_for("Cited rules: none", 10);

    assert_eq!(newest().await, before, "a dry run records nothing");
    // Out of the editor (where `q` is a letter), then quit.
    console.send("\x1b");
    console.wait_for("request — e edit", 5);
    assert!(console.quit());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_drafted_from_an_approval_and_published_by_keys_decides_the_next_matching_action() {
    let (server, ws, agent) = setup().await;
    // Mail runs at once when the agent is sure of it; a hesitant one waits for a person.
    ws.tool(
        "email.send",
        json!({"kind": "write", "irreversible": false, "policy": "auto", "min_confidence": 0.8, "connector": {"type": "record"}}),
    )
    .await;
    let sure = agent.post("/v1/actions", json!({"tool": "email.send", "payload": {"to": ["a@rival.com"]}, "confidence": 0.95})).await;
    assert_eq!(sure.body["status"], "executed", "{}", sure.body);
    let unsure = agent.post("/v1/actions", json!({"tool": "email.send", "payload": {"to": ["b@rival.com"]}, "confidence": 0.5})).await;
    assert_eq!(unsure.body["status"], "pending_approval", "{}", unsure.body);

    let mut console = Console::start(&server.base, 40, 120, &[]);
    console.sign_in("owner@acme.test");
    console.wait_for("(owner)", 10);
    console.wait_for("email.send", 10);
    console.send("\r");
    console.wait_for("b@rival.com", 10);
    console.send("R");
    console.wait_for(": matches the action", 10);
    // What-if over history: the sure mail, which ran at once, would now wait.
    console.send("r");
    console.wait_for("1 would change", 15);
    console.send("P");
    console.wait_for("Publish constitution version 1?", 5);
    assert!(console.text().contains("added: email-send"), "{}", console.text());
    console.send("y");
    console.wait_for("Published constitution version 1", 10);

    let drafted = ws.owner.get("/v1/constitution").await.body["rules"][0]["id"].as_str().unwrap().to_string();
    let next = agent.post("/v1/actions", json!({"tool": "email.send", "payload": {"to": ["c@rival.com"]}, "confidence": 0.95})).await;
    assert_eq!(next.body["status"], "pending_approval", "the next sure mail to rival.com now waits: {}", next.body);
    assert_eq!(next.body["constitution_version"], 1);
    assert_eq!(next.body["cited_rules"][0]["rule_id"], drafted.as_str());
    let elsewhere =
        agent.post("/v1/actions", json!({"tool": "email.send", "payload": {"to": ["c@partner.example"]}, "confidence": 0.95})).await;
    assert_eq!(elsewhere.body["status"], "executed", "other domains are untouched: {}", elsewhere.body);
    assert!(console.quit());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_log_exported_by_keys_is_the_log_and_verifies_offline() {
    let (server, ws, agent) = setup().await;
    for n in 0..5 {
        submit(&agent, "crm.read", json!({"n": n})).await.assert_status(201);
    }
    let here = tempfile::tempdir().unwrap();
    let mut console = Console::start_in(Some(here.path()), &server.base, 24, 80, &[]);
    console.sign_in("owner@acme.test");
    console.wait_for("(owner)", 10);
    console.send("2");
    console.wait_for("action.executed", 10);
    console.send("e");
    console.wait_for("Export the whole audit log", 5);
    // The suggested name, in the directory the console was started in; ctrl-s takes it.
    console.wait_for("countersign-audit-acme-", 5);
    console.send("\x13");
    console.wait_for("Audit log exported", 10);
    console.wait_for("It verifies offline", 5);

    let files: Vec<std::path::PathBuf> = std::fs::read_dir(here.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one file, no `.partial` left behind: {files:?}");
    let file = &files[0];
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("countersign-audit-acme-") && name.ends_with(".jsonl"), "{name}");

    // Line for line the log as the server holds it, through the head when the export began.
    let text = std::fs::read_to_string(file).unwrap();
    let exported: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stored = ws.owner.all_events().await;
    assert!(exported.len() >= 5 * 2, "five decisions and what came before: {}", exported.len());
    assert_eq!(exported[..], stored[..exported.len()], "the export is the log as stored");
    let shown = console.text();
    assert!(shown.contains(&format!("{} events (seq 1–{})", exported.len(), exported.len())), "{shown}");

    let (code, out, err) = server.cli(&["audit", "verify", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 0, "the exported file verifies offline: {out}{err}");
    console.send("\x1b");
    console.wait_gone("Audit log exported", 5);
    assert!(console.quit());
}
