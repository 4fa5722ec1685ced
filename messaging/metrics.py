"""Prometheus metrics: HTTP requests, messages and poll-status runs, and their exposition.

Provider calls are timed and counted where they are made, by the provider base class
(messaging/providers/base.py, which imports no Flask); `/metrics` shows them too.

Under gunicorn every worker is its own process, so the counters live in files under
`PROMETHEUS_MULTIPROC_DIR` (prometheus-client's multiprocess mode; deploy/gunicorn.conf.py
sets it up) and `/metrics` sums them, whichever worker answers. Without that variable
(tests, `flask run`) the process's own registry is served.

`flask poll-status` runs from cron in a short-lived process of its own. Rather than
leave one set of counter files behind per run (they would pile up until a restart), it
runs without PROMETHEUS_MULTIPROC_DIR and adds its figures to one small JSON file,
`poll-status.json`, in `MESSAGING_METRICS_DIR` (the same directory), under a lock;
`/metrics` reads it from there.
"""

import fcntl
import http
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

from flask import Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
METRICS_DIR_ENV = "MESSAGING_METRICS_DIR"
POLL_STATE_FILE = "poll-status.json"

HTTP_REQUESTS = Counter(
    "messaging_http_requests_total",
    "HTTP requests answered, by endpoint, method and status code.",
    ["endpoint", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "messaging_http_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MESSAGES = Counter(
    "messaging_messages_total",
    "Messages by the status they reached (sent, delivered, failed) and provider.",
    ["provider", "status"],
)


# Every label takes its values from a closed set: a label value a caller can choose (an
# invented HTTP method) would add a series per request until /metrics is unreadable.
OTHER = "other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
HTTP_STATUSES = frozenset(str(status.value) for status in http.HTTPStatus)


def closed(value: str, allowed: frozenset[str]) -> str:
    """Return `value` if it is one of `allowed`, else "other"."""
    return value if value in allowed else OTHER


def multiprocess_dir() -> Path | None:
    """Return the shared metrics directory when running in multiprocess mode."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def poll_state_dir() -> Path | None:
    """Return where poll-status runs add up: the shared metrics directory, if any."""
    value = os.environ.get(MULTIPROC_ENV) or os.environ.get(METRICS_DIR_ENV)
    return Path(value) if value else None


# --- recording (called by the service and the commands) ---


def record_messages(provider: str, **counts: int) -> None:
    """Count messages reaching statuses: `record_messages("MockProvider", sent=3, failed=1)`."""
    for status, count in counts.items():
        if count:
            MESSAGES.labels(provider, status).inc(count)


# Poll-run figures kept in-process when there is no shared directory.
_poll_state: dict = {}
_poll_lock = threading.Lock()


def record_poll_run(summary, *, ok: bool | None = None, duration: float | None = None) -> None:
    """Add one poll-status run to the totals `/metrics` shows.

    `summary` is a `polling.PollSummary` (its `ok` and `seconds` are used) or a mapping
    of what was counted, e.g. {"checked": 40, "delivered": 30, "failed": 2}; values that
    are not numbers are ignored. Never raises: a metrics problem must not fail the poll.
    """
    try:
        figures = asdict(summary) if is_dataclass(summary) else dict(summary)
        seconds = figures.pop("seconds", 0.0)
        ok = getattr(summary, "ok", True) if ok is None else ok
        duration = seconds if duration is None else duration
        _update_poll_state(figures, ok, duration)
    except Exception as err:  # metrics are best effort here
        log.warning("could not record the poll-status run in metrics: %s", err)


def _update_poll_state(summary: dict, ok: bool, duration: float) -> None:
    directory = poll_state_dir()
    if directory is None:
        with _poll_lock:
            _add_poll_run(_poll_state, summary, ok, duration)
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / POLL_STATE_FILE
    with open(directory / (POLL_STATE_FILE + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = _read_poll_state(path)
        _add_poll_run(state, summary, ok, duration)
        # Write then rename, so a scrape never reads half a file.
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".poll-status.")
        with os.fdopen(fd, "w") as out:
            json.dump(state, out)
        os.replace(temporary, path)


def _add_poll_run(state: dict, summary: dict, ok: bool, duration: float) -> None:
    outcome = "ok" if ok else "error"
    runs = state.setdefault("runs", {})
    runs[outcome] = runs.get(outcome, 0) + 1
    messages = state.setdefault("messages", {})
    for key, value in summary.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            messages[str(key)] = messages.get(str(key), 0) + value
    state["seconds"] = state.get("seconds", 0.0) + duration
    state["last_run"] = time.time()
    if ok:
        state["last_success"] = state["last_run"]


def _read_poll_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class PollRunCollector:
    """Expose the poll-status totals (from the shared file or this process)."""

    def collect(self):
        directory = poll_state_dir()
        if directory is None:
            with _poll_lock:
                state = json.loads(json.dumps(_poll_state))
        else:
            state = _read_poll_state(directory / POLL_STATE_FILE)
        runs = CounterMetricFamily(
            "messaging_poll_runs", "poll-status runs, by outcome.", labels=["outcome"]
        )
        for outcome in ("ok", "error"):
            runs.add_metric([outcome], state.get("runs", {}).get(outcome, 0))
        yield runs
        messages = CounterMetricFamily(
            "messaging_poll_messages",
            "Messages handled by poll-status runs, by what happened to them.",
            labels=["result"],
        )
        for result, value in sorted(state.get("messages", {}).items()):
            messages.add_metric([result], value)
        yield messages
        yield CounterMetricFamily(
            "messaging_poll_run_seconds",
            "Time spent in poll-status runs.",
            value=state.get("seconds", 0.0),
        )
        for key, text in (
            ("last_run", "Unix time of the last poll-status run."),
            ("last_success", "Unix time of the last poll-status run that succeeded."),
        ):
            if key in state:
                yield GaugeMetricFamily(f"messaging_poll_{key}_timestamp_seconds", text, state[key])


POLL_COLLECTOR = PollRunCollector()
REGISTRY.register(POLL_COLLECTOR)


def exposition() -> Response:
    """Render every metric in the Prometheus text format."""
    directory = multiprocess_dir()
    if directory is None:
        registry = REGISTRY
    else:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(directory))
        registry.register(POLL_COLLECTOR)
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def mark_process_dead(pid: int) -> None:
    """Drop a finished worker's live gauges (gunicorn's child_exit hook calls this)."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(pid, str(directory))


# --- HTTP request metrics ---


def init_app(app) -> None:
    """Count and time every request the app answers."""
    directory = multiprocess_dir()
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)

    @app.before_request
    def start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_request(response):
        # The endpoint name, not the path (paths carry numbers): one of the url map's.
        endpoint = request.endpoint or "unmatched"
        method = closed(request.method, HTTP_METHODS)
        status = closed(str(response.status_code), HTTP_STATUSES)
        HTTP_REQUESTS.labels(endpoint, method, status).inc()
        started = g.get("metrics_started")
        if started is not None:
            HTTP_LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        return response
