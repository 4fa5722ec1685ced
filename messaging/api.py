"""The HTTP API of the original service: thin views, load -> service -> dump.

Each view's docstring is its entry in /openapi.json (see openapi.py): the summary, the
description, then (after `---`) its parameters and answers in apispec's YAML.
"""

import time
from urllib.parse import parse_qsl

from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import ValidationError

from messaging import dashboard, idempotency, limits, metrics, sends, service
from messaging.auth import public, takes_sign_in
from messaging.errors import InvalidInput, LimitExceeded
from messaging.schemas import (
    MessageReport,
    NormalizeRequest,
    PingResponse,
    SendReport,
    SendReportQuery,
    SendSmsQuery,
    SendSmsRequest,
    SendSmsResponse,
    SendSummary,
    canonical_fields,
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
send_summary_schema = SendSummary()
message_report_schema = MessageReport()
ping_response_schema = PingResponse()


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
    """Send one text to a list of numbers.

    Numbers are cleaned and de-duplicated; `validNumbers + invalidNumbers +
    duplicateNumbers` is the number of entries given. The request works on its send for
    up to smsProvider.waitSeconds and answers what is known: what is not sent by then
    (`queuedNumbers`) goes on with the dispatchers. A provider-level failure (out of
    credit, provider down past smsProvider.retryWindow, sending disabled) is still 200,
    with `sendSuccess: false` and the reason in `statusDescription`; the send and every
    recipient are recorded.
    ---
    parameters:
      - {in: header, schema: IdempotencyHeader}
      - {in: header, schema: PreferHeader}
    responses:
      200:
        description: The send is recorded; `refNumber` finds it again.
        content: {application/json: {schema: SendSmsResponse}}
      202:
        description: >-
          Recorded and not sent yet (`Prefer: respond-async`, or a `sendAt` ahead);
          `Location` is `/sends/{refNumber}`.
        content: {application/json: {schema: SendSmsResponse}}
      409: >-
        The send of this Idempotency-Key is still in progress: `refNumber` names it
        (see `/sends/{refNumber}`); repeat later for its answer.
    errors: [406, 413, 429, 500]
    post:
      body: SendSmsRequest
    get:
      summary: Send one text to a list of numbers (query parameters)
      parameters:
        - {in: query, schema: SendSmsQuery}
    """
    schema = send_query_schema if request.method == "GET" else send_request_schema
    fields = load(schema)
    send_at = service.parse_send_at(fields.get("send_at"))
    respond_async = wants_async(request.headers.get("Prefer", ""))

    def send(claim=None) -> tuple[int, dict]:
        outcome = service.send_sms(
            services(),
            message=fields["message"],
            msisdns=fields["msisdns"],
            sender=fields.get("sender"),
            originator=g.identity.name,
            send_at=send_at,
            wait=0 if respond_async else None,
            on_record=claim,
            callback_url=fields.get("callback_url"),
            caller_limits=limits.for_caller(services().config.limits, g.identity.own_limits),
        )
        accepted = respond_async or outcome.state == "scheduled"
        return (202 if accepted else 200), send_response_schema.dump(outcome)

    def answer_for_send(sendlog_id: int) -> tuple[int, dict]:
        outcome = service.answer_for_send(services(), sendlog_id, fields["msisdns"])
        return 200, send_response_schema.dump(outcome)

    key = request.headers.get("Idempotency-Key")
    try:
        if key is None:
            status, answer = send()
        else:
            parts = [fields["message"], fields["msisdns"], fields.get("sender")]
            parts.append(fields.get("send_at"))
            if fields.get("callback_url"):  # only then: the keys stored before it keep matching
                parts.append(fields["callback_url"])
            request_fingerprint = idempotency.fingerprint(*parts)
            status, answer = idempotency.run_once(
                services().db, g.identity.name, key, request_fingerprint, send, answer_for_send
            )
    except LimitExceeded as err:
        metrics.record_limit_refusal(err.limit)
        raise
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
    """Status of the newest message to a number.

    Only the caller's own messages count, unless it is an admin
    (authentication.adminPermission, or an API key made with `--admin`). The number is
    normalised first (`0830000000` finds `27830000000`). A message still
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
    status = service.message_status(services(), msisdn, g.identity.owner)
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
      404: No send with that refNumber (or one of another caller, unless an admin).
    errors: [406, 500]
    """
    query = load(send_report_query_schema)
    ref = sends.parse_ref(refNumber)
    report = sends.send_report(services(), ref, **query, owner=g.identity.owner)
    return jsonify(send_report_schema.dump(report))


@bp.route("/sends/<refNumber>/messages/<anytext:msisdn>", methods=["GET"])
def message_report(refNumber, msisdn):  # the API's name for it, as in every answer
    """One message of a send, with every status event it had.

    The number is normalised first (`0830000000` finds `27830000000`). Each event is one
    status change, from the send, a poll, a receipt, a cancel or reconcile, with the
    provider's own code and text; a message still `queued` has none yet.
    ---
    parameters:
      - {in: path, name: refNumber, description: as /sendsms answered it}
      - {in: path, name: msisdn, description: a number the send went to}
    responses:
      200:
        description: The message and its events, oldest first.
        content: {application/json: {schema: MessageReport}}
      404: No send with that refNumber, or no message of it to that number.
    errors: [406, 500]
    """
    report = sends.message_report(services(), sends.parse_ref(refNumber), msisdn, g.identity.owner)
    return jsonify(message_report_schema.dump(report))


@bp.route("/sends/<refNumber>/cancel", methods=["POST"])
def cancel_send(refNumber):  # the API's name for it, as in every answer
    """Cancel what of a send has not been handed to the provider.

    Those recipients become `failed` with reason `cancelled`; a batch already at the
    provider finishes as it will. Cancelling a cancelled send again answers the same.
    ---
    parameters:
      - {in: path, name: refNumber, description: as /sendsms answered it}
    responses:
      200:
        description: The send, as cancelled.
        content: {application/json: {schema: SendSummary}}
      404: No send with that refNumber (or one of another caller, unless an admin).
      409: The send is already finished.
    errors: [406, 500]
    """
    ref = sends.parse_ref(refNumber)
    service.cancel_send(services(), ref, g.identity.owner)
    g.log_summary = f"ref={ref} cancelled"
    report = sends.send_report(services(), ref, 1, 1, g.identity.owner)
    return jsonify(send_summary_schema.dump(report.send))


@bp.route("/sends/<refNumber>/failed.csv", methods=["GET"])
@takes_sign_in
def failed_numbers(refNumber):  # the API's name for it, as in every answer
    """The failed numbers of a send, as CSV.

    One line per failed message, in the send's order, under the header
    `msisdn,code,reason,failure kind`: the provider's code and reason (or ours, such as
    `cancelled` or `opted out`) and the failure's kind (temporary, permanent or unknown).
    A cell that a spreadsheet would take for a formula starts with `'`. The operator's page
    links here; with API keys its sign-in cookie is a credential here too.
    ---
    parameters:
      - {in: path, name: refNumber, description: as /sendsms answered it}
    responses:
      200:
        description: "CSV (RFC 4180), with a header line."
        content: {text/csv: {schema: {type: string}}}
      404: No send with that refNumber (or one of another caller, unless an admin).
    errors: [406, 500]
    """
    ref = sends.parse_ref(refNumber)
    text = dashboard.failed_numbers_csv(services(), ref, g.identity.owner)
    response = Response(text, mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="send-{ref}-failed.csv"'
    return response


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
    fields = load(normalize_request_schema)
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
