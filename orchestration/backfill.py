"""Asset backfills over upload batches: the same backfill the UI's "Materialize" launches.

Dagster has no public Python API to create one, so this uses the same internal
constructor the UI's GraphQL mutation and ``dagster job backfill`` use; the instance's
backfill daemon (``dagster dev`` or ``dagster-daemon run``) then executes it.
"""

from __future__ import annotations

import time

import dagster as dg
from dagster._core.execution.backfill import (
    BULK_ACTION_TERMINAL_STATUSES,
    BulkActionStatus,
    PartitionBackfill,
)
from dagster._core.utils import make_new_backfill_id

from orchestration.definitions import defs
from orchestration.partitions import BatchKey, upload_batch_partitions

#: A daemon heartbeat older than this means no daemon is running for the instance.
HEARTBEAT_STALE_SECONDS = 120


def register(instance: dg.DagsterInstance, batches: list[BatchKey]) -> list[str]:
    """Add the batches' partitions that are not registered yet; returns those added."""
    known = set(instance.get_dynamic_partitions(upload_batch_partitions.name))
    new = [b.partition_key for b in batches if b.partition_key not in known]
    if new:
        instance.add_dynamic_partitions(upload_batch_partitions.name, new)
    return new


def launch(instance: dg.DagsterInstance, tenant: str, partition_keys: list[str]) -> str:
    """One asset backfill of every pipeline asset over ``partition_keys`` of one tenant.

    One backfill per tenant, so its runs carry the ``tenant`` tag that the queued run
    coordinator limits per tenant.
    """
    graph = defs.resolve_asset_graph()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=graph,
        partition_names=sorted(partition_keys),
        # Executable assets only: grouping_edits is external (written by `groups edit`).
        asset_selection=sorted(graph.executable_asset_keys),
        backfill_timestamp=time.time(),
        tags={"tenant": tenant},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=f"Historical batches of {tenant}",
        description=f"{len(partition_keys)} upload batches, launched by `orchestration backfill`",
        run_config=None,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


def daemon_is_running(instance: dg.DagsterInstance) -> bool:
    beats = instance.get_daemon_heartbeats()
    beat = beats.get("BACKFILL")
    return beat is not None and time.time() - beat.timestamp < HEARTBEAT_STALE_SECONDS


def status(instance: dg.DagsterInstance, backfill_id: str) -> BulkActionStatus:
    backfill = instance.get_backfill(backfill_id)
    return backfill.status if backfill else BulkActionStatus.FAILED


def is_terminal(value: BulkActionStatus) -> bool:
    return value in BULK_ACTION_TERMINAL_STATUSES


def succeeded(value: BulkActionStatus) -> bool:
    return value in (BulkActionStatus.COMPLETED, BulkActionStatus.COMPLETED_SUCCESS)
