"""Request and response shapes (marshmallow); they also describe the API in OpenAPI."""

from collections.abc import Iterable

from marshmallow import EXCLUDE, Schema, ValidationError, fields


class MsisdnList(fields.Field):
    """A JSON list of strings, or one comma-separated string (form data, query string); a
    form or query string may repeat it (`msisdns=a&msisdns=b,c`), and the repeats are joined."""

    default_error_messages = {
        "invalid": "must be a list of strings or a comma-separated string",
    }

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise self.make_error("invalid")


class SendSmsRequest(Schema):
    class Meta:
        unknown = EXCLUDE  # the original ignored fields it did not know

    message = fields.String(required=True)
    msisdns = MsisdnList(required=True)
    sender = fields.String(data_key="from", load_default=None, allow_none=True)


def canonical_fields(schema: Schema, pairs: Iterable[tuple], repeats_join: bool = True) -> dict:
    """Return (key, value) pairs as the schema's input: keys matched ignoring case, as the
    original's JSON decoding did (`"Message"`, `"MSISDNS"`), and unknown ones dropped. A
    repeated MsisdnList is joined when `repeats_join` (form data, query string); any other
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
        elif repeats_join and isinstance(field, MsisdnList) and isinstance(value, str):
            found[name] = f"{found[name]},{value}"
        else:
            raise ValidationError({name: ["given more than once; give it once"]})
    return found


class NormalizeRequest(Schema):
    class Meta:
        unknown = EXCLUDE

    msisdns = MsisdnList(required=True)


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


class ErrorResponse(Schema):
    error = fields.String(required=True)
    refNumber = fields.String(
        metadata={"description": "the send this error concerns, when one was recorded"}
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


class HealthResponse(Schema):
    status = fields.String(required=True, metadata={"enum": ["ok", "unavailable"]})
    database = fields.String(
        required=True,
        metadata={"description": '"ok", or "unavailable: <reason>" naming what failed'},
    )
    provider = fields.String(required=True, metadata={"description": "smsProvider.name"})


class InternalErrorResponse(Schema):
    error = fields.String(required=True)
    requestId = fields.String(
        required=True, metadata={"description": "quote it to find the logged traceback"}
    )


class SendSummary(Schema):
    refNumber = fields.String(required=True)
    originator = fields.String(required=True)
    time = fields.String(
        required=True, allow_none=True, metadata={"description": "UTC, ISO 8601 with Z"}
    )
    sender = fields.String(data_key="from", required=True, allow_none=True)
    message = fields.String(required=True, allow_none=True)
    quantity = fields.Integer(required=True, allow_none=True)
    sent = fields.Integer(required=True)
    delivered = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    status = fields.String(required=True, allow_none=True)
    description = fields.String(required=True)


class RecipientStatus(Schema):
    msisdn = fields.String(required=True)
    status = fields.String(
        required=True, metadata={"enum": ["queued", "sent", "delivered", "failed"]}
    )
    providerId = fields.String(required=True, allow_none=True)
    errorCode = fields.String(required=True, allow_none=True)
    reason = fields.String(required=True, allow_none=True)
    statusTime = fields.String(required=True, allow_none=True)


class SendReport(Schema):
    send = fields.Nested(SendSummary, required=True)
    recipients = fields.List(fields.Nested(RecipientStatus), required=True)
    page = fields.Integer(required=True)
    pageSize = fields.Integer(required=True)
    total = fields.Integer(required=True, metadata={"description": "recipients in the send"})


class ReceiptResponse(Schema):
    received = fields.Integer(required=True, metadata={"description": "status updates read"})
    updated = fields.Integer(required=True, metadata={"description": "messages made final"})
    unknown = fields.Integer(required=True, metadata={"description": "ids matching no message"})
