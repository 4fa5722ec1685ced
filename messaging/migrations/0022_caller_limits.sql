-- Per-caller limits (README "Limits"): limits.requestsPerMinute, recipientsPerDay and
-- internationalPerDay hold for each originator across every process and host, so what each
-- one has used lives here, not in a process's memory.
--
-- One row per originator, limit and window: a send's transaction adds to its rows with
-- INSERT ... ON CONFLICT DO UPDATE, whose row lock makes concurrent sends of one caller
-- take turns, and rolls back (its usage with it) when a limit would be passed. The rows of
-- windows that have ended are deleted when a caller's next window begins.
CREATE TABLE caller_usage (
    originator VARCHAR NOT NULL,        -- as sendlog.originator: serviceauth Identity or key name
    counter VARCHAR NOT NULL,           -- requestsPerMinute, recipientsPerDay, internationalPerDay
    window_start TIMESTAMP NOT NULL,    -- UTC: a minute or a day, as the counter says
    window_end TIMESTAMP NOT NULL,      -- UTC: when this window frees
    used BIGINT NOT NULL,
    PRIMARY KEY (originator, counter, window_start)
);

-- A key's own limits (`flask api-key create/limits --recipients-per-day N`): NULL takes the
-- config's limits.<name>; -1 lifts it for this key (unlimited); 0 or more is the limit.
ALTER TABLE api_keys
    ADD COLUMN requests_per_minute BIGINT CHECK (requests_per_minute >= -1),
    ADD COLUMN recipients_per_day BIGINT CHECK (recipients_per_day >= -1),
    ADD COLUMN international_per_day BIGINT CHECK (international_per_day >= -1);
