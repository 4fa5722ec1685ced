"""GET /sends/<refNumber>: one send and its recipients' delivery status, paged."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from messaging import sends
from tests.conftest import HeldProvider, base_config, rows


def send(client, numbers, message="Water off at 10:00", **extra) -> str:
    response = client.post("/sendsms", json={"message": message, "msisdns": numbers, **extra})
    assert response.status_code == 200
    return response.get_json()["refNumber"]


def parse_time(text: str) -> datetime:
    assert text.endswith("Z")
    return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)


def test_a_send_report_shows_the_send_and_each_recipient(client, runner, db):
    numbers = ["0830000001", "0830000006", "0830000009", "0830000008"]
    ref = send(client, numbers, **{"from": "Council"})
    runner.invoke(args=["poll-status"])

    response = client.get(f"/sends/{ref}")

    assert response.status_code == 200
    body = response.get_json()
    send_part = body["send"]
    assert abs(parse_time(send_part.pop("time")) - datetime.now(UTC)) < timedelta(minutes=5)
    assert send_part == {
        "refNumber": ref,
        "originator": "",
        "from": "Council",
        "message": "Water off at 10:00",
        "quantity": 4,
        "sent": 1,
        "delivered": 1,
        "failed": 2,
        "status": "success",
        "description": "1 of 4 recipients rejected by the provider",
        "state": "done",
        "sendAt": None,
        "queued": 0,
        "optedOut": 0,
    }
    recipients = body["recipients"]
    for recipient in recipients:
        status_time = recipient.pop("statusTime")
        assert (status_time is None) == (recipient["status"] == "sent")
    assert recipients == [
        {
            "msisdn": "27830000001",
            "status": "delivered",
            "providerId": recipients[0]["providerId"],
            "errorCode": "004",
            "reason": "Delivered to handset",
            "failureKind": None,
        },
        {
            "msisdn": "27830000006",
            "status": "failed",
            "providerId": recipients[1]["providerId"],
            "errorCode": "005",
            "reason": "Delivery failed",
            "failureKind": "temporary",
        },
        {
            "msisdn": "27830000009",
            "status": "failed",
            "providerId": None,
            "errorCode": "105",
            "reason": "Invalid destination address",
            "failureKind": "permanent",
        },
        {
            "msisdn": "27830000008",
            "status": "sent",
            "providerId": recipients[3]["providerId"],
            "errorCode": None,
            "reason": None,
            "failureKind": None,
        },
    ]
    assert recipients[0]["providerId"].startswith("mock-27830000001-")
    assert (body["page"], body["pageSize"], body["total"]) == (1, 100, 4)


def test_large_sends_are_paged_in_send_order(client, db):
    numbers = [f"08300{n:05d}" for n in range(250)]
    ref = send(client, numbers)

    first = client.get(f"/sends/{ref}").get_json()
    last = client.get(f"/sends/{ref}?page=3&pageSize=100").get_json()
    small = client.get(f"/sends/{ref}?page=2&pageSize=7").get_json()
    beyond = client.get(f"/sends/{ref}?page=9").get_json()

    assert first["total"] == last["total"] == 250
    assert [r["msisdn"] for r in first["recipients"]] == [f"2783{n:07d}" for n in range(100)]
    assert [r["msisdn"] for r in last["recipients"]] == [f"2783{n:07d}" for n in range(200, 250)]
    assert [r["msisdn"] for r in small["recipients"]] == [f"2783{n:07d}" for n in range(7, 14)]
    assert (small["page"], small["pageSize"]) == (2, 7)
    assert beyond["recipients"] == [] and beyond["send"]["quantity"] == 250


def test_a_send_in_progress_shows_its_unanswered_recipients_queued(make_app, db):
    app = make_app(base_config(maxBatchSize=3, maxConcurrentRequests=1))
    services = app.extensions["messaging"]
    services.provider = HeldProvider(services.provider.settings, hold_at=2)
    numbers = [f"08300{n:05d}" for n in range(7)]
    client = app.test_client()
    sender = threading.Thread(target=send, args=(app.test_client(), numbers))
    sender.start()
    try:
        assert services.provider.holding.wait(30)
        [(ref,)] = rows(db, "SELECT id FROM sendlog")
        during = client.get(f"/sends/{ref}?pageSize=4").get_json()
        second_page = client.get(f"/sends/{ref}?page=2&pageSize=4").get_json()
        status = client.get("/messagestatus/0830000005").get_data(as_text=True)
    finally:
        services.provider.release.set()
        sender.join(30)
    after = client.get(f"/sends/{ref}").get_json()

    recipients = during["recipients"] + second_page["recipients"]
    assert during["total"] == 7 and during["send"]["status"] == "sending"
    assert (during["send"]["state"], during["send"]["queued"]) == ("sending", 4)
    assert [r["msisdn"] for r in recipients] == [f"2783{n:07d}" for n in range(7)]
    assert [r["status"] for r in recipients] == ["sent"] * 3 + ["queued"] * 4
    assert recipients[3]["providerId"] is None
    assert status == "queued"
    assert after["total"] == 7 and after["send"]["status"] == "success"
    assert [r["status"] for r in after["recipients"]] == ["sent"] * 7
    assert rows(db, "SELECT count(*) FROM dispatch_batches") == [(0,)]


def test_an_unknown_ref_is_a_404_json_error(client, db):
    for ref in ("12345", "99999999999999"):
        response = client.get(f"/sends/{ref}")
        assert response.status_code == 404
        assert response.get_json() == {"error": f"no send with refNumber {ref}"}


@pytest.mark.parametrize(
    "query",
    [
        "/sends/abc",
        "/sends/1?page=0",
        "/sends/1?page=x",
        "/sends/1?pageSize=1001",
        "/sends/1?pageSize=-5",
        "/sends/-1",
    ],
)
def test_a_bad_ref_or_paging_value_is_406(client, db, query):
    send(client, ["0830000001"])
    response = client.get(query)
    assert response.status_code == 406
    assert response.get_json()["error"]


def test_send_reports_need_authentication(make_app, db):
    config = base_config()
    config["authentication"] = {"enabled": True, "url": "http://127.0.0.1:9"}
    response = make_app(config).test_client().get("/sends/1")
    assert response.status_code == 401
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_a_report_adds_up_while_a_batch_is_recorded_between_its_reads(make_app, db, monkeypatch):
    """The counters, the recipients and what is queued come from one moment, even when a
    batch is recorded after the send's row was read and before its queue was."""
    app = make_app(base_config(maxBatchSize=3, maxConcurrentRequests=1))
    services = app.extensions["messaging"]
    services.provider = HeldProvider(services.provider.settings, hold_at=2)
    sender = threading.Thread(
        target=send, args=(app.test_client(), [f"08300{n:05d}" for n in range(7)])
    )
    read_queue = sends.send_progress

    def recorded_meanwhile(cur, ref):
        services.provider.release.set()
        deadline = time.monotonic() + 30
        while rows(db, "SELECT sent FROM sendlog WHERE id = %s", ref) != [(7,)]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return read_queue(cur, ref)

    sender.start()
    try:
        assert services.provider.holding.wait(30)
        [(ref,)] = rows(db, "SELECT id FROM sendlog")
        monkeypatch.setattr(sends, "send_progress", recorded_meanwhile)
        report = app.test_client().get(f"/sends/{ref}").get_json()
    finally:
        services.provider.release.set()
        sender.join(30)

    assert rows(db, "SELECT sent FROM sendlog WHERE id = %s", ref) == [(7,)]
    assert (report["send"]["sent"], report["send"]["queued"], report["total"]) == (3, 4, 7)
    assert [r["status"] for r in report["recipients"]] == ["sent"] * 3 + ["queued"] * 4
