"""Test data: real photos with near-duplicate edits, encoded as uploads."""

from __future__ import annotations

import io

import dagster as dg
import pandas as pd
from PIL import Image

from photogroup.samples import load_photo
from photogroup.variants import EDITS


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def photo_batch(photos: dict[str, list[str]]) -> dict[str, bytes]:
    """file name -> JPEG bytes; each photo plus the named edits of it."""
    files = {}
    for name, edits in photos.items():
        original = load_photo(name)
        files[f"{name}.jpg"] = jpeg(original)
        files.update({f"{name}-{edit}.jpg": jpeg(EDITS[edit](original)) for edit in edits})
    return files


def upload(client, bucket: str, tenant: str, batch: str, files: dict[str, bytes]) -> None:
    prefix = f"uploads/{tenant}/{batch}/"
    for name, body in files.items():
        client.put_object(Bucket=bucket, Key=prefix + name, Body=body)
    client.put_object(Bucket=bucket, Key=prefix + "_SUCCESS", Body=b"")


def materialise(
    instance: dg.DagsterInstance,
    key: str,
    resources: dict | None = None,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    """All four assets of one partition, in-process, with the project's resources."""
    from assets import ALL_ASSETS
    from orchestration.definitions import defs
    from orchestration.partitions import upload_batch_partitions

    if not instance.has_dynamic_partition(upload_batch_partitions.name, key):
        instance.add_dynamic_partitions(upload_batch_partitions.name, [key])
    return dg.materialize(
        ALL_ASSETS,
        partition_key=key,
        resources=resources or defs.resources,
        instance=instance,
        run_config=run_config,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    from orchestration.runner import materializations

    (event,) = materializations(result, asset)
    return {k: v.value for k, v in event.metadata.items()}


def read_table(s3_client, bucket: str, asset: str, key: str) -> pd.DataFrame:
    """Plain pandas on the object the IO manager wrote: no Dagster involved."""
    body = s3_client.get_object(Bucket=bucket, Key=f"tables/{asset}/{key}.parquet")["Body"]
    return pd.read_parquet(io.BytesIO(body.read()))
