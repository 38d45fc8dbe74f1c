"""Parquet tables on S3 at ``<prefix>/<asset key>/<tenant>/<batch>.parquet``.

Only small tables cross asset boundaries (keys, hashes, vectors): never image bytes, and
never pickles, which is what dagster-aws's default S3 IO manager would write.

A run over several partitions (a single-run backfill, ``BackfillPolicy.single_run()``) hands
this manager a dict partition key -> DataFrame to store, and gets one back on load; every
partition is still its own object, so single-partition runs and plain pandas read them.
"""

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import botocore.exceptions
import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from resources.s3 import S3Resource, check_bucket_name

#: What an asset receives or returns through this manager: a DataFrame for one partition,
#: a dict partition key -> DataFrame for a run over several.
Tables = pd.DataFrame | dict[str, pd.DataFrame]
#: Missing partitions named in full in the error; the rest are counted.
MISSING_SHOWN = 20

_T = TypeVar("_T")


def read_parquet_bytes(body: bytes) -> pd.DataFrame:
    """One Parquet object as a DataFrame, without starting Arrow's thread pools.

    ``pq.read_table`` goes through Arrow's dataset reader, which starts its IO and CPU
    pools; a short-lived process (the CLI) can then abort at exit with "terminate called
    without an active exception" while the pools are torn down (apache/arrow#34314). One
    batch's table is small, so reading it on the calling thread costs nothing measurable.
    """
    table = pq.ParquetFile(pa.BufferReader(body)).read(use_threads=False)
    return table.to_pandas(use_threads=False)


class MissingPartitionError(LookupError):
    """A partition of a multi-partition input has no table: it was never materialised."""


class ParquetS3IOManager(dg.ConfigurableIOManager):
    """Writes each partition's DataFrame as one Parquet object that plain pandas can read."""

    s3: dg.ResourceDependency[S3Resource]
    bucket: str = Field(description="Pipeline bucket (PIPELINE_BUCKET) for the tables.")
    prefix: str = Field(default="tables", description="Key prefix of all asset tables.")
    max_concurrency: int = Field(
        default=8,
        description="Tables read or written at once when a run covers several partitions "
        "(at most the S3 resource's max_pool_connections).",
    )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_bucket_name(self.bucket)

    def object_key(self, asset_key: dg.AssetKey, partition_key: str | None) -> str:
        stem = "/".join(asset_key.path)
        return f"{self.prefix}/{stem}/{partition_key or '__unpartitioned__'}.parquet"

    def uri(self, asset_key: dg.AssetKey, partition_key: str | None) -> str:
        return f"s3://{self.bucket}/{self.object_key(asset_key, partition_key)}"

    def handle_output(self, context: dg.OutputContext, obj: Tables) -> None:
        keys = _several_partitions(context)
        if keys is not None:
            self._handle_partitions(context, keys, obj)
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()} covers one partition: return a "
                f"DataFrame, not {type(obj).__name__}"
            )
        key = self.object_key(context.asset_key, _one_partition(context))
        body = self._write(key, obj)
        context.add_output_metadata(
            {
                "uri": dg.MetadataValue.path(f"s3://{self.bucket}/{key}"),
                "parquet_bytes": len(body),
                "dagster/row_count": len(obj),
            }
        )

    def _handle_partitions(
        self, context: dg.OutputContext, keys: Sequence[str], obj: Tables
    ) -> None:
        asset = context.asset_key.to_user_string()
        if not isinstance(obj, Mapping):
            raise TypeError(
                f"{asset} covers {len(keys)} partitions in this run: return a dict partition "
                f"key -> DataFrame, not {type(obj).__name__}"
            )
        if set(obj) != set(keys):
            missing, extra = sorted(set(keys) - set(obj)), sorted(set(obj) - set(keys))
            raise ValueError(
                f"{asset}: the dict's keys must be the run's partitions; missing "
                f"{_names(missing)}, not in the run {_names(extra)}"
            )
        bodies = self._map(
            lambda k: self._write(self.object_key(context.asset_key, k), obj[k]), keys
        )
        # This metadata goes on every partition's materialization (Dagster has no
        # per-partition IO manager metadata), so it describes the run, not one object.
        stem = "/".join(context.asset_key.path)
        context.add_output_metadata(
            {
                "tables_prefix": dg.MetadataValue.path(f"s3://{self.bucket}/{self.prefix}/{stem}/"),
                "run_partitions": len(keys),
                "run_parquet_bytes": sum(len(b) for b in bodies),
            }
        )

    def load_input(self, context: dg.InputContext) -> Tables:
        keys = _several_partitions(context)
        if keys is not None:
            return self.read_many(context.asset_key, keys)
        return self.read(context.asset_key, _one_partition(context))

    def read(self, asset_key: dg.AssetKey, partition_key: str | None) -> pd.DataFrame:
        key = self.object_key(asset_key, partition_key)
        body = self.s3.get_client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return read_parquet_bytes(body)

    def read_many(
        self, asset_key: dg.AssetKey, partition_keys: Sequence[str]
    ) -> dict[str, pd.DataFrame]:
        """Each partition's table, read concurrently; every missing one is named at once."""

        def read_or_none(partition_key: str) -> pd.DataFrame | None:
            try:
                return self.read(asset_key, partition_key)
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise

        tables = dict(zip(partition_keys, self._map(read_or_none, partition_keys), strict=True))
        missing = [k for k, table in tables.items() if table is None]
        if missing:
            raise MissingPartitionError(
                f"{asset_key.to_user_string()} has no table for {len(missing)} of "
                f"{len(partition_keys)} partitions: {_names(missing)} (expected at "
                f"{self.uri(asset_key, missing[0])}); materialise them first"
            )
        return {k: t for k, t in tables.items() if t is not None}

    def _write(self, key: str, table: pd.DataFrame) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buffer)
        body = buffer.getvalue()
        self.s3.get_client().put_object(Bucket=self.bucket, Key=key, Body=body)
        return body

    def _map(self, fn: Callable[[str], _T], keys: Sequence[str]) -> list[_T]:
        """``fn`` over ``keys`` on a bounded pool (one S3 request each), in order."""
        if not keys:
            return []
        with ThreadPoolExecutor(
            max_workers=max(1, min(self.max_concurrency, len(keys))),
            thread_name_prefix="parquet-io",
        ) as pool:
            return list(pool.map(fn, keys))


def _several_partitions(context: dg.InputContext | dg.OutputContext) -> list[str] | None:
    """The asset partitions when there are not exactly one (a range run), else None."""
    if context.has_asset_partitions:
        keys = context.asset_partition_keys
        if len(keys) != 1:
            return sorted(keys)  # a subset's keys come in set order: make logs and errors stable
    return None


def _one_partition(context: dg.InputContext | dg.OutputContext) -> str | None:
    # The asset partition, not the run's partition key: a single-run backfill of one batch
    # is tagged as a range (start == end) and has no run partition key.
    if context.has_asset_partitions:
        return context.asset_partition_key
    return context.partition_key if context.has_partition_key else None


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:MISSING_SHOWN])
    more = len(keys) - MISSING_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown or "none"


def range_data_version(versions: Mapping[str, dg.DataVersion]) -> dg.DataVersion:
    """The data version of a multi-partition output, from each partition's own version.

    Dagster 1.13 records one data version per output, the same on every partition of a
    range; this one changes exactly when some partition's content does.
    """
    lines = "\n".join(f"{key}\t{versions[key].value}" for key in sorted(versions))
    return dg.DataVersion(hashlib.sha256(lines.encode()).hexdigest()[:24])
