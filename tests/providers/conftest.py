"""Fixtures for provider plugin tests: a fake provider server and recorded sleeps."""

import pytest

from messaging.config import OptionMap, ProviderSettings
from tests.providers.fakes import FakeProvider


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
    options = OptionMap(values.pop("options", {}).items())
    values.setdefault("timeout", 0.5)
    values.setdefault("retries", 2)
    values.setdefault("url", fake.url if fake else None)
    return ProviderSettings(name=name, token=token, options=options, **values)
