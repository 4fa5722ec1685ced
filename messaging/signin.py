"""The operator's page's own credentials: with API keys, a sign-in form keeps the key in a
signed cookie (HttpOnly, SameSite=Strict, Secure over https), and every form the page
posts carries a CSRF token tied to the caller.

Both are signed (itsdangerous, as Flask's own session is) with the session secret:
authentication.sessionSecret when set, else one made at random on first use and kept in
the database (service_secrets), so every worker and host of one database shares it. The
cookie holds the key itself, checked against api_keys on every request like an
X-API-Key header: a revoked key stops working at once, and the signature adds the
cookie's expiry (SIGN_IN_SECONDS), which a browser cannot extend.
"""

import secrets
import threading

from itsdangerous import BadSignature, URLSafeTimedSerializer

from messaging.db import Database
from messaging.queries.admin import service_secret

COOKIE = "messaging_admin"
SIGN_IN_SECONDS = 12 * 3600
CSRF_SECONDS = 12 * 3600
SECRET_NAME = "session"


class SignIn:
    """Sign and read the page's cookie and CSRF tokens with the session secret."""

    def __init__(self, database: Database, configured_secret: str = ""):
        self.database = database
        self.configured_secret = configured_secret
        self._secret: str | None = None
        self._lock = threading.Lock()

    def secret(self) -> str:
        """Return the session secret, read from the database (made there) on first use."""
        with self._lock:
            if self._secret is None:
                if self.configured_secret:
                    self._secret = self.configured_secret
                else:
                    with self.database.transaction() as cur:
                        self._secret = service_secret(cur, SECRET_NAME, secrets.token_urlsafe(32))
            return self._secret

    def _serializer(self, salt: str) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret(), salt=salt)

    def cookie_value(self, api_key: str) -> str:
        return self._serializer("sign-in").dumps(api_key)

    def api_key(self, cookie: str | None) -> str | None:
        """Return the API key a sign-in cookie holds, or None (none, forged or expired)."""
        if not cookie:
            return None
        try:
            key = self._serializer("sign-in").loads(cookie, max_age=SIGN_IN_SECONDS)
        except BadSignature:  # SignatureExpired is one too
            return None
        return key if isinstance(key, str) else None

    def csrf_token(self, identity_name: str) -> str:
        return self._serializer("csrf").dumps(identity_name)

    def csrf_valid(self, token: str | None, identity_name: str) -> bool:
        """Is `token` one this service made for this caller, within CSRF_SECONDS?"""
        if not token:
            return False
        try:
            name = self._serializer("csrf").loads(token, max_age=CSRF_SECONDS)
        except BadSignature:
            return False
        return name == identity_name
