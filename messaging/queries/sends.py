"""One send and its recipients, read back (GET /sends/<ref>); dispatch.py records them."""

# What has become of a send, as GET /sends/<ref> and the operator's page call it.
SEND_STATE = """
    CASE WHEN status = 'cancelled' OR cancelledat IS NOT NULL THEN 'cancelled'
         WHEN status <> 'sending' THEN 'done'
         WHEN sendat > (now() AT TIME ZONE 'utc') THEN 'scheduled'
         ELSE 'sending' END
"""


def find_send(cur, sendlog_id, originator=None):
    """Return one send's row as a dict, or None; only a send of `originator` unless None."""
    cur.execute(
        f"""
        SELECT id, originator, senttime, sender, message, quantity,
               sent, delivered, failed, status, description, sendat, optedout,
               {SEND_STATE} AS state
        FROM sendlog
        WHERE id = %(id)s AND (%(originator)s::varchar IS NULL OR originator = %(originator)s)
        """,
        {"id": sendlog_id, "originator": originator},
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([column.name for column in cur.description], row, strict=True))


# A send's recipients: its sms rows, and those whose batch is still to be sent (no sms
# row yet) as `queued`, with the provider's last refusal for now as their reason.
_RECIPIENTS = """
    SELECT id, msisdn, status, providerid, errorcode, reason, failurekind, statustimestamp,
           provider
    FROM sms WHERE sendlogid = %(id)s
    UNION ALL
    SELECT r.id, r.msisdn, 'queued', NULL, NULL, batch.lasterror, NULL, NULL, NULL
    FROM dispatch_batches AS batch, unnest(batch.ids, batch.msisdns) AS r(id, msisdn)
    WHERE batch.sendlogid = %(id)s
"""


def count_recipients(cur, sendlog_id):
    cur.execute(f"SELECT count(*) FROM ({_RECIPIENTS}) AS recipients", {"id": sendlog_id})
    return cur.fetchone()[0]


def send_recipients(cur, sendlog_id, limit, offset):
    """Return one page of a send's messages in order, as
    (msisdn, status, providerid, errorcode, reason, failurekind, statustimestamp,
    provider)."""
    cur.execute(
        f"""
        SELECT msisdn, status, providerid, errorcode, reason, failurekind, statustimestamp,
               provider
        FROM ({_RECIPIENTS}) AS recipients
        ORDER BY id
        LIMIT %(limit)s OFFSET %(offset)s
        """,
        {"id": sendlog_id, "limit": limit, "offset": offset},
    )
    return cur.fetchall()


def find_message(cur, sendlog_id, msisdn):
    """Return a send's message to a number as (id, msisdn, status, providerid, errorcode,
    reason, failurekind, statustimestamp, provider), `queued` while its batch is still to
    be sent; None if the send has no such recipient."""
    cur.execute(
        """
        SELECT id, msisdn, status, providerid, errorcode, reason, failurekind, statustimestamp,
               provider
        FROM sms WHERE msisdn = %(msisdn)s AND sendlogid = %(id)s
        UNION ALL
        SELECT r.id, r.msisdn, 'queued', NULL, NULL, batch.lasterror, NULL, NULL, NULL
        FROM dispatch_batches AS batch, unnest(batch.ids, batch.msisdns) AS r(id, msisdn)
        WHERE batch.sendlogid = %(id)s AND r.msisdn = %(msisdn)s
        LIMIT 1
        """,
        {"id": sendlog_id, "msisdn": msisdn},
    )
    return cur.fetchone()
