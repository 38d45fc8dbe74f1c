"""The one code location: assets, job, sensor and resources, listed explicitly.

Nothing here reads the environment: connection settings are ``EnvVar`` (resolved when a
run starts, so the UI shows variable names, never values), provider settings left unset are
read from their variables when a run starts (resources/run_settings.py), and the executor
picks its profile at run launch. ``python -m orchestration`` and ``./dev up`` fill in the
embedded defaults (local SeaweedFS) when ``S3_ENDPOINT_URL`` is unset.
"""

import dagster as dg

from assets import ALL_ASSETS
from orchestration import profiles
from orchestration.jobs import image_pipeline_job
from photogroup.chunks import one_blas_thread
from resources.catalog_store import CatalogStore
from resources.cutouts import CutoutResource
from resources.edit_log import EditLog
from resources.embedder import EmbedderResource
from resources.memo import MemoStore
from resources.parquet_io_manager import ParquetS3IOManager
from resources.s3 import S3Resource
from resources.uploads import UploadsBucket
from sensors.upload_sensor import upload_sensor

# Every process that loads the code location (the code server, each run and step worker):
# the pipeline parallelises over images itself.
one_blas_thread()


def env_s3(resource_class: type[S3Resource] = S3Resource) -> S3Resource:
    """The S3 connection, read from the environment when a run starts."""
    return resource_class(
        endpoint_url=dg.EnvVar("S3_ENDPOINT_URL"),
        region_name=dg.EnvVar("AWS_REGION"),
        aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
    )


def pipeline_resources(s3: S3Resource) -> dict:
    """Every resource the assets and sensor use, all sharing one S3 connection config."""
    return {
        "s3": s3,
        # Set quiet_period_seconds here to also finish batches that never get a _SUCCESS.
        "uploads": UploadsBucket(s3=s3, bucket=dg.EnvVar("UPLOADS_BUCKET")),
        "memo": MemoStore(s3=s3, bucket=dg.EnvVar("PIPELINE_BUCKET")),
        "io_manager": ParquetS3IOManager(s3=s3, bucket=dg.EnvVar("PIPELINE_BUCKET")),
        "catalog": CatalogStore(s3=s3, bucket=dg.EnvVar("PIPELINE_BUCKET")),
        "edit_log": EditLog(s3=s3, bucket=dg.EnvVar("PIPELINE_BUCKET")),
        # Providers left unset: CUTOUT_* / EMBEDDER_PROVIDER etc. when a run starts, so one
        # deployment switches without a code change (and the launchpad can override).
        "cutouts": CutoutResource(limits_bucket=dg.EnvVar("PIPELINE_BUCKET"), s3=s3),
        "embedder": EmbedderResource(s3=s3),
    }


defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[image_pipeline_job],
    sensors=[upload_sensor],
    resources=pipeline_resources(env_s3()),
    executor=profiles.pipeline_executor,  # multiprocess or Celery, chosen at run launch
)
