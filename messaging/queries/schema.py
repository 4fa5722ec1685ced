"""The schema itself: what its tables hold, the steps of `flask db downgrade-to-original`, and
putting back, on the next upgrade, what a downgrade set aside."""

from psycopg2 import sql

# Where a downgrade keeps our own tables and columns, out of the Go service's sight.
SAVED_SCHEMA = "messaging_saved"

ORIGINAL_VERSION = 2
# The 2018 original's tables (ORIGINAL.md), columns in order, types as PostgreSQL names them.
ORIGINAL_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "sendlog": (
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
    ),
    "sms": (
        ("id", "bigint"),
        ("msisdn", "character varying"),
        ("senttime", "timestamp without time zone"),
        ("segments", "smallint"),
        ("sendlogid", "integer"),
        ("status", "character varying"),
        ("statustimestamp", "timestamp without time zone"),
        ("message", "character varying"),
        ("providerid", "character varying"),
    ),
}


def version(cur) -> int:
    cur.execute("SELECT COALESCE(max(version), 0) FROM migration_version")
    return cur.fetchone()[0]


def set_version(cur, number: int) -> None:
    cur.execute("UPDATE migration_version SET version = %s", (number,))


def tables(cur, schema: str | None = None) -> list[str]:
    """Return the tables of `schema` (default: the current one), by name."""
    cur.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = COALESCE(%s, current_schema()) "
        "ORDER BY tablename",
        (schema,),
    )
    return [name for (name,) in cur.fetchall()]


def columns(cur, table: str, schema: str | None = None) -> list[tuple[str, str]]:
    """Return (name, type) of a table's columns in order, types as PostgreSQL spells them."""
    cur.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod)
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = COALESCE(%s, current_schema()) AND c.relname = %s
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (schema, table),
    )
    return cur.fetchall()


def unfinished_sends(cur) -> int:
    """Count sends the dispatchers are not done with: still `sending` (scheduled ones are
    too, until their sendAt), or with a batch in dispatch_batches."""
    cur.execute(
        """
        SELECT count(*) FROM sendlog
        WHERE status = 'sending' OR id IN (SELECT sendlogid FROM dispatch_batches)
        """
    )
    return cur.fetchone()[0]


def lock_for_downgrade(cur, migration_lock: int, timeout: str) -> None:
    """Take the migrations' advisory lock, then sendlog and sms against every other reader
    and writer, until the transaction ends; waiting at most `timeout` for each."""
    cur.execute("SET LOCAL lock_timeout = %s", (timeout,))
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (migration_lock,))
    cur.execute(
        sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
            sql.SQL(", ").join(map(sql.Identifier, ORIGINAL_TABLES))
        )
    )


def constraints_besides_primary_key(cur, table: str) -> list[str]:
    """Return a table's foreign key, unique, check and exclusion constraints."""
    cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) "
        "AND contype IN ('f', 'u', 'c', 'x') ORDER BY conname",
        (table,),
    )
    return [name for (name,) in cur.fetchall()]


def foreign_keys(cur, table: str) -> list[str]:
    cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'f' "
        "ORDER BY conname",
        (table,),
    )
    return [name for (name,) in cur.fetchall()]


def drop_constraint(cur, table: str, name: str) -> None:
    cur.execute(
        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.Identifier(table), sql.Identifier(name)
        )
    )


def indexes_besides_primary_key(cur, table: str) -> list[str]:
    cur.execute(
        """
        SELECT index.relname FROM pg_index
        JOIN pg_class AS index ON index.oid = pg_index.indexrelid
        WHERE pg_index.indrelid = to_regclass(%s) AND NOT pg_index.indisprimary
        ORDER BY index.relname
        """,
        (table,),
    )
    return [name for (name,) in cur.fetchall()]


def drop_index(cur, name: str) -> None:
    cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))


def create_saved_schema(cur) -> None:
    cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SAVED_SCHEMA)))


def move_to_saved(cur, table: str) -> int:
    """Move a table (its rows, indexes and sequences) into the saved schema; return its rows."""
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    count = cur.fetchone()[0]
    cur.execute(
        sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(
            sql.Identifier(table), sql.Identifier(SAVED_SCHEMA)
        )
    )
    return count


def save_and_drop_columns(cur, table: str, names: list[str]) -> int:
    """Copy (id, columns) of the rows where any of them is set into the saved schema, then
    drop the columns; return how many rows were saved."""
    wanted = sql.SQL(", ").join(map(sql.Identifier, ["id", *names]))
    cur.execute(
        sql.SQL("CREATE TABLE {saved} AS SELECT {wanted} FROM {table} WHERE {any_set}").format(
            saved=sql.Identifier(SAVED_SCHEMA, table),
            wanted=wanted,
            table=sql.Identifier(table),
            any_set=sql.SQL(" OR ").join(
                sql.SQL("{} IS NOT NULL").format(sql.Identifier(name)) for name in names
            ),
        )
    )
    saved = cur.rowcount
    cur.execute(
        sql.SQL("ALTER TABLE {} {}").format(
            sql.Identifier(table),
            sql.SQL(", ").join(
                sql.SQL("DROP COLUMN {}").format(sql.Identifier(name)) for name in names
            ),
        )
    )
    return saved


def alter_type(cur, table: str, column: str, type_name: str) -> None:
    """Give a column another type; an out-of-range value fails the whole transaction."""
    cur.execute(
        sql.SQL(
            "ALTER TABLE {table} ALTER COLUMN {column} TYPE {type} USING {column}::{type}"
        ).format(
            table=sql.Identifier(table), column=sql.Identifier(column), type=sql.SQL(type_name)
        )
    )


def saved_schema_exists(cur) -> bool:
    cur.execute("SELECT to_regnamespace(%s) IS NOT NULL", (SAVED_SCHEMA,))
    return cur.fetchone()[0]


def restore_saved(cur) -> list[str]:
    """Put back what a downgrade saved, then drop the saved schema; return what was done.

    sendlog and sms (the Go service went on writing them) get their saved columns back by
    id; any other saved table's rows go back into the table of that name the migrations
    made again, in the columns both have, and its serial sequences move past the restored
    ids. A saved table with no counterpart any more is dropped.
    """
    done = []
    for table in tables(cur, SAVED_SCHEMA):
        present = {name for name, _ in columns(cur, table)}
        shared = [name for name, _ in columns(cur, table, SAVED_SCHEMA) if name in present]
        if not present:
            done.append(f"dropped the saved {table}: no such table any more")
        elif table in ORIGINAL_TABLES:
            done.append(f"{table}: {_update_from_saved(cur, table, shared)} rows' columns back")
        else:
            done.append(f"{table}: {_insert_from_saved(cur, table, shared)} rows back")
    cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SAVED_SCHEMA)))
    return done


def _update_from_saved(cur, table: str, shared: list[str]) -> int:
    values = [name for name in shared if name != "id"]
    if not values:
        return 0
    cur.execute(
        sql.SQL(
            "UPDATE {table} SET {assign} FROM {saved} AS saved WHERE {table}.id = saved.id"
        ).format(
            table=sql.Identifier(table),
            saved=sql.Identifier(SAVED_SCHEMA, table),
            assign=sql.SQL(", ").join(
                sql.SQL("{0} = saved.{0}").format(sql.Identifier(name)) for name in values
            ),
        )
    )
    return cur.rowcount


def _insert_from_saved(cur, table: str, shared: list[str]) -> int:
    names = sql.SQL(", ").join(map(sql.Identifier, shared))
    cur.execute(
        sql.SQL(
            "INSERT INTO {table} ({names}) SELECT {names} FROM {saved} ON CONFLICT DO NOTHING"
        ).format(
            table=sql.Identifier(table), names=names, saved=sql.Identifier(SAVED_SCHEMA, table)
        )
    )
    restored = cur.rowcount
    for column in shared:
        cur.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column))
        sequence = cur.fetchone()[0]
        if sequence is not None:
            cur.execute(
                sql.SQL(
                    "SELECT setval(%s, COALESCE(max({column}), 0) + 1, false) FROM {table}"
                ).format(column=sql.Identifier(column), table=sql.Identifier(table)),
                (sequence,),
            )
    return restored
