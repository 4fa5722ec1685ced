-- poll-status claims tell a lease from an ask. A claim is a lease until its run stores the
-- answers (`asked` true, `polluntil` the time it asked). A lease whose `polluntil` passed
-- unasked was left by a run that died or was stopped: its messages still `sent` are
-- polled once more, even when they have left the window meanwhile.
-- Claims made before this migration are taken as asked, as they were then.
ALTER TABLE poll_claims ADD COLUMN asked BOOLEAN NOT NULL DEFAULT true;
ALTER TABLE poll_claims ALTER COLUMN asked SET DEFAULT false;
