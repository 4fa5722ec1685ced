"""Reports over sends: one send and its recipients' delivery status, paged
(`GET /sends/<refNumber>`), one message with its status events
(`GET /sends/<refNumber>/messages/<msisdn>`), and message totals over a time range
(`flask stats`)."""

from dataclasses import dataclass
from datetime import datetime

from messaging.db import Database
from messaging.errors import InvalidInput, NotFound
from messaging.queries.dispatch import send_progress
from messaging.queries.events import message_events
from messaging.queries.reports import status_totals
from messaging.queries.sends import count_recipients, find_message, find_send, send_recipients
from messaging.services import Services

MAX_ID = 2**63 - 1  # sendlog.id is a BIGINT
RECIPIENT_COLUMNS = (
    "msisdn",
    "status",
    "provider_id",
    "error_code",
    "reason",
    "failure_kind",
    "status_time",
    "provider",
)
MESSAGE_COLUMNS = ("id", *RECIPIENT_COLUMNS)
EVENT_COLUMNS = (
    "seq",
    "time",
    "source",
    "status",
    "error_code",
    "reason",
    "failure_kind",
    "provider_id",
)


@dataclass(frozen=True)
class Report:
    """A send's row and one page of its recipients (dumped by schemas.SendReport)."""

    send: dict
    recipients: list[dict]
    page: int
    page_size: int
    total: int


def parse_ref(text: str) -> int:
    """Return a refNumber as an id, or raise InvalidInput."""
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput(f"refNumber must be a number, not {text[:40]!r}")
    return int(text)


def send_report(
    services: Services, ref: int, page: int, page_size: int, owner: str | None = None
) -> Report:
    """Return a send and one page of its recipients; raise NotFound for an unknown ref, or
    one not of `owner` (unless None): the same answer, so refs cannot be probed."""
    if ref > MAX_ID:
        raise NotFound(f"no send with refNumber {ref}")
    # One snapshot: counters, recipients and what is queued add up, whichever batches a
    # dispatcher records meanwhile.
    with services.db.snapshot() as cur:
        send = find_send(cur, ref, owner)
        if send is None:
            raise NotFound(f"no send with refNumber {ref}")
        total = count_recipients(cur, ref)
        recipients = send_recipients(cur, ref, page_size, (page - 1) * page_size)
        send["queued"] = send_progress(cur, ref)["queued"]
    lines = [_shown(services, dict(zip(RECIPIENT_COLUMNS, row, strict=True))) for row in recipients]
    return Report(send, lines, page, page_size, total)


def _shown(services: Services, message: dict) -> dict:
    """A message as reported: which provider carried it is said when there are several."""
    if not services.providers.several:
        del message["provider"]
    return message


def message_report(services: Services, ref: int, msisdn: str, owner: str | None = None) -> dict:
    """Return one message of a send with its status events, oldest first; raise NotFound
    for an unknown ref, another caller's send (unless `owner` is None: an admin), or a
    number the send did not go to."""
    if ref > MAX_ID:
        raise NotFound(f"no send with refNumber {ref}")
    number = services.normaliser.normalise(msisdn) or msisdn
    with services.db.transaction() as cur:
        if find_send(cur, ref, owner) is None:
            raise NotFound(f"no send with refNumber {ref}")
        row = find_message(cur, ref, number) if "\x00" not in number else None
        if row is None:
            raise NotFound(f"send {ref} has no message to {msisdn[:40]!r}")
        message = _shown(services, dict(zip(MESSAGE_COLUMNS, row, strict=True)))
        events = message_events(cur, message["id"])
    message["ref_number"] = str(ref)
    message["events"] = [dict(zip(EVENT_COLUMNS, event, strict=True)) for event in events]
    return message


def message_totals(
    database: Database, since: datetime, until: datetime
) -> tuple[dict[str, int], int]:
    """Return ({status: messages}, number of sends) for sends made in [since, until) UTC."""
    with database.transaction() as cur:
        return status_totals(cur, since, until)
