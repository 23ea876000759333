-- Signed checkpoints of each workspace's audit chain head (as SQLite's 0004; see
-- src/checkpoint.rs): fenced to their workspace, and append-only like the log itself.
-- Replicas signing the same head with the same key keep one row (the primary key).

CREATE TABLE audit_checkpoints (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    ts TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (workspace_id, seq, key_id)
);

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();

SELECT countersign_fence('audit_checkpoints', 'workspace_id');

GRANT SELECT, INSERT ON audit_checkpoints TO countersign_server;
