"""Authentication backends behind one function the views call: `authenticate()`."""

import logging
from dataclasses import dataclass

import requests
from flask import current_app, request

from messaging.config import AuthSettings
from messaging.errors import ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)

UNAUTHORIZED = "User unauthorized"


@dataclass(frozen=True)
class Identity:
    name: str  # recorded as sendlog.originator; empty when authentication is off


ANONYMOUS = Identity("")


class NoAuth:
    """authentication.enabled is false: everyone passes, unnamed."""

    def authenticate(self, headers) -> Identity:
        return ANONYMOUS


class ServiceAuth:
    """The original's auth service: forward Cookie and Authorization to GET <url>/auth2/check."""

    def __init__(self, settings: AuthSettings):
        self.settings = settings
        self.check_url = settings.url.rstrip("/") + "/auth2/check"
        self.session = requests.Session()

    def authenticate(self, headers) -> Identity:
        forwarded = {name: headers[name] for name in ("Cookie", "Authorization") if name in headers}
        if not forwarded:
            raise Unauthorized(UNAUTHORIZED)
        try:
            response = self.session.get(
                self.check_url, headers=forwarded, timeout=self.settings.timeout
            )
        except requests.RequestException as err:
            log.error("auth service unreachable: %s", type(err).__name__)
            raise ServiceUnavailable("authentication service unavailable") from None
        if response.status_code in (401, 403):
            raise Unauthorized(UNAUTHORIZED)
        if response.status_code != 200:
            log.error("auth service answered %s", response.status_code)
            raise ServiceUnavailable("authentication service unavailable")
        try:
            answer = response.json()
            roles = {str(role) for role in answer.get("Roles") or []}
            identity = str(answer.get("Identity") or "")
        except (ValueError, AttributeError, TypeError):
            log.error("auth service answered 200 with a body that is not the expected JSON")
            raise ServiceUnavailable("authentication service unavailable") from None
        if self.settings.permission not in roles:
            raise Unauthorized(UNAUTHORIZED)
        return Identity(identity)


def make_authenticator(settings: AuthSettings):
    if not settings.enabled:
        return NoAuth()
    if settings.service.lower() == "serviceauth":
        return ServiceAuth(settings)
    raise ValueError(f"authentication.service: unknown service {settings.service!r}")


def authenticate() -> Identity:
    """Check the current request's credentials; raise Unauthorized or ServiceUnavailable."""
    return current_app.extensions["messaging.auth"].authenticate(request.headers)


def init_app(app, settings: AuthSettings) -> None:
    app.extensions["messaging.auth"] = make_authenticator(settings)
