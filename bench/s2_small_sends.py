"""S2: one-recipient sends from 8 concurrent keep-alive clients against gunicorn (2 workers),
beside GET /ping driven the same way in the same run."""

import os
import threading
import time

import requests

from bench.common import base_config, fresh_database, gunicorn, percentile

CLIENTS = 8
SECONDS = float(os.environ.get("BENCH_S2_SECONDS", "20"))


def drive(url: str, method: str, json_body=None) -> tuple[float, list[float], int]:
    """Run CLIENTS loops for SECONDS; return (requests/s, latencies, non-2xx count)."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors = [0] * CLIENTS
    stop = time.perf_counter() + SECONDS

    def client(index: int) -> None:
        session = requests.Session()
        mine = latencies[index]
        while time.perf_counter() < stop:
            began = time.perf_counter()
            answer = session.request(method, url, json=json_body, timeout=30)
            mine.append(time.perf_counter() - began)
            if answer.status_code >= 300:
                errors[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    flat = [value for values in latencies for value in values]
    return len(flat) / elapsed, flat, sum(errors)


def run() -> dict:
    with fresh_database() as url, gunicorn(base_config(), url, workers=2) as base:
        ping_rate, _, ping_errors = drive(f"{base}/ping", "GET")
        body = {"message": "small", "msisdns": ["0830000001"]}
        send_rate, latencies, send_errors = drive(f"{base}/sendsms", "POST", body)
    assert ping_errors == 0 and send_errors == 0, (ping_errors, send_errors)
    return {
        "id": "S2",
        "value": send_rate,
        "unit": "requests/s",
        "baseline": ping_rate,
        "ratio": send_rate / ping_rate,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


if __name__ == "__main__":
    print(run())
