"""Fixtures: a real PostgreSQL (the server on 127.0.0.1:5432, else the embedded one), the app,
its test client and CLI runner, and a live gunicorn for tests over real HTTP."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest
import requests
from psycopg2 import sql

from messaging import create_app, embedded
from messaging.config import config_from_mapping
from messaging.db import database_url as url_for_database
from messaging.providers.mock import MockProvider
from tests.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parent.parent
LOCAL_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
TEST_DATA_DIR = ROOT / "var" / "test-pgdata"


def _server_dsn() -> str:
    """The PostgreSQL server tests create their databases on."""
    if os.environ.get("MESSAGING_TEST_SERVER"):
        return os.environ["MESSAGING_TEST_SERVER"]
    try:
        psycopg2.connect(LOCAL_SERVER).close()
        return LOCAL_SERVER
    except psycopg2.OperationalError:
        # On TCP too, so the outage tests can put a proxy in front; stopped at exit.
        return embedded.start(TEST_DATA_DIR, tcp=True).url


@pytest.fixture(scope="session")
def pg_server() -> str:
    return _server_dsn()


@pytest.fixture(scope="session")
def make_database(pg_server):
    """Create fresh, uniquely named databases; drop them all at the end of the session."""
    created = []

    def make(prefix: str = "messaging_test") -> str:
        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        conn = psycopg2.connect(pg_server)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.close()
        created.append(name)
        return url_for_database(pg_server, name)

    yield make
    conn = psycopg2.connect(pg_server)
    conn.autocommit = True
    with conn.cursor() as cur:
        for name in created:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    conn.close()


@pytest.fixture(scope="session")
def database_url(make_database) -> str:
    """The suite's main database (migrated by the first app created)."""
    return make_database()


@pytest.fixture
def db(database_url):
    """An autocommit connection to the test database, emptied before the test."""
    conn = psycopg2.connect(database_url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND tablename <> 'migration_version'"
        )
        tables = [sql.Identifier(name) for (name,) in cur.fetchall()]
        if tables:
            cur.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(sql.SQL(", ").join(tables))
            )
    yield conn
    conn.close()


def base_config(**provider) -> dict:
    """A config.json as a user would write it, for tests."""
    return {
        "HTTPPort": 2016,
        "smsProvider": {
            "name": "MockProvider",
            "enabled": True,
            "token": "test-token",
            "maxMessageSegments": 5,
            "maxBatchSize": 500,
            "countries": ["ZA", "BW"],
            **provider,
        },
        "authentication": {"service": "serviceauth", "enabled": False},
        "deliveryStatus": {"enabled": True, "updateInverval": 15},
        "dbConnection": {"Driver": "postgres", "Database": "unused_in_tests"},
    }


@pytest.fixture
def make_app(database_url, db):
    """Build an app from a config mapping (tables emptied first)."""

    def make(config: dict | None = None, url: str | None = None):
        app = create_app(config_from_mapping(config or base_config(), url or database_url))
        app.config["TESTING"] = True
        return app

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def provider(app):
    return app.extensions["messaging"].provider


class HeldProvider(MockProvider):
    """MockProvider that holds batch `hold_at` (from 1) until released: a send caught
    while that batch is at the provider."""

    def __init__(self, settings, hold_at: int):
        super().__init__(settings)
        self.hold_at = hold_at
        self.holding = threading.Event()
        self.release = threading.Event()

    def send_batch(self, recipients, text, sender):
        if len(self.batches) + 1 == self.hold_at:
            self.holding.set()
            self.release.wait(30)
        return super().send_batch(recipients, text, sender)


def rows(conn, query: str, *params):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def gunicorn_server(
    config: dict,
    database_url: str,
    tmp_path: Path,
    workers: int = 2,
    args: tuple[str, ...] = (),
    extra_env: dict | None = None,
    host: str = "127.0.0.1",
    prefix: tuple[str, ...] = (),
    bind: bool = True,
    app: str = "wsgi:app",
):
    """Run gunicorn on a free port of `host` with this config; yield its base URL.

    `args` go on gunicorn's command line (e.g. a --config file), `extra_env` into its env,
    `prefix` before it (e.g. `ip netns exec <namespace>`: a host of its own). Without
    `bind`, no --bind is given: the config's HTTPPort must be where it listens. `app` is
    what it serves (answering GET /ping once up).
    """
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    port = free_port() if bind else config["HTTPPort"]
    env = {
        **os.environ,
        "MESSAGING_CONFIG": str(config_file),
        "MESSAGING_DATABASE_URL": database_url,
        **(extra_env or {}),
    }
    log_file = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [
            *prefix,
            sys.executable,
            "-m",
            "gunicorn",
            "--no-control-socket",
            "--workers",
            str(workers),
            *(("--bind", f"{host}:{port}") if bind else ()),
            *args,
            app,
        ],
        cwd=ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    base = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/ping", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass  # not listening yet, or too busy starting to answer
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "gunicorn.log").read_text())
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
        log_file.close()


@pytest.fixture
def live_server(database_url, db, tmp_path):
    with gunicorn_server(base_config(), database_url, tmp_path) as base:
        yield base


@pytest.fixture
def proxy(pg_server):
    params = psycopg2.extensions.parse_dsn(pg_server)
    host = params.get("host", "")
    if not host or host.startswith("/"):
        pytest.skip("the test server is reached by a socket, not TCP")
    proxy = TcpProxy(host, int(params.get("port", 5432)))
    yield proxy
    proxy.stop()


def through(proxy: TcpProxy, url: str) -> str:
    """The same database, reached through the proxy."""
    params = psycopg2.extensions.parse_dsn(url)
    params.update(host=proxy.host, port=str(proxy.port))
    database = params.pop("dbname")
    return url_for_database(" ".join(f"{k}={v}" for k, v in params.items()), database)


@contextlib.contextmanager
def dispatcher_process(
    config: dict, database_url: str, tmp_path: Path, name: str = "dispatch", args=(), prefix=()
):
    """Run `flask --app messaging dispatch` as a process of its own (after `prefix`, as in
    gunicorn_server); yield its Popen (its output goes to tmp_path/<name>.log). Stopped with
    SIGTERM at the end if still running."""
    config_file = tmp_path / f"{name}-config.json"
    config_file.write_text(json.dumps(config))
    env = {
        **os.environ,
        "MESSAGING_CONFIG": str(config_file),
        "MESSAGING_DATABASE_URL": database_url,
    }
    log_file = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "flask", "--app", "messaging", "dispatch", *args],
        cwd=ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)
        log_file.close()


def log_of(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.log").read_text()
