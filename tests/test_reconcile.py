"""Reconcile: batches whose worker died while they were at the provider are settled without
resending; batches never handed over stay work for the dispatchers."""

import threading

import psycopg2
import pytest

from messaging import db as db_module
from messaging import service
from messaging.db import Database, apply_migrations
from messaging.providers.base import SendResult
from messaging.providers.mock import MockProvider
from tests.conftest import HeldProvider, base_config, rows

OUTCOME_UNKNOWN = "provider outcome unknown"

# Every recipient the database holds: its sms row, or its batch still to be sent as `queued`.
RECIPIENTS = """
    SELECT id, msisdn, status, reason FROM sms
    UNION ALL
    SELECT r.id, r.msisdn, 'queued', NULL
    FROM dispatch_batches AS b, unnest(b.ids, b.msisdns) AS r(id, msisdn)
"""


def accepted_numbers(count: int) -> list[str]:
    """Numbers MockProvider accepts and reports delivered (last digit 1)."""
    return [f"083{i:06d}1" for i in range(count)]


def statuses(db) -> dict:
    return dict(
        rows(
            db,
            f"SELECT status || ':' || COALESCE(reason, ''), count(*) FROM ({RECIPIENTS}) r "
            "GROUP BY 1",
        )
    )


def assert_counters_match_messages(db) -> None:
    """Every send's counters equal its messages' statuses, and every recipient is once."""
    counted = rows(
        db,
        f"""
        SELECT l.id, l.quantity, l.sent, l.delivered, l.failed,
               count(s.id) FILTER (WHERE s.status = 'sent'),
               count(s.id) FILTER (WHERE s.status = 'delivered'),
               count(s.id) FILTER (WHERE s.status = 'failed'),
               (SELECT count(*) FROM ({RECIPIENTS}) r
                WHERE r.id IN (SELECT unnest(ids) FROM dispatch_batches WHERE sendlogid = l.id)
                   OR r.id IN (SELECT id FROM sms WHERE sendlogid = l.id))
        FROM sendlog l LEFT JOIN sms s ON s.sendlogid = l.id
        GROUP BY l.id ORDER BY l.id
        """,
    )
    for send_id, quantity, sent, delivered, failed, *actual, total in counted:
        assert (sent, delivered, failed) == tuple(actual), f"send {send_id}"
        assert quantity == total, f"send {send_id}"


class WorkerKilled(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the send path handles it."""


class CrashingProvider(MockProvider):
    """MockProvider whose worker dies during call `crash_at`, after the batch reached it."""

    def __init__(self, settings, crash_at: int):
        super().__init__(settings)
        self.crash_at = crash_at
        self.calls = 0
        self.received: list[str] = []

    def send_batch(self, recipients, text, sender):
        self.calls += 1
        self.received.extend(r.msisdn for r in recipients)
        if self.calls == self.crash_at:
            raise WorkerKilled
        return super().send_batch(recipients, text, sender)


class LookupProvider(CrashingProvider):
    """Can look a send up by our client reference (`find_sends`)."""

    can_find_sends = True
    lookup_fails = False

    def try_find_sends(self, recipients):
        if self.lookup_fails:
            raise ConnectionError("provider down")
        results = []
        for recipient in recipients:
            if recipient.msisdn in self.received:  # else it cannot say: left out
                provider_id = f"mock-{recipient.msisdn}-{recipient.reference}"
                results.append(SendResult(recipient.reference, True, provider_id, segments=1))
        return results


@pytest.fixture
def batched_app(make_app):
    # One batch at a time and a short wait: the crashed batch is the only one in doubt.
    return make_app(base_config(maxBatchSize=100, maxConcurrentRequests=1, waitSeconds=1))


@pytest.fixture(autouse=True)
def quiet_thread_deaths(monkeypatch):
    """A WorkerKilled thread is the point of these tests, not an error to print."""
    original = threading.excepthook
    monkeypatch.setattr(
        threading,
        "excepthook",
        lambda args: None if args.exc_type is WorkerKilled else original(args),
    )


def crash_a_send(app, provider_class, crash_at: int, count: int):
    services = app.extensions["messaging"]
    provider = provider_class(services.provider.settings, crash_at)
    services.provider = provider
    outcome = service.send_sms(services, "hello", accepted_numbers(count), None, "test")
    return provider, outcome


def test_the_batch_at_the_provider_is_settled_unknown_and_the_rest_is_still_sent(batched_app, db):
    provider, outcome = crash_a_send(batched_app, CrashingProvider, crash_at=3, count=450)
    # The request went on without the dead batch and answered what it knew.
    assert (outcome.messages_sent, outcome.queued_numbers) == (350, 100)
    assert outcome.state == "sending"
    assert statuses(db) == {"sent:": 350, "queued:": 100}

    result = batched_app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0"])

    assert result.exit_code == 0, result.output
    assert "1 abandoned batch(es) settled; 100 recipients provider outcome unknown" in (
        result.output
    )
    assert provider.calls == 5  # never resent
    assert statuses(db) == {"sent:": 350, f"failed:{OUTCOME_UNKNOWN}": 100}
    assert rows(db, "SELECT status, description FROM sendlog") == [
        ("success", "100 of 450 recipients rejected by the provider")
    ]
    assert_counters_match_messages(db)


def test_reconcile_leaves_a_batch_within_its_lease_alone(batched_app, db):
    crash_a_send(batched_app, CrashingProvider, crash_at=2, count=300)
    result = batched_app.test_cli_runner().invoke(args=["reconcile"])
    assert "0 abandoned batch(es)" in result.output
    assert statuses(db) == {"sent:": 200, "queued:": 100}
    assert rows(db, "SELECT status FROM sendlog") == [("sending",)]


def test_a_batch_whose_lease_ran_out_is_settled_by_a_plain_reconcile(batched_app, db):
    crash_a_send(batched_app, CrashingProvider, crash_at=2, count=300)
    with db.cursor() as cur:
        cur.execute("UPDATE dispatch_batches SET leaseduntil = now() - interval '1 second'")
    result = batched_app.test_cli_runner().invoke(args=["reconcile"])
    assert "1 abandoned batch(es) settled" in result.output
    assert statuses(db) == {"sent:": 200, f"failed:{OUTCOME_UNKNOWN}": 100}


def test_reconcile_twice_changes_nothing_the_second_time(batched_app, db):
    crash_a_send(batched_app, CrashingProvider, crash_at=2, count=300)
    runner = batched_app.test_cli_runner()
    runner.invoke(args=["reconcile", "--older-than", "0"])
    before = rows(db, "SELECT * FROM sendlog"), statuses(db)
    again = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert "0 abandoned batch(es)" in again.output
    assert (rows(db, "SELECT * FROM sendlog"), statuses(db)) == before
    assert_counters_match_messages(db)


def test_reconcile_asks_the_provider_by_client_reference_when_it_can(batched_app, db):
    provider, _ = crash_a_send(batched_app, LookupProvider, crash_at=2, count=300)
    calls = provider.calls
    result = batched_app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0"])
    assert "provider lookup: 100 sent, 0 failed" in result.output
    assert provider.calls == calls  # asked, never resent
    assert statuses(db) == {"sent:": 300}
    [(first_id,)] = rows(db, "SELECT min(id) FROM sms WHERE msisdn = '27830001001'")
    assert rows(db, "SELECT providerid FROM sms WHERE id = %s", first_id) == [
        (f"mock-27830001001-{first_id}",)
    ]
    assert rows(db, "SELECT status, description FROM sendlog") == [("success", "")]
    assert_counters_match_messages(db)


def test_a_failed_lookup_keeps_that_batch_for_the_next_run(batched_app, db):
    provider, _ = crash_a_send(batched_app, LookupProvider, crash_at=2, count=300)
    provider.lookup_fails = True
    runner = batched_app.test_cli_runner()
    failed = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert failed.exit_code == 1
    assert "1 lookups failed (kept for the next run)" in failed.output
    assert statuses(db) == {"sent:": 200, "queued:": 100}
    assert rows(db, "SELECT status FROM sendlog") == [("sending",)]

    provider.lookup_fails = False
    assert runner.invoke(args=["reconcile", "--older-than", "0"]).exit_code == 0
    assert statuses(db) == {"sent:": 300}
    assert rows(db, "SELECT status FROM sendlog") == [("success",)]
    assert_counters_match_messages(db)


def test_poll_status_settles_abandoned_batches_then_polls(batched_app, db):
    crash_a_send(batched_app, CrashingProvider, crash_at=2, count=300)
    with db.cursor() as cur:
        cur.execute("UPDATE dispatch_batches SET leaseduntil = now() - interval '1 second'")
    result = batched_app.test_cli_runner().invoke(args=["poll-status"])
    assert result.exit_code == 0, result.output
    assert "reconcile: 1 abandoned batch(es) settled; 100 recipients provider outcome unknown" in (
        result.output
    )
    assert statuses(db) == {
        "delivered:Delivered to handset": 200,
        f"failed:{OUTCOME_UNKNOWN}": 100,
    }
    assert_counters_match_messages(db)


def test_a_batch_taken_over_under_a_slow_worker_records_nothing_twice(batched_app, db):
    services = batched_app.extensions["messaging"]
    provider = services.provider = HeldProvider(services.provider.settings, hold_at=2)
    outcome = []
    sender = threading.Thread(
        target=lambda: outcome.append(
            service.send_sms(services, "hello", accepted_numbers(300), None, "test", wait=30)
        )
    )
    sender.start()
    try:
        assert provider.holding.wait(30)
        result = batched_app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0"])
    finally:
        provider.release.set()
        sender.join(30)

    assert "1 abandoned batch(es) settled; 100 recipients provider outcome unknown" in (
        result.output
    )
    assert list(provider.batches) == [100, 100, 100]  # each batch handed over once
    [answer] = outcome
    assert answer.state == "done" and answer.messages_sent == 200
    # The slow worker's late answer for batch 2 was not recorded over the settlement.
    assert statuses(db) == {"sent:": 200, f"failed:{OUTCOME_UNKNOWN}": 100}
    assert_counters_match_messages(db)


def test_a_send_left_unfinished_before_the_upgrade_goes_on_with_the_dispatchers(
    make_database, make_app, monkeypatch
):
    """Migration 0013 turns an old send's pending recipients into batches: those above the
    dispatch mark were never handed over and are sent now; those at or below it are
    settled as abandoned."""
    url = make_database("messaging_upgrade")
    every = db_module.migration_files()
    monkeypatch.setattr(
        db_module, "migration_files", lambda folder=None: [m for m in every if m[0] <= 10]
    )
    apply_migrations(Database(url))
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent, "
            "message, status, description, dispatchedthrough) "
            "VALUES (now() AT TIME ZONE 'utc', 'old', 'sms', 3, 0, 0, 1, 'hi', 'sending', '', 2)"
        )
        cur.execute(
            "INSERT INTO sms (id, msisdn, senttime, segments, sendlogid, status, message, "
            "providerid) VALUES (1, '27830000001', now(), 1, 1, 'sent', 'hi', 'p1')"
        )
        cur.execute(
            "INSERT INTO pending_recipients VALUES "
            "(1, 1, '{27830000001,27830000002,27830000003}', '{1,2,3}')"
        )
        cur.execute("SELECT setval('sms_id_seq', 3)")
    monkeypatch.setattr(db_module, "migration_files", lambda folder=None: every)
    app = make_app(base_config(), url=url)

    assert rows(conn, "SELECT ids, state FROM dispatch_batches ORDER BY seq") == [
        ([2], "sending"),
        ([3], "ready"),
    ]
    runner = app.test_cli_runner()
    assert runner.invoke(args=["reconcile", "--older-than", "0"]).exit_code == 0
    assert runner.invoke(args=["dispatch", "--until-idle"]).exit_code == 0
    assert rows(conn, "SELECT id, status, reason FROM sms ORDER BY id") == [
        (1, "sent", None),
        (2, "failed", OUTCOME_UNKNOWN),
        (3, "sent", None),
    ]
    assert rows(conn, "SELECT status, sent, failed, accepted FROM sendlog") == [
        ("success", 2, 1, 2)
    ]
    conn.close()
