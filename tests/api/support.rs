//! The test harness: a real server on 127.0.0.1, a real store, real HTTP.
//!
//! The server runs in the test's process (it is the same code `countersign serve` runs),
//! so a test can restart it on the same data directory and move its clock.
//!
//! The store is SQLite (a file in the test's data directory) unless
//! `COUNTERSIGN_TEST_STORE=postgres`: then each test gets its own database on a throwaway
//! PostgreSQL cluster the harness starts itself (see `cluster.rs`), and the server connects
//! as the server's role, with row-level security in force, exactly as `serve
//! --database-url` does. The whole suite runs either way.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use countersign::clock::Clock;
use countersign::permissions::BuiltinRole;
use countersign::secrets;
use countersign::server::{self, AppState, Running, ServerConfig};
use countersign::store::db::{Conn, Connector, DbError, Dialect, Row, Value as DbValue};
use countersign::store::postgres::{self as pg, PgConnector};
use countersign::store::sqlite::{self, SqliteConnector};
use countersign::store::{NewMember, SqlStore, Store, Workspaces};

pub use crate::cluster::{Cluster, TestDb};

/// Which store the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// `COUNTERSIGN_TEST_STORE=postgres` runs the suite on PostgreSQL; anything else, SQLite.
pub fn store_kind() -> StoreKind {
    match std::env::var("COUNTERSIGN_TEST_STORE").as_deref() {
        Ok("postgres") | Ok("postgresql") | Ok("pg") => StoreKind::Postgres,
        _ => StoreKind::Sqlite,
    }
}

pub fn on_postgres() -> bool {
    store_kind() == StoreKind::Postgres
}

/// A fresh, migrated database for a test on PostgreSQL; `None` on SQLite.
pub fn fresh_db() -> Option<TestDb> {
    on_postgres().then(|| Cluster::get().fresh())
}

/// Environment for the real binary: where its store is (nothing to add on SQLite, whose
/// store is the data directory).
pub fn bin_env(db: Option<&TestDb>) -> Vec<(&'static str, String)> {
    db.map(|d| vec![("COUNTERSIGN_DATABASE_URL", d.server_url.clone())]).unwrap_or_default()
}

/// The real binary, with no store settings from the calling environment except `db`'s.
pub fn bin_command(db: Option<&TestDb>) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"));
    c.env_remove("COUNTERSIGN_DATA_DIR").env_remove("COUNTERSIGN_DATABASE_URL").env_remove("COUNTERSIGN_TOKEN").envs(bin_env(db));
    c
}
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};

pub const PASSWORD: &str = "correct horse battery staple";

/// The argon2 hash of [`PASSWORD`], computed once: seeding many accounts stays fast.
pub fn password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| secrets::hash_password(PASSWORD)).clone()
}

thread_local! {
    /// The address the next boot on this thread binds, for restarts on the same port.
    static BIND_AT: std::cell::Cell<Option<std::net::SocketAddr>> = const { std::cell::Cell::new(None) };
}

/// A server under test.
pub struct TestServer {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub base: String,
    pub clock: Clock,
    pub config: ServerConfig,
    pub store: Arc<SqlStore>,
    /// The test's PostgreSQL database, when the suite runs on PostgreSQL.
    pub db: Option<TestDb>,
    running: Option<Running>,
}

impl TestServer {
    /// A fresh data directory and a server on it.
    pub async fn start() -> TestServer {
        Self::start_with(ServerConfig::default()).await
    }

    pub async fn start_with(config: ServerConfig) -> TestServer {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Self::boot(&dir, fresh_db(), Clock::system(), config).await;
        s._tmp = Some(tmp);
        s
    }

    /// Another replica on the same store (PostgreSQL) with its own port, clock and caches:
    /// what a second `countersign serve` behind a load balancer is.
    pub async fn replica(&self) -> TestServer {
        let db = self.db.clone().expect("replicas share a PostgreSQL database");
        Self::boot(&self.dir.clone(), Some(db), self.clock.clone(), self.config.clone()).await
    }

    /// A server whose store fails statements while one of the returned switches is on.
    pub async fn start_faulty() -> (TestServer, Faults) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let faults = Faults::default();
        let mut s = Self::boot_with(tmp.path(), fresh_db(), Clock::system(), ServerConfig::default(), Some(faults.clone())).await;
        s._tmp = Some(tmp);
        (s, faults)
    }

    async fn boot(dir: &Path, db: Option<TestDb>, clock: Clock, config: ServerConfig) -> TestServer {
        Self::boot_with(dir, db, clock, config, None).await
    }

    async fn boot_with(dir: &Path, db: Option<TestDb>, clock: Clock, config: ServerConfig, fault: Option<Faults>) -> TestServer {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if std::env::var_os("RUST_LOG").is_some() {
            // `RUST_LOG=… cargo test -- --nocapture` shows the servers' logs.
            let _ =
                tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_test_writer().try_init();
        }
        let connector: Box<dyn Connector> = match &db {
            None => Box::new(SqliteConnector::new(dir.join("countersign.db"))),
            Some(d) => Box::new(PgConnector::new(&d.server_url).expect("database URL")),
        };
        let connector: Box<dyn Connector> = match fault {
            None => connector,
            Some(faults) => Box::new(Faulty { inner: connector, faults }),
        };
        let open_clock = clock.clone();
        // Opened on a thread of its own: the PostgreSQL client blocks, which the async
        // runtime must not. As `serve` does: SQLite migrates itself; PostgreSQL must be
        // current and is served only as a role row-level security fences.
        let store = std::thread::spawn(move || match connector.dialect() {
            Dialect::Sqlite => SqlStore::open(&*connector, sqlite::MIGRATIONS, open_clock),
            Dialect::Postgres => {
                let mut conn = connector.open_writer().expect("connect as the server");
                pg::check_server_role(&mut *conn).expect("the server's role is fenced by row-level security");
                drop(conn);
                SqlStore::open_migrated(&*connector, pg::MIGRATIONS, open_clock)
            }
        })
        .join()
        .expect("open store")
        .expect("open store");
        let key_file = dir.join("master.key");
        if !key_file.exists() {
            countersign::vault::generate_key_file(&key_file).expect("master key");
        }
        let keys = countersign::vault::MasterKeys::from_file(&key_file).expect("read master key");
        let (signer, _) = countersign::checkpoint::Signer::load_or_create(&dir.join("signing.key")).expect("signing key");
        let state = AppState::with_signer(store.clone() as Arc<dyn Store>, clock.clone(), config.clone(), keys, signer);
        // A restart takes the same port when it can, so clients can reconnect to it.
        let listener = match BIND_AT.with(|b| b.take()) {
            Some(addr) => tokio::net::TcpListener::bind(addr).await.expect("bind the previous port"),
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        };
        let running = server::start(listener, state).await.expect("start server");
        let base = format!("http://{}", running.addr);
        TestServer { dir: dir.to_path_buf(), _tmp: None, base, clock, config, store, db, running: Some(running) }
    }

    /// Stops the server (finishing in-flight requests) and starts a new one on the same
    /// data directory, on a new port.
    /// Like [`TestServer::restart`], on the same address: what a client that keeps its
    /// server URL sees when a server goes away and comes back.
    pub async fn restart_same_port(&mut self) {
        let addr: std::net::SocketAddr = self.base.trim_start_matches("http://").parse().expect("base address");
        self.stop().await;
        BIND_AT.with(|b| b.set(Some(addr)));
        let fresh = Self::boot(&self.dir.clone(), self.db.clone(), self.clock.clone(), self.config.clone()).await;
        self.base = fresh.base.clone();
        self.store = fresh.store.clone();
        self.running = Some(fresh.into_running());
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        let fresh = Self::boot(&self.dir.clone(), self.db.clone(), self.clock.clone(), self.config.clone()).await;
        self.base = fresh.base.clone();
        self.store = fresh.store.clone();
        self.running = Some(fresh.into_running());
    }

    fn into_running(mut self) -> Running {
        self.running.take().expect("running")
    }

    /// Stops the server as a crash would, as far as its store can tell
    /// (`server::Running::abort`). [`TestServer::restart`] then starts a new one.
    pub async fn crash(&mut self) {
        if let Some(r) = self.running.take() {
            r.abort().await;
        }
    }

    /// Polls `GET path` as `api` until `done` holds of the body, for up to ten seconds
    /// (what background work — a sweeper, a connector call — is given to finish).
    pub async fn eventually(api: &Api, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let r = api.get(path).await;
            if done(&r.body) {
                return r.body;
            }
            assert!(std::time::Instant::now() < deadline, "{what} did not happen: {}", r.body);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.expect("clean shutdown");
        }
    }

    /// The running server's state (its store, signer, configuration).
    pub fn state(&self) -> &AppState {
        &self.running.as_ref().expect("the server is running").state
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join("countersign.db")
    }

    /// A client with no credentials.
    pub fn anon(&self) -> Api {
        Api { http: http(), base: self.base.clone(), token: None }
    }

    /// Creates a workspace with its owner (what `admin init` does) and signs the owner in.
    pub async fn workspace(&self, name: &str) -> Workspace {
        let email = format!("owner@{name}.test");
        let (ws, owner) = self
            .store
            .create_workspace(
                name,
                NewMember {
                    email: email.clone(),
                    name: "Owner".into(),
                    role: BuiltinRole::Owner.name().into(),
                    password_hash: password_hash(),
                },
            )
            .await
            .expect("create workspace");
        let owner_api = self.sign_in(&email).await;
        Workspace { id: ws.id, name: name.to_string(), owner_id: owner.id, owner: owner_api }
    }

    /// Signs in by e-mail with [`PASSWORD`].
    pub async fn sign_in(&self, email: &str) -> Api {
        let r = self.anon().post("/v1/sessions", json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(r.status, 201, "sign in {email}: {}", r.body);
        self.with_token(r.body["token"].as_str().unwrap())
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api { http: http(), base: self.base.clone(), token: Some(token.to_string()) }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.state.shutdown.cancel();
        }
    }
}

/// An HTTP client (with the TLS crypto provider reqwest needs installed once).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Idle pooled connections are dropped well before any test server closes them (the
    // shortest header deadline a test sets is 500 ms): a connection is never reused in the
    // instant the server closes it.
    reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .pool_idle_timeout(std::time::Duration::from_millis(200))
        .build()
        .expect("http client")
}

/// A workspace made for a test, with its owner signed in.
pub struct Workspace {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub owner: Api,
}

impl Workspace {
    /// Adds a member with a role through the API (as the owner) and signs them in.
    pub async fn member(&self, server: &TestServer, role: &str) -> (String, Api) {
        let email = format!("{role}-{}@{}.test", countersign::ids::new_id(countersign::ids::IdKind::User).to_lowercase(), self.name);
        let r = self.owner.post("/v1/members", json!({"email": email, "password": PASSWORD, "role": role})).await;
        assert_eq!(r.status, 201, "create {role}: {}", r.body);
        let id = r.body["id"].as_str().unwrap().to_string();
        (id, server.sign_in(&email).await)
    }

    /// Creates an agent token owned by `api`'s member.
    pub async fn token(api: &Api, scopes: &[&str], tools: &[&str]) -> (String, String) {
        let r = api.post("/v1/tokens", json!({"name": "test agent", "scopes": scopes, "tools": tools})).await;
        assert_eq!(r.status, 201, "create token: {}", r.body);
        (r.body["id"].as_str().unwrap().to_string(), r.body["token"].as_str().unwrap().to_string())
    }
}

/// A client for the API, optionally with a bearer token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
}

/// A response: status, parsed JSON body (Null when empty) and headers.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// The error code, for error responses.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

impl Api {
    /// A client for any base URL.
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api { http: http(), base: base.to_string(), token: token.map(str::to_string) }
    }

    pub fn as_token(&self, token: &str) -> Api {
        Api { http: self.http.clone(), base: self.base.clone(), token: Some(token.to_string()) }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Resp {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp { status, body, text, headers }
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.send(reqwest::Method::GET, path, None, &[]).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.send(reqwest::Method::DELETE, path, None, &[]).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::POST, path, Some(body.to_string().into_bytes()), &[]).await
    }
    pub async fn post_empty(&self, path: &str) -> Resp {
        self.send(reqwest::Method::POST, path, None, &[]).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::PATCH, path, Some(body.to_string().into_bytes()), &[]).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::PUT, path, Some(body.to_string().into_bytes()), &[]).await
    }
    pub async fn raw(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        self.send(method.parse().unwrap(), path, Some(body.to_vec()), &[]).await
    }

    /// Every audit event of the caller's workspace.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let r = self.get(&format!("/v1/audit?after_seq={after}&limit=1000")).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let events = r.body["events"].as_array().unwrap().clone();
            if events.is_empty() {
                return out;
            }
            after = events.last().unwrap()["seq"].as_i64().unwrap();
            out.extend(events);
        }
    }
}

/// A connector whose connections fail every statement while `fail` is set: the store
/// "cannot be read or written", for the fail-closed tests.
struct Faulty {
    inner: Box<dyn Connector>,
    faults: Faults,
}

/// The switches of a [`TestServer::start_faulty`] store.
#[derive(Clone, Default)]
pub struct Faults {
    /// Every statement on every connection fails: the store can be neither read nor written.
    pub all: Arc<AtomicBool>,
    /// Every statement of the writer fails, reads succeed: a disk that is full, say.
    pub writes: Arc<AtomicBool>,
}

struct FaultyConn {
    inner: Box<dyn Conn>,
    faults: Faults,
    writer: bool,
}

impl FaultyConn {
    fn check(&self) -> Result<(), DbError> {
        let failing = self.faults.all.load(Ordering::SeqCst) || (self.writer && self.faults.writes.load(Ordering::SeqCst));
        if failing { Err(DbError::Unavailable("injected failure: disk I/O error".into())) } else { Ok(()) }
    }
}

impl Conn for FaultyConn {
    fn execute(&mut self, sql: &str, params: &[DbValue]) -> Result<u64, DbError> {
        self.check()?;
        self.inner.execute(sql, params)
    }
    fn query(&mut self, sql: &str, params: &[DbValue]) -> Result<Vec<Row>, DbError> {
        self.check()?;
        self.inner.query(sql, params)
    }
    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        // Rolling back must still work, or a failed batch would leave its lock behind.
        if !sql.starts_with("ROLLBACK") {
            self.check()?;
        }
        self.inner.batch(sql)
    }
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }
    fn set_workspace(&mut self, workspace_id: &str) -> Result<(), DbError> {
        self.check()?;
        self.inner.set_workspace(workspace_id)
    }
    fn set_all_workspaces(&mut self) -> Result<(), DbError> {
        self.check()?;
        self.inner.set_all_workspaces()
    }
}

impl Connector for Faulty {
    fn open_writer(&self) -> Result<Box<dyn Conn>, DbError> {
        Ok(Box::new(FaultyConn { inner: self.inner.open_writer()?, faults: self.faults.clone(), writer: true }))
    }
    fn open_reader(&self) -> Result<Box<dyn Conn>, DbError> {
        Ok(Box::new(FaultyConn { inner: self.inner.open_reader()?, faults: self.faults.clone(), writer: false }))
    }
    fn readers(&self) -> usize {
        self.inner.readers()
    }
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }
    fn notifications(&self) -> Option<Box<dyn countersign::store::db::Notifications>> {
        self.inner.notifications()
    }
}

impl Workspace {
    /// Creates or replaces a tool as the owner.
    pub async fn tool(&self, name: &str, spec: Value) -> Value {
        let r = self.owner.put(&format!("/v1/tools/{name}"), spec).await;
        assert!(r.status == 201 || r.status == 200, "put tool {name}: {}", r.body);
        r.body
    }

    /// A `record` tool with the given kind, policy and irreversibility.
    pub async fn record_tool(&self, name: &str, kind: &str, policy: &str, irreversible: bool) -> Value {
        self.tool(name, json!({"kind": kind, "irreversible": irreversible, "policy": policy, "connector": {"type": "record"}})).await
    }

    /// Turns agent writes on or off.
    pub async fn agent_writes(&self, on: bool) {
        let r = self.owner.patch("/v1/settings", json!({"agent_writes_enabled": on})).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

/// Submits an action.
pub async fn submit(api: &Api, tool: &str, payload: Value) -> Resp {
    api.post("/v1/actions", json!({"tool": tool, "payload": payload})).await
}

/// The event types of a workspace's log, in order.
pub async fn event_types(api: &Api) -> Vec<String> {
    api.all_events().await.iter().map(|e| e["event_type"].as_str().unwrap().to_string()).collect()
}

impl Resp {
    /// Asserts this is an error response with `status` and `code`, in exactly the one
    /// error shape: `{"error": {"code", "message"}}` and nothing else.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "expected {status} {code}, got {}: {}", self.status, self.text);
        assert_error_shape(self);
        assert_eq!(self.code(), code, "wrong code: {}", self.text);
    }

    /// Asserts a success status, showing the body when it is not.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "expected {status}, got {}: {}", self.status, self.text);
        &self.body
    }
}

/// Asserts `r` is a JSON error body with exactly `error.code` and `error.message`, the
/// code a stable snake_case word and the message non-empty, and never a 500.
#[track_caller]
pub fn assert_error_shape(r: &Resp) {
    assert!(r.status >= 400, "not an error: {} {}", r.status, r.text);
    assert_ne!(r.status, 500, "a 500: {}", r.text);
    let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(ct.starts_with("application/json"), "error content-type is {ct:?}: {}", r.text);
    let top = r.body.as_object().unwrap_or_else(|| panic!("error body is not a JSON object: {:?}", r.text));
    assert_eq!(top.keys().collect::<Vec<_>>(), ["error"], "error body has other keys: {}", r.text);
    let inner = top["error"].as_object().unwrap_or_else(|| panic!("`error` is not an object: {}", r.text));
    let mut keys: Vec<_> = inner.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "message"], "error object keys: {}", r.text);
    let code = inner["code"].as_str().expect("code is a string");
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "code {code:?} is not snake_case"
    );
    assert!(!inner["message"].as_str().expect("message is a string").trim().is_empty(), "empty message: {}", r.text);
}

impl TestServer {
    /// Runs the real `countersign` binary with `args`, returning (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = bin_command(self.db.as_ref()).args(args).env("RUST_LOG", "warn").output().expect("run the countersign binary");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `countersign audit verify --data-dir <this server's dir>`.
    pub fn cli_verify(&self) -> (i32, String, String) {
        let dir = self.dir.to_str().expect("utf-8 temp dir").to_string();
        self.cli(&["audit", "verify", "--data-dir", &dir])
    }

    /// Out-of-band access to the store, as someone with the database in hand would have: the
    /// SQLite file opened directly, or a PostgreSQL superuser connection.
    pub fn out_of_band(&self) -> OutOfBand {
        match &self.db {
            None => OutOfBand::Sqlite(self.open_db()),
            Some(d) => OutOfBand::Postgres(d.superuser_url.clone()),
        }
    }

    /// The SQLite file, opened directly (out of band, as an attacker with disk access would).
    pub fn open_db(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.db_path()).expect("open the database file");
        conn.busy_timeout(std::time::Duration::from_secs(10)).expect("busy timeout");
        conn
    }
}

impl Workspace {
    /// Adds a member with a given e-mail and role (as the owner); does not sign them in.
    pub async fn add_member(&self, email: &str, role: &str) -> String {
        let r = self.owner.post("/v1/members", json!({"email": email, "password": PASSWORD, "role": role})).await;
        assert_eq!(r.status, 201, "create {email} as {role}: {}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }
}

impl Api {
    /// The same credentials against another server address (after a restart).
    pub fn at(&self, base: &str) -> Api {
        Api { http: self.http.clone(), base: base.to_string(), token: self.token.clone() }
    }

    /// This client without credentials.
    pub fn anon(&self) -> Api {
        Api { http: self.http.clone(), base: self.base.clone(), token: None }
    }

    /// The event types of the caller's workspace log, in order.
    pub async fn event_types(&self) -> Vec<String> {
        self.all_events().await.iter().map(|e| e["event_type"].as_str().unwrap().to_string()).collect()
    }

    /// GET /v1/audit/verify, asserting it answered.
    pub async fn verify(&self) -> Value {
        let r = self.get("/v1/audit/verify").await;
        assert_eq!(r.status, 200, "verify: {}", r.text);
        r.body
    }
}

/// Changes one character of a bearer secret inside its random part, keeping its shape.
pub fn typo(secret: &str) -> String {
    let mut chars: Vec<char> = secret.chars().collect();
    let i = 12;
    chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

/// Direct access to a store, bypassing the server (see [`TestServer::out_of_band`]).
pub enum OutOfBand {
    Sqlite(rusqlite::Connection),
    /// A superuser URL; each call connects on a thread of its own.
    Postgres(String),
}

/// A parameter for [`OutOfBand::execute`].
#[derive(Clone, Debug)]
pub enum Raw {
    Int(i64),
    Text(String),
}

impl OutOfBand {
    /// Runs one statement written with `$1`-style parameters; returns the rows it changed,
    /// or the database's error message. `bypass_triggers` does what someone with the
    /// database in hand could: drops SQLite's append-only triggers, or runs PostgreSQL's
    /// statement with triggers disabled (`session_replication_role = replica`).
    pub fn execute(&mut self, sql: &str, params: &[Raw], bypass_triggers: bool) -> Result<u64, String> {
        match self {
            OutOfBand::Sqlite(conn) => {
                if bypass_triggers {
                    conn.execute_batch("DROP TRIGGER IF EXISTS audit_events_no_update; DROP TRIGGER IF EXISTS audit_events_no_delete;")
                        .map_err(|e| e.to_string())?;
                }
                let values: Vec<rusqlite::types::Value> = params
                    .iter()
                    .map(|p| match p {
                        Raw::Int(n) => rusqlite::types::Value::Integer(*n),
                        Raw::Text(t) => rusqlite::types::Value::Text(t.clone()),
                    })
                    .collect();
                conn.execute(sql, rusqlite::params_from_iter(values)).map(|n| n as u64).map_err(|e| e.to_string())
            }
            OutOfBand::Postgres(url) => {
                let params = params.to_vec();
                TestDb::with(url, move |c| {
                    if bypass_triggers {
                        c.batch_execute("SET session_replication_role = replica").map_err(|e| e.to_string())?;
                    }
                    let boxed: Vec<Box<dyn postgres::types::ToSql + Sync>> = params
                        .iter()
                        .map(|p| -> Box<dyn postgres::types::ToSql + Sync> {
                            match p {
                                Raw::Int(n) => Box::new(*n),
                                Raw::Text(t) => Box::new(t.clone()),
                            }
                        })
                        .collect();
                    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = boxed.iter().map(|b| b.as_ref()).collect();
                    c.execute(sql, &refs).map_err(|e| e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string()))
                })
            }
        }
    }

    /// Every row of a table, as text, for searching it for secrets.
    pub fn dump(&mut self, table: &str) -> String {
        match self {
            OutOfBand::Sqlite(conn) => {
                let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
                let cols = stmt.column_count();
                let mut rows = stmt.query([]).unwrap();
                let mut out = String::new();
                while let Some(row) = rows.next().unwrap() {
                    for i in 0..cols {
                        let v: rusqlite::types::Value = row.get(i).unwrap();
                        out.push_str(&format!("{v:?}\t"));
                    }
                    out.push('\n');
                }
                out
            }
            OutOfBand::Postgres(url) => {
                let sql = format!("SELECT t::text FROM {table} t");
                TestDb::with(url, move |c| c.query(&sql, &[]).unwrap().iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n"))
            }
        }
    }
}

impl TestServer {
    /// Whether the store holds `needle` in the clear anywhere a person with the database in
    /// hand could read it: the SQLite file and its write-ahead log, byte for byte, or on
    /// PostgreSQL every row of `tables` (read as the superuser).
    pub fn store_holds(&self, needle: &str, tables: &[&str]) -> bool {
        match &self.db {
            None => ["countersign.db", "countersign.db-wal"]
                .iter()
                .any(|f| std::fs::read(self.dir.join(f)).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))),
            Some(_) => {
                let mut raw = self.out_of_band();
                tables.iter().any(|t| raw.dump(t).contains(needle))
            }
        }
    }
}

/// Runs the real binary with no store at all in its environment.
pub fn cli_bare(args: &[&str]) -> (i32, String, String) {
    let out = bin_command(None).args(args).env("RUST_LOG", "warn").output().expect("run the countersign binary");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// An auto `crm.read`-like action decided by the test rather than the gate, to record
/// straight through the store (`Actions::record_action`) as the gate would.
pub fn decided_action(
    tool: &str,
    payload: Value,
    requester: &str,
    agent: Option<&str>,
    outcome: countersign::gate::Outcome,
    under: countersign::store::DecidedUnder,
) -> countersign::store::NewAction {
    let pinned = countersign::canonical::pin(&payload).expect("a payload the gate accepts");
    countersign::store::NewAction {
        tool: tool.into(),
        payload: pinned.canonical,
        payload_value: payload,
        payload_sha256: pinned.sha256,
        resource: None,
        current: None,
        current_value: None,
        reason: None,
        confidence: None,
        requester_id: requester.into(),
        agent_token_id: agent.map(str::to_string),
        decision: countersign::model::DecisionRecord {
            trace: vec![],
            cited_rules: vec![],
            constitution_version: None,
            code: None,
            message: None,
        },
        outcome,
        policy: countersign::gate::Policy::Auto,
        approval_ttl_seconds: 1800,
        record_now: true,
        idempotency: None,
        decided_under: under,
    }
}
