"""What the benchmarks share: a fresh database on a real server, a gunicorn to drive (alone,
or deployed as a user runs it, with dispatchers beside it), what a send left in the
database, and the CPU each kind of process spent."""

import bisect
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg2
import psycopg2.extensions
from psycopg2 import sql

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from messaging.db import Database, apply_migrations, database_url  # noqa: E402
from tests.conftest import (  # noqa: E402
    _server_dsn,
    base_config,
    dispatcher_process,
    gunicorn_server,
)

__all__ = [
    "ROOT",
    "CpuMeter",
    "base_config",
    "busiest_second",
    "connect",
    "deployed",
    "fresh_database",
    "gunicorn",
    "median",
    "percentile",
    "stored",
    "wait_for_send",
]
DEPLOY_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"


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


@contextlib.contextmanager
def deployed(config: dict, url: str, workers: int, dispatchers: int) -> Iterator[tuple[str, Path]]:
    """Run the service as a user would: gunicorn with deploy/gunicorn.conf.py and
    `dispatchers` `flask dispatch` processes beside it. Yields gunicorn's base URL and the
    folder of their logs (gunicorn.log, dispatch-N.log)."""
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base = stack.enter_context(
            gunicorn_server(
                config, url, tmp, workers=workers, args=("--config", str(DEPLOY_CONFIG))
            )
        )
        for n in range(dispatchers):
            stack.enter_context(dispatcher_process(config, url, tmp, name=f"dispatch-{n}"))
        wait_for_dispatchers(url, dispatchers)
        yield base, tmp


def wait_for_dispatchers(url: str, count: int, timeout: float = 30.0) -> None:
    """Wait until `count` dispatchers have said they are alive (they take a second or two
    to start): a benchmark's clock must not run while they boot."""
    conn = connect(url)
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT count(*) FROM dispatchers")
            if cur.fetchone()[0] >= count:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} dispatchers did not start in {timeout:.0f}s")
            time.sleep(0.05)
    conn.close()


def wait_for_send(conn, sendlog_id: int, timeout: float = 600.0, step: float = 0.01) -> float:
    """Wait until a send is closed (no longer `sending`); return time.perf_counter() then."""
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("SELECT status FROM sendlog WHERE id = %s", (sendlog_id,))
            if cur.fetchone()[0] != "sending":
                return time.perf_counter()
            time.sleep(step)
    raise AssertionError(f"send {sendlog_id} still sending after {timeout:.0f}s")


def stored(conn, sendlog_id: int) -> dict:
    """What the database holds of a send: its sms rows, distinct numbers among them, rows
    `sent`, and its `sent` counter."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT count(*), count(DISTINCT msisdn), count(*) FILTER (WHERE status = 'sent'),
                   (SELECT sent FROM sendlog WHERE id = %(send)s)
            FROM sms WHERE sendlogid = %(send)s
            """,
            {"send": sendlog_id},
        )
        rows, distinct, sent, counted = cur.fetchone()
    return {"rows": rows, "distinct": distinct, "sent": sent, "counted": counted}


def busiest_second(arrivals: list[float]) -> int:
    """The most arrivals in any 1 s window, sliding: [t, t + 1) from each arrival t."""
    ordered = sorted(arrivals)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


class CpuMeter:
    """CPU seconds spent by this benchmark's processes, by kind: `gunicorn` (master and
    workers), `dispatch` and `fake_provider` (this process's children) and `postgres` (the
    server's backends serving this database)."""

    KINDS = ("gunicorn", "dispatch", "fake_provider")

    def __init__(self, url: str):
        self.database = psycopg2.extensions.parse_dsn(url)["dbname"]

    def processes(self) -> Iterator[tuple[str, psutil.Process]]:
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                line = " ".join(child.cmdline())
                kind = next((kind for kind in self.KINDS if kind in line), None)
                if kind:
                    yield kind, child
        for process in psutil.process_iter(["name", "cmdline"]):
            line = " ".join(process.info["cmdline"] or [])
            if process.info["name"] == "postgres" and f" {self.database} " in line:
                yield "postgres", process

    def snapshot(self) -> dict[int, tuple[str, float, int]]:
        """Each process's kind, CPU seconds (its reaped children's included: a gunicorn
        worker recycled after max_requests ends up in its master's) and parent."""
        taken = {}
        for kind, process in self.processes():
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                own = times.user + times.system + times.children_user + times.children_system
                taken[process.pid] = (kind, own, process.ppid())
        return taken

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        """Yield a dict that holds, once the block is done, each kind's CPU seconds in it."""
        spent: dict[str, float] = {}
        before = self.snapshot()
        yield spent
        after = self.snapshot()
        for pid, (kind, seconds, _) in after.items():
            spent[kind] = spent.get(kind, 0.0) + seconds - before.get(pid, (kind, 0.0))[1]
        # One that ended in the block counts, whole, in its parent's reaped children (when
        # its parent is measured: not a PostgreSQL backend's).
        for pid, (kind, seconds, parent) in before.items():
            if pid not in after and parent in after:
                spent[kind] = spent.get(kind, 0.0) - seconds


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
