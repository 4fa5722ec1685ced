"""S3: one POST /sendsms of 10,000 recipients to a Clickatell-shaped fake answering in 250 ms,
batches of 500, maxConcurrentRequests 4, through gunicorn (deploy/gunicorn.conf.py) with one
`flask dispatch` beside it: the time until every answer is stored, beside the ideal of 20
batches x 250 ms / maxConcurrentRequests."""

import time

import requests

from bench.common import (
    CpuMeter,
    base_config,
    connect,
    deployed,
    fresh_database,
    median,
    stored,
    wait_for_send,
)
from bench.fake_provider import check_capacity, fake_provider

RECIPIENTS = 10_000
BATCH = 500
CONCURRENT = 4
LATENCY = 0.25
REPEATS = 3


def numbers(count: int = RECIPIENTS, prefix: str = "083") -> list[str]:
    return [f"{prefix}{n:07d}" for n in range(count)]


def timed_sends(fake, config: dict, url: str, dispatchers: int) -> tuple[list, list, int, dict]:
    """Send REPEATS times; return the times until stored and until answered, the most
    requests the fake had in flight at once, and the CPU seconds a send took by process."""
    timings, answered, in_flight = [], [], 0
    conn = connect(url)
    meter = CpuMeter(url)
    with deployed(config, url, workers=5, dispatchers=dispatchers) as (base, _):
        session = requests.Session()
        warm = {"message": "warm up", "msisdns": ["0840000001"]}
        session.post(f"{base}/sendsms", json=warm, timeout=60).raise_for_status()
        body = {"message": "Benchmark send", "msisdns": numbers()}
        with meter.measure() as cpu:
            for _ in range(REPEATS):
                fake.reset()
                began = time.perf_counter()
                answer = session.post(f"{base}/sendsms", json=body, timeout=120)
                answered.append(time.perf_counter() - began)
                answer.raise_for_status()
                ref = int(answer.json()["refNumber"])
                timings.append(wait_for_send(conn, ref) - began)
                seen, held = fake.stats(), stored(conn, ref)
                assert seen["distinct"] == seen["numbers"] == RECIPIENTS, seen
                assert held["rows"] == held["sent"] == held["counted"] == RECIPIENTS, held
                in_flight = max(in_flight, seen["most_in_flight"])
    conn.close()
    return timings, answered, in_flight, {kind: s / REPEATS for kind, s in cpu.items()}


def run() -> dict:
    with fresh_database() as url, fake_provider("clickatell", LATENCY) as fake:
        fake_rate = check_capacity(fake, 64, 2 * CONCURRENT / LATENCY)
        config = base_config(
            **fake.provider_config(),
            maxBatchSize=BATCH,
            maxConcurrentRequests=CONCURRENT,
            maxRecipients=100_000,
        )
        timings, answered, in_flight, cpu = timed_sends(fake, config, url, dispatchers=1)
        # The request's own workers alone: maxConcurrentRequests at the fake, no more.
        alone, _, alone_in_flight, _ = timed_sends(fake, config, url, dispatchers=0)
    value = median(timings)
    ideal = RECIPIENTS / BATCH * LATENCY / CONCURRENT
    return {
        "id": "S3",
        "value": value,
        "unit": "s",
        "baseline": ideal,
        "ratio": value / ideal,
        "answered_s": median(answered),
        "most_in_flight": in_flight,
        "request_alone_s": median(alone),
        "request_alone_ratio": median(alone) / ideal,
        "request_alone_in_flight": alone_in_flight,
        "fake_capacity_per_s": fake_rate,
        **{f"cpu_s_{kind}": seconds for kind, seconds in sorted(cpu.items())},
    }


if __name__ == "__main__":
    print(run())
