"""S2: one-recipient sends from wrk (8 connections) against gunicorn (deploy/gunicorn.conf.py,
5 workers) with a `flask dispatch` beside it, synchronous and with `Prefer: respond-async`,
beside GET /ping driven the same way in the same run (before and after: the mean). Also
the CPU milliseconds gunicorn, the dispatcher and PostgreSQL spent per answer of each.

Also S2's floors (bench/s2_floor.py), served and driven the same way in the same run: one
INSERT that commits per request, which bounds what any send recorded before its answer
can reach against /ping here, and that INSERT followed by an UPDATE that commits, the two
commits of a synchronous answer."""

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import (
    DEPLOY_CONFIG,
    CpuMeter,
    base_config,
    connect,
    deployed,
    fresh_database,
    gunicorn_server,
)
from bench.wrk import wrk

CONNECTIONS = 8
WORKERS = 5
SECONDS = float(os.environ.get("BENCH_S2_SECONDS", "15"))
BODY = {"message": "small", "msisdns": ["0830000001"]}
ASYNC = {"Prefer": "respond-async"}


def settled(url: str, timeout: float = 120.0) -> dict:
    """Wait until the dispatcher has sent every queued send; return the sends by status."""
    conn = connect(url)
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        while True:
            cur.execute("SELECT status, count(*) FROM sendlog GROUP BY 1")
            statuses = dict(cur.fetchall())
            if "sending" not in statuses or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    conn.close()
    return statuses


def measured(meter: CpuMeter, url: str, *args) -> dict:
    """Run wrk; add the CPU milliseconds each kind of process spent per answer (`cpu_ms`),
    the dispatcher's sending what was queued included."""
    with meter.measure() as spent:
        result = wrk(*args)
        settled(url)
    result["cpu_ms"] = {
        kind: seconds * 1000 / result["requests"] for kind, seconds in spent.items()
    }
    return result


@contextlib.contextmanager
def floor_server(url: str) -> Iterator[str]:
    """Serve bench/s2_floor.py as the app is served; yields its base URL."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        gunicorn_server(
            base_config(),
            url,
            Path(tmp),
            workers=WORKERS,
            args=("--config", str(DEPLOY_CONFIG)),
            app="bench.s2_floor:app",
        ) as base,
    ):
        yield base


def run() -> dict:
    with fresh_database() as url, deployed(base_config(), url, WORKERS, dispatchers=1) as (base, _):
        meter = CpuMeter(url)
        wrk(f"{base}/sendsms", CONNECTIONS, 2, "POST", BODY)  # warm every worker up
        ping = measured(meter, url, f"{base}/ping", CONNECTIONS, SECONDS)
        sync = measured(meter, url, f"{base}/sendsms", CONNECTIONS, SECONDS, "POST", BODY)
        queued = measured(meter, url, f"{base}/sendsms", CONNECTIONS, SECONDS, "POST", BODY, ASYNC)
        # A database of its own: its sends are rows only, which no dispatcher will close.
        with fresh_database("messaging_floor") as floor_url, floor_server(floor_url) as floor_base:
            wrk(f"{floor_base}/sendsms", CONNECTIONS, 2, "POST", BODY)
            floor = wrk(f"{floor_base}/sendsms", CONNECTIONS, SECONDS, "POST", BODY)
            sync_floor = wrk(f"{floor_base}/sendsms/answered", CONNECTIONS, SECONDS, "POST", BODY)
        ping_again = measured(meter, url, f"{base}/ping", CONNECTIONS, SECONDS)
        statuses = settled(url)
    failed = sum(r["failed"] for r in (ping, sync, queued, floor, sync_floor, ping_again))
    assert failed == 0 and set(statuses) == {"success"}, (failed, statuses)
    baseline = (ping["rate"] + ping_again["rate"]) / 2
    return {
        "id": "S2",
        "value": sync["rate"],
        "unit": "requests/s (sync)",
        "baseline": baseline,
        "ratio": sync["rate"] / baseline,
        "async_per_s": queued["rate"],
        "async_ratio": queued["rate"] / baseline,
        "floor_per_s": floor["rate"],
        "floor_ratio": floor["rate"] / baseline,
        "sync_floor_per_s": sync_floor["rate"],
        "sync_floor_ratio": sync_floor["rate"] / baseline,
        "sync_p50_ms": sync["p50_ms"],
        "sync_p99_ms": sync["p99_ms"],
        "async_p50_ms": queued["p50_ms"],
        "async_p99_ms": queued["p99_ms"],
        "ping_first_per_s": ping["rate"],
        "ping_last_per_s": ping_again["rate"],
        **{
            f"cpu_ms_{name}_{kind}": ms
            for name, result in (("ping", ping), ("sync", sync), ("async", queued))
            for kind, ms in sorted(result["cpu_ms"].items())
        },
    }


if __name__ == "__main__":
    print(run())
