import dagster as dg

from orchestration.jobs import image_pipeline_job
from orchestration.partitions import upload_batch_partitions
from resources.uploads import UploadsBucket
from sensors.batch_discovery import sealed_batches


@dg.sensor(
    job=image_pipeline_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers each newly sealed upload batch as a partition and runs it once.",
)
def upload_sensor(context: dg.SensorEvaluationContext, uploads: UploadsBucket):
    sealed, open_batches = sealed_batches(uploads.s3.get_client(), uploads.bucket, uploads.prefix)
    registered = set(context.instance.get_dynamic_partitions(upload_batch_partitions.name))
    new = sorted(b for b in sealed if b.partition_key not in registered)
    if not new:
        return dg.SkipReason(f"{len(sealed)} sealed batches all registered, {open_batches} open")
    keys = [b.partition_key for b in new]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=k, run_key=k, tags={"tenant": b.tenant})
            for k, b in zip(keys, new, strict=True)
        ],
        dynamic_partitions_requests=[upload_batch_partitions.build_add_request(keys)],
    )
