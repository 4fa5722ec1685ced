"""BulkSMS.com JSON REST API v1.

Config: `options.username` (or `custom1`) = the username or API token id; `token` = the
password or API token secret; `url` defaults to https://api.bulksms.com/v1;
`options.callbackSecret` = the value BulkSMS must send as `secret` in the webhook URL.

Wire format (BulkSMS's OpenAPI 1.0.0, provider-specs/bulksms_openapi.yaml):
- Every request: HTTP Basic, JSON in and out.
- Send: `POST /messages?deduplication-id=<32-bit integer>` with a JSON list of
  `{"to", "body", "from"?, "encoding": "TEXT" | "UNICODE", "longMessageMaxParts",
  "userSuppliedId"}`; answered 201 with a list of messages (`id`, `to`,
  `userSuppliedId`, `status: {"id", "type", "subtype"?}`). The spec suggests about
  4 000 messages a submission. `longMessageMaxParts` defaults to 3, so it is set to the
  text's part count. A submission with the same `deduplication-id` within about 12
  hours is not sent again, so each batch gets a random one, kept by every resend of it:
  a send that may have reached BulkSMS is resent safely.
- Errors are problem JSON `{"type", "title", "status", "detail"}`: 401 authentication
  failed, 403 "Insufficient Credits" (or another account limit).
- Status: `GET /messages/{id}`, the same message object; `status.type` in STATUS_TYPES,
  the FAILED subtypes in FAILED_SUBTYPES.
- Webhooks: a POSTed JSON list of the same message objects. They carry no signature:
  the `secret` query parameter we give BulkSMS in the webhook URL authenticates them.
  Replies come to a webhook of their own (the spec's Webhooks section: one for SENT, one
  for RECEIVED messages) as messages of `type` RECEIVED: `id`, `from` (the sender), `to`,
  `body`, `submission.date` (when BulkSMS processed it).
- A recipient who replied STOP is refused with status FAILED, subtype BLOCKED ("e.g.
  recipient replied STOP to block communication"), id "FAILED.BLOCKED": OPT_OUT_CODES.
- Failure kinds: by the FAILED subtypes' meanings in the same OpenAPI document
  (FAILED_SUBTYPES), at submission and later alike.
"""

import random

from messaging.errors import ProviderError
from messaging.providers.base import (
    DELIVERED,
    FAILED,
    PERMANENT,
    SENT,
    TEMPORARY,
    InboundMessage,
    Receipt,
    Recipient,
    SendResult,
    StatusUpdate,
)
from messaging.providers.http import HttpProvider, json_or_none
from messaging.segments import UCS2, count_segments, encoding

# status.type -> our status.
STATUS_TYPES = {
    "ACCEPTED": SENT,  # accepted for delivery (submission answer only)
    "SCHEDULED": SENT,  # accepted for later delivery
    "SENT": SENT,  # handed to the network
    "UNKNOWN": SENT,  # the network has not answered yet
    "DELIVERED": DELIVERED,  # delivered to the handset
    "FAILED": FAILED,  # see the subtype below
}

# status.subtype of FAILED -> meaning.
FAILED_SUBTYPES = {
    "EXPIRED": "Expired before delivery was possible",  # phone off too long
    "HANDSET_ERROR": "Handset error",  # e.g. memory full
    "BLOCKED": "Blocked",  # opted out, or blocked by BulkSMS or the network
    "NOT_SENT": "Not sent",  # never reached the network
}
# status.subtype of FAILED -> the failure's kind.
FAILURE_KINDS = {
    "EXPIRED": TEMPORARY,  # the handset stayed off or out of reach
    "HANDSET_ERROR": TEMPORARY,  # e.g. its memory was full
    "BLOCKED": PERMANENT,  # opted out or blocked
    "NOT_SENT": TEMPORARY,  # never reached the network
}

# status.id of a refused recipient that means it opted out.
OPT_OUT_CODES = frozenset({"FAILED.BLOCKED"})

# HTTP status of a refused submission -> (our code, description).
REQUEST_ERRORS = {
    401: ("401", "Authentication failed"),  # wrong username or password
    403: ("403", "Out of credit"),  # "Insufficient Credits" (or other account limits)
}


class BulkSMS(HttpProvider):
    name = "BulkSMS"
    default_url = "https://api.bulksms.com/v1"
    max_batch_size = 4000
    can_query_status = True
    takes_receipts = True
    takes_inbound = True
    resend_is_safe = True  # by the deduplication-id of each batch
    opt_out_codes = OPT_OUT_CODES

    def __init__(self, settings, **kwargs):
        super().__init__(settings, **kwargs)
        self.random = random.SystemRandom()

    def auth(self) -> tuple[str, str]:
        return (self.option("username") or self.settings.custom1, self.settings.token)

    def headers(self) -> dict:
        return {"Accept": "application/json"}

    def try_send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
        segments = count_segments(text)
        entries = []
        for recipient in recipients:
            entry = {
                "to": f"+{recipient.msisdn}",
                "body": text,
                "encoding": "UNICODE" if encoding(text) == UCS2 else "TEXT",
                "longMessageMaxParts": max(segments, 1),
                "userSuppliedId": recipient.reference,
            }
            if sender:
                entry["from"] = sender
            entries.append(entry)
        dedup = self.random.randint(1, 2**31 - 1)
        response = self.request(
            "POST", "/messages", params={"deduplication-id": dedup}, json=entries
        )
        answer = json_or_none(response)
        if response.status_code != 201 or not isinstance(answer, list):
            raise self.request_error(response, answer)
        by_reference = {str(m.get("userSuppliedId")): m for m in answer if isinstance(m, dict)}
        results = []
        for recipient in recipients:
            message = by_reference.get(recipient.reference)
            results.append(self.result(recipient, message, segments))
        return results

    def result(self, recipient, message, segments) -> SendResult:
        if message is None:
            return SendResult(recipient.reference, False, reason="Not in BulkSMS's answer")
        status = message.get("status") or {}
        if status.get("type") == "FAILED" or not message.get("id"):
            subtype = status.get("subtype") or ""
            reason = FAILED_SUBTYPES.get(subtype, "Rejected")
            return SendResult(
                recipient.reference,
                False,
                error_code=status.get("id"),
                reason=reason,
                failure_kind=FAILURE_KINDS.get(subtype),
            )
        return SendResult(recipient.reference, True, str(message["id"]), segments=segments)

    def request_error(self, response, answer) -> ProviderError:
        if response.status_code in REQUEST_ERRORS:
            code, description = REQUEST_ERRORS[response.status_code]
            detail = answer.get("title") if isinstance(answer, dict) else None
            if response.status_code == 403 and detail and "credit" not in detail.lower():
                description = detail
            return ProviderError(code, description)
        detail = ""
        if isinstance(answer, dict):
            detail = answer.get("detail") or answer.get("title") or ""
        return ProviderError(str(response.status_code), detail.strip() or "Refused by BulkSMS")

    def query_one(self, provider_id: str) -> StatusUpdate:
        response = self.request("GET", f"/messages/{provider_id}")
        answer = json_or_none(response)
        if response.status_code == 404:
            return StatusUpdate(provider_id, FAILED, "404", "Unknown message id")
        if response.status_code != 200 or not isinstance(answer, dict):
            raise self.request_error(response, answer)
        return self.update(provider_id, answer.get("status") or {})

    def update(self, provider_id: str, status: dict) -> StatusUpdate:
        kind = str(status.get("type") or "UNKNOWN")
        ours = STATUS_TYPES.get(kind, SENT)
        code = status.get("id") or f"{kind}.null"
        failure_kind = None
        if ours == FAILED:
            subtype = status.get("subtype") or ""
            reason = FAILED_SUBTYPES.get(subtype, "Failed")
            failure_kind = FAILURE_KINDS.get(subtype)
        else:
            reason = kind.capitalize()
        return StatusUpdate(provider_id, ours, code, reason, failure_kind)

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        self.check_receipt_secret(receipt)
        messages = receipt.json
        if isinstance(messages, dict):
            messages = [messages]
        updates = []
        for message in messages or []:
            if isinstance(message, dict) and message.get("id"):
                updates.append(self.update(str(message["id"]), message.get("status") or {}))
        return updates

    def parse_inbound(self, receipt: Receipt) -> list[InboundMessage]:
        self.check_receipt_secret(receipt)
        messages = receipt.json if isinstance(receipt.json, list) else [receipt.json]
        return [
            InboundMessage(
                str(message["id"]),
                str(message.get("from") or ""),
                str(message.get("to") or ""),
                str(message.get("body") or ""),
            )
            for message in messages
            if isinstance(message, dict) and message.get("id") and message.get("type") == "RECEIVED"
        ]
