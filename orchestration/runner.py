"""Materialise one batch in-process and summarise what its run did."""

from __future__ import annotations

import time

import dagster as dg

from orchestration.definitions import defs
from orchestration.partitions import BatchKey, upload_batch_partitions

_IMAGE_STAGES = ("raw_images", "image_features", "image_embeddings")


def run_batch(
    batch: BatchKey, instance: dg.DagsterInstance, selection: list[str] | None = None
) -> tuple[bool, dict]:
    """Register the partition, run the job in this process (recorded in the instance);
    ``selection``: only these assets (default: all)."""
    key = batch.partition_key
    if not instance.has_dynamic_partition(upload_batch_partitions.name, key):
        instance.add_dynamic_partitions(upload_batch_partitions.name, [key])
    job = defs.resolve_job_def("image_pipeline_job")
    started = time.perf_counter()
    result = job.execute_in_process(
        partition_key=key,
        instance=instance,
        raise_on_error=False,
        asset_selection=[dg.AssetKey(a) for a in selection] if selection else None,
        tags={"tenant": batch.tenant},
        # Progress lines, not Dagster's step-by-step DEBUG events (the UI keeps those).
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )
    seconds = time.perf_counter() - started
    return result.success, summarise(result, seconds)


def materializations(result: dg.ExecuteInProcessResult, asset: str) -> list:
    """The asset's materializations in a run, by asset key (a multi_asset's step, e.g.
    image_analysis, materialises several assets: its node name is none of theirs)."""
    return [
        event.event_specific_data.materialization
        for event in result.get_asset_materialization_events()
        if event.asset_key == dg.AssetKey(asset)
    ]


def summarise(result: dg.ExecuteInProcessResult, seconds: float) -> dict:
    meta = {}
    for asset in (*_IMAGE_STAGES, "image_clusters"):
        events = materializations(result, asset)
        meta[asset] = {k: v.value for k, v in events[-1].metadata.items()} if events else {}
    hits = sum(int(meta[n].get("memo_hits", 0)) for n in _IMAGE_STAGES)
    misses = sum(int(meta[n].get("memo_misses", 0)) for n in _IMAGE_STAGES)
    raw = meta["raw_images"]
    return {
        "run_id": result.run_id,
        "success": result.success,
        "images": raw.get("objects", 0),
        "accepted": raw.get("accepted", 0),
        "rejected": raw.get("rejected", 0),
        "groups": meta["image_clusters"].get("groups", 0),
        "products": meta["image_clusters"].get("products", 0),
        "memo_hits": hits,
        "memo_misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
        "embedder_calls": meta["image_embeddings"].get("embedder_calls", 0),
        # Features and embeddings share one read of the working copies (image_analysis).
        "bytes_fetched": raw.get("bytes_fetched", 0)
        + int(meta["image_features"].get("image_bytes_fetched", 0)),
        "seconds": round(seconds, 3),
    }
