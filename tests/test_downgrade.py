"""`flask db downgrade-to-original`: the Go service's schema again, and back to ours."""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from messaging import create_app, downgrade
from messaging.config import config_from_mapping
from messaging.db import migration_files
from messaging.providers.mock import receipt_signature
from tests.conftest import ROOT, base_config, dispatcher_process, rows
from tests.test_migrations import SCHEMA_2016, SCHEMA_2018, legacy_database

# ORIGINAL.md's table, as PostgreSQL describes it: BIGSERIAL is a bigint with a sequence.
ORIGINAL_COLUMNS = {
    "sendlog": [
        ("id", "bigint"),
        ("senttime", "timestamp without time zone"),
        ("originator", "character varying"),
        ("type", "character varying"),
        ("quantity", "integer"),
        ("delivered", "integer"),
        ("failed", "integer"),
        ("sent", "integer"),
        ("message", "character varying"),
        ("status", "character varying"),
        ("description", "character varying"),
    ],
    "sms": [
        ("id", "bigint"),
        ("msisdn", "character varying"),
        ("senttime", "timestamp without time zone"),
        ("segments", "smallint"),
        ("sendlogid", "integer"),
        ("status", "character varying"),
        ("statustimestamp", "timestamp without time zone"),
        ("message", "character varying"),
        ("providerid", "character varying"),
    ],
}
# How the Go service writes, after the provider answered: every 2018 column, ids by default.
GO_SEND = """
INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent, message,
    status, description)
VALUES ('2027-01-05 09:00', 'go@example.com', 'sms', 1, 0, 0, 1, 'From Go', 'success', '')
RETURNING id
"""
GO_SMS = """
INSERT INTO sms (msisdn, senttime, segments, sendlogid, status, statustimestamp, message,
    providerid)
VALUES ('27830000005', '2027-01-05 09:00', 1, %s, 'sent', NULL, 'From Go', 'go-1')
"""


def schema_of(conn, schema: str = "public") -> dict:
    """Everything a program could notice of a schema's shape (names relative to it)."""
    with conn.cursor() as cur:
        cur.execute(f"SET search_path = {schema}")  # defaults print relative to it

    def read(query):
        return [
            tuple(str(v).replace(f"{schema}.", "") if v is not None else None for v in row)
            for row in rows(conn, query, schema)
        ]

    found = {
        "tables": read("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1"),
        "columns": read(
            "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, "
            "column_default FROM information_schema.columns WHERE table_schema = %s "
            "ORDER BY table_name, ordinal_position"
        ),
        "constraints": read(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = %s::regnamespace ORDER BY 1, 2"
        ),
        "indexes": read(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1"
        ),
        "sequences": read(
            "SELECT sequencename, data_type FROM pg_sequences WHERE schemaname = %s ORDER BY 1"
        ),
    }
    with conn.cursor() as cur:
        cur.execute("RESET search_path")
    return found


def columns(conn, table) -> list[tuple[str, str]]:
    return rows(
        conn,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        table,
    )


def connect(url):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def downgrade_command(app):
    return app.test_cli_runner().invoke(args=["db", "downgrade-to-original"])


@pytest.fixture
def fresh(make_database):
    """A database of ours in use: sends with rejected recipients and a sender, an API key."""
    url = make_database("messaging_down")
    app = create_app(config_from_mapping(base_config(), url))
    client = app.test_client()
    for message in ("one", "two"):
        client.post(
            "/sendsms",
            json={"message": message, "msisdns": ["0830000000", "0830000009"], "from": "CITY"},
        )
    key = app.test_cli_runner().invoke(args=["api-key", "create", "ops", "--admin"])
    assert key.exit_code == 0, key.output
    conn = connect(url)
    yield url, app, conn, key.stdout.strip()
    conn.close()


def test_the_downgraded_schema_is_the_originals_exactly(fresh):
    url, app, conn, _ = fresh
    result = downgrade_command(app)
    assert result.exit_code == 0, result.output
    for line in (
        "moved table api_keys (1 rows) to schema messaging_saved",
        # Every message names its provider (sms.provider); two were rejected (errorcode...).
        "moved columns sms.errorcode, sms.reason, sms.failurekind, sms.provider"
        " (4 rows with values) to messaging_saved.sms",
        "sms.sendlogid: bigint -> integer",
        "migration_version set to 2",
    ):
        assert line in result.stdout.splitlines()

    assert rows(conn, "SELECT version FROM migration_version") == [(2,)]
    for table, expected in ORIGINAL_COLUMNS.items():
        assert columns(conn, table) == expected
    # And nothing else differs from the schema the Go service makes itself.
    with conn.cursor() as cur:
        cur.execute("CREATE SCHEMA go2018; SET search_path = go2018;" + SCHEMA_2018)
        cur.execute("RESET search_path")
    assert schema_of(conn) == schema_of(conn, "go2018")


@pytest.mark.parametrize(
    ("schema", "segments_column"),
    [(SCHEMA_2018, "segments"), (SCHEMA_2016, "quantity")],
    ids=["2018", "2016"],
)
def test_a_go_database_upgraded_then_downgraded_keeps_its_rows_in_the_2018_shape(
    make_database, schema, segments_column
):
    url, conn = legacy_database(make_database, schema, segments_column)
    before = (
        rows(conn, "SELECT * FROM sendlog ORDER BY id"),
        rows(conn, "SELECT * FROM sms ORDER BY id"),
    )
    result = downgrade_command(create_app(config_from_mapping(base_config(), url)))
    assert result.exit_code == 0, result.output
    for table, expected in ORIGINAL_COLUMNS.items():
        assert columns(conn, table) == expected
    after = (
        rows(conn, "SELECT * FROM sendlog ORDER BY id"),
        rows(conn, "SELECT * FROM sms ORDER BY id"),
    )
    assert after == before
    assert rows(conn, "SELECT sum(segments), count(*) FROM sms") == [(4, 3)]
    conn.close()


def test_after_the_go_service_ran_our_service_upgrades_again_and_gets_back_what_was_set_aside(
    fresh,
):
    url, app, conn, key = fresh
    originals = "id, senttime, originator, type, quantity, delivered, failed, sent, message"
    sendlog_before = rows(conn, f"SELECT {originals}, sender FROM sendlog ORDER BY id")
    sms_before = rows(conn, "SELECT id, msisdn, status, errorcode, reason FROM sms ORDER BY id")
    assert downgrade_command(app).exit_code == 0

    with conn.cursor() as cur:  # the Go service sends once
        cur.execute(GO_SEND)
        go_ref = cur.fetchone()[0]
        cur.execute(GO_SMS, (go_ref,))
    assert go_ref == sendlog_before[-1][0] + 1

    config = base_config()
    config["authentication"] = {"service": "apikey", "enabled": True}
    again = create_app(config_from_mapping(config, url))

    latest = migration_files()[-1][0]
    assert rows(conn, "SELECT version FROM migration_version") == [(latest,)]
    assert rows(conn, "SELECT to_regnamespace('messaging_saved')") == [(None,)]
    go_row = rows(conn, f"SELECT {originals}, sender FROM sendlog WHERE id = %s", go_ref)
    assert go_row[0][2:] == ("go@example.com", "sms", 1, 0, 0, 1, "From Go", None)
    assert rows(conn, f"SELECT {originals}, sender FROM sendlog ORDER BY id") == [
        *sendlog_before,
        *go_row,
    ]
    assert rows(conn, "SELECT id, msisdn, status, errorcode, reason FROM sms ORDER BY id") == [
        *sms_before,
        (sms_before[-1][0] + 1, "27830000005", "sent", None, None),
    ]
    client = again.test_client()
    headers = {"X-API-Key": key}  # the key came back, admin flag and all
    assert (
        client.get(f"/sends/{go_ref}", headers=headers).get_json()["send"]["message"] == "From Go"
    )
    reply = client.post(
        "/sendsms", json={"message": "back", "msisdns": ["0840000000"]}, headers=headers
    )
    assert reply.get_json()["refNumber"] == str(go_ref + 1)
    created = again.test_cli_runner().invoke(args=["api-key", "create", "second"])
    assert created.exit_code == 0, created.output  # the restored key's id is not handed out again

    assert downgrade_command(again).exit_code == 0  # and it can go back once more
    for table, expected in ORIGINAL_COLUMNS.items():
        assert columns(conn, table) == expected


def table_contents(conn) -> dict:
    """Every row of every table but migration_version, by table."""
    names = rows(
        conn,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> 'migration_version'",
    )
    return {name: sorted(rows(conn, f"SELECT * FROM {name}"), key=repr) for (name,) in names}


def test_the_dispatchers_receipts_and_idempotency_rows_come_back_as_they_were(make_database):
    url = make_database("messaging_round")
    config = config_from_mapping(base_config(token="receipt-secret"), url)
    app = create_app(config)
    client = app.test_client()
    client.post("/sendsms", json={"message": "now", "msisdns": ["0830000000", "0830000009"]})
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    later_send = {"message": "later", "msisdns": ["0840000000"], "sendAt": later}
    key = {"Idempotency-Key": "later-1"}
    first = client.post("/sendsms", json=later_send, headers=key)
    assert first.status_code == 202
    ref = first.get_json()["refNumber"]
    assert client.post(f"/sends/{ref}/cancel").status_code == 200
    receipt = json.dumps({"id": "early-1", "status": "delivered"}).encode()
    signed = {"X-Mock-Signature": receipt_signature("receipt-secret", receipt)}
    assert client.post("/callbacks/MockProvider", data=receipt, headers=signed).status_code == 200
    assert app.test_cli_runner().invoke(args=["poll-status"]).exit_code == 0
    conn = connect(url)
    with conn.cursor() as cur:  # a dispatcher long gone, and the shared rate's next slot
        cur.execute(
            "INSERT INTO dispatchers VALUES ('old-host:1', now() - interval '1 day', "
            "now() - interval '1 day')"
        )
        cur.execute("INSERT INTO provider_rate VALUES ('MockProvider', now())")
    before = table_contents(conn)
    for table in ("early_receipts", "poll_claims", "idempotency_keys", "dispatchers"):
        assert before[table], table
    assert rows(conn, "SELECT count(*) FROM sendlog WHERE sendat IS NOT NULL") == [(1,)]

    result = downgrade_command(app)
    assert result.exit_code == 0, result.output
    assert "moved table dispatch_batches (0 rows) to schema messaging_saved" in result.stdout
    again = create_app(config)

    assert table_contents(conn) == before
    repeat = again.test_client().post("/sendsms", json=later_send, headers=key)
    assert (repeat.status_code, repeat.get_json()["refNumber"]) == (202, ref)
    assert again.test_client().get(f"/sends/{ref}").get_json()["send"]["state"] == "cancelled"
    conn.close()


def scheduled(client, db):
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    sent = client.post(
        "/sendsms", json={"message": "x", "msisdns": ["0830000000"], "sendAt": later}
    )
    assert sent.get_json()["statusDescription"].startswith("1 of 1 recipients scheduled")


def queued(client, db):
    sent = client.post(
        "/sendsms",
        json={"message": "x", "msisdns": ["0830000000"]},
        headers={"Prefer": "respond-async"},
    )
    assert sent.status_code == 202


def sending(client, db):
    client.post("/sendsms", json={"message": "x", "msisdns": ["0830000000"]})
    with db.cursor() as cur:  # as a process that died between its last batch and the close
        cur.execute("UPDATE sendlog SET status = 'sending'")


def batch_left(client, db):
    queued(client, db)
    with db.cursor() as cur:
        cur.execute("UPDATE sendlog SET status = 'failed'")


@pytest.mark.parametrize("unfinished", [scheduled, queued, sending, batch_left])
def test_it_refuses_while_a_send_is_unfinished_and_changes_nothing(
    client, db, database_url, unfinished, tmp_path
):
    unfinished(client, db)
    before = schema_of(db)

    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(base_config()))
    env = {
        **os.environ,
        "MESSAGING_CONFIG": str(config_file),
        "MESSAGING_DATABASE_URL": database_url,
    }
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "messaging", "db", "downgrade-to-original"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    refusal = [line for line in result.stderr.splitlines() if "downgrade-to-original" in line]
    assert refusal == [
        "downgrade-to-original: refused: 1 send(s) still sending or scheduled; downgrade once "
        "they have finished (POST /sends/<refNumber>/cancel stops one; flask reconcile "
        "settles those a crash left)"
    ]
    assert schema_of(db) == before
    assert rows(db, "SELECT to_regnamespace('messaging_saved')") == [(None,)]


def test_it_refuses_while_a_dispatcher_runs(app, db, database_url, tmp_path):
    with dispatcher_process(base_config(), database_url, tmp_path) as process:
        deadline = time.monotonic() + 30
        while not rows(db, "SELECT name FROM dispatchers") and time.monotonic() < deadline:
            time.sleep(0.05)
        result = downgrade_command(app)
    assert result.exit_code == 2
    assert f":{process.pid} still running; stop every flask dispatch first" in result.output
    assert rows(db, "SELECT to_regnamespace('messaging_saved')") == [(None,)]


def test_it_refuses_while_the_service_still_holds_the_tables(app, db, monkeypatch, database_url):
    monkeypatch.setattr(downgrade, "LOCK_TIMEOUT", "200ms")
    reader = psycopg2.connect(database_url)
    with reader.cursor() as cur:
        cur.execute("SELECT count(*) FROM sms")  # an open transaction of a running worker
        result = downgrade_command(app)
    reader.close()
    assert result.exit_code == 2
    assert "refused: the database stayed busy for 200ms" in result.output
    assert rows(db, "SELECT to_regnamespace('messaging_saved')") == [(None,)]
