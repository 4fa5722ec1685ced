"""Twilio Programmable Messaging (REST API 2010-04-01).

Config: `token` = the Auth Token; `options.accountSid` (or `custom1`) = the Account SID;
optional `options.messagingServiceSid` (used when no sender is given),
`options.statusCallback` (sent as `StatusCallback`), and `options.callbackUrl` and
`options.inboundUrl` (the public URLs Twilio calls for receipts and for replies, when they
differ from what the service sees behind a proxy).
`url` defaults to https://api.twilio.com/2010-04-01.

Wire format (Twilio's OpenAPI for 2010-04-01, provider-specs/twilio_api_v2010.json, and
its Messages resource docs):
- Every request: HTTP Basic AccountSid:AuthToken, JSON answers.
- Send: `POST /Accounts/{Sid}/Messages.json`, form fields `To` (+E.164), `From` or
  `MessagingServiceSid`, `Body`, `StatusCallback`?; one recipient a request (a batch
  goes out with bounded parallelism). Answered 201 `{"sid": "SM...", "to", "status",
  "error_code", "num_segments", ...}`; errors `{"code", "message", "more_info",
  "status"}`: 21211 invalid To (400), 20003 authentication (401), 10001 account not
  active, i.e. balance at or below zero, 20429 too many requests (429).
- Status: `GET /Accounts/{Sid}/Messages/{MessageSid}.json`, the same message object;
  `status` names in STATUSES.
- Status callbacks: form POSTs of `MessageSid`, `MessageStatus`, `ErrorCode`, `To`,
  `From`, `AccountSid`, signed with `X-Twilio-Signature` = base64(HMAC-SHA1(auth
  token, the full URL + each POSTed key and value, keys sorted)).
- Replies: the incoming message webhook (Twilio's "Twilio's request to your incoming
  message Webhook URL", twilio.com/docs/messaging/guides/webhook-request) is a form POST
  of `MessageSid`, `SmsSid`, `AccountSid`, `MessagingServiceSid`, `From`, `To`, `Body`,
  `NumMedia`, `NumSegments` (and `OptOutType` with Advanced Opt-Out), signed like the
  status callbacks.
- A recipient who replied STOP is refused at sending with error 21610, "Attempt to send
  to unsubscribed recipient" (twilio.com/docs/api/errors/21610): OPT_OUT_CODES.
- Twilio does not de-duplicate message creation, so a send that may have reached it
  (read timeout, 500/502/504) is not resent.
- Failure kinds (FAILURE_KINDS): Twilio's error pages, twilio.com/docs/api/errors/<code>
  (30003 "the device is powered off, has no service ... or is otherwise temporarily
  unreachable"; 30005 unknown, inactive or no longer in service; 30006 landline), one
  code space for send refusals and delivery failures alike.
"""

import base64
import hashlib
import hmac

from messaging.errors import ProviderError, ReceiptRejected
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
from messaging.providers.http import HttpProvider, json_or_none

# Message statuses: name -> our status.
STATUSES = {
    "accepted": SENT,  # a Messaging Service took it
    "scheduled": SENT,  # to be sent later
    "queued": SENT,  # waiting to be sent
    "sending": SENT,  # being handed to the carrier
    "sent": SENT,  # the carrier took it
    "delivered": DELIVERED,  # the carrier confirmed delivery
    "read": DELIVERED,  # read receipt (channels that report reads)
    "partially_delivered": SENT,  # some parts delivered; wait for the rest
    "undelivered": FAILED,  # the carrier could not deliver
    "failed": FAILED,  # Twilio could not send it
    "canceled": FAILED,  # a scheduled message was cancelled
}

# Error codes that refuse every request of the account, not one recipient.
ACCOUNT_ERRORS = {
    "20003": "Authentication failed",  # HTTP 401, wrong SID or token
    "20005": "Account not active",  # suspended or closed
    "10001": "Out of credit",  # "Account is not active": balance at or below zero
    "20403": "Forbidden",  # the account lacks API permission
}
# Error codes of one recipient's failure (refused at send, or undelivered) -> its kind.
FAILURE_KINDS = {
    "21211": PERMANENT,  # invalid 'To' number
    "21610": PERMANENT,  # the recipient unsubscribed (replied STOP)
    "21612": PERMANENT,  # 'To' cannot be reached from this sender (unroutable)
    "21614": PERMANENT,  # 'To' is not a mobile number
    "30001": TEMPORARY,  # queue overflow: sent too fast, expired in Twilio's queue
    "30002": TEMPORARY,  # account suspended
    "30003": TEMPORARY,  # unreachable handset: off, no signal, roaming off-network
    "30004": PERMANENT,  # message blocked (by the recipient or their carrier)
    "30005": PERMANENT,  # unknown destination handset: not (or no longer) in service
    "30006": PERMANENT,  # landline or unreachable carrier
    "30007": PERMANENT,  # filtered by the carrier as spam
    "30008": TEMPORARY,  # unknown error; Twilio suggests sending again
    "30010": TEMPORARY,  # price over the account's maximum
}
# Error code of a 429: retried, and reported unavailable if it lasts.
TOO_MANY_REQUESTS = "20429"
# Error codes of a refused recipient that mean it opted out.
OPT_OUT_CODES = frozenset(
    {
        "21610",  # "Attempt to send to unsubscribed recipient": it replied STOP
    }
)


class Twilio(HttpProvider):
    name = "Twilio"
    default_url = "https://api.twilio.com/2010-04-01"
    max_batch_size = 100  # recipients per call of send_batch; each is its own request
    can_query_status = True
    takes_receipts = True
    takes_inbound = True
    opt_out_codes = OPT_OUT_CODES

    @property
    def account_sid(self) -> str:
        return self.option("accountSid") or self.settings.custom1

    def auth(self) -> tuple[str, str]:
        return (self.account_sid, self.settings.token)

    def headers(self) -> dict:
        return {"Accept": "application/json"}

    def try_send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
        if not self.account_sid:
            raise ProviderError("", "smsProvider.options.accountSid is not set")
        return self.send_each(recipients, lambda recipient: self.send_one(recipient, text, sender))

    def send_one(self, recipient: Recipient, text: str, sender: str | None) -> SendResult:
        form = {"To": f"+{recipient.msisdn}", "Body": text}
        service = self.option("messagingServiceSid")
        if sender:
            form["From"] = sender
        elif service:
            form["MessagingServiceSid"] = service
        callback = self.option("statusCallback")
        if callback:
            form["StatusCallback"] = callback
        response = self.request("POST", f"/Accounts/{self.account_sid}/Messages.json", data=form)
        answer = json_or_none(response)
        if response.status_code == 201 and isinstance(answer, dict) and answer.get("sid"):
            segments = answer.get("num_segments")
            return SendResult(
                recipient.reference,
                True,
                answer["sid"],
                segments=int(segments) if str(segments or "").isdigit() else None,
            )
        code, message = self.error_of(response, answer)
        if code in ACCOUNT_ERRORS or response.status_code in (401, 403):
            raise ProviderError(code, ACCOUNT_ERRORS.get(code, message))
        return SendResult(
            recipient.reference,
            False,
            error_code=code,
            reason=message,
            failure_kind=FAILURE_KINDS.get(code),
        )

    @staticmethod
    def error_of(response, answer) -> tuple[str, str]:
        if isinstance(answer, dict) and answer.get("code") is not None:
            return str(answer["code"]), str(answer.get("message") or "Rejected")
        return str(response.status_code), "Unexpected answer from Twilio"

    def unavailable_reason(self, response) -> tuple[str, str]:
        code, _ = self.error_of(response, json_or_none(response))
        if code == TOO_MANY_REQUESTS:
            return code, "Too many requests"
        return super().unavailable_reason(response)

    def query_one(self, provider_id: str) -> StatusUpdate:
        response = self.request("GET", f"/Accounts/{self.account_sid}/Messages/{provider_id}.json")
        answer = json_or_none(response)
        if response.status_code != 200 or not isinstance(answer, dict):
            code, message = self.error_of(response, answer)
            if response.status_code == 404:
                return StatusUpdate(provider_id, FAILED, code, message)
            raise ProviderError(code, ACCOUNT_ERRORS.get(code, message))
        return self.update(
            provider_id, answer.get("status"), answer.get("error_code"), answer.get("error_message")
        )

    def update(self, provider_id, status_name, error_code=None, error_message=None):
        name = str(status_name or "").lower()
        status = STATUSES.get(name, SENT)
        code = "" if error_code in (None, "") else str(error_code)
        kind = FAILURE_KINDS.get(code) if status == FAILED else None
        return StatusUpdate(provider_id, status, code, error_message or name, kind)

    def signature(self, url: str, form) -> str:
        """Return the X-Twilio-Signature Twilio computes for a form POST to `url`."""
        payload = url + "".join(f"{key}{form[key]}" for key in sorted(form))
        digest = hmac.new(self.settings.token.encode(), payload.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def check_signature(self, receipt: Receipt, public_url: str) -> None:
        """Refuse a pushed request whose X-Twilio-Signature does not match."""
        given = receipt.headers.get("X-Twilio-Signature", "")
        url = public_url or receipt.url
        # The signature covers the URL (query string included) and the POSTed fields only.
        query = url.partition("?")[2]
        query_keys = {pair.partition("=")[0] for pair in query.split("&") if pair}
        posted = {key: value for key, value in receipt.form.items() if key not in query_keys}
        if not given or not hmac.compare_digest(given, self.signature(url, posted)):
            raise ReceiptRejected("Twilio: X-Twilio-Signature does not match")

    def parse_inbound(self, receipt: Receipt) -> list[InboundMessage]:
        self.check_signature(receipt, self.option("inboundUrl"))
        form = receipt.form
        sid = form.get("MessageSid") or form.get("SmsSid")
        if not sid:
            return []
        return [InboundMessage(sid, form.get("From", ""), form.get("To", ""), form.get("Body", ""))]

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        self.check_signature(receipt, self.option("callbackUrl"))
        sid = receipt.form.get("MessageSid") or receipt.form.get("SmsSid")
        if not sid:
            return []
        return [
            self.update(
                sid,
                receipt.form.get("MessageStatus") or receipt.form.get("SmsStatus"),
                receipt.form.get("ErrorCode"),
                receipt.form.get("ErrorMessage"),
            )
        ]
