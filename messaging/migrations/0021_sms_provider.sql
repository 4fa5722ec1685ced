-- Which provider carried each message, by its configured name, so that polling, receipts,
-- reconcile and webhooks follow the provider that has it once there are several. NULL for
-- the rows written before: they were carried by the one `smsProvider` of their day.
ALTER TABLE sms ADD COLUMN provider VARCHAR;
