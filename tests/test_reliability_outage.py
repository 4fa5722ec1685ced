"""Outages of what the service depends on: the database, the provider, the auth service.
Each fails closed with a clear answer, loses nothing, and the service recovers by itself."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import base_config, free_port, gunicorn_server, rows, through
from tests.fake_auth import FakeAuthService
from tests.providers.fakes import FakeProvider, Reply

BODY = {"message": "Water off at 10:00", "msisdns": ["0830000001", "0840000002"]}
OUTCOME_UNKNOWN = "provider outcome unknown"


def clickatell_config(url: str, **provider) -> dict:
    """A provider refusing for now is retried for a second (retryWindow), then fails."""
    settings = {"name": "Clickatell", "url": url, "timeout": 2, "retries": 0}
    return base_config(**{**settings, "retryWindow": "1s", "waitSeconds": 5, **provider})


def accept_all(recorded) -> Reply:
    to = recorded.json["to"]
    accepted = [{"accepted": True, "to": n, "apiMessageId": f"api-{n}"} for n in to]
    return Reply(200, {"data": {"message": accepted}})


@pytest.fixture
def clickatell():
    fake = FakeProvider()
    fake.default = accept_all
    yield fake
    fake.stop()


def recipients(db) -> list[tuple]:
    return rows(db, "SELECT msisdn, status, errorcode, reason FROM sms ORDER BY id")


# --- the database goes away and comes back ---


def test_database_outage_is_503_with_no_provider_call_and_the_same_server_recovers(
    database_url, db, tmp_path, proxy, clickatell
):
    # --preload: the workers are ready before the outage begins (a worker booting during
    # one cannot migrate and stops gunicorn; that is start-up, not this test).
    with gunicorn_server(
        clickatell_config(clickatell.url),
        through(proxy, database_url),
        tmp_path,
        args=("--preload",),
    ) as base:
        assert requests.post(f"{base}/sendsms", json=BODY, timeout=30).status_code == 200
        calls = len(clickatell.requests)

        proxy.cut()
        during = [requests.post(f"{base}/sendsms", json=BODY, timeout=30) for _ in range(6)]
        health = requests.get(f"{base}/healthz", timeout=30)

        assert {(answer.status_code, answer.json()["error"]) for answer in during} == {
            (503, "database unavailable")
        }
        assert len(clickatell.requests) == calls
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable"
        assert health.json()["database"].startswith("unavailable: ")

        proxy.restore()
        after = [requests.post(f"{base}/sendsms", json=BODY, timeout=30) for _ in range(12)]
        # Both workers' pooled connections died in the outage, also the one of a worker
        # that served nothing meanwhile: each is replaced before use, no request fails.
        assert [answer.status_code for answer in after] == [200] * 12
        assert requests.get(f"{base}/healthz", timeout=30).json()["status"] == "ok"
    assert rows(db, "SELECT count(*), sum(quantity) FROM sendlog") == [(13, 26)]
    assert rows(db, "SELECT count(*) FROM sms WHERE status = 'sent'") == [(26,)]


# --- the provider fails or hangs ---


@pytest.mark.parametrize(
    ("reply", "code", "reason", "description"),
    [
        (Reply(500, "oops"), "", OUTCOME_UNKNOWN, "2 of 2 recipients rejected by the provider"),
        (Reply(502, "bad gateway"), "", OUTCOME_UNKNOWN, "2 of 2 recipients rejected"),
        (Reply(hang=True), "", OUTCOME_UNKNOWN, "2 of 2 recipients rejected by the provider"),
    ],
    ids=["500", "502", "read-timeout"],
)
def test_provider_errors_are_recorded_per_recipient_with_their_reason(
    make_app, db, clickatell, reply, code, reason, description
):
    clickatell.script.append(reply)
    client = make_app(clickatell_config(clickatell.url, timeout=0.5)).test_client()

    answer = client.post("/sendsms", json=BODY)

    assert answer.status_code == 200
    body = answer.get_json()
    assert body["sendSuccess"] is False and body["messagesSent"] == 0
    assert description in body["statusDescription"]
    assert recipients(db) == [
        ("27830000001", "failed", code, reason),
        ("27840000002", "failed", code, reason),
    ]
    assert len(clickatell.requests) == 1  # never resent: it may have been processed
    assert rows(db, "SELECT failed, sent, status FROM sendlog") == [(2, 0, "failed")]


def test_a_503_was_not_processed_so_the_batch_goes_again_after_a_back_off(make_app, db, clickatell):
    clickatell.script.append(Reply(503, "busy"))
    client = make_app(clickatell_config(clickatell.url, retryWindow="1m")).test_client()

    body = client.post("/sendsms", json=BODY).get_json()

    assert (body["sendSuccess"], body["messagesSent"]) == (True, 2)
    assert len(clickatell.requests) == 2
    assert [row[1] for row in recipients(db)] == ["sent", "sent"]


def test_unreachable_provider_is_recorded_with_its_reason(make_app, db):
    client = make_app(clickatell_config(f"http://127.0.0.1:{free_port()}")).test_client()
    body = client.post("/sendsms", json=BODY).get_json()
    assert body["sendSuccess"] is False
    assert body["statusDescription"] == "Clickatell unreachable (ConnectionError)"
    assert [row[1:] for row in recipients(db)] == [
        ("failed", "", "Clickatell unreachable (ConnectionError)")
    ] * 2


def test_a_hanging_provider_holds_no_database_connection_and_blocks_no_one(
    database_url, db, tmp_path, clickatell
):
    arrived = threading.Event()

    def hang(recorded):
        arrived.set()
        return Reply(hang=True)  # held until the fake stops, past the 5 s timeout

    clickatell.default = hang
    config = clickatell_config(clickatell.url, timeout=5)
    # --preload: both workers are ready (none is migrating) before the provider hangs.
    with gunicorn_server(config, database_url, tmp_path, workers=2, args=("--preload",)) as base:
        send_answer = []
        sender = threading.Thread(
            target=lambda: send_answer.append(
                requests.post(f"{base}/sendsms", json=BODY, timeout=60)
            )
        )
        sender.start()
        assert arrived.wait(30)

        app_connections = rows(
            db,
            "SELECT state FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'messaging'",
        )
        ping = requests.get(f"{base}/ping", timeout=30)
        normalized = requests.post(
            f"{base}/normalize", json={"msisdns": ["0830000001"]}, timeout=30
        )
        status = requests.get(f"{base}/messagestatus/0830000001", timeout=30)
        still_hanging = sender.is_alive()
        sender.join(60)

    assert app_connections and {state for (state,) in app_connections} == {"idle"}
    assert still_hanging, "the provider timed out before the other requests were answered"
    assert ping.status_code == 200
    assert normalized.json() == ["27830000001"]
    assert status.text == "queued"  # recorded, its batch not answered yet
    [answer] = send_answer
    assert answer.status_code == 200 and answer.json()["sendSuccess"] is False
    assert [row[1:] for row in recipients(db)] == [("failed", "", OUTCOME_UNKNOWN)] * 2


# --- the auth service is down while many callers ask ---


@pytest.fixture(params=["unreachable", "http-500"])
def broken_auth_url(request):
    if request.param == "unreachable":
        yield f"http://127.0.0.1:{free_port()}"
        return
    with FakeAuthService() as auth:
        auth.fail(500)
        yield auth.url


def test_auth_outage_under_load_is_503_for_everyone_and_records_nothing(
    database_url, db, tmp_path, broken_auth_url
):
    config = base_config()
    config["authentication"] = {
        "service": "serviceauth",
        "enabled": True,
        "url": broken_auth_url,
        "timeout": 2,
    }
    with gunicorn_server(config, database_url, tmp_path, workers=2) as base:

        def call(n: int) -> requests.Response:
            headers = {"Cookie": f"session=user-{n % 7}", "Authorization": f"Bearer t{n % 5}"}
            if n % 3 == 0:
                return requests.post(f"{base}/normalize", json=BODY, headers=headers, timeout=30)
            if n % 3 == 1:
                return requests.get(f"{base}/messagestatus/0830000001", headers=headers, timeout=30)
            return requests.post(f"{base}/sendsms", json=BODY, headers=headers, timeout=30)

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(call, range(200)))

    assert {answer.status_code for answer in answers} == {503}
    assert {answer.json()["error"] for answer in answers} == {"authentication service unavailable"}
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]
    assert rows(db, "SELECT count(*) FROM sms") == [(0,)]
