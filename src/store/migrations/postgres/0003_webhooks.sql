-- Webhooks: subscriptions and their durable outbox of deliveries (as SQLite's 0003), each
-- fenced to its workspace.

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- JSON array of filters: exact event types, `family.*`, or `*`.
    event_types TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    -- Why it was disabled by Countersign (a 410 Gone), if it was.
    disabled_reason TEXT,
    -- The signing secret (`whsec_…`), sealed with the master key (see src/vault.rs),
    -- never plain.
    secret TEXT NOT NULL,
    -- The secret before the last rotation, sealed, still signing until it expires.
    previous_secret TEXT,
    previous_secret_expires_at TEXT,
    secret_rotated_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- What every audit append reads (once per write batch and workspace).
CREATE INDEX webhooks_by_workspace ON webhooks (workspace_id);

-- The outbox: one row per (event, subscription), written in the same transaction as the
-- event. A delivery's id is the `webhook-id` header, the same on every attempt.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    webhook_id TEXT NOT NULL REFERENCES webhooks(id),
    event_seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'retrying', 'delivered', 'failed')),
    -- Attempts made, ever; and how many of them came before the last redelivery by hand
    -- (the retry schedule restarts there).
    attempts BIGINT NOT NULL DEFAULT 0,
    retry_base BIGINT NOT NULL DEFAULT 0,
    -- When the next attempt is due; NULL once delivered or given up.
    next_attempt_at TEXT,
    -- While an attempt is in flight: until when the worker that claimed it holds it.
    -- A worker that dies mid-attempt leaves a lease that simply runs out. Two replicas'
    -- workers take a lease with a conditional UPDATE: one wins.
    lease_until TEXT,
    last_attempt_at TEXT,
    last_status_code BIGINT,
    last_error TEXT,
    delivered_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhook_deliveries_outstanding ON webhook_deliveries (webhook_id, next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (workspace_id, webhook_id, id);

SELECT countersign_fence('webhooks', 'workspace_id');
SELECT countersign_fence('webhook_deliveries', 'workspace_id');

GRANT SELECT, INSERT, UPDATE, DELETE ON webhooks, webhook_deliveries TO countersign_server;
