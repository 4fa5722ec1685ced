"""BulkSMS plugin against a fake BulkSMS on 127.0.0.1."""

import pytest

from messaging.errors import ProviderError, ReceiptRejected
from messaging.providers.base import Receipt, Recipient
from tests.conftest import base_config, rows
from tests.providers.conftest import outcomes, plugin, poll, send
from tests.providers.fakes import Reply, bulksms_accepts

TWO = [Recipient("27830000001", "11"), Recipient("27830000002", "12")]


def provider(fake, sleeps, **values):
    return plugin("BulkSMS", fake, sleeps, **values)


def message(entry, kind="ACCEPTED", subtype=None):
    number = entry["to"]
    status = {"id": f"{kind}.{subtype or 'null'}", "type": kind}
    if subtype:
        status["subtype"] = subtype
    return {
        "id": "40" + number[-1],
        "type": "SENT",
        "to": number,
        "body": entry["body"],
        "userSuppliedId": entry["userSuppliedId"],
        "status": status,
    }


def accept_all(request):
    return Reply(201, [message(entry) for entry in request.json])


def test_send_posts_the_documented_request_with_a_deduplication_id(fake, sleeps):
    fake.default = accept_all
    results = provider(fake, sleeps).send_batch(TWO, "Water off", "IMQS")
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/messages")
    assert request.basic_auth == ("imqs", "secret-token")
    assert request.headers["Content-Type"] == "application/json"
    assert 1 <= int(request.query["deduplication-id"]) < 2**31
    assert request.json == [
        {
            "to": "+27830000001",
            "body": "Water off",
            "encoding": "TEXT",
            "longMessageMaxParts": 1,
            "userSuppliedId": "11",
            "from": "IMQS",
        },
        {
            "to": "+27830000002",
            "body": "Water off",
            "encoding": "TEXT",
            "longMessageMaxParts": 1,
            "userSuppliedId": "12",
            "from": "IMQS",
        },
    ]
    assert [(r.reference, r.accepted, r.provider_id) for r in results] == [
        ("11", True, "401"),
        ("12", True, "402"),
    ]


def test_unicode_text_is_sent_as_unicode(fake, sleeps):
    fake.default = accept_all
    provider(fake, sleeps).send_batch(TWO[:1], "Sawubona 😀", None)
    assert fake.requests[0].json[0]["encoding"] == "UNICODE"
    assert "from" not in fake.requests[0].json[0]


def test_mixed_answer_rejects_only_the_failed_recipient(fake, sleeps):
    fake.default = lambda request: Reply(
        201, [message(request.json[0]), message(request.json[1], "FAILED", "BLOCKED")]
    )
    ok, bad = provider(fake, sleeps).send_batch(TWO, "x", None)
    assert ok.accepted
    assert (bad.accepted, bad.error_code, bad.reason) == (False, "FAILED.BLOCKED", "Blocked")


def test_authentication_failure_refuses_the_batch(fake, sleeps):
    fake.reply(
        401,
        {
            "type": "https://developer.bulksms.com/json/v1/errors#authentication-failed",
            "title": "Authentication Failed",
            "status": 401,
        },
    )
    with pytest.raises(ProviderError, match="^Error 401: Authentication failed$"):
        provider(fake, sleeps).send_batch(TWO, "x", None)


def test_insufficient_credits_is_out_of_credit(fake, sleeps):
    fake.reply(
        403,
        {
            "type": "https://developer.bulksms.com/json/v1/errors#insufficient-credits",
            "title": "Insufficient Credits",
            "status": 403,
        },
    )
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO, "x", None)
    assert caught.value.message == "Error 403: Out of credit"


@pytest.mark.parametrize("failure", [Reply(201, hang=True), Reply(500, "oops")])
def test_a_send_that_may_have_been_processed_is_resent_with_its_deduplication_id(
    fake, sleeps, failure
):
    fake.script.append(failure)
    fake.default = accept_all
    results = provider(fake, sleeps, timeout=0.2).send_batch(TWO, "x", None)
    assert all(r.accepted for r in results)
    first, second = fake.requests
    assert first.query["deduplication-id"] == second.query["deduplication-id"]
    assert first.body == second.body and len(sleeps) == 1


def test_batches_get_different_deduplication_ids(fake, sleeps):
    fake.default = accept_all
    plugin = provider(fake, sleeps)
    plugin.send_batch(TWO[:1], "x", None)
    plugin.send_batch(TWO[1:], "x", None)
    assert fake.requests[0].query["deduplication-id"] != fake.requests[1].query["deduplication-id"]


@pytest.mark.parametrize(
    ("kind", "subtype", "status"),
    [
        ("DELIVERED", None, "delivered"),
        ("ACCEPTED", None, "sent"),
        ("SENT", None, "sent"),
        ("UNKNOWN", None, "sent"),
        ("FAILED", "EXPIRED", "failed"),
        ("FAILED", "HANDSET_ERROR", "failed"),
    ],
)
def test_status_query_maps_each_status_family(fake, sleeps, kind, subtype, status):
    fake.reply(
        200, message({"to": "+27830000001", "body": "x", "userSuppliedId": "11"}, kind, subtype)
    )
    [update] = provider(fake, sleeps).query_status(["401"])
    assert (update.provider_id, update.status, update.code) == (
        "401",
        status,
        f"{kind}.{subtype or 'null'}",
    )
    [request] = fake.requests
    assert (request.method, request.path) == ("GET", "/messages/401")
    assert request.basic_auth == ("imqs", "secret-token")


def test_webhook_with_the_shared_secret_is_mapped(fake, sleeps):
    plugin = provider(fake, sleeps, options={"username": "imqs", "callbackSecret": "s3"})
    body = [message({"to": "+27830000001", "body": "x", "userSuppliedId": "11"}, "DELIVERED")]
    [update] = plugin.parse_receipt(
        Receipt("POST", "https://us/cb?secret=s3", {}, {"secret": "s3"}, json=body)
    )
    assert (update.provider_id, update.status) == ("401", "delivered")


def test_webhook_with_a_wrong_secret_is_rejected(fake, sleeps):
    plugin = provider(fake, sleeps, options={"username": "imqs", "callbackSecret": "s3"})
    with pytest.raises(ReceiptRejected):
        plugin.parse_receipt(
            Receipt("POST", "https://us/cb?secret=x", {}, {"secret": "x"}, json=[])
        )


def bulksms_config(fake):
    return base_config(name="bulksms", token="pw", url=fake.url, options={"username": "imqs"})


def test_sendsms_through_bulksms(fake, make_app, db):
    fake.default = lambda request: Reply(
        201, [message(request.json[0]), message(request.json[1], "FAILED", "NOT_SENT")]
    )
    client = make_app(bulksms_config(fake)).test_client()
    body = client.post(
        "/sendsms", json={"message": "hi", "msisdns": ["0830000001", "0830000002"]}
    ).get_json()
    assert (body["sendSuccess"], body["messagesSent"]) == (True, 1)
    assert rows(db, "SELECT providerid, status, errorcode, reason FROM sms ORDER BY id") == [
        ("401", "sent", None, None),
        (None, "failed", "FAILED.NOT_SENT", "Not sent"),
    ]


def test_sendsms_when_bulksms_has_no_credits(fake, make_app, db):
    fake.reply(403, {"title": "Insufficient Credits", "status": 403})
    client = make_app(bulksms_config(fake)).test_client()
    body = client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000001"]}).get_json()
    assert (body["sendSuccess"], body["statusDescription"]) == (False, "Error 403: Out of credit")
    assert rows(db, "SELECT status, errorcode, reason FROM sms") == [
        ("failed", "403", "Out of credit")
    ]


def test_poll_status_through_bulksms(fake, make_app, db):
    kinds = {
        "1": {"id": "DELIVERED.null", "type": "DELIVERED"},
        "2": {"id": "FAILED.EXPIRED", "type": "FAILED", "subtype": "EXPIRED"},
        "3": {"id": "SENT.null", "type": "SENT"},
    }
    fake.default = lambda request: (
        bulksms_accepts(request)
        if request.method == "POST"
        else Reply(200, {"id": request.path[-1], "status": kinds[request.path[-1]]})
    )
    app = make_app(bulksms_config(fake))
    send(app)
    poll(app)
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("delivered", "DELIVERED.null"),
        ("failed", "FAILED.EXPIRED"),
        ("sent", None),
    ]
