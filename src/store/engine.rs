//! One writer, several readers: how the store gets durability and speed at once.
//!
//! Every write is a job sent to the single writer thread. The writer takes the first
//! job, then everything else already waiting (up to [`MAX_BATCH`]), and runs them all in
//! one transaction, so that one job's refusal leaves nothing of it and does not undo its
//! neighbours (each job in its own savepoint, or on SQLite none until one is needed: see
//! [`Batch`]). Then it commits once, which costs one fsync for the whole batch,
//! and only once that fsync is done are the jobs answered. A caller therefore never hears
//! "done" before its write is on disk, and under load hundreds of writes share each fsync
//! (group commit). On SQLite the fsync is pipelined: the COMMIT only writes the log, and a
//! syncer thread syncs it and answers while the writer runs the next batch ([`Publisher`]).
//!
//! The writer also owns the audit chain heads: [`WriteTx::append`] gives each event the
//! next `seq` and the previous hash, so appends are linear by construction.
//!
//! Reads go to a small pool of reader threads with their own connections; they never
//! wait for the writer (WAL on SQLite, MVCC on PostgreSQL).
//!
//! ## Several replicas on one PostgreSQL database
//!
//! Each replica has its own writer, so several batches can be open at once. They stay
//! correct by locking what they change: an append reads its workspace's `audit_heads` row
//! `FOR UPDATE`, so the chains stay linear, and a batch that touched a workspace holds that
//! row until it commits (per workspace, the replicas' batches take turns; within a replica,
//! group commit still batches). Two batches must never wait on each other (batch A holds
//! workspace 1 and waits for 2 while B holds 2 and waits for 1), so only a batch's first
//! job may wait for a lock as long as it takes. Once a job's work is kept, the batch sets a
//! short lock timeout; a later job that would wait longer, or that the database picks as a
//! deadlock victim, is rolled back to its savepoint and run again at the head of the next
//! batch ([`DbError::Busy`]). Jobs are therefore `FnMut`: a job may run more than once, and
//! only its last run's answer is given.
//!
//! A batch also announces its events (`NOTIFY`) and moves the shared configuration epoch in
//! its own transaction; a listener thread per replica publishes other replicas' events to
//! this one's commit hook (the live stream), reading them from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use super::audit_log::{EVENT_COLS, event_from_row};
use super::db::{Conn, Connector, DbError, Dialect, Notifications, Row, Value};
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

/// How often one job may be run again after losing a lock race before it is refused.
const MAX_ATTEMPTS: u32 = 8;

/// One write job: what to run (perhaps more than once), and how to answer.
struct Job {
    /// Runs the job in the transaction; says whether it succeeded.
    run: Box<dyn FnMut(&mut WriteTx<'_>) -> bool + Send>,
    /// Answers the caller with the batch's outcome and the job's last result.
    finish: Box<dyn FnOnce(Result<()>) + Send>,
    attempts: u32,
}

type ReadFn = Box<dyn FnOnce(&mut dyn Conn) + Send>;

/// A job's last result, and whether it queued webhook deliveries.
type JobResult<T> = (Result<T>, bool);

enum WriteMsg {
    Job(Job),
    Stop,
}

enum ReadMsg {
    /// A read job, and whether it runs in a read transaction (see [`Dialect::begin_read`]).
    Job(ReadFn, bool),
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
    /// [`WriteTx::config_changed`]), so callers can cache what those determine. (On
    /// PostgreSQL the epoch every replica reads is in the database; this one is this
    /// process's alone.)
    epoch: Arc<AtomicU64>,
    /// Tells the listener thread to stop.
    stopping: Arc<AtomicBool>,
    /// With a pipelined writer: how far the log is on disk, so that reads wait for it.
    durability: Option<Arc<Durability>>,
}

/// How far a pipelined writer's log is on disk (see [`Publisher`]).
///
/// A committed batch is visible to readers before the syncer has made it durable. So that
/// nobody — not even a reader — learns of a write that a power cut could still take back
/// (a signed checkpoint of a head that then vanishes would look like tampering), a read
/// is answered only once every batch committed before it finished is synced: usually at
/// once, at most one sync later.
struct Durability {
    /// Batches committed, counted just before each COMMIT: a reader that saw a batch
    /// counts it when it looks afterwards.
    committed: AtomicU64,
    synced: tokio::sync::watch::Sender<Synced>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Synced {
    /// Batches made durable (every batch counted in `committed` is, in order, eventually).
    batches: u64,
    /// A sync failed: nothing committed after the last good one is known to be on disk.
    failed: bool,
}

impl Durability {
    fn new() -> Self {
        Durability { committed: AtomicU64::new(0), synced: tokio::sync::watch::Sender::new(Synced::default()) }
    }

    /// Records that a sync failed; true the first time.
    fn fail(&self) -> bool {
        self.synced.send_if_modified(|s| !std::mem::replace(&mut s.failed, true))
    }

    /// Waits until the first `batches` batches are on disk.
    async fn reached(&self, batches: u64) -> Result<()> {
        let now = *self.synced.borrow();
        let now = if now.batches >= batches || now.failed {
            now
        } else {
            *self.synced.subscribe().wait_for(|s| s.batches >= batches || s.failed).await.map_err(|_| stopped())?
        };
        if now.batches >= batches { Ok(()) } else { Err(unsynced()) }
    }
}

impl Engine {
    /// Opens the connections and starts the threads.
    pub fn start(connector: &dyn Connector, clock: Clock) -> Result<Engine, DbError> {
        let (writer_conn, log) = match connector.open_pipelined_writer()? {
            Some(w) => (w.conn, Some(w.log)),
            None => (connector.open_writer()?, None),
        };
        let durability = log.as_ref().map(|_| Arc::new(Durability::new()));
        let writer_housekeeping = connector.writer_housekeeping();
        let (wtx, wrx) = crossbeam_channel::unbounded();
        let (rtx, rrx) = crossbeam_channel::unbounded();
        let hook: Arc<std::sync::RwLock<Option<CommitHook>>> = Arc::default();
        let delivery_hook: Arc<std::sync::RwLock<Option<DeliveryHook>>> = Arc::default();
        let epoch = Arc::new(AtomicU64::new(1));
        let stopping = Arc::new(AtomicBool::new(false));
        let dialect = connector.dialect();
        // Tells this replica's announcements from the others'.
        let replica = crate::ids::new_id(crate::ids::IdKind::Event).replacen("evt_", "rep_", 1);
        let mut threads = Vec::new();
        // Set by the maintenance thread after each pass, so the writer's own housekeeping
        // follows it and finds little left to do.
        let maintained = Arc::new(AtomicBool::new(false));
        {
            let (hook, epoch, replica, maintained, durability) =
                (hook.clone(), epoch.clone(), replica.clone(), maintained.clone(), durability.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("store-writer".into())
                    .spawn(move || {
                        let publish = Publisher::start(log.zip(durability), hook);
                        let housekeeping = writer_housekeeping.map(|h| (h, maintained));
                        writer_loop(writer_conn, wrx, clock, publish, epoch, replica, housekeeping)
                    })
                    .expect("spawn store writer"),
            );
        }
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
        if let Some(m) = connector.maintenance()? {
            threads.push(
                std::thread::Builder::new()
                    .name("store-maintenance".into())
                    .spawn(move || maintenance_loop(m, stop_rx, maintained))
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
                    .spawn(move || reader_loop(conn, rrx, dialect))
                    .expect("spawn store reader"),
            );
        }
        if let Some(source) = connector.notifications() {
            let conn = connector.open_reader()?;
            let (hook, stopping) = (hook.clone(), stopping.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("store-listener".into())
                    .spawn(move || listen_loop(source, conn, replica, hook, stopping))
                    .expect("spawn store listener"),
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
            dialect,
            epoch,
            stopping,
            durability,
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
    /// If `f` returns an error, nothing it did remains and the error is the answer. If the
    /// commit fails, every job of the batch gets the commit's error, and nothing of the
    /// batch remains. `f` may run more than once (on PostgreSQL, after losing a lock race
    /// to another replica; on SQLite, when a later job of its batch is refused after it
    /// wrote: see [`Batch`]): each run starts from a clean state, and the answer is the
    /// last run's.
    pub async fn write<T, F>(&self, mut f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut WriteTx<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let delivery_hook = self.delivery_hook.clone();
        let slot: Arc<std::sync::Mutex<Option<JobResult<T>>>> = Arc::default();
        let run = {
            let slot = slot.clone();
            Box::new(move |wtx: &mut WriteTx<'_>| {
                let outcome = f(wtx);
                let ok = outcome.is_ok();
                let queued = ok && wtx.deliveries_queued;
                *slot.lock().expect("job slot") = Some((outcome, queued));
                ok
            })
        };
        let finish = Box::new(move |committed: Result<()>| {
            let (outcome, queued) = slot.lock().expect("job slot").take().unwrap_or_else(|| (Err(stopped()), false));
            if queued
                && committed.is_ok()
                && let Some(hook) = delivery_hook.read().expect("hook lock").as_ref()
            {
                hook();
            }
            let _ = tx.send(committed.and(outcome));
        });
        self.writer.send(WriteMsg::Job(Job { run, finish, attempts: 0 })).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Whether `sql` finds any row in any workspace: a background task's look before it
    /// takes the writer, whose every batch costs a commit and a sync even when it changes
    /// nothing.
    pub async fn any_anywhere(&self, sql: &'static str, params: Vec<Value>) -> Result<bool> {
        self.read(move |conn| {
            conn.set_all_workspaces()?;
            Ok(conn.query_opt(sql, &params)?.is_some())
        })
        .await
    }

    /// Runs `f` on a reader connection (in a read transaction where the store needs one).
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<T> + Send + 'static,
    {
        self.read_with(f, true).await
    }

    /// Runs a single-statement read on a reader connection outside any transaction: one
    /// round trip (the configuration epoch, read on every request).
    pub async fn read_one<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<T> + Send + 'static,
    {
        self.read_with(f, false).await
    }

    async fn read_with<T, F>(&self, f: F, in_tx: bool) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<(Result<T>, u64)>();
        let durability = self.durability.clone();
        let job: ReadFn = Box::new(move |conn: &mut dyn Conn| {
            let out = f(conn);
            // Looked at after the read: it counts every batch the read could have seen.
            let seen = durability.map_or(0, |d| d.committed.load(Ordering::SeqCst));
            let _ = tx.send((out, seen));
        });
        self.readers.send(ReadMsg::Job(job, in_tx)).map_err(|_| stopped())?;
        let (out, seen) = rx.await.map_err(|_| stopped())?;
        if let Some(d) = &self.durability {
            d.reached(seen).await?;
        }
        out
    }

    /// Finishes the work already queued, then stops the threads.
    pub fn close(&self) {
        self.stopping.store(true, Ordering::SeqCst);
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

/// The configuration a decision was made under: the server's epoch (which caches key on;
/// `Caller::epoch`) and its workspace's configuration version (read with the gate's
/// context).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecidedUnder {
    pub epoch: u64,
    pub workspace_version: i64,
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
    /// Whether a job before this one in the batch did (committed with it, not yet counted
    /// in any epoch).
    earlier_config_changed: bool,
    /// This process's configuration epoch while the batch runs, where that is the epoch
    /// callers read (SQLite: only this thread moves it, between batches); `None` where the
    /// epoch lives in the database (PostgreSQL, shared by every replica).
    epoch_at_batch: Option<u64>,
    /// Enabled webhook subscriptions per workspace, read at most once per batch: as of
    /// the last released savepoint, and as read by the job now running.
    subscriptions: HashMap<String, Subscriptions>,
    job_subscriptions: HashMap<String, Subscriptions>,
    /// Whether this job queued webhook deliveries.
    deliveries_queued: bool,
    /// Whether this job lost a race to another replica and should run again.
    retry: bool,
    /// Whether a statement of this job failed (it may have been refused for it).
    statement_failed: bool,
}

impl<'a> WriteTx<'a> {
    /// Says this job lost a race with another replica's transaction (e.g. both inserted
    /// the same key) and must run again, from a clean savepoint, in the next batch, where
    /// it will see what the other committed. Return an error after calling it.
    pub fn retry_later(&mut self) -> DbError {
        self.retry = true;
        DbError::Busy("another transaction wrote the same row first".into())
    }

    /// Notes a lock race in a statement's outcome (see [`WriteTx::retry_later`]).
    fn noting<T>(&mut self, r: Result<T, DbError>) -> Result<T, DbError> {
        match &r {
            Err(DbError::Busy(_)) => {
                self.retry = true;
                self.statement_failed = true;
            }
            Err(_) => self.statement_failed = true,
            Ok(_) => {}
        }
        r
    }

    /// The time of this job: every timestamp it writes should be this one.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    pub fn now_ts(&self) -> String {
        format_ts(self.now)
    }

    /// Runs `f` on each row `sql` finds in any workspace (it selects `workspace_id, id`),
    /// fenced to that row's workspace: PostgreSQL's row-level security lets a read cross
    /// workspaces, never a write. For the background tasks that act for no caller.
    /// Returns how many `f` says it handled.
    pub fn each_in_its_workspace<F>(&mut self, sql: &str, params: &[Value], mut f: F) -> Result<usize>
    where
        F: FnMut(&mut Self, &str, &str) -> Result<bool>,
    {
        self.set_all_workspaces()?;
        let rows = self.query(sql, params)?;
        let mut handled = 0;
        for row in &rows {
            let (w, id) = (row.text(0)?, row.text(1)?);
            self.set_workspace(&w)?;
            handled += f(self, &w, &id)? as usize;
        }
        Ok(handled)
    }

    /// Says this job changes what authentication or the gate's configuration reads
    /// (members, roles, sessions, tokens, settings, tools, kill switches, the
    /// constitution): once it commits, every cache of those is stale. A change within a
    /// workspace says [`WriteTx::workspace_config_changed`] instead.
    pub fn config_changed(&mut self) {
        self.config_changed = true;
    }

    /// As [`WriteTx::config_changed`], for a change to workspace `ws`: also moves that
    /// workspace's configuration version, in this transaction, so that an action decided
    /// under the old configuration there is not run after this change commits
    /// ([`WriteTx::workspace_config_moved`]).
    pub fn workspace_config_changed(&mut self, ws: &str) -> Result<()> {
        self.config_changed();
        self.execute("UPDATE workspaces SET config_version = config_version + 1 WHERE id = $1", &[Value::from(ws)])?;
        Ok(())
    }

    /// Whether workspace `ws`'s configuration changed since a decision was made `under`
    /// it: a change committed since, or one an earlier job of this batch made (it commits
    /// with this job, before it in the log). On PostgreSQL, call it once the workspace's
    /// chain head is locked (after an append): a change by another replica holds that
    /// lock until it commits, so it is either seen here or ordered after this job.
    pub fn workspace_config_moved(&mut self, ws: &str, under: &DecidedUnder) -> Result<bool> {
        // Nothing at all changed since (this process's epoch is the one callers read, on
        // SQLite): the version cannot have moved, and it costs nothing to know.
        if self.epoch_at_batch == Some(under.epoch) && !self.earlier_config_changed {
            return Ok(false);
        }
        let row = self
            .query_opt("SELECT config_version FROM workspaces WHERE id = $1", &[Value::from(ws)])?
            .ok_or_else(|| Error::not_found("workspace", ws))?;
        Ok(row.int(0)? != under.workspace_version)
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
                match self.query_opt(&sql, &[Value::from(workspace_id)])? {
                    Some(row) => (row.int(0)?, row.text(1)?),
                    None => (0, GENESIS_HASH.to_string()),
                }
            }
        };
        let (event, data) = AuditEvent::seal_with_data(draft, workspace_id, seq, &prev, format_ts(self.now));
        self.execute(
            "INSERT INTO audit_events (workspace_id, seq, id, ts, event_type, actor_kind, actor_id, via, resource, payload_sha256, outcome, data, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                Value::from(workspace_id),
                Value::Int(event.seq),
                Value::from(&event.id),
                Value::from(&event.ts),
                Value::from(&event.event_type),
                Value::from(event.actor.kind.as_str()),
                Value::from(&event.actor.id),
                Value::from(event.via.as_str()),
                Value::from(event.resource.clone()),
                Value::from(event.payload_sha256.clone()),
                Value::from(&event.outcome),
                Value::from(data),
                Value::from(&event.prev_hash),
                Value::from(&event.hash),
            ],
        )?;
        self.job_heads.insert(workspace_id.to_string(), (event.seq, event.hash.clone()));
        // The outbox, in the same transaction: a delivery exists exactly when its event does.
        let subscriptions = match self.job_subscriptions.get(workspace_id).or_else(|| self.subscriptions.get(workspace_id)) {
            Some(s) => s.clone(),
            None => {
                let s = webhooks::enabled_subscriptions(self, workspace_id)?;
                self.job_subscriptions.insert(workspace_id.to_string(), s.clone());
                s
            }
        };
        if !subscriptions.is_empty() && webhooks::queue_deliveries(self, &event, &subscriptions, &event.ts)? > 0 {
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
        let r = self.conn.execute(sql, params);
        self.noting(r)
    }
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        let r = self.conn.query(sql, params);
        self.noting(r)
    }
    fn batch(&mut self, _sql: &str) -> Result<(), DbError> {
        Err(DbError::Unavailable("a write job cannot control its transaction".into()))
    }
    fn dialect(&self) -> Dialect {
        self.conn.dialect()
    }
    fn set_workspace(&mut self, workspace_id: &str) -> Result<(), DbError> {
        let r = self.conn.set_workspace(workspace_id);
        self.noting(r)
    }
    fn set_all_workspaces(&mut self) -> Result<(), DbError> {
        let r = self.conn.set_all_workspaces();
        self.noting(r)
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
    publish: Publisher,
    epoch: Arc<AtomicU64>,
    replica: String,
    housekeeping: Option<(super::db::Housekeeping, Arc<AtomicBool>)>,
) {
    let mut stop = false;
    // Jobs that lost a lock race: they open the next batch.
    let mut carried: Vec<Job> = Vec::new();
    // Whether anything was committed since the writer's last housekeeping, and when that was.
    let mut dirty = false;
    let mut last_housekeeping = Instant::now();
    let idle_wait = housekeeping.as_ref().map_or(Duration::from_secs(3600), |(h, _)| h.every);
    while !stop || !carried.is_empty() {
        // Right after a maintenance pass, which did the bulk of the work off this thread
        // (a checkpoint here copies only what was written since): at full speed a pass of
        // its own took the writer 20–40 ms, and every write waited. Without maintenance
        // passes, on a timer.
        if let Some((h, maintained)) = &housekeeping
            && dirty
            && (maintained.swap(false, Ordering::SeqCst) || last_housekeeping.elapsed() >= h.every * 4)
        {
            if let Err(e) = conn.batch(h.statement) {
                tracing::warn!(error = %e, "store housekeeping failed; will retry");
            }
            dirty = false;
            last_housekeeping = Instant::now();
        }
        let mut batch = std::mem::take(&mut carried);
        if batch.is_empty() {
            match rx.recv_timeout(idle_wait) {
                Ok(WriteMsg::Job(j)) => batch.push(j),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Ok(WriteMsg::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        dirty = true;
        while !stop && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(WriteMsg::Job(j)) => batch.push(j),
                Ok(WriteMsg::Stop) => stop = true,
                Err(_) => break,
            }
        }
        if publish.failed() {
            // A commit may not have reached the disk: write nothing more (fail closed).
            // Dropping the jobs answers each caller "store unavailable".
            drop(batch);
            continue;
        }
        let Some(mut open) = Batch::begin(&mut *conn, &epoch) else {
            drop(batch);
            continue;
        };
        for job in batch {
            open.run(&mut *conn, job, &clock);
        }
        // While the last batch is still being synced, this one could not be acknowledged
        // before that sync ends anyway: keep taking jobs into it (the work overlaps the
        // disk's), and commit once the disk is free, so batches stay large under load.
        while !stop && open.len() < MAX_BATCH && publish.syncing() {
            crossbeam_channel::select! {
                recv(rx) -> msg => match msg {
                    Ok(WriteMsg::Job(j)) => open.run(&mut *conn, j, &clock),
                    Ok(WriteMsg::Stop) | Err(_) => stop = true,
                },
                recv(publish.synced()) -> _ => {}
            }
        }
        publish.committing();
        let (again, committed) = open.commit(&mut *conn, &epoch, &replica);
        carried = again;
        publish.send(committed);
    }
    publish.finish();
    tracing::debug!("store writer stopped");
}

/// A committed (or failed) batch, not yet told to anyone.
struct Committed {
    outcome: Result<()>,
    /// The batch's events, in chain order, for the commit hook.
    events: Vec<AuditEvent>,
    finishes: Vec<Box<dyn FnOnce(Result<()>) + Send>>,
}

impl Committed {
    /// Answers every caller that its write may not have been kept (its sync failed).
    fn fail(self) {
        for finish in self.finishes {
            finish(Err(unsynced()));
        }
    }

    /// Tells the live stream, then each caller.
    fn tell(self, hook: &std::sync::RwLock<Option<CommitHook>>) {
        if self.outcome.is_ok()
            && !self.events.is_empty()
            && let Some(hook) = hook.read().expect("hook lock").as_ref()
        {
            hook(&self.events);
        }
        for finish in self.finishes {
            finish(self.outcome.clone());
        }
    }
}

/// Tells callers and the live stream about committed batches, once they are durable.
///
/// Where the store's COMMIT syncs by itself (PostgreSQL), that is at once, on the writer.
/// Where it does not (SQLite's pipelined writer), a syncer thread `fdatasync`s the log and
/// then tells everyone about every batch committed before the sync began: the writer runs
/// the next batch meanwhile, and several batches can share one sync. Nobody — caller, live
/// stream, webhook worker — hears of a write before it is on disk, and reads wait for it
/// too ([`Durability`]).
struct Publisher {
    hook: Arc<std::sync::RwLock<Option<CommitHook>>>,
    syncer: Option<(Sender<Committed>, JoinHandle<()>, Arc<Durability>)>,
    /// A token after each sync round (perhaps stale: ask [`Publisher::syncing`] again).
    synced: Receiver<()>,
}

impl Publisher {
    fn start(sync: Option<(Box<dyn super::db::LogSync>, Arc<Durability>)>, hook: Arc<std::sync::RwLock<Option<CommitHook>>>) -> Publisher {
        let Some((log, durability)) = sync else {
            return Publisher { hook, syncer: None, synced: crossbeam_channel::never() };
        };
        let (synced_tx, synced) = crossbeam_channel::bounded(1);
        let (tx, rx) = crossbeam_channel::unbounded();
        let syncer = Syncer { log, hook: hook.clone(), synced: synced_tx, durability: durability.clone() };
        let thread = std::thread::Builder::new().name("store-syncer".into()).spawn(move || syncer.run(rx)).expect("spawn store syncer");
        Publisher { hook, syncer: Some((tx, thread, durability)), synced }
    }

    /// A sync failed: what was committed may not be on disk, so nothing more is written
    /// until the server restarts (after a failed fsync the kernel may have dropped the
    /// pages; trying again could report success for data that is gone).
    fn failed(&self) -> bool {
        self.syncer.as_ref().is_some_and(|(_, _, d)| d.synced.borrow().failed)
    }

    /// Whether a committed batch is still waiting for its sync.
    fn syncing(&self) -> bool {
        self.syncer.as_ref().is_some_and(|(_, _, d)| {
            let s = *d.synced.borrow();
            !s.failed && s.batches < d.committed.load(Ordering::SeqCst)
        })
    }

    /// Receives a token after each sync round.
    fn synced(&self) -> &Receiver<()> {
        &self.synced
    }

    /// Counts a batch about to commit (see [`Durability`]); every one counted is sent.
    fn committing(&self) {
        if let Some((_, _, d)) = &self.syncer {
            d.committed.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn send(&self, committed: Committed) {
        match &self.syncer {
            None => committed.tell(&self.hook),
            Some((tx, _, d)) => {
                if let Err(crossbeam_channel::SendError(c)) = tx.send(committed) {
                    d.fail();
                    c.fail();
                }
            }
        }
    }

    /// Waits until every batch sent has been told.
    fn finish(self) {
        if let Some((tx, thread, _)) = self.syncer {
            drop(tx);
            let _ = thread.join();
        }
    }
}

/// The answer when a batch was committed but the log could not be synced.
fn unsynced() -> Error {
    Error::unavailable(
        "store_unavailable",
        "the store could not confirm the write on disk, so it may not have been kept; the server takes no more writes until it is restarted",
    )
}

/// The syncer thread's side of a [`Publisher`].
struct Syncer {
    /// What makes committed batches durable (SQLite's write-ahead log).
    log: Box<dyn super::db::LogSync>,
    hook: Arc<std::sync::RwLock<Option<CommitHook>>>,
    synced: Sender<()>,
    durability: Arc<Durability>,
}

impl Syncer {
    fn run(mut self, rx: Receiver<Committed>) {
        while let Ok(first) = rx.recv() {
            // Everything committed before this sync begins shares it.
            let mut batches = vec![first];
            batches.extend(rx.try_iter());
            match self.sync() {
                Ok(()) => {
                    self.durability.synced.send_modify(|s| s.batches += batches.len() as u64);
                    batches.into_iter().for_each(|b| b.tell(&self.hook));
                }
                Err(e) => {
                    if self.durability.fail() {
                        tracing::error!(error = %e, file = %self.log.name(), "could not sync the store's write-ahead log; no more writes are taken until the server is restarted");
                    }
                    batches.into_iter().for_each(Committed::fail);
                }
            }
            let _ = self.synced.try_send(());
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if self.durability.synced.borrow().failed {
            return Err(std::io::Error::other("an earlier sync failed"));
        }
        self.log.sync()
    }
}

/// One write transaction, filled job by job, then committed once.
///
/// A job refused after it wrote must leave nothing behind, while its neighbours' work is
/// kept. On PostgreSQL every job runs in its own savepoint (*guarded*). Where the database
/// counts the rows a connection changed (SQLite), a batch starts *optimistic* instead: jobs
/// run without savepoints, because nearly every refusal comes before a job writes anything
/// and a statement that fails changes nothing, while a savepoint per job cost the writer a
/// copy of every page each job touched. A job refused after it changed a row (or after a
/// statement of it failed) makes the batch start over: the transaction is rolled back and
/// begun again, and the jobs kept so far run again, then the refused one, each now in its
/// own savepoint, as for the rest of the batch. Jobs may run more than once anyway (see the
/// module's notes) and nobody is answered before the commit, so callers cannot tell.
///
/// Savepoints go through `execute`, not `batch`: prepared once and cached, they are not
/// parsed again for every job.
struct Batch {
    dialect: Dialect,
    /// Whether every job runs in its own savepoint (see above).
    guarded: bool,
    /// The jobs kept so far, in order: answered once the batch commits, and run again if an
    /// optimistic batch starts over.
    kept: Vec<Job>,
    /// How the jobs that were refused are answered.
    finishes: Vec<Box<dyn FnOnce(Result<()>) + Send>>,
    /// Jobs that lost a lock race: they open the next batch.
    again: Vec<Job>,
    /// Chain heads as of the last kept job, per workspace.
    heads: HashMap<String, (i64, String)>,
    events: Vec<AuditEvent>,
    /// The transaction is lost: later jobs are dropped unrun and the batch rolls back.
    failed: Option<DbError>,
    config_changed: bool,
    subscriptions: HashMap<String, Subscriptions>,
    /// Whether some job's work is kept in this transaction (and with it, its locks).
    holding: bool,
    /// Jobs taken, whatever became of them.
    taken: usize,
    /// See [`WriteTx::workspace_config_moved`].
    epoch_at_batch: Option<u64>,
}

/// What one run of a job left, besides what it wrote.
struct Ran {
    ok: bool,
    retry: bool,
    statement_failed: bool,
    job_heads: HashMap<String, (i64, String)>,
    job_events: Vec<AuditEvent>,
    config_changed: bool,
    job_subscriptions: HashMap<String, Subscriptions>,
}

impl Ran {
    /// Whether the job's work stays in the transaction.
    fn kept(&self) -> bool {
        self.ok && !self.retry
    }
}

impl Batch {
    /// Opens the transaction. `None` if it could not be opened (logged): the caller drops
    /// its jobs unrun, which drops their reply channels, so each caller hears "store
    /// unavailable", and nothing was written.
    fn begin(conn: &mut dyn Conn, epoch: &AtomicU64) -> Option<Batch> {
        let dialect = conn.dialect();
        // Where the epoch is not in the database, this process's is the one callers read.
        let epoch_at_batch = dialect.bump_epoch().is_none().then(|| epoch.load(Ordering::SeqCst));
        if let Err(e) = conn.batch(dialect.begin_write()) {
            tracing::error!(error = %e, "could not open a write transaction");
            return None;
        }
        Some(Batch {
            dialect,
            guarded: dialect.begin_job().is_some() || conn.total_changes().is_none(),
            kept: Vec::new(),
            finishes: Vec::new(),
            again: Vec::new(),
            heads: HashMap::new(),
            events: Vec::new(),
            failed: None,
            config_changed: false,
            subscriptions: HashMap::new(),
            holding: false,
            taken: 0,
            epoch_at_batch,
        })
    }

    fn len(&self) -> usize {
        self.taken
    }

    /// Runs one job: kept, refused (its error is its answer, and nothing it did is left),
    /// or set aside to run again in the next batch.
    fn run(&mut self, conn: &mut dyn Conn, job: Job, clock: &Clock) {
        self.taken += 1;
        if self.failed.is_some() {
            drop(job);
        } else if self.guarded {
            self.run_guarded(conn, job, clock);
        } else {
            self.run_optimistic(conn, job, clock);
        }
    }

    /// Runs a job with nothing around it; starts the batch over if it was refused after
    /// changing something.
    fn run_optimistic(&mut self, conn: &mut dyn Conn, mut job: Job, clock: &Clock) {
        let before = conn.total_changes();
        let ran = self.run_in(conn, &mut job, clock);
        if ran.kept() {
            return self.keep(conn, job, ran);
        }
        let changed = before.is_none() || conn.total_changes() != before;
        if !changed && !ran.statement_failed && !ran.retry {
            // Refused before it changed anything: there is nothing to undo.
            return self.finishes.push(job.finish);
        }
        self.start_over(conn, job, clock);
    }

    /// Rolls the batch back and runs again, each in its own savepoint, the jobs kept so
    /// far and then `refused`, the job that made it start over.
    fn start_over(&mut self, conn: &mut dyn Conn, refused: Job, clock: &Clock) {
        self.guarded = true;
        let mut jobs = std::mem::take(&mut self.kept);
        jobs.push(refused);
        self.heads.clear();
        self.events.clear();
        self.config_changed = false;
        self.subscriptions.clear();
        self.holding = false;
        tracing::debug!(jobs = jobs.len(), "a write job was refused after it wrote; the batch starts over, each job in a savepoint");
        let reopened = conn.batch("ROLLBACK").and_then(|_| conn.batch(self.dialect.begin_write()));
        if let Err(e) = reopened {
            // Nothing of the batch is left: each job is answered with the failure.
            self.failed = Some(e);
            self.kept = jobs;
            return;
        }
        for job in jobs {
            if self.failed.is_some() {
                self.finishes.push(job.finish);
            } else {
                self.run_guarded(conn, job, clock);
            }
        }
    }

    /// Runs a job in its own savepoint.
    fn run_guarded(&mut self, conn: &mut dyn Conn, mut job: Job, clock: &Clock) {
        let begun = match self.dialect.begin_job() {
            Some(sql) => conn.batch(sql),
            None => conn.execute("SAVEPOINT job", &[]).map(drop),
        };
        if let Err(e) = begun {
            self.failed = Some(e);
            drop(job);
            return;
        }
        let ran = self.run_in(conn, &mut job, clock);
        let end = if ran.kept() {
            conn.execute("RELEASE SAVEPOINT job", &[]).map(drop)
        } else {
            conn.execute("ROLLBACK TO SAVEPOINT job", &[]).map(drop).and_then(|_| conn.execute("RELEASE SAVEPOINT job", &[]).map(drop))
        };
        match end {
            Ok(()) if ran.kept() => self.keep(conn, job, ran),
            Ok(()) if ran.retry && job.attempts + 1 < MAX_ATTEMPTS => {
                job.attempts += 1;
                tracing::debug!(attempts = job.attempts, "a write job lost a lock race; it runs again in the next batch");
                self.again.push(job);
            }
            Ok(()) => self.finishes.push(job.finish),
            Err(e) => {
                self.failed = Some(e);
                self.finishes.push(job.finish);
            }
        }
    }

    /// Runs the job's closure in the transaction, with the batch's chain heads, events and
    /// subscriptions lent to it.
    fn run_in(&mut self, conn: &mut dyn Conn, job: &mut Job, clock: &Clock) -> Ran {
        let mut tx = WriteTx {
            conn,
            now: clock.now(),
            heads: std::mem::take(&mut self.heads),
            job_heads: HashMap::new(),
            events: std::mem::take(&mut self.events),
            job_events: Vec::new(),
            config_changed: false,
            earlier_config_changed: self.config_changed,
            epoch_at_batch: self.epoch_at_batch,
            subscriptions: std::mem::take(&mut self.subscriptions),
            job_subscriptions: HashMap::new(),
            deliveries_queued: false,
            retry: false,
            statement_failed: false,
        };
        let ok = (job.run)(&mut tx);
        let WriteTx {
            heads, job_heads, events, job_events, config_changed, subscriptions, job_subscriptions, retry, statement_failed, ..
        } = tx;
        self.heads = heads;
        self.events = events;
        self.subscriptions = subscriptions;
        Ran { ok, retry, statement_failed, job_heads, job_events, config_changed, job_subscriptions }
    }

    /// Keeps a job's work: its heads, events and subscriptions become the batch's.
    fn keep(&mut self, conn: &mut dyn Conn, job: Job, ran: Ran) {
        self.heads.extend(ran.job_heads);
        self.events.extend(ran.job_events);
        self.config_changed |= ran.config_changed;
        self.subscriptions.extend(ran.job_subscriptions);
        self.kept.push(job);
        if !self.holding {
            self.holding = true;
            if let Some(limit) = self.dialect.limit_lock_waits()
                && let Err(e) = conn.batch(limit)
            {
                self.failed = Some(e);
            }
        }
    }

    /// Moves the chain heads, announces the events, moves the configuration epoch, and
    /// commits. Returns the jobs to run again, and the batch to tell once it is durable.
    fn commit(self, conn: &mut dyn Conn, epoch: &AtomicU64, replica: &str) -> (Vec<Job>, Committed) {
        let Batch { dialect, kept, mut finishes, again, heads, events, mut failed, config_changed, holding, .. } = self;
        finishes.extend(kept.into_iter().map(|job| job.finish));
        // Move each touched chain head once per batch (each write fenced to its workspace).
        if failed.is_none() {
            for (ws, (seq, hash)) in &heads {
                let moved = conn.set_workspace(ws).and_then(|_| {
                    conn.execute(
                        "UPDATE audit_heads SET seq = $2, hash = $3 WHERE workspace_id = $1",
                        &[Value::from(ws), Value::Int(*seq), Value::from(hash)],
                    )
                });
                match moved {
                    Ok(1) => {}
                    Ok(_) => {
                        failed = Some(DbError::Unavailable(format!("the audit chain head of workspace {ws} is missing")));
                        break;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        // Tell the other replicas, in this transaction: they hear exactly what commits.
        if failed.is_none()
            && let Some(sql) = dialect.announce()
        {
            for payload in announcements(replica, &events) {
                if let Err(e) = conn.execute(sql, &[Value::from(payload)]) {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Last, so the shared epoch's row is locked for as short a time as possible.
        if failed.is_none()
            && config_changed
            && let Some(sql) = dialect.bump_epoch()
        {
            let lifted = match dialect.unlimit_lock_waits().filter(|_| holding) {
                Some(unlimit) => conn.batch(unlimit),
                None => Ok(()),
            };
            match lifted.and_then(|_| conn.execute(sql, &[])) {
                Ok(1) => {}
                Ok(_) => failed = Some(DbError::Unavailable("the configuration epoch row is missing".into())),
                Err(e) => failed = Some(e),
            }
        }
        let outcome: Result<()> = match failed {
            None => conn.batch("COMMIT").map_err(Error::from),
            Some(e) => Err(Error::from(e)),
        };
        if outcome.is_err() {
            let _ = conn.batch("ROLLBACK");
        } else if config_changed {
            // Before anyone is told "done", so no request that starts after can see the old
            // epoch; and as soon as the change is visible to readers, so no cache outlives it.
            epoch.fetch_add(1, Ordering::SeqCst);
        }
        (again, Committed { outcome, events, finishes })
    }
}

/// The most one announcement carries (PostgreSQL's limit is 8000 bytes).
const ANNOUNCEMENT_BYTES: usize = 7000;

/// Announcements of a batch's events: `<replica> <workspace>,<first seq>,<last seq> …`.
fn announcements(replica: &str, events: &[AuditEvent]) -> Vec<String> {
    let mut ranges: Vec<(&str, i64, i64)> = Vec::new();
    for e in events {
        match ranges.iter_mut().find(|(ws, _, _)| *ws == e.workspace_id) {
            Some(r) => {
                r.1 = r.1.min(e.seq);
                r.2 = r.2.max(e.seq);
            }
            None => ranges.push((&e.workspace_id, e.seq, e.seq)),
        }
    }
    let mut out = Vec::new();
    let mut current = String::from(replica);
    for (ws, first, last) in ranges {
        let part = format!(" {ws},{first},{last}");
        if current.len() + part.len() > ANNOUNCEMENT_BYTES {
            out.push(std::mem::replace(&mut current, String::from(replica)));
        }
        current.push_str(&part);
    }
    if current.len() > replica.len() {
        out.push(current);
    }
    out
}

fn reader_loop(mut conn: Box<dyn Conn>, rx: Receiver<ReadMsg>, dialect: Dialect) {
    while let Ok(ReadMsg::Job(job, in_tx)) = rx.recv() {
        match dialect.begin_read().filter(|_| in_tx) {
            None => job(&mut *conn),
            Some(begin) => {
                if let Err(e) = conn.batch(begin) {
                    // Dropping the job answers "store unavailable".
                    tracing::error!(error = %e, "could not open a read transaction");
                    let _ = conn.batch("ROLLBACK");
                    drop(job);
                    continue;
                }
                job(&mut *conn);
                if conn.batch("COMMIT").is_err() {
                    let _ = conn.batch("ROLLBACK");
                }
            }
        }
    }
}

fn maintenance_loop(mut m: super::db::Maintenance, stop: Receiver<()>, done: Arc<AtomicBool>) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(m.every) {
        match m.conn.batch(m.statement) {
            Ok(()) => done.store(true, Ordering::SeqCst),
            Err(e) => tracing::warn!(error = %e, "store maintenance failed; will retry"),
        }
    }
}

/// Publishes other replicas' committed events to this one's commit hook.
fn listen_loop(
    mut source: Box<dyn Notifications>,
    mut conn: Box<dyn Conn>,
    replica: String,
    hook: Arc<std::sync::RwLock<Option<CommitHook>>>,
    stopping: Arc<AtomicBool>,
) {
    let mut failing = false;
    while !stopping.load(Ordering::SeqCst) {
        let wait = match source.wait(Duration::from_millis(100)) {
            Ok(w) => {
                if failing {
                    tracing::info!("listening for other replicas' commits again");
                    failing = false;
                }
                w
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot listen for other replicas' commits; live streams fill gaps from the store");
                    failing = true;
                }
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let publish = |events: Vec<AuditEvent>| {
            if !events.is_empty()
                && let Some(hook) = hook.read().expect("hook lock").as_ref()
            {
                hook(&events);
            }
        };
        if wait.reconnected {
            // Announcements may have been missed: show each chain's head, so every live
            // stream that is behind sees a gap and fills it from the store.
            match heads_events(&mut *conn) {
                Ok(events) => publish(events),
                Err(e) => tracing::warn!(error = %e, "could not read the chain heads after reconnecting"),
            }
        }
        for payload in &wait.payloads {
            let mut parts = payload.split(' ');
            if parts.next() == Some(replica.as_str()) {
                continue;
            }
            for range in parts {
                let mut f = range.split(',');
                let (Some(ws), Some(Ok(first)), Some(Ok(last))) =
                    (f.next(), f.next().map(str::parse::<i64>), f.next().map(str::parse::<i64>))
                else {
                    continue;
                };
                match read_events(&mut *conn, ws, first, last) {
                    Ok(events) => publish(events),
                    Err(e) => tracing::warn!(error = %e, workspace = ws, "could not read another replica's events"),
                }
            }
        }
    }
}

/// Events `first..=last` of a workspace, in a read transaction fenced to it.
fn read_events(conn: &mut dyn Conn, ws: &str, first: i64, last: i64) -> Result<Vec<AuditEvent>, DbError> {
    in_read_tx(conn, |conn| {
        conn.set_workspace(ws)?;
        let rows = conn.query(
            &format!("SELECT {EVENT_COLS} FROM audit_events WHERE workspace_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq"),
            &[Value::from(ws), Value::Int(first), Value::Int(last)],
        )?;
        rows.iter().map(event_from_row).collect()
    })
}

/// The last event of every chain: a cross-workspace read by the engine itself.
fn heads_events(conn: &mut dyn Conn) -> Result<Vec<AuditEvent>, DbError> {
    in_read_tx(conn, |conn| {
        conn.set_all_workspaces()?;
        let rows = conn.query(
            &format!(
                "SELECT {} FROM audit_events e JOIN audit_heads h ON h.workspace_id = e.workspace_id AND h.seq = e.seq",
                EVENT_COLS.split(", ").map(|c| format!("e.{c}")).collect::<Vec<_>>().join(", ")
            ),
            &[],
        )?;
        rows.iter().map(event_from_row).collect()
    })
}

fn in_read_tx<T>(conn: &mut dyn Conn, f: impl FnOnce(&mut dyn Conn) -> Result<T, DbError>) -> Result<T, DbError> {
    let begin = conn.dialect().begin_read();
    if let Some(b) = begin {
        conn.batch(b)?;
    }
    let out = f(conn);
    if begin.is_some() {
        let _ = conn.batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::{LogSync, PipelinedWriter, SyncFile};
    use crate::store::sqlite::SqliteConnector;

    /// SQLite's pipelined writer, but syncing a file that is not there: every sync fails.
    struct UnsyncableLog(SqliteConnector, std::path::PathBuf);

    impl Connector for UnsyncableLog {
        fn open_writer(&self) -> Result<Box<dyn Conn>, DbError> {
            self.0.open_writer()
        }
        fn open_reader(&self) -> Result<Box<dyn Conn>, DbError> {
            self.0.open_reader()
        }
        fn readers(&self) -> usize {
            1
        }
        fn open_pipelined_writer(&self) -> Result<Option<PipelinedWriter>, DbError> {
            let w = self.0.open_pipelined_writer()?.expect("SQLite pipelines");
            Ok(Some(PipelinedWriter { conn: w.conn, log: Box::new(SyncFile::new(&self.1)) }))
        }
        fn dialect(&self) -> Dialect {
            Dialect::Sqlite
        }
    }

    /// SQLite's pipelined writer, with every sync of its log held until the test lets it go.
    struct HeldLog {
        connector: SqliteConnector,
        /// Told when a sync begins; the sync then waits for a token (or the sender's drop).
        held: std::sync::Mutex<Option<(Sender<()>, Receiver<()>)>>,
    }

    struct HeldSync {
        log: Box<dyn LogSync>,
        entered: Sender<()>,
        release: Receiver<()>,
    }

    impl LogSync for HeldSync {
        fn sync(&mut self) -> std::io::Result<()> {
            let _ = self.entered.send(());
            let _ = self.release.recv();
            self.log.sync()
        }
        fn name(&self) -> String {
            self.log.name()
        }
    }

    impl Connector for HeldLog {
        fn open_writer(&self) -> Result<Box<dyn Conn>, DbError> {
            self.connector.open_writer()
        }
        fn open_reader(&self) -> Result<Box<dyn Conn>, DbError> {
            self.connector.open_reader()
        }
        fn readers(&self) -> usize {
            2
        }
        fn open_pipelined_writer(&self) -> Result<Option<PipelinedWriter>, DbError> {
            let w = self.connector.open_pipelined_writer()?.expect("SQLite pipelines");
            let (entered, release) = self.held.lock().unwrap().take().expect("one writer");
            Ok(Some(PipelinedWriter { conn: w.conn, log: Box::new(HeldSync { log: w.log, entered, release }) }))
        }
        fn dialect(&self) -> Dialect {
            Dialect::Sqlite
        }
    }

    /// Runs `f` on a thread of its own; its answer arrives on the receiver.
    fn in_thread(engine: &Arc<Engine>, f: impl FnOnce(&Engine) -> Result<i64> + Send + 'static) -> Receiver<Result<i64>> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let engine = engine.clone();
        std::thread::spawn(move || tx.send(f(&engine)));
        rx
    }

    fn count(engine: &Engine) -> Result<i64> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(engine.read(|c| Ok(c.query("SELECT count(*) FROM t", &[])?[0].int(0)?)))
    }

    #[test]
    fn a_committed_write_is_neither_answered_nor_read_before_its_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        SqliteConnector::new(&db).open_writer().unwrap().batch("CREATE TABLE t (x BIGINT)").unwrap();
        let (entered_tx, entered) = crossbeam_channel::unbounded();
        let (release, release_rx) = crossbeam_channel::unbounded();
        let held = HeldLog { connector: SqliteConnector::new(&db), held: std::sync::Mutex::new(Some((entered_tx, release_rx))) };
        let engine = Arc::new(Engine::start(&held, Clock::system()).unwrap());
        let written = in_thread(&engine, |engine| {
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            rt.block_on(engine.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (1)", &[])?))).map(|n| n as i64)
        });
        // The row is committed (SQLite shows it to readers from now on) and its sync has
        // begun, held. A read that did not wait for the sync would count it within
        // microseconds: it must still be waiting after 300 ms, like the write's caller.
        entered.recv_timeout(Duration::from_secs(10)).expect("the write reached its sync");
        let read = in_thread(&engine, count);
        let early = read.recv_timeout(Duration::from_millis(300));
        assert!(early.is_err(), "a read answered while the write it could see was not yet on disk: {early:?}");
        assert!(written.try_recv().is_err(), "the write was answered before it was on disk");
        // Once the log is synced, both are answered, and the read sees the row.
        release.send(()).unwrap();
        drop(release);
        assert_eq!(written.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(), 1);
        assert_eq!(read.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(), 1);
        engine.close();
    }

    #[test]
    fn answers_and_reads_wait_for_the_sync_and_a_failed_sync_stops_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        SqliteConnector::new(&db).open_writer().unwrap().batch("CREATE TABLE t (x BIGINT)").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let insert = |engine: &Engine| rt.block_on(engine.write(|tx| Ok(tx.execute("INSERT INTO t VALUES (1)", &[])?)));

        // The real log: written, synced, answered.
        let engine = Engine::start(&SqliteConnector::new(&db), Clock::system()).unwrap();
        assert_eq!(insert(&engine).unwrap(), 1);
        assert_eq!(count(&engine).unwrap(), 1);
        engine.close();

        // A log that cannot be synced: the write is committed, but its caller is told it
        // may not have been kept; a read that could see it is refused rather than show a
        // write a power cut could take back; and nothing more is written.
        let engine = Engine::start(&UnsyncableLog(SqliteConnector::new(&db), dir.path().join("gone")), Clock::system()).unwrap();
        let e = insert(&engine).unwrap_err();
        assert_eq!((e.status(), e.code), (503, "store_unavailable"));
        assert!(e.message.contains("could not confirm the write on disk"), "{}", e.message);
        let e = count(&engine).unwrap_err();
        assert_eq!((e.status(), e.code), (503, "store_unavailable"));
        let e = insert(&engine).unwrap_err();
        assert_eq!((e.status(), e.code), (503, "store_unavailable"));
        engine.close();
        // What was acknowledged before is all there; the unconfirmed write happened to
        // reach the file (this was no power cut), the refused one did not.
        let engine = Engine::start(&SqliteConnector::new(&db), Clock::system()).unwrap();
        assert_eq!(count(&engine).unwrap(), 2, "a write went through after a failed sync");
        engine.close();
    }

    /// A job for a batch run by hand: `f` runs in the transaction, its runs are counted,
    /// and its answer (the batch's outcome, then its own) is sent with its name.
    fn job(
        name: &'static str,
        runs: &Arc<AtomicU64>,
        answers: &Sender<(&'static str, Result<()>)>,
        mut f: impl FnMut(&mut WriteTx<'_>) -> Result<()> + Send + 'static,
    ) -> Job {
        let slot: Arc<std::sync::Mutex<Option<Result<()>>>> = Arc::default();
        let (runs, answers, out) = (runs.clone(), answers.clone(), slot.clone());
        Job {
            run: Box::new(move |tx| {
                runs.fetch_add(1, Ordering::SeqCst);
                let r = f(tx);
                let ok = r.is_ok();
                *slot.lock().unwrap() = Some(r);
                ok
            }),
            finish: Box::new(move |committed| {
                let _ = answers.send((name, committed.and(out.lock().unwrap().take().expect("ran"))));
            }),
            attempts: 0,
        }
    }

    fn insert(tx: &mut WriteTx<'_>, x: i64) -> Result<()> {
        tx.execute("INSERT INTO t VALUES ($1)", &[Value::Int(x)])?;
        Ok(())
    }

    fn refused() -> Error {
        Error::conflict("refused", "refused by the test")
    }

    #[test]
    fn a_job_refused_after_it_wrote_leaves_nothing_and_its_neighbours_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConnector::new(dir.path().join("s.db")).open_writer().unwrap();
        conn.batch("CREATE TABLE t (x BIGINT NOT NULL UNIQUE)").unwrap();
        let (answers, answered) = crossbeam_channel::unbounded();
        let runs: Vec<Arc<AtomicU64>> = (0..6).map(|_| Arc::default()).collect();
        let clock = Clock::system();
        let mut batch = Batch::begin(&mut *conn, &AtomicU64::new(0)).expect("a transaction");
        assert!(!batch.guarded, "SQLite counts changes: a batch starts without savepoints");
        batch.run(&mut *conn, job("a", &runs[0], &answers, |tx| insert(tx, 1)), &clock);
        // Refused before writing: nothing to undo, so the batch goes on as it was.
        batch.run(&mut *conn, job("b", &runs[1], &answers, |_| Err(refused())), &clock);
        assert!(!batch.guarded, "a refusal that changed nothing started the batch over");
        // Refused after writing: the batch starts over, each job in a savepoint.
        batch.run(&mut *conn, job("c", &runs[2], &answers, |tx| insert(tx, 2).and(Err(refused()))), &clock);
        assert!(batch.guarded, "a refusal after a write did not start the batch over");
        batch.run(&mut *conn, job("d", &runs[3], &answers, |tx| insert(tx, 3)), &clock);
        // A statement that fails after one that wrote, in a guarded batch.
        batch.run(&mut *conn, job("e", &runs[4], &answers, |tx| insert(tx, 4).and(insert(tx, 1))), &clock);
        batch.run(&mut *conn, job("f", &runs[5], &answers, |tx| insert(tx, 5)), &clock);
        let (again, committed) = batch.commit(&mut *conn, &AtomicU64::new(0), "test");
        assert!(again.is_empty());
        committed.tell(&std::sync::RwLock::new(None));
        drop(answers);
        let mut told: Vec<(&str, bool)> = answered.iter().map(|(name, r)| (name, r.is_ok())).collect();
        told.sort();
        assert_eq!(told, [("a", true), ("b", false), ("c", false), ("d", true), ("e", false), ("f", true)]);
        let rows: Vec<i64> = conn.query("SELECT x FROM t ORDER BY x", &[]).unwrap().iter().map(|r| r.int(0).unwrap()).collect();
        assert_eq!(rows, [1, 3, 5], "exactly the kept jobs' rows were committed");
        // `a` ran again when the batch started over, and `c` once more in its savepoint;
        // nobody else ran twice.
        let counts: Vec<u64> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
        assert_eq!(counts, [2, 1, 2, 1, 1, 1]);
    }

    #[test]
    fn a_failed_statement_in_an_optimistic_batch_starts_it_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = SqliteConnector::new(dir.path().join("s.db")).open_writer().unwrap();
        conn.batch("CREATE TABLE t (x BIGINT NOT NULL UNIQUE)").unwrap();
        let (answers, answered) = crossbeam_channel::unbounded();
        let runs: Vec<Arc<AtomicU64>> = (0..3).map(|_| Arc::default()).collect();
        let clock = Clock::system();
        let mut batch = Batch::begin(&mut *conn, &AtomicU64::new(0)).expect("a transaction");
        batch.run(&mut *conn, job("a", &runs[0], &answers, |tx| insert(tx, 1)), &clock);
        // Its second statement fails on the unique index; its first row must not stay. A
        // job that went on after the failure (and so succeeded) would be kept as is.
        batch.run(&mut *conn, job("b", &runs[1], &answers, |tx| insert(tx, 2).and(insert(tx, 1))), &clock);
        assert!(batch.guarded);
        batch.run(&mut *conn, job("c", &runs[2], &answers, |tx| insert(tx, 3)), &clock);
        let (_, committed) = batch.commit(&mut *conn, &AtomicU64::new(0), "test");
        committed.tell(&std::sync::RwLock::new(None));
        drop(answers);
        let mut told: Vec<(&str, bool)> = answered.iter().map(|(name, r)| (name, r.is_ok())).collect();
        told.sort();
        assert_eq!(told, [("a", true), ("b", false), ("c", true)]);
        let rows: Vec<i64> = conn.query("SELECT x FROM t ORDER BY x", &[]).unwrap().iter().map(|r| r.int(0).unwrap()).collect();
        assert_eq!(rows, [1, 3]);
    }
}
