"""Test data: real photos with near-duplicate edits, encoded as uploads."""

from __future__ import annotations

import io

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
