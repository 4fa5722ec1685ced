"""Migrations: a database left by the Go service upgrades in place; concurrent starts are safe."""

import multiprocessing

import psycopg2
import psycopg2.extensions
import pytest

from messaging import create_app
from messaging.config import config_from_mapping
from messaging.db import Database, apply_migrations, migration_files, schema_version
from messaging.queries.schema import foreign_keys
from tests.conftest import base_config, rows

# The schema exactly as the 2018 Go service (imqs/messaging cc2bcc5) left it at version 2
# (ORIGINAL.md): BIGSERIAL keys, sms.segments, sendlogid without a foreign key.
SCHEMA_2018 = """
CREATE TABLE migration_version (version INTEGER);
INSERT INTO migration_version VALUES (2);
CREATE TABLE sendlog (id BIGSERIAL PRIMARY KEY, senttime TIMESTAMP, originator VARCHAR,
    type VARCHAR, quantity INTEGER, delivered INTEGER, failed INTEGER, sent INTEGER,
    message VARCHAR, status VARCHAR, description VARCHAR);
CREATE TABLE sms (id BIGSERIAL PRIMARY KEY, msisdn VARCHAR, senttime TIMESTAMP,
    segments SMALLINT, sendlogid INTEGER, status VARCHAR, statustimestamp TIMESTAMP,
    message VARCHAR, providerid VARCHAR);
"""
# The 2016 builds: SERIAL keys, the segment count named quantity, a foreign key.
SCHEMA_2016 = """
CREATE TABLE migration_version (version INTEGER);
INSERT INTO migration_version VALUES (2);
CREATE TABLE sendlog (id SERIAL PRIMARY KEY, senttime TIMESTAMP, originator VARCHAR,
    type VARCHAR, quantity INTEGER, delivered INTEGER, failed INTEGER, sent INTEGER,
    message VARCHAR, status VARCHAR, description VARCHAR);
CREATE TABLE sms (id SERIAL PRIMARY KEY, msisdn VARCHAR, senttime TIMESTAMP,
    quantity SMALLINT, sendlogid INTEGER REFERENCES sendlog(id), status VARCHAR,
    statustimestamp TIMESTAMP, message VARCHAR, providerid VARCHAR);
"""
LEGACY_ROWS = """
INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent, message,
    status, description)
VALUES ('2019-03-01 10:00', 'joe@example.com', 'sms', 2, 1, 0, 1, 'Legacy hello', 'success', ''),
       ('2019-03-02 11:00', 'ann@example.com', 'sms', 1, 0, 1, 0, 'Legacy bye', 'failed',
        'Error 301: Out of credit');
INSERT INTO sms (msisdn, senttime, SEGMENTS, sendlogid, status, statustimestamp, message,
    providerid)
VALUES ('27830000000', '2019-03-01 10:00', 1, 1, 'delivered', '2019-03-01 10:05',
        'Legacy hello', 'abc123'),
       ('27840000000', '2019-03-01 10:00', 2, 1, 'sent', NULL, 'Legacy hello', 'abc124'),
       ('27820000000', '2019-03-02 11:00', 1, 2, 'failed', NULL, 'Legacy bye', '');
"""
# A report an operator wrote against the Go service's tables.
GO_REPORT = "SELECT sum(segments), count(*) FROM sms"
SMS_COLUMNS = (
    "id, msisdn, senttime, segments, sendlogid, status, statustimestamp, message, providerid"
)


def legacy_database(make_database, schema: str, segments_column: str):
    url = make_database("messaging_legacy")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(schema + LEGACY_ROWS.replace("SEGMENTS", segments_column))
    return url, conn


def column_types(conn) -> dict:
    return dict(
        rows(
            conn,
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name IN ('sms', 'sendlog') "
            "AND column_name IN ('id', 'sendlogid', 'segments', 'quantity')",
        )
    )


ORIGINAL_TYPES = {
    "sendlog.id": "bigint",
    "sendlog.quantity": "integer",
    "sms.id": "bigint",
    "sms.sendlogid": "bigint",
    "sms.segments": "smallint",
}


@pytest.mark.parametrize(
    ("schema", "segments_column"),
    [(SCHEMA_2018, "segments"), (SCHEMA_2016, "quantity")],
    ids=["2018", "2016"],
)
def test_go_service_database_upgrades_with_every_row_kept_and_its_reports_still_work(
    make_database, schema, segments_column
):
    url, conn = legacy_database(make_database, schema, segments_column)
    sendlog_before = rows(conn, "SELECT * FROM sendlog ORDER BY id")
    sms_before = rows(
        conn, f"SELECT {SMS_COLUMNS.replace('segments', segments_column)} FROM sms ORDER BY id"
    )

    app = create_app(config_from_mapping(base_config(), url))

    latest = migration_files()[-1][0]
    assert rows(conn, "SELECT version FROM migration_version") == [(latest,)]
    assert [row[:11] for row in rows(conn, "SELECT * FROM sendlog ORDER BY id")] == sendlog_before
    assert rows(conn, f"SELECT {SMS_COLUMNS} FROM sms ORDER BY id") == sms_before
    assert column_types(conn) == ORIGINAL_TYPES
    assert foreign_keys(conn.cursor(), "sms") == []  # as in 2018 (migration 0028)
    assert rows(conn, GO_REPORT) == [(4, 3)]

    client = app.test_client()
    assert client.get("/messagestatus/0830000000").get_data(as_text=True) == "delivered"
    body = client.post("/sendsms", json={"message": "new", "msisdns": ["0830000000"]}).get_json()
    assert body["refNumber"] == "3"
    assert rows(conn, GO_REPORT) == [(5, 4)]
    conn.close()


def test_a_new_database_has_the_2018_names_and_types(database_url, app):
    conn = psycopg2.connect(database_url)
    assert column_types(conn) == ORIGINAL_TYPES
    assert foreign_keys(conn.cursor(), "sms") == []  # as in 2018 (migration 0028)
    conn.close()


def test_sends_we_record_count_in_a_go_era_report(client, db):
    client.post("/sendsms", json={"message": "ж" * 71, "msisdns": ["0830000000", "0840000000"]})
    assert rows(db, GO_REPORT) == [(4, 2)]  # UCS-2, 71 characters: two parts each


def _migrate(url, results):
    results.append(apply_migrations(Database(url)))


def test_concurrent_starts_apply_each_migration_once(make_database):
    url = make_database("messaging_race")
    with multiprocessing.Manager() as manager:
        results = manager.list()
        workers = [multiprocessing.Process(target=_migrate, args=(url, results)) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
            assert worker.exitcode == 0
        applied = [name for result in results for name in result]
    assert sorted(applied) == [name for _, name, _ in migration_files()]
    conn = psycopg2.connect(url)
    assert rows(conn, "SELECT version FROM migration_version") == [(migration_files()[-1][0],)]
    conn.close()


def test_indexes_serve_latest_message_and_unresolved_lookups(database_url, app):
    conn = psycopg2.connect(database_url)
    names = {
        name for (name,) in rows(conn, "SELECT indexname FROM pg_indexes WHERE tablename = 'sms'")
    }
    assert {"sms_msisdn_latest", "sms_unresolved", "sms_providerid"} <= names
    conn.close()


def test_database_named_by_url_is_created_when_missing(pg_server, make_database):
    url = make_database("messaging_created")
    name = psycopg2.extensions.parse_dsn(url)["dbname"]
    admin = psycopg2.connect(pg_server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{name}"')
    create_app(config_from_mapping(base_config(), url))
    conn = psycopg2.connect(url)
    assert rows(conn, "SELECT version FROM migration_version") == [(migration_files()[-1][0],)]
    conn.close()
    admin.close()


def test_db_upgrade_command_reports_the_schema_version(runner):
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"schema version {migration_files()[-1][0]}" in result.output


@pytest.mark.parametrize(
    "name", ["0010_Add_Index.sql", "10_add_index.sql", "0001_create_sendlog.sql~"]
)
def test_a_misnamed_migration_file_stops_the_upgrade_before_any_change(
    make_database, tmp_path, name
):
    folder = tmp_path / "migrations"
    folder.mkdir()
    for _, shipped, text in migration_files():
        (folder / shipped).write_text(text)
    (folder / name).write_text("CREATE TABLE never_made (id INTEGER);")
    database = Database(make_database("messaging_misnamed"))

    with pytest.raises(RuntimeError, match="is not a migration file name") as raised:
        apply_migrations(database, folder)

    assert repr(name) in str(raised.value)
    conn = psycopg2.connect(database.dsn)
    assert rows(conn, "SELECT to_regclass('migration_version'), to_regclass('never_made')") == [
        (None, None)
    ]
    conn.close()
    (folder / name).unlink()
    assert apply_migrations(database, folder)[-1] == migration_files()[-1][1]
    assert schema_version(database) == migration_files()[-1][0]
