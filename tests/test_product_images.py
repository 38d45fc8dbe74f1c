"""Renditions and the catalogue export on a real local S3, from the bad-input corpus's
EXIF-rotated and CMYK files; an unchanged batch encodes nothing the second time."""

import io

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from photogroup.samples import load_photo
from tests.helpers import jpeg, materialise, metadata, read_table, upload
from tests.test_bad_input import corpus
from tests.test_memo import GETS, counted_resources

pytestmark = pytest.mark.integration

FILES = ["rotated.jpg", "cmyk.jpg", "palette-alpha.png", "grey16.png", "truncated.jpg"]


def similar(data: bytes, reference: Image.Image) -> float:
    """Mean absolute difference at 64 x 48 (0 = same picture)."""
    img = Image.open(io.BytesIO(data)).convert("RGB").resize((64, 48))
    ref = reference.convert("RGB").resize((64, 48))
    return float(np.abs(np.asarray(img, float) - np.asarray(ref, float)).mean())


@pytest.fixture
def batch(s3_env, s3_client):
    files, _ = corpus()
    chosen = {name: files[name] for name in FILES}
    chosen["big.jpg"] = jpeg(load_photo("astronaut").resize((1400, 1400)))
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "r1", chosen)
    return chosen


def test_renditions_sizes_formats_orientation_and_memo(s3_env, s3_client, batch):
    pipeline = s3_env["PIPELINE_BUCKET"]
    with dg.instance_for_test() as instance:
        first = materialise(instance, "shop/r1", counted_resources(), assets=("catalog",))
        table = read_table(s3_client, pipeline, "product_images", "shop/r1")
        meta = metadata(first, "product_images")
        # truncated.jpg is rejected upstream: 5 accepted images x 3 sizes x 2 formats.
        assert set(table.file) == set(batch) - {"truncated.jpg"}
        assert (table.status == "ok").all() and len(table) == 5 * 3 * 2
        assert meta["encoded"] == 30 and meta["memo_misses"] == 5

        coffee = load_photo("coffee")  # 600 x 400: rotated.jpg shows it after orientation
        for row in table.itertuples():
            body = s3_client.get_object(Bucket=pipeline, Key=row.rendition_key)
            data = body["Body"].read()
            img = Image.open(io.BytesIO(data))
            assert img.format == {"webp": "WEBP", "jpeg": "JPEG"}[row.format]
            assert body["ContentType"] == f"image/{row.format}"
            assert img.size == (row.width, row.height) and len(data) == row.bytes
            assert not dict(img.getexif()) and "icc_profile" not in img.info
            assert row.sha256 in row.rendition_key  # content-addressed
            if row.file in ("rotated.jpg", "cmyk.jpg"):
                assert img.mode in ("RGB", "RGBA")
                assert max(img.size) == min(row.size, 600) and img.width > img.height
                assert similar(data, coffee) < 20, row
            if row.file == "big.jpg":
                assert max(img.size) == row.size  # 1400 px original: every size is exact
                assert row.saving > 0

        GETS.clear()
        second = materialise(instance, "shop/r1", counted_resources(), assets=("catalog",))
    meta = metadata(second, "product_images")
    assert (meta["encoded"], meta["originals_fetched"], meta["memo_hits"]) == (0, 0, 5)
    assert not [k for b, k in GETS if b == s3_env["UPLOADS_BUCKET"]]
    again = read_table(s3_client, pipeline, "product_images", "shop/r1")
    assert again.sort_values("rendition_key").rendition_key.tolist() == sorted(table.rendition_key)

    catalog = read_table(s3_client, pipeline, "catalog", "shop/r1")
    groups = read_table(s3_client, pipeline, "product_groups", "shop/r1")
    assert len(catalog) == len(groups)
    keys = set(table.rendition_key)
    for row in catalog.itertuples():
        assert len(row.cover_renditions) == 6
        assert {r["key"] for r in row.cover_renditions} <= keys
        assert row.colour and len(row.colours) >= 1 and len(row.dominant_colors) >= 1
        assert sum(len(m["renditions"]) for m in row.member_renditions) == 6 * row.size
