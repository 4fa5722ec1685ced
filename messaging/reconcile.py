"""reconcile: settle batches whose dispatcher died while they were at the provider.

A batch is claimed under a lease before its provider call (dispatch.py). A dispatcher, or
a request working on its own send, that dies mid-call (SIGKILL, OOM, power) leaves its
batch `sending` past the lease. Such a batch may have reached the provider, so it is
never resent: its recipients are looked up by our client reference where the plugin can
(`find_sends`) and otherwise recorded `failed`, "provider outcome unknown". Batches never
handed over are not reconcile's business: they are work, and a dispatcher sends them.

It also applies the receipts kept for messages that exist by now: they overtook a batch
whose writer died between writing it and applying them.

Dispatchers settle abandoned batches themselves as they find them; `flask reconcile`
(also run by poll-status) does it without one, and with `--older-than` takes batches
claimed longer ago than that for abandoned even before their lease ends (for an operator
who knows their process is gone). Every change is the dispatcher's own guarded write, so
two runs at once, or a late answer of the dead process, never count a recipient twice.
"""

import logging
from collections import Counter
from dataclasses import dataclass

from messaging.dispatch import Batch, Worker, worker_name
from messaging.queries.dispatch import claim_abandoned
from messaging.queries.status import apply_early_receipts, arrived_early_receipts
from messaging.services import Services

log = logging.getLogger(__name__)


@dataclass
class ReconcileSummary:
    batches: int = 0  # abandoned batches settled
    found_sent: int = 0  # the provider had them: now `sent`
    found_failed: int = 0  # the provider had refused them: now `failed`
    outcome_unknown: int = 0
    errors: int = 0  # batches whose lookup failed (kept, asked again next run)
    receipts: int = 0  # messages changed by kept receipts their batch's writer left

    @property
    def changed(self) -> int:
        return self.found_sent + self.found_failed + self.outcome_unknown

    def line(self) -> str:
        text = (
            f"reconcile: {self.batches} abandoned batch(es) settled; "
            f"{self.outcome_unknown} recipients provider outcome unknown"
        )
        if self.found_sent or self.found_failed:
            text += f", provider lookup: {self.found_sent} sent, {self.found_failed} failed"
        if self.errors:
            text += f", {self.errors} lookups failed (kept for the next run)"
        if self.receipts:
            text += f"; {self.receipts} messages updated by receipts kept for them"
        return text


def reconcile(services: Services, older_than: float | None = None) -> ReconcileSummary:
    """Settle every abandoned batch: lease run out, or claimed more than `older_than` s ago.

    Raises ServiceUnavailable when the database cannot be reached.
    """
    worker = Worker(services, name=f"{worker_name()}:reconcile")
    summary = ReconcileSummary()
    failed_lookups: set[int] = set()
    while True:
        with services.db.transaction() as cur:
            row = claim_abandoned(cur, worker.name, worker.lease, None, older_than)
        if row is None:
            break
        batch = Batch(*row, lease=worker.name, abandoned=True)
        if batch.id in failed_lookups:  # its lease was renewed for the next run
            break
        settled: Counter | None = worker.settle_abandoned(batch)
        if settled is None:
            summary.errors += 1
            failed_lookups.add(batch.id)
            continue
        summary.batches += 1
        summary.found_sent += settled["sent"]
        summary.found_failed += settled["failed"]
        summary.outcome_unknown += settled["unknown"]
    for configured in services.providers:
        owner = services.owner(configured.key)
        with services.db.transaction() as cur:
            arrived = arrived_early_receipts(cur, owner)
            if arrived:
                summary.receipts += apply_early_receipts(cur, arrived, owner)
    if summary.batches or summary.errors or summary.receipts:
        log.warning("%s", summary.line())
    return summary
