//! Reads for data exports ("your data is yours") that the other resources do not already
//! offer: every approval, oldest first, a page at a time.

use std::collections::HashMap;

use async_trait::async_trait;

use super::actions::{APPROVAL_COLS, APPROVAL_FROM, approval_from_row};
use super::db::DbError;
use super::{SqlStore, WorkspaceId};
use crate::approval::Verdict;
use crate::error::Result;
use crate::model::{Approval, ApprovalDecision};
use crate::params;

/// The most approvals one page holds.
pub const MAX_EXPORT_PAGE: i64 = 1000;

#[async_trait]
pub trait DataExports {
    /// Approvals in every state with ids after `after_id` (from the first when `None`),
    /// oldest first, each with its decisions, at most `limit` (capped at
    /// [`MAX_EXPORT_PAGE`]). Without payloads: an export lists, it does not show.
    async fn approvals_page(&self, ws: &WorkspaceId, after_id: Option<&str>, limit: i64) -> Result<Vec<Approval>>;
}

#[async_trait]
impl DataExports for SqlStore {
    async fn approvals_page(&self, ws: &WorkspaceId, after_id: Option<&str>, limit: i64) -> Result<Vec<Approval>> {
        let ws = ws.clone();
        let after = after_id.unwrap_or("").to_string();
        let limit = limit.clamp(1, MAX_EXPORT_PAGE);
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                let rows = conn.query(
                    &format!(
                        "SELECT {APPROVAL_COLS} FROM {APPROVAL_FROM} \
                         WHERE a.workspace_id = $1 AND a.id > $2 ORDER BY a.id LIMIT $3"
                    ),
                    params![w, after.as_str(), limit],
                )?;
                let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return Ok(Vec::new()) };
                // The page's decisions in one query over the same id range.
                let (first, last) = (first.text(0)?, last.text(0)?);
                let decided = conn.query(
                    "SELECT d.approval_id, d.member_id, d.decision, d.reason, d.payload_sha256, d.created_at, m.email \
                     FROM approval_decisions d LEFT JOIN members m ON m.id = d.member_id \
                     WHERE d.workspace_id = $1 AND d.approval_id >= $2 AND d.approval_id <= $3 \
                     ORDER BY d.approval_id, d.created_at, d.member_id",
                    params![w, first.as_str(), last.as_str()],
                )?;
                let mut decisions: HashMap<String, Vec<ApprovalDecision>> = HashMap::new();
                for r in &decided {
                    decisions.entry(r.text(0)?).or_default().push(ApprovalDecision {
                        member_id: r.text(1)?,
                        decision: if r.text(2)? == "deny" { Verdict::Deny } else { Verdict::Approve },
                        reason: r.opt_text(3)?,
                        payload_sha256: r.text(4)?,
                        created_at: r.text(5)?,
                        member_email: r.opt_text(6)?,
                    });
                }
                let page = rows
                    .iter()
                    .map(|r| {
                        let id = r.text(0)?;
                        approval_from_row(r, decisions.remove(&id).unwrap_or_default())
                    })
                    .collect::<Result<Vec<_>, DbError>>()?;
                Ok(page)
            })
            .await
    }
}
