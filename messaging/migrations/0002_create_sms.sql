-- The original service's second migration: one row per recipient of a send.
CREATE TABLE sms (
    id SERIAL PRIMARY KEY,
    msisdn VARCHAR,
    senttime TIMESTAMP,
    quantity SMALLINT,
    sendlogid INTEGER REFERENCES sendlog(id),
    status VARCHAR,
    statustimestamp TIMESTAMP,
    message VARCHAR,
    providerid VARCHAR
);
