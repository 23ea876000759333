-- Moves with every committed change to what a workspace's decisions depend on (its
-- settings, tools, kill switches, constitution, members, roles, sessions and tokens), in
-- the transaction of the change. An action to run now is refused if its workspace's
-- version moved between its decision and its record: a change acknowledged in one
-- workspace stops what was decided under the old configuration there, and only there.
ALTER TABLE workspaces ADD COLUMN config_version BIGINT NOT NULL DEFAULT 0;
