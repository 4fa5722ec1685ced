"""Idempotency-Key claims and their stored answers."""

from messaging.queries import NOW_UTC


def claim_idempotency_key(cur, identity, key, fingerprint):
    """Take a key for this request; False if a live (under 24 h) claim already exists."""
    cur.execute(
        f"DELETE FROM idempotency_keys WHERE identity = %s AND key = %s "
        f"AND created < {NOW_UTC} - interval '24 hours'",
        (identity, key),
    )
    cur.execute(
        f"""
        INSERT INTO idempotency_keys (identity, key, fingerprint, created)
        VALUES (%s, %s, %s, {NOW_UTC})
        ON CONFLICT (identity, key) DO NOTHING
        RETURNING 1
        """,
        (identity, key, fingerprint),
    )
    return cur.fetchone() is not None


def release_idempotency_key(cur, identity, key):
    cur.execute(
        "DELETE FROM idempotency_keys WHERE identity = %s AND key = %s AND response IS NULL",
        (identity, key),
    )


def store_idempotent_response(cur, identity, key, response_json):
    cur.execute(
        "UPDATE idempotency_keys SET response = %s WHERE identity = %s AND key = %s",
        (response_json, identity, key),
    )


def idempotent_response(cur, identity, key):
    """Return (fingerprint, response or None) of a claimed key, or None."""
    cur.execute(
        "SELECT fingerprint, response FROM idempotency_keys WHERE identity = %s AND key = %s",
        (identity, key),
    )
    return cur.fetchone()
