"""Dispatch: send recorded batches to the provider from PostgreSQL, outside any request.

A send is recorded as `dispatch_batches` rows (queries/dispatch.py). Whoever works on it
(a `flask dispatch` process on any host, or the request that recorded it, for up to
`smsProvider.waitSeconds`) runs the same loop on up to `maxConcurrentRequests` threads:

1. claim: a short transaction takes one batch under a lease (FOR UPDATE SKIP LOCKED):
   small sends first, then bulk sends batch by batch in turn, so none starves another;
2. send: the provider is called with no transaction open (STYLE rule 4), through the
   request rate shared by every process (`SharedRateLimit`);
3. record: a short transaction writes the batch's sms rows with the answers and deletes
   the batch, guarded by the lease, and closes the send when it was the last batch.

A provider that is down or refusing for now (ProviderUnavailable) gets the batch back
later with back-off, its recipients `queued` with that reason, until
`smsProvider.retryWindow` has passed since the batch's first attempt; then they fail
with it. A whole-request refusal (bad credentials, out of credit) fails the batch and the
rest of the send with its reason. A batch whose lease ran out (its dispatcher died, its
request's worker was killed) may have reached the provider: whoever takes it over asks
the provider where it can look sends up (`find_sends`) and otherwise records its
recipients `failed`, "provider outcome unknown". Nothing is ever sent twice.

A `flask dispatch` process also delivers the status webhooks those writes queue
(webhooks.Sender, on threads of its own).
"""

import contextvars
import itertools
import logging
import os
import random
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

import psycopg2
import psycopg2.extensions

from messaging import metrics, webhooks
from messaging.db import CONNECT_OPTIONS, Database
from messaging.errors import MessagingError, ProviderError, ProviderUnavailable
from messaging.providers.base import OUTCOME_UNKNOWN, TEMPORARY, Recipient
from messaging.queries.dispatch import (
    DISPATCH_CHANNEL,
    assign_batch,
    claim_abandoned,
    claim_ready,
    extend_lease,
    fail_ready_batches,
    finish_if_done,
    finish_seeing_early_receipts,
    forget_dispatcher,
    has_work,
    heartbeat,
    lock_send,
    next_due_seconds,
    note_failover,
    note_failure,
    record_batch,
    record_batch_and_finish,
    release_claims,
    requeue_batch,
    requeue_recipients,
    send_progress,
    take_rate_slot,
)
from messaging.queries.events import WEBHOOK_CHANNEL
from messaging.queries.optouts import add_optouts
from messaging.queries.status import apply_early_receipts
from messaging.settings import call_budget

log = logging.getLogger(__name__)

NO_ANSWER = ("", "No answer from the provider for this recipient")
NO_PROVIDER = ("", "No enabled provider serves this number")
UNEXPECTED = ("", "Provider call failed unexpectedly")
# How long a write after a provider call keeps trying while the database is away.
WRITE_RETRY_SECONDS = 15.0
# A lease outlives the longest provider call by half as much again plus a few seconds.
LEASE_MARGIN = 5.0
# How often an idle worker looks for batches that became due (a new send wakes it at
# once through LISTEN/NOTIFY).
IDLE_CHECK_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
# Numbers each claim of this process, for its lease name (next() on it is atomic).
_CLAIMS = itertools.count(1)
# What `flask dispatch` adds to its niceness by default. Beside gunicorn on one host, an
# unniced dispatcher working off a backlog took half the CPU from answering callers: K1
# (100-recipient sends, respond-async) was accepted at 40-43k msg/s; at 5, 50-51k, with the
# same CPU a message over the run and its backlog (the dispatcher takes what the API leaves).
NICENESS = 5
# Back-off of a batch the provider refused for now: doubling from 1 s, at most a minute.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0


def lease_seconds(settings) -> float:
    """How long a claimed batch is its worker's: past it, the worker is taken for dead."""
    return 1.5 * call_budget(settings) + LEASE_MARGIN


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Batch:
    id: int
    send_id: int
    seq: int
    segments: int
    msisdns: list[str]
    ids: list[int]
    attempts: int
    first_attempt: datetime
    last_error: str | None
    message: str
    sender: str | None
    senttime: datetime
    provider: str | None = None  # the configured name of the provider it is handed to
    refused_by: list[str] = field(default_factory=list)  # refused it unprocessed, this round
    rejected_by: list[str] = field(default_factory=list)  # rejected its recipients
    lease: str = field(kw_only=True)  # who holds it: the worker's name and the claim's number
    abandoned: bool = False

    @property
    def recipients(self) -> list[Recipient]:
        return [Recipient(m, str(i)) for m, i in zip(self.msisdns, self.ids, strict=True)]

    def only(self, count: int, **changes) -> "Batch":
        """This batch cut to its first `count` recipients, with other changes."""
        return replace(self, msisdns=self.msisdns[:count], ids=self.ids[:count], **changes)


@dataclass(frozen=True)
class Requeue:
    """Recipients of a batch put back as a batch of their own: after `delay` seconds, kept
    from the providers named, and with a failover event (code, reason) when they move."""

    references: frozenset[str]
    delay: float
    error: str
    refused_by: tuple[str, ...] = ()
    rejected_by: tuple[str, ...] = ()
    failover: tuple[str, str] | None = None


class SharedRateLimit:
    """`maxRequestsPerSecond` held across every process and host: each request takes the
    next slot from one row in PostgreSQL (spaced 1/rate apart) and waits for it."""

    def __init__(self, db: Database, provider: str, rate: float, sleep=time.sleep):
        self.db = db
        self.provider = provider
        self.interval = 1.0 / rate
        self._sleep = sleep

    def acquire(self) -> None:
        with self.db.statement() as cur:
            wait = take_rate_slot(cur, self.provider, self.interval)
        if wait > 0:
            self._sleep(wait)


def share_rate_limit(provider, db: Database, key: str | None = None) -> None:
    """Swap a provider's per-process throttle for the one every process shares (per
    configured provider: two accounts of one plugin each have their own)."""
    if provider.requests_per_second:
        provider.throttle = SharedRateLimit(db, key or provider.name, provider.requests_per_second)


def write(db: Database, action: Callable, together: bool = False):
    """Run `action(cur)` in a transaction (`together`: on a cursor in autocommit, for
    statements sent together, db.execute_together), again while the database is briefly
    away: what the provider answered must not be lost to a blip. Every write here is safe
    to repeat (guarded by the batch's lease, counters moved by the rows changed)."""
    deadline = time.monotonic() + WRITE_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            with db.statement() if together else db.transaction() as cur:
                return action(cur)
        except MessagingError as err:
            if err.status_code != 503 or time.monotonic() + delay > deadline:
                raise
            log.warning("%s; writing again in %.1fs", err.message, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Worker:
    """Claims batches (of one send, or of all) and takes each through send and record.

    With several providers (smsProviders) a batch goes to one chosen by weight and health
    among those serving its numbers; refused unprocessed, it moves to the next (a
    `failover` event per recipient), and only when none is left does the back-off apply.
    """

    def __init__(
        self,
        services,
        name: str | None = None,
        send_id: int | None = None,
        takes_over: bool = True,
    ):
        self.services = services
        self.db = services.db
        self.providers = services.providers
        self.health = services.health
        self.settings = services.config.provider
        self.name = name or worker_name()
        self.send_id = send_id
        # Looks for abandoned batches too (at most once a second): dispatchers do, the
        # request working on its own send leaves that to them.
        self.takes_over = takes_over
        self._next_takeover = 0.0
        # Long enough for a call to the slowest provider (a batch moved to another
        # provider has its lease set for that one's call).
        self.lease = max(lease_seconds(c.settings) for c in self.providers)
        self.on_recorded: Callable[[int], None] | None = None  # recipients settled
        self.lost_claims: list[str] = []  # leases of claims whose answer was lost
        self.next_due: float | None = None  # seconds, as the last claim that missed saw
        # The send's progress as this worker's last record closed it (None: it did not).
        self.closed: dict | None = None

    @property
    def provider(self):
        """The primary provider's plugin."""
        return self.services.provider

    def plugin(self, batch: Batch):
        return self.services.plugin_of(batch.provider)

    def key(self, batch: Batch) -> str:
        return self.providers.get(batch.provider).key

    # --- 1. claim ---

    def first_choice(self) -> str:
        """The provider a claimed batch goes to unless its numbers or history say otherwise."""
        if not self.providers.several:
            return self.providers.primary.key
        enabled = [c for c in self.providers if c.enabled]
        factors = self.health.factors()
        chosen = self.providers.choose(enabled, factors) or self.providers.next_in_line(
            enabled, factors
        )
        return (chosen or self.providers.primary).key

    def claim(self) -> Batch | None:
        """Claim a batch due (or, at most once a second, one abandoned); with none, keep in
        `next_due` the seconds until the next one not yet due (None: none waits)."""
        # Each claim holds its batch under a lease name of its own. A claim of a ready batch
        # whose answer was lost with the connection (committed or not: the worker cannot
        # tell) is given back by the next claim, rather than held unsent until its lease
        # runs out. An abandoned batch may be at the provider: one whose claim was lost
        # waits for its lease again, to be settled, never resent.
        takes_over = self.takes_over and time.monotonic() >= self._next_takeover
        # The usual claim is one statement, which commits by itself: one round trip.
        alone = not takes_over and not self.lost_claims
        with self.db.statement() if alone else self.db.transaction() as cur:
            if self.lost_claims:
                release_claims(cur, self.lost_claims)
            row, abandoned = None, False
            if takes_over:
                lease = self._lease_name()
                row = claim_abandoned(cur, lease, self.lease, self.send_id)
                abandoned = row is not None
                if row is None:
                    self._next_takeover = time.monotonic() + IDLE_CHECK_SECONDS
            if row is None:
                lease = self._lease_name()
                self.lost_claims.append(lease)  # until the commit is known to have landed
                row = claim_ready(cur, lease, self.lease, self.send_id, self.first_choice())
            if row is None and self.send_id is None:
                self.next_due = next_due_seconds(cur)
        self.lost_claims.clear()
        return None if row is None else Batch(*row, lease=lease, abandoned=abandoned)

    def give_back_lost_claims(self) -> None:
        with self.db.transaction() as cur:
            release_claims(cur, self.lost_claims)
        self.lost_claims.clear()

    def _lease_name(self) -> str:
        return f"{self.name}#{next(_CLAIMS)}"

    def work_once(self) -> bool:
        """Claim one batch and see it through; False when nothing was due."""
        batch = self.claim()
        if batch is None:
            return False
        if batch.abandoned:
            self.settle_abandoned(batch)
        else:
            self.send(batch)
        return True

    def assign(self, batch: Batch) -> Batch | None:
        """Settle which provider a claimed batch goes to (one serving its numbers, not one
        that refused or rejected it, by weight and health) and cut it to that provider's
        batch size, the rest going back as a batch of its own. None: nothing to send now
        (no provider left this round, none serves the numbers, or the lease was lost)."""
        if not self.providers.several:
            configured = self.providers.primary
            if len(batch.ids) <= configured.batch_size:
                return batch
            candidates = [configured]
        else:
            avoid = batch.refused_by + batch.rejected_by
            candidates = self.providers.serving(batch.msisdns, exclude=avoid)
            if not candidates and batch.rejected_by:
                # Whoever else could take them has refused for now: a rejection by one
                # of them is not for ever, so it may be asked again.
                candidates = self.providers.serving(batch.msisdns, exclude=batch.refused_by)
            if not candidates:
                return self.nowhere_to_go(batch)
        factors = self.health.factors()
        current = next((c for c in candidates if c.key == batch.provider), None)
        if current is None or (
            factors.get(current.key, 1.0) <= 0
            and any(c.weight * factors.get(c.key, 1.0) > 0 for c in candidates)
        ):
            current = self.providers.choose(candidates, factors) or self.providers.next_in_line(
                candidates, factors
            )
        size = current.batch_size
        if current.key == batch.provider and len(batch.ids) <= size:
            return batch
        lease = lease_seconds(current.settings)
        if not write(
            self.db,
            lambda cur: assign_batch(cur, batch.id, batch.lease, current.key, size, lease),
        ):
            return None
        return batch.only(size, provider=current.key)

    def nowhere_to_go(self, batch: Batch) -> None:
        """No provider may take the batch: every one serving it refused it this round (the
        back-off applies, as with one provider), or none serves its numbers."""
        if batch.refused_by and self.providers.serving(batch.msisdns):
            reason = batch.last_error or "every provider refused for now"
            self.refused_for_now(batch, ProviderUnavailable("", reason), noted=True)
            return None
        self.refused(batch, ProviderError(*NO_PROVIDER), noted=True)
        return None

    # --- 2. send ---

    def send(self, batch: Batch) -> None:
        batch = self.assign(batch)
        while batch is not None:
            batch = self.send_to_provider(batch)

    def send_to_provider(self, batch: Batch) -> Batch | None:
        """Send the batch to its provider and record the answer; return the batch again
        when it moved to another provider (refused unprocessed), else None."""
        recipients = batch.recipients
        provider = self.plugin(batch)
        began = time.perf_counter()
        try:
            results = provider.send_batch(recipients, batch.message, batch.sender)
        except ProviderUnavailable as err:
            moved = self.fail_over(batch, err)
            if moved is None:
                self.refused_for_now(batch, err)
            return moved
        except ProviderError as err:
            moved = self.fail_over(batch, err)
            if moved is not None:
                return moved
            log.warning(
                "send %s: %s refused batch %d (%d recipients): %s",
                batch.send_id,
                self.key(batch),
                batch.seq,
                len(recipients),
                err.message,
            )
            self.refused(batch, err)
            return None
        except Exception:
            log.exception("send %s: %s failed unexpectedly", batch.send_id, self.key(batch))
            self.refused(batch, ProviderError(*UNEXPECTED), errors=1)
            return None
        log.info(
            "send %s: batch %d (%d recipients) to %s in %.3fs",
            batch.send_id,
            batch.seq,
            len(recipients),
            self.key(batch),
            time.perf_counter() - began,
        )
        requeues = []
        retry = [r for r in results if r.retry_later]
        if retry:
            later = self.retry_elsewhere(batch, retry) or self.retry_later(batch, retry)
            if later is not None:
                requeues.append(later)
        rejected = self.rejected_elsewhere(batch, results)
        if rejected is not None:
            requeues.append(rejected)
        skip = frozenset().union(*(r.references for r in requeues)) if requeues else frozenset()
        unknown = bool(results) and all(r.reason == OUTCOME_UNKNOWN for r in results)
        self.record(batch, self.outcomes(batch, results, skip=skip), requeues, unknown=unknown)
        return None

    def fail_over(self, batch: Batch, err: ProviderError) -> Batch | None:
        """Move a batch its provider refused unprocessed to the next provider serving its
        numbers that has not refused it this round (a `failover` event per recipient);
        return it as handed over, or None when no provider is left."""
        if not self.providers.several:
            return None
        source = self.key(batch)
        refused = [*batch.refused_by, source]
        candidates = self.providers.serving(batch.msisdns, exclude=refused + batch.rejected_by)
        factors = self.health.factors()
        target = self.providers.choose(candidates, factors) or self.providers.next_in_line(
            candidates, factors
        )
        if target is None:
            return None
        size = target.batch_size
        lease = lease_seconds(target.settings)
        reason = f"moved from {source} to {target.key}: {err.message}"

        def move(cur):
            self.health.note(cur, source, refused=1)
            if not assign_batch(cur, batch.id, batch.lease, target.key, size, lease, refused):
                return False
            note_failover(cur, batch.send_id, batch.ids, batch.msisdns, err.code, reason)
            return True

        if not write(self.db, move):
            return None
        log.warning(
            "send %s: batch %d (%d recipients) %s", batch.send_id, batch.seq, len(batch.ids), reason
        )
        return batch.only(size, provider=target.key, refused_by=refused)

    def retry_elsewhere(self, batch: Batch, retry) -> Requeue | None:
        """Recipients the provider refused for now after others went: to another provider
        at once, when one serves them."""
        if not self.providers.several:
            return None
        source = self.key(batch)
        refused = (*batch.refused_by, source)
        references = frozenset(r.reference for r in retry)
        msisdns = [m for m, i in zip(batch.msisdns, batch.ids, strict=True) if str(i) in references]
        if not self.providers.serving(msisdns, exclude=refused + tuple(batch.rejected_by)):
            return None
        error = f"Error {retry[0].error_code}: {retry[0].reason}"
        reason = f"moved from {source}: {retry[0].reason or 'refused for now'}"
        return Requeue(
            references, 0.0, error, refused, tuple(batch.rejected_by), (retry[0].error_code, reason)
        )

    def retry_later(self, batch: Batch, retry) -> Requeue | None:
        """Recipients refused for now after others went: again later, within the window."""
        if not self.retry_window_left(batch):
            return None
        error = f"Error {retry[0].error_code}: {retry[0].reason}"
        references = frozenset(r.reference for r in retry)
        return Requeue(references, self.backoff(batch), error, (), tuple(batch.rejected_by))

    def rejected_elsewhere(self, batch: Batch, results) -> Requeue | None:
        """Recipients the provider rejected for a reason of its own (a temporary failure in
        its code table: throttled, its route down, the account), not for their number: once
        on another provider that serves them. An invalid number is never retried."""
        if not self.providers.several or batch.rejected_by:
            return None
        provider = self.plugin(batch)
        rejected = [
            r
            for r in results
            if not r.accepted
            and not r.retry_later
            and r.failure_kind == TEMPORARY
            and r.error_code not in provider.opt_out_codes
        ]
        if not rejected:
            return None
        source = self.key(batch)
        references = frozenset(r.reference for r in rejected)
        msisdns = [m for m, i in zip(batch.msisdns, batch.ids, strict=True) if str(i) in references]
        if not self.providers.serving(msisdns, exclude=(source,)):
            return None
        first = rejected[0]
        reason = f"rejected by {source} ({first.reason}); trying another provider"
        return Requeue(
            references,
            0.0,
            f"Error {first.error_code}: {first.reason}",
            (),
            (source,),
            (first.error_code, reason),
        )

    def outcomes(self, batch: Batch, results, skip=frozenset()) -> list[tuple]:
        by_reference = {result.reference: result for result in results}
        outcomes = []
        for recipient in batch.recipients:
            if recipient.reference in skip:
                continue
            result = by_reference.get(recipient.reference)
            if result is None:
                outcome = (None, batch.segments, *NO_ANSWER, None)
            elif result.accepted and result.provider_id:
                outcome = (result.provider_id, result.segments or batch.segments, None, None, None)
            else:
                reason = result.reason or "Rejected"
                code = result.error_code or ""
                outcome = (None, batch.segments, code, reason, result.failure_kind)
            outcomes.append((int(recipient.reference), recipient.msisdn, *outcome))
        return outcomes

    def retry_window_left(self, batch: Batch) -> bool:
        return time.time() - batch.first_attempt.timestamp() < self.settings.retry_window

    @staticmethod
    def backoff(batch: Batch, retry_after: float | None = None) -> float:
        """Seconds before a refused batch goes again: doubling from a second (at most a
        minute), or the provider's Retry-After when longer, with jitter to spread retries."""
        delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (batch.attempts - 1))
        return max(delay, retry_after or 0.0) * random.uniform(1.0, 1.25)

    def refused_for_now(self, batch: Batch, err: ProviderUnavailable, noted=False) -> None:
        """Give the batch back for later, or fail it once the retry window is over."""
        source = self.key(batch)
        if not self.retry_window_left(batch):
            tried_for = time.time() - batch.first_attempt.timestamp()
            log.warning(
                "send %s: %s still unavailable after %.0fs; the send fails: %s",
                batch.send_id,
                source,
                tried_for,
                err.message,
            )
            self.refused(batch, err, noted=noted)
            return
        delay = self.backoff(batch, err.retry_after)
        log.warning(
            "send %s: %s unavailable (%s); batch %d again in %.1fs",
            batch.send_id,
            source,
            err.message,
            batch.seq,
            delay,
        )

        def requeue(cur):
            if not noted:
                self.health.note(cur, source, refused=1)
            return requeue_batch(cur, batch.id, batch.lease, delay, err.message)

        write(self.db, requeue)

    def refused(self, batch: Batch, err: ProviderError, noted=False, errors=0) -> None:
        """A whole-request refusal: fail this batch and, with one provider, every batch of
        the send not yet out (with several, the send's other batches may go elsewhere)."""
        source = self.key(batch)

        def fail(cur):
            lock_send(cur, batch.send_id)
            if not noted:
                self.health.note(cur, source, refused=0 if errors else 1, errors=errors)
            record_batch(
                cur,
                batch.id,
                batch.lease,
                batch.send_id,
                batch.senttime,
                batch.message,
                self.failed(batch, err.code, err.description),
                provider=source,
            )
            note_failure(cur, batch.send_id, err.message)
            if not self.providers.several:
                # A refusal of the whole request says nothing against the numbers.
                fail_ready_batches(
                    cur, batch.send_id, err.code, err.description, kind=TEMPORARY, source="send"
                )
            return finish_if_done(cur, batch.send_id)

        self.closed = write(self.db, fail)
        metrics.record_messages(source, failed=len(batch.ids))
        self._settled(batch)

    @staticmethod
    def failed(batch: Batch, code: str, reason: str) -> list[tuple]:
        return [
            (sms_id, msisdn, None, batch.segments, code, reason, TEMPORARY)
            for msisdn, sms_id in zip(batch.msisdns, batch.ids, strict=True)
        ]

    # --- 3. record ---

    def record(
        self, batch: Batch, outcomes: list[tuple], requeues=(), unknown=False, counted=True
    ) -> None:
        """Write the batch's answers and drop it; each Requeue puts those recipients back
        as a batch of their own. Recipients refused with one of the provider's
        `opt_out_codes` go on the suppression list."""
        source = self.key(batch)
        opt_out_codes = self.plugin(batch).opt_out_codes
        opted_out: dict[str, list[str]] = {}  # the provider's code -> its recipients
        for _, msisdn, provider_id, _, code, *_ in outcomes:
            if provider_id is None and code in opt_out_codes:
                opted_out.setdefault(code, []).append(msisdn)

        recording = (
            batch.id,
            batch.lease,
            batch.send_id,
            batch.senttime,
            batch.message,
            outcomes,
            "reconcile" if batch.abandoned else "send",
        )

        def store(cur):
            # No lock_send first: the batches of one send write their rows side by side and
            # take turns only from record_batch's counter update (which takes the send's row
            # lock) to the commit, finish_if_done under that lock. Every row this locks
            # before it is its own batch's, or new.
            for again in requeues:
                pairs = [(m, i) for m, i in zip(batch.msisdns, batch.ids, strict=True)]
                pairs = [(m, i) for m, i in pairs if str(i) in again.references]
                msisdns, ids = [m for m, _ in pairs], [i for _, i in pairs]
                requeue_recipients(
                    cur,
                    batch.id,
                    batch.lease,
                    msisdns,
                    ids,
                    again.delay,
                    again.error,
                    again.refused_by,
                    again.rejected_by,
                )
                if again.failover is not None:
                    note_failover(cur, batch.send_id, ids, msisdns, *again.failover)
            accepted = record_batch(cur, *recording, provider=source)
            if counted:  # after the send's row lock, as every writer of the health counts
                self.health.note(cur, source, accepted=0 if unknown else 1, errors=int(unknown))
            if accepted is not None:
                for code, msisdns in opted_out.items():
                    add_optouts(cur, msisdns, f"{self.plugin(batch).name} error {code}")
                closed, early_receipts = finish_seeing_early_receipts(cur, batch.send_id)
                if early_receipts:
                    self._apply_early_receipts(cur, outcomes, source)
                return accepted, closed
            return None, None

        if requeues or opted_out or (counted and self.health.tracked):
            accepted, self.closed = write(self.db, store)
        else:
            # The usual record (nothing to requeue or add, no provider health kept) is two
            # statements sent together: one round trip where a transaction takes four.
            accepted, self.closed, early_receipts = write(
                self.db,
                lambda cur: record_batch_and_finish(cur, *recording, provider=source),
                together=True,
            )
            if accepted is not None and early_receipts:
                write(self.db, lambda cur: self._apply_early_receipts(cur, outcomes, source))
        if accepted is None:
            # Only when this process was stalled past its lease: another took the batch
            # over and settled it; the provider's late answer is logged, not counted twice.
            log.error(
                "send %s: batch %d was taken over while at %s; its answer (%d accepted) "
                "is not recorded",
                batch.send_id,
                batch.seq,
                source,
                sum(1 for outcome in outcomes if outcome[2]),
            )
            return
        metrics.record_messages(source, sent=accepted, failed=len(outcomes) - accepted)
        self._settled(batch)

    def _apply_early_receipts(self, cur, outcomes: list[tuple], source: str) -> None:
        """Apply the receipts kept for a batch's messages: they overtook it, coming before
        its rows existed."""
        provider_ids = [outcome[2] for outcome in outcomes if outcome[2]]
        apply_early_receipts(cur, provider_ids, self.services.owner(source))

    def _settled(self, batch: Batch) -> None:
        if self.on_recorded is not None:
            self.on_recorded(len(batch.ids))

    # --- a batch whose dispatcher died ---

    def settle_abandoned(self, batch: Batch) -> Counter | None:
        """Settle a batch that may have reached its provider, never resending it (there or
        anywhere else); return how many recipients became sent, failed, and outcome unknown
        (None: the lookup failed and the batch is kept to ask again)."""
        answers = {}
        provider = self.plugin(batch)
        if provider.can_find_sends:
            try:
                found = provider.find_sends(batch.recipients)
                answers = {result.reference: result for result in found}
            except Exception as err:  # ask again later rather than guess
                reason = err.message if isinstance(err, MessagingError) else type(err).__name__
                log.warning(
                    "send %s: looking batch %d up at %s failed: %s; asking again later",
                    batch.send_id,
                    batch.seq,
                    self.key(batch),
                    reason,
                )
                write(self.db, lambda cur: extend_lease(cur, batch.id, batch.lease, 60.0))
                return None
        outcomes = []
        settled: Counter = Counter()
        for msisdn, sms_id in zip(batch.msisdns, batch.ids, strict=True):
            answer = answers.get(str(sms_id))
            if answer is None:
                settled["unknown"] += 1
                outcomes.append((sms_id, msisdn, None, batch.segments, "", OUTCOME_UNKNOWN, None))
            elif answer.accepted and answer.provider_id:
                settled["sent"] += 1
                segments = answer.segments or batch.segments
                outcomes.append((sms_id, msisdn, answer.provider_id, segments, None, None, None))
            else:
                settled["failed"] += 1
                refusal = (answer.error_code, answer.reason or "Rejected", answer.failure_kind)
                outcomes.append((sms_id, msisdn, None, batch.segments, *refusal))
        log.warning(
            "send %s: batch %d of %d was abandoned at the provider; settled without resending",
            batch.send_id,
            batch.seq,
            len(outcomes),
        )
        self.record(batch, outcomes, counted=False)
        return settled


class WorkerCalls:
    """Idle workers waiting for work: a new send wakes as many of them as it has batches
    (its NOTIFY says how many), not all of them to race for one batch."""

    def __init__(self, workers: int):
        self.workers = workers
        self._calls = 0
        self._ready = threading.Condition()

    def call(self, count: int) -> None:
        with self._ready:
            self._calls = min(self.workers, self._calls + count)
            self._ready.notify(count)

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a call; True if one came."""
        with self._ready:
            if not self._ready.wait_for(lambda: self._calls > 0, timeout):
                return False
            self._calls -= 1
            return True


def batches_announced(payload: str, workers: int) -> int:
    """How many workers a dispatch NOTIFY calls: its batches (`<send id>:<batches>`); all
    of them for a payload without a count (a send recorded by an older release)."""
    _, _, count = payload.partition(":")
    return int(count) if count.isdigit() else workers


class Wakeup:
    """LISTEN on a connection of its own: new sends call idle workers (`calls`), new
    webhook deliveries wake the webhook sender (`webhooks`), at once."""

    def __init__(self, dsn: str, workers: int):
        self.dsn = dsn
        self.calls = WorkerCalls(workers)
        self.webhooks = threading.Event()
        self._conn = None

    def watch(self, stop: threading.Event) -> None:
        """Run until `stop`: reconnect when the connection is lost."""
        delay = 0.5
        while not stop.is_set():
            try:
                if self._conn is None:
                    self._conn = psycopg2.connect(self.dsn, **CONNECT_OPTIONS)
                    self._conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                    with self._conn.cursor() as cur:
                        for channel in (DISPATCH_CHANNEL, WEBHOOK_CHANNEL):
                            cur.execute(f"LISTEN {channel}")
                    delay = 0.5
                if select.select([self._conn], [], [], IDLE_CHECK_SECONDS)[0]:
                    self._conn.poll()
                    for notify in self._conn.notifies:
                        if notify.channel == DISPATCH_CHANNEL:
                            workers = self.calls.workers
                            self.calls.call(batches_announced(notify.payload, workers))
                        else:
                            self.webhooks.set()
                    self._conn.notifies.clear()
            except (psycopg2.Error, OSError) as err:
                log.warning("dispatch: LISTEN connection lost (%s); reconnecting", err)
                self.close()
                stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Dispatcher:
    """A long-running dispatcher: `concurrency` workers and the webhook sender's threads
    until `stop` is set (SIGTERM)."""

    def __init__(self, services, concurrency: int | None = None, name: str | None = None):
        self.services = services
        self.concurrency = concurrency or services.config.provider.max_concurrent_requests
        self.name = name or worker_name()
        self.stop = threading.Event()
        self.wakeup = Wakeup(services.db.dsn, self.concurrency)
        self.webhooks = webhooks.Sender(services, self.name, self.stop, self.wakeup.webhooks)
        self.batches = 0
        # Exit once there is no batch left at all and no webhook due (--until-idle).
        self.idle_exit = False
        self._lock = threading.Lock()

    def run(self) -> None:
        """Work until stopped; a batch in flight when stopped is finished and recorded."""
        log.info(
            "dispatcher %s: %d workers, provider %s",
            self.name,
            self.concurrency,
            ", ".join(c.key for c in self.services.providers),
        )
        threads = [threading.Thread(target=self.wakeup.watch, args=(self.stop,), daemon=True)]
        threads += [
            threading.Thread(target=self._work, name=f"dispatch-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        threads += self.webhooks.threads()
        for thread in threads:
            thread.start()
        try:
            while not self.stop.wait(HEARTBEAT_SECONDS):
                self._heartbeat()
        finally:
            self.stop.set()
            self.wakeup.calls.call(self.concurrency)
            self.wakeup.webhooks.set()
            for thread in threads:
                thread.join()
            try:
                with self.services.db.transaction() as cur:
                    forget_dispatcher(cur, self.name)
            except MessagingError:
                pass  # its row ages out of /healthz by itself
            log.info(
                "dispatcher %s: stopped after %d batches and %d webhooks",
                self.name,
                self.batches,
                self.webhooks.delivered,
            )

    def _heartbeat(self) -> None:
        try:
            with self.services.db.statement() as cur:
                heartbeat(cur, self.name)
        except MessagingError as err:
            log.warning("dispatcher %s: heartbeat failed: %s", self.name, err.message)

    def _work(self) -> None:
        worker = Worker(self.services, name=self.name)
        self._heartbeat()
        while not self.stop.is_set():
            try:
                did = worker.work_once()
            except MessagingError as err:
                log.warning("dispatcher %s: %s; waiting", self.name, err.message)
                self.stop.wait(1.0)
                continue
            except Exception:
                log.exception("dispatcher %s: unexpected error; waiting", self.name)
                self.stop.wait(1.0)
                continue
            if did:
                with self._lock:
                    self.batches += 1
                continue
            self._idle(worker)

    def _idle(self, worker: Worker) -> None:
        """Sleep until a new send calls, or the next batch is due (at most a second)."""
        if self.idle_exit:
            try:
                with self.services.db.statement() as cur:
                    if not has_work(cur):
                        self.stop.set()
                        return
            except MessagingError:
                pass
        due = worker.next_due
        timeout = IDLE_CHECK_SECONDS if due is None else min(IDLE_CHECK_SECONDS, due)
        self.wakeup.calls.wait(timeout)


def claim_at_record(services) -> tuple[str, float, str]:
    """The claim (lease name, lease seconds, provider) that a one-batch send its request
    sends itself is recorded under (queries.dispatch.record_send): the batch is the
    request's from its first row, and a claim's round trip is spared (S2)."""
    worker = Worker(services, name=f"{worker_name()}:send", takes_over=False)
    return worker._lease_name(), worker.lease, worker.first_choice()


def give_back_claim(services, lease: str) -> None:
    """Give back a claim made by a statement whose answer was lost (it may not have
    committed): its batch, if recorded, is ready for the dispatchers again rather than held
    until its lease runs out and then settled as perhaps sent. Tried once, not again as
    write() would: in an outage every caller would wait out its retries for their 503.
    Logged when it fails: the batch is then settled so."""
    try:
        with services.db.statement() as cur:
            release_claims(cur, [lease])
    except MessagingError as err:
        log.error("claim %s could not be given back (%s): settled after its lease", lease, err)


def work_on_send(
    services,
    send_id: int,
    deadline: float | None,
    on_recorded: Callable[[int], None] | None = None,
    progress: dict | None = None,
    claimed: Batch | None = None,
) -> dict:
    """Work on one send's batches beside any dispatchers until it is done or `deadline`
    (time.monotonic(); None: until done), on up to maxConcurrentRequests threads, and
    return its progress (queries.dispatch.send_progress; given, as the transaction that
    recorded the send read it, it spares the first query). A batch in flight at the
    deadline is finished and recorded; what is left goes on with the dispatchers. A
    database that stays away until the deadline raises ServiceUnavailable. `claimed` is a
    batch of the send recorded already claimed (claim_at_record), sent first."""
    name = f"{worker_name()}:send-{send_id}"
    failures: list[MessagingError] = []

    # Kept from round to round, so that what a claim lost with the database holds is given
    # back by the worker that made it.
    workers = [
        Worker(services, name=f"{name}-{n}", send_id=send_id, takes_over=False)
        for n in range(services.config.provider.max_concurrent_requests)
    ]
    for worker in workers:
        worker.on_recorded = on_recorded
    if claimed is not None:
        try:
            workers[0].send(claimed)
        except MessagingError as err:  # the database is away: leave it to the loop
            failures.append(err)
        progress = workers[0].closed

    def run(worker: Worker, turns: Iterator[int]) -> None:
        # A turn per batch that was due: once they are taken, the send is read again
        # rather than asked for one more batch that is most likely not there.
        while (deadline is None or time.monotonic() < deadline) and next(turns, None) is not None:
            try:
                if not worker.work_once():
                    return
            except MessagingError as err:  # the database is away: leave it to the loop
                failures.append(err)
                return

    while True:
        try:
            for worker in workers:
                if worker.lost_claims:  # a batch such a claim holds counts as not due
                    worker.give_back_lost_claims()
                    progress = None
            if progress is None:
                with services.db.statement() as cur:
                    progress = send_progress(cur, send_id)
        except MessagingError as err:
            failures.append(err)
        if progress is not None and (progress["status"] != "sending" or not progress["queued"]):
            return progress
        if deadline is not None and time.monotonic() >= deadline:
            if progress is None:
                raise failures[-1]
            return progress
        if progress is not None and progress["due_now"] == 1:
            run(workers[0], iter(range(1)))  # one batch: no thread to start for it
        elif progress is not None and progress["due_now"]:
            due = progress["due_now"]
            turns = iter(range(due))  # next() on it is atomic: the threads share it
            # Each thread in a copy of this context: its log lines carry the request id.
            threads = [
                threading.Thread(
                    target=contextvars.copy_context().run,
                    args=(run, worker, turns),
                    name=f"send-{send_id}-{n}",
                    daemon=True,
                )
                for n, worker in enumerate(workers[:due])
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:  # held by other workers, due later, or the database is away: look again soon
            time.sleep(0.05 if progress is not None else 0.2)
        # The record that closed the send says how it ended: no need to read it again.
        progress = next((worker.closed for worker in workers if worker.closed), None)
