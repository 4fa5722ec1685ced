"""Clickatell Platform "One API".

Config: `token` = the API key (sent as `Authorization: <key>`, no "Bearer");
`url` defaults to https://platform.clickatell.com; `options.callbackSecret` = the value
Clickatell must send as `secret` in the status callback URL.

Wire format: `POST /v1/message` `{"messages": [{"channel": "sms", "to", "content",
"from"?, "clientMessageId"}]}`, up to 100 a call, answered 202 (or 207 when mixed, or 400
when every message was refused) with `messages[]` (`apiMessageId`, `accepted`, `to`,
`error`) and a request-level `error`; status by `GET /v1/message/{apiMessageId}`,
answered `{"sms": {"status", "timestamp"}}` (one entry per channel); status callbacks
are JSON with `messageId`, `clientMessageId`, `status`, `statusCode`, `timestamp`.

Corrections and choices after checking the docs and client libraries:
- Status response: docs.rs clickatell-api 0.3.0 src/one_api/message_status/response.rs
  and Clickatell's One API reference (help.clickatell.com "Query status of a message",
  OmniMessageStatusResponse) agree on one entry per channel, `{"sms": {...},
  "whatsapp": {...}}`; the reference adds that an unknown message comes back without a
  channel, so a flat `{"status", "timestamp"}` is accepted too.
- Status names: Clickatell's One API Message Status Table (docs.clickatell.com) and
  clickatell-api's Status enum use STOPPED_BY_USER, STOPPED_BY_ADMIN, EMULATED,
  VOLUME_LIMIT, VOLUME_LIMIT_DAILY and VOLUME_LIMIT_MONTHLY; the names we mapped before
  (STOPPED, VOLUME_LIMIT_EXCEEDED, VOLUME_LIMIT_PER_MINUTE_EXCEEDED, DELIVERED_TO_GATEWAY)
  appear in neither and are gone. A name we do not know falls back to its numeric
  `statusCode` family (1-4 in flight, 5-6 delivered, 20 and up failed), else stays sent.
- Send: Clickatell's "Send messages" reference says a 400 carries per-message errors
  with no request-level error (clickatell-api's own tests deserialise such a body), so
  per-recipient errors are read whatever the status; only a request-level `error`
  refuses the whole batch. Error codes and their HTTP statuses follow the One API errors
  table (as copied in zerratar/clickatell-oneapi-csharp ErrorCodes.cs and clickatell-api's
  GatewayErrorCode): 1/401 bad key, 20/402 no balance, 22/400 too many messages,
  25/400 invalid recipient, 43/400 rate limit.
- Batch size: Clickatell's "Send plain text message" page allows 200 a call but
  clickatell-api refuses more than 100 as "the gateway limit"; 100 satisfies both.
- Callbacks: Clickatell's status callback page lists flat fields; a public integration
  (scadsoftware's ClickatellWebhook DTO) receives them wrapped as
  `{"event": {"messageStatusUpdate": [...]}}`, so both are read.
- `clientMessageId` (our sms id) is echoed in callbacks but is not documented as a
  de-duplication key, so a send that may have reached Clickatell is never resent.
- Callbacks carry no signature; the shared `secret` query parameter authenticates them.
- Callbacks may repeat and arrive out of order; final statuses never move back (the
  status update only changes messages still `sent`).
"""

from messaging.errors import ProviderError
from messaging.providers.base import (
    DELIVERED,
    FAILED,
    SENT,
    Receipt,
    Recipient,
    StatusUpdate,
)
from messaging.providers.clickatell import match_replies
from messaging.providers.http import HttpProvider, OutcomeUnknown, json_or_none, unknown_outcome
from messaging.segments import count_segments

# Message statuses (One API Message Status Table; the last two only in the One API
# reference's status enum): name -> our status.
STATUSES = {
    "UNKNOWN": SENT,  # 1, not found (yet); no final answer
    "QUEUED": SENT,  # 2, accepted, waiting at Clickatell
    "SCHEDULED": SENT,  # 3, to be sent later
    "SENT_TO_SUPPLIER": SENT,  # 4, handed to the network
    "DEVICE_ACK": DELIVERED,  # 5, the handset acknowledged it
    "READ": DELIVERED,  # 6, read (channels that report reads)
    "EXPIRED": FAILED,  # 20, validity period passed before delivery
    "STOPPED_BY_USER": FAILED,  # 21, message stopped by user
    "STOPPED_BY_ADMIN": FAILED,  # 22, message stopped by admin
    "DELIVERY_FAILURE": FAILED,  # 23, the network could not deliver
    "EMULATED": FAILED,  # 24, test integration: never sent to a handset
    "INSUFFICIENT_ACCOUNT_BALANCE": FAILED,  # 25, credit ran out after acceptance
    "VOLUME_LIMIT": FAILED,  # 26, account volume limit
    "VOLUME_LIMIT_DAILY": FAILED,  # 27, daily volume limit
    "VOLUME_LIMIT_MONTHLY": FAILED,  # 28, monthly volume limit
    "RECIPIENT_DOES_NOT_EXIST": FAILED,  # 29, number not in service on the channel
    "ROUTING_ERROR": FAILED,  # 100, no route to the network
    "STOP_MARKETING_MESSAGES": FAILED,  # no code given; by its name an opt-out
    "EXCESSIVE_MESSAGES_TO_RECIPIENT": FAILED,  # no code given; too many to one number
}

RATE_LIMITED = "43"

# Numeric statusCode families, for names not in STATUSES: (lowest, highest, our status).
STATUS_CODE_FAMILIES = (
    (1, 4, SENT),  # unknown, queued, scheduled, sent to supplier
    (5, 6, DELIVERED),  # DEVICE_ACK, READ
    (20, None, FAILED),  # 20 and up are errors (generic, encryption, media, SMS, WhatsApp)
)

# Error codes that refuse the whole request rather than one recipient.
ACCOUNT_ERRORS = {
    "1": "Invalid or missing API key",  # HTTP 401
    "2": "Account is not active",  # HTTP 400
    "3": "Integration is not active",  # HTTP 400
    "7": "IP address not approved",  # HTTP 401, request from outside the allow list
    "20": "Out of credit",  # HTTP 402, insufficient account balance
    "22": "Too many messages in one request",  # HTTP 400
    "43": "Rate limit exceeded",  # HTTP 400 in the errors table; retried with backoff
}


def status_from_code(code: str) -> str | None:
    """Return our status for a One API statusCode, None outside the documented families."""
    try:
        number = int(code)
    except ValueError:
        return None
    for lowest, highest, status in STATUS_CODE_FAMILIES:
        if lowest <= number and (highest is None or number <= highest):
            return status
    return None


def status_entry(answer: dict) -> dict:
    """Pick the SMS entry of a status answer: `{"sms": {...}}`, or flat when unknown."""
    for channel in ("sms", "whatsapp"):
        if isinstance(answer.get(channel), dict):
            return answer[channel]
    return answer


def callback_events(body) -> list:
    """Return the status events of a callback body, flat or wrapped in `event`."""
    if isinstance(body, dict):
        event = body.get("event")
        if isinstance(event, dict) and isinstance(event.get("messageStatusUpdate"), list):
            return event["messageStatusUpdate"]
        return [body]
    return body if isinstance(body, list) else []


class ClickatellOne(HttpProvider):
    name = "ClickatellOne"
    default_url = "https://platform.clickatell.com"
    max_batch_size = 100
    can_query_status = True
    receipt_auth = "secret"

    def headers(self) -> dict:
        return {
            "Authorization": self.settings.token,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
        messages = []
        for recipient in recipients:
            message = {
                "channel": "sms",
                "to": recipient.msisdn,
                "content": text,
                "clientMessageId": recipient.reference,
            }
            if sender:
                message["from"] = sender
            messages.append(message)
        try:
            response = self.request(
                "POST", "/v1/message", json={"messages": messages}, headers=self.headers()
            )
        except OutcomeUnknown:
            return [unknown_outcome(recipient) for recipient in recipients]
        answer = json_or_none(response)
        replies = answer.get("messages") if isinstance(answer, dict) else None
        # Only a request-level error refuses the batch; a 400 may refuse each message instead.
        if not replies or not isinstance(replies, list) or isinstance(answer.get("error"), dict):
            raise self.request_error(response, answer)
        replies = [reply for reply in replies if isinstance(reply, dict)]
        return match_replies(recipients, replies, count_segments(text))

    def refused_for_now(self, response) -> bool:
        """Error 43 (rate limit) comes as HTTP 400, not 429: nothing was sent, so retry."""
        answer = json_or_none(response) if response.status_code == 400 else None
        error = answer.get("error") if isinstance(answer, dict) else None
        return isinstance(error, dict) and str(error.get("code", "")) == RATE_LIMITED

    def request_error(self, response, answer) -> ProviderError:
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code", ""))
            return ProviderError(code, ACCOUNT_ERRORS.get(code) or error.get("description", ""))
        if response.status_code >= 500 or response.status_code == 429:
            return self.unavailable(response)
        return ProviderError(str(response.status_code), "Unexpected answer from Clickatell")

    def query_one(self, provider_id: str) -> StatusUpdate:
        response = self.request("GET", f"/v1/message/{provider_id}", headers=self.headers())
        answer = json_or_none(response)
        if response.status_code in (401, 402) or response.status_code >= 500:
            raise self.request_error(response, answer)
        if response.status_code >= 300 or not isinstance(answer, dict):
            return StatusUpdate(provider_id, SENT, "", "Message unknown")
        entry = status_entry(answer)
        return self.update(provider_id, entry.get("status"), entry.get("statusCode"))

    def update(self, provider_id: str, status_name, status_code=None) -> StatusUpdate:
        name = str(status_name or "UNKNOWN").upper()
        code = "" if status_code is None else str(status_code)
        status = STATUSES.get(name) or status_from_code(code) or SENT
        return StatusUpdate(provider_id, status, code or name, name)

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        self.check_receipt_secret(receipt)
        body = receipt.json if receipt.json is not None else dict(receipt.form)
        updates = []
        for event in callback_events(body):
            if not isinstance(event, dict) or not event.get("messageId"):
                continue
            updates.append(
                self.update(str(event["messageId"]), event.get("status"), event.get("statusCode"))
            )
        return updates
