"""The `distributed` profile on one machine: PostgreSQL, Redis, Celery workers and
(optionally) the Dagster daemon, each a process we started and stop by its PID.

On several machines the same pieces run apart: one PostgreSQL and one Redis everyone
reaches, `dagster-celery worker start` on every worker machine, one daemon and one
webserver. See the README's "Running at scale".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orchestration.local_s3 import REPO_ROOT
from orchestration.services import LocalPostgres, LocalRedis

BIN = Path(sys.executable).parent


@dataclass
class LocalCluster:
    root: Path
    workers: int = 2
    daemon: bool = True
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    postgres: LocalPostgres | None = None
    redis: LocalRedis | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self) -> LocalCluster:
        self.root = Path(self.root)
        self.postgres = LocalPostgres(self.root / "postgres").start()
        self.redis = LocalRedis(self.root / "redis").start()
        self.env.update(
            PIPELINE_PROFILE="distributed",
            DAGSTER_POSTGRES_URL=self.postgres.url,
            CELERY_BROKER_URL=self.redis.url,
            CELERY_RESULT_BACKEND=self.redis.url,
        )
        self.env.setdefault("DAGSTER_HOME", str(self.root / "dagster_home"))
        home = _write_instance(self.env)
        config = home / "celery.yaml"
        config.write_text(yaml.safe_dump({"execution": {"config": _celery_config(self.env)}}))
        for index in range(1, self.workers + 1):
            self.start_worker(f"w{index}", config)
        if self.daemon:
            self._spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        return self

    def start_worker(self, name: str, config: Path) -> None:
        """One Celery worker running one step at a time, named ``name@<host>``."""
        self._spawn(
            name,
            [str(BIN / "dagster-celery"), "worker", "start", "-n", name, "-y", str(config),
             "-A", "dagster_celery.app", "-l", "INFO", "--", "--concurrency", "1"],
        )  # fmt: skip

    def _spawn(self, name: str, command: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the process's lifetime
        env = {**self.env, "PATH": f"{BIN}{os.pathsep}{self.env.get('PATH', '')}"}
        self.processes[name] = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop exactly it
        )  # fmt: skip

    def kill(self, name: str) -> None:
        """SIGKILL a worker (or the daemon) and everything it started: a lost machine."""
        proc = self.processes.pop(name)
        _signal_group(proc, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for name in list(self.processes):
            proc = self.processes.pop(name)
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(10)
        if self.redis:
            self.redis.stop()
        if self.postgres:
            self.postgres.stop()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # the group we created with start_new_session


def _write_instance(env: dict[str, str]) -> Path:
    """dagster.yaml of the distributed profile in env's DAGSTER_HOME."""
    from orchestration.instance import DISTRIBUTED_YAML

    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(DISTRIBUTED_YAML)
    return home


def _celery_config(env: dict[str, str]) -> dict:
    from orchestration import profiles

    saved = os.environ.get("CELERY_VISIBILITY_TIMEOUT")
    try:  # the workers' environment decides, as it does for the executor
        if "CELERY_VISIBILITY_TIMEOUT" in env:
            os.environ["CELERY_VISIBILITY_TIMEOUT"] = env["CELERY_VISIBILITY_TIMEOUT"]
        return profiles.celery_config()
    finally:
        if saved is None:
            os.environ.pop("CELERY_VISIBILITY_TIMEOUT", None)
        else:
            os.environ["CELERY_VISIBILITY_TIMEOUT"] = saved


def wait_until(predicate, what: str, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
