"""POST /callbacks/<provider>: pushed delivery receipts, checked by the provider's signature."""

import json
import logging
import threading
import time

import psycopg2
import pytest
import requests

from messaging.providers.mock import receipt_signature
from messaging.queries import EARLY_RECEIPTS_LOCK
from tests.conftest import base_config, rows

TOKEN = base_config()["smsProvider"]["token"]


def send(client, *numbers) -> str:
    response = client.post("/sendsms", json={"message": "x", "msisdns": list(numbers)})
    assert response.status_code == 200
    return response.get_json()["refNumber"]


def provider_id(db, msisdn) -> str:
    return rows(db, "SELECT providerid FROM sms WHERE msisdn = %s", msisdn)[0][0]


def signed(payload, token=TOKEN) -> tuple[bytes, dict]:
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Mock-Signature": receipt_signature(token, body),
    }


def post_receipt(client, payload, token=TOKEN, path="/callbacks/MockProvider"):
    body, headers = signed(payload, token)
    return client.post(path, data=body, headers=headers)


def message(db, msisdn):
    return rows(
        db,
        "SELECT status, errorcode, reason, statustimestamp IS NOT NULL FROM sms WHERE msisdn = %s",
        msisdn,
    )[0]


def counters(db, ref):
    return rows(db, "SELECT sent, delivered, failed FROM sendlog WHERE id = %s", int(ref))[0]


@pytest.fixture
def receipt_log():
    """Records of the receipts logger (the messaging loggers do not propagate)."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("messaging.receipts")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def test_a_signed_receipt_stores_the_final_status_and_moves_the_counters(client, db):
    ref = send(client, "0830000001", "0830000002")
    pid = provider_id(db, "27830000001")

    response = post_receipt(
        client, {"id": pid, "status": "failed", "code": "005", "reason": "Gone"}
    )

    assert response.status_code == 200
    assert response.get_json() == {"received": 1, "updated": 1, "unknown": 0}
    assert message(db, "27830000001") == ("failed", "005", "Gone", True)
    assert message(db, "27830000002")[0] == "sent"
    assert counters(db, ref) == (1, 0, 1)


def test_a_duplicate_receipt_changes_nothing(client, db):
    ref = send(client, "0830000001")
    receipt = {"id": provider_id(db, "27830000001"), "status": "delivered", "code": "004"}

    assert post_receipt(client, receipt).get_json()["updated"] == 1
    again = post_receipt(client, receipt)

    assert again.status_code == 200
    assert again.get_json() == {"received": 1, "updated": 0, "unknown": 0}
    assert counters(db, ref) == (0, 1, 0)


def test_a_final_status_is_never_changed_by_a_later_receipt(client, db):
    ref = send(client, "0830000001")
    pid = provider_id(db, "27830000001")

    post_receipt(client, {"id": pid, "status": "failed", "code": "005", "reason": "Expired"})
    late = post_receipt(client, {"id": pid, "status": "delivered", "code": "004"})
    stale = post_receipt(client, {"id": pid, "status": "sent", "code": "002"})

    assert late.status_code == stale.status_code == 200
    assert message(db, "27830000001") == ("failed", "005", "Expired", True)
    assert counters(db, ref) == (0, 0, 1)


def test_in_one_body_the_first_final_status_for_an_id_wins(client, db):
    ref = send(client, "0830000001", "0830000002")
    first, second = provider_id(db, "27830000001"), provider_id(db, "27830000002")

    response = post_receipt(
        client,
        [
            {"id": first, "status": "sent"},
            {"id": first, "status": "delivered"},
            {"id": first, "status": "failed"},
            {"id": second, "status": "failed", "code": "005"},
        ],
    )

    assert response.get_json() == {"received": 4, "updated": 2, "unknown": 0}
    assert message(db, "27830000001")[0] == "delivered"
    assert message(db, "27830000002")[0] == "failed"
    assert counters(db, ref) == (0, 1, 1)


def test_an_in_flight_receipt_changes_nothing(client, db):
    ref = send(client, "0830000001")
    response = post_receipt(client, {"id": provider_id(db, "27830000001"), "status": "sent"})
    assert response.get_json() == {"received": 1, "updated": 0, "unknown": 0}
    assert message(db, "27830000001") == ("sent", None, None, False)
    assert counters(db, ref) == (1, 0, 0)


def test_an_unknown_id_is_logged_and_answered_2xx_without_changes(client, db, receipt_log):
    ref = send(client, "0830000001")

    response = post_receipt(client, {"id": "mock-27839999999-404", "status": "delivered"})

    assert response.status_code == 200
    assert response.get_json() == {"received": 1, "updated": 0, "unknown": 1}
    assert counters(db, ref) == (1, 0, 0)
    assert any("mock-27839999999-404" in record.getMessage() for record in receipt_log)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Mock-Signature": "0" * 64},
        {"X-Mock-Signature": receipt_signature("another-token", b"{}")},
        {},
    ],
    ids=["wrong", "other key", "missing"],
)
def test_a_receipt_failing_the_signature_check_is_403_and_changes_nothing(client, db, headers):
    ref = send(client, "0830000001")
    body = json.dumps({"id": provider_id(db, "27830000001"), "status": "delivered"}).encode()

    response = client.post(
        "/callbacks/MockProvider",
        data=body,
        headers={"Content-Type": "application/json", **headers},
    )

    assert response.status_code == 403
    assert "signature" in response.get_json()["error"]
    assert TOKEN not in response.get_data(as_text=True)
    assert message(db, "27830000001")[0] == "sent"
    assert counters(db, ref) == (1, 0, 0)


def test_a_signed_body_that_is_not_a_receipt_is_406(client, db):
    body = b'{"id": 5, "status": "lost"}'
    response = client.post(
        "/callbacks/MockProvider",
        data=body,
        headers={"X-Mock-Signature": receipt_signature(TOKEN, body)},
    )
    assert response.status_code == 406
    assert "MockProvider receipt" in response.get_json()["error"]


def test_without_a_token_no_receipt_is_trusted(make_app, db):
    client = make_app(base_config(token="")).test_client()
    ref = send(client, "0830000001")
    response = post_receipt(client, {"id": provider_id(db, "27830000001"), "status": "failed"}, "")
    assert response.status_code == 403
    assert counters(db, ref) == (1, 0, 0)


def test_a_path_naming_another_provider_is_404(client, db):
    send(client, "0830000001")
    response = post_receipt(
        client,
        {"id": provider_id(db, "27830000001"), "status": "failed"},
        path="/callbacks/Clickatell",
    )
    assert response.status_code == 404
    assert "error" in response.get_json()
    assert rows(db, "SELECT status FROM sms") == [("sent",)]


def test_callbacks_need_no_user_authentication_and_match_the_name_in_any_case(make_app, db):
    config = base_config()
    config["authentication"] = {"enabled": True, "url": "http://127.0.0.1:9"}
    client = make_app(config).test_client()
    with db.cursor() as cur:  # a message sent earlier, still in flight
        cur.execute(
            "INSERT INTO sendlog (senttime, quantity, sent, delivered, failed, status) "
            "VALUES (now(), 1, 1, 0, 0, 'success')"
        )
        cur.execute(
            "INSERT INTO sms (msisdn, senttime, sendlogid, status, providerid) "
            "SELECT '27830000001', now(), id, 'sent', 'mock-27830000001-1' FROM sendlog"
        )

    assert client.get("/sends/1").status_code == 401
    response = post_receipt(
        client, {"id": "mock-27830000001-1", "status": "delivered"}, path="/Callbacks/mockprovider"
    )

    assert response.status_code == 200
    assert rows(db, "SELECT status FROM sms") == [("delivered",)]
    assert rows(db, "SELECT sent, delivered, failed FROM sendlog") == [(0, 1, 0)]


def test_a_receipt_over_real_http_reaches_the_send_report(live_server, db):
    sent = requests.post(
        f"{live_server}/sendsms", json={"message": "x", "msisdns": ["0830000001"]}, timeout=10
    ).json()
    body, headers = signed({"id": provider_id(db, "27830000001"), "status": "delivered"})

    response = requests.post(
        f"{live_server}/callbacks/MockProvider", data=body, headers=headers, timeout=10
    )

    assert response.status_code == 200
    report = requests.get(f"{live_server}/sends/{sent['refNumber']}", timeout=10).json()
    assert report["send"]["delivered"] == 1
    assert report["recipients"][0]["status"] == "delivered"


def test_a_final_receipt_for_an_id_not_yet_sent_is_applied_when_its_batch_is_written(client, db):
    # MockProvider's id for the first message (sms id 1) to 27830000001, before it exists.
    early = post_receipt(client, {"id": "mock-27830000001-1", "status": "failed", "code": "005"})
    in_flight = post_receipt(client, {"id": "mock-27830000002-2", "status": "sent"})
    assert early.get_json() == {"received": 1, "updated": 0, "unknown": 1}
    assert in_flight.get_json() == {"received": 1, "updated": 0, "unknown": 1}
    assert rows(db, "SELECT providerid, status FROM early_receipts") == [
        ("mock-27830000001-1", "failed")
    ]

    ref = send(client, "0830000001", "0830000002")

    assert message(db, "27830000001")[:2] == ("failed", "005")
    assert message(db, "27830000002")[0] == "sent"
    assert counters(db, ref) == (1, 0, 1)
    assert rows(db, "SELECT count(*) FROM early_receipts") == [(0,)]


def test_a_receipt_kept_while_a_batch_is_being_written_is_applied_by_that_batch(
    client, db, database_url
):
    # The receipt holds the early-receipts lock, its id kept but not committed, while the
    # batch's record runs: the record waits for the lock, and its next statement sees the
    # kept receipt (a look in the statement that waited would miss it, its snapshot taken
    # before the receipt committed, and leave the message `sent` for good).
    receipt = psycopg2.connect(database_url)
    with receipt.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (EARLY_RECEIPTS_LOCK,))
        cur.execute(
            "INSERT INTO early_receipts (providerid, status, errorcode, provider) "
            "VALUES ('mock-27830000001-1', 'delivered', 'OK', 'MockProvider')"
        )
    sending = threading.Thread(target=send, args=(client, "0830000001"))
    sending.start()
    try:
        waiting = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        deadline = time.monotonic() + 10
        while rows(db, waiting) != [(1,)] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rows(db, waiting) == [(1,)], "the batch's record never waited for the receipt"
        receipt.commit()
        sending.join(10)
    finally:
        receipt.close()
    assert not sending.is_alive()
    assert message(db, "27830000001")[:2] == ("delivered", "OK")
    assert rows(db, "SELECT count(*) FROM early_receipts") == [(0,)]


def test_a_receipt_a_dead_writer_left_kept_for_its_batch_is_applied_by_reconcile(
    client, runner, db
):
    ref = send(client, "0830000001")
    pid = provider_id(db, "27830000001")
    # What a writer killed between recording a batch (one round trip) and applying the
    # receipts that overtook it leaves: the message `sent`, its receipt still kept.
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO early_receipts (providerid, status, errorcode, provider) "
            "VALUES (%s, 'delivered', 'OK', 'MockProvider')",
            (pid,),
        )

    result = runner.invoke(args=["reconcile"])

    assert result.exit_code == 0, result.output
    assert "1 messages updated by receipts kept for them" in result.output
    assert message(db, "27830000001")[:2] == ("delivered", "OK")
    assert counters(db, ref) == (0, 1, 0)
    assert rows(db, "SELECT count(*) FROM early_receipts") == [(0,)]


def test_kept_receipts_never_matched_in_24_hours_are_logged_and_dropped_by_poll_status(
    client, runner, db, receipt_log
):
    post_receipt(client, {"id": "mock-old-404", "status": "delivered"})
    post_receipt(client, {"id": "mock-new-405", "status": "delivered"})
    with db.cursor() as cur:
        cur.execute(
            "UPDATE early_receipts SET receivedat = now() - interval '25 hours' "
            "WHERE providerid = 'mock-old-404'"
        )

    result = runner.invoke(args=["poll-status"])

    assert result.exit_code == 0, result.output
    assert "receipts: dropped 1 never matched by a message within 24 h" in result.output
    assert rows(db, "SELECT providerid FROM early_receipts") == [("mock-new-405",)]
    dropped = [r.getMessage() for r in receipt_log if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "mock-old-404 (delivered)" in dropped[0]
