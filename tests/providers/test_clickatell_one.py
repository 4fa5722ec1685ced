"""Clickatell One API plugin against a fake Clickatell platform on 127.0.0.1."""

import pytest

from messaging.errors import ProviderError, ReceiptRejected
from messaging.providers.base import Receipt, Recipient
from tests.conftest import base_config, rows
from tests.providers.conftest import outcomes, plugin, poll, send
from tests.providers.fakes import Reply

TWO = [Recipient("27830000001", "11"), Recipient("27830000002", "12")]


def provider(fake, sleeps, **values):
    return plugin("ClickatellOne", fake, sleeps, **values)


def accepted(to, api_id):
    return {"apiMessageId": api_id, "accepted": True, "to": to, "error": None}


BOTH = {"messages": [accepted("27830000001", "m1"), accepted("27830000002", "m2")], "error": None}


def one_api(statuses: dict[str, str]):
    """Answer as Clickatell's One API documents it (send reference, status query).

    POST /v1/message accepts digit-only numbers of 10+ digits and refuses the rest with
    error 25: 202 when all were accepted, 207 when mixed, 400 when none. GET
    /v1/message/{id} answers one entry per channel, or no channel for an unknown id.
    """

    def answer(request):
        now = 1700000000000
        if request.method == "GET":
            api_id = request.path.rsplit("/", 1)[1]
            if api_id not in statuses:
                return Reply(200, {"status": "UNKNOWN", "timestamp": now})
            return Reply(200, {"sms": {"status": statuses[api_id], "timestamp": now}})
        replies = []
        for message in request.json["messages"]:
            to = message["to"]
            if to.isdigit() and len(to) >= 10:
                replies.append(accepted(to, f"id-{to}"))
            else:
                error = {"code": 25, "description": f"Invalid recipient address: {to}"}
                replies.append({"accepted": False, "to": to, "error": error})
        taken = sum(reply["accepted"] for reply in replies)
        status = 202 if taken == len(replies) else 207 if taken else 400
        return Reply(status, {"messages": replies, "error": None})

    return answer


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


def test_a_400_refusing_every_message_reports_each_recipients_error(fake, sleeps):
    # Clickatell's send reference: "the global error object is not used because this is
    # a message-level error"; a refused message has no apiMessageId at all.
    fake.default = one_api({})
    bad = [Recipient("2783", "11"), Recipient("27abc", "12")]
    results = provider(fake, sleeps).send_batch(bad, "x", None)
    assert [(r.reference, r.accepted, r.error_code) for r in results] == [
        ("11", False, "25"),
        ("12", False, "25"),
    ]
    assert results[0].reason == "Invalid recipient address: 2783"


def test_the_documented_platform_accepts_and_refuses_per_recipient(fake, sleeps):
    fake.default = one_api({})
    mixed = [Recipient("27830000001", "11"), Recipient("278300", "12")]
    ok, bad = provider(fake, sleeps).send_batch(mixed, "x", None)
    assert (ok.accepted, ok.provider_id) == (True, "id-27830000001")
    assert (bad.accepted, bad.error_code) == (False, "25")


def test_a_batch_holds_at_most_100_messages(fake, make_app, db):
    # Clickatell's page allows 200 a call; clickatell-api calls 100 the gateway limit.
    fake.default = one_api({})
    client = make_app(base_config(name="ClickatellOne", token="k", url=fake.url)).test_client()
    numbers = [f"083{n:07d}" for n in range(1, 102)]
    body = client.post("/sendsms", json={"message": "hi", "msisdns": numbers}).get_json()
    assert body["messagesSent"] == 101
    assert sorted(len(r.json["messages"]) for r in fake.requests) == [1, 100]


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


def test_other_400_errors_are_not_retried(fake, sleeps):
    fake.reply(400, {"messages": [], "error": {"code": 22, "description": "Too many"}})
    with pytest.raises(ProviderError):
        provider(fake, sleeps).send_batch(TWO, "x", None)
    assert len(fake.requests) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("DEVICE_ACK", "delivered"),
        ("READ", "delivered"),
        ("UNKNOWN", "sent"),
        ("QUEUED", "sent"),
        ("SCHEDULED", "sent"),
        ("SENT_TO_SUPPLIER", "sent"),
        ("DELIVERY_FAILURE", "failed"),
        ("EXPIRED", "failed"),
        ("STOPPED_BY_USER", "failed"),
        ("STOPPED_BY_ADMIN", "failed"),
        ("EMULATED", "failed"),
        ("INSUFFICIENT_ACCOUNT_BALANCE", "failed"),
        ("VOLUME_LIMIT", "failed"),
        ("VOLUME_LIMIT_DAILY", "failed"),
        ("VOLUME_LIMIT_MONTHLY", "failed"),
        ("RECIPIENT_DOES_NOT_EXIST", "failed"),
        ("ROUTING_ERROR", "failed"),
    ],
)
def test_status_query_maps_each_status_family(fake, sleeps, name, status):
    fake.reply(200, {"sms": {"status": name, "timestamp": 1700000000000}})
    [update] = provider(fake, sleeps).query_status(["m1"])
    assert (update.provider_id, update.status) == ("m1", status)
    assert (fake.requests[0].method, fake.requests[0].path) == ("GET", "/v1/message/m1")


def test_status_query_reads_the_sms_entry_of_a_per_channel_answer(fake, sleeps):
    fake.default = one_api({"m1": "DEVICE_ACK", "m2": "STOPPED_BY_ADMIN"})
    updates = provider(fake, sleeps).query_status(["m1", "m2"])
    assert [(u.provider_id, u.status, u.code) for u in updates] == [
        ("m1", "delivered", "DEVICE_ACK"),
        ("m2", "failed", "STOPPED_BY_ADMIN"),
    ]


def test_status_query_prefers_sms_when_several_channels_answer(fake, sleeps):
    now = 1700000000000
    answer = {
        "whatsapp": {"status": "READ", "timestamp": now},
        "sms": {"status": "DELIVERY_FAILURE", "timestamp": now},
    }
    fake.reply(200, answer)
    [update] = provider(fake, sleeps).query_status(["m1"])
    assert update.status == "failed"


def test_status_query_of_an_unknown_message_has_no_channel_and_stays_sent(fake, sleeps):
    fake.default = one_api({})
    [update] = provider(fake, sleeps).query_status(["nobody"])
    assert (update.provider_id, update.status, update.code) == ("nobody", "sent", "UNKNOWN")


def test_status_query_also_reads_a_flat_final_status(fake, sleeps):
    fake.reply(200, {"status": "ROUTING_ERROR", "timestamp": 1700000000000})
    [update] = provider(fake, sleeps).query_status(["m1"])
    assert update.status == "failed"


@pytest.mark.parametrize(
    ("name", "code", "status"),
    [
        ("MEDIA_ACCESS_ERROR", 85, "failed"),
        ("WHATSAPP_SOMETHING_NEW", 150, "failed"),
        ("SOMETHING_IN_FLIGHT", 4, "sent"),
        ("SOMETHING_DELIVERED", 5, "delivered"),
        ("SOMETHING_UNDOCUMENTED", 10, "sent"),
        ("SOMETHING_ELSE", None, "sent"),
    ],
)
def test_an_unlisted_status_name_falls_back_to_its_status_code(fake, sleeps, name, code, status):
    plugin = provider(fake, sleeps, options={"callbackSecret": "s3"})
    event = {"messageId": "m1", "status": name, "statusCode": code, "timestamp": 1}
    receipt = Receipt("POST", "https://us/cb?secret=s3", {}, {"secret": "s3"}, json=event)
    [update] = plugin.parse_receipt(receipt)
    assert update.status == status


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


def test_status_callbacks_wrapped_in_an_event_are_each_mapped(fake, sleeps):
    plugin = provider(fake, sleeps, options={"callbackSecret": "s3"})
    body = {
        "integrationId": "i1",
        "integrationName": "imqs",
        "event": {
            "messageStatusUpdate": [
                {"channel": "sms", "messageId": "m1", "statusCode": 5, "status": "DEVICE_ACK"},
                {
                    "channel": "sms",
                    "messageId": "m2",
                    "statusCode": 23,
                    "status": "DELIVERY_FAILURE",
                },
            ]
        },
    }
    receipt = Receipt("POST", "https://us/cb?secret=s3", {}, {"secret": "s3"}, json=body)
    updates = plugin.parse_receipt(receipt)
    assert [(u.provider_id, u.status, u.code) for u in updates] == [
        ("m1", "delivered", "5"),
        ("m2", "failed", "23"),
    ]


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


def test_poll_status_through_clickatell_one(fake, make_app, db):
    fake.default = one_api({"id-27830000001": "DEVICE_ACK", "id-27830000002": "EXPIRED"})
    app = make_app(base_config(name="ClickatellOne", token="t", url=fake.url))
    send(app)
    poll(app)
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("delivered", "DEVICE_ACK"),
        ("failed", "EXPIRED"),
        ("sent", None),
    ]
