"""A throwaway PostgreSQL cluster for tests, from Debian's `postgresql` package.

PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres`
user and every binary runs as that user; otherwise it runs as whoever runs the tests.
"""

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import free_port

INSTALL_HINT = (
    "PostgreSQL's server binaries (initdb, postgres) were not found under "
    "/usr/lib/postgresql/*/bin; install them with `apt-get install -y postgresql` "
    "(or set MODELYARD_SKIP_POSTGRES=1 to skip the tests that need them)"
)


def find_bindir() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and postgres, if any."""
    found = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if (path / "initdb").is_file() and (path / "postgres").is_file()
    ]
    return max(found, key=lambda p: int(p.parent.name), default=None) if found else None


@dataclass
class Postgres:
    """A running cluster: trust authentication for user `postgres` on 127.0.0.1:`port`."""

    bindir: Path
    root: Path
    port: int
    process: subprocess.Popen[bytes]

    def url(self, database: str, driver: str = "psycopg2") -> str:
        """SQLAlchemy URL of `database`, naming the driver (2.1 defaults to psycopg 3)."""
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def create_database(self, name: str) -> None:
        """CREATE DATABASE `name`."""
        _run([str(self.bindir / "createdb"), *self._connect_args(), name])

    def stop(self, grace_s: float = 20) -> None:
        """Fast shutdown (SIGINT: disconnect clients, then stop); SIGKILL after `grace_s`."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def _connect_args(self) -> list[str]:
        return ["--host=127.0.0.1", f"--port={self.port}", "--username=postgres"]


@contextmanager
def running_postgres(*databases: str) -> Iterator[Postgres]:
    """A throwaway cluster holding empty `databases`, stopped afterwards. Fails the test (or
    skips it, with MODELYARD_SKIP_POSTGRES=1) when the binaries or MLflow's driver are missing."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("MODELYARD_SKIP_POSTGRES") == "1":
            pytest.skip(INSTALL_HINT)
        pytest.fail(INSTALL_HINT)
    if importlib.util.find_spec("psycopg2") is None:
        pytest.fail("MLflow's PostgreSQL driver is missing: pip install psycopg2-binary")
    server = start_postgres(bindir)
    try:
        for database in databases:
            server.create_database(database)
        yield server
    finally:
        server.stop()


def start_postgres(bindir: Path, timeout_s: float = 60) -> Postgres:
    """initdb a cluster in a fresh directory, start `postgres` on a free port, wait for it."""
    root = Path(tempfile.mkdtemp(prefix="modelyard-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    for path in (root, sockets):
        os.chown(path, *_owner())
    _run(
        [
            str(bindir / "initdb"),
            f"--pgdata={data}",
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        cwd=root,
    )
    port = free_port()
    argv = [
        str(bindir / "postgres"),
        "-D",
        str(data),
        "-p",
        str(port),
        "-k",
        str(sockets),
        "-c",
        "listen_addresses=127.0.0.1",
        # A throwaway cluster: durability would only slow the test down.
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
    ]
    with (root / "postgres.log").open("wb") as log:
        os.chown(root / "postgres.log", *_owner())
        process = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
            **_as_owner(),
        )
    server = Postgres(bindir, root, port, process)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            log_text = server.log.read_text(errors="replace")
            server.stop()
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{log_text}")
        ready = subprocess.run(
            [str(bindir / "pg_isready"), *server._connect_args(), "--dbname=postgres"],
            capture_output=True,
        )
        if ready.returncode == 0:
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"postgres was not ready within {timeout_s} s")
        time.sleep(0.2)


def _owner() -> tuple[int, int]:
    """Who owns the cluster: `postgres` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return os.getuid(), os.getgid()
    user = pwd.getpwnam("postgres")
    return user.pw_uid, user.pw_gid


def _as_owner() -> dict[str, Any]:
    """Popen arguments that run a binary as the cluster's owner."""
    if os.geteuid() != 0:
        return {}
    uid, gid = _owner()
    return {"user": uid, "group": gid, "extra_groups": []}


def _run(argv: list[str], cwd: Path | None = None) -> None:
    result = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=120, **_as_owner()
    )
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}):\n{result.stderr}")
