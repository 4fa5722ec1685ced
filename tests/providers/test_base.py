"""The provider contract: plugin discovery, declared capabilities, and the base's timing."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from messaging import create_app
from messaging.config import ConfigError, ProviderSettings, config_from_mapping
from messaging.providers.base import Provider, installed_providers
from messaging.providers.http import HttpProvider
from tests.conftest import base_config

# name -> (status query, pushed receipts, resend is safe), as the README's table says.
PLUGINS = {
    "MockProvider": (True, True, False),
    "Clickatell": (True, True, False),
    "ClickatellOne": (True, True, False),
    "Twilio": (True, True, False),
    "BulkSMS": (True, True, True),
    "AfricasTalking": (False, True, False),
    "Vonage": (False, True, False),
}


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


def overrides(plugin_class, method: str, base=Provider) -> bool:
    return getattr(plugin_class, method) is not getattr(base, method)


@pytest.mark.parametrize(("name", "declared"), PLUGINS.items())
def test_each_plugin_declares_its_capabilities_and_implements_what_it_declares(name, declared):
    plugin_class = installed_providers()[name.lower()].load()
    status_query, receipts, resend_safe = declared
    assert (plugin_class.can_query_status, plugin_class.takes_receipts) == (status_query, receipts)
    assert plugin_class.resend_is_safe is resend_safe
    assert not plugin_class.can_find_sends
    if issubclass(plugin_class, HttpProvider):  # asks one id at a time
        assert overrides(plugin_class, "query_one", HttpProvider) is status_query
    else:
        assert overrides(plugin_class, "try_query_status") is status_query
    assert overrides(plugin_class, "parse_receipt") is receipts
    assert overrides(plugin_class, "try_send_batch")


class PushNothing(Provider):
    name = "PushNothing"


def test_a_receipt_for_a_provider_that_declares_none_is_404(app, client):
    app.extensions["messaging"].provider = PushNothing(ProviderSettings(name="PushNothing"))
    answer = client.post("/callbacks/PushNothing", json={"id": "x", "status": "delivered"})
    assert answer.status_code == 404
    assert answer.get_json() == {"error": "provider PushNothing takes no pushed receipts"}


def provider_calls(client, operation: str) -> float:
    """How many MockProvider calls of `operation` /metrics has timed."""
    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(
        found.value
        for family in families
        for found in family.samples
        if found.name == "messaging_provider_request_duration_seconds_count"
        and found.labels == {"provider": "MockProvider", "operation": operation}
    )


def test_the_base_times_every_provider_call_poll_status_included(app, client, runner):
    sends, queries = provider_calls(client, "send"), provider_calls(client, "status")
    numbers = ["0830000001", "0830000002", "0830000006"]
    assert client.post("/sendsms", json={"message": "hi", "msisdns": numbers}).status_code == 200

    result = runner.invoke(args=["poll-status"])

    assert result.exit_code == 0, result.output
    assert "checked 3, delivered 2, failed 1" in result.output
    assert provider_calls(client, "send") == sends + 1
    # MockProvider answers any number of ids in one call: one status query for all three.
    assert provider_calls(client, "status") == queries + 1
