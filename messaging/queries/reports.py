"""Reports over many sends (flask stats)."""


def status_totals(cur, since, until):
    """Return ({status: messages}, number of sends) for sends made in [since, until) UTC.

    Read from the sendlog counters, which always equal their messages' statuses: one
    row per send rather than one per recipient.
    """
    cur.execute(
        """
        SELECT count(*), COALESCE(sum(delivered), 0), COALESCE(sum(failed), 0),
               COALESCE(sum(sent), 0),
               COALESCE(sum(quantity - COALESCE(delivered, 0) - COALESCE(failed, 0)
                             - COALESCE(sent, 0)), 0)
        FROM sendlog WHERE senttime >= %s AND senttime < %s
        """,
        (since, until),
    )
    sends, delivered, failed, sent, queued = cur.fetchone()
    totals = {"delivered": delivered, "failed": failed, "sent": sent, "queued": queued}
    return {status: int(count) for status, count in totals.items()}, sends
