"""F1: 1-recipient sends while two 100,000-recipient sends (`Prefer: respond-async`) dispatch
to a Clickatell-shaped fake answering in 250 ms, through gunicorn (deploy/gunicorn.conf.py,
5 workers) and two `flask dispatch`: the p99 of the small sends, beside the p99 of the same
small sends with nothing else going on, in the same run.

Four clients send synchronously (the request works on its own send); a fifth sends with
`Prefer: respond-async` and times each until it is stored, which the dispatchers must do
ahead of the bulk batches (reported as async_*).
"""

import itertools
import threading
import time

import requests

from bench.common import (
    base_config,
    connect,
    deployed,
    fresh_database,
    percentile,
    stored,
    wait_for_send,
)
from bench.fake_provider import check_capacity, fake_provider

BULK = 100_000
LATENCY = 0.25
CLIENTS = 4
QUIET_SECONDS = 10.0
WARM_UP_SECONDS = 2.0  # every worker's first requests open its connections
ASYNC = {"Prefer": "respond-async"}


class SmallSends:
    """CLIENTS synchronous 1-recipient senders and one asynchronous, until stopped."""

    def __init__(self, base: str, url: str):
        self.base = base
        self.url = url
        self.sync: list[float] = []
        self.queued: list[float] = []  # respond-async: until stored
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.numbers = itertools.count(1)
        self.threads = [threading.Thread(target=self.send) for _ in range(CLIENTS)]
        self.threads.append(threading.Thread(target=self.send_async))

    def body(self) -> dict:
        return {"message": "small", "msisdns": [f"084{next(self.numbers):07d}"]}

    def send(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            began = time.perf_counter()
            answer = session.post(f"{self.base}/sendsms", json=self.body(), timeout=60)
            self.sync.append(time.perf_counter() - began)
            if answer.status_code != 200 or not answer.json()["sendSuccess"]:
                self.failures.append(f"{answer.status_code} {answer.text[:200]}")

    def send_async(self) -> None:
        session = requests.Session()
        conn = connect(self.url)
        while not self.stop.is_set():
            began = time.perf_counter()
            answer = session.post(
                f"{self.base}/sendsms", json=self.body(), headers=ASYNC, timeout=60
            )
            if answer.status_code != 202:
                self.failures.append(f"{answer.status_code} {answer.text[:200]}")
                continue
            self.queued.append(wait_for_send(conn, int(answer.json()["refNumber"])) - began)
        conn.close()

    def run_until(self, done) -> None:
        for thread in self.threads:
            thread.start()
        done()
        self.stop.set()
        for thread in self.threads:
            thread.join()
        assert not self.failures, self.failures[:5]


def run() -> dict:
    with fresh_database() as url, fake_provider("clickatell", LATENCY) as fake:
        fake_rate = check_capacity(fake, 64, 2 * 4 / LATENCY)
        config = base_config(**fake.provider_config(), maxRecipients=BULK)
        conn = connect(url)
        with deployed(config, url, workers=5, dispatchers=2) as (base, _):
            SmallSends(base, url).run_until(lambda: time.sleep(WARM_UP_SECONDS))
            quiet = SmallSends(base, url)
            quiet.run_until(lambda: time.sleep(QUIET_SECONDS))
            refs = []
            for prefix in ("083", "085"):
                body = {"message": "bulk", "msisdns": [f"{prefix}{n:07d}" for n in range(BULK)]}
                answer = requests.post(f"{base}/sendsms", json=body, headers=ASYNC, timeout=120)
                assert answer.status_code == 202, answer.text
                refs.append(int(answer.json()["refNumber"]))
            began = time.perf_counter()
            busy = SmallSends(base, url)
            busy.run_until(lambda: wait_until_one_done(conn, refs))
            during = time.perf_counter() - began
            for ref in refs:
                wait_for_send(conn, ref)
            assert [stored(conn, ref)["sent"] for ref in refs] == [BULK, BULK]
        conn.close()
    value, baseline = percentile(busy.sync, 0.99), percentile(quiet.sync, 0.99)
    return {
        "id": "F1",
        "value": value * 1000,
        "unit": "ms (p99)",
        "baseline": baseline * 1000,
        "ratio": value / baseline,
        "sends": len(busy.sync),
        "quiet_sends": len(quiet.sync),
        "max_ms": max(busy.sync) * 1000,
        "async_p99_ms": percentile(busy.queued, 0.99) * 1000,
        "async_quiet_p99_ms": percentile(quiet.queued, 0.99) * 1000,
        "async_sends": len(busy.queued),
        "measured_for_s": during,
        "fake_capacity_per_s": fake_rate,
    }


def wait_until_one_done(conn, refs: list[int]) -> None:
    """Return once any of these sends is closed: until then both were dispatching."""
    with conn.cursor() as cur:
        while True:
            cur.execute(
                "SELECT count(*) FROM sendlog WHERE id = ANY(%s) AND status <> 'sending'", (refs,)
            )
            if cur.fetchone()[0]:
                return
            time.sleep(0.05)


if __name__ == "__main__":
    print(run())
