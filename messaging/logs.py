"""Logging: to stderr and `Logfile`, every line carrying the request id."""

import json
import logging
import re
import time
import uuid

from flask import g, has_request_context, request

from messaging.settings import Config

log = logging.getLogger("messaging.request")

# Accept an upstream id (nginx $request_id, a UUID...) only if it is tame.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    def filter(self, record):
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


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
    formatter = JsonFormatter() if config.log_format == "json" else logging.Formatter(TEXT_FORMAT)
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
