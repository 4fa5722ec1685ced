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
import logging
import os
import random
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import psycopg2
import psycopg2.extensions

from messaging import metrics, webhooks
from messaging.db import CONNECT_OPTIONS, Database
from messaging.errors import MessagingError, ProviderError, ProviderUnavailable
from messaging.providers.base import OUTCOME_UNKNOWN, TEMPORARY, Recipient
from messaging.queries.dispatch import (
    DISPATCH_CHANNEL,
    claim_abandoned,
    claim_ready,
    extend_lease,
    fail_ready_batches,
    finish_if_done,
    forget_dispatcher,
    has_work,
    heartbeat,
    lock_send,
    next_due_seconds,
    note_failure,
    record_batch,
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
UNEXPECTED = ("", "Provider call failed unexpectedly")
# How long a write after a provider call keeps trying while the database is away.
WRITE_RETRY_SECONDS = 15.0
# A lease outlives the longest provider call by half as much again plus a few seconds.
LEASE_MARGIN = 5.0
# How often an idle worker looks for batches that became due (a new send wakes it at
# once through LISTEN/NOTIFY).
IDLE_CHECK_SECONDS = 1.0
HEARTBEAT_SECONDS = 5.0
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
    abandoned: bool = False

    @property
    def recipients(self) -> list[Recipient]:
        return [Recipient(m, str(i)) for m, i in zip(self.msisdns, self.ids, strict=True)]


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


def share_rate_limit(provider, db: Database) -> None:
    """Swap a provider's per-process throttle for the one every process shares."""
    if provider.requests_per_second:
        provider.throttle = SharedRateLimit(db, provider.name, provider.requests_per_second)


def write(db: Database, action: Callable):
    """Run `action(cur)` in a transaction, again while the database is briefly away: what
    the provider answered must not be lost to a blip. Every write here is safe to repeat
    (guarded by the batch's lease, counters moved by the rows changed)."""
    deadline = time.monotonic() + WRITE_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            with db.transaction() as cur:
                return action(cur)
        except MessagingError as err:
            if err.status_code != 503 or time.monotonic() + delay > deadline:
                raise
            log.warning("%s; writing again in %.1fs", err.message, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


class Worker:
    """Claims batches (of one send, or of all) and takes each through send and record."""

    def __init__(
        self,
        services,
        name: str | None = None,
        send_id: int | None = None,
        takes_over: bool = True,
    ):
        self.services = services
        self.db = services.db
        self.provider = services.provider
        self.settings = services.config.provider
        self.name = name or worker_name()
        self.send_id = send_id
        # Looks for abandoned batches too (at most once a second): dispatchers do, the
        # request working on its own send leaves that to them.
        self.takes_over = takes_over
        self._next_takeover = 0.0
        self.lease = lease_seconds(self.settings)
        self.on_recorded: Callable[[int], None] | None = None  # recipients settled

    # --- 1. claim ---

    def claim(self) -> Batch | None:
        # Each claim is one statement that stands alone: no transaction around them.
        with self.db.statement() as cur:
            row = None
            if self.takes_over and time.monotonic() >= self._next_takeover:
                row = claim_abandoned(cur, self.name, self.lease, self.send_id)
                if row is None:
                    self._next_takeover = time.monotonic() + IDLE_CHECK_SECONDS
            if row is not None:
                return Batch(*row, abandoned=True)
            row = claim_ready(cur, self.name, self.lease, self.send_id)
        return None if row is None else Batch(*row)

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

    # --- 2. send ---

    def send(self, batch: Batch) -> None:
        recipients = batch.recipients
        began = time.perf_counter()
        try:
            results = self.provider.send_batch(recipients, batch.message, batch.sender)
        except ProviderUnavailable as err:
            self.refused_for_now(batch, err)
            return
        except ProviderError as err:
            log.warning(
                "send %s: %s refused batch %d (%d recipients): %s",
                batch.send_id,
                self.provider.name,
                batch.seq,
                len(recipients),
                err.message,
            )
            self.refused(batch, err)
            return
        except Exception:
            log.exception("send %s: %s failed unexpectedly", batch.send_id, self.provider.name)
            self.refused(batch, ProviderError(*UNEXPECTED))
            return
        log.info(
            "send %s: batch %d (%d recipients) to %s in %.3fs",
            batch.send_id,
            batch.seq,
            len(recipients),
            self.provider.name,
            time.perf_counter() - began,
        )
        retry = [r for r in results if r.retry_later]
        if retry and self.retry_window_left(batch):
            # Some were refused for now after others went: those go again later.
            later = {r.reference for r in retry}
            settled = [r for r in results if r.reference not in later]
            delay = self.backoff(batch)
            error = f"Error {retry[0].error_code}: {retry[0].reason}"
            self.record(batch, self.outcomes(batch, settled, skip=later), (later, delay, error))
            return
        self.record(batch, self.outcomes(batch, results))

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

    def refused_for_now(self, batch: Batch, err: ProviderUnavailable) -> None:
        """Give the batch back for later, or fail it once the retry window is over."""
        if not self.retry_window_left(batch):
            tried_for = time.time() - batch.first_attempt.timestamp()
            log.warning(
                "send %s: %s still unavailable after %.0fs; the send fails: %s",
                batch.send_id,
                self.provider.name,
                tried_for,
                err.message,
            )
            self.refused(batch, err)
            return
        delay = self.backoff(batch, err.retry_after)
        log.warning(
            "send %s: %s unavailable (%s); batch %d again in %.1fs",
            batch.send_id,
            self.provider.name,
            err.message,
            batch.seq,
            delay,
        )
        write(self.db, lambda cur: requeue_batch(cur, batch.id, self.name, delay, err.message))

    def refused(self, batch: Batch, err: ProviderError) -> None:
        """A whole-request refusal: fail this batch and every batch of the send not yet out."""

        def fail(cur):
            lock_send(cur, batch.send_id)
            record_batch(
                cur,
                batch.id,
                self.name,
                batch.send_id,
                batch.senttime,
                batch.message,
                self.failed(batch, err.code, err.description),
            )
            note_failure(cur, batch.send_id, err.message)
            # A refusal of the whole request says nothing against the numbers.
            fail_ready_batches(
                cur, batch.send_id, err.code, err.description, kind=TEMPORARY, source="send"
            )
            return finish_if_done(cur, batch.send_id)

        write(self.db, fail)
        metrics.record_messages(self.provider.name, failed=len(batch.ids))
        self._settled(batch)

    @staticmethod
    def failed(batch: Batch, code: str, reason: str) -> list[tuple]:
        return [
            (sms_id, msisdn, None, batch.segments, code, reason, TEMPORARY)
            for msisdn, sms_id in zip(batch.msisdns, batch.ids, strict=True)
        ]

    # --- 3. record ---

    def record(self, batch: Batch, outcomes: list[tuple], retry=None) -> None:
        """Write the batch's answers and drop it; `retry` = (references, delay, error) puts
        those recipients back as a batch of their own, due after the delay. Recipients
        refused with one of the provider's `opt_out_codes` go on the suppression list."""
        opted_out: dict[str, list[str]] = {}  # the provider's code -> its recipients
        for _, msisdn, provider_id, _, code, *_ in outcomes:
            if provider_id is None and code in self.provider.opt_out_codes:
                opted_out.setdefault(code, []).append(msisdn)

        def store(cur):
            lock_send(cur, batch.send_id)
            if retry is not None:
                references, delay, error = retry
                again = [(m, i) for m, i in zip(batch.msisdns, batch.ids, strict=True)]
                again = [(m, i) for m, i in again if str(i) in references]
                requeue_recipients(
                    cur,
                    batch.id,
                    self.name,
                    [m for m, _ in again],
                    [i for _, i in again],
                    delay,
                    error,
                )
            accepted = record_batch(
                cur,
                batch.id,
                self.name,
                batch.send_id,
                batch.senttime,
                batch.message,
                outcomes,
                "reconcile" if batch.abandoned else "send",
            )
            if accepted is not None:
                # Receipts that overtook this batch (they came before its rows existed).
                apply_early_receipts(cur, [outcome[2] for outcome in outcomes if outcome[2]])
                for code, msisdns in opted_out.items():
                    add_optouts(cur, msisdns, f"{self.provider.name} error {code}")
                finish_if_done(cur, batch.send_id)
            return accepted

        accepted = write(self.db, store)
        if accepted is None:
            # Only when this process was stalled past its lease: another took the batch
            # over and settled it; the provider's late answer is logged, not counted twice.
            log.error(
                "send %s: batch %d was taken over while at %s; its answer (%d accepted) "
                "is not recorded",
                batch.send_id,
                batch.seq,
                self.provider.name,
                sum(1 for outcome in outcomes if outcome[2]),
            )
            return
        metrics.record_messages(self.provider.name, sent=accepted, failed=len(outcomes) - accepted)
        self._settled(batch)

    def _settled(self, batch: Batch) -> None:
        if self.on_recorded is not None:
            self.on_recorded(len(batch.ids))

    # --- a batch whose dispatcher died ---

    def settle_abandoned(self, batch: Batch) -> Counter | None:
        """Settle a batch that may have reached the provider, never resending it; return how
        many recipients became sent, failed, and outcome unknown (None: the lookup failed and
        the batch is kept to ask again)."""
        answers = {}
        if self.provider.can_find_sends:
            try:
                found = self.provider.find_sends(batch.recipients)
                answers = {result.reference: result for result in found}
            except Exception as err:  # ask again later rather than guess
                reason = err.message if isinstance(err, MessagingError) else type(err).__name__
                log.warning(
                    "send %s: looking batch %d up at %s failed: %s; asking again later",
                    batch.send_id,
                    batch.seq,
                    self.provider.name,
                    reason,
                )
                write(self.db, lambda cur: extend_lease(cur, batch.id, self.name, 60.0))
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
        self.record(batch, outcomes)
        return settled


class Wakeup:
    """LISTEN on a connection of its own: new sends wake idle workers (`event`), new
    webhook deliveries the webhook sender (`webhooks`), at once."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.event = threading.Event()
        self.webhooks = threading.Event()
        self._events = {DISPATCH_CHANNEL: self.event, WEBHOOK_CHANNEL: self.webhooks}
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
                        for channel in self._events:
                            cur.execute(f"LISTEN {channel}")
                    delay = 0.5
                if select.select([self._conn], [], [], IDLE_CHECK_SECONDS)[0]:
                    self._conn.poll()
                    for notify in self._conn.notifies:
                        self._events[notify.channel].set()
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
        self.wakeup = Wakeup(services.db.dsn)
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
            self.services.provider.name,
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
            self.wakeup.event.set()
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
            self._idle()

    def _idle(self) -> None:
        """Sleep until a new send is announced, or the next batch is due (at most a second)."""
        try:
            with self.services.db.statement() as cur:
                due = next_due_seconds(cur)
                if self.idle_exit and not has_work(cur):
                    self.stop.set()
                    return
        except MessagingError:
            due = None
        timeout = IDLE_CHECK_SECONDS if due is None else min(IDLE_CHECK_SECONDS, due)
        if self.wakeup.event.wait(timeout):
            self.wakeup.event.clear()


def work_on_send(
    services,
    send_id: int,
    deadline: float | None,
    on_recorded: Callable[[int], None] | None = None,
    progress: dict | None = None,
) -> dict:
    """Work on one send's batches beside any dispatchers until it is done or `deadline`
    (time.monotonic(); None: until done), on up to maxConcurrentRequests threads, and
    return its progress (queries.dispatch.send_progress; given, as the transaction that
    recorded the send read it, it spares the first query). A batch in flight at the
    deadline is finished and recorded; what is left goes on with the dispatchers. A
    database that stays away until the deadline raises ServiceUnavailable."""
    name = f"{worker_name()}:send-{send_id}"
    failures: list[MessagingError] = []

    def run(turns: Iterator[int]) -> None:
        worker = Worker(services, name=name, send_id=send_id, takes_over=False)
        worker.on_recorded = on_recorded
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
        if progress is None:
            try:
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
        if progress is not None and progress["due_now"]:
            due = progress["due_now"]
            turns = iter(range(due))  # next() on it is atomic: the threads share it
            workers = min(services.config.provider.max_concurrent_requests, due)
            # Each thread in a copy of this context: its log lines carry the request id.
            threads = [
                threading.Thread(
                    target=contextvars.copy_context().run,
                    args=(run, turns),
                    name=f"send-{send_id}-{n}",
                    daemon=True,
                )
                for n in range(workers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:  # held by other workers, due later, or the database is away: look again soon
            time.sleep(0.05 if progress is not None else 0.2)
        progress = None
