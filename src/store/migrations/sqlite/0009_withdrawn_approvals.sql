-- An approval is withdrawn when whoever asked can no longer act (its agent token revoked,
-- its requester deactivated): a state of its own, so it leaves the queue at once instead
-- of waiting for approvers who could only approve something that would never run.
--
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt, as SQLite's
-- documentation describes (the runner turns foreign keys off around migrations and
-- checks them before committing). Approvals are not audit rows: the audit log is untouched.
CREATE TABLE approvals_new (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    action_id TEXT NOT NULL REFERENCES actions(id),
    tool TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    policy TEXT NOT NULL,
    required BIGINT NOT NULL CHECK (required IN (1, 2)),
    requester_id TEXT NOT NULL REFERENCES members(id),
    state TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'consumed', 'withdrawn')),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    decided_at TEXT,
    consumed_at TEXT
);
INSERT INTO approvals_new (id, workspace_id, action_id, tool, payload_sha256, policy, required, requester_id, state, created_at, expires_at, decided_at, consumed_at)
    SELECT id, workspace_id, action_id, tool, payload_sha256, policy, required, requester_id, state, created_at, expires_at, decided_at, consumed_at FROM approvals;
DROP TABLE approvals;
ALTER TABLE approvals_new RENAME TO approvals;
CREATE INDEX approvals_by_state ON approvals (workspace_id, state, expires_at);
CREATE INDEX approvals_open_by_expiry ON approvals (expires_at) WHERE state IN ('pending', 'approved');
