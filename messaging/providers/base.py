"""The provider contract: what the service asks of every SMS provider plugin.

Callers call `send_batch`, `query_status`, `find_sends`, `parse_receipt` and
`parse_inbound`. The first three are the base's: each times the call, logs it and counts
its failures (the `messaging_provider_*` metrics), then hands over to the plugin's `try_*`
method. A plugin implements `try_send_batch` and what it declares: every optional
capability is a flag on this class, next to the method it promises; callers test the
flag, never probe.
A failed SendResult or StatusUpdate carries the failure's kind (TEMPORARY or PERMANENT)
from the plugin's code tables, whose source its docstring names.
"""

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from prometheus_client import Counter, Histogram

from messaging.config import ConfigError, ProviderSettings
from messaging.errors import ProviderError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "messaging.providers"

# Our message statuses (SPEC "Delivery status") a provider reports.
SENT, DELIVERED, FAILED = "sent", "delivered", "failed"
# The reason of a recipient whose request may or may not have reached the provider.
OUTCOME_UNKNOWN = "provider outcome unknown"
# What a failure says of the number (`failureKind`), from each plugin's code tables: a
# later send may get through (handset off, network busy, the account refused for now),
# or will not as things stand (unknown or invalid number, barred, opted out). A failure
# no table classifies (our own reasons, a code not listed) is UNKNOWN_KIND.
TEMPORARY, PERMANENT, UNKNOWN_KIND = "temporary", "permanent", "unknown"

PROVIDER_LATENCY = Histogram(
    "messaging_provider_request_duration_seconds",
    "Time the provider took to answer one call, by provider and operation.",
    ["provider", "operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
PROVIDER_ERRORS = Counter(
    "messaging_provider_errors_total",
    "Provider calls that failed, by provider, operation and the provider's error code "
    '("exception" for an unexpected failure).',
    ["provider", "operation", "code"],
)


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
    # Not processed: the provider refused it for now (unavailable, throttled), so it may
    # be sent again later. Never set on anything that may have reached the provider.
    retry_later: bool = False
    # TEMPORARY or PERMANENT for a refusal the plugin's table classifies, else None.
    failure_kind: str | None = None


@dataclass(frozen=True)
class StatusUpdate:
    provider_id: str
    status: str  # SENT (still in flight), DELIVERED or FAILED
    code: str | None = None
    reason: str | None = None
    # TEMPORARY or PERMANENT for a failure the plugin's table classifies, else None.
    failure_kind: str | None = None


@dataclass(frozen=True)
class Receipt:
    """A pushed delivery report exactly as it arrived over HTTP."""

    method: str
    url: str  # the full URL the provider called (signatures may cover it)
    headers: Mapping[str, str]
    form: Mapping[str, str]  # query string and form fields together
    json: Any = None  # the parsed body when it was JSON
    body: bytes = field(default=b"", repr=False)

    def fields(self) -> dict:
        """Return the query and form fields, with a JSON object body's fields over them."""
        fields = dict(self.form)
        if isinstance(self.json, dict):
            fields.update(self.json)
        return fields


@dataclass(frozen=True)
class InboundMessage:
    """A reply (MO message) the provider pushed, as its wire format gave it."""

    provider_id: str  # the provider's id of this message: it is stored once
    sender: str  # the number that sent it
    recipient: str  # our number or short code it was sent to
    text: str


class OutcomeUnknown(Exception):
    """The request may have reached the provider and sending it again is not safe."""


def unknown_outcome(recipient: Recipient) -> SendResult:
    return SendResult(recipient.reference, accepted=False, reason=OUTCOME_UNKNOWN)


class Provider:
    """One SMS provider. Plugins build requests and map answers; the base does the rest."""

    name = "provider"
    max_batch_size = 1000

    # Optional capabilities, each declared here and signalled only by its flag.
    can_query_status = False  # try_query_status answers the status of sent messages
    status_batch_size = 1  # ids one status query may carry; 1 = one id a call
    can_find_sends = False  # try_find_sends looks sends up by our client reference
    takes_receipts = False  # parse_receipt reads pushed delivery receipts
    takes_inbound = False  # parse_inbound reads pushed replies (MO messages)
    # Error codes of a recipient refused at sending that mean it opted out (e.g. Twilio's
    # 21610): it goes on the suppression list.
    opt_out_codes: frozenset[str] = frozenset()
    resend_is_safe = False  # the provider de-duplicates a send made again (our key)
    # Requests a second the provider allows (None: no limit); a provider that has one
    # waits on `throttle.acquire()` before each request, and a caller may swap `throttle`
    # for a limiter every process shares (dispatch.share_rate_limit).
    requests_per_second: float | None = None
    throttle = None

    def __init__(self, settings: ProviderSettings):
        self.settings = settings

    # --- what callers call ---

    def send_batch(
        self, recipients: list[Recipient], text: str, sender: str | None
    ) -> list[SendResult]:
        """Send one text to a batch of recipients; return one result per recipient.

        Raise ProviderError when the provider refuses the whole request, its child
        ProviderUnavailable when the provider could not take it for now. Recipients whose
        request may have been processed come back not accepted, "provider outcome unknown".
        """
        with self.timed("send", len(recipients)):
            try:
                return self.try_send_batch(recipients, text, sender)
            except OutcomeUnknown:
                return [unknown_outcome(recipient) for recipient in recipients]

    def query_status(self, provider_ids: list[str]) -> list[StatusUpdate]:
        """Ask the provider for the current status of these messages (`can_query_status`)."""
        with self.timed("status", len(provider_ids)):
            return self.try_query_status(provider_ids)

    def find_sends(self, recipients: list[Recipient]) -> list[SendResult]:
        """Look sends up by our reference (`can_find_sends`); leave out those it cannot say."""
        with self.timed("find", len(recipients)):
            return self.try_find_sends(recipients)

    # --- what a plugin implements ---

    def try_send_batch(
        self, recipients: list[Recipient], text: str, sender: str | None
    ) -> list[SendResult]:
        """Send one text to a batch of recipients over the provider's wire format."""
        raise NotImplementedError

    def try_query_status(self, provider_ids: list[str]) -> list[StatusUpdate]:
        """Ask about these messages (a plugin declaring `can_query_status`)."""
        raise NotImplementedError(f"{self.name} declares no status query")

    def try_find_sends(self, recipients: list[Recipient]) -> list[SendResult]:
        """Look sends up by our client reference (a plugin declaring `can_find_sends`)."""
        raise NotImplementedError(f"{self.name} declares no send lookup")

    def parse_receipt(self, receipt: Receipt) -> list[StatusUpdate]:
        """Check a pushed delivery receipt and map it to status updates (`takes_receipts`).

        Raise `messaging.errors.ReceiptRejected` when it fails the provider's check.
        """
        raise NotImplementedError(f"{self.name} declares no pushed receipts")

    def parse_inbound(self, receipt: Receipt) -> list[InboundMessage]:
        """Check pushed replies the way receipts are checked and read them (`takes_inbound`).

        Raise `messaging.errors.ReceiptRejected` when they fail the provider's check.
        """
        raise NotImplementedError(f"{self.name} declares no pushed replies")

    def refused_for_now(self, answer) -> bool:
        """Does this answer refuse the request unprocessed, to be tried again later, though
        nothing else about it says so (e.g. a throttling code in an HTTP 200)?"""
        return False

    # --- timing, logging and counting ---

    @contextlib.contextmanager
    def timed(self, operation: str, items: int):
        """Time one call, log it, and count it as failed if it raises."""
        began = time.perf_counter()
        try:
            yield
        except ProviderError as err:
            PROVIDER_ERRORS.labels(self.name, operation, err.code or "unknown").inc()
            log.info("%s %s of %d failed: %s", self.name, operation, items, err.message)
            raise
        except Exception as err:
            PROVIDER_ERRORS.labels(self.name, operation, "exception").inc()
            # The type only: an exception's text may quote a URL with a secret.
            log.info("%s %s of %d failed: %s", self.name, operation, items, type(err).__name__)
            raise
        else:
            log.debug(
                "%s %s of %d in %.3fs", self.name, operation, items, time.perf_counter() - began
            )
        finally:
            PROVIDER_LATENCY.labels(self.name, operation).observe(time.perf_counter() - began)


def installed_providers() -> dict[str, type[Provider]]:
    """Return the installed provider plugins keyed by lower-cased name."""
    found = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found[entry.name.lower()] = entry
    return found


def load_provider(settings: ProviderSettings, path: str = "smsProvider") -> Provider:
    """Instantiate the plugin named by smsProvider.name (case-insensitive)."""
    plugins = installed_providers()
    entry = plugins.get(settings.name.lower())
    if entry is None:
        names = ", ".join(sorted(e.name for e in plugins.values())) or "none"
        raise ConfigError(f"{path}.name: unknown provider {settings.name!r}; installed: {names}")
    provider_class = entry.load()
    return provider_class(settings)
