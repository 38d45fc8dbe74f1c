"""End to end under `dagster dev` (webserver + daemon) on a temporary DAGSTER_HOME:
the sensor runs a sealed batch, and `orchestration backfill` runs historical ones."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from orchestration.instance import ensure_dagster_home
from orchestration.local_s3 import _free_port
from tests.helpers import photo_batch, upload

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
ASSETS = ["raw_images", "image_features", "image_embeddings", "image_clusters",
          "product_groups", "product_images", "catalog", "product_cutouts"]  # fmt: skip
DEADLINE_SECONDS = 720  # eight assets a batch on a shared 2-core machine


def group_members(pgid: int) -> list[int]:
    """PIDs still in the process group we created."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.fixture
def dagster_dev(subprocess_env, tmp_path):
    ensure_dagster_home()  # the queued run coordinator config, as ./dev up writes it
    port = _free_port()
    log = open(tmp_path / "dagster-dev.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
         "-p", str(port)],
        cwd=REPO, env=subprocess_env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown stops exactly it
    )  # fmt: skip
    try:
        yield port
    finally:
        # SIGTERM to `dagster dev` alone, as a service manager stops it: it then stops the
        # webserver and daemon through their shutdown pipes, and they their code servers.
        # (The whole group at once raced: the webserver restarted its code server killed
        # under it, which then lived on until its 45 s heartbeat timeout.)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        deadline = time.monotonic() + 30
        while group_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = {pid: _cmdline(pid) for pid in group_members(proc.pid)}
        assert not left, f"dagster dev left processes behind: {left}"


def wait_for(predicate, what: str, deadline: float):
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def materialised(instance: dg.DagsterInstance, partition: str) -> set[str]:
    done = set()
    for asset in ASSETS:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]),
            limit=1,
        ).records
        if records:
            done.add(asset)
    return done


@pytest.mark.timeout(900)
def test_sensor_and_backfill_under_dagster_dev(
    s3_env, s3_client, subprocess_env, dagster_dev, tmp_path
):
    deadline = time.monotonic() + DEADLINE_SECONDS
    uploads = s3_env["UPLOADS_BUCKET"]
    upload(s3_client, uploads, "live", "b1", photo_batch({"chelsea": ["flipped"]}))
    # Historical batches predate the _SUCCESS convention: the sensor leaves them alone.
    history = {"old-a/2025-01": {"coffee": []}, "old-a/2025-02": {"rocket": ["resized"]},
               "old-b/2025-01": {"coins": []}}  # fmt: skip
    for partition, photos in history.items():
        for name, body in photo_batch(photos).items():
            s3_client.put_object(Bucket=uploads, Key=f"uploads/{partition}/{name}", Body=body)

    url = f"http://127.0.0.1:{dagster_dev}/server_info"
    wait_for(lambda: _answers(url), "the webserver", deadline)
    # The backfill is launched at once, beside the sensor's run (the daemon picks it up on
    # its next backfill iteration, every 30 s): waiting for the sensor's run first only
    # added that run's minute to the test. Its output goes to files: nothing reads a pipe
    # meanwhile.
    out_path, err_path = tmp_path / "backfill.out", tmp_path / "backfill.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        backfill = subprocess.Popen(
            [sys.executable, "-m", "orchestration", "backfill", "--tenant", "old-a",
             "--tenant", "old-b", "--wait", "--timeout", str(deadline - time.monotonic())],
            cwd=REPO, env=subprocess_env, stdout=out, stderr=err,
        )  # fmt: skip
    try:
        with dg.DagsterInstance.get() as instance:
            finished = dg.RunsFilter(
                tags={"dagster/partition": "live/b1"},
                statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
            )
            (run,) = wait_for(lambda: instance.get_runs(finished), "the sensor's run", deadline)
            assert run.status == dg.DagsterRunStatus.SUCCESS
            assert materialised(instance, "live/b1") == set(ASSETS)
            assert run.tags["tenant"] == "live"
            assert run.tags["dagster/sensor_name"] == "upload_sensor"

            backfill.wait(timeout=max(1, deadline - time.monotonic()))
            assert backfill.returncode == 0, err_path.read_text()[-3000:]
            summary = json.loads(out_path.read_text().strip().splitlines()[-1])
            assert sorted(summary["partitions"]) == sorted(history)
            assert set(summary["backfills"].values()) == {"COMPLETED_SUCCESS"}
            for partition in history:
                assert materialised(instance, partition) == set(ASSETS), partition
            # The sensor adopted the backfilled partitions instead of running them again.
            sensor_runs = dg.RunsFilter(tags={"dagster/sensor_name": "upload_sensor"})
            assert len(instance.get_runs(sensor_runs)) == 1
    finally:
        if backfill.poll() is None:
            backfill.kill()
            backfill.wait(10)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except OSError:
        return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
    except OSError:
        return "?"
