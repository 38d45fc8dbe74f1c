"""Every transformation family of the benchmark groups with its original, end to end:
JPEG bytes -> working copy -> features and keypoints -> local embedding -> group_images.
Other photos stay apart. (Recall per family over many random copies is bench/grouping.py's.)"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from bench.transforms import FAMILIES
from photogroup import LocalEmbedder, compute_features, decode_image, group_images
from photogroup.samples import load_photo
from photogroup.verify import Keypoints

PHOTOS = ("astronaut", "chelsea")
OTHERS = ("coffee", "rocket", "camera")


def upload_bytes(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.convert("RGB").save(out, format="JPEG", quality=92)
    return out.getvalue()


@pytest.fixture(scope="module")
def prepared() -> dict:
    """Working copy, features and embedding of each original photo and distractor."""
    out = {}
    for name in PHOTOS + OTHERS:
        img = load_photo(name)
        img.thumbnail((640, 640))
        out[name] = (img, *_prepare(upload_bytes(img)))
    return out


def _prepare(data: bytes):
    work = decode_image(data).image
    return compute_features(work), LocalEmbedder().embed([work])[0]


def _groups(items: list) -> list[str]:
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(items))]
    by_id = {
        a.image_id: a.group_id
        for a in group_images(
            ids,
            [f.phash_d4 for f, _ in items],
            np.stack([e for _, e in items]),
            keypoints=[Keypoints.from_base64(f.keypoints) for f, _ in items],
        )
    }
    return [by_id[i] for i in ids]


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("name", PHOTOS)
def test_each_family_groups_with_its_original(prepared, family, name):
    original, *orig_prepared = prepared[name]
    edited = FAMILIES[family](original, np.random.default_rng(3))
    items = [tuple(orig_prepared), _prepare(upload_bytes(edited))]
    items += [tuple(prepared[other][1:]) for other in OTHERS]
    groups = _groups(items)
    assert groups[0] == groups[1], f"{family} copy of {name} not grouped with it"
    assert len({groups[0], *groups[2:]}) == 1 + len(OTHERS), "other photos were merged"
