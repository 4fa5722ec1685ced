"""Request and response shapes (marshmallow); they also describe the API in OpenAPI."""

from collections.abc import Iterable

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from messaging import limits
from messaging.logs import REQUEST_ID

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class MsisdnList(fields.Field):
    """A JSON list of strings, or one comma-separated string (form data, query string); a
    form or query string may repeat it (`msisdns=a&msisdns=b,c`), and the repeats are joined."""

    default_error_messages = {
        "invalid": "must be a list of strings or a comma-separated string",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return split_numbers(value)
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise self.make_error("invalid")


class CommaSeparated(fields.String):
    """Numbers in one comma-separated string (a query string holds no list); repeats of it
    are joined, as MsisdnList's are."""

    def _deserialize(self, value, attr, data, **kwargs):
        return split_numbers(super()._deserialize(value, attr, data, **kwargs))


NUMBER_LISTS = (MsisdnList, CommaSeparated)


def split_numbers(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


class WholeNumber(fields.String):
    """A whole number from 1 up, in ASCII digits, at most `maximum`; read from a string."""

    default_error_messages = {
        "invalid": "must be a whole number from 1 up",
        "too_large": "must be at most {maximum}",
    }

    def __init__(self, maximum: int = 999_999_999, **kwargs):
        super().__init__(**kwargs)
        self.maximum = maximum

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) < 1:
            raise self.make_error("invalid")
        if int(text) > self.maximum:
            raise self.make_error("too_large", maximum=self.maximum)
        return int(text)


class SendSmsRequest(Schema):
    class Meta:
        unknown = EXCLUDE  # the original ignored fields it did not know

    message = fields.String(required=True)
    msisdns = MsisdnList(required=True)
    sender = fields.String(
        data_key="from", load_default=None, allow_none=True, metadata={"description": "sender id"}
    )
    send_at = fields.String(
        data_key="sendAt",
        load_default=None,
        allow_none=True,
        metadata={"description": "send later: ISO 8601 with an offset, 2026-12-24T08:00+02:00"},
    )
    callback_url = fields.String(
        data_key="callbackUrl",
        load_default=None,
        allow_none=True,
        metadata={
            "description": "POST every status change of its messages here, signed per "
            "Standard Webhooks (default deliveryStatus.callbackUrl); http(s) on a public "
            "address"
        },
    )


class SendSmsQuery(SendSmsRequest):
    """GET /sendsms: the same fields in the query string."""

    msisdns = CommaSeparated(required=True, metadata={"description": "comma-separated numbers"})
    sender = fields.String(data_key="from", metadata={"description": "sender id"})


def canonical_fields(schema: Schema, pairs: Iterable[tuple], repeats_join: bool = True) -> dict:
    """Return (key, value) pairs as the schema's input: keys matched ignoring case, as the
    original's JSON decoding did (`"Message"`, `"MSISDNS"`), and unknown ones dropped. A
    repeated list of numbers is joined when `repeats_join` (form data, query string); any other
    repeat is refused, naming the key, rather than one of its values being dropped unseen."""
    known = {
        (field.data_key or name).lower(): (field.data_key or name, field)
        for name, field in schema.load_fields.items()
    }
    found: dict = {}
    for key, value in pairs:
        name, field = known.get(key.lower(), (None, None)) if isinstance(key, str) else (None, None)
        if name is None:
            continue
        if name not in found:
            found[name] = value
        elif repeats_join and isinstance(field, NUMBER_LISTS) and isinstance(value, str):
            found[name] = f"{found[name]},{value}"
        else:
            raise ValidationError({name: ["given more than once; give it once"]})
    return found


class NormalizeRequest(Schema):
    class Meta:
        unknown = EXCLUDE

    msisdns = MsisdnList(required=True)


class SendReportQuery(Schema):
    class Meta:
        unknown = EXCLUDE

    page = WholeNumber(load_default=1, metadata={"description": "from 1", "pattern": "^[0-9]+$"})
    page_size = WholeNumber(
        maximum=MAX_PAGE_SIZE,
        data_key="pageSize",
        load_default=DEFAULT_PAGE_SIZE,
        metadata={
            "description": f"recipients per page, 1-{MAX_PAGE_SIZE}",
            "pattern": "^[0-9]+$",
        },
    )


class PreferHeader(Schema):
    prefer = fields.String(
        data_key="Prefer",
        metadata={
            "description": "`respond-async` (RFC 7240): answer 202 at once; "
            "the dispatchers send it."
        },
    )


class IdempotencyHeader(Schema):
    key = fields.String(
        data_key="Idempotency-Key",
        validate=validate.Length(1, 255),
        metadata={
            "description": "The same key from the same caller within 24 hours answers the "
            "first response again and sends nothing."
        },
    )


class RequestIdHeader(Schema):
    request_id = fields.String(
        data_key="X-Request-ID",
        validate=validate.Regexp(REQUEST_ID),
        metadata={
            "description": "Your id for this request (nginx's $request_id); one is made if "
            "absent or not tame."
        },
    )


class SendSmsResponse(Schema):
    # The original's fields in the original's order, then ours.
    refNumber = fields.String(attribute="ref_number")
    validNumbers = fields.Integer(attribute="valid_numbers")
    invalidNumbers = fields.Integer(attribute="invalid_numbers")
    sendSuccess = fields.Boolean(attribute="send_success")
    statusDescription = fields.String(attribute="status_description")
    messagesSent = fields.Integer(attribute="messages_sent")
    duplicateNumbers = fields.Integer(attribute="duplicate_numbers")
    segments = fields.Integer()
    encoding = fields.String(
        metadata={
            "enum": ["GSM-7", "UCS-2"],
            "description": "how the text went out: GSM-7 (160 characters a part, after "
            "smsProvider.smartEncoding replaced look-alikes such as typographic quotes) or "
            "UCS-2 (70 a part)",
        }
    )
    queuedNumbers = fields.Integer(
        attribute="queued_numbers",
        metadata={"description": "recipients not sent yet: they go on in the background"},
    )
    optedOutNumbers = fields.Integer(
        attribute="opted_out_numbers",
        metadata={
            "description": "valid numbers on the suppression list: not sent, each `failed` "
            '"opted out" (counted in validNumbers)'
        },
    )


class ErrorResponse(Schema):
    error = fields.String(required=True)
    refNumber = fields.String(
        metadata={"description": "the send this error concerns, when one was recorded"}
    )


class LimitErrorResponse(Schema):
    error = fields.String(required=True)
    limit = fields.String(
        required=True,
        metadata={
            "enum": list(limits.NAMES),
            "description": "the limit the request would pass (config `limits.<name>`)",
        },
    )
    max = fields.Integer(required=True, metadata={"description": "the caller's limit"})
    remaining = fields.Integer(
        required=True, metadata={"description": "what is left of it in the current window"}
    )
    requested = fields.Integer(
        required=True, metadata={"description": "what this request needed of it"}
    )
    retryAfter = fields.Integer(
        required=True, metadata={"description": "seconds until the window frees, as Retry-After"}
    )


def describe(err: ValidationError) -> str:
    """Turn marshmallow's messages into one line naming each bad field."""
    messages = err.messages if isinstance(err.messages, dict) else {"_": err.messages}
    parts = []
    for field_name, problems in sorted(messages.items()):
        text = " ".join(problems) if isinstance(problems, list) else str(problems)
        parts.append(text if field_name == "_schema" else f"{field_name}: {text}")
    return "; ".join(parts)


# --- shapes of the operator endpoints and errors (documented in /openapi.json) ---


class PingResponse(Schema):
    Timestamp = fields.Integer(required=True, metadata={"description": "Unix seconds"})


class ProviderHealth(Schema):
    name = fields.String(
        attribute="provider",
        required=True,
        metadata={"description": "its configured name (id), as sms.provider stores it"},
    )
    weight = fields.Float(required=True, metadata={"description": "configured"})
    health = fields.Float(
        attribute="factor",
        required=True,
        metadata={"description": "the share of its weight it holds now, 0 to 1"},
    )
    currentWeight = fields.Float(attribute="current", required=True)
    reason = fields.String(required=True, metadata={"description": "why it lost weight"})


class HealthResponse(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok", "unavailable"]})
    database = fields.String(
        required=True,
        metadata={"description": '"ok", or "unavailable: <reason>" naming what failed'},
    )
    provider = fields.String(required=True, metadata={"description": "smsProvider.name"})
    providers = fields.List(
        fields.Nested(ProviderHealth),
        metadata={"description": "with several providers: each, the first being the primary"},
    )


class InternalErrorResponse(Schema):
    error = fields.String(required=True)
    requestId = fields.String(
        required=True, metadata={"description": "quote it to find the logged traceback"}
    )


# --- GET /sends/<refNumber>: dumped from the stored rows ---


class Text(fields.String):
    """A string column; NULL is written as ""."""

    def _serialize(self, value, attr, obj, **kwargs):
        return "" if value is None else super()._serialize(value, attr, obj, **kwargs)


class Total(fields.Integer):
    """A counter column; NULL is written as 0."""

    def _serialize(self, value, attr, obj, **kwargs):
        return super()._serialize(value or 0, attr, obj, **kwargs)


class UtcTime(fields.String):
    """A stored timestamp (UTC, without a zone), written as ISO 8601 with Z."""

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else value.isoformat() + "Z"


class SendSummary(Schema):
    refNumber = fields.String(attribute="id", required=True)
    originator = Text(required=True)
    time = UtcTime(
        attribute="senttime",
        required=True,
        allow_none=True,
        metadata={"description": "UTC, ISO 8601 with Z"},
    )
    sender = fields.String(data_key="from", required=True, allow_none=True)
    message = fields.String(required=True, allow_none=True)
    quantity = fields.Integer(required=True, allow_none=True)
    sent = Total(required=True)
    delivered = Total(required=True)
    failed = Total(required=True)
    status = fields.String(required=True, allow_none=True)
    description = Text(required=True)
    state = fields.String(
        required=True, metadata={"enum": ["scheduled", "sending", "done", "cancelled"]}
    )
    sendAt = UtcTime(
        attribute="sendat",
        required=True,
        allow_none=True,
        metadata={"description": "UTC, ISO 8601 with Z: a scheduled send"},
    )
    queued = fields.Integer(required=True, metadata={"description": "recipients not sent yet"})
    optedOut = Total(
        attribute="optedout",
        required=True,
        metadata={"description": 'recipients left out as opted out (`failed`, "opted out")'},
    )


def failure_kind() -> fields.String:
    """The `failureKind` of a message or event (None unless it failed)."""
    return fields.String(
        attribute="failure_kind",
        required=True,
        allow_none=True,
        metadata={
            "enum": ["temporary", "permanent", "unknown", None],
            "description": "of a failure: a later send to the number may get through "
            "(temporary), will not as things stand (permanent), or the provider did not say",
        },
    )


class RecipientStatus(Schema):
    msisdn = fields.String(required=True)
    status = fields.String(
        required=True, metadata={"enum": ["queued", "sent", "delivered", "failed"]}
    )
    providerId = fields.String(attribute="provider_id", required=True, allow_none=True)
    errorCode = fields.String(attribute="error_code", required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)
    failureKind = failure_kind()
    statusTime = UtcTime(attribute="status_time", required=True, allow_none=True)
    provider = fields.String(
        allow_none=True,
        metadata={
            "description": "with several providers: the configured name of the one that carried it"
        },
    )


class StatusEvent(Schema):
    id = fields.Function(
        lambda event: f"evt_{event['seq']}",
        required=True,
        metadata={"description": "the event's id, as its webhook carries it"},
    )
    time = UtcTime(required=True, metadata={"description": "UTC, ISO 8601 with Z"})
    source = fields.String(
        required=True,
        metadata={
            "enum": ["send", "poll", "receipt", "cancel", "reconcile", "failover", "optout"],
            "description": "failover: moved to another provider before being sent (queued); "
            "optout: taken out of its queued batch, opted out (failed)",
        },
    )
    status = fields.String(
        required=True, metadata={"enum": ["queued", "sent", "delivered", "failed"]}
    )
    errorCode = fields.String(
        attribute="error_code",
        required=True,
        allow_none=True,
        metadata={"description": "the provider's own code"},
    )
    reason = fields.String(
        required=True, allow_none=True, metadata={"description": "the provider's own text"}
    )
    failureKind = failure_kind()
    providerId = fields.String(attribute="provider_id", required=True, allow_none=True)


class MessageReport(RecipientStatus):
    refNumber = fields.String(attribute="ref_number", required=True)
    events = fields.List(
        fields.Nested(StatusEvent),
        required=True,
        metadata={"description": "every status change of the message, oldest first"},
    )


class SendReport(Schema):
    send = fields.Nested(SendSummary, required=True)
    recipients = fields.List(fields.Nested(RecipientStatus), required=True)
    page = fields.Integer(required=True)
    pageSize = fields.Integer(attribute="page_size", required=True)
    total = fields.Integer(required=True, metadata={"description": "recipients in the send"})


class ReceiptResponse(Schema):
    received = fields.Integer(required=True, metadata={"description": "status updates read"})
    updated = fields.Integer(required=True, metadata={"description": "messages made final"})
    unknown = fields.Integer(
        attribute="unknown_count",
        required=True,
        metadata={"description": "ids matching no message"},
    )


# --- replies and opt-outs (inbound.py, optouts.py) ---


class InboundQuery(SendReportQuery):
    since = fields.String(
        load_default=None,
        metadata={"description": "received at or after: ISO 8601 (UTC without an offset)"},
    )


class InboundMessageSchema(Schema):
    id = fields.String(required=True, metadata={"description": "ours, in order of arrival"})
    provider = fields.String(required=True)
    providerId = fields.String(attribute="provider_id", required=True)
    sender = fields.String(
        data_key="from",
        attribute="msisdn",
        required=True,
        metadata={"description": "normalised like /normalize where it is valid"},
    )
    to = fields.String(attribute="recipient", required=True)
    text = fields.String(required=True)
    receivedAt = UtcTime(attribute="received_at", required=True)
    action = fields.String(
        required=True,
        allow_none=True,
        metadata={"enum": ["opt-out", "opt-in", None], "description": "its first word's keyword"},
    )


class InboundPage(Schema):
    messages = fields.List(fields.Nested(InboundMessageSchema), required=True)
    page = fields.Integer(required=True)
    pageSize = fields.Integer(attribute="page_size", required=True)
    total = fields.Integer(required=True, metadata={"description": "replies since `since`"})


class InboundResponse(Schema):
    received = fields.Integer(required=True, metadata={"description": "replies in the push"})
    stored = fields.Integer(
        attribute="stored_count",
        required=True,
        metadata={"description": "new ones (a reply pushed again is kept once)"},
    )
    optedOut = fields.Integer(
        attribute="opted_out_count",
        required=True,
        metadata={"description": "senders put on the suppression list"},
    )
    optedIn = fields.Integer(
        attribute="opted_in_count",
        required=True,
        metadata={"description": "senders taken off it"},
    )


class OptOutEntry(Schema):
    msisdn = fields.String(required=True)
    source = fields.String(
        required=True,
        metadata={"description": 'what put it there: "reply via Twilio", "api:<caller>", ...'},
    )
    time = UtcTime(required=True)
