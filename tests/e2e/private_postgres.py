"""A PostgreSQL server of the test's own, which the test may stop, start and restart.

Made as ``.ci/postgres.sh`` makes one: ``initdb`` and ``pg_ctl`` from Debian's
``/usr/lib/postgresql/*/bin``, a cluster in a temporary directory on a free loopback port, trust
authentication. As root they run as the ``postgres`` user (``initdb`` refuses root). Where no
PostgreSQL binaries exist the test is skipped, saying why; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest


def _binaries() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: [int(x) if x.isdigit() else x for x in p.parent.parent.name.split(".")],
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivateServer:
    """One cluster: ``url`` reaches its ``postgres`` database as user ``postgres``."""

    bin: Path
    data: Path
    port: int
    as_postgres: bool

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 90) -> None:
        command: Sequence[str] = args
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *args]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({result.returncode}): {result.stderr}{self.log()}"
            )

    def log(self) -> str:
        path = self.data / "server.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _pg_ctl(self, action: str, *more: str) -> None:
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.data / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
            action,
            *more,
        )

    def start(self) -> None:
        self._pg_ctl("start")

    def stop(self) -> None:
        self._pg_ctl("stop", "-m", "fast")

    def restart(self) -> None:
        self._pg_ctl("restart", "-m", "fast")

    def answers(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    """A running PostgreSQL of this test's own, stopped and removed after it."""
    binaries = _binaries()
    if binaries is None:
        why = "no PostgreSQL binaries in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    as_postgres = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="batch-watcher-pg-"))
    if as_postgres:
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
    server = PrivateServer(binaries, data, _free_port(), as_postgres)
    try:
        initdb = str(binaries / "initdb")
        server._run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        server.start()
        yield server
    finally:
        subprocess.run(
            [
                *(["runuser", "-u", "postgres", "--"] if as_postgres else []),
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(data, ignore_errors=True)
