-- A kept receipt belongs to the provider that pushed it. Two providers may hand out the
-- same id, and one's receipt must not settle the other's message. '' marks a receipt
-- kept before receipts were kept by provider: any provider's message may take it.
ALTER TABLE early_receipts ADD COLUMN provider VARCHAR NOT NULL DEFAULT '';
ALTER TABLE early_receipts DROP CONSTRAINT early_receipts_pkey;
ALTER TABLE early_receipts ADD PRIMARY KEY (providerid, provider);
