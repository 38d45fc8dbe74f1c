"""Parquet tables on S3 at ``<prefix>/<asset key>/<tenant>/<batch>.parquet``.

Only small tables cross asset boundaries (keys, hashes, vectors): never image bytes, and
never pickles, which is what dagster-aws's default S3 IO manager would write.
"""

import io

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from resources.s3 import S3Resource, check_bucket_name


class ParquetS3IOManager(dg.ConfigurableIOManager):
    """Writes each partition's DataFrame as one Parquet object that plain pandas can read."""

    s3: dg.ResourceDependency[S3Resource]
    bucket: str = Field(description="Pipeline bucket (PIPELINE_BUCKET) for the tables.")
    prefix: str = Field(default="tables", description="Key prefix of all asset tables.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_bucket_name(self.bucket)

    def object_key(self, asset_key: dg.AssetKey, partition_key: str | None) -> str:
        stem = "/".join(asset_key.path)
        return f"{self.prefix}/{stem}/{partition_key or '__unpartitioned__'}.parquet"

    def uri(self, asset_key: dg.AssetKey, partition_key: str | None) -> str:
        return f"s3://{self.bucket}/{self.object_key(asset_key, partition_key)}"

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        partition = context.partition_key if context.has_partition_key else None
        key = self.object_key(context.asset_key, partition)
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(obj, preserve_index=False), buffer)
        body = buffer.getvalue()
        self.s3.get_client().put_object(Bucket=self.bucket, Key=key, Body=body)
        context.add_output_metadata(
            {
                "uri": dg.MetadataValue.path(f"s3://{self.bucket}/{key}"),
                "parquet_bytes": len(body),
                "dagster/row_count": len(obj),
            }
        )

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        partition = context.partition_key if context.has_partition_key else None
        return self.read(context.asset_key, partition)

    def read(self, asset_key: dg.AssetKey, partition_key: str | None) -> pd.DataFrame:
        key = self.object_key(asset_key, partition_key)
        body = self.s3.get_client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return pq.read_table(io.BytesIO(body)).to_pandas()
