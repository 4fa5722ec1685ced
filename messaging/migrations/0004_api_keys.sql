-- API keys for authentication.service "apikey".
--
-- Only the SHA-256 of a key is stored, never the key. A slow KDF (bcrypt, scrypt, argon2)
-- is for low-entropy secrets such as passwords, which an attacker holding the table can
-- guess; a key is 32 random bytes, so no guess list exists and SHA-256 suffices, while
-- the check on every request stays a single indexed lookup.
--
-- A revoked key keeps its row (and its name, which sendlog.originator refers to), so a
-- name is never reused for a different key.
CREATE TABLE api_keys (
    id SERIAL PRIMARY KEY,
    name VARCHAR NOT NULL UNIQUE,
    key_hash CHAR(64) NOT NULL UNIQUE,     -- hex SHA-256 of the key
    created TIMESTAMP NOT NULL,            -- UTC, as every timestamp here
    last_used TIMESTAMP,                   -- UTC; refreshed at most once a minute
    revoked BOOLEAN NOT NULL DEFAULT false
);
