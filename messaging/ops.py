"""Endpoints for operators, open without authentication: health, metrics and API docs."""

import logging

from flask import Blueprint, Response, abort, current_app, jsonify, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

from messaging import metrics, openapi
from messaging.auth import public
from messaging.db import HealthCheck
from messaging.errors import MessagingError
from messaging.health import ProviderWeight
from messaging.schemas import HealthResponse
from messaging.services import current as services

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

DOCS_FILES = {"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"}
health_response_schema = HealthResponse()


@bp.route("/healthz", methods=["GET"])
@public
def healthz():
    """Readiness for a load balancer: does the database answer?
    ---
    responses:
      200:
        description: Ready.
        content: {application/json: {schema: HealthResponse}}
      503:
        description: Not ready; the failing part is named.
        content: {application/json: {schema: HealthResponse}}
    """
    database = current_app.extensions["messaging.health"].database()
    healthy = database == "ok"
    body = {
        "status": "ok" if healthy else "unavailable",
        "database": database,
        "provider": services().provider.name,
    }
    if services().providers.several:
        body["providers"] = provider_weights() if healthy else unweighed()
    return jsonify(health_response_schema.dump(body)), 200 if healthy else 503


@bp.route("/metrics", methods=["GET"])
@public
def metrics_view():
    """Prometheus metrics, summed over every worker.
    ---
    responses:
      200:
        description: Prometheus text exposition format.
        content: {text/plain: {schema: {type: string}}}
    """
    return metrics.exposition(provider_weights())


def provider_weights() -> list:
    """Every provider's weight now (health.ProviderWeight); configured only when the
    database does not answer."""
    try:
        return services().health.weights()
    except MessagingError as err:
        log.warning("provider weights not read: %s", err.message)
        return unweighed()


def unweighed() -> list:
    return [ProviderWeight(c.key, c.weight, 1.0, "not known") for c in services().providers]


@bp.route("/openapi.json", methods=["GET"])
@public
def openapi_json():
    """This document.
    ---
    responses:
      200:
        description: OpenAPI 3 document.
        content: {application/json: {schema: {type: object}}}
    """
    return jsonify(openapi.spec_for(current_app))


@bp.route("/docs", methods=["GET"])
@public
def docs():
    """This document as a page (Swagger UI, served locally).
    ---
    responses:
      200:
        description: HTML page.
        content: {text/html: {schema: {type: string}}}
    """
    page = DOCS_PAGE.format(
        css=url_for("ops.docs_file", filename="swagger-ui.css"),
        icon=url_for("ops.docs_file", filename="favicon-32x32.png"),
        bundle=url_for("ops.docs_file", filename="swagger-ui-bundle.js"),
        init=url_for("ops.docs_init"),
    )
    return Response(page, mimetype="text/html")


@bp.route("/docs/init.js", methods=["GET"])
@public
@openapi.hidden
def docs_init():
    script = DOCS_INIT.replace("SPEC_URL", url_for("ops.openapi_json"))
    return Response(script, mimetype="text/javascript")


@bp.route("/docs/<filename>", methods=["GET"])
@public
@openapi.hidden
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


def init_app(app, health: HealthCheck) -> None:
    """Register the operator endpoints and the request metrics."""
    app.extensions["messaging.health"] = health
    metrics.init_app(app)
    app.register_blueprint(bp)
