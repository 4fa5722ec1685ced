-- An Idempotency-Key belongs to the send its first request recorded, for good: the key
-- is claimed in the same transaction that records the send, so a repeat finds that send
-- (still running, finished, or closed by reconcile) and never makes a second one.
ALTER TABLE idempotency_keys ADD COLUMN sendlogid BIGINT;
