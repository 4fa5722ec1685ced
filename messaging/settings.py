"""The service's settings: typed, frozen, validated once at start (config.py fills them).

Nothing reads raw config data after start-up; every module takes the settings it needs.
Secret values (tokens, passwords, custom fields, provider options) stay out of every repr.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field


class OptionMap(Mapping[str, str]):
    """Read-only string map whose lookups ignore key case, like every other config key."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        self._items = dict(items)
        self._by_lower = {key.lower(): key for key in self._items}

    def __getitem__(self, key: str) -> str:
        try:
            return self._items[self._by_lower[key.lower()]]
        except (KeyError, AttributeError):
            raise KeyError(key) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        # Option values are often API secrets: show only the keys.
        return f"OptionMap(keys={sorted(self._items)!r})"


@dataclass(frozen=True)
class ProviderSettings:
    name: str = "MockProvider"
    enabled: bool = True
    token: str = field(default="", repr=False)
    max_message_segments: int = 10
    max_batch_size: int = 500
    countries: tuple[str, ...] = ("ZA",)
    max_recipients: int = 100_000
    url: str | None = None
    sender: str | None = None
    timeout: float = 30.0
    retries: int = 3
    # The original passed every number valid for the country (landlines too).
    mobile_only: bool = False
    # Replace look-alike characters (typographic quotes, dashes...) with GSM-7 ones.
    smart_encoding: bool = True
    # How long POST /sendsms waits for its send before answering with what is known.
    wait_seconds: float = 10.0
    # Provider requests one send may have in flight at once.
    max_concurrent_requests: int = 4
    # How long a provider that is down or refusing for now is retried before giving up.
    retry_window: float = 3600.0
    # Sends with fewer recipients go ahead of bulk batches.
    bulk_threshold: int = 100
    custom1: str = field(default="", repr=False)
    custom2: str = field(default="", repr=False)
    custom3: str = field(default="", repr=False)
    max_requests_per_second: float | None = None
    options: Mapping[str, str] = field(default_factory=OptionMap, repr=False)
    # Several providers (smsProviders): the name `sms.provider` stores and
    # /callbacks/<id> routes on (None: `name`), its share of the traffic, and the numbers
    # it serves (countries by calling code, international prefixes; both empty: all).
    id: str | None = None
    weight: float = 1.0
    route_countries: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The provider's configured name: its id, else its plugin's name."""
        return self.id or self.name


@dataclass(frozen=True)
class HealthSettings:
    """When a provider loses weight, and how it earns it back (providerHealth)."""

    # The counts a provider is judged on: calls and final statuses in the last `window`.
    window: float = 60.0
    # Refused or failed calls over all calls above which it is taken out (weight 0)...
    max_failure_rate: float = 0.25
    min_calls: int = 5  # ...once it had at least this many calls in the window
    # Mean seconds from a send to its messages' final status above which it loses a step...
    max_time_to_final: float = 600.0
    min_finals: int = 20  # ...once at least this many messages became final in the window
    # A provider that behaves regains this fraction of its weight each `recovery_interval`.
    recovery_step: float = 0.25
    recovery_interval: float = 60.0


@dataclass(frozen=True)
class AuthSettings:
    service: str = "serviceauth"
    enabled: bool = False
    url: str = "http://127.0.0.1"
    permission: str = "4"
    cache_seconds: float = 30.0
    timeout: float = 5.0
    # A caller holding this permission (serviceauth role) sees every caller's sends.
    admin_permission: str | None = None
    # Origins a cookie-authenticated browser may send from (besides same-site).
    allowed_origins: tuple[str, ...] = ()
    # Signs the operator page's sign-in cookie and CSRF tokens; empty: one made at random
    # on first use and kept in the database (signin.py).
    session_secret: str = field(default="", repr=False)


@dataclass(frozen=True)
class DeliveryStatusSettings:
    enabled: bool = True
    update_interval: float = 900.0
    window: float = 1800.0
    # Status webhooks: where sends that name no callbackUrl send their events (None: none).
    callback_url: str | None = None
    # The Standard Webhooks secret ("whsec_" + base64) every webhook is signed with.
    callback_secret: str = field(default="", repr=False)
    # Let callers name callback URLs on loopback, link-local and private addresses.
    allow_private_callbacks: bool = False
    # Seconds one webhook POST may take, and how many a dispatcher has in flight at once.
    callback_timeout: float = 10.0
    callback_concurrency: int = 4
    # poll-status purges messages older than this many days (None: never).
    retention_days: int | None = None


# First words of a reply that put its sender on the suppression list, and take it off.
OPT_OUT_KEYWORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
OPT_IN_KEYWORDS = ("START", "UNSTOP")


@dataclass(frozen=True)
class InboundSettings:
    # Where each stored reply is forwarded (a signed webhook); None: kept only.
    callback_url: str | None = None
    opt_out_keywords: tuple[str, ...] = OPT_OUT_KEYWORDS
    opt_in_keywords: tuple[str, ...] = OPT_IN_KEYWORDS


# An API key's own limit that lifts the config's (stored as -1; see migration 0022).
UNLIMITED = -1


@dataclass(frozen=True)
class Limits:
    """What one caller (originator) may send: None is no limit. Config `limits` gives every
    caller's; an API key's own (limits.py) take their place."""

    requests_per_minute: int | None = None
    recipients_per_day: int | None = None
    # Recipients outside the first of smsProvider.countries.
    international_per_day: int | None = None


@dataclass(frozen=True)
class DatabaseSettings:
    driver: str = "embedded"
    host: str = "localhost"
    port: int = 5432
    database: str = "messaging"
    user: str = ""
    password: str = field(default="", repr=False)
    ssl: bool = False
    data_dir: str = "var/pgdata"
    # Off behind PgBouncer in transaction mode (see db.PreparingConnection).
    prepared_statements: bool = True


@dataclass(frozen=True)
class Config:
    http_port: int = 2016
    logfile: str = ""
    log_format: str = "text"
    max_body_bytes: int = 10 * 1024 * 1024
    provider: ProviderSettings = field(default_factory=ProviderSettings)
    # Every provider, the first being `provider` (smsProvider, else smsProviders[0]);
    # empty: `provider` alone.
    providers: tuple[ProviderSettings, ...] = ()
    health: HealthSettings = field(default_factory=HealthSettings)
    authentication: AuthSettings = field(default_factory=AuthSettings)
    delivery_status: DeliveryStatusSettings = field(default_factory=DeliveryStatusSettings)
    inbound: InboundSettings = field(default_factory=InboundSettings)
    limits: Limits = field(default_factory=Limits)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    database_url: str | None = field(default=None, repr=False)
    # One line per unknown key the file gave (loaded and ignored); logged at start-up.
    warnings: tuple[str, ...] = ()

    @property
    def all_providers(self) -> tuple[ProviderSettings, ...]:
        return self.providers or (self.provider,)


# Seconds of backoff a provider call may sleep between two of its attempts (a margin over
# HttpProvider's longest backoff sleep).
BACKOFF_ALLOWANCE = 30.0


def call_budget(settings: ProviderSettings) -> float:
    """Return the longest one provider call may take: every attempt timing out, plus backoff."""
    return settings.timeout * (settings.retries + 1) + BACKOFF_ALLOWANCE * settings.retries
