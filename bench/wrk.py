"""wrk, the HTTP load generator (Debian's `wrk`), driven with a Lua script per request shape;
installed with apt-get when missing (as root), as `make e2e` installs nginx. Written in C
on epoll, it takes a small share of the 2 CPUs that a Python client would take from the
server under test."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# wrk's summary as one JSON line; `failed` counts answers >= 400 and socket errors.
DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "failed": %d, "p50_ms": %.3f, "p99_ms": %.3f}\\n',
    summary.requests, summary.duration / 1e6,
    e.status + e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("wrk is not installed; run `sudo apt-get install wrk` and retry")
    print("bench: installing wrk (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        subprocess.run(command, env=env, stdin=subprocess.DEVNULL, check=True)
    return shutil.which("wrk") or "/usr/bin/wrk"


def script(method: str = "GET", body=None, headers: dict | None = None) -> str:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines += [f"wrk.body = [[{json.dumps(body)}]]"]
        headers = {"Content-Type": "application/json", **(headers or {})}
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in (headers or {}).items()]
    return "\n".join(lines) + "\n" + DONE


def wrk(url: str, connections: int, seconds: float, method="GET", body=None, headers=None) -> dict:
    """Run wrk against `url`; return its summary: requests, seconds, failed, p50_ms, p99_ms
    and rate (requests/s)."""
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "request.lua"
        lua.write_text(script(method, body, headers))
        out = subprocess.run(
            [
                wrk_path(),
                "--threads",
                "2",
                "--connections",
                str(connections),
                "--duration",
                f"{seconds:g}s",
                "--timeout",
                "30s",
                "--script",
                str(lua),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    summary = json.loads(out.strip().splitlines()[-1])
    return {**summary, "rate": summary["requests"] / summary["seconds"]}
