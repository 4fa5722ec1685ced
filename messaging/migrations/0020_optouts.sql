-- The suppression list: numbers no send reaches, whoever the caller. A reply STOP (or
-- another opt-out keyword), a provider's "recipient opted out" error, `flask optout` or
-- PUT /optouts/<msisdn> adds one; START (or UNSTOP), `flask optout remove` or DELETE
-- takes it off.
CREATE TABLE optouts (
    msisdn VARCHAR PRIMARY KEY,     -- normalised like /normalize
    source VARCHAR NOT NULL,        -- what put it there, e.g. "reply via Twilio"
    createdat TIMESTAMP NOT NULL    -- UTC
);

-- Recipients of a send left out because they were on the list when it was recorded; each
-- has its sms row `failed`, reason "opted out", counted in `failed` too.
ALTER TABLE sendlog ADD COLUMN optedout INTEGER;
