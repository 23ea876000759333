-- The gate: tools, kill switches, actions, approvals, idempotency keys (as SQLite's 0002),
-- each fenced to its workspace.

CREATE TABLE tools (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL CHECK (kind IN ('read', 'write')),
    irreversible BOOLEAN NOT NULL,
    policy TEXT NOT NULL CHECK (policy IN ('auto', 'approve', 'approve-dual')),
    min_confidence DOUBLE PRECISION,
    approval_ttl_seconds BIGINT,
    -- JSON; secret header values are sealed (see src/vault.rs), never plain.
    connector TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (workspace_id, name),
    -- The irreversible floor, once more at the bottom: auto never runs an irreversible tool.
    CHECK (NOT (irreversible AND policy = 'auto'))
);

CREATE TABLE killswitches (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    -- 'workspace', or 'tool:<name>'
    target TEXT NOT NULL,
    engaged BOOLEAN NOT NULL,
    reason TEXT,
    changed_by TEXT,
    changed_at TEXT,
    PRIMARY KEY (workspace_id, target)
);

CREATE TABLE actions (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    tool TEXT NOT NULL,
    status TEXT NOT NULL,
    -- The payload's RFC 8785 canonical form: exactly what was hashed.
    payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    resource TEXT,
    current TEXT,
    reason TEXT,
    confidence DOUBLE PRECISION,
    requester_id TEXT NOT NULL REFERENCES members(id),
    agent_token_id TEXT,
    via TEXT NOT NULL,
    approval_id TEXT,
    required_approvals BIGINT NOT NULL,
    decision TEXT NOT NULL,
    result TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX actions_by_workspace ON actions (workspace_id, id);
CREATE INDEX actions_by_status ON actions (workspace_id, status, id);

CREATE TABLE approvals (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    action_id TEXT NOT NULL REFERENCES actions(id),
    tool TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    policy TEXT NOT NULL,
    required BIGINT NOT NULL CHECK (required IN (1, 2)),
    requester_id TEXT NOT NULL REFERENCES members(id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'consumed')),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    decided_at TEXT,
    consumed_at TEXT
);
CREATE INDEX approvals_by_state ON approvals (workspace_id, state, expires_at);
CREATE INDEX approvals_open_by_expiry ON approvals (expires_at) WHERE state IN ('pending', 'approved');

CREATE TABLE approval_decisions (
    approval_id TEXT NOT NULL REFERENCES approvals(id),
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    member_id TEXT NOT NULL REFERENCES members(id),
    decision TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    reason TEXT,
    payload_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    -- One decision per human per approval: the database says so too.
    PRIMARY KEY (approval_id, member_id)
);

CREATE TABLE idempotency_keys (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    -- Keys are scoped to whoever sent them: a member or an agent token.
    principal TEXT NOT NULL,
    key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    action_id TEXT NOT NULL,
    -- The answer, once there is one; NULL while the call is still running.
    response TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (workspace_id, principal, key)
);

SELECT countersign_fence('tools', 'workspace_id');
SELECT countersign_fence('killswitches', 'workspace_id');
SELECT countersign_fence('actions', 'workspace_id');
SELECT countersign_fence('approvals', 'workspace_id');
SELECT countersign_fence('approval_decisions', 'workspace_id');
SELECT countersign_fence('idempotency_keys', 'workspace_id');

GRANT SELECT, INSERT, UPDATE ON tools, killswitches, actions, approvals, approval_decisions, idempotency_keys TO countersign_server;
