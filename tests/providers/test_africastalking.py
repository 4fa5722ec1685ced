"""Africa's Talking plugin against a fake Africa's Talking on 127.0.0.1."""

import pytest

from messaging.config import OptionMap, ProviderSettings
from messaging.errors import ProviderError, ReceiptRejected
from messaging.providers.africastalking import AfricasTalking
from messaging.providers.base import Receipt, Recipient
from tests.conftest import base_config, rows
from tests.providers.conftest import outcomes, plugin, poll, send
from tests.providers.fakes import Reply, africastalking_accepts

TWO = [Recipient("254711000001", "11"), Recipient("254711000002", "12")]


def provider(fake, sleeps, **values):
    return plugin("AfricasTalking", fake, sleeps, **values)


def recipient(number, code=101, status="Success", message_id=None):
    return {
        "statusCode": code,
        "number": number,
        "status": status,
        "cost": "KES 0.8000",
        "messageId": message_id or f"ATXid_{number[-1]}",
    }


def answer(*recipients):
    return {
        "SMSMessageData": {"Message": f"Sent to {len(recipients)}", "Recipients": list(recipients)}
    }


def africas_talking(request):
    """Answer a send as Africa's Talking documents it: 201, one Recipients entry a number."""
    numbers = request.form["to"].split(",")
    entries = [
        recipient(n) if n.startswith("+") else recipient(n, 403, "InvalidPhoneNumber", "None")
        for n in numbers
    ]
    taken = sum(entry["statusCode"] == 101 for entry in entries)
    data = {"Message": f"Sent to {taken}/{len(numbers)} Total Cost: KES 0.8000"}
    return Reply(201, {"SMSMessageData": {**data, "Recipients": entries}})


def test_send_posts_the_documented_form_with_the_api_key(fake, sleeps):
    fake.reply(201, answer(recipient("+254711000001"), recipient("+254711000002")))
    results = provider(fake, sleeps).send_batch(TWO, "Water off", "IMQS")
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/")
    assert request.headers["Apikey"] == "secret-token"
    assert request.headers["Accept"] == "application/json"
    assert request.form == {
        "username": "imqs",
        "to": "+254711000001,+254711000002",
        "message": "Water off",
        "bulkSMSMode": "1",
        "from": "IMQS",
    }
    assert [(r.reference, r.accepted, r.provider_id) for r in results] == [
        ("11", True, "ATXid_1"),
        ("12", True, "ATXid_2"),
    ]


def test_mixed_answer_rejects_only_the_refused_recipient(fake, sleeps):
    fake.reply(
        201,
        answer(
            recipient("+254711000001"),
            recipient("+254711000002", 403, "InvalidPhoneNumber", "None"),
        ),
    )
    ok, bad = provider(fake, sleeps).send_batch(TWO, "x", None)
    assert ok.accepted
    assert (bad.accepted, bad.error_code, bad.reason) == (False, "403", "Invalid phone number")


def test_bad_api_key_refuses_the_batch(fake, sleeps):
    fake.reply(401, "The supplied authentication is invalid")
    with pytest.raises(ProviderError, match="^Error 401: Authentication failed$"):
        provider(fake, sleeps).send_batch(TWO, "x", None)


def test_insufficient_balance_for_everyone_is_out_of_credit(fake, sleeps):
    fake.reply(
        201,
        answer(
            recipient("+254711000001", 405, "InsufficientBalance", "None"),
            recipient("+254711000002", 405, "InsufficientBalance", "None"),
        ),
    )
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO, "x", None)
    assert caught.value.message == "Error 405: Out of credit"


def test_a_409_do_not_disturb_answer_still_maps_each_recipient(fake, sleeps):
    # The SMS notifications docs' example: Nigeria's promotional window, HTTP 409.
    refused = {
        "cost": "0",
        "messageId": "None",
        "number": "+2348030000001",
        "status": "DoNotDisturbRejection",
        "statusCode": 409,
    }
    body = {"SMSMessageData": {"Message": "Sent to 0/1 Total Cost: 0", "Recipients": [refused]}}
    fake.reply(409, body)
    [result] = provider(fake, sleeps).send_batch([Recipient("2348030000001", "11")], "x", None)
    assert (result.accepted, result.error_code, result.reason) == (
        False,
        "409",
        "Do not disturb rejection",
    )


def test_an_invalid_sender_id_refuses_the_batch_with_the_answers_message(fake, sleeps):
    fake.reply(201, {"SMSMessageData": {"Message": "InvalidSenderId", "Recipients": []}})
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO, "x", "NOTMINE")
    assert caught.value.message == "InvalidSenderId"


def test_a_plain_text_refusal_keeps_its_status_and_text(fake, sleeps):
    fake.reply(400, "Request is missing required form field 'to'")
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO, "x", None)
    assert caught.value.message == "Error 400: Request is missing required form field 'to'"


def test_a_batch_holds_at_most_100_recipients(fake, make_app, db):
    # No documented limit: 100 keeps each synchronous request, and its timeout, small.
    fake.default = africas_talking
    config = base_config(
        name="AfricasTalking", token="k", url=fake.url, options={"username": "imqs"}
    )
    client = make_app(config).test_client()
    numbers = [f"083{n:07d}" for n in range(1, 102)]
    body = client.post("/sendsms", json={"message": "hi", "msisdns": numbers}).get_json()
    assert body["messagesSent"] == 101
    assert sorted(len(r.form["to"].split(",")) for r in fake.requests) == [1, 100]
    assert all(n.startswith("+27") for r in fake.requests for n in r.form["to"].split(","))


def test_sandbox_username_uses_the_sandbox_host(fake, sleeps):
    sandbox = OptionMap({"username": "sandbox"}.items())
    plugin = AfricasTalking(ProviderSettings(name="AfricasTalking", options=sandbox))
    assert plugin.base_url == "https://api.sandbox.africastalking.com/version1/messaging"
    assert not plugin.can_query_status


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("Success", "delivered"),
        ("Sent", "sent"),
        ("Submitted", "sent"),
        ("Buffered", "sent"),
        ("Rejected", "failed"),
        ("Failed", "failed"),
        ("AbsentSubscriber", "failed"),
        ("Expired", "failed"),
    ],
)
def test_delivery_report_maps_each_status_family(fake, sleeps, name, status):
    plugin = provider(fake, sleeps, options={"username": "imqs", "callbackSecret": "s3"})
    form = {
        "secret": "s3",
        "id": "ATXid_1",
        "status": name,
        "phoneNumber": "+254711000001",
        "networkCode": "63902",
        "failureReason": "AbsentSubscriber" if status == "failed" else "",
    }
    [update] = plugin.parse_receipt(Receipt("POST", "https://us/cb?secret=s3", {}, form))
    assert (update.provider_id, update.status, update.code) == ("ATXid_1", status, name)
    if status == "failed":
        assert update.reason == "AbsentSubscriber"


def test_delivery_report_with_a_wrong_secret_is_rejected(fake, sleeps):
    plugin = provider(fake, sleeps, options={"username": "imqs", "callbackSecret": "s3"})
    with pytest.raises(ReceiptRejected):
        plugin.parse_receipt(
            Receipt("POST", "https://us/cb", {}, {"id": "ATXid_1", "status": "Success"})
        )


def test_delivery_report_is_rejected_when_no_secret_is_configured(fake, sleeps):
    with pytest.raises(ReceiptRejected, match="callbackSecret is not set"):
        provider(fake, sleeps).parse_receipt(Receipt("POST", "https://us/cb", {}, {"secret": ""}))


def test_sendsms_through_africastalking(fake, make_app, db):
    fake.reply(
        201,
        answer(
            recipient("+27830000001"), recipient("+27830000002", 406, "UserInBlacklist", "None")
        ),
    )
    config = base_config(
        name="AfricasTalking", token="k", url=fake.url, options={"username": "imqs"}
    )
    client = make_app(config).test_client()
    body = client.post(
        "/sendsms", json={"message": "hi", "msisdns": ["0830000001", "0830000002"]}
    ).get_json()
    assert (body["sendSuccess"], body["messagesSent"]) == (True, 1)
    assert rows(db, "SELECT providerid, status, errorcode, reason FROM sms ORDER BY id") == [
        ("ATXid_1", "sent", None, None),
        (None, "failed", "406", "User in blacklist"),
    ]


def test_no_poll_and_delivery_reports_update_the_message(fake, make_app, db):
    fake.default = africastalking_accepts
    config = base_config(
        name="AfricasTalking",
        token="k",
        url=fake.url,
        options={"username": "u", "callbackSecret": "s3"},
    )
    app = make_app(config)
    client = send(app)
    assert "has no status query" in poll(app)
    report = {"id": "AT2", "status": "Failed", "failureReason": "AbsentSubscriber"}
    assert client.post("/callbacks/africastalking?secret=s3", data=report).status_code == 200
    forged = {"id": "AT1", "status": "Success"}
    assert client.post("/callbacks/africastalking?secret=no", data=forged).status_code == 403
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("sent", None),
        ("failed", "Failed"),
        ("sent", None),
    ]
