"""The HTTP API of the original service: thin views, load -> service -> dump."""

import json
import time

from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import ValidationError

from messaging import idempotency, sends, service
from messaging.auth import authenticate
from messaging.errors import InvalidInput
from messaging.schemas import NormalizeRequest, SendSmsRequest, SendSmsResponse, describe

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
    g.identity = authenticate()


def request_fields() -> dict:
    """Return the caller's fields from JSON, form data, or (GET, or an empty body) the query."""
    if request.method == "GET":
        return request.args.to_dict()
    body = request.get_data(cache=True)
    if not body:
        return request.args.to_dict()
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("body is not valid UTF-8") from None
    if request.mimetype in FORM_TYPES:
        return request.form.to_dict()
    if request.mimetype == "application/json" or not request.mimetype:
        try:
            data = json.loads(body)
        except ValueError as err:
            raise InvalidInput(f"body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise InvalidInput("body must be a JSON object")
        return data
    raise InvalidInput(f"unsupported Content-Type {request.mimetype!r}: send JSON or form data")


def load(schema, data: dict) -> dict:
    try:
        return schema.load(data)
    except ValidationError as err:
        raise InvalidInput(describe(err)) from None


@bp.route("/sendsms", methods=["GET", "POST"])
def send_sms():
    fields = load(send_request_schema, request_fields())
    send_at = service.parse_send_at(fields["send_at"])
    respond_async = wants_async(request.headers.get("Prefer", ""))

    def send(claim=None) -> tuple[int, dict]:
        outcome = service.send_sms(
            services(),
            message=fields["message"],
            msisdns=fields["msisdns"],
            sender=fields["sender"],
            originator=g.identity.name,
            send_at=send_at,
            wait=0 if respond_async else None,
            on_record=claim,
        )
        accepted = respond_async or outcome.state == "scheduled"
        return (202 if accepted else 200), send_response_schema.dump(outcome)

    def answer_for_send(sendlog_id: int) -> tuple[int, dict]:
        outcome = service.answer_for_send(services(), sendlog_id, fields["msisdns"])
        return 200, send_response_schema.dump(outcome)

    key = request.headers.get("Idempotency-Key")
    if key is None:
        status, answer = send()
    else:
        request_fingerprint = idempotency.fingerprint(
            fields["message"], fields["msisdns"], fields["sender"], fields["send_at"]
        )
        status, answer = idempotency.run_once(
            services().db, g.identity.name, key, request_fingerprint, send, answer_for_send
        )
    g.log_summary = (
        f"ref={answer['refNumber']} valid={answer['validNumbers']} "
        f"invalid={answer['invalidNumbers']} duplicates={answer['duplicateNumbers']} "
        f"sent={answer['messagesSent']} queued={answer.get('queuedNumbers', 0)} "
        f"success={answer['sendSuccess']}"
    )
    response = jsonify(answer)
    response.status_code = status
    if status == 202:
        response.headers["Location"] = f"/sends/{answer['refNumber']}"
        if respond_async:
            response.headers["Preference-Applied"] = "respond-async"
    return response


def wants_async(prefer: str) -> bool:
    """Does a Prefer header (RFC 7240) ask for respond-async?"""
    return any(part.split(";")[0].strip().lower() == "respond-async" for part in prefer.split(","))


@bp.route("/messagestatus/<anytext:msisdn>", methods=["GET"])
def message_status(msisdn):
    status = service.message_status(services(), msisdn)
    return Response(status or NO_DATA, mimetype="text/plain")


@bp.route("/sends/<ref>", methods=["GET"])
def send_report(ref):
    page, page_size = sends.parse_paging(request.args.get("page"), request.args.get("pageSize"))
    return jsonify(sends.send_report(services(), sends.parse_ref(ref), page, page_size))


@bp.route("/sends/<ref>/cancel", methods=["POST"])
def cancel_send(ref):
    ref_number = sends.parse_ref(ref)
    service.cancel_send(services(), ref_number)
    g.log_summary = f"ref={ref_number} cancelled"
    return jsonify(sends.send_report(services(), ref_number, 1, sends.DEFAULT_PAGE_SIZE)["send"])


@bp.route("/normalize", methods=["POST"])
def normalize():
    fields = load(normalize_request_schema, request_fields())
    return jsonify(service.normalize(services(), fields["msisdns"]))


@bp.route("/ping", methods=["GET"])
def ping():
    return jsonify({"Timestamp": int(time.time())})
