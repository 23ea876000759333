//! A throwaway PostgreSQL cluster for the tests, started by the harness itself from the
//! machine's binaries (`initdb`, `pg_ctl`; as root they run as the `postgres` user).
//!
//! One cluster per test process, started on first use in a private temporary directory,
//! listening only on a Unix socket in that directory (no TCP port to collide on). Each test
//! gets its own database, cloned from a template that the real migrations built, so tests
//! never see each other's rows. A small supervisor process holds the read end of a pipe
//! whose write end only this process has: when the test process exits, however it exits,
//! the pipe closes, and the supervisor stops the cluster and deletes the directory.
//!
//! Roles, as an operator sets them up (docs/OPERATIONS.md): `cs_owner` owns the tables
//! and runs migrations; `cs_server` logs in for the server and is only a member of the
//! `countersign_server` group role; `postgres` is the superuser, used here only to create
//! databases and to tamper out of band.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use countersign::store::migrate;
use countersign::store::postgres::{self as pg, PgConnector};

const PORT: u16 = 5432;
const TEMPLATE: &str = "cs_template";

pub struct Cluster {
    /// The socket directory (and the cluster's home).
    dir: PathBuf,
    /// Keeps the supervisor's pipe open for as long as this process lives.
    _lifeline: std::process::ChildStdin,
    next: AtomicU64,
}

/// A database of its own for one test, dropped when the last copy of it goes (so a run
/// of the whole suite holds a few databases on disk at a time, not one per test).
#[derive(Clone, Debug)]
pub struct TestDb {
    /// As the server's role (a member of `countersign_server`, owning nothing).
    pub server_url: String,
    /// As the tables' owner (migrations).
    pub owner_url: String,
    /// As the superuser (out-of-band tampering, checks).
    pub superuser_url: String,
    _dropped_after_use: Arc<DropDatabase>,
}

/// Drops a test's database once nothing refers to it any more, disconnecting whatever is
/// still connected (a server the test left running, a child process it killed).
#[derive(Debug)]
struct DropDatabase {
    /// The superuser on the maintenance database `postgres`.
    admin_url: String,
    name: String,
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        let (url, sql) = (self.admin_url.clone(), format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        // On a thread of its own: the synchronous client may not block an async runtime,
        // and the last copy is often dropped inside one. Best effort: the cluster and
        // everything in it is removed when the test process ends anyway.
        let _ = std::thread::spawn(move || {
            if let Ok(mut c) = postgres::Client::connect(&url, postgres::NoTls) {
                let _ = c.batch_execute(&sql);
            }
        })
        .join();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}

/// Where one of PostgreSQL's server programs is: on `PATH`, else in the newest of Debian's
/// `/usr/lib/postgresql/<version>/bin` (which Debian does not put on `PATH`).
fn pg_program(program: &str) -> String {
    let on_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file())).unwrap_or(false);
    if on_path {
        return program.to_string();
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin").join(program))))
        .filter(|(_, p)| p.is_file())
        .collect();
    versions.sort();
    versions.pop().map_or_else(|| program.to_string(), |(_, p)| p.display().to_string())
}

/// A command for one of PostgreSQL's programs, as the `postgres` user when we are root
/// (the server refuses to run as root).
fn pg_command(program: &str) -> Command {
    let program = &pg_program(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(out.status.success(), "{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

impl Cluster {
    /// The process's cluster, started on first use.
    pub fn get() -> &'static Cluster {
        static CLUSTER: OnceLock<Cluster> = OnceLock::new();
        CLUSTER.get_or_init(|| std::thread::spawn(|| Cluster::start(false)).join().expect("start the PostgreSQL cluster"))
    }

    /// A cluster of its own with PostgreSQL's durable defaults (fsync, synchronous
    /// commit, full-page writes), for the benchmark; stopped and removed when dropped (or
    /// when the process ends).
    #[allow(dead_code)] // benches/replicas.rs
    pub fn start_durable() -> Cluster {
        Cluster::start(true)
    }

    fn start(durable: bool) -> Cluster {
        let dir = tempfile::Builder::new().prefix("cs-pg-").tempdir_in("/tmp").expect("cluster directory").keep();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["postgres:postgres"]).arg(&dir);
                    c
                },
                "chown the cluster directory",
            );
        }
        let data = dir.join("data");
        let mut initdb = pg_command("initdb");
        initdb.arg("-D").arg(&data).args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"]);
        if !durable {
            initdb.arg("--no-sync");
        }
        run(initdb, "initdb");
        // The supervisor: waits for this process's end (EOF on its stdin), then stops the
        // cluster and removes its directory. Its own process group, so a Ctrl-C aimed at the
        // test run does not kill it before it has cleaned up.
        let stop = if is_root() { "runuser -u postgres -- pg_ctl" } else { "pg_ctl" };
        let script = format!(
            "trap '' INT TERM HUP; cat >/dev/null; {stop} -D '{data}' stop -m immediate >/dev/null 2>&1; rm -rf '{dir}'",
            data = data.display(),
            dir = dir.display()
        );
        let mut supervisor = {
            use std::os::unix::process::CommandExt;
            Command::new("sh")
                .args(["-c", &script])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start the cluster supervisor")
        };
        let lifeline = supervisor.stdin.take().expect("supervisor pipe");
        // Durability is not what the tests check (the benchmark runs with PostgreSQL's
        // durable defaults), and the machine has two cores: spare the disk. Each test's
        // database is copied from the template through the write-ahead log, so the log is
        // kept small too (checkpoints are cheap without fsync): the suite then needs tens
        // of megabytes of disk, not gigabytes.
        let relaxed = if durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_wal_size=64MB -c min_wal_size=32MB"
        };
        let options = format!("-k {} -c listen_addresses='' -p {PORT} -c max_connections=400{relaxed}", dir.display());
        let mut start = pg_command("pg_ctl");
        start.arg("-D").arg(&data).args(["-w", "-t", "60", "-l"]).arg(dir.join("log")).args(["-o", &options, "start"]);
        {
            use std::os::unix::process::CommandExt;
            start.process_group(0);
        }
        run(start, "pg_ctl start");
        let cluster = Cluster { dir, _lifeline: lifeline, next: AtomicU64::new(0) };
        let mut admin = cluster.superuser("postgres");
        admin
            .batch_execute(
                "CREATE ROLE countersign_server NOLOGIN; \
                 CREATE ROLE cs_owner LOGIN; \
                 CREATE ROLE cs_server LOGIN IN ROLE countersign_server;",
            )
            .expect("create roles");
        admin.batch_execute(&format!("CREATE DATABASE {TEMPLATE} OWNER cs_owner")).expect("create the template database");
        drop(admin);
        // The template is built by the real migrations, as the owner.
        let mut conn = PgConnector::new(&cluster.url("cs_owner", TEMPLATE)).and_then(|c| c.open()).expect("connect as the owner");
        migrate::apply(&mut conn, pg::MIGRATIONS).expect("migrate the template");
        drop(conn);
        cluster
    }

    /// A URL for `user` on database `db`, over the cluster's Unix socket.
    pub fn url(&self, user: &str, db: &str) -> String {
        let host: String = self.dir.display().to_string().replace('/', "%2F");
        format!("postgres://{user}@{host}:{PORT}/{db}")
    }

    pub fn superuser(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url("postgres", db), postgres::NoTls).expect("connect as the superuser")
    }

    /// A new database with the current schema (cloned from the migrated template).
    pub fn fresh(&self) -> TestDb {
        let name = format!("t_{}_{}", std::process::id(), self.next.fetch_add(1, Ordering::SeqCst));
        let create = format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE} OWNER cs_owner");
        std::thread::scope(|s| s.spawn(|| self.superuser("postgres").batch_execute(&create).expect("create a test database")).join())
            .expect("create a test database");
        self.describe(&name)
    }

    /// A new database with no schema at all (for `admin migrate`).
    pub fn empty(&self) -> TestDb {
        let name = format!("e_{}_{}", std::process::id(), self.next.fetch_add(1, Ordering::SeqCst));
        let create = format!("CREATE DATABASE {name} OWNER cs_owner");
        std::thread::scope(|s| s.spawn(|| self.superuser("postgres").batch_execute(&create).expect("create an empty database")).join())
            .expect("create an empty database");
        self.describe(&name)
    }

    fn describe(&self, name: &str) -> TestDb {
        TestDb {
            server_url: self.url("cs_server", name),
            owner_url: self.url("cs_owner", name),
            superuser_url: self.url("postgres", name),
            _dropped_after_use: Arc::new(DropDatabase { admin_url: self.url("postgres", "postgres"), name: name.to_string() }),
        }
    }
}

impl TestDb {
    /// Runs `f` with a fresh connection as `url`'s role, on a thread of its own (the
    /// synchronous client may not block inside the async runtime).
    pub fn with<T: Send>(url: &str, f: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect to the test database");
                f(&mut c)
            })
            .join()
            .expect("database thread")
        })
    }
}
