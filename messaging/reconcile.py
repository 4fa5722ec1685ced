"""reconcile: settle the recipients a send left `queued` when its process died mid-send.

A send holds every recipient, with its sms id, in `pending_recipients` before the first
provider call, writes their sms rows batch by batch as the provider answers, and before
each call records the highest sms id of the batch going out (`sendlog.dispatchedthrough`)
and when (`sendlog.dispatchedat`). A worker killed mid-send (SIGKILL, OOM, power) leaves
its send `sending` and some recipients pending (`queued`). For a send silent longer than
`older_than` seconds, reconcile first writes those recipients' sms rows as `queued`, then:

- marks the queued recipients above the mark `failed`, reason "interrupted before
  dispatch": they never reached the provider;
- for the queued recipients at or below the mark (the batch in flight when the process
  died, which may have reached the provider): asks the provider by our client reference
  when it can look sends up (a plugin with `find_sends`, below), and stores its answer;
  otherwise marks them `failed`, reason "provider outcome unknown";
- closes the send (`failed`, with a description counting both kinds).

It never resends: a caller who wants the message delivered sends it again, knowingly.
Every change is the send path's own guarded update (only rows still `queued` change,
the sendlog counters move in the same statement), so two reconcile runs at once, or a
late answer of the dead send, never count a recipient twice.

The provider hook, optional: `find_sends(recipients: list[Recipient]) -> list[SendResult]`
returns a result for each recipient the provider can answer for (accepted with its
provider id, or not accepted with a reason) and leaves out those it cannot; they are
marked "provider outcome unknown". If the lookup fails, those recipients stay `queued`
and the next run asks again.
"""

import logging
from dataclasses import dataclass

from messaging.errors import MessagingError
from messaging.providers.base import Recipient
from messaging.providers.http import OUTCOME_UNKNOWN
from messaging.queries.reconcile import (
    finish_interrupted_send,
    interrupted_sends,
    queued_messages,
    write_pending_as_queued,
)
from messaging.queries.sends import mark_failed, mark_sent
from messaging.queries.status import apply_early_receipts
from messaging.service import Services

log = logging.getLogger(__name__)

NEVER_DISPATCHED = "interrupted before dispatch"
# A send is silent at most one provider call (timeout x attempts, plus back-off) while it
# works; poll-status reconciles sends silent this long, or twice that call if longer.
DEFAULT_OLDER_THAN = 300.0
BACKOFF_ALLOWANCE = 30.0


def default_older_than(services: Services) -> float:
    """Seconds of silence after which a send is taken for interrupted (poll-status's default)."""
    settings = services.config.provider
    call = settings.timeout * (settings.retries + 1) + BACKOFF_ALLOWANCE * settings.retries
    return max(DEFAULT_OLDER_THAN, 2 * call)


@dataclass
class ReconcileSummary:
    sends: int = 0  # interrupted sends found
    closed: int = 0  # of those, closed by this run
    never_dispatched: int = 0
    outcome_unknown: int = 0
    found_sent: int = 0  # the provider had them: now `sent`
    found_failed: int = 0  # the provider had refused them: now `failed`
    errors: int = 0  # provider lookups that failed (recipients left `queued`)

    @property
    def changed(self) -> int:
        return self.never_dispatched + self.outcome_unknown + self.found_sent + self.found_failed

    def line(self) -> str:
        text = (
            f"reconcile: {self.sends} interrupted send(s), {self.closed} closed; "
            f"{self.never_dispatched} recipients never dispatched, "
            f"{self.outcome_unknown} provider outcome unknown"
        )
        if self.found_sent or self.found_failed:
            text += f", provider lookup: {self.found_sent} sent, {self.found_failed} failed"
        if self.errors:
            text += f", {self.errors} lookups failed (left queued)"
        return text


def reconcile(services: Services, older_than: float | None = None) -> ReconcileSummary:
    """Settle every send silent longer than `older_than` seconds that never finished.

    Raises ServiceUnavailable when the database cannot be reached.
    """
    if older_than is None:
        older_than = default_older_than(services)
    summary = ReconcileSummary()
    with services.db.transaction() as cur:
        interrupted = interrupted_sends(cur, older_than)
    summary.sends = len(interrupted)
    for sendlog_id, dispatched_through in interrupted:
        _settle(services, sendlog_id, dispatched_through or 0, summary)
    if summary.sends:
        log.warning("%s", summary.line())
    return summary


def _settle(services: Services, sendlog_id: int, dispatched_through: int, summary) -> None:
    """Settle one interrupted send's queued recipients, then close it."""
    db = services.db
    with db.transaction() as cur:
        write_pending_as_queued(cur, sendlog_id)
        queued = queued_messages(cur, sendlog_id)
        never = [sms_id for sms_id, _ in queued if sms_id > dispatched_through]
        if never:
            summary.never_dispatched += _fail(cur, sendlog_id, never, NEVER_DISPATCHED)
    maybe = [
        Recipient(msisdn, str(sms_id)) for sms_id, msisdn in queued if sms_id <= dispatched_through
    ]
    if maybe:
        _settle_maybe_dispatched(services, sendlog_id, maybe, summary)
    with db.transaction() as cur:
        closed = finish_interrupted_send(cur, sendlog_id, NEVER_DISPATCHED, OUTCOME_UNKNOWN)
    summary.closed += closed


def _settle_maybe_dispatched(services, sendlog_id, recipients, summary) -> None:
    """Ask the provider about a batch that may have reached it, if it can say; store the answer."""
    provider = services.provider
    find_sends = getattr(provider, "find_sends", None)
    answers = {}
    if find_sends is not None:
        try:
            answers = {result.reference: result for result in find_sends(recipients)}
        except Exception as err:  # ask again next run rather than guess
            reason = err.message if isinstance(err, MessagingError) else type(err).__name__
            log.warning(
                "reconcile: send %s: %s lookup of %d recipients failed: %s",
                sendlog_id,
                provider.name,
                len(recipients),
                reason,
            )
            summary.errors += len(recipients)
            return
    sent, refused, unknown = [], [], []
    for recipient in recipients:
        answer = answers.get(recipient.reference)
        if answer is None:
            unknown.append(int(recipient.reference))
        elif answer.accepted and answer.provider_id:
            sent.append(answer)
        else:
            refused.append(answer)
    with services.db.transaction() as cur:
        if sent:
            summary.found_sent += mark_sent(
                cur,
                sendlog_id,
                [int(answer.reference) for answer in sent],
                [answer.provider_id for answer in sent],
                [answer.segments for answer in sent],
            )
            apply_early_receipts(cur, [answer.provider_id for answer in sent])
        if refused:
            summary.found_failed += mark_failed(
                cur,
                sendlog_id,
                [int(answer.reference) for answer in refused],
                [answer.error_code or "" for answer in refused],
                [answer.reason or "Rejected" for answer in refused],
            )
        if unknown:
            summary.outcome_unknown += _fail(cur, sendlog_id, unknown, OUTCOME_UNKNOWN)


def _fail(cur, sendlog_id, sms_ids, reason) -> int:
    return mark_failed(cur, sendlog_id, sms_ids, [""] * len(sms_ids), [reason] * len(sms_ids))
