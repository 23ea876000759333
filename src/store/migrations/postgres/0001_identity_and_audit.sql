-- Workspaces, people, roles, sessions, agent tokens, and the audit chain: the same schema
-- as SQLite's 0001, plus what several replicas on one database need:
--   * row-level security on every workspace-owned table, forced even on the owner: a
--     transaction sees the rows of the workspace it set (`app.workspace_id`), or, for the
--     few reads that are cross-workspace by nature, of every workspace once it opts in
--     (`app.all_workspaces = 'on'`); writes are always fenced to the one workspace;
--   * the group role `countersign_server`, granted exactly what a server replica needs (the
--     role a replica logs in as is a member of it, and owns nothing);
--   * the audit log refuses UPDATE, DELETE and TRUNCATE from everyone, the owner too;
--   * `config_epoch`, the shared counter behind every replica's caches.
-- This runs as the schema's owner (`countersign admin migrate`), never as the server.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'countersign_server') THEN
        CREATE ROLE countersign_server NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'the role countersign_server does not exist and this role may not create it; as a superuser run: CREATE ROLE countersign_server NOLOGIN (see docs/OPERATIONS.md)';
END $$;

-- Fences a table to the transaction's workspace. Every workspace-owned table is fenced with
-- it, in the migration that creates the table.
CREATE FUNCTION countersign_fence(tbl regclass, col text) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format(
        $p$CREATE POLICY fence_read ON %s FOR SELECT
           USING (%I = current_setting('app.workspace_id', true) OR current_setting('app.all_workspaces', true) = 'on')$p$,
        tbl, col);
    EXECUTE format(
        $p$CREATE POLICY fence_write ON %s
           USING (%I = current_setting('app.workspace_id', true))
           WITH CHECK (%I = current_setting('app.workspace_id', true))$p$,
        tbl, col, col);
END
$fn$;

CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    agent_writes_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    approval_ttl_seconds BIGINT NOT NULL DEFAULT 1800
);

CREATE TABLE roles (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    permissions TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE members (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    -- 'owner', 'admin', 'member', 'viewer', or a custom role's id.
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'deactivated')),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (workspace_id, email)
);
-- Exactly one owner: at most one by this index, at least one because the owner can
-- only be replaced by a transfer, never demoted or deactivated.
CREATE UNIQUE INDEX members_one_owner ON members (workspace_id) WHERE role = 'owner';
CREATE INDEX members_by_email ON members (email);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    member_id TEXT NOT NULL REFERENCES members(id),
    secret_hash TEXT NOT NULL UNIQUE,
    client TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX sessions_by_member ON sessions (workspace_id, member_id);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    owner_id TEXT NOT NULL REFERENCES members(id),
    name TEXT NOT NULL,
    scopes TEXT NOT NULL,
    tools TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    secret_hint TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    last_used_at TEXT,
    rotated_at TEXT,
    revoked_at TEXT
);
CREATE INDEX tokens_by_owner ON tokens (workspace_id, owner_id);

CREATE TABLE audit_events (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    seq BIGINT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    ts TEXT NOT NULL,
    event_type TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    via TEXT NOT NULL,
    resource TEXT,
    payload_sha256 TEXT,
    outcome TEXT NOT NULL,
    data TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (workspace_id, seq)
);
CREATE INDEX audit_events_by_time ON audit_events (workspace_id, ts);

-- The log is append-only: no UPDATE, no DELETE, no TRUNCATE, ever, whoever asks (the server
-- role is not even granted them; these refuse the owner too). Statement triggers, so that
-- even a statement that matches no row is refused.
CREATE FUNCTION countersign_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION '% is append-only: % is refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'integrity_constraint_violation';
END
$fn$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();

-- The last link of each workspace's chain, so an append need not search for it. Its row,
-- made with the workspace, is what appends lock (`FOR UPDATE`): per workspace, replicas
-- append one batch at a time.
CREATE TABLE audit_heads (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

-- Failed sign-ins, for rate limiting by account and by address. Keys are
-- 'account:<email>' and 'address:<ip>'; rows older than the window are pruned. Not owned by
-- a workspace (an e-mail may have accounts in several), so not fenced.
CREATE TABLE auth_failures (
    key TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX auth_failures_by_key ON auth_failures (key, at);

-- Moved in the transaction of every change to identity or configuration; read by every
-- replica on every request, so no replica answers from a cache older than a committed change.
CREATE TABLE config_epoch (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    epoch BIGINT NOT NULL
);
INSERT INTO config_epoch (id, epoch) VALUES (1, 1);

SELECT countersign_fence('workspaces', 'id');
SELECT countersign_fence('roles', 'workspace_id');
SELECT countersign_fence('members', 'workspace_id');
SELECT countersign_fence('sessions', 'workspace_id');
SELECT countersign_fence('tokens', 'workspace_id');
SELECT countersign_fence('audit_events', 'workspace_id');
SELECT countersign_fence('audit_heads', 'workspace_id');

GRANT SELECT ON schema_migrations TO countersign_server;
GRANT SELECT, UPDATE ON config_epoch TO countersign_server;
GRANT SELECT, INSERT, UPDATE ON workspaces, members, sessions, tokens TO countersign_server;
GRANT SELECT, INSERT, UPDATE, DELETE ON roles, auth_failures TO countersign_server;
GRANT SELECT, INSERT, UPDATE ON audit_heads TO countersign_server;
GRANT SELECT, INSERT ON audit_events TO countersign_server;
