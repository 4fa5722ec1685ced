-- Indexes behind the operator's page (GET /admin), each for a query that otherwise read
-- every row of its table (EXPLAIN on 1,000,000 messages; see bench/d1_admin.py).

-- Status events in time order: the overview counts each hour's events (queries/admin.py).
CREATE INDEX sms_events_time ON sms_events (time) INCLUDE (status);
-- One send's events in time order: its page's delivery-over-time chart.
CREATE INDEX sms_events_send ON sms_events (sendlogid, time) INCLUDE (status);
-- One send's failed messages: its failures by reason and its failed.csv, without reading
-- the delivered ones.
CREATE INDEX sms_failed ON sms (sendlogid, id) WHERE status = 'failed';
-- The sends of one originator, newest first: the list filtered by originator, and what a
-- caller who is not an admin sees.
CREATE INDEX sendlog_originator ON sendlog (originator, id);
-- Cancelled sends, newest first: the list filtered by that state (they are few).
CREATE INDEX sendlog_cancelled ON sendlog (id) WHERE cancelledat IS NOT NULL;
