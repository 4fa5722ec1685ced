"""Idempotency-Key claims, the send each belongs to, and their stored answers."""

from messaging.queries import NOW_UTC


def claim_idempotency_key(cur, identity, key, fingerprint, sendlog_id):
    """Take a key for the send being recorded in this transaction; False if a live (under
    24 h) claim exists. A concurrent claimer waits here until the first one commits."""
    cur.execute(
        f"DELETE FROM idempotency_keys WHERE identity = %s AND key = %s "
        f"AND created < {NOW_UTC} - interval '24 hours'",
        (identity, key),
    )
    cur.execute(
        f"""
        INSERT INTO idempotency_keys (identity, key, fingerprint, created, sendlogid)
        VALUES (%s, %s, %s, {NOW_UTC}, %s)
        ON CONFLICT (identity, key) DO NOTHING
        RETURNING 1
        """,
        (identity, key, fingerprint, sendlog_id),
    )
    return cur.fetchone() is not None


def store_idempotent_response(cur, identity, key, status_code, response_json):
    cur.execute(
        "UPDATE idempotency_keys SET statuscode = %s, response = %s "
        "WHERE identity = %s AND key = %s",
        (status_code, response_json, identity, key),
    )


def idempotent_response(cur, identity, key):
    """Return (fingerprint, HTTP status or None, response or None, sendlog id or None) of a
    live key, or None."""
    cur.execute(
        f"""
        SELECT fingerprint, statuscode, response, sendlogid FROM idempotency_keys
        WHERE identity = %s AND key = %s AND created >= {NOW_UTC} - interval '24 hours'
        """,
        (identity, key),
    )
    return cur.fetchone()
