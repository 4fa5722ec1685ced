"""Logging: to stderr and `Logfile`, every line carrying the request id.

A text log line is one record, and nothing logged can start another: control characters
(line breaks, escapes, the Unicode line separators) in a message, its arguments or an
exception's message are written escaped (`\\n`, `\\x1b`, `\\u2028`). That covers the request
path, identities, headers, provider answers and exception messages alike, whoever chose
them. A traceback keeps its own lines. JSON lines are escaped by JSON itself.
"""

import json
import logging
import re
import time
import traceback
import uuid

from flask import g, has_request_context, request

from messaging.settings import Config

log = logging.getLogger("messaging.request")

# Accept an upstream id (nginx $request_id, a UUID...) only if it is tame.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"
# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidi
# controls that can make a line read as something else.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def escape(text: str) -> str:
    """Write the control characters of `text` as escapes, so it stays on one line."""
    return CONTROL.sub(_escaped, text)


def _escaped(match: re.Match) -> str:
    char = match.group()
    if char in NAMED_ESCAPES:
        return NAMED_ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def format_exception(exc_info) -> str:
    """Format a traceback as Python does, each exception's message escaped."""
    return "".join(_traceback_lines(traceback.TracebackException(*exc_info))).rstrip("\n")


def _traceback_lines(exc: traceback.TracebackException) -> list[str]:
    lines = []
    if exc.__cause__ is not None:
        lines += [*_traceback_lines(exc.__cause__), CAUSE]
    elif exc.__context__ is not None and not exc.__suppress_context__:
        lines += [*_traceback_lines(exc.__context__), CONTEXT]
    if exc.stack:
        lines.append("Traceback (most recent call last):\n")
        lines += [line + "\n" for chunk in exc.stack.format() for line in chunk.split("\n")[:-1]]
    lines += [escape(line.rstrip("\n")) + "\n" for line in exc.format_exception_only()]
    for number, inner in enumerate(exc.exceptions or (), 1):  # an ExceptionGroup's members
        lines.append(f"sub-exception {number}:\n")
        lines += ["  " + line for line in _traceback_lines(inner)]
    return lines


class RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with everything that was logged escaped onto its line."""

    def format(self, record):
        record.message = escape(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info:
            line += "\n" + format_exception(record.exc_info)
        if record.stack_info:
            line += "\n" + "\n".join(escape(text) for text in record.stack_info.split("\n"))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record):
        line = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "request_id": getattr(record, "request_id", "-"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure(config: Config) -> None:
    """Send the service's log lines to stderr and, if set, the Logfile."""
    root = logging.getLogger("messaging")
    if getattr(root, "_messaging_configured", False):
        return
    handlers = [logging.StreamHandler()]
    if config.logfile:
        handlers.append(logging.FileHandler(config.logfile, encoding="utf-8"))
    formatter = JsonFormatter() if config.log_format == "json" else TextFormatter(TEXT_FORMAT)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False
    root._messaging_configured = True


def init_app(app, config: Config) -> None:
    configure(config)

    @app.before_request
    def assign_request_id():
        upstream = request.headers.get("X-Request-ID", "")
        g.request_id = upstream if REQUEST_ID.match(upstream) else uuid.uuid4().hex
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        identity = g.get("identity")
        log.info(
            "%s %s %s %.1fms identity=%s %s",
            request.method,
            request.path,
            response.status_code,
            (time.perf_counter() - g.get("started", time.perf_counter())) * 1000,
            (identity.name or "-") if identity else "-",
            g.get("log_summary", ""),
        )
        return response
