from datetime import UTC, datetime

import dagster as dg

from orchestration.jobs import image_pipeline_job
from orchestration.partitions import upload_batch_partitions
from resources.uploads import SEAL_MARKER, UploadsBucket
from sensors.batch_discovery import discover, round_robin
from sensors.sensor_state import SensorState

#: Runs requested per tick. Beyond it, ready batches wait for the next tick (30 s later);
#: the queued run coordinator's per-tenant limits then decide what runs at once.
MAX_RUNS_PER_TICK = 25


def clock() -> datetime:
    """Now, in UTC (a function, so tests can move time instead of sleeping)."""
    return datetime.now(UTC)


def _run_since_sealed(instance: dg.DagsterInstance, sealed: dict[str, datetime]) -> set[str]:
    """Partitions with a run created after their sealing (by `run`, a backfill or the UI),
    looked up a few hundred partitions per query."""
    keys, found = sorted(sealed), set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        runs = dg.RunsFilter(tags={"dagster/partition": chunk},
                             created_after=min(sealed[k] for k in chunk))  # fmt: skip
        for record in instance.get_run_records(filters=runs):
            key = record.dagster_run.tags.get("dagster/partition")
            if key in sealed and record.create_timestamp > sealed[key]:
                found.add(key)
    return found


@dg.sensor(
    job=image_pipeline_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers each sealed (or quiet) upload batch as a partition and runs it; "
    "a re-sealed batch runs again. Fair across tenants.",
)
def upload_sensor(context: dg.SensorEvaluationContext, uploads: UploadsBucket):
    state = SensorState.from_cursor(context.cursor)
    now = clock()
    # A listing error raises: the tick fails with it and the cursor stays where it was.
    found = discover(
        uploads.s3.get_client(),
        uploads.bucket,
        uploads.prefix,
        now=now,
        quiet_seconds=uploads.quiet_period_seconds,
        handled=state.handled,
    )
    for partition_key, error in found.malformed.items():
        context.log.error(f"{partition_key}: {error}; fix it and re-write {SEAL_MARKER}")
    if found.stray:
        context.log.warning(f"{len(found.stray)} keys outside <tenant>/<batch>/<file>: "
                            f"{found.stray[:5]}")  # fmt: skip
    registered = set(context.instance.get_dynamic_partitions(upload_batch_partitions.name))
    # Registered and run (by `run`, a backfill or the UI) since it was sealed, before this
    # sensor saw it: handled, not run again. A later re-seal (a new sealing) runs again.
    ran = _run_since_sealed(context.instance, {
        k.partition_key: sealed for k, (_, sealed) in found.ready.items()
        if k.partition_key in registered and not state.knows(k.partition_key)
    })  # fmt: skip
    ready = {}
    for key, (token, sealed) in found.ready.items():
        if key.partition_key in ran:
            state.mark(key.partition_key, token, sealed)
        else:
            ready[key] = (token, sealed)
    adopted = len(ran)
    tokens = {key: token for key, (token, _) in ready.items()}
    chosen, state.last_tenant = round_robin(tokens, state.last_tenant, MAX_RUNS_PER_TICK)
    taken = set(chosen)
    for key in chosen:
        state.mark(key.partition_key, *ready[key])
    # Still to do, looked at again every tick: ready batches beyond this tick's cap,
    # sealed ones missing promised files, and malformed ones (reported until fixed).
    state.pending = {
        **found.incomplete,
        **found.malformed_tokens,
        **{k.partition_key: t for k, t in tokens.items() if k not in taken},
    }
    state.advance(now)
    cursor = state.to_cursor()
    if not chosen:
        return dg.SensorResult(
            skip_reason=f"nothing new: {found.unchanged + adopted} batches handled, "
            f"{found.waiting} waiting for a seal or quiet period, {len(found.malformed)} with a "
            f"malformed {SEAL_MARKER}",
            cursor=cursor,
        )
    context.log.info(f"requesting {len(chosen)} of {len(ready)} ready batches")
    new_keys = [k.partition_key for k in chosen if k.partition_key not in registered]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=k.partition_key,
                run_key=f"{k.partition_key}@{tokens[k]}",
                tags={"tenant": k.tenant, "upload/seal": tokens[k]},
            )
            for k in chosen
        ],
        dynamic_partitions_requests=[upload_batch_partitions.build_add_request(new_keys)],
        cursor=cursor,
    )
