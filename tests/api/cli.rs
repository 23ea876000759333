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

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let child = bin_command(db.as_ref())
        .args(["serve", "--data-dir", dir, "--listen", &listen, "--log-format", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run serve");
    let mut served = Served(Some(child));
    let base = format!("http://{listen}");
    let http = http();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not come up on {listen}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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
