-- The constitution: immutable, numbered versions per workspace (as SQLite's 0005; see
-- src/constitution.rs), fenced to their workspace and append-only like the audit log.

CREATE TABLE constitution_versions (
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    -- 1, 2, 3…: gapless per workspace. Two replicas publishing at once both try the same
    -- number; the primary key keeps one, and the other runs again (see publish_constitution).
    version BIGINT NOT NULL CHECK (version >= 1),
    -- JSON: the list of rules exactly as published (see src/constitution.rs `Rule`).
    rules TEXT NOT NULL,
    rule_count BIGINT NOT NULL,
    -- SHA-256 of the rules' RFC 8785 canonical form; the audit event carries it too.
    rules_sha256 TEXT NOT NULL,
    -- The member who published it.
    published_by TEXT NOT NULL REFERENCES members(id),
    published_at TEXT NOT NULL,
    PRIMARY KEY (workspace_id, version)
);

-- A published version never changes and never goes away: publish a new one instead.
CREATE TRIGGER constitution_versions_no_update BEFORE UPDATE ON constitution_versions FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER constitution_versions_no_delete BEFORE DELETE ON constitution_versions FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();
CREATE TRIGGER constitution_versions_no_truncate BEFORE TRUNCATE ON constitution_versions FOR EACH STATEMENT EXECUTE FUNCTION countersign_append_only();

SELECT countersign_fence('constitution_versions', 'workspace_id');

GRANT SELECT, INSERT ON constitution_versions TO countersign_server;
