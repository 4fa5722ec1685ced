"""API keys (authentication.service "apikey"); only hashes, never keys."""

from messaging.queries import NOW_UTC


def insert_api_key(cur, name, key_hash, admin=False, limits=(None, None, None)):
    """Store a new key's hash under a name, with its own (requests_per_minute,
    recipients_per_day, international_per_day); return its id, or None if the name is
    taken."""
    cur.execute(
        f"""
        INSERT INTO api_keys (name, key_hash, created, admin, requests_per_minute,
                              recipients_per_day, international_per_day)
        VALUES (%s, %s, {NOW_UTC}, %s, %s, %s, %s)
        ON CONFLICT (name) DO NOTHING
        RETURNING id
        """,
        (name, key_hash, admin, *limits),
    )
    row = cur.fetchone()
    return row[0] if row else None


def find_api_key(cur, key_hash, touch_after_seconds):
    """Return (id, name, key_hash, revoked, admin, needs_touch, requests_per_minute,
    recipients_per_day, international_per_day) for a hash, or None.

    needs_touch says last_used is older than `touch_after_seconds` (or unset).
    """
    cur.execute(
        f"""
        SELECT id, name, key_hash, revoked, admin,
               last_used IS NULL OR last_used < {NOW_UTC} - make_interval(secs => %s),
               requests_per_minute, recipients_per_day, international_per_day
        FROM api_keys WHERE key_hash = %s
        """,
        (touch_after_seconds, key_hash),
    )
    return cur.fetchone()


def touch_api_key(cur, key_id, touch_after_seconds):
    """Set last_used to now unless another request just did (one write a minute, not one a call)."""
    cur.execute(
        f"""
        UPDATE api_keys SET last_used = {NOW_UTC}
        WHERE id = %s
          AND (last_used IS NULL OR last_used < {NOW_UTC} - make_interval(secs => %s))
        """,
        (key_id, touch_after_seconds),
    )


def list_api_keys(cur):
    """Return (name, created, last_used, revoked, admin, requests_per_minute,
    recipients_per_day, international_per_day) of every key, oldest first."""
    cur.execute(
        """
        SELECT name, created, last_used, revoked, admin,
               requests_per_minute, recipients_per_day, international_per_day
        FROM api_keys ORDER BY created, id
        """
    )
    return cur.fetchall()


def revoke_api_key(cur, name):
    """Revoke a key by name; return its previous revoked flag, or None if no such name."""
    cur.execute(
        """
        UPDATE api_keys SET revoked = true
        FROM (SELECT id, revoked FROM api_keys WHERE name = %s FOR UPDATE) AS before
        WHERE api_keys.id = before.id
        RETURNING before.revoked
        """,
        (name,),
    )
    row = cur.fetchone()
    return row[0] if row else None


def set_api_key_limits(cur, name, requests_per_minute, recipients_per_day, international_per_day):
    """Set a key's own limits (NULL: the config's, -1: none); return False if no such key."""
    cur.execute(
        """
        UPDATE api_keys
        SET requests_per_minute = %s, recipients_per_day = %s, international_per_day = %s
        WHERE name = %s
        """,
        (requests_per_minute, recipients_per_day, international_per_day, name),
    )
    return cur.rowcount == 1


def lock_api_key_limits(cur, name):
    """Return a key's (requests_per_minute, recipients_per_day, international_per_day),
    locked until the transaction ends, or None if no such key."""
    cur.execute(
        """
        SELECT requests_per_minute, recipients_per_day, international_per_day
        FROM api_keys WHERE name = %s FOR UPDATE
        """,
        (name,),
    )
    return cur.fetchone()
