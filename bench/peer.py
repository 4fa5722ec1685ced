"""K1 (`make bench-peer`): 100 recipients a request from wrk at 8 and 32 connections, in
msg/s, against Kannel 1.4.5 (Debian's bearerbox + smsbox, its fakesmsc as the SMSC) on
this machine in the same run.

Ours: gunicorn with deploy/gunicorn.conf.py, one `flask --app messaging dispatch` beside
it, MockProvider as the sink, in a PostgreSQL database made for the run. Asked with
`Prefer: respond-async` it answers 202 once the send and its 100 recipients are committed
to PostgreSQL (fsync'd); without it (the synchronous figure) once they are at the
provider and recorded. Kannel's sendsms answers 202 once bearerbox has written the
request's first message to its store file (store-type file: written and flushed, not
fsync'd) and routed it; the other 99 follow over the smsbox socket, and as all 100 carry
the first one's id the store keeps one of them (bearerbox killed then restarted delivers
1 of 100). So what Kannel has accepted is less safe than what we have.

Each side is measured alone, after the other's backlog has reached its sink, and counted
twice: accepted (2xx answers from wrk x 100) and delivered (what reached the sink:
fakesmsc's "Got message" count; our recorded provider answers in sendlog), in the run
and until the backlog is drained. CPU is every process of the side (our PostgreSQL
backends included) from the start of a run until its backlog is drained. Rounds
alternate which side goes first.

BENCH_PEER_SECONDS (10) is each wrk run, BENCH_PEER_ROUNDS (3) the rounds whose range is
printed. Needs wrk, kannel and kannel-extras (Debian packages): installed with apt-get
when missing and run as root, else it says what to install.
"""

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import requests

from bench.common import ROOT, base_config, connect, fresh_database
from tests.conftest import dispatcher_process, free_port, gunicorn_server

RECIPIENTS = 100
CONNECTIONS = (8, 32)
SECONDS = float(os.environ.get("BENCH_PEER_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_PEER_ROUNDS", "3"))
TARGET = 2.0
MESSAGE = "Benchmark send"
# A backlog counts as drained once its sink has not moved for this long.
SETTLED_SECONDS = 1.0
DRAIN_LIMIT_SECONDS = 120.0
BEARERBOX, SMSBOX = "/usr/sbin/bearerbox", "/usr/sbin/smsbox"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"
# program -> Debian package
NEEDS = {"wrk": "wrk", BEARERBOX: "kannel", SMSBOX: "kannel", FAKESMSC: "kannel-extras"}
GOT_MESSAGE = re.compile(rb"Got message (\d+):")
# bearerbox status: "SMS: received 0 (0 queued), sent 92500 (100 queued), store size 1" and
# "FAKE[FAKE]    FAKE:23010 (online 1s, rcvd: ..., sent: ..., failed 0, queued 0 msgs)"
OUTGOING_QUEUED = re.compile(r"SMS: received \d+ \(\d+ queued\), sent \d+ \((\d+) queued\)")
SMSC_QUEUED = re.compile(r"FAKE\[FAKE\].*, queued (\d+) msgs\)")
# deploy/gunicorn.conf.py's default (WEB_CONCURRENCY unset): 2 per CPU + 1.
WORKERS = multiprocessing.cpu_count() * 2 + 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# wrk's summary as one JSON line (its status errors are answers >= 400).
WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, '
    .. '"p50_ms": %.2f, "p99_ms": %.2f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def numbers() -> list[str]:
    """100 distinct South African mobile numbers, none ending in 9 (MockProvider rejects
    those), in national form; Kannel gets them in international form."""
    return [f"0830{n:06d}" for n in range(1, 200) if n % 10 != 9][:RECIPIENTS]


def missing_packages() -> list[str]:
    return sorted({package for program, package in NEEDS.items() if not shutil.which(program)})


def ensure_tools() -> bool:
    """Install what is missing with apt-get when root; else say what to install."""
    missing = missing_packages()
    if not missing:
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"bench-peer needs {', '.join(missing)}: apt-get install {' '.join(missing)}")
        return False
    print(f"installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], env=env, check=True)
    return not missing_packages()


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds:.0f} s")
        time.sleep(0.1)


def proc_stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name ([] once the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return []


def cpu_seconds(pid: int) -> float:
    """CPU a process has used, its threads and its reaped children included (0: gone)."""
    return sum(int(value) for value in proc_stat(pid)[11:15]) / CLOCK_TICKS  # utime..cstime


def child_pids(parent: int) -> list[int]:
    pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    return [pid for pid in pids if proc_stat(pid)[1:2] == [str(parent)]]


class Kannel:
    """bearerbox with a store file, smsbox with a sendsms user, fakesmsc as the SMSC."""

    name = "kannel"

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.admin_port, self.box_port = free_port(), free_port()
        self.smsc_port, self.sendsms_port = free_port(), free_port()
        self.processes: list[subprocess.Popen] = []
        self.sink_log = tmp / "fakesmsc.log"

    def config(self) -> str:
        # Logs at "error" (3): bearerbox warns for all but one recipient of each request
        # ("get ACK of message not found from store"), which would slow it down.
        return f"""\
group = core
admin-port = {self.admin_port}
admin-password = bench
admin-allow-ip = "127.0.0.1"
smsbox-port = {self.box_port}
box-allow-ip = "127.0.0.1"
log-file = "{self.tmp}/bearerbox.log"
log-level = 3
store-type = file
store-location = "{self.tmp}/kannel.store"
dlr-storage = internal

group = smsc
smsc = fake
smsc-id = FAKE
port = {self.smsc_port}
connect-allow-ip = "127.0.0.1"

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {self.sendsms_port}
log-file = "{self.tmp}/smsbox.log"
log-level = 3

group = sendsms-user
username = bench
password = bench
"""

    def __enter__(self):
        try:
            self._start_all()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start_all(self) -> None:
        conf = self.tmp / "kannel.conf"
        conf.write_text(self.config())
        self._start(BEARERBOX, "-v", "3", str(conf), log=self.tmp / "bearerbox.out")
        wait_until(lambda: "(connecting" in self.status(), 15, "bearerbox's fake SMSC listening")
        # fakesmsc logs each message it receives ("Got message N: ...") at its default
        # (debug) level: that count is the sink. -m 0: it sends nothing of its own.
        smsc = ("-H", "127.0.0.1", "-r", str(self.smsc_port), "-m", "0", "1 2 text unused")
        self._start(FAKESMSC, *smsc, log=self.sink_log)
        wait_until(lambda: "(online" in self.status(), 15, "fakesmsc connecting to bearerbox")
        self._start(SMSBOX, "-v", "3", str(conf), log=self.tmp / "smsbox.out")
        # One recipient through the whole chain: both boxes and the SMSC are up.
        wait_until(self._answers, 15, "smsbox answering")
        wait_until(lambda: self.delivered() >= 1, 15, "Kannel delivering to fakesmsc")

    def _start(self, program: str, *args: str, log: Path) -> None:
        with open(log, "ab") as out:
            self.processes.append(
                subprocess.Popen([program, *args], stdout=out, stderr=subprocess.STDOUT)
            )

    def __exit__(self, *exc) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def status(self) -> str:
        """bearerbox's status page ("" while it is not answering)."""
        url = f"http://127.0.0.1:{self.admin_port}/status.txt?password=bench"
        try:
            return requests.get(url, timeout=1).text
        except requests.ConnectionError:
            return ""

    def _answers(self) -> bool:
        try:
            answer = requests.get(self.url(self.numbers()[:1]), timeout=5)
        except requests.ConnectionError:
            return False
        if answer.status_code != 202:
            raise RuntimeError(f"Kannel answered {answer.status_code}: {answer.text}")
        return True

    @staticmethod
    def numbers() -> list[str]:
        return ["27" + number[1:] for number in numbers()]

    def url(self, recipients: list[str]) -> str:
        to = "+".join(recipients)  # sendsms: recipients separated by spaces ('+')
        text = MESSAGE.replace(" ", "+")
        return (
            f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms"
            f"?username=bench&password=bench&from=1234&to={to}&text={text}"
        )

    def wrk_target(self, mode: str, tmp: Path) -> tuple[str, Path]:
        script = tmp / "kannel.lua"
        script.write_text(WRK_DONE)
        return self.url(self.numbers()), script

    def delivered(self) -> int:
        """Messages fakesmsc has received: the number of its last "Got message N" line."""
        with open(self.sink_log, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 8192))
            found = GOT_MESSAGE.findall(log.read())
        return int(found[-1]) if found else 0

    def idle(self) -> bool:
        """bearerbox has no message waiting to go to the SMSC."""
        status = self.status()
        waiting = OUTGOING_QUEUED.findall(status) + SMSC_QUEUED.findall(status)
        return len(waiting) == 2 and set(waiting) == {"0"}

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]


class Ours:
    """gunicorn (deploy/gunicorn.conf.py) and one dispatcher on a fresh database."""

    name = "ours"

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.stack = contextlib.ExitStack()

    def __enter__(self):
        try:
            self._start_all()
        except BaseException:
            self.stack.close()
            raise
        return self

    def _start_all(self) -> None:
        self.url = self.stack.enter_context(fresh_database("messaging_peer"))
        config = base_config()  # MockProvider, batches of up to 500
        conf = ("--config", str(ROOT / "deploy" / "gunicorn.conf.py"))
        self.base = self.stack.enter_context(
            gunicorn_server(config, self.url, self.tmp, workers=WORKERS, args=conf)
        )
        self.dispatcher = self.stack.enter_context(dispatcher_process(config, self.url, self.tmp))
        self.conn = connect(self.url)
        self.stack.callback(self.conn.close)
        answer = requests.post(
            f"{self.base}/sendsms",
            json={"message": MESSAGE, "msisdns": numbers()},
            headers={"Prefer": "respond-async"},
            timeout=10,
        )
        if answer.status_code != 202:
            raise RuntimeError(f"we answered {answer.status_code}: {answer.text}")
        wait_until(lambda: self.delivered() >= RECIPIENTS, 30, "the dispatcher sending")

    def __exit__(self, *exc) -> None:
        self.stack.close()

    def wrk_target(self, mode: str, tmp: Path) -> tuple[str, Path]:
        body = json.dumps({"message": MESSAGE, "msisdns": numbers()})
        prefer = 'wrk.headers["Prefer"] = "respond-async"\n' if mode == "async" else ""
        script = tmp / f"ours-{mode}.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = [[{body}]]\n"
            'wrk.headers["Content-Type"] = "application/json"\n' + prefer + WRK_DONE
        )
        return f"{self.base}/sendsms", script

    def _one(self, query: str) -> int:
        with self.conn.cursor() as cur:
            cur.execute(query)
            return int(cur.fetchone()[0])

    def delivered(self) -> int:
        """Recipients whose provider answer is recorded (sent or refused)."""
        return self._one(
            "SELECT COALESCE(sum(COALESCE(sent, 0) + COALESCE(failed, 0)), 0) FROM sendlog"
        )

    def accepted(self) -> int:
        return self._one("SELECT COALESCE(sum(quantity), 0) FROM sendlog")

    def idle(self) -> bool:
        return self._one("SELECT count(*) FROM dispatch_batches") == 0

    def pids(self) -> list[int]:
        """gunicorn's master and workers, the dispatcher, and their PostgreSQL backends."""
        bind = f"127.0.0.1:{self.base.rsplit(':', 1)[1]}".encode()

        def command_line(pid: int) -> bytes:
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                return Path(f"/proc/{pid}/cmdline").read_bytes()
            return b""

        master = [pid for pid in child_pids(os.getpid()) if bind in command_line(pid)]
        workers = [pid for pid in master for pid in child_pids(pid)]
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            backends = [pid for (pid,) in cur.fetchall()]
        return [*master, *workers, self.dispatcher.pid, *backends]

    def check(self) -> str:
        """Say whether every accepted recipient was written exactly once."""
        accepted, rows = self.accepted(), self._one("SELECT count(*) FROM sms")
        sent = self._one("SELECT count(*) FROM sms WHERE status = 'sent'")
        return f"{accepted:,} accepted, {rows:,} recorded ({sent:,} sent), {accepted - rows:,} lost"


@dataclass
class Run:
    side: str
    mode: str
    connections: int
    seconds: float
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    delivered_in_run: int
    delivered: int
    drain_seconds: float
    cpu_seconds: float

    @property
    def accepted(self) -> int:
        return (self.requests - self.errors) * RECIPIENTS

    @property
    def accepted_rate(self) -> float:
        return self.accepted / self.seconds

    @property
    def delivered_rate(self) -> float:
        """Everything the run got to the sink, over the time from its start until then."""
        return self.delivered / self.drain_seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return self.cpu_seconds * 1000 / max(1, self.delivered / RECIPIENTS)

    def line(self) -> str:
        label = self.side if self.side == "kannel" else f"{self.side} {self.mode}"
        errors = f", {self.errors} failed" if self.errors else ""
        return (
            f"  {label:<11} c={self.connections:<2} accepted {self.accepted_rate:6,.0f} msg/s "
            f"({self.requests / self.seconds:,.0f} req/s{errors}, p50 {self.p50_ms:.0f} ms, "
            f"p99 {self.p99_ms:.0f} ms); at the sink {self.delivered_in_run / self.seconds:6,.0f}"
            f" msg/s in the run, all {self.delivered:,} after {self.drain_seconds:.1f} s: "
            f"{self.delivered_rate:,.0f} msg/s; CPU {self.cpu_ms_per_request:.1f} ms a request"
        )


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict:
    command = ["wrk", "--threads", str(min(2, connections)), "--connections", str(connections)]
    command += ["--duration", f"{seconds:g}s", "--timeout", "30s", "--script", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    summary = [line for line in out.splitlines() if line.startswith("WRK ")]
    if not summary:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    return json.loads(summary[-1][4:])


def drain(side) -> tuple[int, float]:
    """Wait until the side's sink stops moving; return its count and when it last moved."""
    last, moved = side.delivered(), time.monotonic()
    deadline = moved + DRAIN_LIMIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = side.delivered()
        if now != last:
            last, moved = now, time.monotonic()
        elif time.monotonic() - moved >= SETTLED_SECONDS and side.idle():
            return last, moved
    raise RuntimeError(f"{side.name}: the sink was still moving after {DRAIN_LIMIT_SECONDS} s")


def measure(side, mode: str, connections: int, seconds: float, tmp: Path) -> Run:
    url, script = side.wrk_target(mode, tmp)
    cpu_before = {pid: cpu_seconds(pid) for pid in side.pids()}
    before = side.delivered()
    began = time.monotonic()
    result = wrk(url, script, connections, seconds)
    in_run = side.delivered() - before
    total, settled_at = drain(side)
    # A process started during the run counts from zero; one that ended (a recycled
    # worker) counts in its parent's reaped children's time, so its start is taken off.
    pids = set(cpu_before) | set(side.pids())
    cpu = sum(cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in pids)
    elapsed = result["duration_us"] / 1e6
    return Run(
        side=side.name,
        mode=mode,
        connections=connections,
        seconds=elapsed,
        requests=result["requests"],
        errors=result["status_errors"] + result["socket_errors"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        delivered_in_run=in_run,
        delivered=total - before,
        drain_seconds=max(settled_at - began, elapsed),
        cpu_seconds=cpu,
    )


def spread(values: list[float], digits: int = 0) -> str:
    low, high = f"{min(values):,.{digits}f}", f"{max(values):,.{digits}f}"
    return low if low == high else f"{low}-{high}"


def summary(runs: list[Run]) -> bool:
    """Print the range of every figure over the rounds and the ratios; True if K1 is met."""
    print(f"\nK1 over {ROUNDS} round(s) of {SECONDS:g} s; target: ours async >= {TARGET}x Kannel")
    met = True
    for connections in CONNECTIONS:

        def of(side: str, mode: str, c=connections) -> list[Run]:
            return [r for r in runs if (r.side, r.mode, r.connections) == (side, mode, c)]

        kannel, ours, sync = of("kannel", "async"), of("ours", "async"), of("ours", "sync")

        def ratio(mine: list[Run], figure: str, kannel=kannel) -> str:
            # Each round's runs against each other: the machine's load moves between rounds.
            pairs = zip(mine, kannel, strict=True)
            return spread([getattr(m, figure) / getattr(k, figure) for m, k in pairs], 2)

        def figures(side: list[Run]) -> str:
            return (
                f"accepted {spread([r.accepted_rate for r in side])}, delivered "
                f"{spread([r.delivered_rate for r in side])} msg/s, CPU "
                f"{spread([r.cpu_ms_per_request for r in side], 1)} ms a request"
            )

        print(f"  c={connections}: Kannel {figures(kannel)}")
        print(f"        ours async {figures(ours)}")
        print(f"        ours sync {figures(sync)}")
        worst = min(o.accepted_rate / k.accepted_rate for o, k in zip(ours, kannel, strict=True))
        print(
            f"        ours/Kannel: async accepted {ratio(ours, 'accepted_rate')}x, delivered "
            f"{ratio(ours, 'delivered_rate')}x, CPU a request {ratio(ours, 'cpu_ms_per_request')}x;"
            f" sync {ratio(sync, 'accepted_rate')}x: {'met' if worst >= TARGET else 'NOT met'}"
        )
        met = met and worst >= TARGET
    return met


def main() -> int:
    if not ensure_tools():
        return 2
    runs: list[Run] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp_name,
        Kannel(Path(tmp_name)) as kannel,
        Ours(Path(tmp_name)) as ours,
    ):
        tmp = Path(tmp_name)
        print(
            f"K1: {RECIPIENTS} recipients a request; Kannel 1.4.5 (fakesmsc sink) vs ours "
            f"({WORKERS} gunicorn workers, 1 dispatcher, MockProvider sink)",
            flush=True,
        )
        sides = [(kannel, "async"), (ours, "async"), (ours, "sync")]
        for side, mode in sides:
            measure(side, mode, CONNECTIONS[0], 2, tmp)  # warm up
        for number in range(ROUNDS):
            print(f"round {number + 1}", flush=True)
            order = sides if number % 2 == 0 else sides[1:] + sides[:1]
            for connections in CONNECTIONS:
                for side, mode in order:
                    runs.append(measure(side, mode, connections, SECONDS, tmp))
                    print(runs[-1].line(), flush=True)
        kannel_runs = [r for r in runs if r.side == "kannel"]
        print(
            f"kannel: {sum(r.accepted for r in kannel_runs):,} accepted by the runs, "
            f"{sum(r.delivered for r in kannel_runs):,} at fakesmsc; ours: {ours.check()}"
        )
    summary(runs)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, psycopg2.Error, subprocess.CalledProcessError) as err:
        print(f"bench-peer: {err}", file=sys.stderr)
        sys.exit(1)
