"""Overload: many clients at once against gunicorn (2 workers) with mixed sends, normalizes
and status lookups. No 5xx, no lost row: every accepted recipient is in `sms` exactly once.
The p99 latency is printed (a figure, not a pass mark: speed belongs to `make bench`)."""

import random
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from tests.conftest import base_config, gunicorn_server, rows


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    accepted_recipients: int = 0
    sends: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def p99_ms(self) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def client_loop(base: str, seed: int, stop_at: float, tally: Tally) -> None:
    """One client: sends (1-20 numbers, some invalid or repeated), normalizes, lookups."""
    chance = random.Random(seed)
    session = requests.Session()
    while time.monotonic() < stop_at:
        pick = chance.random()
        numbers = [f"08{chance.choice('234')}{chance.randrange(10**7):07d}" for _ in range(20)]
        numbers = numbers[: chance.randint(1, 20)] + ["not-a-number", numbers[0]]
        began = time.perf_counter()
        try:
            if pick < 0.4:
                answer = session.post(
                    f"{base}/sendsms", json={"message": "load", "msisdns": numbers}, timeout=60
                )
            elif pick < 0.8:
                answer = session.post(f"{base}/normalize", json={"msisdns": numbers}, timeout=60)
            else:
                answer = session.get(f"{base}/messagestatus/{numbers[0]}", timeout=60)
        except requests.RequestException as err:
            with tally.lock:
                tally.errors.append(type(err).__name__)
            continue
        elapsed = time.perf_counter() - began
        with tally.lock:
            tally.latencies.append(elapsed)
            tally.statuses[answer.status_code] = tally.statuses.get(answer.status_code, 0) + 1
            if pick < 0.4 and answer.status_code == 200:
                tally.sends += 1
                tally.accepted_recipients += answer.json()["validNumbers"]


def run_load(database_url, tmp_path, clients: int, seconds: float) -> Tally:
    tally = Tally()
    with gunicorn_server(base_config(maxBatchSize=5), database_url, tmp_path, workers=2) as base:
        stop_at = time.monotonic() + seconds
        threads = [
            threading.Thread(target=client_loop, args=(base, n, stop_at, tally))
            for n in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(seconds + 120)
    return tally


def check_nothing_lost(tally: Tally, db, capsys, label: str) -> None:
    requests_made = sum(tally.statuses.values())
    with capsys.disabled():
        print(
            f"\n{label}: {requests_made} requests, {tally.sends} sends, "
            f"{tally.accepted_recipients} recipients, p99 {tally.p99_ms():.1f} ms, "
            f"statuses {dict(sorted(tally.statuses.items()))}"
        )
    assert tally.errors == []
    assert requests_made > 0 and tally.sends > 0
    assert {status for status in tally.statuses if status >= 500} == set()
    assert rows(db, "SELECT count(*) FROM sendlog") == [(tally.sends,)]
    assert rows(db, "SELECT count(*) FROM sms") == [(tally.accepted_recipients,)]
    assert rows(db, "SELECT count(*) FROM sms WHERE status = 'queued'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM dispatch_batches") == [(0,)]
    unequal = rows(
        db,
        """
        SELECT l.id FROM sendlog l LEFT JOIN sms s ON s.sendlogid = l.id
        GROUP BY l.id
        HAVING l.sent <> count(s.id) FILTER (WHERE s.status = 'sent')
            OR l.failed <> count(s.id) FILTER (WHERE s.status = 'failed')
            OR l.quantity <> count(s.id)
        """,
    )
    assert unequal == []


def test_ten_clients_for_five_seconds_get_no_5xx_and_lose_no_row(
    database_url, db, tmp_path, capsys
):
    tally = run_load(database_url, tmp_path, clients=10, seconds=5)
    check_nothing_lost(tally, db, capsys, "load 10 clients x 5 s")


@pytest.mark.slow
def test_fifty_clients_for_a_minute_get_no_5xx_and_lose_no_row(database_url, db, tmp_path, capsys):
    tally = run_load(database_url, tmp_path, clients=50, seconds=60)
    check_nothing_lost(tally, db, capsys, "load 50 clients x 60 s")
