"""The HTTP API of the original service: thin views, load -> service -> dump.

Each view's docstring is its entry in /openapi.json (see openapi.py): the summary, the
description, then (after `---`) its parameters and answers in apispec's YAML.
"""

import json
import time

from flask import Blueprint, Response, g, jsonify, request
from marshmallow import ValidationError

from messaging import idempotency, sends, service
from messaging.auth import public
from messaging.errors import InvalidInput
from messaging.schemas import (
    NormalizeRequest,
    PingResponse,
    SendReport,
    SendReportQuery,
    SendSmsQuery,
    SendSmsRequest,
    SendSmsResponse,
    describe,
)
from messaging.services import current as services

bp = Blueprint("api", __name__)

NO_DATA = "Error: no data available"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

send_request_schema = SendSmsRequest()
send_query_schema = SendSmsQuery()
normalize_request_schema = NormalizeRequest()
send_response_schema = SendSmsResponse()
send_report_query_schema = SendReportQuery()
send_report_schema = SendReport()
ping_response_schema = PingResponse()


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
    """Send one text to a list of numbers.

    Numbers are cleaned and de-duplicated; `validNumbers + invalidNumbers +
    duplicateNumbers` is the number of entries given. A provider-level failure (out of
    credit, provider down, sending disabled) is still 200, with `sendSuccess: false` and
    the reason in `statusDescription`; the send and every recipient are recorded.
    ---
    parameters:
      - {in: header, schema: IdempotencyHeader}
    responses:
      200:
        description: The send is recorded; `refNumber` finds it again.
        content: {application/json: {schema: SendSmsResponse}}
      409: >-
        The send of this Idempotency-Key is still in progress: `refNumber` names it
        (see `/sends/{refNumber}`); repeat later for its answer.
    errors: [406, 413, 500]
    post:
      body: SendSmsRequest
    get:
      summary: Send one text to a list of numbers (query parameters)
      parameters:
        - {in: query, schema: SendSmsQuery}
    """
    schema = send_query_schema if request.method == "GET" else send_request_schema
    fields = load(schema, request_fields())

    def send(claim=None) -> dict:
        outcome = service.send_sms(
            services(),
            message=fields["message"],
            msisdns=fields["msisdns"],
            sender=fields.get("sender"),
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
            fields["message"], fields["msisdns"], fields.get("sender")
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
    """Status of the newest message to a number.

    The number is normalised first (`0830000000` finds `27830000000`). A message still
    `sent` is asked about once at a provider that can answer.
    ---
    responses:
      200:
        description: "The status, or `Error: no data available`."
        content:
          text/plain:
            schema:
              type: string
              enum: [queued, sent, delivered, failed, "Error: no data available"]
    errors: [500]
    """
    status = service.message_status(services(), msisdn)
    return Response(status or NO_DATA, mimetype="text/plain")


@bp.route("/sends/<refNumber>", methods=["GET"])
def send_report(refNumber):  # the API's name for it, as in every answer
    """One send and a page of its recipients with their status.
    ---
    parameters:
      - {in: path, name: refNumber, description: as /sendsms answered it}
      - {in: query, schema: SendReportQuery}
    responses:
      200:
        description: The send and one page of recipients.
        content: {application/json: {schema: SendReport}}
      404: No send with that refNumber.
    errors: [406, 500]
    """
    query = load(send_report_query_schema, request.args.to_dict())
    report = sends.send_report(services(), sends.parse_ref(refNumber), **query)
    return jsonify(send_report_schema.dump(report))


@bp.route("/normalize", methods=["POST"])
def normalize():
    """Clean a list of numbers.
    ---
    body: NormalizeRequest
    responses:
      200:
        description: >-
          Valid numbers in international digits without `+`, first occurrence order kept.
        content: {application/json: {schema: {type: array, items: {type: string}}}}
    errors: [406, 413, 500]
    """
    fields = load(normalize_request_schema, request_fields())
    return jsonify(service.normalize(services(), fields["msisdns"]))


@bp.route("/ping", methods=["GET"])
@public
def ping():
    """Liveness, as the original service answered it.
    ---
    responses:
      200:
        description: The server's clock.
        content: {application/json: {schema: PingResponse}}
    """
    return jsonify(ping_response_schema.dump({"Timestamp": int(time.time())}))
