-- A send's recipients from before its first provider call until it finishes. Each gets
-- its sms id up front (the provider's client reference), but its sms row only once the
-- provider has answered for its batch, as the original service wrote them: one write per
-- message instead of a `queued` row and then an update of every index. A recipient here
-- with no sms row yet is `queued`; reconcile writes such rows for a send that died.
CREATE TABLE pending_recipients (
    sendlogid INTEGER PRIMARY KEY REFERENCES sendlog(id),
    segments SMALLINT NOT NULL,
    msisdns VARCHAR[] NOT NULL,
    ids INTEGER[] NOT NULL
);
-- Kept uncompressed: a status lookup during a send scans msisdns (array_position), and
-- the rows live only while their send does.
ALTER TABLE pending_recipients ALTER COLUMN msisdns SET STORAGE EXTERNAL,
                               ALTER COLUMN ids SET STORAGE EXTERNAL;
