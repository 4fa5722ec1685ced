"""Migrations: a database left by the Go service upgrades in place; concurrent starts are safe."""

import multiprocessing

import psycopg2
import psycopg2.extensions
import pytest

from messaging import create_app
from messaging.config import config_from_mapping
from messaging.db import Database, apply_migrations, migration_files, schema_version
from tests.conftest import base_config, rows

# The schema exactly as the Go service (imqs/messaging) left it at version 2.
LEGACY_SCHEMA = """
CREATE TABLE migration_version (version INTEGER);
INSERT INTO migration_version VALUES (2);
CREATE TABLE sendlog (id SERIAL PRIMARY KEY, senttime TIMESTAMP, originator VARCHAR,
    type VARCHAR, quantity INTEGER, delivered INTEGER, failed INTEGER, sent INTEGER,
    message VARCHAR, status VARCHAR, description VARCHAR);
CREATE TABLE sms (id SERIAL PRIMARY KEY, msisdn VARCHAR, senttime TIMESTAMP,
    quantity SMALLINT, sendlogid INTEGER REFERENCES sendlog(id), status VARCHAR,
    statustimestamp TIMESTAMP, message VARCHAR, providerid VARCHAR);
INSERT INTO sendlog (senttime, originator, type, quantity, delivered, failed, sent, message,
    status, description)
VALUES ('2019-03-01 10:00', 'joe@example.com', 'sms', 2, 1, 0, 1, 'Legacy hello', 'success', ''),
       ('2019-03-02 11:00', 'ann@example.com', 'sms', 1, 0, 1, 0, 'Legacy bye', 'failed',
        'Error 301: Out of credit');
INSERT INTO sms (msisdn, senttime, quantity, sendlogid, status, statustimestamp, message,
    providerid)
VALUES ('27830000000', '2019-03-01 10:00', 1, 1, 'delivered', '2019-03-01 10:05',
        'Legacy hello', 'abc123'),
       ('27840000000', '2019-03-01 10:00', 1, 1, 'sent', NULL, 'Legacy hello', 'abc124'),
       ('27820000000', '2019-03-02 11:00', 1, 2, 'failed', NULL, 'Legacy bye', '');
"""


def dump(conn):
    return (
        rows(conn, "SELECT * FROM sendlog ORDER BY id"),
        rows(
            conn,
            "SELECT id, msisdn, senttime, quantity, sendlogid, status, statustimestamp, "
            "message, providerid FROM sms ORDER BY id",
        ),
    )


def test_go_service_database_upgrades_with_every_row_kept(make_database):
    url = make_database("messaging_legacy")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(LEGACY_SCHEMA)
    before = dump(conn)

    app = create_app(config_from_mapping(base_config(), url))

    latest = migration_files()[-1][0]
    assert rows(conn, "SELECT version FROM migration_version") == [(latest,)]
    sendlog_after, sms_after = dump(conn)
    assert [row[:11] for row in sendlog_after] == before[0]
    assert sms_after == before[1]
    # New columns exist and the service works on the old rows.
    client = app.test_client()
    assert client.get("/messagestatus/0830000000").get_data(as_text=True) == "delivered"
    body = client.post("/sendsms", json={"message": "new", "msisdns": ["0830000000"]}).get_json()
    assert body["refNumber"] == "3"
    assert rows(conn, "SELECT count(*) FROM sms") == [(4,)]
    conn.close()


def test_legacy_segments_column_is_kept_as_quantity(make_database):
    url = make_database("messaging_legacy")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            LEGACY_SCHEMA.replace("quantity SMALLINT", "segments SMALLINT").replace(
                "(msisdn, senttime, quantity,", "(msisdn, senttime, segments,"
            )
        )
    apply_migrations(Database(url))
    assert rows(conn, "SELECT quantity FROM sms ORDER BY id") == [(1,), (1,), (1,)]
    conn.close()


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
