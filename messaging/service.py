"""The rules of sending and status lookup, and the transactions around them.

A send is recorded (sendlog, its recipients as batches, an Idempotency-Key's claim) in
one transaction, then handed to the provider by dispatch.py: by the request itself for
up to `smsProvider.waitSeconds`, and by the dispatchers (`flask dispatch`) for the rest.
"""

import functools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from messaging import dispatch, limits, webhooks
from messaging.errors import (
    Conflict,
    InvalidInput,
    MessagingError,
    NotFound,
    ServiceUnavailable,
)
from messaging.providers.base import FAILED, TEMPORARY
from messaging.queries.dispatch import (
    fail_ready_batches,
    finish_if_done,
    known_progress,
    lock_send,
    mark_cancelled,
    note_failure,
    opted_out_of,
    record_send,
    send_progress,
)
from messaging.queries.optouts import record_opted_out
from messaging.queries.sends import find_send
from messaging.queries.status import apply_status_updates, latest_message
from messaging.segments import count_segments, encoding, is_text, smart_encode
from messaging.services import Services
from messaging.settings import Limits

log = logging.getLogger(__name__)

DISABLED = ("", "SMS sending is disabled (smsProvider.enabled is false)")
CANCELLED = ("", "cancelled")
# sendAt further ahead than this is taken for a typo.
LONGEST_SCHEDULE = timedelta(days=366)


@dataclass(frozen=True)
class SendOutcome:
    ref_number: str
    valid_numbers: int
    invalid_numbers: int
    duplicate_numbers: int
    send_success: bool
    status_description: str
    messages_sent: int
    segments: int
    encoding: str  # "GSM-7" or "UCS-2", as the message went out
    queued_numbers: int = 0
    # scheduled, sending (goes on in the background), done or cancelled
    state: str = "done"
    # Valid numbers on the suppression list: not sent, each `failed` "opted out".
    opted_out_numbers: int = 0


def validate_message(message: str, max_segments: int) -> int:
    """Return the segment count of a message, or raise InvalidInput."""
    if not message:
        raise InvalidInput("message is empty")
    _storable(message, "message")
    segments = count_segments(message)
    if segments > max_segments:
        raise InvalidInput(
            f"message needs {segments} SMS parts; the limit is {max_segments} "
            "(smsProvider.maxMessageSegments)"
        )
    return segments


def _storable(text: str, name: str) -> None:
    """PostgreSQL text cannot hold NUL, UTF-8 no lone surrogate (a command line's undecodable
    bytes): refuse them rather than fail at the INSERT."""
    if "\x00" in text:
        raise InvalidInput(f"{name} contains a NUL character (\\u0000)")
    if not is_text(text):
        raise InvalidInput(f"{name} contains a lone surrogate, which is not text")


def parse_send_at(text: str | None) -> datetime | None:
    """Return `sendAt` (ISO 8601 with an offset) as an aware datetime, or raise InvalidInput."""
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise InvalidInput("sendAt must be a string: ISO 8601 with an offset")
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInput(
            f"sendAt {text[:40]!r} is not ISO 8601 (e.g. 2026-12-24T08:00:00+02:00)"
        ) from None
    if moment.tzinfo is None:
        raise InvalidInput("sendAt needs an offset (+02:00 or Z): the local time is ambiguous")
    if moment - datetime.now(UTC) > LONGEST_SCHEDULE:
        raise InvalidInput("sendAt is more than a year ahead")
    return moment


def send_sms(
    services: Services,
    message: str,
    msisdns: list[str],
    sender: str | None,
    originator: str,
    *,
    send_at: datetime | None = None,
    wait: float | None = None,
    on_record: Callable[[object, int], None] | None = None,
    on_recorded: Callable[[int], None] | None = None,
    callback_url: str | None = None,
    caller_limits: Limits | None = None,
) -> SendOutcome:
    """Record a send and its recipients, then work on it for up to `wait` seconds (None:
    smsProvider.waitSeconds; 0: answer at once; math.inf: until it is done).

    `caller_limits` (None: none, as for an operator's `flask send`) are the originator's
    (limits.for_caller): a send that would pass one raises LimitExceeded and is not
    recorded at all.

    Every status change of its messages is POSTed to `callback_url` (None:
    deliveryStatus.callbackUrl, if set), which is refused with InvalidInput unless it is
    http(s) on a public address (deliveryStatus.allowPrivateCallbacks lifts that).

    The send and every recipient (with its sms id) are committed before the first
    provider call, in batches the dispatchers share; what is not done by the deadline
    goes on in the background. `on_record(cur, sendlog_id)` runs inside the recording
    transaction (an Idempotency-Key's claim); `on_recorded(n)` after every n recipients
    this process settles (a progress bar). Once the send is recorded, a database failure
    is answered with its refNumber: the send exists, and may be partly at the provider.
    """
    settings = services.config.provider
    if settings.smart_encoding:
        message = smart_encode(message)  # what is counted, sent and stored
    segments = validate_message(message, settings.max_message_segments)
    if not msisdns:
        raise InvalidInput("msisdns is empty: give at least one number")
    if len(msisdns) > settings.max_recipients:
        raise InvalidInput(
            f"{len(msisdns)} recipients given; the limit is {settings.max_recipients} "
            "(smsProvider.maxRecipients)"
        )
    if sender:
        _storable(sender, "from")
    callback_url, callback_checked = _callback(services, callback_url)
    cleaned = services.normaliser.clean(msisdns)
    sender = sender or settings.sender
    stored_send_at = send_at.astimezone(UTC).replace(tzinfo=None) if send_at else None
    scheduled = send_at is not None and send_at > datetime.now(UTC)
    wait = settings.wait_seconds if wait is None else wait
    works_on_it = wait > 0 and not scheduled

    limited = limits.limited(caller_limits)
    bulk = len(cleaned.valid) >= settings.bulk_threshold
    record = functools.partial(
        record_send,
        originator=originator,
        message=message,
        sender=sender,
        recipients=cleaned.valid,
        segments=segments,
        bulk=bulk,
        send_at=stored_send_at,
        callback_url=callback_url,
        callback_checked=callback_checked,
    )

    def wakes(batches) -> bool:
        """A send of one batch that this request sends itself at once gains nothing from a
        dispatcher woken to race it for the batch (and the request, losing, would poll until
        the dispatcher is done); one left behind is found within a second."""
        return not works_on_it or len(batches) > 1

    sendlog_id = claimed = None
    if cleaned.valid and settings.enabled and not (limited or on_record):
        # The usual send: recorded by one statement, which commits by itself and reads the
        # suppression list as it goes; none of its numbers may be on it (S2, K1). A batch
        # this request sends itself at once is recorded claimed by it (S2).
        batches = provider_batches(services, cleaned.valid, list(range(len(cleaned.valid))))
        claim = dispatch.claim_at_record(services) if works_on_it and len(batches) == 1 else None
        try:
            with services.db.statement() as cur:
                sendlog_id, _, _, suppressed, claimed_row = record(
                    cur, batches=batches, notify=wakes(batches), unless_opted_out=True, claim=claim
                )
        except MessagingError:
            if claim is not None:  # recorded or not: its batch must not wait for the lease
                dispatch.give_back_claim(services, claim[0])
            raise
        if claimed_row is not None:
            claimed = dispatch.Batch(*claimed_row, lease=claim[0])
        # Nobody else sees the send before it commits: its progress is what was written, and
        # reading it back would cost every send a statement (S2, K1).
        progress = _recorded(len(cleaned.valid), len(batches), 0, scheduled)
    elif cleaned.valid:
        # Read as of this statement either way: no need to hold the transaction open for it.
        with services.db.statement() as cur:
            suppressed = opted_out_of(cur, cleaned.valid)
    else:
        suppressed = set()
    if sendlog_id is None:
        msisdns, positions = _to_send(cleaned.valid, suppressed)
        with services.db.transaction() as cur:
            if limited:
                # Before the send is recorded, so a refusal rolls back little; what counts is
                # what would be sent (the opted-out are recorded, never sent).
                limits.charge(cur, originator, caller_limits, msisdns, services.normaliser)
            batches = provider_batches(services, msisdns, positions)
            sendlog_id, senttime, ids, *_ = record(cur, batches=batches, notify=wakes(batches))
            left_out = [(m, i) for m, i in zip(cleaned.valid, ids, strict=True) if m in suppressed]
            opted_out, opted_out_ids = [m for m, _ in left_out], [i for _, i in left_out]
            if opted_out:
                record_opted_out(
                    cur, sendlog_id, senttime, message, segments, opted_out, opted_out_ids
                )
            if on_record is not None:
                on_record(cur, sendlog_id)
            if not settings.enabled:
                note_failure(cur, sendlog_id, DISABLED[1])
                fail_ready_batches(cur, sendlog_id, *DISABLED, kind=TEMPORARY, source="send")
            if not settings.enabled or not msisdns:
                finish_if_done(cur, sendlog_id)  # nothing to send
                progress = send_progress(cur, sendlog_id)
            else:
                progress = _recorded(len(msisdns), len(batches), len(opted_out), scheduled)
    try:
        if works_on_it:
            deadline = None if math.isinf(wait) else time.monotonic() + wait
            progress = dispatch.work_on_send(
                services,
                sendlog_id,
                deadline,
                on_recorded,
                progress=progress,
                claimed=claimed,
            )
    except ServiceUnavailable as err:
        log.error("send %s: %s while sending; it goes on without this request", sendlog_id, err)
        raise ServiceUnavailable(
            f"{err.message} during send {sendlog_id}: it is recorded, and what is not sent "
            f"yet goes on once the database is back; see GET /sends/{sendlog_id}",
            refNumber=str(sendlog_id),
        ) from None
    return _outcome(sendlog_id, progress, cleaned, message, scheduled)


def _to_send(msisdns: list[str], opted_out: set[str]) -> tuple[list[str], list[int]]:
    """The recipients not opted out, and their positions among all of them."""
    kept = [(m, n) for n, m in enumerate(msisdns) if m not in opted_out]
    return [m for m, _ in kept], [n for _, n in kept]


def _callback(services: Services, url: str | None) -> tuple[str | None, bool]:
    """Return where a send's status events go and whether that is the caller's choice (its
    address is checked again before each delivery); raise InvalidInput for a bad one."""
    settings = services.config.delivery_status
    if url is None or url == "":
        return settings.callback_url, False
    if not settings.callback_secret:
        raise InvalidInput(
            "callbackUrl cannot be used here: webhooks are signed and "
            "deliveryStatus.callbackSecret is not set"
        )
    return webhooks.check_callback_url(url, settings.allow_private_callbacks), True


def batch_size(services: Services) -> int:
    return min(services.config.provider.max_batch_size, services.provider.max_batch_size)


def provider_batches(
    services: Services, msisdns: list[str], ids: list[int]
) -> list[tuple[list[str], list[int]]]:
    """Split recipients into provider batches: numbers served by the same providers
    together (routing rules), as many a batch as the largest of them takes in a request
    (a provider taking fewer splits the batch when it gets it)."""
    providers = services.providers
    if not providers.several:
        groups = {(): (msisdns, ids)}
        sizes = {(): batch_size(services)}
    else:
        everything = all(c.routing.everything for c in providers)
        groups = {}
        for msisdn, sms_id in zip(msisdns, ids, strict=True):
            key = () if everything else providers.route_key(msisdn)
            group = groups.setdefault(key, ([], []))
            group[0].append(msisdn)
            group[1].append(sms_id)
        enabled = [c for c in providers if c.enabled] or [providers.primary]
        sizes = {
            key: max(
                c.batch_size for c in (enabled if not key else [providers.get(k) for k in key])
            )
            for key in groups
        }
    batches = []
    for key, (numbers, sms_ids) in groups.items():
        size = sizes[key]
        batches += [
            (numbers[start : start + size], sms_ids[start : start + size])
            for start in range(0, len(numbers), size)
        ]
    return batches


def _recorded(queued: int, batches: int, opted_out: int, scheduled: bool) -> dict:
    """The progress of a send just recorded with these recipients to send, in these
    batches, and these opted out."""
    due_now = 0 if scheduled else batches
    return known_progress("sending", queued + opted_out, 0, queued, due_now, opted_out=opted_out)


def _outcome(sendlog_id, progress, cleaned, message, scheduled=False) -> SendOutcome:
    """What a caller is told of a send of `message` (the text as sent and stored): final
    once it is done, else what is known so far."""
    status = progress["status"]
    if status != "sending":
        success = status == "success"
        description = progress["description"] or ""
        state = "cancelled" if status == "cancelled" else "done"
    else:
        success = progress["failure"] is None
        queued = progress["queued"]
        description = progress["failure"] or (
            f"{queued} of {progress['quantity']} recipients "
            + ("scheduled" if scheduled else "queued, still being sent")
            + f"; see GET /sends/{sendlog_id}"
        )
        if progress["last_error"] and not progress["failure"]:
            description += f" (the provider refused for now: {progress['last_error']})"
        state = "scheduled" if scheduled else "sending"
    return SendOutcome(
        ref_number=str(sendlog_id),
        valid_numbers=len(cleaned.valid),
        invalid_numbers=cleaned.invalid,
        duplicate_numbers=cleaned.duplicates,
        send_success=success,
        status_description=description,
        messages_sent=progress["accepted"],
        segments=count_segments(message),
        encoding=encoding(message),
        queued_numbers=progress["queued"] if status == "sending" else 0,
        state=state,
        opted_out_numbers=progress["opted_out"],
    )


def answer_for_send(services: Services, sendlog_id: int, msisdns: list[str]) -> SendOutcome:
    """Rebuild the answer of a finished send (a repeated Idempotency-Key whose first answer
    was never stored); raise Conflict, naming the send, while it is still running."""
    with services.db.transaction() as cur:
        progress = send_progress(cur, sendlog_id)
        found = find_send(cur, sendlog_id)
    if progress is None or found is None:
        raise NotFound(f"the send of this Idempotency-Key ({sendlog_id}) no longer exists")
    if progress["status"] == "sending":
        raise Conflict(
            f"the request with this Idempotency-Key is still being sent as send {sendlog_id}; "
            f"see GET /sends/{sendlog_id}",
            refNumber=str(sendlog_id),
        )
    cleaned = services.normaliser.clean(msisdns)
    return _outcome(sendlog_id, progress, cleaned, found["message"] or "")


def cancel_send(services: Services, sendlog_id: int, owner: str | None = None) -> dict:
    """Stop what of a send has not been handed over: those recipients fail, "cancelled".

    A batch already at the provider finishes as it will. Raises NotFound for an unknown
    send or one not of `owner` (unless None), and Conflict for one already finished.
    Returns the send's progress.
    """
    with services.db.transaction() as cur:
        lock_send(cur, sendlog_id)
        if find_send(cur, sendlog_id, owner) is None:
            raise NotFound(f"no send with refNumber {sendlog_id}")
        if mark_cancelled(cur, sendlog_id):
            fail_ready_batches(cur, sendlog_id, *CANCELLED, kind=TEMPORARY, source="cancel")
            finish_if_done(cur, sendlog_id)
        progress = send_progress(cur, sendlog_id)
    if progress is None:
        raise NotFound(f"no send with refNumber {sendlog_id}")
    if progress["status"] not in ("sending", "cancelled"):
        raise Conflict(f"send {sendlog_id} is already finished ({progress['status']})")
    return progress


def normalize(services: Services, msisdns: list[str]) -> list[str]:
    """Return the valid numbers, normalised, first occurrence kept."""
    return services.normaliser.clean(msisdns).valid


def message_status(services: Services, msisdn: str, owner: str | None = None) -> str | None:
    """Return the newest message's status for a number (among the sends of `owner`, unless
    None); ask the provider once if it is in flight."""
    number = services.normaliser.normalise(msisdn) or msisdn
    if "\x00" in number:  # no stored number holds one
        return None
    with services.db.transaction() as cur:
        row = latest_message(cur, number, owner)
    if row is None:
        return None
    _, status, provider_id, carrier = row
    provider = services.plugin_of(carrier)
    if status != "sent" or not provider_id or not provider.can_query_status:
        return status
    try:
        updates = provider.query_status([provider_id])
    except Exception as err:  # the stored answer is still true, only not fresh
        log.warning("status query for %s failed: %s", provider_id, err)
        return status
    final = [u for u in updates if u.provider_id == provider_id and u.status != "sent"]
    if not final:
        return status
    with services.db.transaction() as cur:
        apply_status_updates(cur, final, "poll", services.owner(carrier))
        row = latest_message(cur, number, owner)
    return row[1] if row else FAILED
