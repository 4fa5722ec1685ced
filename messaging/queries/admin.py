"""What the operator's page (GET /admin) reads: sends newest first, one send's failures,
timeline and recipients, message counts per hour and per provider, and the health of the
dispatchers and poll-status. Each query is bounded by an index (migrations 0025 and 0026),
so a page stays fast on a database of millions of messages."""

from datetime import datetime

from messaging.queries import EVENT_HOURS_LOCK, NOW_UTC
from messaging.queries.sends import SEND_STATE

# Hours whose events may still be written: a transaction dates its events when it starts,
# so one open across the end of an hour can add to it for a little while after.
SETTLING_MINUTES = 10
KEPT_DAYS = 31  # hours of events counted in sms_event_hours (the chart shows 30 days)
STATUSES = ("sent", "delivered", "failed")


# --- sends ---


def list_sends(cur, *, owner, originator, state, since, until, before, limit):
    """Return up to `limit` sends newest first (id below `before`, when given), as dicts.

    `owner` (None: every caller's) is the own-sends rule; the others are the page's filters,
    None when not given. A send's recipients not yet written are
    quantity - sent - delivered - failed (sendlog's counters always equal its messages).
    """
    # Spelled out per state so the planner can use the partial indexes behind each.
    state_filter = {
        None: "",
        "sending": "AND status = 'sending' AND cancelledat IS NULL",
        "scheduled": "AND status = 'sending' AND cancelledat IS NULL",
        "cancelled": "AND cancelledat IS NOT NULL",
        "done": "AND status <> 'sending' AND cancelledat IS NULL AND status <> 'cancelled'",
    }[state]
    cur.execute(
        f"""
        SELECT id, originator, senttime, sender, message, quantity,
               COALESCE(sent, 0) AS sent, COALESCE(delivered, 0) AS delivered,
               COALESCE(failed, 0) AS failed, status, description, sendat,
               {SEND_STATE} AS state
        FROM sendlog
        WHERE (%(owner)s::varchar IS NULL OR originator = %(owner)s)
          AND (%(originator)s::varchar IS NULL OR originator = %(originator)s)
          AND (%(since)s::timestamp IS NULL OR senttime >= %(since)s)
          AND (%(until)s::timestamp IS NULL OR senttime < %(until)s)
          AND (%(before)s::bigint IS NULL OR id < %(before)s)
          AND (%(state)s::varchar IS NULL OR {SEND_STATE} = %(state)s)
          {state_filter}
        ORDER BY id DESC
        LIMIT %(limit)s
        """,
        {
            "owner": owner,
            "originator": originator,
            "state": state,
            "since": since,
            "until": until,
            "before": before,
            "limit": limit,
        },
    )
    return _dicts(cur)


def failure_reasons(cur, sendlog_id, limit):
    """Return a send's failed messages grouped by (code, reason, kind), most first, as
    (errorcode, reason, failurekind, messages)."""
    cur.execute(
        """
        SELECT errorcode, reason, failurekind, count(*) AS messages
        FROM sms WHERE sendlogid = %s AND status = 'failed'
        GROUP BY errorcode, reason, failurekind
        ORDER BY messages DESC, reason NULLS LAST
        LIMIT %s
        """,
        (sendlog_id, limit),
    )
    return cur.fetchall()


def failed_numbers(cur, sendlog_id):
    """Return a send's failed messages in order, as (msisdn, errorcode, reason, failurekind)."""
    cur.execute(
        """
        SELECT msisdn, errorcode, reason, failurekind
        FROM sms WHERE sendlogid = %s AND status = 'failed' ORDER BY id
        """,
        (sendlog_id,),
    )
    return cur.fetchall()


def count_send_events(cur, sendlog_id):
    """Count a send's settled status events not yet counted into send_event_seconds, and
    move its mark up to them. Two visitors at once count the same whole seconds, so the
    second's rows are the same and are left as the first wrote them."""
    cur.execute(
        f"""
        WITH bounds AS (
            SELECT COALESCE((SELECT counteduntil FROM send_events_counted
                             WHERE sendlogid = %(id)s), '-infinity') AS first,
                   date_trunc('second', {NOW_UTC} - make_interval(mins => %(settling)s))
                       AS settled
        ), counted AS (
            INSERT INTO send_event_seconds (sendlogid, second, status, events)
            SELECT %(id)s, date_trunc('second', time), status, count(*)
            FROM sms_events, bounds
            WHERE sendlogid = %(id)s AND time >= bounds.first AND time < bounds.settled
            GROUP BY 2, 3
            ON CONFLICT DO NOTHING
        )
        INSERT INTO send_events_counted (sendlogid, counteduntil)
        SELECT %(id)s, settled FROM bounds
        ON CONFLICT (sendlogid) DO UPDATE
        SET counteduntil = greatest(send_events_counted.counteduntil, excluded.counteduntil)
        """,
        {"id": sendlog_id, "settling": SETTLING_MINUTES},
    )


def send_events_per_second(cur, sendlog_id):
    """Return a send's status events per second, as (second, status, events): its settled
    seconds from send_event_seconds, the rest counted now (call count_send_events first)."""
    cur.execute("SELECT counteduntil FROM send_events_counted WHERE sendlogid = %s", (sendlog_id,))
    found = cur.fetchone()
    # The mark as a value, not a subquery, so that the planner sees how few events follow it.
    cur.execute(
        """
        SELECT second, status, events FROM send_event_seconds
        WHERE sendlogid = %(id)s AND second < %(until)s
        UNION ALL
        SELECT date_trunc('second', time), status, count(*)
        FROM sms_events WHERE sendlogid = %(id)s AND time >= %(until)s
        GROUP BY 1, 2
        """,
        {"id": sendlog_id, "until": found[0] if found else datetime.min},
    )
    return cur.fetchall()


def recipients_page(cur, sendlog_id, limit, offset):
    """Return one page of a send's recipients in order, as dicts with their sms id.

    Each part is cut to the page's end on its own index before the two are merged, so a
    page of a send of 100,000 reads up to its end rather than sorting the whole send.
    """
    cur.execute(
        """
        SELECT id, msisdn, status, providerid AS provider_id, errorcode AS error_code,
               reason, failurekind AS failure_kind, statustimestamp AS status_time
        FROM (
            (SELECT id, msisdn, status, providerid, errorcode, reason, failurekind,
                    statustimestamp
             FROM sms WHERE sendlogid = %(id)s ORDER BY id LIMIT %(end)s)
            UNION ALL
            (SELECT r.id, r.msisdn, 'queued', NULL, NULL, batch.lasterror, NULL, NULL
             FROM dispatch_batches AS batch, unnest(batch.ids, batch.msisdns) AS r(id, msisdn)
             WHERE batch.sendlogid = %(id)s ORDER BY r.id LIMIT %(end)s)
        ) AS recipients
        ORDER BY id LIMIT %(limit)s OFFSET %(offset)s
        """,
        {"id": sendlog_id, "limit": limit, "offset": offset, "end": offset + limit},
    )
    return _dicts(cur)


def events_of_messages(cur, sms_ids):
    """Return the events of these messages, each message's in order, as dicts."""
    cur.execute(
        """
        SELECT smsid, time, source, status, errorcode AS error_code, reason
        FROM sms_events WHERE smsid = ANY(%s::bigint[]) ORDER BY smsid, seq
        """,
        (list(sms_ids),),
    )
    return _dicts(cur)


# --- overview ---


# Seconds from handover to delivery, kept to two significant figures (0.1 s under 10 s,
# 1 s under 100 s, ...): a few hundred groups an hour at most, a median to within 5 %.
DELIVERY_SECONDS = """
    CASE WHEN e.status <> 'delivered' THEN -1 ELSE (
        SELECT CASE WHEN d < 10 THEN round(d::numeric, 1) WHEN d < 100 THEN round(d::numeric)
                    WHEN d < 1000 THEN round(d::numeric, -1)
                    WHEN d < 10000 THEN round(d::numeric, -2) ELSE round(d::numeric, -3) END
        FROM greatest(0, date_part('epoch', e.time - s.senttime)) AS d) END
"""
# A provider's event: the message reached it (a provider id) or it refused it (its code);
# not a cancel or an opt-out, which no provider saw.
PROVIDER_EVENT = "(e.providerid IS NOT NULL OR COALESCE(e.errorcode, '') <> '')"
PROVIDER_DAYS = 2  # hours of provider figures kept (the page shows 24 hours)


def count_new_event_hours(cur):
    """Count the status events of every hour that has settled since the last count: into
    sms_event_hours by status (zeros included, so each such hour is counted once), and
    into provider_event_hours by provider, status and seconds to delivery; drop hours
    no page shows any more. One request at a time; the others wait for it and find it
    done."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_HOURS_LOCK,))
    # The bounds first, as values: the planner then sees how few events lie between them.
    cur.execute(
        f"""
        SELECT greatest((SELECT max(hour) + interval '1 hour' FROM sms_event_hours),
                        date_trunc('hour', {NOW_UTC} - make_interval(days => %(days)s))),
               date_trunc('hour', {NOW_UTC} - make_interval(mins => %(settling)s)),
               date_trunc('hour', {NOW_UTC} - make_interval(days => %(provider_days)s))
        """,
        {"days": KEPT_DAYS, "settling": SETTLING_MINUTES, "provider_days": PROVIDER_DAYS},
    )
    first, settled, provider_first = cur.fetchone()
    if first < settled:
        bounds = {"first": first, "settled": settled, "provider_first": provider_first}
        cur.execute(
            f"""
            INSERT INTO provider_event_hours (hour, provider, status, seconds, events)
            SELECT date_trunc('hour', e.time), COALESCE(s.provider, ''), e.status,
                   {DELIVERY_SECONDS}, count(*)
            FROM sms_events AS e JOIN sms AS s ON s.id = e.smsid
            WHERE e.time >= greatest(%(first)s, %(provider_first)s)
              AND e.time < %(settled)s AND {PROVIDER_EVENT}
            GROUP BY 1, 2, 3, 4
            ON CONFLICT DO NOTHING
            """,
            bounds,
        )
        cur.execute(
            """
            WITH counted AS (
                SELECT date_trunc('hour', time) AS hour, status, count(*) AS events
                FROM sms_events WHERE time >= %(first)s AND time < %(settled)s
                GROUP BY 1, 2
            )
            INSERT INTO sms_event_hours (hour, status, events)
            SELECT hours.hour, statuses.status, COALESCE(counted.events, 0)
            FROM generate_series(%(first)s, %(settled)s - interval '1 hour',
                                 interval '1 hour') AS hours(hour)
            CROSS JOIN unnest(%(statuses)s::varchar[]) AS statuses(status)
            LEFT JOIN counted ON counted.hour = hours.hour AND counted.status = statuses.status
            ON CONFLICT DO NOTHING
            """,
            {**bounds, "statuses": list(STATUSES)},
        )
    cur.execute("DELETE FROM sms_event_hours WHERE hour < %s", (first_kept(cur, KEPT_DAYS),))
    cur.execute(
        "DELETE FROM provider_event_hours WHERE hour < %s", (first_kept(cur, PROVIDER_DAYS),)
    )


def first_kept(cur, days):
    cur.execute(f"SELECT date_trunc('hour', {NOW_UTC} - make_interval(days => %s))", (days,))
    return cur.fetchone()[0]


def settled_hour(cur):
    """Return the start of the first hour (UTC) whose events may still be written: the
    hours before it are counted in sms_event_hours and provider_event_hours."""
    cur.execute(
        f"SELECT date_trunc('hour', {NOW_UTC} - make_interval(mins => %s))", (SETTLING_MINUTES,)
    )
    return cur.fetchone()[0]


def events_per_hour(cur, since, settled):
    """Return status events per hour from `since` (UTC) to now, as (hour, status, events):
    hours before `settled` (settled_hour) from sms_event_hours, the rest counted now."""
    # `settled` is passed as a value, not computed in the query, so that the planner sees
    # how few of the events come after it.
    cur.execute(
        """
        SELECT hour, status, events FROM sms_event_hours
        WHERE hour >= %(since)s AND hour < %(settled)s
        UNION ALL
        SELECT date_trunc('hour', time), status, count(*)
        FROM sms_events WHERE time >= greatest(%(settled)s, %(since)s)
        GROUP BY 1, 2
        ORDER BY 1
        """,
        {"since": since, "settled": settled},
    )
    return cur.fetchall()


def count_events_since(cur, since, most):
    """Count the status events since `since` (UTC), stopping at `most`."""
    cur.execute(
        "SELECT count(*) FROM (SELECT 1 FROM sms_events WHERE time >= %s LIMIT %s) AS newer",
        (since, most),
    )
    return cur.fetchone()[0]


def provider_figures(cur, default_provider, since, settled, live=True):
    """Return the providers' status events from `since` (UTC) to now, counted by
    (provider, status, seconds from handover to delivery: -1 but for `delivered`), as
    (provider, status, seconds, events): hours before `settled` (settled_hour) from
    provider_event_hours, the rest counted now unless `live` is false. A message with no
    provider recorded (before several providers) was carried by `default_provider`."""
    # A few thousand events at most: starting a parallel worker would cost more (20-30 ms
    # on a busy machine) than it saves.
    cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
    cur.execute(
        f"""
        SELECT COALESCE(NULLIF(provider, ''), %(default)s), status, seconds, sum(events)
        FROM provider_event_hours
        WHERE hour >= %(since)s AND hour < %(settled)s
        GROUP BY 1, 2, 3
        UNION ALL
        SELECT COALESCE(s.provider, %(default)s), e.status, {DELIVERY_SECONDS}, count(*)
        FROM sms_events AS e JOIN sms AS s ON s.id = e.smsid
        WHERE e.time >= greatest(%(settled)s, %(since)s) AND {PROVIDER_EVENT} AND %(live)s
        GROUP BY 1, 2, 3
        """,
        {"default": default_provider, "since": since, "settled": settled, "live": live},
    )
    return cur.fetchall()


def dispatch_queue(cur):
    """Return the dispatch queue as a dict: batches and recipients due now, scheduled
    (due later) and being sent, and how long the oldest due batch has waited (seconds)."""
    cur.execute(
        """
        SELECT count(*) FILTER (WHERE state = 'ready' AND due <= now()) AS due_batches,
               COALESCE(sum(cardinality(ids)) FILTER (WHERE state = 'ready' AND due <= now()),
                        0) AS due_recipients,
               COALESCE(sum(cardinality(ids)) FILTER (WHERE state = 'ready' AND due > now()),
                        0) AS scheduled_recipients,
               count(*) FILTER (WHERE state = 'sending') AS sending_batches,
               EXTRACT(EPOCH FROM now() - min(due) FILTER (WHERE state = 'ready'
                                                           AND due <= now())) AS lag
        FROM dispatch_batches
        """
    )
    return _dicts(cur)[0]


def dispatchers(cur):
    """Return every dispatcher's (name, started, seconds since its last heartbeat)."""
    cur.execute(
        "SELECT name, started, EXTRACT(EPOCH FROM now() - seen) FROM dispatchers "
        "ORDER BY seen DESC, name"
    )
    return cur.fetchall()


def in_flight(cur, window_start):
    """Return (messages still `sent`, of them sent since `window_start`, the oldest's
    senttime) from the index of unresolved messages."""
    cur.execute(
        """
        SELECT count(*), count(*) FILTER (WHERE senttime >= %s), min(senttime)
        FROM sms WHERE status = 'sent'
        """,
        (window_start,),
    )
    return cur.fetchone()


def last_run(cur, job):
    """Return a job's last run as (started, finished, summary, seconds since it finished),
    or None if it never ran here."""
    cur.execute(
        "SELECT started, finished, summary, EXTRACT(EPOCH FROM now() - finished) "
        "FROM job_runs WHERE job = %s",
        (job,),
    )
    return cur.fetchone()


def record_run(cur, job, started, summary):
    """Keep a job's run that started at `started` and has just finished."""
    cur.execute(
        """
        INSERT INTO job_runs (job, started, finished, summary) VALUES (%s, %s, now(), %s)
        ON CONFLICT (job) DO UPDATE
        SET started = excluded.started, finished = excluded.finished,
            summary = excluded.summary
        """,
        (job, started, summary),
    )


def count_optouts(cur):
    cur.execute("SELECT count(*) FROM optouts")
    return cur.fetchone()[0]


# --- the service's own keys ---


def service_secret(cur, name, new_value):
    """Return the secret called `name`, keeping `new_value` as it when there is none yet
    (the first of several processes to ask wins; the others read its value)."""
    cur.execute(
        "INSERT INTO service_secrets (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (name, new_value),
    )
    cur.execute("SELECT value FROM service_secrets WHERE name = %s", (name,))
    return cur.fetchone()[0]


def _dicts(cur):
    names = [column.name for column in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
