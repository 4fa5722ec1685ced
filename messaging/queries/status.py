"""Delivery status: the newest message to a number, final answers, and row locks for writers."""

from messaging.queries import NOW_UTC, array_literal


def latest_message(cur, msisdn, originator=None):
    """Return (id, status, providerid) of the newest message to a number, or None; only
    among the sends of `originator` unless it is None.

    A recipient of a send in progress whose batch the provider has not answered yet has
    no sms row: it is `queued`. Only sends in progress are pending, so that side is small.
    """
    cur.execute(
        """
        SELECT id, status, providerid FROM (
            (SELECT id, status, providerid, senttime FROM sms
             WHERE msisdn = %(msisdn)s
               AND (%(originator)s::varchar IS NULL
                    OR EXISTS (SELECT 1 FROM sendlog WHERE sendlog.id = sms.sendlogid
                                                       AND originator = %(originator)s))
             ORDER BY senttime DESC, id DESC
             LIMIT 1)
            UNION ALL
            SELECT found.id, 'queued', NULL, found.senttime
            FROM (SELECT pending.ids[array_position(pending.msisdns, %(msisdn)s::varchar)]
                         AS id, sendlog.senttime
                  FROM pending_recipients AS pending
                  JOIN sendlog ON sendlog.id = pending.sendlogid
                  WHERE %(originator)s::varchar IS NULL
                     OR sendlog.originator = %(originator)s) AS found
            WHERE found.id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM sms WHERE sms.id = found.id)
        ) AS messages
        ORDER BY senttime DESC, id DESC
        LIMIT 1
        """,
        {"msisdn": msisdn, "originator": originator},
    )
    return cur.fetchone()


def apply_status_updates(cur, updates):
    """Move messages still `sent` to a final status and keep sendlog counters exact.

    `updates` are StatusUpdates (provider id, status, code, reason); only final ones count.

    Only rows still `sent` change, so a repeated or late answer never moves a final
    status back nor counts a transition twice (a concurrent writer waits on the row
    lock and then finds the row no longer `sent`). Returns the number of rows changed.
    """
    cur.execute(
        f"""
        WITH answer AS (
            SELECT DISTINCT ON (provider_id) provider_id, status, code, reason
            FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[])
                 AS a(provider_id, status, code, reason)
            WHERE status IN ('delivered', 'failed')
        ), changed AS (
            UPDATE sms SET status = answer.status, errorcode = answer.code,
                           reason = answer.reason, statustimestamp = {NOW_UTC}
            FROM answer
            WHERE sms.providerid = answer.provider_id AND sms.status = 'sent'
            RETURNING sms.sendlogid, sms.status
        ), counts AS (
            SELECT sendlogid,
                   count(*) FILTER (WHERE status = 'delivered') AS delivered,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM changed GROUP BY sendlogid
        ), counted AS (
            UPDATE sendlog SET delivered = COALESCE(sendlog.delivered, 0) + counts.delivered,
                               failed = COALESCE(sendlog.failed, 0) + counts.failed,
                               sent = COALESCE(sendlog.sent, 0) - counts.delivered - counts.failed
            FROM counts WHERE sendlog.id = counts.sendlogid
            RETURNING 1
        )
        SELECT count(*) FROM changed
        """,
        tuple(
            array_literal([getattr(update, name) for update in updates])
            for name in ("provider_id", "status", "code", "reason")
        ),
    )
    return cur.fetchone()[0]


def lock_unresolved(cur, sms_ids):
    """Lock the messages still `sent` among these, then their sends; return [(id, providerid)].

    Multi-row status writers call this (or lock_unresolved_by_provider_id) before
    apply_status_updates: rows are locked messages first, then sends, each in id order,
    so two writers never wait on each other in a cycle.
    """
    cur.execute(
        """
        SELECT id, providerid, sendlogid FROM sms
        WHERE id = ANY(%s::bigint[]) AND status = 'sent'
        ORDER BY id
        FOR UPDATE
        """,
        (array_literal(sms_ids),),
    )
    return _lock_sends(cur, cur.fetchall())


def lock_unresolved_by_provider_id(cur, provider_ids):
    """Like lock_unresolved, by provider id; also return the provider ids we know at all.

    Returns ([(id, providerid)] still `sent`, {provider ids of any message}).
    """
    cur.execute(
        "SELECT DISTINCT providerid FROM sms WHERE providerid = ANY(%s::varchar[])",
        (array_literal(provider_ids),),
    )
    known = {row[0] for row in cur.fetchall()}
    cur.execute(
        """
        SELECT id, providerid, sendlogid FROM sms
        WHERE providerid = ANY(%s::varchar[]) AND status = 'sent'
        ORDER BY id
        FOR UPDATE
        """,
        (array_literal(provider_ids),),
    )
    return _lock_sends(cur, cur.fetchall()), known


def _lock_sends(cur, messages):
    sendlog_ids = sorted({sendlog_id for _, _, sendlog_id in messages if sendlog_id is not None})
    if sendlog_ids:
        cur.execute(
            "SELECT id FROM sendlog WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE",
            (array_literal(sendlog_ids),),
        )
    return [(sms_id, provider_id) for sms_id, provider_id, _ in messages]
