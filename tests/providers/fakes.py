"""A fake provider: a real HTTP server on 127.0.0.1 that records every request and answers
from a script, so plugin tests exercise the exact wire format."""

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
