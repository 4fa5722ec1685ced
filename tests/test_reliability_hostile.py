"""Hostile input: generated requests from the app's own OpenAPI document, injection-shaped
text, oversized and malformed bodies. None causes a 5xx; each is stored verbatim or
refused with a clear error that changes nothing."""

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import base_config, gunicorn_server, rows

# --- schemathesis: every documented operation, a few hundred cases, derandomized ---

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CASES = 25  # per operation, for valid and for schema-breaking input each


def test_generated_requests_get_no_5xx_and_answers_match_the_document(make_app, capsys):
    app = make_app(base_config(maxRecipients=50, maxMessageSegments=3))
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    ran = []

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=CASES,
                derandomize=True,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case):
                ran.append(case.operation.label)
                case.call_and_validate(checks=CHECKS)

            check()

    with capsys.disabled():
        print(f"\nschemathesis: {len(ran)} cases over {len(operations)} operations")
    assert len(operations) >= 8
    assert len(ran) >= 200


# --- injection-shaped text is data, never SQL ---

DROP = "'; DROP TABLE sms; --"
OR_TRUE = "0830000000' OR '1'='1"


def test_injection_shaped_message_is_stored_verbatim(client, db):
    answer = client.post("/sendsms", json={"message": DROP, "msisdns": ["0830000001"]})
    assert answer.status_code == 200
    assert rows(db, "SELECT message FROM sendlog") == [(DROP,)]
    assert rows(db, "SELECT message, msisdn FROM sms") == [(DROP, "27830000001")]


def test_injection_shaped_numbers_are_invalid_numbers_not_sql(client, db):
    answer = client.post(
        "/sendsms", json={"message": "hi", "msisdns": [OR_TRUE, DROP, "0830000001"]}
    )
    body = answer.get_json()
    assert (body["validNumbers"], body["invalidNumbers"]) == (1, 2)
    assert rows(db, "SELECT msisdn FROM sms") == [("27830000001",)]
    assert client.post("/normalize", json={"msisdns": [OR_TRUE, DROP]}).get_json() == []


@pytest.mark.parametrize(
    "path", [f"/messagestatus/{OR_TRUE}", "/messagestatus/1%27%20OR%201=1", "/messagestatus/%00"]
)
def test_injection_shaped_status_lookup_finds_nothing(client, db, path):
    client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000001"]})
    answer = client.get(path)
    assert (answer.status_code, answer.text) == (200, "Error: no data available")


def test_injection_shaped_send_reference_is_refused(client):
    answer = client.get("/sends/1%20OR%201=1")
    assert answer.status_code == 406
    assert "refNumber must be a number" in answer.get_json()["error"]


# --- limits and malformed bodies: clear error, nothing recorded ---


@pytest.fixture
def limited(make_app):
    config = base_config(maxRecipients=3, maxMessageSegments=2)
    config["MaxBodyBytes"] = 2048
    return make_app(config).test_client()


def nothing_recorded(db) -> bool:
    return rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_a_body_over_the_size_limit_is_413(limited, db):
    answer = limited.post(
        "/sendsms", json={"message": "hi", "msisdns": ["0830000001"], "pad": "x" * 4096}
    )
    assert answer.status_code == 413
    assert "error" in answer.get_json()
    assert nothing_recorded(db)


def test_more_recipients_than_the_limit_is_406(limited, db):
    numbers = ["0830000001", "0830000002", "0830000003", "0830000004"]
    answer = limited.post("/sendsms", json={"message": "hi", "msisdns": numbers})
    assert answer.status_code == 406
    assert "maxRecipients" in answer.get_json()["error"]
    assert nothing_recorded(db)


def test_a_message_over_the_segment_limit_is_406(limited, db):
    answer = limited.post("/sendsms", json={"message": "x" * 307, "msisdns": ["0830000001"]})
    assert answer.status_code == 406
    assert "maxMessageSegments" in answer.get_json()["error"]
    assert nothing_recorded(db)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"message": "caf\xe9", "msisdns": ["0830000001"]}', "application/json"),
        (b"message=caf\xe9&msisdns=0830000001", "application/x-www-form-urlencoded"),
        (b"\xff\xfe{\x00}\x00", "application/json"),
    ],
    ids=["json-latin1", "form-latin1", "utf16-bom"],
)
def test_a_body_that_is_not_utf8_is_406(client, db, body, content_type):
    answer = client.post("/sendsms", data=body, content_type=content_type)
    assert answer.status_code == 406
    assert answer.get_json() == {"error": "body is not valid UTF-8"}
    assert nothing_recorded(db)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'"text"',
        b'{"message": 5, "msisdns": ["0830000001"]}',
        b'{"message": "hi", "msisdns": [1, 2]}',
        b'{"message": "hi", "msisdns": {"a": 1}}',
        b'{"message": "", "msisdns": ["0830000001"]}',
        b'{"message": "hi"}',
        b'{"message": "hi", "msisdns": []}',
        b'{"message": "hi\\u0000", "msisdns": ["0830000001"]}',
        b'{"message": "hi", "msisdns": ["0830000001"], "from": "a\\u0000"}',
    ],
)
def test_malformed_json_is_406_and_records_nothing(client, db, body):
    answer = client.post("/sendsms", data=body, content_type="application/json")
    assert answer.status_code == 406
    assert answer.get_json()["error"]
    assert nothing_recorded(db)


# --- MaxBodyBytes over real HTTP: the same 413 whatever the body's framing ---

LIMIT = 10 * 1024 * 1024  # MaxBodyBytes' default, as `make run` serves it


def chunked(body: bytes):
    """The body as a generator: requests sends it `Transfer-Encoding: chunked`."""
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


def padded_form(size: int, message: bytes = b"Water+off+at+10%3A00") -> bytes:
    """A valid send whose padding field takes the body to `size` bytes: cut at the limit,
    it still parses and sends."""
    head = b"msisdns=0830000001&message=" + message + b"&pad="
    return head + b"x" * (size - len(head))


@pytest.fixture(scope="module")
def gunicorn_base(database_url, tmp_path_factory):
    with gunicorn_server(base_config(), database_url, tmp_path_factory.mktemp("gunicorn")) as base:
        yield base


FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/sendsms", padded_form(LIMIT + 4096), FORM),
        ("/sendsms", b'{"message": "hi", "msisdns": ["0830000001"]}' + b" " * LIMIT, JSON),
        ("/normalize", b'{"msisdns": ["0830000001"]}' + b" " * LIMIT, JSON),
        ("/callbacks/MockProvider", b'{"id": "x", "status": "delivered"}' + b" " * LIMIT, JSON),
    ],
    ids=["sendsms-form", "sendsms-json", "normalize", "callback"],
)
def test_a_body_over_max_body_bytes_is_413_through_gunicorn_chunked_or_not(
    gunicorn_base, db, path, body, headers, framing
):
    data = chunked(body) if framing == "chunked" else body

    answer = requests.post(gunicorn_base + path, data=data, headers=headers, timeout=60)

    assert answer.status_code == 413
    assert answer.json() == {"error": f"request body over {LIMIT} bytes (MaxBodyBytes)"}
    assert nothing_recorded(db)


def test_a_chunked_body_within_max_body_bytes_is_read_whole(gunicorn_base, db):
    text = "Water off at 10:00 in Ward 5, back at 14:00."
    at_limit = padded_form(LIMIT, text.replace(" ", "+").encode())

    answer = requests.post(gunicorn_base + "/sendsms", data=chunked(at_limit), headers=FORM)

    assert answer.status_code == 200, answer.text
    assert answer.json()["messagesSent"] == 1
    assert rows(db, "SELECT message FROM sms") == [(text,)]
