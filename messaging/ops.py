"""Endpoints for operators, open without authentication: health, metrics and API docs."""

import logging
import os
import threading

import psycopg2
from flask import Blueprint, Response, abort, current_app, jsonify, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

from messaging import metrics, openapi

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

# A load balancer may call /healthz every second: answer within a couple of seconds.
HEALTH_CONNECT_TIMEOUT = 2
HEALTH_STATEMENT_TIMEOUT_MS = 2000
DOCS_FILES = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"}


class HealthCheck:
    """`SELECT 1` on one connection of its own, kept open between checks.

    Apart from the request pool on purpose: a busy pool must not make the load
    balancer wait, and the check costs one round trip, not a new connection.
    """

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn = None
        self._pid = None
        self._lock = threading.Lock()

    def database(self) -> str:
        """Return "ok" or "unavailable: <why>" (never a password: libpq errors carry none)."""
        with self._lock:
            if self._pid != os.getpid():  # a forked copy must not share the socket
                self._conn, self._pid = None, os.getpid()
            kept = self._conn is not None
            error = self._select_one()
            if error is not None and kept:
                # The kept connection may only be stale (the server restarted): a fresh try.
                error = self._select_one()
            if error is None:
                return "ok"
            log.warning("health check: database unavailable: %s", error)
            return f"unavailable: {error}"

    def _select_one(self) -> str | None:
        """Run `SELECT 1`; return None, or why it failed (and drop the connection)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(
                    self.dsn,
                    connect_timeout=HEALTH_CONNECT_TIMEOUT,
                    application_name="messaging-health",
                    options=f"-c statement_timeout={HEALTH_STATEMENT_TIMEOUT_MS}",
                )
                self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            return None
        except psycopg2.Error as err:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return _first_line(err)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


@bp.route("/healthz", methods=["GET"])
def healthz():
    services = current_app.extensions["messaging"]
    database = current_app.extensions["messaging.health"].database()
    healthy = database == "ok"
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": database,
        "provider": services.provider.name,
    }
    return jsonify(body), 200 if healthy else 503


@bp.route("/metrics", methods=["GET"])
def metrics_view():
    return metrics.exposition()


@bp.route("/openapi.json", methods=["GET"])
def openapi_json():
    return jsonify(openapi.spec_for(current_app))


@bp.route("/docs", methods=["GET"])
def docs():
    page = DOCS_PAGE.format(
        css=url_for("ops.docs_file", filename="swagger-ui.css"),
        icon=url_for("ops.docs_file", filename="favicon-32x32.png"),
        bundle=url_for("ops.docs_file", filename="swagger-ui-bundle.js"),
        init=url_for("ops.docs_init"),
    )
    return Response(page, mimetype="text/html")


@bp.route("/docs/init.js", methods=["GET"])
def docs_init():
    script = DOCS_INIT.replace("SPEC_URL", url_for("ops.openapi_json"))
    return Response(script, mimetype="text/javascript")


@bp.route("/docs/<filename>", methods=["GET"])
def docs_file(filename):
    # Swagger UI's own files, from the swagger-ui-bundle package: no CDN involved.
    if filename not in DOCS_FILES:
        abort(404)
    return send_from_directory(swagger_ui_path, filename, max_age=86400)


DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>messaging API</title>
<link rel="stylesheet" href="{css}">
<link rel="icon" type="image/png" href="{icon}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""

DOCS_INIT = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "SPEC_URL",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
  });
};
"""


def init_app(app) -> None:
    """Register the operator endpoints and the request metrics."""
    app.extensions["messaging.health"] = HealthCheck(app.extensions["messaging"].db.dsn)
    metrics.init_app(app)
    app.register_blueprint(bp)
