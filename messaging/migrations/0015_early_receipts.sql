-- Final receipts for provider ids no message carries yet. A receipt can overtake the write
-- of its batch's answers: Vonage's came 40 ms after it accepted a message, while the rest
-- of the batch was still going out. The send path applies them in the transaction that
-- writes the batch's rows; poll-status drops (and logs) those older than 24 hours.
CREATE TABLE early_receipts (
    providerid VARCHAR PRIMARY KEY,
    status VARCHAR NOT NULL,
    errorcode VARCHAR,
    reason VARCHAR,
    receivedat TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX early_receipts_receivedat ON early_receipts (receivedat);
