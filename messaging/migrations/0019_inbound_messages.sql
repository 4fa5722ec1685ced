-- Replies (MO messages) the provider pushed to POST /callbacks/<provider>/inbound, each kept
-- once: a provider that repeats a push (Vonage does for 24 hours without a 200) finds its
-- id already here and nothing happens twice.
CREATE TABLE inbound_messages (
    id BIGSERIAL PRIMARY KEY,
    provider VARCHAR NOT NULL,      -- smsProvider.name that pushed it
    providerid VARCHAR NOT NULL,    -- the provider's id of the message
    msisdn VARCHAR NOT NULL,        -- who sent it: normalised like /normalize where valid
    recipient VARCHAR NOT NULL,     -- the number or short code it was sent to
    message TEXT NOT NULL,
    receivedat TIMESTAMP NOT NULL,  -- UTC, when it reached us
    action VARCHAR,                 -- 'opt-out' or 'opt-in' when its first word was a keyword
    UNIQUE (provider, providerid)
);
CREATE INDEX inbound_messages_receivedat ON inbound_messages (receivedat);
