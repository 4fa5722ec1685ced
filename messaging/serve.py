"""`make run`: one supervisor for the embedded PostgreSQL, gunicorn and whatever else serves.

Start-up checks everything in this process first (the config, the provider, the database,
migrations) and binds the port itself, handing it to gunicorn: any problem is one line and
exit status 2. "serving on ..." comes once the app answers on that port. SIGINT, SIGTERM
or SIGHUP, or the end of any child, stops the children in order, then the embedded
PostgreSQL (unless another command still uses it). `--debug` or MESSAGING_DEBUG=1 shows
the traceback of a start-up error.
"""

import argparse
import contextlib
import ctypes
import dataclasses
import errno
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from messaging import cli, create_app, embedded, embedded_setup
from messaging.auth import exposure_warning
from messaging.config import Config, load_config
from messaging.db import Database, apply_migrations, database_url, ensure_database, resolve_dsn
from messaging.providers.registry import load_providers

GUNICORN_CONF = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"
HOST_ENV = "MESSAGING_HOST"
THREADS = 4  # per gunicorn worker
READY_TIMEOUT = 60
# A child gets this long to stop after its signal (gunicorn: graceful_timeout 60 s), then
# SIGKILL.
STOP_TIMEOUT = 70
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


class StartupError(Exception):
    """`make run` cannot start; the message is one line."""


class Stopped(Exception):
    """A stop signal arrived during start-up."""


def children(listener: socket.socket) -> list[tuple[str, list[str], tuple[int, ...]]]:
    """List (name, command, descriptors given) of what runs beside the database, in order."""
    gunicorn = [sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}"]
    if GUNICORN_CONF.exists():
        gunicorn += ["--config", str(GUNICORN_CONF)]
    gunicorn += [
        "--no-control-socket",
        # Clients reach it straight, not through nginx: read request heads without a thread.
        "--worker-class",
        "messaging.httpworker.HeadFirstWorker",
        "--threads",
        str(THREADS),
        "messaging:create_app()",
    ]
    # Sends are sent from PostgreSQL by a dispatcher, outside the requests.
    dispatcher = [sys.executable, "-m", "flask", "--app", "messaging", "dispatch"]
    return [("gunicorn", gunicorn, (listener.fileno(),)), ("dispatcher", dispatcher, ())]


class Supervisor:
    """Start the database and the children, wait for a signal or a child's end, stop all."""

    def __init__(self):
        self.signals: list[int] = []
        self.starting = True
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.data_dir: str | None = None

    def on_signal(self, signum, frame):
        self.signals.append(signum)
        if self.starting:
            raise Stopped

    def run(self, debug: bool) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.on_signal)
        try:
            try:
                listener, dsn, url = self.prepare()
                with listener:
                    for name, command, descriptors in children(listener):
                        self.processes.append((name, spawn(command, dsn, descriptors)))
                    self.wait_until_ready(listener)
                self.starting = False
                say(f"serving on {url} (Ctrl-C stops)")
            except Stopped:
                return 0
            except cli.STARTUP_ERRORS + (StartupError,) as err:
                if debug:
                    raise
                say(cli.one_line(err))
                return 2
            return self.supervise()
        finally:
            self.stop()

    def prepare(self) -> tuple[socket.socket, str, str]:
        """Check the config and database, migrate, bind; return (listener, DSN, URL)."""
        config = load_config()
        for warning in config.warnings:
            say(f"config: {warning}")
        # Before anything starts: a misspelt provider name is a line, not a stopped database.
        load_providers(config)
        host = os.environ.get(HOST_ENV, "127.0.0.1")
        listener = listen(host, config.http_port)
        try:
            dsn = self.database(config)
            database = Database(dsn, max_connections=1)
            applied = apply_migrations(database)
            database.close()
            if applied:
                say(f"applied migrations {', '.join(applied)}")
            # Everything gunicorn's workers will build, built once here: a mistake is
            # reported on one line now instead of as a traceback from each worker.
            create_app(dataclasses.replace(config, database_url=dsn))
        except BaseException:
            listener.close()
            raise
        warning = exposure_warning(config.authentication, host)
        if warning:
            say(f"WARNING: {warning}")
        shown = f"[{host}]" if ":" in host else host
        return listener, dsn, f"http://{shown}:{config.http_port}/"

    def database(self, config: Config) -> str:
        if config.database_url is not None or config.database.driver != "embedded":
            return resolve_dsn(config)
        self.data_dir = config.database.data_dir
        server = embedded.start(self.data_dir)
        if server.data_dir != Path(self.data_dir).resolve():
            say(
                f"as root, PostgreSQL runs as user {embedded_setup.SYSTEM_USER} with its data in "
                f"{server.data_dir}"
            )
        ensure_database(server.url, config.database.database)
        return database_url(server.url, config.database.database)

    def wait_until_ready(self, listener: socket.socket) -> None:
        """Return once the app answers /ping on the bound port."""
        address = listener.getsockname()[:2]
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address[0], address[0])
        deadline = time.monotonic() + READY_TIMEOUT
        while not answers_ping(host, address[1]):
            for name, process in self.processes:
                if process.poll() is not None:
                    raise StartupError(f"{name} exited with status {process.returncode} on start")
            if time.monotonic() > deadline:
                raise StartupError(f"gunicorn did not answer within {READY_TIMEOUT} s")
            time.sleep(0.1)

    def supervise(self) -> int:
        """Wait for a stop signal or the end of a child; return the exit status."""
        while not self.signals:
            for name, process in self.processes:
                if process.poll() is not None:
                    say(f"{name} exited with status {process.returncode}; stopping")
                    return 1
            time.sleep(0.1)
        return 0

    def stop(self) -> None:
        """Stop the children in order, then the embedded PostgreSQL."""
        self.starting = False
        for name, process in self.processes:
            if process.poll() is None:
                say(f"stopping {name}")
                # SIGINT is gunicorn's quick stop, SIGTERM its graceful one; its SIGHUP
                # would only reload it.
                stop_signal = signal.SIGINT if signal.SIGINT in self.signals else signal.SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, stop_signal)
                self.wait_for(process)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # any process it left behind
        self.processes = []
        if self.data_dir is not None:
            if embedded.release(self.data_dir):
                say("stopped PostgreSQL")
            self.data_dir = None

    def wait_for(self, process: subprocess.Popen) -> None:
        """Wait for a child to end; a second stop signal, or the timeout, kills it."""
        received = len(self.signals)
        deadline = time.monotonic() + STOP_TIMEOUT
        while process.poll() is None:
            if len(self.signals) > received or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return
            time.sleep(0.1)


def listen(host: str, port: int) -> socket.socket:
    """Bind the port here, so a busy one is one clear line and not gunicorn's retries."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is in use (another make run?): stop that, or set "
                "HTTPPort in the config"
            ) from None
        reason = err.strerror or str(err)
        raise StartupError(f"cannot listen on {host} port {port}: {reason}") from None


def spawn(command: list[str], dsn: str, descriptors: tuple[int, ...]) -> subprocess.Popen:
    # Workers reach the database by URL, so they never start a second embedded server.
    env = {**os.environ, "MESSAGING_DATABASE_URL": dsn}
    return subprocess.Popen(
        command,
        env=env,
        pass_fds=descriptors,
        # Its own process group: a terminal's Ctrl-C or hang-up reaches only this
        # supervisor, which stops everything in order.
        start_new_session=True,
        preexec_fn=die_with_parent,
    )


def die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies without stopping it (SIGKILL)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def answers_ping(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/ping")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def say(line: str) -> None:
    # After a hang-up the terminal is gone; stopping must go on regardless.
    with contextlib.suppress(OSError):
        print(f"messaging: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m messaging.serve", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)
    return Supervisor().run(args.debug or cli.debugging())


if __name__ == "__main__":
    sys.exit(main())
