-- Every status event of every message, as it happened: what the send, a poll, a pushed
-- receipt, a cancel or reconcile said, with the provider's own code and text. The
-- latest-status columns of sms stay the fast answer; this is the history behind them
-- (GET /sends/<ref>/messages/<msisdn>) and what status webhooks carry.
--
-- Rows are only appended, in the transaction that changes the message, and read by
-- message, so the table has no key: `seq` orders the events and names each one (the
-- webhook event id is "evt_<seq>").
CREATE TABLE sms_events (
    seq BIGSERIAL NOT NULL,
    smsid BIGINT NOT NULL,
    sendlogid BIGINT,
    time TIMESTAMP NOT NULL,       -- UTC, as every other timestamp of the original's tables
    source VARCHAR NOT NULL,       -- send, poll, receipt, cancel or reconcile
    status VARCHAR NOT NULL,       -- ours: sent, delivered or failed
    errorcode VARCHAR,             -- the provider's raw code and text
    reason VARCHAR,
    failurekind VARCHAR,           -- of a failure: temporary, permanent or unknown
    providerid VARCHAR
);
CREATE INDEX sms_events_smsid ON sms_events (smsid);

-- The latest failure's kind beside the latest code, for GET /sends/<ref>.
ALTER TABLE sms ADD COLUMN failurekind VARCHAR;
ALTER TABLE early_receipts ADD COLUMN failurekind VARCHAR;
