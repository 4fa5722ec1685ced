"""L1: one send of 20,000 recipients (`Prefer: respond-async`) to a Twilio-shaped fake (one
recipient a request) answering in 150 ms, maxRequestsPerSecond 200, two `flask dispatch`
beside gunicorn (deploy/gunicorn.conf.py, 5 workers): the provider rate over the steady
part and over the whole send, beside the 200/s limit; while it runs, GET /ping and a
1-recipient send are timed twice a second; nothing lost or doubled, counted at the fake
and in the database.

maxConcurrentRequests 3: each dispatcher works on 3 batches of 100 at once, each batch 8
requests at a time (HttpProvider.parallel_requests), so up to 48 requests in flight where
200/s x 150 ms needs 30. 2 would allow 32, with no room for the last round of a batch
(fewer than 8); 4 allows 64, and the requests waiting for a slot of the shared rate make
the queue a small send's request joins longer (p50 360-400 ms against 270 ms with 3).
"""

import threading
import time

import requests

from bench.common import (
    base_config,
    busiest_second,
    connect,
    deployed,
    fresh_database,
    percentile,
    stored,
    wait_for_send,
)
from bench.fake_provider import check_capacity, fake_provider

RECIPIENTS = 20_000
LATENCY = 0.15
RATE = 200
CONCURRENT = 3
DISPATCHERS = 2
PROBE_EVERY = 0.5  # seconds
BIG, SMALL = "2783", "2784"  # the big send's numbers and the probes' (each its own)


class Probes:
    """Time GET /ping and a 1-recipient send every PROBE_EVERY seconds until stopped."""

    def __init__(self, base: str):
        self.base = base
        self.ping: list[float] = []
        self.send: list[float] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        session = requests.Session()
        n = 0
        while not self.stop.wait(PROBE_EVERY):
            n += 1
            for timings, method, path, body in (
                (self.ping, "GET", "/ping", None),
                (self.send, "POST", "/sendsms", {"message": "probe", "msisdns": [f"084{n:07d}"]}),
            ):
                began = time.perf_counter()
                answer = session.request(method, self.base + path, json=body, timeout=30)
                timings.append(time.perf_counter() - began)
                if answer.status_code != 200 or (body and not answer.json()["sendSuccess"]):
                    self.failures.append(f"{path}: {answer.status_code} {answer.text[:200]}")

    def __enter__(self) -> "Probes":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def steady_rate(arrivals: list[float]) -> float:
    """Requests/s over the middle 80% of a send's requests (its start and end left out)."""
    ordered = sorted(arrivals)
    first, last = len(ordered) // 10, len(ordered) * 9 // 10
    return (last - first) / (ordered[last] - ordered[first])


def run() -> dict:
    with fresh_database() as url, fake_provider("twilio", LATENCY) as fake:
        fake_rate = check_capacity(fake, 2 * DISPATCHERS * CONCURRENT * 8, RATE)
        config = base_config(
            **fake.provider_config(),
            token="bench-token",
            maxRequestsPerSecond=RATE,
            maxConcurrentRequests=CONCURRENT,
            maxRecipients=100_000,
        )
        conn = connect(url)
        with (
            deployed(config, url, workers=5, dispatchers=DISPATCHERS) as (base, _),
            Probes(base) as probes,
        ):
            body = {"message": "Long send", "msisdns": [f"083{n:07d}" for n in range(RECIPIENTS)]}
            began = time.perf_counter()
            answer = requests.post(
                f"{base}/sendsms", json=body, headers={"Prefer": "respond-async"}, timeout=60
            )
            accepted_in = time.perf_counter() - began
            assert answer.status_code == 202, answer.text
            ref = int(answer.json()["refNumber"])
            whole = wait_for_send(conn, ref, timeout=600) - began
        held = stored(conn, ref)
        conn.close()
        seen = fake.stats()
    assert not probes.failures, probes.failures[:5]
    big = [t for t, number in seen["arrivals"] if number.startswith(BIG)]
    small = sum(1 for _, number in seen["arrivals"] if number.startswith(SMALL))
    lost = (RECIPIENTS + len(probes.send)) - seen["distinct"]
    value = steady_rate(big)
    return {
        "id": "L1",
        "value": value,
        "unit": "msg/s (steady)",
        "baseline": RATE,
        "ratio": value / RATE,
        "whole_send_per_s": RECIPIENTS / whole,
        "whole_send_s": whole,
        "accepted_in_s": accepted_in,
        "busiest_second": busiest_second([t for t, _ in seen["arrivals"]]),
        "ping_max_ms": max(probes.ping) * 1000,
        "ping_p99_ms": percentile(probes.ping, 0.99) * 1000,
        "small_send_max_ms": max(probes.send) * 1000,
        "small_send_p50_ms": percentile(probes.send, 0.5) * 1000,
        "small_send_p99_ms": percentile(probes.send, 0.99) * 1000,
        "probes": len(probes.send),
        "lost_at_fake": lost,
        "doubled_at_fake": seen["doubled"],
        "small_at_fake": small,
        "lost_in_db": RECIPIENTS - held["sent"],
        "doubled_in_db": held["rows"] - held["distinct"],
        "counted_in_db": held["counted"],
        "fake_capacity_per_s": fake_rate,
        "connections_at_fake": seen["connections"],
    }


if __name__ == "__main__":
    print(run())
