"""poll-status: ask the provider about every message still in flight and store the answers.

A run works in chunks, on a few lanes (threads) at once. Each chunk takes three steps,
and no transaction is open while the provider works (STYLE rule 4):

1. claim: a short transaction takes the next chunk of due messages (a cursor over the
   ids of messages still `sent`, shared by the run's lanes) and a lease on their id
   range (a row in `poll_claims`), then commits;
2. ask: the provider is queried, in batches when it takes many ids a call
   (`status_batch_size`), else one id a call, the lanes bounding the parallel requests;
3. store: a short transaction locks the chunk's messages still `sent`, then their sends,
   each in id order, stores the final answers with `apply_status_updates`, and
   marks the rest as asked about now.

Due means: status `sent`, sent within the window, and in no range claimed or asked
about since this run started. So several runs at once (overlapping cron runs, several
hosts) share the work: none asks about a message another has claimed or has just asked
about, no run asks twice about one message, and no transition is counted twice.

A lease never outlives the window (the chunk is made small enough for its calls to fit).
A run that is stopped (SIGTERM, Ctrl-C) hands its unfinished claims back; one that dies
leaves them to end with their lease. Either way the next run polls those messages once
more, even those that have left the window meanwhile.
"""

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from messaging import metrics, receipts, reconcile
from messaging.errors import MessagingError, ProviderError
from messaging.providers.base import DELIVERED, FAILED, Provider, StatusUpdate
from messaging.queries import admin as job_runs
from messaging.queries.polling import (
    analyze_stale_tables,
    claim_due_messages,
    count_due_messages,
    hand_back_poll_claims,
    poll_start,
    release_poll_claim,
)
from messaging.queries.status import apply_status_updates, lock_unresolved
from messaging.services import Services
from messaging.settings import call_budget

log = logging.getLogger(__name__)

FINAL = (DELIVERED, FAILED)
# Messages claimed at once by one lane, when the provider takes many ids in one call...
BATCH_CHUNK = 5000
BATCH_LANES = 2
# ... and when it takes one id a call: the lanes are the parallel provider requests.
SINGLE_CHUNK = 10
SINGLE_LANES = 8
LEASE_MARGIN = 60.0  # seconds a claim outlives the provider calls of its chunk
POLL_JOB = "poll-status"  # its name in job_runs
LOGGED_ERRORS = 10  # provider errors logged one by one per run; the rest are counted


def status_batch_size(provider: Provider) -> int:
    """Return how many ids the provider takes in one status query (1 unless it says more)."""
    return max(1, int(provider.status_batch_size))


def single_chunk(provider: Provider, window: float) -> int:
    """Return how many ids a lane claims at once from a one-id-a-call provider: at most
    SINGLE_CHUNK, fewer when their calls would not fit in a lease as long as the window."""
    fits = int((window - LEASE_MARGIN) // call_budget(provider.settings))
    return max(1, min(SINGLE_CHUNK, fits))


def lease_seconds(provider: Provider, calls: int, window: float) -> float:
    """Return a claim's lease: its calls' budget and a margin, never longer than the window
    (else a run that died would hide its messages until they left the window)."""
    return min(calls * call_budget(provider.settings) + LEASE_MARGIN, window)


@dataclass
class PollSummary:
    checked: int = 0
    delivered: int = 0
    failed: int = 0
    in_flight: int = 0
    errors: int = 0
    seconds: float = 0.0
    database_error: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors and not self.database_error

    def add(self, other: "PollSummary") -> None:
        """Add another provider's run to this one."""
        for name in ("checked", "delivered", "failed", "in_flight", "errors", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.database_error = self.database_error or other.database_error

    def line(self) -> str:
        text = (
            f"poll-status: checked {self.checked}, delivered {self.delivered}, "
            f"failed {self.failed}, still in flight {self.in_flight}, "
            f"errors {self.errors} in {self.seconds:.2f}s"
        )
        if self.database_error:
            text += f"; stopped: {self.database_error}"
        return text


def due_count(
    services: Services, window_seconds: float | None = None, key: str | None = None
) -> int:
    """Count the messages a run starting now would ask about (of the provider of that
    configured name; None: of every provider that has a status query)."""
    window = window_seconds or services.config.delivery_status.window
    keys = [key] if key is not None else polled_providers(services)
    total = 0
    with services.db.transaction() as cur:
        for name in keys:
            owner = services.owner(name)
            run_start, window_start, _ = poll_start(cur, window, owner)
            total += count_due_messages(cur, window_start, run_start, owner)
    return total


def polled_providers(services: Services) -> list[str]:
    """The configured names of the providers that answer status queries."""
    return [c.key for c in services.providers if services.plugin_of(c.key).can_query_status]


def reconcile_then_poll(
    services: Services,
    window_seconds: float | None = None,
    *,
    report: Callable[[str], None] | None = None,
    progress: Callable[[int], Callable[[int], None] | None] | None = None,
) -> PollSummary | None:
    """Settle the batches a dead process left behind, drop receipts no message claimed
    within a day, then poll: one poll-status run.

    Reconcile goes first so that what it settles is polled in the same run. `report`
    hears reconcile's line when it settled something or could not run (the poll then
    goes ahead, and meets the same database failure itself). `progress(due)` may return
    the callback of a progress bar for a run of `due` messages. Returns None when the
    provider has no status query (nothing is polled or counted), else the summary,
    which is also added to the metrics.
    """
    started = datetime.now(UTC)
    lines = []
    try:
        reconciled = reconcile.reconcile(services)
        dropped = receipts.drop_unmatched(services.db)
    except MessagingError as err:
        lines.append(f"reconcile: stopped: {err.message}")
    else:
        if reconciled.batches or reconciled.errors or reconciled.receipts:
            lines.append(reconciled.line())
        if dropped:
            lines.append(f"receipts: dropped {dropped} never matched by a message within 24 h")
    for line in lines if report is not None else ():
        report(line)
    keys = polled_providers(services)
    if not keys:
        record_run(services, started, "nothing polled: no provider has a status query")
        return None
    on_chunk = None
    if progress is not None:
        try:
            due = due_count(services, window_seconds)
        except MessagingError:
            due = 0  # the run itself reports the database failure
        on_chunk = progress(due)
    summary = PollSummary()
    for key in keys:  # each provider asked about its own messages, one after the other
        summary.add(poll(services, window_seconds, progress=on_chunk, key=key))
        if summary.database_error:
            break
    metrics.record_poll_run(summary)
    record_run(services, started, summary.line())
    return summary


def record_run(services: Services, started: datetime, summary: str) -> None:
    """Keep this run as poll-status's last (the operator's page shows it); a database
    that cannot take it is logged, not fatal: the run itself is done."""
    try:
        with services.db.transaction() as cur:
            job_runs.record_run(cur, POLL_JOB, started, summary)
    except MessagingError as err:
        log.warning("poll-status: could not record the run: %s", err.message)


def poll(
    services: Services,
    window_seconds: float | None = None,
    *,
    lanes: int | None = None,
    chunk_size: int | None = None,
    progress: Callable[[int], None] | None = None,
    key: str | None = None,
) -> PollSummary:
    """Ask a provider (of that configured name; None: the primary) about each of its
    messages still `sent` within the window; store answers.

    `progress` is called with the number of messages each finished chunk covered.
    Provider errors are counted and logged and the run goes on; a database failure
    stops the run and is reported in `database_error`. A KeyboardInterrupt (Ctrl-C, or
    SIGTERM as the command maps it) hands the unfinished claims back and propagates.
    """
    began = time.perf_counter()
    provider = services.plugin_of(key)
    owner = services.owner(key)
    summary = PollSummary()
    if not provider.can_query_status:
        return summary
    window = window_seconds or services.config.delivery_status.window
    batch = status_batch_size(provider)
    if chunk_size is None:
        chunk_size = min(batch, BATCH_CHUNK) if batch > 1 else single_chunk(provider, window)
    if lanes is None:
        lanes = BATCH_LANES if batch > 1 else SINGLE_LANES
    lease = lease_seconds(provider, -(-chunk_size // batch), window)

    run = _Run(services, provider, owner, batch, chunk_size, lease, summary, progress)
    try:
        with services.db.transaction() as cur:
            analyzed = analyze_stale_tables(cur)
        if analyzed:
            log.info("analyzed %s: their statistics were stale", ", ".join(analyzed))
        with services.db.transaction() as cur:
            run.run_start, run.window_start, first_id = poll_start(cur, window, owner)
    except MessagingError as err:
        summary.database_error = err.message
    else:
        if first_id is not None:
            run.cursor = first_id - 1
            run.go(lanes)
    summary.seconds = time.perf_counter() - began
    if run.unlogged_errors:
        log.warning("%d more provider errors this run (not logged one by one)", run.unlogged_errors)
    log.debug("%s", summary.line())  # the command prints it
    return summary


class _Run:
    """One poll run's shared state: the clock, the totals, and the lanes' stop signal."""

    def __init__(self, services, provider, owner, batch, chunk_size, lease, summary, progress):
        self.db = services.db
        self.provider = provider
        self.owner = owner
        self.batch = batch
        self.chunk_size = chunk_size
        self.lease = lease
        self.summary = summary
        self.progress = progress
        self.run_start = self.window_start = None
        self.cursor = 0  # the last id looked at; the lanes claim after it, in turn
        self.held: set[int] = set()  # claims taken and not yet stored
        self.claim_lock = threading.Lock()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.logged_errors = 0
        self.unlogged_errors = 0

    def go(self, lanes: int) -> None:
        try:
            if lanes <= 1:
                self.lane()
                return
            threads = [
                threading.Thread(target=self.lane, name=f"poll-lane-{n}", daemon=True)
                for n in range(lanes)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            self.stop.set()
            self.hand_back()
            raise

    def hand_back(self) -> None:
        """End the leases of unfinished chunks now, so the next run polls their messages."""
        with self.claim_lock:  # no lane claims once this is taken: `stop` is set
            held = sorted(self.held)
            self.held.clear()
        if not held:
            return
        try:
            with self.db.transaction() as cur:
                hand_back_poll_claims(cur, held)
        except MessagingError as err:
            log.warning(
                "poll-status stopped; %d claim(s) left to their lease: %s", len(held), err.message
            )
            return
        log.warning("poll-status stopped; %d unfinished claim(s) handed back", len(held))

    def lane(self) -> None:
        """Claim, ask, store, until nothing is due or the run stops."""
        while not self.stop.is_set():
            try:
                claim_id, claimed = self.claim()
                if claim_id is None:
                    return
                answers, unanswered = self.ask([provider_id for _, provider_id in claimed])
                self.store(claim_id, claimed, answers, unanswered)
            except MessagingError as err:
                self.fail(err.message)
                return
            except Exception:
                log.exception("poll-status stopped by an unexpected error")
                self.fail("unexpected error (see the log)")
                return

    def claim(self) -> tuple[int | None, list[tuple[int, str]]]:
        """Claim the next chunk of due messages; (None, []) when none is left."""
        with self.claim_lock:
            if self.stop.is_set():
                return None, []
            with self.db.transaction() as cur:
                claim_id, claimed = claim_due_messages(
                    cur,
                    self.cursor,
                    self.window_start,
                    self.run_start,
                    self.lease,
                    self.chunk_size,
                    self.owner,
                )
            if claimed:
                self.cursor = claimed[-1][0]
                self.held.add(claim_id)
        return claim_id, claimed

    def fail(self, reason: str) -> None:
        with self.lock:
            self.summary.database_error = self.summary.database_error or reason
        self.stop.set()

    def ask(self, provider_ids: list[str]) -> tuple[dict[str, StatusUpdate], int]:
        """Query the provider in calls of `batch` ids; return answers by id and errors."""
        answers: dict[str, StatusUpdate] = {}
        errors = 0
        for start in range(0, len(provider_ids), self.batch):
            asked = provider_ids[start : start + self.batch]
            try:
                updates = self.provider.query_status(asked)
            except Exception as err:  # one call's failure must not stop the run
                errors += len(asked)
                self.log_error(asked, err)
                continue
            wanted = set(asked)
            for update in updates:
                if update.provider_id in wanted:
                    answers.setdefault(update.provider_id, update)
            missing = len(wanted - answers.keys())
            if missing:
                errors += missing
                self.log_error(asked, None, missing)
        return answers, errors

    def log_error(self, asked: list[str], err: Exception | None, missing: int = 0) -> None:
        with self.lock:
            if self.logged_errors >= LOGGED_ERRORS:
                self.unlogged_errors += 1
                return
            self.logged_errors += 1
        if err is None:
            log.warning(
                "status query to %s gave no answer for %d of %d ids",
                self.provider.name,
                missing,
                len(asked),
            )
            return
        # A ProviderError's message is ours; other errors may quote a URL with a secret.
        reason = err.message if isinstance(err, ProviderError) else type(err).__name__
        log.warning(
            "status query to %s for %d id(s) (first %s) failed: %s",
            self.provider.name,
            len(asked),
            asked[0],
            reason,
        )

    def store(self, claim_id, claimed, answers: dict[str, StatusUpdate], errors: int) -> None:
        """Store final answers for the messages still `sent`; end the claim's lease."""
        delivered = failed = in_flight = 0
        with self.db.transaction() as cur:
            unresolved = lock_unresolved(cur, [sms_id for sms_id, _ in claimed])
            final = []
            for _, provider_id in unresolved:
                answer = answers.get(provider_id)
                if answer is not None and answer.status in FINAL:
                    final.append(answer)
                    delivered += answer.status == DELIVERED
                    failed += answer.status == FAILED
                else:
                    in_flight += answer is not None
            if final:
                apply_status_updates(cur, final, "poll", self.owner)
            release_poll_claim(cur, claim_id)
        with self.claim_lock:
            self.held.discard(claim_id)
        with self.lock:
            summary = self.summary
            summary.checked += len(claimed)
            summary.delivered += delivered
            summary.failed += failed
            summary.in_flight += in_flight
            summary.errors += errors
            if self.progress is not None:
                self.progress(len(claimed))
