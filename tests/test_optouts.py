"""The suppression list: sends leave opted-out numbers out, `flask optout` and
/optouts/<msisdn> manage it, and a provider's "opted out" refusal adds to it."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import base_config, rows

NUMBERS = ["0830000001", "0830000002", "0830000003", "0830000004", "bad", "0830000001"]


def opt_out(client, *numbers):
    for number in numbers:
        assert client.put(f"/optouts/{number}").status_code in (200, 201)


def send(client, numbers=NUMBERS, **extra):
    answer = client.post("/sendsms", json={"message": "Water off", "msisdns": numbers, **extra})
    assert answer.status_code in (200, 202), answer.get_json()
    return answer.get_json()


def test_a_send_leaves_opted_out_numbers_out_and_counts_them(client, provider, db):
    opt_out(client, "0830000002", "27830000004")

    answer = send(client)

    assert {key: answer[key] for key in answer if key != "refNumber"} == {
        "validNumbers": 4,
        "invalidNumbers": 1,
        "duplicateNumbers": 1,
        "optedOutNumbers": 2,
        "messagesSent": 2,
        "queuedNumbers": 0,
        "segments": 1,
        "encoding": "GSM-7",
        "sendSuccess": True,
        "statusDescription": "2 of 4 recipients opted out",
    }
    assert list(provider.batches) == [2]  # no provider call for the opted-out two
    assert rows(db, "SELECT msisdn, status, errorcode, reason FROM sms ORDER BY id") == [
        ("27830000001", "sent", None, None),
        ("27830000002", "failed", "", "opted out"),
        ("27830000003", "sent", None, None),
        ("27830000004", "failed", "", "opted out"),
    ]
    assert rows(db, "SELECT quantity, sent, failed, optedout FROM sendlog") == [(4, 2, 2, 2)]


def test_the_send_report_shows_the_opted_out_recipients(client):
    opt_out(client, "0830000002")
    ref = send(client)["refNumber"]

    report = client.get(f"/sends/{ref}").get_json()

    assert (report["send"]["quantity"], report["send"]["optedOut"], report["total"]) == (4, 1, 4)
    assert report["send"]["failed"] == 1
    assert [r["reason"] for r in report["recipients"]] == [None, "opted out", None, None]


def test_opted_out_and_rejected_recipients_are_told_apart(client):
    opt_out(client, "0830000002")

    answer = send(client, ["0830000001", "0830000002", "0830000009"])

    assert answer["statusDescription"] == (
        "1 of 3 recipients rejected by the provider; 1 of 3 recipients opted out"
    )


def test_a_send_to_opted_out_numbers_only_calls_no_provider(client, provider, db):
    opt_out(client, "0830000001")

    answer = send(client, ["0830000001"])

    assert (answer["sendSuccess"], answer["messagesSent"], answer["optedOutNumbers"]) == (
        False,
        0,
        1,
    )
    assert answer["statusDescription"] == "1 of 1 recipients opted out"
    assert list(provider.batches) == []
    assert rows(db, "SELECT status FROM sendlog") == [("failed",)]


def test_a_scheduled_send_counts_its_opted_out_numbers_at_once(client, provider):
    opt_out(client, "0830000001")

    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    answer = send(client, ["0830000001", "0830000002"], sendAt=later)

    assert answer["optedOutNumbers"] == 1 and answer["queuedNumbers"] == 1
    assert list(provider.batches) == []


def test_a_number_opted_out_while_its_send_is_queued_is_taken_out_of_it(
    make_app, provider, db, runner
):
    client = make_app(base_config(maxBatchSize=2)).test_client()
    later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    numbers = ["0830000001", "0830000002", "0830000003", "0830000004"]
    scheduled = send(client, numbers, sendAt=later)["refNumber"]
    sent_before = send(client, ["0830000002", "0830000005"])["refNumber"]
    only_them = send(client, ["0830000003"], sendAt=later)["refNumber"]

    opt_out(client, "0830000002", "0830000003")

    assert rows(db, "SELECT sendlogid, msisdns FROM dispatch_batches ORDER BY id") == [
        (int(scheduled), ["27830000001"]),
        (int(scheduled), ["27830000004"]),
    ]
    assert rows(
        db, "SELECT sendlogid, msisdn, status, reason FROM sms ORDER BY sendlogid, msisdn"
    ) == [
        (int(scheduled), "27830000002", "failed", "opted out"),
        (int(scheduled), "27830000003", "failed", "opted out"),
        (int(sent_before), "27830000002", "sent", None),
        (int(sent_before), "27830000005", "sent", None),
        (int(only_them), "27830000003", "failed", "opted out"),
    ]
    assert rows(
        db, f"SELECT quantity, failed, optedout, status FROM sendlog WHERE id = {scheduled}"
    ) == [(4, 2, 2, "sending")]
    assert rows(db, f"SELECT status, description FROM sendlog WHERE id = {only_them}") == [
        ("failed", "1 of 1 recipients opted out")
    ]
    assert [
        e["source"]
        for e in client.get(f"/sends/{scheduled}/messages/0830000002").get_json()["events"]
    ] == ["optout"]


def test_a_repeated_idempotency_key_answers_the_same_counts(client):
    opt_out(client, "0830000002")
    headers = {"Idempotency-Key": "k-1"}
    first = client.post(
        "/sendsms", json={"message": "x", "msisdns": NUMBERS}, headers=headers
    ).get_json()

    again = client.post(
        "/sendsms", json={"message": "x", "msisdns": NUMBERS}, headers=headers
    ).get_json()

    assert again == first and first["optedOutNumbers"] == 1


def test_an_opt_out_applies_to_every_caller(make_app, db):
    config = base_config()
    config["authentication"] = {"service": "apikey", "enabled": True}
    app = make_app(config)
    runner = app.test_cli_runner()
    with db.cursor() as cur:
        cur.execute("TRUNCATE api_keys RESTART IDENTITY")
    keys = [runner.invoke(args=["api-key", "create", n]).stdout.strip() for n in ("ops", "billing")]
    client = app.test_client()

    client.put("/optouts/0830000001", headers={"X-API-Key": keys[0]})
    answer = client.post(
        "/sendsms",
        json={"message": "x", "msisdns": ["0830000001"]},
        headers={"X-API-Key": keys[1]},
    ).get_json()

    assert answer["optedOutNumbers"] == 1
    assert client.get("/optouts/0830000001").status_code == 401
    entry = client.get("/optouts/0830000001", headers={"X-API-Key": keys[1]}).get_json()
    assert entry["source"] == "api:ops"


def test_a_large_send_against_a_large_list_counts_exactly(client, runner, provider, tmp_path):
    numbers = [f"0830{n:06d}" for n in range(3000)]
    listed = tmp_path / "optouts.csv"
    listed.write_text("msisdn\n" + "\n".join(numbers[::3]) + "\n")
    assert runner.invoke(args=["optout", "import", str(listed)]).exit_code == 0

    answer = send(client, numbers)

    to_send = [number for n, number in enumerate(numbers) if n % 3]
    accepted = [number for number in to_send if not number.endswith("9")]  # MockProvider: 105
    assert (answer["validNumbers"], answer["optedOutNumbers"]) == (3000, 1000)
    assert answer["messagesSent"] == len(accepted) == 1800
    assert sum(provider.batches) == 2000


# --- GET/PUT/DELETE /optouts/<msisdn> ---


def test_put_get_and_delete_manage_a_number(client):
    created = client.put("/optouts/083 000 0001")
    kept = client.put("/optouts/+27830000001")
    shown = client.get("/optouts/0830000001")
    deleted = client.delete("/optouts/27830000001")

    assert created.status_code == 201 and kept.status_code == 200
    assert created.get_json()["msisdn"] == "27830000001"
    assert created.get_json()["source"] == "api:"
    assert kept.get_json() == created.get_json() == shown.get_json()
    assert shown.get_json()["time"].endswith("Z")
    assert deleted.status_code == 204
    assert client.get("/optouts/0830000001").status_code == 404
    assert client.delete("/optouts/0830000001").status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_an_invalid_number_is_refused_and_changes_nothing(client, db, method):
    answer = client.open("/optouts/12345", method=method)

    assert answer.status_code == 406
    assert answer.get_json()["error"] == "not a valid number for ZA, BW: '12345'"
    assert rows(db, "SELECT count(*) FROM optouts") == [(0,)]


# --- flask optout ---


def test_cli_add_list_and_remove(runner, db):
    added = runner.invoke(args=["optout", "add", "0830000001", "+27 83 000 0002"])
    again = runner.invoke(args=["optout", "add", "0830000001"])
    listed = runner.invoke(args=["optout", "list"])
    removed = runner.invoke(args=["optout", "remove", "0830000001", "0830000003"])

    assert added.exit_code == 0 and added.stdout == "opted out 2\n27830000001\n27830000002\n"
    assert again.stdout == "opted out 0; 1 already opted out\n"
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["MSISDN", "SINCE", "(UTC)", "SOURCE"]
    assert [line.split()[0] for line in lines[1:]] == ["27830000001", "27830000002"]
    assert all(line.split()[-1].startswith("cli:") for line in lines[1:])
    assert removed.stdout == "opted in 1; 1 were not opted out\n27830000001\n"
    assert rows(db, "SELECT msisdn FROM optouts") == [("27830000002",)]


def test_cli_list_of_an_empty_list_says_so(runner):
    result = runner.invoke(args=["optout", "list"])

    assert result.exit_code == 0 and "no opted-out numbers" in result.output


def test_cli_refuses_invalid_numbers_and_changes_nothing(runner, db):
    result = runner.invoke(args=["optout", "add", "0830000001", "nonsense"])

    assert result.exit_code == 1
    assert "not a valid number for ZA, BW: 'nonsense'" in result.output
    assert rows(db, "SELECT count(*) FROM optouts") == [(0,)]


def test_cli_import_reads_a_csv_and_refuses_a_file_with_a_bad_number(runner, db, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("name,phone\nAnn,0830000001\nBen,0830000002\nAnn,0830000001\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("0830000003\nnot-a-number\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")

    imported = runner.invoke(args=["optout", "import", str(good)])
    refused = runner.invoke(args=["optout", "import", str(bad)])
    nothing = runner.invoke(args=["optout", "import", str(empty)])

    assert imported.exit_code == 0 and imported.stdout == "opted out 2; 0 already opted out\n"
    assert refused.exit_code == 1 and "'not-a-number'" in refused.output
    assert nothing.exit_code == 1 and "no numbers in it" in nothing.output
    assert rows(db, "SELECT msisdn, source FROM optouts ORDER BY 1") == [
        ("27830000001", f"import:{good}"),
        ("27830000002", f"import:{good}"),
    ]


# --- a provider's "recipient opted out" refusal ---


def test_a_provider_refusal_meaning_opted_out_adds_the_number(make_app, db):
    app = make_app(base_config(options={"optedOut": "27830000002"}))
    client = app.test_client()

    first = send(client, ["0830000001", "0830000002"])
    second = send(client, ["0830000001", "0830000002"])

    assert (first["messagesSent"], first["optedOutNumbers"]) == (1, 0)
    assert rows(
        db, "SELECT errorcode, reason FROM sms WHERE msisdn = '27830000002' ORDER BY id"
    ) == [
        ("114", "Recipient opted out"),
        ("", "opted out"),
    ]
    assert client.get("/optouts/0830000002").get_json()["source"] == "MockProvider error 114"
    assert (second["messagesSent"], second["optedOutNumbers"]) == (1, 1)
    assert list(app.extensions["messaging"].provider.batches) == [2, 1]


def test_only_an_admin_opts_a_number_back_in_or_reads_the_replies(make_app, db):
    config = base_config()
    config["authentication"] = {"service": "apikey", "enabled": True}
    app = make_app(config)
    runner, client = app.test_cli_runner(), app.test_client()
    caller = {"X-API-Key": runner.invoke(args=["api-key", "create", "billing"]).stdout.strip()}
    admin = {
        "X-API-Key": runner.invoke(args=["api-key", "create", "ops", "--admin"]).stdout.strip()
    }
    assert client.put("/optouts/0830000001", headers=caller).status_code == 201

    refused = client.delete("/optouts/0830000001", headers=caller)
    replies = client.get("/inbound", headers=caller)

    assert refused.status_code == 403 and "admin permission" in refused.get_json()["error"]
    assert replies.status_code == 403
    assert rows(db, "SELECT msisdn FROM optouts") == [("27830000001",)]
    assert client.get("/inbound", headers=admin).status_code == 200
    assert client.delete("/optouts/0830000001", headers=admin).status_code == 204
    assert rows(db, "SELECT count(*) FROM optouts") == [(0,)]
