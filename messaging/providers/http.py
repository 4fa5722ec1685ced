"""HttpProvider: the HTTP plumbing every real provider shares.

One keep-alive session per provider, (connect, read) timeouts, a log line per request
with its timing (never a secret: only method, path and status), retries with
exponential backoff and jitter, a replaceable throttle, and bounded parallelism for
one-recipient-per-request APIs. A plugin only builds requests and reads answers:
`request` hands it no 5xx, no 429 and nothing `refused_for_now` recognises.

Resending rules (a duplicate SMS cannot be taken back, a missed retry can):
- nothing reached the provider (connection refused, connect timeout): resend;
- the provider refused before processing (429, 503, or what the plugin's
  `refused_for_now` recognises): resend after its Retry-After;
- the request may have been processed (read timeout, connection dropped mid-answer,
  other 5xx): resend only a GET, or when the plugin declares `resend_is_safe` (the
  provider de-duplicates it); otherwise raise `OutcomeUnknown`, and those recipients
  come back not accepted, reason "provider outcome unknown".
When every attempt failed, `ProviderUnavailable` is raised, or `OutcomeUnknown` if an
attempt of a send may have been processed.
"""

import hmac
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, InvalidHeader, NewConnectionError
from urllib3.util import Retry

from messaging.errors import ProviderError, ProviderUnavailable, ReceiptRejected
from messaging.providers.base import (
    InboundMessage,
    OutcomeUnknown,
    Provider,
    Receipt,
    Recipient,
    SendResult,
    StatusUpdate,
    unknown_outcome,
)

log = logging.getLogger(__name__)

# Status codes that say "not processed, come back later".
REFUSED_STATUSES = frozenset({429, 503})
MAX_BACKOFF = 30.0  # seconds, cap of one backoff sleep
MAX_RETRY_AFTER = 60.0  # seconds, cap of the wait for a provider's Retry-After
PARALLEL_REQUESTS = 8
# Used for its Retry-After parser only (seconds or an HTTP date).
_RETRY_AFTER = Retry()


class Throttle(Protocol):
    """What `HttpProvider.throttle` must be: `acquire()` waits until a request may start."""

    def acquire(self) -> None: ...


class TokenBucket:
    """Allow `rate` requests a second, shared by every thread of one provider."""

    def __init__(self, rate: float | None, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self) -> None:
        """Wait until the next request may start."""
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self._sleep(start - now)


def retry_after_seconds(value: str | None) -> float | None:
    """Return a Retry-After header (seconds or an HTTP date) in seconds, None if unreadable."""
    if not value:
        return None
    try:
        return float(_RETRY_AFTER.parse_retry_after(value))
    except InvalidHeader:
        return None


class Failure(NamedTuple):
    """One attempt that failed: the error it ends in, and whether it may have been processed."""

    error: ProviderUnavailable
    maybe_processed: bool
    what: str  # e.g. "ReadTimeout" or "HTTP 500", for the log and OutcomeUnknown


def _never_sent(err: requests.RequestException) -> bool:
    """True when the request certainly did not reach the provider."""
    if isinstance(err, requests.ConnectTimeout):
        return True
    if isinstance(err, requests.ConnectionError):
        reason = err.args[0] if err.args else None
        inner = getattr(reason, "reason", reason)
        return isinstance(inner, NewConnectionError | ConnectTimeoutError)
    return False


class HttpProvider(Provider):
    """A provider spoken to over HTTP; plugins build requests and map answers."""

    default_url = ""
    # Documented requests-per-second limit, used when maxRequestsPerSecond is not set.
    default_max_requests_per_second: float | None = None
    # Option names the pushed receipt's shared secret is read from, and the field it comes in.
    receipt_secret_option = "callbackSecret"
    receipt_secret_field = "secret"

    def __init__(self, settings, *, sleep: Callable[[float], Any] = time.sleep, clock=None):
        super().__init__(settings)
        self.base_url = (settings.url or self.default_url).rstrip("/")
        self.sleep = sleep
        self.session = requests.Session()
        self.parallel_requests = PARALLEL_REQUESTS
        self.requests_per_second = (
            settings.max_requests_per_second or self.default_max_requests_per_second
        )
        # Any object with acquire() may replace it, e.g. a limiter shared between processes.
        # Through self.sleep, so a test can swap the sleep of a provider an app built.
        self.throttle: Throttle = TokenBucket(
            self.requests_per_second, clock or time.monotonic, lambda seconds: self.sleep(seconds)
        )
        self.timeouts = (min(settings.timeout, 10.0), settings.timeout)
        self.session.headers.update(self.headers())
        self.session.auth = self.auth()

    @property
    def parallel_requests(self) -> int:
        """How many requests `send_each` and `map_parallel` have in flight at most."""
        return self._parallel_requests

    @parallel_requests.setter
    def parallel_requests(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"parallel_requests must be at least 1, not {count}")
        self._parallel_requests = count
        # A connection pool as large as the requests every thread of this process may have
        # in flight (maxConcurrentRequests batches at once, `count` requests each): a
        # smaller one opens a connection (a TLS handshake) again for every request past it.
        size = count * self.settings.max_concurrent_requests
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def headers(self) -> dict[str, str]:
        """Return the headers every request carries (a plugin's auth header, Accept...)."""
        return {}

    def auth(self) -> tuple[str, str] | None:
        """Return the HTTP Basic credentials every request carries, if the provider uses them."""
        return None

    def option(self, *names: str, default: str = "") -> str:
        """Return the first provider option set among `names` (case-insensitive)."""
        for name in names:
            value = self.settings.options.get(name)
            if value:
                return value
        return default

    # --- the request loop ---

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """Send one HTTP request with throttling, retries and logging; return the answer.

        Raise ProviderUnavailable when the provider stays unreachable or refusing, and
        OutcomeUnknown when the request may have been processed and resending it could
        duplicate a message.
        """
        harmless = method.upper() == "GET"
        resend_safe = harmless or self.resend_is_safe
        attempts = self.settings.retries + 1
        maybe_processed = False  # by this attempt or an earlier one
        for attempt in range(1, attempts + 1):
            self.throttle.acquire()
            outcome = self._attempt(method, path, kwargs, f"(attempt {attempt}/{attempts})")
            if isinstance(outcome, requests.Response):
                return outcome
            if outcome.maybe_processed and not resend_safe:
                raise OutcomeUnknown(outcome.what)
            maybe_processed = maybe_processed or outcome.maybe_processed
            if attempt == attempts:
                break
            wait = outcome.error.retry_after
            self.sleep(self._backoff(attempt) if wait is None else min(wait, MAX_RETRY_AFTER))
        if maybe_processed and not harmless:
            raise OutcomeUnknown(outcome.what)
        raise outcome.error

    def _attempt(self, method, path, kwargs, attempt: str) -> requests.Response | Failure:
        """Make one attempt; return the answer for the plugin, or how it failed."""
        began = time.perf_counter()
        where = f"{self.name} {method} {path or '/'}"
        try:
            response = self.session.request(
                method, self.base_url + path, timeout=self.timeouts, **kwargs
            )
        except requests.RequestException as err:
            elapsed = time.perf_counter() - began
            log.warning("%s failed after %.3fs %s: %s", where, elapsed, attempt, type(err).__name__)
            unreachable = ProviderUnavailable("", f"{self.name} unreachable ({type(err).__name__})")
            return Failure(unreachable, not _never_sent(err), type(err).__name__)
        elapsed = time.perf_counter() - began
        status = response.status_code
        log.info("%s -> %d in %.3fs %s", where, status, elapsed, attempt)
        refused = status in REFUSED_STATUSES or self.refused_for_now(response)
        if status < 500 and not refused:
            return response
        code, description = self.unavailable_reason(response)
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        error = ProviderUnavailable(code, description, retry_after=retry_after)
        return Failure(error, not refused, f"HTTP {status}")

    def unavailable_reason(self, response) -> tuple[str, str]:
        """Return the (code, description) of an answer that refused the request for now;
        a plugin whose answer names the provider's own code says so here."""
        return str(response.status_code), "Provider unavailable"

    def _backoff(self, attempt: int) -> float:
        base = min(0.5 * 2 ** (attempt - 1), MAX_BACKOFF)
        return base + random.uniform(0, base)

    # --- one recipient per request ---

    def send_each(
        self, recipients: list[Recipient], send_one: Callable[[Recipient], SendResult]
    ) -> list[SendResult]:
        """Send to each recipient with bounded parallelism.

        A whole-request failure (auth, credit, unavailable) stops the rest of the batch;
        it is raised when nobody was accepted, else reported on each recipient it stopped
        (`retry_later` when the provider was only unavailable for now).
        """
        stop: list[ProviderError] = []
        lock = threading.Lock()

        def run(recipient: Recipient) -> SendResult:
            with lock:
                failure = stop[0] if stop else None
            if failure is None:
                try:
                    return send_one(recipient)
                except OutcomeUnknown:
                    return unknown_outcome(recipient)
                except ProviderError as err:
                    with lock:
                        stop.append(err)
                    failure = err
            return SendResult(
                recipient.reference,
                accepted=False,
                error_code=failure.code,
                reason=failure.description,
                retry_later=isinstance(failure, ProviderUnavailable),
            )

        results = self.map_parallel(run, recipients)
        if stop and not any(result.accepted for result in results):
            raise stop[0]
        return results

    def map_parallel(self, function: Callable, items: Iterable) -> list:
        """Apply `function` to every item on at most `parallel_requests` threads, in order."""
        items = list(items)
        if len(items) <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(min(self.parallel_requests, len(items))) as pool:
            return list(pool.map(function, items))

    def try_query_status(self, provider_ids: list[str]) -> list[StatusUpdate]:
        """Ask about each id with the plugin's `query_one`, a bounded number at once."""
        return self.map_parallel(self.query_one, provider_ids)

    def query_one(self, provider_id: str) -> StatusUpdate:
        """Ask the provider about one message (plugins declaring `can_query_status`)."""
        raise NotImplementedError(f"{self.name} declares no status query")

    # --- receipts proven by a shared secret in the callback URL ---

    def check_receipt_secret(self, receipt: Receipt) -> None:
        """Refuse a receipt whose `secret` does not match options.callbackSecret."""
        expected = self.option(self.receipt_secret_option)
        given = receipt.form.get(self.receipt_secret_field, "")
        if not expected:
            raise ReceiptRejected(
                f"{self.name}: smsProvider.options.{self.receipt_secret_option} is not set; "
                "receipts cannot be checked"
            )
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ReceiptRejected(f"{self.name}: receipt secret does not match")


def reply_from_fields(
    receipt: Receipt, message_id: str, sender: str, recipient: str, text: str
) -> list[InboundMessage]:
    """Read one reply from a push's fields (form, query or JSON object), given their names
    in the provider's wire format; none when it carries no id."""
    fields = receipt.fields()
    if not fields.get(message_id):
        return []
    return [
        InboundMessage(
            str(fields[message_id]),
            str(fields.get(sender, "")),
            str(fields.get(recipient, "")),
            str(fields.get(text, "")),
        )
    ]


def json_or_none(response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
