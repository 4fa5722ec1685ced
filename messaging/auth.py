"""Authentication: every view asks for credentials unless it is marked `@public`.

Both backends fail closed: anything but a clear yes is a 401, and a check that cannot
be made (auth service down, slow or talking nonsense; database down) is a 503, never a
pass. No credential (cookie, token, key) is logged, echoed in an error or stored; the
database holds only hashes of API keys.
"""

import dataclasses
import hashlib
import hmac
import http.cookiejar
import ipaddress
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import cachetools
import requests
from flask import g, request

from messaging import csrf, signin
from messaging.db import Database
from messaging.errors import (
    Forbidden,
    HeadersTooLarge,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
    Unauthorized,
)
from messaging.queries import api_keys
from messaging.segments import is_text
from messaging.settings import AuthSettings, Limits

log = logging.getLogger(__name__)

UNAUTHORIZED = "User unauthorized"
UNAVAILABLE = "authentication service unavailable"


@dataclass(frozen=True)
class Identity:
    name: str  # recorded as sendlog.originator; empty when authentication is off
    admin: bool = False  # sees every caller's sends, not only its own
    # An API key's own limits: None takes config `limits`, settings.UNLIMITED lifts it.
    own_limits: Limits = Limits()

    @property
    def owner(self) -> str | None:
        """Return the originator whose sends this caller may read (None: every one)."""
        return None if self.admin else self.name


# Authentication off: everyone is the same unnamed caller, who sees everything.
ANONYMOUS = Identity("", admin=True)


class NoAuth:
    """authentication.enabled is false: everyone passes, unnamed."""

    def authenticate(self, headers) -> Identity:
        return ANONYMOUS


# --- serviceauth: the original's auth service ---

FORWARDED_HEADERS = ("Cookie", "Authorization")
CACHE_MAX_ENTRIES = 10_000
# Credentials larger than this are not sent on: auth services (and an nginx in front of
# one) refuse such headers, which must not look like the auth service being down (503).
MAX_FORWARDED_BYTES = 16 * 1024
# What an HTTP server answers to headers it will not take (or 400, for malformed ones).
TOO_LARGE_ANSWERS = (413, 414, 431)


class _RefuseCookies(http.cookiejar.DefaultCookiePolicy):
    """Keep no cookie the auth service sets: it would ride along on the next caller's check."""

    def set_ok(self, cookie, request) -> bool:
        return False

    def return_ok(self, cookie, request) -> bool:
        return False


def credentials_key(forwarded: dict[str, str]) -> str:
    """Return the cache key of a set of credentials: a SHA-256, so the cache holds none."""
    canonical = json.dumps([forwarded.get(name) for name in FORWARDED_HEADERS])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ServiceAuth:
    """The original's auth service: forward Cookie and Authorization to GET <url>/auth2/check.

    A yes is cached for `cacheSeconds` under a hash of the credentials, so a revoked
    session or permission can keep working that long (0 turns the cache off). A no is
    never cached: a user who has just logged in or been granted the permission gets in
    at once, and junk credentials cannot push good entries out of the bounded cache.
    """

    def __init__(
        self,
        settings: AuthSettings,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = CACHE_MAX_ENTRIES,
    ):
        self.settings = settings
        self.check_url = settings.url.rstrip("/") + "/auth2/check"
        self.cache = cachetools.TTLCache(cache_size, settings.cache_seconds, timer=clock)
        self._cache_lock = threading.Lock()  # cachetools' caches are not thread-safe
        self.session = requests.Session()
        # Forward exactly the caller's headers: without trust_env, requests would swap in
        # ~/.netrc credentials. Proxies from the environment are still honoured.
        self.session.trust_env = False
        self.proxies = requests.utils.get_environ_proxies(self.check_url)
        self.session.cookies.set_policy(_RefuseCookies())

    def authenticate(self, headers) -> Identity:
        forwarded = {name: headers[name] for name in FORWARDED_HEADERS if headers.get(name)}
        if not forwarded:
            raise Unauthorized(UNAUTHORIZED)
        size = sum(len(name) + 2 + len(value) for name, value in forwarded.items())
        if size > MAX_FORWARDED_BYTES:
            log.info("credentials of %d bytes not forwarded: too large", size)
            raise HeadersTooLarge(
                f"Cookie and Authorization headers carry {size} bytes; at most "
                f"{MAX_FORWARDED_BYTES} can be forwarded to the auth service"
            )
        key = credentials_key(forwarded)
        with self._cache_lock:
            identity = self.cache.get(key)
        if identity is None:
            identity = self.check(forwarded)
            with self._cache_lock:
                self.cache[key] = identity
        return identity

    def check(self, forwarded: dict[str, str]) -> Identity:
        """Ask the auth service; return the identity or raise Unauthorized/ServiceUnavailable."""
        try:
            response = self.session.get(
                self.check_url,
                headers=forwarded,
                timeout=self.settings.timeout,
                proxies=self.proxies,
                allow_redirects=False,
            )
        except requests.exceptions.InvalidHeader:
            # A header value requests will not send (control characters): not credentials.
            raise Unauthorized(UNAUTHORIZED) from None
        except requests.Timeout:
            log.error("auth service gave no answer within %ss", self.settings.timeout)
            raise ServiceUnavailable(UNAVAILABLE) from None
        except requests.RequestException as err:
            # Only the type: the message of some errors can quote the request.
            log.error("auth service unreachable: %s", type(err).__name__)
            raise ServiceUnavailable(UNAVAILABLE) from None
        if response.status_code in (400, 401, 403):
            log.info("auth service refused the credentials (%s)", response.status_code)
            raise Unauthorized(UNAUTHORIZED)
        if response.status_code in TOO_LARGE_ANSWERS:
            log.info("auth service refused credentials too large (%s)", response.status_code)
            raise HeadersTooLarge("the auth service refused the credentials as too large")
        if response.status_code != 200:
            log.error("auth service answered %s; refusing the request", response.status_code)
            raise ServiceUnavailable(UNAVAILABLE)
        identity, roles = self.parse(response)
        if self.settings.permission not in roles:
            log.info("%s lacks permission %s", identity or "user", self.settings.permission)
            raise Unauthorized(UNAUTHORIZED)
        admin_role = self.settings.admin_permission
        return Identity(identity, admin=admin_role is not None and admin_role in roles)

    @staticmethod
    def parse(response) -> tuple[str, set[str]]:
        """Return (Identity, Roles) from a 200; anything but the expected JSON is a 503."""
        try:
            answer = response.json()
        except ValueError:
            answer = None
        roles = answer.get("Roles") if isinstance(answer, dict) else None
        identity = answer.get("Identity", "") if isinstance(answer, dict) else None
        # A string "Roles" would otherwise pass as a list of its characters; an Identity
        # with a lone surrogate could not be stored as a send's originator.
        if not isinstance(roles, list) or not isinstance(identity, str) or not is_text(identity):
            log.error("auth service answered 200 without the expected JSON; refusing")
            raise ServiceUnavailable(UNAVAILABLE)
        return identity, {str(role) for role in roles}


# --- apikey: keys we issue, stored as hashes ---

API_KEY_PREFIX = "msg_"  # lets secret scanners and people recognise a leaked key
API_KEY = re.compile(r"msg_[A-Za-z0-9_-]{43}")  # the prefix and 32 random bytes, base64url
API_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
BEARER = re.compile(r"Bearer\s+(\S+)\s*", re.IGNORECASE)
LAST_USED_EVERY = 60  # seconds: last_used is a usage hint, not worth a write per request


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """Return the hex SHA-256 of a key (see migration 0004 for why no slow KDF)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def presented_key(headers) -> str | None:
    """Return the key from `X-API-Key: <key>` or `Authorization: Bearer <key>`."""
    key = headers.get("X-API-Key", "").strip()
    if key:
        return key
    bearer = BEARER.fullmatch(headers.get("Authorization", ""))
    return bearer.group(1) if bearer else None


class ApiKeyAuth:
    """authentication.service "apikey": the key's name is the caller's identity.

    The key is looked up by its hash, so the lookup's timing can reveal at most
    something about a hash, which does not lead back to a key; the final comparison
    is constant-time anyway. No cache: a revoked key stops working on the next request.
    """

    def __init__(self, database: Database):
        self.database = database

    def authenticate(self, headers) -> Identity:
        key = presented_key(headers)
        if key is None or not API_KEY.fullmatch(key):
            raise Unauthorized(UNAUTHORIZED)
        digest = hash_api_key(key)
        with self.database.transaction() as cur:
            found = api_keys.find_api_key(cur, digest, LAST_USED_EVERY)
            if found is None:
                log.info("refused an unknown API key")
                raise Unauthorized(UNAUTHORIZED)
            key_id, name, stored_hash, revoked, admin, needs_touch, *own_limits = found
            if not hmac.compare_digest(stored_hash.encode(), digest.encode()) or revoked:
                log.info("refused the revoked API key %s", name)
                raise Unauthorized(UNAUTHORIZED)
            if needs_touch:
                api_keys.touch_api_key(cur, key_id, LAST_USED_EVERY)
        return Identity(name, admin=admin, own_limits=Limits(*own_limits))


@dataclass(frozen=True)
class ApiKeyInfo:
    name: str
    created: datetime
    last_used: datetime | None
    revoked: bool
    admin: bool
    own_limits: Limits  # None: config `limits`; settings.UNLIMITED: none


def check_key_name(name: str) -> str:
    if not API_KEY_NAME.fullmatch(name):
        raise InvalidInput(
            "an API key name is 1-100 letters, digits or . _ @ + -, starting with a letter or digit"
        )
    return name


def create_api_key(
    database: Database, name: str, admin: bool = False, own_limits: Limits | None = None
) -> str:
    """Issue a key called `name` (`admin`: it reads every caller's sends; `own_limits` in
    place of config `limits`), store its hash, and return the key (its only showing)."""
    check_key_name(name)
    key = new_api_key()
    with database.transaction() as cur:
        own_limits = own_limits or Limits()
        stored = (own_limits.requests_per_minute, own_limits.recipients_per_day)
        stored += (own_limits.international_per_day,)
        if api_keys.insert_api_key(cur, name, hash_api_key(key), admin, stored) is None:
            raise InvalidInput(f"an API key named {name!r} already exists (names are never reused)")
    log.info("created API key %s%s", name, " (admin)" if admin else "")
    return key


def list_api_keys(database: Database) -> list[ApiKeyInfo]:
    with database.transaction() as cur:
        return [
            ApiKeyInfo(*row[:5], own_limits=Limits(*row[5:])) for row in api_keys.list_api_keys(cur)
        ]


def set_api_key_limits(database: Database, name: str, **changes: int | None) -> Limits:
    """Change some of the key's own limits (Limits' field names: None takes config `limits`,
    settings.UNLIMITED lifts it), from its next request on; return them all. NotFound if
    no such key."""
    with database.transaction() as cur:
        found = api_keys.lock_api_key_limits(cur, name)
        if found is None:
            raise NotFound(f"no API key named {name!r}")
        own_limits = dataclasses.replace(Limits(*found), **changes)
        api_keys.set_api_key_limits(
            cur,
            name,
            own_limits.requests_per_minute,
            own_limits.recipients_per_day,
            own_limits.international_per_day,
        )
    if changes:
        log.info("changed the limits of API key %s", name)
    return own_limits


def revoke_api_key(database: Database, name: str) -> bool:
    """Revoke the key called `name`; return False if it already was. NotFound if no such key."""
    with database.transaction() as cur:
        was_revoked = api_keys.revoke_api_key(cur, name)
    if was_revoked is None:
        raise NotFound(f"no API key named {name!r}")
    log.info("revoked API key %s", name)
    return not was_revoked


# --- wiring ---


def make_authenticator(settings: AuthSettings, database: Database | None = None):
    if not settings.enabled:
        return NoAuth()
    if settings.service == "serviceauth":
        return ServiceAuth(settings)
    if settings.service == "apikey":
        if database is None:
            raise ValueError("authentication.service apikey needs the database")
        return ApiKeyAuth(database)
    raise ValueError(f"authentication.service: unknown service {settings.service!r}")


def public(view):
    """Open a view to every caller: no credentials are asked for."""
    view.public = True
    return view


def is_public(view) -> bool:
    return getattr(view, "public", False)


def takes_sign_in(view):
    """Let a view take the operator page's sign-in cookie (signin.py) as its credential
    when authentication is by API key: the pages, and what they link to."""
    view.takes_sign_in = True
    return view


def credentials(settings: AuthSettings, view, sign_in, request):
    """Return the headers to authenticate a request with: its own, or, on a view that takes
    the sign-in cookie and when the request presents no key itself, the key that cookie
    holds (as an X-API-Key header)."""
    if (
        settings.service != "apikey"
        or not getattr(view, "takes_sign_in", False)
        or presented_key(request.headers) is not None
    ):
        return request.headers
    key = sign_in.api_key(request.cookies.get(signin.COOKIE))
    return {"X-API-Key": key} if key else request.headers


def exposure_warning(settings: AuthSettings, host: str) -> str | None:
    """Return a warning when authentication is off and `host` is reachable from elsewhere."""
    if settings.enabled or is_loopback(host):
        return None
    return (
        f"authentication is disabled and the API listens on {host}: anyone who can reach it "
        "can send SMS at your cost (set authentication.enabled, or bind to 127.0.0.1)"
    )


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host.startswith("unix:") or host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may well resolve to a public address


def require_admin(what: str) -> None:
    """Refuse a caller without the admin permission (anyone, with authentication off)."""
    if not g.identity.admin:
        raise Forbidden(
            f"{what} needs the admin permission (authentication.adminPermission, or an API "
            "key created with --admin)"
        )


def init_app(app, authenticator, settings: AuthSettings, sign_in: signin.SignIn) -> None:
    """Ask every request for credentials, except those of views marked `@public`; refuse a
    cross-site one that sends or changes anything with a browser's cookie (csrf.py)."""
    app.extensions["messaging.auth"] = authenticator
    app.extensions["messaging.signin"] = sign_in

    @app.before_request
    def require_identity():
        view = app.view_functions.get(request.endpoint)
        if view is None or is_public(view):  # no view: the answer is a 404 or 405 anyway
            return
        csrf.refuse_cross_site(settings, request, csrf.writes(request.method, request.endpoint))
        headers = credentials(settings, view, sign_in, request)
        g.identity = app.extensions["messaging.auth"].authenticate(headers)
