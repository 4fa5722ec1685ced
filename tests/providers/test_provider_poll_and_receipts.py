"""End to end per provider: send through POST /sendsms, then learn the outcome through
`flask poll-status` (providers with a status query) or POST /callbacks/<provider>."""

import base64
import hashlib
import hmac
import threading

import requests

from tests.conftest import base_config, gunicorn_server, rows
from tests.providers.fakes import Reply

NUMBERS = ["0830000001", "0830000002", "0830000003"]
SID = "AC0123456789abcdef0123456789abcdef"


def send(app):
    client = app.test_client()
    body = client.post("/sendsms", json={"message": "hi", "msisdns": NUMBERS}).get_json()
    assert body["messagesSent"] == 3
    return client


def outcomes(db):
    return rows(db, "SELECT msisdn, status, errorcode FROM sms ORDER BY id")


def poll(app):
    with app.app_context():  # harmless if the command pushes its own
        result = app.test_cli_runner().invoke(args=["poll-status"])
    assert result.exit_code == 0, result.output
    return result.output


def test_poll_status_through_clickatell(fake, make_app, db):
    fake.default = lambda request: (
        Reply(
            202,
            {
                "data": {
                    "message": [
                        {"accepted": True, "to": n, "apiMessageId": f"c{n[-1]}"}
                        for n in request.json["to"]
                    ]
                }
            },
        )
        if request.method == "POST"
        else Reply(
            200,
            {
                "data": {
                    "apiMessageId": request.path[-2:],
                    "messageStatus": {"c1": "004", "c2": "005", "c3": "002"}[request.path[-2:]],
                }
            },
        )
    )
    app = make_app(base_config(name="Clickatell", token="t", url=fake.url))
    send(app)
    assert "checked 3, delivered 1, failed 1, still in flight 1" in poll(app)
    assert outcomes(db) == [
        ("27830000001", "delivered", "004"),
        ("27830000002", "failed", "005"),
        ("27830000003", "sent", None),
    ]
    assert {r.path for r in fake.requests if r.method == "GET"} == {
        "/rest/message/c1",
        "/rest/message/c2",
        "/rest/message/c3",
    }


def test_poll_status_through_clickatell_one(fake, make_app, db):
    statuses = {"o1": "DEVICE_ACK", "o2": "EXPIRED", "o3": "QUEUED"}
    fake.default = lambda request: (
        Reply(
            202,
            {
                "messages": [
                    {"apiMessageId": f"o{m['to'][-1]}", "accepted": True, "to": m["to"]}
                    for m in request.json["messages"]
                ],
                "error": None,
            },
        )
        if request.method == "POST"
        else Reply(200, {"sms": {"status": statuses[request.path.rsplit("/", 1)[1]]}})
    )
    app = make_app(base_config(name="ClickatellOne", token="t", url=fake.url))
    send(app)
    poll(app)
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("delivered", "DEVICE_ACK"),
        ("failed", "EXPIRED"),
        ("sent", None),
    ]


def test_poll_status_through_twilio(fake, make_app, db):
    statuses = {"SM1": ("delivered", None), "SM2": ("undelivered", 30005), "SM3": ("sending", None)}

    def answer(request):
        if request.method == "POST":
            return Reply(
                201, {"sid": "SM" + request.form["To"][-1], "status": "queued", "num_segments": "1"}
            )
        sid = request.path.rsplit("/", 1)[1].removesuffix(".json")
        status, code = statuses[sid]
        return Reply(200, {"sid": sid, "status": status, "error_code": code, "error_message": None})

    fake.default = answer
    config = base_config(
        name="Twilio", token="t", url=fake.url, options={"accountSid": SID}, **{"from": "+1"}
    )
    app = make_app(config)
    send(app)
    poll(app)
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("delivered", ""),
        ("failed", "30005"),
        ("sent", None),
    ]


def test_poll_status_through_bulksms(fake, make_app, db):
    kinds = {
        "1": {"id": "DELIVERED.null", "type": "DELIVERED"},
        "2": {"id": "FAILED.EXPIRED", "type": "FAILED", "subtype": "EXPIRED"},
        "3": {"id": "SENT.null", "type": "SENT"},
    }
    fake.default = lambda request: (
        Reply(
            201,
            [
                {
                    "id": e["to"][-1],
                    "to": e["to"],
                    "userSuppliedId": e["userSuppliedId"],
                    "status": {"id": "ACCEPTED.null", "type": "ACCEPTED"},
                }
                for e in request.json
            ],
        )
        if request.method == "POST"
        else Reply(200, {"id": request.path[-1], "status": kinds[request.path[-1]]})
    )
    app = make_app(base_config(name="BulkSMS", token="t", url=fake.url, options={"username": "u"}))
    send(app)
    poll(app)
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("delivered", "DELIVERED.null"),
        ("failed", "FAILED.EXPIRED"),
        ("sent", None),
    ]


def test_africastalking_has_no_poll_and_takes_delivery_reports(fake, make_app, db):
    fake.default = lambda request: Reply(
        201,
        {
            "SMSMessageData": {
                "Recipients": [
                    {"statusCode": 101, "number": n, "status": "Success", "messageId": f"AT{n[-1]}"}
                    for n in request.form["to"].split(",")
                ]
            }
        },
    )
    config = base_config(
        name="AfricasTalking",
        token="k",
        url=fake.url,
        options={"username": "u", "callbackSecret": "s3"},
    )
    app = make_app(config)
    client = send(app)
    assert "has no status query" in poll(app)
    answer = client.post(
        "/callbacks/africastalking?secret=s3",
        data={"id": "AT2", "status": "Failed", "failureReason": "AbsentSubscriber"},
    )
    assert answer.status_code == 200
    assert (
        client.post(
            "/callbacks/africastalking?secret=no", data={"id": "AT1", "status": "Success"}
        ).status_code
        == 403
    )
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("sent", None),
        ("failed", "Failed"),
        ("sent", None),
    ]


def test_vonage_has_no_poll_and_takes_delivery_receipts(fake, make_app, db):
    fake.default = lambda request: Reply(
        200,
        {
            "message-count": "1",
            "messages": [
                {
                    "to": request.form["to"],
                    "message-id": "V" + request.form["to"][-1],
                    "status": "0",
                }
            ],
        },
    )
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
    answer = client.post(
        "/callbacks/vonage?secret=s3",
        json={"messageId": "V1", "status": "delivered", "err-code": "0", "client-ref": "1"},
    )
    assert answer.status_code == 200
    assert [(s, c) for _, s, c in outcomes(db)] == [
        ("delivered", "0"),
        ("sent", None),
        ("sent", None),
    ]


def test_twilio_signed_callback_updates_the_message(fake, make_app, db):
    fake.default = lambda request: Reply(
        201, {"sid": "SM" + request.form["To"][-1], "status": "queued"}
    )
    config = base_config(
        name="Twilio", token="tok", url=fake.url, options={"accountSid": SID}, **{"from": "+1"}
    )
    client = send(make_app(config))
    form = {"MessageSid": "SM3", "MessageStatus": "delivered", "AccountSid": SID}
    url = "http://localhost/callbacks/twilio"
    payload = url + "".join(k + form[k] for k in sorted(form))
    signature = base64.b64encode(hmac.new(b"tok", payload.encode(), hashlib.sha1).digest()).decode()
    assert (
        client.post(
            "/callbacks/twilio", data=form, headers={"X-Twilio-Signature": "bad"}
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/callbacks/twilio", data=form, headers={"X-Twilio-Signature": signature}
        ).status_code
        == 200
    )
    assert [s for _, s, _ in outcomes(db)] == ["sent", "sent", "delivered"]


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
        sent = requests.post(f"{base}/sendsms", json={"message": "hi", "msisdns": NUMBERS})

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
