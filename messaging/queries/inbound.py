"""Replies (MO messages) pushed by the provider (migration 0019), each stored once."""

from messaging.queries import NOW_UTC, array_literal

INBOUND_COLUMNS = (
    "id",
    "provider",
    "provider_id",
    "msisdn",
    "recipient",
    "text",
    "received_at",
    "action",
)
_COLUMNS = "id, provider, providerid, msisdn, recipient, message, receivedat, action"


def insert_inbound(cur, provider, messages):
    """Store replies given as (provider id, msisdn, recipient, text, action); one the
    provider already pushed is skipped. Returns the stored rows (INBOUND_COLUMNS), in order."""
    columns = zip(*messages, strict=True) if messages else [()] * 5
    provider_ids, msisdns, recipients, texts, actions = (array_literal(c) for c in columns)
    cur.execute(
        f"""
        INSERT INTO inbound_messages (provider, providerid, msisdn, recipient, message,
                                      receivedat, action)
        SELECT %s, m.providerid, m.msisdn, m.recipient, m.message, {NOW_UTC}, m.action
        FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::text[], %s::varchar[])
             WITH ORDINALITY AS m(providerid, msisdn, recipient, message, action, n)
        ORDER BY m.n
        ON CONFLICT (provider, providerid) DO NOTHING
        RETURNING {_COLUMNS}
        """,
        (provider, provider_ids, msisdns, recipients, texts, actions),
    )
    return sorted(cur.fetchall())


def count_inbound(cur, since):
    """Count the replies received at or after `since` (naive UTC)."""
    cur.execute("SELECT count(*) FROM inbound_messages WHERE receivedat >= %s", (since,))
    return cur.fetchone()[0]


def inbound_since(cur, since, limit, offset):
    """Return one page of the replies received at or after `since` (naive UTC), in order."""
    cur.execute(
        f"""
        SELECT {_COLUMNS} FROM inbound_messages WHERE receivedat >= %s
        ORDER BY id LIMIT %s OFFSET %s
        """,
        (since, limit, offset),
    )
    return cur.fetchall()
