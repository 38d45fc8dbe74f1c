"""Test data: real photos with near-duplicate edits, encoded as uploads."""

from __future__ import annotations

import io
from collections.abc import Sequence

import dagster as dg
import pandas as pd
from PIL import Image

from assets import ALL_ASSETS
from orchestration.definitions import defs
from orchestration.partitions import upload_batch_partitions
from orchestration.runner import materializations
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


#: What most tests check: the grouping stages (raw_images to image_clusters).
GROUPING = ("image_clusters",)
#: Every asset: renditions, cut-outs (GrabCut) and the catalogue too, several seconds an
#: image; only for tests of the whole run.
EVERY_ASSET = ("catalog_matches", "catalog", "product_cutouts")


def materialise(
    instance: dg.DagsterInstance,
    key: str,
    resources: dict | None = None,
    run_config: dict | None = None,
    *,
    assets: Sequence[str],
) -> dg.ExecuteInProcessResult:
    """``assets`` and everything upstream of them for one partition, in-process, with the
    project's resources. Tests name what they check: each asset costs its computation."""
    if not instance.has_dynamic_partition(upload_batch_partitions.name, key):
        instance.add_dynamic_partitions(upload_batch_partitions.name, [key])
    # grouping_edits is external (the edit log): read by product_groups, never computed.
    selection = dg.AssetSelection.assets(*assets).upstream() - dg.AssetSelection.assets(
        "grouping_edits"
    )
    return dg.materialize(
        ALL_ASSETS,
        partition_key=key,
        resources=resources or defs.resources,
        instance=instance,
        run_config=run_config,
        selection=selection,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    (event,) = materializations(result, asset)
    return {k: v.value for k, v in event.metadata.items()}


def read_table(s3_client, bucket: str, asset: str, key: str) -> pd.DataFrame:
    """Plain pandas on the object the IO manager wrote: no Dagster involved."""
    body = s3_client.get_object(Bucket=bucket, Key=f"tables/{asset}/{key}.parquet")["Body"]
    return pd.read_parquet(io.BytesIO(body.read()))
