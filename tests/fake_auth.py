"""A fake of the original's auth service: a real HTTP server on 127.0.0.1, in a thread.

It answers `GET /auth2/check` like imqs' auth service, records the headers of every
check, and can be told to refuse, fail, answer garbage or answer too late. Also here:
`all_log_output`, which catches every line the service logs, for secret greps.
"""

import contextlib
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from messaging import logs
from messaging.config import Config

ALLOWED = {"UserId": 3618, "Identity": "joe@example.com", "Roles": ["2", "4"]}


@dataclass
class Answer:
    status: int = 200
    body: str = json.dumps(ALLOWED)
    content_type: str = "application/json"
    delay: float = 0.0  # seconds to hold the answer back (a "slow" auth service)
    headers: dict = field(default_factory=dict)


class FakeAuthService:
    """Run with `with FakeAuthService() as auth:`; `auth.url` is its base URL."""

    def __init__(self):
        self.answer = Answer()
        self.checks: list[dict[str, str]] = []  # headers of each /auth2/check, in order
        # Answers for particular callers, by their Authorization or Cookie header's value.
        self.users: dict[str, Answer] = {}
        self._released = threading.Event()  # set on stop, so a slow answer never outlives us
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    # --- scripting ---

    def allow(self, identity: str = "joe@example.com", roles=("2", "4")) -> None:
        body = {"UserId": 3618, "Identity": identity, "Roles": list(roles)}
        self.answer = Answer(body=json.dumps(body))

    def allow_user(self, credential: str, identity: str, roles=("2", "4")) -> None:
        """Allow the caller whose Authorization or Cookie is `credential`, as `identity`."""
        body = {"UserId": len(self.users) + 1, "Identity": identity, "Roles": list(roles)}
        self.users[credential] = Answer(body=json.dumps(body))

    def refuse(self, status: int = 401) -> None:
        self.answer = Answer(status=status, body="Unauthorized", content_type="text/plain")

    def fail(self, status: int = 500) -> None:
        self.answer = Answer(status=status, body="internal error", content_type="text/plain")

    def answer_with(self, body: str, content_type: str = "text/html", status: int = 200) -> None:
        self.answer = Answer(status=status, body=body, content_type=content_type)

    def slow(self, seconds: float) -> None:
        self.answer = Answer(delay=seconds)

    def set_cookie(self, cookie: str) -> None:
        """Allow, and also answer with a Set-Cookie header (a refreshed session)."""
        self.answer = Answer(headers={"Set-Cookie": cookie})

    # --- the server ---

    def _app(self, environ, start_response):
        request = Request(environ)
        if request.method != "GET" or request.path != "/auth2/check":
            return Response("not found", status=404)(environ, start_response)
        self.checks.append(dict(request.headers))
        answer = next(
            (
                self.users[value]
                for value in (request.headers.get("Authorization"), request.headers.get("Cookie"))
                if value in self.users
            ),
            self.answer,
        )
        if answer.delay:
            self._released.wait(answer.delay)
        response = Response(answer.body, status=answer.status, content_type=answer.content_type)
        for name, value in answer.headers.items():
            response.headers[name] = value
        return response(environ, start_response)

    def __enter__(self) -> "FakeAuthService":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def all_log_output(log_file: Path, caplog) -> Iterator[Callable[[], dict[str, str]]]:
    """Yield a function returning everything logged meanwhile, at DEBUG and up, by source.

    That is caplog's records (the 'messaging' logger and the root one: urllib3, werkzeug)
    plus the lines the service's own handlers write, set up afresh by logs.configure,
    to its Logfile and its stderr stream.
    """
    service_logger = logging.getLogger("messaging")
    saved = (
        service_logger.handlers[:],
        service_logger.level,
        service_logger.propagate,
        getattr(service_logger, "_messaging_configured", False),
    )
    for handler in saved[0]:
        service_logger.removeHandler(handler)
    service_logger._messaging_configured = False
    stderr = io.StringIO()
    logs.configure(Config(logfile=str(log_file)))
    ours = service_logger.handlers[:]
    for handler in ours:
        if not isinstance(handler, logging.FileHandler):
            handler.setStream(stderr)
    service_logger.setLevel(logging.DEBUG)
    service_logger.addHandler(caplog.handler)
    caplog.set_level(logging.DEBUG)
    try:
        yield lambda: {
            "caplog": caplog.text,
            "logfile": log_file.read_text(encoding="utf-8"),
            "stderr": stderr.getvalue(),
        }
    finally:
        service_logger.removeHandler(caplog.handler)
        for handler in ours:
            service_logger.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            service_logger.addHandler(handler)
        service_logger.setLevel(saved[1])
        service_logger.propagate = saved[2]
        service_logger._messaging_configured = saved[3]
