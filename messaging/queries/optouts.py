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


def record_opted_out(
    cur, sendlog_id, senttime, message, segments, msisdns, ids, *, source="send", queued=False
):
    """Write a send's recipients left out as opted out: each sms row `failed`, reason
    "opted out" (a permanent failure), with its status event from `source`, counted in the
    send's failed and optedout, and in its quantity unless they were `queued` recipients
    already counted there. Call it in the transaction that records the send
    (dispatch.record_send), or, for queued ones, that takes them out of their batches."""
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
        SET quantity = quantity
                       + CASE WHEN %(queued)s THEN 0 ELSE (SELECT count(*) FROM changed) END,
            failed = COALESCE(failed, 0) + (SELECT count(*) FROM changed),
            optedout = COALESCE(optedout, 0) + (SELECT count(*) FROM changed)
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
            "source": source,
            "queued": queued,
        },
    )


def sends_queued_for(cur, msisdns):
    """Return the ids of the sends with one of these numbers in a batch not yet handed
    over (ready, due or not), in order."""
    cur.execute(
        """
        SELECT DISTINCT sendlogid FROM dispatch_batches
        WHERE state = 'ready' AND msisdns && %s::varchar[]
        ORDER BY sendlogid
        """,
        (array_literal(msisdns),),
    )
    return [sendlog_id for (sendlog_id,) in cur.fetchall()]


def withdraw_from_send(cur, sendlog_id, msisdns):
    """Take these numbers out of the send's batches not yet handed over and record them
    failed "opted out" (source "optout"); a batch left empty is dropped. Returns how many
    were taken out. Call with the send's row lock held (dispatch.lock_send): a claimer
    skips the batches locked here, and one it holds already is out of reach."""
    cur.execute(
        """
        SELECT b.id, b.msisdns, b.ids, b.segments, sendlog.senttime, sendlog.message
        FROM dispatch_batches AS b JOIN sendlog ON sendlog.id = b.sendlogid
        WHERE b.sendlogid = %s AND b.state = 'ready' AND b.msisdns && %s::varchar[]
        ORDER BY b.id
        FOR UPDATE OF b
        """,
        (sendlog_id, array_literal(msisdns)),
    )
    numbers = set(msisdns)
    taken = 0
    for batch_id, batch_msisdns, ids, segments, senttime, message in cur.fetchall():
        pairs = list(zip(batch_msisdns, ids, strict=True))
        kept = [(m, i) for m, i in pairs if m not in numbers]
        out = [(m, i) for m, i in pairs if m in numbers]
        if kept:
            cur.execute(
                "UPDATE dispatch_batches SET msisdns = %s::varchar[], ids = %s::bigint[] "
                "WHERE id = %s",
                (
                    array_literal([m for m, _ in kept]),
                    array_literal([i for _, i in kept]),
                    batch_id,
                ),
            )
        else:
            cur.execute("DELETE FROM dispatch_batches WHERE id = %s", (batch_id,))
        record_opted_out(
            cur,
            sendlog_id,
            senttime,
            message,
            segments,
            [m for m, _ in out],
            [i for _, i in out],
            source="optout",
            queued=True,
        )
        taken += len(out)
    return taken
