"""Retention (flask purge): old messages, their events and the sends left empty deleted in
short transactions that never wait for a lock.

Every lock here is taken with SKIP LOCKED, sends before their messages: a send or message
another transaction holds (a status being written, a batch being recorded) is left for
the next run, and no writer can deadlock with a purge.
"""

from psycopg2 import sql

from messaging.queries import array_literal

# Tables whose rows age out by a timestamptz column of their own, purged batch by batch
# after the messages: (table, column, what the purge line calls them). Inbound messages
# belong here, ("inbound_messages", "<its received-at column>", "inbound messages"), once
# their table exists.
AGED_TABLES = (("webhook_outbox", "created", "webhook deliveries"),)


def lock_old_sends(cur, cutoff, after_id, limit):
    """Lock the next sends made before `cutoff` (naive UTC) with ids above `after_id`;
    return their ids in order (those another transaction holds are skipped)."""
    cur.execute(
        """
        SELECT id FROM sendlog WHERE senttime < %s AND id > %s
        ORDER BY id LIMIT %s
        FOR UPDATE SKIP LOCKED
        """,
        (cutoff, after_id, limit),
    )
    return [sendlog_id for (sendlog_id,) in cur.fetchall()]


def delete_old_messages(cur, sendlog_ids, cutoff, limit):
    """Delete up to `limit` messages sent before `cutoff`, of these (locked) sends or, given
    None, of no send; with their events, taking them off their sends' counters. Returns
    (messages, events, send id of the last message deleted)."""
    if sendlog_ids is None:
        of_sends = "sendlogid IS NULL"
    else:
        of_sends = "sendlogid = ANY(%(sends)s::bigint[])"
    cur.execute(
        f"""
        WITH doomed AS (
            SELECT id FROM sms WHERE {of_sends} AND senttime < %(cutoff)s
            ORDER BY sendlogid, id LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM sms USING doomed WHERE sms.id = doomed.id
            RETURNING sms.id, sms.sendlogid, sms.status, COALESCE(sms.providerid, '') <> ''
                      AS accepted
        ), events AS (
            DELETE FROM sms_events WHERE smsid IN (SELECT id FROM gone) RETURNING 1
        ), uncounted AS (
            -- the operator's page counts these sends' remaining events again
            DELETE FROM send_events_counted WHERE sendlogid IN (SELECT sendlogid FROM gone)
        ), uncounted_seconds AS (
            DELETE FROM send_event_seconds WHERE sendlogid IN (SELECT sendlogid FROM gone)
        ), counts AS (
            SELECT sendlogid, count(*) AS messages,
                   count(*) FILTER (WHERE status = 'sent') AS sent,
                   count(*) FILTER (WHERE status = 'delivered') AS delivered,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE accepted) AS accepted
            FROM gone WHERE sendlogid IS NOT NULL GROUP BY sendlogid
        ), counted AS (
            UPDATE sendlog
            SET quantity = quantity - counts.messages,
                sent = COALESCE(sendlog.sent, 0) - counts.sent,
                delivered = COALESCE(sendlog.delivered, 0) - counts.delivered,
                failed = COALESCE(sendlog.failed, 0) - counts.failed,
                accepted = GREATEST(COALESCE(sendlog.accepted, 0) - counts.accepted, 0)
            FROM counts WHERE sendlog.id = counts.sendlogid
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM events),
               (SELECT max(sendlogid) FROM gone)
        """,
        {"sends": array_literal(sendlog_ids or []), "cutoff": cutoff, "limit": limit},
    )
    return cur.fetchone()


def delete_empty_sends(cur, sendlog_ids):
    """Delete those of these (locked) sends left with no message and nothing to send, and
    their webhook deliveries; return (sends, deliveries)."""
    cur.execute(
        """
        WITH gone AS (
            DELETE FROM sendlog
            WHERE id = ANY(%(sends)s::bigint[])
              AND NOT EXISTS (SELECT 1 FROM sms WHERE sms.sendlogid = sendlog.id)
              AND NOT EXISTS (SELECT 1 FROM dispatch_batches AS b
                              WHERE b.sendlogid = sendlog.id)
            RETURNING id
        ), hooks AS (
            DELETE FROM webhook_outbox WHERE lane IN (SELECT id FROM gone) RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM hooks)
        """,
        {"sends": array_literal(sendlog_ids)},
    )
    return cur.fetchone()


def delete_aged_rows(cur, table, column, cutoff_utc, limit):
    """Delete up to `limit` rows of an AGED_TABLES table older than `cutoff_utc` (aware);
    return how many."""
    cur.execute(
        sql.SQL(
            """
            DELETE FROM {table} WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM {table} WHERE {column} < %s LIMIT %s FOR UPDATE SKIP LOCKED))
            """
        ).format(table=sql.Identifier(table), column=sql.Identifier(column)),
        (cutoff_utc, limit),
    )
    return cur.rowcount
