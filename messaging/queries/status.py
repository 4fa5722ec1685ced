"""Delivery status: the newest message to a number, final answers, row locks for writers,
and receipts that came before their message's row."""

from dataclasses import dataclass

from messaging.providers.base import StatusUpdate
from messaging.queries import EARLY_RECEIPTS_LOCK, NOW_UTC, array_literal
from messaging.queries.events import WOKEN, events_of
from messaging.queries.health import finals_of

# StatusUpdate fields as the columns of an update (and of a kept early receipt).
UPDATE_FIELDS = ("provider_id", "status", "code", "reason", "failure_kind")


@dataclass(frozen=True)
class Owner:
    """Whose messages a status writer may touch: those of one configured provider. The
    primary's are also those written before providers were named (sms.provider NULL) and
    those of a provider no longer configured (not among `others`)."""

    key: str | None = None  # None: any provider's
    primary: bool = True
    others: tuple[str, ...] = ()
    # Count the messages made final for provider health (kept with several providers).
    health: bool = False

    def params(self) -> dict:
        return {
            "owner": self.key,
            "owner_primary": self.primary,
            "owner_others": array_literal(list(self.others)),
            "count_finals": self.health,
        }


ANY_PROVIDER = Owner()
# The condition on `sms` rows of the owner in %(owner)s, %(owner_primary)s, %(owner_others)s.
OWNED = """
    (%(owner)s::varchar IS NULL OR sms.provider = %(owner)s
     OR (%(owner_primary)s AND (sms.provider IS NULL
                                OR sms.provider <> ALL(%(owner_others)s::varchar[]))))
"""


def latest_message(cur, msisdn, originator=None):
    """Return (id, status, providerid, provider) of the newest message to a number, or
    None; only among the sends of `originator` unless it is None.

    A recipient whose batch the provider has not answered yet has no sms row: it is
    `queued`. Only batches still to be sent are in dispatch_batches, so that side is small.
    """
    cur.execute(
        """
        SELECT id, status, providerid, provider FROM (
            (SELECT id, status, providerid, provider, senttime FROM sms
             WHERE msisdn = %(msisdn)s
               AND (%(originator)s::varchar IS NULL
                    OR EXISTS (SELECT 1 FROM sendlog WHERE sendlog.id = sms.sendlogid
                                                       AND originator = %(originator)s))
             ORDER BY senttime DESC, id DESC
             LIMIT 1)
            UNION ALL
            SELECT found.id, 'queued', NULL, NULL, found.senttime
            FROM (SELECT batch.ids[array_position(batch.msisdns, %(msisdn)s::varchar)]
                         AS id, sendlog.senttime
                  FROM dispatch_batches AS batch
                  JOIN sendlog ON sendlog.id = batch.sendlogid
                  WHERE %(originator)s::varchar IS NULL
                     OR sendlog.originator = %(originator)s) AS found
            WHERE found.id IS NOT NULL
        ) AS messages
        ORDER BY senttime DESC, id DESC
        LIMIT 1
        """,
        {"msisdn": msisdn, "originator": originator},
    )
    return cur.fetchone()


def apply_status_updates(cur, updates, source, owner=ANY_PROVIDER):
    """Move messages still `sent` to a final status, keep each change as a status event
    from `source` (poll or receipt) and queue its webhook, and keep sendlog counters exact.

    `updates` are StatusUpdates (provider id, status, code, reason, failure kind); only
    final ones count. Only messages of `owner` change: another provider may use the same
    ids. The messages made final are counted for their provider's health.

    Only rows still `sent` change, so a repeated or late answer never moves a final
    status back nor counts a transition twice (a concurrent writer waits on the row
    lock and then finds the row no longer `sent`). Returns the number of rows changed.
    """
    cur.execute(
        f"""
        WITH answer AS (
            SELECT DISTINCT ON (provider_id) provider_id, status, code, reason, kind
            FROM unnest(%(provider_id)s::varchar[], %(status)s::varchar[], %(code)s::varchar[],
                        %(reason)s::varchar[], %(failure_kind)s::varchar[])
                 AS a(provider_id, status, code, reason, kind)
            WHERE status IN ('delivered', 'failed')
        ), changed AS (
            UPDATE sms SET status = answer.status, errorcode = answer.code,
                           reason = answer.reason, statustimestamp = {NOW_UTC},
                           failurekind = CASE WHEN answer.status = 'failed'
                                              THEN COALESCE(answer.kind, 'unknown') END
            FROM answer
            WHERE sms.providerid = answer.provider_id AND sms.status = 'sent' AND {OWNED}
            RETURNING sms.id, sms.sendlogid, sms.msisdn, sms.status, sms.providerid,
                      sms.errorcode, sms.reason, sms.failurekind, sms.provider
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
        ) {finals_of("changed")} {events_of("changed")}
        SELECT count(*), {WOKEN} FROM changed
        """,
        {**_columns(updates), "source": source, **owner.params()},
    )
    return cur.fetchone()[0]


def _columns(updates) -> dict:
    """Each StatusUpdate field of these updates as one array literal, by field name."""
    return {
        name: array_literal([getattr(update, name) for update in updates]) for name in UPDATE_FIELDS
    }


def lock_unresolved(cur, sms_ids):
    """Lock the messages still `sent` among these, then their sends; return [(id, providerid)].

    Multi-row status writers call this (or lock_unresolved_by_provider_id) before
    apply_status_updates: rows are locked messages first, then sends, each in id order,
    so two writers never wait on each other in a cycle.
    """
    cur.execute(
        """
        SELECT id, providerid, sendlogid FROM sms
        WHERE id = ANY(%s::bigint[]) AND status = 'sent'
        ORDER BY id
        FOR UPDATE
        """,
        (array_literal(sms_ids),),
    )
    return _lock_sends(cur, cur.fetchall())


def lock_unresolved_by_provider_id(cur, provider_ids, owner=ANY_PROVIDER):
    """Like lock_unresolved, by provider id among the messages of `owner`; also return the
    provider ids we know at all.

    Returns ([(id, providerid)] still `sent`, {provider ids of any message}).
    """
    params = {"ids": array_literal(provider_ids), **owner.params()}
    cur.execute(
        f"SELECT DISTINCT providerid FROM sms WHERE providerid = ANY(%(ids)s::varchar[]) "
        f"AND {OWNED}",
        params,
    )
    known = {row[0] for row in cur.fetchall()}
    cur.execute(
        f"""
        SELECT id, providerid, sendlogid FROM sms
        WHERE providerid = ANY(%(ids)s::varchar[]) AND status = 'sent' AND {OWNED}
        ORDER BY id
        FOR UPDATE
        """,
        params,
    )
    return _lock_sends(cur, cur.fetchall()), known


def _lock_sends(cur, messages):
    sendlog_ids = sorted({sendlog_id for _, _, sendlog_id in messages if sendlog_id is not None})
    if sendlog_ids:
        cur.execute(
            "SELECT id FROM sendlog WHERE id = ANY(%s::bigint[]) ORDER BY id FOR UPDATE",
            (array_literal(sendlog_ids),),
        )
    return [(sms_id, provider_id) for sms_id, provider_id, _ in messages]


def keep_early_receipts(cur, updates, owner=ANY_PROVIDER):
    """Keep final statuses whose provider id no message of `owner` (the provider that
    pushed them) carries yet; return the ids that one carries by now (its batch was written
    meanwhile), which are not kept.

    Takes the early-receipts lock first and locks no row after it, so it never waits on a
    batch's writer that waits on the lock.
    """
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (EARLY_RECEIPTS_LOCK,))
    provider_ids = [update.provider_id for update in updates]
    cur.execute(
        f"SELECT DISTINCT providerid FROM sms WHERE providerid = ANY(%(ids)s::varchar[]) "
        f"AND {OWNED}",
        {"ids": array_literal(provider_ids), **owner.params()},
    )
    known = {row[0] for row in cur.fetchall()}
    kept = [update for update in updates if update.provider_id not in known]
    if kept:
        cur.execute(
            """
            INSERT INTO early_receipts (providerid, status, errorcode, reason, failurekind,
                                        provider)
            SELECT *, COALESCE(%(owner)s, '')
            FROM unnest(%(provider_id)s::varchar[], %(status)s::varchar[],
                        %(code)s::varchar[], %(reason)s::varchar[], %(failure_kind)s::varchar[])
            ON CONFLICT (providerid, provider) DO NOTHING
            """,
            {**_columns(kept), "owner": owner.key},
        )
    return known


def apply_early_receipts(cur, provider_ids, owner=ANY_PROVIDER):
    """Apply and drop the kept receipts of `owner` (the provider that answered the batch)
    for these provider ids; return the messages changed.

    The send path calls it in the transaction that writes a batch's sms rows (record_batch,
    which takes EARLY_RECEIPTS_LOCK shared), with the provider ids it wrote, when the next
    statement found receipts kept (dispatch.finish_seeing_early_receipts); the counters
    move as for any receipt.
    """
    if not provider_ids:
        return 0
    cur.execute(
        """
        DELETE FROM early_receipts
        WHERE providerid = ANY(%(ids)s::varchar[])
          AND (%(owner)s::varchar IS NULL OR provider IN (%(owner)s, ''))
        RETURNING providerid, status, errorcode, reason, failurekind
        """,
        {"ids": array_literal(provider_ids), "owner": owner.key},
    )
    found = [StatusUpdate(*row) for row in cur.fetchall()]
    return apply_status_updates(cur, found, "receipt", owner) if found else 0


def arrived_early_receipts(cur, owner=ANY_PROVIDER):
    """The provider ids of kept receipts of `owner` that a message of theirs carries by now:
    their batch was written, and its writer stopped before applying them (a record sent as
    one round trip applies them in a transaction of its own, just after)."""
    cur.execute(
        f"""
        SELECT DISTINCT early_receipts.providerid
        FROM early_receipts JOIN sms USING (providerid)
        WHERE (%(owner)s::varchar IS NULL OR early_receipts.provider IN (%(owner)s, ''))
          AND {OWNED}
        """,
        owner.params(),
    )
    return [provider_id for (provider_id,) in cur.fetchall()]


def drop_early_receipts(cur, older_than_seconds):
    """Drop kept receipts older than that; return [(provider id, status, received at)]."""
    cur.execute(
        """
        DELETE FROM early_receipts WHERE receivedat < now() - make_interval(secs => %s)
        RETURNING providerid, status, receivedat
        """,
        (older_than_seconds,),
    )
    return sorted(cur.fetchall(), key=lambda row: row[2])
