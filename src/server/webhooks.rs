//! The webhook delivery worker: drains the outbox the store writes with every event.
//!
//! One task per server. It wakes when a commit queues deliveries (the store's delivery
//! hook), when an attempt finishes, and on a short real-time tick (for retries coming due
//! and for time moved by tests); then it asks a reader whether anything is due and, only
//! if so, claims a few due deliveries in one small write job. Each claim holds a lease:
//! a server that dies mid-attempt leaves leases that simply run out, after which the
//! deliveries are due again; a server that shuts down cleanly gives its leases back.
//!
//! Each attempt runs on its own task (at most [`MAX_IN_FLIGHT`], at most
//! [`PER_WEBHOOK_IN_FLIGHT`] per subscription) with a timeout, so a slow receiver never
//! holds up the gate or other receivers. Deliveries are at least once: a receiver may see
//! a delivery again (after a crash or a timeout), always with the same `webhook-id`.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinSet;

use super::AppState;
use crate::clock::Clock;
use crate::store::{AttemptResult, ClaimedDelivery, DeliveryJob};
use crate::vault;
use crate::webhook::{self, Payload};

/// Attempts in flight at once, over every subscription.
pub const MAX_IN_FLIGHT: usize = 8;
/// Attempts in flight at once for one subscription.
pub const PER_WEBHOOK_IN_FLIGHT: usize = 4;
/// How often the worker looks for deliveries coming due (the default of
/// `ServerConfig::webhook_poll_interval`).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a receiver has to answer (the default of `ServerConfig::webhook_timeout`).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a receiver's answer is read (and then dropped).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long a finished delivery stays in the delivery log by default: well past the
/// longest retry schedule (about 32 hours), long enough to look into a month's problems.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a claim holds a delivery: well beyond the attempt's timeout.
fn lease(timeout: Duration) -> chrono::Duration {
    chrono::Duration::from_std(timeout).unwrap_or_default() + chrono::Duration::seconds(60)
}

/// Runs until `state.shutdown`; then abandons attempts in flight and gives their
/// deliveries back, due at once.
pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(state.config.webhook_poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut claims: HashMap<tokio::task::Id, ClaimedDelivery> = HashMap::new();
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = tick.tick() => {}
            _ = state.webhook_wake.notified() => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => forget(&mut claims, done),
        }
        if let Err(e) = fill(&state, &mut tasks, &mut claims).await {
            tracing::warn!(error = %e, "could not claim webhook deliveries");
        }
    }
    tasks.abort_all();
    while let Some(done) = tasks.join_next_with_id().await {
        // Attempts that finished before the abort keep what they recorded; the rest are
        // given back.
        if let Ok((id, ())) = done {
            claims.remove(&id);
        }
    }
    let abandoned: Vec<ClaimedDelivery> = claims.into_values().collect();
    if let Err(e) = state.store.release_deliveries(abandoned).await {
        tracing::warn!(error = %e, "could not give back webhook deliveries at shutdown; their leases will run out");
    }
}

/// Drops a finished attempt's claim: it recorded its outcome (or, if it failed without
/// recording one, its lease runs out).
fn forget(claims: &mut HashMap<tokio::task::Id, ClaimedDelivery>, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
    let id = match done {
        Ok((id, ())) => id,
        Err(e) => e.id(),
    };
    claims.remove(&id);
}

/// Claims as many due deliveries as there is room for and starts their attempts.
async fn fill(
    state: &AppState,
    tasks: &mut JoinSet<()>,
    claims: &mut HashMap<tokio::task::Id, ClaimedDelivery>,
) -> crate::error::Result<()> {
    loop {
        while let Some(done) = tasks.try_join_next_with_id() {
            forget(claims, done);
        }
        let room = MAX_IN_FLIGHT.saturating_sub(tasks.len());
        if room == 0 || !state.store.deliveries_due().await? {
            return Ok(());
        }
        let in_flight: Vec<ClaimedDelivery> = claims.values().cloned().collect();
        let claimed = state.store.claim_deliveries(room, PER_WEBHOOK_IN_FLIGHT, in_flight, lease(state.config.webhook_timeout)).await?;
        if claimed.is_empty() {
            return Ok(());
        }
        let more = claimed.len() == room;
        for c in claimed {
            let handle = tasks.spawn(attempt(state.clone(), c.clone()));
            claims.insert(handle.id(), c);
        }
        if !more {
            return Ok(());
        }
    }
}

/// One attempt of one claimed delivery, recorded.
async fn attempt(state: AppState, claim: ClaimedDelivery) {
    let job = match state.store.delivery_job(&claim.workspace, &claim.id).await {
        Ok(Some(job)) => job,
        // Deleted with its subscription meanwhile.
        Ok(None) => return,
        Err(e) => {
            // Leave the lease to run out: the delivery is tried again then.
            tracing::warn!(delivery = %claim.id, error = %e, "could not read a webhook delivery");
            return;
        }
    };
    let result = if job.enabled {
        post(&state.http, &state.keys, &state.clock, claim.workspace.as_str(), &job, state.config.webhook_timeout).await
    } else {
        AttemptResult::Failed { status: None, error: "not attempted: the webhook is disabled".into() }
    };
    match state.store.record_attempt(&claim.workspace, &claim.id, result, webhook::jitter_unit()).await {
        Ok(status) => {
            tracing::debug!(delivery = %claim.id, webhook = %job.webhook_id, status = status.as_str(), "webhook attempt recorded")
        }
        Err(e) => tracing::warn!(delivery = %claim.id, error = %e, "could not record a webhook attempt; its lease will run out"),
    }
}

/// Signs and sends one delivery. Errors are described without the URL's query, without
/// headers, and never with a secret.
pub async fn post(
    client: &reqwest::Client,
    keys: &vault::MasterKeys,
    clock: &Clock,
    ws: &str,
    job: &DeliveryJob,
    timeout: Duration,
) -> AttemptResult {
    let body = match serde_json::to_vec(&Payload::new(&job.event)) {
        Ok(b) => b,
        Err(e) => return AttemptResult::Failed { status: None, error: format!("the event could not be serialised: {e}") },
    };
    // The current secret first, then the previous one while its grace period runs.
    let aad = vault::webhook_secret_aad(ws, &job.webhook_id);
    let mut signing_keys = Vec::with_capacity(2);
    for sealed in std::iter::once(&job.secret).chain(job.previous_secret.as_ref().map(|(s, _)| s)) {
        // Fail closed: a delivery that cannot be signed is not sent.
        let key = keys.open(sealed, &aad).ok().and_then(|s| webhook::secret_key(&s));
        match key {
            Some(k) => signing_keys.push(k),
            None => {
                return AttemptResult::Failed {
                    status: None,
                    error: "not sent: the signing secret could not be opened with the server's master key".into(),
                };
            }
        }
    }
    let timestamp = clock.now().timestamp();
    let signature = webhook::signature_header(&signing_keys, &job.delivery_id, timestamp, &body);
    let sent = client
        .post(&job.url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &job.delivery_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            let error = if e.is_timeout() {
                format!("no answer within {} ms", timeout.as_millis())
            } else if e.is_connect() {
                "could not connect to the receiver".to_string()
            } else {
                format!("the request failed: {}", e.without_url())
            };
            return AttemptResult::Failed { status: None, error };
        }
    };
    let status = resp.status();
    // Read a bounded part of the answer so the connection can be reused; keep none of it.
    let mut read = 0usize;
    let mut stream = resp.bytes_stream();
    // (The request's timeout covers reading the body too.)
    while read < MAX_RESPONSE_BYTES {
        match stream.next().await {
            Some(Ok(chunk)) => read += chunk.len(),
            _ => break,
        }
    }
    if status.is_success() {
        AttemptResult::Delivered { status: status.as_u16() }
    } else if status == reqwest::StatusCode::GONE {
        AttemptResult::Gone
    } else {
        let reason = status.canonical_reason().map(|r| format!(" {r}")).unwrap_or_default();
        AttemptResult::Failed { status: Some(status.as_u16()), error: format!("the receiver answered {}{reason}", status.as_u16()) }
    }
}
