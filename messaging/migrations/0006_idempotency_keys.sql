-- Idempotency-Key: the first answer to a key, replayed for 24 hours to the same caller.
CREATE TABLE idempotency_keys (
    identity VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    created TIMESTAMP NOT NULL,
    response JSONB,
    PRIMARY KEY (identity, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created);
