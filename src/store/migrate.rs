//! Versioned schema migrations, applied in order when the store opens.
//!
//! Each store keeps its own list (the SQL differs), with the same version numbers for the
//! same change. Applied versions are recorded in `schema_migrations`; a database written
//! by a newer Countersign than this one is refused rather than guessed at.

use super::db::{Conn, DbError, Dialect, Value};

/// One step of the schema.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// What [`apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    pub from: i64,
    pub to: i64,
}

/// Brings the schema up to date, each migration in its own transaction.
///
/// Every known migration that is not recorded as applied is applied, in version order,
/// even one numbered below a version already applied: versions are reserved by changes
/// developed side by side, so a database may have met 5 before 3 and 4 existed. (Each
/// migration therefore depends only on those below it that every branch has.)
pub fn apply(conn: &mut dyn Conn, migrations: &[Migration]) -> Result<Applied, MigrateError> {
    conn.batch("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")?;
    let applied: std::collections::BTreeSet<i64> =
        conn.query("SELECT version FROM schema_migrations", &[])?.iter().map(|r| r.int(0)).collect::<Result<_, _>>()?;
    let current = applied.last().copied().unwrap_or(0);
    let latest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if current > latest {
        return Err(MigrateError::TooNew { found: current, known: latest });
    }
    let mut pending: Vec<&Migration> = migrations.iter().filter(|m| !applied.contains(&m.version)).collect();
    pending.sort_by_key(|m| m.version);
    // SQLite changes a table's constraints only by rebuilding it, which its documentation
    // says to do with foreign keys off (dropping the old table would otherwise cascade or
    // fail); each migration's references are checked before it commits instead. The
    // setting cannot change inside a transaction, hence around them all.
    let sqlite = conn.dialect() == Dialect::Sqlite;
    if sqlite && !pending.is_empty() {
        conn.batch("PRAGMA foreign_keys = OFF")?;
    }
    let result = pending.into_iter().try_for_each(|m| apply_one(conn, m, sqlite));
    if sqlite {
        conn.batch("PRAGMA foreign_keys = ON")?;
    }
    result?;
    Ok(Applied { from: current, to: latest.max(current) })
}

/// One migration in its own transaction, recorded as applied in it.
fn apply_one(conn: &mut dyn Conn, m: &Migration, sqlite: bool) -> Result<(), MigrateError> {
    conn.batch(conn.dialect().begin_write())?;
    let step = conn.batch(m.sql).and_then(|_| {
        if sqlite && let Some(row) = conn.query_opt("PRAGMA foreign_key_check", &[])? {
            return Err(DbError::Constraint(format!("a reference left dangling in table {}", row.text(0)?)));
        }
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[Value::Int(m.version), Value::from(m.name), Value::from(crate::clock::format_ts(chrono::Utc::now()))],
        )
    });
    match step {
        Ok(_) => Ok(conn.batch("COMMIT")?),
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(MigrateError::Step { version: m.version, name: m.name, source: e })
        }
    }
}

/// The version a database is at (0 when it has no schema yet).
pub fn current(conn: &mut dyn Conn) -> Result<i64, DbError> {
    let exists = match conn.dialect() {
        super::db::Dialect::Sqlite => {
            conn.query_opt("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'", &[])?.is_some()
        }
        super::db::Dialect::Postgres => {
            conn.query_opt("SELECT to_regclass('schema_migrations')::text", &[])?.and_then(|r| r.opt_text(0).ok().flatten()).is_some()
        }
    };
    if !exists {
        return Ok(0);
    }
    Ok(conn.query_opt("SELECT MAX(version) FROM schema_migrations", &[])?.and_then(|r| r.opt_int(0).ok().flatten()).unwrap_or(0))
}

/// Refuses unless the database is exactly at the latest of `migrations`: for a server that
/// does not own the schema (PostgreSQL), which `countersign admin migrate` keeps.
pub fn check(conn: &mut dyn Conn, migrations: &[Migration]) -> Result<i64, MigrateError> {
    let current = current(conn)?;
    let latest = migrations.iter().map(|m| m.version).max().unwrap_or(0);
    if current > latest {
        return Err(MigrateError::TooNew { found: current, known: latest });
    }
    if current < latest {
        return Err(MigrateError::Behind { found: current, needed: latest });
    }
    Ok(current)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the database is at schema version {found}, and this Countersign needs {needed}; run `countersign admin migrate` as the schema's owner"
    )]
    Behind { found: i64, needed: i64 },
    #[error("the database is at schema version {found}, newer than this Countersign knows ({known}); upgrade Countersign")]
    TooNew { found: i64, known: i64 },
    #[error("migration {version} ({name}) failed: {source}")]
    Step { version: i64, name: &'static str, source: DbError },
    #[error(transparent)]
    Db(#[from] DbError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Connector;
    use crate::store::sqlite::SqliteConnector;

    const fn step(version: i64, sql: &'static str) -> Migration {
        Migration { version, name: "test", sql }
    }

    fn versions(conn: &mut dyn Conn) -> Vec<i64> {
        conn.query("SELECT version FROM schema_migrations ORDER BY version", &[]).unwrap().iter().map(|r| r.int(0).unwrap()).collect()
    }

    #[test]
    fn a_gap_is_tolerated_and_filled_in_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConnector::new(dir.path().join("m.db")).open_writer().unwrap();
        // A binary that knows 1, 2 and 5 (3 and 4 are being written elsewhere).
        let early = [step(1, "CREATE TABLE a (x BIGINT)"), step(2, "CREATE TABLE b (x BIGINT)"), step(5, "CREATE TABLE e (x BIGINT)")];
        apply(&mut *conn, &early).unwrap();
        assert_eq!(versions(&mut *conn), [1, 2, 5]);
        // The merged binary knows all five: 3 and 4 are applied, in order, and nothing twice.
        let merged = [
            step(1, "CREATE TABLE a (x BIGINT)"),
            step(2, "CREATE TABLE b (x BIGINT)"),
            step(4, "CREATE TABLE d (x BIGINT); INSERT INTO c VALUES (4)"),
            step(3, "CREATE TABLE c (x BIGINT)"),
            step(5, "CREATE TABLE e (x BIGINT)"),
        ];
        let done = apply(&mut *conn, &merged).unwrap();
        assert_eq!((done.from, done.to), (5, 5));
        assert_eq!(versions(&mut *conn), [1, 2, 3, 4, 5]);
        apply(&mut *conn, &merged).unwrap();
        // A binary older than the database is still refused.
        assert!(matches!(apply(&mut *conn, &early[..2]), Err(MigrateError::TooNew { found: 5, known: 2 })));
    }

    #[test]
    fn approvals_rebuilt_for_withdrawal_keep_every_row_and_reference() {
        use crate::store::sqlite::MIGRATIONS;
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConnector::new(dir.path().join("m.db")).open_writer().unwrap();
        apply(&mut *conn, &MIGRATIONS[..8]).unwrap();
        conn.batch(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('org_1', 'acme', 't');
             INSERT INTO members (id, workspace_id, email, name, role, password_hash, status, created_at, updated_at)
                 VALUES ('usr_1', 'org_1', 'a@x.test', 'A', 'owner', 'h', 'active', 't', 't'),
                        ('usr_2', 'org_1', 'b@x.test', 'B', 'admin', 'h', 'active', 't', 't');
             INSERT INTO actions (id, workspace_id, tool, status, payload, payload_sha256, requester_id, via, approval_id,
                                  required_approvals, decision, created_at, updated_at)
                 VALUES ('act_1', 'org_1', 'email.send', 'pending_approval', '{}', 'h', 'usr_1', 'agent', 'apv_1', 1, '{}', 't', 't');
             INSERT INTO approvals (id, workspace_id, action_id, tool, payload_sha256, policy, required, requester_id, state, created_at, expires_at)
                 VALUES ('apv_1', 'org_1', 'act_1', 'email.send', 'h', 'approve', 1, 'usr_1', 'approved', 't', 'u');
             INSERT INTO approval_decisions (approval_id, workspace_id, member_id, decision, payload_sha256, created_at)
                 VALUES ('apv_1', 'org_1', 'usr_2', 'approve', 'h', 't');",
        )
        .unwrap();
        apply(&mut *conn, MIGRATIONS).unwrap();
        let row = conn.query_opt("SELECT state, expires_at FROM approvals WHERE id = 'apv_1'", &[]).unwrap().unwrap();
        assert_eq!((row.text(0).unwrap(), row.text(1).unwrap()), ("approved".to_string(), "u".to_string()));
        conn.execute("UPDATE approvals SET state = 'withdrawn' WHERE id = 'apv_1'", &[]).unwrap();
        // Foreign keys are on again, and the decisions still point at the rebuilt table.
        assert!(conn.execute("INSERT INTO approval_decisions (approval_id, workspace_id, member_id, decision, payload_sha256, created_at) VALUES ('apv_9', 'org_1', 'usr_2', 'deny', 'h', 't')", &[]).is_err());
        assert!(conn.query_opt("PRAGMA foreign_key_check", &[]).unwrap().is_none());
        assert!(conn.execute("UPDATE approvals SET state = 'lost' WHERE id = 'apv_1'", &[]).is_err(), "the state is still checked");
    }
}
