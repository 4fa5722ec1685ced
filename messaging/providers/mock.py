"""MockProvider: a deterministic stand-in provider for tests and demos.

Every path of the service can be reached with it, by rule:

Sending (per recipient, by the last digit of the number):
  - ends in 9: rejected, error 105 "Invalid destination address" (permanent);
  - any other digit: accepted, provider id "mock-<number>-<our reference>".
Sending (whole request, by `smsProvider.token`):
  - "nocredit": every batch fails with error 301 "Out of credit";
  - "badauth": every batch fails with error 001 "Authentication failed";
  - "down": every batch fails with error 503 "Provider unavailable" (ProviderUnavailable).
Status query (by the last digit of the number in the provider id):
  - 0 to 5: delivered (code 004);
  - 6 or 7: failed (code 005 "Delivery failed"), 6 temporary and 7 permanent;
  - 8: still in flight (sent, code 002).
  Any number of ids in one call (`status_batch_size`).
Push receipts (`POST /callbacks/MockProvider`):
  - body: JSON `{"id": "<provider id>", "status": "delivered" | "failed" | "sent",
    "code": "...", "reason": "..."}` (code and reason optional), or a list of them;
  - header `X-Mock-Signature`: the hex HMAC-SHA256 of the raw body keyed by
    `smsProvider.token`. Missing or wrong, or no token configured: refused (403).
  - a failed one may say `"failureKind": "temporary" | "permanent"`; without it the
    failure's kind is unknown.
Segments: counted by GSM 03.38 rules for the text.
Failure kinds: the mock's own, chosen so that each kind can be reached by number.
"""

import hashlib
import hmac
import json
import threading
from collections import deque

from messaging.errors import InvalidInput, ProviderError, ProviderUnavailable, ReceiptRejected
from messaging.providers.base import (
    DELIVERED,
    FAILED,
    PERMANENT,
    SENT,
    TEMPORARY,
    Provider,
    Receipt,
    Recipient,
    SendResult,
    StatusUpdate,
)
from messaging.segments import count_segments

# Whole-request failures chosen by token: token -> (error, code, description).
TOKEN_FAILURES = {
    "nocredit": (ProviderError, "301", "Out of credit"),
    "badauth": (ProviderError, "001", "Authentication failed"),
    "down": (ProviderUnavailable, "503", "Provider unavailable"),
}

# Status answers by the last digit of the number.
STATUS_BY_LAST_DIGIT = {
    **dict.fromkeys("012345", (DELIVERED, "004", "Delivered to handset")),
    **dict.fromkeys("67", (FAILED, "005", "Delivery failed")),
    "8": (SENT, "002", "Queued at gateway"),
}
# Failure kinds of failed status answers, by the last digit of the number.
FAILURE_KIND_BY_LAST_DIGIT = {
    "6": TEMPORARY,  # as if the handset were off
    "7": PERMANENT,  # as if the number were not in service
}
REJECTED_LAST_DIGIT = "9"
REJECTED_KIND = PERMANENT  # error 105, an invalid destination
FAILURE_KINDS = (TEMPORARY, PERMANENT)
SIGNATURE_HEADER = "X-Mock-Signature"
RECEIPT_STATUSES = (DELIVERED, FAILED, SENT)


def receipt_signature(token: str, body: bytes) -> str:
    """Return the X-Mock-Signature value for a receipt body."""
    return hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


class MockProvider(Provider):
    name = "MockProvider"
    max_batch_size = 10_000
    can_query_status = True
    status_batch_size = 10_000
    takes_receipts = True

    def __init__(self, settings):
        super().__init__(settings)
        self._lock = threading.Lock()
        # Sizes of the most recent batches, for tests and `flask shell` curiosity.
        self.batches: deque[int] = deque(maxlen=1000)
        self.status_queries = 0

    def try_send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
        with self._lock:
            self.batches.append(len(recipients))
        failure = TOKEN_FAILURES.get(self.settings.token)
        if failure:
            error, code, description = failure
            raise error(code, description)
        segments = count_segments(text)
        results = []
        for recipient in recipients:
            if recipient.msisdn.endswith(REJECTED_LAST_DIGIT):
                results.append(
                    SendResult(
                        recipient.reference,
                        accepted=False,
                        error_code="105",
                        reason="Invalid destination address",
                        failure_kind=REJECTED_KIND,
                    )
                )
            else:
                results.append(
                    SendResult(
                        recipient.reference,
                        accepted=True,
                        provider_id=f"mock-{recipient.msisdn}-{recipient.reference}",
                        segments=segments,
                    )
                )
        return results

    def try_query_status(self, provider_ids: list[str]) -> list[StatusUpdate]:
        with self._lock:
            self.status_queries += len(provider_ids)
        updates = []
        for provider_id in provider_ids:
            parts = provider_id.split("-")
            if len(parts) != 3 or parts[0] != "mock" or not parts[1]:
                updates.append(StatusUpdate(provider_id, FAILED, "404", "Unknown message id"))
                continue
            digit = parts[1][-1]
            status, code, reason = STATUS_BY_LAST_DIGIT.get(
                digit, (FAILED, "005", "Delivery failed")
            )
            kind = FAILURE_KIND_BY_LAST_DIGIT.get(digit) if status == FAILED else None
            updates.append(StatusUpdate(provider_id, status, code, reason, kind))
        return updates

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        token = self.settings.token
        if not token:
            raise ReceiptRejected("MockProvider: no smsProvider.token to check receipts with")
        given = receipt.headers.get(SIGNATURE_HEADER, "")
        expected = receipt_signature(token, receipt.body)
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
            raise ReceiptRejected("MockProvider: receipt signature does not match")
        try:
            answer = json.loads(receipt.body)
        except ValueError:
            raise InvalidInput("MockProvider receipt: body is not JSON") from None
        items = answer if isinstance(answer, list) else [answer]
        updates = []
        for item in items:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("id"), str)
                and item["id"]
                and item.get("status") in RECEIPT_STATUSES
                and isinstance(item.get("code", ""), str)
                and isinstance(item.get("reason", ""), str)
                and item.get("failureKind", TEMPORARY) in FAILURE_KINDS
            ):
                raise InvalidInput(
                    'MockProvider receipt: expected {"id": "...", "status": '
                    '"delivered"|"failed"|"sent", "code"?: "...", "reason"?: "...", '
                    '"failureKind"?: "temporary"|"permanent"} or a list'
                )
            kind = item.get("failureKind") if item["status"] == FAILED else None
            updates.append(
                StatusUpdate(item["id"], item["status"], item.get("code"), item.get("reason"), kind)
            )
        return updates
