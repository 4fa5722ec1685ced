"""`flask send`, `flask stats` and what `flask shell` preloads."""

from messaging import service
from tests.conftest import base_config, rows


def write_csv(tmp_path, text: str):
    path = tmp_path / "numbers.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_send_from_a_csv_prints_the_ref_number_and_records_every_recipient(runner, db, tmp_path):
    numbers = write_csv(
        tmp_path, "name,msisdn\nAnna,0830000000\nBen,0840000001\nBen again,0840000001\nX,junk\n"
    )

    result = runner.invoke(args=["send", "--message", "Water off at 10:00", "--file", numbers])

    assert result.exit_code == 0, result.output
    ref = int(result.stdout.strip().splitlines()[-1].removeprefix("refNumber "))
    assert "valid 2, invalid 1, duplicates 1" in result.stderr
    assert rows(db, "SELECT msisdn, status FROM sms WHERE sendlogid = %s ORDER BY id", ref) == [
        ("27830000000", "sent"),
        ("27840000001", "sent"),
    ]
    [(originator, message)] = rows(db, "SELECT originator, message FROM sendlog WHERE id = %s", ref)
    assert originator.startswith("cli:")
    assert message == "Water off at 10:00"


def test_send_reads_the_first_column_when_there_is_no_header_and_honours_from(runner, db, tmp_path):
    numbers = write_csv(tmp_path, "0830000000,Anna\n\n0820000000,Ben\n")

    result = runner.invoke(args=["send", "-m", "Hi", "-f", numbers, "--from", "CityWater"])

    assert result.exit_code == 0, result.output
    assert rows(db, "SELECT quantity, sender FROM sendlog") == [(2, "CityWater")]


def test_send_over_the_recipient_limit_fails_clearly_and_records_nothing(make_app, db, tmp_path):
    app = make_app(base_config(maxRecipients=2))
    numbers = write_csv(tmp_path, "0830000000\n0830000001\n0830000002\n")

    result = app.test_cli_runner().invoke(args=["send", "-m", "Hi", "-f", numbers])

    assert result.exit_code == 1
    assert "3 recipients given; the limit is 2" in result.output
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_send_of_undecodable_command_line_bytes_fails_clearly_and_records_nothing(
    runner, db, tmp_path
):
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("0830000000\n")
    # Python reads a command line's non-UTF-8 bytes (here \xed\xa0\x80) as lone surrogates.
    result = runner.invoke(args=["send", "-m", "hi \udced\udca0\udc80", "-f", str(numbers)])
    assert result.exit_code == 1
    assert "message contains a lone surrogate" in result.output
    assert rows(db, "SELECT count(*) FROM sendlog") == [(0,)]


def test_send_refused_by_the_provider_exits_non_zero_with_the_reason(make_app, db, tmp_path):
    app = make_app(base_config(token="nocredit"))
    numbers = write_csv(tmp_path, "0830000000\n")

    result = app.test_cli_runner().invoke(args=["send", "-m", "Hi", "-f", numbers])

    assert result.exit_code == 1
    assert "Error 301: Out of credit" in result.stderr
    assert "refNumber 1" in result.stdout
    assert rows(db, "SELECT status FROM sms") == [("failed",)]


def test_the_send_reports_progress_after_every_provider_batch(make_app, db):
    app = make_app(base_config(maxBatchSize=2))
    reported = []

    service.send_sms(
        app.extensions["messaging"],
        "Hi",
        [f"08300000{n:02d}" for n in range(5)],
        None,
        "test",
        on_recorded=reported.append,
    )

    assert sorted(reported) == [1, 2, 2]


def test_send_without_a_file_is_a_usage_error(runner):
    result = runner.invoke(args=["send", "--message", "Hi"])

    assert result.exit_code == 2
    assert "--file" in result.output


def test_stats_prints_totals_by_status_for_the_last_day(client, runner, db):
    client.post("/sendsms", data={"message": "Hi", "msisdns": "0830000000,0830000009,0830000008"})
    assert client.get("/messagestatus/0830000000").text == "delivered"
    client.post("/sendsms", data={"message": "Old", "msisdns": "0840000000"})
    with db.cursor() as cur:
        cur.execute("UPDATE sendlog SET senttime = senttime - interval '3 days' WHERE id = 2")

    recent = runner.invoke(args=["stats"])
    everything = runner.invoke(args=["stats", "--since", "2000-01-01", "--until", "2999-01-01"])

    assert recent.exit_code == 0, recent.output
    assert lines(recent.output)[1:] == [
        ["delivered", "1"],
        ["failed", "1"],
        ["sent", "1"],
        ["queued", "0"],
        ["total", "3"],
    ]
    assert recent.output.splitlines()[0].endswith("UTC: 1")
    assert everything.output.splitlines()[0].endswith("UTC: 2")
    assert ["total", "4"] in lines(everything.output)


def test_stats_takes_times_with_a_zone_and_refuses_what_is_not_iso_8601(runner):
    zoned = runner.invoke(args=["stats", "--since", "2026-01-01T02:00:00+02:00"])
    bad = runner.invoke(args=["stats", "--since", "yesterday"])
    backwards = runner.invoke(args=["stats", "--since", "2026-02-01", "--until", "2026-01-01"])

    assert zoned.exit_code == 0, zoned.output
    assert zoned.output.startswith("sends from 2026-01-01 00:00:00 to ")
    assert bad.exit_code == 2
    assert "'yesterday' is not an ISO 8601 date or time" in bad.output
    assert backwards.exit_code == 2
    assert "--since must be before --until" in backwards.output


def test_flask_shell_preloads_config_a_db_helper_the_provider_and_service_functions(app):
    with app.app_context():
        context = app.make_shell_context()

    assert context["config"].provider.name == "MockProvider"
    assert context["provider"].name == "MockProvider"
    assert context["sql"]("SELECT 1 + %s", 1) == [(2,)]
    assert context["normalize"](["0830000000", "junk"]) == ["27830000000"]
    assert context["message_status"]("0830000000") is None
    outcome = context["send_sms"]("Hi", ["0830000000"], None, "shell")
    assert outcome.messages_sent == 1
    assert context["message_status"]("0830000000") == "delivered"


def lines(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines()]
