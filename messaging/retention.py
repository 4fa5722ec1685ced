"""Retention: `flask purge --older-than 90d` (and poll-status, given
deliveryStatus.retentionDays) deletes messages sent before then, their status events, the
sends left empty, and what else ages out (queries/retention.py AGED_TABLES).

It works in short transactions of at most MESSAGES_PER_BATCH messages that skip whatever
another transaction holds, so sending, polling and receipts go on meanwhile, and every
send it keeps has counters that match the messages it still has. What was skipped is
taken by the next run.
"""

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from messaging.queries.retention import (
    AGED_TABLES,
    delete_aged_rows,
    delete_empty_sends,
    delete_old_messages,
    lock_old_sends,
)

log = logging.getLogger(__name__)

MESSAGES_PER_BATCH = 5000
SENDS_PER_BATCH = 1000
DAY = 86400.0
WEBHOOKS = AGED_TABLES[0][2]


@dataclass
class PurgeSummary:
    cutoff: datetime  # aware UTC: what is older than this went
    messages: int = 0
    events: int = 0
    sends: int = 0
    aged: Counter = field(default_factory=Counter)  # what the line calls them -> rows
    seconds: float = 0.0

    def line(self) -> str:
        aged = "".join(f", {rows:,} {name}" for name, rows in sorted(self.aged.items()))
        return (
            f"purge: removed {self.messages:,} messages, {self.events:,} status events, "
            f"{self.sends:,} sends{aged} from before {self.cutoff:%Y-%m-%d %H:%M:%S} UTC "
            f"in {self.seconds:.1f}s"
        )


def purge(services, older_than_seconds: float) -> PurgeSummary:
    """Delete what is older than that many seconds; return what went."""
    began = time.perf_counter()
    summary = PurgeSummary(datetime.now(UTC) - timedelta(seconds=older_than_seconds))
    cutoff = summary.cutoff.replace(tzinfo=None)  # sendlog and sms keep naive UTC
    db = services.db
    after = 0  # sends up to this id are done with
    while True:
        with db.transaction() as cur:
            sends = lock_old_sends(cur, cutoff, after, SENDS_PER_BATCH)
            if not sends:
                break
            messages, events, last = delete_old_messages(cur, sends, cutoff, MESSAGES_PER_BATCH)
            # A full batch may have left messages of its last send: that one goes again.
            done = [s for s in sends if messages < MESSAGES_PER_BATCH or s < last]
            if done:
                emptied, hooks = delete_empty_sends(cur, done)
                summary.sends += emptied
                summary.aged[WEBHOOKS] += hooks
                after = done[-1]
        summary.messages += messages
        summary.events += events
    while True:  # messages of no send (the original's rows may lack one)
        with db.transaction() as cur:
            messages, events, _ = delete_old_messages(cur, None, cutoff, MESSAGES_PER_BATCH)
        summary.messages += messages
        summary.events += events
        if messages < MESSAGES_PER_BATCH:
            break
    for table, column, name in AGED_TABLES:
        while True:
            with db.transaction() as cur:
                rows = delete_aged_rows(cur, table, column, summary.cutoff, MESSAGES_PER_BATCH)
            summary.aged[name] += rows
            if rows < MESSAGES_PER_BATCH:
                break
    summary.seconds = time.perf_counter() - began
    log.info("%s", summary.line())
    return summary
