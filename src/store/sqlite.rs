//! The embedded store: one SQLite file in WAL mode.
//!
//! Durability: `synchronous = FULL` makes every COMMIT fsync the write-ahead log, so a
//! committed batch survives a power cut. Speed comes from the engine's group commit, not
//! from relaxing this.

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::db::{Conn, Connector, DbError, Dialect, Row, Value};
use super::migrate::Migration;

/// The schema, in order. Never edit a shipped migration: add the next one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "identity and audit", sql: include_str!("migrations/sqlite/0001_identity_and_audit.sql") },
    Migration { version: 2, name: "the gate", sql: include_str!("migrations/sqlite/0002_gate.sql") },
    Migration { version: 3, name: "webhooks", sql: include_str!("migrations/sqlite/0003_webhooks.sql") },
    Migration { version: 4, name: "audit checkpoints", sql: include_str!("migrations/sqlite/0004_checkpoints.sql") },
    Migration { version: 5, name: "constitution", sql: include_str!("migrations/sqlite/0005_constitution.sql") },
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
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI
        };
        let conn = Connection::open_with_flags(&self.path, flags).map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(256);
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
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA journal_size_limit = 67108864; PRAGMA temp_store = MEMORY;"
        };
        conn.execute_batch(pragmas).map_err(map_err)?;
        Ok(SqliteConn { conn })
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

/// One SQLite connection.
pub struct SqliteConn {
    conn: Connection,
}

fn map_err(e: rusqlite::Error) -> DbError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => DbError::Constraint(e.to_string()),
        _ => DbError::Unavailable(e.to_string()),
    }
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[Value]) -> Result<(), DbError> {
    // Parameters are written `$1`, `$2`…, which SQLite treats as names; bind each by the
    // number in its name so the SQL can use them in any order, as PostgreSQL allows.
    for i in 1..=stmt.parameter_count() {
        let n: usize = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| DbError::Unavailable(format!("parameter {i} is not written $N")))?;
        let v = params.get(n - 1).ok_or_else(|| DbError::Unavailable(format!("no value for parameter ${n}")))?;
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
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(map_err)?;
        bind(&mut stmt, params)?;
        stmt.raw_execute().map(|n| n as u64).map_err(map_err)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(map_err)?;
        bind(&mut stmt, params)?;
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
