-- sms.sendlogid without a foreign key, as the 2018 original has it (ORIGINAL.md) and so as
-- a database upgraded from it already is; our migration 2 copied the 2016 builds' key.
-- Its check looked the send's row up and locked it once for every message written: a
-- quarter of the cost of a batch's 100 sms rows (K1), with the send's row locked anyway by
-- each statement that writes them (record_batch, fail_ready_batches, record_opted_out).
DO $$
DECLARE
    name text;
BEGIN
    FOR name IN SELECT conname FROM pg_constraint
                WHERE conrelid = 'sms'::regclass AND contype = 'f'
                  AND confrelid = 'sendlog'::regclass
    LOOP
        EXECUTE format('ALTER TABLE sms DROP CONSTRAINT %I', name);
    END LOOP;
END $$;
