-- Crash recovery (flask reconcile). Before each provider call the send path records the
-- highest sms.id of the batch it is handing over, and when: a recipient still `queued`
-- at or below the mark may have reached the provider, one above it never did. The time
-- is the send's last sign of life, so reconcile leaves a send that is still working alone.
ALTER TABLE sendlog ADD COLUMN dispatchedthrough INTEGER;
ALTER TABLE sendlog ADD COLUMN dispatchedat TIMESTAMP;

-- Sends that never finished (reconcile's starting point).
CREATE INDEX sendlog_sending ON sendlog (senttime) WHERE status = 'sending';
