"""The shared HTTP plumbing: plugin discovery, throttling, Retry-After, connection errors, logs."""

import logging
import threading
from email.utils import formatdate

import pytest

from messaging import create_app
from messaging.config import ConfigError, config_from_mapping
from messaging.errors import ProviderError
from messaging.providers.base import Recipient, installed_providers
from messaging.providers.clickatell import Clickatell
from messaging.providers.http import TokenBucket, retry_after_seconds
from tests.conftest import base_config, free_port
from tests.providers.conftest import settings
from tests.providers.fakes import Reply

PLUGINS = [
    "MockProvider",
    "Clickatell",
    "ClickatellOne",
    "Twilio",
    "BulkSMS",
    "AfricasTalking",
    "Vonage",
]


def test_every_provider_is_installed_as_an_entry_point():
    installed = installed_providers()
    for name in PLUGINS:
        assert installed[name.lower()].load().name == name


@pytest.mark.parametrize("spelling", ["bulksms", "BULKSMS", "BulkSms"])
def test_provider_names_match_case_insensitively(make_app, spelling):
    app = make_app(base_config(name=spelling))
    assert app.extensions["messaging"].provider.name == "BulkSMS"


def test_an_unknown_provider_stops_start_up_naming_the_installed_ones(database_url):
    with pytest.raises(ConfigError) as caught:
        create_app(config_from_mapping(base_config(name="Nexmo2"), database_url))
    message = str(caught.value)
    assert "unknown provider 'Nexmo2'" in message
    for name in PLUGINS:
        assert name in message


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept = []
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            return self.now

    def sleep(self, seconds):
        with self.lock:
            self.slept.append(seconds)


def test_token_bucket_spaces_requests_across_threads():
    clock = FakeClock()
    bucket = TokenBucket(4.0, clock, clock.sleep)
    threads = [threading.Thread(target=bucket.acquire) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The first goes at once; the others wait 0.25 s apart, each for its own slot.
    assert sorted(clock.slept) == pytest.approx([0.25 * n for n in range(1, 8)])


def test_token_bucket_without_a_rate_never_waits():
    clock = FakeClock()
    bucket = TokenBucket(None, clock, clock.sleep)
    for _ in range(5):
        bucket.acquire()
    assert clock.slept == []


def test_throttle_holds_across_the_batches_of_a_send(fake):
    fake.default = lambda request: Reply(
        202,
        {
            "data": {
                "message": [
                    {"accepted": True, "to": n, "apiMessageId": n} for n in request.json["to"]
                ]
            }
        },
    )
    clock = FakeClock()
    plugin = Clickatell(
        settings(fake, "Clickatell", max_requests_per_second=2.0), sleep=clock.sleep, clock=clock
    )
    for number in ("27830000001", "27830000002", "27830000003"):
        plugin.send_batch([Recipient(number, number[-1])], "x", None)
    assert clock.slept == pytest.approx([0.5, 1.0])


def test_retry_after_reads_seconds_and_http_dates_and_is_capped():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("100000") == 60.0
    assert retry_after_seconds(formatdate(1_000_030, usegmt=True), now=1_000_000) == pytest.approx(
        30
    )
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_connection_refused_is_retried_then_reported_as_unreachable():
    port = free_port()  # nothing listens there
    sleeps = []
    plugin = Clickatell(
        settings(None, "Clickatell", url=f"http://127.0.0.1:{port}", retries=2),
        sleep=sleeps.append,
    )
    with pytest.raises(ProviderError, match="unreachable"):
        plugin.send_batch([Recipient("27830000001", "1")], "x", None)
    assert len(sleeps) == 2  # a refused connection never reached the provider: safe to retry


def test_logs_show_timing_but_never_the_token(fake, caplog):
    fake.reply(401, {"error": {"code": "001", "description": "Authentication failed"}})
    plugin = Clickatell(settings(fake, "Clickatell", token="very-secret-token"))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderError):
        plugin.send_batch([Recipient("27830000001", "1")], "x", None)
    text = caplog.text
    assert "Clickatell POST /rest/message -> 401 in" in text
    assert "very-secret-token" not in text
