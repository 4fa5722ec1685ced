-- The 2018 Go service's names and types, readable by its own reports after the upgrade.
--
-- sms.segments: the 2018 original's name. Migration 0003 renamed it to "quantity" (the
-- 2016 builds' name) on the wrong assumption that those came later; name it back, and give
-- a 2016 build's (or a database we created) "quantity" the 2018 name too.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'sms'
                 AND column_name = 'quantity')
       AND NOT EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'sms'
                 AND column_name = 'segments') THEN
        ALTER TABLE sms RENAME COLUMN quantity TO segments;
    END IF;
END $$;

-- Ids are BIGINT wherever they are or reference an sms or sendlog id, as the 2018 original's
-- BIGSERIAL keys are (a 2016 build, and our migrations 1 and 2, made them SERIAL). Each
-- ALTER rewrites its table once; it is a no-op where the type is already bigint.
ALTER SEQUENCE sendlog_id_seq AS BIGINT;
ALTER SEQUENCE sms_id_seq AS BIGINT;
ALTER TABLE sendlog ALTER COLUMN id TYPE BIGINT,
                    ALTER COLUMN dispatchedthrough TYPE BIGINT;
ALTER TABLE sms ALTER COLUMN id TYPE BIGINT,
                ALTER COLUMN sendlogid TYPE BIGINT;
ALTER TABLE pending_recipients ALTER COLUMN sendlogid TYPE BIGINT,
                               ALTER COLUMN ids TYPE BIGINT[];
ALTER TABLE poll_claims ALTER COLUMN first_id TYPE BIGINT,
                        ALTER COLUMN last_id TYPE BIGINT;
