"""Integration: one batch of hostile and odd uploads next to good photos.

Every object gets a manifest verdict with the right reason code, nothing fails the batch,
and the good photos still get features, embeddings and groups.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import botocore.exceptions
import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image, TiffImagePlugin, features

from photogroup.decode import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from photogroup.samples import load_photo
from tests.colour_files import (
    DISPLAY_P3,
    adobe_rgb_jpeg,
    palette_with_black_keyed,
    wide_gamut_file,
)
from tests.helpers import GROUPING, jpeg, materialise, metadata, photo_batch, read_table, upload

pytestmark = pytest.mark.integration

TENANT, BATCH = "shop-x", "b1"
PARTITION = f"{TENANT}/{BATCH}"
PREFIX = f"uploads/{TENANT}/{BATCH}/"
GOOD = {"astronaut": ["resized"], "coffee": [], "chelsea": []}
# 900 characters in segments of at most 255 bytes (SeaweedFS's limit for one segment).
LONG_NAME = "/".join(["d" * 250] * 3) + "/" + "f" * 143 + ".jpg"
# Stored and processed under exactly these names.
HOSTILE_NAMES = ["a..b.jpg", "ctl-\x01-char.jpg", "café-ü-日本.jpg", LONG_NAME]
# SeaweedFS (pinned 4.48) refuses these keys at upload time; AWS S3 would store them. It
# rejects "." and ".." path segments, and any segment over 255 bytes even when the whole
# key is under S3's 1024 bytes. So they cannot reach the pipeline: we assert the refusal.
LONG_SEGMENT = "n" * 896 + ".jpg"  # 900 characters in one segment
REFUSED = {
    "a/../b.jpg": "InvalidRequest",
    "../escape.jpg": "InvalidRequest",
    LONG_SEGMENT: "KeyTooLongError",
}
# SeaweedFS collapses an empty segment: "a//b.jpg" is stored and listed as "a/b.jpg".
COLLAPSED = ("a//b.jpg", "a/b.jpg")


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 50_000) -> bytes:
    """A well-formed PNG header declaring side x side 1-bit pixels; tiny on disk."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)  # a few rows; the rest never comes
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def palette_with_transparent_border(photo: Image.Image, border: int = 24) -> bytes:
    quantised = photo.quantize(255)
    w, h = photo.size
    index = np.full((h + 2 * border, w + 2 * border), 255, np.uint8)
    index[border : border + h, border : border + w] = np.asarray(quantised)
    out = Image.fromarray(index, "P")
    out.putpalette([*quantised.getpalette()[: 255 * 3], 0, 0, 0])
    return encode(out, "PNG", transparency=255)


def exif_rotated(photo: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: store it turned back
    return encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif)


def iphone_heic(photo: Image.Image) -> bytes:
    """``photo`` as an iPhone saves it: HEIC, Display P3, stored turned with a rotation."""
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = photo.transpose(Image.Transpose.ROTATE_90)
    return wide_gamut_file(turned, DISPLAY_P3, fmt="HEIF", exif=exif.tobytes())


def dng_with_preview(photo: Image.Image) -> bytes:
    """A DNG as Pillow reads it: a TIFF (DNGVersion tag) whose first image is a preview."""
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[50706] = b"\x01\x04\x00\x00"
    tags.tagtype[50706] = 1  # BYTE
    return encode(photo.resize((256, 171)), "TIFF", tiffinfo=tags)


def animation(first: Image.Image, fmt: str) -> bytes:
    second = load_photo("rocket").resize(first.size)
    return encode(first, fmt, save_all=True, append_images=[second], duration=200, loop=0)


def gif_cut_after_first_frame(photo: Image.Image) -> bytes:
    """An animated GIF whose upload broke off just after the second frame's "!" introducer."""
    data = animation(photo.resize((160, 120)), "GIF")
    first_gce = data.index(b"\x21\xf9\x04")
    return data[: data.index(b"\x21\xf9\x04", first_gce + 1) + 1]


def avif_with_zeroed_data(photo: Image.Image) -> bytes:
    data = encode(photo.resize((160, 120)), "AVIF")
    start = data.index(b"mdat") + 4
    return data[:start] + bytes(len(data) - start)


@functools.cache
def corpus() -> tuple[dict[str, bytes], dict[str, tuple]]:
    """file -> bytes, and file -> (status, reason code, content type, (width, height))."""
    astronaut, coffee, chelsea = (load_photo(n) for n in ("astronaut", "coffee", "chelsea"))
    good_jpeg = jpeg(chelsea)
    files: dict[str, bytes] = {
        "empty.jpg": b"",
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "notes.jpg": b"name,price\nmug,4.99\nthis is a text file\n",
        "noise.webp": np.random.default_rng(0).bytes(4096),
        "really-a-png.jpg": encode(chelsea, "PNG"),
        "bomb.png": png_bomb(),
        "over-limit.png": encode(Image.new("1", (8200, 8200)), "PNG"),  # 67 MP, whole file
        "pillow-warns.png": encode(Image.new("1", (10_000, 10_000)), "PNG"),  # 100 MP
        "huge.jpg": b"\xff\xd8\xff\xe0" + bytes(51 * 1024 * 1024 - 4),
        "cmyk.jpg": encode(coffee.convert("CMYK"), "JPEG", quality=90),
        "grey16.png": encode(
            Image.fromarray(np.asarray(astronaut.convert("L")).astype(np.uint16) * 257), "PNG"
        ),
        "palette-alpha.png": palette_with_transparent_border(chelsea),
        "palette-key.png": palette_with_black_keyed(astronaut)[1],
        "adobe-rgb.jpg": adobe_rgb_jpeg(coffee),
        "rotated.jpg": exif_rotated(coffee),
        "animated.gif": animation(astronaut, "GIF"),
        "animated.webp": animation(chelsea, "WEBP"),
        "photo.heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200),
        "iphone.heic": iphone_heic(coffee),
        "photo.jxl": b"\x00\x00\x00\x0cJXL \r\n\x87\n" + bytes(200),
        "IMG_0002.DNG": dng_with_preview(coffee),
        # Regression: ended as "decoder_error: IndexError" (escaped GifImagePlugin.n_frames).
        "cut-after-first-frame.gif": gif_cut_after_first_frame(astronaut),
    }
    accepted = "accepted"
    framed = (chelsea.width + 48, chelsea.height + 48)  # with its transparent border
    expected: dict[str, tuple] = {
        "empty.jpg": ("rejected", "empty_file", None, None),
        "truncated.jpg": ("rejected", "corrupt_image", "image/jpeg", None),
        "notes.jpg": ("rejected", "not_an_image", None, None),
        "noise.webp": ("rejected", "not_an_image", None, None),
        "really-a-png.jpg": (accepted, None, "image/png", chelsea.size),
        "bomb.png": ("rejected", "too_many_pixels", "image/png", None),
        "over-limit.png": ("rejected", "too_many_pixels", "image/png", None),
        "pillow-warns.png": ("rejected", "too_many_pixels", "image/png", None),
        "huge.jpg": ("rejected", "file_too_large", "image/jpeg", None),
        "cmyk.jpg": (accepted, None, "image/jpeg", coffee.size),
        "grey16.png": (accepted, None, "image/png", astronaut.size),
        "palette-alpha.png": (accepted, None, "image/png", framed),
        "palette-key.png": (accepted, None, "image/png", astronaut.size),
        "adobe-rgb.jpg": (accepted, None, "image/jpeg", coffee.size),
        "rotated.jpg": (accepted, None, "image/jpeg", coffee.size),  # after orientation
        "animated.gif": (accepted, None, "image/gif", astronaut.size),
        "animated.webp": (accepted, None, "image/webp", chelsea.size),
        "photo.heic": ("rejected", "corrupt_image", "image/heic", None),
        "iphone.heic": (accepted, None, "image/heic", coffee.size),  # after its rotation
        "photo.jxl": ("rejected", "unsupported_format", "image/jxl", None),
        "IMG_0002.DNG": ("rejected", "unsupported_format", "image/tiff", None),
        "cut-after-first-frame.gif": ("rejected", "corrupt_image", "image/gif", None),
    }
    if features.check("avif"):  # Pillow's wheels ship libavif; a source build may not
        # Regression: ended as "decoder_error: RuntimeError" (libavif's failure, via Pillow).
        files["damaged.avif"] = avif_with_zeroed_data(coffee)
        expected["damaged.avif"] = ("rejected", "corrupt_image", "image/avif", None)
    rocket = jpeg(load_photo("rocket"))
    for name in [*HOSTILE_NAMES, COLLAPSED[0]]:
        files[name] = rocket
    for name in HOSTILE_NAMES:
        expected[name] = (accepted, None, "image/jpeg", load_photo("rocket").size)
    expected[COLLAPSED[1]] = expected[HOSTILE_NAMES[0]]
    good = photo_batch(GOOD)
    files.update(good)
    for name, data in good.items():
        expected[name] = (accepted, None, "image/jpeg", Image.open(io.BytesIO(data)).size)
    return files, expected


def test_corpus_items_are_what_they_claim():
    files, _ = corpus()
    assert len(files["bomb.png"]) < 200 and len(files["over-limit.png"]) < 20_000
    assert len(files["huge.jpg"]) > DEFAULT_MAX_BYTES
    assert DEFAULT_MAX_PIXELS < 8200 * 8200 < Image.MAX_IMAGE_PIXELS  # only our check
    assert Image.MAX_IMAGE_PIXELS < 10_000**2 < 2 * Image.MAX_IMAGE_PIXELS  # Pillow just warns
    assert 2 * Image.MAX_IMAGE_PIXELS < 50_000**2  # Pillow refuses to open it
    assert len(LONG_NAME) == 900 and len((PREFIX + LONG_NAME).encode()) <= 1024
    assert len(LONG_SEGMENT) == 900 and len((PREFIX + LONG_SEGMENT).encode()) <= 1024


def test_every_bad_upload_gets_its_reason_and_the_good_photos_are_grouped(s3_env, s3_client):
    uploads_bucket, pipeline = s3_env["UPLOADS_BUCKET"], s3_env["PIPELINE_BUCKET"]
    files, expected = corpus()
    for name, code in REFUSED.items():
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            s3_client.put_object(Bucket=uploads_bucket, Key=PREFIX + name, Body=files["cmyk.jpg"])
        assert refused.value.response["Error"]["Code"] == code, name
    upload(s3_client, uploads_bucket, TENANT, BATCH, files)
    with dg.instance_for_test() as instance:
        result = materialise(instance, PARTITION, assets=GROUPING)
    assert result.success

    listed = [
        obj["Key"][len(PREFIX) :]
        for page in s3_client.get_paginator("list_objects_v2").paginate(
            Bucket=uploads_bucket, Prefix=PREFIX
        )
        for obj in page.get("Contents", [])
        if obj["Key"] != PREFIX + "_SUCCESS"
    ]
    manifest = read_table(s3_client, pipeline, "raw_images", PARTITION)
    # Everything stored is accounted for, under the name S3 stored it under.
    assert sorted(manifest.file) == sorted(listed) == sorted(expected)
    assert manifest.key.tolist() == [PREFIX + f for f in manifest.file]
    assert not set(REFUSED) & set(listed) and COLLAPSED[0] not in listed

    rows = manifest.set_index("file")
    got = {}
    for name, row in rows.iterrows():
        code = None if pd.isna(row.reason) else row.reason.split(": ", 1)[0]
        size = (int(row.width), int(row.height)) if row.status == "accepted" else None
        got[name] = (
            row.status,
            code,
            None if pd.isna(row.content_type) else row.content_type,
            size,
        )
    assert got == expected
    assert all(": " in r for r in rows.reason.dropna()), "reason is '<code>: <detail>'"
    assert rows.loc["over-limit.png", "reason"].endswith(
        f"8200x8200 > limit of {DEFAULT_MAX_PIXELS} pixels"
    )
    assert "10000x10000" in rows.loc["pillow-warns.png", "reason"]
    assert (rows.loc[["animated.gif", "animated.webp"], "frames"] == 2).all()
    assert rows.loc["huge.jpg", "size"] == len(files["huge.jpg"])

    accepted = sorted(rows.index[rows.status == "accepted"])
    clusters = read_table(s3_client, pipeline, "image_clusters", PARTITION)
    for asset, table in [
        ("image_features", read_table(s3_client, pipeline, "image_features", PARTITION)),
        ("image_embeddings", read_table(s3_client, pipeline, "image_embeddings", PARTITION)),
        ("image_clusters", clusters),
    ]:
        assert sorted(table.file) == accepted, asset
    group = dict(zip(clusters.file, clusters.group_id, strict=True))
    assert group["astronaut-resized.jpg"] == group["astronaut.jpg"]
    assert len({group[f"{p}.jpg"] for p in GOOD}) == len(GOOD)
    for odd, photo in [
        ("really-a-png.jpg", "chelsea"),
        ("palette-alpha.png", "chelsea"),
        ("palette-key.png", "astronaut"),  # its colour key hides the photo's black
        ("adobe-rgb.jpg", "coffee"),
        ("animated.webp", "chelsea"),
        ("cmyk.jpg", "coffee"),
        ("rotated.jpg", "coffee"),
        ("iphone.heic", "coffee"),
        ("grey16.png", "astronaut"),
        ("animated.gif", "astronaut"),
    ]:
        assert group[odd] == group[f"{photo}.jpg"], odd
    assert len({group[n] for n in [*HOSTILE_NAMES, COLLAPSED[1]]}) == 1  # identical bytes

    raw = metadata(result, "raw_images")
    assert (raw["objects"], raw["accepted"]) == (len(listed), len(accepted))
    sniffed = rows.content_type.fillna("unknown").value_counts()
    assert raw["formats"] == {str(k): int(v) for k, v in sniffed.items()}
    assert raw["formats"]["image/heic"] == 2 and raw["formats"]["image/jxl"] == 1
    codes = [e[1] for e in expected.values() if e[0] == "rejected"]
    assert raw["rejected_by_reason"] == {c: codes.count(c) for c in set(codes)}
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    # Check names other than ours are not pinned here (test_pipeline.py covers the wiring).
    assert checks["every_object_accounted_for"] is True
    assert all(checks.values()), checks
