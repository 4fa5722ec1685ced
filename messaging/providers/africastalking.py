"""Africa's Talking SMS.

Config: `token` = the API key; `options.username` (or `custom1`) = the app username
(`sandbox` for the sandbox, which also switches the default URL); `url` defaults to
https://api.africastalking.com/version1/messaging; `options.callbackSecret` = the value
Africa's Talking must send as `secret` in the delivery-report URL.

Wire format: form `POST` to the messaging URL with headers `apiKey` and
`Accept: application/json`, fields `username`, `to` (comma-separated +E.164),
`message`, `from`?, `bulkSMSMode=1`; answered 201 with
`SMSMessageData.Recipients[]` (`statusCode`, `number`, `status`, `messageId`, `cost`);
bad credentials are a 401 with a plain-text body. No status query: delivery reports are
pushed as form POSTs with `id`, `status`, `phoneNumber`, `failureReason`.

Corrections and choices after checking the docs and client libraries:
- Sending is not de-duplicated, so a send that may have reached Africa's Talking is
  never resent ("provider outcome unknown").
- Insufficient balance is reported per recipient (statusCode 405); when no recipient of
  a batch was accepted for that reason the batch fails as "Out of credit".
- Delivery reports carry no signature; the shared `secret` query parameter authenticates them.
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

SANDBOX_URL = "https://api.sandbox.africastalking.com/version1/messaging"

# Recipient statusCode of a send: code -> (accepted?, meaning).
RECIPIENT_CODES = {
    100: (True, "Processed"),
    101: (True, "Sent"),
    102: (True, "Queued"),
    401: (False, "Risk hold"),  # held by Africa's Talking's fraud checks
    402: (False, "Invalid sender id"),
    403: (False, "Invalid phone number"),
    404: (False, "Unsupported number type"),
    405: (False, "Insufficient balance"),  # the account is out of credit
    406: (False, "User in blacklist"),  # the recipient opted out
    407: (False, "Could not route"),
    409: (False, "Do not disturb rejection"),
    500: (False, "Internal server error"),
    501: (False, "Gateway error"),
    502: (False, "Rejected by gateway"),
}
OUT_OF_CREDIT = 405

# Delivery report status -> our status.
REPORT_STATUSES = {
    "Sent": SENT,  # handed to the network
    "Submitted": SENT,  # submitted to the operator
    "Buffered": SENT,  # queued by the operator, handset unreachable for now
    "Success": DELIVERED,  # delivered to the handset
    "Rejected": FAILED,  # refused by the network (see failureReason)
    "Failed": FAILED,  # could not be delivered (see failureReason)
    "AbsentSubscriber": FAILED,  # older accounts report the reason as the status
    "Expired": FAILED,  # validity period passed
}


class AfricasTalking(HttpProvider):
    name = "AfricasTalking"
    default_url = "https://api.africastalking.com/version1/messaging"
    max_batch_size = 1000
    can_query_status = False
    receipt_auth = "secret"

    def __init__(self, settings, **kwargs):
        super().__init__(settings, **kwargs)
        if not settings.url and self.username == "sandbox":
            self.base_url = SANDBOX_URL

    @property
    def username(self) -> str:
        return self.option("username") or self.settings.custom1

    def send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
        form = {
            "username": self.username,
            "to": ",".join(f"+{recipient.msisdn}" for recipient in recipients),
            "message": text,
            "bulkSMSMode": "1",
        }
        if sender:
            form["from"] = sender
        headers = {"apiKey": self.settings.token, "Accept": "application/json"}
        try:
            response = self.request("POST", "", data=form, headers=headers)
        except OutcomeUnknown:
            return [unknown_outcome(recipient) for recipient in recipients]
        answer = json_or_none(response)
        if response.status_code == 401:
            raise ProviderError("401", "Authentication failed")
        if response.status_code not in (200, 201) or not isinstance(answer, dict):
            if response.status_code >= 500 or response.status_code == 429:
                raise self.unavailable(response)
            reason = response.text.strip()[:200] or "Refused by Africa's Talking"
            raise ProviderError(str(response.status_code), reason)
        data = answer.get("SMSMessageData") or {}
        by_number: dict[str, list[dict]] = {}
        for entry in data.get("Recipients") or []:
            number = str(entry.get("number", "")).lstrip("+")
            by_number.setdefault(number, []).append(entry)
        segments = count_segments(text)
        results = []
        for recipient in recipients:
            found = by_number.get(recipient.msisdn)
            results.append(self.result(recipient, found.pop(0) if found else None, segments))
        if results and all(r.error_code == str(OUT_OF_CREDIT) for r in results):
            raise ProviderError(str(OUT_OF_CREDIT), "Out of credit")
        return results

    def result(self, recipient, entry, segments) -> SendResult:
        if entry is None:
            return SendResult(recipient.reference, False, reason="Not in Africa's Talking's answer")
        try:
            code = int(entry.get("statusCode"))
        except (TypeError, ValueError):
            code = 0
        accepted, meaning = RECIPIENT_CODES.get(code, (False, entry.get("status") or "Rejected"))
        if accepted and entry.get("messageId"):
            return SendResult(recipient.reference, True, entry["messageId"], segments=segments)
        return SendResult(recipient.reference, False, error_code=str(code), reason=meaning)

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        self.check_receipt_secret(receipt)
        fields = dict(receipt.form)
        if isinstance(receipt.json, dict):
            fields.update(receipt.json)
        provider_id = fields.get("id")
        name = fields.get("status") or ""
        if not provider_id:
            return []
        status = REPORT_STATUSES.get(name, SENT)
        reason = fields.get("failureReason") or name
        return [StatusUpdate(str(provider_id), status, name, reason)]
