"""Vonage (Nexmo) SMS API.

Config: `token` = the API secret; `options.apiKey` (or `custom1`) = the API key;
`url` defaults to https://rest.nexmo.com; `maxRequestsPerSecond` defaults to Vonage's
30 a second per key; `options.callbackSecret` = the value Vonage must send as `secret` in
the delivery-receipt URL.

Wire format: form `POST /sms/json` with `api_key`, `api_secret`, `from`, `to` (one
number, digits only), `text`, `type=unicode` for non-GSM text, `client-ref` (our sms id);
always HTTP 200 with `messages[]` each carrying `status` ("0" = accepted), `message-id`
or `error-text`. One recipient a request, so a batch is sent with bounded parallelism.
Delivery receipts (JSON, form or query) carry `messageId`, `status`, `err-code`,
`client-ref`. There is no status query in this API.

Corrections and choices after checking the official OpenAPI spec (provider-specs/vonage_sms.yml)
and client libraries:
- `client-ref` is a tag echoed in receipts, not a de-duplication key, so a send that may
  have reached Vonage is never resent ("provider outcome unknown").
- A long text is split by Vonage: `message-count` > 1 and one `message-id` per part. The
  first part's id is kept; receipts for the other parts match no message and are ignored.
- Status 1 (throttled) means "not sent, try later" and is retried with backoff.
- Signed receipts (`sig`) need Vonage support to switch them on; the shared `secret`
  query parameter is used instead.
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
from messaging.providers.http import HttpProvider, json_or_none
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


class Vonage(HttpProvider):
    name = "Vonage"
    default_url = "https://rest.nexmo.com"
    default_max_requests_per_second = 30.0
    max_batch_size = 100  # recipients per call of send_batch; each is its own request
    can_query_status = False
    receipt_auth = "secret"

    @property
    def api_key(self) -> str:
        return self.option("apiKey") or self.settings.custom1

    def send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
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
        for attempt in range(self.settings.retries + 1):
            response = self.request("POST", "/sms/json", data=form)
            if response.status_code != 200:
                if response.status_code >= 500 or response.status_code == 429:
                    raise self.unavailable(response)
                raise ProviderError(str(response.status_code), "Unexpected answer from Vonage")
            answer = json_or_none(response) or {}
            messages = answer.get("messages") or [{}]
            first = messages[0]
            status = str(first.get("status", ""))
            if status != THROTTLED or attempt == self.settings.retries:
                break
            self.sleep(self._backoff(attempt + 1))
        if status == "0" and first.get("message-id"):
            count = str(answer.get("message-count") or "")
            segments = int(count) if count.isdigit() else len(messages)
            return SendResult(recipient.reference, True, first["message-id"], segments=segments)
        meaning = SEND_STATUSES.get(status, "Rejected")
        if status in ACCOUNT_STATUSES:
            raise ProviderError(status, meaning)
        reason = first.get("error-text") or meaning
        return SendResult(recipient.reference, False, error_code=status, reason=reason)

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        self.check_receipt_secret(receipt)
        fields = dict(receipt.form)
        if isinstance(receipt.json, dict):
            fields.update(receipt.json)
        provider_id = fields.get("messageId")
        if not provider_id:
            return []
        name = str(fields.get("status") or "unknown").lower()
        status = RECEIPT_STATUSES.get(name, SENT)
        code = str(fields.get("err-code", ""))
        reason = RECEIPT_ERRORS.get(code, name) if status == FAILED else name
        return [StatusUpdate(str(provider_id), status, code, reason)]
