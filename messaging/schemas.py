"""Request and response shapes (marshmallow); they also describe the API in OpenAPI."""

from marshmallow import EXCLUDE, Schema, ValidationError, fields


class MsisdnList(fields.Field):
    """A JSON list of strings, or one comma-separated string (form data, query string)."""

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


class NormalizeRequest(Schema):
    class Meta:
        unknown = EXCLUDE

    msisdns = MsisdnList(required=True)


class SendSmsResponse(Schema):
    refNumber = fields.String(attribute="ref_number")
    validNumbers = fields.Integer(attribute="valid_numbers")
    invalidNumbers = fields.Integer(attribute="invalid_numbers")
    duplicateNumbers = fields.Integer(attribute="duplicate_numbers")
    sendSuccess = fields.Boolean(attribute="send_success")
    statusDescription = fields.String(attribute="status_description")
    messagesSent = fields.Integer(attribute="messages_sent")
    segments = fields.Integer()


class ErrorResponse(Schema):
    error = fields.String(required=True)


def describe(err: ValidationError) -> str:
    """Turn marshmallow's messages into one line naming each bad field."""
    messages = err.messages if isinstance(err.messages, dict) else {"_": err.messages}
    parts = []
    for field_name, problems in sorted(messages.items()):
        text = " ".join(problems) if isinstance(problems, list) else str(problems)
        parts.append(text if field_name == "_schema" else f"{field_name}: {text}")
    return "; ".join(parts)
