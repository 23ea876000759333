//! The narrow SQL interface both stores speak.
//!
//! Store logic is written once, against [`Conn`]; SQLite and PostgreSQL each implement
//! it. The SQL is the common subset of both: `$1`-style parameters, `TEXT`, `BIGINT`,
//! `DOUBLE PRECISION` and `BOOLEAN` columns, `INSERT … ON CONFLICT`, `RETURNING`. Where
//! the two differ (locking a row, opening a write transaction, fencing a transaction to
//! one workspace), [`Dialect`] says how.

use std::fmt;

/// A value bound to a parameter or read from a column.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v as i64)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// Builds a parameter list: `params![ws, id, 3]`.
#[macro_export]
macro_rules! params {
    ($($v:expr),* $(,)?) => { &[$($crate::store::db::Value::from($v)),*][..] };
}

/// Why a statement failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DbError {
    /// A unique, foreign-key or check constraint refused the change.
    #[error("constraint: {0}")]
    Constraint(String),
    /// The database could not be reached, read or written (I/O, disk full, locked, gone).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Another transaction (another replica) holds what this statement needs: a lock was
    /// not granted in time, or the database broke a deadlock by cancelling this statement.
    /// Nothing is wrong with the request; the write engine runs the job again.
    #[error("busy: {0}")]
    Busy(String),
    /// A column held something other than what the code expects.
    #[error("column {column}: {message}")]
    Decode { column: usize, message: String },
}

impl From<DbError> for crate::error::Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Constraint(m) => crate::error::Error::conflict("conflict", format!("the change conflicts with existing data ({m})")),
            DbError::Busy(m) => {
                // Usually a job that lost a lock race and will run again (see store::engine);
                // only a job that kept losing is answered with this.
                tracing::debug!(error = %m, "store busy");
                crate::error::Error::unavailable("store_busy", "the store was too busy to take this change; nothing was changed; try again")
            }
            other => {
                tracing::error!(error = %other, "store failure");
                crate::error::Error::unavailable(
                    "store_unavailable",
                    "the store could not be read or written; nothing was changed; try again",
                )
            }
        }
    }
}

/// One result row, read by column position.
#[derive(Clone, Debug, Default)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, DbError> {
        self.0.get(i).ok_or(DbError::Decode { column: i, message: "no such column".into() })
    }
    fn wrong(i: usize, want: &str, got: &Value) -> DbError {
        DbError::Decode { column: i, message: format!("expected {want}, found {got:?}") }
    }
    pub fn text(&self, i: usize) -> Result<String, DbError> {
        match self.at(i)? {
            Value::Text(s) => Ok(s.clone()),
            v => Err(Self::wrong(i, "text", v)),
        }
    }
    pub fn opt_text(&self, i: usize) -> Result<Option<String>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            v => Err(Self::wrong(i, "text or null", v)),
        }
    }
    pub fn int(&self, i: usize) -> Result<i64, DbError> {
        match self.at(i)? {
            Value::Int(n) => Ok(*n),
            v => Err(Self::wrong(i, "integer", v)),
        }
    }
    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(*n)),
            v => Err(Self::wrong(i, "integer or null", v)),
        }
    }
    pub fn real(&self, i: usize) -> Result<f64, DbError> {
        match self.at(i)? {
            Value::Real(n) => Ok(*n),
            Value::Int(n) => Ok(*n as f64),
            v => Err(Self::wrong(i, "real", v)),
        }
    }
    pub fn opt_real(&self, i: usize) -> Result<Option<f64>, DbError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Real(n) => Ok(Some(*n)),
            Value::Int(n) => Ok(Some(*n as f64)),
            v => Err(Self::wrong(i, "real or null", v)),
        }
    }
    /// SQLite has no boolean type and stores 0/1; PostgreSQL has one.
    pub fn bool(&self, i: usize) -> Result<bool, DbError> {
        match self.at(i)? {
            Value::Bool(b) => Ok(*b),
            Value::Int(n) => Ok(*n != 0),
            v => Err(Self::wrong(i, "boolean", v)),
        }
    }
    /// A JSON column (stored as text in both stores).
    pub fn json<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<T, DbError> {
        let text = self.text(i)?;
        serde_json::from_str(&text).map_err(|e| DbError::Decode { column: i, message: format!("bad JSON: {e}") })
    }
    pub fn opt_json<T: serde::de::DeserializeOwned>(&self, i: usize) -> Result<Option<T>, DbError> {
        match self.opt_text(i)? {
            None => Ok(None),
            Some(text) => {
                serde_json::from_str(&text).map(Some).map_err(|e| DbError::Decode { column: i, message: format!("bad JSON: {e}") })
            }
        }
    }
}

/// The SQL differences between the stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Opens the writer's transaction. SQLite takes the write lock up front, so a batch
    /// never fails half-way on a lock upgrade.
    pub const fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Starts one job of a write batch, when the store needs more than `SAVEPOINT job`
    /// (which the engine then sends as a cached statement). On PostgreSQL it first clears
    /// the workspace fence the previous job set, outside the job's savepoint and in the same
    /// round trip, so a job that forgets to fence itself sees nothing rather than its
    /// neighbour's workspace.
    pub const fn begin_job(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => {
                Some("SELECT set_config('app.workspace_id', '', true), set_config('app.all_workspaces', '', true); SAVEPOINT job")
            }
        }
    }

    /// Set once a batch holds what its first job locked: from then on a job waits only
    /// briefly for a lock another replica holds, and is run again in the next batch
    /// instead, so two batches never wait on each other (see `store::engine`).
    pub const fn limit_lock_waits(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SET LOCAL lock_timeout = '20ms'"),
        }
    }

    /// Lifts [`Dialect::limit_lock_waits`] for the end of a batch: the shared epoch's row is
    /// locked by another replica only while it commits, and a batch that got this far must
    /// not fail for waiting on it.
    pub const fn unlimit_lock_waits(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SET LOCAL lock_timeout = 0"),
        }
    }

    /// Announces a committed batch's events to the other replicas (the `$1` payload), in
    /// the batch's transaction, so the announcement goes out exactly when they commit.
    /// SQLite has one server process and needs none.
    pub const fn announce(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SELECT pg_notify('countersign_audit', $1)"),
        }
    }

    /// Moves the configuration epoch every replica reads, in the transaction of the change
    /// that moves it. SQLite's epoch lives in the one process that writes it.
    pub const fn bump_epoch(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("UPDATE config_epoch SET epoch = epoch + 1 WHERE id = 1"),
        }
    }

    /// Opens the transaction one read job runs in, if the store needs one. PostgreSQL does:
    /// the workspace fence is transaction-local, and a repeatable-read snapshot keeps a
    /// multi-statement read (verifying a chain) consistent while replicas append.
    pub const fn begin_read(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
        }
    }
    /// Appended to a SELECT that reads a row it will change, so that concurrent writers
    /// (PostgreSQL replicas) serialise on it. SQLite has one writer and needs nothing.
    pub const fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// As [`Dialect::for_update`], locking only the rows of the table aliased `alias`
    /// (PostgreSQL cannot lock the nullable side of an outer join).
    pub fn for_update_of(self, alias: &str) -> String {
        match self {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres => format!(" FOR UPDATE OF {alias}"),
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        })
    }
}

/// A connection to one of the stores.
pub trait Conn: Send {
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError>;
    /// Runs a query; returns every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError>;
    /// Runs parameterless statements (transaction control, DDL).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;
    fn dialect(&self) -> Dialect;
    /// Fences the current transaction to one workspace. PostgreSQL's row-level security
    /// reads it; SQLite has no such layer and the store's `WHERE workspace_id` does the work.
    /// It also ends an [`Conn::set_all_workspaces`] opt-in.
    fn set_workspace(&mut self, _workspace_id: &str) -> Result<(), DbError> {
        Ok(())
    }

    /// Lets the current transaction read every workspace's rows: the explicit opt-in of the
    /// few calls that are cross-workspace by nature (finding the workspace a secret or an
    /// e-mail belongs to, the approval sweeper, the webhook worker's claims, key rotation).
    /// Writes stay fenced to the workspace set by [`Conn::set_workspace`]. A no-op on SQLite.
    fn set_all_workspaces(&mut self) -> Result<(), DbError> {
        Ok(())
    }

    /// How many rows this connection's INSERT, UPDATE and DELETE statements have changed
    /// since it opened, where the database keeps that count (SQLite): how the writer tells
    /// that a refused job changed nothing, so that there is nothing to undo (see
    /// `store::engine::Batch`). A statement that fails changes nothing and is not counted.
    fn total_changes(&self) -> Option<u64> {
        None
    }

    /// The first row, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// Opens connections: one for the writer, several for readers.
pub trait Connector: Send + Sync {
    fn open_writer(&self) -> Result<Box<dyn Conn>, DbError>;
    fn open_reader(&self) -> Result<Box<dyn Conn>, DbError>;
    /// How many reader connections (and threads) to keep.
    fn readers(&self) -> usize;
    /// Housekeeping the engine runs on its own thread, off the writer's path: a connection,
    /// a statement, and how often. SQLite checkpoints its write-ahead log this way, so a
    /// checkpoint's copying and fsync never delay a commit.
    fn maintenance(&self) -> Result<Option<Maintenance>, DbError> {
        Ok(None)
    }
    /// Housekeeping the writer itself runs between batches, at most this often and only
    /// after it committed something: for what must not race the writer's own commits.
    fn writer_housekeeping(&self) -> Option<Housekeeping> {
        None
    }
    /// A writer whose commits are made durable by the engine rather than by the commit
    /// itself: the connection (its COMMIT writes the log but does not wait for the disk),
    /// and the file the engine must `fdatasync` before it tells anyone a batch is done.
    /// With it the writer goes on to the next batch while the last one reaches the disk
    /// (see `store::engine`). `None`: every COMMIT syncs by itself (PostgreSQL).
    fn open_pipelined_writer(&self) -> Result<Option<PipelinedWriter>, DbError> {
        Ok(None)
    }
    fn dialect(&self) -> Dialect;
    /// Where other processes' commits are announced, for a store several servers share
    /// (PostgreSQL's LISTEN). `None` for a store only this process writes (SQLite).
    fn notifications(&self) -> Option<Box<dyn Notifications>> {
        None
    }
}

/// A writer whose COMMIT does not sync (see [`Connector::open_pipelined_writer`]).
pub struct PipelinedWriter {
    pub conn: Box<dyn Conn>,
    /// What makes its committed batches durable.
    pub log: Box<dyn LogSync>,
}

/// Makes a pipelined writer's committed batches durable. Called on the engine's syncer
/// thread, never on the writer's.
pub trait LogSync: Send {
    /// Returns once everything committed before the call is on disk.
    fn sync(&mut self) -> std::io::Result<()>;
    /// What is synced, for the operator's log when a sync fails.
    fn name(&self) -> String;
}

/// `fdatasync` of one file (SQLite's write-ahead log).
pub struct SyncFile {
    path: std::path::PathBuf,
    /// Opened at the first sync: the log exists from the writer's first commit, and the
    /// writer's connection keeps it from being removed while the engine runs.
    file: Option<std::fs::File>,
}

impl SyncFile {
    pub fn new(path: impl Into<std::path::PathBuf>) -> SyncFile {
        SyncFile { path: path.into(), file: None }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl LogSync for SyncFile {
    fn sync(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(std::fs::File::open(&self.path)?);
        }
        self.file.as_ref().expect("opened above").sync_data()
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }
}

/// Commit announcements from other processes sharing the store.
pub trait Notifications: Send {
    /// Waits up to `timeout` for announcements, (re)connecting first if needed.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<Wait, DbError>;
}

/// What one [`Notifications::wait`] brought.
#[derive(Debug, Default)]
pub struct Wait {
    pub payloads: Vec<String>,
    /// The connection was lost and made again: announcements in between may be missing.
    pub reconnected: bool,
}

/// A statement the writer runs between batches (see [`Connector::writer_housekeeping`]).
pub struct Housekeeping {
    pub statement: &'static str,
    pub every: std::time::Duration,
}

/// Periodic housekeeping for a store (see [`Connector::maintenance`]).
pub struct Maintenance {
    pub conn: Box<dyn Conn>,
    pub statement: &'static str,
    pub every: std::time::Duration,
}
