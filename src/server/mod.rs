//! The HTTP server: thin routes grouped by resource, one authentication extractor, one
//! error type, and the background tasks, all stopped by one shutdown signal.

pub mod auth;
pub mod cache;
pub mod checkpoints;
pub mod connectors;
pub mod error;
pub mod extract;
mod listen;
pub mod openapi;
pub mod routes;
pub mod stream;
pub mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::clock::{Clock, format_ts};
use crate::store::{Store, WorkspaceId};
use crate::vault::MasterKeys;

/// What the server can be told.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long a sign-in lasts.
    pub session_ttl: Duration,
    /// Failed sign-ins allowed per account within `sign_in_window`.
    pub sign_in_per_account: i64,
    /// Failed sign-ins allowed per client address within `sign_in_window`.
    pub sign_in_per_address: i64,
    pub sign_in_window: Duration,
    /// How often a quiet audit stream sends a heartbeat comment.
    pub stream_heartbeat: Duration,
    /// How often the webhook worker looks for deliveries coming due (it is also woken
    /// when deliveries are queued).
    pub webhook_poll_interval: Duration,
    /// How long a webhook receiver has to answer.
    pub webhook_timeout: Duration,
    /// How often each workspace's audit chain head is signed (only when it has moved).
    pub checkpoint_interval: Duration,
    /// How long a finished webhook delivery (delivered, or given up) stays in the
    /// delivery log.
    pub webhook_delivery_retention: Duration,
    /// How often what is kept only for a while (failed sign-ins, finished deliveries) is
    /// looked at and forgotten when its time is up.
    pub prune_interval: Duration,
    /// How long a client has to send a request's headers (or, connected, to start one): a
    /// slow, stalled or silent client is cut off.
    pub header_read_timeout: Duration,
    /// How long a request's body has to arrive whole: else `408 request_timeout`.
    pub body_read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            session_ttl: Duration::from_secs(12 * 3600),
            sign_in_per_account: 5,
            sign_in_per_address: 20,
            sign_in_window: Duration::from_secs(15 * 60),
            stream_heartbeat: stream::HEARTBEAT,
            webhook_poll_interval: webhooks::POLL_INTERVAL,
            webhook_timeout: webhooks::TIMEOUT,
            checkpoint_interval: checkpoints::INTERVAL,
            webhook_delivery_retention: webhooks::RETENTION,
            prune_interval: Duration::from_secs(300),
            header_read_timeout: READ_TIMEOUT,
            body_read_timeout: READ_TIMEOUT,
        }
    }
}

/// The default deadline for a request's headers, and for its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared by every request.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub config: ServerConfig,
    /// argon2 is slow and memory-hungry on purpose; bound how many run at once so a
    /// burst of sign-ins cannot exhaust memory.
    pub password_slots: tokio::sync::Semaphore,
    /// When each token's `last_used_at` was last written, to write it at most once a minute.
    token_touches: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Sign-ins being checked now, per rate-limit key: they count against the limit until
    /// their failure is on record, so a burst sent at once gets no more guesses than the
    /// same attempts one after another (see `routes::sessions::Attempt`).
    pub sign_ins_in_flight: Mutex<HashMap<String, u32>>,
    pub shutdown: CancellationToken,
    /// Connector calls in flight. Each runs in a task of its own, so a client that gives
    /// up cannot cut a call off half-way (its result would go unrecorded); shutdown waits
    /// for them.
    pub executions: tokio_util::task::TaskTracker,
    /// Opens and seals connector secrets.
    pub keys: MasterKeys,
    /// The client connectors call receivers with.
    pub http: reqwest::Client,
    /// Authentication lookups by secret hash, valid while the config epoch holds.
    pub auth_cache: cache::EpochCache<String, crate::store::AuthSubject>,
    /// The gate's reads per (workspace, tool), valid while the config epoch holds.
    pub gate_cache: cache::EpochCache<(WorkspaceId, String), crate::store::GateContext>,
    /// Committed audit events, fanned out to live streams.
    pub hub: stream::Hub,
    /// Wakes the webhook worker when deliveries are queued.
    pub webhook_wake: Arc<tokio::sync::Notify>,
    /// The compiled constitution in force per workspace (or why it cannot be used),
    /// valid while the config epoch holds: publishing moves it.
    pub constitution_cache: cache::EpochCache<WorkspaceId, crate::error::Result<crate::constitution::Compiled>>,
    /// Compiled versions by number, kept across epochs: a published version never
    /// changes, so another configuration change costs a lookup, not a recompile.
    pub compiled_versions: cache::EpochCache<(WorkspaceId, i64), crate::error::Result<crate::constitution::Compiled>>,
    /// What-if simulations run one at a time: each uses every core for up to its time limit.
    pub simulations: tokio::sync::Semaphore,
    /// Signs audit checkpoints.
    pub signer: Arc<crate::checkpoint::Signer>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// How often a token's `last_used_at` is written at most.
const TOUCH_INTERVAL: chrono::Duration = chrono::Duration::seconds(60);

impl AppState {
    /// A state whose checkpoints are signed by a key that lives only in memory (tests,
    /// embedders). `countersign serve` uses [`AppState::with_signer`] and the data
    /// directory's key.
    pub fn new(store: Arc<dyn Store>, clock: Clock, config: ServerConfig, keys: MasterKeys) -> Self {
        Self::with_signer(store, clock, config, keys, crate::checkpoint::Signer::ephemeral())
    }

    pub fn with_signer(
        store: Arc<dyn Store>,
        clock: Clock,
        config: ServerConfig,
        keys: MasterKeys,
        signer: crate::checkpoint::Signer,
    ) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("countersign/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("build the connector HTTP client");
        let hub = stream::Hub::default();
        let publisher = hub.clone();
        store.on_commit(Arc::new(move |events| publisher.publish(events)));
        let webhook_wake = Arc::new(tokio::sync::Notify::new());
        let waker = webhook_wake.clone();
        store.on_deliveries_queued(Arc::new(move || waker.notify_one()));
        AppState(Arc::new(Inner {
            hub,
            store,
            clock,
            config,
            password_slots: tokio::sync::Semaphore::new(2),
            token_touches: Mutex::default(),
            sign_ins_in_flight: Mutex::default(),
            shutdown: CancellationToken::new(),
            executions: tokio_util::task::TaskTracker::new(),
            keys,
            http,
            auth_cache: cache::EpochCache::new(10_000),
            gate_cache: cache::EpochCache::new(10_000),
            webhook_wake,
            constitution_cache: cache::EpochCache::new(1_000),
            compiled_versions: cache::EpochCache::new(1_000),
            simulations: tokio::sync::Semaphore::new(1),
            signer: Arc::new(signer),
        }))
    }

    /// Records that a token was used, in the background, at most once a minute per token.
    pub(crate) fn note_token_use(&self, ws: &WorkspaceId, token_id: &str, stored: Option<&str>, now: DateTime<Utc>) {
        let stale = |t: DateTime<Utc>| now - t >= TOUCH_INTERVAL;
        if stored.and_then(crate::clock::parse_ts).is_some_and(|t| !stale(t)) {
            return;
        }
        {
            let mut touches = self.token_touches.lock().expect("touch lock");
            if touches.get(token_id).is_some_and(|t| !stale(*t)) {
                return;
            }
            // Bound the map: entries older than the interval no longer throttle anything.
            if touches.len() >= 10_000 {
                touches.retain(|_, t| !stale(*t));
            }
            touches.insert(token_id.to_string(), now);
        }
        let (store, ws, id, at) = (self.store.clone(), ws.clone(), token_id.to_string(), format_ts(now));
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(&ws, &id, &at).await {
                tracing::warn!(token = %id, error = %e, "could not record token use");
            }
        });
    }

    /// Runs a password hash or check off the async runtime, a bounded number at a time.
    pub async fn with_password_slot<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> crate::error::Result<T> {
        let _slot = self
            .password_slots
            .acquire()
            .await
            .map_err(|_| crate::error::Error::unavailable("shutting_down", "the server is shutting down"))?;
        tokio::task::spawn_blocking(f).await.map_err(|_| crate::error::Error::internal("password hashing failed"))
    }
}

/// The header that names a request in its answer and in the server's log.
const REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// Makes `req_<ULID>` for each request, replacing any the client sent.
#[derive(Clone, Copy)]
struct NewRequestId;

impl tower_http::request_id::MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<tower_http::request_id::RequestId> {
        axum::http::HeaderValue::from_str(&crate::ids::new_id(crate::ids::IdKind::Request)).ok().map(tower_http::request_id::RequestId::new)
    }
}

/// The whole application: routes, fallbacks and layers.
pub fn app(state: AppState) -> Router {
    let (router, _) = routes::router().split_for_parts();
    router
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(axum::Extension(extract::BodyDeadline(state.config.body_read_timeout)))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(CatchPanicLayer::custom(error::panic_response))
        // Every answer is one workspace's private data, and some carry a secret shown once
        // (a new token, a session): no cache on the way may keep a copy (RFC 9111). Set over
        // whatever is there (the event stream's `no-cache`), outside the panic handler, so
        // no answer goes without it.
        .layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    // Method, path and the request's id only: headers (Authorization!) and
                    // bodies are never logged.
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
                    tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        // Every request gets an id of ours (a client's own is replaced: it would be a
        // client-chosen string in our log), named in the answer, for support to find it.
        .layer(tower_http::request_id::PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(tower_http::request_id::SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
        .layer(axum::middleware::map_request(|mut req: axum::extract::Request| async move {
            req.headers_mut().remove(REQUEST_ID);
            req
        }))
        .with_state(state)
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting connections, lets in-flight requests and connector calls finish,
    /// stops background tasks, and closes the store after its queued writes are durable.
    pub async fn shutdown(self) -> std::io::Result<()> {
        self.state.shutdown.cancel();
        let served = self.task.await.unwrap_or(Ok(()));
        self.state.executions.close();
        self.state.executions.wait().await;
        for b in self.background {
            let _ = b.await;
        }
        let store = self.state.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        served
    }

    /// Stops at once, as a crash would as far as the store can tell: no new connections,
    /// no background work, and the store closed (after the writes already queued) without
    /// waiting for requests or connector calls, so what is still running can record
    /// nothing more. (For tests of what a restart finds.)
    pub async fn abort(self) {
        self.task.abort();
        for b in &self.background {
            b.abort();
        }
        let store = self.state.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
    }

    /// Waits until the server stops (after the shutdown token is cancelled).
    pub async fn wait(self) -> std::io::Result<()> {
        let token = self.state.shutdown.clone();
        token.cancelled().await;
        self.shutdown().await
    }
}

/// Starts serving on `listener` until `state.shutdown` is cancelled.
pub async fn start(listener: TcpListener, state: AppState) -> std::io::Result<Running> {
    let addr = listener.local_addr()?;
    let token = state.shutdown.clone();
    let task = tokio::spawn(listen::serve(listener, app(state.clone()), token, state.config.header_read_timeout));
    let background = vec![
        tokio::spawn(prune(state.clone())),
        tokio::spawn(sweep(state.clone())),
        tokio::spawn(webhooks::run(state.clone())),
        tokio::spawn(checkpoints::schedule(state.clone())),
    ];
    Ok(Running { addr, state, task, background })
}

/// How often open approvals are checked for expiry, and connector calls for interruption.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How many of either one write of the sweeper handles.
const SWEEP_BATCH: usize = 200;
/// How many old deliveries one write forgets.
const PRUNE_BATCH: usize = 1000;

/// Records as events, not only as computed states: the expiry of every approval whose
/// time has come (deciding or executing an expired approval also records it, first), and
/// every connector call that was cut off by a server stopping mid-call — an action that
/// has been `executing` for longer than any call can last ([`connectors::INTERRUPTED_AFTER`]).
async fn sweep(state: AppState) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {
                drain("expire approvals", SWEEP_BATCH, |n| state.store.expire_due(n)).await;
                let started_before = format_ts(state.clock.now() - connectors::INTERRUPTED_AFTER);
                drain("record interrupted connector calls", SWEEP_BATCH, |n| state.store.fail_interrupted(&started_before, n)).await;
            }
        }
    }
}

/// Runs `step` (given at most how many to handle) until it handles less than a full
/// batch, so a backlog is cleared in batches and never holds the writer for long.
async fn drain<F, Fut>(what: &str, batch: usize, mut step: F)
where
    F: FnMut(i64) -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<usize>>,
{
    loop {
        match step(batch as i64).await {
            Ok(n) if n >= batch => continue,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not {what}");
                break;
            }
        }
    }
}

/// Forgets what is kept only for a while: failed sign-ins once they are older than the
/// rate-limit window, finished webhook deliveries once older than their retention.
async fn prune(state: AppState) {
    let mut tick = tokio::time::interval(state.config.prune_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {
                let window = chrono::Duration::from_std(state.config.sign_in_window).unwrap_or_default();
                let before = format_ts(state.clock.now() - window);
                if let Err(e) = state.store.prune_sign_in_failures(&before).await {
                    tracing::warn!(error = %e, "could not prune old sign-in failures");
                }
                let kept = chrono::Duration::from_std(state.config.webhook_delivery_retention).ok();
                if let Some(before) = kept.and_then(|k| state.clock.now().checked_sub_signed(k)).map(format_ts) {
                    drain("forget old webhook deliveries", PRUNE_BATCH, |n| state.store.prune_deliveries(&before, n)).await;
                }
            }
        }
    }
}
