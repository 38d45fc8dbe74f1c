"""photogroup.manifest.inspect_upload: one verdict per upload, never an exception."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from photogroup import decode_image, open_work_image
from photogroup.manifest import ACCEPTED, REJECTED, inspect_upload
from photogroup.samples import load_photo


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


@pytest.fixture(scope="module")
def coffee_jpeg() -> bytes:
    return encode(load_photo("coffee"), "JPEG", quality=90)


def test_accepted_upload(coffee_jpeg):
    result = inspect_upload(coffee_jpeg)
    assert result.status == ACCEPTED == "accepted"
    assert result.reason is None
    assert result.sha256 == hashlib.sha256(coffee_jpeg).hexdigest()
    assert result.content_type == "image/jpeg"
    assert (result.width, result.height, result.frames) == (600, 400, 1)
    work = open_work_image(result.work_bytes)
    assert work.mode == "RGB"
    assert work.size == (512, 341)
    # The stored working copy is exactly what decode_image produced (the copy is lossless).
    expected = decode_image(coffee_jpeg).image
    assert np.array_equal(np.asarray(work), np.asarray(expected))


def test_row_leaves_out_the_working_copy(coffee_jpeg):
    row = inspect_upload(coffee_jpeg).row()
    assert "work_bytes" not in row
    assert set(row) == {
        "sha256",
        "content_type",
        "width",
        "height",
        "frames",
        "status",
        "reason",
    }
    assert row["status"] == "accepted"


def test_same_bytes_same_fingerprint(coffee_jpeg):
    assert inspect_upload(coffee_jpeg) == inspect_upload(bytes(coffee_jpeg))


@pytest.mark.parametrize(
    ("data", "code", "content_type"),
    [
        (b"", "empty_file", None),
        (b"this is a text file called photo.jpg", "not_an_image", None),
        (b"\xff\xd8\xff" + b"\x00" * 10, "corrupt_image", "image/jpeg"),
    ],
)
def test_rejected_upload(data, code, content_type):
    result = inspect_upload(data)
    assert result.status == REJECTED == "rejected"
    assert result.reason.startswith(code + ":") or result.reason == code
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.content_type == content_type
    assert result.work_bytes is None
    assert (result.width, result.height, result.frames) == (None, None, None)


def test_truncated_jpeg_is_rejected_as_corrupt(coffee_jpeg):
    result = inspect_upload(coffee_jpeg[: len(coffee_jpeg) // 2])
    assert result.status == "rejected"
    assert result.reason.startswith("corrupt_image")
    assert result.content_type == "image/jpeg"


def test_limits_are_passed_through(coffee_jpeg):
    too_big = inspect_upload(coffee_jpeg, max_bytes=100)
    assert too_big.status == "rejected"
    assert too_big.reason.startswith("file_too_large")
    too_many = inspect_upload(coffee_jpeg, max_pixels=600 * 400 - 1)
    assert too_many.status == "rejected"
    assert too_many.reason.startswith("too_many_pixels")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"])
@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.7, 0.99])
def test_never_raises_on_a_truncated_upload(fmt, fraction):
    data = encode(load_photo("chelsea"), fmt)
    result = inspect_upload(data[: int(len(data) * fraction)])
    assert result.status == "rejected"
    assert result.reason
    assert result.work_bytes is None
    assert result.content_type == f"image/{fmt.lower()}"
