"""The local stack of ``./dev up``, supervised: the embedded S3 and ``dg dev`` (Dagster's
webserver, daemon and code server), plus any other local service, as one unit.

* If the embedded S3 dies it is started again at the endpoint its state file records, so
  the daemon and code server, which were handed that endpoint, carry on (the sensor's
  next tick succeeds) without a restart.
* SIGTERM, SIGINT or SIGHUP, with or without a terminal (a process supervisor, ``docker
  stop``, ``setsid ./dev up &``), stops everything it started within ``STOP_SECONDS``: each
  child runs in a process group of its own, which is signalled as a whole (Dagster's
  webserver, daemon, code servers and runs are in it), then killed if it lingers. Nothing
  is ever signalled by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestration.local_s3 import LocalS3

#: Everything is stopped within this many seconds of a signal (SeaweedFS alone takes ~16).
STOP_SECONDS = 25.0
#: How often the embedded S3 is checked.
WATCH_SECONDS = 1.0


def say(message: str) -> None:
    """Printed at once: under a supervisor or ``> file`` stdout is block-buffered, and a
    restart notice must show up when it happens, not when the buffer fills."""
    print(message, flush=True)  # noqa: T201 - the stack's own console output


@dataclass
class Child:
    """A process the stack started, in a process group of its own."""

    name: str
    process: subprocess.Popen
    stop_signal: int = signal.SIGTERM

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def group_alive(self) -> bool:
        self.process.poll()  # reap the leader once it exits
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True


@dataclass
class Stack:
    """Children started with :meth:`spawn`, the embedded S3 watched, all stopped on a signal."""

    s3: LocalS3 | None = None  # the embedded S3 to keep alive (None: an external endpoint)
    owns_s3: bool = False  # started by this stack: stopped with it
    log: Callable[[str], None] = say
    children: list[Child] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def spawn(
        self, name: str, command: list[str], stop_signal: int = signal.SIGTERM, **popen
    ) -> Child:
        process = subprocess.Popen(command, start_new_session=True, **popen)
        child = Child(name, process, stop_signal)
        self.children.append(child)
        return child

    def run(self, main: Child) -> int:
        """Supervise until ``main`` exits or a signal arrives; then stop everything.
        Returns ``main``'s exit code (0 after a signal)."""
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self._stopping.set())
        code = 0
        try:
            while not self._stopping.wait(WATCH_SECONDS):
                if main.process.poll() is not None:
                    code = main.process.returncode
                    self.log(f"{main.name} exited with code {code}; stopping the stack")
                    break
                self.keep_s3_alive()
        finally:
            self.stop()
        return code

    def keep_s3_alive(self) -> None:
        if self.s3 is None or self.s3.status() is not None:
            return
        recorded = self.s3.recorded()
        endpoint = recorded.endpoint_url if recorded else "its recorded endpoint"
        self.log(f"the embedded S3 is not answering; starting it again at {endpoint}")
        try:
            self.s3.start()
            self.owns_s3 = True
            self.log(f"the embedded S3 is back at {endpoint}")
        except Exception as exc:  # reported, and tried again on the next check
            self.log(f"could not restart the embedded S3 (trying again): {exc}")

    def stop(self) -> None:
        """Stop every child group and the S3 we own, in parallel, within STOP_SECONDS."""
        s3_stop = None
        if self.s3 is not None and self.owns_s3:
            s3_stop = threading.Thread(target=self.s3.stop, kwargs={"timeout": STOP_SECONDS - 5})
            s3_stop.start()
        for child in self.children:
            child.signal(child.stop_signal)
        deadline = time.monotonic() + STOP_SECONDS - 5
        while time.monotonic() < deadline and any(c.group_alive() for c in self.children):
            time.sleep(0.2)
        for child in self.children:
            if child.group_alive():
                self.log(f"{child.name} did not stop in time: killing its process group")
                child.signal(signal.SIGKILL)
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)
        if s3_stop is not None:
            s3_stop.join(STOP_SECONDS)


def dg_dev_command(port: int) -> list[str]:
    """``dg dev`` of this project (pyproject's [tool.dg]) on ``port``."""
    import sys

    return [str(Path(sys.executable).parent / "dg"), "dev", "-p", str(port)]
