"""The suppression list (migration 0020): numbers no send reaches, whoever the caller."""

from messaging.providers.base import PERMANENT
from messaging.queries import NOW_UTC, array_literal
from messaging.queries.events import WOKEN, events_of


def add_optouts(cur, msisdns, source):
    """Put numbers on the list (those already there keep their entry); return the new ones."""
    cur.execute(
        f"""
        INSERT INTO optouts (msisdn, source, createdat)
        SELECT DISTINCT msisdn, %s, {NOW_UTC} FROM unnest(%s::varchar[]) AS given(msisdn)
        ON CONFLICT (msisdn) DO NOTHING
        RETURNING msisdn
        """,
        (source, array_literal(msisdns)),
    )
    return [msisdn for (msisdn,) in cur.fetchall()]


def remove_optouts(cur, msisdns):
    """Take numbers off the list; return those that were on it."""
    cur.execute(
        "DELETE FROM optouts WHERE msisdn = ANY(%s::varchar[]) RETURNING msisdn",
        (array_literal(msisdns),),
    )
    return [msisdn for (msisdn,) in cur.fetchall()]


def find_optout(cur, msisdn):
    """Return (msisdn, source, createdat) of a number on the list, or None."""
    cur.execute("SELECT msisdn, source, createdat FROM optouts WHERE msisdn = %s", (msisdn,))
    return cur.fetchone()


def list_optouts(cur):
    """Return every entry as (msisdn, source, createdat), oldest first."""
    cur.execute("SELECT msisdn, source, createdat FROM optouts ORDER BY createdat, msisdn")
    return cur.fetchall()


def record_opted_out(cur, sendlog_id, senttime, message, segments, msisdns, ids):
    """Write a send's recipients left out as opted out: each sms row `failed`, reason
    "opted out" (a permanent failure), with its status event, counted in the send's
    quantity, failed and optedout. Call it in the transaction that records the send
    (dispatch.record_send)."""
    cur.execute(
        f"""
        WITH changed AS (
            INSERT INTO sms (id, msisdn, senttime, segments, sendlogid, status, message,
                             errorcode, reason, failurekind, statustimestamp)
            SELECT r.id, r.msisdn, %(senttime)s, %(segments)s, %(send)s, 'failed', %(message)s,
                   '', 'opted out', %(kind)s, {NOW_UTC}
            FROM unnest(%(ids)s::bigint[], %(msisdns)s::varchar[]) AS r(id, msisdn)
            RETURNING id, sendlogid, msisdn, status, providerid, errorcode, reason, failurekind
        ) {events_of("changed")}
        UPDATE sendlog
        SET quantity = quantity + (SELECT count(*) FROM changed),
            failed = COALESCE(failed, 0) + (SELECT count(*) FROM changed),
            optedout = (SELECT count(*) FROM changed)
        WHERE id = %(send)s
        RETURNING {WOKEN}
        """,
        {
            "send": sendlog_id,
            "senttime": senttime,
            "segments": segments,
            "message": message,
            "ids": array_literal(ids),
            "msisdns": array_literal(msisdns),
            "kind": PERMANENT,
            "source": "send",
        },
    )
