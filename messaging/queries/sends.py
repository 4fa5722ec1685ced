"""A send and its recipients: recording them, each batch's answers, and reading them back."""

from messaging.queries import NOW_UTC, array_literal


def start_send(cur, *, originator, message, sender, msisdns, segments, first_batch):
    """Record a send and hold its recipients, before any provider call, in one statement.

    Every recipient gets its sms id now, in order (our client reference at the provider),
    and waits in pending_recipients until record_batch writes its sms row with the
    provider's answer. The first `first_batch` recipients are marked as being dispatched
    (0: none will be). Returns (sendlog id, senttime, [sms id per recipient]).
    """
    cur.execute(
        f"""
        WITH ids AS (
            SELECT COALESCE(array_agg(id ORDER BY id), '{{}}') AS ids
            FROM (SELECT nextval('sms_id_seq') AS id
                  FROM generate_series(1, %(count)s)) AS allocated
        ), send AS (
            INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed,
                                 sent, message, status, description, sender,
                                 dispatchedthrough, dispatchedat)
            SELECT {NOW_UTC}, %(originator)s, 'sms', %(count)s, 0, 0, 0, %(message)s,
                   'sending', '', %(sender)s, ids.ids[NULLIF(%(first)s, 0)],
                   CASE WHEN %(first)s > 0 THEN {NOW_UTC} END
            FROM ids
            RETURNING id, senttime
        ), pending AS (
            INSERT INTO pending_recipients (sendlogid, segments, msisdns, ids)
            SELECT send.id, %(segments)s, %(msisdns)s::varchar[], ids.ids
            FROM send, ids WHERE %(count)s > 0
        )
        SELECT send.id, send.senttime, ids.ids FROM send, ids
        """,
        {
            "count": len(msisdns),
            "originator": originator,
            "message": message,
            "sender": sender,
            "first": min(first_batch, len(msisdns)),
            "segments": segments,
            "msisdns": array_literal(msisdns),
        },
    )
    return cur.fetchone()


def mark_sent(cur, sendlog_id, sms_ids, provider_ids, segments):
    """Store provider ids for accepted messages; count them as sent. Returns rows changed."""
    cur.execute(
        """
        WITH changed AS (
            UPDATE sms SET status = 'sent', providerid = v.provider_id,
                           segments = COALESCE(v.segments, sms.segments)
            FROM unnest(%s::bigint[], %s::varchar[], %s::smallint[]) AS v(id, provider_id, segments)
            WHERE sms.id = v.id AND sms.status = 'queued'
            RETURNING sms.id
        )
        UPDATE sendlog SET sent = COALESCE(sent, 0) + (SELECT count(*) FROM changed)
        WHERE id = %s
        RETURNING (SELECT count(*) FROM changed)
        """,
        (array_literal(sms_ids), array_literal(provider_ids), array_literal(segments), sendlog_id),
    )
    return cur.fetchone()[0]


def record_batch(cur, send, outcomes, dispatched_through=None):
    """Write one batch's sms rows with the provider's answers, in one statement; return
    (how many were accepted, whether the send is still `sending`: not closed by reconcile).

    `send` is the send's id, senttime and message (service.Send); `outcomes` holds (sms
    id, msisdn, provider id or None, segments, code, reason) per recipient: with a
    provider id it was accepted (`sent`), without one it failed. A row reconcile already
    wrote for a send it took for dead is filled in only while still `queued`. The sendlog
    counters move by exactly the rows written, and the next batch's dispatch mark
    (reconcile's watermark) rides in the same update of the sendlog row.
    """
    ids, msisdns, provider_ids, segments, codes, reasons = (
        array_literal(column) for column in zip(*outcomes, strict=True)
    )
    cur.execute(
        f"""
        WITH written AS (
            INSERT INTO sms AS s (id, msisdn, senttime, segments, sendlogid, status, message,
                                  providerid, errorcode, reason, statustimestamp)
            SELECT v.id, v.msisdn, %(senttime)s, v.segments, %(sendlog)s,
                   CASE WHEN v.provider_id IS NULL THEN 'failed' ELSE 'sent' END,
                   %(message)s, v.provider_id, v.code, v.reason,
                   CASE WHEN v.provider_id IS NULL THEN {NOW_UTC} END
            FROM unnest(%(ids)s::bigint[], %(msisdns)s::varchar[], %(provider_ids)s::varchar[],
                        %(segments)s::smallint[], %(codes)s::varchar[], %(reasons)s::varchar[])
                 AS v(id, msisdn, provider_id, segments, code, reason)
            ON CONFLICT (id) DO UPDATE
            SET status = excluded.status, providerid = excluded.providerid,
                segments = excluded.segments, errorcode = excluded.errorcode,
                reason = excluded.reason, statustimestamp = excluded.statustimestamp
            WHERE s.status = 'queued'
            RETURNING s.status
        ), counts AS (
            SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM written
        )
        UPDATE sendlog
        SET sent = COALESCE(sendlog.sent, 0) + counts.sent,
            failed = COALESCE(sendlog.failed, 0) + counts.failed,
            dispatchedthrough = GREATEST(dispatchedthrough, %(through)s),
            dispatchedat = CASE WHEN %(through)s::bigint IS NULL THEN dispatchedat
                                ELSE {NOW_UTC} END
        FROM counts
        WHERE sendlog.id = %(sendlog)s
        RETURNING counts.sent, sendlog.status = 'sending'
        """,
        {
            "senttime": send.senttime,
            "sendlog": send.id,
            "message": send.message,
            "ids": ids,
            "msisdns": msisdns,
            "provider_ids": provider_ids,
            "segments": segments,
            "codes": codes,
            "reasons": reasons,
            "through": dispatched_through,
        },
    )
    return cur.fetchone()


def mark_failed(cur, sendlog_id, sms_ids, codes, reasons):
    """Record recipients that were never accepted, with code and reason. Returns rows changed."""
    cur.execute(
        f"""
        WITH changed AS (
            UPDATE sms SET status = 'failed', errorcode = v.code, reason = v.reason,
                           statustimestamp = {NOW_UTC}
            FROM unnest(%s::bigint[], %s::varchar[], %s::varchar[]) AS v(id, code, reason)
            WHERE sms.id = v.id AND sms.status = 'queued'
            RETURNING sms.id
        )
        UPDATE sendlog SET failed = COALESCE(failed, 0) + (SELECT count(*) FROM changed)
        WHERE id = %s
        RETURNING (SELECT count(*) FROM changed)
        """,
        (array_literal(sms_ids), array_literal(codes), array_literal(reasons), sendlog_id),
    )
    return cur.fetchone()[0]


def finish_send(cur, sendlog_id, status, description):
    """Close a send: every recipient has its sms row, so nothing is pending any more.
    A send reconcile closed already keeps what reconcile said of it."""
    cur.execute(
        "UPDATE sendlog SET status = %s, description = %s WHERE id = %s AND status = 'sending'",
        (status, description, sendlog_id),
    )
    cur.execute("DELETE FROM pending_recipients WHERE sendlogid = %s", (sendlog_id,))


def find_send(cur, sendlog_id, originator=None):
    """Return one send's row as a dict, or None; only a send of `originator` unless None."""
    cur.execute(
        """
        SELECT id, originator, senttime, sender, message, quantity,
               sent, delivered, failed, status, description
        FROM sendlog
        WHERE id = %(id)s AND (%(originator)s::varchar IS NULL OR originator = %(originator)s)
        """,
        {"id": sendlog_id, "originator": originator},
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([column.name for column in cur.description], row, strict=True))


# A send's recipients: its sms rows, and those still pending (no sms row yet) as `queued`.
_RECIPIENTS = """
    SELECT id, msisdn, status, providerid, errorcode, reason, statustimestamp
    FROM sms WHERE sendlogid = %(id)s
    UNION ALL
    SELECT r.id, r.msisdn, 'queued', NULL, NULL, NULL, NULL
    FROM pending_recipients AS pending, unnest(pending.ids, pending.msisdns) AS r(id, msisdn)
    WHERE pending.sendlogid = %(id)s AND NOT EXISTS (SELECT 1 FROM sms WHERE sms.id = r.id)
"""


def count_recipients(cur, sendlog_id):
    cur.execute(f"SELECT count(*) FROM ({_RECIPIENTS}) AS recipients", {"id": sendlog_id})
    return cur.fetchone()[0]


def send_recipients(cur, sendlog_id, limit, offset):
    """Return one page of a send's messages in order, as
    (msisdn, status, providerid, errorcode, reason, statustimestamp)."""
    cur.execute(
        f"""
        SELECT msisdn, status, providerid, errorcode, reason, statustimestamp
        FROM ({_RECIPIENTS}) AS recipients
        ORDER BY id
        LIMIT %(limit)s OFFSET %(offset)s
        """,
        {"id": sendlog_id, "limit": limit, "offset": offset},
    )
    return cur.fetchall()


def count_accepted(cur, sendlog_id):
    """Count a send's messages the provider accepted (they carry its id)."""
    cur.execute(
        "SELECT count(*) FROM sms WHERE sendlogid = %s AND providerid <> ''",
        (sendlog_id,),
    )
    return cur.fetchone()[0]
