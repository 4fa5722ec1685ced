"""Clickatell, legacy REST API (the one the original Go service used).

Config: `token` = the REST API auth token; `url` defaults to https://api.clickatell.com;
`options.callbackSecret` = the value Clickatell must send as `secret` in the callback URL.

Wire format: `POST /rest/message` with `Authorization: Bearer <token>`, `X-Version: 1`,
JSON `{"text", "to": [...], "from"?}`, up to 600 numbers; status by
`GET /rest/message/{apiMessageId}`; callbacks carry `apiMsgId` and `status`.

Corrections and choices after checking the docs and client libraries:
- `clientMessageId` is a tracking tag for one whole request, not a de-duplication key,
  so a send that may have reached Clickatell is never resent ("provider outcome unknown").
- Callbacks carry no signature; they are accepted only with the shared `secret` query
  parameter (configure the callback URL as `.../callbacks/clickatell?secret=...`).
"""

from messaging.errors import ProviderError
from messaging.providers.base import (
    DELIVERED,
    FAILED,
    SENT,
    Receipt,
    Recipient,
    SendResult,
    StatusUpdate,
)
from messaging.providers.http import HttpProvider, OutcomeUnknown, json_or_none, unknown_outcome
from messaging.segments import count_segments

# Message status codes (messageStatus / callback `status`): code -> (our status, meaning).
STATUS_CODES = {
    "001": (SENT, "Message unknown"),  # not yet visible to the status lookup
    "002": (SENT, "Message queued"),  # queued at Clickatell, not yet at the gateway
    "003": (DELIVERED, "Delivered to gateway"),  # counted delivered, as the original did
    "004": (DELIVERED, "Received by recipient"),  # handset acknowledged
    "005": (FAILED, "Error with message"),  # network or handset error
    "006": (FAILED, "User cancelled message delivery"),
    "007": (FAILED, "Error delivering message"),
    "008": (SENT, "OK"),  # received by Clickatell
    "009": (FAILED, "Routing error"),
    "010": (FAILED, "Message expired"),
    "011": (SENT, "Message scheduled for later delivery"),
    "012": (FAILED, "Out of credit"),  # failed for lack of credit after queueing
    "014": (FAILED, "Maximum MT limit exceeded"),
}

# Error codes that refuse the whole request rather than one recipient.
ACCOUNT_ERRORS = {
    "001": "Authentication failed",  # bad or revoked token
    "002": "Unknown username or password",
    "003": "Session ID expired",
    "007": "IP lockdown violation",  # request from an address not on the allow list
    "301": "Out of credit",  # no credit left on the account
    "302": "Maximum allowed credit",
}


def match_replies(recipients: list[Recipient], replies: list, segments: int) -> list[SendResult]:
    """Pair Clickatell's per-number replies (both APIs answer alike) with our recipients."""
    by_number: dict[str, list[dict]] = {}
    for reply in replies:
        by_number.setdefault(str(reply.get("to", "")), []).append(reply)
    results = []
    for recipient in recipients:
        found = by_number.get(recipient.msisdn)
        results.append(reply_result(recipient, found.pop(0) if found else None, segments))
    return results


def reply_result(recipient: Recipient, reply: dict | None, segments: int) -> SendResult:
    if reply is None:
        return SendResult(recipient.reference, False, reason="Not in Clickatell's answer")
    error = reply.get("error")
    if reply.get("accepted") and reply.get("apiMessageId") and not error:
        return SendResult(recipient.reference, True, reply["apiMessageId"], segments=segments)
    if isinstance(error, dict):
        code, reason = str(error.get("code", "")), error.get("description") or "Rejected"
    else:
        code, reason = "", str(error or "Rejected")
    return SendResult(recipient.reference, False, error_code=code, reason=reason)


class Clickatell(HttpProvider):
    name = "Clickatell"
    default_url = "https://api.clickatell.com"
    max_batch_size = 600
    can_query_status = True
    receipt_auth = "secret"

    def headers(self) -> dict:
        return {
            "Authorization": f"Bearer {self.settings.token}",
            "X-Version": "1",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
        body = {"text": text, "to": [recipient.msisdn for recipient in recipients]}
        if sender:
            body["from"] = sender
        try:
            response = self.request("POST", "/rest/message", json=body, headers=self.headers())
        except OutcomeUnknown:
            return [unknown_outcome(recipient) for recipient in recipients]
        answer = json_or_none(response)
        error = (answer or {}).get("error") if isinstance(answer, dict) else None
        if error or response.status_code >= 300:
            raise self.request_error(response, error)
        messages = ((answer.get("data") or {}).get("message")) or []
        return match_replies(recipients, messages, count_segments(text))

    def request_error(self, response, error) -> ProviderError:
        if isinstance(error, dict):
            code = str(error.get("code", ""))
            description = ACCOUNT_ERRORS.get(code) or error.get("description") or "Refused"
            return ProviderError(code, description)
        if response.status_code >= 500 or response.status_code == 429:
            return self.unavailable(response)
        return ProviderError(str(response.status_code), "Unexpected answer from Clickatell")

    def query_one(self, provider_id: str) -> StatusUpdate:
        response = self.request("GET", f"/rest/message/{provider_id}", headers=self.headers())
        answer = json_or_none(response) or {}
        if response.status_code >= 300 or answer.get("error"):
            error = answer.get("error")
            if isinstance(error, dict) and str(error.get("code")) in ACCOUNT_ERRORS:
                raise self.request_error(response, error)
            if response.status_code >= 500 or response.status_code == 429:
                raise self.unavailable(response)
            # An unknown id (e.g. 404) stays in flight; it may not be visible yet.
            return StatusUpdate(provider_id, SENT, "001", "Message unknown")
        return self.update(provider_id, (answer.get("data") or {}).get("messageStatus"))

    def update(self, provider_id: str, code) -> StatusUpdate:
        code = str(code or "")
        status, reason = STATUS_CODES.get(code, (SENT, f"Unknown status {code}"))
        return StatusUpdate(provider_id, status, code, reason)

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        self.check_receipt_secret(receipt)
        fields = dict(receipt.form)
        if isinstance(receipt.json, dict):
            fields.update(receipt.json.get("data") or receipt.json)
        provider_id = fields.get("apiMsgId") or fields.get("apiMessageId")
        code = fields.get("status") or fields.get("messageStatus")
        if not provider_id or not code:
            return []
        return [self.update(str(provider_id), code)]
