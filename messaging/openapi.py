"""The OpenAPI 3 document of the service, generated from the marshmallow schemas (apispec).

Each endpoint's operations are written out here, next to each other, so a reader sees
the whole API in one place; the request and response bodies come from `schemas.py`.
`spec_for(app)` documents exactly the endpoints the app has registered.
"""

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from messaging import schemas

TITLE = "messaging"
OPENAPI_VERSION = "3.0.3"
# Static files of the docs page: part of /docs, not of the API.
UNDOCUMENTED_ENDPOINTS = {"static", "ops.docs_file", "ops.docs_init"}

DESCRIPTION = """An SMS gateway: send one text to many mobile numbers, track each delivery.

Paths match case-insensitively (`/sendSMS` = `/sendsms`). Every answer carries an
`X-Request-ID` header (the caller's own, if it sent a tame one); every log line of that
request carries it too. When authentication is enabled, every endpoint except `/ping`,
`/healthz`, `/metrics`, `/openapi.json` and `/docs` needs credentials: the caller's
cookie or `Authorization` header (serviceauth), or an API key (`X-API-Key` or
`Authorization: Bearer`).
"""

ERROR = "ErrorResponse"
JSON_ERROR = {"content": {"application/json": {"schema": ERROR}}}
ERRORS = {
    "401": {"description": 'Not authenticated: `{"error": "User unauthorized"}`', **JSON_ERROR},
    "406": {"description": "Bad input, named in the error. Nothing is sent.", **JSON_ERROR},
    "413": {"description": "Body over the size limit (MaxBodyBytes).", **JSON_ERROR},
    "500": {
        "description": "Unexpected failure, logged with the request id.",
        "content": {"application/json": {"schema": "InternalErrorResponse"}},
    },
    "503": {
        "description": "A dependency (database, auth service) cannot answer. When the "
        "database failed after a send was recorded, `refNumber` names it: the send exists "
        "and its Idempotency-Key stays bound to it.",
        **JSON_ERROR,
    },
}
SECURED = [{"ApiKey": []}, {"Bearer": []}, {"ServiceAuthCookie": []}, {}]


def _param(where: str, name: str, required: bool, description: str = "", **schema) -> dict:
    parameter = {"in": where, "name": name, "required": required}
    parameter["schema"] = {"type": "string", **schema}
    if description:
        parameter["description"] = description
    return parameter


REQUEST_ID = _param(
    "header",
    "X-Request-ID",
    False,
    "Your id for this request (nginx's $request_id); one is made if absent or not tame.",
    pattern="^[A-Za-z0-9._:-]{1,64}$",
)
MSISDNS_PROPERTY = {
    "oneOf": [
        {"type": "array", "items": {"type": "string"}},
        {"type": "string", "description": "comma-separated numbers (form data, query)"},
    ],
    "example": ["0830000000", "27840000000"],
}


def _errors(*codes: str) -> dict:
    return {code: ERRORS[code] for code in codes}


def _json(schema, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, schema: dict | None = None) -> dict:
    return {
        "description": description,
        "content": {"text/plain": {"schema": schema or {"type": "string"}}},
    }


def _body(schema, description: str) -> dict:
    return {
        "required": True,
        "description": description,
        "content": {
            "application/json": {"schema": schema},
            "application/x-www-form-urlencoded": {"schema": schema},
        },
    }


def _secured(operation: dict) -> dict:
    """Mark an operation as needing credentials (when authentication is enabled)."""
    responses = {**operation["responses"], **_errors("401", "503")}
    return {**operation, "security": SECURED, "responses": responses}


SEND_SMS = {
    "summary": "Send one text to a list of numbers",
    "description": "Numbers are cleaned and de-duplicated; `validNumbers + invalidNumbers + "
    "duplicateNumbers` is the number of entries given. A provider-level failure (out of "
    "credit, provider down, sending disabled) is still 200, with `sendSuccess: false` and "
    "the reason in `statusDescription`; the send and every recipient are recorded.",
    "responses": {
        "200": _json(
            "SendSmsResponse",
            "The send is recorded; `refNumber` finds it again. A send not finished within "
            "smsProvider.waitSeconds answers what is known, `queuedNumbers` go on in the "
            "background.",
        ),
        "202": _json(
            "SendSmsResponse",
            "Recorded and not sent yet (`Prefer: respond-async`, or a `sendAt` ahead): "
            "`Location` is `/sends/{refNumber}`.",
        ),
        **_errors("406", "413", "500"),
        "409": {
            "description": "The send of this Idempotency-Key is still in progress: "
            "`refNumber` names it (see `/sends/{refNumber}`); repeat later for its answer.",
            **JSON_ERROR,
        },
    },
}
PREFER = _param(
    "header",
    "Prefer",
    False,
    "`respond-async` (RFC 7240): answer 202 at once; the dispatchers send it.",
)
IDEMPOTENCY_KEY = _param(
    "header",
    "Idempotency-Key",
    False,
    "The same key from the same caller within 24 hours answers the first response again "
    "and sends nothing.",
    minLength=1,
    maxLength=255,
)

PATHS = {
    "api.send_sms": (
        "/sendsms",
        {
            "post": _secured(
                {
                    **SEND_SMS,
                    "parameters": [IDEMPOTENCY_KEY, PREFER],
                    "requestBody": _body("SendSmsRequest", "JSON, or form data."),
                }
            ),
            "get": _secured(
                {
                    **SEND_SMS,
                    "summary": "Send one text to a list of numbers (query parameters)",
                    "parameters": [
                        IDEMPOTENCY_KEY,
                        PREFER,
                        _param("query", "message", True),
                        _param("query", "msisdns", True, "comma-separated numbers"),
                        _param("query", "from", False, "sender id"),
                        _param("query", "sendAt", False, "ISO 8601 with an offset"),
                    ],
                }
            ),
        },
    ),
    "api.message_status": (
        "/messagestatus/{msisdn}",
        {
            "get": _secured(
                {
                    "summary": "Status of the newest message to a number",
                    "description": "The number is normalised first (`0830000000` finds "
                    "`27830000000`). A message still `sent` is asked about once at a "
                    "provider that can answer.",
                    "parameters": [
                        _param("path", "msisdn", True),
                    ],
                    "responses": {
                        "200": _text(
                            "The status, or `Error: no data available`.",
                            {
                                "type": "string",
                                "enum": [
                                    "queued",
                                    "sent",
                                    "delivered",
                                    "failed",
                                    "Error: no data available",
                                ],
                            },
                        ),
                        **_errors("500"),
                    },
                }
            )
        },
    ),
    "api.send_report": (
        "/sends/{refNumber}",
        {
            "get": _secured(
                {
                    "summary": "One send and a page of its recipients with their status",
                    "parameters": [
                        _param("path", "refNumber", True, "as /sendsms answered it"),
                        _param("query", "page", False, "from 1 (default 1)", pattern="^[0-9]+$"),
                        _param(
                            "query",
                            "pageSize",
                            False,
                            "recipients per page, 1-1000 (default 100)",
                            pattern="^[0-9]+$",
                        ),
                    ],
                    "responses": {
                        "200": _json("SendReport", "The send and one page of recipients."),
                        "404": {"description": "No send with that refNumber.", **JSON_ERROR},
                        **_errors("406", "500"),
                    },
                }
            )
        },
    ),
    "api.cancel_send": (
        "/sends/{refNumber}/cancel",
        {
            "post": _secured(
                {
                    "summary": "Cancel what of a send has not been handed to the provider",
                    "description": "Those recipients become `failed` with reason `cancelled`; "
                    "a batch already at the provider finishes as it will.",
                    "parameters": [_param("path", "refNumber", True, "as /sendsms answered it")],
                    "responses": {
                        "200": _json("SendSummary", "The send, as cancelled."),
                        "404": {"description": "No send with that refNumber.", **JSON_ERROR},
                        "409": {"description": "The send is already finished.", **JSON_ERROR},
                        **_errors("406", "500"),
                    },
                }
            )
        },
    ),
    "receipts.receive": (
        "/callbacks/{provider}",
        {
            method: {
                "summary": "Delivery receipts pushed by the provider",
                "description": "No user credentials: the configured provider checks the "
                "receipt its own way (signature or shared secret). The first final status "
                "of a message wins; an unknown id is answered 200 and logged.",
                "parameters": [_param("path", "provider", True, "smsProvider.name")],
                "responses": {
                    "200": _json("ReceiptResponse", "Receipt read and stored."),
                    "403": {
                        "description": "The receipt failed the provider's check.",
                        **JSON_ERROR,
                    },  # noqa: E501
                    "404": {
                        "description": "Not the configured provider, or it takes no receipts.",
                        **JSON_ERROR,
                    },
                    **_errors("413", "500", "503"),
                },
            }
            for method in ("post", "get")
        },
    ),
    "api.normalize": (
        "/normalize",
        {
            "post": _secured(
                {
                    "summary": "Clean a list of numbers",
                    "requestBody": _body("NormalizeRequest", "JSON, or form data."),
                    "responses": {
                        "200": _json(
                            {"type": "array", "items": {"type": "string"}},
                            "Valid numbers in international digits without `+`, "
                            "first occurrence order kept.",
                        ),
                        **_errors("406", "413", "500"),
                    },
                }
            )
        },
    ),
    "api.ping": (
        "/ping",
        {
            "get": {
                "summary": "Liveness, as the original service answered it",
                "responses": {"200": _json("PingResponse", "The server's clock.")},
            }
        },
    ),
    "ops.healthz": (
        "/healthz",
        {
            "get": {
                "summary": "Readiness for a load balancer: does the database answer?",
                "responses": {
                    "200": _json("HealthResponse", "Ready."),
                    "503": _json("HealthResponse", "Not ready; the failing part is named."),
                },
            }
        },
    ),
    "ops.metrics_view": (
        "/metrics",
        {
            "get": {
                "summary": "Prometheus metrics, summed over every worker",
                "responses": {"200": _text("Prometheus text exposition format.")},
            }
        },
    ),
    "ops.openapi_json": (
        "/openapi.json",
        {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document.")},
            }
        },
    ),
    "ops.docs": (
        "/docs",
        {
            "get": {
                "summary": "This document as a page (Swagger UI, served locally)",
                "responses": {
                    "200": {
                        "description": "HTML page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    ),
}


def build_spec(endpoints) -> dict:
    """Return the OpenAPI document for the given endpoint names."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=TITLE,
        version="1",
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={"description": DESCRIPTION},
    )
    plugin.converter.add_attribute_function(_msisdn_list)
    for name in (
        "SendSmsRequest",
        "SendSmsResponse",
        "SendReport",
        "ReceiptResponse",
        "NormalizeRequest",
        "PingResponse",
        "HealthResponse",
        ERROR,
        "InternalErrorResponse",
    ):
        spec.components.schema(name, schema=getattr(schemas, name))
    spec.components.header(
        "X-Request-ID",
        {"description": "This request's id, as in the logs.", "schema": {"type": "string"}},
    )
    spec.components.security_scheme(
        "ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    )
    spec.components.security_scheme("Bearer", {"type": "http", "scheme": "bearer"})
    spec.components.security_scheme(
        "ServiceAuthCookie",
        {
            "type": "apiKey",
            "in": "cookie",
            "name": "session",
            "description": "serviceauth: the caller's cookies (or Authorization header) "
            "are checked with the auth service.",
        },
    )
    for name in sorted(set(endpoints), key=lambda n: PATHS.get(n, (n,))[0]):
        if name not in PATHS:
            continue
        path, operations = PATHS[name]
        spec.path(path=path, operations=_with_request_id(operations))
    return spec.to_dict()


def _with_request_id(operations: dict) -> dict:
    """Add the X-Request-ID request parameter and response header to every operation."""
    done = {}
    for method, operation in operations.items():
        responses = {
            code: {**response, "headers": {"X-Request-ID": "X-Request-ID"}}
            for code, response in operation["responses"].items()
        }
        parameters = [*operation.get("parameters", []), REQUEST_ID]
        done[method] = {**operation, "parameters": parameters, "responses": responses}
    return done


def _msisdn_list(self, field, **kwargs) -> dict:
    return dict(MSISDNS_PROPERTY) if isinstance(field, schemas.MsisdnList) else {}


def undocumented(app) -> set[str]:
    """Return the app's endpoints this module has no description for."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    return endpoints - UNDOCUMENTED_ENDPOINTS - set(PATHS)


def spec_for(app) -> dict:
    """Return (and keep) the document of this app's endpoints."""
    spec = app.extensions.get("messaging.openapi")
    if spec is None:
        endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
        spec = app.extensions["messaging.openapi"] = build_spec(endpoints)
    return spec
