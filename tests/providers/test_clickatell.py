"""Clickatell legacy REST plugin against a fake Clickatell on 127.0.0.1."""

import pytest

from messaging.errors import ProviderError, ReceiptRejected
from messaging.providers.base import Receipt, Recipient
from tests.conftest import base_config, rows
from tests.providers.conftest import outcomes, plugin, poll, send
from tests.providers.fakes import Reply, clickatell_accepts

TWO = [Recipient("27830000001", "11"), Recipient("27830000002", "12")]


def provider(fake, sleeps, **values):
    return plugin("Clickatell", fake, sleeps, **values)


def accepted(to, api_id):
    return {"accepted": True, "to": to, "apiMessageId": api_id}


def test_send_posts_the_documented_request_and_maps_each_recipient(fake, sleeps):
    fake.reply(
        202, {"data": {"message": [accepted("27830000001", "a1"), accepted("27830000002", "a2")]}}
    )
    results = provider(fake, sleeps).send_batch(TWO, "Water off", "IMQS")
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/rest/message")
    assert request.headers["Authorization"] == "Bearer secret-token"
    assert request.headers["X-Version"] == "1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.json == {
        "text": "Water off",
        "to": ["27830000001", "27830000002"],
        "from": "IMQS",
    }
    assert [(r.reference, r.accepted, r.provider_id, r.segments) for r in results] == [
        ("11", True, "a1", 1),
        ("12", True, "a2", 1),
    ]


def test_mixed_answer_rejects_only_the_refused_recipient(fake, sleeps):
    refused = {
        "accepted": False,
        "to": "27830000002",
        "apiMessageId": "",
        "error": {"code": "105", "description": "Invalid destination address"},
    }
    fake.reply(202, {"data": {"message": [accepted("27830000001", "a1"), refused]}})
    ok, bad = provider(fake, sleeps).send_batch(TWO, "x", None)
    assert ok.accepted and ok.provider_id == "a1"
    assert (bad.accepted, bad.error_code, bad.reason) == (
        False,
        "105",
        "Invalid destination address",
    )
    assert "from" not in fake.requests[0].json


def test_authentication_failure_refuses_the_whole_batch(fake, sleeps):
    fake.reply(401, {"error": {"code": "001", "description": "Authentication failed"}})
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO, "x", None)
    assert caught.value.message == "Error 001: Authentication failed"


def test_out_of_credit_refuses_the_whole_batch(fake, sleeps):
    fake.reply(400, {"error": {"code": "301", "description": "No Credit Left"}})
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO, "x", None)
    assert caught.value.message == "Error 301: Out of credit"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("004", "delivered"),
        ("003", "delivered"),
        ("002", "sent"),
        ("011", "sent"),
        ("005", "failed"),
        ("010", "failed"),
        ("012", "failed"),
    ],
)
def test_status_query_maps_each_code_family(fake, sleeps, code, status):
    fake.reply(200, {"data": {"apiMessageId": "a1", "messageStatus": code, "charge": 1}})
    [update] = provider(fake, sleeps).query_status(["a1"])
    assert (update.provider_id, update.status, update.code) == ("a1", status, code)
    [request] = fake.requests
    assert (request.method, request.path) == ("GET", "/rest/message/a1")
    assert request.headers["Authorization"] == "Bearer secret-token"


def test_pushed_receipt_with_the_shared_secret_is_mapped(fake, sleeps):
    plugin = provider(fake, sleeps, options={"callbackSecret": "s3"})
    receipt = Receipt(
        "POST",
        "https://us/callbacks/clickatell?secret=s3",
        {},
        {"secret": "s3", "apiMsgId": "a1", "status": "004", "to": "27830000001"},
    )
    [update] = plugin.parse_receipt(receipt)
    assert (update.provider_id, update.status, update.code) == ("a1", "delivered", "004")


def test_pushed_receipt_with_a_wrong_secret_is_rejected(fake, sleeps):
    plugin = provider(fake, sleeps, options={"callbackSecret": "s3"})
    receipt = Receipt(
        "POST",
        "https://us/cb?secret=nope",
        {},
        {"secret": "nope", "apiMsgId": "a1", "status": "004"},
    )
    with pytest.raises(ReceiptRejected):
        plugin.parse_receipt(receipt)


def clickatell_config(fake):
    return base_config(name="clickatell", token="tok", url=fake.url, retries=0)


def test_sendsms_through_clickatell_records_ids_and_rejections(fake, make_app, db):
    refused = {
        "accepted": False,
        "to": "27840000000",
        "error": {"code": "105", "description": "Invalid destination"},
    }
    fake.reply(202, {"data": {"message": [accepted("27830000000", "api-1"), refused]}})
    client = make_app(clickatell_config(fake)).test_client()
    body = client.post(
        "/sendsms", json={"message": "hi", "msisdns": ["0830000000", "0840000000"]}
    ).get_json()
    assert (body["sendSuccess"], body["messagesSent"]) == (True, 1)
    assert body["statusDescription"] == "1 of 2 recipients rejected by the provider"
    assert rows(
        db, "SELECT msisdn, providerid, status, errorcode, reason FROM sms ORDER BY id"
    ) == [
        ("27830000000", "api-1", "sent", None, None),
        ("27840000000", None, "failed", "105", "Invalid destination"),
    ]


def test_sendsms_when_clickatell_is_out_of_credit_answers_the_error(fake, make_app, db):
    fake.reply(400, {"error": {"code": "301", "description": "No Credit Left"}})
    client = make_app(clickatell_config(fake)).test_client()
    body = client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000000"]}).get_json()
    assert (body["sendSuccess"], body["statusDescription"]) == (False, "Error 301: Out of credit")
    assert rows(db, "SELECT status, errorcode, reason FROM sms") == [
        ("failed", "301", "Out of credit")
    ]


def test_poll_status_through_clickatell(fake, make_app, db):
    codes = {"c1": "004", "c2": "005", "c3": "002"}

    def answer(request):
        if request.method == "POST":
            return clickatell_accepts(request)
        api_id = request.path.rsplit("/", 1)[1]
        return Reply(200, {"data": {"apiMessageId": api_id, "messageStatus": codes[api_id]}})

    fake.default = answer
    app = make_app(base_config(name="Clickatell", token="t", url=fake.url))
    send(app)
    assert "checked 3, delivered 1, failed 1, still in flight 1" in poll(app)
    assert outcomes(db) == [
        ("27830000001", "delivered", "004"),
        ("27830000002", "failed", "005"),
        ("27830000003", "sent", None),
    ]
    assert {r.path for r in fake.requests if r.method == "GET"} == {
        "/rest/message/c1",
        "/rest/message/c2",
        "/rest/message/c3",
    }
