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


def _run(instance, selection: list[str], key: str = "shop/r2") -> dg.ExecuteInProcessResult:
    from assets import ALL_ASSETS
    from orchestration.definitions import defs
    from orchestration.partitions import upload_batch_partitions

    if not instance.has_dynamic_partition(upload_batch_partitions.name, key):
        instance.add_dynamic_partitions(upload_batch_partitions.name, [key])
    return dg.materialize(ALL_ASSETS, selection=selection, partition_key=key,
                          resources=defs.resources, instance=instance)  # fmt: skip


def test_a_failed_rendition_is_a_row_with_its_reason_and_is_retried(s3_env, s3_client, monkeypatch):
    """Renditions made from the manifest's decode: an image the encoder refuses is one row
    with status failed and the reason, the check warns, and the next run renders it."""
    import photogroup.manifest

    files = {"a.jpg": jpeg(load_photo("coffee")), "b.png": _png(load_photo("chelsea"))}
    upload(s3_client, s3_env["UPLOADS_BUCKET"], "shop", "r2", files)
    render = photogroup.manifest.render

    def refuse_png(upload, spec):
        if upload.content_type == "image/png":
            raise ValueError("encoder refused")
        return render(upload, spec)

    monkeypatch.setattr(photogroup.manifest, "render", refuse_png)
    pipeline = s3_env["PIPELINE_BUCKET"]
    with dg.instance_for_test() as instance:
        first = _run(instance, ["raw_images", "product_images"])
        assert first.success
        table = read_table(s3_client, pipeline, "product_images", "shop/r2")
        failed = table[table.status == "failed"]
        assert failed.file.tolist() == ["b.png"]
        assert failed.reason.iloc[0] == "render_error: ValueError: encoder refused"
        assert (table[table.file == "a.jpg"].status == "ok").all()
        (check,) = [e for e in first.get_asset_check_evaluations()
                    if e.check_name == "every_image_rendered"]  # fmt: skip
        assert not check.passed
        assert metadata(first, "product_images")["failed_images"] == 1

        monkeypatch.setattr(photogroup.manifest, "render", render)
        second = _run(instance, ["raw_images", "product_images"])
    meta = metadata(second, "product_images")  # the failure was not memoised
    assert (meta["memo_hits"], meta["memo_misses"], meta["originals_fetched"]) == (1, 1, 1)
    again = read_table(s3_client, pipeline, "product_images", "shop/r2")
    assert (again.status == "ok").all() and len(again) == 2 * 6


def test_an_upload_gone_before_its_renditions_is_a_failed_row(s3_env, s3_client):
    files = {"a.jpg": jpeg(load_photo("coffee")), "b.jpg": jpeg(load_photo("rocket"))}
    uploads = s3_env["UPLOADS_BUCKET"]
    upload(s3_client, uploads, "shop", "r3", files)
    with dg.instance_for_test() as instance:
        assert _run(instance, ["raw_images"], "shop/r3").success
        s3_client.delete_object(Bucket=uploads, Key="uploads/shop/r3/b.jpg")
        only = _run(instance, ["product_images"], "shop/r3")
    assert only.success
    table = read_table(s3_client, s3_env["PIPELINE_BUCKET"], "product_images", "shop/r3")
    (row,) = table[table.file == "b.jpg"].itertuples()
    assert row.status == "failed" and row.reason.startswith("fetch failed")
    assert (table[table.file == "a.jpg"].status == "ok").all()


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()
