"""W1: status webhooks delivered to a local receiver, beside the status updates that make them.

A 10,000-recipient send with a callbackUrl goes out through MockProvider and a
`flask dispatch` process (its 10,000 `sent` events are delivered first and not counted);
then one poll-status run moves every message to `delivered` at once. Measured: from the
start of that run to the arrival of the last of its 10,000 events at the receiver (events
per second, and seconds), against the run's own rate of status updates (the baseline).

Usage: python -m bench.w1_webhooks [--n 10000]
"""

import argparse
import json
import logging
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from bench.common import base_config, fresh_database
from messaging import create_app, polling, service
from messaging.config import config_from_mapping
from tests.conftest import dispatcher_process
from tests.webhook_receiver import SECRET

TIMEOUT = 120.0


class CountingReceiver:
    """Answers every POST 200 at once; counts the events by status and when each arrived."""

    def __init__(self):
        self.arrivals: dict[str, list[float]] = {}
        self.condition = threading.Condition()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _app(self, environ, start_response):
        events = json.loads(Request(environ).get_data())["data"]["events"]
        now = time.perf_counter()
        with self.condition:
            for event in events:
                self.arrivals.setdefault(event["status"], []).append(now)
            self.condition.notify_all()
        return Response("", 204)(environ, start_response)

    def wait_for(self, status: str, count: int) -> float:
        """Wait until `count` events of `status` arrived; return when the last did."""
        deadline = time.monotonic() + TIMEOUT
        with self.condition:
            while len(self.arrivals.get(status, ())) < count:
                if not self.condition.wait(max(0.0, deadline - time.monotonic())):
                    got = len(self.arrivals.get(status, ()))
                    raise AssertionError(f"{got} of {count} {status} events arrived in time")
            return max(self.arrivals[status])

    def stop(self) -> None:
        self._server.shutdown()


def numbers(n: int) -> list[str]:
    """Distinct numbers MockProvider accepts and reports delivered (last digit 0-5)."""
    return [f"083{i:06d}{i % 6}" for i in range(n)]


def run(n: int = 10_000) -> dict:
    receiver = CountingReceiver()
    config = base_config(maxRecipients=max(n, 100_000))
    config["deliveryStatus"].update({"callbackSecret": SECRET, "allowPrivateCallbacks": True})
    try:
        with fresh_database("messaging_bench_w1") as url, tempfile.TemporaryDirectory() as tmp:
            app = create_app(config_from_mapping(config, url))
            for name in ("messaging", "werkzeug"):  # a line per batch and POST otherwise
                logging.getLogger(name).setLevel(logging.WARNING)
            services = app.extensions["messaging"]
            with dispatcher_process(config, url, Path(tmp)):
                outcome = service.send_sms(
                    services,
                    "W1",
                    numbers(n),
                    None,
                    "bench",
                    wait=math.inf,
                    callback_url=receiver.url,
                )
                assert outcome.messages_sent == n, outcome
                receiver.wait_for("sent", n)
                began = time.perf_counter()
                summary = polling.poll(services)
                updated = time.perf_counter()
                last = receiver.wait_for("delivered", n)
            services.db.close()
    finally:
        receiver.stop()
    if summary.delivered != n:
        raise AssertionError(f"poll run incomplete: {summary.line()}")
    seconds = last - began
    return {
        "id": "W1",
        "value": n / seconds,
        "unit": "events/s",
        "baseline": n / (updated - began),
        "ratio": (n / seconds) / (n / (updated - began)),
        "seconds": seconds,
        "after_update": last - updated,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="recipients")
    args = parser.parse_args(argv)
    figures = run(args.n)
    print(
        f"W1 webhooks: {figures['value']:,.0f} events/s, the last {figures['seconds']:.2f}s "
        f"after the run began ({figures['after_update']:.2f}s after its updates); status "
        f"updates {figures['baseline']:,.0f}/s; ratio {figures['ratio']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
