"""FO1: a 10,000-recipient POST /sendsms whose first provider starts refusing (503) after
2,000 numbers, with a second provider standing by (weight 0), against the same send
with one healthy provider, in the same run: both Clickatell-shaped fakes answering in
250 ms, batches of 500, maxConcurrentRequests 4, through gunicorn with one `flask
dispatch` beside it. Every recipient must be answered, none sent twice, in under twice
the time of the healthy send."""

import time

import requests

from bench.common import base_config, connect, deployed, fresh_database, median, wait_for_send
from bench.fake_provider import fake_provider

RECIPIENTS = 10_000
REFUSE_AFTER = 2_000
BATCH = 500
CONCURRENT = 4
LATENCY = 0.25
REPEATS = 3


def numbers(count: int = RECIPIENTS) -> list[str]:
    return [f"083{n:07d}" for n in range(count)]


def provider_config(fake, **settings) -> dict:
    return {**fake.provider_config(), "maxBatchSize": BATCH, "retries": 0, **settings}


def timed_sends(config: dict, url: str, fakes: list) -> tuple[list[float], dict]:
    """Send REPEATS times, each with every provider healthy again at the start; return the
    times until every answer was stored, and what the last send left behind."""
    timings, outcome = [], {}
    conn = connect(url)
    with deployed(config, url, workers=5, dispatchers=1) as (base, _):
        session = requests.Session()
        body = {"message": "Benchmark send", "msisdns": numbers()}
        for _ in range(REPEATS):
            with conn.cursor() as cur:  # each repeat meets the outage afresh
                cur.execute("TRUNCATE provider_calls, provider_health")
            for fake in fakes:
                fake.reset()
            began = time.perf_counter()
            answer = session.post(f"{base}/sendsms", json=body, timeout=300)
            answer.raise_for_status()
            ref = int(answer.json()["refNumber"])
            timings.append(wait_for_send(conn, ref) - began)
            outcome = settled(conn, ref, fakes)
            assert outcome["answered"] == RECIPIENTS and outcome["doubled"] == 0, outcome
    conn.close()
    return timings, outcome


def settled(conn, ref: int, fakes: list) -> dict:
    """What the providers took and the database holds of one send. Every recipient `sent`
    once in the database and the providers' takes adding up to the recipients means none
    went twice (to one provider or to both)."""
    seen = [fake.stats() for fake in fakes]
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(DISTINCT id) FILTER (WHERE status = 'sent') FROM sms "
            "WHERE sendlogid = %s",
            (ref,),
        )
        answered = cur.fetchone()[0]
        cur.execute(
            "SELECT count(DISTINCT smsid) FROM sms_events WHERE sendlogid = %s "
            "AND source = 'failover'",
            (ref,),
        )
        moved = cur.fetchone()[0]
    taken = sum(s["numbers"] for s in seen)
    return {
        "answered": answered,
        "doubled": taken - answered + sum(s["doubled"] for s in seen),
        "first_took": seen[0]["numbers"],
        "refused_calls": seen[0]["refused"],
        "moved": moved,
    }


def run() -> dict:
    with (
        fresh_database() as url,
        fake_provider("clickatell", LATENCY) as healthy,
        fake_provider("clickatell", LATENCY, REFUSE_AFTER) as failing,
        fake_provider("clickatell", LATENCY) as standby,
    ):
        shared = {"maxConcurrentRequests": CONCURRENT, "maxRecipients": 100_000}
        alone = base_config(**provider_config(healthy), **shared)
        baseline, _ = timed_sends(alone, url, [healthy])
        two = base_config(**provider_config(failing), **shared)
        two["smsProviders"] = [provider_config(standby, id="standby", weight=0)]
        timings, outcome = timed_sends(two, url, [failing, standby])
    value, base = median(timings), median(baseline)
    return {
        "id": "FO1",
        "value": value,
        "unit": "s",
        "baseline": base,
        "ratio": value / base,
        **{key: float(figure) for key, figure in outcome.items()},
    }


if __name__ == "__main__":
    print(run())
