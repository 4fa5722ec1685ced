"""Retention: flask purge --older-than (and poll-status with deliveryStatus.retentionDays)
removes old messages, their events, the sends left empty and old webhook deliveries, in
short batches that skip what others hold, keeping the counters of the sends it keeps exact."""

import time

import psycopg2
import pytest

from messaging import retention
from tests.conftest import base_config, rows
from tests.test_reconcile import assert_counters_match_messages


def send(client, numbers) -> int:
    response = client.post("/sendsms", json={"message": "x", "msisdns": numbers})
    assert response.status_code == 200
    return int(response.get_json()["refNumber"])


def age(db, ref: int, days: int) -> None:
    """Make a send and its messages `days` old."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE sendlog SET senttime = senttime - make_interval(days => %s) WHERE id = %s",
            (days, ref),
        )
        cur.execute(
            "UPDATE sms SET senttime = senttime - make_interval(days => %s) WHERE sendlogid = %s",
            (days, ref),
        )


def counts(db) -> tuple:
    return rows(
        db,
        "SELECT (SELECT count(*) FROM sendlog), (SELECT count(*) FROM sms), "
        "(SELECT count(*) FROM sms_events)",
    )[0]


def test_purge_removes_what_is_older_and_says_so(client, runner, db):
    old = send(client, ["0830000001", "0830000006", "0830000009"])
    young = send(client, ["0830000002"])
    runner.invoke(args=["poll-status"])
    age(db, old, 91)
    age(db, young, 89)
    with db.cursor() as cur:  # a dead webhook delivery of long ago
        cur.execute(
            "INSERT INTO webhook_outbox (kind, lane, url, checkaddress, events, payload, "
            "created, state) VALUES ('message.status', %s, 'http://x', false, 1, '{}', "
            "now() - interval '91 days', 'dead')",
            (old,),
        )
    assert counts(db) == (2, 4, 7)

    result = runner.invoke(args=["purge", "--older-than", "90d"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "purge: removed 3 messages, 5 status events, 1 sends, 1 webhook deliveries from before "
    )
    assert rows(db, "SELECT id FROM sendlog") == [(young,)]
    assert counts(db) == (1, 1, 2)
    assert rows(db, "SELECT count(*) FROM webhook_outbox") == [(0,)]
    again = runner.invoke(args=["purge", "--older-than", "90d"])
    assert "removed 0 messages, 0 status events, 0 sends, 0 webhook deliveries" in again.output


def test_a_send_that_keeps_messages_keeps_exact_counters(client, runner, db):
    ref = send(client, [f"08300000{n:02d}" for n in range(20)])
    runner.invoke(args=["poll-status"])
    age(db, ref, 100)
    with db.cursor() as cur:  # half its messages are younger than the cut
        cur.execute(
            "UPDATE sms SET senttime = senttime + interval '50 days' WHERE sendlogid = %s "
            "AND id %% 2 = 0",
            (ref,),
        )

    result = runner.invoke(args=["purge", "--older-than", "90d"])

    assert "removed 10 messages" in result.output
    assert rows(db, "SELECT quantity FROM sendlog") == [(10,)]
    assert_counters_match_messages(db)
    recipients = client.get(f"/sends/{ref}").get_json()
    assert recipients["total"] == 10


def test_a_large_send_goes_in_several_batches(client, runner, db, monkeypatch):
    monkeypatch.setattr(retention, "MESSAGES_PER_BATCH", 300)
    refs = [send(client, [f"0831{n:06d}" for n in range(700)]) for _ in range(2)]
    for ref in refs:
        age(db, ref, 120)

    result = runner.invoke(args=["purge", "--older-than", "90d"])

    assert "removed 1,400 messages, 1,400 status events, 2 sends" in result.output
    assert counts(db) == (0, 0, 0)


def test_purge_skips_what_another_transaction_holds_and_takes_it_next_time(
    client, runner, db, database_url
):
    ref = send(client, ["0830000001", "0830000002"])
    age(db, ref, 100)
    holder = psycopg2.connect(database_url)
    with holder.cursor() as cur:  # a status writer holding one message's row
        cur.execute("SELECT 1 FROM sms WHERE msisdn = '27830000001' FOR UPDATE")
    try:
        began = time.monotonic()
        first = runner.invoke(args=["purge", "--older-than", "90d"])
        seconds = time.monotonic() - began
    finally:
        holder.rollback()
        holder.close()
    second = runner.invoke(args=["purge", "--older-than", "90d"])

    assert seconds < 5  # it did not wait for the lock
    assert "removed 1 messages, 1 status events, 0 sends" in first.output
    assert "removed 1 messages, 1 status events, 1 sends" in second.output
    assert counts(db) == (0, 0, 0)


def test_poll_status_purges_too_given_retention_days(make_app, db):
    config = base_config()
    config["deliveryStatus"]["retentionDays"] = 30
    app = make_app(config)
    ref = send(app.test_client(), ["0830000001"])
    age(db, ref, 31)

    result = app.test_cli_runner().invoke(args=["poll-status"])

    assert "purge: removed 1 messages, 1 status events, 1 sends" in result.output
    assert counts(db) == (0, 0, 0)


def test_poll_status_keeps_everything_without_retention_days(client, runner, db):
    ref = send(client, ["0830000001"])
    age(db, ref, 3650)
    result = runner.invoke(args=["poll-status"])
    assert "purge" not in result.output
    assert counts(db)[:2] == (1, 1)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--older-than", "90"], "'90' has no unit: write 90d, 12h or 30m"),
        (["--older-than", "soon"], "a duration such as"),
        (["--older-than", "0d"], "a positive duration"),
        ([], "Missing option '--older-than'"),
    ],
)
def test_a_bad_age_is_refused_and_removes_nothing(client, runner, db, args, error):
    ref = send(client, ["0830000001"])
    age(db, ref, 400)

    result = runner.invoke(args=["purge", *args])

    assert result.exit_code == 2
    assert error in result.output
    assert counts(db)[:2] == (1, 1)


def test_retention_days_must_be_a_whole_number_of_days(make_app, db):
    config = base_config()
    config["deliveryStatus"]["retentionDays"] = 0.5
    with pytest.raises(Exception, match="deliveryStatus.retentionDays: expected a whole number"):
        make_app(config)


@pytest.mark.slow
def test_a_purge_of_a_million_messages(runner, db, capsys):
    with db.cursor() as cur:
        cur.execute(
            """
            INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent,
                                 message, status, description)
            SELECT now() AT TIME ZONE 'utc' - interval '100 days', 'old', 'sms', 1000, 1000,
                   0, 0, 'x', 'success', ''
            FROM generate_series(1, 1000)
            """
        )
        cur.execute(
            """
            INSERT INTO sms (msisdn, senttime, segments, sendlogid, status, message, providerid)
            SELECT '2783' || lpad(g::text, 7, '0'),
                   now() AT TIME ZONE 'utc' - interval '100 days', 1, (g - 1) / 1000 + 1,
                   'delivered', 'x', 'p' || g
            FROM generate_series(1, 1000000) AS g
            """
        )
        cur.execute(
            """
            INSERT INTO sms_events (smsid, sendlogid, time, source, status)
            SELECT id, sendlogid, senttime, 'poll', 'delivered' FROM sms
            """
        )
        cur.execute("VACUUM ANALYZE sms")
        cur.execute("VACUUM ANALYZE sms_events")
        cur.execute("VACUUM ANALYZE sendlog")

    began = time.perf_counter()
    result = runner.invoke(args=["purge", "--older-than", "90d"])
    seconds = time.perf_counter() - began

    assert "removed 1,000,000 messages, 1,000,000 status events, 1,000 sends" in result.output
    assert counts(db) == (0, 0, 0)
    with capsys.disabled():
        print(f"\npurge of 1,000,000 messages and their events: {seconds:.1f}s")
