-- Status webhooks: where a send's events go (the caller's callbackUrl, or
-- deliveryStatus.callbackUrl when it named none), and whether the caller chose it: such a
-- URL's host is resolved and checked again before each delivery (DNS can change).
ALTER TABLE sendlog ADD COLUMN callbackurl VARCHAR;
ALTER TABLE sendlog ADD COLUMN callbackchecked BOOLEAN;

-- The outbox: one row per webhook POST, written in the transaction that makes its events,
-- so none is lost or made up; deleted once the receiver took it. Dispatchers claim rows
-- with FOR UPDATE SKIP LOCKED under a lease. Rows of one lane (a send) go one at a time
-- in id order, so a message's events arrive in the order they happened; a row with no
-- lane goes whenever it is due.
CREATE TABLE webhook_outbox (
    id BIGSERIAL PRIMARY KEY,      -- the webhook-id is "msg_<id>"
    kind VARCHAR NOT NULL,         -- the payload's type: message.status, ...
    lane BIGINT,                   -- a send's id; NULL: no order to keep
    url VARCHAR NOT NULL,
    checkaddress BOOLEAN NOT NULL, -- resolve the host and refuse a private address first
    events INTEGER NOT NULL,       -- events the payload carries
    payload TEXT NOT NULL,         -- the JSON body, exactly as sent (the signature covers it)
    created TIMESTAMPTZ NOT NULL DEFAULT now(),  -- retries end 24 hours after this
    state VARCHAR NOT NULL DEFAULT 'ready',      -- ready, sending (leased) or dead
    due TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts INTEGER NOT NULL DEFAULT 0,
    leaseduntil TIMESTAMPTZ,
    leasedby VARCHAR,
    lasterror VARCHAR              -- why the last attempt failed (or why it is dead)
);
CREATE INDEX webhook_outbox_live ON webhook_outbox (id) WHERE state <> 'dead';
CREATE INDEX webhook_outbox_lane ON webhook_outbox (lane, id) WHERE state <> 'dead';
CREATE INDEX webhook_outbox_dead ON webhook_outbox (lane) WHERE state = 'dead';

-- Retention (flask purge) walks sends by age.
CREATE INDEX sendlog_senttime ON sendlog (senttime);
