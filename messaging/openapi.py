"""The OpenAPI 3 document of the service, generated from the app itself (apispec).

Paths and methods come from the app's url map; each operation's summary and description
from its view's docstring, and its parameters and answers from the YAML after `---` in
that docstring (apispec's convention), where parameters and bodies name the marshmallow
schemas of `schemas.py`. Keys of that YAML apply to every method of the route, except
under a method's own key (`get:`), which adds to them for that method. Three shorthands:
`body: SendSmsRequest` is a request body in JSON or form data (api.request_fields reads
both), an answer given as a string is a JSON error answer with that description, and
`errors: [406, 500]` adds the shared error answers of `ERRORS`. A view not marked
`@public` is documented as needing credentials, with its 401, 431 and 503 answers, and
its 403 where it sends or changes anything (csrf.writes).
"""

import copy
import inspect
import re

from apispec import APISpec, yaml_utils
from apispec.ext.marshmallow import MarshmallowPlugin

from messaging import csrf, schemas
from messaging.auth import is_public

TITLE = "messaging"
OPENAPI_VERSION = "3.0.3"
METHODS = ("get", "post", "put", "patch", "delete")
BODY_TYPES = ("application/json", "application/x-www-form-urlencoded")

DESCRIPTION = """An SMS gateway: send one text to many mobile numbers, track each delivery.

Paths match case-insensitively (`/sendSMS` = `/sendsms`). Every answer carries an
`X-Request-ID` header (the caller's own, if it sent a tame one); every log line of that
request carries it too. When authentication is enabled, every endpoint except {open}
needs credentials: the caller's cookie or `Authorization` header (serviceauth), or an
API key (`X-API-Key` or `Authorization: Bearer`).
"""

SCHEMAS = (
    "SendSmsRequest",
    "SendSmsResponse",
    "SendReport",
    "ReceiptResponse",
    "NormalizeRequest",
    "PingResponse",
    "HealthResponse",
    "ErrorResponse",
    "LimitErrorResponse",
    "InternalErrorResponse",
)
JSON_ERROR = {"content": {"application/json": {"schema": "ErrorResponse"}}}
ERRORS = {
    401: {"description": 'Not authenticated: `{"error": "User unauthorized"}`', **JSON_ERROR},
    403: {
        "description": "Cross-site: a request authenticated by its session cookie alone, from "
        "a page of another site (`Sec-Fetch-Site`, or an `Origin` not in "
        "authentication.allowedOrigins). Nothing is sent or changed.",
        **JSON_ERROR,
    },
    406: {"description": "Bad input, named in the error. Nothing is sent.", **JSON_ERROR},
    413: {"description": "Body over the size limit (MaxBodyBytes).", **JSON_ERROR},
    429: {
        "description": "The request would take its caller (originator) past one of its "
        'limits (`limit` names it: README "Limits"). Nothing is recorded or sent; '
        "`Retry-After` says in how many seconds that limit's window frees.",
        "content": {"application/json": {"schema": "LimitErrorResponse"}},
        "headers": {"Retry-After": "Retry-After"},
    },
    431: {
        "description": "Cookie and Authorization headers too large to forward to the auth "
        "service (or refused by it as too large).",
        **JSON_ERROR,
    },
    500: {
        "description": "Unexpected failure, logged with the request id.",
        "content": {"application/json": {"schema": "InternalErrorResponse"}},
    },
    503: {
        "description": "A dependency (database, auth service) cannot answer. When the "
        "database failed after a send was recorded, `refNumber` names it: the send exists "
        "and its Idempotency-Key stays bound to it.",
        **JSON_ERROR,
    },
}
SECURED = [{"ApiKey": []}, {"Bearer": []}, {"ServiceAuthCookie": []}, {}]
MSISDNS_PROPERTY = {
    "oneOf": [
        {"type": "array", "items": {"type": "string"}},
        {"type": "string", "description": "comma-separated numbers (form data, query)"},
    ],
    "example": ["0830000000", "27840000000"],
}
# werkzeug's <converter:name> in a rule is OpenAPI's {name}.
RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def hidden(view):
    """Leave a view out of the document (the docs page's own files are no API)."""
    view.hidden = True
    return view


def is_hidden(view) -> bool:
    return getattr(view, "hidden", False)


def documented_rules(app) -> list:
    """Return the url map's rules that the document covers, in path order."""
    rules = [
        rule
        for rule in app.url_map.iter_rules()
        if not is_hidden(app.view_functions[rule.endpoint])
    ]
    return sorted(rules, key=lambda rule: rule.rule)


def rule_methods(rule) -> list[str]:
    """Return the methods a rule documents (werkzeug adds HEAD and OPTIONS by itself)."""
    return sorted(method.lower() for method in rule.methods - {"HEAD", "OPTIONS"})


def openapi_path(rule) -> str:
    return RULE_ARGUMENT.sub(r"{\1}", rule.rule)


def build_spec(app) -> dict:
    """Return the OpenAPI document of every route the app has registered."""
    plugin = MarshmallowPlugin()
    rules = documented_rules(app)
    open_paths = sorted(
        {openapi_path(rule) for rule in rules if is_public(app.view_functions[rule.endpoint])}
    )
    spec = APISpec(
        title=TITLE,
        version="1",
        openapi_version=OPENAPI_VERSION,
        plugins=[plugin],
        info={"description": DESCRIPTION.format(open=", ".join(f"`{p}`" for p in open_paths))},
    )
    plugin.converter.add_attribute_function(_msisdn_list)
    for name in SCHEMAS:
        spec.components.schema(name, schema=getattr(schemas, name))
    spec.components.header(
        "X-Request-ID",
        {"description": "This request's id, as in the logs.", "schema": {"type": "string"}},
    )
    spec.components.header(
        "Retry-After",
        {
            "description": "Seconds until the window of the limit passed frees.",
            "schema": {"type": "integer", "minimum": 1},
        },
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
    for rule in rules:
        view = app.view_functions[rule.endpoint]
        operations = {method: operation(rule, view, method) for method in rule_methods(rule)}
        spec.path(path=openapi_path(rule), operations=operations)
    return spec.to_dict()


def operation(rule, view, method: str) -> dict:
    """Return one method's operation, from the view's docstring and the rule's arguments."""
    if not view.__doc__:
        raise ValueError(f"{rule.endpoint} has no docstring to document {rule.rule} with")
    docs = yaml_utils.load_yaml_from_docstring(view.__doc__)
    extra = [key for key in docs if key in METHODS and key not in rule_methods(rule)]
    if extra:
        raise ValueError(f"{rule.endpoint} documents {extra} that {rule.rule} does not take")
    own = docs.get(method, {})
    common = {key: value for key, value in docs.items() if key not in METHODS}
    summary, description = _text(view.__doc__)
    found = {"summary": summary, **({"description": description} if description else {})}
    found.update({**common, **own})
    parameters = [*common.get("parameters", []), *own.get("parameters", [])]
    found["parameters"] = [
        *_path_parameters(rule, parameters),
        {"in": "header", "schema": schemas.RequestIdHeader},
    ]
    responses = {**common.get("responses", {}), **own.get("responses", {})}
    codes = [*common.get("errors", []), *own.get("errors", [])]
    if not is_public(view):
        found["security"] = SECURED
        codes += [401, 431, 503]
        if csrf.writes(method, rule.endpoint):
            codes.append(403)
    found.pop("errors", None)
    body = found.pop("body", None)
    if body is not None:
        found["requestBody"] = {
            "required": True,
            "description": "JSON, or form data.",
            "content": {kind: {"schema": body} for kind in BODY_TYPES},
        }
    responses.update({code: ERRORS[code] for code in codes if code not in responses})
    found["responses"] = {str(code): _answer(answer) for code, answer in sorted(responses.items())}
    return found


def _text(docstring: str) -> tuple[str, str]:
    """Return the docstring's first line (the summary) and its paragraphs before `---`."""
    text = re.split(r"^\s*---", inspect.cleandoc(docstring), maxsplit=1, flags=re.M)[0]
    first, _, rest = text.partition("\n")
    paragraphs = [" ".join(lines.split()) for lines in rest.split("\n\n") if lines.strip()]
    return first.strip().rstrip("."), "\n\n".join(paragraphs)


def _path_parameters(rule, parameters: list) -> list:
    """Give every argument of the rule its path parameter; the docstring may describe it."""
    described = {p["name"]: p for p in parameters if isinstance(p, dict) and p.get("in") == "path"}
    path = [
        {
            "in": "path",
            "name": name,
            "required": True,
            "schema": {"type": "string"},
            **described.get(name, {}),
        }
        for name in sorted(rule.arguments)
    ]
    return [*path, *(p for p in parameters if not (isinstance(p, dict) and p.get("in") == "path"))]


def _answer(answer) -> dict:
    """Spell out a string answer (an error's description); every answer has X-Request-ID."""
    if isinstance(answer, str):
        answer = {"description": answer, **JSON_ERROR}
    # A copy: apispec resolves the schema names in place, and ERRORS serves every operation.
    answer = copy.deepcopy(answer)
    return {**answer, "headers": {**answer.get("headers", {}), "X-Request-ID": "X-Request-ID"}}


def _msisdn_list(self, field, **kwargs) -> dict:
    return dict(MSISDNS_PROPERTY) if isinstance(field, schemas.MsisdnList) else {}


def spec_for(app) -> dict:
    """Return (and keep) the document of this app's endpoints."""
    spec = app.extensions.get("messaging.openapi")
    if spec is None:
        spec = app.extensions["messaging.openapi"] = build_spec(app)
    return spec
