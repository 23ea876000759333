//! One writer, several readers: how the store gets durability and speed at once.
//!
//! Every write is a job sent to the single writer thread. The writer takes the first
//! job, then everything else already waiting (up to [`MAX_BATCH`]), and runs them all in
//! one transaction, each inside its own savepoint so that one job's refusal does not
//! undo its neighbours. Then it commits once, which costs one fsync for the whole batch,
//! and only then answers each job. A caller therefore never hears "done" before its
//! write is on disk, and under load hundreds of writes share each fsync (group commit).
//!
//! The writer also owns the audit chain heads: [`WriteTx::append`] gives each event the
//! next `seq` and the previous hash, so appends are linear by construction.
//!
//! Reads go to a small pool of reader threads with their own connections; they never
//! wait for the writer (WAL on SQLite, MVCC on PostgreSQL).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use super::db::{Conn, Connector, DbError, Dialect, Row, Value};
use super::webhooks::{self, Subscriptions};
use crate::audit::{AuditEvent, EventDraft, GENESIS_HASH};
use crate::clock::{Clock, format_ts};
use crate::error::{Error, Result};

/// The most jobs one transaction carries. Large enough to amortise an fsync over a
/// burst; small enough that one batch never holds the write lock for long.
pub const MAX_BATCH: usize = 512;

/// Called with the events of each committed batch, in chain order.
pub type CommitHook = Arc<dyn Fn(&[AuditEvent]) + Send + Sync>;

/// Called after a committed write queued webhook deliveries (the delivery worker's wake-up).
pub type DeliveryHook = Arc<dyn Fn() + Send + Sync>;

type Reply = Box<dyn FnOnce(Result<()>) + Send>;
type WriteFn = Box<dyn FnOnce(&mut WriteTx<'_>) -> (bool, Reply) + Send>;
type ReadFn = Box<dyn FnOnce(&mut dyn Conn) + Send>;

enum WriteMsg {
    Job(WriteFn),
    Stop,
}

enum ReadMsg {
    Job(ReadFn),
    Stop,
}

/// The running writer and readers.
pub struct Engine {
    stop_maintenance: Sender<()>,
    writer: Sender<WriteMsg>,
    readers: Sender<ReadMsg>,
    reader_count: usize,
    threads: std::sync::Mutex<Vec<JoinHandle<()>>>,
    hook: Arc<std::sync::RwLock<Option<CommitHook>>>,
    delivery_hook: Arc<std::sync::RwLock<Option<DeliveryHook>>>,
    dialect: Dialect,
    /// Moves on every committed change to identity or configuration (see
    /// [`WriteTx::config_changed`]), so callers can cache what those determine.
    epoch: Arc<AtomicU64>,
}

impl Engine {
    /// Opens the connections and starts the threads.
    pub fn start(connector: &dyn Connector, clock: Clock) -> Result<Engine, DbError> {
        let writer_conn = connector.open_writer()?;
        let (wtx, wrx) = crossbeam_channel::unbounded();
        let (rtx, rrx) = crossbeam_channel::unbounded();
        let hook: Arc<std::sync::RwLock<Option<CommitHook>>> = Arc::default();
        let delivery_hook: Arc<std::sync::RwLock<Option<DeliveryHook>>> = Arc::default();
        let epoch = Arc::new(AtomicU64::new(1));
        let mut threads = Vec::new();
        {
            let (hook, epoch) = (hook.clone(), epoch.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("store-writer".into())
                    .spawn(move || writer_loop(writer_conn, wrx, clock, hook, epoch))
                    .expect("spawn store writer"),
            );
        }
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        if let Some(m) = connector.maintenance()? {
            threads.push(
                std::thread::Builder::new()
                    .name("store-maintenance".into())
                    .spawn(move || maintenance_loop(m, stop_rx))
                    .expect("spawn store maintenance"),
            );
        }
        let reader_count = connector.readers().max(1);
        for i in 0..reader_count {
            let conn = connector.open_reader()?;
            let rrx: Receiver<ReadMsg> = rrx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("store-reader-{i}"))
                    .spawn(move || reader_loop(conn, rrx))
                    .expect("spawn store reader"),
            );
        }
        Ok(Engine {
            stop_maintenance: stop_tx,
            writer: wtx,
            readers: rtx,
            reader_count,
            threads: std::sync::Mutex::new(threads),
            hook,
            delivery_hook,
            dialect: connector.dialect(),
            epoch,
        })
    }

    /// The configuration epoch: unchanged means no identity or configuration change has
    /// committed since it was read.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Sets the function told about every committed event (the live stream, webhooks).
    pub fn set_commit_hook(&self, hook: CommitHook) {
        *self.hook.write().expect("hook lock") = Some(hook);
    }

    /// Sets the function told when a committed write queued webhook deliveries.
    pub fn set_delivery_hook(&self, hook: DeliveryHook) {
        *self.delivery_hook.write().expect("hook lock") = Some(hook);
    }

    /// Runs `f` in the next write batch and answers once that batch is durable.
    ///
    /// If `f` returns an error, its savepoint is rolled back (nothing it did remains) and
    /// the error is the answer. If the commit fails, every job of the batch gets the
    /// commit's error, and nothing of the batch remains.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteTx<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let delivery_hook = self.delivery_hook.clone();
        let job: WriteFn = Box::new(move |wtx: &mut WriteTx<'_>| {
            let outcome = f(wtx);
            let ok = outcome.is_ok();
            let queued = ok && wtx.deliveries_queued;
            let reply: Reply = Box::new(move |committed: Result<()>| {
                if queued
                    && committed.is_ok()
                    && let Some(hook) = delivery_hook.read().expect("hook lock").as_ref()
                {
                    hook();
                }
                let _ = tx.send(committed.and(outcome));
            });
            (ok, reply)
        });
        self.writer.send(WriteMsg::Job(job)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs `f` on a reader connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: ReadFn = Box::new(move |conn: &mut dyn Conn| {
            let _ = tx.send(f(conn));
        });
        self.readers.send(ReadMsg::Job(job)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Finishes the work already queued, then stops the threads.
    pub fn close(&self) {
        let _ = self.stop_maintenance.try_send(());
        let _ = self.writer.send(WriteMsg::Stop);
        for _ in 0..self.reader_count {
            let _ = self.readers.send(ReadMsg::Stop);
        }
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.close();
    }
}

/// The answer a caller gets when its job could not run at all (the store is shut down,
/// or its batch's transaction could not be opened). The cause is logged where it happened.
fn stopped() -> Error {
    Error::unavailable("store_unavailable", "the store could not be read or written; nothing was changed; try again")
}

/// What a write job sees: the transaction, the clock, and the audit chain.
pub struct WriteTx<'a> {
    conn: &'a mut dyn Conn,
    now: DateTime<Utc>,
    /// Chain heads as of the last released savepoint, per workspace.
    heads: HashMap<String, (i64, String)>,
    /// Chain heads moved by the job now running.
    job_heads: HashMap<String, (i64, String)>,
    events: Vec<AuditEvent>,
    job_events: Vec<AuditEvent>,
    /// Whether this job changed identity or configuration.
    config_changed: bool,
    /// Enabled webhook subscriptions per workspace, read at most once per batch: as of
    /// the last released savepoint, and as read by the job now running.
    subscriptions: HashMap<String, Subscriptions>,
    job_subscriptions: HashMap<String, Subscriptions>,
    /// Whether this job queued webhook deliveries.
    deliveries_queued: bool,
}

impl<'a> WriteTx<'a> {
    /// The time of this job: every timestamp it writes should be this one.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub fn now_ts(&self) -> String {
        format_ts(self.now)
    }

    /// Says this job changes what authentication or the gate's configuration reads
    /// (members, roles, sessions, tokens, settings, tools, kill switches, the
    /// constitution): once it commits, every cache of those is stale.
    pub fn config_changed(&mut self) {
        self.config_changed = true;
    }

    /// Says this job changed a workspace's webhook subscriptions, so that events appended
    /// after it (in this batch) are matched against the subscriptions as they now are.
    /// Every write to the `webhooks` table must call it.
    pub fn webhooks_changed(&mut self, workspace_id: &str) {
        self.subscriptions.remove(workspace_id);
        self.job_subscriptions.remove(workspace_id);
    }

    /// Says this job made webhook deliveries due, so the delivery worker is woken once it
    /// commits. ([`WriteTx::append`] says so itself when it queues deliveries.)
    pub fn deliveries_queued(&mut self) {
        self.deliveries_queued = true;
    }

    /// Appends an event to a workspace's chain, in this transaction: it is durable
    /// exactly when the change it records is.
    pub fn append(&mut self, workspace_id: &str, draft: EventDraft) -> Result<(), DbError> {
        let (seq, prev) = match self.job_heads.get(workspace_id).or_else(|| self.heads.get(workspace_id)) {
            Some(head) => head.clone(),
            None => {
                let sql = format!("SELECT seq, hash FROM audit_heads WHERE workspace_id = $1{}", self.conn.dialect().for_update());
                match self.conn.query_opt(&sql, &[Value::from(workspace_id)])? {
                    Some(row) => (row.int(0)?, row.text(1)?),
                    None => (0, GENESIS_HASH.to_string()),
                }
            }
        };
        let event = AuditEvent::seal(draft, workspace_id, seq, &prev, format_ts(self.now));
        self.conn.execute(
            "INSERT INTO audit_events (workspace_id, seq, id, ts, event_type, actor_kind, actor_id, via, resource, payload_sha256, outcome, data, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                Value::from(workspace_id),
                Value::Int(event.seq),
                Value::from(&event.id),
                Value::from(&event.ts),
                Value::from(&event.event_type),
                Value::from(enum_text(&event.actor.kind)),
                Value::from(&event.actor.id),
                Value::from(enum_text(&event.via)),
                Value::from(event.resource.clone()),
                Value::from(event.payload_sha256.clone()),
                Value::from(&event.outcome),
                Value::from(event.data.to_string()),
                Value::from(&event.prev_hash),
                Value::from(&event.hash),
            ],
        )?;
        self.job_heads.insert(workspace_id.to_string(), (event.seq, event.hash.clone()));
        // The outbox, in the same transaction: a delivery exists exactly when its event does.
        let subscriptions = match self.job_subscriptions.get(workspace_id).or_else(|| self.subscriptions.get(workspace_id)) {
            Some(s) => s.clone(),
            None => {
                let s = webhooks::enabled_subscriptions(&mut *self.conn, workspace_id)?;
                self.job_subscriptions.insert(workspace_id.to_string(), s.clone());
                s
            }
        };
        if !subscriptions.is_empty() && webhooks::queue_deliveries(&mut *self.conn, &event, &subscriptions, &event.ts)? > 0 {
            self.deliveries_queued = true;
        }
        self.job_events.push(event);
        Ok(())
    }
}

/// A write transaction reads like any connection, so read helpers serve both; it only
/// refuses transaction control, which belongs to the writer loop.
impl Conn for WriteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        self.conn.execute(sql, params)
    }
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        self.conn.query(sql, params)
    }
    fn batch(&mut self, _sql: &str) -> Result<(), DbError> {
        Err(DbError::Unavailable("a write job cannot control its transaction".into()))
    }
    fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }
    fn set_workspace(&mut self, workspace_id: &str) -> Result<(), DbError> {
        self.conn.set_workspace(workspace_id)
    }
}

/// The snake_case text of a unit enum variant, as serde writes it.
pub fn enum_text<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn writer_loop(
    mut conn: Box<dyn Conn>,
    rx: Receiver<WriteMsg>,
    clock: Clock,
    hook: Arc<std::sync::RwLock<Option<CommitHook>>>,
    epoch: Arc<AtomicU64>,
) {
    let begin = conn.dialect().begin_write();
    let mut stop = false;
    while !stop {
        let first = match rx.recv() {
            Ok(WriteMsg::Job(j)) => j,
            Ok(WriteMsg::Stop) | Err(_) => break,
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(WriteMsg::Job(j)) => batch.push(j),
                Ok(WriteMsg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        run_batch(&mut *conn, begin, batch, &clock, &hook, &epoch);
    }
    tracing::debug!("store writer stopped");
}

// Savepoints go through `execute`, not `batch`: prepared once and cached, they are not
// parsed again for every job.
fn run_batch(
    conn: &mut dyn Conn,
    begin: &str,
    batch: Vec<WriteFn>,
    clock: &Clock,
    hook: &std::sync::RwLock<Option<CommitHook>>,
    epoch: &AtomicU64,
) {
    if let Err(e) = conn.batch(begin) {
        // Dropping the jobs unrun drops their reply channels: each caller hears
        // "store unavailable", and nothing was written.
        tracing::error!(error = %e, "could not open a write transaction");
        return;
    }
    let mut replies: Vec<Reply> = Vec::with_capacity(batch.len());
    let mut heads = HashMap::new();
    let mut events = Vec::new();
    let mut failed: Option<DbError> = None;
    let mut config_changed = false;
    let mut subscriptions = HashMap::new();
    for job in batch {
        if failed.is_some() {
            // The transaction is already lost; the rest are dropped unrun (see above).
            drop(job);
            continue;
        }
        if let Err(e) = conn.execute("SAVEPOINT job", &[]).map(drop) {
            failed = Some(e);
            drop(job);
            continue;
        }
        let mut tx = WriteTx {
            conn: &mut *conn,
            now: clock.now(),
            heads: std::mem::take(&mut heads),
            job_heads: HashMap::new(),
            events: std::mem::take(&mut events),
            job_events: Vec::new(),
            config_changed: false,
            subscriptions: std::mem::take(&mut subscriptions),
            job_subscriptions: HashMap::new(),
            deliveries_queued: false,
        };
        let (ok, reply) = job(&mut tx);
        let WriteTx {
            heads: h, job_heads, events: ev, job_events, config_changed: changed, subscriptions: subs, job_subscriptions, ..
        } = tx;
        heads = h;
        events = ev;
        subscriptions = subs;
        let end = if ok {
            conn.execute("RELEASE SAVEPOINT job", &[]).map(drop)
        } else {
            conn.execute("ROLLBACK TO SAVEPOINT job", &[]).map(drop).and_then(|_| conn.execute("RELEASE SAVEPOINT job", &[]).map(drop))
        };
        match end {
            Ok(()) if ok => {
                heads.extend(job_heads);
                events.extend(job_events);
                config_changed |= changed;
                subscriptions.extend(job_subscriptions);
            }
            Ok(()) => {}
            Err(e) => failed = Some(e),
        }
        replies.push(reply);
    }
    // Move each touched chain head once per batch.
    if failed.is_none() {
        for (ws, (seq, hash)) in &heads {
            if let Err(e) = conn.execute(
                "UPDATE audit_heads SET seq = $2, hash = $3 WHERE workspace_id = $1",
                &[Value::from(ws), Value::Int(*seq), Value::from(hash)],
            ) {
                failed = Some(e);
                break;
            }
        }
    }
    let outcome: Result<()> = match failed {
        None => conn.batch("COMMIT").map_err(Error::from),
        Some(e) => Err(Error::from(e)),
    };
    if outcome.is_err() {
        let _ = conn.batch("ROLLBACK");
    } else if config_changed {
        // Before anyone is told "done", so no request that starts after can see the old epoch.
        epoch.fetch_add(1, Ordering::SeqCst);
    }
    if outcome.is_ok()
        && !events.is_empty()
        && let Some(hook) = hook.read().expect("hook lock").as_ref()
    {
        hook(&events);
    }
    for reply in replies {
        reply(outcome.clone());
    }
}

fn maintenance_loop(mut m: super::db::Maintenance, stop: Receiver<()>) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(m.every) {
        if let Err(e) = m.conn.batch(m.statement) {
            tracing::warn!(error = %e, "store maintenance failed; will retry");
        }
    }
}

fn reader_loop(mut conn: Box<dyn Conn>, rx: Receiver<ReadMsg>) {
    while let Ok(ReadMsg::Job(job)) = rx.recv() {
        job(&mut *conn);
    }
}
