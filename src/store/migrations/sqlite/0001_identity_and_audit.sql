-- Workspaces, people, roles, sessions, agent tokens, and the audit chain.
-- Every workspace-owned row carries workspace_id, and every query the store makes
-- filters on it.

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

-- The log is append-only: no UPDATE, no DELETE, ever.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only: UPDATE is refused');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only: DELETE is refused');
END;

-- The last link of each workspace's chain, so an append need not search for it.
CREATE TABLE audit_heads (
    workspace_id TEXT PRIMARY KEY REFERENCES workspaces(id),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

-- Failed sign-ins, for rate limiting by account and by address. Keys are
-- 'account:<email>' and 'address:<ip>'; rows older than the window are pruned.
CREATE TABLE auth_failures (
    key TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX auth_failures_by_key ON auth_failures (key, at);
