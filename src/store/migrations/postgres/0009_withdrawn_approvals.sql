-- An approval is withdrawn when whoever asked can no longer act (its agent token revoked,
-- its requester deactivated): a state of its own, so it leaves the queue at once.
ALTER TABLE approvals DROP CONSTRAINT approvals_state_check;
ALTER TABLE approvals ADD CONSTRAINT approvals_state_check
    CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'consumed', 'withdrawn'));
