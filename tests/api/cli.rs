//! The real binary end to end: `admin init` (password on standard input), `serve` on a
//! free port, sign-in over HTTP, and a clean stop on SIGTERM.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

fn init(db: Option<&TestDb>, dir: &str, workspace: &str, email: &str, stdin: &str) -> (i32, String, String) {
    let mut child = bin_command(db)
        .args(["admin", "init", "--data-dir", dir, "--workspace", workspace, "--email", email])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run admin init");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Kills the server if the test fails before stopping it.
struct Served(Option<Child>);

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_init_then_serve_then_sign_in_then_a_clean_stop() {
    let tmp = tempfile::tempdir().unwrap();
    // On PostgreSQL the store is a fresh database (migrated, as `admin migrate` leaves it);
    // the data directory then holds only the master key.
    let db = fresh_db();
    let dir = tmp.path().join("data");
    let dir = dir.to_str().unwrap();
    let (code, out, err) = init(db.as_ref(), dir, "acme", "ops@acme.test", &format!("{PASSWORD}\n"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Created workspace `acme`") && out.contains("countersign serve"), "{out}");
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    // Again on the same directory: another workspace, its own owner.
    let (code, out, err) = init(db.as_ref(), dir, "globex", "ops@globex.test", &format!("{PASSWORD}\n"));
    assert_eq!(code, 0, "{out}{err}");
    // The same name twice is refused; so is a missing or weak password.
    let (code, _, err) = init(db.as_ref(), dir, "acme", "other@acme.test", &format!("{PASSWORD}\n"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(init(db.as_ref(), dir, "initech", "ops@initech.test", "").0, 2);
    assert_eq!(init(db.as_ref(), dir, "initech", "ops@initech.test", "short\n").0, 2);
    // A name that reads as a workspace id would name another workspace at sign-in.
    let (code, _, err) = init(db.as_ref(), dir, "ORG_01ABC", "ops@initech.test", &format!("{PASSWORD}\n"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`org_`"), "{err}");

    // Its log is kept (piped) and read after it stops.
    let (mut served, base) = serve(db.as_ref(), dir, Stdio::piped()).await;
    let http = http();
    for (email, ws) in [("ops@acme.test", "acme"), ("ops@globex.test", "globex")] {
        let r = http.post(format!("{base}/v1/sessions")).json(&json!({"email": email, "password": PASSWORD})).send().await.unwrap();
        assert_eq!(r.status(), 201);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["workspace"]["name"], ws);
        assert_eq!(body["member"]["role"], "owner");
        let token = body["token"].as_str().unwrap();
        let v: serde_json::Value =
            http.get(format!("{base}/v1/audit/verify")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["events"], 3, "workspace, owner, this sign-in: {v}");
    }

    // SIGTERM: it stops on its own, cleanly.
    let mut child = served.0.take().unwrap();
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(!log.contains(PASSWORD), "the log holds a password");
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("--log-format json wrote a non-JSON line ({e}): {line}"));
    }
    // And its data verifies afterwards.
    let (code, out, err) = {
        let o = bin_command(db.as_ref()).args(["audit", "verify", "--data-dir", dir]).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().filter(|l| l.contains(": ok, ")).count(), 2, "{out}");
}

/// Signs in as `email` (with [`PASSWORD`]); returns the session token.
async fn sign_in(base: &str, email: &str) -> String {
    let r = http().post(format!("{base}/v1/sessions")).json(&json!({"email": email, "password": PASSWORD})).send().await.unwrap();
    assert_eq!(r.status(), 201, "signing in as {email}");
    r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_string()
}

/// Starts `serve` on a free port, its log going to `stderr`, and waits until it answers.
async fn serve(db: Option<&TestDb>, dir: &str, stderr: Stdio) -> (Served, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let child = bin_command(db)
        .args(["serve", "--data-dir", dir, "--listen", &listen, "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("run serve");
    let served = Served(Some(child));
    let base = format!("http://{listen}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http().get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            return (served, base);
        }
        assert!(Instant::now() < deadline, "the server did not come up on {listen}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What a crash must never take back: every decision answered `201` is still there after
/// the process is killed (SIGKILL, no chance to clean up) in the middle of a stream of
/// them, and the chain still verifies. (On SQLite this also reads back a log the server
/// wrote ahead of use, and batches whose syncs overlapped the next batch's work.)
#[tokio::test(flavor = "multi_thread")]
async fn every_acknowledged_decision_survives_a_kill_mid_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_db();
    let dir = tmp.path().join("data");
    let dir = dir.to_str().unwrap();
    let (code, out, err) = init(db.as_ref(), dir, "acme", "ops@acme.test", &format!("{PASSWORD}\n"));
    assert_eq!(code, 0, "{out}{err}");
    let (mut served, base) = serve(db.as_ref(), dir, Stdio::null()).await;
    let http = http();
    let owner = sign_in(&base, "ops@acme.test").await;
    let tool = json!({"kind": "read", "irreversible": false, "policy": "auto", "connector": {"type": "record"}});
    let r = http.put(format!("{base}/v1/tools/crm.read")).bearer_auth(&owner).json(&tool).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let t: serde_json::Value = http
        .post(format!("{base}/v1/tokens"))
        .bearer_auth(&owner)
        .json(&json!({"name": "agent", "scopes": ["actions:submit"], "tools": ["*"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent = t["token"].as_str().unwrap().to_string();

    // 16 agents submit as fast as they can; once 300 decisions are acknowledged, the
    // server is killed while the others are still on their way.
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (enough_tx, enough_rx) = tokio::sync::watch::channel(false);
    let agents: Vec<_> = (0..16)
        .map(|a| {
            let (http, base, agent, acknowledged, enough_tx) =
                (http.clone(), base.clone(), agent.clone(), acknowledged.clone(), enough_tx.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let body = json!({"tool": "crm.read", "payload": {"agent": a, "call": i}});
                    let Ok(r) = http.post(format!("{base}/v1/actions")).bearer_auth(&agent).json(&body).send().await else { return };
                    let Ok(v) = r.json::<serde_json::Value>().await else { return };
                    assert_eq!(v["status"], "executed", "{v}");
                    let mut acked = acknowledged.lock().unwrap();
                    acked.push(v["id"].as_str().unwrap().to_string());
                    if acked.len() >= 300 {
                        let _ = enough_tx.send(true);
                    }
                }
            })
        })
        .collect();
    drop(enough_tx);
    let mut enough = enough_rx;
    enough.wait_for(|e| *e).await.expect("300 decisions acknowledged");
    let mut child = served.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    for a in agents {
        a.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 300);

    // Back up on the same data: every acknowledged decision is there, executed.
    let (mut served, base) = serve(db.as_ref(), dir, Stdio::null()).await;
    for id in &acknowledged {
        let r = http.get(format!("{base}/v1/actions/{id}")).bearer_auth(&owner).send().await.unwrap();
        assert_eq!(r.status(), 200, "acknowledged {id} was lost in the crash");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["status"], "executed", "{v}");
    }
    let v: serde_json::Value = http.get(format!("{base}/v1/audit/verify")).bearer_auth(&owner).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // Two events per decision at least, so the chain reaches past all of them.
    assert!(v["events"].as_i64().unwrap() >= 2 * acknowledged.len() as i64, "{v}");
    let mut child = served.0.take().unwrap();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait().unwrap();
    let o = bin_command(db.as_ref()).args(["audit", "verify", "--data-dir", dir]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

/// An operator rotates the checkpoint signing key: checkpoints signed before verify with
/// the retired public key the command keeps, the restarted server signs with the new key,
/// and nothing can sign with the old one any more.
#[tokio::test(flavor = "multi_thread")]
async fn the_signing_key_is_rotated_and_old_checkpoints_still_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_db();
    let dir = tmp.path().join("data");
    let dir = dir.to_str().unwrap();
    assert_eq!(init(db.as_ref(), dir, "acme", "ops@acme.test", &format!("{PASSWORD}\n")).0, 0);
    let key_file = tmp.path().join("data/signing.key");
    let run = |args: &[&str]| {
        let o = bin_command(db.as_ref()).args(args).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // A checkpoint signed by the first key, kept as a file.
    let checkpoint = |base: String| async move {
        let http = http();
        let token = sign_in(&base, "ops@acme.test").await;
        let get = |path: &str| http.get(format!("{base}{path}")).bearer_auth(&token).send();
        let c: serde_json::Value = get("/v1/audit/checkpoints/latest").await.unwrap().json().await.unwrap();
        let k: serde_json::Value = get("/v1/audit/public-key").await.unwrap().json().await.unwrap();
        (c, k)
    };
    let (served, base) = serve(db.as_ref(), dir, Stdio::null()).await;
    let (before, old_key) = checkpoint(base).await;
    assert_eq!(before["key_id"], old_key["key_id"]);
    drop(served);
    let before_file = tmp.path().join("before.json");
    std::fs::write(&before_file, before.to_string()).unwrap();

    let (code, out, err) = run(&["admin", "rotate-signing-key", "--data-dir", dir]);
    assert_eq!(code, Some(0), "{out}{err}");
    let old_id = old_key["key_id"].as_str().unwrap();
    let old_public = old_key["public_key"].as_str().unwrap();
    assert!(out.contains(&format!("Retired signing key {old_id}")) && out.contains(old_public), "{out}");
    let kept = tmp.path().join(format!("data/signing-key-{old_id}.pub"));
    assert_eq!(std::fs::read_to_string(&kept).unwrap().trim(), old_public, "the retired public key is kept");
    assert!(!tmp.path().join("data/signing.key.new").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let new_key = countersign::checkpoint::Signer::from_file(&key_file).unwrap().public_key();
    assert_ne!(new_key.key_id, old_id);
    assert!(out.contains(&new_key.key_id) && out.contains(&new_key.public_key), "{out}");

    // The restarted server signs with the new key; the old checkpoint verifies with the
    // retired key, and not with the new one.
    let (served, base) = serve(db.as_ref(), dir, Stdio::null()).await;
    let (after, served_key) = checkpoint(base).await;
    drop(served);
    assert_eq!((after["key_id"].as_str(), served_key["key_id"].as_str()), (Some(new_key.key_id.as_str()), Some(new_key.key_id.as_str())));
    let before_file = before_file.to_str().unwrap();
    let (code, out, err) = run(&["audit", "verify", "--data-dir", dir, "--checkpoint", before_file, "--public-key", old_public]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = run(&["audit", "verify", "--data-dir", dir, "--checkpoint", before_file, "--public-key", &new_key.public_key]);
    assert_ne!(code, Some(0), "an old checkpoint verified with the new key: {out}{err}");

    // Nothing to rotate where there is no key.
    let (code, _, err) = run(&["admin", "rotate-signing-key", "--signing-key-file", tmp.path().join("none.key").to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("there is no signing key at"), "{err}");
}

/// `countersign hash` with `input` on standard input and `args`: (exit code, stdout, stderr).
fn hash_cli(args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = bin_command(None)
        .arg("hash")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run countersign hash");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn hash_prints_what_an_approval_is_pinned_to_and_refuses_what_it_cannot_pin() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payload.json");
    std::fs::write(&file, "{ \"b\": 1,\n  \"a\": [1.50, \"\\u00e9\"] }").unwrap();
    let file = file.to_str().unwrap();
    // Written out by hand: keys sorted, 1.50 as 1.5, the escape as the character itself.
    let canonical = "{\"a\":[1.5,\"\u{e9}\"],\"b\":1}";
    let sha = hex::encode(sha2::Sha256::digest(canonical.as_bytes()));

    let (code, out, err) = hash_cli(&[file], b"");
    assert_eq!((code, String::from_utf8(out).unwrap()), (0, format!("{sha}\n")), "{err}");
    let (code, out, _) = hash_cli(&["-"], std::fs::read(file).unwrap().as_slice());
    assert_eq!((code, String::from_utf8(out).unwrap()), (0, format!("{sha}\n")), "`-` is standard input");
    let (_, out, _) = hash_cli(&["--canonical", file], b"");
    assert_eq!(out, canonical.as_bytes(), "exactly the canonical form, no newline");
    let (_, out, _) = hash_cli(&["--both", file], b"");
    assert_eq!(String::from_utf8(out).unwrap(), format!("{canonical}\n{sha}\n"));

    // Refusals: exit 2 with what is wrong and where, and nothing on standard output.
    for (input, says) in [
        (&b"{\"a\": }"[..], "line 1, column"),
        (b"{\"account\": 9007199254740993}", "send it as a string"),
        (b"{\"account\": 9007199254740993.0}", "9007199254740993.0"),
        (b"[1e400]", "beyond the range"),
        (b"{\"to\": \"a\", \"to\": \"b\"}", "appears twice"),
        (b"", "EOF"),
    ] {
        let (code, out, err) = hash_cli(&[], input);
        assert_eq!(code, 2, "{}: {err}", String::from_utf8_lossy(input));
        assert!(out.is_empty(), "no hash for what cannot be pinned");
        assert!(err.contains("standard input") && err.contains(says), "{}: {err}", String::from_utf8_lossy(input));
    }
    let (code, _, err) = hash_cli(&[dir.path().join("missing.json").to_str().unwrap()], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot read") && err.contains("missing.json"), "{err}");
}

/// `countersign login` / `logout` with their own config directory: (exit code, stdout, stderr).
fn session_cli(config: &std::path::Path, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = bin_command(None)
        .args(args)
        .env("COUNTERSIGN_CONFIG_DIR", config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run countersign");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_keeps_a_session_it_could_not_end_and_login_sends_no_empty_password() {
    let server = TestServer::start().await;
    let ws = server.workspace("cli").await;
    let config = tempfile::tempdir().unwrap();
    let session = config.path().join("session.json");
    let login = ["login", "--server", &server.base, "--email", "owner@cli.test"];
    // An empty password is not sent: it would count as a failed sign-in.
    let (code, _, err) = session_cli(config.path(), &login, "\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no password was given"), "{err}");
    assert!(!ws.owner.all_events().await.iter().any(|e| e["event_type"] == "session.failed"));
    let (code, out, err) = session_cli(config.path(), &login, &format!("{PASSWORD}\n"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(session.exists());

    // The server unreachable: the session cannot be ended, so it is kept, and said so.
    let mut stored: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
    stored["server"] = json!("http://127.0.0.1:9");
    std::fs::write(&session, stored.to_string()).unwrap();
    let (code, _, err) = session_cli(config.path(), &["logout"], "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("still valid there") && err.contains("--local"), "{err}");
    assert!(session.exists(), "the session was forgotten while still valid");
    // --local forgets it anyway, and says it lives on.
    let (code, out, _) = session_cli(config.path(), &["logout", "--local"], "");
    assert_eq!(code, 0);
    assert!(out.contains("stays valid there"), "{out}");
    assert!(!session.exists());

    // Reachable: ended on the server, then removed.
    session_cli(config.path(), &login, &format!("{PASSWORD}\n"));
    let token = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&session).unwrap()).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, _) = session_cli(config.path(), &["logout"], "");
    assert_eq!(code, 0);
    assert!(out.contains("Signed out"), "{out}");
    server.with_token(&token).get("/v1/me").await.assert_error(401, "session_revoked");
}

fn reset_password(db: Option<&TestDb>, dir: &str, email: &str, stdin: &str) -> (i32, String, String) {
    let mut child = bin_command(db)
        .args(["admin", "reset-password", "--data-dir", dir, "--email", email])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run admin reset-password");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// SIGTERM, and the wait for the clean stop.
fn stop(served: &mut Served) {
    let mut child = served.0.take().unwrap();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_owner_locked_out_or_forgetful_gets_a_new_password_from_the_admin_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let db = fresh_db();
    let dir = tmp.path().join("data");
    let dir = dir.to_str().unwrap();
    assert_eq!(init(db.as_ref(), dir, "acme", "ops@acme.test", &format!("{PASSWORD}\n")).0, 0);
    let (mut served, base) = serve(db.as_ref(), dir, Stdio::null()).await;
    let old_session = sign_in(&base, "ops@acme.test").await;
    // Locked out: five wrong passwords.
    let http = http();
    let attempt =
        |password: &str| http.post(format!("{base}/v1/sessions")).json(&json!({"email": "ops@acme.test", "password": password})).send();
    for _ in 0..5 {
        assert_eq!(attempt("not the password").await.unwrap().status(), 401);
    }
    assert_eq!(attempt(PASSWORD).await.unwrap().status(), 429);

    let fresh = "a fresh passphrase, long enough";
    if db.is_none() {
        // Beside a running server on the embedded store: refused, and nothing changed.
        let (code, _, err) = reset_password(None, dir, "ops@acme.test", &format!("{fresh}\n"));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("a Countersign server is running") && err.contains("stop it"), "{err}");
        // Nor does a second server start on the same store.
        let (mut second, _) = {
            let child = bin_command(None)
                .args(["serve", "--data-dir", dir, "--listen", "127.0.0.1:0"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (Served(Some(child)), ())
        };
        let out = second.0.take().unwrap().wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("a Countersign server is running"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stop(&mut served);
    }
    let (code, out, err) = reset_password(db.as_ref(), dir, "OPS@acme.test", "short\n");
    assert_eq!(code, 2, "a weak password is refused: {out}{err}");
    let (code, out, err) = reset_password(db.as_ref(), dir, "nobody@acme.test", &format!("{fresh}\n"));
    assert_eq!(code, 1, "{out}{err}");
    let (code, out, err) = reset_password(db.as_ref(), dir, "ops@acme.test", &format!("{fresh}\n"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 session(s) ended") && !out.contains(fresh), "{out}");

    let base = if db.is_none() { serve(None, dir, Stdio::null()).await } else { (served, base) };
    let (_served, base) = base;
    // The lockout is lifted, the old password is gone, the new one works, and the session
    // signed in before the reset is over.
    let r = http.post(format!("{base}/v1/sessions")).json(&json!({"email": "ops@acme.test", "password": fresh})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let token = r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let old = http.get(format!("{base}/v1/me")).bearer_auth(&old_session).send().await.unwrap();
    assert_eq!(old.status(), 401);
    let events: serde_json::Value =
        http.get(format!("{base}/v1/audit?limit=100")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let reset = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "member.password_reset")
        .expect("the reset is audited")
        .clone();
    assert_eq!((reset["actor"]["kind"].as_str(), reset["via"].as_str()), (Some("system"), Some("system")), "{reset}");
    assert!(!reset.to_string().contains("argon2"), "no hash in the log: {reset}");
}
