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
    /// A column held something other than what the code expects.
    #[error("column {column}: {message}")]
    Decode { column: usize, message: String },
}

impl From<DbError> for crate::error::Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Constraint(m) => crate::error::Error::conflict("conflict", format!("the change conflicts with existing data ({m})")),
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
    fn set_workspace(&mut self, _workspace_id: &str) -> Result<(), DbError> {
        Ok(())
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
    fn dialect(&self) -> Dialect;
}

/// Periodic housekeeping for a store (see [`Connector::maintenance`]).
pub struct Maintenance {
    pub conn: Box<dyn Conn>,
    pub statement: &'static str,
    pub every: std::time::Duration,
}
