"""The uploads bucket: ``uploads/<tenant>/<batch>/<file>``, sealed by a ``_SUCCESS`` object."""

from dataclasses import dataclass

from pydantic import Field

from resources.s3 import FetchingBucket

SEAL_MARKER = "_SUCCESS"


@dataclass(frozen=True)
class UploadedObject:
    key: str
    file: str  # path below the batch prefix: what the shop uploaded
    size: int
    etag: str


class UploadsBucket(FetchingBucket):
    """Where shops upload batches; read-only for the pipeline."""

    bucket: str = Field(description="Bucket holding shop uploads (UPLOADS_BUCKET).")
    prefix: str = Field(default="uploads", description="Key prefix above <tenant>/<batch>/.")
    quiet_period_seconds: int = Field(
        default=0,
        description="Also treat a batch without _SUCCESS as finished after this many seconds "
        "without changes; 0 waits for _SUCCESS.",
    )

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
