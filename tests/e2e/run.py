"""`make e2e`: the production path for real, on loopback ports.

nginx (deploy/nginx.conf) -> gunicorn (deploy/gunicorn.conf.py, 2 workers) -> PostgreSQL
(the server on 127.0.0.1:5432 if it answers, else an embedded one), a fresh database, and
a dispatcher beside them as deploy/messaging-dispatch.service runs it.
Real HTTP goes through nginx (send, status, normalize, health, metrics, docs), poll-status
runs the way cron runs it, and the results are checked in the database. Everything it
starts is stopped at the end, failure or not. Prints `e2e: N passed, M failed` last and
exits non-zero on any failure. Installs nginx from the distribution when missing (root).
"""

import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from pathlib import Path

import psycopg2
import requests
from psycopg2 import sql

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYTHON = sys.executable
LOCAL_SERVER = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"
# What cron gives a job: almost no environment, no terminal, no stdin.
CRON_PATH = "/usr/local/bin:/usr/bin:/bin"
# The source address of "a caller from the internet" (the rendered nginx.conf denies it).
PUBLIC = "127.0.0.2"
# Every spelling of /metrics the app answers, or nginx might take for another path.
METRICS_PATHS = [
    "/metrics", "/METRICS", "/Metrics", "/mEtRiCs", "/metrics/", "/metrics?x=1", "//metrics",
    "/%6detrics", "/%6Detrics", "/%4DETRICS", "/%2Fmetrics", "/./metrics", "/ping/../metrics",
    "/METRICS%2F",
]  # fmt: skip


def raw_get(port: int, path: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET `path` exactly as written (no client normalising it), from `source`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name: str, condition: bool, detail: object = "") -> bool:
        if condition:
            self.passed += 1
            print(f"  ok    {name}", flush=True)
        else:
            self.failed += 1
            print(f"  FAIL  {name} {detail}".rstrip(), flush=True)
        return condition


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_nginx() -> str:
    """Return the nginx binary, installing the distribution's package if it is missing."""
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(path)),
        None,
    )
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("nginx is not installed; run `sudo apt-get install nginx` and retry")
    print("e2e: installing nginx (apt-get)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nginx"]):
        subprocess.run(command, env=env, stdin=subprocess.DEVNULL, check=True)
    return shutil.which("nginx") or "/usr/sbin/nginx"


def start_database(stack: ExitStack, work: Path) -> tuple[str, str]:
    """Return (server DSN, URL of a fresh database), dropped or stopped at the end."""
    try:
        psycopg2.connect(LOCAL_SERVER).close()
        server = LOCAL_SERVER
        print("e2e: PostgreSQL server on 127.0.0.1:5432", flush=True)
    except psycopg2.OperationalError:
        from messaging import embedded  # after sys.path is set

        print("e2e: starting an embedded PostgreSQL", flush=True)
        server = embedded.start(work / "pgdata").url
        stack.callback(embedded.remove, work / "pgdata")
    name = f"messaging_e2e_{secrets.token_hex(4)}"
    with closing(psycopg2.connect(server)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    stack.callback(drop_database, server, name)
    from messaging.db import database_url  # after sys.path is set

    return server, database_url(server, name)


def drop_database(server: str, name: str) -> None:
    with closing(psycopg2.connect(server)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def spawn(stack: ExitStack, command: list[str], log: Path, env: dict, stop=signal.SIGTERM):
    """Start a process logging to `log`; stop it (and wait) when the stack unwinds."""
    out = open(log, "wb")  # noqa: SIM115 - closed by the stack
    stack.callback(out.close)
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
    )

    def stop_process():
        if process.poll() is None:
            process.send_signal(stop)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    stack.callback(stop_process)
    return process


def wait_for(url: str, process, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited early:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {seconds:g}s:\n{log.read_text()[-3000:]}")


def render_nginx(work: Path, nginx_port: int, app_port: int) -> Path:
    """Render deploy/nginx.conf for loopback ports inside a minimal main config."""
    site = (DEPLOY / "nginx.conf").read_text()
    replacements = [
        (r"listen 80;", f"listen 127.0.0.1:{nginx_port};"),
        (r"server 127\.0\.0\.1:2016\b", f"server 127.0.0.1:{app_port}"),
        (r"/var/log/nginx/", f"{work}/"),
        # A loopback address that stands for a public caller: refused where the public is.
        (r"allow 127\.0\.0\.0/8;", f"deny {PUBLIC};\n        allow 127.0.0.0/8;"),
    ]
    for pattern, replacement in replacements:
        site, count = re.subn(pattern, replacement, site)
        if not count:
            raise RuntimeError(f"deploy/nginx.conf no longer has {pattern!r}; update e2e")
    (work / "messaging.conf").write_text(site)
    temp = work / "nginx-temp"
    temp.mkdir()
    # As root nginx would run its workers as nobody, who cannot read this private dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = f"""{user}daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx.error.log warn;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    access_log {work}/nginx.access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {work}/messaging.conf;
}}
"""
    path = work / "nginx.main.conf"
    path.write_text(main)
    return path


def cron_poll_command(env: dict) -> str:
    """The poll-status command as deploy/crontab runs it, pointed at this checkout."""
    crontab = DEPLOY / "crontab"
    for line in crontab.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "poll-status" not in line:
            continue
        fields = line.split(None, 5)
        command = fields[5]
        # /etc/cron.d lines name a user before the command.
        if re.fullmatch(r"[a-z_][a-z0-9_-]*", command.split(None, 1)[0]) and " " in command:
            first, rest = command.split(None, 1)
            if shutil.which(first) is None and "=" not in first:
                command = rest
        command = command.replace("/opt/messaging/.venv/bin/", str(Path(PYTHON).parent) + "/")
        command = command.replace("/opt/messaging", str(ROOT))
        command = command.replace("/etc/messaging/config.json", env["MESSAGING_CONFIG"])
        return command
    raise RuntimeError("deploy/crontab has no poll-status line")


def unit_command(unit: str, env: dict) -> tuple[list[str], dict]:
    """The ExecStart of a deploy/ systemd unit and its Environment lines, for this checkout."""
    command, extra = None, {}
    for line in (DEPLOY / unit).read_text().splitlines():
        key, _, value = line.strip().partition("=")
        if key == "ExecStart":
            value = value.replace("/opt/messaging/.venv/bin/", str(Path(PYTHON).parent) + "/")
            command = value.split()
        elif key == "Environment":
            name, _, setting = value.partition("=")
            extra[name] = setting
    if command is None:
        raise RuntimeError(f"deploy/{unit} has no ExecStart")
    extra["MESSAGING_CONFIG"] = env["MESSAGING_CONFIG"]
    if "PROMETHEUS_MULTIPROC_DIR" in extra:  # where this run's workers keep theirs
        extra["PROMETHEUS_MULTIPROC_DIR"] = env["MESSAGING_METRICS_DIR"]
    return command, {**env, **extra}


def metric(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def run(checks: Checks, stack: ExitStack, work: Path) -> None:
    nginx = find_nginx()
    server, url = start_database(stack, work)
    config = {
        "HTTPPort": 2016,
        "Logfile": str(work / "messaging.log"),
        "smsProvider": {"name": "MockProvider", "token": "e2e-token", "countries": ["ZA"]},
        "authentication": {"enabled": False},
        "deliveryStatus": {"enabled": True, "updateInverval": 15, "window": "30m"},
        "dbConnection": {"Driver": "postgres"},
    }
    (work / "config.json").write_text(json.dumps(config))
    env = {
        **os.environ,
        "MESSAGING_CONFIG": str(work / "config.json"),
        "MESSAGING_DATABASE_URL": url,
        "MESSAGING_METRICS_DIR": str(work / "metrics"),
    }

    upgrade = subprocess.run(
        [PYTHON, "-m", "flask", "--app", "messaging", "db", "upgrade"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    migrated = upgrade.returncode == 0
    checks.check("flask db upgrade migrates the fresh database", migrated, upgrade.stderr[-2000:])

    app_port, nginx_port = free_port(), free_port()
    gunicorn_log = work / "gunicorn.log"
    gunicorn = spawn(
        stack,
        [PYTHON, "-m", "gunicorn", "--config", str(DEPLOY / "gunicorn.conf.py"),
         "--bind", f"127.0.0.1:{app_port}", "--workers", "2", "wsgi:app"],
        gunicorn_log,
        env,
    )  # fmt: skip
    wait_for(f"http://127.0.0.1:{app_port}/ping", gunicorn, gunicorn_log)
    dispatch_log = work / "dispatch.log"
    dispatch_command, dispatch_env = unit_command("messaging-dispatch.service", env)
    dispatcher = spawn(stack, dispatch_command, dispatch_log, dispatch_env)

    main_conf = render_nginx(work, nginx_port, app_port)
    nginx_args = [nginx, "-p", str(work), "-e", str(work / "nginx.error.log"), "-c", str(main_conf)]
    syntax = subprocess.run([*nginx_args, "-t"], capture_output=True, text=True)
    checks.check("nginx -t accepts deploy/nginx.conf", syntax.returncode == 0, syntax.stderr)
    nginx_log = work / "nginx.out.log"
    nginx_process = spawn(stack, nginx_args, nginx_log, env, stop=signal.SIGQUIT)
    base = f"http://127.0.0.1:{nginx_port}"
    wait_for(f"{base}/ping", nginx_process, work / "nginx.error.log")
    print(f"e2e: nginx {base} -> gunicorn 127.0.0.1:{app_port} (2 workers)", flush=True)

    http = requests.Session()
    health = http.get(f"{base}/healthz")
    checks.check(
        "GET /healthz through nginx is ok",
        health.status_code == 200
        and health.json() == {"status": "ok", "database": "ok", "provider": "MockProvider"},
        health.text,
    )

    numbers = ["0830000000", "0830000006", "0830000008", "0830000009", "not-a-number"]
    sent = http.post(
        f"{base}/sendSMS",
        json={"message": "e2e: water off at 10:00", "msisdns": numbers},
        headers={"X-Request-ID": "e2e-send-1"},
    )
    body = sent.json() if sent.headers.get("Content-Type") == "application/json" else {}
    checks.check(
        "POST /sendSMS (JSON) through nginx: 4 valid, 1 invalid, 3 accepted",
        sent.status_code == 200
        and (body.get("validNumbers"), body.get("invalidNumbers"), body.get("messagesSent"))
        == (4, 1, 3),
        sent.text,
    )
    checks.check(
        "nginx passes the caller's X-Request-ID through and the app returns it",
        sent.headers.get("X-Request-ID") == "e2e-send-1",
        sent.headers,
    )
    ref = int(body.get("refNumber", 0))
    form = http.post(f"{base}/sendsms", data={"message": "form", "msisdns": "0840000001"})
    checks.check(
        "POST /sendsms (form) through nginx",
        form.status_code == 200 and form.json().get("messagesSent") == 1,
        form.text,
    )
    made = form.headers.get("X-Request-ID", "")
    checks.check(
        "without X-Request-ID, nginx makes one and the app returns it",
        re.fullmatch(r"[0-9a-f]{32}", made) is not None,
        made,
    )

    rejected = http.get(f"{base}/messageStatus/0830000009")
    checks.check(
        "GET /messageStatus of a rejected number: failed",
        (rejected.status_code, rejected.text) == (200, "failed"),
        rejected.text,
    )
    unknown = http.get(f"{base}/messagestatus/0820000000")
    checks.check(
        "GET /messagestatus of an unknown number: no data",
        unknown.text == "Error: no data available",
        unknown.text,
    )
    normalized = http.post(
        f"{base}/normalize", json={"msisdns": ["0830000000", "27840000000", "junk", "0830000000"]}
    )
    checks.check(
        "POST /normalize through nginx",
        normalized.status_code == 200 and normalized.json() == ["27830000000", "27840000000"],
        normalized.text,
    )
    bad = http.post(f"{base}/sendsms", json={"message": "", "msisdns": ["0830000000"]})
    checks.check(
        "bad input is 406 JSON", bad.status_code == 406 and "error" in bad.json(), bad.text
    )
    too_big = http.post(
        f"{base}/normalize", data=b"x" * (11 * 1024 * 1024), headers={"Content-Type": "text/plain"}
    )
    checks.check(
        "nginx refuses a body over 10 MiB with JSON 413",
        too_big.status_code == 413 and "error" in too_big.json(),
        too_big.text[:200],
    )
    padded = b"msisdns=0830000001&message=chunked&pad=" + b"x" * (11 * 1024 * 1024)
    chunked = http.post(
        f"{base}/sendsms",
        data=(padded[at : at + 65536] for at in range(0, len(padded), 65536)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    checks.check(
        "nginx refuses a chunked body over 10 MiB with JSON 413 too",
        chunked.status_code == 413 and "error" in chunked.json(),
        chunked.text[:200],
    )

    # A send answered at once (Prefer: respond-async) and sent by the dispatcher alone.
    many = [f"083{n:07d}" for n in range(1200)]
    queued = http.post(
        f"{base}/sendsms",
        json={"message": "e2e: sent by the dispatcher", "msisdns": many},
        headers={"Prefer": "respond-async"},
    )
    queued_body = queued.json() if queued.status_code == 202 else {}
    checks.check(
        "Prefer: respond-async through nginx is 202 with Location, nothing sent yet",
        queued.status_code == 202
        and queued.headers.get("Location") == f"/sends/{queued_body.get('refNumber')}"
        and (queued_body.get("messagesSent"), queued_body.get("queuedNumbers")) == (0, 1200),
        queued.text[:300],
    )
    report = {}
    deadline = time.monotonic() + 30
    while queued_body and time.monotonic() < deadline:
        report = http.get(f"{base}/sends/{queued_body['refNumber']}").json().get("send", {})
        if report.get("state") == "done":
            break
        time.sleep(0.2)
    rejected_by_mock = sum(1 for n in many if n.endswith("9"))
    checks.check(
        "the dispatcher sends it: /sends/<ref> is done with every recipient answered",
        report.get("state") == "done"
        and report.get("queued") == 0
        and (report.get("sent"), report.get("failed"))
        == (1200 - rejected_by_mock, rejected_by_mock),
        report,
    )
    checks.check(
        "the dispatcher runs as deploy/messaging-dispatch.service starts it",
        dispatcher.poll() is None and "dispatch: " in dispatch_log.read_text(),
        dispatch_log.read_text()[-500:],
    )

    docs = http.get(f"{base}/docs")
    bundle = http.get(f"{base}/docs/swagger-ui-bundle.js")
    spec = http.get(f"{base}/openapi.json")
    checks.check(
        "/docs, its Swagger UI files and /openapi.json are served locally",
        docs.status_code == 200
        and bundle.status_code == 200
        and len(bundle.content) > 100_000
        and "/sendsms" in spec.json().get("paths", {}),
        (docs.status_code, bundle.status_code, spec.status_code),
    )

    # poll-status, as cron runs it: a bare environment, no terminal, no stdin.
    cron_env = {
        "PATH": CRON_PATH,
        "HOME": str(work),
        "SHELL": "/bin/sh",
        "LOGNAME": "root",
        "MESSAGING_CONFIG": env["MESSAGING_CONFIG"],
        "MESSAGING_DATABASE_URL": url,
        "MESSAGING_METRICS_DIR": str(work / "metrics"),
    }
    command = cron_poll_command(cron_env)
    print(f"e2e: cron: {command}", flush=True)
    poll = subprocess.run(
        ["/bin/sh", "-c", command],
        env=cron_env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    checks.check(
        "poll-status (as cron runs it) exits 0",
        poll.returncode == 0,
        poll.stdout[-1000:] + poll.stderr[-2000:],
    )
    checks.check(
        "poll-status reports what it checked (both sends: MockProvider answers by last digit)",
        "checked 1084, delivered 722, failed 241, still in flight 121," in poll.stdout,
        poll.stdout,
    )

    with closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT msisdn, status FROM sms WHERE sendlogid = %s ORDER BY msisdn", (ref,))
        statuses = dict(cur.fetchall())
        cur.execute("SELECT sent, delivered, failed FROM sendlog WHERE id = %s", (ref,))
        counters = cur.fetchone()
    checks.check(
        "the database holds each message's final status after the poll",
        statuses
        == {
            "27830000000": "delivered",
            "27830000006": "failed",
            "27830000008": "sent",
            "27830000009": "failed",
        },
        statuses,
    )
    checks.check(
        "the send's counters equal its messages' statuses (sent 1, delivered 1, failed 2)",
        counters == (1, 1, 2),
        counters,
    )
    delivered = http.get(f"{base}/messagestatus/0830000000")
    checks.check("GET /messagestatus after the poll: delivered", delivered.text == "delivered")

    # Four slow requests at once: while one worker is busy the other must take the next,
    # so both have served (and counted) something before /metrics is read.
    numbers = {"msisdns": [f"08{n:08d}" for n in range(100_000)]}

    def normalize(_):
        return requests.post(f"{base}/normalize", json=numbers, timeout=60)

    with ThreadPoolExecutor(4) as pool:
        busy = list(pool.map(normalize, range(4)))
    checks.check(
        "four concurrent 100,000-number normalizes through nginx",
        [answer.status_code for answer in busy] == [200] * 4,
        [answer.status_code for answer in busy],
    )
    scrapes = [http.get(f"{base}/metrics", headers={"Connection": "close"}) for _ in range(4)]
    texts = [scrape.text for scrape in scrapes]
    sends = [
        metric(text, "messaging_http_requests_total", endpoint="api.send_sms", status="200")
        for text in texts
    ]
    checks.check(
        "/metrics through nginx counts both sends, whichever worker answers",
        all(scrape.status_code == 200 for scrape in scrapes) and set(sends) == {2.0},
        sends,
    )
    checks.check(
        "/metrics counts messages by status and provider, the dispatcher's included",
        metric(texts[0], "messaging_messages_total", provider="MockProvider", status="sent")
        == 4 + 1200 - rejected_by_mock
        and metric(texts[0], "messaging_messages_total", provider="MockProvider", status="failed")
        >= 1,
        [line for line in texts[0].splitlines() if line.startswith("messaging_messages")],
    )
    writers = {path.name.rsplit("_", 1)[-1] for path in (work / "metrics").glob("counter_*.db")}
    checks.check("both gunicorn workers wrote metrics", len(writers) >= 2, writers)
    checks.check(
        "/metrics shows the poll-status run",
        metric(texts[0], "messaging_poll_runs_total", outcome="ok") >= 1,
        [line for line in texts[0].splitlines() if "poll" in line],
    )

    public = {path: raw_get(nginx_port, path, PUBLIC) for path in METRICS_PATHS}
    leaked = {path: status for path, (status, body) in public.items() if b"messaging_" in body}
    checks.check(
        "no spelling of /metrics reaches the app for a public caller",
        not leaked and {status for status, _ in public.values()} == {403},
        leaked or {path: status for path, (status, _) in public.items()},
    )
    status, body = public["/METRICS"]
    checks.check(
        "nginx refuses /metrics with JSON 403",
        status == 403 and body.startswith(b"{") and json.loads(body).get("error") == "forbidden",
        body[:200],
    )
    ping = raw_get(nginx_port, "/ping", PUBLIC)
    inside = {
        path: raw_get(nginx_port, path)[0] for path in ("/METRICS", "/%6Detrics", "//metrics")
    }
    checks.check(
        "the public caller gets the rest, and the monitoring side each spelling of /metrics",
        ping[0] == 200 and set(inside.values()) == {200},
        (ping[0], inside),
    )

    app_log = (work / "messaging.log").read_text()
    checks.check(
        "the Logfile's lines carry the request id nginx passed",
        "[e2e-send-1]" in app_log,
        app_log[-500:],
    )
    checks.check(
        "gunicorn's access log carries the request id",
        "rid=e2e-send-1" in gunicorn_log.read_text(),
    )
    checks.check(
        "nginx's access log carries the request id",
        "rid=e2e-send-1" in (work / "messaging.access.log").read_text(),
    )


def main() -> int:
    sys.path.insert(0, str(ROOT))
    # Stop everything on Ctrl-C or a CI timeout's SIGTERM as on any failure.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    checks = Checks()
    work = Path(tempfile.mkdtemp(prefix="messaging-e2e-"))
    os.chmod(work, 0o755)
    keep = bool(os.environ.get("E2E_KEEP"))
    try:
        with ExitStack() as stack:
            if not keep:
                stack.callback(shutil.rmtree, work, ignore_errors=True)
            try:
                run(checks, stack, work)
            except Exception as err:  # report, then unwind everything
                checks.check("e2e set-up and run", False, f"{type(err).__name__}: {err}")
            if checks.failed:
                for log in ("gunicorn.log", "nginx.error.log", "messaging.log"):
                    path = work / log
                    if path.exists():
                        print(f"--- {log} (last lines) ---\n{path.read_text()[-3000:]}")
    except KeyboardInterrupt:
        checks.check("e2e interrupted", False)
    print(f"e2e: {checks.passed} passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
