"""product_cutouts on a real local S3: the default provider's (u2netp) masks and memo, and two runs
of different shops sharing one Replicate quota through the S3 token bucket."""

import io
import json
import subprocess
import sys
import time

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from assets import ALL_ASSETS
from bench.cutout_composites import composites
from orchestration.definitions import defs
from photogroup.cutout import mask_iou
from photogroup.ratelimit import most_in_window
from photogroup.u2netp import MODEL_SHA256
from resources.shared_ratelimit import SharedTokenBucket
from tests.helpers import jpeg, materialise, metadata, read_table, upload
from tests.standins.replicate_api import VERSION, ReplicateStandIn

pytestmark = pytest.mark.integration

UPSTREAM = ["raw_images", "image_features", "image_embeddings", "image_clusters",
            "product_groups", "product_images"]  # fmt: skip


def plain_composites(count: int) -> dict[str, tuple[Image.Image, Image.Image]]:
    chosen = [c for c in composites() if c[1] in ("plain", "gradient")][:count]
    return {f"{name}.jpg": (image, mask) for name, _, image, mask in chosen}


def test_default_u2netp_cutouts_masks_memo_and_covers_scope(s3_env, s3_client):
    cases = plain_composites(6)
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "c1",
           {name: jpeg(image, 95) for name, (image, _) in cases.items()})  # fmt: skip
    pipeline = s3_env["PIPELINE_BUCKET"]
    with dg.instance_for_test() as instance:
        first = materialise(instance, "shop/c1", assets=("product_cutouts",))
        table = read_table(s3_client, pipeline, "product_cutouts", "shop/c1")
        assert (table.status == "ok").all() and sorted(table.file) == sorted(cases)
        for row in table.itertuples():
            cutout = _image(s3_client, pipeline, row.cutout_key)
            mask = _image(s3_client, pipeline, row.mask_key)
            truth = cases[row.file][1]
            assert cutout.mode == "RGBA" and mask.mode == "L" and mask.size == truth.size
            assert np.array_equal(np.asarray(cutout.getchannel("A")), np.asarray(mask))
            assert mask_iou(mask, truth) > 0.8, row.file
            assert row.foreground_fraction == pytest.approx(np.asarray(mask).mean() / 255, abs=1e-3)
        meta = metadata(first, "product_cutouts")
        assert (meta["memo_misses"], meta["failed"], meta["provider"]) == (6, 0, "u2netp")
        assert meta["model_id"].startswith(f"u2netp-{MODEL_SHA256}-")
        assert meta["provider_workers"] >= 1 and meta["provider_images"] == 6
        assert "data:image/jpeg;base64," in meta["cutouts_preview"]

        second = materialise(instance, "shop/c1", assets=("product_cutouts",))
        meta = metadata(second, "product_cutouts")
        assert (meta["memo_hits"], meta["memo_misses"], meta["provider_images"]) == (6, 0, 0)

        covers = dg.materialize(
            ALL_ASSETS, partition_key="shop/c1", instance=instance,
            resources=defs.resources, selection=["product_cutouts"],
            run_config={"ops": {"product_cutouts": {"config": {"scope": "covers"}}}},
        )  # fmt: skip
    groups = read_table(s3_client, pipeline, "product_groups", "shop/c1")
    covered = read_table(s3_client, pipeline, "product_cutouts", "shop/c1")
    assert sorted(covered.sha256) == sorted(set(groups.cover_sha256))
    assert metadata(covers, "product_cutouts")["provider_images"] == 0  # memoised already


CHILD = """
import json, sys
import dagster as dg
from assets import ALL_ASSETS
from orchestration.definitions import defs
key = sys.argv[1]
instance = dg.DagsterInstance.ephemeral()
instance.add_dynamic_partitions("upload_batches", [key])
result = dg.materialize(ALL_ASSETS, partition_key=key, resources=defs.resources,
                        instance=instance, selection=["product_cutouts"])
(event,) = result.asset_materializations_for_node("product_cutouts")
print(json.dumps({k: v.value for k, v in event.metadata.items()
                  if isinstance(v.value, (int, float, str))}))
"""


def test_two_runs_share_the_quota_and_record_the_failed_image(s3_env, s3_client, subprocess_env):
    # Two shops of 20 images, one of them the image the provider always fails.
    pictures = [image for _, _, image, _ in composites()][:40]
    pictures[25] = pictures[25].copy()
    pictures[25].paste((255, 0, 255), (0, 0, 16, 16))  # survives the JPEG rendition
    batches = {"shop-a/big": pictures[:20], "shop-b/small": pictures[20:]}
    for key, images in batches.items():
        tenant, batch = key.split("/")
        files = {f"{i:02d}.png": _png(im) for i, im in enumerate(images)}
        upload(s3_client, s3_env["UPLOADS_BUCKET"], tenant, batch, files)
    with dg.instance_for_test() as instance:
        for key in batches:
            instance.add_dynamic_partitions("upload_batches", [key])
            dg.materialize(ALL_ASSETS, partition_key=key, instance=instance,
                           resources=defs.resources, selection=UPSTREAM)  # fmt: skip

    limit = 120  # per minute; the shared bucket runs both shops at 90 % of it together
    standin = ReplicateStandIn(latency=(0.3, 1.5), create_limit_per_minute=limit,
                               fail_image=_magenta_block)  # fmt: skip
    with standin:
        env = {**subprocess_env, "CUTOUT_PROVIDER": "replicate",
               "REPLICATE_API_TOKEN": standin.token, "REPLICATE_MODEL_VERSION": VERSION,
               "REPLICATE_BASE_URL": standin.base_url,
               "CUTOUT_REQUESTS_PER_MINUTE": str(limit)}  # fmt: skip
        started = time.monotonic()
        runs = {}
        for key in batches:
            runs[key] = subprocess.Popen([sys.executable, "-c", CHILD, key], env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)  # fmt: skip
        outputs = {}
        for key, proc in runs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            outputs[key] = json.loads(out.strip().splitlines()[-1])
    creates = sorted(r.arrived - started for r in standin.requests if r.kind == "create")
    assert standin.token not in json.dumps(outputs)
    assert len(creates) >= 40
    assert not [r for r in standin.requests if r.kind == "create" and r.status == 429]
    # Both runs' creates together stay within the shared bucket's bound (capacity + block +
    # rate x W in any W seconds). Checked to fail with a private bucket per run, which
    # sends twice the rate while both run.
    bound = SharedTokenBucket.for_limit(
        limit, client=s3_client, bucket=s3_env["PIPELINE_BUCKET"], key="x", tenant="t"
    ).max_in_window
    for window in (5.0, 10.0):
        assert most_in_window(creates, window) <= bound(window), (window, creates)

    big = read_table(s3_client, s3_env["PIPELINE_BUCKET"], "product_cutouts", "shop-a/big")
    small = read_table(s3_client, s3_env["PIPELINE_BUCKET"], "product_cutouts", "shop-b/small")
    assert (big.status == "ok").all() and len(big) == 20
    failed = small[small.status != "ok"].iloc[0]
    assert failed.file == "05.png" and failed.reason
    assert (small.status == "ok").sum() == 19
    meta = outputs["shop-b/small"]
    assert meta["failed"] == 1 and meta["provider_predictions_in_flight_max"] >= 2


def _magenta_block(image: Image.Image) -> bool:
    r, g, b = image.convert("RGB").getpixel((4, 4))
    return r > 200 and g < 60 and b > 200


def _image(s3_client, bucket: str, key: str) -> Image.Image:
    return Image.open(io.BytesIO(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()))


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
