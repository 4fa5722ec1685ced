"""One error tree; the app-wide handler turns each into a JSON answer with its status."""


class MessagingError(Exception):
    """Base of every error the service reports to a caller."""

    status_code = 500

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        # Extra fields of the JSON answer beside "error", e.g. the refNumber of a send.
        self.details = details
        # HTTP headers of the answer, e.g. Retry-After.
        self.headers: dict[str, str] = {}


class InvalidInput(MessagingError):
    """The request is malformed or breaks a limit (the original service used 406)."""

    status_code = 406


class Unauthorized(MessagingError):
    status_code = 401


class Forbidden(MessagingError):
    status_code = 403


class NotFound(MessagingError):
    status_code = 404


class HeadersTooLarge(MessagingError):
    """Credentials too large to forward to the auth service (it would refuse them)."""

    status_code = 431


class Conflict(MessagingError):
    """The request clashes with one already under way (an Idempotency-Key's send)."""

    status_code = 409


class LimitExceeded(MessagingError):
    """The request would take its caller past one of its limits (limits.py): nothing of it
    is recorded or sent."""

    status_code = 429

    def __init__(self, message: str, *, limit: str, retry_after: int, **details):
        super().__init__(message, limit=limit, retryAfter=retry_after, **details)
        self.limit = limit
        self.headers["Retry-After"] = str(retry_after)


class ReceiptRejected(Forbidden):
    """A pushed delivery receipt failed the provider's signature or secret check."""


class ServiceUnavailable(MessagingError):
    """A dependency (database, auth service) cannot answer; fail closed."""

    status_code = 503


class ProviderError(MessagingError):
    """The provider refused or could not take a whole request."""

    status_code = 502

    def __init__(self, code: str, description: str):
        super().__init__(f"Error {code}: {description}" if code else description)
        self.code = code
        self.description = description


class ProviderUnavailable(ProviderError):
    """The provider stayed unreachable, or refused the request for now, through every
    retry: it did not process the request, so it may be sent again later."""

    def __init__(self, code: str, description: str, *, retry_after: float | None = None):
        super().__init__(code, description)
        # Seconds the provider asked us to wait (its Retry-After), when it said.
        self.retry_after = retry_after
