"""Dispatch: a send's batches as work in PostgreSQL, claimed under a lease, and the shared
provider rate.

A send is recorded with its recipients split into `dispatch_batches` rows (migration
0013). A claimer takes one row with FOR UPDATE SKIP LOCKED, so any number of dispatchers
on any number of hosts share the work without meeting; the row is deleted in the
transaction that writes its recipients' sms rows, so each recipient is written once.
The send's counters and its close are serialised by its sendlog row lock: record_batch
takes it with its counter update, after writing the rows (so one send's batches write
side by side), and the other writers of a send (cancel, a whole-request refusal, opt-out
withdrawal) take it first (lock_send).
"""

from messaging.db import execute_together
from messaging.queries import EARLY_RECEIPTS_LOCK, NOW_UTC, array_literal
from messaging.queries.events import WOKEN, events_of

DISPATCH_CHANNEL = "messaging_dispatch"


def opted_out_of(cur, msisdns):
    """Which of these numbers are on the suppression list (migration 0020), as a set."""
    cur.execute(
        """
        SELECT ARRAY(SELECT optouts.msisdn
                     FROM optouts JOIN unnest(%(msisdns)s::varchar[]) AS given(msisdn)
                          USING (msisdn))
        """,
        {"msisdns": array_literal(msisdns)},
    )
    return set(cur.fetchone()[0])


def record_send(
    cur,
    *,
    originator,
    message,
    sender,
    recipients,
    batches,
    segments,
    bulk,
    send_at,
    callback_url=None,
    callback_checked=False,
    notify=True,
    unless_opted_out=False,
    claim=None,
):
    """Record a send to `recipients` (its valid numbers, in order), each taking an sms id
    from the sequence in that order (our client references at the provider), with those to
    send as these batches ([(msisdns, their 0-based positions in recipients)]), due at
    `send_at` (naive UTC; None: now). Its status events go to `callback_url` (None:
    nowhere); `callback_checked` has its address checked again before each delivery (the
    caller chose it). It wakes the dispatchers when it commits, a worker per batch
    (`<id>:<batches>`; unless `notify` is false: they find it at their next look, within
    a second).

    With `unless_opted_out`, the suppression list (migration 0020) is read in the same
    statement, and when any recipient is on it nothing is recorded (and no id taken): the
    caller records the send again without them. One round trip for the usual send (S2, K1).

    With `claim` (lease name, lease seconds, provider), the send's one batch is recorded
    claimed under that lease, as claim_ready would claim it: by the request that sends it
    itself, one round trip fewer (S2).

    Returns (id, senttime, the recipients' sms ids, the opted-out numbers as a set, the
    claimed batch as claim_ready returns it or None); the first three are None when nothing
    was recorded."""
    lease, lease_seconds, provider = claim or (None, None, None)
    batches_of_msisdns = [array_literal(msisdns) for msisdns, _ in batches]
    batches_of_positions = [array_literal([p + 1 for p in positions]) for _, positions in batches]
    count = sum(len(msisdns) for msisdns, _ in batches)
    cur.execute(
        f"""
        WITH opted AS (
            SELECT ARRAY(SELECT optouts.msisdn
                         FROM optouts JOIN unnest((SELECT %(recipients)s::varchar[]))
                                           AS given(msisdn) USING (msisdn)
                         WHERE %(unless_opted_out)s) AS numbers
        ), taken AS (
            -- The count through a sub-select, as the arrays below: see record_batch.
            SELECT (SELECT COALESCE(array_agg(nextval('sms_id_seq')), '{{}}')
                    FROM generate_series(1, (SELECT %(recipient_count)s::int))) AS ids
            FROM opted
            WHERE cardinality(opted.numbers) = 0
        ), send AS (
            INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed,
                                 sent, accepted, message, status, description, sender, sendat,
                                 callbackurl, callbackchecked)
            SELECT {NOW_UTC}, %(originator)s, 'sms', %(count)s, 0, 0, 0, 0, %(message)s,
                   'sending', '', %(sender)s, %(send_at)s, %(callback_url)s,
                   %(callback_checked)s
            FROM taken
            RETURNING id, senttime
        ), batches AS (
            INSERT INTO dispatch_batches (sendlogid, seq, bulk, segments, msisdns, ids, due,
                                          state, claimedat, leaseduntil, leasedby, attempts,
                                          firstattempt, provider)
            SELECT send.id, b.seq, %(bulk)s, %(segments)s, b.msisdns::varchar[],
                   ARRAY(SELECT taken.ids[u.position]
                         FROM unnest(b.positions::int[]) WITH ORDINALITY AS u(position, n)
                         ORDER BY u.n),
                   COALESCE(%(send_at)s::timestamp AT TIME ZONE 'utc', now()),
                   CASE WHEN claim.lease IS NULL THEN 'ready' ELSE 'sending' END,
                   CASE WHEN claim.lease IS NOT NULL THEN now() END,
                   now() + make_interval(secs => claim.seconds), claim.lease,
                   CASE WHEN claim.lease IS NULL THEN 0 ELSE 1 END,
                   CASE WHEN claim.lease IS NOT NULL THEN now() END, claim.provider
            FROM send, taken,
                 (SELECT %(lease)s::varchar AS lease, %(lease_seconds)s::float8 AS seconds,
                         %(provider)s::varchar AS provider) AS claim,
                 unnest((SELECT %(batch_msisdns)s::text[]), (SELECT %(batch_positions)s::text[]))
                     WITH ORDINALITY AS b(msisdns, positions, seq)
            RETURNING *
        )
        SELECT send.id, send.senttime, taken.ids, opted.numbers,
               (SELECT pg_notify(%(channel)s, send.id || ':' || %(batch_count)s)
                WHERE %(notify)s AND send.id IS NOT NULL),
               -- The claimed batch, as claim_ready hands it back (_CLAIMED).
               b.id, b.sendlogid, b.seq, b.segments, b.msisdns, b.ids, b.attempts,
               b.firstattempt, b.lasterror, %(message)s, %(sender)s, send.senttime,
               b.provider, b.refusedby, b.rejectedby
        FROM opted LEFT JOIN taken ON true LEFT JOIN send ON true
             LEFT JOIN batches AS b ON b.leasedby IS NOT NULL
        """,
        {
            "originator": originator,
            "recipients": array_literal(recipients),
            "recipient_count": len(recipients),
            "unless_opted_out": unless_opted_out,
            "count": count,
            "message": message,
            "sender": sender,
            "send_at": send_at,
            "bulk": bulk,
            "segments": segments,
            "batch_msisdns": array_literal(batches_of_msisdns),
            "batch_positions": array_literal(batches_of_positions),
            "channel": DISPATCH_CHANNEL,
            "batch_count": len(batches),
            "callback_url": callback_url,
            "callback_checked": callback_checked,
            "notify": notify,
            "lease": lease,
            "lease_seconds": lease_seconds,
            "provider": provider,
        },
    )
    sendlog_id, senttime, ids, opted_out, _, *claimed = cur.fetchone()
    return sendlog_id, senttime, ids, set(opted_out), claimed if claimed[0] is not None else None


# What a claim hands back: the batch and what its send's messages repeat.
_CLAIMED = """
    b.id, b.sendlogid, b.seq, b.segments, b.msisdns, b.ids, b.attempts,
    b.firstattempt, b.lasterror, sendlog.message, sendlog.sender, sendlog.senttime,
    b.provider, b.refusedby, b.rejectedby
"""


def claim_ready(cur, worker, lease_seconds, sendlog_id=None, provider=None):
    """Claim the next batch due: small sends first, then bulk sends batch by batch in turn
    (every send's batch n before any send's n + 1), for `provider` (the claimer's first
    choice, which it may change: assign_batch). Returns its row, or None."""
    only_send = "AND sendlogid = %(send)s" if sendlog_id is not None else ""
    cur.execute(
        f"""
        UPDATE dispatch_batches AS b
        SET state = 'sending', claimedat = now(),
            leaseduntil = now() + make_interval(secs => %(lease)s),
            leasedby = %(worker)s, attempts = b.attempts + 1,
            firstattempt = COALESCE(b.firstattempt, now()), provider = %(provider)s
        FROM (SELECT id FROM dispatch_batches
              WHERE state = 'ready' AND due <= now() {only_send}
              ORDER BY bulk, seq, id
              LIMIT 1
              FOR UPDATE SKIP LOCKED) AS pick,
             sendlog
        WHERE b.id = pick.id AND sendlog.id = b.sendlogid
        RETURNING {_CLAIMED}
        """,
        {"lease": lease_seconds, "worker": worker, "send": sendlog_id, "provider": provider},
    )
    return cur.fetchone()


def claim_abandoned(cur, worker, lease_seconds, sendlog_id=None, claimed_before_seconds=None):
    """Take over a batch whose dispatcher's lease has run out (or, given
    `claimed_before_seconds`, that was claimed longer ago than that): it may have reached the
    provider. Returns its row, or None."""
    only_send = "AND sendlogid = %(send)s" if sendlog_id is not None else ""
    cur.execute(
        f"""
        UPDATE dispatch_batches AS b
        SET claimedat = now(), leaseduntil = now() + make_interval(secs => %(lease)s),
            leasedby = %(worker)s
        FROM (SELECT id FROM dispatch_batches
              WHERE state = 'sending' {only_send}
                AND (leaseduntil < now()
                     OR claimedat < now() - make_interval(secs => %(claimed_before)s))
              ORDER BY leaseduntil
              LIMIT 1
              FOR UPDATE SKIP LOCKED) AS pick,
             sendlog
        WHERE b.id = pick.id AND sendlog.id = b.sendlogid
        RETURNING {_CLAIMED}
        """,
        {
            "lease": lease_seconds,
            "worker": worker,
            "send": sendlog_id,
            "claimed_before": claimed_before_seconds,
        },
    )
    return cur.fetchone()


def release_claims(cur, leases):
    """Give back, due at once, the ready batches claimed under these leases that are still
    held: claims whose answer the worker lost, so it never sent them."""
    cur.execute(
        """
        UPDATE dispatch_batches
        SET state = 'ready', leaseduntil = NULL, leasedby = NULL,
            attempts = greatest(attempts - 1, 0)
        WHERE state = 'sending' AND leasedby = ANY(%s)
        """,
        (list(leases),),
    )


def lock_send(cur, sendlog_id):
    """Take the send's row lock: its writers and its close take turns."""
    cur.execute("SELECT 1 FROM sendlog WHERE id = %s FOR UPDATE", (sendlog_id,))


def record_batch(
    cur, batch_id, worker, sendlog_id, senttime, message, outcomes, source="send", provider=None
):
    """Write a claimed batch's sms rows with the provider's answers, their status events
    (from `source`: send or reconcile) and webhooks, and drop the batch, in one statement;
    return how many were accepted, or None if the batch is no longer this worker's (its
    lease ran out and another took it over: nothing is written).

    `outcomes` holds (sms id, msisdn, provider id or None, segments, code, reason, failure
    kind) per recipient: with a provider id it was accepted (`sent`), without one it failed.
    `provider` is the configured name of the provider that answered (sms.provider).

    It takes the early-receipts lock shared: a receipt that came before these rows existed
    and was kept is seen by the transaction's next statement (finish_seeing_early_receipts),
    one that comes later waits for the commit and finds the rows.
    """
    cur.execute(
        *_recording(batch_id, worker, sendlog_id, senttime, message, outcomes, source, provider)
    )
    accepted, mine, *_ = cur.fetchone()
    return accepted if mine else None


def record_batch_and_finish(
    cur, batch_id, worker, sendlog_id, senttime, message, outcomes, source="send", provider=None
):
    """record_batch, then finish_seeing_early_receipts, in one round trip on a cursor in
    autocommit (Database.statement): the server runs them as one transaction, the second
    with a snapshot of its own, taken under the send's row lock the first took (S2, K1).
    Returns (as record_batch, as finish_seeing_early_receipts): apply the kept receipts it
    found in a transaction of their own."""
    execute_together(
        cur,
        [
            _recording(batch_id, worker, sendlog_id, senttime, message, outcomes, source, provider),
            (_FINISH_SEEING_EARLY_RECEIPTS, {"send": sendlog_id}),
        ],
    )
    *closed, early, recorded = cur.fetchone()
    # None: no send row to update (nothing was written)
    accepted, mine = (int(n) for n in (recorded or "0:0").split(":"))
    return accepted if mine else None, _closed(None if closed[0] is None else closed), early


def _recording(batch_id, worker, sendlog_id, senttime, message, outcomes, source, provider):
    """record_batch's statement and parameters. It passes on what it returns (accepted,
    whether the batch was this worker's) to the transaction's next statement, as
    `messaging.recorded` (`<accepted>:<1 or 0>`)."""
    columns = zip(*outcomes, strict=True) if outcomes else [()] * 7
    ids, msisdns, provider_ids, segments, codes, reasons, kinds = (
        array_literal(column) for column in columns
    )
    return (
        f"""
        WITH mine AS (
            DELETE FROM dispatch_batches
            WHERE id = %(batch)s AND leasedby = %(worker)s AND state = 'sending'
            RETURNING id
        ), changed AS (
            INSERT INTO sms AS s (id, msisdn, senttime, segments, sendlogid, status, message,
                                  providerid, errorcode, reason, failurekind, statustimestamp,
                                  provider)
            SELECT v.id, v.msisdn, %(senttime)s, v.segments, %(sendlog)s,
                   CASE WHEN v.provider_id IS NULL THEN 'failed' ELSE 'sent' END,
                   %(message)s, v.provider_id, v.code, v.reason,
                   CASE WHEN v.provider_id IS NULL THEN COALESCE(v.kind, 'unknown') END,
                   CASE WHEN v.provider_id IS NULL THEN {NOW_UTC} END, %(provider)s
            FROM mine,
                 -- Each array through a sub-select, which the planner cannot see into: a
                 -- custom plan made for a batch of one, given the array itself, was always
                 -- estimated cheaper than the generic plan, so every such batch was
                 -- planned again (most of PostgreSQL's work on a one-recipient send).
                 unnest((SELECT %(ids)s::bigint[]), (SELECT %(msisdns)s::varchar[]),
                        (SELECT %(provider_ids)s::varchar[]), (SELECT %(segments)s::smallint[]),
                        (SELECT %(codes)s::varchar[]), (SELECT %(reasons)s::varchar[]),
                        (SELECT %(kinds)s::varchar[]))
                 AS v(id, msisdn, provider_id, segments, code, reason, kind)
            ON CONFLICT (id) DO NOTHING
            RETURNING s.id, s.sendlogid, s.msisdn, s.status, s.providerid, s.errorcode,
                      s.reason, s.failurekind
        ), counts AS (
            SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM changed
        ), receipts_lock AS (
            SELECT pg_advisory_xact_lock_shared(%(receipts_lock)s)
        ) {events_of("changed")}
        UPDATE sendlog
        SET sent = COALESCE(sendlog.sent, 0) + counts.sent,
            failed = COALESCE(sendlog.failed, 0) + counts.failed,
            accepted = COALESCE(sendlog.accepted, 0) + counts.sent
        FROM counts
        WHERE sendlog.id = %(sendlog)s
        RETURNING counts.sent, (SELECT count(*) FROM mine), {WOKEN},
                  (SELECT count(*) FROM receipts_lock),
                  set_config('messaging.recorded',
                             concat_ws(':', counts.sent, (SELECT count(*) FROM mine)), true)
        """,
        {
            "batch": batch_id,
            "worker": worker,
            "senttime": senttime,
            "sendlog": sendlog_id,
            "message": message,
            "ids": ids,
            "msisdns": msisdns,
            "provider_ids": provider_ids,
            "segments": segments,
            "codes": codes,
            "reasons": reasons,
            "kinds": kinds,
            "source": source,
            "provider": provider,
            "receipts_lock": EARLY_RECEIPTS_LOCK,
        },
    )


def requeue_batch(cur, batch_id, worker, delay_seconds, error):
    """Give back a batch the provider refused unprocessed, due again after `delay_seconds`,
    with the refusal as its recipients' reason meanwhile, to start a new round among the
    providers. False if it is no longer ours."""
    cur.execute(
        """
        UPDATE dispatch_batches
        SET state = 'ready', leaseduntil = NULL, leasedby = NULL, lasterror = %s,
            due = now() + make_interval(secs => %s), provider = NULL, refusedby = '{}'
        WHERE id = %s AND leasedby = %s AND state = 'sending'
        RETURNING 1
        """,
        (error, delay_seconds, batch_id, worker),
    )
    return cur.fetchone() is not None


def requeue_recipients(
    cur, batch, worker, msisdns, ids, delay_seconds, error, refused_by=(), rejected_by=()
):
    """Put some recipients of a batch still claimed by `worker` back as a batch of their
    own, due after `delay_seconds` (the provider refused them for now, or rejected them for
    a reason of its own), kept from the providers `refused_by` and `rejected_by` name; call
    it before record_batch, which drops the claimed batch, in the same transaction."""
    cur.execute(
        """
        INSERT INTO dispatch_batches (sendlogid, seq, bulk, segments, msisdns, ids, due,
                                      attempts, firstattempt, lasterror, refusedby, rejectedby)
        SELECT sendlogid, seq, bulk, segments, %s::varchar[], %s::bigint[],
               now() + make_interval(secs => %s), attempts, firstattempt, %s,
               %s::varchar[], %s::varchar[]
        FROM dispatch_batches WHERE id = %s AND leasedby = %s AND state = 'sending'
        """,
        (
            array_literal(msisdns),
            array_literal(ids),
            delay_seconds,
            error,
            array_literal(list(refused_by)),
            array_literal(list(rejected_by)),
            batch,
            worker,
        ),
    )


def assign_batch(cur, batch_id, worker, provider, keep, lease_seconds, refused_by=None):
    """Hand a claimed batch to `provider` for a call of up to `lease_seconds`, keeping its
    first `keep` recipients and putting the rest back as a batch of their own, due now
    (the provider takes fewer a request); `refused_by`, when given, replaces the providers
    that refused it this round. False if the batch is no longer ours."""
    cur.execute(
        """
        WITH mine AS (
            SELECT * FROM dispatch_batches
            WHERE id = %(batch)s AND leasedby = %(worker)s AND state = 'sending'
        ), rest AS (
            INSERT INTO dispatch_batches (sendlogid, seq, bulk, segments, msisdns, ids, due,
                                          attempts, firstattempt, lasterror, refusedby,
                                          rejectedby)
            SELECT sendlogid, seq, bulk, segments, msisdns[%(keep)s + 1:], ids[%(keep)s + 1:],
                   now(), attempts, firstattempt, lasterror,
                   COALESCE(%(refused)s::varchar[], refusedby), rejectedby
            FROM mine WHERE cardinality(ids) > %(keep)s
        )
        UPDATE dispatch_batches AS b
        SET provider = %(provider)s, msisdns = b.msisdns[1:%(keep)s], ids = b.ids[1:%(keep)s],
            leaseduntil = now() + make_interval(secs => %(lease)s),
            refusedby = COALESCE(%(refused)s::varchar[], b.refusedby)
        FROM mine WHERE b.id = mine.id
        RETURNING 1
        """,
        {
            "batch": batch_id,
            "worker": worker,
            "provider": provider,
            "keep": keep,
            "lease": lease_seconds,
            "refused": None if refused_by is None else array_literal(list(refused_by)),
        },
    )
    return cur.fetchone() is not None


def note_failover(cur, sendlog_id, ids, msisdns, code, reason):
    """Keep a `failover` event for each of these recipients (not yet sent anywhere, so still
    `queued`) and queue its webhook: they moved from one provider to another."""
    cur.execute(
        f"""
        WITH changed AS (
            SELECT r.id, %(send)s::bigint AS sendlogid, r.msisdn, 'queued'::varchar AS status,
                   NULL::varchar AS providerid, %(code)s::varchar AS errorcode,
                   %(reason)s::varchar AS reason, NULL::varchar AS failurekind
            FROM unnest(%(ids)s::bigint[], %(msisdns)s::varchar[]) AS r(id, msisdn)
        ) {events_of("changed")}
        SELECT {WOKEN}
        """,
        {
            "send": sendlog_id,
            "ids": array_literal(ids),
            "msisdns": array_literal(msisdns),
            "code": code,
            "reason": reason,
            "source": "failover",
        },
    )


def extend_lease(cur, batch_id, worker, lease_seconds):
    """Keep a claimed batch (a takeover lookup that failed is asked again later)."""
    cur.execute(
        """
        UPDATE dispatch_batches SET leaseduntil = now() + make_interval(secs => %s)
        WHERE id = %s AND leasedby = %s AND state = 'sending'
        """,
        (lease_seconds, batch_id, worker),
    )


def fail_ready_batches(cur, sendlog_id, code, reason, *, kind, source):
    """Write every batch of a send not yet handed over as `failed` with this code, reason
    and failure kind (sending disabled, a whole-request refusal, a cancel), with their
    status events from `source`; return how many recipients."""
    cur.execute(
        f"""
        WITH doomed AS (
            DELETE FROM dispatch_batches WHERE sendlogid = %(send)s AND state = 'ready'
            RETURNING segments, msisdns, ids
        ), changed AS (
            INSERT INTO sms AS s (id, msisdn, senttime, segments, sendlogid, status, message,
                                  errorcode, reason, failurekind, statustimestamp)
            SELECT r.id, r.msisdn, sendlog.senttime, doomed.segments, sendlog.id, 'failed',
                   sendlog.message, %(code)s, %(reason)s, %(kind)s, {NOW_UTC}
            FROM doomed, sendlog, unnest(doomed.ids, doomed.msisdns) AS r(id, msisdn)
            WHERE sendlog.id = %(send)s
            ON CONFLICT (id) DO NOTHING
            RETURNING s.id, s.sendlogid, s.msisdn, s.status, s.providerid, s.errorcode,
                      s.reason, s.failurekind
        ) {events_of("changed")}
        UPDATE sendlog SET failed = COALESCE(failed, 0) + (SELECT count(*) FROM changed)
        WHERE id = %(send)s
        RETURNING (SELECT count(*) FROM changed), {WOKEN}
        """,
        {"send": sendlog_id, "code": code, "reason": reason, "kind": kind, "source": source},
    )
    row = cur.fetchone()
    return row[0] if row else 0


def note_failure(cur, sendlog_id, description):
    """Keep the first whole-request refusal as what the send's description will say."""
    cur.execute(
        "UPDATE sendlog SET failure = COALESCE(failure, %s) WHERE id = %s",
        (description, sendlog_id),
    )


def mark_cancelled(cur, sendlog_id):
    """Flag a send as cancelled, unless it is finished; return whether it was flagged now
    (False: unknown, finished, or cancelled already)."""
    cur.execute(
        f"""
        UPDATE sendlog SET cancelledat = {NOW_UTC}
        WHERE id = %s AND status = 'sending' AND cancelledat IS NULL
        RETURNING 1
        """,
        (sendlog_id,),
    )
    return cur.fetchone() is not None


# A send closed once none of its batches is left, with what became of it.
_FINISH = """
        UPDATE sendlog
        SET status = CASE WHEN cancelledat IS NOT NULL THEN 'cancelled'
                          WHEN failure IS NULL AND COALESCE(accepted, 0) > 0 THEN 'success'
                          ELSE 'failed' END,
            description = CASE
                WHEN cancelledat IS NOT NULL THEN
                    'Cancelled: ' || (quantity - COALESCE(accepted, 0))
                    || ' of ' || quantity || ' recipients not sent'
                WHEN failure IS NOT NULL THEN failure
                WHEN quantity = 0 THEN 'No valid numbers to send to'
                WHEN COALESCE(accepted, 0) < quantity THEN concat_ws('; ',
                    CASE WHEN quantity - COALESCE(accepted, 0) - COALESCE(optedout, 0) > 0 THEN
                        (quantity - COALESCE(accepted, 0) - COALESCE(optedout, 0)) || ' of '
                        || quantity || ' recipients rejected by the provider' END,
                    CASE WHEN optedout > 0 THEN
                        optedout || ' of ' || quantity || ' recipients opted out' END)
                ELSE '' END
        WHERE id = %(send)s AND status = 'sending'
          AND NOT EXISTS (SELECT 1 FROM dispatch_batches WHERE sendlogid = %(send)s)
        RETURNING status, description, quantity, COALESCE(accepted, 0) AS accepted, failure,
                  COALESCE(optedout, 0) AS optedout
"""


def finish_if_done(cur, sendlog_id):
    """Close a send once none of its batches is left; say what became of it. Returns its
    progress as closed (as send_progress: status, description, quantity, accepted, ...), or
    None while work remains (or already closed). Call with the send's row lock held
    (lock_send), so two last batches cannot both miss it."""
    cur.execute(_FINISH, {"send": sendlog_id})
    return _closed(cur.fetchone())


def finish_seeing_early_receipts(cur, sendlog_id):
    """finish_if_done, and in the same statement whether any receipt is kept for messages
    not written yet (status.apply_early_receipts applies them): after record_batch, which
    took the early-receipts lock, in one round trip. Returns (progress or None, bool)."""
    cur.execute(_FINISH_SEEING_EARLY_RECEIPTS, {"send": sendlog_id})
    *closed, early, _ = cur.fetchone()
    return _closed(None if closed[0] is None else closed), early


_FINISH_SEEING_EARLY_RECEIPTS = f"""
    WITH closed AS ({_FINISH})
    SELECT closed.*, EXISTS (SELECT 1 FROM early_receipts),
           current_setting('messaging.recorded', true)
    FROM (SELECT) AS always LEFT JOIN closed ON true
"""


def _closed(row):
    if row is None:
        return None
    status, description, quantity, accepted, failure, opted_out = row
    return known_progress(
        status, quantity, accepted, description=description, failure=failure, opted_out=opted_out
    )


def known_progress(
    status,
    quantity,
    accepted=0,
    queued=0,
    due_now=0,
    *,
    description="",
    failure=None,
    opted_out=0,
    last_error=None,
):
    """A send's progress as send_progress returns it, from what the caller knows."""
    return {
        "status": status,
        "description": description,
        "quantity": quantity,
        "accepted": accepted,
        "queued": queued,
        "due_now": due_now,
        "failure": failure,
        "opted_out": opted_out,
        "last_error": last_error,
    }


def send_progress(cur, sendlog_id):
    """Return a send's progress as a dict: status, description, quantity, accepted, queued
    (recipients not yet written), due_now (ready batches due), failure, opted_out, last_error
    (the last refusal for now). None if there is no such send."""
    cur.execute(
        """
        SELECT sendlog.status, sendlog.description, sendlog.quantity,
               COALESCE(sendlog.accepted, 0) AS accepted,
               COALESCE(sum(cardinality(b.ids)), 0) AS queued,
               count(b.id) FILTER (WHERE b.state = 'ready' AND b.due <= now()) AS due_now,
               sendlog.failure,
               COALESCE(sendlog.optedout, 0) AS opted_out,
               (array_agg(b.lasterror ORDER BY b.id)
                    FILTER (WHERE b.lasterror IS NOT NULL))[1] AS last_error
        FROM sendlog LEFT JOIN dispatch_batches AS b ON b.sendlogid = sendlog.id
        WHERE sendlog.id = %s
        GROUP BY sendlog.id
        """,
        (sendlog_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([column.name for column in cur.description], row, strict=True))


def has_work(cur):
    """Is any batch waiting, due or not, or being sent, or a webhook due now or being
    delivered? (One backing off after a failed delivery waits for the next dispatcher.)"""
    cur.execute(
        """
        SELECT EXISTS (SELECT 1 FROM dispatch_batches)
            OR EXISTS (SELECT 1 FROM webhook_outbox
                       WHERE state = 'sending' OR (state = 'ready' AND due <= now()))
        """
    )
    return cur.fetchone()[0]


def next_due_seconds(cur):
    """Seconds until the next batch not yet due becomes due (None: none is waiting)."""
    cur.execute(
        "SELECT EXTRACT(EPOCH FROM min(due) - now()) FROM dispatch_batches WHERE state = 'ready'"
    )
    value = cur.fetchone()[0]
    return None if value is None else max(0.0, float(value))


# --- the shared request rate and the dispatchers' heartbeat ---


def take_rate_slot(cur, provider, interval_seconds):
    """Take the next request slot of a provider's rate; return seconds to wait for it."""
    cur.execute(
        """
        INSERT INTO provider_rate AS r (provider, nextat)
        VALUES (%(provider)s, clock_timestamp() + make_interval(secs => %(interval)s))
        ON CONFLICT (provider) DO UPDATE
        SET nextat = GREATEST(r.nextat, clock_timestamp()) + make_interval(secs => %(interval)s)
        RETURNING EXTRACT(EPOCH FROM r.nextat - clock_timestamp()) - %(interval)s
        """,
        {"provider": provider, "interval": interval_seconds},
    )
    return max(0.0, float(cur.fetchone()[0]))


def heartbeat(cur, name):
    """Say a dispatcher is alive."""
    cur.execute(
        """
        INSERT INTO dispatchers (name, started, seen) VALUES (%s, now(), now())
        ON CONFLICT (name) DO UPDATE SET seen = now()
        """,
        (name,),
    )


def forget_dispatcher(cur, name):
    cur.execute("DELETE FROM dispatchers WHERE name = %s", (name,))


def live_dispatchers(cur, seen_within_seconds):
    """Return the names of dispatchers seen within that many seconds."""
    cur.execute(
        "SELECT name FROM dispatchers WHERE seen > now() - make_interval(secs => %s) ORDER BY 1",
        (seen_within_seconds,),
    )
    return [name for (name,) in cur.fetchall()]
