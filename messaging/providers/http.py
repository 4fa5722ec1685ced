"""HttpProvider: the HTTP plumbing every real provider shares.

One keep-alive session per provider, (connect, read) timeouts, a log line per call with
its timing (never a secret: only method, path and status), retries with exponential
backoff and jitter, throttling, and bounded parallelism for one-recipient-per-request APIs.

Resending rules (a duplicate SMS cannot be taken back, a missed retry can):
- nothing reached the provider (connection refused, connect timeout): resend;
- the provider refused before processing (429, 503, or what a plugin's
  `refused_for_now` recognises): resend after Retry-After;
- the request may have been processed (read timeout, connection dropped mid-answer,
  other 5xx): resend only when `resend_is_safe` says the provider de-duplicates the
  request; otherwise raise `OutcomeUnknown` and the plugin reports those recipients as
  not accepted with reason "provider outcome unknown".
"""

import email.utils
import hmac
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from messaging.errors import ProviderError, ProviderUnavailable, ReceiptRejected
from messaging.providers.base import Provider, Receipt, Recipient, SendResult, StatusUpdate

log = logging.getLogger(__name__)

OUTCOME_UNKNOWN = "provider outcome unknown"
# Status codes that say "not processed, come back later".
REFUSED_STATUSES = frozenset({429, 503})
MAX_BACKOFF = 30.0  # seconds, cap of one backoff sleep
MAX_RETRY_AFTER = 60.0  # seconds, cap of a provider's Retry-After
PARALLEL_REQUESTS = 8


class OutcomeUnknown(Exception):
    """The request may have reached the provider and resending it is not safe."""


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


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Return a Retry-After header (seconds or an HTTP date) as seconds, capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


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
    """A provider spoken to over HTTP; subclasses build requests and map answers."""

    default_url = ""
    # Documented requests-per-second limit, used when maxRequestsPerSecond is not set.
    default_max_requests_per_second: float | None = None
    # Does the provider de-duplicate a resent send (an idempotency key of ours)?
    resend_is_safe = False
    # Option names the pushed receipt's shared secret is read from, and the field it comes in.
    receipt_secret_option = "callbackSecret"
    receipt_secret_field = "secret"

    def __init__(self, settings, *, sleep: Callable[[float], Any] = time.sleep, clock=None):
        super().__init__(settings)
        self.base_url = (settings.url or self.default_url).rstrip("/")
        self.sleep = sleep
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=PARALLEL_REQUESTS)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        rate = settings.max_requests_per_second or self.default_max_requests_per_second
        # Through self.sleep, so a test can swap the sleep of a provider an app built.
        self.throttle = TokenBucket(rate, clock or time.monotonic, lambda s: self.sleep(s))
        self.timeouts = (min(settings.timeout, 10.0), settings.timeout)

    def close(self) -> None:
        self.session.close()

    # --- settings helpers ---

    def option(self, *names: str, default: str = "") -> str:
        """Return the first provider option set among `names` (case-insensitive)."""
        for name in names:
            value = self.settings.options.get(name)
            if value:
                return value
        return default

    # --- the request loop ---

    def request(self, method: str, path: str, *, resend_safe: bool = False, **kwargs):
        """Send one HTTP request with throttling, retries and logging; return the response.

        Raise ProviderError when the provider stays unavailable, OutcomeUnknown when the
        request may have been processed and resending it could duplicate a message.
        """
        resend_safe = resend_safe or method.upper() == "GET"
        url = self.base_url + path
        path = path or "/"
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            self.throttle.acquire()
            began = time.perf_counter()
            try:
                response = self.session.request(method, url, timeout=self.timeouts, **kwargs)
            except requests.RequestException as err:
                elapsed = time.perf_counter() - began
                sent = not _never_sent(err)
                log.warning(
                    "%s %s %s failed after %.3fs (attempt %d/%d): %s",
                    self.name,
                    method,
                    path,
                    elapsed,
                    attempt,
                    attempts,
                    type(err).__name__,
                )
                if sent and not resend_safe:
                    raise OutcomeUnknown(type(err).__name__) from None
                if attempt == attempts:
                    # Never reached it: safe to send again later. (Reached it, though the
                    # provider de-duplicates within this call: not once the call is over.)
                    error = ProviderError if sent else ProviderUnavailable
                    raise error("", f"{self.name} unreachable ({type(err).__name__})") from None
                self.sleep(self._backoff(attempt))
                continue
            elapsed = time.perf_counter() - began
            log.info(
                "%s %s %s -> %d in %.3fs (attempt %d/%d)",
                self.name,
                method,
                path,
                response.status_code,
                elapsed,
                attempt,
                attempts,
            )
            status = response.status_code
            refused = status in REFUSED_STATUSES or self.refused_for_now(response)
            if status < 500 and not refused:
                return response
            if not refused and not resend_safe:
                # A 500/502/504 may come after the provider did the work.
                raise OutcomeUnknown(f"HTTP {status}")
            if attempt == attempts:
                return response
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            self.sleep(self._backoff(attempt) if wait is None else wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def refused_for_now(self, response) -> bool:
        """Does this answer refuse the request unprocessed, to be retried later, though its
        status is not 429 or 503? (A provider that says so in its body overrides this.)"""
        return False

    def _backoff(self, attempt: int) -> float:
        base = min(0.5 * 2 ** (attempt - 1), MAX_BACKOFF)
        return base + random.uniform(0, base)

    def unavailable(self, response) -> ProviderError:
        """The error for a provider that stayed busy or broken through every retry: one that
        refused the request unprocessed (429, 503, refused_for_now) may be sent it later."""
        code = str(response.status_code)
        if response.status_code in REFUSED_STATUSES or self.refused_for_now(response):
            wait = retry_after_seconds(response.headers.get("Retry-After"))
            return ProviderUnavailable(code, "Provider unavailable", retry_after=wait)
        return ProviderError(code, "Provider unavailable")

    # --- one recipient per request ---

    def send_each(
        self, recipients: list[Recipient], send_one: Callable[[Recipient], SendResult]
    ) -> list[SendResult]:
        """Send to each recipient with bounded parallelism.

        A whole-request failure (auth, credit) stops the rest of the batch; it is raised
        when nobody was accepted, else reported on each recipient it stopped.
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
            )

        results = self.map_parallel(run, recipients)
        if stop and not any(result.accepted for result in results):
            raise stop[0]
        return results

    def map_parallel(self, function: Callable, items: Iterable) -> list:
        """Apply `function` to every item on at most PARALLEL_REQUESTS threads, in order."""
        items = list(items)
        if len(items) <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(min(PARALLEL_REQUESTS, len(items))) as pool:
            return list(pool.map(function, items))

    def query_status(self, provider_ids: list[str]) -> list[StatusUpdate]:
        """Ask about each id with the plugin's `query_one`, a bounded number at once."""
        if not self.can_query_status:
            return super().query_status(provider_ids)
        return self.map_parallel(self.query_one, provider_ids)

    def query_one(self, provider_id: str) -> StatusUpdate:
        """Ask the provider about one message (plugins with a status query define it)."""
        raise NotImplementedError

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


def unknown_outcome(recipient: Recipient) -> SendResult:
    return SendResult(recipient.reference, accepted=False, reason=OUTCOME_UNKNOWN)


def json_or_none(response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
