"""P1: poll-status over 100,000 unresolved messages against MockProvider, beside a bare UPDATE.

Both run on a fresh database on the test server (MESSAGING_TEST_SERVER, else
127.0.0.1:5432), each on the same freshly written and vacuumed rows: first a bare
`UPDATE sms SET status = ..., statustimestamp = ...` of all of them in one statement, then
a whole poll run (claims, provider queries, stored answers, sendlog counters).

Usage: python bench/b_poll.py [--n 100000]
"""

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg2
from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from messaging import polling
from messaging.config import Config
from messaging.db import Database, apply_migrations, database_url
from messaging.msisdn import Normaliser
from messaging.providers.mock import MockProvider
from messaging.services import Services

LOCAL_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
PER_SEND = 1000


def _server_admin(server: str, statement: sql.Composable) -> None:
    conn = psycopg2.connect(server)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def fill(url: str, n: int) -> None:
    """Write n messages still `sent` (sends of 1,000), then vacuum and analyse."""
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("TRUNCATE sms, sendlog RESTART IDENTITY CASCADE")
        cur.execute(
            """
            INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent,
                                 message, status, description)
            SELECT now() AT TIME ZONE 'utc', 'bench', 'sms', %s, 0, 0, %s, 'bench', 'success', ''
            FROM generate_series(1, %s)
            """,
            (PER_SEND, PER_SEND, -(-n // PER_SEND)),
        )
        cur.execute(
            """
            INSERT INTO sms (msisdn, senttime, segments, sendlogid, status, message, providerid)
            SELECT '2783' || lpad(g::text, 7, '0'), now() AT TIME ZONE 'utc', 1,
                   (g - 1) / %s + 1, 'sent', 'bench',
                   'mock-2783' || lpad(g::text, 7, '0') || '-' || g
            FROM generate_series(1, %s) AS g
            """,
            (PER_SEND, n),
        )
        cur.execute("VACUUM ANALYZE sms")
        cur.execute("VACUUM ANALYZE sendlog")
    conn.close()


def bare_update_seconds(url: str) -> float:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        start = time.perf_counter()
        cur.execute(
            "UPDATE sms SET status = 'delivered', statustimestamp = now() AT TIME ZONE 'utc' "
            "WHERE status = 'sent'"
        )
    seconds = time.perf_counter() - start
    conn.close()
    return seconds


def check_counters(url: str) -> None:
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(
            """
            SELECT count(*) FROM sendlog l JOIN (
                SELECT sendlogid, count(*) FILTER (WHERE status = 'sent') AS sent,
                       count(*) FILTER (WHERE status = 'delivered') AS delivered,
                       count(*) FILTER (WHERE status = 'failed') AS failed
                FROM sms GROUP BY sendlogid) m ON m.sendlogid = l.id
            WHERE (l.sent, l.delivered, l.failed) <> (m.sent, m.delivered, m.failed)
            """
        )
        wrong = cur.fetchone()[0]
    conn.close()
    if wrong:
        raise AssertionError(f"{wrong} sends have counters that differ from their messages")


def run(n: int = 100_000) -> dict:
    """Time a poll run over n unresolved messages and a bare UPDATE of the same rows."""
    return measure(n)[0]


def measure(n: int) -> tuple[dict, polling.PollSummary]:
    server = os.environ.get("MESSAGING_TEST_SERVER") or LOCAL_SERVER
    name = f"messaging_bench_poll_{uuid.uuid4().hex[:8]}"
    _server_admin(server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(server, name)
    database = Database(url)
    try:
        apply_migrations(database)
        fill(url, n)
        baseline_seconds = bare_update_seconds(url)

        fill(url, n)
        config = Config(database_url=url)
        services = Services(config, database, MockProvider(config.provider), Normaliser(("ZA",)))
        summary = polling.poll(services)
        if summary.checked != n or not summary.ok:
            raise AssertionError(f"poll run incomplete: {summary.line()}")
        check_counters(url)
    finally:
        database.close()
        _server_admin(
            server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
    value = n / summary.seconds
    baseline = n / baseline_seconds
    figures = {
        "id": "P1",
        "value": value,
        "unit": "messages/s",
        "baseline": baseline,
        "ratio": value / baseline,
    }
    return figures, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=100_000, help="unresolved messages")
    args = parser.parse_args(argv)
    figures, summary = measure(args.n)
    print(summary.line())
    print(
        f"P1 poll-status: {figures['value']:,.0f} messages/s; bare UPDATE of the same rows "
        f"{figures['baseline']:,.0f} messages/s; ratio {figures['ratio']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
