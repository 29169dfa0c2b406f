"""A real PostgreSQL server on a free loopback port, for tests.

The Debian package's binaries (/usr/lib/postgresql/<version>/bin; `make test`
installs the package). PostgreSQL refuses to run as root: as root the cluster
belongs to the ``postgres`` user and every binary runs through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from redis_server import free_port

SERVICE_USER = "postgres"


def postgres_bin() -> Path:
    """The newest installed server's bin folder."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: run 'make test' (it installs the Debian package "
            "postgresql) or 'apt-get install postgresql'"
        )
    return Path(found[-1]).parent


def _version(path: str) -> int:
    return int(Path(path).parent.parent.name.split(".")[0])


class PostgresServer:
    """``initdb`` in a new folder, ``postgres`` on 127.0.0.1 only (no Unix socket),
    trust authentication for the ``postgres`` role; ``stop()`` removes the folder."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.as_root = os.geteuid() == 0
        self.folder = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._proc: subprocess.Popen[bytes] | None = None

    def _cmd(self, *args: str) -> list[str]:
        return ["runuser", "-u", SERVICE_USER, "--", *args] if self.as_root else list(args)

    def start(self) -> None:
        """Create the cluster and start the server; wait until it accepts connections."""
        if self.as_root:
            user = pwd.getpwnam(SERVICE_USER)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        subprocess.run(
            self._cmd(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ),
            check=True,
            capture_output=True,
        )
        log = open(self.folder / "server.log", "wb")  # noqa: SIM115 - closed by the process end
        self._proc = subprocess.Popen(
            self._cmd(
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        ).returncode:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "PostgreSQL did not start: " + (self.folder / "server.log").read_text()
                )
            time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster), then remove the cluster."""
        if self._proc is not None:
            subprocess.run(
                self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"),
                capture_output=True,
            )
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg2

        con = psycopg2.connect(self.url)
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        con.close()
        return self.url.rsplit("/", 1)[0] + f"/{name}"
