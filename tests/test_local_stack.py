"""`./dev up` as a service: started without a terminal in a temporary DAGSTER_HOME and data
folder, its embedded S3 killed and brought back at the same endpoint (the sensor then runs
a new batch with no manual step), and a SIGTERM stopping every process it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import dagster as dg
import pytest

from orchestration.local_cluster import wait_until as wait_for
from orchestration.local_s3 import LocalS3, _free_port
from tests.helpers import photo_batch, upload

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def descendants(pid: int) -> set[int]:
    """Live (not zombie) processes below ``pid``, by parent links in /proc."""
    children: dict[int, list[int]] = {}
    live = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(child)
        if fields[0] != "Z":
            live.add(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found & live


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


class Up:
    """A `./dev up --no-samples` started without a terminal."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.review_port = _free_port()
        self.s3 = LocalS3(root / "s3")
        self.env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_", "DAGSTER_"))
            },
            "DAGSTER_HOME": str(root / "home"),
            "LOCAL_S3_DIR": str(root / "s3"),
            # Not 8333: other tests may start an S3 at the same moment (pytest-xdist).
            "LOCAL_S3_PORT": str(_free_port()),
            "UPLOADS_BUCKET": "stack-uploads",
            "PIPELINE_BUCKET": "stack-pipeline",
        }
        self.log = open(root / "up.log", "wb")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            ["./dev", "up", "--no-samples", "--port", str(self.port),
             "--review-port", str(self.review_port)],
            cwd=REPO, env=self.env, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,  # no controlling terminal
            # As `setsid ./dev up &` from a script: a background job starts with SIGINT
            # ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )  # fmt: skip
        self.started: set[int] = set()

    def output(self) -> str:
        """Everything the stack printed (a failed sensor tick's traceback can be long)."""
        return (self.root / "up.log").read_text(errors="replace")

    def tail(self) -> str:
        """The end of the output, for assertion messages."""
        return self.output()[-4000:]

    def record(self) -> set[int]:
        """Everything started so far (the S3 has its own session: not a descendant)."""
        self.started |= descendants(self.process.pid)
        state = self.s3.recorded()
        if state and state.pid:
            self.started.add(state.pid)
        return self.started

    def close(self) -> None:
        """Teardown after a failure: stop by the PIDs we know, never by name."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for pid in alive(self.record()):
            os.kill(pid, signal.SIGKILL)
        self.log.close()


#: Starts of the stack tried when a port picked free was taken before ./dev up bound it
#: (another pytest-xdist worker's server, or a SeaweedFS's gRPC port at its HTTP port +
#: 10000, can take it in between).
STARTS = 3


def _start(tmp_path_factory) -> Up:
    """A stack that started, or the last one tried (up to ``STARTS``, each on new ports)."""
    for _ in range(STARTS):
        stack = Up(tmp_path_factory.mktemp("stack"))
        try:
            wait_for(lambda s=stack: (s.s3.status() and _answers(s.port))
                     or s.process.poll() is not None,
                     "the S3 and the Dagster webserver", 180)  # fmt: skip
        except BaseException:
            stack.close()
            raise
        if stack.process.poll() is None or "is taken" not in stack.tail():
            break
        stack.close()
    return stack


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    stack = _start(tmp_path_factory)
    try:
        assert stack.process.poll() is None, stack.tail()
        yield stack
    finally:
        stack.close()


def _answers(port: int, path: str = "/server_info") -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).close()
    except OSError:
        return False
    return True


@pytest.mark.timeout(600)
def test_killed_s3_comes_back_at_its_endpoint_and_the_sensor_runs_a_new_batch(up, monkeypatch):
    before = up.s3.status()
    assert (up.root / "s3" / "state.json").stat().st_mode & 0o777 == 0o600
    up.record()
    os.kill(before.pid, signal.SIGKILL)  # a crash

    after = wait_for(up.s3.status, "the S3 to come back", 60)
    assert after.endpoint_url == before.endpoint_url and after.pid != before.pid
    assert "starting it again at" in up.output()

    client = boto3.client("s3", endpoint_url=after.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=after.access_key,
                          aws_secret_access_key=after.secret_key)  # fmt: skip
    upload(client, "stack-uploads", "live", "b1", photo_batch({"chelsea": ["flipped"]}))
    monkeypatch.setenv("DAGSTER_HOME", up.env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as inst:
        finished = dg.RunsFilter(
            tags={"dagster/partition": "live/b1"},
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
        )
        (run,) = wait_for(lambda: inst.get_runs(finished), "the sensor's run", 480, every=3)
        assert run.status == dg.DagsterRunStatus.SUCCESS, up.tail()
        assert run.tags["dagster/sensor_name"] == "upload_sensor"


@pytest.mark.timeout(120)
def test_sigterm_stops_every_process_it_started(up):
    assert _answers(up.review_port, "/healthz")  # the review app runs beside Dagster
    started = up.record()
    assert len(started) >= 5, started  # dg dev, webserver, daemon, code server, review, S3
    up.process.send_signal(signal.SIGTERM)
    up.process.wait(30)
    deadline = time.monotonic() + 5  # the stack has already waited for its children
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(started), f"left behind: {alive(started)}\n{up.tail()}"
    assert "did not stop in time" not in up.output()  # each stopped on its signal, not killed
    state = json.loads((up.root / "s3" / "state.json").read_text())
    assert state["pid"] == 0 and state["endpoint_url"]  # stopped, endpoint kept
    assert not _answers(up.review_port, "/healthz")


def test_up_with_a_taken_port_is_a_clear_error_before_starting_anything(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "orchestration", "up", "--review-port", str(taken),
             "--port", str(_free_port())],
            cwd=REPO, env={**os.environ, "LOCAL_S3_DIR": str(tmp_path / "s3")},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    assert f"port {taken} on 127.0.0.1 is taken: pass --review-port" in proc.stderr
    assert not (tmp_path / "s3").exists()  # nothing was started


def test_recorded_port_taken_by_another_process_is_a_clear_error(tmp_path):
    import socket

    from orchestration.local_s3 import LocalS3State, PortTaken

    server = LocalS3(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        state = LocalS3State(0, f"http://127.0.0.1:{port}", "k", "s", str(tmp_path), "log")
        server._record(state)
        with pytest.raises(PortTaken, match=f"port {port} .* in use by another process"):
            server.start()
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600


def test_an_internal_port_taken_before_weed_binds_it_is_chosen_again(tmp_path, monkeypatch):
    """Free ports come from the kernel's ephemeral range: another process may bind one
    between our choice and weed's. The start tries again with other ports."""
    import socket

    import orchestration.local_s3 as local_s3

    chosen = local_s3._internal_ports
    calls = []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()

        def racing(s3_port: int) -> dict[str, int]:
            ports = chosen(s3_port)
            if not calls:  # the first choice: the filer's port is taken meanwhile
                ports["filer"] = busy.getsockname()[1]
            calls.append(ports)
            return ports

        monkeypatch.setattr(local_s3, "_internal_ports", racing)
        server = LocalS3(tmp_path, s3_port=_free_port())
        try:
            state = server.start()
            assert len(calls) == 2 and state.ports == calls[1]
            assert "address already in use" in Path(state.log_file).read_text()
        finally:
            server.stop(timeout=1)  # a throwaway server: no graceful 16 s stop


@pytest.mark.timeout(300)
def test_dg_launch_materialises_a_batch(s3_env, s3_client, subprocess_env, tmp_path):
    """Dagster's `dg` CLI serves the same definitions (pyproject's [tool.dg])."""
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "dg", "b1", photo_batch({"coffee": ["flipped"]}))
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("upload_batches", ["dg/b1"])
    dg_bin = str(Path(sys.executable).parent / "dg")
    env = {**subprocess_env, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent)}
    check = subprocess.run([dg_bin, "check", "defs"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    launch = subprocess.run(
        [dg_bin, "launch", "--assets", "raw_images", "--partition", "dg/b1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_images"), asset_partitions=["dg/b1"]),
            limit=1,
        ).records
    assert records and records[0].asset_materialization.metadata["accepted"].value == 2


def test_the_s3_port_taken_by_another_server_while_weed_starts_is_not_taken_for_ours(
    tmp_path, monkeypatch, seaweed
):
    """Another weed's filer took a test worker's S3 port between choosing and binding: its
    JSON answered, the start took it for the gateway and every request of that worker failed.
    Only S3's XML counts; the start reports the port taken, so the caller picks another."""
    import http.server
    import threading

    import orchestration.local_s3 as local_s3

    class Filer(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"name":"not-s3"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Filer)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    port = other.server_address[1]
    try:
        assert not local_s3._answers(f"http://127.0.0.1:{port}")
        assert local_s3._answers(seaweed.endpoint_url)
        free = local_s3._free
        checked = []

        def free_when_chosen(p: int) -> bool:  # the port was free when start() checked it
            if p == port and not checked:
                checked.append(p)
                return True
            return free(p)

        monkeypatch.setattr(local_s3, "_free", free_when_chosen)
        server = LocalS3(tmp_path, s3_port=port)
        try:
            with pytest.raises(local_s3.PortTaken, match=f"port {port} .* taken while it started"):
                server.start(timeout=30)
        finally:
            server.stop(timeout=1)
    finally:
        other.shutdown()
        other.server_close()
