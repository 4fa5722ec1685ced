"""Replies from MockProvider (POST /callbacks/MockProvider/inbound) and GET /inbound."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from messaging.config import ConfigError, config_from_mapping
from messaging.providers.mock import receipt_signature
from tests.conftest import base_config, rows
from tests.test_dispatch import wait_until
from tests.test_webhooks import running_dispatcher
from tests.webhook_receiver import SECRET, Receiver

TOKEN = base_config()["smsProvider"]["token"]


def signed(payload, token=TOKEN) -> dict:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Mock-Signature": receipt_signature(token, body),
    }
    return {"data": body, "headers": headers}


def reply(message_id, sender, text):
    return {"id": message_id, "from": sender, "to": "32020", "text": text}


def push(client, *replies, token=TOKEN):
    payload = replies[0] if len(replies) == 1 else list(replies)
    return client.post("/callbacks/MockProvider/inbound", **signed(payload, token))


def opted_out(db) -> list[str]:
    return [msisdn for (msisdn,) in rows(db, "SELECT msisdn FROM optouts ORDER BY msisdn")]


def test_a_reply_is_stored_with_its_sender_normalised_and_listed(client, db):
    answer = push(client, reply("mo-1", "+27830000001", "What time is the water back?"))

    assert answer.status_code == 200
    assert answer.get_json() == {"received": 1, "stored": 1, "optedOut": 0, "optedIn": 0}
    listed = client.get("/inbound").get_json()
    assert listed["total"] == 1 and (listed["page"], listed["pageSize"]) == (1, 100)
    [message] = listed["messages"]
    assert message["receivedAt"].endswith("Z")
    del message["receivedAt"]
    assert message == {
        "id": message["id"],
        "provider": "MockProvider",
        "providerId": "mo-1",
        "from": "27830000001",
        "to": "32020",
        "text": "What time is the water back?",
        "action": None,
    }
    assert opted_out(db) == []


@pytest.mark.parametrize(
    "text", ["STOP", "stop", "Stop.", "  STOPALL", "unsubscribe me", "Cancel", "END", "quit!"]
)
def test_a_first_word_opt_out_keyword_opts_the_sender_out(client, db, text):
    answer = push(client, reply("mo-1", "0830000001", text))

    assert answer.get_json()["optedOut"] == 1
    assert opted_out(db) == ["27830000001"]
    assert rows(db, "SELECT action FROM inbound_messages") == [("opt-out",)]


@pytest.mark.parametrize("text", ["Please stop", "STOPPED", "", "🛑", "stop-it"])
def test_a_reply_whose_first_word_is_no_keyword_opts_nobody_out(client, db, text):
    push(client, reply("mo-1", "0830000001", text))

    assert opted_out(db) == []


def test_start_or_unstop_opts_the_sender_back_in(client, db):
    push(client, reply("mo-1", "0830000001", "STOP"), reply("mo-2", "0830000002", "STOP"))

    answer = push(
        client, reply("mo-3", "0830000001", "START"), reply("mo-4", "0830000002", "unstop")
    )

    assert answer.get_json() == {"received": 2, "stored": 2, "optedOut": 0, "optedIn": 2}
    assert opted_out(db) == []


def test_the_last_keyword_of_a_push_decides(client, db):
    push(client, reply("mo-1", "0830000001", "STOP"), reply("mo-2", "0830000001", "START"))

    assert opted_out(db) == []


def test_a_repeated_push_is_stored_once_and_does_not_undo_a_later_start(client, db):
    push(client, reply("mo-1", "0830000001", "STOP"))
    push(client, reply("mo-2", "0830000001", "START"))

    again = push(client, reply("mo-1", "0830000001", "STOP"))

    assert again.get_json()["stored"] == 0
    assert rows(db, "SELECT count(*) FROM inbound_messages") == [(2,)]
    assert opted_out(db) == []


def test_a_push_with_a_wrong_signature_is_refused_and_stores_nothing(client, db):
    answer = push(client, reply("mo-1", "0830000001", "STOP"), token="not-the-token")

    assert answer.status_code == 403
    assert rows(db, "SELECT count(*) FROM inbound_messages") == [(0,)]
    assert opted_out(db) == []


def test_a_malformed_reply_is_refused_naming_the_shape(client, db):
    answer = push(client, {"id": "mo-1", "from": "0830000001"})

    assert answer.status_code == 406
    assert "expected" in answer.get_json()["error"]
    assert rows(db, "SELECT count(*) FROM inbound_messages") == [(0,)]


def test_replies_for_another_provider_are_not_found(client):
    answer = client.post("/callbacks/Twilio/inbound", data={"Body": "STOP"})

    assert answer.status_code == 404


def test_custom_keywords_replace_the_defaults(make_app, db):
    config = base_config()
    config["inbound"] = {"optOutKeywords": ["stopp", "Halt"], "optInKeywords": ["weiter"]}
    client = make_app(config).test_client()

    push(client, reply("mo-1", "0830000001", "STOP"), reply("mo-2", "0830000002", "halt"))

    assert opted_out(db) == ["27830000002"]
    push(client, reply("mo-3", "0830000002", "Weiter"))
    assert opted_out(db) == []


@pytest.mark.parametrize(
    ("inbound", "message"),
    [
        ({"optOutKeywords": []}, "inbound.optOutKeywords: expected a non-empty list"),
        ({"optInKeywords": ["two words"]}, "inbound.optInKeywords: expected a non-empty list"),
        ({"optInKeywords": ["STOP"]}, "inbound: STOP is both in optOutKeywords and in"),
        ({"callbackUrl": "ftp://x"}, "inbound.callbackUrl: expected a URL"),
    ],
)
def test_bad_inbound_settings_stop_start_up_naming_the_key(inbound, message):
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({**base_config(), "inbound": inbound})


def test_inbound_settings_are_read(make_app):
    settings = base_config()
    settings["deliveryStatus"]["callbackSecret"] = SECRET
    config = config_from_mapping({**settings, "inbound": {"callbackUrl": "https://x.org/mo/"}})

    assert config.inbound.callback_url == "https://x.org/mo"
    assert config.inbound.opt_out_keywords[0] == "STOP"


def test_inbound_lists_since_a_time_and_pages(client, db):
    push(client, *(reply(f"mo-{n}", "0830000001", f"reply {n}") for n in range(5)))
    with db.cursor() as cur:  # 12:00+02:00 is 10:00 UTC, as stored
        cur.execute("UPDATE inbound_messages SET receivedat = '2026-01-01 09:59:59'")
        cur.execute("UPDATE inbound_messages SET receivedat = now() WHERE providerid > 'mo-2'")
        cur.execute(
            "UPDATE inbound_messages SET receivedat = '2026-01-01 10:00' WHERE providerid = 'mo-2'"
        )

    later = client.get("/inbound?since=2026-01-01T12:00:00%2B02:00&page=2&pageSize=2").get_json()
    everything = client.get("/inbound?pageSize=1000").get_json()

    assert (later["total"], later["page"], later["pageSize"]) == (3, 2, 2)
    assert [m["text"] for m in later["messages"]] == ["reply 4"]
    assert everything["total"] == 5


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("since=yesterday", "since 'yesterday' is not ISO 8601"),
        ("pageSize=0", "pageSize: must be a whole number from 1 up"),
        ("pageSize=1001", "pageSize: must be at most 1000"),
    ],
)
def test_bad_inbound_queries_are_refused(client, query, error):
    answer = client.get(f"/inbound?{query}")

    assert answer.status_code == 406
    assert error in answer.get_json()["error"]


def test_inbound_needs_credentials_like_the_api(make_app):
    config = base_config()
    config["authentication"] = {"service": "apikey", "enabled": True}
    client = make_app(config).test_client()

    assert client.get("/inbound").status_code == 401
    assert push(client, reply("mo-1", "0830000001", "hi")).status_code == 200


def test_a_reply_is_forwarded_signed_to_the_inbound_callback_once(make_app, db):
    receiver = Receiver()
    try:
        settings = base_config()
        settings["deliveryStatus"]["callbackSecret"] = SECRET
        settings["inbound"] = {"callbackUrl": receiver.url}
        app = make_app(settings)
        client = app.test_client()
        with running_dispatcher(app):
            push(client, reply("mo-1", "0830000001", "STOP"), reply("mo-2", "0830000002", "hi"))
            push(client, reply("mo-1", "0830000001", "STOP"))  # pushed again: not again
            wait_until(lambda: receiver.deliveries)
            time.sleep(0.5)
    finally:
        receiver.stop()

    [delivery] = receiver.deliveries
    body = delivery.verified()  # the Standard Webhooks reference check
    assert body["type"] == "message.inbound"
    forwarded = [
        {k: m[k] for k in ("providerId", "from", "text", "action")}
        for m in body["data"]["messages"]
    ]
    assert forwarded == [
        {"providerId": "mo-1", "from": "27830000001", "text": "STOP", "action": "opt-out"},
        {"providerId": "mo-2", "from": "27830000002", "text": "hi", "action": None},
    ]


def test_an_inbound_callback_without_a_secret_to_sign_with_stops_start_up():
    with pytest.raises(
        ConfigError, match="inbound.callbackUrl needs deliveryStatus.callbackSecret"
    ):
        config_from_mapping({**base_config(), "inbound": {"callbackUrl": "https://x.org/mo"}})


def test_a_stop_reply_takes_the_number_out_of_a_send_still_queued(make_app, db):
    client = make_app(base_config()).test_client()
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    body = {"message": "Water off", "msisdns": ["0830000001", "0830000002"], "sendAt": later}
    ref = client.post("/sendsms", json=body).get_json()["refNumber"]

    push(client, reply("mo-1", "0830000001", "STOP"))

    assert rows(db, "SELECT msisdns FROM dispatch_batches") == [(["27830000002"],)]
    assert rows(db, f"SELECT msisdn, status, reason FROM sms WHERE sendlogid = {ref}") == [
        ("27830000001", "failed", "opted out")
    ]
