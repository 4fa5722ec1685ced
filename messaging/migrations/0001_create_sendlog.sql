-- The original service's first migration: one row per send request.
CREATE TABLE sendlog (
    id SERIAL PRIMARY KEY,
    senttime TIMESTAMP,
    originator VARCHAR,
    type VARCHAR,
    quantity INTEGER,
    delivered INTEGER,
    failed INTEGER,
    sent INTEGER,
    message VARCHAR,
    status VARCHAR,
    description VARCHAR
);
