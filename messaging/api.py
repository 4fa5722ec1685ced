"""The HTTP API of the original service: thin views, load -> service -> dump."""

import time
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import ValidationError

from messaging import csrf, idempotency, sends, service
from messaging.auth import authenticate
from messaging.errors import InvalidInput
from messaging.schemas import (
    NormalizeRequest,
    SendSmsRequest,
    SendSmsResponse,
    canonical_fields,
    describe,
)

bp = Blueprint("api", __name__)

NO_DATA = "Error: no data available"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# Endpoints anyone may call (SPEC "HTTP API").
OPEN_ENDPOINTS = {"api.ping"}

send_request_schema = SendSmsRequest()
normalize_request_schema = NormalizeRequest()
send_response_schema = SendSmsResponse()


def services() -> service.Services:
    return current_app.extensions["messaging"]


@bp.before_request
def require_identity():
    if request.endpoint in OPEN_ENDPOINTS:
        return
    writes = request.method not in csrf.SAFE_METHODS or request.endpoint == "api.send_sms"
    csrf.refuse_cross_site(services().config.authentication, request, writes)
    g.identity = authenticate()


def request_fields(schema) -> dict:
    """Return the caller's fields for `schema`: a JSON object (whatever the Content-Type says,
    as the original read every body), form data, or (GET, or no body) the query string."""
    body = request.get_data(cache=True) if request.method != "GET" else b""
    if not body:
        return canonical_fields(schema, _url_pairs(_utf8(request.query_string, "query string")))
    text = _utf8(body, "body")
    mimetype = request.mimetype
    if mimetype not in FORM_TYPES or text.lstrip().startswith("{"):
        return canonical_fields(schema, _json_pairs(text, mimetype), repeats_join=False)
    if mimetype == "multipart/form-data":
        return canonical_fields(schema, request.form.items(multi=True))
    return canonical_fields(schema, _url_pairs(text, "form data"))


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not valid UTF-8") from None


def _url_pairs(text: str, what: str = "query string") -> list[tuple[str, str]]:
    """Decode `a=1&b=2`; a percent escape that is not UTF-8 (`%E9`) is refused, not kept."""
    try:
        return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not valid UTF-8 once percent-decoded") from None


def _json_pairs(text: str, mimetype: str) -> list[tuple]:
    """Return the top-level (key, value) pairs of a JSON object body, repeats included."""
    objects = []

    def keep_pairs(pairs):
        objects.append(pairs)  # the outermost object is completed, so kept, last
        return dict(pairs)

    try:
        data = current_app.json.loads(text, object_pairs_hook=keep_pairs)
    except ValueError as err:
        if mimetype in ("application/json", ""):
            raise InvalidInput(f"body is not valid JSON: {err}") from None
        raise InvalidInput(
            f"body is not valid JSON ({err}); with Content-Type {mimetype!r}, "
            "send a JSON object or form data"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput("body must be a JSON object")
    return objects[-1]


def load(schema) -> dict:
    """Read the request's fields with `schema`; raise InvalidInput naming each bad field."""
    try:
        return schema.load(request_fields(schema))
    except ValidationError as err:
        raise InvalidInput(describe(err)) from None


@bp.route("/sendsms", methods=["GET", "POST"])
def send_sms():
    fields = load(send_request_schema)

    def send(claim=None) -> dict:
        outcome = service.send_sms(
            services(),
            message=fields["message"],
            msisdns=fields["msisdns"],
            sender=fields["sender"],
            originator=g.identity.name,
            on_record=claim,
        )
        return send_response_schema.dump(outcome)

    def answer_for_send(sendlog_id: int) -> dict:
        outcome = service.answer_for_send(services(), sendlog_id, fields["msisdns"])
        return send_response_schema.dump(outcome)

    key = request.headers.get("Idempotency-Key")
    if key is None:
        answer = send()
    else:
        request_fingerprint = idempotency.fingerprint(
            fields["message"], fields["msisdns"], fields["sender"]
        )
        answer = idempotency.run_once(
            services().db, g.identity.name, key, request_fingerprint, send, answer_for_send
        )
    g.log_summary = (
        f"ref={answer['refNumber']} valid={answer['validNumbers']} "
        f"invalid={answer['invalidNumbers']} duplicates={answer['duplicateNumbers']} "
        f"sent={answer['messagesSent']} success={answer['sendSuccess']}"
    )
    return jsonify(answer)


@bp.route("/messagestatus/<anytext:msisdn>", methods=["GET"])
def message_status(msisdn):
    status = service.message_status(services(), msisdn, g.identity.owner)
    return Response(status or NO_DATA, mimetype="text/plain")


@bp.route("/sends/<ref>", methods=["GET"])
def send_report(ref):
    page, page_size = sends.parse_paging(request.args.get("page"), request.args.get("pageSize"))
    report = sends.send_report(services(), sends.parse_ref(ref), page, page_size, g.identity.owner)
    return jsonify(report)


@bp.route("/normalize", methods=["POST"])
def normalize():
    fields = load(normalize_request_schema)
    return jsonify(service.normalize(services(), fields["msisdns"]))


@bp.route("/ping", methods=["GET"])
def ping():
    return jsonify({"Timestamp": int(time.time())})
