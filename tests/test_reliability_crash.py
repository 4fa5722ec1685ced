"""A process that dies mid-send (a gunicorn worker whose caller waits, a dispatcher) loses
no recipient and sends none twice: another dispatcher takes its batches over after the
lease, settling the one at the provider without resending it, and sends the rest.

A recipient whose batch the provider has not answered has no sms row yet: it waits in
dispatch_batches, which is `queued` (as /sends/<ref> shows it)."""

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from tests.conftest import base_config, dispatcher_process, gunicorn_server, log_of, rows
from tests.providers.fakes import FakeProvider, Reply
from tests.test_reconcile import assert_counters_match_messages

OUTCOME_UNKNOWN = "provider outcome unknown"


def numbers(count: int) -> list[str]:
    return [f"0830{i:06d}" for i in range(count)]


def international(number: str) -> str:
    return "27" + number[1:]


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
    """Batches of 100, one at a time, and a short provider timeout: a lease of 6.5 s."""
    settings = {
        "name": "Clickatell",
        "url": url,
        "timeout": 1,
        "retries": 0,
        "maxRecipients": 10_000,
        "maxBatchSize": 100,
        "maxConcurrentRequests": 1,
    }
    return base_config(**{**settings, **provider})


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


def settled_exactly_once(db, fake: SlowClickatell, submitted: list[str]) -> dict:
    """Check every number is recorded once and reached the provider at most once; return
    the recorded numbers by (status, reason)."""
    per_number = dict(rows(db, "SELECT msisdn, count(*) FROM sms GROUP BY 1"))
    assert per_number == {international(n): 1 for n in submitted}
    assert rows(db, "SELECT count(*) FROM dispatch_batches") == [(0,)]
    assert max(fake.received.values()) == 1
    by_status: dict = {}
    for msisdn, status, reason in rows(db, "SELECT msisdn, status, reason FROM sms ORDER BY id"):
        by_status.setdefault((status, reason), []).append(msisdn)
    assert set(by_status[("sent", None)]) <= set(fake.received)
    assert_counters_match_messages(db)
    return by_status


def test_a_worker_killed_while_its_caller_waits_loses_nothing_and_sends_nothing_twice(
    database_url, db, tmp_path
):
    submitted = numbers(5000)
    fake = SlowClickatell(hold_at=10)
    config = clickatell_config(fake.url, waitSeconds=120)  # the request sends it all itself
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
            fake.release.set()

            assert len(answers) == 1 and isinstance(answers[0], requests.RequestException)
            assert rows(db, "SELECT count(*) FROM sms") == [(900,)]  # batches 1-9 answered
            assert rows(
                db, "SELECT state, count(*) FROM dispatch_batches GROUP BY 1 ORDER BY 1"
            ) == [
                ("ready", 40),
                ("sending", 1),
            ]
            # A dispatcher sends the rest at once and settles batch 10 after its lease.
            with dispatcher_process(config, database_url, tmp_path, args=["--until-idle"]) as d:
                assert d.wait(60) == 0, log_of(tmp_path, "dispatch")
    finally:
        fake.stop()

    by_status = settled_exactly_once(db, fake, submitted)
    expected = [international(n) for n in submitted]
    assert by_status == {
        ("sent", None): expected[:900] + expected[1000:],
        ("failed", OUTCOME_UNKNOWN): expected[900:1000],  # batch 10: at the provider
    }
    assert fake.calls == 50
    assert rows(db, "SELECT status, description FROM sendlog") == [
        ("success", "100 of 5000 recipients rejected by the provider")
    ]


def test_a_dispatcher_killed_mid_send_is_taken_over_by_another(database_url, db, tmp_path):
    submitted = numbers(3000)
    fake = SlowClickatell(hold_at=10)
    config = clickatell_config(fake.url)
    try:
        with gunicorn_server(config, database_url, tmp_path, workers=1) as base:
            accepted = requests.post(
                f"{base}/sendsms",
                json={"message": "Water off at 10:00", "msisdns": submitted},
                headers={"Prefer": "respond-async"},
                timeout=30,
            )
            assert accepted.status_code == 202, accepted.text
            ref = accepted.json()["refNumber"]
            with dispatcher_process(config, database_url, tmp_path, name="first") as first:
                assert fake.held.wait(60), "the send never reached batch 10"
                first.send_signal(signal.SIGKILL)
                first.wait(30)
            fake.release.set()
            during = requests.get(f"{base}/sends/{ref}", timeout=30).json()["send"]
            with dispatcher_process(
                config, database_url, tmp_path, name="second", args=["--until-idle"]
            ) as second:
                assert second.wait(60) == 0, log_of(tmp_path, "second")
            after = requests.get(f"{base}/sends/{ref}", timeout=30).json()["send"]
    finally:
        fake.stop()

    assert (during["state"], during["queued"]) == ("sending", 2100)
    by_status = settled_exactly_once(db, fake, submitted)
    expected = [international(n) for n in submitted]
    assert by_status[("failed", OUTCOME_UNKNOWN)] == expected[900:1000]
    assert len(by_status[("sent", None)]) == 2900
    assert (after["state"], after["queued"], after["sent"]) == ("done", 0, 2900)
    assert "abandoned at the provider; settled without resending" in log_of(tmp_path, "second")


def test_sigterm_lets_a_dispatcher_finish_and_record_its_batch_then_exit(
    database_url, db, tmp_path, make_app
):
    fake = SlowClickatell(hold_at=3)
    config = clickatell_config(fake.url, timeout=30)
    client = make_app(config).test_client()
    try:
        accepted = client.post(
            "/sendsms",
            json={"message": "hi", "msisdns": numbers(1000)},
            headers={"Prefer": "respond-async"},
        )
        assert accepted.status_code == 202
        with dispatcher_process(config, database_url, tmp_path) as dispatcher:
            assert fake.held.wait(60)
            dispatcher.send_signal(signal.SIGTERM)
            time.sleep(1)
            assert dispatcher.poll() is None  # still waiting for the provider's answer
            fake.release.set()
            assert dispatcher.wait(30) == 0
    finally:
        fake.stop()

    assert "SIGTERM: finishing the batches in flight" in log_of(tmp_path, "dispatch")
    assert rows(db, "SELECT status, count(*) FROM sms GROUP BY 1") == [("sent", 300)]
    assert rows(db, "SELECT state, count(*) FROM dispatch_batches GROUP BY 1") == [("ready", 7)]
    assert fake.calls == 3
