"""A sending process that dies mid-send loses no recipient and sends none twice;
`flask reconcile` settles what it left `queued`, and never resends.

A recipient whose batch the provider has not answered has no sms row yet: it waits in
pending_recipients, which is `queued` (as /sends/<ref> shows it)."""

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from messaging import service
from messaging.providers.base import SendResult
from messaging.providers.mock import MockProvider
from tests.conftest import HeldProvider, base_config, gunicorn_server, rows
from tests.providers.fakes import FakeProvider, Reply

NEVER_DISPATCHED = "interrupted before dispatch"
OUTCOME_UNKNOWN = "provider outcome unknown"


def numbers(count: int) -> list[str]:
    return [f"0830{i:06d}" for i in range(count)]


def accepted_numbers(count: int) -> list[str]:
    """Numbers MockProvider accepts and reports delivered (last digit 1)."""
    return [f"083{i:06d}1" for i in range(count)]


# Every recipient the database holds: its sms row, or its pending entry as `queued`.
RECIPIENTS = """
    SELECT id, msisdn, status, reason FROM sms
    UNION ALL
    SELECT r.id, r.msisdn, 'queued', NULL
    FROM pending_recipients AS pending, unnest(pending.ids, pending.msisdns) AS r(id, msisdn)
    WHERE NOT EXISTS (SELECT 1 FROM sms WHERE sms.id = r.id)
"""


def international(number: str) -> str:
    return "27" + number[1:]


def assert_counters_match_messages(db) -> None:
    """Every send's counters equal its messages' statuses (and cover every message)."""
    counted = rows(
        db,
        """
        SELECT l.id, l.quantity, l.sent, l.delivered, l.failed,
               count(s.id) FILTER (WHERE s.status = 'sent'),
               count(s.id) FILTER (WHERE s.status = 'delivered'),
               count(s.id) FILTER (WHERE s.status = 'failed'),
               count(s.id)
        FROM sendlog l LEFT JOIN sms s ON s.sendlogid = l.id
        GROUP BY l.id ORDER BY l.id
        """,
    )
    for send_id, quantity, sent, delivered, failed, *actual, total in counted:
        assert (sent, delivered, failed) == tuple(actual), f"send {send_id}"
        assert quantity == total, f"send {send_id}"


# --- a real crash: gunicorn's worker SIGKILLed while the provider holds a batch ---


class SlowClickatell:
    """A Clickatell fake that answers each batch after a pause and holds batch `hold_at`
    until released: the worker can be killed while that batch is at the provider."""

    def __init__(self, hold_at: int, pause: float = 0.01):
        self.hold_at = hold_at
        self.pause = pause
        self.received: Counter[str] = Counter()
        self.calls = 0
        self.held = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = FakeProvider()
        self.server.default = self.answer
        self.url = self.server.url

    def answer(self, recorded) -> Reply:
        to = recorded.json["to"]
        with self._lock:
            self.calls += 1
            call = self.calls
            self.received.update(to)
        if call == self.hold_at:
            self.held.set()
            self.release.wait(60)
        else:
            time.sleep(self.pause)
        accepted = [{"accepted": True, "to": n, "apiMessageId": f"api-{n}"} for n in to]
        return Reply(200, {"data": {"message": accepted}})

    def stop(self) -> None:
        self.release.set()
        self.server.stop()


def clickatell_config(url: str, **provider) -> dict:
    return base_config(
        name="Clickatell", url=url, timeout=30, retries=0, maxRecipients=10_000, **provider
    )


def gunicorn_workers(base_url: str) -> list[int]:
    """Pids of the workers of the gunicorn this test process started (Linux /proc)."""
    masters = [pid for pid in _pids() if _parent(pid) == os.getpid() and "gunicorn" in _cmd(pid)]
    assert len(masters) == 1, masters
    return [pid for pid in _pids() if _parent(pid) == masters[0]]


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_worker_killed_mid_send_loses_nothing_and_sends_nothing_twice(
    database_url, db, tmp_path, make_app
):
    submitted = numbers(5000)
    fake = SlowClickatell(hold_at=10)
    config = clickatell_config(fake.url, maxBatchSize=100)
    answers = []
    try:
        with gunicorn_server(config, database_url, tmp_path, workers=1) as base:
            [worker] = gunicorn_workers(base)

            def post():
                try:
                    body = {"message": "Water off at 10:00", "msisdns": submitted}
                    answers.append(requests.post(f"{base}/sendsms", json=body, timeout=60))
                except requests.RequestException as err:
                    answers.append(err)

            caller = threading.Thread(target=post)
            caller.start()
            assert fake.held.wait(60), "the send never reached batch 10"
            os.kill(worker, signal.SIGKILL)
            caller.join(60)
        calls_before_reconcile = fake.calls

        # The caller got no answer; the database holds the truth.
        assert len(answers) == 1 and isinstance(answers[0], requests.RequestException)
        per_number = dict(rows(db, f"SELECT msisdn, count(*) FROM ({RECIPIENTS}) r GROUP BY 1"))
        assert per_number == {international(n): 1 for n in submitted}
        assert rows(db, "SELECT count(*) FROM sms") == [(900,)]  # batches 1-9 answered
        assert max(fake.received.values()) == 1
        assert len(fake.received) == 10 * 100
        assert rows(db, "SELECT status FROM sendlog") == [("sending",)]

        result = make_app(config).test_cli_runner().invoke(args=["reconcile", "--older-than", "0"])
        assert result.exit_code == 0, result.output
        assert "4000 recipients never dispatched, 100 provider outcome unknown" in result.output
    finally:
        fake.stop()

    assert fake.calls == calls_before_reconcile  # reconcile never resends
    by_status = {}
    for msisdn, status, reason in rows(db, "SELECT msisdn, status, reason FROM sms ORDER BY id"):
        by_status.setdefault((status, reason), []).append(msisdn)
    expected = [international(n) for n in submitted]
    assert (
        by_status
        == {
            ("sent", None): expected[:900],  # batches 1-9: answered and recorded
            ("failed", OUTCOME_UNKNOWN): expected[900:1000],  # batch 10: at the provider
            ("failed", NEVER_DISPATCHED): expected[1000:],  # never handed over
        }
    )
    assert set(by_status[("failed", NEVER_DISPATCHED)]).isdisjoint(fake.received)
    assert_counters_match_messages(db)
    [(status, description)] = rows(db, "SELECT status, description FROM sendlog")
    assert status == "failed"
    assert "4000 recipients never dispatched, 100 with the provider's outcome unknown" in (
        description
    )


# --- the same rules, with the crash simulated in process ---


class WorkerKilled(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing in the send path handles it."""


class CrashingProvider(MockProvider):
    """MockProvider that dies during call `crash_at` after the batch reached it."""

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
    """Can look a send up by our client reference (the capability `can_find_sends`)."""

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


def crash_a_send(app, provider_class, crash_at: int, count: int, batch: int = 100):
    services = app.extensions["messaging"]
    provider = provider_class(services.provider.settings, crash_at)
    services.provider = provider
    with pytest.raises(WorkerKilled):
        service.send_sms(services, "hello", accepted_numbers(count), None, "test")
    return provider


@pytest.fixture
def batched_app(make_app):
    return make_app(base_config(maxBatchSize=100))


def age(db, seconds: int) -> None:
    """Make every send look `seconds` older (sends silent that long)."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE sendlog SET senttime = senttime - make_interval(secs => %s), "
            "dispatchedat = dispatchedat - make_interval(secs => %s)",
            (seconds, seconds),
        )
        cur.execute("UPDATE sms SET senttime = senttime - make_interval(secs => %s)", (seconds,))


def statuses(db) -> dict:
    return dict(
        rows(
            db,
            f"SELECT status || ':' || COALESCE(reason, ''), count(*) FROM ({RECIPIENTS}) r "
            "GROUP BY 1",
        )
    )


def test_the_batch_at_the_provider_is_outcome_unknown_and_the_rest_never_dispatched(
    batched_app, db
):
    crash_a_send(batched_app, CrashingProvider, crash_at=3, count=450)
    result = batched_app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0"])
    assert result.exit_code == 0, result.output
    assert statuses(db) == {
        "sent:": 200,
        f"failed:{OUTCOME_UNKNOWN}": 100,
        f"failed:{NEVER_DISPATCHED}": 150,
    }
    assert_counters_match_messages(db)


def test_a_crash_in_the_first_call_leaves_only_that_batch_unknown(batched_app, db):
    crash_a_send(batched_app, CrashingProvider, crash_at=1, count=250)
    batched_app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0"])
    assert statuses(db) == {f"failed:{OUTCOME_UNKNOWN}": 100, f"failed:{NEVER_DISPATCHED}": 150}
    assert_counters_match_messages(db)


def test_reconcile_leaves_a_send_that_may_still_be_working_alone(batched_app, db):
    crash_a_send(batched_app, CrashingProvider, crash_at=2, count=300)
    result = batched_app.test_cli_runner().invoke(args=["reconcile"])
    assert "0 interrupted send(s)" in result.output
    assert statuses(db) == {"sent:": 100, "queued:": 200}
    assert rows(db, "SELECT status FROM sendlog") == [("sending",)]


def test_a_send_closed_by_reconcile_under_it_records_nothing_twice_and_stops(batched_app, db):
    services = batched_app.extensions["messaging"]
    provider = services.provider = HeldProvider(services.provider.settings, hold_at=2)
    outcome = []
    sender = threading.Thread(
        target=lambda: outcome.append(
            service.send_sms(services, "hello", accepted_numbers(300), None, "test")
        )
    )
    sender.start()
    try:
        assert provider.holding.wait(30)
        result = batched_app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0"])
    finally:
        provider.release.set()
        sender.join(30)

    assert "100 recipients never dispatched, 100 provider outcome unknown" in result.output
    assert list(provider.batches) == [100, 100]  # the third batch was never handed over
    [answer] = outcome
    assert not answer.send_success and answer.messages_sent == 100
    assert "closed by reconcile" in answer.status_description
    assert statuses(db) == {
        "sent:": 100,
        f"failed:{OUTCOME_UNKNOWN}": 100,
        f"failed:{NEVER_DISPATCHED}": 100,
    }
    [(status, description)] = rows(db, "SELECT status, description FROM sendlog")
    assert status == "failed" and description.startswith("Send interrupted")
    assert rows(db, "SELECT count(*) FROM pending_recipients") == [(0,)]
    assert_counters_match_messages(db)


def test_reconcile_twice_changes_nothing_the_second_time(batched_app, db):
    crash_a_send(batched_app, CrashingProvider, crash_at=2, count=300)
    runner = batched_app.test_cli_runner()
    runner.invoke(args=["reconcile", "--older-than", "0"])
    before = rows(db, "SELECT * FROM sendlog"), statuses(db)
    again = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert "0 interrupted send(s)" in again.output
    assert (rows(db, "SELECT * FROM sendlog"), statuses(db)) == before
    assert_counters_match_messages(db)


def test_reconcile_asks_the_provider_by_client_reference_when_it_can(batched_app, db):
    provider = crash_a_send(batched_app, LookupProvider, crash_at=2, count=300)
    calls = provider.calls
    result = batched_app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0"])
    assert "provider lookup: 100 sent, 0 failed" in result.output
    assert provider.calls == calls  # asked, never resent
    assert statuses(db) == {"sent:": 200, f"failed:{NEVER_DISPATCHED}": 100}
    found = rows(db, "SELECT providerid FROM sms WHERE id BETWEEN 101 AND 200 ORDER BY id")
    assert found[0] == ("mock-27830001001-101",)
    assert_counters_match_messages(db)


def test_a_failed_lookup_leaves_that_batch_queued_for_the_next_run(batched_app, db):
    provider = crash_a_send(batched_app, LookupProvider, crash_at=2, count=300)
    provider.lookup_fails = True
    runner = batched_app.test_cli_runner()
    failed = runner.invoke(args=["reconcile", "--older-than", "0"])
    assert failed.exit_code == 1
    assert "100 lookups failed (left queued)" in failed.output
    assert statuses(db) == {"sent:": 100, "queued:": 100, f"failed:{NEVER_DISPATCHED}": 100}
    assert rows(db, "SELECT status FROM sendlog") == [("sending",)]

    provider.lookup_fails = False
    assert runner.invoke(args=["reconcile", "--older-than", "0"]).exit_code == 0
    assert statuses(db) == {"sent:": 200, f"failed:{NEVER_DISPATCHED}": 100}
    assert rows(db, "SELECT status FROM sendlog") == [("failed",)]
    assert_counters_match_messages(db)


def test_poll_status_reconciles_sends_silent_for_some_minutes_then_polls(batched_app, db):
    crash_a_send(batched_app, CrashingProvider, crash_at=2, count=300)
    age(db, 3600)
    result = batched_app.test_cli_runner().invoke(args=["poll-status", "--window", "2h"])
    assert result.exit_code == 0, result.output
    assert (
        "reconcile: 1 interrupted send(s), 1 closed; 100 recipients never dispatched, "
        "100 provider outcome unknown" in result.output
    )
    assert statuses(db) == {
        "delivered:Delivered to handset": 100,
        f"failed:{OUTCOME_UNKNOWN}": 100,
        f"failed:{NEVER_DISPATCHED}": 100,
    }
    assert_counters_match_messages(db)


def test_a_send_killed_after_its_last_batch_is_closed_as_it_went(client, runner, db):
    """Killed after every recipient was recorded, before the send was marked done."""
    client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000001", "0830000009"]})
    with db.cursor() as cur:
        cur.execute("UPDATE sendlog SET status = 'sending', description = ''")
    runner.invoke(args=["reconcile", "--older-than", "0"])
    [(status, description)] = rows(db, "SELECT status, description FROM sendlog")
    assert status == "success"
    assert "0 recipients never dispatched, 0 with the provider's outcome unknown" in description
    assert statuses(db) == {"sent:": 1, "failed:Invalid destination address": 1}
