"""App-wide HTTP plumbing: JSON errors, case-insensitive paths, bodies of known size."""

import io
import logging

from flask import current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import PathConverter

from messaging.errors import MessagingError

log = logging.getLogger(__name__)


class CaseInsensitivePaths:
    """Lower-case the first path segment, so /sendSMS and /messageStatus/... match.

    Only the first segment: the rest carries numbers, ids and file names.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        head, sep, rest = path[1:].partition("/")
        environ["PATH_INFO"] = "/" + head.lower() + sep + rest
        return self.wsgi_app(environ, start_response)


class SizedBodies:
    """Read a chunked request body (no Content-Length) up to one byte past `limit`, and
    hand it on with the length it has.

    Flask refuses a Content-Length over MAX_CONTENT_LENGTH with 413 before reading any of
    it, but on a chunked body werkzeug's limit ends the body at the limit instead of
    refusing it: a 10 MiB form was cut inside `message=` and the cut text was sent. Framed
    here, a chunked body over the limit has a length over it and is refused the same way.
    """

    READ = 64 * 1024

    def __init__(self, wsgi_app, limit: int):
        self.wsgi_app = wsgi_app
        self.limit = limit

    def __call__(self, environ, start_response):
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            body = self._read(environ["wsgi.input"])
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            del environ["HTTP_TRANSFER_ENCODING"]
            environ.pop("wsgi.input_terminated", None)  # now a plain body of known length
        return self.wsgi_app(environ, start_response)

    def _read(self, stream) -> bytes:
        parts, size = [], 0
        while size <= self.limit:
            part = stream.read(min(self.READ, self.limit + 1 - size))
            if not part:
                break
            parts.append(part)
            size += len(part)
        return b"".join(parts)


class AnyText(PathConverter):
    """The rest of the path, whatever it holds: werkzeug's `path` stops at a newline, which
    left a number with an encoded line break (`%0A`) a routing 404."""

    regex = "[^/](?s:.)*?"


def register_error_handlers(app) -> None:
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err: RequestEntityTooLarge):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        if (request.content_length or 0) > limit:
            return jsonify({"error": f"request body over {limit} bytes (MaxBodyBytes)"}), 413
        return jsonify({"error": err.description}), 413

    @app.errorhandler(MessagingError)
    def messaging_error(err: MessagingError):
        return jsonify({"error": err.message, **err.details}), err.status_code

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        return jsonify({"error": err.description}), err.code

    @app.errorhandler(Exception)
    def unexpected_error(err: Exception):
        log.exception("unhandled error")
        return jsonify({"error": "internal error", "requestId": g.get("request_id", "")}), 500
