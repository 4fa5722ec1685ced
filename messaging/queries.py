"""Every SQL statement of the service, as small named functions over a cursor."""

# Timestamps are stored UTC without zone, as the original service did.
NOW_UTC = "(now() AT TIME ZONE 'utc')"


def array_literal(values) -> str:
    """Spell a sequence as one PostgreSQL array literal (None as NULL), to pass as a single
    text parameter cast to an array type. psycopg2 spells a list as ARRAY[...], which the
    server parses about ten times slower than a literal (14 ms against 1.5 ms for 10,000).
    NUL, which no PostgreSQL text can hold, is dropped (a provider's reason may carry one)."""
    count = len(values)
    if count == 0:
        return "{}"
    nulls = values.count(None)
    # One pass in C when every element is plain (no ", \\ or NUL): NUL stands for NULL.
    texts = map(str, values) if not nulls else ["\x00" if v is None else str(v) for v in values]
    joined = '","'.join(texts)
    plain = "\\" not in joined and joined.count('"') == 2 * (count - 1)
    if plain and joined.count("\x00") == nulls:
        literal = '{"' + joined + '"}'
        return literal.replace('"\x00"', "NULL") if nulls else literal
    return "{" + ",".join(_array_element(value) for value in values) + "}"


def _array_element(value) -> str:
    if value is None:
        return "NULL"
    text = str(value).replace("\x00", "").replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text + '"'


def start_send(cur, *, originator, message, sender, msisdns, segments, first_batch):
    """Record a send and hold its recipients, before any provider call, in one statement.

    Every recipient gets its sms id now, in order (our client reference at the provider),
    and waits in pending_recipients until record_batch writes its sms row with the
    provider's answer. The first `first_batch` recipients are marked as being dispatched
    (0: none will be). Returns (sendlog id, senttime, [sms id per recipient]).
    """
    cur.execute(
        f"""
        WITH ids AS (
            SELECT COALESCE(array_agg(id ORDER BY id), '{{}}') AS ids
            FROM (SELECT nextval('sms_id_seq')::int AS id
                  FROM generate_series(1, %(count)s)) AS allocated
        ), send AS (
            INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed,
                                 sent, message, status, description, sender,
                                 dispatchedthrough, dispatchedat)
            SELECT {NOW_UTC}, %(originator)s, 'sms', %(count)s, 0, 0, 0, %(message)s,
                   'sending', '', %(sender)s, ids.ids[NULLIF(%(first)s, 0)],
                   CASE WHEN %(first)s > 0 THEN {NOW_UTC} END
            FROM ids
            RETURNING id, senttime
        ), pending AS (
            INSERT INTO pending_recipients (sendlogid, segments, msisdns, ids)
            SELECT send.id, %(segments)s, %(msisdns)s::varchar[], ids.ids
            FROM send, ids WHERE %(count)s > 0
        )
        SELECT send.id, send.senttime, ids.ids FROM send, ids
        """,
        {
            "count": len(msisdns),
            "originator": originator,
            "message": message,
            "sender": sender,
            "first": min(first_batch, len(msisdns)),
            "segments": segments,
            "msisdns": array_literal(msisdns),
        },
    )
    return cur.fetchone()


def mark_sent(cur, sendlog_id, sms_ids, provider_ids, segments):
    """Store provider ids for accepted messages; count them as sent. Returns rows changed."""
    cur.execute(
        """
        WITH changed AS (
            UPDATE sms SET status = 'sent', providerid = v.provider_id,
                           quantity = COALESCE(v.segments, sms.quantity)
            FROM unnest(%s::int[], %s::varchar[], %s::smallint[]) AS v(id, provider_id, segments)
            WHERE sms.id = v.id AND sms.status = 'queued'
            RETURNING sms.id
        )
        UPDATE sendlog SET sent = COALESCE(sent, 0) + (SELECT count(*) FROM changed)
        WHERE id = %s
        RETURNING (SELECT count(*) FROM changed)
        """,
        (array_literal(sms_ids), array_literal(provider_ids), array_literal(segments), sendlog_id),
    )
    return cur.fetchone()[0]


def record_batch(cur, send, outcomes, dispatched_through=None):
    """Write one batch's sms rows with the provider's answers, in one statement; return
    (how many were accepted, whether the send is still `sending`: not closed by reconcile).

    `send` is the send's id, senttime and message (service.Send); `outcomes` holds (sms
    id, msisdn, provider id or None, segments, code, reason) per recipient: with a
    provider id it was accepted (`sent`), without one it failed. A row reconcile already
    wrote for a send it took for dead is filled in only while still `queued`. The sendlog
    counters move by exactly the rows written, and the next batch's dispatch mark
    (reconcile's watermark) rides in the same update of the sendlog row.
    """
    ids, msisdns, provider_ids, segments, codes, reasons = (
        array_literal(column) for column in zip(*outcomes, strict=True)
    )
    cur.execute(
        f"""
        WITH written AS (
            INSERT INTO sms AS s (id, msisdn, senttime, quantity, sendlogid, status, message,
                                  providerid, errorcode, reason, statustimestamp)
            SELECT v.id, v.msisdn, %(senttime)s, v.segments, %(sendlog)s,
                   CASE WHEN v.provider_id IS NULL THEN 'failed' ELSE 'sent' END,
                   %(message)s, v.provider_id, v.code, v.reason,
                   CASE WHEN v.provider_id IS NULL THEN {NOW_UTC} END
            FROM unnest(%(ids)s::int[], %(msisdns)s::varchar[], %(provider_ids)s::varchar[],
                        %(segments)s::smallint[], %(codes)s::varchar[], %(reasons)s::varchar[])
                 AS v(id, msisdn, provider_id, segments, code, reason)
            ON CONFLICT (id) DO UPDATE
            SET status = excluded.status, providerid = excluded.providerid,
                quantity = excluded.quantity, errorcode = excluded.errorcode,
                reason = excluded.reason, statustimestamp = excluded.statustimestamp
            WHERE s.status = 'queued'
            RETURNING s.status
        ), counts AS (
            SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM written
        )
        UPDATE sendlog
        SET sent = COALESCE(sendlog.sent, 0) + counts.sent,
            failed = COALESCE(sendlog.failed, 0) + counts.failed,
            dispatchedthrough = GREATEST(dispatchedthrough, %(through)s),
            dispatchedat = CASE WHEN %(through)s::int IS NULL THEN dispatchedat
                                ELSE {NOW_UTC} END
        FROM counts
        WHERE sendlog.id = %(sendlog)s
        RETURNING counts.sent, sendlog.status = 'sending'
        """,
        {
            "senttime": send.senttime,
            "sendlog": send.id,
            "message": send.message,
            "ids": ids,
            "msisdns": msisdns,
            "provider_ids": provider_ids,
            "segments": segments,
            "codes": codes,
            "reasons": reasons,
            "through": dispatched_through,
        },
    )
    return cur.fetchone()


def mark_failed(cur, sendlog_id, sms_ids, codes, reasons):
    """Record recipients that were never accepted, with code and reason. Returns rows changed."""
    cur.execute(
        f"""
        WITH changed AS (
            UPDATE sms SET status = 'failed', errorcode = v.code, reason = v.reason,
                           statustimestamp = {NOW_UTC}
            FROM unnest(%s::int[], %s::varchar[], %s::varchar[]) AS v(id, code, reason)
            WHERE sms.id = v.id AND sms.status = 'queued'
            RETURNING sms.id
        )
        UPDATE sendlog SET failed = COALESCE(failed, 0) + (SELECT count(*) FROM changed)
        WHERE id = %s
        RETURNING (SELECT count(*) FROM changed)
        """,
        (array_literal(sms_ids), array_literal(codes), array_literal(reasons), sendlog_id),
    )
    return cur.fetchone()[0]


def finish_send(cur, sendlog_id, status, description):
    """Close a send: every recipient has its sms row, so nothing is pending any more.
    A send reconcile closed already keeps what reconcile said of it."""
    cur.execute(
        "UPDATE sendlog SET status = %s, description = %s WHERE id = %s AND status = 'sending'",
        (status, description, sendlog_id),
    )
    cur.execute("DELETE FROM pending_recipients WHERE sendlogid = %s", (sendlog_id,))


def latest_message(cur, msisdn):
    """Return (id, status, providerid) of the newest message to a number, or None.

    A recipient of a send in progress whose batch the provider has not answered yet has
    no sms row: it is `queued`. Only sends in progress are pending, so that side is small.
    """
    cur.execute(
        """
        SELECT id, status, providerid FROM (
            (SELECT id, status, providerid, senttime FROM sms
             WHERE msisdn = %(msisdn)s
             ORDER BY senttime DESC, id DESC
             LIMIT 1)
            UNION ALL
            SELECT found.id, 'queued', NULL, found.senttime
            FROM (SELECT pending.ids[array_position(pending.msisdns, %(msisdn)s::varchar)]
                         AS id, sendlog.senttime
                  FROM pending_recipients AS pending
                  JOIN sendlog ON sendlog.id = pending.sendlogid) AS found
            WHERE found.id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM sms WHERE sms.id = found.id)
        ) AS messages
        ORDER BY senttime DESC, id DESC
        LIMIT 1
        """,
        {"msisdn": msisdn},
    )
    return cur.fetchone()


def apply_status_updates(cur, provider_ids, statuses, codes, reasons):
    """Move messages still `sent` to a final status and keep sendlog counters exact.

    Only rows still `sent` change, so a repeated or late answer never moves a final
    status back nor counts a transition twice (a concurrent writer waits on the row
    lock and then finds the row no longer `sent`). Returns the number of rows changed.
    """
    cur.execute(
        f"""
        WITH answer AS (
            SELECT DISTINCT ON (provider_id) provider_id, status, code, reason
            FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[])
                 AS a(provider_id, status, code, reason)
            WHERE status IN ('delivered', 'failed')
        ), changed AS (
            UPDATE sms SET status = answer.status, errorcode = answer.code,
                           reason = answer.reason, statustimestamp = {NOW_UTC}
            FROM answer
            WHERE sms.providerid = answer.provider_id AND sms.status = 'sent'
            RETURNING sms.sendlogid, sms.status
        ), counts AS (
            SELECT sendlogid,
                   count(*) FILTER (WHERE status = 'delivered') AS delivered,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM changed GROUP BY sendlogid
        ), counted AS (
            UPDATE sendlog SET delivered = COALESCE(sendlog.delivered, 0) + counts.delivered,
                               failed = COALESCE(sendlog.failed, 0) + counts.failed,
                               sent = COALESCE(sendlog.sent, 0) - counts.delivered - counts.failed
            FROM counts WHERE sendlog.id = counts.sendlogid
            RETURNING 1
        )
        SELECT count(*) FROM changed
        """,
        tuple(array_literal(column) for column in (provider_ids, statuses, codes, reasons)),
    )
    return cur.fetchone()[0]


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


def status_totals(cur, since, until):
    """Return ({status: messages}, number of sends) for sends made in [since, until) UTC.

    Read from the sendlog counters, which always equal their messages' statuses: one
    row per send rather than one per recipient.
    """
    cur.execute(
        """
        SELECT count(*), COALESCE(sum(delivered), 0), COALESCE(sum(failed), 0),
               COALESCE(sum(sent), 0),
               COALESCE(sum(quantity - COALESCE(delivered, 0) - COALESCE(failed, 0)
                             - COALESCE(sent, 0)), 0)
        FROM sendlog WHERE senttime >= %s AND senttime < %s
        """,
        (since, until),
    )
    sends, delivered, failed, sent, queued = cur.fetchone()
    totals = {"delivered": delivered, "failed": failed, "sent": sent, "queued": queued}
    return {status: int(count) for status, count in totals.items()}, sends


# --- delivery status: poll-status claims, row locks for status writers, one send's report ---


POLL_CLAIM_LOCK = 727_003  # advisory lock id: poll claims are taken one at a time
# An id inside a claimed range that the poll run started at %(run_start)s must leave alone.
_CLAIMED_FOR_RUN = """
    EXISTS (SELECT 1 FROM poll_claims
            WHERE polluntil >= %(run_start)s AND sms.id BETWEEN first_id AND last_id)
"""


def poll_start(cur, window_seconds):
    """Start a poll run: drop stale claims; return (now, window start, first id to look at).

    The window start is in sms.senttime's UTC. A claim dated before the window covers
    messages sent before it, so no run needs it any more.
    """
    cur.execute(
        f"SELECT now(), {NOW_UTC} - make_interval(secs => %s)",
        (window_seconds,),
    )
    run_start, window_start = cur.fetchone()
    cur.execute(
        "DELETE FROM poll_claims WHERE polluntil < now() - make_interval(secs => %s)",
        (window_seconds,),
    )
    cur.execute("SELECT min(id) FROM sms WHERE status = 'sent' AND senttime >= %s", (window_start,))
    return run_start, window_start, cur.fetchone()[0]


def count_due_messages(cur, window_start, run_start):
    """Count messages a poll run started at `run_start` would ask about (for a progress bar)."""
    cur.execute(
        f"""
        SELECT count(*) FROM sms
        WHERE status = 'sent' AND senttime >= %(window_start)s AND providerid <> ''
          AND NOT {_CLAIMED_FOR_RUN}
        """,
        {"window_start": window_start, "run_start": run_start},
    )
    return cur.fetchone()[0]


def claim_due_messages(cur, after_id, window_start, run_start, lease_seconds, limit):
    """Claim the next `limit` due messages after `after_id`; return (claim id, [(id, providerid)]).

    Due: still `sent`, sent within the window, outside every range another run holds or
    asked about since `run_start`. The claim is their id range with a lease; claims are
    taken one at a time, so two runs never claim one message. Returns (None, []) when
    nothing after `after_id` is due.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (POLL_CLAIM_LOCK,))
    cur.execute(
        f"""
        SELECT id, providerid FROM sms
        WHERE status = 'sent' AND id > %(after)s AND senttime >= %(window_start)s
          AND providerid <> '' AND NOT {_CLAIMED_FOR_RUN}
        ORDER BY id
        LIMIT %(limit)s
        """,
        {"after": after_id, "window_start": window_start, "run_start": run_start, "limit": limit},
    )
    due = cur.fetchall()
    if not due:
        return None, []
    cur.execute(
        """
        INSERT INTO poll_claims (first_id, last_id, polluntil)
        VALUES (%s, %s, now() + make_interval(secs => %s))
        RETURNING id
        """,
        (due[0][0], due[-1][0], lease_seconds),
    )
    return cur.fetchone()[0], due


def release_poll_claim(cur, claim_id):
    """End a claim's lease: its messages were asked about now."""
    cur.execute("UPDATE poll_claims SET polluntil = now() WHERE id = %s", (claim_id,))


def lock_unresolved(cur, sms_ids):
    """Lock the messages still `sent` among these, then their sends; return [(id, providerid)].

    Multi-row status writers call this (or lock_unresolved_by_provider_id) before
    apply_status_updates: rows are locked messages first, then sends, each in id order,
    so two writers never wait on each other in a cycle.
    """
    cur.execute(
        """
        SELECT id, providerid, sendlogid FROM sms
        WHERE id = ANY(%s::int[]) AND status = 'sent'
        ORDER BY id
        FOR UPDATE
        """,
        (array_literal(sms_ids),),
    )
    return _lock_sends(cur, cur.fetchall())


def lock_unresolved_by_provider_id(cur, provider_ids):
    """Like lock_unresolved, by provider id; also return the provider ids we know at all.

    Returns ([(id, providerid)] still `sent`, {provider ids of any message}).
    """
    cur.execute(
        "SELECT DISTINCT providerid FROM sms WHERE providerid = ANY(%s::varchar[])",
        (array_literal(provider_ids),),
    )
    known = {row[0] for row in cur.fetchall()}
    cur.execute(
        """
        SELECT id, providerid, sendlogid FROM sms
        WHERE providerid = ANY(%s::varchar[]) AND status = 'sent'
        ORDER BY id
        FOR UPDATE
        """,
        (array_literal(provider_ids),),
    )
    return _lock_sends(cur, cur.fetchall()), known


def _lock_sends(cur, messages):
    sendlog_ids = sorted({sendlog_id for _, _, sendlog_id in messages if sendlog_id is not None})
    if sendlog_ids:
        cur.execute(
            "SELECT id FROM sendlog WHERE id = ANY(%s::int[]) ORDER BY id FOR UPDATE",
            (array_literal(sendlog_ids),),
        )
    return [(sms_id, provider_id) for sms_id, provider_id, _ in messages]


def find_send(cur, sendlog_id):
    """Return one send's row as a dict, or None."""
    cur.execute(
        """
        SELECT id, originator, senttime, sender, message, quantity,
               sent, delivered, failed, status, description
        FROM sendlog WHERE id = %s
        """,
        (sendlog_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([column.name for column in cur.description], row, strict=True))


# A send's recipients: its sms rows, and those still pending (no sms row yet) as `queued`.
_RECIPIENTS = """
    SELECT id, msisdn, status, providerid, errorcode, reason, statustimestamp
    FROM sms WHERE sendlogid = %(id)s
    UNION ALL
    SELECT r.id, r.msisdn, 'queued', NULL, NULL, NULL, NULL
    FROM pending_recipients AS pending, unnest(pending.ids, pending.msisdns) AS r(id, msisdn)
    WHERE pending.sendlogid = %(id)s AND NOT EXISTS (SELECT 1 FROM sms WHERE sms.id = r.id)
"""


def count_recipients(cur, sendlog_id):
    cur.execute(f"SELECT count(*) FROM ({_RECIPIENTS}) AS recipients", {"id": sendlog_id})
    return cur.fetchone()[0]


def send_recipients(cur, sendlog_id, limit, offset):
    """Return one page of a send's messages in order, as
    (msisdn, status, providerid, errorcode, reason, statustimestamp)."""
    cur.execute(
        f"""
        SELECT msisdn, status, providerid, errorcode, reason, statustimestamp
        FROM ({_RECIPIENTS}) AS recipients
        ORDER BY id
        LIMIT %(limit)s OFFSET %(offset)s
        """,
        {"id": sendlog_id, "limit": limit, "offset": offset},
    )
    return cur.fetchall()


# --- API keys (authentication.service "apikey"); only hashes, never keys ---


def insert_api_key(cur, name, key_hash):
    """Store a new key's hash under a name; return its id, or None if the name is taken."""
    cur.execute(
        f"""
        INSERT INTO api_keys (name, key_hash, created) VALUES (%s, %s, {NOW_UTC})
        ON CONFLICT (name) DO NOTHING
        RETURNING id
        """,
        (name, key_hash),
    )
    row = cur.fetchone()
    return row[0] if row else None


def find_api_key(cur, key_hash, touch_after_seconds):
    """Return (id, name, key_hash, revoked, needs_touch) for a hash, or None.

    needs_touch says last_used is older than `touch_after_seconds` (or unset).
    """
    cur.execute(
        f"""
        SELECT id, name, key_hash, revoked,
               last_used IS NULL OR last_used < {NOW_UTC} - make_interval(secs => %s)
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
    """Return (name, created, last_used, revoked) of every key, oldest first."""
    cur.execute("SELECT name, created, last_used, revoked FROM api_keys ORDER BY created, id")
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


# --- crash recovery: the dispatch watermark and flask reconcile ---


def interrupted_sends(cur, older_than_seconds):
    """Return [(sendlog id, dispatchedthrough)] of unfinished sends silent for that long.

    A send's last sign of life is its last batch handed to the provider, else its start;
    a send still working is never older than one provider call.
    """
    cur.execute(
        f"""
        SELECT id, dispatchedthrough FROM sendlog
        WHERE status = 'sending'
          AND senttime < {NOW_UTC} - make_interval(secs => %(age)s)
          AND COALESCE(dispatchedat, senttime) < {NOW_UTC} - make_interval(secs => %(age)s)
        ORDER BY id
        """,
        {"age": older_than_seconds},
    )
    return cur.fetchall()


def write_pending_as_queued(cur, sendlog_id):
    """Give each recipient of a send that is still pending an sms row, `queued`, and stop
    holding them: reconcile then settles an interrupted send's recipients row by row. The
    send's own late answer still fills these rows in (record_batch), once."""
    cur.execute(
        """
        WITH pending AS (
            DELETE FROM pending_recipients WHERE sendlogid = %(id)s
            RETURNING segments, msisdns, ids
        )
        INSERT INTO sms (id, msisdn, senttime, quantity, sendlogid, status, message)
        SELECT r.id, r.msisdn, sendlog.senttime, pending.segments, sendlog.id, 'queued',
               sendlog.message
        FROM pending, sendlog, unnest(pending.ids, pending.msisdns) AS r(id, msisdn)
        WHERE sendlog.id = %(id)s
        ON CONFLICT (id) DO NOTHING
        """,
        {"id": sendlog_id},
    )


def queued_messages(cur, sendlog_id):
    """Return [(id, msisdn)] of a send's messages still `queued`, in id order."""
    cur.execute(
        "SELECT id, msisdn FROM sms WHERE sendlogid = %s AND status = 'queued' ORDER BY id",
        (sendlog_id,),
    )
    return cur.fetchall()


def finish_interrupted_send(cur, sendlog_id, never_dispatched_reason, unknown_reason):
    """Close an interrupted send once none of its messages is `queued`; say what became of it.

    It failed if a recipient was interrupted (or none was accepted), as a send the
    provider stopped mid-way does. Returns True when this call closed it (only a send
    still `sending` changes).
    """
    cur.execute(
        """
        WITH tally AS (
            SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
                   count(*) FILTER (WHERE status = 'failed' AND reason = %(never)s) AS never,
                   count(*) FILTER (WHERE status = 'failed' AND reason = %(unknown)s) AS unknown,
                   count(*) FILTER (WHERE status IN ('sent', 'delivered')) AS accepted
            FROM sms WHERE sendlogid = %(id)s
        )
        UPDATE sendlog
        SET status = CASE WHEN tally.never + tally.unknown = 0 AND tally.accepted > 0
                          THEN 'success' ELSE 'failed' END,
            description = 'Send interrupted (the sending process stopped): '
                || tally.never || ' recipients never dispatched, '
                || tally.unknown || ' with the provider''s outcome unknown'
        FROM tally
        WHERE sendlog.id = %(id)s AND sendlog.status = 'sending' AND tally.queued = 0
        RETURNING 1
        """,
        {"id": sendlog_id, "never": never_dispatched_reason, "unknown": unknown_reason},
    )
    return cur.fetchone() is not None
