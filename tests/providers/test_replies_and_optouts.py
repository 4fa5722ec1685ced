"""Replies (POST /callbacks/<name>/inbound) and opt-outs through each provider's fake: its
documented reply format, STOP and START, forged pushes refused, and the provider's own
"recipient opted out" refusal."""

import pytest

from tests.conftest import base_config, rows
from tests.providers.conftest import OPTIONS
from tests.providers.fakes import ACCEPTS, INBOUND, Reply, twilio_inbound

SECRET = "s3cret"
TOKEN = "tok"
# How each provider writes the sender of a reply.
SENDERS = {
    "Twilio": "+27830000001",
    "Vonage": "27830000001",
    "BulkSMS": "+27830000001",
    "AfricasTalking": "+27830000001",
    "Clickatell": "27830000001",
    "ClickatellOne": "27830000001",
}
NUMBERS = ["0830000001", "0830000002"]


def config(name, fake):
    options = {**OPTIONS.get(name, {}), "callbackSecret": SECRET}
    return base_config(name=name, token=TOKEN, url=fake.url, options=options, **{"from": "+1"})


def reply(name, message_id, text, secret=SECRET):
    """The request `name` pushes for a reply `text` from SENDERS[name]."""
    if name == "Twilio":
        return twilio_inbound(message_id, SENDERS[name], text, TOKEN if secret == SECRET else "x")
    return INBOUND[name](message_id, SENDERS[name], text, secret)


def push(client, name, message_id, text, secret=SECRET):
    return client.post(f"/callbacks/{name}/inbound", **reply(name, message_id, text, secret))


def reached(fake, digits):
    """Did any send request carry this number?"""
    return any(digits.encode() in request.body for request in fake.requests)


@pytest.mark.parametrize("name", sorted(SENDERS))
def test_a_stop_reply_is_stored_and_keeps_later_sends_from_its_sender(name, fake, make_app, db):
    fake.default = ACCEPTS[name]
    client = make_app(config(name, fake)).test_client()

    answer = push(client, name, "mo-1", "Stop please")

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"received": 1, "stored": 1, "optedOut": 1, "optedIn": 0}
    [message] = client.get("/inbound").get_json()["messages"]
    assert {key: message[key] for key in ("provider", "providerId", "from", "text", "action")} == {
        "provider": name,
        "providerId": "mo-1",
        "from": "27830000001",
        "text": "Stop please",
        "action": "opt-out",
    }
    assert client.get("/optouts/0830000001").get_json()["source"] == f"reply via {name}"

    sent = client.post("/sendsms", json={"message": "Water off", "msisdns": NUMBERS}).get_json()

    assert (sent["validNumbers"], sent["optedOutNumbers"], sent["messagesSent"]) == (2, 1, 1)
    assert reached(fake, "27830000002") and not reached(fake, "27830000001")


@pytest.mark.parametrize("name", sorted(SENDERS))
def test_a_forged_reply_is_refused_and_stores_nothing(name, fake, make_app, db):
    client = make_app(config(name, fake)).test_client()

    answer = push(client, name, "mo-1", "STOP", secret="wrong")

    assert answer.status_code == 403
    assert rows(db, "SELECT count(*) FROM inbound_messages") == [(0,)]
    assert client.get("/optouts/0830000001").status_code == 404


@pytest.mark.parametrize("name", sorted(SENDERS))
def test_start_takes_the_sender_off_and_a_repeated_push_changes_nothing(name, fake, make_app, db):
    fake.default = ACCEPTS[name]
    client = make_app(config(name, fake)).test_client()
    push(client, name, "mo-1", "STOP")

    started = push(client, name, "mo-2", "start")
    again = push(client, name, "mo-1", "STOP")  # the provider repeats an old push

    assert started.get_json() == {"received": 1, "stored": 1, "optedOut": 0, "optedIn": 1}
    assert again.get_json() == {"received": 1, "stored": 0, "optedOut": 0, "optedIn": 0}
    assert client.get("/optouts/0830000001").status_code == 404
    sent = client.post("/sendsms", json={"message": "Back", "msisdns": NUMBERS}).get_json()
    assert (sent["optedOutNumbers"], sent["messagesSent"]) == (0, 2)
    assert reached(fake, "27830000001")


# --- a provider's own "recipient opted out" refusal ---


def twilio_refuses(request):
    if request.form["To"] == "+27830000002":
        error = {"code": 21610, "message": "Attempt to send to unsubscribed recipient"}
        return Reply(400, {**error, "more_info": "https://www.twilio.com/docs/errors/21610"})
    return ACCEPTS["Twilio"](request)


def africastalking_refuses(request):
    answer = ACCEPTS["AfricasTalking"](request)
    for entry in answer.body["SMSMessageData"]["Recipients"]:
        if entry["number"] == "+27830000002":
            entry.update(statusCode=406, status="UserInBlacklist", messageId="None")
    return answer


def bulksms_refuses(request):
    answer = ACCEPTS["BulkSMS"](request)
    for message in answer.body:
        if message["to"] == "+27830000002":
            message["status"] = {"id": "FAILED.BLOCKED", "type": "FAILED", "subtype": "BLOCKED"}
    return answer


def clickatell_refuses(request):
    answer = ACCEPTS["Clickatell"](request)
    for entry in answer.body["data"]["message"]:
        if entry["to"] == "27830000002":
            error = {"code": "121", "description": "Destination mobile number blocked"}
            entry.update(accepted=False, apiMessageId="", error=error)
    return answer


REFUSALS = {
    "Twilio": (twilio_refuses, "21610"),
    "AfricasTalking": (africastalking_refuses, "406"),
    "BulkSMS": (bulksms_refuses, "FAILED.BLOCKED"),
    "Clickatell": (clickatell_refuses, "121"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_a_refusal_meaning_opted_out_puts_the_recipient_on_the_list(name, fake, make_app, db):
    refuses, code = REFUSALS[name]
    fake.default = refuses
    client = make_app(config(name, fake)).test_client()

    first = client.post("/sendsms", json={"message": "One", "msisdns": NUMBERS}).get_json()

    assert (first["messagesSent"], first["optedOutNumbers"]) == (1, 0)
    assert rows(db, "SELECT errorcode FROM sms WHERE msisdn = '27830000002'") == [(code,)]
    entry = client.get("/optouts/27830000002").get_json()
    assert entry["source"] == f"{name} error {code}"
    fake.requests.clear()
    second = client.post("/sendsms", json={"message": "Two", "msisdns": NUMBERS}).get_json()
    assert (second["messagesSent"], second["optedOutNumbers"]) == (1, 1)
    assert reached(fake, "27830000001") and not reached(fake, "27830000002")


def test_a_plain_refusal_is_no_opt_out(fake, make_app, db):
    def invalid(request):
        error = {"code": 21211, "message": "The 'To' number is not valid.", "status": 400}
        return Reply(400, error) if request.form["To"] == "+27830000002" else None

    fake.default = lambda request: invalid(request) or ACCEPTS["Twilio"](request)
    client = make_app(config("Twilio", fake)).test_client()

    client.post("/sendsms", json={"message": "One", "msisdns": NUMBERS})

    assert client.get("/optouts/27830000002").status_code == 404


# --- details of some wire formats ---


def test_twilio_replies_are_checked_against_the_public_inbound_url(fake, make_app, db):
    public = "https://sms.example.org/callbacks/Twilio/inbound"
    settings = config("Twilio", fake)
    settings["smsProvider"]["options"]["inboundUrl"] = public
    client = make_app(settings).test_client()

    behind_proxy = client.post(
        "/callbacks/Twilio/inbound", **twilio_inbound("SM1", "+27830000001", "STOP", TOKEN, public)
    )
    local = client.post(
        "/callbacks/Twilio/inbound", **twilio_inbound("SM2", "+27830000001", "x", TOKEN)
    )

    assert (behind_proxy.status_code, local.status_code) == (200, 403)


def test_one_api_replies_in_an_event_are_read(fake, make_app, db):
    client = make_app(config("ClickatellOne", fake)).test_client()
    event = {
        "integrationId": "4f7d2a",
        "event": {
            "moText": [
                {
                    "channel": "sms",
                    "messageId": "m1",
                    "from": "27830000001",
                    "to": "27820000000",
                    "content": "STOP",
                    "timestamp": 1767268800000,
                },
                {"channel": "sms", "messageId": "m2", "from": "27830000002", "content": "hi"},
            ]
        },
    }

    answer = client.post(
        "/callbacks/ClickatellOne/inbound", json=event, query_string={"secret": SECRET}
    )

    assert answer.get_json() == {"received": 2, "stored": 2, "optedOut": 1, "optedIn": 0}
    assert rows(db, "SELECT providerid, msisdn, message FROM inbound_messages ORDER BY id") == [
        ("m1", "27830000001", "STOP"),
        ("m2", "27830000002", "hi"),
    ]


def test_bulksms_takes_only_received_messages_and_its_empty_test_call(fake, make_app, db):
    client = make_app(config("BulkSMS", fake)).test_client()
    request = INBOUND["BulkSMS"]("r1", "27830000001", "STOP", SECRET)
    sent_status = {**request["json"][0], "id": "s1", "type": "SENT"}
    request["json"].append(sent_status)

    answer = client.post("/callbacks/BulkSMS/inbound", **request)
    registration = client.post(
        "/callbacks/BulkSMS/inbound", json=[], query_string={"secret": SECRET}
    )

    assert answer.get_json()["received"] == 1
    assert registration.status_code == 200 and registration.get_json()["received"] == 0
    assert rows(db, "SELECT providerid FROM inbound_messages") == [("r1",)]


def test_vonage_replies_may_come_as_a_get_query(fake, make_app, db):
    client = make_app(config("Vonage", fake)).test_client()
    request = INBOUND["Vonage"]("v1", "27830000001", "STOP", SECRET)

    answer = client.get(
        "/callbacks/Vonage/inbound", query_string={**request["json"], **request["query_string"]}
    )

    assert answer.get_json()["optedOut"] == 1
