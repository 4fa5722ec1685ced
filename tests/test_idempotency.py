"""Idempotency-Key on POST /sendsms: one send per key and caller, however many ask."""

from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import rows

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
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.json()["refNumber"] for answer in answers}) == 1
    assert rows(db, "SELECT count(*) FROM sendlog") == [(1,)]
    assert rows(db, "SELECT count(*) FROM sms") == [(2,)]
