//! The shared store: PostgreSQL, for several `countersign serve` replicas on one database.
//!
//! The client is the synchronous `postgres` crate (tokio-postgres underneath, from the same
//! project). The engine already runs every statement on dedicated threads (one writer, a
//! few readers), so a blocking client fits it as it is: no pool crate, no second async
//! layer, and the build cost is tokio-postgres alone (tokio is already in the tree). A
//! pooled async client (deadpool) would only add a queue in front of the same threads.
//!
//! What this file does besides speaking the protocol:
//! - binds each [`Value`] with the type the statement expects (`BIGINT`, `TEXT`,
//!   `DOUBLE PRECISION`, `BOOLEAN`; a NULL takes whatever type the statement infers);
//! - keeps each connection's prepared statements, so a statement costs one round trip;
//! - maps errors: integrity violations (class 23) are [`DbError::Constraint`]; a lock not
//!   granted in time, a deadlock or a serialization failure is [`DbError::Busy`] (the
//!   engine runs the job again); anything else is [`DbError::Unavailable`];
//! - fences each transaction to a workspace for row-level security
//!   (`app.workspace_id`, transaction-local), or opts it in to reading every workspace
//!   (`app.all_workspaces`);
//! - reconnects a connection that was lost, at the start of its next transaction (never in
//!   the middle of one);
//! - listens for other replicas' commits (`LISTEN countersign_audit`).
//!
//! TLS to the database is not built in: connect over a Unix socket or loopback, or through
//! a TLS-terminating sidecar (docs/OPERATIONS.md).

use std::collections::HashMap;
use std::error::Error as StdError;
use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use postgres::error::SqlState;
use postgres::types::{IsNull, Kind, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};

use super::db::{Conn, Connector, DbError, Dialect, Notifications, Row, Value, Wait};
use super::migrate::Migration;

/// The schema, in order, with the same version numbers as SQLite's. Never edit a shipped
/// migration: add the next one.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "identity and audit", sql: include_str!("migrations/postgres/0001_identity_and_audit.sql") },
    Migration { version: 2, name: "the gate", sql: include_str!("migrations/postgres/0002_gate.sql") },
    Migration { version: 3, name: "webhooks", sql: include_str!("migrations/postgres/0003_webhooks.sql") },
    Migration { version: 4, name: "audit checkpoints", sql: include_str!("migrations/postgres/0004_checkpoints.sql") },
    Migration { version: 5, name: "constitution", sql: include_str!("migrations/postgres/0005_constitution.sql") },
    Migration { version: 6, name: "interrupted executions", sql: include_str!("migrations/postgres/0006_interrupted_executions.sql") },
    Migration { version: 7, name: "delivery retention", sql: include_str!("migrations/postgres/0007_delivery_retention.sql") },
    Migration {
        version: 8,
        name: "workspace configuration version",
        sql: include_str!("migrations/postgres/0008_workspace_config_version.sql"),
    },
    Migration { version: 9, name: "withdrawn approvals", sql: include_str!("migrations/postgres/0009_withdrawn_approvals.sql") },
    Migration { version: 10, name: "deletable tools", sql: include_str!("migrations/postgres/0010_deletable_tools.sql") },
];

/// The channel replicas announce their commits on.
pub const CHANNEL: &str = "countersign_audit";

/// The group role the migrations grant the server's privileges to. The role a replica
/// logs in as is a member of it (docs/OPERATIONS.md).
pub const SERVER_ROLE: &str = "countersign_server";

/// Whether a database URL names PostgreSQL (rather than being a mistake).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens connections to one PostgreSQL database.
#[derive(Clone)]
pub struct PgConnector {
    config: postgres::Config,
    readers: usize,
}

impl PgConnector {
    /// `url` is a `postgres://user:password@host:port/dbname` URL (a Unix socket directory
    /// as the host, percent-encoded, or `?host=/path`).
    pub fn new(url: &str) -> Result<PgConnector, DbError> {
        let mut config = postgres::Config::from_str(url).map_err(|e| DbError::Unavailable(format!("bad database URL: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("countersign");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        Ok(PgConnector { config, readers: 3 })
    }

    /// How many reader connections each replica keeps.
    pub fn with_readers(mut self, n: usize) -> Self {
        self.readers = n.max(1);
        self
    }

    fn connect(&self) -> Result<Client, DbError> {
        self.config.connect(NoTls).map_err(map_err)
    }

    /// One connection, for the admin command line and the checks before serving.
    pub fn open(&self) -> Result<PgConn, DbError> {
        Ok(PgConn { client: Some(self.connect()?), config: self.config.clone(), statements: HashMap::new(), in_tx: false })
    }
}

impl Connector for PgConnector {
    fn open_writer(&self) -> Result<Box<dyn Conn>, DbError> {
        Ok(Box::new(self.open()?))
    }
    fn open_reader(&self) -> Result<Box<dyn Conn>, DbError> {
        Ok(Box::new(self.open()?))
    }
    fn readers(&self) -> usize {
        self.readers
    }
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn notifications(&self) -> Option<Box<dyn Notifications>> {
        Some(Box::new(PgNotifications { config: self.config.clone(), client: None, ever: false }))
    }
}

/// One PostgreSQL connection.
pub struct PgConn {
    /// `None` after the connection was found lost and could not be reopened yet.
    client: Option<Client>,
    config: postgres::Config,
    statements: HashMap<String, Statement>,
    /// Whether a transaction is open (see [`Conn::batch`]).
    in_tx: bool,
}

/// How many prepared statements a connection keeps before starting over.
const STATEMENT_CACHE: usize = 1024;

fn map_err(e: postgres::Error) -> DbError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let text = match db.detail() {
            Some(d) => format!("{} ({}) [{}]", db.message(), d, code.code()),
            None => format!("{} [{}]", db.message(), code.code()),
        };
        if code.code().starts_with("23") {
            return DbError::Constraint(text);
        }
        if *code == SqlState::LOCK_NOT_AVAILABLE || *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
        {
            return DbError::Busy(text);
        }
        return DbError::Unavailable(text);
    }
    DbError::Unavailable(e.to_string())
}

/// The type a value is declared as when a statement is prepared; a NULL declares nothing
/// and takes the type the statement gives its parameter.
fn declared(v: &Value) -> Type {
    match v {
        Value::Null => Type::new("unspecified".into(), 0, Kind::Pseudo, "pg_catalog".into()),
        Value::Int(_) => Type::INT8,
        Value::Real(_) => Type::FLOAT8,
        Value::Text(_) => Type::TEXT,
        Value::Bool(_) => Type::BOOL,
    }
}

fn type_key(v: &Value) -> char {
    match v {
        Value::Null => 'N',
        Value::Int(_) => 'I',
        Value::Real(_) => 'R',
        Value::Text(_) => 'T',
        Value::Bool(_) => 'B',
    }
}

/// A [`Value`] bound to a parameter of whatever type the statement has for it.
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let wrong = || -> Box<dyn StdError + Sync + Send> { format!("cannot bind {:?} to a parameter of type {ty}", self.0).into() };
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::FLOAT8 => (*v as f64).to_sql(ty, out),
                _ => Err(wrong()),
            },
            Value::Real(v) => match *ty {
                Type::FLOAT8 => v.to_sql(ty, out),
                Type::FLOAT4 => (*v as f32).to_sql(ty, out),
                _ => Err(wrong()),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => s.as_str().to_sql(ty, out),
                _ => Err(wrong()),
            },
            Value::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                _ => Err(wrong()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn read_row(row: &postgres::Row) -> Result<Row, DbError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let bad = |e: postgres::Error| DbError::Decode { column: i, message: e.to_string() };
        let v = match *col.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(bad)?.map(Value::Int),
            Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(bad)?.map(|n| Value::Int(n.into())),
            Type::INT2 => row.try_get::<_, Option<i16>>(i).map_err(bad)?.map(|n| Value::Int(n.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map_err(bad)?.map(Value::Real),
            Type::FLOAT4 => row.try_get::<_, Option<f32>>(i).map_err(bad)?.map(|n| Value::Real(n.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(i).map_err(bad)?.map(Value::Bool),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                row.try_get::<_, Option<String>>(i).map_err(bad)?.map(Value::Text)
            }
            Type::VOID => None,
            ref other => {
                return Err(DbError::Decode { column: i, message: format!("column type {other} is not one the store reads") });
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

impl PgConn {
    fn client(&mut self) -> Result<&mut Client, DbError> {
        match self.client.as_mut() {
            Some(c) if !c.is_closed() => Ok(c),
            _ => Err(DbError::Unavailable("the connection to the database was lost".into())),
        }
    }

    /// Reopens a lost connection. Only called where no transaction can be open.
    fn revive(&mut self) -> Result<(), DbError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.statements.clear();
        self.in_tx = false;
        self.client = None;
        self.client = Some(self.config.connect(NoTls).map_err(map_err)?);
        tracing::info!("reconnected to the database");
        Ok(())
    }

    fn statement(&mut self, sql: &str, params: &[Value]) -> Result<Statement, DbError> {
        if !self.in_tx {
            // Outside a transaction (a single-statement read) a lost connection can be
            // replaced here as safely as at BEGIN.
            self.revive()?;
        }
        let mut key = String::with_capacity(sql.len() + params.len() + 1);
        key.extend(params.iter().map(type_key));
        key.push('|');
        key.push_str(sql);
        if let Some(s) = self.statements.get(&key) {
            return Ok(s.clone());
        }
        let types: Vec<Type> = params.iter().map(declared).collect();
        let guarded = self.in_tx && params.contains(&Value::Null);
        if guarded {
            // A failed prepare would abort the transaction; keep it to a savepoint.
            self.client()?.batch_execute("SAVEPOINT cs_prepare").map_err(map_err)?;
        }
        let prepared = match self.client()?.prepare_typed(sql, &types) {
            Ok(s) => Ok(s),
            // A NULL whose type nothing in the statement says (`$2 IS NULL OR status = $2`
            // asks before it says): the store's optional filters are text.
            Err(e) if e.code() == Some(&SqlState::AMBIGUOUS_PARAMETER) || e.code() == Some(&SqlState::INDETERMINATE_DATATYPE) => {
                if guarded {
                    self.client()?.batch_execute("ROLLBACK TO SAVEPOINT cs_prepare").map_err(map_err)?;
                }
                let types: Vec<Type> = params.iter().map(|v| if *v == Value::Null { Type::TEXT } else { declared(v) }).collect();
                self.client()?.prepare_typed(sql, &types).map_err(map_err)
            }
            Err(e) => Err(map_err(e)),
        };
        if guarded {
            let end = if prepared.is_ok() {
                "RELEASE SAVEPOINT cs_prepare"
            } else {
                "ROLLBACK TO SAVEPOINT cs_prepare; RELEASE SAVEPOINT cs_prepare"
            };
            self.client()?.batch_execute(end).map_err(map_err)?;
        }
        let stmt = prepared?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(key, stmt.clone());
        Ok(stmt)
    }
}

impl Conn for PgConn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        let stmt = self.statement(sql, params)?;
        let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.client()?.execute(&stmt, &refs).map_err(map_err)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let stmt = self.statement(sql, params)?;
        let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self.client()?.query(&stmt, &refs).map_err(map_err)?;
        rows.iter().map(read_row).collect()
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        if sql.starts_with("BEGIN") {
            // The start of a transaction is the one safe place to replace a lost connection.
            self.revive()?;
        }
        let r = self.client()?.batch_execute(sql).map_err(map_err);
        // All transaction control comes through here, so this follows it exactly.
        if sql.starts_with("BEGIN") {
            self.in_tx = r.is_ok();
        } else if sql == "COMMIT" || sql == "ROLLBACK" {
            self.in_tx = false;
        }
        r
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn set_workspace(&mut self, workspace_id: &str) -> Result<(), DbError> {
        self.query(
            "SELECT set_config('app.workspace_id', $1, true), set_config('app.all_workspaces', '', true)",
            &[Value::from(workspace_id)],
        )?;
        Ok(())
    }

    fn set_all_workspaces(&mut self) -> Result<(), DbError> {
        self.batch("SELECT set_config('app.all_workspaces', 'on', true)")
    }
}

/// Other replicas' commit announcements, on a connection of their own.
struct PgNotifications {
    config: postgres::Config,
    client: Option<Client>,
    /// Whether a connection was ever made (so the next one is a reconnection).
    ever: bool,
}

impl Notifications for PgNotifications {
    fn wait(&mut self, timeout: Duration) -> Result<Wait, DbError> {
        let mut reconnected = false;
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let mut client = self.config.connect(NoTls).map_err(map_err)?;
            client.batch_execute(&format!("LISTEN {CHANNEL}")).map_err(map_err)?;
            self.client = Some(client);
            reconnected = self.ever;
            self.ever = true;
        }
        let client = self.client.as_mut().expect("connected above");
        match drain(client, timeout) {
            Ok(payloads) => Ok(Wait { payloads, reconnected }),
            Err(e) => {
                self.client = None;
                Err(map_err(e))
            }
        }
    }
}

/// Waits up to `timeout` for a first notification, then takes whatever else has arrived.
fn drain(client: &mut Client, timeout: Duration) -> Result<Vec<String>, postgres::Error> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut payloads = Vec::new();
    let mut notes = client.notifications();
    let first = notes.timeout_iter(timeout).next()?;
    if let Some(n) = first {
        payloads.push(n.payload().to_string());
        let mut more = notes.iter();
        while let Some(n) = more.next()? {
            payloads.push(n.payload().to_string());
        }
    }
    Ok(payloads)
}

/// The oldest PostgreSQL Countersign supports: what it is tested with (docs/OPERATIONS.md).
/// (The schema itself needs 11, for `EXECUTE FUNCTION` in its triggers.)
pub const MIN_SERVER_VERSION: i64 = 150_000;

/// Refuses a server older than [`MIN_SERVER_VERSION`], saying so in words, before a
/// migration would fail half-way with a syntax error.
pub fn check_version(conn: &mut dyn Conn) -> Result<(), String> {
    let row = conn
        .query_opt("SELECT current_setting('server_version_num')::int, current_setting('server_version')", &[])
        .map_err(|e| e.to_string())?;
    let Some(row) = row else { return Err("cannot read the PostgreSQL server's version".into()) };
    let (num, text) = (row.int(0).map_err(|e| e.to_string())?, row.text(1).map_err(|e| e.to_string())?);
    version_refusal(num, &text).map_or(Ok(()), Err)
}

/// Why a server of this version (`server_version_num`, `server_version`) cannot be used.
fn version_refusal(num: i64, text: &str) -> Option<String> {
    (num < MIN_SERVER_VERSION)
        .then(|| format!("this is PostgreSQL {text}; Countersign supports PostgreSQL 15 or newer (docs/OPERATIONS.md)"))
}

/// Refuses to serve as a role that row-level security would not fence: a superuser, a
/// role with BYPASSRLS, or one that owns (or is a member of the owner of) the tables.
pub fn check_server_role(conn: &mut dyn Conn) -> Result<(), String> {
    let row = conn
        .query_opt("SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user", &[])
        .map_err(|e| e.to_string())?
        .ok_or("cannot read the connected role")?;
    let user = row.text(0).map_err(|e| e.to_string())?;
    if row.bool(1).map_err(|e| e.to_string())? {
        return Err(format!(
            "the database role `{user}` is a superuser, which row-level security does not fence; serve as a role made for the server (docs/OPERATIONS.md)"
        ));
    }
    if row.bool(2).map_err(|e| e.to_string())? {
        return Err(format!("the database role `{user}` has BYPASSRLS; serve as a role without it (docs/OPERATIONS.md)"));
    }
    let owned = conn
        .query_opt(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'audit_events' \
             AND pg_has_role(current_user, tableowner, 'MEMBER')",
            &[],
        )
        .map_err(|e| e.to_string())?
        .map(|r| r.int(0))
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    if owned > 0 {
        return Err(format!(
            "the database role `{user}` owns the tables (or is a member of their owner): it could switch row-level security off; \
             serve as a role that is only a member of `{SERVER_ROLE}` (docs/OPERATIONS.md)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_too_old_for_the_schema_is_named_and_refused() {
        let refused = version_refusal(140_011, "14.11").expect("14 is refused");
        assert!(refused.contains("PostgreSQL 14.11") && refused.contains("15 or newer"), "{refused}");
        assert_eq!(version_refusal(150_000, "15.0"), None);
        assert_eq!(version_refusal(170_002, "17.2 (Debian 17.2-1)"), None);
    }
}
