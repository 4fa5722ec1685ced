"""Vonage (Nexmo) SMS API.

Config: `token` = the API secret; `options.apiKey` (or `custom1`) = the API key;
`url` defaults to https://rest.nexmo.com; `maxRequestsPerSecond` defaults to Vonage's
30 a second per key; `options.callbackSecret` = the value Vonage must send as `secret` in
the delivery-receipt URL.

Wire format (Vonage's OpenAPI for the SMS API, provider-specs/vonage_sms.yml):
- Send: form `POST /sms/json` with `api_key`, `api_secret`, `from`, `to` (one number,
  digits only), `text`, `type=unicode` for text outside GSM-7, `client-ref` (our sms
  id); one recipient a request (a batch goes out with bounded parallelism).
- The answer is HTTP 200 whatever happened: `{"message-count", "messages": [{"to",
  "message-id", "status", "remaining-balance", "message-price", "network"}]}`, or
  `{"messages": [{"status", "error-text"}]}`. `status` "0" is accepted, the others
  are in SEND_STATUSES; "1" (throttled) means not sent, try later, so it is retried
  like a 429. A long text is split by Vonage: `message-count` > 1, one `message-id` a
  part; the first part's id is kept, and receipts for the other parts match nothing.
- No status query. Delivery receipts (JSON, form or query) carry `msisdn`, `to`,
  `messageId`, `status`, `err-code`, `price`, `scts`, `message-timestamp`,
  `client-ref`; statuses in RECEIPT_STATUSES, error codes in RECEIPT_ERRORS. Signed
  receipts need Vonage support to switch them on, so the `secret` query parameter we
  give Vonage in the receipt URL authenticates them instead.
- Replies (Vonage's "Inbound SMS" guide, developer.vonage.com/messaging/sms/guides/
  inbound-sms): GET or POST, JSON, form or query, of `msisdn` (the sender), `to` (our
  virtual number), `messageId`, `text`, `type` (text, unicode or binary), `keyword`,
  `message-timestamp`, and `concat-ref`, `concat-total`, `concat-part` for each part of
  a long one (stored part by part, each with its own `messageId`). The same `secret`
  query parameter authenticates them.
- A recipient who opted out is not refused at sending: its delivery receipt fails with
  err-code 9 (Vonage's "Messaging Opted-out Numbers" guide), so no send status here means
  an opt-out.
- `client-ref` is echoed in receipts but de-duplicates nothing, so a send that may have
  reached Vonage is not resent.
- Failure kinds: the send statuses' meanings (SEND_FAILURE_KINDS), and the receipt
  err-codes' as Vonage's support article "Vonage SMS Delivery Error Codes and
  Descriptions" gives them ("2 Absent Subscriber - Temporary ... Retry", "4 Call Barred
  by User: permanent error", "9 Illegal Number: the user has requested not to receive
  messages", RECEIPT_FAILURE_KINDS). The two code spaces overlap ("7" is a barred
  number at send and a busy handset in a receipt), hence two tables.
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
from messaging.segments import UCS2, encoding

# Send status codes: code -> meaning. "0" is success.
SEND_STATUSES = {
    "0": "Success",
    "1": "Throttled",  # over the request rate; not sent, retry later
    "2": "Missing parameters",
    "3": "Invalid parameters",
    "4": "Authentication failed",  # invalid credentials
    "5": "Internal error",
    "6": "Invalid message",  # unroutable
    "7": "Number barred",  # the destination is blacklisted
    "8": "Partner account barred",
    "9": "Out of credit",  # partner quota violation: not enough balance
    "10": "Too many existing binds",
    "11": "Account not enabled for HTTP",
    "12": "Message too long",
    "14": "Invalid signature",
    "15": "Invalid sender address",
    "22": "Invalid network code",
    "23": "Invalid callback URL",
    "29": "Non-whitelisted destination",  # trial accounts send only to verified numbers
    "32": "Signature and API secret disallowed",
    "33": "Number de-activated",
}
# Codes that refuse every request of the account, not one recipient.
ACCOUNT_STATUSES = frozenset({"4", "8", "9", "10", "11", "14", "32"})
THROTTLED = "1"
# Send statuses refusing one recipient -> the failure's kind.
SEND_FAILURE_KINDS = {
    "3": PERMANENT,  # invalid parameters: for one number, the number itself
    "5": TEMPORARY,  # internal error at Vonage
    "6": PERMANENT,  # invalid message: unroutable destination
    "7": PERMANENT,  # number barred
    "29": PERMANENT,  # not whitelisted (a trial account's unverified number)
    "33": PERMANENT,  # number de-activated
}

# Delivery receipt status -> our status.
RECEIPT_STATUSES = {
    "accepted": SENT,  # accepted by the carrier
    "buffered": SENT,  # waiting at the carrier
    "unknown": SENT,  # no answer from the carrier yet
    "delivered": DELIVERED,  # delivered to the handset
    "expired": FAILED,  # validity period passed
    "failed": FAILED,  # the carrier could not deliver (see err-code)
    "rejected": FAILED,  # refused by Vonage or the carrier (see err-code)
}

# Delivery receipt err-code -> meaning.
RECEIPT_ERRORS = {
    "0": "Delivered",
    "1": "Unknown",
    "2": "Absent subscriber (temporary)",
    "3": "Absent subscriber (permanent)",
    "4": "Call barred by user",
    "5": "Portability error",
    "6": "Anti-spam rejection",
    "7": "Handset busy",
    "8": "Network error",
    "9": "Illegal number",
    "10": "Illegal message",
    "11": "Unroutable",
    "12": "Destination unreachable",
    "13": "Subscriber age restriction",
    "14": "Number blocked by carrier",
    "15": "Prepaid insufficient funds",
    "99": "General error",
}
# Receipt err-codes of a failure -> its kind.
RECEIPT_FAILURE_KINDS = {
    "2": TEMPORARY,  # absent subscriber, temporary (handset off)
    "3": PERMANENT,  # absent subscriber, permanent
    "4": PERMANENT,  # call barred by user
    "5": TEMPORARY,  # portability error
    "6": PERMANENT,  # anti-spam rejection
    "7": TEMPORARY,  # handset busy
    "8": TEMPORARY,  # network error
    "9": PERMANENT,  # illegal number: the user asked not to get this service's messages
    "10": PERMANENT,  # illegal message
    "11": PERMANENT,  # unroutable
    "12": PERMANENT,  # destination unreachable: no route to the number
    "13": PERMANENT,  # subscriber age restriction
    "14": PERMANENT,  # number blocked by carrier
    "15": TEMPORARY,  # prepaid subscriber out of funds
    "99": TEMPORARY,  # general error
}


def send_status(answer) -> str:
    """Return the `status` of the first message of a send answer ("" if there is none)."""
    messages = answer.get("messages") if isinstance(answer, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else None
    return str(first.get("status", "")) if isinstance(first, dict) else ""


class Vonage(HttpProvider):
    name = "Vonage"
    default_url = "https://rest.nexmo.com"
    default_max_requests_per_second = 30.0
    max_batch_size = 100  # recipients per call of send_batch; each is its own request
    takes_receipts = True
    takes_inbound = True

    @property
    def api_key(self) -> str:
        return self.option("apiKey") or self.settings.custom1

    def try_send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
        return self.send_each(recipients, lambda recipient: self.send_one(recipient, text, sender))

    def send_one(self, recipient: Recipient, text: str, sender: str | None) -> SendResult:
        form = {
            "api_key": self.api_key,
            "api_secret": self.settings.token,
            "from": sender or "",
            "to": recipient.msisdn,
            "text": text,
            "client-ref": recipient.reference,
        }
        if encoding(text) == UCS2:
            form["type"] = "unicode"
        response = self.request("POST", "/sms/json", data=form)
        if response.status_code != 200:
            raise ProviderError(str(response.status_code), "Unexpected answer from Vonage")
        answer = json_or_none(response) or {}
        messages = answer.get("messages") or [{}]
        first = messages[0]
        status = str(first.get("status", ""))
        if status == "0" and first.get("message-id"):
            count = str(answer.get("message-count") or "")
            segments = int(count) if count.isdigit() else len(messages)
            return SendResult(recipient.reference, True, first["message-id"], segments=segments)
        meaning = SEND_STATUSES.get(status, "Rejected")
        if status in ACCOUNT_STATUSES:
            raise ProviderError(status, meaning)
        reason = first.get("error-text") or meaning
        kind = SEND_FAILURE_KINDS.get(status)
        return SendResult(
            recipient.reference, False, error_code=status, reason=reason, failure_kind=kind
        )

    def refused_for_now(self, response) -> bool:
        """Status 1 (throttled) comes in an HTTP 200: nothing was sent, so retry."""
        return response.status_code == 200 and send_status(json_or_none(response)) == THROTTLED

    def unavailable_reason(self, response) -> tuple[str, str]:
        if send_status(json_or_none(response)) == THROTTLED:
            return THROTTLED, SEND_STATUSES[THROTTLED]
        return super().unavailable_reason(response)

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        self.check_receipt_secret(receipt)
        fields = receipt.fields()
        provider_id = fields.get("messageId")
        if not provider_id:
            return []
        name = str(fields.get("status") or "unknown").lower()
        status = RECEIPT_STATUSES.get(name, SENT)
        code = str(fields.get("err-code", ""))
        reason = RECEIPT_ERRORS.get(code, name) if status == FAILED else name
        kind = RECEIPT_FAILURE_KINDS.get(code) if status == FAILED else None
        return [StatusUpdate(str(provider_id), status, code, reason, kind)]

    def parse_inbound(self, receipt: Receipt) -> list[InboundMessage]:
        self.check_receipt_secret(receipt)
        return reply_from_fields(receipt, "messageId", "msisdn", "to", "text")
