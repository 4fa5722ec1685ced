"""Q1: GET /messagestatus/<msisdn> with 1,000,000 rows in sms: p99 latency over real HTTP,
beside GET /ping driven the same way in the same run."""

import random
import time

import requests

from bench.common import base_config, connect, fresh_database, gunicorn, percentile

ROWS = 1_000_000
NUMBERS = 250_000  # four messages per number
LOOKUPS = 2000


def fill(url: str) -> None:
    conn = connect(url)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent, "
            "message, status, description) SELECT now() AT TIME ZONE 'utc', 'bench', 'sms', 1000,"
            " 1000, 0, 0, 'bench', 'success', '' FROM generate_series(1, %s)",
            (ROWS // 1000,),
        )
        cur.execute(
            """
            INSERT INTO sms (msisdn, senttime, segments, sendlogid, status, statustimestamp,
                             message, providerid)
            SELECT '2783' || lpad((g %% %s)::text, 7, '0'),
                   (now() AT TIME ZONE 'utc') - (g || ' seconds')::interval, 1, g / 1000 + 1,
                   'delivered', now() AT TIME ZONE 'utc', 'bench', 'p-' || g
            FROM generate_series(0, %s - 1) AS g
            """,
            (NUMBERS, ROWS),
        )
        cur.execute("VACUUM ANALYZE sms")
    conn.close()


def latencies(session: requests.Session, urls: list[str]) -> list[float]:
    measured = []
    for url in urls:
        began = time.perf_counter()
        answer = session.get(url, timeout=30)
        measured.append(time.perf_counter() - began)
        assert answer.status_code == 200
    return measured


def run() -> dict:
    rng = random.Random(7)
    with fresh_database() as url:
        fill(url)
        with gunicorn(base_config(), url, workers=2) as base:
            session = requests.Session()
            numbers = [f"083{rng.randrange(NUMBERS):07d}" for _ in range(LOOKUPS)]
            status_urls = [f"{base}/messagestatus/{number}" for number in numbers]
            latencies(session, status_urls[:200])  # warm up both workers' connections
            status = latencies(session, status_urls)
            ping = latencies(session, [f"{base}/ping"] * LOOKUPS)
            assert session.get(status_urls[0]).text == "delivered"
    value, baseline = percentile(status, 0.99) * 1000, percentile(ping, 0.99) * 1000
    return {
        "id": "Q1",
        "value": value,
        "unit": "ms (p99)",
        "baseline": baseline,
        "ratio": value / baseline,
    }


if __name__ == "__main__":
    print(run())
