-- Several providers (issue 18): a batch remembers which provider it was handed to (an
-- abandoned batch is asked about there, never resent elsewhere) and which providers it
-- may no longer go to: those that refused it unprocessed in this round of attempts, and
-- those that rejected its recipients for a reason of their own (they are retried once
-- on another provider). Poll claims belong to one provider's run.
ALTER TABLE dispatch_batches ADD COLUMN provider VARCHAR;
ALTER TABLE dispatch_batches ADD COLUMN refusedby VARCHAR[] NOT NULL DEFAULT '{}';
ALTER TABLE dispatch_batches ADD COLUMN rejectedby VARCHAR[] NOT NULL DEFAULT '{}';
ALTER TABLE poll_claims ADD COLUMN provider VARCHAR;

-- Provider health, shared by every dispatcher on every host: what each provider's calls
-- came to, by second and by writer (a row per connection, so writers never wait on each
-- other), and the messages that reached a final status with the time they took. The
-- rows of the last window are what a provider is judged on; older ones are dropped.
CREATE UNLOGGED TABLE provider_calls (
    provider VARCHAR NOT NULL,
    writer VARCHAR NOT NULL,
    bucket TIMESTAMPTZ NOT NULL,
    accepted INTEGER NOT NULL DEFAULT 0,    -- calls the provider answered
    refused INTEGER NOT NULL DEFAULT 0,     -- refused unprocessed (unavailable, 429, account)
    errors INTEGER NOT NULL DEFAULT 0,      -- outcome unknown or failed unexpectedly
    finals INTEGER NOT NULL DEFAULT 0,      -- messages that reached delivered or failed
    finalseconds DOUBLE PRECISION NOT NULL DEFAULT 0,  -- the time they took, summed
    PRIMARY KEY (provider, bucket, writer)
);

-- Each provider's share of its configured weight (0 to 1): it drops when the provider
-- misbehaves and climbs back a step at a time once it behaves.
CREATE UNLOGGED TABLE provider_health (
    provider VARCHAR PRIMARY KEY,
    factor REAL NOT NULL DEFAULT 1,
    changedat TIMESTAMPTZ NOT NULL DEFAULT now(),
    evaluatedat TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason VARCHAR NOT NULL DEFAULT ''
);
