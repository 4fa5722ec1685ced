"""Status webhooks: every status change POSTed to the send's callbackUrl, signed per Standard
Webhooks, at least once and in order per message, through a receiver that fails, hangs,
refuses connections and answers 500 on purpose; never to a private address unless allowed."""

import contextlib
import json
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from messaging import dispatch, webhooks
from messaging.config import ConfigError, config_from_mapping
from messaging.db import Database
from messaging.queries.webhooks import enqueue_webhook
from tests.conftest import base_config, dispatcher_process, rows
from tests.test_dispatch import wait_until
from tests.webhook_receiver import SECRET, Receiver

FINAL = ("delivered", "failed")


def later() -> str:
    return (datetime.now(UTC) + timedelta(days=30)).isoformat()


def config(**status) -> dict:
    settings = base_config()
    settings["deliveryStatus"].update(
        {"callbackSecret": SECRET, "allowPrivateCallbacks": True, "callbackTimeout": 1, **status}
    )
    return settings


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def send(client, numbers, **extra):
    response = client.post("/sendsms", json={"message": "Water off", "msisdns": numbers, **extra})
    assert response.status_code in (200, 202), response.get_json()
    return response.get_json()["refNumber"]


@contextlib.contextmanager
def running_dispatcher(app):
    dispatcher = dispatch.Dispatcher(app.extensions["messaging"])
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    thread.start()
    try:
        yield dispatcher
    finally:
        dispatcher.stop.set()
        thread.join(30)


def assert_in_order(events):
    """Per message: `sent` (if any) before its one final status, and nothing after it."""
    seen: dict[str, list[str]] = {}
    for event in events:
        seen.setdefault(event["msisdn"], []).append(event["status"])
    for msisdn, statuses in seen.items():
        distinct = list(dict.fromkeys(statuses))  # repeats are allowed: at least once
        assert distinct in (["sent"], ["sent", "delivered"], ["sent", "failed"], ["failed"]), (
            msisdn,
            statuses,
        )


def test_every_status_change_is_posted_signed_and_in_order(make_app, db, receiver):
    app = make_app(config())
    client = app.test_client()
    numbers = ["0830000001", "0830000006", "0830000009", "0830000008"]
    with running_dispatcher(app):
        ref = send(client, numbers, callbackUrl=receiver.url)
        wait_until(lambda: len(receiver.events()) == 4)
        app.test_cli_runner().invoke(args=["poll-status"])
        wait_until(lambda: len(receiver.events()) == 6)

    for delivery in receiver.deliveries:
        body = delivery.verified()  # the Standard Webhooks reference check
        assert delivery.id.startswith("msg_")
        assert delivery.headers["content-type"] == "application/json"
        assert body["type"] == "message.status" and body["timestamp"].endswith("Z")
        assert body["data"]["refNumber"] == ref
    events = receiver.events()
    by_number = {(e["msisdn"], e["status"]): e for e in events}
    assert sorted(by_number) == [
        ("27830000001", "delivered"),
        ("27830000001", "sent"),
        ("27830000006", "failed"),
        ("27830000006", "sent"),
        ("27830000008", "sent"),
        ("27830000009", "failed"),
    ]
    failed = by_number[("27830000006", "failed")]
    assert failed == {
        "id": failed["id"],
        "refNumber": ref,
        "msisdn": "27830000006",
        "status": "failed",
        "errorCode": "005",
        "reason": "Delivery failed",
        "failureKind": "temporary",
        "providerId": failed["providerId"],
        "source": "poll",
        "time": failed["time"],
    }
    assert by_number[("27830000009", "failed")]["failureKind"] == "permanent"
    assert len({e["id"] for e in events}) == 6
    assert_in_order(events)
    # Each event is the one GET /sends/<ref>/messages/<msisdn> shows.
    shown = client.get(f"/sends/{ref}/messages/0830000006").get_json()["events"]
    assert [e["id"] for e in shown] == [
        by_number[("27830000006", "sent")]["id"],
        failed["id"],
    ]
    assert rows(db, "SELECT count(*) FROM webhook_outbox") == [(0,)]


def test_a_send_without_a_callback_queues_nothing(make_app, db):
    client = make_app(config()).test_client()
    send(client, ["0830000001"])
    assert rows(db, "SELECT count(*) FROM webhook_outbox") == [(0,)]


def test_the_configured_callback_url_is_the_default(make_app, db, receiver):
    app = make_app(config(callbackUrl=receiver.url))
    with running_dispatcher(app):
        send(app.test_client(), ["0830000001"])
        wait_until(lambda: receiver.events())
    assert [e["status"] for e in receiver.events()] == ["sent"]


def test_dispatch_until_idle_delivers_the_webhooks_of_what_it_sent(make_app, db, receiver):
    app = make_app(config(callbackUrl=receiver.url))
    send(app.test_client(), ["0830000001", "0830000009"])
    assert rows(db, "SELECT count(*) FROM webhook_outbox") != [(0,)]

    result = app.test_cli_runner().invoke(args=["dispatch", "--until-idle"])

    assert result.exit_code == 0, result.output
    assert rows(db, "SELECT count(*) FROM webhook_outbox") == [(0,)]
    assert sorted(e["status"] for e in receiver.events()) == ["failed", "sent"]


def test_failures_are_retried_until_the_receiver_takes_them(make_app, db, receiver):
    # A timeout (no Retry-After: the back-off doubles from 5 s), then a 500 and a 429 asking
    # to come back in a second, then 200.
    receiver.answer("hang", (500, {"Retry-After": "1"}), (429, {"Retry-After": "1"}))
    app = make_app(config())
    with running_dispatcher(app):
        send(app.test_client(), ["0830000001"], callbackUrl=receiver.url)
        wait_until(lambda: receiver.taken()[1:], timeout=30)
        receiver.release.set()

    answers = [d.answer for d in receiver.deliveries]
    assert answers == ["hang", (500, {"Retry-After": "1"}), (429, {"Retry-After": "1"}), 200]
    assert len({d.id for d in receiver.deliveries}) == 1  # the same delivery each time
    assert len({d.body for d in receiver.deliveries}) == 1
    assert rows(db, "SELECT count(*) FROM webhook_outbox") == [(0,)]


def test_a_receiver_refusing_connections_gets_them_once_it_is_back(make_app, db):
    down = Receiver()
    port, url = down.port, down.url
    down.stop()  # nothing listens there now: connections are refused
    app = make_app(config())
    with running_dispatcher(app):
        send(app.test_client(), ["0830000001"], callbackUrl=url)
        [(error,)] = wait_until(
            lambda: rows(db, "SELECT lasterror FROM webhook_outbox WHERE lasterror IS NOT NULL")
        )
        back = Receiver(port=port)
        try:
            wait_until(lambda: back.events(), timeout=20)
        finally:
            back.stop()
    assert error == "connection failed (ConnectionError)"
    assert [e["status"] for e in back.events()] == ["sent"]


def test_a_client_error_or_a_redirect_is_dead_at_once_and_retry_queues_it_again(
    make_app, db, receiver
):
    receiver.answer(410, (302, {"Location": "http://10.0.0.1/"}))
    app = make_app(config())
    client = app.test_client()
    with running_dispatcher(app):
        ref = send(client, ["0830000001"], callbackUrl=receiver.url)
        send(client, ["0830000002"], callbackUrl=receiver.url)
        wait_until(
            lambda: rows(db, "SELECT count(*) FROM webhook_outbox WHERE state = 'dead'") == [(2,)]
        )
        assert sorted(rows(db, "SELECT lasterror FROM webhook_outbox")) == [
            ("answered 302 (redirects are not followed)",),
            ("answered 410",),
        ]
        result = app.test_cli_runner().invoke(args=["webhooks", "retry", ref])
        wait_until(lambda: receiver.taken())

    assert "send 1: 1 dead deliveries queued again as 1 (1 events)" in result.output
    assert len(receiver.deliveries) == 3  # the 302 was not followed
    assert [e["msisdn"] for e in receiver.events(receiver.taken())] == ["27830000001"]
    assert rows(db, "SELECT lane FROM webhook_outbox WHERE state = 'dead'") == [(2,)]


def test_retry_never_sends_a_sent_event_after_its_final_status(make_app, db, receiver):
    receiver.answer(400)  # the `sent` delivery dies; the `delivered` one goes through
    app = make_app(config())
    client = app.test_client()
    with running_dispatcher(app):
        ref = send(client, ["0830000001", "0830000008"], callbackUrl=receiver.url)
        wait_until(lambda: rows(db, "SELECT state FROM webhook_outbox") == [("dead",)])
        app.test_cli_runner().invoke(args=["poll-status"])
        wait_until(lambda: receiver.taken())
        result = app.test_cli_runner().invoke(args=["webhooks", "retry", ref])
        wait_until(lambda: len(receiver.taken()) == 2)

    assert "1 `sent` events left out (their final status went after)" in result.output
    taken = receiver.events(receiver.taken())
    assert [(e["msisdn"], e["status"]) for e in taken] == [
        ("27830000001", "delivered"),
        ("27830000008", "sent"),  # still in flight: its `sent` goes again
    ]


def test_a_delivery_failing_past_24_hours_is_dead(make_app, db, receiver):
    receiver.default = 503
    app = make_app(config())
    send(app.test_client(), ["0830000001"], callbackUrl=receiver.url)
    with db.cursor() as cur:
        cur.execute("UPDATE webhook_outbox SET created = now() - interval '25 hours'")
    with running_dispatcher(app):
        wait_until(lambda: rows(db, "SELECT state, attempts FROM webhook_outbox") == [("dead", 1)])
    assert rows(db, "SELECT lasterror FROM webhook_outbox") == [("answered 503",)]


def test_nothing_is_lost_when_a_dispatcher_is_killed_mid_delivery(
    make_app, database_url, db, tmp_path, receiver
):
    receiver.answer("hang")
    settings = config(callbackTimeout=3)
    client = make_app(settings).test_client()
    ref = send(client, ["0830000001", "0830000002"], callbackUrl=receiver.url)
    with dispatcher_process(settings, database_url, tmp_path, name="first") as first:
        assert receiver.holding.wait(30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    killed_at = time.monotonic()
    with dispatcher_process(settings, database_url, tmp_path, name="second"):
        wait_until(lambda: len(receiver.deliveries) == 2, timeout=30)
    waited = time.monotonic() - killed_at

    first_try, again = receiver.deliveries
    assert first_try.id == again.id and first_try.body == again.body  # at least once
    assert sorted(e["msisdn"] for e in receiver.events([again])) == ["27830000001", "27830000002"]
    assert waited < 2 * 3 + 5 + 10  # taken over once the lease ran out
    assert rows(db, "SELECT count(*) FROM webhook_outbox") == [(0,)]
    assert ref == "1"


def test_many_recipients_go_in_batches_of_events(make_app, db, receiver):
    app = make_app(config())
    numbers = [f"08300{n:05d}" for n in range(2500)]
    with running_dispatcher(app):
        send(app.test_client(), numbers, callbackUrl=receiver.url)
        wait_until(lambda: len(receiver.events()) == 2500)
        app.test_cli_runner().invoke(args=["poll-status"])
        # Numbers ending 0-5 are delivered, 6-7 fail; 8 stays sent, 9 failed at send.
        wait_until(lambda: len(receiver.events()) == 2500 + 2000)

    sizes = [len(d.json["data"]["events"]) for d in receiver.deliveries]
    assert sizes == [500] * 5 + [1000] * 2  # one per provider batch, then the poll's
    assert_in_order(receiver.events())


def test_a_cancel_posts_each_recipient_failed(make_app, db, receiver):
    app = make_app(config())
    client = app.test_client()
    ref = send(client, ["0830000001"], callbackUrl=receiver.url, sendAt=later())
    assert client.post(f"/sends/{ref}/cancel").status_code == 200
    with running_dispatcher(app):
        wait_until(lambda: receiver.events())
    [event] = receiver.events()
    assert (event["status"], event["reason"], event["source"]) == ("failed", "cancelled", "cancel")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hooks",
        "http://localhost:8080/hooks",
        "http://10.1.2.3/hooks",
        "https://192.168.0.10/hooks",
        "http://172.16.5.4/hooks",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hooks",
        "http://[::ffff:10.0.0.1]/hooks",
        "http://100.64.0.1/hooks",
        "http://0.0.0.0/hooks",
    ],
)
def test_a_callback_to_a_private_address_is_406_and_records_nothing(make_app, db, url):
    client = make_app(config(allowPrivateCallbacks=False)).test_client()

    response = client.post(
        "/sendsms", json={"message": "x", "msisdns": ["0830000001"], "callbackUrl": url}
    )

    assert response.status_code == 406
    error = response.get_json()["error"]
    assert "loopback, link-local or private address" in error
    assert "deliveryStatus.allowPrivateCallbacks" in error
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://example.com/x", "callbackUrl must be an http:// or https:// URL with a host"),
        ("http:///x", "callbackUrl must be an http:// or https:// URL with a host"),
        ("http://exa mple.com/", "callbackUrl contains spaces or control characters"),
        ("http://example.com:99999/", "callbackUrl is not a valid URL"),
        ("http://" + "a" * 2000, "callbackUrl is longer than 2000 characters"),
    ],
)
def test_a_callback_url_that_is_not_http_is_406(make_app, db, url, error):
    client = make_app(config()).test_client()
    response = client.post(
        "/sendsms", json={"message": "x", "msisdns": ["0830000001"], "callbackUrl": url}
    )
    assert (response.status_code, response.get_json()) == (406, {"error": error})


def test_a_callback_url_without_a_secret_to_sign_with_is_406(make_app, db, receiver):
    client = make_app(config(callbackSecret="")).test_client()
    response = client.post(
        "/sendsms", json={"message": "x", "msisdns": ["0830000001"], "callbackUrl": receiver.url}
    )
    assert response.status_code == 406
    assert "deliveryStatus.callbackSecret is not set" in response.get_json()["error"]


def test_a_host_that_resolves_privately_is_refused_public_ones_pass():
    def resolving_to(address):
        return lambda host, port, type: [(2, 1, 6, "", (address, port))]

    url = "https://hooks.example.com/x"
    with pytest.raises(Exception, match="hooks.example.com is at 10.0.0.7"):
        webhooks.check_callback_url(url, False, resolving_to("10.0.0.7"))
    assert webhooks.check_callback_url(url, False, resolving_to("93.184.215.14")) == url
    assert webhooks.check_callback_url("http://10.0.0.7/", True, resolving_to("x")) == (
        "http://10.0.0.7/"
    )


def test_the_address_is_checked_again_before_each_delivery(make_app, db, receiver):
    # Accepted while private callbacks were allowed; the dispatcher no longer allows them,
    # as if the caller's host name had come to point at a private address since.
    client = make_app(config()).test_client()
    send(client, ["0830000001"], callbackUrl=receiver.url)
    strict = make_app(config(allowPrivateCallbacks=False))
    with running_dispatcher(strict):
        wait_until(lambda: rows(db, "SELECT state FROM webhook_outbox") == [("dead",)])

    [(error,)] = rows(db, "SELECT lasterror FROM webhook_outbox")
    assert error.startswith("not sent: callbackUrl host 127.0.0.1 is at 127.0.0.1")
    assert receiver.deliveries == []


def test_enqueue_webhook_delivers_any_payload_signed(make_app, database_url, db, receiver):
    app = make_app(config())
    database = Database(database_url)
    with database.transaction() as cur:
        enqueue_webhook(cur, "message.inbound", receiver.url, {"msisdn": "27830000001"})
    with running_dispatcher(app):
        wait_until(lambda: receiver.deliveries)
    database.close()
    body = receiver.deliveries[0].verified()
    assert (body["type"], body["data"]) == ("message.inbound", {"msisdn": "27830000001"})


def test_a_new_secret_from_the_command_is_accepted_by_the_config(make_app, db, runner):
    secret = runner.invoke(args=["webhooks", "secret"]).output.strip()
    app = make_app(config(callbackSecret=secret))
    assert app.extensions["messaging"].config.delivery_status.callback_secret == secret
    assert json.dumps(secret).startswith('"whsec_')


# --- settings ---


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (
            {"callbackUrl": "https://hooks.example.com/sms", "callbackSecret": ""},
            "deliveryStatus.callbackUrl needs deliveryStatus.callbackSecret",
        ),
        ({"callbackSecret": "whsec_tooShort"}, "deliveryStatus.callbackSecret: expected a secret"),
        ({"callbackSecret": "not-a-whsec-secret-at-all-no"}, "deliveryStatus.callbackSecret"),
        ({"callbackUrl": "ftp://x"}, "deliveryStatus.callbackUrl: expected an http:// or https://"),
        ({"callbackConcurrency": 0}, "deliveryStatus.callbackConcurrency: expected an integer"),
        ({"callbackTimeout": 0}, "deliveryStatus.callbackTimeout: expected a number > 0"),
        ({"allowPrivateCallbacks": "yes"}, "deliveryStatus.allowPrivateCallbacks: expected true"),
    ],
)
def test_a_bad_webhook_setting_stops_start_up_naming_it(status, error):
    settings = base_config()
    settings["deliveryStatus"].update(status)
    with pytest.raises(ConfigError) as raised:
        config_from_mapping(settings)
    assert error in str(raised.value)
    assert "tooShort" not in str(raised.value) and "not-a-whsec" not in str(raised.value)


def test_the_secret_stays_out_of_the_settings_repr():
    settings = base_config()
    settings["deliveryStatus"]["callbackSecret"] = SECRET
    assert SECRET not in repr(config_from_mapping(settings))
