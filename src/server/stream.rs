//! The live audit stream: every committed event, to every connected console, in order,
//! with no gap and no repeat, and without any client able to slow the gate.
//!
//! The store's writer hands each committed batch to [`Hub::publish`], which puts the
//! events on a broadcast ring (non-blocking: a full ring overwrites its oldest entries,
//! it never waits). Each SSE connection:
//! 1. subscribes to the ring first, so nothing committed from then on can be missed;
//! 2. backfills from the store everything after the client's `Last-Event-ID`;
//! 3. then forwards from the ring, skipping what it already sent and filling any gap
//!    from the store.
//!
//! A client too slow to keep up falls behind the ring; it is then sent a `lagged` event
//! saying where to resume and disconnected. It reconnects with `Last-Event-ID` and
//! resumes from the store without losing anything.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::{broadcast, mpsc};

use crate::audit::AuditEvent;
use crate::store::{Store, WorkspaceId};

/// How many committed events the ring holds for clients that are catching up.
pub const RING: usize = 8192;
/// Events buffered per connection between the stream task and the socket.
pub const PER_CLIENT: usize = 512;
/// Comment lines sent on a quiet stream so proxies and SSH tunnels keep it open
/// (the default of `ServerConfig::stream_heartbeat`).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Fans committed events out to streams.
#[derive(Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<AuditEvent>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub { tx: broadcast::channel(RING).0 }
    }
}

impl Hub {
    /// Called with each committed batch, in chain order. Never blocks.
    pub fn publish(&self, events: &[AuditEvent]) {
        for e in events {
            // No subscribers is not an error: the events are in the store.
            let _ = self.tx.send(Arc::new(e.clone()));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AuditEvent>> {
        self.tx.subscribe()
    }
}

/// Which events a client wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Event types; `approval.*` matches every approval event.
    pub types: Vec<String>,
    /// Events about this tool.
    pub tool: Option<String>,
    /// Events by this actor (`usr_…`, `tok_…`, or a system task).
    pub actor: Option<String>,
}

impl Filter {
    pub fn matches(&self, e: &AuditEvent) -> bool {
        let type_ok = self.types.is_empty()
            || self.types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => e.event_type.starts_with(prefix),
                None => e.event_type == *t,
            });
        let tool_ok = self.tool.as_ref().is_none_or(|t| {
            e.data.get("tool").and_then(|v| v.as_str()) == Some(t.as_str())
                || e.data.get("target").and_then(|v| v.as_str()) == Some(t.as_str())
                || e.resource.as_deref() == Some(&format!("tool:{t}"))
        });
        let actor_ok = self.actor.as_ref().is_none_or(|a| e.actor.id == *a);
        type_ok && tool_ok && actor_ok
    }
}

fn sse_event(e: &AuditEvent) -> Event {
    Event::default().id(e.seq.to_string()).event("audit").data(serde_json::to_string(e).unwrap_or_default())
}

/// The SSE response for one client, resuming after `after_seq`.
pub fn respond(
    store: Arc<dyn Store>,
    hub: Hub,
    ws: WorkspaceId,
    after_seq: i64,
    filter: Filter,
    heartbeat: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ring = hub.subscribe();
    let (tx, rx) = mpsc::channel::<Event>(PER_CLIENT);
    tokio::spawn(async move {
        tokio::select! {
            _ = pump(store, ring, ws, after_seq, filter, tx.clone()) => {}
            _ = shutdown.cancelled() => {}
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text("heartbeat"))
}

/// Sends a client everything after `last`, from the store then from the ring.
async fn pump(
    store: Arc<dyn Store>,
    mut ring: broadcast::Receiver<Arc<AuditEvent>>,
    ws: WorkspaceId,
    mut last: i64,
    filter: Filter,
    tx: mpsc::Sender<Event>,
) {
    // Backfill. If the client cannot take events as fast as the store gives them, the
    // channel fills and this waits, which is fine: the store is not the ring.
    if backfill(&*store, &ws, &mut last, &filter, &tx).await.is_err() {
        return;
    }
    loop {
        match ring.recv().await {
            Ok(e) => {
                if e.workspace_id != ws.as_str() || e.seq <= last {
                    continue;
                }
                if e.seq > last + 1 {
                    // Something committed that the ring did not show us in order (or was
                    // written by another replica): take it from the store.
                    if backfill(&*store, &ws, &mut last, &filter, &tx).await.is_err() {
                        return;
                    }
                    if e.seq <= last {
                        continue;
                    }
                }
                if filter.matches(&e) {
                    // A full per-client buffer means this client is not reading: tell it
                    // where to resume (in the slot kept for that) and let it go, rather
                    // than hold anything up.
                    if tx.capacity() <= 1 || tx.try_send(sse_event(&e)).is_err() {
                        lagged(&tx, last);
                        return;
                    }
                }
                last = e.seq;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                lagged(&tx, last);
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Tells a client it fell behind and where to resume from, if there is room to say so.
fn lagged(tx: &mpsc::Sender<Event>, last: i64) {
    let data = serde_json::json!({"resume_after_seq": last, "message": "this client fell behind the live stream; reconnect with Last-Event-ID to resume without loss"});
    let _ = tx.try_send(Event::default().event("lagged").data(data.to_string()));
}

/// Sends stored events after `last` until the store has no more.
async fn backfill(store: &dyn Store, ws: &WorkspaceId, last: &mut i64, filter: &Filter, tx: &mpsc::Sender<Event>) -> Result<(), ()> {
    loop {
        let page = store.audit_page(ws, *last, 500).await.map_err(|_| ())?;
        if page.is_empty() {
            return Ok(());
        }
        for e in &page {
            if filter.matches(e) {
                tx.send(sse_event(e)).await.map_err(|_| ())?;
            }
            *last = e.seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, EventDraft, Via};

    fn event(t: &'static str, data: serde_json::Value) -> AuditEvent {
        AuditEvent::seal(EventDraft::new(t, Actor::user("usr_1"), Via::Api).data(data), "org_1", 0, crate::audit::GENESIS_HASH, "t".into())
    }

    #[test]
    fn filters_by_type_prefix_tool_and_actor() {
        let e = event("approval.granted", serde_json::json!({"tool": "email.send"}));
        assert!(Filter::default().matches(&e));
        assert!(Filter { types: vec!["approval.*".into()], ..Default::default() }.matches(&e));
        assert!(!Filter { types: vec!["action.*".into()], ..Default::default() }.matches(&e));
        assert!(Filter { tool: Some("email.send".into()), ..Default::default() }.matches(&e));
        assert!(!Filter { tool: Some("crm.read".into()), ..Default::default() }.matches(&e));
        assert!(Filter { actor: Some("usr_1".into()), ..Default::default() }.matches(&e));
    }
}
