//! The embedded store: one SQLite file in WAL mode.
//!
//! Durability: every batch the engine acknowledges has had the write-ahead log fsynced
//! after its COMMIT, so it survives a power cut. The engine's writer commits with
//! `synchronous = NORMAL` and syncs the log on its own thread (pipelined group commit, see
//! `store::engine`); every other connection that writes (migrations, `admin` commands,
//! checkpoints) uses `synchronous = FULL`. Speed comes from group commit, not from
//! relaxing durability.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::db::{Conn, Connector, DbError, Dialect, PipelinedWriter, Row, SyncFile, Value};
use super::migrate::Migration;

/// The schema, in order. Never edit a shipped migration: add the next one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "identity and audit", sql: include_str!("migrations/sqlite/0001_identity_and_audit.sql") },
    Migration { version: 2, name: "the gate", sql: include_str!("migrations/sqlite/0002_gate.sql") },
    Migration { version: 3, name: "webhooks", sql: include_str!("migrations/sqlite/0003_webhooks.sql") },
    Migration { version: 4, name: "audit checkpoints", sql: include_str!("migrations/sqlite/0004_checkpoints.sql") },
    Migration { version: 5, name: "constitution", sql: include_str!("migrations/sqlite/0005_constitution.sql") },
    Migration { version: 6, name: "interrupted executions", sql: include_str!("migrations/sqlite/0006_interrupted_executions.sql") },
    Migration { version: 7, name: "delivery retention", sql: include_str!("migrations/sqlite/0007_delivery_retention.sql") },
    Migration {
        version: 8,
        name: "workspace configuration version",
        sql: include_str!("migrations/sqlite/0008_workspace_config_version.sql"),
    },
    Migration { version: 9, name: "withdrawn approvals", sql: include_str!("migrations/sqlite/0009_withdrawn_approvals.sql") },
    Migration { version: 10, name: "deletable tools", sql: include_str!("migrations/sqlite/0010_deletable_tools.sql") },
];

/// Opens connections to one database file.
pub struct SqliteConnector {
    path: PathBuf,
    readers: usize,
}

impl SqliteConnector {
    pub fn new(path: impl AsRef<Path>) -> Self {
        SqliteConnector { path: path.as_ref().to_path_buf(), readers: 3 }
    }

    fn open(&self, read_only: bool) -> Result<SqliteConn, DbError> {
        self.open_with(read_only, "FULL")
    }

    fn open_with(&self, read_only: bool, synchronous: &str) -> Result<SqliteConn, DbError> {
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI
        };
        let conn = Connection::open_with_flags(&self.path, flags).map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(256);
        // Plans that do not depend on the values bound. Without this, SQLite compiles a
        // statement again every time it is run with a parameter in a `LIMIT`, or compared
        // with a column of a table that has a partial index: the session lookup behind
        // every request, the audit tail's reads, the batch's webhook subscriptions. Our
        // statements name their partial indexes' conditions as literals, so no plan needs
        // the values (`store_plans_do_not_recompile_per_value` holds it).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(map_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(map_err)?;
        let pragmas = if read_only {
            "PRAGMA foreign_keys = ON; PRAGMA query_only = ON;"
        } else {
            // Checkpoints run on the engine's maintenance thread and between the writer's
            // batches, not inside commits (see `maintenance`). After a reset the log file is
            // cut back to 64 MiB, so a burst does not keep its disk space. The savepoint of
            // every job keeps a statement journal; in memory, not a temporary file, it costs
            // no system calls (it only ever serves a rollback within the open transaction,
            // so durability does not depend on it): a fifth less CPU per decision.
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;"
        };
        conn.execute_batch(pragmas).map_err(map_err)?;
        if !read_only {
            conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};")).map_err(map_err)?;
        }
        Ok(SqliteConn { conn, bindings: HashMap::new() })
    }
}

impl Connector for SqliteConnector {
    fn open_writer(&self) -> Result<Box<dyn Conn>, DbError> {
        Ok(Box::new(self.open(false)?))
    }
    fn open_reader(&self) -> Result<Box<dyn Conn>, DbError> {
        Ok(Box::new(self.open(true)?))
    }
    fn readers(&self) -> usize {
        self.readers
    }
    fn open_pipelined_writer(&self) -> Result<Option<PipelinedWriter>, DbError> {
        // `synchronous = NORMAL` in WAL mode: a COMMIT writes its frames to the log but does
        // not fsync it (checkpoints still sync the log before copying, and the database
        // after). The engine fdatasyncs the log itself before answering anyone, on another
        // thread, so the writer is not idle while the disk works. Durability is the same
        // as FULL for everything acknowledged; see `store::engine`.
        let mut conn = self.open_with(false, "NORMAL")?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        if let Err(e) = presize_log(&mut conn, &wal) {
            tracing::warn!(error = %e, file = %wal.display(), "could not reserve space for the write-ahead log; it grows as it is written");
        }
        Ok(Some(PipelinedWriter { conn: Box::new(conn), log: Box::new(SyncFile::new(wal)) }))
    }
    fn maintenance(&self) -> Result<Option<super::db::Maintenance>, DbError> {
        // A PASSIVE checkpoint copies what it can without waiting on, or blocking, the
        // writer or readers; run often, it does the bulk of the copying off the writer's path.
        Ok(Some(super::db::Maintenance {
            conn: Box::new(self.open(false)?),
            statement: "PRAGMA wal_checkpoint(PASSIVE)",
            every: std::time::Duration::from_millis(250),
        }))
    }
    fn writer_housekeeping(&self) -> Option<super::db::Housekeeping> {
        // Under steady writes the maintenance thread never catches the writer: frames are
        // added while it copies, so the log is never wholly copied back and SQLite can
        // never start it again from the top — it grows without bound (3 GiB after a few
        // minutes at full speed), and every read searches a longer index. Between its own
        // batches the writer copies the few frames left (the maintenance thread did the
        // rest), so the next transaction can restart the log.
        Some(super::db::Housekeeping { statement: "PRAGMA wal_checkpoint(PASSIVE)", every: std::time::Duration::from_millis(250) })
    }
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
}

/// How much of the write-ahead log is written ahead of use when the writer opens (see
/// [`presize_log`]): more than the log reaches between two restarts at full speed.
const LOG_RESERVE: u64 = 32 << 20;

/// Writes zeros past the end of the write-ahead log, up to [`LOG_RESERVE`].
///
/// Why: while the log file grows, every fdatasync also commits the file system's journal
/// (a new size, new blocks), which makes the syncs of a fresh store — and of every store
/// just after a restart, since SQLite removes the log on a clean close — several times
/// slower (p99 at 2,000 decisions/s: 8–11 ms growing, 7.5–8 ms reserved). Written, not
/// `set_len` or fallocate: those leave holes or unwritten extents, and the first write into
/// each block would still change the file's metadata. Zeros are never
/// a valid frame (each frame carries the log's salt and a running checksum), so SQLite reads
/// them as the end of the log, exactly like the stale frames it leaves past the end after
/// every restart. Only appended, and under the write lock, so no other connection is
/// writing frames meanwhile.
fn presize_log(conn: &mut SqliteConn, wal: &Path) -> std::io::Result<()> {
    use std::io::Write;
    conn.conn.execute_batch("BEGIN IMMEDIATE").map_err(std::io::Error::other)?;
    let appended = (|| {
        let mut f = std::fs::OpenOptions::new().append(true).open(wal)?;
        let len = f.metadata()?.len();
        if len >= LOG_RESERVE {
            return Ok(());
        }
        let zeros = vec![0u8; 1 << 20];
        let mut left = LOG_RESERVE - len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()
    })();
    let _ = conn.conn.execute_batch("ROLLBACK");
    appended
}

/// One SQLite connection.
pub struct SqliteConn {
    conn: Connection,
    /// Per statement, which value each of its parameters takes (see [`bindings`]): worked
    /// out once, not by asking SQLite for every parameter's name on every execution.
    bindings: HashMap<String, Box<[usize]>>,
}

/// Statements whose bindings are remembered; past this the memory is started afresh (the
/// statements themselves are few and fixed; this only bounds a surprise).
const MAX_BINDINGS: usize = 1024;

fn map_err(e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => DbError::Constraint(e.to_string()),
        _ => DbError::Unavailable(e.to_string()),
    }
}

/// For each of a statement's parameters in SQLite's order, the index of its value.
///
/// Parameters are written `$1`, `$2`…, which SQLite treats as names; each is bound by the
/// number in its name, so the SQL can use them in any order and more than once, as
/// PostgreSQL allows.
fn bindings(stmt: &rusqlite::Statement<'_>) -> Result<Box<[usize]>, DbError> {
    (1..=stmt.parameter_count())
        .map(|i| {
            stmt.parameter_name(i)
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n >= 1)
                .map(|n| n - 1)
                .ok_or_else(|| DbError::Unavailable(format!("parameter {i} is not written $N")))
        })
        .collect()
}

/// Prepares `sql` (cached) and binds `params` to it.
fn prepare<'c>(
    conn: &'c Connection,
    known: &mut HashMap<String, Box<[usize]>>,
    sql: &str,
    params: &[Value],
) -> Result<rusqlite::CachedStatement<'c>, DbError> {
    let mut stmt = conn.prepare_cached(sql).map_err(map_err)?;
    let order = match known.get(sql) {
        Some(order) => order,
        None => {
            if known.len() >= MAX_BINDINGS {
                known.clear();
            }
            known.entry(sql.to_string()).or_insert(bindings(&stmt)?)
        }
    };
    bind(&mut stmt, order, params)?;
    Ok(stmt)
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, order: &[usize], params: &[Value]) -> Result<(), DbError> {
    for (i, n) in order.iter().enumerate() {
        let i = i + 1;
        let v = params.get(*n).ok_or_else(|| DbError::Unavailable(format!("no value for parameter ${}", n + 1)))?;
        let r = match v {
            Value::Null => stmt.raw_bind_parameter(i, rusqlite::types::Null),
            Value::Int(x) => stmt.raw_bind_parameter(i, x),
            Value::Real(x) => stmt.raw_bind_parameter(i, x),
            Value::Text(x) => stmt.raw_bind_parameter(i, x.as_str()),
            Value::Bool(x) => stmt.raw_bind_parameter(i, *x as i64),
        };
        r.map_err(map_err)?;
    }
    Ok(())
}

fn read_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
    }
}

impl Conn for SqliteConn {
    fn total_changes(&self) -> Option<u64> {
        Some(self.conn.total_changes())
    }

    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut stmt = prepare(&self.conn, &mut self.bindings, sql, params)?;
        stmt.raw_execute().map(|n| n as u64).map_err(map_err)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut stmt = prepare(&self.conn, &mut self.bindings, sql, params)?;
        let width = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_err)? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(read_value(row.get_ref(i).map_err(map_err)?));
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn.execute_batch(sql).map_err(map_err)
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_len(wal: &Path) -> u64 {
        std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn the_log_is_written_ahead_of_use_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let connector = SqliteConnector::new(&db);
        connector.open_writer().unwrap().batch("CREATE TABLE t (x BIGINT)").unwrap();
        let mut reader = connector.open_reader().unwrap();
        let PipelinedWriter { conn: mut writer, log } = connector.open_pipelined_writer().unwrap().expect("SQLite pipelines");
        let sync_file = dir.path().join("s.db-wal");
        assert_eq!(log.name(), sync_file.display().to_string(), "commits are made durable by syncing the log");
        assert_eq!(log_len(&sync_file), LOG_RESERVE, "the log is reserved when the writer opens");
        for i in 0..500 {
            writer.batch("BEGIN IMMEDIATE").unwrap();
            writer.execute("INSERT INTO t VALUES ($1)", &[Value::Int(i)]).unwrap();
            writer.batch("COMMIT").unwrap();
        }
        // Frames went into the reserved space: the file did not grow.
        assert_eq!(log_len(&sync_file), LOG_RESERVE);
        let count = |c: &mut dyn Conn| c.query("SELECT count(*), sum(x) FROM t", &[]).unwrap()[0].clone();
        let seen = count(&mut *reader);
        assert_eq!((seen.int(0).unwrap(), seen.int(1).unwrap()), (500, 499 * 500 / 2));
        // A second writer on a log already that long adds nothing to it.
        drop(connector.open_pipelined_writer().unwrap());
        assert_eq!(log_len(&sync_file), LOG_RESERVE);
        // Everything is there when the database is opened afresh.
        drop((writer, reader));
        let mut again = SqliteConnector::new(&db).open_reader().unwrap();
        let seen = count(&mut *again);
        assert_eq!((seen.int(0).unwrap(), seen.int(1).unwrap()), (500, 499 * 500 / 2));
    }

    #[test]
    fn store_plans_do_not_recompile_per_value() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        crate::store::SqlStore::open_sqlite(&db, crate::clock::Clock::system()).unwrap().engine().close();
        let mut conn = SqliteConnector::new(&db).open(false).unwrap();
        // Each of the kinds SQLite would otherwise compile again for every new value: a
        // parameter in LIMIT, a comparison on a table with a partial index (members,
        // approvals), and the batch's webhook subscriptions.
        let statements = [
            "SELECT seq FROM audit_events WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            "SELECT COUNT(*) FROM members WHERE workspace_id = $1 AND role = $2 AND status = 'active'",
            "SELECT id FROM approvals WHERE workspace_id = $1 AND state = $2 ORDER BY expires_at LIMIT $3",
            "SELECT id, event_types FROM webhooks WHERE workspace_id = $1 AND enabled = TRUE ORDER BY id",
        ];
        for sql in statements {
            for i in 0..3 {
                let values = [Value::from(format!("org_{i}")), Value::from(format!("v{i}")), Value::Int(10 + i)];
                let wanted = sql.matches('$').count();
                conn.query(sql, &values[..wanted]).unwrap();
            }
            let recompiled = conn.conn.prepare_cached(sql).unwrap().get_status(rusqlite::StatementStatus::RePrepare);
            assert_eq!(recompiled, 0, "{sql}");
        }
    }

    #[test]
    fn parameters_bind_by_their_number_in_any_order_and_more_than_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConnector::new(dir.path().join("p.db")).open_writer().unwrap();
        for _ in 0..2 {
            // The second time from the remembered bindings.
            let row = conn.query("SELECT $2, $1, $2 || $1", &[Value::from("a"), Value::from("b")]).unwrap().remove(0);
            assert_eq!((row.text(0).unwrap(), row.text(1).unwrap(), row.text(2).unwrap()), ("b".into(), "a".into(), "ba".into()));
        }
        assert!(conn.query("SELECT $1, $3", &[Value::Int(1), Value::Int(2)]).is_err(), "a missing value is an error");
        assert!(conn.query("SELECT ?", &[Value::Int(1)]).is_err(), "only $N parameters are accepted");
    }
}
