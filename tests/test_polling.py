"""`flask poll-status`: claims, windows, racing pollers, provider errors, the CLI surface."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from messaging import cli, polling
from messaging.config import ProviderSettings
from messaging.db import Database
from messaging.errors import ProviderError
from messaging.providers.base import Provider, StatusUpdate
from messaging.providers.mock import STATUS_BY_LAST_DIGIT
from tests.conftest import ROOT, base_config, rows
from tests.providers.fakes import FakeProvider, Reply

# --- a fake provider status API over real HTTP, and the plugin that speaks to it ---


class FakeStatusServer:
    """POST /status {"ids": [...]} -> {"statuses": [{"id", "status", "code"}]}.

    Answers by MockProvider's last-digit rule, records every id asked (thread-safe),
    answers 500 for a request holding an id in `fail_ids`, and can hold every request
    until each poller named in `hold_until_seen` has made one, so runs surely overlap.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.asked: Counter[str] = Counter()
        self.requests = 0
        self.active = 0
        self.max_active = 0
        self.fail_ids: set[str] = set()
        self.hold_until_seen: set[str] = set()
        self.seen: set[str] = set()
        self.everyone_seen = threading.Event()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @Request.application
    def app(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        if (
            request.method != "POST"
            or request.path != "/status"
            or request.mimetype != "application/json"
            or request.headers.get("Authorization") != "Bearer status-token"
            or not isinstance(body, dict)
            or not isinstance(body.get("ids"), list)
            or not all(isinstance(i, str) for i in body["ids"])
        ):
            return Response("bad request", status=400)
        ids = body["ids"]
        poller = request.headers.get("X-Poller", "")
        with self.lock:
            self.requests += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.asked.update(ids)
            self.seen.add(poller)
            if self.hold_until_seen <= self.seen:
                self.everyone_seen.set()
        try:
            if self.hold_until_seen:
                self.everyone_seen.wait(timeout=10)
            if self.fail_ids.intersection(ids):
                return Response("provider trouble", status=500)
            statuses = []
            for provider_id in ids:
                number = provider_id.split("-")[1]
                status, code, _ = STATUS_BY_LAST_DIGIT.get(number[-1], ("failed", "005", ""))
                statuses.append({"id": provider_id, "status": status, "code": code})
            return Response(json.dumps({"statuses": statuses}), mimetype="application/json")
        finally:
            with self.lock:
                self.active -= 1


class HttpStatusProvider(Provider):
    """A status-only plugin for the fake server; `status_batch_size` ids a call."""

    name = "FakeStatus"
    can_query_status = True

    def __init__(self, url: str, poller: str = "p", status_batch_size: int = 500):
        super().__init__(ProviderSettings(name=self.name, token="status-token", timeout=5))
        self.url = url
        self.poller = poller
        self.status_batch_size = status_batch_size

    def query_status(self, provider_ids):
        response = requests.post(
            f"{self.url}/status",
            json={"ids": provider_ids},
            headers={"Authorization": f"Bearer {self.settings.token}", "X-Poller": self.poller},
            timeout=20,
        )
        if response.status_code != 200:
            raise ProviderError(str(response.status_code), "Provider unavailable")
        return [
            StatusUpdate(item["id"], item["status"], item["code"])
            for item in response.json()["statuses"]
        ]


@pytest.fixture
def status_server():
    server = FakeStatusServer()
    server.thread.start()
    yield server
    server.server.shutdown()


# --- helpers ---


def insert_in_flight(db, count, *, sends=1, sent_ago="0 minutes", first=1) -> list[str]:
    """Record `count` messages still `sent` (numbers 2783xxxxxxx, last digit = position),
    spread over `sends` sends; return their provider ids in id order."""
    with db.cursor() as cur:
        cur.execute(
            """
            INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent,
                                 message, status, description)
            SELECT now() AT TIME ZONE 'utc' - %s::interval, '', 'sms', 0, 0, 0, 0, 'hi',
                   'success', ''
            FROM generate_series(1, %s)
            RETURNING id
            """,
            (sent_ago, sends),
        )
        sendlog_ids = [row[0] for row in cur.fetchall()]
        cur.execute(
            """
            INSERT INTO sms (msisdn, senttime, segments, sendlogid, status, message, providerid)
            SELECT '2783' || lpad(g::text, 7, '0'), now() AT TIME ZONE 'utc' - %s::interval, 1,
                   (%s::int[])[1 + g %% %s], 'sent', 'hi',
                   'mock-2783' || lpad(g::text, 7, '0') || '-' || g
            FROM generate_series(%s, %s) AS g
            ORDER BY g
            RETURNING providerid
            """,
            (sent_ago, sendlog_ids, sends, first, first + count - 1),
        )
        provider_ids = [row[0] for row in cur.fetchall()]
        cur.execute(
            """
            UPDATE sendlog SET quantity = m.n, sent = m.n
            FROM (SELECT sendlogid, count(*) AS n FROM sms GROUP BY sendlogid) AS m
            WHERE sendlog.id = m.sendlogid AND sendlog.id = ANY(%s)
            """,
            (sendlog_ids,),
        )
    return provider_ids


def assert_counters_match_statuses(db):
    """Every send's sent/delivered/failed equal its messages' statuses."""
    mismatched = rows(
        db,
        """
        SELECT l.id, l.sent, l.delivered, l.failed, m.sent, m.delivered, m.failed
        FROM sendlog l JOIN (
            SELECT sendlogid,
                   count(*) FILTER (WHERE status = 'sent') AS sent,
                   count(*) FILTER (WHERE status = 'delivered') AS delivered,
                   count(*) FILTER (WHERE status = 'failed') AS failed
            FROM sms GROUP BY sendlogid) AS m ON m.sendlogid = l.id
        WHERE (l.sent, l.delivered, l.failed) <> (m.sent, m.delivered, m.failed)
        """,
    )
    assert mismatched == []


def statuses(db) -> dict[str, int]:
    return dict(rows(db, "SELECT status, count(*) FROM sms GROUP BY status"))


def use_provider(app, provider):
    app.extensions["messaging"].provider = provider


# --- racing pollers ---


def test_two_pollers_racing_ask_about_each_message_once_and_keep_counters_exact(
    app, db, database_url, status_server
):
    provider_ids = insert_in_flight(db, 10_000, sends=10)
    status_server.hold_until_seen = {"a", "b"}
    start = threading.Barrier(2)
    summaries = {}

    def poller(name):
        database = Database(database_url)  # each poller its own pool, as two hosts would
        services = replace(
            app.extensions["messaging"],
            db=database,
            provider=HttpStatusProvider(status_server.url, poller=name),
        )
        start.wait()
        try:
            summaries[name] = polling.poll(services)
        finally:
            database.close()

    threads = [threading.Thread(target=poller, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert status_server.asked == Counter(dict.fromkeys(provider_ids, 1))
    a, b = summaries["a"], summaries["b"]
    assert a.ok and b.ok
    assert a.checked > 0 and b.checked > 0  # the runs really overlapped
    assert a.checked + b.checked == 10_000
    assert a.delivered + b.delivered == 6_000  # last digits 0-5
    assert a.failed + b.failed == 3_000  # 6, 7 and 9
    assert a.in_flight + b.in_flight == 1_000  # 8
    assert statuses(db) == {"delivered": 6_000, "failed": 3_000, "sent": 1_000}
    assert_counters_match_statuses(db)


def test_messages_claimed_by_another_run_are_left_to_it_until_its_lease_ends(
    app, db, status_server
):
    provider_ids = insert_in_flight(db, 10)
    first_five = rows(db, "SELECT min(id), min(id) + 4 FROM sms")[0]
    with db.cursor() as cur:  # a run elsewhere holds a lease on the first five
        cur.execute(
            "INSERT INTO poll_claims (first_id, last_id, polluntil) "
            "VALUES (%s, %s, now() + interval '10 minutes')",
            first_five,
        )
    use_provider(app, HttpStatusProvider(status_server.url))
    services = app.extensions["messaging"]

    assert polling.poll(services).checked == 5
    assert set(status_server.asked) == set(provider_ids[5:])

    with db.cursor() as cur:  # that run died; its lease has run out
        cur.execute("UPDATE poll_claims SET polluntil = now() - interval '1 second'")
    assert polling.poll(services).checked == 6  # its five, and number 8 still in flight
    assert status_server.asked == Counter({**dict.fromkeys(provider_ids, 1), provider_ids[7]: 2})


def test_a_lapsed_lease_over_several_chunks_has_each_message_polled_once_past_the_window(
    app, db, status_server
):
    provider_ids = insert_in_flight(db, 30, sent_ago="2 hours")  # long out of the window
    insert_in_flight(db, 5, first=36)  # and five in it
    with db.cursor() as cur:  # a run that died an hour ago held the 30
        cur.execute(
            "INSERT INTO poll_claims (first_id, last_id, polluntil) "
            "SELECT min(id), max(id), now() - interval '1 hour' FROM sms WHERE senttime < "
            "now() AT TIME ZONE 'utc' - interval '1 hour'"
        )
    use_provider(app, HttpStatusProvider(status_server.url, status_batch_size=10))
    services = app.extensions["messaging"]

    first = polling.poll(services, lanes=1, chunk_size=10)
    second = polling.poll(services, lanes=1, chunk_size=10)

    assert first.checked == 35
    assert all(status_server.asked[pid] == 1 for pid in provider_ids)
    assert second.checked == 1  # number 38, in the window and still in flight
    assert rows(db, "SELECT count(*) FROM poll_claims WHERE NOT asked") == [(0,)]
    assert_counters_match_statuses(db)


# --- what one run asks about ---


def test_only_messages_sent_within_the_window_are_polled(runner, db, provider):
    outside = insert_in_flight(db, 1, sent_ago="31 minutes", first=1)  # window is 30m
    inside = insert_in_flight(db, 1, sent_ago="29 minutes", first=2)

    result = runner.invoke(args=["poll-status"])

    assert result.exit_code == 0, result.output
    assert "checked 1, delivered 1, failed 0, still in flight 0, errors 0" in result.output
    assert provider.status_queries == 1
    assert rows(
        db, "SELECT providerid, status, statustimestamp IS NOT NULL FROM sms ORDER BY id"
    ) == [
        (outside[0], "sent", False),
        (inside[0], "delivered", True),
    ]
    result = runner.invoke(args=["poll-status", "--window", "40m"])
    assert "checked 1, delivered 1" in result.output
    assert_counters_match_statuses(db)


def test_in_flight_messages_are_asked_once_a_run_and_again_by_the_next(runner, db, provider):
    insert_in_flight(db, 1, first=8)  # MockProvider: last digit 8 is still in flight

    first = runner.invoke(args=["poll-status"])
    second = runner.invoke(args=["poll-status"])

    assert "checked 1, delivered 0, failed 0, still in flight 1, errors 0" in first.output
    assert "checked 1, delivered 0, failed 0, still in flight 1, errors 0" in second.output
    assert provider.status_queries == 2
    assert statuses(db) == {"sent": 1}


def test_polling_stores_code_and_time_and_counts_each_transition_once(runner, db):
    insert_in_flight(db, 20, sends=3)

    result = runner.invoke(args=["poll-status"])
    again = runner.invoke(args=["poll-status"])

    assert "checked 20, delivered 12, failed 6, still in flight 2, errors 0" in result.output
    assert "checked 2, delivered 0, failed 0, still in flight 2" in again.output
    assert rows(db, "SELECT DISTINCT errorcode, reason FROM sms WHERE status = 'failed'") == [
        ("005", "Delivery failed")
    ]
    assert rows(db, "SELECT count(*) FROM sms WHERE status <> 'sent' AND statustimestamp IS NULL")
    assert_counters_match_statuses(db)


def test_a_provider_error_is_counted_and_logged_and_the_rest_are_polled(
    app, runner, db, status_server
):
    provider_ids = insert_in_flight(db, 30)
    status_server.fail_ids = {provider_ids[4]}
    use_provider(app, HttpStatusProvider(status_server.url, status_batch_size=1))

    result = runner.invoke(args=["poll-status"])

    assert result.exit_code == 1
    assert "checked 30, delivered 17, failed 9, still in flight 3, errors 1" in result.output
    assert status_server.asked == Counter(dict.fromkeys(provider_ids, 1))
    assert rows(db, "SELECT status FROM sms WHERE providerid = %s", provider_ids[4]) == [("sent",)]
    assert_counters_match_statuses(db)

    status_server.fail_ids = set()  # the provider recovered: the next run picks it up
    result = runner.invoke(args=["poll-status"])
    assert result.exit_code == 0
    assert "checked 4, delivered 1, failed 0, still in flight 3, errors 0" in result.output


def test_a_failed_batch_counts_each_of_its_messages_as_an_error(app, db, status_server):
    provider_ids = insert_in_flight(db, 25)
    status_server.fail_ids = {provider_ids[12]}
    use_provider(app, HttpStatusProvider(status_server.url, status_batch_size=10))

    summary = polling.poll(app.extensions["messaging"], chunk_size=10)

    assert (summary.checked, summary.errors) == (25, 10)
    assert summary.delivered + summary.failed + summary.in_flight == 15
    assert status_server.requests == 3


def test_one_id_a_call_providers_are_asked_with_bounded_parallelism(app, db, status_server):
    provider_ids = insert_in_flight(db, 200, sends=2)
    use_provider(app, HttpStatusProvider(status_server.url, status_batch_size=1))
    progress = []

    summary = polling.poll(app.extensions["messaging"], progress=progress.append)

    assert summary.ok and summary.checked == 200
    assert status_server.requests == 200
    assert status_server.asked == Counter(dict.fromkeys(provider_ids, 1))
    assert 1 <= status_server.max_active <= polling.SINGLE_LANES
    assert sum(progress) == 200
    assert_counters_match_statuses(db)


# --- the command ---


def test_disabled_polling_exits_zero_saying_so_and_changes_nothing(make_app, db):
    config = base_config()
    config["deliveryStatus"] = {"enabled": False}
    app = make_app(config)
    insert_in_flight(db, 3)

    result = app.test_cli_runner().invoke(args=["poll-status"])

    assert result.exit_code == 0
    assert "status polling is disabled (deliveryStatus.enabled is false)" in result.output
    assert app.extensions["messaging"].provider.status_queries == 0
    assert statuses(db) == {"sent": 3}


def test_a_provider_without_status_query_has_nothing_to_poll(app, runner, db):
    class PushOnly(Provider):
        name = "PushOnly"

    use_provider(app, PushOnly(ProviderSettings()))
    result = runner.invoke(args=["poll-status"])
    assert result.exit_code == 0
    assert "PushOnly has no status query" in result.output


def test_a_database_failure_exits_non_zero(app, runner, db):
    insert_in_flight(db, 3)
    app.extensions["messaging"].db = Database("postgresql://127.0.0.1:1/nothing_here")

    result = runner.invoke(args=["poll-status"])

    assert result.exit_code == 1
    assert "stopped: database unavailable" in result.output


def test_every_loops_at_the_configured_interval_until_interrupted(runner, db, monkeypatch):
    insert_in_flight(db, 2)
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        if len(waits) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", sleep)
    result = runner.invoke(args=["poll-status", "--every"])

    assert result.exit_code == 0, result.output
    assert "polling every 900s" in result.output  # updateInverval 15 (minutes)
    assert result.output.count("poll-status: checked") == 2
    assert "poll-status: stopped" in result.output
    assert all(800 < wait <= 900 for wait in waits)


def test_every_takes_a_duration_and_refuses_nonsense(runner, db, monkeypatch):
    def interrupt(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.time, "sleep", interrupt)
    assert "polling every 90s" in runner.invoke(args=["poll-status", "--every", "1m30s"]).output
    result = runner.invoke(args=["poll-status", "--every", "soon"])
    assert result.exit_code == 2
    assert "--every" in result.output and "duration" in result.output


def test_the_messaging_console_script_runs_poll_status(database_url, db, tmp_path):
    insert_in_flight(db, 4, first=3)  # last digits 3, 4, 5 delivered; 6 failed
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(base_config()))
    script = Path(sys.executable).parent / "messaging"
    env = {
        **os.environ,
        "MESSAGING_CONFIG": str(config_file),
        "MESSAGING_DATABASE_URL": database_url,
    }

    result = subprocess.run(
        [str(script), "poll-status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "checked 4, delivered 3, failed 1, still in flight 0, errors 0" in result.stdout


# --- a run that is stopped or killed: its messages are polled by the next run ---

# Twilio's answer by the number's last digit (MockProvider's rule).
TWILIO_STATUS = {**dict.fromkeys("012345", "delivered"), "6": "undelivered", "7": "failed"}


class HeldTwilio:
    """A fake Twilio status API that holds every query until `answering` is set, then
    answers by the number's last digit (8: still `sent`)."""

    def __init__(self):
        self.fake = FakeProvider()
        self.answering = threading.Event()
        self.fake.default = self.answer

    def answer(self, recorded):
        self.answering.wait(60)
        provider_id = recorded.path.rsplit("/", 1)[-1].removesuffix(".json")
        number = provider_id.split("-")[1]
        return Reply(200, {"sid": provider_id, "status": TWILIO_STATUS.get(number[-1], "sent")})

    def asked(self) -> list[str]:
        return [recorded.path.rsplit("/", 1)[-1] for recorded in self.fake.requests]

    def stop(self):
        self.answering.set()
        self.fake.stop()


@pytest.fixture
def held_twilio():
    fake = HeldTwilio()
    yield fake
    fake.stop()


def twilio_config(url) -> dict:
    return base_config(name="Twilio", token="tw-token", url=url, options={"accountSid": "AC1"})


def start_poll_run(config, database_url, tmp_path, *args) -> subprocess.Popen:
    """`flask --app messaging poll-status ARGS` in a process of its own, as cron starts it."""
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    env = {
        **os.environ,
        "MESSAGING_CONFIG": str(config_file),
        "MESSAGING_DATABASE_URL": database_url,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "messaging", "poll-status", *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


def claimed_messages(db) -> int:
    return rows(
        db,
        "SELECT count(*) FROM sms WHERE EXISTS "
        "(SELECT 1 FROM poll_claims AS c WHERE sms.id BETWEEN c.first_id AND c.last_id)",
    )[0][0]


def claim_four_then(stop, held_twilio, db, database_url, tmp_path, window="10s") -> str:
    """Start a poll run over four messages, let it claim them all and ask the (held)
    provider, then stop it with `stop(process)`; return what it wrote on stderr."""
    config = twilio_config(held_twilio.fake.url)
    process = start_poll_run(config, database_url, tmp_path, "--window", window)
    try:
        wait_until(
            lambda: claimed_messages(db) == 4 and held_twilio.fake.requests,
            20,
            "the run claims all four and asks the provider",
        )
        stop(process)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return stderr


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_stopped_run_hands_its_claims_back_and_the_next_run_polls_them(
    make_app, db, database_url, tmp_path, held_twilio, signal_name
):
    runner = make_app(twilio_config(held_twilio.fake.url)).test_cli_runner()
    provider_ids = insert_in_flight(db, 4, first=5)  # 5 delivered, 6 and 7 failed, 8 in flight
    number = getattr(signal, signal_name)

    stderr = claim_four_then(
        lambda process: process.send_signal(number), held_twilio, db, database_url, tmp_path
    )

    # Each chunk's lease ended when the run stopped.
    assert rows(db, "SELECT bool_and(polluntil <= now()) FROM poll_claims") == [(True,)]
    assert "poll-status: stopped before it finished" in stderr
    asked_before = Counter(held_twilio.asked())
    held_twilio.answering.set()
    result = runner.invoke(args=["poll-status"])
    assert "checked 4, delivered 1, failed 2, still in flight 1, errors 0" in result.output
    asked_now = Counter(held_twilio.asked()) - asked_before
    assert asked_now == Counter(f"{pid}.json" for pid in provider_ids)
    assert_counters_match_statuses(db)


def test_a_killed_runs_lease_ends_within_the_window_and_its_messages_are_polled_once_past_it(
    make_app, db, database_url, tmp_path, held_twilio
):
    runner = make_app(twilio_config(held_twilio.fake.url)).test_cli_runner()
    insert_in_flight(db, 4, first=5)

    claim_four_then(lambda process: process.kill(), held_twilio, db, database_url, tmp_path)

    # Nothing handed back; the leases end on their own, no later than the 10 s window.
    assert rows(
        db,
        "SELECT bool_and(polluntil > now()), "
        "bool_and(polluntil <= now() + interval '10 seconds') FROM poll_claims",
    ) == [(True, True)]
    wait_until(
        lambda: (
            rows(
                db,
                "SELECT bool_and(polluntil < now()) AND (SELECT bool_and(senttime < "
                "now() AT TIME ZONE 'utc' - interval '10 seconds') FROM sms) FROM poll_claims",
            )
            == [(True,)]
        ),
        15,
        "the leases end and the messages leave the window",
    )
    held_twilio.answering.set()

    past_the_window = runner.invoke(args=["poll-status", "--window", "10s"])
    again = runner.invoke(args=["poll-status", "--window", "10s"])

    assert "checked 4, delivered 1, failed 2, still in flight 1, errors 0" in past_the_window.output
    assert "checked 0," in again.output  # once: the one still in flight has left the window
    assert statuses(db) == {"delivered": 1, "failed": 2, "sent": 1}
    assert_counters_match_statuses(db)


# --- planner statistics ---


def table_stats(db, table="sms"):
    return rows(
        db,
        "SELECT n_mod_since_analyze, last_analyze FROM pg_stat_user_tables WHERE relname = %s",
        table,
    )[0]


def test_poll_status_analyzes_the_messages_table_when_a_large_send_left_it_unanalysed(runner, db):
    with db.cursor() as cur:  # as on a server with autovacuum off
        cur.execute("ALTER TABLE sms SET (autovacuum_enabled = false)")
    try:
        insert_in_flight(db, 20_000, sends=4)
        rows(db, "SELECT pg_stat_force_next_flush()")
        changed, analyzed_before = table_stats(db)
        assert changed >= 20_000

        result = runner.invoke(args=["poll-status"])

        assert "checked 20000," in result.output
        changed, analyzed = table_stats(db)
        assert analyzed is not None and (analyzed_before is None or analyzed > analyzed_before)
    finally:
        with db.cursor() as cur:
            cur.execute("ALTER TABLE sms RESET (autovacuum_enabled)")
