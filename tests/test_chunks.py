"""Image stages in chunks on worker processes: same results, per-image memo entries."""

import os
import threading
import time
from functools import partial

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from assets import ALL_ASSETS
from orchestration.definitions import defs
from orchestration.partitions import upload_batch_partitions
from photogroup.chunks import imap_chunks, with_worker
from tests.helpers import metadata, photo_batch, read_table, upload

STAGES = ["raw_images", "image_features", "image_embeddings"]
STEPS = ["raw_images", "image_analysis"]
PHOTOS = {"astronaut": ["flipped"], "coffee": ["resized"], "chelsea": ["brightened"],
          "rocket": ["recompressed"], "coins": ["padded"]}  # fmt: skip


def test_chunks_run_in_worker_processes_with_a_bounded_lead():
    drawn, consumed, leads = 0, 0, []

    def chunks():
        nonlocal drawn
        for i in range(6):
            drawn += 1
            yield i, 0.3  # seconds a worker sleeps: long enough for both to start

    pids = set()
    for _, (_, worker) in imap_chunks(partial(with_worker, time.sleep), chunks(), processes=2):
        consumed += 1
        leads.append(drawn - consumed)
        pids.add(worker.pid)
    assert consumed == 6
    assert len(pids) == 2 and os.getpid() not in pids
    assert max(leads) <= 2  # processes + 1 chunks in flight, less the one just returned


def test_one_process_runs_chunks_here_in_order():
    chunks = [("a", [1, 2]), ("b", [3])]
    out = [(k, n, w.pid) for k, (n, w) in imap_chunks(partial(with_worker, sum), chunks)]
    assert out == [("a", 3, os.getpid()), ("b", 3, os.getpid())]


def test_one_process_fetches_the_next_chunk_while_it_computes_one():
    """Drawing a chunk (its S3 fetch) overlaps computing the one before: the second chunk
    is drawn while the first computes, never a third before the first is done, and an
    error drawing a chunk reaches the caller after the chunks before it."""
    second_drawn = threading.Event()
    drawn = []

    def chunks():
        for i in range(3):
            drawn.append(i)
            if i == 1:
                second_drawn.set()
            yield i, i
        raise RuntimeError("listing failed")

    def compute(i: int) -> tuple[int, list[int]]:
        if i == 0:  # only returns once the next chunk was drawn meanwhile
            assert second_drawn.wait(timeout=10)
        return i, list(drawn)

    out = imap_chunks(compute, chunks())
    assert next(out) == (0, (0, [0, 1]))  # chunk 2 not drawn yet: two payloads held at most
    assert [k for k, _ in (next(out), next(out))] == [1, 2]
    with pytest.raises(RuntimeError, match="listing failed"):
        next(out)


def _materialise(instance, key: str, config: dict) -> dg.ExecuteInProcessResult:
    if not instance.has_dynamic_partition(upload_batch_partitions.name, key):
        instance.add_dynamic_partitions(upload_batch_partitions.name, [key])
    return dg.materialize(
        ALL_ASSETS,
        selection=STAGES,
        partition_key=key,
        resources=defs.resources,
        instance=instance,
        # Features and embeddings are one step (image_analysis), with one config.
        run_config={"ops": {step: {"config": config} for step in STEPS}},
    )


def _rows(table: pd.DataFrame) -> list[dict]:
    return table.map(lambda v: v.tolist() if isinstance(v, np.ndarray) else v).to_dict("records")


@pytest.mark.integration
def test_two_processes_give_the_results_of_one_and_memoise_every_image(
    s3_env, s3_client, monkeypatch
):
    files = photo_batch(PHOTOS)
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "b1", files)
    one_bucket = s3_env["PIPELINE_BUCKET"]
    two_bucket = f"{one_bucket}-two"  # a fresh memo: the second run computes everything
    s3_client.create_bucket(Bucket=two_bucket)
    with dg.instance_for_test() as instance:
        one = _materialise(instance, "shop/b1", {"processes": 1})
        monkeypatch.setenv("PIPELINE_BUCKET", two_bucket)
        two = _materialise(instance, "shop/b1", {"processes": 2, "chunk_size": 1})
    assert one.success and two.success
    used = {}
    for stage in STAGES:
        meta = metadata(two, stage)
        assert (meta["processes"], meta["chunk_size"]) == (2, 1)
        used[stage] = meta["compute_processes"]
        # Chunks ran in worker processes, not here (their peak memory is known).
        assert meta["peak_rss_mb"] > 0 and meta["worker_peak_rss_mb"] > 0
        assert metadata(one, stage)["compute_processes"] == 1
        assert _rows(read_table(s3_client, two_bucket, stage, "shop/b1")) == _rows(
            read_table(s3_client, one_bucket, stage, "shop/b1")
        ), stage
    # Ten one-image chunks on two workers: both compute, though on a loaded machine the
    # worker that started first can take all of a quick stage's chunks (raw_images did,
    # once, in CI with four test workers beside it).
    assert set(used.values()) <= {1, 2} and 2 in used.values(), used
    assert metadata(two, "image_embeddings")["embedder_calls"] == len(files)  # one per chunk
    for namespace in ("features", "embeddings", "work"):
        listing = s3_client.list_objects_v2(Bucket=two_bucket, Prefix=f"memo/{namespace}/")
        entries = [o["Key"] for o in listing["Contents"] if "/packs/" not in o["Key"]]
        assert len(entries) == len(files), namespace  # one entry per image


@pytest.mark.integration
def test_a_large_enough_batch_uses_every_core_by_default(s3_env, s3_client, monkeypatch):
    """No ``processes`` in the run config: one worker per core once a step has at least
    AUTO_MIN_IMAGES images to compute (lowered here to this small batch), else none."""
    import assets.engine

    files = photo_batch(PHOTOS)
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "auto", files)
    cores = os.cpu_count() or 1
    with dg.instance_for_test() as instance:
        small = _materialise(instance, "shop/auto", {"chunk_size": 2})
        monkeypatch.setattr(assets.engine, "AUTO_MIN_IMAGES", len(files))
        monkeypatch.setenv("PIPELINE_BUCKET", f"{s3_env['PIPELINE_BUCKET']}-auto")
        s3_client.create_bucket(Bucket=f"{s3_env['PIPELINE_BUCKET']}-auto")
        large = _materialise(instance, "shop/auto", {"chunk_size": 2})
    assert small.success and large.success
    for stage in STAGES:
        assert metadata(small, stage)["processes"] == 1, stage  # below the threshold
        meta = metadata(large, stage)
        assert meta["processes"] == cores, stage
        assert meta["compute_processes"] == (cores if cores > 1 else 1), stage


def _blas_threads(_: object) -> set[int]:
    from threadpoolctl import threadpool_info

    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_blas_runs_on_one_thread_in_the_code_location_and_its_workers():
    """The pipeline parallelises over images; BLAS threads beside it would only spin
    (photogroup.chunks.one_blas_thread)."""
    import orchestration.definitions  # noqa: F401  (what every Dagster process loads)

    assert _blas_threads(None) == {1}
    chunks = [(i, i) for i in range(2)]
    assert [threads for _, threads in imap_chunks(_blas_threads, chunks, processes=2)] == [
        {1},
        {1},
    ]
