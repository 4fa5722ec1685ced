"""Idempotency-Key on POST /sendsms: one send per key and caller, however many ask."""

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from messaging import dispatch
from tests.conftest import base_config, gunicorn_server, rows, through
from tests.providers.fakes import FakeProvider, Reply

BODY = {"message": "once only", "msisdns": ["0830000000", "0840000000"]}


def test_repeated_key_returns_the_first_answer_and_sends_nothing_again(client, db, provider):
    first = client.post("/sendsms", json=BODY, headers={"Idempotency-Key": "abc-1"})
    again = client.post("/sendsms", json=BODY, headers={"Idempotency-Key": "abc-1"})
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert list(provider.batches) == [2]
    assert rows(db, "SELECT count(*) FROM sendlog") == [(1,)]


def test_another_key_is_another_send(client, db):
    client.post("/sendsms", json=BODY, headers={"Idempotency-Key": "k1"})
    client.post("/sendsms", json=BODY, headers={"Idempotency-Key": "k2"})
    assert rows(db, "SELECT count(*) FROM sendlog") == [(2,)]


def test_key_reused_for_a_different_request_is_refused(client, db):
    client.post("/sendsms", json=BODY, headers={"Idempotency-Key": "k1"})
    other = client.post(
        "/sendsms", json={**BODY, "message": "different"}, headers={"Idempotency-Key": "k1"}
    )
    assert other.status_code == 406
    assert "different request" in other.get_json()["error"]
    assert rows(db, "SELECT count(*) FROM sendlog") == [(1,)]


def test_a_key_reused_with_another_callback_url_is_refused(make_app, db):
    config = base_config()
    config["deliveryStatus"] = {
        "callbackSecret": "whsec_" + "A" * 32,
        "allowPrivateCallbacks": True,
    }
    client = make_app(config).test_client()
    first = {**BODY, "callbackUrl": "http://127.0.0.1:9/first"}
    client.post("/sendsms", json=first, headers={"Idempotency-Key": "k1"})
    other = client.post(
        "/sendsms",
        json={**first, "callbackUrl": "http://127.0.0.1:9/other"},
        headers={"Idempotency-Key": "k1"},
    )
    assert other.status_code == 406
    assert "different request" in other.get_json()["error"]
    assert rows(db, "SELECT count(*) FROM sendlog") == [(1,)]


def test_rejected_input_leaves_the_key_free(client, db):
    bad = client.post(
        "/sendsms",
        json={"message": "", "msisdns": ["0830000000"]},
        headers={"Idempotency-Key": "k1"},
    )
    assert bad.status_code == 406
    good = client.post("/sendsms", json=BODY, headers={"Idempotency-Key": "k1"})
    assert good.status_code == 200
    assert rows(db, "SELECT count(*) FROM sendlog") == [(1,)]


def test_malformed_key_is_406(client, db):
    response = client.post("/sendsms", json=BODY, headers={"Idempotency-Key": "x" * 300})
    assert response.status_code == 406
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_twenty_parallel_requests_with_one_key_make_one_send(live_server, db):
    def post(_):
        return requests.post(
            f"{live_server}/sendsms", json=BODY, headers={"Idempotency-Key": "race"}, timeout=60
        )

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, range(20)))
    # A repeat that comes while the first is still sending is told so at once (409).
    assert {answer.status_code for answer in answers} <= {200, 409}
    assert 200 in {answer.status_code for answer in answers}
    assert len({answer.json()["refNumber"] for answer in answers}) == 1
    assert rows(db, "SELECT count(*) FROM sendlog") == [(1,)]
    assert rows(db, "SELECT count(*) FROM sms") == [(2,)]


# --- the database fails after the send is recorded (batches already at the provider) ---

NUMBERS = [f"083{n:07d}" for n in range(5000)]  # 10 batches of 500
BIG = {"message": "Water off at 10:00", "msisdns": NUMBERS}


@pytest.fixture
def clickatell():
    fake = FakeProvider()
    fake.default = lambda recorded: Reply(
        200,
        {
            "data": {
                "message": [
                    {"accepted": True, "to": n, "apiMessageId": f"api-{n}"}
                    for n in recorded.json["to"]
                ]
            }
        },
    )
    yield fake
    fake.stop()


def clickatell_config(url: str) -> dict:
    return base_config(name="Clickatell", url=url, timeout=5, retries=0, maxBatchSize=500)


def texts_per_number(fake: FakeProvider) -> Counter:
    return Counter(number for recorded in fake.requests for number in recorded.json["to"])


def test_a_database_blip_mid_send_neither_fails_the_send_nor_lets_a_repeat_send_again(
    database_url, db, tmp_path, proxy, clickatell
):
    """The database drops its connections and new ones hang for 1.5 s during batch 5."""
    answer_with = clickatell.default

    def blip_at_batch_5(recorded):
        if len(clickatell.requests) == 5:
            proxy.cut(hang=True)
            threading.Timer(1.5, proxy.restore).start()
        return answer_with(recorded)

    clickatell.default = blip_at_batch_5
    key = {"Idempotency-Key": "water-0601"}
    config = clickatell_config(clickatell.url)
    with gunicorn_server(
        config, through(proxy, database_url), tmp_path, args=("--preload",)
    ) as base:
        first = requests.post(f"{base}/sendsms", json=BIG, headers=key, timeout=120)
        again = requests.post(f"{base}/sendsms", json=BIG, headers=key, timeout=120)

    assert first.status_code == 200, first.text
    assert first.json()["messagesSent"] == 5000
    assert again.status_code == 200 and again.json() == first.json()
    sent = texts_per_number(clickatell)
    assert len(sent) == 5000 and set(sent.values()) == {1}
    assert rows(db, "SELECT count(*), sum(sent), min(status) FROM sendlog") == [
        (1, 5000, "success")
    ]
    assert rows(db, "SELECT count(*) FROM sms WHERE status = 'sent'") == [(5000,)]


def test_a_send_the_database_cut_short_keeps_its_key_and_a_repeat_answers_with_it(
    make_app, database_url, db, proxy, clickatell, monkeypatch
):
    monkeypatch.setattr(dispatch, "WRITE_RETRY_SECONDS", 0.5)
    answer_with = clickatell.default

    def outage_at_batch_2(recorded):
        if len(clickatell.requests) == 2:
            proxy.cut()
        return answer_with(recorded)

    clickatell.default = outage_at_batch_2
    config = clickatell_config(clickatell.url)
    config["smsProvider"].update(waitSeconds=2, maxConcurrentRequests=1)
    app = make_app(config, url=through(proxy, database_url))
    client, key = app.test_client(), {"Idempotency-Key": "water-0602"}

    first = client.post("/sendsms", json=BIG, headers=key)
    assert first.status_code == 503
    ref = first.get_json()["refNumber"]
    assert f"send {ref}" in first.get_json()["error"]

    proxy.restore()
    began = time.monotonic()
    running = client.post("/sendsms", json=BIG, headers=key)
    assert time.monotonic() - began < 2  # at once, not after waiting for the first
    assert running.status_code == 409 and running.get_json()["refNumber"] == ref

    # Batch 2 may have reached the provider: settled, never resent. The rest goes on.
    runner = app.test_cli_runner()
    assert runner.invoke(args=["reconcile", "--older-than", "0"]).exit_code == 0
    assert runner.invoke(args=["dispatch", "--until-idle"]).exit_code == 0
    closed = client.post("/sendsms", json=BIG, headers=key)
    assert closed.status_code == 200
    assert closed.get_json()["refNumber"] == ref
    assert closed.get_json()["messagesSent"] == 4500  # all but batch 2, whose answer was lost
    assert (
        closed.get_json()["statusDescription"] == "500 of 5000 recipients rejected by the provider"
    )
    assert closed.get_json()["validNumbers"] == 5000

    sent = texts_per_number(clickatell)
    assert len(sent) == 5000 and set(sent.values()) == {1}  # nothing went out twice
    assert rows(db, "SELECT count(*) FROM sendlog") == [(1,)]
    assert rows(db, "SELECT status, reason, count(*) FROM sms GROUP BY 1, 2 ORDER BY 1") == [
        ("failed", "provider outcome unknown", 500),
        ("sent", None, 4500),
    ]
