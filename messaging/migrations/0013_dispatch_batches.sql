-- Dispatch from PostgreSQL: a send's recipients wait here, a row per provider batch, until a
-- dispatcher (or the request itself, for up to smsProvider.waitSeconds) claims the batch,
-- hands it to the provider and writes its recipients' sms rows with the answer, in the
-- transaction that deletes the row. So this table holds only work still to do.
--
-- A batch is `ready` (never handed over: safe to send) or `sending` (claimed; it may have
-- reached the provider). A claim is a lease: `sending` with `leaseduntil` in the past means
-- its dispatcher died, and whoever takes it over settles it without resending (the
-- provider's own lookup where it has one, else "provider outcome unknown").
CREATE TABLE dispatch_batches (
    id BIGSERIAL PRIMARY KEY,
    sendlogid BIGINT NOT NULL REFERENCES sendlog(id),
    seq INTEGER NOT NULL,           -- the batch's place in its send, from 1: bulk sends take turns
    bulk BOOLEAN NOT NULL,          -- false: a small send, which goes ahead of bulk batches
    segments SMALLINT NOT NULL,
    msisdns VARCHAR[] NOT NULL,
    ids BIGINT[] NOT NULL,          -- their sms ids, our client reference at the provider
    state VARCHAR NOT NULL DEFAULT 'ready',
    due TIMESTAMPTZ NOT NULL,       -- not before: sendAt, or the back-off after a refusal
    claimedat TIMESTAMPTZ,
    leaseduntil TIMESTAMPTZ,
    leasedby VARCHAR,
    attempts INTEGER NOT NULL DEFAULT 0,
    firstattempt TIMESTAMPTZ,       -- smsProvider.retryWindow counts from here
    lasterror VARCHAR               -- why the provider refused it for now, shown as its reason
);
-- Claim order: small sends first, then batch by batch across sends (see queries/dispatch.py).
CREATE INDEX dispatch_batches_ready ON dispatch_batches (bulk, seq, id) WHERE state = 'ready';
CREATE INDEX dispatch_batches_leased ON dispatch_batches (leaseduntil) WHERE state = 'sending';
CREATE INDEX dispatch_batches_send ON dispatch_batches (sendlogid);
ALTER TABLE dispatch_batches ALTER COLUMN msisdns SET STORAGE EXTERNAL,
                             ALTER COLUMN ids SET STORAGE EXTERNAL;

ALTER TABLE sendlog ADD COLUMN sendat TIMESTAMP;        -- UTC; a scheduled send
ALTER TABLE sendlog ADD COLUMN cancelledat TIMESTAMP;   -- UTC
ALTER TABLE sendlog ADD COLUMN accepted INTEGER;        -- recipients the provider took
-- The first whole-request refusal (out of credit, bad credentials): the send's description.
ALTER TABLE sendlog ADD COLUMN failure VARCHAR;

-- Sends recorded before dispatchers existed and still unfinished: recipients above the
-- dispatch mark never reached the provider and are sent now; those at or below it may
-- have, and are settled as taken over from a dead process.
INSERT INTO dispatch_batches (sendlogid, seq, bulk, segments, msisdns, ids, state, due,
                              claimedat, leaseduntil, leasedby, attempts)
SELECT sendlogid, CASE WHEN fresh THEN 2 ELSE 1 END, true, segments,
       array_agg(msisdn ORDER BY id), array_agg(id ORDER BY id),
       CASE WHEN fresh THEN 'ready' ELSE 'sending' END, now(),
       CASE WHEN fresh THEN NULL ELSE now() END, CASE WHEN fresh THEN NULL ELSE now() END,
       CASE WHEN fresh THEN NULL ELSE 'migration 0013' END, CASE WHEN fresh THEN 0 ELSE 1 END
FROM (SELECT pending.sendlogid, pending.segments, r.id, r.msisdn,
             r.id > COALESCE(sendlog.dispatchedthrough, 0) AS fresh
      FROM pending_recipients AS pending
      JOIN sendlog ON sendlog.id = pending.sendlogid
      CROSS JOIN LATERAL unnest(pending.ids, pending.msisdns) AS r(id, msisdn)
      WHERE NOT EXISTS (SELECT 1 FROM sms WHERE sms.id = r.id)) AS waiting
GROUP BY sendlogid, segments, fresh;
DROP TABLE pending_recipients;

UPDATE sendlog SET accepted = counted.accepted
FROM (SELECT sendlogid, count(*) AS accepted FROM sms WHERE providerid <> ''
      GROUP BY sendlogid) AS counted
WHERE sendlog.id = counted.sendlogid;

-- The HTTP status of an Idempotency-Key's first answer (202 for a send answered at once).
ALTER TABLE idempotency_keys ADD COLUMN statuscode SMALLINT;

-- The provider's request rate, shared by every process on every host: each request takes
-- the next slot (GCRA without burst), so maxRequestsPerSecond holds for them all together.
CREATE UNLOGGED TABLE provider_rate (
    provider VARCHAR PRIMARY KEY,
    nextat TIMESTAMPTZ NOT NULL
);

-- Dispatchers alive (for /healthz and flask stats): each refreshes its row every few seconds.
CREATE UNLOGGED TABLE dispatchers (
    name VARCHAR PRIMARY KEY,       -- host:pid
    started TIMESTAMPTZ NOT NULL,
    seen TIMESTAMPTZ NOT NULL
);
