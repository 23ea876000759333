//! Webhook subscriptions and their durable outbox.
//!
//! The outbox is written by [`super::engine::WriteTx::append`]: after each event it
//! inserts one `webhook_deliveries` row per enabled subscription of that workspace whose
//! filters match, in the same transaction, so a delivery exists exactly when its event
//! does (a crash loses neither, nor one without the other). The delivery worker
//! (`server::webhooks`) claims due rows, attempts them and records each attempt here.
//!
//! Nothing the server caches depends on webhooks (authentication and the gate never read
//! them), so webhook changes do not move the configuration epoch; they only tell the
//! writer's per-batch subscription cache ([`super::engine::WriteTx::webhooks_changed`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::audit_log::{EVENT_COLS, event_from_row};
use super::db::{Conn, DbError, Row, Value};
use super::engine::WriteTx;
use super::{Origin, SqlStore, WorkspaceId};
use crate::audit::{Actor, AuditEvent, EventDraft, Via};
use crate::clock::format_ts;
use crate::error::{Error, Result};
use crate::ids::{IdKind, new_id};
use crate::params;
use crate::webhook::{self, Delivery, DeliveryStatus, Webhook};

/// The most subscriptions one workspace may have: each event is written once per
/// matching subscription, so this bounds the outbox's write amplification.
pub const MAX_WEBHOOKS: i64 = 50;
/// The most deliveries one page of the delivery log holds.
pub const MAX_DELIVERY_PAGE: i64 = 500;

/// A subscription as the outbox sees it: where to queue, and for which events.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub id: String,
    pub filters: Vec<String>,
}

/// A workspace's enabled subscriptions, shared within a write batch.
pub type Subscriptions = Arc<[Subscription]>;

/// Reads a workspace's enabled subscriptions (inside the writer's transaction).
pub(super) fn enabled_subscriptions(conn: &mut dyn Conn, ws: &str) -> Result<Subscriptions, DbError> {
    let rows = conn.query("SELECT id, event_types FROM webhooks WHERE workspace_id = $1 AND enabled = TRUE ORDER BY id", params![ws])?;
    rows.iter().map(|r| Ok(Subscription { id: r.text(0)?, filters: r.json(1)? })).collect()
}

/// Queues `event` for every subscription whose filters match it; returns how many.
pub(super) fn queue_deliveries(conn: &mut dyn Conn, event: &AuditEvent, subs: &[Subscription], now: &str) -> Result<usize, DbError> {
    let mut queued = 0;
    for s in subs.iter().filter(|s| webhook::matches(&s.filters, &event.event_type)) {
        conn.execute(
            "INSERT INTO webhook_deliveries (id, workspace_id, webhook_id, event_seq, event_id, event_type, status, next_attempt_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7, $7)",
            params![new_id(IdKind::Delivery), &event.workspace_id, &s.id, event.seq, &event.id, &event.event_type, now],
        )?;
        queued += 1;
    }
    Ok(queued)
}

/// A subscription to create. The id is chosen by the caller because the secret is
/// sealed for it (see `vault::webhook_secret_aad`).
#[derive(Clone, Debug)]
pub struct NewWebhook {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// The signing secret, sealed.
    pub sealed_secret: String,
}

/// What to change on a subscription; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub description: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// A delivery the worker has claimed: it holds it until it records the attempt or its
/// lease runs out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub workspace: WorkspaceId,
    pub id: String,
    pub webhook_id: String,
}

/// Everything one attempt needs.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    pub delivery_id: String,
    pub webhook_id: String,
    pub url: String,
    pub enabled: bool,
    /// The current secret, sealed.
    pub secret: String,
    /// The secret before the last rotation, sealed, and until when it still signs.
    pub previous_secret: Option<(String, String)>,
    pub event: AuditEvent,
}

/// How an attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered 2xx.
    Delivered { status: u16 },
    /// The receiver answered `410 Gone`: it wants nothing more from this subscription.
    Gone,
    /// Anything else: another status, no answer in time, no connection, or a secret that
    /// could not be opened. `error` is for a person and carries no secret.
    Failed { status: Option<u16>, error: String },
}

#[async_trait]
pub trait Webhooks {
    /// Creates a subscription (audited `webhook.created`, without the secret).
    async fn create_webhook(&self, ws: &WorkspaceId, by: &Origin, new: NewWebhook) -> Result<Webhook>;
    async fn list_webhooks(&self, ws: &WorkspaceId) -> Result<Vec<Webhook>>;
    async fn get_webhook(&self, ws: &WorkspaceId, id: &str) -> Result<Webhook>;
    /// Changes a subscription (audited `webhook.updated` with before and after, when
    /// anything changed). Disabling it gives up its outstanding deliveries.
    async fn update_webhook(&self, ws: &WorkspaceId, by: &Origin, id: &str, change: WebhookChange) -> Result<Webhook>;
    /// Deletes a subscription and its delivery log (audited `webhook.deleted`).
    async fn delete_webhook(&self, ws: &WorkspaceId, by: &Origin, id: &str) -> Result<Webhook>;
    /// Replaces the signing secret. With a grace period, the old secret keeps signing
    /// (alongside the new) until it ends; a rotation during a grace period ends the
    /// older secret's at once. Audited `webhook.secret_rotated`, without either secret.
    async fn rotate_webhook_secret(
        &self,
        ws: &WorkspaceId,
        by: &Origin,
        id: &str,
        sealed_secret: String,
        grace_seconds: i64,
    ) -> Result<Webhook>;
    /// A subscription's deliveries, newest first, optionally only those in one status
    /// and only those older than `before` (a delivery id, for paging).
    async fn list_deliveries(
        &self,
        ws: &WorkspaceId,
        webhook_id: &str,
        status: Option<DeliveryStatus>,
        before: Option<String>,
        limit: i64,
    ) -> Result<Vec<Delivery>>;
    /// Queues a fresh attempt of a delivery now, restarting its retry schedule
    /// (audited `webhook.redelivered`).
    async fn redeliver(&self, ws: &WorkspaceId, by: &Origin, webhook_id: &str, delivery_id: &str) -> Result<Delivery>;

    // --- the delivery worker -------------------------------------------------------
    //
    // The worker serves every workspace from one queue, like the approval sweeper
    // (`Approvals::expire_due`): it acts for no caller, so there is no caller's workspace
    // to scope by. Only these two calls cross workspaces; each claimed delivery carries
    // its workspace, and every later call about it is scoped by that.

    /// Whether any delivery is due now and not in flight, in any workspace. A read, so
    /// an idle worker never takes the writer.
    async fn deliveries_due(&self) -> Result<bool>;
    /// Claims up to `limit` due deliveries, in any workspace, for `lease`: at most
    /// `per_webhook` in flight per subscription counting `in_flight` (the worker's own,
    /// never claimed again), oldest first and taking turns between subscriptions, so one
    /// slow receiver cannot starve the others.
    async fn claim_deliveries(
        &self,
        limit: usize,
        per_webhook: usize,
        in_flight: Vec<ClaimedDelivery>,
        lease: chrono::Duration,
    ) -> Result<Vec<ClaimedDelivery>>;
    /// What attempting a claimed delivery needs; `None` if its subscription was deleted.
    async fn delivery_job(&self, ws: &WorkspaceId, delivery_id: &str) -> Result<Option<DeliveryJob>>;
    /// Records an attempt and schedules the next (with `jitter`, uniform in [0, 1)), or
    /// gives up. A `410 Gone` also disables the subscription (audited `webhook.disabled`).
    async fn record_attempt(&self, ws: &WorkspaceId, delivery_id: &str, result: AttemptResult, jitter: f64) -> Result<DeliveryStatus>;
    /// Gives back claimed deliveries whose attempts were abandoned (at shutdown): due at once.
    async fn release_deliveries(&self, claims: Vec<ClaimedDelivery>) -> Result<()>;
    /// Sets the function told whenever a committed write made deliveries due.
    fn on_deliveries_queued(&self, hook: super::engine::DeliveryHook);
    /// Forgets up to `limit` finished deliveries (delivered, or given up) last changed
    /// before `before`, in any workspace: the delivery log is kept for a while, not
    /// forever (the events stay in the audit log). Outstanding deliveries are never
    /// forgotten. Returns how many.
    async fn prune_deliveries(&self, before: &str, limit: i64) -> Result<usize>;

    // --- master-key rotation ----------------------------------------------------------

    /// Every subscription's sealed secrets: (workspace, id, secret, previous secret).
    async fn all_sealed_webhook_secrets(&self) -> Result<Vec<(WorkspaceId, String, String, Option<String>)>>;
    /// Replaces a subscription's sealed secrets without an audit event: the ciphertext
    /// changes, the secrets do not.
    async fn reseal_webhook_secrets(&self, ws: &WorkspaceId, id: &str, secret: String, previous: Option<String>) -> Result<()>;
}

// ---------------------------------------------------------------------------------------

const WEBHOOK_COLS: &str =
    "id, url, description, event_types, enabled, disabled_reason, secret_rotated_at, previous_secret_expires_at, created_at, updated_at";

fn webhook_from_row(r: &Row, now: &str) -> Result<Webhook, DbError> {
    // A grace period that has ended is not shown as if it still ran.
    let previous_secret_expires_at = r.opt_text(7)?.filter(|t| t.as_str() > now);
    Ok(Webhook {
        id: r.text(0)?,
        url: r.text(1)?,
        description: r.text(2)?,
        event_types: r.json(3)?,
        enabled: r.bool(4)?,
        disabled_reason: r.opt_text(5)?,
        secret_rotated_at: r.opt_text(6)?,
        previous_secret_expires_at,
        created_at: r.text(8)?,
        updated_at: r.text(9)?,
    })
}

fn read_webhook(conn: &mut dyn Conn, ws: &str, id: &str, now: &str, for_update: &str) -> Result<Webhook> {
    let row = conn
        .query_opt(&format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 AND id = $2{for_update}"), params![ws, id])?
        .ok_or_else(|| Error::not_found("webhook", id))?;
    Ok(webhook_from_row(&row, now)?)
}

const DELIVERY_COLS: &str = "id, webhook_id, event_id, event_seq, event_type, status, attempts, last_status_code, last_error, \
     last_attempt_at, next_attempt_at, delivered_at, created_at, updated_at";

fn delivery_from_row(r: &Row) -> Result<Delivery, DbError> {
    let status = r.text(5)?;
    Ok(Delivery {
        id: r.text(0)?,
        webhook_id: r.text(1)?,
        event_id: r.text(2)?,
        event_seq: r.int(3)?,
        event_type: r.text(4)?,
        status: DeliveryStatus::parse(&status).ok_or(DbError::Decode { column: 5, message: format!("unknown status {status}") })?,
        attempts: r.int(6)?,
        last_status_code: r.opt_int(7)?.and_then(|c| u16::try_from(c).ok()),
        last_error: r.opt_text(8)?,
        last_attempt_at: r.opt_text(9)?,
        next_attempt_at: r.opt_text(10)?,
        delivered_at: r.opt_text(11)?,
        created_at: r.text(12)?,
        updated_at: r.text(13)?,
    })
}

fn read_delivery(conn: &mut dyn Conn, ws: &str, webhook_id: &str, id: &str) -> Result<Delivery> {
    let row = conn
        .query_opt(
            &format!("SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2 AND id = $3"),
            params![ws, webhook_id, id],
        )?
        .ok_or_else(|| Error::not_found("delivery", id))?;
    Ok(delivery_from_row(&row)?)
}

/// What the audit log records of a subscription: everything but secrets (it never
/// holds them), and without the transient grace-period fields.
fn audit_view(w: &Webhook) -> serde_json::Value {
    json!({"id": w.id, "url": w.url, "description": w.description, "event_types": w.event_types, "enabled": w.enabled})
}

/// Gives up a subscription's outstanding deliveries, saying why.
fn abandon_outstanding(tx: &mut WriteTx<'_>, ws: &str, webhook_id: &str, why: &str) -> Result<(), DbError> {
    let now = tx.now_ts();
    tx.execute(
        "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL, lease_until = NULL, last_error = $3, updated_at = $4 \
         WHERE workspace_id = $1 AND webhook_id = $2 AND next_attempt_at IS NOT NULL",
        params![ws, webhook_id, why, &now],
    )?;
    Ok(())
}

const DISABLED_BY_USER: &str = "not attempted: the subscription was disabled";

#[async_trait]
impl Webhooks for SqlStore {
    async fn create_webhook(&self, ws: &WorkspaceId, by: &Origin, new: NewWebhook) -> Result<Webhook> {
        let (ws, by) = (ws.clone(), by.clone());
        let types = serde_json::to_string(&new.event_types).map_err(|e| Error::internal(e.to_string()))?;
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let count =
                    tx.query_opt("SELECT COUNT(*) FROM webhooks WHERE workspace_id = $1", params![w])?.map_or(Ok(0), |r| r.int(0))?;
                if count >= MAX_WEBHOOKS {
                    return Err(Error::conflict(
                        "too_many_webhooks",
                        format!(
                            "a workspace has at most {MAX_WEBHOOKS} webhooks; delete one first, or widen an existing one's event types"
                        ),
                    ));
                }
                let now = tx.now_ts();
                tx.execute(
                    "INSERT INTO webhooks (id, workspace_id, url, description, event_types, enabled, secret, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                    params![&new.id, w, &new.url, &new.description, &types, new.enabled, &new.sealed_secret, &now],
                )?;
                tx.webhooks_changed(w);
                let created = read_webhook(&mut *tx, w, &new.id, &now, "")?;
                tx.append(
                    w,
                    EventDraft::new("webhook.created", by.actor.clone(), by.via)
                        .resource(format!("webhook:{}", created.id))
                        .data(json!({"webhook": audit_view(&created)})),
                )?;
                Ok(created)
            })
            .await
    }

    async fn list_webhooks(&self, ws: &WorkspaceId) -> Result<Vec<Webhook>> {
        let (ws, now) = (ws.clone(), self.now_ts());
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                let rows =
                    conn.query(&format!("SELECT {WEBHOOK_COLS} FROM webhooks WHERE workspace_id = $1 ORDER BY id"), params![ws.as_str()])?;
                Ok(rows.iter().map(|r| webhook_from_row(r, &now)).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn get_webhook(&self, ws: &WorkspaceId, id: &str) -> Result<Webhook> {
        let (ws, id, now) = (ws.clone(), id.to_string(), self.now_ts());
        self.engine
            .read(move |conn| {
                conn.set_workspace(ws.as_str())?;
                read_webhook(conn, ws.as_str(), &id, &now, "")
            })
            .await
    }

    async fn update_webhook(&self, ws: &WorkspaceId, by: &Origin, id: &str, change: WebhookChange) -> Result<Webhook> {
        let (ws, by, id) = (ws.clone(), by.clone(), id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let now = tx.now_ts();
                let lock = tx.dialect().for_update();
                let before = read_webhook(&mut *tx, w, &id, &now, lock)?;
                let url = change.url.clone().unwrap_or_else(|| before.url.clone());
                let description = change.description.clone().unwrap_or_else(|| before.description.clone());
                let event_types = change.event_types.clone().unwrap_or_else(|| before.event_types.clone());
                let enabled = change.enabled.unwrap_or(before.enabled);
                if url == before.url && description == before.description && event_types == before.event_types && enabled == before.enabled
                {
                    return Ok(before);
                }
                // Enabling again clears why it was disabled.
                let disabled_reason = if enabled { None } else { before.disabled_reason.clone() };
                let types = serde_json::to_string(&event_types).map_err(|e| Error::internal(e.to_string()))?;
                tx.execute(
                    "UPDATE webhooks SET url = $3, description = $4, event_types = $5, enabled = $6, disabled_reason = $7, updated_at = $8 \
                     WHERE workspace_id = $1 AND id = $2",
                    params![w, &id, &url, &description, &types, enabled, disabled_reason, &now],
                )?;
                tx.webhooks_changed(w);
                if before.enabled && !enabled {
                    abandon_outstanding(tx, w, &id, DISABLED_BY_USER)?;
                }
                let after = read_webhook(&mut *tx, w, &id, &now, "")?;
                tx.append(
                    w,
                    EventDraft::new("webhook.updated", by.actor.clone(), by.via)
                        .resource(format!("webhook:{id}"))
                        .data(json!({"before": audit_view(&before), "after": audit_view(&after)})),
                )?;
                Ok(after)
            })
            .await
    }

    async fn delete_webhook(&self, ws: &WorkspaceId, by: &Origin, id: &str) -> Result<Webhook> {
        let (ws, by, id) = (ws.clone(), by.clone(), id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let now = tx.now_ts();
                let lock = tx.dialect().for_update();
                let gone = read_webhook(&mut *tx, w, &id, &now, lock)?;
                tx.execute("DELETE FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2", params![w, &id])?;
                tx.execute("DELETE FROM webhooks WHERE workspace_id = $1 AND id = $2", params![w, &id])?;
                tx.webhooks_changed(w);
                tx.append(
                    w,
                    EventDraft::new("webhook.deleted", by.actor.clone(), by.via)
                        .resource(format!("webhook:{id}"))
                        .data(json!({"webhook": audit_view(&gone)})),
                )?;
                Ok(gone)
            })
            .await
    }

    async fn rotate_webhook_secret(
        &self,
        ws: &WorkspaceId,
        by: &Origin,
        id: &str,
        sealed_secret: String,
        grace_seconds: i64,
    ) -> Result<Webhook> {
        let (ws, by, id) = (ws.clone(), by.clone(), id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let now = tx.now_ts();
                let sql = format!("SELECT secret FROM webhooks WHERE workspace_id = $1 AND id = $2{}", tx.dialect().for_update());
                let current = tx.query_opt(&sql, params![w, &id])?.ok_or_else(|| Error::not_found("webhook", &id))?.text(0)?;
                let (previous, expires) = if grace_seconds > 0 {
                    (Some(current), Some(format_ts(tx.now() + chrono::Duration::seconds(grace_seconds))))
                } else {
                    (None, None)
                };
                tx.execute(
                    "UPDATE webhooks SET secret = $3, previous_secret = $4, previous_secret_expires_at = $5, secret_rotated_at = $6, updated_at = $6 \
                     WHERE workspace_id = $1 AND id = $2",
                    params![w, &id, &sealed_secret, previous, expires.clone(), &now],
                )?;
                tx.webhooks_changed(w);
                tx.append(
                    w,
                    EventDraft::new("webhook.secret_rotated", by.actor.clone(), by.via)
                        .resource(format!("webhook:{id}"))
                        .data(json!({"webhook_id": id, "grace_seconds": grace_seconds, "previous_secret_expires_at": expires})),
                )?;
                read_webhook(&mut *tx, w, &id, &now, "")
            })
            .await
    }

    async fn list_deliveries(
        &self,
        ws: &WorkspaceId,
        webhook_id: &str,
        status: Option<DeliveryStatus>,
        before: Option<String>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        let (ws, webhook_id, now) = (ws.clone(), webhook_id.to_string(), self.now_ts());
        let limit = limit.clamp(1, MAX_DELIVERY_PAGE);
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                read_webhook(conn, w, &webhook_id, &now, "")?;
                let mut sql = format!("SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2");
                let mut args = params![w, &webhook_id].to_vec();
                if let Some(s) = status {
                    args.push(Value::from(s.as_str()));
                    sql.push_str(&format!(" AND status = ${}", args.len()));
                }
                if let Some(b) = before {
                    args.push(Value::from(b));
                    sql.push_str(&format!(" AND id < ${}", args.len()));
                }
                args.push(Value::Int(limit));
                sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
                let rows = conn.query(&sql, &args)?;
                Ok(rows.iter().map(delivery_from_row).collect::<Result<_, _>>()?)
            })
            .await
    }

    async fn redeliver(&self, ws: &WorkspaceId, by: &Origin, webhook_id: &str, delivery_id: &str) -> Result<Delivery> {
        let (ws, by, webhook_id, delivery_id) = (ws.clone(), by.clone(), webhook_id.to_string(), delivery_id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let now = tx.now_ts();
                let hook = read_webhook(&mut *tx, w, &webhook_id, &now, "")?;
                let sql = format!(
                    "SELECT lease_until, event_id, event_seq FROM webhook_deliveries WHERE workspace_id = $1 AND webhook_id = $2 AND id = $3{}",
                    tx.dialect().for_update()
                );
                let row = tx.query_opt(&sql, params![w, &webhook_id, &delivery_id])?.ok_or_else(|| Error::not_found("delivery", &delivery_id))?;
                if !hook.enabled {
                    return Err(Error::conflict("webhook_disabled", "the webhook is disabled: enable it (PATCH enabled: true) before redelivering"));
                }
                if row.opt_text(0)?.is_some_and(|lease| lease > now) {
                    return Err(Error::conflict("delivery_in_flight", "an attempt of this delivery is in flight; try again when it has finished"));
                }
                tx.execute(
                    "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, retry_base = attempts, lease_until = NULL, updated_at = $4 \
                     WHERE workspace_id = $1 AND webhook_id = $2 AND id = $3",
                    params![w, &webhook_id, &delivery_id, &now],
                )?;
                tx.deliveries_queued();
                tx.append(
                    w,
                    EventDraft::new("webhook.redelivered", by.actor.clone(), by.via)
                        .resource(format!("webhook:{webhook_id}"))
                        .data(json!({"webhook_id": webhook_id, "delivery_id": delivery_id, "event_id": row.text(1)?, "event_seq": row.int(2)?})),
                )?;
                read_delivery(&mut *tx, w, &webhook_id, &delivery_id)
            })
            .await
    }

    async fn deliveries_due(&self) -> Result<bool> {
        let now = self.now_ts();
        self.engine
            .read(move |conn| {
                conn.set_all_workspaces()?;
                let row = conn.query_opt(
                    "SELECT 1 FROM webhook_deliveries WHERE next_attempt_at <= $1 AND (lease_until IS NULL OR lease_until <= $1) LIMIT 1",
                    params![&now],
                )?;
                Ok(row.is_some())
            })
            .await
    }

    async fn claim_deliveries(
        &self,
        limit: usize,
        per_webhook: usize,
        in_flight: Vec<ClaimedDelivery>,
        lease: chrono::Duration,
    ) -> Result<Vec<ClaimedDelivery>> {
        self.engine
            .write(move |tx| {
                let now = tx.now_ts();
                let until = format_ts(tx.now() + lease);
                let mine: HashSet<&str> = in_flight.iter().map(|c| c.id.as_str()).collect();
                let mut busy: HashMap<&str, usize> = HashMap::new();
                for c in &in_flight {
                    *busy.entry(c.webhook_id.as_str()).or_default() += 1;
                }
                // Subscriptions with something due, the longest-waiting first, in every
                // workspace; each claim below is then written fenced to its own.
                tx.set_all_workspaces()?;
                let waiting = tx.query(
                    "SELECT id, workspace_id, due FROM (SELECT w.id, w.workspace_id, \
                       (SELECT d.next_attempt_at FROM webhook_deliveries d WHERE d.webhook_id = w.id AND d.next_attempt_at IS NOT NULL \
                          AND (d.lease_until IS NULL OR d.lease_until <= $1) ORDER BY d.next_attempt_at LIMIT 1) AS due \
                     FROM webhooks w WHERE w.enabled = TRUE) t WHERE due <= $1 ORDER BY due",
                    params![&now],
                )?;
                // Each subscription's due deliveries, oldest first, as many as it may take.
                let mut queues: Vec<Vec<ClaimedDelivery>> = Vec::new();
                for r in &waiting {
                    if queues.len() >= limit {
                        break;
                    }
                    let (hook, ws) = (r.text(0)?, r.text(1)?);
                    let room = per_webhook.saturating_sub(busy.get(hook.as_str()).copied().unwrap_or(0));
                    if room == 0 {
                        continue;
                    }
                    let rows = tx.query(
                        "SELECT id FROM webhook_deliveries WHERE webhook_id = $1 AND next_attempt_at IS NOT NULL AND next_attempt_at <= $2 \
                         AND (lease_until IS NULL OR lease_until <= $2) ORDER BY next_attempt_at LIMIT $3",
                        params![&hook, &now, (room + mine.len()) as i64],
                    )?;
                    let mut queue = Vec::new();
                    for d in &rows {
                        let id = d.text(0)?;
                        if queue.len() < room && !mine.contains(id.as_str()) {
                            queue.push(ClaimedDelivery { workspace: WorkspaceId::trusted(ws.clone()), id, webhook_id: hook.clone() });
                        }
                    }
                    if !queue.is_empty() {
                        queues.push(queue);
                    }
                }
                // Take turns: each subscription's oldest, then each one's next…
                let mut claimed = Vec::new();
                let mut round = 0;
                while claimed.len() < limit && queues.iter().any(|q| q.len() > round) {
                    for q in &queues {
                        if claimed.len() == limit {
                            break;
                        }
                        let Some(c) = q.get(round) else { continue };
                        tx.set_workspace(c.workspace.as_str())?;
                        // The lease is re-checked as it is taken: of two claimers, one wins.
                        let took = tx.execute(
                            "UPDATE webhook_deliveries SET lease_until = $2 WHERE id = $1 AND next_attempt_at IS NOT NULL \
                             AND (lease_until IS NULL OR lease_until <= $3)",
                            params![&c.id, &until, &now],
                        )?;
                        if took == 1 {
                            claimed.push(c.clone());
                        }
                    }
                    round += 1;
                }
                Ok(claimed)
            })
            .await
    }

    async fn delivery_job(&self, ws: &WorkspaceId, delivery_id: &str) -> Result<Option<DeliveryJob>> {
        let (ws, delivery_id, now) = (ws.clone(), delivery_id.to_string(), self.now_ts());
        self.engine
            .read(move |conn| {
                let w = ws.as_str();
                conn.set_workspace(w)?;
                let Some(r) = conn.query_opt(
                    "SELECT d.webhook_id, d.event_seq, h.url, h.enabled, h.secret, h.previous_secret, h.previous_secret_expires_at \
                     FROM webhook_deliveries d JOIN webhooks h ON h.id = d.webhook_id AND h.workspace_id = d.workspace_id \
                     WHERE d.workspace_id = $1 AND d.id = $2",
                    params![w, &delivery_id],
                )?
                else {
                    return Ok(None);
                };
                let seq = r.int(1)?;
                let event = conn
                    .query_opt(&format!("SELECT {EVENT_COLS} FROM audit_events WHERE workspace_id = $1 AND seq = $2"), params![w, seq])?
                    .ok_or_else(|| Error::internal(format!("delivery {delivery_id} names event {seq}, which is not in the log")))?;
                let previous_secret = match (r.opt_text(5)?, r.opt_text(6)?) {
                    (Some(s), Some(until)) if until > now => Some((s, until)),
                    _ => None,
                };
                Ok(Some(DeliveryJob {
                    delivery_id,
                    webhook_id: r.text(0)?,
                    url: r.text(2)?,
                    enabled: r.bool(3)?,
                    secret: r.text(4)?,
                    previous_secret,
                    event: event_from_row(&event)?,
                }))
            })
            .await
    }

    async fn record_attempt(&self, ws: &WorkspaceId, delivery_id: &str, result: AttemptResult, jitter: f64) -> Result<DeliveryStatus> {
        let (ws, delivery_id) = (ws.clone(), delivery_id.to_string());
        self.engine
            .write(move |tx| {
                let w = ws.as_str();
                tx.set_workspace(w)?;
                let now = tx.now_ts();
                let sql = format!(
                    "SELECT d.webhook_id, d.status, d.attempts, d.retry_base, h.enabled FROM webhook_deliveries d \
                     JOIN webhooks h ON h.id = d.webhook_id AND h.workspace_id = d.workspace_id WHERE d.workspace_id = $1 AND d.id = $2{}",
                    tx.dialect().for_update()
                );
                let Some(row) = tx.query_opt(&sql, params![w, &delivery_id])? else {
                    // Its subscription was deleted meanwhile: nothing to record.
                    return Ok(DeliveryStatus::Failed);
                };
                let (webhook_id, current, attempts, retry_base, enabled) =
                    (row.text(0)?, row.text(1)?, row.int(2)? + 1, row.int(3)?, row.bool(4)?);
                let current = DeliveryStatus::parse(&current);
                let (status, code, error, next) = match &result {
                    AttemptResult::Delivered { status } => (DeliveryStatus::Delivered, Some(*status), None, None),
                    AttemptResult::Gone => {
                        (DeliveryStatus::Failed, Some(410), Some("the receiver answered 410 Gone: the webhook was disabled".to_string()), None)
                    }
                    // A late failure never undoes a success (two attempts overlapped only
                    // if a lease ran out mid-attempt).
                    AttemptResult::Failed { status: code, error } if current == Some(DeliveryStatus::Delivered) => {
                        (DeliveryStatus::Delivered, *code, Some(error.clone()), None)
                    }
                    AttemptResult::Failed { status: code, error } if !enabled || current == Some(DeliveryStatus::Failed) => {
                        (DeliveryStatus::Failed, *code, Some(format!("{error}; not retried: the webhook was disabled meanwhile")), None)
                    }
                    AttemptResult::Failed { status: code, error } => match webhook::retry_delay(attempts - retry_base, jitter) {
                        Some(wait) => (DeliveryStatus::Retrying, *code, Some(error.clone()), Some(format_ts(tx.now() + wait))),
                        None => (DeliveryStatus::Failed, *code, Some(format!("{error}; gave up after {} attempts", attempts - retry_base)), None),
                    },
                };
                let delivered_at = (status == DeliveryStatus::Delivered).then(|| now.clone());
                tx.execute(
                    "UPDATE webhook_deliveries SET status = $3, attempts = $4, next_attempt_at = $5, lease_until = NULL, last_attempt_at = $6, \
                     last_status_code = $7, last_error = $8, delivered_at = COALESCE($9, delivered_at), updated_at = $6 \
                     WHERE workspace_id = $1 AND id = $2",
                    params![w, &delivery_id, status.as_str(), attempts, next, &now, code.map(i64::from), error, delivered_at],
                )?;
                if result == AttemptResult::Gone && enabled {
                    let reason = "the receiver answered 410 Gone";
                    tx.execute(
                        "UPDATE webhooks SET enabled = FALSE, disabled_reason = $3, updated_at = $4 WHERE workspace_id = $1 AND id = $2",
                        params![w, &webhook_id, reason, &now],
                    )?;
                    tx.webhooks_changed(w);
                    abandon_outstanding(tx, w, &webhook_id, "not attempted: the receiver answered 410 Gone and the webhook was disabled")?;
                    tx.append(
                        w,
                        EventDraft::new("webhook.disabled", Actor::system("webhook-delivery"), Via::System)
                            .resource(format!("webhook:{webhook_id}"))
                            .data(json!({"webhook_id": webhook_id, "reason": reason, "status_code": 410, "delivery_id": delivery_id})),
                    )?;
                }
                Ok(status)
            })
            .await
    }

    async fn release_deliveries(&self, claims: Vec<ClaimedDelivery>) -> Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        self.engine
            .write(move |tx| {
                for c in &claims {
                    tx.set_workspace(c.workspace.as_str())?;
                    tx.execute(
                        "UPDATE webhook_deliveries SET lease_until = NULL WHERE workspace_id = $1 AND id = $2",
                        params![c.workspace.as_str(), &c.id],
                    )?;
                }
                tx.deliveries_queued();
                Ok(())
            })
            .await
    }

    async fn prune_deliveries(&self, before: &str, limit: i64) -> Result<usize> {
        let before = before.to_string();
        self.engine
            .write(move |tx| {
                let due = "SELECT workspace_id, id FROM webhook_deliveries WHERE next_attempt_at IS NULL AND updated_at < $1 ORDER BY updated_at LIMIT $2";
                tx.each_in_its_workspace(due, params![&before, limit], |tx, w, id| {
                    let sql = "DELETE FROM webhook_deliveries WHERE workspace_id = $1 AND id = $2 AND next_attempt_at IS NULL";
                    Ok(tx.execute(sql, params![w, id])? == 1)
                })
            })
            .await
    }

    fn on_deliveries_queued(&self, hook: super::engine::DeliveryHook) {
        self.engine.set_delivery_hook(hook);
    }

    async fn all_sealed_webhook_secrets(&self) -> Result<Vec<(WorkspaceId, String, String, Option<String>)>> {
        self.engine
            .read(|conn| {
                conn.set_all_workspaces()?;
                let rows = conn.query("SELECT workspace_id, id, secret, previous_secret FROM webhooks ORDER BY workspace_id, id", &[])?;
                rows.iter().map(|r| Ok((WorkspaceId::trusted(r.text(0)?), r.text(1)?, r.text(2)?, r.opt_text(3)?))).collect()
            })
            .await
    }

    async fn reseal_webhook_secrets(&self, ws: &WorkspaceId, id: &str, secret: String, previous: Option<String>) -> Result<()> {
        let (ws, id) = (ws.clone(), id.to_string());
        self.engine
            .write(move |tx| {
                tx.set_workspace(ws.as_str())?;
                tx.execute(
                    "UPDATE webhooks SET secret = $3, previous_secret = $4 WHERE workspace_id = $1 AND id = $2",
                    params![ws.as_str(), &id, &secret, previous.clone()],
                )?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::{KillSwitchStore, NewMember, SwitchTarget, Workspaces};

    async fn store_with_workspace(clock: Clock) -> (tempfile::TempDir, Arc<SqlStore>, WorkspaceId, Origin) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open_sqlite(&dir.path().join("t.db"), clock).unwrap();
        let owner = NewMember { email: "o@acme.test".into(), name: "O".into(), role: "owner".into(), password_hash: "x".into() };
        let (w, m) = store.create_workspace("acme", owner).await.unwrap();
        (dir, store, WorkspaceId::trusted(w.id), Origin { actor: Actor::user(m.id), via: Via::Api })
    }

    async fn hook(store: &SqlStore, ws: &WorkspaceId, by: &Origin, types: &[&str]) -> String {
        let id = new_id(IdKind::Webhook);
        let new = NewWebhook {
            id: id.clone(),
            url: "http://127.0.0.1:9/".into(),
            description: String::new(),
            event_types: types.iter().map(|t| t.to_string()).collect(),
            enabled: true,
            sealed_secret: "sealed".into(),
        };
        store.create_webhook(ws, by, new).await.unwrap();
        id
    }

    async fn toggle(store: &SqlStore, ws: &WorkspaceId, by: &Origin, times: usize) {
        for i in 0..times {
            store.set_killswitch(ws, by, SwitchTarget::Workspace, i % 2 == 0, "test").await.unwrap();
        }
    }

    /// A worker that dies mid-attempt never records it nor gives its lease back: the
    /// delivery is due again once the lease runs out, under the same id.
    #[tokio::test]
    async fn an_abandoned_claim_is_due_again_when_its_lease_runs_out() {
        let clock = Clock::system();
        let (_dir, store, ws, by) = store_with_workspace(clock.clone()).await;
        hook(&store, &ws, &by, &["killswitch.*"]).await;
        toggle(&store, &ws, &by, 1).await;
        let lease = chrono::Duration::seconds(70);
        assert!(store.deliveries_due().await.unwrap());
        let first = store.claim_deliveries(8, 4, vec![], lease).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(!store.deliveries_due().await.unwrap(), "a claimed delivery is not due");
        assert!(store.claim_deliveries(8, 4, vec![], lease).await.unwrap().is_empty(), "nor claimed twice");
        clock.advance(chrono::Duration::seconds(71));
        let again = store.claim_deliveries(8, 4, vec![], lease).await.unwrap();
        assert_eq!(again, first);
        let status = store.record_attempt(&ws, &again[0].id, AttemptResult::Delivered { status: 200 }, 0.5).await.unwrap();
        assert_eq!(status, DeliveryStatus::Delivered);
        clock.advance(chrono::Duration::days(3));
        assert!(!store.deliveries_due().await.unwrap());
    }

    /// Claims take turns between subscriptions and respect the per-subscription cap, so
    /// one subscription's backlog cannot starve another's.
    #[tokio::test]
    async fn claims_take_turns_between_subscriptions() {
        let (_dir, store, ws, by) = store_with_workspace(Clock::system()).await;
        let busy = hook(&store, &ws, &by, &["killswitch.*"]).await;
        toggle(&store, &ws, &by, 10).await;
        let quiet = hook(&store, &ws, &by, &["killswitch.*"]).await;
        toggle(&store, &ws, &by, 1).await;
        let lease = chrono::Duration::seconds(70);
        let claimed = store.claim_deliveries(4, 2, vec![], lease).await.unwrap();
        let per = |id: &str| claimed.iter().filter(|c| c.webhook_id == id).count();
        assert_eq!((per(&busy), per(&quiet)), (2, 1), "{claimed:?}");
        // The worker's own in-flight claims count against the cap.
        let more = store.claim_deliveries(4, 2, claimed.clone(), lease).await.unwrap();
        assert!(more.is_empty(), "{more:?}");
        let more = store.claim_deliveries(4, 3, claimed.clone(), lease).await.unwrap();
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].webhook_id, busy);
    }

    /// The outbox is written with the event or not at all, and only for matching,
    /// enabled subscriptions.
    #[tokio::test]
    async fn deliveries_follow_their_events_and_filters() {
        let (_dir, store, ws, by) = store_with_workspace(Clock::system()).await;
        let engaged = hook(&store, &ws, &by, &["killswitch.engaged"]).await;
        let off = hook(&store, &ws, &by, &["*"]).await;
        store.update_webhook(&ws, &by, &off, WebhookChange { enabled: Some(false), ..Default::default() }).await.unwrap();
        toggle(&store, &ws, &by, 2).await;
        let got = store.list_deliveries(&ws, &engaged, None, None, 100).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event_type, "killswitch.engaged");
        assert_eq!(got[0].status, DeliveryStatus::Pending);
        // `off` was enabled when its own creation and the update were appended, then not.
        let off_got = store.list_deliveries(&ws, &off, None, None, 100).await.unwrap();
        assert!(off_got.iter().all(|d| d.event_type.starts_with("webhook.")), "{off_got:?}");
        assert!(off_got.iter().all(|d| d.status == DeliveryStatus::Failed), "disabling gives up what was outstanding");
        // A job that fails after appending leaves neither event nor delivery behind.
        let before = store.list_deliveries(&ws, &engaged, None, None, 100).await.unwrap().len();
        let w = ws.clone();
        let failed = store
            .engine()
            .write(move |tx| {
                tx.append(w.as_str(), EventDraft::new("killswitch.engaged", Actor::system("t"), Via::System))?;
                Err::<(), _>(Error::conflict("test", "refused after appending"))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(store.list_deliveries(&ws, &engaged, None, None, 100).await.unwrap().len(), before);
    }
}
