"""The one code location: assets, job, sensor and resources, listed explicitly.

Connection settings are read from the environment when a run starts (``EnvVar``), so the
UI shows variable names, never values. ``python -m orchestration`` and ``./dev up`` fill
in the embedded defaults (local SeaweedFS) when ``S3_ENDPOINT_URL`` is unset.
"""

import os

import dagster as dg

from assets import ALL_ASSETS
from orchestration import profiles
from orchestration.jobs import image_pipeline_job
from resources.catalog_store import CatalogStore
from resources.cutouts import CutoutResource
from resources.edit_log import EditLog
from resources.embedder import EmbedderResource
from resources.memo import MemoStore
from resources.parquet_io_manager import ParquetS3IOManager
from resources.s3 import S3Resource
from resources.uploads import UploadsBucket
from sensors.upload_sensor import upload_sensor

#: The embedding provider unless EMBEDDER_PROVIDER says otherwise (see README).
DEFAULT_EMBEDDER = "local"
#: The background-removal provider unless CUTOUT_PROVIDER says otherwise.
DEFAULT_CUTOUTS = "u2netp"


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
        "cutouts": CutoutResource(
            provider=os.environ.get("CUTOUT_PROVIDER", DEFAULT_CUTOUTS),
            requests_per_minute=float(os.environ.get("CUTOUT_REQUESTS_PER_MINUTE", "500")),
            limits_bucket=dg.EnvVar("PIPELINE_BUCKET"),
            replicate_version=os.environ.get("REPLICATE_MODEL_VERSION", ""),
            replicate_base_url=os.environ.get("REPLICATE_BASE_URL", "https://api.replicate.com"),
            bedrock_region=os.environ.get("AWS_REGION"),
            bedrock_endpoint_url=os.environ.get("BEDROCK_ENDPOINT_URL"),
            onnx_model=os.environ.get("CUTOUT_ONNX_MODEL", ""),
            u2netp_model=os.environ.get("CUTOUT_U2NETP_MODEL", ""),
            s3=s3,
        ),
        # Provider by environment so one deployment switches without a code change.
        "embedder": EmbedderResource(
            provider=os.environ.get("EMBEDDER_PROVIDER", DEFAULT_EMBEDDER),
            onnx_model=os.environ.get("EMBEDDER_ONNX_MODEL", ""),
            bedrock_region=os.environ.get("AWS_REGION"),
            bedrock_endpoint_url=os.environ.get("BEDROCK_ENDPOINT_URL"),
            s3=s3,
        ),
    }


defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[image_pipeline_job],
    sensors=[upload_sensor],
    resources=pipeline_resources(env_s3()),
    executor=profiles.executor(),  # PIPELINE_PROFILE: multiprocess or Celery
)
