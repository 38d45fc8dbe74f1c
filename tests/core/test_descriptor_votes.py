"""Candidates from shared ORB descriptors (photogroup.descriptor_votes), and their place in
the strict level: copies whose embedding moved away are still proposed and verified."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bench import photos, shop_edits
from bench.transforms import small_rotation
from photogroup import GroupingParams, LocalEmbedder, compute_features, decode_image
from photogroup.cluster import group_with_evidence
from photogroup.descriptor_votes import descriptor_pairs
from photogroup.verify import Keypoints
from tests.helpers import jpeg

#: Photos scikit-image ships (a core dependency): the suite needs no benchmark extra.
SOURCES = (
    *(name for name in photos.COLOUR if name.startswith("skimage:")),
    "skimage:camera", "skimage:coins", "skimage:page", "skimage:clock",
)  # fmt: skip


@pytest.fixture(scope="module")
def batch() -> dict[str, object]:
    """Seven colour photos and four grey ones, a small rotation of one and an app screenshot
    of another, through the pipeline's decode and features."""
    rng = np.random.default_rng(5)
    images = {name: photos.load(name).convert("RGB") for name in SOURCES}
    images["rotated"] = small_rotation(images["skimage:coffee"], rng)
    images["screenshot"] = shop_edits.screenshot(images["skimage:chelsea"], rng)
    datas = {name: jpeg(img) for name, img in images.items()}
    works = {name: decode_image(data).image for name, data in datas.items()}
    features = {name: compute_features(w) for name, w in works.items()}
    return {
        "names": list(datas),
        "ids": [hashlib.sha256(d).hexdigest() for d in datas.values()],
        "keypoints": [Keypoints.from_base64(features[n].keypoints) for n in datas],
        "hashes": [features[n].phash_d4 for n in datas],
        "embeddings": LocalEmbedder().embed(list(works.values())),
    }


def _proposed(batch, per_image: int = 3) -> set[frozenset[str]]:
    kps = batch["keypoints"]
    a, b, votes = descriptor_pairs(
        [k.descriptors for k in kps], [k.mirror_descriptors for k in kps], per_image
    )
    assert (a < b).all() and (votes > 0).all()
    names = batch["names"]
    return {frozenset((names[x], names[y])) for x, y in zip(a, b, strict=True)}


def test_copies_are_proposed_by_their_shared_descriptors(batch):
    proposed = _proposed(batch)
    assert frozenset(("skimage:coffee", "rotated")) in proposed
    assert frozenset(("skimage:chelsea", "screenshot")) in proposed
    # Each image proposes at most three others: a few dozen pairs, not all 78.
    assert len(proposed) <= 3 * len(batch["names"])


def test_unrelated_random_descriptors_propose_nothing():
    rng = np.random.default_rng(0)
    descriptors = [rng.integers(0, 256, (500, 32), dtype=np.uint8) for _ in range(20)]
    a, _, _ = descriptor_pairs(descriptors, None, 5)
    assert len(a) == 0


def test_images_without_keypoints_are_skipped():
    rng = np.random.default_rng(1)
    d = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    noisy = d.copy()
    noisy[:, 0] ^= 1  # one bit off in every descriptor: still the same keypoints
    a, b, _ = descriptor_pairs([None, d, np.zeros((0, 32), np.uint8), noisy], None, 5)
    assert list(zip(a.tolist(), b.tolist(), strict=True)) == [(1, 3)]
    assert len(descriptor_pairs([], None, 5)[0]) == 0


def test_a_copy_outside_every_embedding_neighbourhood_is_still_grouped(batch):
    """With no embedding neighbours and no hash candidates at all, only the descriptor votes
    can propose the rotated and the framed copies; the same-photo check then links them."""
    blind = GroupingParams(neighbours=1, cos_candidate=1.01, hash_sure=0, hash_loose=0)
    placed = _groups(batch, blind)
    assert placed["rotated"] == placed["skimage:coffee"]
    assert placed["screenshot"] == placed["skimage:chelsea"]
    without = _groups(batch, GroupingParams(**{**blind.as_dict(), "descriptor_candidates": 0}))
    assert without["rotated"] != without["skimage:coffee"]
    # Distinct photos stay apart whatever proposed them.
    originals = [n for n in batch["names"] if ":" in n]
    assert len({placed[n] for n in originals}) == len(originals)


def _groups(batch, params: GroupingParams) -> dict[str, str]:
    grouping = group_with_evidence(
        batch["ids"], batch["hashes"], batch["embeddings"], params, keypoints=batch["keypoints"]
    )
    by_id = {a.image_id: a.group_id for a in grouping.assignments}
    return {name: by_id[i] for name, i in zip(batch["names"], batch["ids"], strict=True)}
