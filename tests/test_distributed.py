"""The `distributed` profile for real on one machine: PostgreSQL and Redis from Debian's
packages on loopback, two Celery workers and the Dagster daemon. Two shops' batches go
through the sensor; their steps spread over both workers and their outputs equal the
single-machine run's. Then a worker is killed mid-run and the run still ends correctly."""

import os
import time

import dagster as dg
import pandas as pd
import pytest

from orchestration.local_cluster import LocalCluster, wait_until
from tests.conftest import bucket_env
from tests.helpers import materialise, photo_batch, read_table, upload

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

BATCHES = {
    "shop-a/b1": {"coffee": ["resized", "flipped"], "rocket": ["brightened"]},
    "shop-b/b1": {"astronaut": ["cropped", "padded"], "chelsea": []},
}
COMPARED = {
    "raw_images": ["file", "sha256", "status"],
    "image_clusters": ["file", "group_id", "product_id"],
    "product_groups": ["group_id", "name", "cover_file"],
    "product_images": ["file", "size", "format", "rendition_key", "bytes"],
}
DEADLINE = 480


@pytest.fixture(scope="module")
def shared_env(seaweed, tmp_path_factory) -> dict[str, str]:
    """One pair of buckets for the module: its tests use different tenants."""
    return bucket_env(seaweed, tmp_path_factory.mktemp("distributed"))


@pytest.fixture(scope="module")
def cluster(shared_env, tmp_path_factory):
    """Started once for the module (PostgreSQL, Redis, two workers, the daemon: tens of
    seconds); the last test kills a worker, so it runs last."""
    root = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, **shared_env, "DAGSTER_HOME": str(root / "distributed_home"),
           "CELERY_VISIBILITY_TIMEOUT": "20"}  # fmt: skip
    running = LocalCluster(root / "cluster", workers=2, env=env)
    try:
        running.start()
        yield running
    finally:
        started = dict(running.processes)
        running.stop()
    for name, proc in started.items():
        assert proc.poll() is not None, f"{name} still running"


@pytest.fixture
def s3_env(cluster, shared_env, monkeypatch) -> dict[str, str]:
    """The module's buckets; this process reads the instance (PostgreSQL) the daemon and
    workers write."""
    env = {**shared_env, **{n: cluster.env[n] for n in ("DAGSTER_HOME", "DAGSTER_POSTGRES_URL")}}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def runs_done(instance, partition: str) -> list[dg.DagsterRun]:
    return instance.get_runs(
        dg.RunsFilter(
            tags={"dagster/partition": partition},
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
        )
    )


def worker_of_steps(instance, run_id: str) -> dict[str, list[str]]:
    """step key -> the Celery workers that started it (dagster-celery's engine events)."""
    found: dict[str, list[str]] = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        worker = event.engine_event_data.metadata.get("Celery worker")
        if worker is not None:
            found.setdefault(event.step_key, []).append(worker.value)
    return found


def test_two_shops_spread_over_two_workers_and_match_one_machine(
    cluster, s3_env, s3_client, tmp_path
):
    started = time.monotonic()
    for partition, photos in BATCHES.items():
        tenant, batch = partition.split("/")
        upload(s3_client, s3_env["UPLOADS_BUCKET"], tenant, batch, photo_batch(photos))
    with dg.DagsterInstance.get() as instance:
        runs = {
            p: wait_until(lambda p=p: runs_done(instance, p), f"the run of {p}", DEADLINE)[0]
            for p in BATCHES
        }
        assert {p: r.status for p, r in runs.items()} == dict.fromkeys(
            BATCHES, dg.DagsterRunStatus.SUCCESS
        ), _logs(cluster)
        assert {r.tags["tenant"] for r in runs.values()} == {"shop-a", "shop-b"}
        workers = {
            w.split("@")[0]
            for r in runs.values()
            for ws in worker_of_steps(instance, r.run_id).values()
            for w in ws
        }
        assert workers == {"w1", "w2"}, workers

    # The same uploads on one machine (in-process, its own pipeline bucket) give the same.
    pipeline = s3_env["PIPELINE_BUCKET"]
    reference = pipeline + "-ref"
    s3_client.create_bucket(Bucket=reference)
    os.environ["PIPELINE_BUCKET"] = reference
    try:
        with dg.instance_for_test() as local:
            for partition in BATCHES:
                assert materialise(local, partition, assets=tuple(COMPARED)).success
    finally:
        os.environ["PIPELINE_BUCKET"] = pipeline
    for partition in BATCHES:
        for asset, columns in COMPARED.items():
            ours = _table(s3_client, pipeline, asset, partition, columns)
            ref = _table(s3_client, reference, asset, partition, columns)
            pd.testing.assert_frame_equal(ours, ref, obj=f"{asset} {partition}")
    assert time.monotonic() - started < DEADLINE


def test_a_worker_killed_mid_run_ends_in_a_retry_that_succeeds(cluster, s3_env, s3_client):
    photos = {"coffee": ["resized"], "rocket": [], "coins": ["flipped"], "chelsea": []}
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop-c", "b1", photo_batch(photos))
    with dg.DagsterInstance.get() as instance:

        def busy_worker():
            runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "shop-c/b1"}))
            if not runs:
                return None
            started = worker_of_steps(instance, runs[0].run_id)
            finished = {
                r.dagster_event.step_key
                for r in instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            }
            running = [(s, w[-1]) for s, w in started.items() if s not in finished]
            return (runs[0].run_id, *running[0]) if running else None

        run_id, step, worker = wait_until(busy_worker, "a step on a worker", DEADLINE, 0.2)
        cluster.kill(worker.split("@")[0])
        (run,) = wait_until(lambda: runs_done(instance, "shop-c/b1"), "the run", DEADLINE)
        assert run.status == dg.DagsterRunStatus.SUCCESS, _logs(cluster)
        # The killed worker's step ran again, on the survivor.
        survivors = worker_of_steps(instance, run_id)[step]
        assert len(survivors) >= 2 and survivors[-1] != worker, survivors
    # Nothing lost, nothing duplicated.
    pipeline = s3_env["PIPELINE_BUCKET"]
    raw = read_table(s3_client, pipeline, "raw_images", "shop-c/b1")
    for asset in ("image_features", "image_embeddings", "image_clusters"):
        table = read_table(s3_client, pipeline, asset, "shop-c/b1")
        assert sorted(table.file) == sorted(raw.file[raw.status == "accepted"]), asset


def _table(s3_client, bucket, asset, partition, columns) -> pd.DataFrame:
    table = read_table(s3_client, bucket, asset, partition)[columns]
    return table.sort_values(columns).reset_index(drop=True)


def _logs(cluster: LocalCluster) -> str:
    """The tail of every component's log, for a failure report."""
    logs = sorted(cluster.root.glob("*.log"))
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs)
