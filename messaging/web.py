"""App-wide HTTP plumbing: JSON errors, JSON parsing, case-insensitive paths, trailing
slashes, bodies of known size."""

import io
import json
import logging
import re
from urllib.parse import quote

from flask import current_app, g, jsonify, redirect, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.routing import PathConverter

from messaging.errors import MessagingError
from messaging.segments import is_text

log = logging.getLogger(__name__)

# A \u escape of a UTF-16 surrogate (D800-DFFF): only then can a decoded string hold a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


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
    left a number with an encoded line break (`%0A`) a routing 404. It never ends in a
    slash: `/messagestatus/0830000000/` redirects to the bare path, as every path does."""

    regex = "(?s:[^/](?:.*[^/])?)"


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, with what is not JSON text refused as a ValueError (a caller's 406, not
    a 500): nesting too deep for the parser, and a string or key holding a lone surrogate
    (`"\\ud800"`), which no UTF-8 text (a database column, a provider request) can carry.
    Every JSON body the app reads (`request.get_json`, the API's bodies) goes through it.
    Answers keep their fields in the order given (Flask sorts them): /sendsms answers the
    original's fields in the original's order."""

    sort_keys = False

    def loads(self, s, **kwargs):
        text = s.decode("utf-8") if isinstance(s, bytes | bytearray) else s
        try:
            data = json.loads(text, **kwargs)
        except RecursionError:
            raise ValueError("it is nested too deeply") from None
        if _SURROGATE_ESCAPE.search(text):
            where = lone_surrogate(data)
            if where is not None:
                raise ValueError(
                    f"{where} holds a lone surrogate (\\ud800-\\udfff), which is not text"
                )
        return data


def lone_surrogate(data) -> str | None:
    """Return where in decoded JSON a string holds a lone surrogate (`msisdns[2]`), or None.

    Iterative: data as deep as the parser allows must not overflow the stack here.
    """
    stack = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not is_text(value):
                return path or "the body"
        elif isinstance(value, dict):
            for key, item in value.items():
                if not is_text(key):
                    return f"a key in {path}" if path else "a key"
                stack.append((f"{path}.{key}" if path else key, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return None


def bare_path_redirect():
    """Send `/sendsms/` on to `/sendsms`, as the original's router did: 301 for GET and HEAD,
    307 otherwise (the method and body are kept). Only where the bare path is a route, and
    by redirect rather than an answer, so a rule on the bare path in front of the app (nginx's
    `location = /metrics`) applies to the second request too. None when it does not apply."""
    path = request.path
    bare = path.rstrip("/")
    if not bare or bare == path:
        return None
    adapter = current_app.url_map.bind_to_environ(request.environ)
    try:
        adapter.match(bare, method=request.method)
    except MethodNotAllowed:
        pass  # the bare path exists; it answers the 405 itself
    except HTTPException:
        return None
    location = quote(request.script_root + bare, safe="/!$&'()*+,;=:@-._~")
    if request.query_string:
        location += "?" + quote(request.query_string, safe="/?!$&'()*+,;=:@-._~%")
    return redirect(location, 301 if request.method in ("GET", "HEAD") else 307)


def register_error_handlers(app) -> None:
    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err: RequestEntityTooLarge):
        limit = current_app.config["MAX_CONTENT_LENGTH"]
        if (request.content_length or 0) > limit:
            return jsonify({"error": f"request body over {limit} bytes (MaxBodyBytes)"}), 413
        return jsonify({"error": err.description}), 413

    @app.errorhandler(MessagingError)
    def messaging_error(err: MessagingError):
        return jsonify({"error": err.message, **err.details}), err.status_code, err.headers

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        if isinstance(err, NotFound) and request.routing_exception is err:
            moved = bare_path_redirect()
            if moved is not None:
                return moved
        return jsonify({"error": err.description}), err.code

    @app.errorhandler(Exception)
    def unexpected_error(err: Exception):
        log.exception("unhandled error")
        return jsonify({"error": "internal error", "requestId": g.get("request_id", "")}), 500
