"""Twilio plugin against a fake Twilio on 127.0.0.1."""

import pytest

from messaging.errors import ProviderError, ReceiptRejected
from messaging.providers.base import Receipt, Recipient
from tests.conftest import base_config, rows
from tests.providers.conftest import TWILIO_SID, outcomes, plugin, poll, send
from tests.providers.fakes import Reply, twilio_accepts, twilio_signature

SID = TWILIO_SID
TWO = [Recipient("27830000001", "11"), Recipient("27830000002", "12")]
PATH = f"/Accounts/{SID}/Messages.json"


def provider(fake, sleeps, **values):
    return plugin("Twilio", fake, sleeps, **values)


def created(to, sid, segments="1"):
    return {"sid": sid, "to": to, "status": "queued", "error_code": None, "num_segments": segments}


def by_number(request):
    """Answer like Twilio: a message per To (rejecting numbers ending in 2)."""
    to = request.form["To"]
    if to.endswith("2"):
        return Reply(
            400,
            {
                "code": 21211,
                "message": f"The 'To' number {to} is not valid.",
                "more_info": "https://www.twilio.com/docs/errors/21211",
                "status": 400,
            },
        )
    return Reply(201, created(to, "SM" + to[1:]))


def test_send_posts_one_form_request_per_recipient_with_basic_auth(fake, sleeps):
    fake.default = lambda request: Reply(
        201, created(request.form["To"], "SM" + request.form["To"][-1], "2")
    )
    results = provider(fake, sleeps).send_batch(TWO, "Water off", "+15005550006")
    assert len(fake.requests) == 2
    for request in fake.requests:
        assert (request.method, request.path) == ("POST", PATH)
        assert request.basic_auth == (SID, "secret-token")
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert sorted(r.form["To"] for r in fake.requests) == ["+27830000001", "+27830000002"]
    assert fake.requests[0].form.keys() == {"To", "Body", "From"}
    assert fake.requests[0].form["Body"] == "Water off"
    assert [(r.reference, r.accepted, r.provider_id, r.segments) for r in results] == [
        ("11", True, "SM1", 2),
        ("12", True, "SM2", 2),
    ]


def test_messaging_service_is_used_when_no_sender_is_given(fake, sleeps):
    fake.default = by_number
    plugin = provider(fake, sleeps, options={"accountSid": SID, "messagingServiceSid": "MG1"})
    plugin.send_batch(TWO[:1], "x", None)
    assert fake.requests[0].form == {
        "To": "+27830000001",
        "Body": "x",
        "MessagingServiceSid": "MG1",
    }


def test_mixed_results_reject_only_the_invalid_number(fake, sleeps):
    fake.default = by_number
    ok, bad = provider(fake, sleeps).send_batch(TWO, "x", "+15005550006")
    assert ok.accepted and ok.provider_id == "SM27830000001"
    assert (bad.accepted, bad.error_code) == (False, "21211")
    assert bad.reason == "The 'To' number +27830000002 is not valid."


def test_authentication_failure_refuses_the_batch(fake, sleeps):
    fake.default = lambda request: Reply(
        401, {"code": 20003, "message": "Authenticate", "status": 401}
    )
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO * 5, "x", "+1")
    assert caught.value.message == "Error 20003: Authentication failed"


def test_inactive_account_is_out_of_credit(fake, sleeps):
    fake.default = lambda request: Reply(
        401, {"code": 10001, "message": "Account is not active", "status": 401}
    )
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO, "x", "+1")
    assert caught.value.message == "Error 10001: Out of credit"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("delivered", "delivered"),
        ("read", "delivered"),
        ("queued", "sent"),
        ("sending", "sent"),
        ("sent", "sent"),
        ("undelivered", "failed"),
        ("failed", "failed"),
        ("canceled", "failed"),
    ],
)
def test_status_query_maps_each_status_family(fake, sleeps, name, status):
    error = 30003 if status == "failed" else None
    fake.reply(200, {"sid": "SM1", "status": name, "error_code": error, "error_message": None})
    [update] = provider(fake, sleeps).query_status(["SM1"])
    assert (update.provider_id, update.status) == ("SM1", status)
    assert update.code == ("30003" if error else "")
    [request] = fake.requests
    assert (request.method, request.path) == ("GET", f"/Accounts/{SID}/Messages/SM1.json")
    assert request.basic_auth == (SID, "secret-token")


def signed(url, form, token="secret-token"):
    return twilio_signature(url, form, token)


CALLBACK = {
    "MessageSid": "SM1",
    "MessageStatus": "undelivered",
    "ErrorCode": "30005",
    "To": "+27830000001",
    "From": "+1",
    "AccountSid": SID,
}


def test_signed_status_callback_is_mapped(fake, sleeps):
    url = "https://sms.example.org/callbacks/twilio"
    receipt = Receipt("POST", url, {"X-Twilio-Signature": signed(url, CALLBACK)}, CALLBACK)
    [update] = provider(fake, sleeps).parse_receipt(receipt)
    assert (update.provider_id, update.status, update.code) == ("SM1", "failed", "30005")


def test_status_callback_with_a_forged_signature_is_rejected(fake, sleeps):
    url = "https://sms.example.org/callbacks/twilio"
    forged = {**CALLBACK, "MessageStatus": "delivered"}
    receipt = Receipt("POST", url, {"X-Twilio-Signature": signed(url, CALLBACK)}, forged)
    with pytest.raises(ReceiptRejected):
        provider(fake, sleeps).parse_receipt(receipt)


def twilio_config(fake):
    return base_config(
        name="TWILIO", token="tok", url=fake.url, options={"accountSid": SID}, **{"from": "+1"}
    )


def test_sendsms_through_twilio(fake, make_app, db):
    fake.default = by_number
    client = make_app(twilio_config(fake)).test_client()
    body = client.post(
        "/sendsms", json={"message": "hi", "msisdns": ["0830000001", "0830000002"]}
    ).get_json()
    assert (body["sendSuccess"], body["messagesSent"]) == (True, 1)
    assert rows(db, "SELECT msisdn, providerid, status, errorcode FROM sms ORDER BY id") == [
        ("27830000001", "SM27830000001", "sent", None),
        ("27830000002", None, "failed", "21211"),
    ]


def test_sendsms_with_bad_twilio_credentials_answers_the_error(fake, make_app, db):
    fake.default = lambda request: Reply(
        401, {"code": 20003, "message": "Authenticate", "status": 401}
    )
    client = make_app(twilio_config(fake)).test_client()
    body = client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000001"]}).get_json()
    assert (body["sendSuccess"], body["statusDescription"]) == (
        False,
        "Error 20003: Authentication failed",
    )
    assert rows(db, "SELECT status, errorcode, reason FROM sms") == [
        ("failed", "20003", "Authentication failed")
    ]


def test_poll_status_through_twilio(fake, make_app, db):
    statuses = {"SM1": ("delivered", None), "SM2": ("undelivered", 30005), "SM3": ("sending", None)}

    def answer(request):
        if request.method == "POST":
            return twilio_accepts(request)
        sid = request.path.rsplit("/", 1)[1].removesuffix(".json")
        status, code = statuses[sid]
        return Reply(200, {"sid": sid, "status": status, "error_code": code, "error_message": None})

    fake.default = answer
    app = make_app(twilio_config(fake))
    send(app)
    poll(app)
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("delivered", ""),
        ("failed", "30005"),
        ("sent", None),
    ]


def test_a_signed_status_callback_updates_the_message_and_a_forged_one_is_403(fake, make_app, db):
    fake.default = twilio_accepts
    client = send(make_app(twilio_config(fake)))
    form = {"MessageSid": "SM3", "MessageStatus": "delivered", "AccountSid": SID}
    url = "http://localhost/callbacks/twilio"
    forged = {"X-Twilio-Signature": "bad"}
    assert client.post("/callbacks/twilio", data=form, headers=forged).status_code == 403
    genuine = {"X-Twilio-Signature": signed(url, form, "tok")}
    assert client.post("/callbacks/twilio", data=form, headers=genuine).status_code == 200
    assert [s for _, s, _ in outcomes(db)] == ["sent", "sent", "delivered"]
