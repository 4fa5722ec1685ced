"""Clickatell Platform "One API".

Config: `token` = the API key (sent as `Authorization: <key>`, no "Bearer");
`url` defaults to https://platform.clickatell.com; `options.callbackSecret` = the value
Clickatell must send as `secret` in the status callback URL.

Wire format: `POST /v1/message` `{"messages": [{"channel": "sms", "to", "content",
"from"?, "clientMessageId"}]}`, up to 200 a call, answered 202 (or 207 when mixed);
status by `GET /v1/message/{apiMessageId}`; status callbacks are JSON with `messageId`,
`clientMessageId`, `status`, `statusCode`, `timestamp`.

Corrections and choices after checking the docs and client libraries:
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

# Message statuses: name -> our status.
STATUSES = {
    "QUEUED": SENT,  # accepted, waiting at Clickatell
    "SCHEDULED": SENT,  # to be sent later
    "SENT_TO_SUPPLIER": SENT,  # handed to the network
    "UNKNOWN": SENT,  # no final answer yet
    "DELIVERED_TO_GATEWAY": SENT,  # the network has it, handset not yet
    "DEVICE_ACK": DELIVERED,  # the handset acknowledged it
    "READ": DELIVERED,  # read (channels that report reads)
    "EXPIRED": FAILED,  # validity period passed before delivery
    "STOPPED": FAILED,  # stopped by the user or Clickatell
    "DELIVERY_FAILURE": FAILED,  # the network could not deliver
    "INSUFFICIENT_ACCOUNT_BALANCE": FAILED,  # credit ran out after acceptance
    "VOLUME_LIMIT_EXCEEDED": FAILED,  # account volume limit
    "VOLUME_LIMIT_PER_MINUTE_EXCEEDED": FAILED,  # per-minute volume limit
    "RECIPIENT_DOES_NOT_EXIST": FAILED,  # number not in service
    "ROUTING_ERROR": FAILED,  # no route to the network
}

# Error codes that refuse the whole request rather than one recipient.
ACCOUNT_ERRORS = {
    "1": "Invalid or missing API key",  # HTTP 401
    "20": "Out of credit",  # HTTP 402, insufficient account balance
    "22": "Too many messages in one request",  # HTTP 400
    "43": "Rate limit exceeded",  # HTTP 429
}


class ClickatellOne(HttpProvider):
    name = "ClickatellOne"
    default_url = "https://platform.clickatell.com"
    max_batch_size = 200
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
        if (
            response.status_code not in (202, 207)
            or not isinstance(answer, dict)
            or not answer.get("messages")
        ):
            raise self.request_error(response, answer)
        return match_replies(recipients, answer.get("messages") or [], count_segments(text))

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
        sms = answer.get("sms") or answer
        return self.update(provider_id, sms.get("status"), sms.get("statusCode"))

    def update(self, provider_id: str, status_name, status_code=None) -> StatusUpdate:
        name = str(status_name or "UNKNOWN").upper()
        status = STATUSES.get(name, SENT)
        code = "" if status_code is None else str(status_code)
        return StatusUpdate(provider_id, status, code or name, name)

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        self.check_receipt_secret(receipt)
        events = receipt.json if receipt.json is not None else dict(receipt.form)
        if isinstance(events, dict):
            events = [events]
        updates = []
        for event in events or []:
            if not isinstance(event, dict) or not event.get("messageId"):
                continue
            updates.append(
                self.update(str(event["messageId"]), event.get("status"), event.get("statusCode"))
            )
        return updates
