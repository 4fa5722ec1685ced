"""A fake provider: a real HTTP server on 127.0.0.1 that records every request and answers
from a script, so plugin tests exercise the exact wire format."""

import base64
import hashlib
import hmac
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    form: dict = field(default_factory=dict)
    remote_addr: str = ""  # the caller's address: which host sent it

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def basic_auth(self):
        auth = Request({"HTTP_AUTHORIZATION": self.headers.get("Authorization", "")}).authorization
        return (auth.username, auth.password) if auth else None


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict/list -> JSON; str -> text
    headers: dict = field(default_factory=dict)
    hang: bool = False  # never answer until the fake stops (a read timeout)


class FakeProvider:
    """Answer each request with the next scripted reply, else with `default(recorded)`."""

    def __init__(self, host: str = "127.0.0.1"):
        self.requests: list[Recorded] = []
        self.script: deque[Reply] = deque()
        self.default = None
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = make_server(host, 0, self._app, threaded=True)
        self.url = f"http://{host}:{self._server.server_port}"
        # A short poll interval, so stopping the server does not cost each test half a second.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def reply(self, status=200, body=None, headers=None, hang=False) -> "FakeProvider":
        self.script.append(Reply(status, body, headers or {}, hang))
        return self

    def stop(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._thread.join(timeout=5)

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        form = {}
        if request.mimetype == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        recorded = Recorded(
            request.method,
            request.path,
            dict(request.args),
            dict(request.headers),
            body,
            form,
            request.remote_addr or "",
        )
        with self._lock:
            self.requests.append(recorded)
            reply = self.script.popleft() if self.script else None
        if reply is None:
            reply = self.default(recorded) if self.default else Reply(404, {"error": "unscripted"})
        if reply.hang:
            self._release.wait(30)
        if isinstance(reply.body, dict | list):
            payload, mimetype = json.dumps(reply.body), "application/json"
        else:
            payload, mimetype = reply.body or "", "text/plain"
        return Response(payload, reply.status, reply.headers, mimetype=mimetype)(
            environ, start_response
        )


# --- each provider accepting every recipient, in its documented answer; the provider id
# ends in the number's last digit ---


def clickatell_accepts(request) -> Reply:
    """POST /rest/message: 202, one accepted entry per number."""
    numbers = request.json["to"]
    entries = [{"accepted": True, "to": n, "apiMessageId": f"c{n[-1]}"} for n in numbers]
    return Reply(202, {"data": {"message": entries}})


def clickatell_one_accepts(request) -> Reply:
    """POST /v1/message: 202, one accepted entry per message."""
    entries = [
        {"apiMessageId": f"o{m['to'][-1]}", "accepted": True, "to": m["to"], "error": None}
        for m in request.json["messages"]
    ]
    return Reply(202, {"messages": entries, "error": None})


def twilio_accepts(request) -> Reply:
    """POST .../Messages.json: 201, the created message."""
    to = request.form["To"]
    message = {"sid": f"SM{to[-1]}", "to": to, "status": "queued", "error_code": None}
    return Reply(201, {**message, "num_segments": "1"})


def bulksms_accepts(request) -> Reply:
    """POST /messages: 201, the list of messages, each ACCEPTED."""
    return Reply(
        201,
        [
            {
                "id": entry["to"][-1],
                "type": "SENT",
                "to": entry["to"],
                "body": entry["body"],
                "userSuppliedId": entry["userSuppliedId"],
                "status": {"id": "ACCEPTED.null", "type": "ACCEPTED"},
            }
            for entry in request.json
        ],
    )


def africastalking_accepts(request) -> Reply:
    """POST (form): 201, one Recipients entry per number, statusCode 101."""
    numbers = request.form["to"].split(",")
    entries = [
        {
            "statusCode": 101,
            "number": n,
            "status": "Success",
            "cost": "KES 0.8000",
            "messageId": f"AT{n[-1]}",
        }
        for n in numbers
    ]
    message = f"Sent to {len(numbers)}/{len(numbers)} Total Cost: KES 0.8000"
    return Reply(201, {"SMSMessageData": {"Message": message, "Recipients": entries}})


def vonage_accepts(request) -> Reply:
    """POST /sms/json: 200, one message with status "0"."""
    to = request.form["to"]
    message = {"to": to, "message-id": f"V{to[-1]}", "status": "0", "remaining-balance": "3.14"}
    return Reply(200, {"message-count": "1", "messages": [message]})


ACCEPTS = {
    "Clickatell": clickatell_accepts,
    "ClickatellOne": clickatell_one_accepts,
    "Twilio": twilio_accepts,
    "BulkSMS": bulksms_accepts,
    "AfricasTalking": africastalking_accepts,
    "Vonage": vonage_accepts,
}


# --- what each provider pushes to POST /callbacks/<name>/inbound for a reply (MO message),
# in its documented wire format: keyword arguments for the test client's `open` ---


def twilio_signature(url: str, form: dict, token: str) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + each key and value, sorted))."""
    payload = url + "".join(key + form[key] for key in sorted(form))
    return base64.b64encode(
        hmac.new(token.encode(), payload.encode(), hashlib.sha1).digest()
    ).decode()


def twilio_inbound(sid, sender, text, token, url="http://localhost/callbacks/Twilio/inbound"):
    """The incoming message webhook: a signed form POST."""
    form = {
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "MessagingServiceSid": "MG790b6bd09f119b54ffb7f03b8841b1c9",
        "From": sender,
        "To": "+15005550006",
        "Body": text,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    return {"data": form, "headers": {"X-Twilio-Signature": twilio_signature(url, form, token)}}


def vonage_inbound(message_id, sender, text, secret):
    """Inbound SMS: JSON POST (our `secret` in the query string)."""
    body = {
        "msisdn": sender,
        "to": "447700900000",
        "messageId": message_id,
        "text": text,
        "type": "text",
        "keyword": text.split()[0].upper() if text.split() else "",
        "message-timestamp": "2026-01-01 12:00:00",
        "timestamp": "1767268800",
    }
    return {"json": body, "query_string": {"secret": secret}}


def bulksms_inbound(message_id, sender, text, secret):
    """The RECEIVED-messages webhook: a JSON list of message objects."""
    message = {
        "id": message_id,
        "type": "RECEIVED",
        "from": sender,
        "to": "27820000000",
        "body": text,
        "encoding": "TEXT",
        "protocolId": 0,
        "messageClass": 0,
        "numberOfParts": 1,
        "creditCost": 0,
        "submission": {"id": "2-00000000000000000000", "date": "2026-01-01T12:00:00Z"},
        "status": {"id": "ACCEPTED.null", "type": "ACCEPTED"},
    }
    return {"json": [message], "query_string": {"secret": secret}}


def africastalking_inbound(message_id, sender, text, secret):
    """Incoming message notification: a form POST."""
    form = {
        "date": "2026-01-01T12:00:00.000Z",
        "from": sender,
        "id": message_id,
        "linkId": "SampleLinkId123",
        "text": text,
        "to": "28901",
        "networkCode": "63902",
    }
    return {"data": form, "query_string": {"secret": secret}}


def clickatell_inbound(message_id, sender, text, secret):
    """Two-way reply path: a form POST."""
    form = {
        "api_id": "3523864",
        "moMsgId": message_id,
        "from": sender,
        "to": "447860024227",
        "timestamp": "2026-01-01 12:00:00",
        "text": text,
        "charset": "ISO-8859-1",
        "udh": "",
    }
    return {"data": form, "query_string": {"secret": secret}}


def clickatell_one_inbound(message_id, sender, text, secret):
    """The Platform's reply callback: JSON."""
    body = {
        "integrationId": "4f7d2a",
        "messageId": message_id,
        "replyMessageId": "77fb0c",
        "apiKey": "key",
        "fromNumber": sender,
        "toNumber": "27820000000",
        "timestamp": 1767268800000,
        "text": text,
        "charset": "UTF-8",
        "udh": "",
        "network": "MTN",
        "keyword": text.split()[0].upper() if text.split() else "",
    }
    return {"json": body, "query_string": {"secret": secret}}


INBOUND = {
    "Vonage": vonage_inbound,
    "BulkSMS": bulksms_inbound,
    "AfricasTalking": africastalking_inbound,
    "Clickatell": clickatell_inbound,
    "ClickatellOne": clickatell_one_inbound,
}
