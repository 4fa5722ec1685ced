"""D1: the operator's pages (GET /admin, /admin/sends, /admin/sends/<ref>) with 1,000,000
messages in sms (and 1,950,000 status events): p50 and p99 of each page over real HTTP,
beside GET /ping driven the same way in the same run. Target: every page under 200 ms.

The database: 9,000 sends of 100 messages spread over the last 30 days and one of 100,000
made 3 hours ago, 20 callers, 90 % delivered, 5 % failed for one of five reasons, 5 %
still `sent`, 10,000 opt-outs. The first overview after the fill counts every settled
hour of the 30 days (what migration 0026 does on an upgrade): that visit is reported on
its own (first_overview_ms), then every page is timed warm. Last, the big send is moved
to the last few minutes, where the overview counts its 195,000 events on each visit
until their hour has settled: fresh_big_send_overview_p50_ms (not part of the target).
"""

import time

import requests

from bench.common import base_config, connect, fresh_database, gunicorn, percentile

SMALL_SENDS = 9000
SMALL_SIZE = 100
BIG_SIZE = 100_000
BIG_REF = SMALL_SENDS + 1
MESSAGES = SMALL_SENDS * SMALL_SIZE + BIG_SIZE
REQUESTS = 40  # per page, after WARM_UP
WARM_UP = 3
TARGET_MS = 200

FILL = [
    f"""
    INSERT INTO sendlog (id, senttime, originator, type, quantity, delivered, failed, sent,
                         message, status, description)
    SELECT g,
           CASE WHEN g = {BIG_REF} THEN (now() AT TIME ZONE 'utc') - interval '3 hours'
                ELSE (now() AT TIME ZONE 'utc') - interval '30 days'
                     + g * interval '30 days' / {BIG_REF} END,
           'caller-' || (g % 20), 'sms',
           CASE WHEN g = {BIG_REF} THEN {BIG_SIZE} ELSE {SMALL_SIZE} END, 0, 0, 0,
           'Water off in your area from 10:00 to 14:00, send ' || g, 'success', ''
    FROM generate_series(1, {BIG_REF}) AS g
    """,
    f"SELECT setval('sendlog_id_seq', {BIG_REF})",
    f"""
    INSERT INTO sms (id, msisdn, senttime, segments, sendlogid, status, statustimestamp,
                     message, providerid, errorcode, reason, failurekind)
    SELECT g + 1, '2783' || lpad(g::text, 7, '0'),
           s.senttime + CASE WHEN g < {SMALL_SENDS * SMALL_SIZE}
                             THEN (g % {SMALL_SIZE}) * interval '10 ms'
                             ELSE (g - {SMALL_SENDS * SMALL_SIZE}) * interval '1 ms' END,
           1, s.id,
           CASE g % 20 WHEN 0 THEN 'failed' WHEN 1 THEN 'sent' ELSE 'delivered' END,
           s.senttime + CASE g % 20 WHEN 1 THEN interval '0'
                                    ELSE ((g % 97) + 3) * interval '1 second' END,
           s.message, 'p-' || g,
           CASE WHEN g % 20 = 0 THEN (ARRAY['105', '114', '301', '005', '006'])[g / 20 % 5 + 1]
           END,
           CASE WHEN g % 20 = 0 THEN (ARRAY['Invalid destination address',
                'Recipient opted out', 'Out of credit', 'Delivery failed',
                'Expired'])[g / 20 % 5 + 1] END,
           CASE WHEN g % 20 = 0 THEN (ARRAY['permanent', 'permanent', 'temporary',
                'unknown', 'temporary'])[g / 20 % 5 + 1] END
    FROM generate_series(0, {MESSAGES} - 1) AS g
    JOIN sendlog AS s ON s.id = CASE WHEN g < {SMALL_SENDS * SMALL_SIZE}
                                     THEN g / {SMALL_SIZE} + 1 ELSE {BIG_REF} END
    """,
    f"SELECT setval('sms_id_seq', {MESSAGES})",
    """
    INSERT INTO sms_events (smsid, sendlogid, time, source, status, providerid)
    SELECT id, sendlogid, senttime, 'send', 'sent', providerid FROM sms ORDER BY id
    """,
    """
    INSERT INTO sms_events (smsid, sendlogid, time, source, status, errorcode, reason,
                            failurekind, providerid)
    SELECT id, sendlogid, statustimestamp, 'receipt', status, errorcode, reason, failurekind,
           providerid
    FROM sms WHERE status <> 'sent' ORDER BY statustimestamp
    """,
    """
    UPDATE sendlog SET delivered = c.delivered, failed = c.failed, sent = c.sent,
                       accepted = c.accepted
    FROM (SELECT sendlogid, count(*) FILTER (WHERE status = 'delivered') AS delivered,
                 count(*) FILTER (WHERE status = 'failed') AS failed,
                 count(*) FILTER (WHERE status = 'sent') AS sent, count(*) AS accepted
          FROM sms GROUP BY sendlogid) AS c
    WHERE sendlog.id = c.sendlogid
    """,
    # A few cancelled sends, for the list's state filter.
    "UPDATE sendlog SET status = 'cancelled', cancelledat = senttime WHERE id % 500 = 0",
    """
    INSERT INTO optouts (msisdn, source, createdat)
    SELECT '2784' || lpad(g::text, 7, '0'), 'reply via bench', now() AT TIME ZONE 'utc'
    FROM generate_series(1, 10000) AS g
    """,
    "INSERT INTO dispatchers VALUES ('bench:1', now(), now())",
    "INSERT INTO job_runs VALUES ('poll-status', now(), now(), 'bench')",
    # Migration 0026 counted the hours while they were empty; count them again, as its
    # upgrade of a full database does (here: on the first visit).
    "TRUNCATE sms_event_hours, provider_event_hours",
]


def fill(url: str) -> None:
    conn = connect(url)
    with conn.cursor() as cur:
        for statement in FILL:
            cur.execute(statement)
        cur.execute("VACUUM ANALYZE")
    conn.close()


def timed(session: requests.Session, url: str, count: int) -> list[float]:
    measured = []
    for _ in range(count):
        began = time.perf_counter()
        answer = session.get(url, timeout=60)
        measured.append(time.perf_counter() - began)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
    return measured


def pages() -> dict[str, str]:
    return {
        "overview": "/admin",
        "sends": "/admin/sends",
        "sends_by_originator": "/admin/sends?originator=caller-7",
        "sends_cancelled": "/admin/sends?state=cancelled",
        "sends_older": f"/admin/sends?before={SMALL_SENDS // 2}",
        "big_send": f"/admin/sends/{BIG_REF}",
        "big_send_page_1000": f"/admin/sends/{BIG_REF}?page=1000",
        "small_send": f"/admin/sends/{SMALL_SENDS // 2}",
    }


def run() -> dict:
    with fresh_database() as url:
        fill(url)
        with gunicorn(base_config(), url, workers=2) as base:
            session = requests.Session()
            first = timed(session, f"{base}/admin", 1)[0]
            figures = {}
            for name, path in pages().items():
                timed(session, base + path, WARM_UP)
                measured = timed(session, base + path, REQUESTS)
                figures[f"{name}_p50_ms"] = percentile(measured, 0.5) * 1000
                figures[f"{name}_p99_ms"] = percentile(measured, 0.99) * 1000
            csv = timed(session, f"{base}/sends/{BIG_REF}/failed.csv", 5)
            make_big_send_fresh(url)
            fresh = timed(session, f"{base}/admin", 5)
            ping = timed(session, f"{base}/ping", REQUESTS)
            page = session.get(f"{base}/admin/sends/{BIG_REF}").text
            assert f"{BIG_SIZE // 20:,}" in page  # its failed count, as the fill made it
    value = max(v for k, v in figures.items() if k.endswith("_p99_ms"))
    baseline = percentile(ping, 0.99) * 1000
    return {
        "id": "D1",
        "value": value,
        "unit": "ms (p99, slowest page)",
        "baseline": baseline,
        "ratio": value / baseline,
        "first_overview_ms": first * 1000,
        **figures,
        "failed_csv_5000_rows_ms": percentile(csv, 0.5) * 1000,
        "fresh_big_send_overview_p50_ms": percentile(fresh, 0.5) * 1000,
    }


def make_big_send_fresh(url: str) -> None:
    """Move the big send and its events to the last few minutes: not yet settled."""
    conn = connect(url)
    with conn.cursor() as cur:
        for table, column in (("sendlog", "senttime"), ("sms", "senttime")):
            key = "id" if table == "sendlog" else "sendlogid"
            cur.execute(
                f"UPDATE {table} SET {column} = {column} + interval '2 hours 57 minutes' "
                f"WHERE {key} = %s",
                (BIG_REF,),
            )
        cur.execute(
            "UPDATE sms_events SET time = time + interval '2 hours 57 minutes' "
            "WHERE sendlogid = %s",
            (BIG_REF,),
        )
        cur.execute("VACUUM ANALYZE sms_events")
    conn.close()


if __name__ == "__main__":
    print(run())
