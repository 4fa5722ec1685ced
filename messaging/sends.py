"""One send and its recipients' delivery status, paged: `GET /sends/<refNumber>`."""

from datetime import datetime

from messaging.errors import InvalidInput, NotFound
from messaging.queries.sends import count_recipients, find_send, send_recipients
from messaging.service import Services

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_ID = 2**63 - 1  # sendlog.id is a BIGINT


def parse_ref(text: str) -> int:
    """Return a refNumber as an id, or raise InvalidInput."""
    if not (text.isascii() and text.isdigit()):
        raise InvalidInput(f"refNumber must be a number, not {text[:40]!r}")
    return int(text)


def parse_paging(page: str | None, page_size: str | None) -> tuple[int, int]:
    """Return (page, pageSize) from query parameters, or raise InvalidInput."""
    number = _positive(page, "page", 1)
    size = _positive(page_size, "pageSize", DEFAULT_PAGE_SIZE)
    if size > MAX_PAGE_SIZE:
        raise InvalidInput(f"pageSize must be at most {MAX_PAGE_SIZE}")
    return number, size


def _positive(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) < 1 or len(text) > 9:
        raise InvalidInput(f"{name} must be a whole number from 1 up")
    return int(text)


def iso(moment: datetime | None) -> str | None:
    """Stored timestamps are UTC without a zone: say so."""
    return moment.isoformat() + "Z" if moment is not None else None


def send_report(
    services: Services, ref: int, page: int, page_size: int, owner: str | None = None
) -> dict:
    """Return a send and one page of its recipients; raise NotFound for an unknown ref, or
    one not of `owner` (unless None): the same answer, so refs cannot be probed."""
    if ref > MAX_ID:
        raise NotFound(f"no send with refNumber {ref}")
    with services.db.transaction() as cur:
        send = find_send(cur, ref, owner)
        if send is None:
            raise NotFound(f"no send with refNumber {ref}")
        total = count_recipients(cur, ref)
        recipients = send_recipients(cur, ref, page_size, (page - 1) * page_size)
    return {
        "send": {
            "refNumber": str(send["id"]),
            "originator": send["originator"] or "",
            "time": iso(send["senttime"]),
            "from": send["sender"],
            "message": send["message"],
            "quantity": send["quantity"],
            "sent": send["sent"] or 0,
            "delivered": send["delivered"] or 0,
            "failed": send["failed"] or 0,
            "status": send["status"],
            "description": send["description"] or "",
        },
        "recipients": [
            {
                "msisdn": msisdn,
                "status": status,
                "providerId": provider_id,
                "errorCode": code,
                "reason": reason,
                "statusTime": iso(status_time),
            }
            for msisdn, status, provider_id, code, reason, status_time in recipients
        ],
        "page": page,
        "pageSize": page_size,
        "total": total,
    }
