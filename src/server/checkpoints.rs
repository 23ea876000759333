//! Signing the audit chain heads: on a schedule, and on request.
//!
//! Every `ServerConfig::checkpoint_interval` the server signs the head of each workspace
//! whose head has moved since its last kept checkpoint, and keeps the result. Signing is
//! not itself audited: an event would move the head it just signed, and the next tick
//! would sign that, and so on for ever. The kept checkpoints are their own record
//! (`GET /v1/audit/checkpoints`), append-only like the log.

use std::time::Duration;

use crate::checkpoint::Checkpoint;
use crate::clock::format_ts;
use crate::error::Result;
use crate::server::AppState;
use crate::store::WorkspaceId;

/// The default signing interval.
pub const INTERVAL: Duration = Duration::from_secs(300);

/// Heads signed per round trip to the store by the schedule.
const BATCH: i64 = 500;

/// Signs `ws`'s head as it is now, keeps the checkpoint if this head has none yet, and
/// returns it. Keeping is best effort: the signed statement is true whether or not the
/// history could be written, so a failure there is logged, not returned.
pub async fn sign_head(state: &AppState, ws: &WorkspaceId) -> Result<Checkpoint> {
    let (seq, hash) = state.store.audit_head(ws).await?;
    let checkpoint = state.signer.sign(ws.as_str(), seq, &hash, &format_ts(state.clock.now()));
    // Only a head not kept yet costs a write: polling this route leaves the writer alone.
    let kept = match state.store.list_checkpoints(ws, None, 1).await {
        Ok(latest) => latest.first().is_some_and(|c| c.seq >= seq),
        Err(e) => {
            tracing::warn!(workspace = %ws, error = %e, "could not read the kept checkpoints");
            true
        }
    };
    if seq > 0
        && !kept
        && let Err(e) = state.store.record_checkpoint(ws, &checkpoint).await
    {
        tracing::warn!(workspace = %ws, seq, error = %e, "could not keep a signed checkpoint");
    }
    Ok(checkpoint)
}

/// Signs and keeps the head of every workspace whose head has moved since its last kept
/// checkpoint. Returns how many were signed.
pub async fn sign_due(state: &AppState) -> Result<usize> {
    let mut signed = 0;
    loop {
        let due = state.store.heads_to_checkpoint(BATCH).await?;
        let full = due.len() as i64 == BATCH;
        for (ws, seq, hash) in due {
            let checkpoint = state.signer.sign(ws.as_str(), seq, &hash, &format_ts(state.clock.now()));
            state.store.record_checkpoint(&ws, &checkpoint).await?;
            signed += 1;
        }
        if !full {
            return Ok(signed);
        }
    }
}

/// The schedule: runs until shutdown.
pub async fn schedule(state: AppState) {
    let mut tick = tokio::time::interval(state.config.checkpoint_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => match sign_due(&state).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(heads = n, "signed audit checkpoints"),
                Err(e) => tracing::warn!(error = %e, "could not sign audit checkpoints"),
            },
        }
    }
}
