"""Vonage plugin against a fake Vonage on 127.0.0.1."""

import threading

import pytest
import requests

from messaging.errors import ProviderError, ReceiptRejected
from messaging.providers.base import Receipt, Recipient
from messaging.providers.vonage import Vonage
from tests.conftest import base_config, gunicorn_server, rows
from tests.providers.conftest import outcomes, plugin, poll, send, settings
from tests.providers.fakes import Reply, vonage_accepts

TWO = [Recipient("447700900001", "11"), Recipient("447700900002", "12")]


def provider(fake, sleeps, **values):
    return plugin("Vonage", fake, sleeps, **values)


def ok(to, count=1):
    return {
        "message-count": str(count),
        "messages": [
            {
                "to": to,
                "message-id": f"0A0{to[-1]}-{part}",
                "status": "0",
                "remaining-balance": "3.14",
                "message-price": "0.0333",
                "network": "23410",
            }
            for part in range(count)
        ],
    }


def error(status, text):
    return {"message-count": "1", "messages": [{"status": status, "error-text": text}]}


def by_number(request):
    to = request.form["to"]
    return Reply(200, error("3", "Invalid to number") if to.endswith("2") else ok(to))


def test_send_posts_one_form_per_recipient_with_key_secret_and_client_ref(fake, sleeps):
    fake.default = lambda request: Reply(200, ok(request.form["to"], 2))
    results = provider(fake, sleeps).send_batch(TWO, "Water off", "IMQS")
    assert len(fake.requests) == 2
    forms = sorted((r.form for r in fake.requests), key=lambda form: form["to"])
    assert forms == [
        {
            "api_key": "key1",
            "api_secret": "secret-token",
            "from": "IMQS",
            "to": "447700900001",
            "text": "Water off",
            "client-ref": "11",
        },
        {
            "api_key": "key1",
            "api_secret": "secret-token",
            "from": "IMQS",
            "to": "447700900002",
            "text": "Water off",
            "client-ref": "12",
        },
    ]
    assert {(r.method, r.path) for r in fake.requests} == {("POST", "/sms/json")}
    assert [(r.reference, r.accepted, r.provider_id, r.segments) for r in results] == [
        ("11", True, "0A01-0", 2),
        ("12", True, "0A02-0", 2),
    ]


def test_unicode_text_is_sent_with_type_unicode(fake, sleeps):
    fake.default = by_number
    provider(fake, sleeps).send_batch(TWO[:1], "Sawubona 😀", "IMQS")
    assert fake.requests[0].form["type"] == "unicode"


def test_mixed_results_reject_only_the_invalid_number(fake, sleeps):
    fake.default = by_number
    good, bad = provider(fake, sleeps).send_batch(TWO, "x", "IMQS")
    assert good.accepted
    assert (bad.accepted, bad.error_code, bad.reason) == (False, "3", "Invalid to number")


def test_bad_credentials_refuse_the_batch(fake, sleeps):
    fake.default = lambda request: Reply(200, error("4", "Bad Credentials"))
    with pytest.raises(ProviderError, match="^Error 4: Authentication failed$"):
        provider(fake, sleeps).send_batch(TWO, "x", "IMQS")


def test_partner_quota_violation_is_out_of_credit(fake, sleeps):
    fake.default = lambda request: Reply(200, error("9", "Partner quota exceeded"))
    with pytest.raises(ProviderError) as caught:
        provider(fake, sleeps).send_batch(TWO, "x", "IMQS")
    assert caught.value.message == "Error 9: Out of credit"


def test_default_throttle_is_vonages_30_requests_a_second(fake, sleeps):
    default = Vonage(settings(fake, "Vonage", options={"apiKey": "key1"}))
    assert default.throttle.interval == pytest.approx(1 / 30)
    assert provider(fake, sleeps, max_requests_per_second=5.0).throttle.interval == pytest.approx(
        0.2
    )


@pytest.mark.parametrize(
    ("name", "err", "status", "reason"),
    [
        ("delivered", "0", "delivered", "delivered"),
        ("accepted", "0", "sent", "accepted"),
        ("buffered", "0", "sent", "buffered"),
        ("expired", "2", "failed", "Absent subscriber (temporary)"),
        ("failed", "9", "failed", "Illegal number"),
        ("rejected", "6", "failed", "Anti-spam rejection"),
    ],
)
def test_delivery_receipt_maps_each_status_family(fake, sleeps, name, err, status, reason):
    plugin = provider(fake, sleeps, options={"apiKey": "key1", "callbackSecret": "s3"})
    body = {
        "msisdn": "447700900001",
        "to": "IMQS",
        "network-code": "23410",
        "messageId": "0A01-0",
        "price": "0.0333",
        "status": name,
        "scts": "2001011400",
        "err-code": err,
        "client-ref": "11",
        "message-timestamp": "2020-01-01 12:00:00",
    }
    [update] = plugin.parse_receipt(
        Receipt("POST", "https://us/cb?secret=s3", {}, {"secret": "s3"}, json=body)
    )
    assert (update.provider_id, update.status, update.code, update.reason) == (
        "0A01-0",
        status,
        err,
        reason,
    )


def test_delivery_receipt_with_a_wrong_secret_is_rejected(fake, sleeps):
    plugin = provider(fake, sleeps, options={"apiKey": "key1", "callbackSecret": "s3"})
    with pytest.raises(ReceiptRejected):
        plugin.parse_receipt(
            Receipt("GET", "https://us/cb?secret=s4", {}, {"secret": "s4", "messageId": "x"})
        )


def test_sendsms_through_vonage(fake, make_app, db):
    fake.default = by_number
    config = base_config(
        name="vonage", token="sec", url=fake.url, options={"apiKey": "key1"}, **{"from": "IMQS"}
    )
    client = make_app(config).test_client()
    body = client.post(
        "/sendsms", json={"message": "hi", "msisdns": ["0830000001", "0830000002"]}
    ).get_json()
    assert (body["sendSuccess"], body["messagesSent"]) == (True, 1)
    assert rows(db, "SELECT providerid, status, errorcode, reason FROM sms ORDER BY id") == [
        ("0A01-0", "sent", None, None),
        (None, "failed", "3", "Invalid to number"),
    ]


def test_no_poll_and_delivery_receipts_update_the_message(fake, make_app, db):
    fake.default = vonage_accepts
    config = base_config(
        name="Vonage",
        token="s",
        url=fake.url,
        options={"apiKey": "k", "callbackSecret": "s3"},
        **{"from": "IMQS"},
    )
    app = make_app(config)
    client = send(app)
    assert "has no status query" in poll(app)
    receipt = {"messageId": "V1", "status": "delivered", "err-code": "0", "client-ref": "1"}
    assert client.post("/callbacks/vonage?secret=s3", json=receipt).status_code == 200
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("delivered", "0"),
        ("sent", None),
        ("sent", None),
    ]


class OvertakingVonage:
    """Vonage's /sms/json that accepts the first number at once and holds the rest of the
    batch until Vonage's delivery receipt for it has been posted to the service and
    answered: the receipt overtakes the batch's record, as one did 40 ms after Vonage
    accepted a message while the rest of its batch was still going out."""

    def __init__(self, fake, first: str):
        self.first = first
        self.callback = ""  # the service's /callbacks/Vonage URL, secret included
        self.accepted_first = threading.Event()
        self.lock = threading.Lock()
        self.receipt_answers: list[tuple[int, dict]] = []
        fake.default = self.answer

    def answer(self, request):
        to = request.form["to"]
        if to != self.first:
            assert self.accepted_first.wait(10)
            with self.lock:
                if not self.receipt_answers:
                    receipt = {
                        "messageId": "V-" + self.first,
                        "status": "delivered",
                        "err-code": "0",
                    }
                    posted = requests.post(self.callback, json=receipt, timeout=10)
                    self.receipt_answers.append((posted.status_code, posted.json()))
        reply = Reply(
            200,
            {
                "message-count": "1",
                "messages": [{"to": to, "message-id": "V-" + to, "status": "0"}],
            },
        )
        if to == self.first:
            self.accepted_first.set()
        return reply


def test_a_receipt_that_overtakes_its_batch_is_kept_and_applied_when_the_batch_is_written(
    fake, database_url, db, tmp_path
):
    vonage = OvertakingVonage(fake, first="27830000001")
    config = base_config(
        name="Vonage",
        token="s",
        url=fake.url,
        options={"apiKey": "k", "callbackSecret": "s3"},
        **{"from": "IMQS"},
    )
    with gunicorn_server(config, database_url, tmp_path) as base:
        vonage.callback = f"{base}/callbacks/Vonage?secret=s3"
        sent = requests.post(
            f"{base}/sendsms",
            json={"message": "hi", "msisdns": ["0830000001", "0830000002", "0830000003"]},
        )

    assert sent.status_code == 200 and sent.json()["messagesSent"] == 3
    # Answered before the batch was written: no message carried the id yet.
    assert vonage.receipt_answers == [(200, {"received": 1, "updated": 0, "unknown": 1})]
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("delivered", "0"),
        ("sent", None),
        ("sent", None),
    ]
    assert rows(db, "SELECT sent, delivered, failed FROM sendlog") == [(2, 1, 0)]
    assert rows(db, "SELECT count(*) FROM early_receipts") == [(0,)]
