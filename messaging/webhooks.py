"""Status webhooks: callback URLs checked, deliveries signed per Standard Webhooks, and the
sender that every dispatcher runs beside its workers.

Every status change of a message is queued in the outbox (queries/webhooks.py) by the
statement that makes it, so a delivery exists exactly when its change committed. The
sender's threads claim one delivery at a time under a lease, POST it with no transaction
open, then drop it (2xx), give it back with back-off (5xx, 429, a timeout, a refused or
failed connection; after the receiver's Retry-After if it gave one; for 24 hours from
its creation), or mark it dead (any other answer,
a redirect included, or a caller's URL that now resolves to a private address). A sender
that dies mid-POST leaves its delivery to be taken over when the lease ends: delivery is
at least once, and receivers drop repeats by the event ids (or the webhook-id).

The body of a status delivery, one POST per send and transaction, at most
EVENTS_PER_WEBHOOK events, in the order they happened:

    {"type": "message.status", "timestamp": "2026-12-01T10:00:00.000000Z",
     "data": {"refNumber": "12", "events": [
         {"id": "evt_345", "refNumber": "12", "msisdn": "27830000001",
          "status": "delivered", "errorCode": "004", "reason": "Delivered to handset",
          "failureKind": null, "providerId": "...", "source": "poll",
          "time": "2026-12-01T10:00:00.000000Z"}, ...]}}
"""

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from messaging.errors import InvalidInput, MessagingError
from messaging.queries.events import STATUS_KIND
from messaging.queries.webhooks import (
    claim_webhook,
    delivered,
    final_statuses,
    mark_dead,
    next_webhook_due_seconds,
    queue_delivery,
    retry_later,
    take_dead,
)

log = logging.getLogger(__name__)

FINAL = ("delivered", "failed")
# Failed deliveries are retried for this long from their creation, then dead.
RETRY_WINDOW = 24 * 3600.0
# Back-off between attempts: doubling from 5 s to at most an hour (about 30 attempts).
FIRST_BACKOFF = 5.0
MAX_BACKOFF = 3600.0
MIN_RETRY_AFTER = 1.0
LEASE_MARGIN = 5.0
# An idle sender is woken by NOTIFY; it looks by itself this often, in case one was missed
# (its LISTEN connection was down).
IDLE_CHECK_SECONDS = 10.0
MAX_URL_LENGTH = 2000
USER_AGENT = "messaging-webhooks"


# --- callback URLs ---


def url_problem(url) -> str | None:
    """Say what is wrong with a callback URL's form, or None."""
    if not isinstance(url, str):
        return "must be a string"
    if len(url) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


def address_problem(url: str, resolve=socket.getaddrinfo) -> str | None:
    """Resolve a callback URL's host; say which address is not public (loopback,
    link-local, private, reserved), or None when all are. Raises OSError (socket.gaierror)
    when the host does not resolve."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    infos = resolve(parts.hostname, port, type=socket.SOCK_STREAM)
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if not address.is_global:
            return (
                f"host {parts.hostname} is at {address}, a loopback, link-local or private "
                "address (deliveryStatus.allowPrivateCallbacks allows that)"
            )
    return None


def check_callback_url(url, allow_private: bool, resolve=socket.getaddrinfo) -> str:
    """Return a caller's callbackUrl, or raise InvalidInput naming what is wrong with it."""
    problem = url_problem(url)
    if problem is None and not allow_private:
        try:
            problem = address_problem(url, resolve)
        except (OSError, UnicodeError):
            problem = f"host {urlsplit(url).hostname} does not resolve"
    if problem is not None:
        raise InvalidInput(f"callbackUrl {problem}")
    return url


# --- signing (Standard Webhooks) ---


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """Return the webhook-signature value: "v1," and the base64 HMAC-SHA256, keyed by the
    secret's bytes, of "<webhook-id>.<webhook-timestamp>.<body>"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, message_id: str, body: str, now: float | None = None) -> dict:
    timestamp = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, message_id, timestamp, body),
    }


# --- the sender ---


@dataclass(frozen=True)
class Delivery:
    id: int
    kind: str
    lane: int | None
    url: str
    check_address: bool
    events: int
    payload: str
    attempts: int

    @property
    def message_id(self) -> str:
        return f"msg_{self.id}"

    @property
    def what(self) -> str:
        """How the log names it (never its URL, which may carry a token)."""
        send = f" of send {self.lane}" if self.lane is not None else ""
        return f"webhook {self.message_id}{send} ({self.events} events)"


@dataclass(frozen=True)
class Attempt:
    """How one POST went: done, or failed with `error`, to retry (after `retry_after`)."""

    done: bool
    error: str = ""
    retry: bool = False
    retry_after: float | None = None


def backoff(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before attempt `attempts + 1`: the receiver's Retry-After when it gave one
    (a second to an hour), else doubling from FIRST_BACKOFF, with jitter."""
    if retry_after is not None:
        return min(max(retry_after, MIN_RETRY_AFTER), MAX_BACKOFF)
    delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (attempts - 1))
    return delay * random.uniform(1.0, 1.25)


def retry_after_seconds(response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None


class Sender:
    """Deliver the outbox on `concurrency` threads until `stop` is set; `wakeup` is set
    when a delivery is queued anywhere (LISTEN)."""

    def __init__(self, services, name: str, stop: threading.Event, wakeup: threading.Event):
        self.db = services.db
        self.settings = services.config.delivery_status
        self.name = name
        self.stop = stop
        self.wakeup = wakeup
        self.lease = 2 * self.settings.callback_timeout + LEASE_MARGIN
        self.delivered = 0
        self._lock = threading.Lock()

    def threads(self) -> list[threading.Thread]:
        return [
            threading.Thread(target=self.run, name=f"webhooks-{n}", daemon=True)
            for n in range(self.settings.callback_concurrency)
        ]

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                if self.deliver_once(session):
                    continue
            except MessagingError as err:
                log.warning("webhooks %s: %s; waiting", self.name, err.message)
                self.stop.wait(1.0)
                continue
            except Exception:
                log.exception("webhooks %s: unexpected error; waiting", self.name)
                self.stop.wait(1.0)
                continue
            self.idle()
        session.close()

    def idle(self) -> None:
        try:
            with self.db.transaction() as cur:
                due = next_webhook_due_seconds(cur)
        except MessagingError:
            due = None
        # Due now yet not claimed: another sender is claiming it this very moment.
        timeout = IDLE_CHECK_SECONDS if due is None else min(IDLE_CHECK_SECONDS, max(due, 0.05))
        if self.wakeup.wait(timeout) and not self.stop.is_set():
            self.wakeup.clear()

    def deliver_once(self, session: requests.Session) -> bool:
        """Claim one delivery and see it through; False when none was due."""
        with self.db.transaction() as cur:
            row = claim_webhook(cur, self.name, self.lease)
        if row is None:
            return False
        delivery = Delivery(*row)
        attempt = self.attempt(session, delivery)
        with self.db.transaction() as cur:
            if attempt.done:
                delivered(cur, delivery.id, self.name)
                state = "delivered"
            elif attempt.retry:
                delay = backoff(delivery.attempts, attempt.retry_after)
                state = retry_later(cur, delivery.id, self.name, delay, attempt.error, RETRY_WINDOW)
            else:
                mark_dead(cur, delivery.id, self.name, attempt.error)
                state = "dead"
        if attempt.done:
            with self._lock:
                self.delivered += 1
            log.debug("%s delivered", delivery.what)
        elif state == "dead":
            log.warning(
                "%s is dead after %d attempt(s): %s",
                delivery.what,
                delivery.attempts,
                attempt.error,
            )
        else:
            log.info("%s failed (%s); trying again later", delivery.what, attempt.error)
        return True

    def attempt(self, session: requests.Session, delivery: Delivery) -> Attempt:
        """POST one delivery, signed; say how it went."""
        if delivery.check_address and not self.settings.allow_private_callbacks:
            try:
                problem = address_problem(delivery.url)
            except (OSError, UnicodeError):
                return Attempt(False, "callbackUrl's host does not resolve", retry=True)
            if problem is not None:
                return Attempt(False, f"not sent: callbackUrl {problem}")
        secret = self.settings.callback_secret
        if not secret:
            return Attempt(False, "deliveryStatus.callbackSecret is not set", retry=True)
        headers = signed_headers(secret, delivery.message_id, delivery.payload)
        timeout = self.settings.callback_timeout
        try:
            response = session.post(
                delivery.url,
                data=delivery.payload.encode(),
                headers=headers,
                timeout=(min(timeout, 5.0), timeout),
                allow_redirects=False,
                stream=True,  # the answer's body is not read: a slow one cannot hold us
            )
        except requests.Timeout:
            return Attempt(False, f"no answer within {timeout:g}s", retry=True)
        except requests.ConnectionError as err:
            # The type only: the message quotes the URL.
            return Attempt(False, f"connection failed ({type(err).__name__})", retry=True)
        except requests.RequestException as err:
            return Attempt(False, f"not sent: {type(err).__name__}")
        status = response.status_code
        response.close()
        if 200 <= status < 300:
            return Attempt(True)
        if status >= 500 or status == 429:
            return Attempt(
                False, f"answered {status}", retry=True, retry_after=retry_after_seconds(response)
            )
        error = f"answered {status}"
        if 300 <= status < 400:
            error += " (redirects are not followed)"
        return Attempt(False, error)


# --- flask webhooks retry ---


@dataclass
class RetrySummary:
    deliveries: int = 0  # dead deliveries taken
    requeued: int = 0  # deliveries queued again
    events: int = 0  # events in them
    superseded: int = 0  # `sent` events left out: a final status followed them already

    def line(self, ref: int) -> str:
        if not self.deliveries:
            return f"webhooks: send {ref} has no dead deliveries"
        text = (
            f"webhooks: send {ref}: {self.deliveries} dead deliveries queued again as "
            f"{self.requeued} ({self.events} events)"
        )
        if self.superseded:
            text += f"; {self.superseded} `sent` events left out (their final status went after)"
        return text


def retry_dead(services, ref: int) -> RetrySummary:
    """Queue a send's dead deliveries again, behind its live ones, in their order.

    A `sent` event whose message has a final status that is not among these dead
    deliveries is left out: that final event was delivered or is queued already, and a
    final status must never be followed by a non-final one.
    """
    summary = RetrySummary()
    with services.db.transaction() as cur:
        dead = take_dead(cur, ref)
        if not dead:
            return summary
        final = final_statuses(cur, ref)
        summary.deliveries = len(dead)
        bodies = [(row, json.loads(row[4])) for row in dead]
        final_dead = {
            event["msisdn"]
            for (_, kind, *_), body in bodies
            if kind == STATUS_KIND
            for event in body["data"]["events"]
            if event["status"] in FINAL
        }
        for (_, kind, url, check_address, payload), body in bodies:
            count = 1
            if kind == STATUS_KIND:
                events = body["data"]["events"]
                kept = [
                    event
                    for event in events
                    if event["status"] in FINAL
                    or event["msisdn"] not in final
                    or event["msisdn"] in final_dead
                ]
                summary.superseded += len(events) - len(kept)
                if not kept:
                    continue
                body["data"]["events"] = kept
                payload, count = json.dumps(body), len(kept)
            queue_delivery(cur, kind, ref, url, check_address, count, payload)
            summary.requeued += 1
            summary.events += count
    return summary
