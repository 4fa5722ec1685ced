"""Status events: each change of a message kept (sms_events) and queued for its send's
callback (webhook_outbox) by the very statement that makes the change, so an event is
recorded and queued exactly when its change commits.

`events_of(changed)` is the SQL of that step, as CTEs to append to a statement whose CTE
`changed` returns the changed sms rows (id, sendlogid, msisdn, status, providerid,
errorcode, reason, failurekind); the statement takes `%(source)s` and must reference
`woken` (see WOKEN), which wakes the dispatchers' webhook senders when it commits.
"""

from messaging.queries import NOW_UTC

WEBHOOK_CHANNEL = "messaging_webhooks"
STATUS_KIND = "message.status"
# Events in one POST at most: a send's changes in one transaction are batched up to this.
EVENTS_PER_WEBHOOK = 1000
# ISO 8601 UTC with microseconds, as the API writes times.
_ISO = """'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"""
# The main query's reference that makes the notification happen.
WOKEN = "(SELECT count(*) FROM woken)"


def events_of(changed: str) -> str:
    """Return the CTEs (each starting with a comma) that keep the events of CTE `changed`
    and queue a webhook per send with a callback, EVENTS_PER_WEBHOOK events at most each."""
    return f"""
        , events AS (
            INSERT INTO sms_events (smsid, sendlogid, time, source, status, errorcode, reason,
                                    failurekind, providerid)
            SELECT id, sendlogid, {NOW_UTC}, %(source)s, status, errorcode, reason,
                   failurekind, providerid
            FROM {changed}
            RETURNING seq, smsid, sendlogid, time, source, status, errorcode, reason,
                      failurekind, providerid
        ), callbacks AS (
            -- Each changed send's row looked up by its key (OFFSET 0 keeps the lookup from
            -- being planned as a join): as a join, the plan a connection made while sendlog
            -- was small read all of sendlog for every batch recorded, as long as it lived.
            SELECT sends.id, own.callbackurl, own.callbackchecked
            FROM (SELECT DISTINCT sendlogid AS id FROM {changed}) AS sends,
                 LATERAL (SELECT callbackurl, callbackchecked FROM sendlog
                          WHERE sendlog.id = sends.id OFFSET 0) AS own
            WHERE own.callbackurl IS NOT NULL
        ), hooked AS (
            SELECT e.*, c.msisdn, callbacks.callbackurl, callbacks.callbackchecked,
                   (row_number() OVER (PARTITION BY e.sendlogid ORDER BY e.seq) - 1)
                       / {EVENTS_PER_WEBHOOK} AS part
            FROM events AS e
            JOIN callbacks ON callbacks.id = e.sendlogid
            JOIN {changed} AS c ON c.id = e.smsid
        ), hooks AS (
            INSERT INTO webhook_outbox (kind, lane, url, checkaddress, events, payload)
            SELECT '{STATUS_KIND}', sendlogid, callbackurl, callbackchecked, count(*),
                   json_build_object(
                       'type', '{STATUS_KIND}',
                       'timestamp', to_char({NOW_UTC}, {_ISO}),
                       'data', json_build_object(
                           'refNumber', sendlogid::text,
                           'events', json_agg(json_build_object(
                               'id', 'evt_' || seq,
                               'refNumber', sendlogid::text,
                               'msisdn', msisdn,
                               'status', status,
                               'errorCode', errorcode,
                               'reason', reason,
                               'failureKind', failurekind,
                               'providerId', providerid,
                               'source', source,
                               'time', to_char(time, {_ISO})
                           ) ORDER BY seq)
                       )
                   )::text
            FROM hooked
            GROUP BY sendlogid, part, callbackurl, callbackchecked
            ORDER BY sendlogid, part
            RETURNING 1
        ), woken AS (
            SELECT pg_notify('{WEBHOOK_CHANNEL}', '') FROM (SELECT 1 FROM hooks LIMIT 1) AS one
        )
    """


def message_events(cur, sms_id):
    """Return a message's events in order, as
    (seq, time, source, status, errorcode, reason, failurekind, providerid)."""
    cur.execute(
        """
        SELECT seq, time, source, status, errorcode, reason, failurekind, providerid
        FROM sms_events WHERE smsid = %s ORDER BY seq
        """,
        (sms_id,),
    )
    return cur.fetchall()
