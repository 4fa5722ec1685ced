-- Per-message error detail and the indexes behind status lookups and polling.

-- Some builds of the Go service named the segment column "segments"; keep their data.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'sms'
                 AND column_name = 'segments')
       AND NOT EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'sms'
                 AND column_name = 'quantity') THEN
        ALTER TABLE sms RENAME COLUMN segments TO quantity;
    END IF;
END $$;

ALTER TABLE sms ADD COLUMN errorcode VARCHAR;
ALTER TABLE sms ADD COLUMN reason VARCHAR;
ALTER TABLE sendlog ADD COLUMN sender VARCHAR;

-- "Latest message for a number": GET /messagestatus.
CREATE INDEX sms_msisdn_latest ON sms (msisdn, senttime DESC, id DESC);
-- "Unresolved messages": poll-status scans only rows still in flight.
CREATE INDEX sms_unresolved ON sms (senttime) WHERE status = 'sent';
-- Delivery receipts and status answers arrive keyed by provider id.
CREATE INDEX sms_providerid ON sms (providerid);
-- A send's recipients, in order, for GET /sends/<ref>.
CREATE INDEX sms_sendlogid ON sms (sendlogid, id);
