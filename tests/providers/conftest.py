"""Fixtures for provider plugin tests: a fake provider server and recorded sleeps."""

import pytest

from messaging.config import OptionMap, ProviderSettings
from messaging.providers.base import installed_providers
from tests.conftest import rows
from tests.providers.fakes import FakeProvider

TWILIO_SID = "AC0123456789abcdef0123456789abcdef"
# The options each plugin needs besides the token.
OPTIONS = {
    "Twilio": {"accountSid": TWILIO_SID},
    "BulkSMS": {"username": "imqs"},
    "AfricasTalking": {"username": "imqs"},
    "Vonage": {"apiKey": "key1"},
}


@pytest.fixture
def fake():
    server = FakeProvider()
    yield server
    server.stop()


@pytest.fixture
def sleeps():
    """Sleeps a provider asked for, instead of waiting them."""
    return []


def settings(fake, name, token="secret-token", **values) -> ProviderSettings:
    """Provider settings pointing at the fake, with short timeouts for read-timeout tests."""
    options = OptionMap(values.pop("options", OPTIONS.get(name, {})).items())
    values.setdefault("timeout", 0.5)
    values.setdefault("retries", 2)
    values.setdefault("url", fake.url if fake else None)
    return ProviderSettings(name=name, token=token, options=options, **values)


def plugin(name, fake, sleeps, **values):
    """The installed plugin `name` against the fake, recording its sleeps; unthrottled,
    so the only sleeps are backoffs (the throttle has tests of its own)."""
    values.setdefault("max_requests_per_second", 1e9)
    plugin_class = installed_providers()[name.lower()].load()
    return plugin_class(settings(fake, name, **values), sleep=sleeps.append)


# --- end to end: POST /sendsms, then poll-status or a pushed receipt ---

NUMBERS = ["0830000001", "0830000002", "0830000003"]


def send(app):
    """Send "hi" to NUMBERS through the app; return its test client."""
    client = app.test_client()
    body = client.post("/sendsms", json={"message": "hi", "msisdns": NUMBERS}).get_json()
    assert body["messagesSent"] == 3
    return client


def poll(app) -> str:
    """Run `flask poll-status`; return what it printed."""
    result = app.test_cli_runner().invoke(args=["poll-status"])
    assert result.exit_code == 0, result.output
    return result.output


def outcomes(db) -> list[tuple]:
    return rows(db, "SELECT msisdn, status, errorcode FROM sms ORDER BY id")
