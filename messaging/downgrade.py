"""Going back to the Go service: `flask db downgrade-to-original`, and coming back again.

The downgrade leaves the 2018 original's schema at its migration_version 2 (ORIGINAL.md):
sendlog and sms with exactly its columns, in its order and types, and no other index or
constraint than their primary keys. Nothing of ours is lost: our tables (api_keys,
idempotency keys, ...) and the values of our columns (sms.errorcode and reason, the
sender of each send, ...) move to the schema `messaging_saved`, which the Go service never
looks at. Starting this service again re-applies migrations 3 and up, as on any database
the Go service left, and then puts the saved tables and columns back.
"""

import logging

import psycopg2.errors

from messaging.db import Database
from messaging.dispatch import HEARTBEAT_SECONDS
from messaging.errors import Conflict
from messaging.queries import MIGRATION_LOCK, schema
from messaging.queries.dispatch import live_dispatchers

log = logging.getLogger(__name__)

LOCK_TIMEOUT = "10s"
# A dispatcher whose heartbeat is this recent may still be running: it would go on
# claiming from tables that are about to move.
DISPATCHER_SEEN_SECONDS = 3 * HEARTBEAT_SECONDS


def downgrade_to_original(database: Database) -> list[str]:
    """Turn the schema back into the original's; return one line per thing done.

    One transaction: it refuses (Conflict, nothing changed) while a dispatcher runs or any
    send is unfinished, and fails as a whole if any step does.
    """
    with database.transaction() as cur:
        try:
            schema.lock_for_downgrade(cur, MIGRATION_LOCK, LOCK_TIMEOUT)
        except psycopg2.errors.LockNotAvailable:
            raise Conflict(
                f"refused: the database stayed busy for {LOCK_TIMEOUT}; stop the service "
                "and poll-status first"
            ) from None
        current = schema.version(cur)
        if current <= schema.ORIGINAL_VERSION:
            return [f"schema version {current}: nothing to downgrade"]
        alive = live_dispatchers(cur, DISPATCHER_SEEN_SECONDS)
        if alive:
            raise Conflict(
                f"refused: dispatcher(s) {', '.join(alive)} still running; stop every "
                "flask dispatch first"
            )
        # The Go service would never finish them, and a batch of theirs may be at the provider.
        unfinished = schema.unfinished_sends(cur)
        if unfinished:
            raise Conflict(
                f"refused: {unfinished} send(s) still sending or scheduled; downgrade once "
                "they have finished (POST /sends/<refNumber>/cancel stops one; flask "
                "reconcile settles those a crash left)"
            )
        return _downgrade(cur)


def _downgrade(cur) -> list[str]:
    done = []
    schema.create_saved_schema(cur)
    for table in schema.tables(cur):
        if table in schema.ORIGINAL_TABLES or table == "migration_version":
            continue
        for name in schema.foreign_keys(cur, table):
            schema.drop_constraint(cur, table, name)
        rows = schema.move_to_saved(cur, table)
        done.append(f"moved table {table} ({rows} rows) to schema {schema.SAVED_SCHEMA}")
    for table, original in schema.ORIGINAL_TABLES.items():
        for name in schema.constraints_besides_primary_key(cur, table):
            schema.drop_constraint(cur, table, name)
            done.append(f"dropped constraint {name} on {table}")
        for name in schema.indexes_besides_primary_key(cur, table):
            schema.drop_index(cur, name)
            done.append(f"dropped index {name}")
        present = dict(schema.columns(cur, table))
        missing = [name for name, _ in original if name not in present]
        if missing:
            raise Conflict(f"refused: {table} lacks the original's column(s) {', '.join(missing)}")
        ours = [name for name in present if name not in dict(original)]
        if ours:
            saved = schema.save_and_drop_columns(cur, table, ours)
            done.append(
                f"moved columns {', '.join(f'{table}.{name}' for name in ours)} "
                f"({saved} rows with values) to {schema.SAVED_SCHEMA}.{table}"
            )
        for name, type_name in original:
            if present[name] != type_name:
                try:
                    schema.alter_type(cur, table, name, type_name)
                except psycopg2.errors.NumericValueOutOfRange:
                    raise Conflict(
                        f"refused: {table}.{name} holds values too large for the original's "
                        f"{type_name}"
                    ) from None
                done.append(f"{table}.{name}: {present[name]} -> {type_name}")
    schema.set_version(cur, schema.ORIGINAL_VERSION)
    done.append(f"migration_version set to {schema.ORIGINAL_VERSION}")
    log.warning("schema downgraded to the Go original's (version %s)", schema.ORIGINAL_VERSION)
    return done
