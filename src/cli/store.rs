//! Opening the store a command works on: the SQLite file in a data directory (the
//! default), or a PostgreSQL database named by `--database-url` / COUNTERSIGN_DATABASE_URL.

use std::path::Path;
use std::sync::Arc;

use super::db_path;
use crate::clock::Clock;
use crate::store::SqlStore;
use crate::store::postgres::{self, PgConnector};

/// What the store is opened for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `serve`: on PostgreSQL, only as a role that row-level security fences.
    Serve,
    /// The admin command line (init, workspaces, audit, key rotation).
    Admin,
    /// `admin init` on SQLite may create the file; on PostgreSQL the schema must exist.
    Create,
}

/// Opens the store. On SQLite, migrations are applied as it opens (one process owns the
/// file). On PostgreSQL they are not: the schema belongs to its owner, who runs
/// `countersign admin migrate`; a database at another version is refused.
pub fn open(data_dir: Option<&Path>, database_url: Option<&str>, purpose: Purpose, clock: Clock) -> Result<Arc<SqlStore>, String> {
    match database_url.filter(|u| !u.trim().is_empty()) {
        Some(url) => {
            if !postgres::is_postgres_url(url) {
                return Err(
                    "--database-url must be a postgres:// (or postgresql://) URL; leave it out for the embedded SQLite store".into()
                );
            }
            let connector = PgConnector::new(url).map_err(|e| e.to_string())?;
            let mut conn = connector.open().map_err(|e| format!("cannot connect to the database: {e}"))?;
            postgres::check_version(&mut conn)?;
            if purpose == Purpose::Serve {
                postgres::check_server_role(&mut conn)?;
            }
            drop(conn);
            SqlStore::open_migrated(&connector, postgres::MIGRATIONS, clock).map_err(|e| e.message)
        }
        None => {
            let dir = data_dir.ok_or("give --data-dir (the embedded store) or --database-url (PostgreSQL)")?;
            let db = db_path(dir);
            if purpose != Purpose::Create && !db.exists() {
                return Err(format!(
                    "there is no Countersign data in {}; create it with `countersign admin init --data-dir {} …`",
                    dir.display(),
                    dir.display()
                ));
            }
            SqlStore::open_sqlite(&db, clock).map_err(|e| format!("cannot open the store at {}: {}", db.display(), e.message))
        }
    }
}

/// An exclusive hold on a data directory's SQLite store, released when dropped (or when
/// the process ends, however it ends).
///
/// `serve` holds it for its whole life; the admin commands that change what a running
/// server keeps in memory (its master key, its cached sessions) take it for theirs. On
/// SQLite a server learns of no write but its own, so such a command beside it would
/// leave the server acting on what no longer holds — secrets it cannot open, sessions
/// ended in the file but still accepted. PostgreSQL replicas hear of each other's
/// changes and take no lock.
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the data directory's lock, or says who holds it (`doing`: what was about to run).
pub fn lock_data_dir(dir: &Path, doing: &str) -> Result<DataDirLock, String> {
    let path = dir.join("countersign.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(format!("a Countersign server is running on {} (it holds {}): stop it before {doing}", dir.display(), path.display()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// Whether a command on these arguments works on the data directory's SQLite store.
pub fn on_sqlite(database_url: Option<&str>) -> bool {
    database_url.is_none_or(|u| u.trim().is_empty())
}

/// Where a command says its store is, for messages.
pub fn describe(data_dir: Option<&Path>, database_url: Option<&str>) -> String {
    match database_url.filter(|u| !u.trim().is_empty()) {
        Some(url) => redact(url),
        None => data_dir.map(|d| d.display().to_string()).unwrap_or_default(),
    }
}

/// A database URL without its password, for logs and messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact("postgres://cs:s3cret@db:5432/cs"), "postgres://cs:***@db:5432/cs");
        assert_eq!(super::redact("postgres://cs@db/cs"), "postgres://cs@db/cs");
    }
}
