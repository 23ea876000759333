-- Actions whose connector call is in flight, by when it started: the sweeper looks here
-- for calls that a server stopping mid-call cut off (see server::connectors::INTERRUPTED_AFTER).
-- Partial, so deciding and recording actions in any other status never touches it.
CREATE INDEX actions_executing ON actions (updated_at) WHERE status = 'executing';
