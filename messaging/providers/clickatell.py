"""Clickatell, legacy REST API (the one the original Go service used).

Config: `token` = the REST API auth token; `url` defaults to https://api.clickatell.com;
`options.callbackSecret` = the value Clickatell must send as `secret` in the callback URL.

Wire format (Clickatell's legacy REST API reference, as the original service spoke it):
- Every request: `Authorization: Bearer <token>`, `X-Version: 1`, JSON in and out
  (`Content-Type` and `Accept: application/json`).
- Send: `POST /rest/message` `{"text", "to": [digits, ...], "from"?}`, at most 600
  numbers, answered 202 `{"data": {"message": [{"accepted", "to", "apiMessageId",
  "error"?}]}}`; a refused number carries `error: {"code", "description"}` (105 invalid
  destination, 121 destination blocked). A refused request is `{"error": {"code",
  "description"}}`, usually HTTP 400, codes in ACCOUNT_ERRORS (001 authentication,
  007 IP lockdown, 301 no credit).
- Status: `GET /rest/message/{apiMessageId}`, answered `{"data": {"apiMessageId",
  "messageStatus", "charge", "description"}}`, codes in STATUS_CODES; an id not (yet)
  known stays in flight.
- Callbacks: `apiMsgId`, `from`, `to`, `timestamp`, `status`, `charge` (form, query or
  JSON). They carry no signature: the `secret` query parameter we give Clickatell in
  the callback URL (`.../callbacks/clickatell?secret=...`) authenticates them.
- Replies (two-way messaging, the "reply path" of a long number or short code): `api_id`,
  `moMsgId`, `from`, `to`, `timestamp`, `text`, `charset`, `udh` (form, query or JSON;
  the Clickatell inbound format as HCL Volt MX's engagement API guide quotes it, and
  py-smsframework-clickatell's receiver), with the same `secret` query parameter.
- A number on Clickatell's block list (it replied STOP) is refused at sending with error
  121, "Destination mobile number blocked": OPT_OUT_CODES.
- `clientMessageId` tags a whole request and de-duplicates nothing, so a send that may
  have reached Clickatell is not resent.
- Failure kinds: the "API error codes" page (docs.clickatell.com, archived REST API: 105
  invalid destination address, 114 cannot route message, 121 destination mobile number
  blocked, ...) for refusals at send, and the message status codes' descriptions (005
  "error with the message", 009 "error routing the message", 010 "expired before we
  were able to deliver it") for later failures; the two code spaces do not overlap.
"""

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
from messaging.providers.http import HttpProvider, json_or_none, reply_from_fields
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

# Error codes refusing one recipient at send, and failed status codes -> the failure's kind.
FAILURE_KINDS = {
    "105": PERMANENT,  # invalid destination address
    "114": PERMANENT,  # cannot route message
    "121": PERMANENT,  # destination mobile number blocked
    "005": TEMPORARY,  # error with the message (network or handset)
    "006": PERMANENT,  # user cancelled message delivery
    "007": TEMPORARY,  # error delivering the message to the handset
    "009": PERMANENT,  # routing error
    "010": TEMPORARY,  # expired before it could be delivered
    "012": TEMPORARY,  # out of credit after queueing
    "014": TEMPORARY,  # maximum MT limit exceeded
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


# Error codes of a refused number that mean it opted out.
OPT_OUT_CODES = frozenset({"121"})  # "Destination mobile number blocked"


def answer_error(answer, known: dict[str, str]) -> tuple[str, str] | None:
    """Return the (code, description) of a request-level `error` in an answer of either
    Clickatell API, naming the codes in `known` our way; None when there is none."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return None
    code = str(error.get("code", ""))
    return code, known.get(code) or error.get("description") or "Refused"


def refusal(response, error: tuple[str, str] | None) -> ProviderError:
    """Return the error for an answer refusing the whole request (either Clickatell API)."""
    return ProviderError(
        *(error or (str(response.status_code), "Unexpected answer from Clickatell"))
    )


def match_replies(
    recipients: list[Recipient], replies: list, segments: int, kinds: dict[str, str]
) -> list[SendResult]:
    """Pair Clickatell's per-number replies (both APIs answer alike) with our recipients;
    `kinds` maps the API's error codes to failure kinds."""
    by_number: dict[str, list[dict]] = {}
    for reply in replies:
        by_number.setdefault(str(reply.get("to", "")), []).append(reply)
    results = []
    for recipient in recipients:
        found = by_number.get(recipient.msisdn)
        reply = found.pop(0) if found else None
        results.append(reply_result(recipient, reply, segments, kinds))
    return results


def reply_result(
    recipient: Recipient, reply: dict | None, segments: int, kinds: dict[str, str]
) -> SendResult:
    if reply is None:
        return SendResult(recipient.reference, False, reason="Not in Clickatell's answer")
    error = reply.get("error")
    if reply.get("accepted") and reply.get("apiMessageId") and not error:
        return SendResult(recipient.reference, True, reply["apiMessageId"], segments=segments)
    if isinstance(error, dict):
        code, reason = str(error.get("code", "")), error.get("description") or "Rejected"
    else:
        code, reason = "", str(error or "Rejected")
    return SendResult(
        recipient.reference, False, error_code=code, reason=reason, failure_kind=kinds.get(code)
    )


class Clickatell(HttpProvider):
    name = "Clickatell"
    default_url = "https://api.clickatell.com"
    max_batch_size = 600
    can_query_status = True
    takes_receipts = True
    takes_inbound = True
    opt_out_codes = OPT_OUT_CODES

    def headers(self) -> dict:
        return {
            "Authorization": f"Bearer {self.settings.token}",
            "X-Version": "1",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def try_send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
        body = {"text": text, "to": [recipient.msisdn for recipient in recipients]}
        if sender:
            body["from"] = sender
        response = self.request("POST", "/rest/message", json=body)
        answer = json_or_none(response)
        error = answer_error(answer, ACCOUNT_ERRORS)
        if error or response.status_code >= 300 or not isinstance(answer, dict):
            raise refusal(response, error)
        messages = (answer.get("data") or {}).get("message") or []
        return match_replies(recipients, messages, count_segments(text), FAILURE_KINDS)

    def unavailable_reason(self, response) -> tuple[str, str]:
        error = answer_error(json_or_none(response), ACCOUNT_ERRORS)
        return error or super().unavailable_reason(response)

    def query_one(self, provider_id: str) -> StatusUpdate:
        response = self.request("GET", f"/rest/message/{provider_id}")
        answer = json_or_none(response)
        error = answer_error(answer, ACCOUNT_ERRORS)
        if error and error[0] in ACCOUNT_ERRORS:
            raise ProviderError(*error)
        if error or response.status_code >= 300 or not isinstance(answer, dict):
            # An unknown id (e.g. 404) stays in flight; it may not be visible yet.
            return StatusUpdate(provider_id, SENT, "001", "Message unknown")
        return self.update(provider_id, (answer.get("data") or {}).get("messageStatus"))

    def update(self, provider_id: str, code) -> StatusUpdate:
        code = str(code or "")
        status, reason = STATUS_CODES.get(code, (SENT, f"Unknown status {code}"))
        kind = FAILURE_KINDS.get(code) if status == FAILED else None
        return StatusUpdate(provider_id, status, code, reason, kind)

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

    def parse_inbound(self, receipt: Receipt) -> list[InboundMessage]:
        self.check_receipt_secret(receipt)
        return reply_from_fields(receipt, "moMsgId", "from", "to", "text")
