"""Twilio Programmable Messaging (REST API 2010-04-01).

Config: `token` = the Auth Token; `options.accountSid` (or `custom1`) = the Account SID;
optional `options.messagingServiceSid` (used when no sender is given),
`options.statusCallback` (sent as `StatusCallback`), and `options.callbackUrl` (the
public URL Twilio calls, when it differs from what the service sees behind a proxy).
`url` defaults to https://api.twilio.com/2010-04-01.

Wire format: HTTP Basic AccountSid:AuthToken; `POST /Accounts/{Sid}/Messages.json` with
form fields `To` (+E.164), `From` or `MessagingServiceSid`, `Body`; one recipient a
request, so a batch is sent with bounded parallelism; status by
`GET /Accounts/{Sid}/Messages/{MessageSid}.json`; status callbacks are form POSTs signed
with `X-Twilio-Signature` = base64(HMAC-SHA1(auth token, URL + each sorted key + value)).

Corrections and choices after checking the docs and client libraries:
- Twilio does not de-duplicate message creation, so a send that may have reached it
  (read timeout, 500/502/504) is never resent ("provider outcome unknown").
- Out of credit shows as error 10001 "Account is not active" (balance at or below zero);
  20003 is authentication.
"""

import base64
import hashlib
import hmac

from messaging.errors import ProviderError, ReceiptRejected
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
    "20429": "Too many requests",  # still throttled after our retries
}


class Twilio(HttpProvider):
    name = "Twilio"
    default_url = "https://api.twilio.com/2010-04-01"
    max_batch_size = 100  # recipients per call of send_batch; each is its own request
    can_query_status = True
    receipt_auth = "signature"

    @property
    def account_sid(self) -> str:
        return self.option("accountSid") or self.settings.custom1

    @property
    def auth(self) -> tuple[str, str]:
        return (self.account_sid, self.settings.token)

    def send_batch(self, recipients: list[Recipient], text: str, sender: str | None):
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
        response = self.request(
            "POST",
            f"/Accounts/{self.account_sid}/Messages.json",
            data=form,
            auth=self.auth,
            headers={"Accept": "application/json"},
        )
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
        if response.status_code >= 500 or response.status_code == 429:
            raise self.unavailable(response)
        return SendResult(recipient.reference, False, error_code=code, reason=message)

    @staticmethod
    def error_of(response, answer) -> tuple[str, str]:
        if isinstance(answer, dict) and answer.get("code") is not None:
            return str(answer["code"]), str(answer.get("message") or "Rejected")
        return str(response.status_code), "Unexpected answer from Twilio"

    def query_one(self, provider_id: str) -> StatusUpdate:
        response = self.request(
            "GET",
            f"/Accounts/{self.account_sid}/Messages/{provider_id}.json",
            auth=self.auth,
            headers={"Accept": "application/json"},
        )
        answer = json_or_none(response)
        if response.status_code != 200 or not isinstance(answer, dict):
            code, message = self.error_of(response, answer)
            if response.status_code == 404:
                return StatusUpdate(provider_id, FAILED, code, message)
            if response.status_code >= 500 or response.status_code == 429:
                raise self.unavailable(response)
            raise ProviderError(code, ACCOUNT_ERRORS.get(code, message))
        return self.update(
            provider_id, answer.get("status"), answer.get("error_code"), answer.get("error_message")
        )

    def update(self, provider_id, status_name, error_code=None, error_message=None):
        name = str(status_name or "").lower()
        status = STATUSES.get(name, SENT)
        code = "" if error_code in (None, "") else str(error_code)
        return StatusUpdate(provider_id, status, code, error_message or name)

    def signature(self, url: str, form) -> str:
        """Return the X-Twilio-Signature Twilio computes for a form POST to `url`."""
        payload = url + "".join(f"{key}{form[key]}" for key in sorted(form))
        digest = hmac.new(self.settings.token.encode(), payload.encode(), hashlib.sha1).digest()
        return base64.b64encode(digest).decode()

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        given = receipt.headers.get("X-Twilio-Signature", "")
        url = self.option("callbackUrl") or receipt.url
        # The signature covers the URL (query string included) and the POSTed fields only.
        query = url.partition("?")[2]
        query_keys = {pair.partition("=")[0] for pair in query.split("&") if pair}
        posted = {key: value for key, value in receipt.form.items() if key not in query_keys}
        if not given or not hmac.compare_digest(given, self.signature(url, posted)):
            raise ReceiptRejected("Twilio: X-Twilio-Signature does not match")
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
