"""One pass over each image (issue 19), counted rather than timed: S3 GETs through a
botocore hook on the run's clients, decodes through a counter on Pillow's tile loader."""

import threading
from collections import Counter

import dagster as dg
import pytest
from PIL import ImageFile

from assets import ALL_ASSETS
from orchestration.definitions import env_s3, pipeline_resources
from orchestration.partitions import upload_batch_partitions
from orchestration.runner import materializations
from resources.s3 import S3Resource
from tests.helpers import metadata, photo_batch, read_table, upload

pytestmark = pytest.mark.integration

GETS: Counter = Counter()  # "upload" / "working copy" / "other" -> GetObject calls
DECODES: Counter = Counter()  # image format -> decodes
_LOCK = threading.Lock()
PHOTOS = {"astronaut": ["flipped"], "coffee": ["resized"], "chelsea": [], "rocket": []}
STAGES = ["raw_images", "product_images", "image_features", "image_embeddings"]


class CountingS3Resource(S3Resource):
    """The real client, with a botocore hook that counts every GetObject by kind."""

    def create_client(self):
        client = super().create_client()

        def count(params, **_):
            key = params["Key"]
            kind = "upload" if key.startswith("uploads/") else "other"
            with _LOCK:
                GETS["working copy" if key.startswith("memo/work/") else kind] += 1

        client.meta.events.register("provide-client-params.s3.GetObject", count)
        return client


@pytest.fixture(autouse=True)
def counters(monkeypatch):
    """Pillow decodes when ``load`` finds tiles left: count those, by format."""
    load = ImageFile.ImageFile.load

    def counting(self):
        if self.tile:
            with _LOCK:
                DECODES[self.format] += 1
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting)
    GETS.clear()
    DECODES.clear()


def _materialise(instance, selection: list[str], run_config: dict | None = None):
    key = "shop/one-pass"
    if not instance.has_dynamic_partition(upload_batch_partitions.name, key):
        instance.add_dynamic_partitions(upload_batch_partitions.name, [key])
    return dg.materialize(
        ALL_ASSETS,
        selection=selection,
        partition_key=key,
        resources=pipeline_resources(env_s3(CountingS3Resource)),
        instance=instance,
        run_config=run_config,
    )


def test_each_upload_is_fetched_and_decoded_once_and_each_working_copy_read_once(s3_env, s3_client):
    files = photo_batch(PHOTOS)
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "one-pass", files)
    DECODES.clear()  # making the test photos decoded scikit-image's files
    # Small chunks: the working copies of one image are still read once across chunks.
    config = {"ops": {"image_analysis": {"config": {"chunk_size": 2}}}}
    with dg.instance_for_test() as instance:
        result = _materialise(instance, STAGES, config)
        assert result.success
        # raw_images and product_images: one GET of each upload and one decode of it.
        assert GETS["upload"] == len(files)
        assert DECODES["JPEG"] == len(files)
        renditions = metadata(result, "product_images")
        assert renditions["originals_fetched"] == 0  # made from the manifest's decode
        assert (renditions["encoded"], renditions["memo_misses"]) == (6 * len(files), len(files))
        # Features and embeddings together: one read and one decode of each working copy.
        assert GETS["working copy"] == len(files)
        assert DECODES["WEBP"] == len(files)
        for stage in ("image_features", "image_embeddings"):
            meta = metadata(result, stage)
            assert (meta["work_images_loaded"], meta["images_decoded"]) == (len(files),) * 2
        GETS.clear()
        DECODES.clear()
        warm = _materialise(instance, STAGES, config)
    assert warm.success
    assert GETS["upload"] == GETS["working copy"] == 0  # warm: no image GET, no decode
    assert sum(DECODES.values()) == 0
    assert metadata(warm, "product_images")["memo_hits"] == len(files)


def test_renditions_alone_fetch_and_decode_each_upload_once(s3_env, s3_client):
    """product_images without raw_images: the manifest comes from its memo (no GET), and
    each upload is fetched and decoded once, for its renditions."""
    files = photo_batch({"astronaut": ["flipped"], "coffee": []})
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "one-pass", files)
    with dg.instance_for_test() as instance:
        assert _materialise(instance, ["raw_images"]).success
        GETS.clear()
        DECODES.clear()
        only = _materialise(instance, ["product_images"])
    assert only.success
    assert materializations(only, "raw_images") == []
    assert (GETS["upload"], DECODES["JPEG"]) == (len(files), len(files))
    meta = metadata(only, "product_images")
    assert (meta["originals_fetched"], meta["memo_misses"]) == (len(files), len(files))
    checks = {e.check_name for e in only.get_asset_check_evaluations()}
    assert checks == {"every_image_rendered"}
    table = read_table(s3_client, s3_env["PIPELINE_BUCKET"], "product_images", "shop/one-pass")
    assert set(table.file) == set(files) and (table.status == "ok").all()


def test_one_table_of_the_step_can_be_materialised_alone(s3_env, s3_client):
    files = photo_batch({"astronaut": ["flipped"], "coffee": []})
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "one-pass", files)
    with dg.instance_for_test() as instance:
        assert _materialise(instance, ["raw_images"]).success
        GETS.clear()
        only = _materialise(instance, ["image_embeddings"])
    assert only.success
    assert materializations(only, "image_features") == []
    meta = metadata(only, "image_embeddings")
    assert (meta["memo_misses"], meta["work_images_loaded"]) == (len(files), len(files))
    checks = {e.check_name for e in only.get_asset_check_evaluations()}
    assert checks == {"unit_norms", "every_accepted_image_has_an_embedding"}
    table = read_table(s3_client, s3_env["PIPELINE_BUCKET"], "image_embeddings", "shop/one-pass")
    assert len(table) == len(files) and (table.status == "ok").all()
    listing = s3_client.list_objects_v2(Bucket=s3_env["PIPELINE_BUCKET"], Prefix="memo/features/")
    assert listing.get("KeyCount", 0) == 0  # features were not computed
