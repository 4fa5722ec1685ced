"""App-wide HTTP plumbing: JSON errors and case-insensitive paths."""

import logging

from flask import g, jsonify
from werkzeug.exceptions import HTTPException
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


class AnyText(PathConverter):
    """The rest of the path, whatever it holds: werkzeug's `path` stops at a newline, which
    left a number with an encoded line break (`%0A`) a routing 404."""

    regex = "[^/](?s:.)*?"


def register_error_handlers(app) -> None:
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
