"""R1: maxRequestsPerSecond 30 held across processes: two `flask dispatch` x 4 send one
450-recipient send (`Prefer: respond-async`) while a gunicorn worker sends a 60-recipient
one itself, to a Twilio-shaped fake (one recipient a request) answering in 50 ms, so every
process could go many times faster. The most requests the fake saw in any 1 s window
(sliding), beside the limit."""

import threading
import time

import requests

from bench.common import (
    base_config,
    busiest_second,
    connect,
    deployed,
    fresh_database,
    stored,
    wait_for_send,
)
from bench.fake_provider import check_capacity, fake_provider

RATE = 30
BULK, SMALL = 450, 60
LATENCY = 0.05
CONCURRENT = 4


def run() -> dict:
    with fresh_database() as url, fake_provider("twilio", LATENCY) as fake:
        fake_rate = check_capacity(fake, 64, RATE)
        config = base_config(
            **fake.provider_config(),
            token="bench-token",
            maxRequestsPerSecond=RATE,
            maxConcurrentRequests=CONCURRENT,
        )
        conn = connect(url)
        with deployed(config, url, workers=2, dispatchers=2) as (base, _):
            bulk = {"message": "bulk", "msisdns": [f"083{n:07d}" for n in range(BULK)]}
            small = {"message": "small", "msisdns": [f"084{n:07d}" for n in range(SMALL)]}
            answers = {}

            def send_small() -> None:
                answers["small"] = requests.post(f"{base}/sendsms", json=small, timeout=120)

            answer = requests.post(
                f"{base}/sendsms", json=bulk, headers={"Prefer": "respond-async"}, timeout=60
            )
            assert answer.status_code == 202, answer.text
            thread = threading.Thread(target=send_small)
            thread.start()
            wait_for_send(conn, int(answer.json()["refNumber"]), timeout=300)
            thread.join()
            answers["small"].raise_for_status()
            time.sleep(0.2)  # the small send's last request, should it be the last of all
            small_ref = int(answers["small"].json()["refNumber"])
            wait_for_send(conn, small_ref, timeout=60)
            held = [stored(conn, int(a.json()["refNumber"])) for a in (answer, answers["small"])]
        conn.close()
        seen = fake.stats()
    assert seen["distinct"] == seen["numbers"] == BULK + SMALL, seen
    assert [h["sent"] for h in held] == [BULK, SMALL], held
    arrivals = sorted(t for t, _ in seen["arrivals"])
    value = busiest_second(arrivals)
    return {
        "id": "R1",
        "value": value,
        "unit": "requests in 1 s (most)",
        "baseline": RATE,
        "ratio": value / RATE,
        "mean_per_s": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]),
        "requests": len(arrivals),
        "fake_capacity_per_s": fake_rate,
    }


if __name__ == "__main__":
    print(run())
