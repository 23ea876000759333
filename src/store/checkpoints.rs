//! Signed checkpoints of the audit chain, kept so their history survives.
//!
//! Keeping a checkpoint writes no audit event: an event would move the head the
//! checkpoint just signed, and the scheduler would then sign again, for ever. The table is
//! its own record, append-only like the log.

use async_trait::async_trait;

use super::db::{Conn, DbError, Row};
use super::{SqlStore, WorkspaceId};
use crate::checkpoint::{ALGORITHM, Checkpoint};
use crate::error::{Error, Result};
use crate::params;

/// The most checkpoints one listing returns.
pub const MAX_CHECKPOINT_PAGE: i64 = 1000;

#[async_trait]
pub trait Checkpoints {
    /// Keeps a signed checkpoint of `ws`'s chain. Only the first signature of each head
    /// (per signing key) is kept; returns whether this one was.
    async fn record_checkpoint(&self, ws: &WorkspaceId, checkpoint: &Checkpoint) -> Result<bool>;
    /// Kept checkpoints, newest first: those with `seq < before_seq` (all when `None`),
    /// at most `limit` (capped at [`MAX_CHECKPOINT_PAGE`]).
    async fn list_checkpoints(&self, ws: &WorkspaceId, before_seq: Option<i64>, limit: i64) -> Result<Vec<Checkpoint>>;
    /// Every workspace whose chain head has moved past its last kept checkpoint, with that
    /// head: `(workspace, seq, hash)`. Across workspaces: for the signing schedule only.
    async fn heads_to_checkpoint(&self, limit: i64) -> Result<Vec<(WorkspaceId, i64, String)>>;
}

const COLS: &str = "workspace_id, seq, hash, ts, key_id, public_key, signature";

fn from_row(r: &Row) -> Result<Checkpoint, DbError> {
    Ok(Checkpoint {
        workspace_id: r.text(0)?,
        seq: r.int(1)?,
        hash: r.text(2)?,
        ts: r.text(3)?,
        key_id: r.text(4)?,
        algorithm: ALGORITHM.to_string(),
        public_key: r.text(5)?,
        signature: r.text(6)?,
    })
}

#[async_trait]
impl Checkpoints for SqlStore {
    async fn record_checkpoint(&self, ws: &WorkspaceId, checkpoint: &Checkpoint) -> Result<bool> {
        if checkpoint.workspace_id != ws.as_str() {
            return Err(Error::internal("a checkpoint was offered to another workspace's history"));
        }
        let (ws, c) = (ws.clone(), checkpoint.clone());
        self.engine
            .write(move |tx| {
                tx.set_workspace(ws.as_str())?;
                let n = tx.execute(
                    &format!(
                        "INSERT INTO audit_checkpoints ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (workspace_id, seq, key_id) DO NOTHING"
                    ),
                    params![ws.as_str(), c.seq, &c.hash, &c.ts, &c.key_id, &c.public_key, &c.signature],
                )?;
                Ok(n == 1)
            })
            .await
    }

    async fn list_checkpoints(&self, ws: &WorkspaceId, before_seq: Option<i64>, limit: i64) -> Result<Vec<Checkpoint>> {
        let ws = ws.clone();
        let limit = limit.clamp(1, MAX_CHECKPOINT_PAGE + 1);
        let before = before_seq.unwrap_or(i64::MAX);
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let rows = conn.query(
                    &format!(
                        "SELECT {COLS} FROM audit_checkpoints WHERE workspace_id = $1 AND seq < $2 ORDER BY seq DESC, key_id LIMIT $3"
                    ),
                    params![ws.as_str(), before, limit],
                )?;
                Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn heads_to_checkpoint(&self, limit: i64) -> Result<Vec<(WorkspaceId, i64, String)>> {
        self.engine
            .read(move |conn| {
                // The schedule signs every workspace's head: a cross-workspace read.
                conn.set_all_workspaces()?;
                let rows = conn.query(
                    "SELECT h.workspace_id, h.seq, h.hash FROM audit_heads h \
                     WHERE h.seq > COALESCE((SELECT MAX(c.seq) FROM audit_checkpoints c WHERE c.workspace_id = h.workspace_id), 0) \
                     ORDER BY h.workspace_id LIMIT $1",
                    params![limit],
                )?;
                rows.iter()
                    .map(|r| Ok((WorkspaceId::trusted(r.text(0)?), r.int(1)?, r.text(2)?)))
                    .collect::<Result<_, DbError>>()
                    .map_err(Error::from)
            })
            .await
    }
}
