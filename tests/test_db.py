"""The pool's connections keep their statements prepared (db.PreparingConnection), and a
statement runs the same whether it is prepared or not."""

import datetime

import psycopg2
import pytest

from messaging import db as db_module
from messaging.db import Database, execute_together
from tests.conftest import base_config


@pytest.fixture
def pool(database_url):
    database = Database(database_url, max_connections=1)
    yield database
    database.close()


def prepared_on_server(cur) -> list[str]:
    cur.execute("SELECT statement FROM pg_prepared_statements ORDER BY prepare_time")
    return [statement for (statement,) in cur.fetchall()]


def test_a_statement_is_prepared_once_and_answers_as_unprepared(pool, database_url):
    query = (
        "SELECT %(word)s::text || '%%' || %(n)s::int, %(n)s + 1, %(when)s::timestamp, NOT %(flag)s"
    )
    args = {"word": "50", "n": 41, "when": datetime.datetime(2026, 12, 2, 8, 0), "flag": False}
    plain = psycopg2.connect(database_url)
    with plain, plain.cursor() as cur:
        cur.execute(query, args)
        expected = cur.fetchone()
    plain.close()
    for _ in range(3):
        with pool.transaction() as cur:
            cur.execute(query, args)
            assert cur.fetchone() == expected == ("50%41", 42, args["when"], True)
    with pool.transaction() as cur:
        statements = prepared_on_server(cur)
    assert len([s for s in statements if "|| '%' ||" in s]) == 1, statements
    assert cur.connection.prepared  # the client's record of them


def test_positional_and_argumentless_statements_and_arrays(pool):
    with pool.transaction() as cur:
        cur.execute("SELECT %s::int[], %s::varchar", ([3, None], None))
        assert cur.fetchone() == ([3, None], None)
        cur.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cur.fetchone()[0] >= 1
        cur.execute("CREATE TEMP TABLE kept (n int) ON COMMIT DROP")
        cur.execute("INSERT INTO kept SELECT generate_series(1, %s)", (3,))
        cur.execute("UPDATE kept SET n = n + 1 WHERE n > %s", (1,))
        assert cur.rowcount == 2  # the command's own count, through EXECUTE


def test_a_statement_prepare_refuses_runs_as_it_is_in_the_same_transaction(pool):
    # `SELECT %s + %s`: PREPARE cannot tell the parameters' types (unknown + unknown).
    with pool.transaction() as cur:
        cur.execute("SELECT 1")
        cur.execute("SELECT %s + %s", (2, 3))
        assert cur.fetchone() == (5,)
        cur.execute("SELECT 2")  # the transaction is still alive
        assert cur.fetchone() == (2,)
        assert "SELECT %s + %s" in cur.connection.unpreparable


def test_an_error_at_execute_is_the_statements_own(pool):
    with pytest.raises(psycopg2.errors.DivisionByZero), pool.transaction() as cur:
        cur.execute("SELECT 1 / %s", (0,))
    with pytest.raises(psycopg2.errors.UndefinedTable), pool.transaction() as cur:
        cur.execute("SELECT * FROM no_such_table WHERE id = %s", (1,))
    with pool.transaction() as cur:
        cur.execute("SELECT 1 / %s", (1,))  # prepared before the error: still there
        assert cur.fetchone() == (1,)


def test_the_least_recently_used_statement_is_deallocated(pool, monkeypatch):
    monkeypatch.setattr(db_module, "PREPARED_PER_CONNECTION", 2)
    with pool.transaction() as cur:
        for n in range(4):
            cur.execute(f"SELECT {n} + %s", (1,))
        assert cur.fetchone() == (4,)
        statements = prepared_on_server(cur)
        # The last two; the prepared_on_server query itself took one of the two places.
        assert statements == [
            "PREPARE messaging_4 AS SELECT 3 + $1",
            "PREPARE messaging_5 AS SELECT statement FROM pg_prepared_statements ORDER BY "
            "prepare_time",
        ]


def test_prepared_statements_can_be_turned_off(database_url):
    database = Database(database_url, max_connections=1, prepared_statements=False)
    try:
        for _ in range(2):
            with database.transaction() as cur:
                cur.execute("SELECT %s::int + 1", (1,))
                assert cur.fetchone() == (2,)
        with database.transaction() as cur:
            assert prepared_on_server(cur) == []
    finally:
        database.close()


def test_the_config_key_turns_them_off_for_the_apps_pool(make_app, db):
    config = {**base_config(), "dbConnection": {"Driver": "postgres", "preparedStatements": False}}
    app = make_app(config)
    services, client = app.extensions["messaging"], app.test_client()
    assert (
        client.post("/sendsms", json={"message": "hi", "msisdns": ["0830000001"]}).status_code
        == 200
    )
    with services.db.transaction() as cur:
        assert prepared_on_server(cur) == []
    assert services.db.connection_factory is None


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "unprepared"])
def test_statements_sent_together_run_as_one_transaction(database_url, prepared):
    database = Database(database_url, max_connections=1, prepared_statements=prepared)
    together = [
        ("CREATE TABLE IF NOT EXISTS together_test (n int PRIMARY KEY)", None),
        ("INSERT INTO together_test SELECT %s RETURNING set_config('test.n', %s, true)", (1, "1")),
        # The second sees the first's row, and what it passed on.
        ("SELECT count(*), current_setting('test.n') FROM together_test WHERE n = %s", (1,)),
    ]
    try:
        for _ in range(2):  # the second time through the statements prepared the first
            with database.statement() as cur:
                execute_together(cur, together)
                assert cur.fetchone() == (1, "1")
                cur.execute("DELETE FROM together_test")
        # An error in the last undoes the first: nothing is written.
        with pytest.raises(psycopg2.errors.DivisionByZero), database.statement() as cur:
            execute_together(cur, [together[1], ("SELECT 1 / %s", (0,))])
        with database.statement() as cur:
            cur.execute("SELECT count(*), current_setting('test.n', true) FROM together_test")
            # Nor does what was passed on outlive it (a name once set reads empty after).
            assert cur.fetchone() == (0, "")
            if prepared:
                assert len([s for s in prepared_on_server(cur) if "together_test" in s]) == 2
            cur.execute("DROP TABLE together_test")
    finally:
        database.close()


def test_statements_are_sent_together_only_in_autocommit(pool):
    with pytest.raises(ValueError, match="autocommit"), pool.transaction() as cur:
        execute_together(cur, [("SELECT %s::int", (1,))])
