-- Finished deliveries (delivered, or given up) by when they finished: the delivery log
-- keeps them for a while (`serve --webhook-delivery-days`), then forgets them, oldest
-- first. Outstanding deliveries (`next_attempt_at` set) are not in it.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at) WHERE next_attempt_at IS NULL;
