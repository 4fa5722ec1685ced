"""Crash recovery: sends a dead process left unfinished (flask reconcile)."""

from messaging.queries import NOW_UTC


def interrupted_sends(cur, older_than_seconds):
    """Return [(sendlog id, dispatchedthrough)] of unfinished sends silent for that long.

    A send's last sign of life is its last batch handed to the provider, else its start;
    a send still working is never older than one provider call.
    """
    cur.execute(
        f"""
        SELECT id, dispatchedthrough FROM sendlog
        WHERE status = 'sending'
          AND senttime < {NOW_UTC} - make_interval(secs => %(age)s)
          AND COALESCE(dispatchedat, senttime) < {NOW_UTC} - make_interval(secs => %(age)s)
        ORDER BY id
        """,
        {"age": older_than_seconds},
    )
    return cur.fetchall()


def write_pending_as_queued(cur, sendlog_id):
    """Give each recipient of a send that is still pending an sms row, `queued`, and stop
    holding them: reconcile then settles an interrupted send's recipients row by row. The
    send's own late answer still fills these rows in (record_batch), once."""
    cur.execute(
        """
        WITH pending AS (
            DELETE FROM pending_recipients WHERE sendlogid = %(id)s
            RETURNING segments, msisdns, ids
        )
        INSERT INTO sms (id, msisdn, senttime, segments, sendlogid, status, message)
        SELECT r.id, r.msisdn, sendlog.senttime, pending.segments, sendlog.id, 'queued',
               sendlog.message
        FROM pending, sendlog, unnest(pending.ids, pending.msisdns) AS r(id, msisdn)
        WHERE sendlog.id = %(id)s
        ON CONFLICT (id) DO NOTHING
        """,
        {"id": sendlog_id},
    )


def queued_messages(cur, sendlog_id):
    """Return [(id, msisdn)] of a send's messages still `queued`, in id order."""
    cur.execute(
        "SELECT id, msisdn FROM sms WHERE sendlogid = %s AND status = 'queued' ORDER BY id",
        (sendlog_id,),
    )
    return cur.fetchall()


def finish_interrupted_send(cur, sendlog_id, never_dispatched_reason, unknown_reason):
    """Close an interrupted send once none of its messages is `queued`; say what became of it.

    It failed if a recipient was interrupted (or none was accepted), as a send the
    provider stopped mid-way does. Returns True when this call closed it (only a send
    still `sending` changes).
    """
    cur.execute(
        """
        WITH tally AS (
            SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                   count(*) FILTER (WHERE status = 'failed' AND reason = %(never)s) AS never,
                   count(*) FILTER (WHERE status = 'failed' AND reason = %(unknown)s) AS unknown,
                   count(*) FILTER (WHERE status IN ('sent', 'delivered')) AS accepted
            FROM sms WHERE sendlogid = %(id)s
        )
        UPDATE sendlog
        SET status = CASE WHEN tally.never + tally.unknown = 0 AND tally.accepted > 0
                          THEN 'success' ELSE 'failed' END,
            description = 'Send interrupted (the sending process stopped): '
                || tally.never || ' recipients never dispatched, '
                || tally.unknown || ' with the provider''s outcome unknown'
        FROM tally
        WHERE sendlog.id = %(id)s AND sendlog.status = 'sending' AND tally.queued = 0
        RETURNING 1
        """,
        {"id": sendlog_id, "never": never_dispatched_reason, "unknown": unknown_reason},
    )
    return cur.fetchone() is not None
