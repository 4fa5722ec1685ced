"""poll-status claims: leases on id ranges of messages still in flight."""

from messaging.queries import NOW_UTC

POLL_CLAIM_LOCK = 727_003  # advisory lock id: poll claims are taken one at a time
# An id inside a claimed range that the poll run started at %(run_start)s must leave alone.
_CLAIMED_FOR_RUN = """
    EXISTS (SELECT 1 FROM poll_claims
            WHERE polluntil >= %(run_start)s AND sms.id BETWEEN first_id AND last_id)
"""


def poll_start(cur, window_seconds):
    """Start a poll run: drop stale claims; return (now, window start, first id to look at).

    The window start is in sms.senttime's UTC. A claim dated before the window covers
    messages sent before it, so no run needs it any more.
    """
    cur.execute(
        f"SELECT now(), {NOW_UTC} - make_interval(secs => %s)",
        (window_seconds,),
    )
    run_start, window_start = cur.fetchone()
    cur.execute(
        "DELETE FROM poll_claims WHERE polluntil < now() - make_interval(secs => %s)",
        (window_seconds,),
    )
    cur.execute("SELECT min(id) FROM sms WHERE status = 'sent' AND senttime >= %s", (window_start,))
    return run_start, window_start, cur.fetchone()[0]


def count_due_messages(cur, window_start, run_start):
    """Count messages a poll run started at `run_start` would ask about (for a progress bar)."""
    cur.execute(
        f"""
        SELECT count(*) FROM sms
        WHERE status = 'sent' AND senttime >= %(window_start)s AND providerid <> ''
          AND NOT {_CLAIMED_FOR_RUN}
        """,
        {"window_start": window_start, "run_start": run_start},
    )
    return cur.fetchone()[0]


def claim_due_messages(cur, after_id, window_start, run_start, lease_seconds, limit):
    """Claim the next `limit` due messages after `after_id`; return (claim id, [(id, providerid)]).

    Due: still `sent`, sent within the window, outside every range another run holds or
    asked about since `run_start`. The claim is their id range with a lease; claims are
    taken one at a time, so two runs never claim one message. Returns (None, []) when
    nothing after `after_id` is due.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (POLL_CLAIM_LOCK,))
    cur.execute(
        f"""
        SELECT id, providerid FROM sms
        WHERE status = 'sent' AND id > %(after)s AND senttime >= %(window_start)s
          AND providerid <> '' AND NOT {_CLAIMED_FOR_RUN}
        ORDER BY id
        LIMIT %(limit)s
        """,
        {"after": after_id, "window_start": window_start, "run_start": run_start, "limit": limit},
    )
    due = cur.fetchall()
    if not due:
        return None, []
    cur.execute(
        """
        INSERT INTO poll_claims (first_id, last_id, polluntil)
        VALUES (%s, %s, now() + make_interval(secs => %s))
        RETURNING id
        """,
        (due[0][0], due[-1][0], lease_seconds),
    )
    return cur.fetchone()[0], due


def release_poll_claim(cur, claim_id):
    """End a claim's lease: its messages were asked about now."""
    cur.execute("UPDATE poll_claims SET polluntil = now() WHERE id = %s", (claim_id,))
