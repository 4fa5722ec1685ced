"""S1: one POST /sendsms of 10,000 recipients through gunicorn to MockProvider (batches of 500),
beside the floor of writing the same rows by COPY and updating them with provider ids in 20
committed batches of 500, in the same database and run."""

import io
import time

import requests

from bench.common import base_config, connect, fresh_database, gunicorn, median

RECIPIENTS = 10_000
BATCH = 500
REPEATS = 5


def numbers(n: int = RECIPIENTS) -> list[str]:
    return [f"083{i:07d}" for i in range(n)]


def floor_seconds(url: str, count: int = RECIPIENTS) -> float:
    """COPY the rows in, then store provider ids in committed batches: the least any send does."""
    conn = connect(url)
    conn.autocommit = False
    rows = "".join(
        f"27{n[1:]}\t2026-01-01 00:00:00\t1\tSENDLOG\tqueued\tbench\n" for n in numbers(count)
    )
    start = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent, "
            "message, status, description) VALUES (now(), '', 'sms', %s, 0, 0, 0, 'bench', "
            "'sending', '') RETURNING id",
            (count,),
        )
        sendlog_id = cur.fetchone()[0]
        cur.copy_expert(
            "COPY sms (msisdn, senttime, segments, sendlogid, status, message) FROM STDIN",
            io.StringIO(rows.replace("SENDLOG", str(sendlog_id))),
        )
        conn.commit()
        cur.execute("SELECT id FROM sms WHERE sendlogid = %s ORDER BY id", (sendlog_id,))
        ids = [row[0] for row in cur.fetchall()]
        for first in range(0, len(ids), BATCH):
            batch = ids[first : first + BATCH]
            cur.execute(
                "UPDATE sms SET status = 'sent', providerid = v.pid "
                "FROM unnest(%s::int[], %s::varchar[]) AS v(id, pid) WHERE sms.id = v.id",
                (batch, [f"p-{i}" for i in batch]),
            )
            conn.commit()
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


def run() -> dict:
    with fresh_database() as url:
        config = base_config(maxBatchSize=BATCH, maxRecipients=100_000)
        body = {"message": "Benchmark send", "msisdns": numbers()}
        with gunicorn(config, url, workers=1) as base:
            session = requests.Session()
            session.post(f"{base}/sendsms", json=body, timeout=120).raise_for_status()  # warm up
            timings = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                answer = session.post(f"{base}/sendsms", json=body, timeout=120)
                timings.append(time.perf_counter() - start)
                answer.raise_for_status()
                assert answer.json()["validNumbers"] == RECIPIENTS
        floors = [floor_seconds(url) for _ in range(REPEATS)]
    value, baseline = median(timings), median(floors)
    return {
        "id": "S1",
        "value": value,
        "unit": "s",
        "baseline": baseline,
        "ratio": value / baseline,
    }


if __name__ == "__main__":
    print(run())
