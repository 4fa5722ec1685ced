-- poll-status claims. A poll run walks the messages still `sent` in id order and claims
-- them a chunk at a time as one id range: while it asks the provider, `polluntil` is a
-- lease (claim time + lease); afterwards it is the time it asked. Another run skips the
-- ids in every range whose `polluntil` is not before that run started, so two runs
-- never ask about one message at once and no run asks twice. Claims are taken one at a
-- time (under an advisory lock) so ranges are checked and written without races.
-- UNLOGGED: leases are worthless after a crash, and one row per chunk stays cheap.
CREATE UNLOGGED TABLE poll_claims (
    id SERIAL PRIMARY KEY,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    polluntil TIMESTAMPTZ NOT NULL
);

-- Messages still in flight in id order: a poll run walks them with a cursor.
CREATE INDEX sms_unresolved_id ON sms (id) WHERE status = 'sent';
