-- The operator's page (GET /admin) and what it reads that no other table keeps.
--
-- Status events per hour, for the overview's 24-hour and 30-day charts: sms_events is only
-- appended, at the time of the change, so an hour that has ended never changes and is
-- counted once here instead of on every visit (2 events a message: 2,000,000 rows for
-- 1,000,000 messages). Hours still open are counted live from sms_events.
CREATE TABLE sms_event_hours (
    hour TIMESTAMP NOT NULL,       -- UTC, the start of the hour
    status VARCHAR NOT NULL,       -- sent, delivered or failed
    events INTEGER NOT NULL,       -- messages that reached this status in the hour
    PRIMARY KEY (hour, status)
);

-- The providers' events per hour, for the overview's figures per provider over 24 hours:
-- by provider ('' for a message with no sms.provider: the configured one), status, and
-- for a delivery its seconds from handover, to two significant figures. Counted with
-- sms_event_hours, for the last two days only.
CREATE TABLE provider_event_hours (
    hour TIMESTAMP NOT NULL,       -- UTC
    provider VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    seconds NUMERIC NOT NULL,      -- to delivery; -1 for sent and failed
    events INTEGER NOT NULL,
    PRIMARY KEY (hour, provider, status, seconds)
);

-- One send's status events per second, for its page's delivery-over-time chart: a send of
-- 100,000 has 200,000 events, mostly within a few minutes. Counted once its seconds have
-- settled (as above), up to `counteduntil`; later events are counted live.
CREATE TABLE send_event_seconds (
    sendlogid BIGINT NOT NULL,
    second TIMESTAMP NOT NULL,     -- UTC
    status VARCHAR NOT NULL,
    events INTEGER NOT NULL,
    PRIMARY KEY (sendlogid, second, status)
);
CREATE TABLE send_events_counted (
    sendlogid BIGINT PRIMARY KEY,
    counteduntil TIMESTAMP NOT NULL  -- UTC: its events before this are in send_event_seconds
);

-- The last run of each periodic job (poll-status), for the page's health panel: a run that
-- found nothing to ask about leaves no other trace.
CREATE TABLE job_runs (
    job VARCHAR PRIMARY KEY,       -- "poll-status"
    started TIMESTAMPTZ NOT NULL,
    finished TIMESTAMPTZ,          -- NULL while the first run goes on
    summary VARCHAR                -- its one-line summary, or why it stopped
);

-- Keys the service makes itself, shared by every process and host on this database: the
-- key that signs the page's sign-in cookie and its CSRF tokens, made at random on first
-- use unless authentication.sessionSecret is set.
CREATE TABLE service_secrets (
    name VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Count the settled hours of the last 31 days (2 for the providers) now, with the index
-- sms_events_time of migration 0025, so that the first visit after the upgrade does not
-- count a month of events itself.
INSERT INTO provider_event_hours (hour, provider, status, seconds, events)
SELECT date_trunc('hour', e.time), COALESCE(s.provider, ''), e.status,
       CASE WHEN e.status <> 'delivered' THEN -1 ELSE (
           SELECT CASE WHEN d < 10 THEN round(d::numeric, 1) WHEN d < 100 THEN round(d::numeric)
                       WHEN d < 1000 THEN round(d::numeric, -1)
                       WHEN d < 10000 THEN round(d::numeric, -2) ELSE round(d::numeric, -3) END
           FROM greatest(0, date_part('epoch', e.time - s.senttime)) AS d) END,
       count(*)
FROM sms_events AS e JOIN sms AS s ON s.id = e.smsid
WHERE e.time >= date_trunc('hour', (now() AT TIME ZONE 'utc') - interval '2 days')
  AND e.time < date_trunc('hour', (now() AT TIME ZONE 'utc') - interval '10 minutes')
  AND (e.providerid IS NOT NULL OR COALESCE(e.errorcode, '') <> '')
GROUP BY 1, 2, 3, 4;

INSERT INTO sms_event_hours (hour, status, events)
SELECT hours.hour, statuses.status, COALESCE(counted.events, 0)
FROM generate_series(date_trunc('hour', (now() AT TIME ZONE 'utc') - interval '31 days'),
                     date_trunc('hour', (now() AT TIME ZONE 'utc') - interval '10 minutes')
                         - interval '1 hour',
                     interval '1 hour') AS hours(hour)
CROSS JOIN (VALUES ('sent'), ('delivered'), ('failed')) AS statuses(status)
LEFT JOIN (
    SELECT date_trunc('hour', time) AS hour, status, count(*) AS events
    FROM sms_events
    WHERE time >= date_trunc('hour', (now() AT TIME ZONE 'utc') - interval '31 days')
      AND time < date_trunc('hour', (now() AT TIME ZONE 'utc') - interval '10 minutes')
    GROUP BY 1, 2
) AS counted ON counted.hour = hours.hour AND counted.status = statuses.status;
