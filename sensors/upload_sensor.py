import json
from datetime import UTC, datetime

import dagster as dg

from orchestration.jobs import image_pipeline_job
from orchestration.partitions import upload_batch_partitions
from resources.uploads import SEAL_MARKER, UploadsBucket
from sensors.batch_discovery import discover, round_robin

#: Runs requested per tick. Beyond it, ready batches wait for the next tick (30 s later);
#: the queued run coordinator's per-tenant limits then decide what runs at once.
MAX_RUNS_PER_TICK = 25


def _cursor(raw: str | None) -> dict:
    state = json.loads(raw) if raw else {}
    return {"done": state.get("done", {}), "last_tenant": state.get("last_tenant")}


@dg.sensor(
    job=image_pipeline_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers each sealed (or quiet) upload batch as a partition and runs it; "
    "a re-sealed batch runs again. Fair across tenants.",
)
def upload_sensor(context: dg.SensorEvaluationContext, uploads: UploadsBucket):
    state = _cursor(context.cursor)
    # A listing error raises: the tick fails with it and the cursor stays where it was.
    found = discover(
        uploads.s3.get_client(),
        uploads.bucket,
        uploads.prefix,
        now=datetime.now(UTC),
        quiet_seconds=uploads.quiet_period_seconds,
        done=state["done"],
    )
    for partition_key, error in found.malformed.items():
        context.log.error(f"{partition_key}: {error}; fix it and re-write {SEAL_MARKER}")
    if found.stray:
        context.log.warning(f"{len(found.stray)} keys outside <tenant>/<batch>/<file>: "
                            f"{found.stray[:5]}")  # fmt: skip
    registered = set(context.instance.get_dynamic_partitions(upload_batch_partitions.name))
    ready, adopted = {}, 0
    for key, token in found.ready.items():
        if key.partition_key in registered and key.partition_key not in state["done"]:
            # Registered by `run` or `backfill` before this sensor saw it: already handled.
            # Only a later re-seal (a new token) makes it run again.
            state["done"][key.partition_key] = token
            adopted += 1
        else:
            ready[key] = token
    chosen, last_tenant = round_robin(ready, state["last_tenant"], MAX_RUNS_PER_TICK)
    for key in chosen:
        state["done"][key.partition_key] = ready[key]
    cursor = json.dumps({"done": state["done"], "last_tenant": last_tenant})
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
                run_key=f"{k.partition_key}@{ready[k]}",
                tags={"tenant": k.tenant, "upload/seal": ready[k]},
            )
            for k in chosen
        ],
        dynamic_partitions_requests=[upload_batch_partitions.build_add_request(new_keys)],
        cursor=cursor,
    )
