"""Cross-site request forgery: a page on another site must not send SMS with a visitor's cookie.

A browser adds the caller's cookies to a cross-site form POST (urlencoded or text/plain,
whose body the API reads as JSON) and to an `<img src="/sendsms?...">` GET. So when a
request is authenticated by cookie (serviceauth, a Cookie and no Authorization header),
one that sends or changes anything is refused if the browser says it came from another
site: `Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` that is neither this
site's host nor in authentication.allowedOrigins. An API key or an Authorization header
is never added by a browser on its own, so those callers are not checked.
"""

from urllib.parse import urlsplit

from messaging.errors import Forbidden
from messaging.settings import AuthSettings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Views that send by any method: the original's /sendsms sent on a GET too.
SENDING_ENDPOINTS = frozenset({"api.send_sms"})


def writes(method: str, endpoint: str | None) -> bool:
    """True when a request of this method to this endpoint sends or changes anything."""
    return method.upper() not in SAFE_METHODS or endpoint in SENDING_ENDPOINTS


def cookie_authenticated(settings: AuthSettings, headers) -> bool:
    """True when the request's only credential is a cookie the browser adds by itself."""
    return (
        settings.enabled
        and settings.service == "serviceauth"
        and bool(headers.get("Cookie"))
        and not headers.get("Authorization")
    )


def from_another_site(headers, host: str, allowed_origins: tuple[str, ...]) -> bool:
    """True when a browser says the request comes from a page of another site."""
    origin = headers.get("Origin")
    if origin is not None and origin.strip().rstrip("/").lower() in allowed_origins:
        return False
    site = headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return True
    if origin is None or site == "same-origin":  # the browser compared the origins itself
        return False
    # No Sec-Fetch-Site (an older browser, or plain HTTP): compare host names. Not ports:
    # nginx passes Host without the port the browser used. "null" (a sandboxed page) has none.
    try:
        origin_host = urlsplit(origin.strip()).hostname or ""
    except ValueError:
        return True
    return origin_host != urlsplit(f"//{host}").hostname


def refuse_cross_site(settings: AuthSettings, request, writes: bool) -> None:
    """Raise Forbidden (403) for a cross-site request that `writes` (sends or changes
    anything: an unsafe method, or any /sendsms), made with a cookie."""
    if not writes or not cookie_authenticated(settings, request.headers):
        return
    if from_another_site(request.headers, request.host, settings.allowed_origins):
        raise Forbidden(
            "cross-site request refused: a page on another site may not send with this "
            "browser's session cookie (list trusted sites in authentication.allowedOrigins, "
            "or call with an Authorization header)"
        )
