"""Logging: one record a line in the text log, whatever was logged; JSON lines stay JSON."""

import json
import logging
import re
import sys

import pytest
import requests

from messaging import logs
from tests.conftest import base_config, gunicorn_server
from tests.fake_auth import FakeAuthService

# What a line of ours starts with: a timestamp, a level and the request id in brackets.
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \[[^\]]*\] messaging")
FORGED = "1999-12-31 23:59:59,000 INFO [forged] messaging.request: POST /sendsms 200 1.0ms"
# Anything that would end or disguise a line: none may reach the text log raw.
RAW_CONTROLS = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202e]")


def served_log(config: dict, database_url, tmp_path, requests_to_make) -> str:
    """Serve `config` with gunicorn, make the requests, stop it; return its Logfile."""
    config["Logfile"] = str(tmp_path / "messaging.log")
    with gunicorn_server(config, database_url, tmp_path) as base:
        for method, path, headers in requests_to_make:
            requests.request(method, base + path, headers=headers, timeout=10)
    return (tmp_path / "messaging.log").read_text(encoding="utf-8")


def assert_one_record_a_line(text: str) -> None:
    lines = text.splitlines()
    assert lines
    assert not RAW_CONTROLS.search(text)
    assert all(RECORD_START.match(line) for line in lines), [
        line for line in lines if not RECORD_START.match(line)
    ]
    assert not any(line.startswith(FORGED[:10]) for line in lines)


@pytest.mark.parametrize(
    ("encoded", "escaped"),
    [
        ("%0a", "\\n"),
        ("%0d%0a", "\\r\\n"),
        ("%0d", "\\r"),
        ("%0b", "\\x0b"),
        ("%1b[2K%0d", "\\x1b[2K\\r"),
        ("%c2%85", "\\x85"),
        ("%e2%80%a8", "\\u2028"),
    ],
    ids=["lf", "crlf", "cr", "vt", "ansi-erase-line", "nel", "line-separator"],
)
def test_a_path_with_line_breaks_cannot_forge_a_log_line(
    database_url, db, tmp_path, encoded, escaped
):
    path = "/docs/x" + encoded + requests.utils.quote(FORGED + " identity=admin")

    text = served_log(base_config(), database_url, tmp_path, [("GET", path, {})])

    assert_one_record_a_line(text)
    assert f"GET /docs/x{escaped}{FORGED} identity=admin 404" in text


def test_an_identity_from_the_auth_service_cannot_forge_a_log_line(database_url, db, tmp_path):
    config = base_config()
    with FakeAuthService() as auth:
        config["authentication"] = {"service": "serviceauth", "enabled": True, "url": auth.url}
        auth.allow(identity="joe\n" + FORGED + " identity=admin\u2028")

        text = served_log(
            config,
            database_url,
            tmp_path,
            [("GET", "/ping", {}), ("GET", "/sends/1", {"Cookie": "s=1"})],
        )

    assert_one_record_a_line(text)
    assert f"identity=joe\\n{FORGED} identity=admin\\u2028" in text


def record(message: str, *args, exc_info=None) -> logging.LogRecord:
    made = logging.LogRecord("messaging.test", logging.ERROR, __file__, 1, message, args, exc_info)
    made.request_id = "-"
    return made


def forged_exception():
    """exc_info of an error whose message (and its cause's) carries a forged line."""
    try:
        try:
            raise KeyError("provider said\n" + FORGED)
        except KeyError as err:
            raise ValueError("answer was\r\n" + FORGED + "\x1b[0m") from err
    except ValueError:
        return sys.exc_info()


def test_exception_messages_and_logged_values_are_escaped_and_the_traceback_keeps_its_lines():
    formatter = logs.TextFormatter(logs.TEXT_FORMAT)

    text = formatter.format(
        record("provider answered %r: %s", "x\ny", "body\n" + FORGED, exc_info=forged_exception())
    )

    lines = text.split("\n")
    assert RECORD_START.match(lines[0])
    assert lines[0].endswith(f"provider answered 'x\\ny': body\\n{FORGED}")
    assert f"KeyError: 'provider said\\n{FORGED}'" in lines
    assert f"ValueError: answer was\\r\\n{FORGED}\\x1b[0m" in lines
    assert "The above exception was the direct cause of the following exception:" in lines
    assert sum(line == "Traceback (most recent call last):" for line in lines) == 2
    assert not any(line.startswith(FORGED[:10]) for line in lines)
    assert not RAW_CONTROLS.search(text)


def test_json_lines_hold_the_same_records_one_object_a_line():
    formatter = logs.JsonFormatter()
    made = record("GET %s", "/docs/x\n" + FORGED + "\u2028", exc_info=forged_exception())

    text = formatter.format(made)

    assert "\n" not in text and not RAW_CONTROLS.search(text)
    line = json.loads(text)
    assert line["message"] == "GET /docs/x\n" + FORGED + "\u2028"
    assert "ValueError: answer was\r\n" + FORGED in line["traceback"]
