"""M1: peak resident memory (VmHWM) of the gunicorn worker that serves a 100,000-recipient
send, beside the same worker's peak after serving only GET /ping (its resting size)."""

import psutil
import requests

from bench.common import base_config, fresh_database, gunicorn

RECIPIENTS = 100_000


def peak_rss_mb(port: int) -> float:
    """Peak RSS of the single worker of the gunicorn listening on this port."""
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(f"127.0.0.1:{port}" == part for part in cmdline) and "gunicorn" in " ".join(cmdline):
            (worker,) = process.children()
            with open(f"/proc/{worker.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
    raise RuntimeError(f"no gunicorn worker found on port {port}")


def run() -> dict:
    numbers = [f"083{i:07d}" for i in range(RECIPIENTS)]
    config = base_config(maxRecipients=RECIPIENTS)
    with fresh_database() as url, gunicorn(config, url, workers=1) as base:
        port = int(base.rsplit(":", 1)[1])
        requests.get(f"{base}/ping", timeout=10).raise_for_status()
        resting = peak_rss_mb(port)
        answer = requests.post(
            f"{base}/sendsms", json={"message": "Memory", "msisdns": numbers}, timeout=300
        )
        answer.raise_for_status()
        assert answer.json()["validNumbers"] == RECIPIENTS
        peak = peak_rss_mb(port)
    return {"id": "M1", "value": peak, "unit": "MB", "baseline": resting, "ratio": peak / resting}


if __name__ == "__main__":
    print(run())
