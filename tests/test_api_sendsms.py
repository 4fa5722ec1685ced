"""POST /sendsms (and GET), through the Flask test client against a real PostgreSQL."""

import json
import logging

import pytest

from tests.conftest import base_config, rows

README_NUMBERS = ["0830000000", "27840000000", "numbersToClean", "0820000000"]


def counters(db, ref):
    return rows(db, "SELECT sent, delivered, failed FROM sendlog WHERE id = %s", int(ref))[0]


def statuses(db, ref):
    return dict(
        rows(db, "SELECT status, count(*) FROM sms WHERE sendlogid = %s GROUP BY status", int(ref))
    )


def test_json_send_records_every_recipient_and_answers_like_the_original(client, db):
    response = client.post(
        "/sendsms", json={"message": "Water off at 10:00", "msisdns": README_NUMBERS}
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body == {
        "refNumber": body["refNumber"],
        "validNumbers": 3,
        "invalidNumbers": 1,
        "duplicateNumbers": 0,
        "sendSuccess": True,
        "statusDescription": "",
        "messagesSent": 3,
        "segments": 1,
        "encoding": "GSM-7",
        "queuedNumbers": 0,
        "optedOutNumbers": 0,
    }
    recorded = rows(
        db,
        "SELECT msisdn, status, providerid, segments, message FROM sms WHERE sendlogid = %s "
        "ORDER BY id",
        int(body["refNumber"]),
    )
    assert [r[0] for r in recorded] == ["27830000000", "27840000000", "27820000000"]
    assert all(r[1] == "sent" and r[2].startswith("mock-") for r in recorded)
    assert all(r[3] == 1 and r[4] == "Water off at 10:00" for r in recorded)
    assert counters(db, body["refNumber"]) == (3, 0, 0)
    send = rows(db, "SELECT type, quantity, status, message FROM sendlog")[0]
    assert send == ("sms", 3, "success", "Water off at 10:00")


def test_form_data_with_csv_numbers_is_accepted(client, db):
    response = client.post(
        "/sendSMS", data={"message": "hello", "msisdns": "0830000000, 0840000000"}
    )
    assert response.status_code == 200
    assert response.get_json()["validNumbers"] == 2
    assert rows(db, "SELECT count(*) FROM sms")[0][0] == 2


def test_get_with_query_parameters_sends(client, db):
    response = client.get("/SendSms?message=hi&msisdns=0830000000,0840000000")
    assert response.status_code == 200
    assert response.get_json()["messagesSent"] == 2


def test_duplicate_numbers_are_counted_not_sent_twice(client, db, provider):
    numbers = ["0830000000", "+27 83 000 0000", "27830000000", "083-000-0000", "0840000000"]
    body = client.post("/sendsms", json={"message": "x", "msisdns": numbers}).get_json()
    assert (body["validNumbers"], body["duplicateNumbers"], body["invalidNumbers"]) == (2, 3, 0)
    assert sum(provider.batches) == 2
    assert rows(db, "SELECT count(*) FROM sms")[0][0] == 2


def test_batches_of_max_batch_size_cover_every_recipient(client, db, provider):
    numbers = [f"083{i:07d}" for i in range(1201)]
    assert len(set(numbers)) == 1201
    body = client.post("/sendsms", json={"message": "batch", "msisdns": numbers}).get_json()
    assert sorted(provider.batches) == [201, 500, 500]  # in parallel, in any order
    rejected = sum(1 for n in numbers if n.endswith("9"))
    assert body["validNumbers"] == 1201
    assert body["messagesSent"] == 1201 - rejected
    assert rows(db, "SELECT count(*) FROM sms WHERE sendlogid = %s", int(body["refNumber"])) == [
        (1201,)
    ]
    assert statuses(db, body["refNumber"]) == {"sent": 1201 - rejected, "failed": rejected}
    assert counters(db, body["refNumber"]) == (1201 - rejected, 0, rejected)


def test_rejected_recipients_are_failed_with_code_and_reason(client, db):
    body = client.post(
        "/sendsms", json={"message": "x", "msisdns": ["0830000000", "0830000009"]}
    ).get_json()
    assert body["sendSuccess"] is True
    assert body["messagesSent"] == 1
    assert body["statusDescription"] == "1 of 2 recipients rejected by the provider"
    failed = rows(db, "SELECT msisdn, status, errorcode, reason FROM sms WHERE status = 'failed'")
    assert failed == [("27830000009", "failed", "105", "Invalid destination address")]


def test_out_of_credit_is_a_failed_send_with_every_recipient_recorded(make_app, db):
    # One batch at a time: the refusal of the first is seen before the second would go.
    app = make_app(base_config(token="nocredit", maxBatchSize=2, maxConcurrentRequests=1))
    response = app.test_client().post(
        "/sendsms", json={"message": "x", "msisdns": ["0830000000", "0840000000", "0820000000"]}
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["sendSuccess"] is False
    assert body["statusDescription"] == "Error 301: Out of credit"
    assert body["messagesSent"] == 0
    # The first batch was refused; the second is not attempted but is still recorded.
    assert list(app.extensions["messaging"].provider.batches) == [2]
    recorded = rows(db, "SELECT status, errorcode, reason FROM sms")
    assert recorded == [("failed", "301", "Out of credit")] * 3
    assert rows(db, "SELECT status, description, failed, sent FROM sendlog") == [
        ("failed", "Error 301: Out of credit", 3, 0)
    ]


def test_disabled_sending_records_the_send_as_failed_and_says_so(make_app, db):
    app = make_app(base_config(enabled=False))
    body = (
        app.test_client()
        .post("/sendsms", json={"message": "x", "msisdns": ["0830000000"]})
        .get_json()
    )
    assert body["sendSuccess"] is False
    assert "disabled" in body["statusDescription"]
    assert list(app.extensions["messaging"].provider.batches) == []
    assert rows(db, "SELECT status, reason FROM sms") == [
        ("failed", "SMS sending is disabled (smsProvider.enabled is false)")
    ]


def test_no_valid_numbers_is_recorded_and_reported(client, db, provider):
    body = client.post("/sendsms", json={"message": "x", "msisdns": ["junk", "123"]}).get_json()
    assert body["sendSuccess"] is False
    assert body["invalidNumbers"] == 2
    assert body["statusDescription"] == "No valid numbers to send to"
    assert list(provider.batches) == []
    assert rows(db, "SELECT quantity, status FROM sendlog") == [(0, "failed")]


def test_sender_id_is_stored(client, db):
    client.post("/sendsms", json={"message": "x", "msisdns": ["0830000000"], "from": "CITY"})
    assert rows(db, "SELECT sender FROM sendlog") == [("CITY",)]


def test_long_message_counts_segments(client, db):
    body = client.post("/sendsms", json={"message": "a" * 161, "msisdns": ["0830000000"]})
    assert body.get_json()["segments"] == 2
    assert rows(db, "SELECT segments FROM sms") == [(2,)]


def test_with_smart_encoding_off_a_typographic_apostrophe_makes_the_text_ucs2(make_app, db):
    app = make_app(base_config(maxMessageSegments=1, smartEncoding=False))
    text = "a" * 99 + "\u2019"
    response = app.test_client().post("/sendsms", json={"message": text, "msisdns": ["0830000000"]})
    assert response.status_code == 406
    assert "needs 2 SMS parts" in response.get_json()["error"]
    two = make_app(base_config(maxMessageSegments=2, smartEncoding=False)).test_client()
    answer = two.post("/sendsms", json={"message": text, "msisdns": ["0830000000"]}).get_json()
    assert (answer["encoding"], answer["segments"]) == ("UCS-2", 2)
    assert rows(db, "SELECT message FROM sms") == [(text,)]


BAD_INPUTS = [
    ("not json", "application/json", "not valid JSON"),
    ("[1, 2]", "application/json", "JSON object"),
    (json.dumps({"msisdns": ["0830000000"]}), "application/json", "message"),
    (json.dumps({"message": "", "msisdns": ["0830000000"]}), "application/json", "empty"),
    (json.dumps({"message": "hi"}), "application/json", "msisdns"),
    (json.dumps({"message": "hi", "msisdns": []}), "application/json", "msisdns"),
    (json.dumps({"message": "hi", "msisdns": [830000000]}), "application/json", "msisdns"),
    (json.dumps({"message": 5, "msisdns": ["0830000000"]}), "application/json", "message"),
    (json.dumps({"message": "a" * 766, "msisdns": ["0830000000"]}), "application/json", "parts"),
    ("message=hi", "application/x-www-form-urlencoded", "msisdns"),
    ("<xml/>", "application/xml", "Content-Type"),
]


@pytest.mark.parametrize(("body", "content_type", "named"), BAD_INPUTS)
def test_bad_input_is_406_naming_the_problem_and_sends_nothing(
    client, db, provider, body, content_type, named
):
    response = client.post("/sendsms", data=body, content_type=content_type)
    assert response.status_code == 406
    assert named in response.get_json()["error"]
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]
    assert list(provider.batches) == []


def test_non_utf8_body_is_rejected(client, db):
    response = client.post(
        "/sendsms",
        data=b"message=\xff\xfe&msisdns=0830000000",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 406
    assert "UTF-8" in response.get_json()["error"]
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_more_recipients_than_the_limit_is_406(make_app, db):
    app = make_app(base_config(maxRecipients=3))
    response = app.test_client().post(
        "/sendsms", json={"message": "x", "msisdns": ["0830000000"] * 4}
    )
    assert response.status_code == 406
    assert "maxRecipients" in response.get_json()["error"]
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_body_over_the_size_limit_is_413(make_app, db):
    config = base_config()
    config["MaxBodyBytes"] = 1000
    client = make_app(config).test_client()
    response = client.post("/sendsms", json={"message": "x", "msisdns": ["0830000000"] * 200})
    assert response.status_code == 413
    assert "error" in response.get_json()
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_unknown_path_is_a_json_404(client):
    response = client.get("/nothing-here")
    assert response.status_code == 404
    assert "error" in response.get_json()


def test_each_request_logs_one_line_with_its_id_counts_and_outcome_never_the_token(
    make_app, db, caplog
):
    app = make_app(base_config(token="s3cret-provider-token"))
    service_logger = logging.getLogger("messaging")  # it does not propagate to the root
    service_logger.addHandler(caplog.handler)
    try:
        response = app.test_client().post(
            "/sendsms",
            json={"message": "x", "msisdns": README_NUMBERS},
            headers={"X-Request-ID": "req-42"},
        )
    finally:
        service_logger.removeHandler(caplog.handler)
    assert response.headers["X-Request-ID"] == "req-42"
    lines = [r for r in caplog.records if r.name == "messaging.request"]
    assert len(lines) == 1
    line = lines[0]
    assert line.request_id == "req-42"
    assert "POST /sendsms 200" in line.getMessage()
    assert "valid=3 invalid=1 duplicates=0 sent=3 queued=0 success=True" in line.getMessage()
    assert all("s3cret-provider-token" not in r.getMessage() for r in caplog.records)
