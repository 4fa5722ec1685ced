"""What the benchmarks share: a fresh database on a real server and a gunicorn to drive."""

import contextlib
import json
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from messaging.db import Database, apply_migrations, database_url  # noqa: E402
from tests.conftest import _server_dsn, base_config, gunicorn_server  # noqa: E402

__all__ = ["ROOT", "base_config", "fresh_database", "gunicorn", "percentile", "connect"]


@contextlib.contextmanager
def fresh_database(prefix: str = "messaging_bench") -> Iterator[str]:
    """Create a migrated database for one benchmark; drop it afterwards. Yields its URL."""
    server = _server_dsn()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(server, name)
    database = Database(url)
    apply_migrations(database)
    database.close()
    try:
        yield url
    finally:
        with admin.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        admin.close()


@contextlib.contextmanager
def gunicorn(config: dict, url: str, workers: int = 2) -> Iterator[str]:
    """Serve the app with gunicorn on a loopback port; yields the base URL."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        gunicorn_server(config, url, Path(tmp), workers=workers) as base,
    ):
        yield base


def connect(url: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def dump(results: dict) -> str:
    return json.dumps(results, indent=2, sort_keys=True)
