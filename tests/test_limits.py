"""Per-caller limits: limits.requestsPerMinute, recipientsPerDay and internationalPerDay for
each originator, an API key's own from `flask api-key`, and the 429 over one."""

import random
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from messaging.config import ConfigError, config_from_mapping
from messaging.msisdn import Normaliser
from tests.conftest import base_config, gunicorn_server, rows

BOTSWANA = ["+26771234567", "+26772345678", "+26773456789"]


def za(count: int, start: int = 0) -> list[str]:
    """Distinct South African mobile numbers."""
    return [f"08300{n:05d}" for n in range(start, start + count)]


def limited_config(auth: str | None = None, **limits) -> dict:
    config = base_config()
    config["limits"] = limits
    if auth == "apikey":
        config["authentication"] = {"service": "apikey", "enabled": True}
    return config


def send(client, msisdns, headers=None, message="Water off at 10:00"):
    return client.post("/sendsms", json={"message": message, "msisdns": msisdns}, headers=headers)


def within_one_minute():
    """Wait for a fresh UTC minute if this one is nearly over: requestsPerMinute counts in
    fixed minutes, and a test straddling two would see twice the limit."""
    now = datetime.now(UTC)
    if now.second >= 55:
        time.sleep(60.5 - now.second - now.microsecond / 1e6)


def seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


def everything(db) -> dict:
    """What a send could have changed, table by table."""
    tables = ("sendlog", "sms", "dispatch_batches", "idempotency_keys", "caller_usage")
    return {table: rows(db, f"SELECT * FROM {table} ORDER BY 1") for table in tables}


def test_without_limits_nothing_is_counted(client, db):
    assert send(client, za(3)).status_code == 200
    assert rows(db, "SELECT count(*) FROM caller_usage") == [(0,)]


def test_requests_per_minute_refuses_the_next_request_with_429_and_retry_after(make_app, db):
    client = make_app(limited_config(requestsPerMinute=2)).test_client()
    within_one_minute()
    assert send(client, za(1)).status_code == 200
    assert send(client, za(1, 1)).status_code == 200
    refused = send(client, za(1, 2))
    assert refused.status_code == 429
    body = refused.get_json()
    assert {key: body[key] for key in ("limit", "max", "remaining", "requested")} == {
        "limit": "requestsPerMinute",
        "max": 2,
        "remaining": 0,
        "requested": 1,
    }
    assert 1 <= body["retryAfter"] <= 60
    assert refused.headers["Retry-After"] == str(body["retryAfter"])
    assert abs(body["retryAfter"] - (60 - datetime.now(UTC).second)) <= 1
    assert "requestsPerMinute limit reached" in body["error"]
    assert rows(db, "SELECT count(*) FROM sendlog") == [(2,)]
    assert rows(db, "SELECT counter, used FROM caller_usage") == [("requestsPerMinute", 2)]


def test_recipients_per_day_counts_numbers_once_cleaned_and_refuses_what_would_pass_it(
    make_app, db
):
    app = make_app(limited_config(recipientsPerDay=5))
    client = app.test_client()
    # 3 valid numbers, a repeat (as +27) and junk: 3 count.
    first = send(client, [*za(3), "+27830000000", "not a number"])
    assert first.status_code == 200
    assert first.get_json()["validNumbers"] == 3
    refused = send(client, za(3, 3))
    assert refused.status_code == 429
    body = refused.get_json()
    assert (body["limit"], body["max"], body["remaining"], body["requested"]) == (
        "recipientsPerDay",
        5,
        2,
        3,
    )
    assert abs(body["retryAfter"] - seconds_to_midnight()) <= 5
    assert refused.headers["Retry-After"] == str(body["retryAfter"])
    assert send(client, za(2, 3)).status_code == 200  # exactly what was left
    assert send(client, za(1, 9)).get_json()["remaining"] == 0
    assert rows(db, "SELECT count(*) FROM sms") == [(5,)]
    assert rows(db, "SELECT used FROM caller_usage WHERE counter = 'recipientsPerDay'") == [(5,)]
    assert sum(app.extensions["messaging"].provider.batches) == 5


def test_international_per_day_counts_numbers_outside_the_first_country(make_app, db):
    client = make_app(limited_config(internationalPerDay=2)).test_client()
    assert send(client, [*za(2), BOTSWANA[0]]).status_code == 200
    refused = send(client, BOTSWANA[1:])
    assert refused.status_code == 429
    body = refused.get_json()
    assert (body["limit"], body["max"], body["remaining"], body["requested"]) == (
        "internationalPerDay",
        2,
        1,
        2,
    )
    assert send(client, za(5, 10)).status_code == 200  # South Africa is not international
    assert send(client, BOTSWANA[1:2]).status_code == 200
    assert rows(db, "SELECT counter, used FROM caller_usage ORDER BY counter") == [
        ("internationalPerDay", 2)
    ]


def test_a_refused_request_changes_nothing(make_app, db):
    app = make_app(limited_config(requestsPerMinute=100, recipientsPerDay=3))
    client = app.test_client()
    within_one_minute()
    send(client, za(2), headers={"Idempotency-Key": "first"})
    before = everything(db)
    batches = list(app.extensions["messaging"].provider.batches)
    refused = send(client, za(2, 2), headers={"Idempotency-Key": "second"})
    assert refused.status_code == 429
    assert everything(db) == before
    assert list(app.extensions["messaging"].provider.batches) == batches
    # Nor was the refused request's key taken: once there is room, it sends.
    assert send(client, za(1, 2), headers={"Idempotency-Key": "second"}).status_code == 200


def test_opted_out_recipients_do_not_count(make_app, db):
    client = make_app(limited_config(recipientsPerDay=2)).test_client()
    assert client.put("/optouts/0830000000").status_code == 201
    answer = send(client, za(3))  # 0830000000 opted out: 2 are sent
    assert answer.status_code == 200
    assert answer.get_json()["optedOutNumbers"] == 1
    assert send(client, ["0830000000"]).status_code == 200  # sends none, counts none
    assert send(client, za(1, 5)).status_code == 429
    assert rows(db, "SELECT used FROM caller_usage") == [(2,)]


def test_a_repeated_idempotency_key_is_not_counted_again(make_app, db):
    client = make_app(limited_config(requestsPerMinute=1, recipientsPerDay=2)).test_client()
    within_one_minute()
    key = {"Idempotency-Key": "once"}
    first = send(client, za(2), headers=key)
    again = send(client, za(2), headers=key)  # at both limits now: still the same answer
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert send(client, za(1, 2)).status_code == 429
    assert rows(db, "SELECT counter, used FROM caller_usage ORDER BY counter") == [
        ("recipientsPerDay", 2),
        ("requestsPerMinute", 1),
    ]


def test_each_originator_has_limits_of_its_own_and_a_key_its_own_from_the_cli(make_app, db):
    app = make_app(limited_config("apikey", recipientsPerDay=1))
    client = app.test_client()
    runner = app.test_cli_runner()

    def cli(*args):
        result = runner.invoke(args=["api-key", *args])
        assert result.exit_code == 0, result.output
        return result

    bulk = {"X-API-Key": cli("create", "bulk", "--recipients-per-day", "3").stdout.strip()}
    plain = {"X-API-Key": cli("create", "plain").stdout.strip()}
    listing = {line.split()[0]: line for line in cli("list").stdout.splitlines()[1:]}
    assert listing["bulk"].split()[-1] == "recipientsPerDay=3"
    assert listing["plain"].split()[-1] == "active"

    assert send(client, za(3), headers=bulk).status_code == 200
    assert send(client, za(1, 5), headers=plain).status_code == 200
    assert send(client, za(1, 6), headers=plain).get_json()["max"] == 1
    assert send(client, za(1, 7), headers=bulk).get_json()["remaining"] == 0

    shown = cli("limits", "plain", "--recipients-per-day", "unlimited").stdout
    assert re.search(r"recipientsPerDay\s+unlimited \(key\)\s+used 1", shown)
    assert send(client, za(50, 100), headers=plain).status_code == 200
    shown = cli("limits", "bulk", "--recipients-per-day", "default").stdout
    assert re.search(r"recipientsPerDay\s+1 \(config\)\s+used 3", shown)
    assert re.search(r"requestsPerMinute\s+unlimited \(config\)", shown)
    assert send(client, za(1, 8), headers=bulk).status_code == 429
    # What a caller sends while unlimited is not counted: no work where no limit applies.
    assert rows(db, "SELECT originator, used FROM caller_usage ORDER BY originator") == [
        ("bulk", 3),
        ("plain", 1),
    ]


def test_bad_limit_options_are_refused_and_change_nothing(make_app, db):
    runner = make_app(limited_config("apikey")).test_cli_runner()
    runner.invoke(args=["api-key", "create", "crm", "--requests-per-minute", "10"])
    before = rows(db, "SELECT * FROM api_keys")
    for args in (
        ["limits", "crm", "--requests-per-minute", "-5"],
        ["limits", "crm", "--recipients-per-day", "lots"],
        ["create", "other", "--international-per-day", "1.5"],
    ):
        result = runner.invoke(args=["api-key", *args])
        assert result.exit_code == 2
        assert "give a whole number >= 0, unlimited or default" in result.output
    missing = runner.invoke(args=["api-key", "limits", "nobody", "--recipients-per-day", "1"])
    assert missing.exit_code == 1 and "no API key named 'nobody'" in missing.output
    assert rows(db, "SELECT * FROM api_keys") == before


def test_config_limits_are_validated_with_one_line_naming_the_key():
    config = base_config()
    config["limits"] = {"recipientsPerDay": -1}
    with pytest.raises(ConfigError, match=r"^limits\.recipientsPerDay: expected a whole number"):
        config_from_mapping(config)
    config["limits"] = {"recipientsPerDay": None, "requestsPerMinut": 5}
    loaded = config_from_mapping(config)
    assert loaded.limits.recipients_per_day is None
    assert loaded.warnings == (
        "unknown config key 'limits.requestsPerMinut' ignored (did you mean 'requestsPerMinute'?)",
    )


def test_the_rows_of_ended_windows_are_deleted_when_a_new_one_begins(make_app, db):
    client = make_app(limited_config(recipientsPerDay=10)).test_client()
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO caller_usage VALUES ('', 'recipientsPerDay', '2020-01-01', "
            "'2020-01-02', 7), ('other', 'recipientsPerDay', '2020-01-01', '2020-01-02', 7)"
        )
    assert send(client, za(4)).status_code == 200
    # Another caller's ended window is left to that caller's next send.
    today = rows(db, "SELECT (now() AT TIME ZONE 'utc')::date::text")[0][0]
    assert rows(
        db, "SELECT originator, window_start::date::text, used FROM caller_usage ORDER BY 1"
    ) == [("", today, 4), ("other", "2020-01-01", 7)]


def test_refusals_are_counted_in_metrics_by_limit(make_app):
    client = make_app(limited_config(recipientsPerDay=1)).test_client()

    def refusals() -> float:
        found = re.search(
            r'^messaging_limit_refusals_total\{limit="recipientsPerDay"\} (\S+)$',
            client.get("/metrics").text,
            re.M,
        )
        return float(found.group(1))

    before = refusals()
    send(client, za(1))
    send(client, za(1, 1))
    send(client, za(1, 2))
    assert refusals() == before + 2


def test_numbers_abroad_are_told_by_the_first_country_even_on_a_shared_calling_code():
    united_states, canada = "12015550123", "16045550123"
    assert Normaliser(["US", "CA"], mobile_only=False).count_abroad([united_states, canada]) == 1
    assert Normaliser(["CA", "US"], mobile_only=False).count_abroad([canada]) == 0
    assert Normaliser(["ZA", "BW"]).count_abroad(["27830000000", "26771234567"]) == 1
    assert Normaliser(["BW", "ZA"]).count_abroad(["27830000000", "26771234567"]) == 1
    assert Normaliser(["ZA"]).count_abroad([]) == 0


def test_limits_hold_exactly_across_two_gunicorn_servers_sending_at_once(
    make_app, database_url, db, tmp_path
):
    config = limited_config("apikey")
    runner = make_app(config).test_cli_runner()

    def create(*args) -> dict:
        result = runner.invoke(args=["api-key", "create", *args])
        assert result.exit_code == 0, result.output
        return {"X-API-Key": result.stdout.strip()}

    bulk = create("bulk", "--recipients-per-day", "40")
    chatty = create("chatty", "--requests-per-minute", "15")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        gunicorn_server(config, database_url, tmp_path / "a") as first,
        gunicorn_server(config, database_url, tmp_path / "b") as second,
    ):
        # 40 requests of 2 recipients against 40 a day, 30 of 1 against 15 a minute,
        # alternating between the servers, 16 at a time.
        requests_to_make = [(bulk, za(2, 2 * n)) for n in range(40)]
        requests_to_make += [(chatty, za(1, 1000 + n)) for n in range(30)]
        random.Random(18).shuffle(requests_to_make)
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))

        def post(index: int) -> tuple[str, int]:
            headers, numbers = requests_to_make[index]
            base = (first, second)[index % 2]
            body = {"message": "at once", "msisdns": numbers}
            answer = session.post(f"{base}/sendsms", json=body, headers=headers, timeout=60)
            return ("bulk" if headers is bulk else "chatty"), answer.status_code

        within_one_minute()
        with ThreadPoolExecutor(16) as pool:
            outcomes = Counter(pool.map(post, range(len(requests_to_make))))
    assert outcomes == {
        ("bulk", 200): 20,
        ("bulk", 429): 20,
        ("chatty", 200): 15,
        ("chatty", 429): 15,
    }
    sent = rows(
        db,
        "SELECT sendlog.originator, count(DISTINCT sms.sendlogid), count(*) "
        "FROM sms JOIN sendlog ON sendlog.id = sms.sendlogid GROUP BY 1 ORDER BY 1",
    )
    assert sent == [("bulk", 20, 40), ("chatty", 15, 15)]
    assert rows(db, "SELECT originator, counter, used FROM caller_usage ORDER BY 1") == [
        ("bulk", "recipientsPerDay", 40),
        ("chatty", "requestsPerMinute", 15),
    ]
