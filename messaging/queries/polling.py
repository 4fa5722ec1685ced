"""poll-status claims: leases on id ranges of messages still in flight."""

from psycopg2 import sql

from messaging.queries import NOW_UTC, POLL_CLAIM_LOCK, array_literal
from messaging.queries.status import ANY_PROVIDER, OWNED

# A run polls one provider's messages (%(owner)s, queries.status.OWNED); claims are that
# provider's (those made before claims named one count for every provider).
_CLAIM_OWNED = "(%(owner)s::varchar IS NULL OR {0}.provider IS NULL OR {0}.provider = %(owner)s)"
# An id inside a claimed range that the poll run started at %(run_start)s must leave alone:
# a lease still running when it started, or a range asked about since.
_CLAIMED_FOR_RUN = f"""
    EXISTS (SELECT 1 FROM poll_claims AS held
            WHERE polluntil >= %(run_start)s AND sms.id BETWEEN first_id AND last_id
              AND {_CLAIM_OWNED.format("held")})
"""
# A lease that ended unasked before the run started: its run died or was stopped.
_LAPSED = (
    f"NOT lapsed.asked AND lapsed.polluntil < %(run_start)s AND {_CLAIM_OWNED.format('lapsed')}"
)
# Due: still `sent` with a provider id, after %(after)s, not claimed for the run, and sent
# within the window or inside a lapsed lease (polled once more, even past the window).
_IN_WINDOW = f"""
    SELECT id, providerid FROM sms
    WHERE status = 'sent' AND id > %(after)s AND senttime >= %(window_start)s
      AND providerid <> '' AND {OWNED} AND NOT {_CLAIMED_FOR_RUN}
"""
_IN_LAPSED_LEASE = f"""
    SELECT DISTINCT sms.id, sms.providerid
    FROM poll_claims AS lapsed
    JOIN sms ON sms.id BETWEEN lapsed.first_id AND lapsed.last_id
    WHERE {_LAPSED} AND lapsed.last_id > %(after)s
      AND sms.status = 'sent' AND sms.id > %(after)s AND sms.senttime < %(window_start)s
      AND sms.providerid <> '' AND {OWNED} AND NOT {_CLAIMED_FOR_RUN}
"""
_DUE = f"""
    SELECT id, providerid FROM (
        ({_IN_WINDOW} ORDER BY id LIMIT %(limit)s)
        UNION ALL
        ({_IN_LAPSED_LEASE})
    ) AS due
"""


# Tables whose planner statistics poll-status keeps fresh, and when they are stale: as
# autovacuum's own rule (a tenth of the table changed since the last ANALYZE), plus a floor.
ANALYZED_TABLES = ("sms", "poll_claims")
STALE_FRACTION = 0.1
STALE_ROWS = 1000


def analyze_stale_tables(cur):
    """ANALYZE the tables poll-status reads whose statistics are stale; return their names.

    Autovacuum does this, unless it is off or has not got there yet after a large send:
    unanalysed, 20,000 new rows slowed a run from 175 to 30 messages a second.
    """
    cur.execute(
        """
        SELECT stats.relname FROM pg_stat_user_tables AS stats
        JOIN pg_class ON pg_class.oid = stats.relid
        WHERE stats.relid IN (SELECT to_regclass(name) FROM unnest(%s::text[]) AS name)
          AND stats.n_mod_since_analyze > %s + %s * greatest(pg_class.reltuples, 0)
        ORDER BY stats.relname
        """,
        (array_literal(ANALYZED_TABLES), STALE_ROWS, STALE_FRACTION),
    )
    stale = [row[0] for row in cur.fetchall()]
    for table in stale:
        cur.execute(sql.SQL("ANALYZE (SKIP_LOCKED) {}").format(sql.Identifier(table)))
    return stale


def poll_start(cur, window_seconds, owner=ANY_PROVIDER):
    """Start a poll run of `owner`'s messages: drop claims no run needs; return (now,
    window start, first id to look at).

    The window start is in sms.senttime's UTC. An ask dated before the window covers
    messages sent before it, and a lapsed lease with no message still `sent` covers
    nothing. The first id is the lowest due one, in the window or in a lapsed lease.
    """
    cur.execute(
        f"SELECT now(), {NOW_UTC} - make_interval(secs => %s)",
        (window_seconds,),
    )
    run_start, window_start = cur.fetchone()
    cur.execute(
        """
        DELETE FROM poll_claims AS c
        WHERE (c.asked AND c.polluntil < now() - make_interval(secs => %s))
           OR (NOT c.asked AND c.polluntil < now()
               AND NOT EXISTS (SELECT 1 FROM sms WHERE sms.status = 'sent'
                               AND sms.id BETWEEN c.first_id AND c.last_id
                               AND sms.providerid <> ''))
        """,
        (window_seconds,),
    )
    cur.execute(
        f"""
        SELECT least(
            (SELECT min(id) FROM sms WHERE status = 'sent' AND senttime >= %(window_start)s
                                         AND {OWNED}),
            (SELECT min(sms.id) FROM poll_claims AS lapsed
             JOIN sms ON sms.id BETWEEN lapsed.first_id AND lapsed.last_id
             WHERE {_LAPSED} AND sms.status = 'sent' AND {OWNED}))
        """,
        {"window_start": window_start, "run_start": run_start, **owner.params()},
    )
    return run_start, window_start, cur.fetchone()[0]


def count_due_messages(cur, window_start, run_start, owner=ANY_PROVIDER):
    """Count messages a poll run started at `run_start` would ask about (for a progress bar)."""
    cur.execute(
        f"SELECT count(*) FROM ({_DUE}) AS counted",
        {
            "after": 0,
            "window_start": window_start,
            "run_start": run_start,
            "limit": None,
            **owner.params(),
        },
    )
    return cur.fetchone()[0]


def claim_due_messages(
    cur, after_id, window_start, run_start, lease_seconds, limit, owner=ANY_PROVIDER
):
    """Claim the next `limit` due messages after `after_id`; return (claim id, [(id, providerid)]).

    Due: still `sent`, outside every range another run holds or asked about since
    `run_start`, and sent within the window or left in a lapsed lease. The claim is
    their id range with a lease; the lapsed leases it covers are used up, so a message
    is polled past the window once per lease that ended. Claims are taken one at a time,
    so two runs never claim one message. Returns (None, []) when nothing after
    `after_id` is due. Only `owner`'s messages are due, and the claim is its.
    """
    params = {
        "after": after_id,
        "window_start": window_start,
        "run_start": run_start,
        **owner.params(),
    }
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (POLL_CLAIM_LOCK,))
    # Lapsed leases are rare (a run died or was stopped): without one, the window alone.
    cur.execute(
        f"SELECT EXISTS (SELECT 1 FROM poll_claims AS lapsed "
        f"WHERE {_LAPSED} AND lapsed.last_id > %(after)s)",
        params,
    )
    lapsed = cur.fetchone()[0]
    cur.execute(
        f"{_DUE if lapsed else _IN_WINDOW} ORDER BY id LIMIT %(limit)s", {**params, "limit": limit}
    )
    due = cur.fetchall()
    if not due:
        return None, []
    first, last = due[0][0], due[-1][0]
    cur.execute(
        """
        INSERT INTO poll_claims (first_id, last_id, polluntil, provider)
        VALUES (%s, %s, now() + make_interval(secs => %s), %s)
        RETURNING id
        """,
        (first, last, lease_seconds, owner.key),
    )
    claim_id = cur.fetchone()[0]
    if not lapsed:
        return claim_id, due
    # Below `first` a lapsed lease holds nothing due any more (claimed before, by this
    # run or another, or no longer `sent`); above `last` it keeps its messages.
    ranges = {**params, "first": first, "last": last}
    cur.execute(
        f"""
        DELETE FROM poll_claims AS lapsed
        WHERE {_LAPSED} AND lapsed.last_id BETWEEN %(first)s AND %(last)s
        """,
        ranges,
    )
    cur.execute(
        f"""
        UPDATE poll_claims AS lapsed SET first_id = %(last)s + 1
        WHERE {_LAPSED} AND lapsed.first_id <= %(last)s AND lapsed.last_id > %(last)s
        """,
        ranges,
    )
    return claim_id, due


def release_poll_claim(cur, claim_id):
    """End a claim's lease: its messages were asked about now."""
    cur.execute("UPDATE poll_claims SET polluntil = now(), asked = true WHERE id = %s", (claim_id,))


def hand_back_poll_claims(cur, claim_ids):
    """End these leases now, unasked: the next run polls their messages (past the window too)."""
    cur.execute(
        "UPDATE poll_claims SET polluntil = now() WHERE id = ANY(%s::bigint[]) AND NOT asked",
        (array_literal(claim_ids),),
    )
    return cur.rowcount
