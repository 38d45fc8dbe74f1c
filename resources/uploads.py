"""The uploads bucket: ``uploads/<tenant>/<batch>/<file>``, sealed by a ``_SUCCESS`` object."""

from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from resources.s3 import FetchReport, S3Resource, check_bucket_name, fetch_objects

SEAL_MARKER = "_SUCCESS"


@dataclass(frozen=True)
class UploadedObject:
    key: str
    file: str  # path below the batch prefix: what the shop uploaded
    size: int
    etag: str


class UploadsBucket(dg.ConfigurableResource):
    """Where shops upload batches; read-only for the pipeline."""

    s3: dg.ResourceDependency[S3Resource]
    bucket: str = Field(description="Bucket holding shop uploads (UPLOADS_BUCKET).")
    prefix: str = Field(default="uploads", description="Key prefix above <tenant>/<batch>/.")
    quiet_period_seconds: int = Field(
        default=0,
        description="Also treat a batch without _SUCCESS as finished after this many seconds "
        "without changes; 0 waits for _SUCCESS.",
    )
    fetch_batch_size: int = Field(
        default=10,
        description="Uploads per fetch batch, the unit of the fetch metrics; two batches "
        "are queued at a time.",
    )
    fetch_concurrency: int = Field(
        default=5,
        description="GET requests in flight when fetching uploads (at most the S3 resource's "
        "max_pool_connections).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_bucket_name(self.bucket)

    def batch_prefix(self, tenant: str, batch: str) -> str:
        return f"{self.prefix}/{tenant}/{batch}/"

    def list_batch(self, tenant: str, batch: str) -> list[UploadedObject]:
        """Every object of the batch except the seal marker, paginated, sorted by key."""
        prefix = self.batch_prefix(tenant, batch)
        paginator = self.s3.get_client().get_paginator("list_objects_v2")
        objects = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                file = obj["Key"][len(prefix) :]
                if file == SEAL_MARKER or obj["Key"].endswith("/"):
                    continue
                objects.append(
                    UploadedObject(obj["Key"], file, int(obj["Size"]), obj["ETag"].strip('"'))
                )
        return sorted(objects, key=lambda o: o.key)

    def read_head(self, key: str, size: int = 32) -> bytes:
        """The first bytes of an object (enough to sniff its type) without downloading it."""
        response = self.s3.get_client().get_object(
            Bucket=self.bucket, Key=key, Range=f"bytes=0-{size - 1}"
        )
        return response["Body"].read()

    def fetch(self, keys: list[str]) -> FetchReport:
        return fetch_objects(
            self.s3.get_fetch_client(),
            self.bucket,
            keys,
            batch_size=self.fetch_batch_size,
            max_concurrency=self.fetch_concurrency,
        )
