"""PostgreSQL and Redis from Debian's packages, on 127.0.0.1 and free ports, for the
`distributed` profile on one machine (the test, `./dev up` with PIPELINE_PROFILE=distributed).

In production these are managed services (RDS, ElastiCache); here each runs from a data
folder we create, and is stopped by the PID we started, never by name. PostgreSQL refuses
to run as root, so as root its processes run as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from orchestration.local_s3 import _free_port

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class ServiceUnavailable(RuntimeError):
    """A binary the distributed profile needs is not installed."""


def postgres_bin(name: str) -> str:
    for folder in POSTGRES_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        raise ServiceUnavailable(
            f"{name} not found: install Debian's postgresql package (./dev does when root)"
        )
    return found


def _as_postgres(command: list[str]) -> list[str]:
    """Run as the postgres user when we are root (postgres refuses root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@dataclass
class LocalPostgres:
    data_dir: Path
    port: int = 0
    database: str = "dagster"
    user: str = "dagster"
    _owned: bool = False  # a temporary folder we made, removed on stop

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        self.port = self.port or _free_port()
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0 and not (self.data_dir / "pgdata").exists():
            # The postgres user must reach the folder, and a root-owned 0700 parent (pytest's
            # tmp_path, say) forbids that: root's server lives in a folder of its own.
            self.data_dir = Path(tempfile.mkdtemp(prefix="photogroup-postgres-"))
            shutil.chown(self.data_dir, "postgres", "postgres")
            self._owned = True
        pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            subprocess.run(
                _as_postgres([postgres_bin("initdb"), "-D", str(pgdata), "-U", self.user,
                              "-A", "trust", "-E", "UTF8", "--no-instructions"]),
                check=True, capture_output=True, timeout=timeout,
            )  # fmt: skip
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir}"
        subprocess.run(
            _as_postgres([postgres_bin("pg_ctl"), "-D", str(pgdata), "-o", options, "-l",
                          str(self.data_dir / "postgres.log"), "-w", "-t", str(int(timeout)),
                          "start"]),
            check=True, capture_output=True, timeout=timeout + 5,
        )  # fmt: skip
        subprocess.run(
            _as_postgres(
                [
                    postgres_bin("createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    self.user,
                    self.database,
                ]
            ),
            capture_output=True,
            timeout=timeout,
        )  # fmt: skip  (exists already on a restart: fine)
        return self

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def pid(self) -> int | None:
        pidfile = self.data_dir / "pgdata" / "postmaster.pid"
        return int(pidfile.read_text().split()[0]) if pidfile.exists() else None

    def stop(self) -> None:
        """Fast shutdown of the server this data folder holds (its postmaster PID)."""
        pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
                _wait_gone(pid, 30)
            except ProcessLookupError:
                pass
        if self._owned:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass
class LocalRedis:
    data_dir: Path
    port: int = 0
    process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> LocalRedis:
        binary = shutil.which("redis-server")
        if not binary:
            raise ServiceUnavailable(
                "redis-server not found: install Debian's redis-server package (./dev does "
                "when root)"
            )
        self.port = self.port or _free_port()
        self.data_dir = Path(self.data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115 - the server's lifetime
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.data_dir), "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        import socket

        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.data_dir / 'redis.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"redis-server did not answer on port {self.port}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
