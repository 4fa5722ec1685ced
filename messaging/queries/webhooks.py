"""The webhook outbox (migration 0018): deliveries queued in the transaction that makes their
events, claimed by dispatchers under a lease, deleted once the receiver took them.

A lane (a send's id) is delivered one row at a time in id order: only the oldest live row
of a lane can be claimed, so a message's events reach the receiver in the order they
happened. Status events are queued by the statements of queries/events.py; anything else
(inbound messages) with `enqueue_webhook`.
"""

import json
from datetime import UTC, datetime

from messaging.queries.events import WEBHOOK_CHANNEL

# What a claim hands back.
_CLAIMED = "o.id, o.kind, o.lane, o.url, o.checkaddress, o.events, o.payload, o.attempts"


def enqueue_webhook(cur, kind, url, data, *, lane=None, check_address=False, events=1):
    """Queue one signed POST of `data` to `url`, delivered once this transaction commits.

    The body is {"type": kind, "timestamp": now, "data": data}. Deliveries with the same
    `lane` go in the order they were queued (None: no order). `check_address` resolves the
    URL's host before each attempt and refuses a private address (a caller's URL). Returns
    the delivery's id (its webhook-id is "msg_<id>").
    """
    timestamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    payload = json.dumps({"type": kind, "timestamp": timestamp, "data": data})
    return queue_delivery(cur, kind, lane, url, check_address, events, payload)


def queue_delivery(cur, kind, lane, url, check_address, events, payload):
    """Queue one delivery of a ready-made JSON body; wake the senders when it commits."""
    cur.execute(
        """
        INSERT INTO webhook_outbox (kind, lane, url, checkaddress, events, payload)
        VALUES (%s, %s, %s, %s, %s, %s)
        RETURNING id, pg_notify(%s, '')
        """,
        (kind, lane, url, check_address, events, payload, WEBHOOK_CHANNEL),
    )
    return cur.fetchone()[0]


def claim_webhook(cur, worker, lease_seconds):
    """Claim the next delivery due: the oldest live one of its lane, ready and due, or
    leased by a sender whose lease ran out (it may have died mid-POST: at least once).
    Returns (id, kind, lane, url, checkaddress, events, payload, attempts) or None."""
    cur.execute(
        f"""
        UPDATE webhook_outbox AS o
        SET state = 'sending', attempts = o.attempts + 1, leasedby = %(worker)s,
            leaseduntil = now() + make_interval(secs => %(lease)s)
        FROM (SELECT c.id FROM webhook_outbox AS c
              WHERE c.state <> 'dead'
                AND ((c.state = 'ready' AND c.due <= now())
                     OR (c.state = 'sending' AND c.leaseduntil < now()))
                AND NOT EXISTS (SELECT 1 FROM webhook_outbox AS earlier
                                WHERE earlier.lane = c.lane AND earlier.id < c.id
                                  AND earlier.state <> 'dead')
              ORDER BY c.id
              LIMIT 1
              FOR UPDATE SKIP LOCKED) AS pick
        WHERE o.id = pick.id
        RETURNING {_CLAIMED}
        """,
        {"worker": worker, "lease": lease_seconds},
    )
    return cur.fetchone()


def delivered(cur, delivery_id, worker):
    """Drop a delivery the receiver took (unless another sender has taken it over since)."""
    cur.execute(
        "DELETE FROM webhook_outbox WHERE id = %s AND leasedby = %s AND state = 'sending'",
        (delivery_id, worker),
    )


def retry_later(cur, delivery_id, worker, delay_seconds, error, window_seconds):
    """Give a failed delivery back, due after `delay_seconds` but no later than the end of
    its retry window; past the window it is dead. Returns its state, or None if it is no
    longer this sender's."""
    cur.execute(
        """
        UPDATE webhook_outbox
        SET state = CASE WHEN created + make_interval(secs => %(window)s) <= now()
                         THEN 'dead' ELSE 'ready' END,
            due = LEAST(now() + make_interval(secs => %(delay)s),
                        created + make_interval(secs => %(window)s)),
            leaseduntil = NULL, leasedby = NULL, lasterror = %(error)s
        WHERE id = %(id)s AND leasedby = %(worker)s AND state = 'sending'
        RETURNING state
        """,
        {
            "id": delivery_id,
            "worker": worker,
            "delay": delay_seconds,
            "error": error,
            "window": window_seconds,
        },
    )
    row = cur.fetchone()
    return row[0] if row else None


def mark_dead(cur, delivery_id, worker, error):
    """Give up on a delivery the receiver refused for good (or may not be sent to)."""
    cur.execute(
        """
        UPDATE webhook_outbox SET state = 'dead', leaseduntil = NULL, leasedby = NULL,
                                  lasterror = %s
        WHERE id = %s AND leasedby = %s AND state = 'sending'
        """,
        (error, delivery_id, worker),
    )


def next_webhook_due_seconds(cur):
    """Seconds until the next delivery can be claimed: the head of a lane (or one of no
    lane) coming due, or its lease running out (None: there is none)."""
    cur.execute(
        """
        SELECT EXTRACT(EPOCH FROM min(CASE WHEN c.state = 'ready' THEN c.due
                                           ELSE c.leaseduntil END) - now())
        FROM webhook_outbox AS c
        WHERE c.state <> 'dead'
          AND NOT EXISTS (SELECT 1 FROM webhook_outbox AS earlier
                          WHERE earlier.lane = c.lane AND earlier.id < c.id
                            AND earlier.state <> 'dead')
        """
    )
    value = cur.fetchone()[0]
    return None if value is None else max(0.0, float(value))


def take_dead(cur, lane):
    """Delete and return a lane's dead deliveries, oldest first, as
    (id, kind, url, checkaddress, payload)."""
    cur.execute(
        """
        DELETE FROM webhook_outbox WHERE lane = %s AND state = 'dead'
        RETURNING id, kind, url, checkaddress, payload
        """,
        (lane,),
    )
    return sorted(cur.fetchall())


def final_statuses(cur, sendlog_id):
    """Return the numbers of a send's messages whose status is final."""
    cur.execute(
        "SELECT msisdn FROM sms WHERE sendlogid = %s AND status IN ('delivered', 'failed')",
        (sendlog_id,),
    )
    return {msisdn for (msisdn,) in cur.fetchall()}


def outbox_counts(cur, lane):
    """Return a lane's deliveries by state, as {state: (deliveries, events)}."""
    cur.execute(
        """
        SELECT state, count(*), COALESCE(sum(events), 0) FROM webhook_outbox
        WHERE lane = %s GROUP BY state
        """,
        (lane,),
    )
    return {state: (count, events) for state, count, events in cur.fetchall()}
