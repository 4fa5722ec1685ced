"""Clickatell Platform "One API".

Config: `token` = the API key; `url` defaults to https://platform.clickatell.com;
`options.callbackSecret` = the value Clickatell must send as `secret` in the status
callback URL.

Wire format (Clickatell's One API reference, docs.clickatell.com; the clickatell-api
crate, docs.rs 0.3.0, for the types):
- Every request: `Authorization: <API key>` (no "Bearer"), JSON in and out.
- Send: `POST /v1/message` `{"messages": [{"channel": "sms", "to", "content", "from"?,
  "clientMessageId"}]}`, at most 100 messages (the reference allows 200 a call,
  clickatell-api refuses more than 100 as the gateway limit). Answered 202 (all
  accepted), 207 (mixed) or 400 (none) with `{"messages": [{"apiMessageId", "accepted",
  "to", "error"}], "error"}`: per-message errors whatever the status, a request-level
  `error` only when the whole request was refused. Errors are `{"code", "description"}`
  (One API errors table, also in zerratar/clickatell-oneapi-csharp ErrorCodes.cs):
  1/401 bad key, 20/402 no balance, 22/400 too many messages, 25/400 invalid
  recipient, 43/400 rate limit (refused for now, so retried like a 429).
- Status: `GET /v1/message/{apiMessageId}`, answered with one entry per channel,
  `{"sms": {"status", "statusCode"?, "timestamp"}, "whatsapp": {...}}`, or flat
  `{"status", "timestamp"}` for a message not known (One API reference,
  OmniMessageStatusResponse). Status names are in STATUSES (One API Message Status
  Table); a name not listed is mapped by its numeric `statusCode` family.
- Status callbacks: JSON `messageId`, `clientMessageId`, `to`, `from`, `statusCode`,
  `status`, `statusDescription`, `timestamp` (ms), flat (Clickatell's status callback
  page) or wrapped as `{"event": {"messageStatusUpdate": [...]}}` (as scadsoftware's
  ClickatellWebhook receives them). They may repeat and arrive out of order, and carry
  no signature: the `secret` query parameter authenticates them.
- Replies: JSON, the Platform's reply callback `{"integrationId", "messageId",
  "replyMessageId", "apiKey", "fromNumber", "toNumber", "timestamp", "text", "charset",
  "udh", "network", "keyword"}` (the fields clickatell/clickatell-php's
  Rest::parseReplyCallback requires), or One API's `{"event": {"moText": [{"channel",
  "messageId", "from", "to", "content", "timestamp", ...}]}}` (as applications receiving
  them read it); the same `secret` query parameter authenticates them. An opt-out is
  reported as a status (STOPPED_BY_USER), not at sending, so no send error here means one.
- `clientMessageId` (our sms id) is echoed in callbacks but de-duplicates nothing, so a
  send that may have reached Clickatell is not resent.
- Failure kinds: the errors table ("One API: Error messages": 25 invalid recipient
  address, 26 recipient opted out, 27 not available on the channel) for refusals at send
  (SEND_FAILURE_KINDS), the Message Status Table's names for later failures
  (STATUS_FAILURE_KINDS: RECIPIENT_DOES_NOT_EXIST, ROUTING_ERROR and the stops are
  permanent; EXPIRED, DELIVERY_FAILURE and the account's limits temporary).
"""

from messaging.providers.base import (
    DELIVERED,
    FAILED,
    PERMANENT,
    SENT,
    TEMPORARY,
    InboundMessage,
    Receipt,
    Recipient,
    StatusUpdate,
)
from messaging.providers.clickatell import answer_error, match_replies, refusal
from messaging.providers.http import HttpProvider, json_or_none
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

# Status names of a failure -> its kind.
STATUS_FAILURE_KINDS = {
    "EXPIRED": TEMPORARY,  # the handset stayed out of reach for the validity period
    "STOPPED_BY_USER": PERMANENT,
    "STOPPED_BY_ADMIN": PERMANENT,
    "DELIVERY_FAILURE": TEMPORARY,  # the network could not deliver it this time
    "EMULATED": PERMANENT,  # a test integration never sends to a handset
    "INSUFFICIENT_ACCOUNT_BALANCE": TEMPORARY,
    "VOLUME_LIMIT": TEMPORARY,
    "VOLUME_LIMIT_DAILY": TEMPORARY,
    "VOLUME_LIMIT_MONTHLY": TEMPORARY,
    "RECIPIENT_DOES_NOT_EXIST": PERMANENT,
    "ROUTING_ERROR": PERMANENT,
    "STOP_MARKETING_MESSAGES": PERMANENT,  # an opt-out
    "EXCESSIVE_MESSAGES_TO_RECIPIENT": TEMPORARY,
}
# Error codes refusing one message at send -> the failure's kind.
SEND_FAILURE_KINDS = {
    "25": PERMANENT,  # invalid recipient address
    "26": PERMANENT,  # the recipient opted out
    "27": PERMANENT,  # the recipient is not available on the SMS channel
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
    "43": "Rate limit exceeded",  # HTTP 400 in the errors table; refused for now
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


def reply_events(body) -> list[dict]:
    """Return the replies of a reply callback: One API's `event.moText`, else the flat one."""
    event = body.get("event") if isinstance(body, dict) else None
    if isinstance(event, dict) and isinstance(event.get("moText"), list):
        return [
            {
                "id": item.get("messageId"),
                "from": item.get("from"),
                "to": item.get("to"),
                "text": item.get("content"),
            }
            for item in event["moText"]
            if isinstance(item, dict)
        ]
    if not isinstance(body, dict):
        return []
    return [
        {
            "id": body.get("messageId"),
            "from": body.get("fromNumber"),
            "to": body.get("toNumber"),
            "text": body.get("text"),
        }
    ]


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
    takes_receipts = True
    takes_inbound = True

    def headers(self) -> dict:
        return {
            "Authorization": self.settings.token,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }

    def try_send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
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
        response = self.request("POST", "/v1/message", json={"messages": messages})
        answer = json_or_none(response)
        replies = answer.get("messages") if isinstance(answer, dict) else None
        # Only a request-level error refuses the batch; a 400 may refuse each message instead.
        error = answer_error(answer, ACCOUNT_ERRORS)
        if error or not replies or not isinstance(replies, list):
            raise refusal(response, error)
        replies = [reply for reply in replies if isinstance(reply, dict)]
        return match_replies(recipients, replies, count_segments(text), SEND_FAILURE_KINDS)

    def refused_for_now(self, response) -> bool:
        """Error 43 (rate limit) comes as HTTP 400, not 429: nothing was sent, so retry."""
        error = answer_error(json_or_none(response), {}) if response.status_code == 400 else None
        return error is not None and error[0] == RATE_LIMITED

    def unavailable_reason(self, response) -> tuple[str, str]:
        error = answer_error(json_or_none(response), ACCOUNT_ERRORS)
        return error or super().unavailable_reason(response)

    def query_one(self, provider_id: str) -> StatusUpdate:
        response = self.request("GET", f"/v1/message/{provider_id}")
        answer = json_or_none(response)
        if response.status_code in (401, 402):
            raise refusal(response, answer_error(answer, ACCOUNT_ERRORS))
        if response.status_code >= 300 or not isinstance(answer, dict):
            return StatusUpdate(provider_id, SENT, "", "Message unknown")
        entry = status_entry(answer)
        return self.update(provider_id, entry.get("status"), entry.get("statusCode"))

    def update(self, provider_id: str, status_name, status_code=None) -> StatusUpdate:
        name = str(status_name or "UNKNOWN").upper()
        code = "" if status_code is None else str(status_code)
        status = STATUSES.get(name) or status_from_code(code) or SENT
        kind = STATUS_FAILURE_KINDS.get(name) if status == FAILED else None
        return StatusUpdate(provider_id, status, code or name, name, kind)

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

    def parse_inbound(self, receipt: Receipt) -> list[InboundMessage]:
        self.check_receipt_secret(receipt)
        return [
            InboundMessage(
                str(reply["id"]),
                str(reply["from"] or ""),
                str(reply["to"] or ""),
                str(reply["text"] or ""),
            )
            for reply in reply_events(receipt.json)
            if reply["id"]
        ]
