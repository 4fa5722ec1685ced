"""MockProvider: a deterministic stand-in provider for tests and demos.

Every path of the service can be reached with it, by rule:

Sending (per recipient, by the last digit of the number):
  - listed in `smsProvider.options.optedOut` (comma-separated, international digits):
    rejected, error 114 "Recipient opted out" (OPT_OUT_CODES);
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
    `smsProvider.token`. Missing or wrong, or no token configured: refused (403);
  - a failed one may say `"failureKind": "temporary" | "permanent"`; without it the
    failure's kind is unknown.
Push replies (`POST /callbacks/MockProvider/inbound`):
  - body: JSON `{"id": "<its id>", "from": "<number>", "to": "<ours>", "text": "..."}`,
    or a list of them; signed like the receipts.
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
    InboundMessage,
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
OPTED_OUT = ("114", "Recipient opted out")
OPT_OUT_CODES = frozenset({OPTED_OUT[0]})
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
    takes_inbound = True
    opt_out_codes = OPT_OUT_CODES

    def __init__(self, settings):
        super().__init__(settings)
        self._lock = threading.Lock()
        # Sizes of the most recent batches, for tests and `flask shell` curiosity.
        self.batches: deque[int] = deque(maxlen=1000)
        self.status_queries = 0
        listed = settings.options.get("optedOut", "")
        self.opted_out = frozenset(number.strip() for number in listed.split(",") if number.strip())

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
            if recipient.msisdn in self.opted_out:
                code, reason = OPTED_OUT
                results.append(
                    SendResult(recipient.reference, accepted=False, error_code=code, reason=reason)
                )
            elif recipient.msisdn.endswith(REJECTED_LAST_DIGIT):
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

    def signed_items(self, receipt: Receipt, what: str) -> list:
        """Check the X-Mock-Signature of a pushed body; return its JSON object(s) as a list."""
        token = self.settings.token
        if not token:
            raise ReceiptRejected(f"MockProvider: no smsProvider.token to check {what}s with")
        given = receipt.headers.get(SIGNATURE_HEADER, "")
        expected = receipt_signature(token, receipt.body)
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
            raise ReceiptRejected(f"MockProvider: {what} signature does not match")
        try:
            answer = json.loads(receipt.body)
        except ValueError:
            raise InvalidInput(f"MockProvider {what}: body is not JSON") from None
        return answer if isinstance(answer, list) else [answer]

    def parse_inbound(self, receipt: Receipt) -> list[InboundMessage]:
        messages = []
        for item in self.signed_items(receipt, "reply"):
            if not (
                isinstance(item, dict)
                and all(isinstance(item.get(key), str) for key in ("id", "from", "to", "text"))
                and item["id"]
            ):
                raise InvalidInput(
                    'MockProvider reply: expected {"id": "...", "from": "...", "to": "...", '
                    '"text": "..."} or a list'
                )
            messages.append(InboundMessage(item["id"], item["from"], item["to"], item["text"]))
        return messages

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        items = self.signed_items(receipt, "receipt")
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
