"""The provider interface: what the service asks of every SMS provider plugin."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from messaging.config import ConfigError, ProviderSettings

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "messaging.providers"

# Our message statuses (SPEC "Delivery status").
QUEUED, SENT, DELIVERED, FAILED = "queued", "sent", "delivered", "failed"


@dataclass(frozen=True)
class Recipient:
    msisdn: str  # international digits, no "+"
    reference: str  # our own id for this message (sms.id); a client reference where supported


@dataclass(frozen=True)
class SendResult:
    reference: str
    accepted: bool
    provider_id: str | None = None
    error_code: str | None = None
    reason: str | None = None
    segments: int | None = None


@dataclass(frozen=True)
class StatusUpdate:
    provider_id: str
    status: str  # SENT (still in flight), DELIVERED or FAILED
    code: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Receipt:
    """A pushed delivery report exactly as it arrived over HTTP."""

    method: str
    url: str  # the full URL the provider called (signatures may cover it)
    headers: Mapping[str, str]
    form: Mapping[str, str]  # query string and form fields together
    json: Any = None  # the parsed body when it was JSON
    body: bytes = field(default=b"", repr=False)


class Provider:
    """One SMS provider. Subclasses build requests and map answers; nothing else."""

    name = "provider"
    max_batch_size = 1000
    can_query_status = False
    # How many ids one status query may carry; poll-status asks one id a call when 1.
    status_batch_size = 1
    # How a pushed receipt proves it came from the provider: "signature" (HMAC of the
    # request), "secret" (a shared secret in the request), or "none" (cannot be checked).
    receipt_auth = "none"

    def __init__(self, settings: ProviderSettings):
        self.settings = settings

    def send_batch(
        self, recipients: list[Recipient], text: str, sender: str | None
    ) -> list[SendResult]:
        """Send one text to a batch of recipients; one result per recipient.

        Raise `messaging.errors.ProviderError` when the provider refuses the whole request.
        """
        raise NotImplementedError

    def query_status(self, provider_ids: list[str]) -> list[StatusUpdate]:
        """Ask the provider for the current status of these messages."""
        raise NotImplementedError(f"{self.name} has no status query")

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        """Check a pushed delivery receipt and map it to status updates.

        Raise `messaging.errors.ReceiptRejected` when it fails the provider's check.
        """
        raise NotImplementedError(f"{self.name} takes no pushed receipts")

    # Can the provider look sends up by our client reference (`find_sends`)?
    can_find_sends = False

    def find_sends(self, recipients: list[Recipient]) -> list[SendResult]:
        """Say what became of a batch that may have reached the provider: a result for each
        recipient it can answer for (accepted with its id, or refused); leave out the rest."""
        raise NotImplementedError(f"{self.name} cannot look sends up")

    def close(self) -> None:
        """Release connections held by the provider."""


def installed_providers() -> dict[str, type[Provider]]:
    """Return the installed provider plugins keyed by lower-cased name."""
    found = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name.lower()] = entry
    return found


def load_provider(settings: ProviderSettings) -> Provider:
    """Instantiate the plugin named by smsProvider.name (case-insensitive)."""
    plugins = installed_providers()
    entry = plugins.get(settings.name.lower())
    if entry is None:
        names = ", ".join(sorted(e.name for e in plugins.values())) or "none"
        raise ConfigError(
            f"smsProvider.name: unknown provider {settings.name!r}; installed: {names}"
        )
    provider_class = entry.load()
    return provider_class(settings)
