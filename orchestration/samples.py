"""Sample batches from scikit-image's bundled photos plus near-duplicate edits."""

from __future__ import annotations

import io
import json

from PIL import Image

from photogroup.samples import load_photo, load_stereo_pair
from photogroup.variants import EDITS
from resources.uploads import SEAL_MARKER, UploadsBucket

#: (tenant, batch) -> photos with the edits each gets. The second demo-shop batch repeats
#: photos of the first, so its run shows memo hits; a text file shows a rejection.
SAMPLE_BATCHES = {
    ("demo-shop", "2026-11-01"): {
        "astronaut": ["resized", "recompressed", "flipped"],
        "coffee": ["cropped", "brightened", "rotated90"],
        "chelsea": ["padded", "watermarked"],
        "rocket": [],
    },
    ("demo-shop", "2026-11-02"): {
        "astronaut": ["cropped"],
        "coffee": [],
        "motorcycle": [],
        "immunohistochemistry": ["recompressed", "flipped"],
    },
    ("corner-store", "2026-11-01"): {
        "hubble_deep_field": ["resized", "rotated90"],
        "coins": ["brightened"],
        "retina": ["cropped", "padded"],
    },
}


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=quality)
    return out.getvalue()


def sample_files(photos: dict[str, list[str]]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for name, edits in photos.items():
        if name == "motorcycle":  # two viewpoints: one product, two photos
            left, right = load_stereo_pair()
            files["motorcycle-left.jpg"] = jpeg_bytes(left)
            files["motorcycle-right.jpg"] = jpeg_bytes(right)
            continue
        photo = load_photo(name)
        files[f"{name}.jpg"] = jpeg_bytes(photo)
        files.update({f"{name}-{edit}.jpg": jpeg_bytes(EDITS[edit](photo)) for edit in edits})
    return files


def seed(uploads: UploadsBucket, log=print) -> list[tuple[str, str]]:
    """Upload and seal every sample batch that is not sealed yet; returns all sample keys."""
    client = uploads.s3.get_client()
    for (tenant, batch), photos in SAMPLE_BATCHES.items():
        prefix = uploads.batch_prefix(tenant, batch)
        if client.list_objects_v2(Bucket=uploads.bucket, Prefix=prefix + SEAL_MARKER)["KeyCount"]:
            continue
        files = sample_files(photos)
        if tenant == "demo-shop" and batch == "2026-11-01":
            files["notes.jpg"] = b"not a photo: the shop's price list, saved with a .jpg name\n"
        for name, body in files.items():
            client.put_object(Bucket=uploads.bucket, Key=prefix + name, Body=body)
        seal = json.dumps({"files": sorted(files)}).encode()
        client.put_object(Bucket=uploads.bucket, Key=prefix + SEAL_MARKER, Body=seal)
        log(f"seeded {tenant}/{batch}: {len(files)} files")
    return list(SAMPLE_BATCHES)
