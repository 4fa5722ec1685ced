"""Dispatch from PostgreSQL: batches in parallel, the synchronous answer within waitSeconds,
respond-async, back-off while the provider refuses for now, fairness between sends,
schedules and cancels, several dispatchers sharing one send and one rate limit."""

import os
import select
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
import requests

from messaging import dispatch, service
from messaging.db import _as_prepared
from messaging.errors import ServiceUnavailable
from messaging.queries.dispatch import DISPATCH_CHANNEL, send_progress
from tests.conftest import base_config, dispatcher_process, gunicorn_server, log_of, rows
from tests.providers.fakes import FakeProvider, Reply
from tests.test_reconcile import assert_counters_match_messages


class SlowProvider:
    """A Clickatell-shaped fake answering each request after `latency` seconds, recording
    how many requests were in flight at once, what each number got, and when each call
    arrived. `refuse` makes it answer 503 (refused for now) until cleared."""

    def __init__(self, latency: float = 0.0):
        self.latency = latency
        self.refuse = threading.Event()
        self.in_flight = 0
        self.most_in_flight = 0
        self.received: Counter[str] = Counter()
        self.arrivals: list[float] = []
        self.order: list[str] = []  # each accepted batch's first number
        self._lock = threading.Lock()
        self.server = FakeProvider()
        self.server.default = self.answer
        self.url = self.server.url

    def answer(self, recorded) -> Reply:
        with self._lock:
            self.arrivals.append(time.monotonic())
            if self.refuse.is_set():
                return Reply(503, {"error": "busy"}, {"Retry-After": "0"})
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.latency)
        to = recorded.json["to"]
        with self._lock:
            self.in_flight -= 1
            self.received.update(to)
            self.order.append(to[0])
        accepted = [{"accepted": True, "to": n, "apiMessageId": f"api-{n}"} for n in to]
        return Reply(200, {"data": {"message": accepted}})

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def slow():
    fake = SlowProvider(latency=0.25)
    yield fake
    fake.stop()


def config_for(url: str, **provider) -> dict:
    settings = {"name": "Clickatell", "url": url, "timeout": 5, "retries": 0}
    return base_config(**{**settings, "maxRecipients": 100_000, **provider})


def numbers(count: int, prefix: str = "083") -> list[str]:
    return [f"{prefix}{n:07d}" for n in range(count)]


def wait_until(predicate, timeout: float = 60.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def state_of(client, ref) -> dict:
    return client.get(f"/sends/{ref}").get_json()["send"]


def test_one_sends_batches_go_out_in_parallel_up_to_max_concurrent_requests(make_app, db, slow):
    client = make_app(config_for(slow.url, maxBatchSize=500, maxConcurrentRequests=4)).test_client()

    body = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(10_000)}).get_json()

    assert (body["messagesSent"], body["queuedNumbers"], body["sendSuccess"]) == (10_000, 0, True)
    assert slow.most_in_flight == 4
    assert len(slow.arrivals) == 20 and max(slow.received.values()) == 1
    assert_counters_match_messages(db)


def test_a_send_not_done_within_wait_seconds_answers_what_is_known_and_goes_on(
    make_app, database_url, db, slow, tmp_path
):
    config = config_for(slow.url, maxBatchSize=100, maxConcurrentRequests=1, waitSeconds=1)
    client = make_app(config).test_client()

    began = time.monotonic()
    body = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(2000)}).get_json()
    answered_in = time.monotonic() - began

    assert answered_in < 3  # waitSeconds and the batch in flight, not the 20 batches
    assert 0 < body["messagesSent"] < 2000
    assert body["messagesSent"] + body["queuedNumbers"] == 2000
    assert body["sendSuccess"] is True
    assert (
        f"queued, still being sent; see GET /sends/{body['refNumber']}"
        in (body["statusDescription"])
    )
    with dispatcher_process(config, database_url, tmp_path, args=["--until-idle"]) as d:
        assert d.wait(60) == 0, log_of(tmp_path, "dispatch")
    assert state_of(client, body["refNumber"])["state"] == "done"
    assert sum(slow.received.values()) == 2000 and max(slow.received.values()) == 1
    assert_counters_match_messages(db)


def test_respond_async_answers_202_at_once_and_the_dispatchers_send_it(
    make_app, database_url, db, slow, tmp_path
):
    config = config_for(slow.url, maxBatchSize=500)
    client = make_app(config).test_client()

    answer = client.post(
        "/sendsms",
        json={"message": "hi", "msisdns": numbers(1000)},
        headers={"Prefer": "respond-async, wait=5"},
    )

    assert answer.status_code == 202
    body = answer.get_json()
    assert answer.headers["Location"] == f"/sends/{body['refNumber']}"
    assert answer.headers["Preference-Applied"] == "respond-async"
    assert (body["messagesSent"], body["queuedNumbers"]) == (0, 1000)
    assert slow.arrivals == []
    assert state_of(client, body["refNumber"])["state"] == "sending"
    with dispatcher_process(config, database_url, tmp_path, args=["--until-idle"]) as d:
        assert d.wait(60) == 0, log_of(tmp_path, "dispatch")
    assert state_of(client, body["refNumber"])["queued"] == 0
    assert sum(slow.received.values()) == 1000


def niceness_of_threads(pid: int) -> list[int]:
    """Each thread's niceness (/proc/<pid>/task/<tid>/stat, field 19)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]) for task in tasks]


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize(("args", "added"), [((), dispatch.NICENESS), (("--nice", "0"), 0)])
def test_a_dispatcher_runs_every_thread_at_its_niceness(database_url, db, tmp_path, args, added):
    with dispatcher_process(base_config(), database_url, tmp_path, args=args) as process:
        deadline = time.monotonic() + 30
        # its main thread, the wake-up watch and maxConcurrentRequests (4) workers
        while len(niceness_of_threads(process.pid)) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        threads = niceness_of_threads(process.pid)
    expected = min(19, os.nice(0) + added)  # the most a niceness can be
    assert len(threads) >= 6, log_of(tmp_path, "dispatch")
    assert set(threads) == {expected}
    assert f"niceness {expected}" in log_of(tmp_path, "dispatch")


def test_only_a_send_the_request_cannot_finish_alone_wakes_the_dispatchers(
    make_app, database_url, db
):
    client = make_app(base_config(maxBatchSize=2)).test_client()
    listener = psycopg2.connect(database_url)
    listener.autocommit = True
    listener.cursor().execute(f"LISTEN {DISPATCH_CHANNEL}")

    def woken() -> list[str]:
        """The sends announced since the last call, once at least one was."""
        deadline = time.monotonic() + 10
        while not listener.notifies and time.monotonic() < deadline:
            select.select([listener], [], [], 0.1)
            listener.poll()
        payloads = [notify.payload for notify in listener.notifies]
        listener.notifies.clear()
        return payloads

    try:
        one_batch = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(2)})
        assert one_batch.get_json()["messagesSent"] == 2
        queued = client.post(
            "/sendsms",
            json={"message": "hi", "msisdns": numbers(1)},
            headers={"Prefer": "respond-async"},
        )
        # Announced in commit order, with how many batches (workers to call): the
        # one-batch send, which the request sent at once (a dispatcher would only have
        # raced it for its batch), announced nothing.
        assert woken() == [queued.get_json()["refNumber"] + ":1"]
        two_batches = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(3)})
        assert woken() == [two_batches.get_json()["refNumber"] + ":2"]  # dispatchers help
    finally:
        listener.close()


def test_a_provider_down_for_longer_than_its_backoff_keeps_recipients_queued_then_sends(
    make_app, db
):
    fake = SlowProvider()
    fake.refuse.set()
    try:
        client = make_app(config_for(fake.url, waitSeconds=0.5)).test_client()
        body = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(3)}).get_json()
        ref = body["refNumber"]
        assert (body["messagesSent"], body["queuedNumbers"]) == (0, 3)
        assert (
            "the provider refused for now: Error 503: Provider unavailable"
            in (body["statusDescription"])
        )
        report = client.get(f"/sends/{ref}").get_json()
        assert {(r["status"], r["reason"]) for r in report["recipients"]} == {
            ("queued", "Error 503: Provider unavailable")
        }
        refused = len(fake.arrivals)
        fake.refuse.clear()  # back: the next attempt after the back-off gets through

        dispatcher = dispatch.Dispatcher(client.application.extensions["messaging"])
        dispatcher.idle_exit = True
        dispatcher.run()
    finally:
        fake.stop()

    assert refused >= 1
    assert sum(fake.received.values()) == 3
    assert state_of(client, ref)["state"] == "done"
    assert rows(db, "SELECT status, count(*) FROM sms GROUP BY 1") == [("sent", 3)]


def test_recipients_fail_with_the_last_refusal_once_the_retry_window_is_over(make_app, db):
    fake = SlowProvider()
    fake.refuse.set()
    try:
        client = make_app(config_for(fake.url, retryWindow="2s", waitSeconds=6)).test_client()
        body = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(2)}).get_json()
    finally:
        fake.stop()

    assert body["sendSuccess"] is False and body["queuedNumbers"] == 0
    assert len(fake.arrivals) >= 2  # tried again with back-off before giving up
    assert (
        rows(db, "SELECT status, errorcode, reason FROM sms")
        == [("failed", "503", "Provider unavailable")] * 2
    )
    assert rows(db, "SELECT status, description FROM sendlog") == [
        ("failed", "Error 503: Provider unavailable")
    ]


def test_a_claim_whose_answer_was_lost_is_given_back_and_sent_once(make_app, db, slow):
    app = make_app(config_for(slow.url, maxBatchSize=2))
    services = app.extensions["messaging"]
    send = service.send_sms(services, "hi", numbers(4), None, "t", wait=0)
    worker = dispatch.Worker(services, name="test", takes_over=False)
    held = worker.claim()
    # The claim committed, but as if the connection died before its answer arrived.
    worker.lost_claims.append(held.lease)
    assert rows(db, "SELECT state FROM dispatch_batches ORDER BY seq") == [("sending",), ("ready",)]

    while worker.work_once():
        pass

    assert rows(db, "SELECT count(*) FROM dispatch_batches") == [(0,)]
    assert sorted(slow.received.values()) == [1, 1, 1, 1]
    assert rows(db, "SELECT status, count(*) FROM sms GROUP BY 1") == [("sent", 4)]
    assert rows(db, f"SELECT status FROM sendlog WHERE id = {send.ref_number}") == [("success",)]


def test_a_one_batch_send_its_request_sends_is_recorded_claimed_not_claimed_after(
    make_app, db, slow
):
    # A claim is an UPDATE of the batch: with the batch recorded claimed, the request's send
    # changes no batch row between its INSERT and its DELETE (one round trip fewer, S2).
    client = make_app(config_for(slow.url, maxBatchSize=2)).test_client()  # migrates
    with db.cursor() as cur:
        cur.execute(
            """
            CREATE TABLE batch_updates (state varchar, leasedby varchar);
            CREATE FUNCTION note_batch_update() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    INSERT INTO batch_updates VALUES (NEW.state, NEW.leasedby);
                    RETURN NEW;
                END $$;
            CREATE TRIGGER noted BEFORE UPDATE ON dispatch_batches
                FOR EACH ROW EXECUTE FUNCTION note_batch_update();
            """
        )
    try:
        one = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(2)})
        assert rows(db, "SELECT count(*) FROM batch_updates") == [(0,)]
        two = client.post("/sendsms", json={"message": "hi", "msisdns": numbers(3, "084")})
        # Two batches: recorded ready, each claimed by its own UPDATE.
        assert rows(db, "SELECT state, count(*) FROM batch_updates GROUP BY 1") == [("sending", 2)]
    finally:
        with db.cursor() as cur:
            cur.execute("DROP TABLE batch_updates; DROP FUNCTION note_batch_update() CASCADE")

    assert one.get_json()["messagesSent"] == 2 and two.get_json()["messagesSent"] == 3
    assert sorted(slow.received.values()) == [1] * 5
    assert rows(db, "SELECT status, count(*) FROM sms GROUP BY 1") == [("sent", 5)]
    assert rows(db, "SELECT count(*) FROM dispatch_batches") == [(0,)]


def test_a_send_recorded_claimed_whose_answer_was_lost_is_given_back_and_sent_once(
    make_app, db, slow, monkeypatch
):
    services = make_app(config_for(slow.url)).extensions["messaging"]
    recorded = service.record_send

    def answer_lost(cur, **kwargs):
        recorded(cur, **kwargs)  # in autocommit: committed, then the connection dies
        raise ServiceUnavailable("Database unavailable: server closed the connection")

    monkeypatch.setattr(service, "record_send", answer_lost)
    with pytest.raises(ServiceUnavailable):
        service.send_sms(services, "hi", numbers(1), None, "t")
    # Given back rather than held under the request's lease, to be settled as perhaps sent.
    assert rows(db, "SELECT state, leasedby, attempts FROM dispatch_batches") == [
        ("ready", None, 0)
    ]
    assert slow.received == Counter()

    worker = dispatch.Worker(services, name="test", takes_over=False)
    while worker.work_once():
        pass

    assert list(slow.received.values()) == [1]
    assert rows(db, "SELECT status FROM sms") == [("sent",)]
    assert rows(db, "SELECT status FROM sendlog") == [("success",)]


def test_small_sends_go_ahead_of_bulk_batches_and_bulk_sends_take_turns(make_app, db):
    app = make_app(config_for("http://127.0.0.1:9", maxBatchSize=100, bulkThreshold=100))
    services = app.extensions["messaging"]
    first = service.send_sms(services, "a", numbers(300, "082"), None, "t", wait=0)
    second = service.send_sms(services, "b", numbers(300, "084"), None, "t", wait=0)
    small = service.send_sms(services, "c", numbers(5, "081"), None, "t", wait=0)

    worker = dispatch.Worker(services, name="test")
    claimed = []
    while (batch := worker.claim()) is not None:
        claimed.append((int(batch.send_id), batch.seq))
    first_id, second_id, small_id = (int(s.ref_number) for s in (first, second, small))
    assert claimed == [
        (small_id, 1),
        (first_id, 1),
        (second_id, 1),
        (first_id, 2),
        (second_id, 2),
        (first_id, 3),
        (second_id, 3),
    ]


def test_a_scheduled_send_waits_for_its_time_and_one_in_the_past_goes_now(
    make_app, database_url, db, slow, tmp_path
):
    config = config_for(slow.url)
    client = make_app(config).test_client()
    later = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    past = (datetime.now(UTC) - timedelta(hours=2)).isoformat()

    scheduled = client.post(
        "/sendsms", json={"message": "later", "msisdns": numbers(3), "sendAt": later}
    )
    now = client.post(
        "/sendsms", json={"message": "now", "msisdns": ["0840000001"], "sendAt": past}
    )

    assert scheduled.status_code == 202
    ref = scheduled.get_json()["refNumber"]
    assert scheduled.get_json()["queuedNumbers"] == 3
    assert now.status_code == 200 and now.get_json()["messagesSent"] == 1
    report = state_of(client, ref)
    assert report["state"] == "scheduled"
    assert report["sendAt"].startswith(later[:16])
    with dispatcher_process(config, database_url, tmp_path) as d:
        time.sleep(2)
        assert d.poll() is None
    assert state_of(client, ref)["state"] == "scheduled"
    assert slow.received == Counter({"27840000001": 1})

    with db.cursor() as cur:  # its time has come
        cur.execute("UPDATE dispatch_batches SET due = now()")
        cur.execute("UPDATE sendlog SET sendat = now() AT TIME ZONE 'utc' WHERE id = %s", (ref,))
    with dispatcher_process(config, database_url, tmp_path, args=["--until-idle"]) as d:
        assert d.wait(60) == 0
    assert state_of(client, ref)["state"] == "done"
    assert sum(slow.received.values()) == 4


@pytest.mark.parametrize(
    ("send_at", "error"),
    [
        ("2026-12-24T08:00:00", "sendAt needs an offset"),
        ("tomorrow", "is not ISO 8601"),
        ("2099-01-01T00:00:00Z", "more than a year ahead"),
    ],
)
def test_a_bad_send_at_is_406_and_records_nothing(client, db, send_at, error):
    answer = client.post(
        "/sendsms", json={"message": "x", "msisdns": ["0830000000"], "sendAt": send_at}
    )
    assert answer.status_code == 406
    assert error in answer.get_json()["error"]
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_cancel_fails_what_was_not_handed_over_and_a_batch_in_flight_finishes(make_app, db, slow):
    app = make_app(config_for(slow.url, maxBatchSize=100, maxConcurrentRequests=1))
    client = app.test_client()
    services = app.extensions["messaging"]
    outcome = service.send_sms(services, "hi", numbers(500), None, "t", wait=0)
    ref = outcome.ref_number
    worker = dispatch.Worker(services, name="test")
    in_flight = worker.claim()
    results = []
    sending = threading.Thread(target=lambda: results.append(worker.send(in_flight)))
    sending.start()
    wait_until(lambda: slow.in_flight == 1)  # the race: a cancel while batch 1 is out

    cancelled = client.post(f"/sends/{ref}/cancel")
    sending.join(30)

    assert cancelled.status_code == 200
    assert cancelled.get_json()["state"] == "cancelled"
    assert rows(db, "SELECT status, reason, count(*) FROM sms GROUP BY 1, 2 ORDER BY 1") == [
        ("failed", "cancelled", 400),
        ("sent", None, 100),
    ]
    assert rows(db, "SELECT status, description FROM sendlog") == [
        ("cancelled", "Cancelled: 400 of 500 recipients not sent")
    ]
    assert worker.claim() is None
    assert sum(slow.received.values()) == 100
    assert client.post(f"/sends/{ref}/cancel").status_code == 200  # idempotent
    assert_counters_match_messages(db)


def test_cancel_of_a_finished_send_is_409_and_of_an_unknown_one_404(client, db):
    ref = client.post("/sendsms", json={"message": "x", "msisdns": ["0830000000"]}).get_json()
    assert client.post(f"/sends/{ref['refNumber']}/cancel").status_code == 409
    assert client.post("/sends/999/cancel").status_code == 404


def test_a_scheduled_send_can_be_cancelled_before_its_time(make_app, db, slow):
    client = make_app(config_for(slow.url)).test_client()
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    ref = client.post(
        "/sendsms", json={"message": "x", "msisdns": numbers(3), "sendAt": later}
    ).get_json()["refNumber"]

    assert client.post(f"/sends/{ref}/cancel").get_json()["state"] == "cancelled"
    assert rows(db, "SELECT count(*) FROM dispatch_batches") == [(0,)]
    assert rows(db, "SELECT reason, count(*) FROM sms GROUP BY 1") == [("cancelled", 3)]


def test_two_dispatchers_share_one_send_and_each_number_goes_once(
    database_url, db, tmp_path, make_app
):
    fake = SlowProvider(latency=0.02)
    config = config_for(fake.url, maxBatchSize=100, maxConcurrentRequests=2)
    client = make_app(config).test_client()
    try:
        with (
            dispatcher_process(config, database_url, tmp_path, name="one") as one,
            dispatcher_process(config, database_url, tmp_path, name="two") as two,
        ):
            time.sleep(1.5)  # both listening
            answer = client.post(
                "/sendsms",
                json={"message": "hi", "msisdns": numbers(5000)},
                headers={"Prefer": "respond-async"},
            ).get_json()
            wait_until(lambda: state_of(client, answer["refNumber"])["state"] == "done")
            one.terminate()
            two.terminate()
            one.wait(30)
            two.wait(30)
    finally:
        fake.stop()

    assert sum(fake.received.values()) == 5000 and max(fake.received.values()) == 1
    done = [log_of(tmp_path, name) for name in ("one", "two")]
    counts = [int(text.rsplit("stopped after ", 1)[1].split()[0]) for text in done]
    assert sum(counts) == 50 and min(counts) > 0, counts
    assert_counters_match_messages(db)


@pytest.mark.serial
def test_the_rate_limit_holds_across_processes(database_url, db, tmp_path, make_app):
    """Two dispatchers and the request itself, 4 at once each, 10 requests a second in all.

    Measured where the provider would: at the fake, so the time between a request's slot
    and its arrival counts too (slots 100 ms apart leave room for a loaded machine's)."""
    fake = SlowProvider(latency=0.01)
    config = config_for(fake.url, maxBatchSize=20, maxRequestsPerSecond=10, waitSeconds=1)
    client = make_app(config).test_client()
    try:
        with (
            dispatcher_process(config, database_url, tmp_path, name="one"),
            dispatcher_process(config, database_url, tmp_path, name="two"),
        ):
            time.sleep(1.5)
            ref = client.post(
                "/sendsms", json={"message": "hi", "msisdns": numbers(800)}
            ).get_json()["refNumber"]
            wait_until(lambda: state_of(client, ref)["state"] == "done")
    finally:
        fake.stop()

    arrivals = sorted(fake.arrivals)
    assert len(arrivals) == 40
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert 8 <= busiest <= 11, busiest  # the limit set the pace, and held
    assert sum(fake.received.values()) == 800


def test_a_gunicorn_send_with_a_dispatcher_beside_it_answers_and_records_everything(
    database_url, db, tmp_path
):
    fake = SlowProvider(latency=0.05)
    config = config_for(fake.url, maxBatchSize=200)
    try:
        with (
            gunicorn_server(config, database_url, tmp_path) as base,
            dispatcher_process(config, database_url, tmp_path),
        ):
            answer = requests.post(
                f"{base}/sendsms", json={"message": "hi", "msisdns": numbers(4000)}, timeout=60
            ).json()
    finally:
        fake.stop()
    assert (answer["messagesSent"], answer["queuedNumbers"]) == (4000, 0)
    assert max(fake.received.values()) == 1
    assert_counters_match_messages(db)


@pytest.mark.parametrize(
    "count, opted_out, send_at",
    [(1, 0, None), (5, 2, None), (3, 0, "past"), (4, 1, "future")],
)
def test_a_recorded_sends_progress_is_known_without_reading_it_back(
    make_app, db, monkeypatch, count, opted_out, send_at
):
    # The recording transaction answers with the progress it wrote (service._recorded)
    # rather than read it back: the two must agree, opt-outs and schedules included.
    services = make_app(base_config(maxBatchSize=2)).extensions["messaging"]
    given = numbers(count)
    with db.cursor() as cur:
        for msisdn in given[:opted_out]:
            cur.execute("INSERT INTO optouts VALUES (%s, 'test', now())", ("27" + msisdn[1:],))
    moment = {"past": -timedelta(minutes=5), "future": timedelta(hours=1)}
    when = None if send_at is None else datetime.now(UTC) + moment[send_at]
    read, answered = [], []

    def read_back(cur, sendlog_id):
        read.append(send_progress(cur, sendlog_id))

    recorded = service._recorded
    monkeypatch.setattr(
        service, "_recorded", lambda *args: answered.append(recorded(*args)) or answered[-1]
    )
    outcome = service.send_sms(
        services, "hi", given, None, "t", send_at=when, wait=0, on_record=read_back
    )
    assert answered == read and read[0]["queued"] == count - opted_out
    assert outcome.queued_numbers == count - opted_out
    assert outcome.opted_out_numbers == opted_out


def test_a_new_send_calls_as_many_idle_workers_as_it_has_batches():
    calls = dispatch.WorkerCalls(workers=4)
    woken = []

    def idle():
        woken.append(calls.wait(timeout=2.0))

    threads = [threading.Thread(target=idle) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # all four waiting
    calls.call(dispatch.batches_announced("17:1", 4))  # a send of one batch: one worker
    time.sleep(0.2)
    assert woken == [True]
    calls.call(dispatch.batches_announced("18:2", 4))
    for thread in threads:
        thread.join()
    # The fourth timed out: nobody raced the others for batches that were not there.
    assert woken == [True, True, True, False]


def test_calls_never_pile_up_past_the_workers_and_an_old_payload_calls_them_all():
    calls = dispatch.WorkerCalls(workers=2)
    calls.call(5)  # while every worker was busy
    assert [calls.wait(0.01) for _ in range(3)] == [True, True, False]
    assert dispatch.batches_announced("42", 4) == 4  # a release before the batch count
    assert dispatch.batches_announced("42:0", 4) == 0  # no valid number: nothing to do
    assert dispatch.batches_announced("42:3", 4) == 3


def test_the_listener_calls_as_many_workers_as_a_sends_notify_names(database_url, db):
    wakeup = dispatch.Wakeup(database_url, workers=4)
    stop = threading.Event()
    listener = threading.Thread(target=wakeup.watch, args=(stop,), daemon=True)
    listener.start()
    try:
        time.sleep(0.5)  # listening
        with db.cursor() as cur:
            cur.execute("SELECT pg_notify(%s, '7:2')", (DISPATCH_CHANNEL,))
        assert [wakeup.calls.wait(5.0), wakeup.calls.wait(5.0)] == [True, True]
        assert not wakeup.calls.wait(0.5)  # two batches: a third worker stays asleep
    finally:
        stop.set()
        listener.join(5)


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_recording_a_batch_reads_its_send_by_key_after_sendlog_grows(make_app, db):
    # A pooled connection keeps the plan each statement got on its first runs. Recording
    # a batch once joined its events with sendlog, and the plan made while sendlog was
    # small read all of it for every batch recorded from then on (3,000 rows a batch by
    # the end of a 10 s K1 run).
    services = make_app().extensions["messaging"]  # MockProvider: sent on this thread
    for n in range(8):  # past the five custom plans PostgreSQL makes before a generic one
        assert service.send_sms(services, "hi", numbers(2, f"08{n}"), None, "t").messages_sent
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO sendlog (senttime, quantity, message, status) "
            "SELECT now(), 1, 'before', 'done' FROM generate_series(1, 20000)"
        )
    with services.db.connection() as conn:
        [(query, name)] = [(q, n) for q, n in conn.prepared.items() if "INSERT INTO sms " in q]
        _, params = _as_prepared(query, True)
        # EXPLAIN plans without running: values of the right types (arrays end in s) do.
        dummies = {"senttime": datetime(2026, 1, 1), "batch": 0, "sendlog": 0, "receipts_lock": 0}
        args = [dummies.get(param, "{}" if param.endswith("s") else "x") for param in params]
        with conn.cursor() as cur:
            placeholders = ", ".join(["%s"] * len(args))
            cur.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name} ({placeholders})", args)
            [[explained]] = cur.fetchall()
    plan = explained[0]["Plan"]
    reads = [
        (node["Node Type"], node["Relation Name"])
        for node in plan_nodes(plan)
        if node.get("Relation Name") == "sendlog"
    ]
    assert reads and ("Seq Scan", "sendlog") not in reads, reads


def test_a_one_recipient_send_is_not_planned_again_for_every_send(make_app):
    # PostgreSQL plans a prepared statement afresh (a custom plan) while that is estimated
    # cheaper than its generic plan. Given one-element arrays, the custom plans of the id
    # allocation and of a batch's record were, so both were planned again for every send:
    # most of PostgreSQL's CPU a one-recipient send (S2).
    services = make_app().extensions["messaging"]  # MockProvider: sent on this thread
    for n in range(12):
        service.send_sms(services, "hi", [f"083{n:07d}"], None, "t")
    with services.db.connection() as conn, conn.cursor() as cur:
        cur.execute("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
        plans = cur.fetchall()
    ran = [(text, custom) for text, generic, custom in plans if generic + custom >= 12]
    assert any("nextval('sms_id_seq')" in text for text, _ in ran), plans
    assert any("INSERT INTO sms " in text for text, _ in ran), plans
    # The first five are custom plans whatever their cost: that is how PostgreSQL starts.
    assert [(text, custom) for text, custom in ran if custom > 5] == []
