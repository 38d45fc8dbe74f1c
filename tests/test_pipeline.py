"""Integration: materialise the four assets of a batch on the session SeaweedFS."""

import io

import dagster as dg
import pytest
from PIL import Image

from tests.helpers import (
    EVERY_ASSET,
    GROUPING,
    materialise,
    metadata,
    photo_batch,
    read_table,
    upload,
)

pytestmark = pytest.mark.integration

PHOTOS = {
    "astronaut": ["resized", "recompressed", "flipped", "rotated90"],
    "coffee": ["brightened", "padded", "watermarked"],
    "rocket": ["resized"],
    "coins": [],
}


@pytest.fixture
def batch(s3_env, s3_client):
    files = photo_batch(PHOTOS)
    files["notes.jpg"] = b"price list, not a photo\n"
    files["empty.png"] = b""
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop-a", "b1", files)
    return files


def test_four_assets_materialise_with_correct_content(s3_env, s3_client, batch):
    with dg.instance_for_test() as instance:
        result = materialise(instance, "shop-a/b1", assets=EVERY_ASSET)
    assert result.success
    pipeline = s3_env["PIPELINE_BUCKET"]
    manifest = read_table(s3_client, pipeline, "raw_images", "shop-a/b1")
    assert sorted(manifest.file) == sorted(batch)
    rejected = manifest.set_index("file").loc[["notes.jpg", "empty.png"]]
    assert list(rejected.status) == ["rejected", "rejected"]
    assert rejected.reason.iloc[0].startswith("not_an_image")
    assert rejected.reason.iloc[1].startswith("empty_file")
    accepted = manifest[manifest.status == "accepted"]
    assert len(accepted) == len(batch) - 2
    assert set(accepted.content_type) == {"image/jpeg"}
    assert (accepted.width > 0).all() and (accepted.height > 0).all()

    features = read_table(s3_client, pipeline, "image_features", "shop-a/b1")
    embeddings = read_table(s3_client, pipeline, "image_embeddings", "shop-a/b1")
    assert sorted(features.file) == sorted(accepted.file) == sorted(embeddings.file)
    assert features.phash.str.len().eq(16).all()
    assert embeddings.embedding.map(len).nunique() == 1

    clusters = read_table(s3_client, pipeline, "image_clusters", "shop-a/b1")
    assert sorted(clusters.file) == sorted(accepted.file)
    group_of = dict(zip(clusters.file, clusters.group_id, strict=True))
    for photo, edits in PHOTOS.items():
        assert {group_of[f"{photo}-{e}.jpg"] for e in edits} <= {group_of[f"{photo}.jpg"]}
    originals = [group_of[f"{photo}.jpg"] for photo in PHOTOS]
    assert len(set(originals)) == len(PHOTOS)

    sheet = metadata(result, "image_clusters")["contact_sheet"]
    bucket, key = sheet.removeprefix("s3://").split("/", 1)
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert Image.open(io.BytesIO(body)).size[1] >= 100 * len(PHOTOS)  # a row per group at least
    assert "data:image/jpeg;base64," in metadata(result, "image_clusters")["contact_sheet_preview"]

    raw_meta = metadata(result, "raw_images")
    assert (raw_meta["objects"], raw_meta["rejected"]) == (len(batch), 2)

    # Without edits, product groups are the machine's groups, each with a cover and name.
    groups = read_table(s3_client, pipeline, "product_groups", "shop-a/b1")
    assert sorted(groups.group_id) == sorted(set(clusters.group_id))
    for row in groups.itertuples():
        assert sorted(row.members) == sorted(clusters.file[clusters.group_id == row.group_id])
        assert row.cover_file in row.members and row.name == row.cover_file.rsplit(".", 1)[0]
        assert not row.edited and not row.named
    assert "data:image/jpeg;base64," in metadata(result, "product_groups")["covers"]
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "every_object_accounted_for": True,
        "every_accepted_image_has_features": True,
        "every_accepted_image_has_an_embedding": True,
        "unit_norms": True,
        "every_image_in_exactly_one_group": True,
        "every_edit_applies": True,
        "every_image_rendered": True,
        "every_group_has_a_cover_rendition": True,
        "every_image_cut_out": True,
    }


def test_second_run_and_shared_images_hit_the_memo(s3_env, s3_client, batch):
    with dg.instance_for_test() as instance:
        cold = materialise(instance, "shop-a/b1", assets=GROUPING)
        warm = materialise(instance, "shop-a/b1", assets=GROUPING)
        # A new batch: two known photos (new file names) and one new photo.
        shared = {f"again-{n}": batch[n] for n in ("astronaut.jpg", "coffee.jpg")}
        upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop-a", "b2",
               {**shared, **photo_batch({"chelsea": []})})  # fmt: skip
        third = materialise(instance, "shop-a/b2", assets=GROUPING)
    assert metadata(cold, "image_embeddings")["memo_hits"] == 0
    for node in ("raw_images", "image_features", "image_embeddings"):
        meta = metadata(warm, node)
        assert meta["memo_misses"] == 0 and meta["memo_hit_rate"] == 1.0, node
    assert metadata(warm, "raw_images")["bytes_fetched"] == 0
    assert metadata(warm, "image_embeddings")["embedder_calls"] == 0
    assert metadata(warm, "image_features")["image_bytes_fetched"] == 0
    embeddings = metadata(third, "image_embeddings")
    assert (embeddings["memo_hits"], embeddings["memo_misses"]) == (2, 1)
    assert metadata(third, "raw_images")["objects_fetched"] == 1


def test_unchanged_input_gives_the_same_data_version(s3_env, batch):
    with dg.instance_for_test() as instance:
        materialise(instance, "shop-a/b1", assets=GROUPING)
        materialise(instance, "shop-a/b1", assets=GROUPING)
        records = instance.fetch_materializations(dg.AssetKey("image_clusters"), limit=2).records
    versions = {r.asset_materialization.tags["dagster/data_version"] for r in records}
    assert len(records) == 2 and len(versions) == 1


def test_size_limit_is_configurable_and_big_uploads_are_not_downloaded(s3_env, s3_client):
    files = photo_batch({"coffee": [], "coins": []})
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop-a", "small", files)
    limit = min(len(body) for body in files.values()) - 1
    config = {"ops": {"raw_images": {"config": {"max_bytes": limit}}}}
    with dg.instance_for_test() as instance:
        result = materialise(instance, "shop-a/small", run_config=config, assets=("raw_images",))
    assert result.success
    manifest = read_table(s3_client, s3_env["PIPELINE_BUCKET"], "raw_images", "shop-a/small")
    assert set(manifest.status) == {"rejected"}
    assert manifest.reason.str.startswith("file_too_large").all()
    assert set(manifest.content_type) == {"image/jpeg"}  # sniffed from a ranged read
    assert metadata(result, "raw_images").get("objects_fetched", 0) == 0
