//! Signed checkpoints and exports: a kept checkpoint catches a truncated or rewritten
//! log, offline and online; exports stream, filter, escape for spreadsheets, need
//! `audit:export`, and never carry a secret.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use countersign::audit::{Actor, AuditEvent, EventDraft, Via};
use serde_json::{Value, json};

use crate::support::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// Runs the real binary; returns the exit code and what it printed.
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(args)
        .env_remove("COUNTERSIGN_DATA_DIR")
        .env_remove("COUNTERSIGN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run countersign");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `countersign audit verify --file FILE [--checkpoint CP] [extra…]`.
fn verify_file(file: &Path, checkpoint: Option<&Path>, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["audit", "verify", "--file", file.to_str().unwrap()];
    if let Some(c) = checkpoint {
        args.extend(["--checkpoint", c.to_str().unwrap()]);
    }
    args.extend(extra);
    let (code, out, err) = cli(&args);
    (code, format!("{out}{err}"))
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A small RFC 4180 reader, written here so the test does not trust the code it checks:
/// records end with CRLF; a quoted field may hold commas, CR, LF and doubled quotes.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_field_start => {
                // A quoted field: up to the closing quote, with "" for a quote.
                loop {
                    match chars.next().expect("unterminated quoted field") {
                        '"' if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        '"' => break,
                        other => field.push(other),
                    }
                }
                at_field_start = false;
                let next = chars.peek().copied();
                assert!(matches!(next, Some(',') | Some('\r') | None), "a quoted field must end the cell, found {next:?}");
            }
            '"' => panic!("a quote inside an unquoted field: {field}"),
            ',' => {
                record.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "records end with CRLF");
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
                at_field_start = true;
            }
            '\n' => panic!("a bare LF outside a quoted field"),
            other => {
                field.push(other);
                at_field_start = false;
            }
        }
    }
    assert!(field.is_empty() && record.is_empty(), "the last record must end with CRLF");
    records
}

/// A CSV as maps from header name to cell.
fn csv_rows(text: &str) -> (Vec<String>, Vec<std::collections::HashMap<String, String>>) {
    let mut records = parse_csv(text);
    assert!(!records.is_empty(), "a header row");
    let header = records.remove(0);
    let rows = records
        .into_iter()
        .map(|r| {
            assert_eq!(r.len(), header.len(), "every record has every column: {r:?}");
            header.iter().cloned().zip(r).collect()
        })
        .collect();
    (header, rows)
}

/// Appends `n` events straight through the store (1000 per write job): a cheap way to a
/// long log.
async fn fill(server: &TestServer, workspace_id: &str, n: usize) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(1000);
        left -= batch;
        let ws = workspace_id.to_string();
        server
            .store
            .engine()
            .write(move |tx| {
                // Fenced to the workspace, as every store write is (row-level security on
                // PostgreSQL).
                countersign::store::db::Conn::set_workspace(tx, &ws)?;
                for i in 0..batch {
                    // A real type (every event written is one) that this workspace never
                    // writes otherwise, so a filter on it finds exactly these.
                    let draft = EventDraft::new("webhook.redelivered", Actor::system("test"), Via::System)
                        .resource(format!("res_{i}"))
                        .data(json!({"i": i, "note": "filler, with a comma"}));
                    tx.append(&ws, draft)?;
                }
                Ok(())
            })
            .await
            .expect("append events");
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty()).collect()
}

fn head_seq(r: &Resp) -> i64 {
    r.headers["x-countersign-head-seq"].to_str().unwrap().parse().unwrap()
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

/// Polls `f` until it returns `Some`, for at most 10 seconds.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Checkpoints

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_checkpoint_catches_a_truncated_or_rewritten_log() {
    let mut server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    for i in 0..5 {
        assert_eq!(submit(&ws.owner, "crm.read", json!({"i": i})).await.status, 201);
    }
    let cp = ws.owner.get("/v1/audit/checkpoints/latest").await;
    assert_eq!(cp.status, 200, "{}", cp.body);
    let cp_seq = cp.body["seq"].as_i64().unwrap();
    assert_eq!(cp_seq, ws.owner.all_events().await.len() as i64, "the checkpoint signs the head");
    let tmp = tempfile::tempdir().unwrap();
    let cp_file = write(tmp.path(), "checkpoint.json", &cp.text);

    // The log grows after the checkpoint was kept.
    for i in 5..10 {
        submit(&ws.owner, "crm.read", json!({"i": i})).await;
    }
    let export = ws.owner.get("/v1/audit/export?format=jsonl").await;
    assert_eq!(export.status, 200);
    let all = lines(&export.text);
    assert!(all.len() as i64 > cp_seq + 5);

    // The whole, longer log extends the checkpoint.
    let full = write(tmp.path(), "full.jsonl", &export.text);
    let (code, out) = verify_file(&full, Some(&cp_file), &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("extends the checkpoint"), "{out}");
    assert!(out.contains("public key inside the checkpoint"), "says which key was used: {out}");

    // A log that ends exactly at the checkpoint extends it too.
    let exact = write(tmp.path(), "exact.jsonl", &(all[..cp_seq as usize].join("\n") + "\n"));
    assert_eq!(verify_file(&exact, Some(&cp_file), &[]).0, 0);

    // Cut below the checkpoint: the chain alone still verifies, the checkpoint does not.
    let cut = write(tmp.path(), "cut.jsonl", &(all[..cp_seq as usize - 2].join("\n") + "\n"));
    assert_eq!(verify_file(&cut, None, &[]).0, 0, "a truncated chain is still a sound chain: that is why checkpoints exist");
    let (code, out) = verify_file(&cut, Some(&cp_file), &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("TRUNCATED") && out.contains(&format!("seq {cp_seq}")), "{out}");

    // Rewrite the tail from the checkpoint's seq on and re-hash it so the chain holds.
    let mut events: Vec<AuditEvent> = all.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let at = cp_seq as usize - 1;
    events[at].data = json!({"rewritten": true});
    for i in at..events.len() {
        events[i].prev_hash = events[i - 1].hash.clone();
        events[i].hash = events[i].compute_hash();
    }
    let forged: String = events.iter().map(|e| serde_json::to_string(e).unwrap() + "\n").collect();
    let forged = write(tmp.path(), "forged.jsonl", &forged);
    assert_eq!(verify_file(&forged, None, &[]).0, 0, "the forgery is a self-consistent chain");
    let (code, out) = verify_file(&forged, Some(&cp_file), &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("REWRITTEN") && out.contains(&format!("seq {cp_seq}")), "{out}");

    // Online: the binary fetches the server's export and checks it against the checkpoint.
    let token = ws.owner.token.clone().unwrap();
    let (code, out, err) =
        cli(&["audit", "verify", "--server", &server.base, "--token", &token, "--checkpoint", cp_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("extends the checkpoint"), "{out}");

    // Offline on the data directory, with the server stopped.
    server.stop().await;
    let dir = server.dir.to_str().unwrap().to_string();
    let (code, out, err) = server.cli(&["audit", "verify", "--data-dir", &dir, "--checkpoint", cp_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("extends the checkpoint"), "{out}");

    // A checkpoint from the future of this log (a later head) is caught as truncation.
    let later = {
        let signer = countersign::checkpoint::Signer::from_file(&server.dir.join("signing.key")).unwrap();
        let c = signer.sign(&ws.id, all.len() as i64 + 50, &"ab".repeat(32), "2030-01-01T00:00:00.000000Z");
        write(tmp.path(), "later.json", &serde_json::to_string(&c).unwrap())
    };
    let (code, out, _) = server.cli(&["audit", "verify", "--data-dir", &dir, "--checkpoint", later.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("TRUNCATED") && out.contains(&format!("seq {}", all.len() + 50)), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_checkpoint_or_a_foreign_key_is_refused() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let cp = ws.owner.get("/v1/audit/checkpoints/latest").await.body;
    let export = ws.owner.get("/v1/audit/export").await;
    let tmp = tempfile::tempdir().unwrap();
    let log = write(tmp.path(), "log.jsonl", &export.text);
    let public = ws.owner.get("/v1/audit/public-key").await.body;
    let pk = public["public_key"].as_str().unwrap();

    // Pinned to the server's key: verifies, and says so.
    let good = write(tmp.path(), "good.json", &cp.to_string());
    let (code, out) = verify_file(&log, Some(&good), &["--public-key", pk]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("--public-key"), "says which key was used: {out}");

    // Any signed field changed: the signature no longer verifies.
    for (field, value) in
        [("seq", json!(cp["seq"].as_i64().unwrap() - 1)), ("hash", json!("00".repeat(32))), ("ts", json!("2020-01-01T00:00:00.000000Z"))]
    {
        let mut t = cp.clone();
        t[field] = value;
        let f = write(tmp.path(), "tampered.json", &t.to_string());
        let (code, out) = verify_file(&log, Some(&f), &[]);
        assert_eq!(code, 3, "{field}: {out}");
        assert!(out.contains("REFUSED") && out.contains("signature does not verify"), "{field}: {out}");
    }
    // A flipped signature byte.
    let mut sig = B64.decode(cp["signature"].as_str().unwrap()).unwrap();
    sig[10] ^= 1;
    let mut t = cp.clone();
    t["signature"] = json!(B64.encode(&sig));
    let f = write(tmp.path(), "sig.json", &t.to_string());
    assert_eq!(verify_file(&log, Some(&f), &[]).0, 3);

    // Re-signed by another key that kept the server's key id and public key: refused.
    let impostor = countersign::checkpoint::Signer::ephemeral();
    let mut forged = impostor.sign(&ws.id, cp["seq"].as_i64().unwrap(), cp["hash"].as_str().unwrap(), cp["ts"].as_str().unwrap());
    forged.public_key = pk.to_string();
    forged.key_id = public["key_id"].as_str().unwrap().to_string();
    let f = write(tmp.path(), "impostor.json", &serde_json::to_string(&forged).unwrap());
    assert_eq!(verify_file(&log, Some(&f), &[]).0, 3);
    // Signed soundly by another key: fine on its own, refused when the server's key is pinned.
    let other = impostor.sign(&ws.id, cp["seq"].as_i64().unwrap(), cp["hash"].as_str().unwrap(), cp["ts"].as_str().unwrap());
    let f = write(tmp.path(), "other.json", &serde_json::to_string(&other).unwrap());
    let (code, out) = verify_file(&log, Some(&f), &["--public-key", pk]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("not by the trusted key"), "{out}");

    // Not a checkpoint at all: bad input.
    let junk = write(tmp.path(), "junk.json", "{\"seq\": 1}");
    assert_eq!(verify_file(&log, Some(&junk), &[]).0, 2);
    let (code, out) = verify_file(&log, Some(&good), &["--public-key", "not base64!"]);
    assert_eq!(code, 2);
    // The key is what is wrong, not the checkpoint.
    assert!(out.contains("--public-key: not an Ed25519 public key: it is not base64") && !out.contains("checkpoint is malformed"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_key_signs_every_checkpoint_and_survives_a_restart() {
    let mut server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let public = ws.owner.get("/v1/audit/public-key").await;
    assert_eq!(public.status, 200, "{}", public.body);
    assert_eq!(public.body["algorithm"], "ed25519");
    let pk_b64 = public.body["public_key"].as_str().unwrap().to_string();
    let pk: [u8; 32] = B64.decode(&pk_b64).unwrap().try_into().unwrap();
    // The key id is derived from the key: the first 16 hex digits of its SHA-256.
    use sha2::Digest;
    assert_eq!(public.body["key_id"].as_str().unwrap(), &hex::encode(sha2::Sha256::digest(pk))[..16]);

    let cp = ws.owner.get("/v1/audit/checkpoints/latest").await.body;
    assert_eq!(cp["public_key"], public.body["public_key"]);
    assert_eq!(cp["key_id"], public.body["key_id"]);
    assert_eq!(cp["algorithm"], "ed25519");
    assert_eq!(cp["workspace_id"], ws.id.as_str());
    let events = ws.owner.all_events().await;
    let last = events.last().unwrap();
    assert_eq!((&cp["seq"], &cp["hash"]), (&last["seq"], &last["hash"]));

    // Checked independently: the signature covers the RFC 8785 form of the six fields.
    let signed = json!({"workspace_id": cp["workspace_id"], "seq": cp["seq"], "hash": cp["hash"], "ts": cp["ts"],
        "key_id": cp["key_id"], "algorithm": cp["algorithm"]});
    let message = serde_json_canonicalizer::to_string(&signed).unwrap();
    let sig: [u8; 64] = B64.decode(cp["signature"].as_str().unwrap()).unwrap().try_into().unwrap();
    ed25519_dalek::VerifyingKey::from_bytes(&pk)
        .unwrap()
        .verify_strict(message.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
        .expect("the signature verifies independently");

    // The key is the data directory's: the same after a restart.
    server.restart().await;
    let owner = server.sign_in("owner@acme.test").await;
    assert_eq!(owner.get("/v1/audit/public-key").await.body["public_key"], pk_b64.as_str());

    // audit:read is enough to read checkpoints; without it, no.
    let ws = Workspace { owner, ..ws };
    let (_, viewer) = ws.member(&server, "viewer").await;
    assert_eq!(viewer.get("/v1/audit/checkpoints/latest").await.status, 200);
    assert_eq!(viewer.get("/v1/audit/public-key").await.status, 200);
    let (_, member) = ws.member(&server, "member").await;
    let r = member.get("/v1/audit/checkpoints/latest").await;
    assert_eq!((r.status, r.code()), (403, "permission_denied"));
    assert_eq!(server.anon().get("/v1/audit/public-key").await.status, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_are_signed_on_schedule_only_when_the_head_moves() {
    let config = countersign::server::ServerConfig { checkpoint_interval: Duration::from_millis(50), ..Default::default() };
    let server = TestServer::start_with(config).await;
    let ws = server.workspace("acme").await;

    let head = |api: Api| async move { api.all_events().await.last().unwrap()["seq"].as_i64().unwrap() };
    let kept = |api: Api| async move { api.get("/v1/audit/checkpoints").await.body["checkpoints"].as_array().unwrap().clone() };
    let h = head(ws.owner.clone()).await;
    eventually("a scheduled checkpoint of the head", || {
        let api = ws.owner.clone();
        async move { kept(api).await.first().filter(|c| c["seq"] == h).cloned() }
    })
    .await;

    // Signing moved nothing: no event was written, and nothing is due until the log moves.
    assert_eq!(head(ws.owner.clone()).await, h);
    assert_eq!(countersign::server::checkpoints::sign_due(server.state()).await.unwrap(), 0);
    let before = kept(ws.owner.clone()).await.len();
    // Asking for the latest signs again but keeps nothing new for an unchanged head.
    assert_eq!(ws.owner.get("/v1/audit/checkpoints/latest").await.body["seq"], h);
    assert_eq!(kept(ws.owner.clone()).await.len(), before);

    // The log moves: the schedule signs the new head.
    ws.owner.put("/v1/killswitches/workspace", json!({"engaged": true, "reason": "drill"})).await;
    let h2 = head(ws.owner.clone()).await;
    assert!(h2 > h);
    eventually("a checkpoint of the new head", || {
        let api = ws.owner.clone();
        async move { kept(api).await.first().filter(|c| c["seq"] == h2).cloned() }
    })
    .await;
    // Every kept checkpoint verifies, newest first.
    let all = kept(ws.owner.clone()).await;
    let seqs: Vec<i64> = all.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    for c in all {
        let c: countersign::checkpoint::Checkpoint = serde_json::from_value(c).unwrap();
        c.verify(None).unwrap();
    }
    let types = event_types(&ws.owner).await;
    assert!(!types.iter().any(|t| t.contains("checkpoint")), "signing is not audited: {types:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_keys_are_private_files_made_at_init_and_by_serve() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let db = fresh_db();
    let mut init = bin_command(db.as_ref())
        .args(["admin", "init", "--workspace", "acme", "--email", "owner@acme.test", "--data-dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(init.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    }
    let out = init.wait_with_output().unwrap();
    assert!(out.status.success());
    let key = dir.join("signing.key");
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&key), 0o600);
    let public = countersign::checkpoint::Signer::from_file(&key).unwrap().public_key();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains(&public.public_key), "init prints the public key to pin: {printed}");

    // `serve` makes one if it is missing, the same way.
    std::fs::remove_file(&key).unwrap();
    /// Stops the server however the test ends.
    struct Serve(std::process::Child);
    impl Drop for Serve {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut serve = Serve(
        bin_command(db.as_ref())
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
            .arg(&dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = serve.0.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut tx = Some(tx);
        // Read to the end, so the server always has somewhere to log.
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(a) = v["addr"].as_str()
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), rx).await.expect("serve listens").expect("serve exited before listening");
    let _ = rustls::crypto::ring::default_provider().install_default();
    assert_eq!(Api::new(&format!("http://{addr}"), None).get("/healthz").await.status, 200);
    assert_eq!(mode(&key), 0o600);
    // It stops cleanly on SIGTERM.
    let _ = Command::new("kill").arg("-TERM").arg(serve.0.id().to_string()).status();
    let status = tokio::task::spawn_blocking(move || serve.0.wait().unwrap()).await.unwrap();
    assert!(status.success(), "{status:?}");

    // The harness's data directory holds one too.
    let server = TestServer::start().await;
    assert_eq!(mode(&server.dir.join("signing.key")), 0o600);
}

// ---------------------------------------------------------------------------------------
// Exports

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_jsonl_export_is_the_log_as_stored_and_verifies_offline() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.record_tool("crm.read", "read", "auto", false).await;
    submit(&ws.owner, "crm.read", json!({"q": "a,b", "quote": "\"x\"", "confidence": 0.25})).await;
    let r = ws.owner.get("/v1/audit/export?format=jsonl").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/jsonl");
    assert_eq!(
        r.headers["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"countersign-audit-acme-{}.jsonl\"", today())
    );
    assert_eq!(r.headers["x-countersign-export"], "complete");
    let stored = ws.owner.all_events().await;
    let exported: Vec<Value> = lines(&r.text).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(exported, stored, "the events exactly as stored");
    assert_eq!(head_seq(&r), stored.len() as i64);

    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "log.jsonl", &r.text);
    let (code, out) = verify_file(&file, None, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ok, {} events", stored.len())), "{out}");

    let csv = ws.owner.get("/v1/audit/export?format=csv").await;
    assert_eq!(csv.status, 200);
    assert!(csv.headers["content-type"].to_str().unwrap().starts_with("text/csv"));
    assert_eq!(
        csv.headers["content-disposition"].to_str().unwrap(),
        format!("attachment; filename=\"countersign-audit-acme-{}.csv\"", today())
    );
    let (header, rows) = csv_rows(&csv.text);
    assert_eq!(
        header,
        [
            "seq",
            "id",
            "ts",
            "workspace_id",
            "event_type",
            "actor_kind",
            "actor_id",
            "via",
            "resource",
            "payload_sha256",
            "outcome",
            "data",
            "prev_hash",
            "hash"
        ]
    );
    assert_eq!(rows.len(), stored.len());
    for (row, e) in rows.iter().zip(&stored) {
        assert_eq!(row["seq"], e["seq"].to_string());
        assert_eq!(row["hash"], e["hash"].as_str().unwrap());
        assert_eq!(serde_json::from_str::<Value>(&row["data"]).unwrap(), e["data"], "the data cell is the event's data as JSON");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_cells_are_quoted_and_formulas_neutralised_end_to_end() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let evil_name = r#"=HYPERLINK("http://evil.example/?a=1,b=2","click")"#;
    let r = ws
        .owner
        .post("/v1/members", json!({"email": "mallory@acme.test", "password": PASSWORD, "role": "viewer", "name": evil_name}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let reason = "=cmd|' /C calc'!A0, \"urgent\"\nsecond line";
    ws.record_tool("email.send", "write", "approve", false).await;
    let a = ws.owner.post("/v1/actions", json!({"tool": "email.send", "payload": {"to": "x@y.z"}, "reason": reason})).await;
    assert_eq!(a.body["status"], "pending_approval", "{}", a.body);

    // The audit CSV: the data cell round-trips to the event's JSON, commas and quotes too.
    let csv = ws.owner.get("/v1/audit/export?format=csv").await.text;
    let (_, rows) = csv_rows(&csv);
    let created = rows.iter().find(|r| r["event_type"] == "member.created" && r["data"].contains("mallory")).expect("member.created");
    let data: Value = serde_json::from_str(&created["data"]).unwrap();
    assert_eq!(data["name"], evil_name);
    let requested = rows.iter().find(|r| r["data"].contains("calc")).expect("an event with the reason");
    assert!(serde_json::from_str::<Value>(&requested["data"]).unwrap().to_string().contains("second line"));

    // Members: the name is quoted (it has commas and quotes) and neutralised with a `'`.
    let members = ws.owner.get("/v1/exports/members.csv").await;
    assert_eq!(members.status, 200);
    assert!(members.text.contains(r#""'=HYPERLINK(""http://evil.example/?a=1,b=2"",""click"")""#), "{}", members.text);
    let (header, rows) = csv_rows(&members.text);
    assert_eq!(header, ["id", "email", "name", "role", "status", "created_at", "updated_at"]);
    let mallory = rows.iter().find(|r| r["email"] == "mallory@acme.test").unwrap();
    assert_eq!(mallory["name"], format!("'{evil_name}"));

    // Approvals: the reason keeps its line break inside one quoted cell, neutralised.
    let approvals = ws.owner.get("/v1/exports/approvals.csv").await;
    assert_eq!(approvals.status, 200);
    let (_, rows) = csv_rows(&approvals.text);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["reason"], format!("'{reason}"));
    assert_eq!(rows[0]["state"], "pending");
    assert_eq!(rows[0]["id"], a.body["approval_id"].as_str().unwrap());

    // No cell of any export starts with a formula character.
    for text in [&csv, &members.text, &approvals.text] {
        for record in parse_csv(text) {
            for cell in record {
                assert!(!cell.starts_with(['=', '+', '-', '@']), "a live formula cell: {cell}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn since_until_and_types_filter_and_a_filtered_export_says_it_is_incomplete() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    server.clock.advance(chrono::Duration::hours(1));
    let t1 = countersign::clock::format_ts(server.clock.now());
    ws.owner.post("/v1/members", json!({"email": "a@acme.test", "password": PASSWORD, "role": "viewer"})).await;
    ws.owner.put("/v1/killswitches/workspace", json!({"engaged": true, "reason": "drill"})).await;
    server.clock.advance(chrono::Duration::hours(1));
    let t2 = countersign::clock::format_ts(server.clock.now());
    ws.owner.put("/v1/killswitches/workspace", json!({"engaged": false, "reason": "done"})).await;
    ws.owner.post("/v1/members", json!({"email": "b@acme.test", "password": PASSWORD, "role": "viewer"})).await;
    let all = ws.owner.all_events().await;
    let ts = |e: &Value| e["ts"].as_str().unwrap().to_string();
    let ty = |e: &Value| e["event_type"].as_str().unwrap().to_string();

    let get = |q: String| {
        let api = ws.owner.clone();
        async move {
            let r = api.get(&format!("/v1/audit/export?{q}")).await;
            assert_eq!(r.status, 200, "{q}: {}", r.text);
            let events: Vec<Value> = lines(&r.text).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
            (r, events)
        }
    };
    let expect = |f: &dyn Fn(&Value) -> bool| all.iter().filter(|e| f(e)).cloned().collect::<Vec<_>>();

    let (r, got) = get(format!("since={t1}")).await;
    assert_eq!(got, expect(&|e| ts(e) >= t1));
    assert_eq!(r.headers["x-countersign-export"], "filtered");
    let (_, got) = get(format!("until={t1}")).await;
    assert_eq!(got, expect(&|e| ts(e) < t1));
    assert!(!got.is_empty());
    let (_, got) = get(format!("since={t1}&until={t2}")).await;
    assert_eq!(got, expect(&|e| ts(e) >= t1 && ts(e) < t2));
    let (_, got) = get("types=member.*".into()).await;
    assert_eq!(got, expect(&|e| ty(e).starts_with("member.")));
    assert_eq!(got.len(), 3, "the owner and two members");
    let (_, got) = get("types=killswitch.engaged,session.created".into()).await;
    assert_eq!(got, expect(&|e| ty(e) == "killswitch.engaged" || ty(e) == "session.created"));
    let (_, got) = get(format!("types=killswitch.*&since={t2}&format=jsonl")).await;
    assert_eq!(got.iter().map(ty).collect::<Vec<_>>(), ["killswitch.lifted"]);
    let (_, got) = get("types=*".into()).await;
    assert_eq!(got, all);
    // An offset written with `+` (encoded, or turned into a space by the query string).
    let t1_plus =
        chrono::DateTime::parse_from_rfc3339(&t1).unwrap().with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap()).to_rfc3339();
    let (_, encoded) = get(format!("since={}", t1_plus.replace('+', "%2B"))).await;
    let (_, spaced) = get(format!("since={t1_plus}")).await;
    assert_eq!(encoded, expect(&|e| ts(e) >= t1));
    assert_eq!(spaced, encoded);
    // CSV filters the same way.
    let csv = ws.owner.get("/v1/audit/export?format=csv&types=member.*").await;
    assert_eq!(csv_rows(&csv.text).1.len(), 3);

    for bad in ["since=yesterday", "until=2026-13-01T00:00:00Z", "types=Member%20Created", "types=member.**", "format=xml", "limit=3"] {
        let r = ws.owner.get(&format!("/v1/audit/export?{bad}")).await;
        assert_eq!((r.status, r.code()), (400, "invalid_query"), "{bad}: {}", r.body);
    }
    let r = ws.owner.get(&format!("/v1/audit/export?since={t2}&until={t1}")).await;
    assert_eq!((r.status, r.code()), (400, "invalid_query"));

    // A filtered export is not a chain, and verifying it says so instead of pretending.
    let (r, _) = get(format!("since={t1}")).await;
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "filtered.jsonl", &r.text);
    let (code, out) = verify_file(&file, None, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("missing") && out.contains("filtered export"), "{out}");
    let first = all.iter().position(|e| ts(e) >= t1).unwrap();
    assert!(out.contains(&format!("BROKEN at seq 1: the events start at seq {}", first + 1)), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exports_need_audit_export() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let (_, viewer) = ws.member(&server, "viewer").await;
    let paths = [
        "/v1/audit/export",
        "/v1/audit/export?format=csv",
        "/v1/exports/members.csv",
        "/v1/exports/tokens.csv",
        "/v1/exports/tools.csv",
        "/v1/exports/approvals.csv",
    ];
    for p in paths {
        let r = viewer.get(p).await;
        assert_eq!((r.status, r.code()), (403, "permission_denied"), "{p}");
        assert!(r.body["error"]["message"].as_str().unwrap().contains("audit:export"));
        assert_eq!(server.anon().get(p).await.status, 401, "{p}");
        assert_eq!(ws.owner.get(p).await.status, 200, "{p}");
    }
    // The viewer still reads the log (audit:read).
    assert_eq!(viewer.get("/v1/audit").await.status, 200);
    // An agent token may carry audit:export (an export job, say).
    let (_, secret) = Workspace::token(&ws.owner, &["audit:export"], &["*"]).await;
    let agent = server.with_token(&secret);
    assert_eq!(agent.get("/v1/audit/export").await.status, 200);
    assert_eq!(agent.get("/v1/audit/checkpoints/latest").await.status, 403, "audit:export is not audit:read");
    // The OpenAPI document describes them.
    let doc = server.anon().get("/v1/openapi.json").await.body;
    for p in
        ["/v1/audit/export", "/v1/audit/checkpoints/latest", "/v1/audit/checkpoints", "/v1/audit/public-key", "/v1/exports/approvals.csv"]
    {
        assert!(doc["paths"][p]["get"].is_object(), "{p} in the OpenAPI document");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn data_exports_carry_no_secret() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    let (token_id, secret) = Workspace::token(&ws.owner, &["actions:submit"], &["crm.*"]).await;
    let header_secret = "Bearer sk_live_NEVER_EXPORT_THIS_123";
    ws.tool(
        "crm.update",
        json!({"kind": "write", "irreversible": false, "policy": "approve",
        "connector": {"type": "http", "url": "https://crm.example/hook", "headers": {"X-Team": "ops"}, "secret_headers": {"Authorization": header_secret}}}),
    )
    .await;
    let hash = countersign::secrets::storage_hash(&secret);
    let forbidden = [secret.as_str(), hash.as_str(), header_secret, "sk_live", "$argon2", PASSWORD];

    let mut all = String::new();
    for (path, what, ext) in [
        ("/v1/exports/members.csv", "members", "csv"),
        ("/v1/exports/tokens.csv", "tokens", "csv"),
        ("/v1/exports/tools.csv", "tools", "csv"),
        ("/v1/exports/approvals.csv", "approvals", "csv"),
        ("/v1/audit/export?format=csv", "audit", "csv"),
        ("/v1/audit/export?format=jsonl", "audit", "jsonl"),
    ] {
        let r = ws.owner.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.headers["content-disposition"].to_str().unwrap(),
            format!("attachment; filename=\"countersign-{what}-acme-{}.{ext}\"", today()),
            "{path}"
        );
        assert_eq!(r.headers["cache-control"], "no-store");
        for f in forbidden {
            assert!(!r.text.contains(f), "{path} contains a secret ({f})");
        }
        all.push_str(&r.text);
    }

    let (_, tokens) = csv_rows(&ws.owner.get("/v1/exports/tokens.csv").await.text);
    let t = tokens.iter().find(|t| t["id"] == token_id).expect("the token is listed");
    assert_eq!(t["scopes"], "actions:submit");
    assert_eq!(t["tools"], "crm.*");
    assert_eq!(t["state"], "active");
    assert!(t["hint"].starts_with("csa_") && secret.starts_with(t["hint"].trim_end_matches('…')), "only the public hint");
    let (_, tools) = csv_rows(&ws.owner.get("/v1/exports/tools.csv").await.text);
    let tool = tools.iter().find(|t| t["name"] == "crm.update").unwrap();
    assert_eq!(tool["secret_header_names"], "Authorization");
    assert_eq!(tool["headers"], "X-Team: ops");
    assert_eq!(tool["url"], "https://crm.example/hook");
    assert_eq!(tool["policy"], "approve");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_log_streams_out_whole() {
    let server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    fill(&server, &ws.id, 20_000).await;
    let total = ws.owner.all_events().await.len() as i64;
    assert!(total > 20_000);

    let resp = reqwest::Client::new()
        .get(format!("{}/v1/audit/export?format=jsonl", server.base))
        .bearer_auth(ws.owner.token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("content-length").is_none(), "streamed, not buffered");
    let text = resp.text().await.unwrap();
    let got = lines(&text);
    assert_eq!(got.len() as i64, total);
    let last: AuditEvent = serde_json::from_str(got.last().unwrap()).unwrap();
    assert_eq!(last.seq, total);
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "long.jsonl", &text);
    let (code, out) = verify_file(&file, None, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("ok, {total} events")), "{out}");

    let csv = ws.owner.get("/v1/audit/export?format=csv").await;
    assert_eq!(parse_csv(&csv.text).len() as i64, total + 1, "every event and the header");

    // Events appended while an export runs are not in it: it covers the head it started at.
    let r = ws.owner.get("/v1/audit/export?types=webhook.redelivered").await;
    assert_eq!(lines(&r.text).len(), 20_000);
    assert_eq!(head_seq(&r), total);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_exports_over_http_and_from_a_data_directory() {
    let mut server = TestServer::start().await;
    let ws = server.workspace("acme").await;
    ws.owner.post("/v1/members", json!({"email": "a@acme.test", "password": PASSWORD, "role": "viewer"})).await;
    let token = ws.owner.token.clone().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("members.csv");
    let (code, o, e) = cli(&[
        "audit",
        "export",
        "--server",
        &server.base,
        "--token",
        &token,
        "--format",
        "csv",
        "--types",
        "member.*",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{o}{e}");
    let (_, rows) = csv_rows(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(rows.iter().map(|r| r["event_type"].as_str()).collect::<Vec<_>>(), ["member.created", "member.created"]);
    assert!(!tmp.path().join("members.csv.partial").exists());

    // Refusals are explained, and leave no file behind.
    let (_, viewer) = ws.member(&server, "viewer").await;
    let denied = tmp.path().join("denied.jsonl");
    let (code, _, err) = cli(&[
        "audit",
        "export",
        "--server",
        &server.base,
        "--token",
        viewer.token.as_deref().unwrap(),
        "--output",
        denied.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("permission_denied") && err.contains("audit:export"), "{err}");
    assert!(!denied.exists());
    let (code, _, err) = cli(&["audit", "export", "--server", &server.base]);
    assert_eq!(code, 2, "{err}");
    // A bad filter is bad input whichever way the export goes: exit 2, nothing written.
    let (code, _, err) =
        cli(&["audit", "export", "--server", &server.base, "--token", &token, "--types", "Member.*", "--output", denied.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(!denied.exists());

    let whole = tmp.path().join("whole.jsonl");
    let (code, o, e) = cli(&["audit", "export", "--server", &server.base, "--token", &token, "--output", whole.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(verify_file(&whole, None, &[]).0, 0);

    // Offline, from the data directory, with the same filters.
    let events = ws.owner.all_events().await;
    server.stop().await;
    let offline = tmp.path().join("offline.jsonl");
    let dir = server.dir.to_str().unwrap().to_string();
    let (code, o, e) = server.cli(&["audit", "export", "--data-dir", &dir, "--workspace", "acme", "--output", offline.to_str().unwrap()]);
    assert_eq!(code, 0, "{o}{e}");
    assert_eq!(std::fs::read_to_string(&whole).unwrap(), std::fs::read_to_string(&offline).unwrap(), "the same bytes, online or offline");
    let (code, o, _) = server.cli(&["audit", "export", "--data-dir", &dir, "--workspace", "acme", "--types", "member.*"]);
    assert_eq!(code, 0);
    assert_eq!(lines(&o).len(), events.iter().filter(|e| e["event_type"].as_str().unwrap().starts_with("member.")).count());
    let (code, _, err) = server.cli(&["audit", "export", "--data-dir", &dir, "--workspace", "acme", "--since", "nope"]);
    assert_eq!(code, 2, "{err}");
}
