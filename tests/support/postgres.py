"""A real, throwaway PostgreSQL server for tests.

Uses the distribution's ``initdb``/``pg_ctl`` (``/usr/lib/postgresql/<v>/bin``). The data
folder, the unix socket and the log live in one temporary directory; the server listens
on a free port of 127.0.0.1 only and trusts local connections. ``initdb`` refuses to run
as root, so as root the directory is handed to the ``postgres`` user and every command
runs through ``runuser -u postgres --``. ``fsync=off``: these databases die with the test
session, so durability is not what they test (the SQL store's own durability settings
are tested on SQLite and in its code).

The temporary directory is on ``/dev/shm`` (memory) when that has room to spare: every
test database is a ~7.5 MB copy of ``template1``, a run makes a hundred or more, and on a
disk shared with other busy processes creating them and removing the folder at the end
took tens of seconds (45 s for the removal alone in one measured run). Databases are
created with ``STRATEGY FILE_COPY`` (PostgreSQL 15+): a file copy instead of writing the
template through the WAL, which with ``fsync=off`` is the cheaper of the two.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import NoReturn

REQUIRE_ALL = "SANDBOX_TEST_REQUIRE_ALL"
SHM = Path("/dev/shm")
SHM_SPARE = 4 << 30  # bytes free in /dev/shm and in memory for the servers to live there


def fast_tmp() -> str | None:
    """``/dev/shm`` when it and the machine's memory have room to spare, else ``None``
    (the default temporary directory)."""
    try:
        shm = os.statvfs(SHM)
        meminfo = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    available = next(
        (
            int(line.split()[1]) * 1024
            for line in meminfo.splitlines()
            if line.startswith("MemAvailable:")
        ),
        0,
    )
    if shm.f_bavail * shm.f_frsize < SHM_SPARE or available < SHM_SPARE:
        return None
    return str(SHM) if os.access(SHM, os.W_OK | os.X_OK) else None


class PostgresUnavailable(RuntimeError):
    """The binaries (or the user to run them as) are missing on this machine."""


def find_bindir() -> Path:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if not candidates:
        raise PostgresUnavailable(
            "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin "
            "(install the 'postgresql' package)"
        )
    return Path(candidates[-1]).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One server: ``start()``, ``stop()``, ``url(database)``, ``create_database()``."""

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                self._pw = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable("running as root but no 'postgres' user") from exc
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root but 'runuser' is missing")
        self.root = Path(tempfile.mkdtemp(prefix="sandbox-pg-", dir=fast_tmp()))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user = "postgres"
        self.running = False
        self.socket_dir.mkdir()
        if self.as_root:
            for path in (self.root, self.socket_dir):
                os.chown(path, self._pw.pw_uid, self._pw.pw_gid)

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, cwd=self.root
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}\n{log}"
            )
        return result

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        if not self.data.exists():
            self.init()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=60"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
            timeout=90,
        )
        self.running = True

    def stop(self, *, mode: str = "fast") -> None:
        if self.running:
            self._run(
                "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", timeout=90
            )
            self.running = False

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a new empty database and return its URL."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        strategy = ["--strategy=file_copy"] if self.major >= 15 else []
        self._run(
            "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, *strategy, name
        )
        return self.url(name)

    @property
    def major(self) -> int:
        """The major version of the binaries (``/usr/lib/postgresql/<major>/bin``)."""
        version = self.bindir.parent.name
        return int(version) if version.isdigit() else 0


async def fresh_database(url: str) -> str:
    """Create an empty database on the server behind ``url``; return its URL."""
    import asyncpg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    name = f"t_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, database=parsed.database
    )
    try:
        file_copy = connection.get_server_version().major >= 15
        strategy = " STRATEGY FILE_COPY" if file_copy else ""
        await connection.execute(f'CREATE DATABASE "{name}"{strategy}')
    finally:
        await connection.close()
    return parsed.set(database=name).render_as_string(hide_password=False)


def skip_or_fail(reason: str) -> NoReturn:
    """Skip (printing why) - or, when CI requires every dependency, fail loudly."""
    import pytest

    if os.environ.get(REQUIRE_ALL) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ALL}=1: PostgreSQL tests are mandatory)")
    print(f"\nskipping PostgreSQL tests: {reason}")
    pytest.skip(reason)
