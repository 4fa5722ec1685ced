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
pushed as form POSTs with `id`, `status`, `phoneNumber`, `networkCode`, `failureReason`.

Corrections and choices after checking the docs and client libraries:
- Endpoint, headers, form fields and the sandbox host match Africa's Talking's "Send SMS"
  page (docs.africastalking.com/sms/sending) and the official SDKs
  (africastalking-python africastalking/SMS.py and Service.py, africastalking-node.js
  lib/sms.js); the Python SDK requires the leading `+` on every number.
- Recipient statusCodes 100/101/102 = accepted and 401-409, 500-502 = refused match the
  docs' status table as copied by Apprise (apprise/plugins africas_talking,
  AFRICAS_TALKING_HTTP_ERROR_MAP).
- A refusal is not always a 201: the SMS notifications docs show Nigeria's
  do-not-disturb window answered as HTTP 409 whose body still lists each recipient
  (statusCode 409), so the recipients are read whatever the status; and an invalid
  sender id comes back as `{"SMSMessageData": {"Message": "InvalidSenderId",
  "Recipients": []}}` (reported in medic/medic-docs#112 and teamsempo/SempoBlockchain#92),
  so an empty Recipients list refuses the batch with that Message.
- Batch size: neither the docs nor the official SDKs state a limit on recipients per
  request (the 1000 we used was never sourced; Apprise batches 50). Without `enqueue` the
  API answers only after handing every number to the networks, so a big batch makes a
  slow request whose timeout leaves all its recipients "provider outcome unknown"; we
  send at most 100 a request.
- Delivery report statuses: Sent, Submitted, Buffered (in flight), Success (delivered),
  Rejected, Failed (final) per the delivery-reports docs; the current notifications docs
  add AbsentSubscriber and Expired, mapped to failed. `failureReason` comes only with
  Rejected or Failed; `retryCount` (premium SMS only) is ignored.
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
    "AbsentSubscriber": FAILED,  # the SIM was unreachable (current notifications docs)
    "Expired": FAILED,  # discarded by the network's firewall (current notifications docs)
}


class AfricasTalking(HttpProvider):
    name = "AfricasTalking"
    default_url = "https://api.africastalking.com/version1/messaging"
    max_batch_size = 100  # no documented limit; see the module docstring
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
        data = answer.get("SMSMessageData") if isinstance(answer, dict) else None
        entries = data.get("Recipients") if isinstance(data, dict) else None
        # Recipients are read whatever the status: a 409 still lists each refusal.
        if not isinstance(entries, list) or not entries:
            raise self.request_error(response, data)
        by_number: dict[str, list[dict]] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
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

    def request_error(self, response, data) -> ProviderError:
        """The error for an answer that lists no recipient."""
        if response.status_code >= 500 or response.status_code == 429:
            return self.unavailable(response)
        code = "" if response.status_code in (200, 201) else str(response.status_code)
        # e.g. {"Message": "InvalidSenderId", "Recipients": []}
        message = str(data.get("Message") or "") if isinstance(data, dict) else ""
        reason = message or response.text.strip()[:200] or "Refused by Africa's Talking"
        return ProviderError(code, reason)

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
