"""The rules of sending and status lookup, and the transactions around provider calls."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from messaging import metrics
from messaging.config import Config
from messaging.db import Database
from messaging.errors import Conflict, InvalidInput, NotFound, ProviderError, ServiceUnavailable
from messaging.msisdn import Normaliser
from messaging.providers.base import FAILED, Provider, Recipient
from messaging.queries.sends import count_accepted, find_send, finish_send, record_batch, start_send
from messaging.queries.status import apply_status_updates, latest_message
from messaging.segments import count_segments, encoding, is_text, smart_encode

log = logging.getLogger(__name__)

NO_ANSWER = ("", "No answer from the provider for this recipient")
DISABLED = ("", "SMS sending is disabled (smsProvider.enabled is false)")
UNEXPECTED = ("", "Provider call failed unexpectedly")
# How long a write after a provider call keeps trying while the database is away.
WRITE_RETRY_SECONDS = 15.0
CLOSED_BY_RECONCILE = (
    "",
    "Send closed by reconcile as interrupted while a batch was at the provider",
)


@dataclass
class Services:
    """What a request, a command or `flask shell` needs: built once per process."""

    config: Config
    db: Database
    provider: Provider
    normaliser: Normaliser


@dataclass(frozen=True)
class Send:
    """What every sms row of a send repeats."""

    id: int
    senttime: datetime
    message: str
    segments: int


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


def send_sms(
    services: Services,
    message: str,
    msisdns: list[str],
    sender: str | None,
    originator: str,
    on_batch: Callable[[int], None] | None = None,
    on_record: Callable[[object, int], None] | None = None,
) -> SendOutcome:
    """Record a send and its recipients, hand them to the provider in batches, record each outcome.

    The send and every recipient (with its sms id) are committed before the first
    provider call; each recipient's sms row is written with the provider's answer for
    its batch. No transaction is open while the provider is working.
    `on_batch(size)` is called after each batch is recorded (a progress bar's hook);
    `on_record(cur, sendlog_id)` inside the transaction that records the send (an
    Idempotency-Key's claim). Once the send is recorded, a database failure is answered
    with its refNumber: the send exists, and may be partly at the provider.
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
    cleaned = services.normaliser.clean(msisdns)
    sender = sender or settings.sender

    first_batch = _batch_size(services) if settings.enabled else 0
    with services.db.transaction() as cur:
        sendlog_id, senttime, ids = start_send(
            cur,
            originator=originator,
            message=message,
            sender=sender,
            msisdns=cleaned.valid,
            segments=segments,
            first_batch=first_batch,
        )
        if on_record is not None:
            on_record(cur, sendlog_id)
    send = Send(sendlog_id, senttime, message, segments)
    try:
        sent, description, success = _send_recorded(
            services, send, cleaned.valid, ids, sender, on_batch
        )
    except ServiceUnavailable as err:
        log.error("send %s: %s while sending; stopped", sendlog_id, err.message)
        raise ServiceUnavailable(
            f"{err.message} during send {sendlog_id}: it is recorded, and what the provider "
            f"took is kept; see GET /sends/{sendlog_id} once the database is back",
            refNumber=str(sendlog_id),
        ) from None
    return SendOutcome(
        ref_number=str(sendlog_id),
        valid_numbers=len(cleaned.valid),
        invalid_numbers=cleaned.invalid,
        duplicate_numbers=cleaned.duplicates,
        send_success=success,
        status_description=description,
        messages_sent=sent,
        segments=segments,
        encoding=encoding(message),
    )


def _send_recorded(services, send, numbers, ids, sender, on_batch) -> tuple[int, str, bool]:
    """Hand a recorded send to the provider; return (accepted, description, success)."""
    settings = services.config.provider
    recipients = [
        Recipient(number, str(sms_id)) for number, sms_id in zip(numbers, ids, strict=True)
    ]
    sent = 0
    if not recipients:
        failure = ProviderError("", "No valid numbers to send to")
    elif not settings.enabled:
        failure = ProviderError(*DISABLED)
        _record_failed(services.db, send, recipients, *DISABLED)
    else:
        failure, sent = _dispatch(services, send, recipients, sender, on_batch)

    rejected = len(recipients) - sent
    metrics.record_messages(services.provider.name, sent=sent, failed=rejected)
    if failure is not None:
        description = failure.message
    elif rejected:
        description = f"{rejected} of {len(recipients)} recipients rejected by the provider"
    else:
        description = ""
    success = failure is None and sent > 0
    status = "success" if success else "failed"
    _write(services.db, lambda cur: finish_send(cur, send.id, status, description))
    return sent, description, success


def answer_for_send(services: Services, sendlog_id: int, msisdns: list[str]) -> SendOutcome:
    """Rebuild the answer of a finished send (a repeated Idempotency-Key whose first answer
    was never stored); raise Conflict, naming the send, while it is still running."""
    with services.db.transaction() as cur:
        found = find_send(cur, sendlog_id)
        accepted = count_accepted(cur, sendlog_id)
    if found is None:
        raise NotFound(f"the send of this Idempotency-Key ({sendlog_id}) no longer exists")
    if found["status"] == "sending":
        raise Conflict(
            f"the request with this Idempotency-Key is still being sent as send {sendlog_id}; "
            f"see GET /sends/{sendlog_id}",
            refNumber=str(sendlog_id),
        )
    cleaned = services.normaliser.clean(msisdns)
    return SendOutcome(
        ref_number=str(sendlog_id),
        valid_numbers=len(cleaned.valid),
        invalid_numbers=cleaned.invalid,
        duplicate_numbers=cleaned.duplicates,
        send_success=found["status"] == "success",
        status_description=found["description"] or "",
        messages_sent=accepted,
        segments=count_segments(found["message"] or ""),
        encoding=encoding(found["message"] or ""),
    )


def _dispatch(
    services, send, recipients, sender, on_batch=None
) -> tuple[ProviderError | None, int]:
    """Send batch by batch; after a whole-request failure, fail the rest with its reason.

    Returns the whole-request failure (if any) and how many recipients were accepted.
    Each batch's highest id is recorded as dispatched before its call, in the commit
    before it (reconcile's watermark: no extra transaction per batch).
    """
    provider = services.provider
    failure = None
    sent = 0
    for batch, following in _batches(recipients, _batch_size(services), on_batch):
        if failure is not None:
            _record_failed(services.db, send, batch, failure.code, failure.description)
            continue
        began = time.perf_counter()
        try:
            with metrics.provider_call(provider.name, "send"):
                results = provider.send_batch(batch, send.message, sender)
        except ProviderError as err:
            log.warning(
                "send %s: provider %s refused a batch of %d: %s",
                send.id,
                provider.name,
                len(batch),
                err.message,
            )
            failure = err
            _record_failed(services.db, send, batch, err.code, err.description)
            continue
        except Exception:
            log.exception("send %s: provider %s failed unexpectedly", send.id, provider.name)
            failure = ProviderError(*UNEXPECTED)
            _record_failed(services.db, send, batch, *UNEXPECTED)
            continue
        log.info(
            "send %s: batch of %d to %s in %.3fs",
            send.id,
            len(batch),
            provider.name,
            time.perf_counter() - began,
        )
        accepted, still_sending = _record_results(services.db, send, batch, results, following)
        sent += accepted
        if not still_sending:  # reconcile took it for dead and settled the rest: stop
            log.warning("send %s: closed by reconcile while at the provider; stopping", send.id)
            return ProviderError(*CLOSED_BY_RECONCILE), sent
    return failure, sent


def _batch_size(services) -> int:
    return min(services.config.provider.max_batch_size, services.provider.max_batch_size)


def _batches(recipients, size, on_batch):
    """Yield (batch of `size`, the next batch's highest sms id or None); report each batch
    to `on_batch` once the caller is done with it. Ids ascend with the recipients."""
    for start in range(0, len(recipients), size):
        batch = recipients[start : start + size]
        following = recipients[start + size : start + 2 * size]
        yield batch, int(following[-1].reference) if following else None
        if on_batch is not None:
            on_batch(len(batch))


def _record_results(
    db: Database, send: Send, batch, results, next_through=None
) -> tuple[int, bool]:
    """Write one batch's answers (and the next batch's dispatch mark); return how many
    recipients were accepted and whether the send is still ours to go on with."""
    by_reference = {result.reference: result for result in results}
    outcomes = []
    for recipient in batch:
        result = by_reference.get(recipient.reference)
        if result is None:
            outcome = (None, send.segments, *NO_ANSWER)
        elif result.accepted and result.provider_id:
            outcome = (result.provider_id, result.segments or send.segments, None, None)
        else:
            outcome = (None, send.segments, result.error_code or "", result.reason or "Rejected")
        outcomes.append((recipient.reference, recipient.msisdn, *outcome))
    return _write(db, lambda cur: record_batch(cur, send, outcomes, next_through))


def _record_failed(db: Database, send: Send, recipients, code, reason) -> None:
    outcomes = [(r.reference, r.msisdn, None, send.segments, code, reason) for r in recipients]
    _write(db, lambda cur: record_batch(cur, send, outcomes))


def _write(db: Database, write: Callable):
    """Run `write(cur)` in a transaction, again while the database is briefly away: what
    the provider answered must not be lost to a blip. Each write is safe to repeat (only
    rows still `queued` change, and the counters move by the rows changed)."""
    deadline = time.monotonic() + WRITE_RETRY_SECONDS
    delay = 0.1
    while True:
        try:
            with db.transaction() as cur:
                return write(cur)
        except ServiceUnavailable as err:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s; writing again in %.1fs", err.message, delay)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


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
    _, status, provider_id = row
    provider = services.provider
    if status != "sent" or not provider_id or not provider.can_query_status:
        return status
    try:
        with metrics.provider_call(provider.name, "status"):
            updates = provider.query_status([provider_id])
    except Exception as err:  # the stored answer is still true, only not fresh
        log.warning("status query for %s failed: %s", provider_id, err)
        return status
    final = [u for u in updates if u.provider_id == provider_id and u.status != "sent"]
    if not final:
        return status
    with services.db.transaction() as cur:
        apply_status_updates(cur, final)
        row = latest_message(cur, number, owner)
    return row[1] if row else FAILED
