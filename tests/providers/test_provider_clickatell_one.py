"""Clickatell One API plugin against a fake Clickatell platform on 127.0.0.1."""

import pytest

from messaging.errors import ProviderError, ReceiptRejected
from messaging.providers.base import Receipt, Recipient
from messaging.providers.clickatell_one import ClickatellOne
from tests.conftest import base_config, rows
from tests.providers.conftest import settings

TWO = [Recipient("27830000001", "11"), Recipient("27830000002", "12")]


def provider(fake, sleeps, **values):
    return ClickatellOne(settings(fake, "ClickatellOne", **values), sleep=sleeps.append)


def accepted(to, api_id):
    return {"apiMessageId": api_id, "accepted": True, "to": to, "error": None}


BOTH = {"messages": [accepted("27830000001", "m1"), accepted("27830000002", "m2")], "error": None}


def test_send_posts_the_documented_request_and_maps_each_recipient(fake, sleeps):
    fake.reply(202, BOTH)
    results = provider(fake, sleeps).send_batch(TWO, "Water off", "IMQS")
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/message")
    assert request.headers["Authorization"] == "secret-token"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "messages": [
            {
                "channel": "sms",
                "to": "27830000001",
                "content": "Water off",
                "clientMessageId": "11",
                "from": "IMQS",
            },
            {
                "channel": "sms",
                "to": "27830000002",
                "content": "Water off",
                "clientMessageId": "12",
                "from": "IMQS",
            },
        ]
    }
    assert [(r.reference, r.accepted, r.provider_id) for r in results] == [
        ("11", True, "m1"),
        ("12", True, "m2"),
    ]


def test_mixed_207_answer_rejects_only_the_refused_recipient(fake, sleeps):
    refused = {
        "apiMessageId": "",
        "accepted": False,
        "to": "27830000002",
        "error": {"code": 25, "description": "Invalid recipient address"},
    }
    fake.reply(207, {"messages": [accepted("27830000001", "m1"), refused], "error": None})
    ok, bad = provider(fake, sleeps).send_batch(TWO, "x", None)
    assert ok.accepted
    assert (bad.accepted, bad.error_code, bad.reason) == (False, "25", "Invalid recipient address")


def test_bad_api_key_refuses_the_whole_batch(fake, sleeps):
    fake.reply(
        401,
        {
            "messages": [],
            "error": {"code": 1, "description": "Invalid or missing Integration API Key"},
        },
    )
    with pytest.raises(ProviderError, match="Error 1: Invalid or missing API key"):
        provider(fake, sleeps).send_batch(TWO, "x", None)


def test_insufficient_balance_is_out_of_credit(fake, sleeps):
    fake.reply(402, {"messages": [], "error": {"code": 20, "description": "Insufficient balance"}})
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO, "x", None)
    assert caught.value.message == "Error 20: Out of credit"


def test_a_503_is_retried_then_succeeds(fake, sleeps):
    fake.reply(503, "busy").reply(202, BOTH)
    assert all(r.accepted for r in provider(fake, sleeps).send_batch(TWO, "x", None))
    assert len(fake.requests) == 2 and len(sleeps) == 1


def test_429_waits_for_retry_after(fake, sleeps):
    fake.reply(
        429,
        {"messages": [], "error": {"code": 43, "description": "Rate limit"}},
        {"Retry-After": "3"},
    )
    fake.reply(202, BOTH)
    assert all(r.accepted for r in provider(fake, sleeps).send_batch(TWO, "x", None))
    assert sleeps == [3.0]


def test_read_timeout_is_not_resent(fake, sleeps):
    fake.reply(202, hang=True)
    results = provider(fake, sleeps, timeout=0.2).send_batch(TWO, "x", None)
    assert len(fake.requests) == 1
    assert {r.reason for r in results} == {"provider outcome unknown"}


def test_a_500_after_sending_is_not_resent(fake, sleeps):
    fake.reply(500, "oops")
    results = provider(fake, sleeps).send_batch(TWO, "x", None)
    assert len(fake.requests) == 1 and not any(r.accepted for r in results)


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("DEVICE_ACK", "delivered"),
        ("READ", "delivered"),
        ("QUEUED", "sent"),
        ("SENT_TO_SUPPLIER", "sent"),
        ("DELIVERY_FAILURE", "failed"),
        ("EXPIRED", "failed"),
        ("ROUTING_ERROR", "failed"),
    ],
)
def test_status_query_maps_each_status_family(fake, sleeps, name, status):
    fake.reply(200, {"sms": {"status": name, "timestamp": 1700000000000}})
    [update] = provider(fake, sleeps).query_status(["m1"])
    assert (update.provider_id, update.status) == ("m1", status)
    assert (fake.requests[0].method, fake.requests[0].path) == ("GET", "/v1/message/m1")


def test_status_callback_with_the_shared_secret_is_mapped(fake, sleeps):
    plugin = provider(fake, sleeps, options={"callbackSecret": "s3"})
    event = {
        "messageId": "m1",
        "clientMessageId": "11",
        "to": "27830000001",
        "statusCode": 4,
        "status": "DEVICE_ACK",
        "timestamp": 1700000000000,
    }
    receipt = Receipt("POST", "https://us/cb?secret=s3", {}, {"secret": "s3"}, json=event)
    [update] = plugin.parse_receipt(receipt)
    assert (update.provider_id, update.status, update.code) == ("m1", "delivered", "4")


def test_status_callback_without_the_secret_is_rejected(fake, sleeps):
    plugin = provider(fake, sleeps, options={"callbackSecret": "s3"})
    receipt = Receipt(
        "POST", "https://us/cb", {}, {}, json={"messageId": "m1", "status": "DEVICE_ACK"}
    )
    with pytest.raises(ReceiptRejected):
        plugin.parse_receipt(receipt)


def test_sendsms_through_clickatell_one(fake, make_app, db):
    fake.reply(202, {"messages": [accepted("27830000000", "one-1")], "error": None})
    client = make_app(base_config(name="ClickatellOne", token="k", url=fake.url)).test_client()
    body = client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000000"]}).get_json()
    assert (body["sendSuccess"], body["messagesSent"], body["statusDescription"]) == (True, 1, "")
    assert rows(db, "SELECT providerid, status, errorcode, reason FROM sms") == [
        ("one-1", "sent", None, None)
    ]
    assert fake.requests[0].json["messages"][0]["clientMessageId"] == str(
        rows(db, "SELECT id FROM sms")[0][0]
    )


def test_sendsms_with_a_bad_key_answers_the_error(fake, make_app, db):
    fake.reply(401, {"messages": [], "error": {"code": 1, "description": "bad key"}})
    client = make_app(base_config(name="ClickatellOne", token="k", url=fake.url)).test_client()
    body = client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000000"]}).get_json()
    assert (body["sendSuccess"], body["statusDescription"]) == (
        False,
        "Error 1: Invalid or missing API key",
    )
    assert rows(db, "SELECT status, errorcode FROM sms") == [("failed", "1")]
