"""Publish a batch's reviewed groups: materialise what people's edits feed, one Dagster run.

The review page's Accept starts ``python -m orchestration publish`` in a child process with a
run id it chose, then follows that run in the instance; the run appears in Dagster's UI with
its logs like any other.
"""

from __future__ import annotations

import dagster as dg

from orchestration.definitions import defs
from orchestration.partitions import BatchKey, upload_batch_partitions

#: The assets downstream of grouping_edits, in graph order.
PUBLISHED = ("product_groups", "catalog", "product_cutouts")


def publish(
    batch: BatchKey, instance: dg.DagsterInstance, run_id: str | None = None, who: str = ""
) -> dg.ExecuteInProcessResult:
    """Materialise PUBLISHED for ``batch`` (its upstream tables are read, not recomputed)."""
    if not instance.has_dynamic_partition(upload_batch_partitions.name, batch.partition_key):
        raise ValueError(f"{batch.partition_key} is not a registered batch: run it first")
    job = defs.resolve_job_def("image_pipeline_job")
    tags = {"tenant": batch.tenant, "review/accepted": "true"}
    if who:
        tags["review/who"] = who
    return job.execute_in_process(
        partition_key=batch.partition_key,
        instance=instance,
        asset_selection=[dg.AssetKey(name) for name in PUBLISHED],
        run_id=run_id,
        raise_on_error=False,
        tags=tags,
        run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )
