"""A webhook receiver: a real HTTP server on 127.0.0.1 that records every POST and answers
from a script (a status, "hang" until released, or "drop" the connection), checking each
signature with the Standard Webhooks reference implementation."""

import json
import threading
from collections import deque
from dataclasses import dataclass

from standardwebhooks import Webhook
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes


@dataclass
class Delivery:
    headers: dict  # lower-case names
    body: bytes
    answer: object  # what the script answered

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def verified(self, secret: str = SECRET):
        """The body, parsed, once the reference check passed (raises otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)


class Receiver:
    """Answers each POST with the next scripted answer, else `default`; records them all."""

    def __init__(self, default=200, port: int = 0):
        self.default = default
        self.script: deque = deque()
        self.deliveries: list[Delivery] = []
        self.holding = threading.Event()  # a "hang" answer is being held
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", port, self._app, threaded=True)
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def answer(self, *answers) -> "Receiver":
        self.script.extend(answers)
        return self

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._thread.join(timeout=5)

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        with self._lock:
            answer = self.script.popleft() if self.script else self.default
            headers = {name.lower(): value for name, value in request.headers.items()}
            self.deliveries.append(Delivery(headers, body, answer))
        if answer == "hang":
            self.holding.set()
            self.release.wait(60)
            answer = 200
        if isinstance(answer, tuple):  # (status, headers)
            return Response("", answer[0], answer[1])(environ, start_response)
        return Response("", answer)(environ, start_response)

    # --- what arrived ---

    def taken(self) -> list[Delivery]:
        """Deliveries answered 2xx (what the sender counts as delivered)."""
        with self._lock:
            return [d for d in self.deliveries if d.answer in (200, 204, "hang")]

    def events(self, deliveries=None) -> list[dict]:
        """Every event of these deliveries (default: all that arrived), in arrival order."""
        with self._lock:
            chosen = list(self.deliveries if deliveries is None else deliveries)
        return [event for d in chosen for event in d.verified()["data"]["events"]]
