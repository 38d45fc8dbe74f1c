"""Resolve where the pipeline's S3 lives, filling in the embedded defaults when unset."""

from __future__ import annotations

import functools
import os

import botocore.exceptions

from orchestration import local_s3
from orchestration.errors import UserError
from resources.memo import MemoStore
from resources.parquet_io_manager import ParquetS3IOManager
from resources.s3 import S3Resource, check_bucket_name
from resources.uploads import UploadsBucket

DEFAULTS = {
    "UPLOADS_BUCKET": "shop-uploads",
    "PIPELINE_BUCKET": "shop-pipeline",
    "AWS_REGION": "us-east-1",
}


def ensure_environment() -> bool:
    """Fill os.environ for this process and its children; True if the embedded S3 is used.

    With ``S3_ENDPOINT_URL`` set, nothing is started and the given credentials are used.
    """
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    for name in ("UPLOADS_BUCKET", "PIPELINE_BUCKET"):
        try:
            check_bucket_name(os.environ[name])
        except ValueError as exc:
            raise UserError(f"{name}: {exc}") from exc
    embedded = not os.environ.get("S3_ENDPOINT_URL")
    if embedded:
        os.environ.update(local_s3.configured().start().env())
        client = s3_from_env().get_client()
        for bucket in (os.environ["UPLOADS_BUCKET"], os.environ["PIPELINE_BUCKET"]):
            try:
                client.head_bucket(Bucket=bucket)
            except botocore.exceptions.ClientError:
                client.create_bucket(Bucket=bucket)
    return embedded


def s3_from_env(shared: bool = False) -> S3Resource:
    """The S3 resource the environment names. ``shared``: the one such resource of this
    process (its boto3 client, about 0.1-0.3 s to create, made once), for a long-running
    server that would otherwise build one per request (the review app). By default a new
    one: commands and tests add hooks to their clients, which must not leak to others."""
    settings = (
        os.environ["S3_ENDPOINT_URL"],
        os.environ.get("AWS_REGION"),
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("AWS_SECRET_ACCESS_KEY"),
    )
    return _shared_s3(*settings) if shared else _s3(*settings)


def _s3(endpoint_url: str, region: str | None, key_id: str | None, secret: str | None):
    return S3Resource(endpoint_url=endpoint_url, region_name=region,
                      aws_access_key_id=key_id, aws_secret_access_key=secret)  # fmt: skip


_shared_s3 = functools.lru_cache(maxsize=8)(_s3)


def uploads_from_env() -> UploadsBucket:
    return UploadsBucket(s3=s3_from_env(), bucket=os.environ["UPLOADS_BUCKET"])


def tables_from_env(shared: bool = False) -> ParquetS3IOManager:
    return ParquetS3IOManager(s3=s3_from_env(shared), bucket=os.environ["PIPELINE_BUCKET"])


def memo_from_env() -> MemoStore:
    return MemoStore(s3=s3_from_env(), bucket=os.environ["PIPELINE_BUCKET"])


def edit_log_from_env(shared: bool = False):
    from resources.edit_log import EditLog

    return EditLog(s3=s3_from_env(shared), bucket=os.environ["PIPELINE_BUCKET"])


def catalog_from_env():
    from resources.catalog_store import CatalogStore

    return CatalogStore(s3=s3_from_env(), bucket=os.environ["PIPELINE_BUCKET"])


def embedder_from_env():
    """The embedder the pipeline's Definitions configure (the same variables, read now)."""
    from resources.embedder import EmbedderResource

    return EmbedderResource(s3=s3_from_env()).get_embedder()
