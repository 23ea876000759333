//! Reading the audit log. (Appending happens inside every write: see
//! [`super::engine::WriteTx::append`].)

use async_trait::async_trait;

use super::db::{DbError, Row};
use super::{SqlStore, WorkspaceId};
use crate::audit::{Actor, ActorKind, AuditEvent, Verifier, VerifyReport, Via};
use crate::error::Result;
use crate::params;

/// The most events one page may hold.
pub const MAX_PAGE: i64 = 1000;

/// Events read per round trip while verifying: bounds memory over any length of log.
const VERIFY_CHUNK: i64 = 2000;

#[async_trait]
pub trait AuditLog {
    /// Events with `seq > after_seq`, oldest first, at most `limit` (capped at [`MAX_PAGE`]).
    async fn audit_page(&self, ws: &WorkspaceId, after_seq: i64, limit: i64) -> Result<Vec<AuditEvent>>;
    /// The chain head: the last `seq` and its hash (0 and the genesis hash when empty).
    async fn audit_head(&self, ws: &WorkspaceId) -> Result<(i64, String)>;
    /// Recomputes the whole chain and names the first broken `seq`.
    async fn audit_verify(&self, ws: &WorkspaceId) -> Result<VerifyReport>;
}

pub(crate) const EVENT_COLS: &str =
    "seq, id, ts, workspace_id, event_type, actor_kind, actor_id, via, resource, payload_sha256, outcome, data, prev_hash, hash";

pub(crate) fn event_from_row(r: &Row) -> Result<AuditEvent, DbError> {
    let kind = |s: String| -> Result<ActorKind, DbError> {
        serde_json::from_value(serde_json::Value::String(s)).map_err(|e| DbError::Decode { column: 5, message: e.to_string() })
    };
    let via = |s: String| -> Result<Via, DbError> {
        serde_json::from_value(serde_json::Value::String(s)).map_err(|e| DbError::Decode { column: 7, message: e.to_string() })
    };
    Ok(AuditEvent {
        seq: r.int(0)?,
        id: r.text(1)?,
        ts: r.text(2)?,
        workspace_id: r.text(3)?,
        event_type: r.text(4)?,
        actor: Actor { kind: kind(r.text(5)?)?, id: r.text(6)? },
        via: via(r.text(7)?)?,
        resource: r.opt_text(8)?,
        payload_sha256: r.opt_text(9)?,
        outcome: r.text(10)?,
        data: r.json(11)?,
        prev_hash: r.text(12)?,
        hash: r.text(13)?,
    })
}

#[async_trait]
impl AuditLog for SqlStore {
    async fn audit_page(&self, ws: &WorkspaceId, after_seq: i64, limit: i64) -> Result<Vec<AuditEvent>> {
        let ws = ws.clone();
        let limit = limit.clamp(1, MAX_PAGE + 1);
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let rows = conn.query(
                    &format!("SELECT {EVENT_COLS} FROM audit_events WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
                    params![ws.as_str(), after_seq, limit],
                )?;
                Ok(rows.iter().map(event_from_row).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn audit_head(&self, ws: &WorkspaceId) -> Result<(i64, String)> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let row = conn.query_opt("SELECT seq, hash FROM audit_heads WHERE workspace_id = $1", params![ws.as_str()])?;
                Ok(match row {
                    Some(r) => (r.int(0)?, r.text(1)?),
                    None => (0, crate::audit::GENESIS_HASH.to_string()),
                })
            })
            .await
    }

    async fn audit_verify(&self, ws: &WorkspaceId) -> Result<VerifyReport> {
        let ws = ws.clone();
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let mut verifier = Verifier::new();
                let mut after = 0i64;
                loop {
                    let rows = conn.query(
                        &format!("SELECT {EVENT_COLS} FROM audit_events WHERE workspace_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"),
                        params![ws.as_str(), after, VERIFY_CHUNK],
                    )?;
                    if rows.is_empty() {
                        break;
                    }
                    for row in &rows {
                        let event = match event_from_row(row) {
                            Ok(e) => e,
                            Err(e) => {
                                let seq = row.int(0).unwrap_or(after + 1);
                                let broken = crate::audit::Break { seq, reason: format!("the stored event cannot be read: {e}") };
                                return Ok(VerifyReport::from(&verifier, Some(broken)));
                            }
                        };
                        if let Err(broken) = verifier.push(&event) {
                            return Ok(VerifyReport::from(&verifier, Some(broken)));
                        }
                        after = event.seq;
                    }
                }
                // The head row must agree with the last event: a truncated tail whose head
                // was left behind is caught here.
                let head = conn.query_opt("SELECT seq, hash FROM audit_heads WHERE workspace_id = $1", params![ws.as_str()])?;
                if let Some(h) = head {
                    let (seq, hash) = (h.int(0)?, h.text(1)?);
                    let (vseq, vhash) = verifier.head();
                    if seq != vseq || hash != vhash {
                        let broken = crate::audit::Break {
                            seq: vseq + 1,
                            reason: format!("the chain head says seq {seq} but the log ends at seq {vseq}: events are missing"),
                        };
                        return Ok(VerifyReport::from(&verifier, Some(broken)));
                    }
                }
                Ok(VerifyReport::from(&verifier, None))
            })
            .await
    }
}
