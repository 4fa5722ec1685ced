"""Every status event kept (sms_events) and shown at GET /sends/<ref>/messages/<msisdn>, with
the provider's own code and text, where it came from, and the failure's kind."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from messaging.providers.mock import receipt_signature
from tests.conftest import base_config, rows
from tests.test_reconcile import CrashingProvider, crash_a_send, quiet_thread_deaths  # noqa: F401

TOKEN = base_config()["smsProvider"]["token"]


def later() -> str:
    return (datetime.now(UTC) + timedelta(days=30)).isoformat()


def send(client, *numbers, **extra) -> str:
    response = client.post(
        "/sendsms", json={"message": "Water off", "msisdns": list(numbers), **extra}
    )
    assert response.status_code in (200, 202), response.get_json()
    return response.get_json()["refNumber"]


def history(client, ref, msisdn) -> list[tuple]:
    response = client.get(f"/sends/{ref}/messages/{msisdn}")
    assert response.status_code == 200, response.get_json()
    return [
        (e["source"], e["status"], e["errorCode"], e["reason"], e["failureKind"])
        for e in response.get_json()["events"]
    ]


def post_receipt(client, payload):
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Mock-Signature": receipt_signature(TOKEN, body),
    }
    assert client.post("/callbacks/MockProvider", data=body, headers=headers).status_code == 200


def test_a_message_shows_its_send_and_poll_events_in_order(client, runner, db):
    ref = send(client, "0830000001", "0830000006", "0830000007", "0830000009")
    runner.invoke(args=["poll-status"])

    response = client.get(f"/sends/{ref}/messages/0830000006")

    assert response.status_code == 200
    body = response.get_json()
    events = body.pop("events")
    assert body == {
        "refNumber": ref,
        "msisdn": "27830000006",
        "status": "failed",
        "providerId": body["providerId"],
        "errorCode": "005",
        "reason": "Delivery failed",
        "failureKind": "temporary",
        "statusTime": body["statusTime"],
    }
    assert body["providerId"].startswith("mock-27830000006-") and body["statusTime"].endswith("Z")
    assert [(e["source"], e["status"]) for e in events] == [("send", "sent"), ("poll", "failed")]
    assert all(e["id"].startswith("evt_") and e["time"].endswith("Z") for e in events)
    assert int(events[0]["id"][4:]) < int(events[1]["id"][4:])
    assert events[1]["providerId"] == body["providerId"]
    assert history(client, ref, "27830000001") == [
        ("send", "sent", None, None, None),
        ("poll", "delivered", "004", "Delivered to handset", None),
    ]
    assert history(client, ref, "0830000007")[-1] == (
        "poll",
        "failed",
        "005",
        "Delivery failed",
        "permanent",
    )
    assert history(client, ref, "0830000009") == [
        ("send", "failed", "105", "Invalid destination address", "permanent")
    ]


def test_the_latest_status_columns_stay_as_they_were(client, runner, db):
    send(client, "0830000001")
    runner.invoke(args=["poll-status"])

    assert rows(db, "SELECT status, errorcode, reason FROM sms") == [
        ("delivered", "004", "Delivered to handset")
    ]
    assert rows(db, "SELECT count(*), count(DISTINCT source) FROM sms_events") == [(2, 2)]


def test_a_receipt_is_kept_with_the_providers_raw_code_text_and_kind(client, db):
    ref = send(client, "0830000001")
    [(provider_id,)] = rows(db, "SELECT providerid FROM sms")
    receipt = {"id": provider_id, "status": "failed", "code": "X42", "reason": "Barred"}

    post_receipt(client, {**receipt, "failureKind": "permanent"})
    post_receipt(client, {**receipt, "status": "delivered"})  # late: changes nothing

    assert history(client, ref, "0830000001") == [
        ("send", "sent", None, None, None),
        ("receipt", "failed", "X42", "Barred", "permanent"),
    ]
    recipient = client.get(f"/sends/{ref}").get_json()["recipients"][0]
    assert (recipient["status"], recipient["failureKind"]) == ("failed", "permanent")


def test_a_failure_no_table_classifies_is_unknown(client, db):
    ref = send(client, "0830000001")
    [(provider_id,)] = rows(db, "SELECT providerid FROM sms")

    post_receipt(client, {"id": provider_id, "status": "failed", "code": "?"})

    assert history(client, ref, "0830000001")[-1] == ("receipt", "failed", "?", None, "unknown")


def test_a_cancelled_recipient_has_one_cancel_event(client, db):
    ref = send(client, "0830000001", sendAt=later())
    assert client.post(f"/sends/{ref}/cancel").status_code == 200

    assert history(client, ref, "0830000001") == [
        ("cancel", "failed", "", "cancelled", "temporary")
    ]


def test_a_whole_request_refusal_fails_every_recipient_temporarily(make_app, db):
    client = make_app(base_config(token="nocredit")).test_client()
    ref = send(client, "0830000001", "0830000002")

    for number in ("0830000001", "0830000002"):
        assert history(client, ref, number) == [
            ("send", "failed", "301", "Out of credit", "temporary")
        ]


def test_a_batch_settled_by_reconcile_is_a_reconcile_event(make_app, db):
    app = make_app(base_config(maxBatchSize=100, maxConcurrentRequests=1, waitSeconds=1))
    # Two batches: the first one's worker thread dies at the provider. (A send of one
    # batch is sent by the request's own thread, which such a death takes with it.)
    provider, outcome = crash_a_send(app, CrashingProvider, crash_at=1, count=200)
    app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0"])

    events = history(app.test_client(), outcome.ref_number, provider.received[0])

    assert events == [("reconcile", "failed", "", "provider outcome unknown", "unknown")]


def test_a_queued_message_is_shown_without_events(make_app, db):
    client = make_app().test_client()
    ref = send(client, "0830000001", sendAt=later())

    body = client.get(f"/sends/{ref}/messages/27830000001").get_json()

    assert (body["status"], body["events"]) == ("queued", [])


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/sends/999/messages/0830000001", "no send with refNumber 999"),
        ("/sends/1/messages/0830000002", "send 1 has no message to '0830000002'"),
        ("/sends/1/messages/nonsense", "send 1 has no message to 'nonsense'"),
    ],
)
def test_an_unknown_send_or_number_is_404(client, db, path, error):
    send(client, "0830000001")

    response = client.get(path)

    assert response.status_code == 404
    assert response.get_json() == {"error": error}


def test_a_bad_ref_is_406(client, db):
    response = client.get("/sends/abc/messages/0830000001")
    assert response.status_code == 406


def test_message_reports_need_authentication(make_app, db):
    config = base_config()
    config["authentication"] = {"service": "apikey", "enabled": True}
    client = make_app(config).test_client()

    assert client.get("/sends/1/messages/0830000001").status_code == 401
