"""Africa's Talking SMS.

Config: `token` = the API key; `options.username` (or `custom1`) = the app's username
(`sandbox` selects the sandbox host); `url` defaults to
https://api.africastalking.com/version1/messaging; `options.callbackSecret` = the value
Africa's Talking must send as `secret` in the delivery-report URL.

Wire format (Africa's Talking's "Send SMS" and delivery-report pages,
docs.africastalking.com/sms; the official SDKs africastalking-python SMS.py and
africastalking-node.js lib/sms.js agree):
- Every request: headers `apiKey: <key>` and `Accept: application/json`; the sandbox
  host is https://api.sandbox.africastalking.com/version1/messaging.
- Send: form `POST` to the messaging URL with `username`, `to` (comma-separated
  +E.164; the Python SDK insists on the `+`), `message`, `from`?, `bulkSMSMode=1`.
  Answered 201 `{"SMSMessageData": {"Message", "Recipients": [{"statusCode", "number",
  "status", "cost", "messageId"}]}}`. Recipient statusCodes 100-102 are accepted,
  401-409 and 500-502 refused (RECIPIENT_CODES, as copied by Apprise's
  AFRICAS_TALKING_HTTP_ERROR_MAP); 405 is insufficient balance, so a batch nobody was
  accepted from for that reason is "Out of credit". A refusal may come with another
  status whose body still lists each recipient (the SMS notifications docs: HTTP 409
  for Nigeria's do-not-disturb window), and a refused sender id as `{"SMSMessageData":
  {"Message": "InvalidSenderId", "Recipients": []}}` (medic/medic-docs#112). Bad
  credentials are a 401 with a plain-text body.
- No documented limit on recipients a request; without `enqueue` the answer comes only
  after every number was handed on, so a batch is kept to 100 to keep each request, and
  its timeout, short.
- No status query. Delivery reports are form POSTs of `id`, `status`, `phoneNumber`,
  `networkCode`, `failureReason` (with Rejected or Failed), `retryCount` (premium only);
  statuses in REPORT_STATUSES. They carry no signature: the `secret` query parameter
  we give Africa's Talking in the report URL authenticates them.
- Replies (the "Incoming messages" notification of Africa's Talking's SMS notifications
  docs; the fields as their own two-way SMS examples read them): form POSTs of `date`,
  `from`, `id`, `linkId`, `text`, `to` (our short code), `networkCode`, authenticated by
  the same `secret` query parameter.
- A recipient on the account's blacklist (it opted out) is refused at sending with
  statusCode 406, "UserInBlacklist": OPT_OUT_CODES.
- Sending is not de-duplicated, so a send that may have reached Africa's Talking is not
  resent.
- Failure kinds: the send statusCodes' meanings (SEND_FAILURE_KINDS), and the delivery
  report's `failureReason` (or status) as its delivery-reports page describes them
  (FAILURE_REASON_KINDS: "UserIsInactive ... the account deactivated by the MSP",
  "UserInBlackList", "DeliveryFailure ... for any reason not listed").
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
# Recipient statusCodes that mean it opted out.
OPT_OUT_CODES = frozenset({"406"})  # "UserInBlacklist"
# Recipient statusCodes of a refusal -> the failure's kind.
SEND_FAILURE_KINDS = {
    401: TEMPORARY,  # risk hold: may be released
    403: PERMANENT,  # invalid phone number
    404: PERMANENT,  # unsupported number type
    405: TEMPORARY,  # the account is out of credit
    406: PERMANENT,  # the recipient opted out
    407: PERMANENT,  # no route to the number
    409: TEMPORARY,  # do-not-disturb window (e.g. Nigeria's at night)
    500: TEMPORARY,  # internal server error
    501: TEMPORARY,  # gateway error
    502: PERMANENT,  # rejected by the gateway
}

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

# A delivery report's failureReason (else its status) -> the failure's kind.
FAILURE_REASON_KINDS = {
    "InsufficientCredit": TEMPORARY,  # the subscriber lacks airtime (premium services)
    "InvalidLinkId": PERMANENT,  # an on-demand reply with a bad linkId
    "UserIsInactive": PERMANENT,  # the subscriber's account was deactivated
    "UserInBlackList": PERMANENT,  # blacklisted for this sender or keyword
    "UserAccountSuspended": PERMANENT,  # suspended by the network
    "NotNetworkSubscriber": PERMANENT,  # not a subscriber of that network
    "UserNotSubscribedToProduct": PERMANENT,  # premium: not subscribed
    "UserDoesNotExist": PERMANENT,  # no such subscriber
    "DeliveryFailure": TEMPORARY,  # any other reason, or none given
    "AbsentSubscriber": TEMPORARY,  # the SIM was unreachable
    "Expired": TEMPORARY,  # discarded before it could be delivered
}


class AfricasTalking(HttpProvider):
    name = "AfricasTalking"
    default_url = "https://api.africastalking.com/version1/messaging"
    max_batch_size = 100  # no documented limit; see the module docstring
    takes_receipts = True
    takes_inbound = True
    opt_out_codes = OPT_OUT_CODES

    def __init__(self, settings, **kwargs):
        super().__init__(settings, **kwargs)
        if not settings.url and self.username == "sandbox":
            self.base_url = SANDBOX_URL

    def headers(self) -> dict:
        return {"apiKey": self.settings.token, "Accept": "application/json"}

    @property
    def username(self) -> str:
        return self.option("username") or self.settings.custom1

    def try_send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
        form = {
            "username": self.username,
            "to": ",".join(f"+{recipient.msisdn}" for recipient in recipients),
            "message": text,
            "bulkSMSMode": "1",
        }
        if sender:
            form["from"] = sender
        response = self.request("POST", "", data=form)
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
        return SendResult(
            recipient.reference,
            False,
            error_code=str(code),
            reason=meaning,
            failure_kind=SEND_FAILURE_KINDS.get(code),
        )

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        self.check_receipt_secret(receipt)
        fields = receipt.fields()
        provider_id = fields.get("id")
        name = fields.get("status") or ""
        if not provider_id:
            return []
        status = REPORT_STATUSES.get(name, SENT)
        reason = fields.get("failureReason") or name
        kind = FAILURE_REASON_KINDS.get(reason) if status == FAILED else None
        return [StatusUpdate(str(provider_id), status, name, reason, kind)]

    def parse_inbound(self, receipt: Receipt) -> list[InboundMessage]:
        self.check_receipt_secret(receipt)
        return reply_from_fields(receipt, "id", "from", "to", "text")
