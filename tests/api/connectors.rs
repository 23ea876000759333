//! The `http` connector against a real local receiver, through the real binary, and
//! the promise that its secrets never leave the vault except on the wire to the tool.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

use crate::support::*;

const SECRET: &str = "Bearer sk_live_9f8e7d6c5b4a";
/// For an API that takes its key in the URL.
const QUERY_SECRET: &str = "qk_live_5e6f7a8b9c0d";

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, HeaderMap, String)>>>);

/// A tool's receiving end: `/ok` answers 200, `/fail` 500, `/slow` takes two seconds,
/// `/big` answers 100 KiB.
async fn receiver() -> (String, Received) {
    let got = Received::default();
    async fn record(State(r): State<Received>, uri: axum::http::Uri, headers: HeaderMap, body: String) -> (StatusCode, String) {
        r.0.lock().unwrap().push((uri.path_and_query().map_or_else(|| uri.path().to_string(), |p| p.to_string()), headers.clone(), body));
        match uri.path() {
            "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"mailbox full\"}".into()),
            "/slow" => {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                (StatusCode::OK, "late".into())
            }
            "/big" => (StatusCode::OK, "x".repeat(100 * 1024)),
            // A careless receiver that repeats the credentials it was sent.
            "/echo" => {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
                let query = uri.query().unwrap_or_default();
                (StatusCode::OK, json!({"echo_auth": auth, "echo_query": query}).to_string())
            }
            // A number RFC 8785 cannot keep exactly.
            "/bignum" => (StatusCode::OK, "{\"id\":9007199254740993}".into()),
            _ => (StatusCode::OK, "{\"sent\":true,\"id\":\"msg_1\"}".into()),
        }
    }
    let app = axum::Router::new().route("/{*path}", post(record)).with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

/// A tool's receiving end that holds every call until the test lets one answer (200).
struct Held {
    url: String,
    /// Each call's action id, as it arrives.
    arrived: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// One permit lets one held call answer.
    release: Arc<tokio::sync::Semaphore>,
}

async fn held_receiver() -> Held {
    type Gate = (tokio::sync::mpsc::UnboundedSender<String>, Arc<tokio::sync::Semaphore>);
    async fn hold(State((arrived, release)): State<Gate>, headers: HeaderMap) -> (StatusCode, String) {
        let id = headers.get("countersign-action-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let _ = arrived.send(id);
        release.acquire().await.expect("the gate stays open").forget();
        (StatusCode::OK, "{\"sent\":true}".into())
    }
    let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let app = axum::Router::new().route("/{*path}", post(hold)).with_state((tx, release.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/send", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Held { url, arrived, release }
}

impl Held {
    async fn next_call(&mut self) -> String {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.arrived.recv())
            .await
            .expect("the connector called")
            .expect("receiver running")
    }
}

/// A workspace whose `email.send` (auto) calls a [`held_receiver`], waiting up to 30 s.
async fn held_tool() -> (Held, TestServer, Workspace) {
    let held = held_receiver().await;
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let spec = json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": {"type": "http", "url": held.url, "timeout_ms": 30000}});
    ws.tool("email.send", spec).await;
    (held, server, ws)
}

/// Submits with an `Idempotency-Key`.
async fn submit_once(api: &Api, key: &str, payload: Value) -> Resp {
    let body = json!({"tool": "email.send", "payload": payload}).to_string().into_bytes();
    api.send(reqwest::Method::POST, "/v1/actions", Some(body), &[("idempotency-key", key)]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connector_call_finishes_and_is_recorded_after_its_client_gives_up() {
    let (mut held, server, ws) = held_tool().await;
    // An agent whose HTTP client waits 300 ms, calling a tool whose receiver takes longer.
    let impatient = reqwest::Client::builder().timeout(std::time::Duration::from_millis(300)).build().unwrap();
    let payload = json!({"to": ["a@example.com"], "subject": "renewal"});
    let call = impatient
        .post(format!("{}/v1/actions", server.base))
        .bearer_auth(ws.owner.token.as_deref().unwrap())
        .header("idempotency-key", "send-1")
        .json(&json!({"tool": "email.send", "payload": payload}))
        .send();
    let (gave_up, id) = tokio::join!(call, held.next_call());
    assert!(gave_up.expect_err("the client gave up").is_timeout());
    let path = format!("/v1/actions/{id}");
    assert_eq!(ws.owner.get(&path).await.body["status"], "executing", "the call is still in flight");
    submit_once(&ws.owner, "send-1", payload.clone()).await.assert_error(409, "idempotency_key_in_use");

    // The receiver answers: the call was not cut off with the client; its result is kept.
    held.release.add_permits(1);
    let action = TestServer::eventually(&ws.owner, &path, "recording the call's result", |a| a["status"] != "executing").await;
    assert_eq!(action["status"], "executed", "{action}");
    assert_eq!(action["result"]["status"], 200, "{action}");
    assert_eq!(action["result"]["body"]["sent"], true, "{action}");
    let again = submit_once(&ws.owner, "send-1", payload).await;
    assert_eq!((again.status, again.body["status"].as_str()), (201, Some("executed")), "{}", again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(event_types(&ws.owner).await.iter().filter(|t| *t == "action.executed").count(), 1);
    assert!(held.arrived.try_recv().is_err(), "the receiver was called once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_cut_off_by_a_crash_is_recorded_failed_and_never_run_again() {
    let (mut held, mut server, ws) = held_tool().await;
    let payload = json!({"to": ["a@example.com"], "subject": "renewal"});
    let first = reqwest::Client::new()
        .post(format!("{}/v1/actions", server.base))
        .bearer_auth(ws.owner.token.as_deref().unwrap())
        .header("idempotency-key", "send-1")
        .json(&json!({"tool": "email.send", "payload": payload}))
        .send();
    let first = tokio::spawn(first);
    let id = held.next_call().await;
    // The server dies while the receiver is acting on the call; nothing can record how
    // it ended, and the agent hears no success.
    server.crash().await;
    held.release.add_permits(1);
    if let Ok(r) = first.await.unwrap() {
        assert!(!r.status().is_success(), "{} {}", r.status(), r.text().await.unwrap_or_default());
    }

    server.restart().await;
    let owner = ws.owner.at(&server.base);
    let path = format!("/v1/actions/{id}");
    assert_eq!(owner.get(&path).await.body["status"], "executing");
    submit_once(&owner, "send-1", payload.clone()).await.assert_error(409, "idempotency_key_in_use");

    // Once no call could still be running, the sweeper records it as failed, outcome
    // unknown: never run again, and never left `executing`.
    server.clock.advance(chrono::Duration::seconds(61));
    let action = TestServer::eventually(&owner, &path, "recording the interrupted call", |a| a["status"] != "executing").await;
    assert_eq!(action["status"], "failed", "{action}");
    assert_eq!(action["result"]["code"], "execution_interrupted", "{action}");
    assert!(action["result"]["error"].as_str().unwrap().contains("whether it took effect is unknown"), "{action}");
    let events = owner.all_events().await;
    let failed: Vec<&Value> = events.iter().filter(|e| e["event_type"] == "action.failed").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["actor"], json!({"kind": "system", "id": "execution-sweeper"}));
    assert_eq!(failed[0]["resource"], id.as_str());
    let again = submit_once(&owner, "send-1", payload).await;
    assert_eq!((again.status, again.body["status"].as_str()), (201, Some("failed")), "{}", again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert!(held.arrived.try_recv().is_err(), "the receiver was called once");
    assert_eq!(owner.verify().await["ok"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_that_comes_after_the_sweeper_gave_up_is_recorded_after_all() {
    let (mut held, server, ws) = held_tool().await;
    let payload = json!({"to": ["a@example.com"]});
    let agent = Api::new(&server.base, ws.owner.token.as_deref());
    let first = tokio::spawn({
        let payload = payload.clone();
        async move { submit_once(&agent, "send-1", payload).await }
    });
    let id = held.next_call().await;
    let path = format!("/v1/actions/{id}");
    // A stall longer than any call can last (the clock moved): the sweeper calls it lost…
    server.clock.advance(chrono::Duration::seconds(61));
    TestServer::eventually(&ws.owner, &path, "the sweeper giving up on the call", |a| a["status"] == "failed").await;
    // …then the receiver answers after all: that answer is what happened.
    held.release.add_permits(1);
    let r = first.await.unwrap();
    assert_eq!((r.status, r.body["status"].as_str()), (201, Some("executed")), "{}", r.body);
    assert_eq!(r.body["result"]["status"], 200);
    let action = ws.owner.get(&path).await.body;
    assert_eq!((action["status"].as_str(), &action["result"]["status"]), (Some("executed"), &json!(200)), "{action}");
    let ends: Vec<(String, String)> = ws
        .owner
        .all_events()
        .await
        .into_iter()
        .filter(|e| e["resource"] == id.as_str() && e["event_type"] != "action.requested")
        .map(|e| (e["event_type"].as_str().unwrap().to_string(), e["actor"]["id"].as_str().unwrap_or_default().to_string()))
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert_eq!(ends[0], ("action.failed".to_string(), "execution-sweeper".to_string()));
    assert_eq!(ends[1].0, "action.executed");
    let again = submit_once(&ws.owner, "send-1", payload).await;
    assert_eq!(again.body["status"], "executed", "{}", again.body);
}

/// The real `countersign serve`, with its log captured.
struct Binary {
    child: Child,
    base: String,
    log: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
    db: Option<TestDb>,
}

impl Binary {
    fn start() -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let db = fresh_db();
        let mut init = bin_command(db.as_ref())
            .args(["admin", "init", "--data-dir"])
            .arg(dir.path())
            .args(["--workspace", "acme", "--email", "owner@acme.test"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(init.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        assert!(init.wait().unwrap().success());
        let mut child = bin_command(db.as_ref())
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "debug")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("server exited before serving").unwrap();
            log.lock().unwrap().push_str(&line);
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(addr) = v["addr"].as_str()
            {
                break format!("http://{addr}");
            }
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Binary { child, base, log, dir, db }
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_the_tool_and_nowhere_else() {
    let (url, got) = receiver().await;
    let bin = Binary::start();
    let anon = Api::new(&bin.base, None);
    let signed = anon.post("/v1/sessions", json!({"email": "owner@acme.test", "password": PASSWORD})).await;
    assert_eq!(signed.status, 201, "{}", signed.body);
    let owner = Api::new(&bin.base, signed.body["token"].as_str());

    let tool = json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": {
        "type": "http", "url": format!("{url}/ok?region=eu"), "headers": {"X-Team": "ops"}, "secret_headers": {"Authorization": SECRET},
        "secret_query": {"key": QUERY_SECRET}, "timeout_ms": 2000}});
    let put = owner.put("/v1/tools/email.send", tool).await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert_eq!(put.body["connector"]["secret_headers"]["Authorization"], "********");
    assert_eq!(put.body["connector"]["secret_query"]["key"], "********");

    let payload = json!({"to": ["ops@example.com"], "subject": "Invoice 7", "amount": 120.5});
    let r = submit(&owner, "email.send", payload.clone()).await;
    assert_eq!(r.body["status"], "executed", "{}", r.body);
    assert_eq!(r.body["result"]["status"], 200);
    assert_eq!(r.body["result"]["body"]["id"], "msg_1");

    {
        let got = got.0.lock().unwrap();
        let (path, headers, body) = got.last().expect("the receiver was called");
        assert_eq!(path, &format!("/ok?region=eu&key={QUERY_SECRET}"), "the secret parameter is added as the call is made");
        assert_eq!(headers["authorization"], SECRET);
        assert_eq!(headers["x-team"], "ops");
        assert_eq!(headers["countersign-action-id"], r.body["id"].as_str().unwrap());
        assert_eq!(headers["countersign-payload-sha256"], r.body["payload_sha256"].as_str().unwrap());
        assert_eq!(serde_json::from_str::<Value>(body).unwrap(), payload);
    }

    // A secret update that leaves secret_headers out keeps the stored value.
    let keep = json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": {"type": "http", "url": format!("{url}/ok")}});
    owner.put("/v1/tools/email.send", keep).await;
    submit(&owner, "email.send", json!({"n": 2})).await;
    assert_eq!(got.0.lock().unwrap().last().unwrap().1["authorization"], SECRET);
    assert!(got.0.lock().unwrap().last().unwrap().0.ends_with(&format!("key={QUERY_SECRET}")), "kept too");

    // Never in the API, the audit log, the logs, or the database in the clear.
    let audit = owner.all_events().await;
    let audit_text = serde_json::to_string(&audit).unwrap();
    let tools = owner.get("/v1/tools").await.text;
    let log = bin.log.lock().unwrap().clone();
    let db = match &bin.db {
        None => {
            let mut db = Vec::new();
            for f in ["countersign.db", "countersign.db-wal"] {
                if let Ok(b) = std::fs::read(bin.dir.path().join(f)) {
                    db.extend(b);
                }
            }
            db
        }
        // On PostgreSQL: every row of the tables that hold connectors and what they did.
        Some(d) => ["tools", "actions", "audit_events"]
            .iter()
            .map(|t| OutOfBand::Postgres(d.superuser_url.clone()).dump(t))
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes(),
    };
    for (place, text) in [("audit", audit_text.as_str()), ("tools", tools.as_str()), ("log", log.as_str())] {
        assert!(!text.contains("sk_live_9f8e7d6c5b4a"), "the secret leaked into the {place}");
        assert!(!text.contains(QUERY_SECRET), "the secret query parameter leaked into the {place}");
    }
    assert!(!db.windows(20).any(|w| w == b"sk_live_9f8e7d6c5b4a"), "the secret is in the database in the clear");
    assert!(!db.windows(QUERY_SECRET.len()).any(|w| w == QUERY_SECRET.as_bytes()), "the query secret is in the database in the clear");
    assert!(log.contains("/v1/actions"), "the log was captured");
    assert!(bin.stop().success(), "graceful shutdown exits 0");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_is_recorded_exactly_and_without_the_secrets_sent() {
    let (url, _got) = receiver().await;
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    // A base64 key, as many APIs issue: a query string carries it percent-encoded.
    const B64_KEY: &str = "kq+7/Zp9w=";
    let tool = |path: &str| {
        json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": {"type": "http", "url": format!("{url}{path}"),
        "secret_headers": {"Authorization": SECRET}, "secret_query": {"key": B64_KEY}}})
    };
    assert_eq!(ws.owner.put("/v1/tools/email.send", tool("/echo")).await.status, 201);
    let r = submit(&ws.owner, "email.send", json!({"n": 1})).await;
    assert_eq!(r.body["status"], "executed", "{}", r.body);
    // The receiver repeated both secrets: neither is kept, and the result says so.
    assert_eq!(r.body["result"]["body"]["echo_auth"], "[redacted]", "{}", r.body);
    assert_eq!(r.body["result"]["body"]["echo_query"], "key=[redacted]", "{}", r.body);
    assert_eq!(r.body["result"]["secrets_redacted"], true);
    let id = r.body["id"].as_str().unwrap();
    let stored = ws.owner.get(&format!("/v1/actions/{id}")).await.text;
    let audit = serde_json::to_string(&ws.owner.all_events().await).unwrap();
    for (place, text) in [("action", stored.as_str()), ("audit", audit.as_str())] {
        assert!(!text.contains("sk_live_9f8e7d6c5b4a"), "a secret echoed back is in the {place}: {text}");
        assert!(!text.contains(B64_KEY) && !text.contains("kq%2B7%2FZp9w%3D"), "the query secret echoed back is in the {place}: {text}");
    }

    // An answer with a number RFC 8785 would round is kept as the text received, the
    // same on the action and in the audit log (whose hash covers it).
    assert_eq!(ws.owner.put("/v1/tools/email.send", tool("/bignum")).await.status, 200);
    let r = submit(&ws.owner, "email.send", json!({"n": 2})).await;
    assert_eq!(r.body["result"]["body"], "{\"id\":9007199254740993}", "{}", r.body);
    let id = r.body["id"].as_str().unwrap();
    let executed =
        ws.owner.all_events().await.into_iter().find(|e| e["event_type"] == "action.executed" && e["data"]["action_id"] == id).unwrap();
    assert_eq!(executed["data"]["result"], r.body["result"]);
    assert_eq!(ws.owner.get(&format!("/v1/actions/{id}")).await.body["result"], r.body["result"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_secrets_never_follow_a_tool_to_another_receiver() {
    let ((ours, got_ours), (theirs, got_theirs)) = (receiver().await, receiver().await);
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let http = |url: String, secrets: Option<Value>| {
        let mut c = json!({"type": "http", "url": url});
        if let Some(s) = secrets {
            c["secret_headers"] = s;
        }
        json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": c})
    };
    ws.tool("email.send", http(format!("{ours}/ok"), Some(json!({"Authorization": SECRET})))).await;
    // Another path on the same receiver keeps them.
    ws.owner.put("/v1/tools/email.send", http(format!("{ours}/v2/send"), None)).await.assert_status(200);
    submit(&ws.owner, "email.send", json!({"n": 1})).await;
    assert_eq!(got_ours.0.lock().unwrap().last().unwrap().1["authorization"], SECRET);

    // Another receiver must be given its own, or none; the tool is left as it was.
    let moved = ws.owner.put("/v1/tools/email.send", http(format!("{theirs}/ok"), None)).await;
    moved.assert_error(422, "secret_headers_required");
    assert!(moved.body["error"]["message"].as_str().unwrap().contains("another receiver"), "{}", moved.body);
    assert_eq!(ws.owner.get("/v1/tools/email.send").await.body["connector"]["url"], format!("{ours}/v2/send"));
    ws.owner.put("/v1/tools/email.send", http(format!("{theirs}/ok"), Some(json!({})))).await.assert_status(200);
    let r = submit(&ws.owner, "email.send", json!({"n": 2})).await;
    assert_eq!(r.body["status"], "executed", "{}", r.body);
    {
        let got = got_theirs.0.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].1.get("authorization").is_none(), "a stored secret followed the tool to another receiver");
    }

    // The same for a secret query parameter.
    let with_query = |url: String, q: Option<Value>| {
        let mut t = http(url, Some(json!({})));
        if let Some(q) = q {
            t["connector"]["secret_query"] = q;
        }
        t
    };
    ws.tool("maps.lookup", with_query(format!("{ours}/ok"), Some(json!({"key": QUERY_SECRET})))).await;
    ws.owner.put("/v1/tools/maps.lookup", with_query(format!("{theirs}/ok"), None)).await.assert_error(422, "secret_query_required");
    ws.owner.put("/v1/tools/maps.lookup", with_query(format!("{ours}/v2"), None)).await.assert_status(200);
    submit(&ws.owner, "maps.lookup", json!({"q": "Dublin"})).await;
    assert_eq!(got_ours.0.lock().unwrap().last().unwrap().0, format!("/v2?key={QUERY_SECRET}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn receiver_failures_and_timeouts_are_recorded_as_failed() {
    let (url, _got) = receiver().await;
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    for (name, path, timeout) in [("mail.fail", "fail", 2000), ("mail.slow", "slow", 200)] {
        let spec = json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": {"type": "http", "url": format!("{url}/{path}"), "timeout_ms": timeout}});
        ws.tool(name, spec).await;
    }
    let failed = submit(&ws.owner, "mail.fail", json!({"x": 1})).await;
    assert_eq!(failed.body["status"], "failed", "{}", failed.body);
    assert_eq!(failed.body["result"]["status"], 500);
    assert_eq!(failed.body["result"]["body"]["error"], "mailbox full");
    let slow = submit(&ws.owner, "mail.slow", json!({"x": 1})).await;
    assert_eq!(slow.body["status"], "failed");
    assert_eq!(slow.body["result"]["code"], "timeout");
    let said = slow.body["result"]["error"].as_str().unwrap();
    assert!(said.contains("no answer within 200 ms") && said.contains("may still have acted"), "{}", slow.body);
    // Nothing listens there: the call was never delivered, and the record says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let spec = json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": {"type": "http", "url": format!("http://{closed}/hook")}});
    ws.tool("mail.gone", spec).await;
    let gone = submit(&ws.owner, "mail.gone", json!({"x": 1})).await;
    assert_eq!(
        (gone.body["status"].as_str(), gone.body["result"]["code"].as_str()),
        (Some("failed"), Some("unreachable")),
        "{}",
        gone.body
    );
    let said = gone.body["result"]["error"].as_str().unwrap();
    assert!(said.contains("could not connect") && said.contains("refused") && said.contains("not delivered"), "{}", gone.body);
    let types = event_types(&ws.owner).await;
    assert_eq!(types.iter().filter(|t| *t == "action.failed").count(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approved_http_action_runs_once_however_many_ask_at_once() {
    let (url, got) = receiver().await;
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.tool(
        "email.send",
        json!({"kind": "write", "irreversible": false, "policy": "approve", "connector": {"type": "http", "url": format!("{url}/ok")}}),
    )
    .await;
    let (_, admin) = ws.member(&server, "admin").await;
    let payload = json!({"to": ["a@example.com"]});
    let r = submit(&ws.owner, "email.send", payload.clone()).await;
    assert!(got.0.lock().unwrap().is_empty(), "nothing is sent before approval");
    let d = admin
        .post(
            &format!("/v1/approvals/{}/decisions", r.body["approval_id"].as_str().unwrap()),
            json!({"decision": "approve", "payload_sha256": r.body["payload_sha256"]}),
        )
        .await;
    assert_eq!(d.body["state"], "approved");
    // Sixteen at once, through the connector that calls out after the commit.
    let path = format!("/v1/actions/{}/execute", r.body["id"].as_str().unwrap());
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (api, path, payload) = (ws.owner.clone(), path.clone(), payload.clone());
            tokio::spawn(async move { api.post(&path, json!({"payload": payload})).await })
        })
        .collect();
    let mut ran = 0;
    for c in calls {
        let r = c.await.unwrap();
        match r.status {
            200 => {
                assert_eq!(r.body["status"], "executed", "{}", r.body);
                ran += 1;
            }
            _ => r.assert_error(409, "approval_consumed"),
        }
    }
    assert_eq!(ran, 1, "exactly one execution ran");
    assert_eq!(got.0.lock().unwrap().len(), 1, "the receiver was called once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_answer_is_kept_bounded_and_marked_truncated() {
    let (url, _) = receiver().await;
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.tool(
        "report.fetch",
        json!({"kind": "read", "irreversible": false, "policy": "auto", "connector": {"type": "http", "url": format!("{url}/big")}}),
    )
    .await;
    let r = submit(&ws.owner, "report.fetch", json!({"month": "2026-11"})).await;
    assert_eq!(r.body["status"], "executed", "{}", r.body);
    assert_eq!(r.body["result"]["truncated"], true);
    assert_eq!(r.body["result"]["body"].as_str().map(str::len), Some(64 * 1024), "the first 64 KiB, as text");
    let stored = ws.owner.get(&format!("/v1/actions/{}", r.body["id"].as_str().unwrap())).await.body;
    assert_eq!(stored["result"], r.body["result"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_moved_to_another_tool_cannot_be_opened_and_no_call_is_made() {
    let (url, got) = receiver().await;
    let mut server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let spec = |path: &str| {
        json!({"kind": "write", "irreversible": false, "policy": "auto",
        "connector": {"type": "http", "url": format!("{url}{path}"), "secret_headers": {"authorization": SECRET}}})
    };
    ws.tool("mail.one", spec("/one")).await;
    ws.tool("mail.two", spec("/two")).await;
    // The same for a secret query parameter, moved to another tool.
    let query = |path: &str| {
        json!({"kind": "read", "irreversible": false, "policy": "auto",
        "connector": {"type": "http", "url": format!("{url}{path}"), "secret_query": {"key": QUERY_SECRET}}})
    };
    ws.tool("maps.one", query("/maps-one")).await;
    ws.tool("maps.two", query("/maps-two")).await;
    // Someone with the database in hand gives `mail.two` the sealed credential of
    // `mail.one` (and `maps.two` that of `maps.one`): sealed for another tool, it does not open.
    for (from, to) in [("mail.one", "mail.two"), ("maps.one", "maps.two")] {
        let sql = format!("UPDATE tools SET connector = (SELECT connector FROM tools WHERE name = '{from}') WHERE name = '{to}'");
        assert_eq!(server.out_of_band().execute(&sql, &[], false).unwrap(), 1);
    }
    server.restart().await;
    let owner = server.sign_in("owner@acme.test").await;
    let r = submit(&owner, "mail.two", json!({"to": ["a@example.com"]})).await;
    assert_eq!(r.body["status"], "failed", "{}", r.body);
    let error = r.body["result"]["error"].as_str().unwrap();
    assert!(error.contains("could not be opened") && error.contains("the call was not made"), "{error}");
    let r = submit(&owner, "maps.two", json!({"q": "Dublin"})).await;
    assert_eq!(r.body["status"], "failed", "{}", r.body);
    let error = r.body["result"]["error"].as_str().unwrap();
    assert!(error.contains("query parameter `key` could not be opened") && error.contains("the call was not made"), "{error}");
    assert!(got.0.lock().unwrap().is_empty(), "nothing reached any receiver");
    assert!(!owner.all_events().await.iter().any(|e| e.to_string().contains("sk_live")), "the secret is nowhere in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn connector_urls_and_headers_are_validated() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let cases = [
        (json!({"type": "http", "url": "ftp://example.com/x"}), "invalid_url"),
        (json!({"type": "http", "url": "https://user:pw@example.com/x"}), "invalid_url"),
        (json!({"type": "http", "url": "not a url"}), "invalid_url"),
        (json!({"type": "http", "url": "https://example.com", "headers": {"Host": "evil"}}), "invalid_header"),
        (json!({"type": "http", "url": "https://example.com", "headers": {"X-A": "a\r\nX-B: b"}}), "invalid_header"),
        (json!({"type": "http", "url": "https://example.com", "timeout_ms": 5}), "invalid_timeout"),
        (json!({"type": "http", "url": "https://example.com/x#part"}), "invalid_url"),
        (json!({"type": "http", "url": format!("https://example.com/{}", "a".repeat(2048))}), "invalid_url"),
        // A credential in a plain header would be shown and audited: it goes in secret_headers.
        (json!({"type": "http", "url": "https://example.com", "headers": {"Authorization": "Bearer plain"}}), "invalid_header"),
        (json!({"type": "http", "url": "https://example.com", "headers": {"X-Auth-Token": "plain"}}), "invalid_header"),
        // One header, twice in different case: sent twice, read as either.
        (
            json!({"type": "http", "url": "https://example.com", "secret_headers": {"X-Api-Key": "one", "x-api-key": "two"}}),
            "invalid_header",
        ),
        // A credential in the URL's query would be shown and audited: it has its own place.
        (json!({"type": "http", "url": "https://example.com/x?api_key=abc"}), "invalid_url"),
        (json!({"type": "http", "url": "https://example.com/x?Token=abc"}), "invalid_url"),
        (json!({"type": "http", "url": "https://example.com/x?k=1", "secret_query": {"k": "v"}}), "invalid_query_param"),
        (json!({"type": "http", "url": "https://example.com/x", "secret_query": {"a b": "v"}}), "invalid_query_param"),
        (json!({"type": "http", "url": "https://example.com/x", "secret_query": {"k": "line\nbreak"}}), "invalid_query_param"),
    ];
    for (connector, code) in cases {
        let r =
            ws.owner.put("/v1/tools/x.y", json!({"kind": "read", "irreversible": false, "policy": "auto", "connector": connector})).await;
        assert_eq!((r.status, r.code()), (422, code), "{connector}: {}", r.body);
    }
    let said = ws
        .owner
        .put("/v1/tools/x.y", json!({"kind": "read", "irreversible": false, "policy": "auto", "connector": {"type": "http", "url": "https://example.com/x?api_key=abc"}}))
        .await;
    assert!(said.body["error"]["message"].as_str().unwrap().contains("connector.secret_query"), "{}", said.body);
    assert!(!said.text.contains("abc"), "the value is not repeated: {}", said.text);
}

#[tokio::test(flavor = "multi_thread")]
async fn master_key_rotation_keeps_secrets_working() {
    let (url, got) = receiver().await;
    let mut server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.tool("email.send", json!({"kind": "write", "irreversible": false, "policy": "auto", "connector": {"type": "http", "url": format!("{url}/ok"), "secret_headers": {"Authorization": SECRET}, "secret_query": {"key": QUERY_SECRET}}})).await;
    submit(&ws.owner, "email.send", json!({"n": 1})).await;
    server.stop().await;

    let new_key = server.dir.join("new.key");
    assert!(bin_command(None).args(["admin", "generate-master-key", "--out"]).arg(&new_key).status().unwrap().success());
    // A key left in the environment (some other one) does not override the old key named
    // on the command line.
    let stray = server.dir.join("stray.key");
    assert!(bin_command(None).args(["admin", "generate-master-key", "--out"]).arg(&stray).status().unwrap().success());
    let rotated = bin_command(server.db.as_ref())
        .args(["admin", "rotate-master-key", "--data-dir"])
        .arg(&server.dir)
        .arg("--new-key-file")
        .arg(&new_key)
        .arg("--old-key-file")
        .arg(server.dir.join("master.key"))
        .env("COUNTERSIGN_MASTER_KEY", std::fs::read_to_string(&stray).unwrap().trim())
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    assert!(
        String::from_utf8_lossy(&rotated.stdout).contains("Re-sealed 2 secret value(s) of 1 tool(s)"),
        "{}",
        String::from_utf8_lossy(&rotated.stdout)
    );

    // The old key no longer opens anything: the server must run with the new one.
    std::fs::rename(&new_key, server.dir.join("master.key")).unwrap();
    server.restart().await;
    let owner = server.sign_in("owner@acme.test").await;
    let r = submit(&owner, "email.send", json!({"n": 2})).await;
    assert_eq!(r.body["status"], "executed", "{}", r.body);
    let got = got.0.lock().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].1["authorization"], SECRET);
    assert_eq!(got[1].0, format!("/ok?key={QUERY_SECRET}"));
}
