"""PostgreSQL: where the database is, a per-process connection pool, its health check, and
migrations."""

import contextlib
import functools
import itertools
import logging
import os
import re
import select
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from urllib.parse import quote, urlencode

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from psycopg2 import sql

from messaging import embedded
from messaging.errors import ServiceUnavailable
from messaging.queries import MIGRATION_LOCK, schema
from messaging.settings import Config, DatabaseSettings

log = logging.getLogger(__name__)

MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# What Python itself may keep in the migrations folder.
PACKAGE_FILES = {"__init__.py", "__pycache__"}
CONNECT_OPTIONS = {"connect_timeout": 5, "application_name": "messaging"}


def start_embedded(settings: DatabaseSettings) -> str:
    """Start (or find running) the embedded PostgreSQL and return its server URI.

    This process uses it until it exits; the last process to let go stops it.
    """
    try:
        return embedded.start(settings.data_dir).url
    except embedded.EmbeddedError as err:
        raise ServiceUnavailable(str(err)) from None


def server_dsn(config: Config) -> tuple[str, str]:
    """Return (DSN of the server's maintenance database, name of our database)."""
    settings = config.database
    if settings.driver == "embedded":
        return start_embedded(settings), settings.database
    params = {
        "host": settings.host,
        "port": settings.port,
        "dbname": "postgres",
        "sslmode": "require" if settings.ssl else "prefer",
    }
    if settings.user:
        params["user"] = settings.user
    if settings.password:
        params["password"] = settings.password
    dsn = " ".join(f"{key}={_quote(str(value))}" for key, value in params.items())
    return dsn, settings.database


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def database_url(dsn: str, database: str | None = None) -> str:
    """Return a libpq URL for a DSN (URL or key=value), optionally naming another database."""
    params = psycopg2.extensions.parse_dsn(dsn)
    if database:
        params["dbname"] = database
    credentials = quote(params.pop("user", ""), safe="")
    password = params.pop("password", "")
    if password:
        credentials += ":" + quote(password, safe="")
    if credentials:
        credentials += "@"
    host = params.pop("host", "")
    port = params.pop("port", "")
    # A socket directory cannot sit in the authority part; libpq takes it as a parameter.
    if host.startswith("/"):
        params["host"] = host
        host = ""
    netloc = credentials + host + (f":{port}" if port else "")
    dbname = quote(params.pop("dbname", ""), safe="")
    query = f"?{urlencode(params)}" if params else ""
    return f"postgresql://{netloc}/{dbname}{query}"


def resolve_dsn(config: Config) -> str:
    """Find the database the config names, creating it if it is missing; return its URL."""
    if config.database_url:
        ensure_url_database(config.database_url)
        return config.database_url
    dsn, name = server_dsn(config)
    ensure_database(dsn, name)
    return database_url(dsn, name)


def ensure_database(server: str, name: str) -> None:
    """Create database `name` on the server unless it exists (safe to race)."""
    try:
        conn = psycopg2.connect(server, **CONNECT_OPTIONS)
    except psycopg2.OperationalError as err:
        raise ServiceUnavailable(f"database server unreachable: {_first_line(err)}") from None
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return
            log.info("creating database %s", name)
            # Another process may create it first; that is fine.
            with contextlib.suppress(
                psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation
            ):
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        conn.close()


def ensure_url_database(url: str) -> None:
    """Create the database a URL names if the server says it does not exist."""
    try:
        psycopg2.connect(url, **CONNECT_OPTIONS).close()
    except psycopg2.OperationalError as err:
        if "does not exist" not in str(err):
            raise ServiceUnavailable(f"database unreachable: {_first_line(err)}") from None
        name = psycopg2.extensions.parse_dsn(url).get("dbname")
        ensure_database(database_url(url, "postgres"), name)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


# A statement a connection keeps prepared: one of the kinds PREPARE takes (not a script).
_PREPARABLE = re.compile(
    r"^\s*(?:--[^\n]*\n\s*)*(?:SELECT|WITH|INSERT|UPDATE|DELETE|VALUES)\b", re.I
)
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%%|\$\d")
# Statements kept prepared a connection at most; the least recently used one goes first.
PREPARED_PER_CONNECTION = 256


@functools.lru_cache(maxsize=1024)
def _as_prepared(query: str, with_args: bool) -> tuple[str, tuple[str, ...] | int] | None:
    """Return a statement as PREPARE takes it ($1, $2... for psycopg2's placeholders) and
    what fills them: the names of %(name)s in order, or how many %s. None if it cannot be
    prepared (not one SELECT/WITH/INSERT/UPDATE/DELETE, placeholders mixed, a `$n` of its
    own)."""
    if not _PREPARABLE.match(query):
        return None
    if not with_args:  # psycopg2 leaves the text as it is
        return None if "$" in query else (query, 0)
    names: list[str] = []
    positional = 0
    failed = False

    def placeholder(match: re.Match) -> str:
        nonlocal positional, failed
        text = match.group(0)
        if text == "%%":
            return "%"
        if text.startswith("$"):
            failed = True
            return text
        if text == "%s":
            positional += 1
            return f"${positional}"
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    converted = _PLACEHOLDER.sub(placeholder, query)
    if failed or (names and positional):
        return None
    return converted, tuple(names) if names else positional


class PreparingConnection(psycopg2.extensions.connection):
    """A connection that keeps the statements it runs prepared on the server, so each is
    parsed and planned once per connection, not on every call: planning was most of what a
    small send cost PostgreSQL (the claim 0.28 ms of planning for 0.08 ms of work).

    Turned off (`dbConnection.preparedStatements: false`) behind a pooler that hands a
    session's transactions to different server connections (PgBouncer in transaction
    mode), where a statement prepared on one is unknown on the next.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cursor_factory = PreparingCursor
        self.prepared: OrderedDict[str, str] = OrderedDict()
        self.unpreparable: set[str] = set()
        self._names = itertools.count(1)


class PreparingCursor(psycopg2.extensions.cursor):
    """Runs a statement as EXECUTE of its prepared copy, preparing it on first use; one that
    PREPARE refuses (a parameter whose type cannot be told) runs as it is from then on."""

    def execute(self, query, vars=None):
        return super().execute(*self.as_sent(query, vars))

    def as_sent(self, query, vars=None) -> tuple:
        """The statement and parameters to send for this one: EXECUTE of its prepared copy
        (prepared now, on first use), or the statement itself."""
        conn = self.connection
        if not isinstance(query, str) or query in conn.unpreparable:
            return query, vars
        shape = _as_prepared(query, vars is not None)
        if shape is None:
            return query, vars
        text, filled = shape
        if isinstance(filled, tuple):
            if not isinstance(vars, Mapping):
                return query, vars
            args = [vars[key] for key in filled]
        else:
            args = [] if vars is None else list(vars)
            if isinstance(vars, Mapping) or len(args) != filled:
                return query, vars  # psycopg2 says what is wrong, if anything
        name = conn.prepared.get(query)
        if name is None:
            name = self._prepare(query, text)
            if name is None:
                return query, vars
        else:
            conn.prepared.move_to_end(query)
        if not args:
            return f"EXECUTE {name}", None
        return f"EXECUTE {name} ({', '.join(['%s'] * len(args))})", args

    def _prepare(self, query: str, text: str) -> str | None:
        conn = self.connection
        if len(conn.prepared) >= PREPARED_PER_CONNECTION:
            _, oldest = conn.prepared.popitem(last=False)
            super().execute(f"DEALLOCATE {oldest}")
        name = f"messaging_{next(conn._names)}"
        # PREPARE is not undone by a rollback, but a failed one aborts the transaction:
        # inside one, a savepoint keeps it alive.
        guarded = not conn.autocommit
        try:
            if guarded:
                super().execute("SAVEPOINT messaging_prepare")
            super().execute(f"PREPARE {name} AS {text}")
            if guarded:
                super().execute("RELEASE SAVEPOINT messaging_prepare")
        except (psycopg2.ProgrammingError, psycopg2.DataError, psycopg2.NotSupportedError):
            # Typically a parameter whose type its context does not tell (`SELECT %s`);
            # as it is, the statement runs (or fails) as psycopg2 sends it.
            if guarded:
                super().execute("ROLLBACK TO SAVEPOINT messaging_prepare")
            conn.unpreparable.add(query)
            return None
        conn.prepared[query] = name
        return name


def execute_together(cur, statements) -> None:
    """Run these (query, vars) statements in one round trip, on a cursor in autocommit
    (Database.statement): the server runs a string of statements as one transaction, each
    seeing what those before it wrote, with a snapshot of its own (as in any READ COMMITTED
    transaction); an error in one rolls them all back. Only the last one's rows can be
    fetched (an earlier one can pass on what it found with set_config(..., true))."""
    if not cur.connection.autocommit:
        raise ValueError("execute_together needs a connection in autocommit")
    encoding = psycopg2.extensions.encodings[cur.connection.encoding]
    texts = []
    for query, vars in statements:
        if isinstance(cur, PreparingCursor):
            query, vars = cur.as_sent(query, vars)
        texts.append(query if vars is None else cur.mogrify(query, vars).decode(encoding))
    # As the base cursor: a string of statements cannot be prepared (nor be worth it).
    psycopg2.extensions.cursor.execute(cur, ";\n".join(texts))


class Database:
    """A small per-process pool; connections are borrowed for one transaction at a time.

    Nothing holds a connection across a provider call: callers take one with
    `transaction()`, do their SQL and give it back. The pool is created lazily in
    the process that uses it, so gunicorn workers never share a forked socket.
    """

    def __init__(self, dsn: str, max_connections: int = 10, prepared_statements: bool = True):
        self.dsn = dsn
        self.max_connections = max_connections
        self.connection_factory = PreparingConnection if prepared_statements else None
        self._pid = None
        self._idle: list = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_connections)

    def _reset_after_fork(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._idle = []
            self._lock = threading.Lock()
            self._slots = threading.BoundedSemaphore(self.max_connections)

    def _connect(self):
        try:
            return psycopg2.connect(
                self.dsn, connection_factory=self.connection_factory, **CONNECT_OPTIONS
            )
        except psycopg2.OperationalError as err:
            log.error("database unavailable: %s", _first_line(err))
            raise ServiceUnavailable("database unavailable") from None

    @contextlib.contextmanager
    def connection(self) -> Iterator:
        """Borrow a connection (not in a transaction block until used)."""
        self._reset_after_fork()
        if not self._slots.acquire(timeout=30):
            raise ServiceUnavailable("database busy: no free connection")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is not None and _closed_by_server(conn):
                conn.close()
            if conn is None or conn.closed:
                conn = self._connect()
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as err:
            # The server went away (restart, failover): this connection is dead and the
            # idle ones most likely too. Drop them all; the next borrower reconnects.
            if conn is not None:
                conn.close()
            self.close()
            log.error("database connection lost: %s", _first_line(err))
            raise ServiceUnavailable("database unavailable") from None
        finally:
            if conn is not None and not conn.closed:
                self._give_back(conn)
            self._slots.release()

    def _give_back(self, conn) -> None:
        try:
            if conn.autocommit:
                conn.autocommit = False
            elif conn.status != psycopg2.extensions.STATUS_READY:
                conn.rollback()
        except psycopg2.Error:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator:
        """Yield a cursor inside one transaction: commit on success, roll back on error."""
        with self.connection() as conn, conn, conn.cursor() as cur:
            yield cur

    @contextlib.contextmanager
    def snapshot(self) -> Iterator:
        """Yield a cursor in a read-only transaction that sees one moment (REPEATABLE READ):
        reads spread over several statements agree, though writers commit between them."""
        with self.transaction() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield cur

    @contextlib.contextmanager
    def statement(self) -> Iterator:
        """Yield a cursor whose every statement commits on its own: for work that is one
        statement, it spares the server the BEGIN and COMMIT round trips of a transaction."""
        with self.connection() as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                yield cur

    def close(self) -> None:
        with self._lock:
            for conn in self._idle:
                conn.close()
            self._idle = []


def _closed_by_server(conn) -> bool:
    """True when an idle connection has something to read: the server's goodbye (restart,
    outage, idle timeout). Checked on borrowing, so a dead one is replaced, not used."""
    poller = select.poll()  # not select(): no limit on the descriptor's number
    try:
        poller.register(conn, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


# A load balancer may call /healthz every second: answer within a couple of seconds.
HEALTH_CONNECT_TIMEOUT = 2
HEALTH_STATEMENT_TIMEOUT_MS = 2000


class HealthCheck:
    """`SELECT 1` on one connection of its own, kept open between checks.

    Apart from the request pool on purpose: a busy pool must not make the load
    balancer wait, and the check costs one round trip, not a new connection.
    """

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._conn = None
        self._pid = None
        self._lock = threading.Lock()

    def database(self) -> str:
        """Return "ok" or "unavailable: <why>" (never a password: libpq errors carry none)."""
        with self._lock:
            if self._pid != os.getpid():  # a forked copy must not share the socket
                self._conn, self._pid = None, os.getpid()
            kept = self._conn is not None
            error = self._select_one()
            if error is not None and kept:
                # The kept connection may only be stale (the server restarted): a fresh try.
                error = self._select_one()
            if error is None:
                return "ok"
            log.warning("health check: database unavailable: %s", error)
            return f"unavailable: {error}"

    def _select_one(self) -> str | None:
        """Run `SELECT 1`; return None, or why it failed (and drop the connection)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(
                    self.dsn,
                    connect_timeout=HEALTH_CONNECT_TIMEOUT,
                    application_name="messaging-health",
                    options=f"-c statement_timeout={HEALTH_STATEMENT_TIMEOUT_MS}",
                )
                self._conn.autocommit = True
            with self._conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchone()
            return None
        except psycopg2.Error as err:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return _first_line(err)


def migration_files(folder: Traversable | None = None) -> list[tuple[int, str, str]]:
    """Return (number, filename, sql) for every migration, in order.

    Every file of the folder must be named like 0001_create_sendlog.sql: a file named
    otherwise (a typo, an editor's backup) is refused, not skipped, so no migration is
    silently left out.
    """
    found = []
    for entry in (folder or resources.files("messaging.migrations")).iterdir():
        if entry.name in PACKAGE_FILES:
            continue
        match = MIGRATION_FILE.match(entry.name)
        if not match:
            raise RuntimeError(
                f"migrations: {entry.name!r} is not a migration file name: expected four "
                "digits, an underscore, lower-case words and .sql (0010_add_index.sql)"
            )
        found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [number for number, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {numbers}")
    return found


def apply_migrations(database: Database, folder: Traversable | None = None) -> list[str]:
    """Apply pending migrations in order, each once and in its own transaction.

    `migration_version(version)` is the original service's one-row table, so a
    database it created (version 2) continues from migration 3, and one that
    `flask db downgrade-to-original` left gets back what it saved. An advisory lock
    makes concurrent starts of several workers take turns.
    """
    applied = []
    for number, name, text in migration_files(folder):
        with database.transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur.execute("CREATE TABLE IF NOT EXISTS migration_version (version INTEGER)")
            cur.execute("SELECT version FROM migration_version")
            rows = cur.fetchall()
            if not rows:
                cur.execute("INSERT INTO migration_version (version) VALUES (0)")
                version = 0
            else:
                version = max(row[0] for row in rows)
            if version >= number:
                continue
            log.info("applying migration %s", name)
            cur.execute(text)
            cur.execute("UPDATE migration_version SET version = %s", (number,))
            applied.append(name)
    with database.transaction() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        # After `flask db downgrade-to-original`: what it set aside goes back in.
        if schema.saved_schema_exists(cur):
            for line in schema.restore_saved(cur):
                log.info("restored after a downgrade: %s", line)
    return applied


def schema_version(database: Database) -> int:
    """Return the number of the last migration applied (0 before the first)."""
    with database.transaction() as cur:
        cur.execute("SELECT max(version) FROM migration_version")
        return cur.fetchone()[0] or 0


def prepare(config: Config) -> Database:
    """Resolve the database, apply migrations and return the pool."""
    database = Database(
        resolve_dsn(config), prepared_statements=config.database.prepared_statements
    )
    apply_migrations(database)
    # A preloading gunicorn master forks after this: leave no connection to inherit.
    database.close()
    return database
