"""photogroup.cluster.group_images: duplicate groups and product groups."""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict

import numpy as np
import pytest

from photogroup import (
    GroupingParams,
    LocalEmbedder,
    compute_features,
    decode_image,
    encode_work_image,
    group_images,
)
from photogroup.features import hamming_d4
from photogroup.samples import load_photo
from photogroup.variants import EDITS

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]
EXACT_EDITS = [
    "resized",
    "recompressed",
    "flipped",
    "rotated90",
    "brightened",
    "watermarked",
    "padded",
]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def batch():
    """(ids, phash_d4, embeddings, label) for each photo and all of its EDITS."""
    ids, d4, work, label = [], [], [], {}
    for name in PHOTOS:
        original = load_photo(name)
        edits = {"original": original} | {e: f(original) for e, f in EDITS.items()}
        for edit, img in edits.items():
            image = decode_image(encode_work_image(img)).image
            image_id = sha(f"{name}/{edit}")
            ids.append(image_id)
            d4.append(compute_features(image).phash_d4)
            work.append(image)
            label[image_id] = (name, edit)
    return ids, d4, LocalEmbedder().embed(work), label


@pytest.fixture(scope="module")
def grouped(batch):
    ids, d4, emb, label = batch
    by_label = {label[a.image_id]: a for a in group_images(ids, d4, emb)}
    return by_label


def test_every_image_appears_exactly_once(batch):
    ids, d4, emb, _ = batch
    out = group_images(ids, d4, emb)
    assert sorted(a.image_id for a in out) == sorted(ids)
    assert [a.image_id for a in out] == sorted(a.image_id for a in out)


def test_different_photos_never_share_a_group(grouped):
    photos_in_group = defaultdict(set)
    for (name, _), a in grouped.items():
        photos_in_group[a.group_id].add(name)
    assert all(len(names) == 1 for names in photos_in_group.values()), photos_in_group


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("edit", EXACT_EDITS)
def test_exact_edits_share_the_original_group(grouped, name, edit):
    assert grouped[(name, edit)].group_id == grouped[(name, "original")].group_id


@pytest.mark.parametrize("name", PHOTOS)
def test_every_edit_shares_the_original_product(grouped, name):
    product = grouped[(name, "original")].product_id
    assert all(a.product_id == product for (n, _), a in grouped.items() if n == name)


def test_different_photos_are_different_products(grouped):
    products = {grouped[(name, "original")].product_id for name in PHOTOS}
    assert len(products) == len(PHOTOS)


def test_id_format_and_centres(batch):
    ids, d4, emb, _ = batch
    out = group_images(ids, d4, emb)
    members = defaultdict(list)
    for a in out:
        assert a.group_id.startswith("g-") and len(a.group_id) == 18
        assert a.product_id.startswith("p-") and len(a.product_id) == 18
        assert 0.0 <= a.confidence <= 1.0
        members[a.group_id].append(a)
    for group_id, group in members.items():
        centres = [a for a in group if a.is_group_centre]
        assert len(centres) == 1
        assert group_id == "g-" + centres[0].image_id[:16]
        assert len({a.confidence for a in group}) == 1


def test_assignments_do_not_depend_on_input_order(batch):
    ids, d4, emb, _ = batch
    expected = group_images(ids, d4, emb)
    for seed in range(3):
        order = list(range(len(ids)))
        random.Random(seed).shuffle(order)
        shuffled = group_images([ids[i] for i in order], [d4[i] for i in order], emb[order])
        assert shuffled == expected


# --- synthetic hashes and embeddings ----------------------------------------------------


def chain_hashes(length: int, step_bits: int) -> list[str]:
    """Hashes where image k has the lowest ``step_bits * k`` bits set."""
    return [f"{(1 << (step_bits * k)) - 1:016x}" for k in range(length)]


def test_a_chain_of_look_alikes_does_not_collapse():
    # Consecutive images differ by 6 bits (<= hash_sure), images two apart by 12 and the
    # ends by 30; embeddings are orthogonal, so only consecutive images are linked.
    hashes = chain_hashes(6, 6)
    ids = [sha(f"chain-{k}") for k in range(6)]
    d4 = [[h] * 8 for h in hashes]
    out = {a.image_id: a for a in group_images(ids, d4, np.eye(6, dtype=np.float32))}
    assert len({a.group_id for a in out.values()}) > 1
    assert len({a.product_id for a in out.values()}) == len({a.group_id for a in out.values()})
    # Star clusters: every member is within hash_sure of its own centre.
    centre_of_group = {"g-" + image_id[:16]: k for k, image_id in enumerate(ids)}
    for k, image_id in enumerate(ids):
        centre = centre_of_group[out[image_id].group_id]
        assert hamming_d4(hashes[k], d4[centre]) <= GroupingParams().hash_sure


def test_loose_hash_match_needs_agreeing_embeddings():
    # 12 bits apart: more than hash_sure, within hash_loose.
    d4 = [["0" * 16] * 8, ["0000000000000fff"] * 8]
    ids = [sha("a"), sha("b")]
    close = np.array([[1.0, 0.0], [0.95, np.sqrt(1 - 0.95**2)]], dtype=np.float32)
    apart = np.array([[1.0, 0.0], [0.5, np.sqrt(0.75)]], dtype=np.float32)
    assert len({a.group_id for a in group_images(ids, d4, close)}) == 1
    assert len({a.group_id for a in group_images(ids, d4, apart)}) == 2
    strict = GroupingParams(hash_loose=10)
    assert len({a.group_id for a in group_images(ids, d4, close, strict)}) == 2


def test_one_direction_of_the_dihedral_distance_is_enough_to_link():
    # a's identity equals b's 8th hash; b's identity is far from all of a's eight.
    d4 = [["0" * 16] * 8, ["f" * 16] * 7 + ["0" * 16]]
    out = group_images([sha("a"), sha("b")], d4, np.eye(2, dtype=np.float32))
    assert out[0].group_id == out[1].group_id


def test_a_one_way_match_counts_for_the_centre_too():
    # a's and c's identities each equal one of b's eight, b's identity is 32 bits from
    # both of theirs, and a and c are 64 bits apart: b must be the centre of all three.
    d4 = [["0" * 16] * 8, ["00000000ffffffff"] * 6 + ["0" * 16, "f" * 16], ["f" * 16] * 8]
    ids = [sha("a"), sha("b"), sha("c")]
    out = {a.image_id: a for a in group_images(ids, d4, np.eye(3, dtype=np.float32))}
    assert {a.group_id for a in out.values()} == {"g-" + sha("b")[:16]}
    assert out[sha("b")].is_group_centre


def test_similar_groups_share_a_product():
    d4 = [["0" * 16] * 8, ["ffffffff00000000"] * 8]  # 32 bits apart: separate groups
    ids = [sha("front"), sha("back")]
    similar = np.array([[1.0, 0.0], [0.9, np.sqrt(1 - 0.81)]], dtype=np.float32)
    out = group_images(ids, d4, similar)
    assert out[0].group_id != out[1].group_id
    assert out[0].product_id == out[1].product_id
    out = group_images(ids, d4, np.eye(2, dtype=np.float32))
    assert out[0].product_id != out[1].product_id


def test_confidence_is_the_weakest_members_strongest_link():
    # Without keypoints a hash link's strength is 1 - distance / 64: x and y are identical,
    # z is 3 bits from both, so z's best link (0.953) is the group's weakest.
    d4 = [["0" * 16] * 8] * 2 + [["0" * 13 + "007"] * 8]
    out = group_images([sha("x"), sha("y"), sha("z")], d4, np.eye(3, dtype=np.float32))
    assert len({a.group_id for a in out}) == 1
    assert all(a.confidence == pytest.approx(1 - 3 / 64, abs=1e-4) for a in out)


def test_identical_hashes_all_group_and_counts_add_up():
    n = 5
    out = group_images(
        [sha(str(k)) for k in range(n)], [["ab" * 8] * 8] * n, np.eye(n, dtype=np.float32)
    )
    assert Counter(a.group_id for a in out).most_common() == [(out[0].group_id, n)]
    assert sum(a.is_group_centre for a in out) == 1


def test_duplicate_ids_raise():
    with pytest.raises(ValueError, match="unique"):
        group_images([sha("a"), sha("a")], [["0" * 16] * 8] * 2, np.eye(2, dtype=np.float32))


def test_empty_input():
    assert group_images([], [], np.zeros((0, 291), dtype=np.float32)) == []


def test_images_verified_as_variant_twins_never_share_a_group():
    """A chain base - edited copy - variant: the copy links to both, the base and the
    variant were verified as twins (kept apart). Links join strongest first, so the copy
    goes to whichever it agrees with more closely, and the pair kept apart never shares
    a group; without that pair the chain is one group."""
    from photogroup.cluster import Links, cut_groups

    base, copy, variant, copy2 = 0, 1, 2, 3
    emb = np.eye(4, dtype=np.float32) + 1.0  # all alike (cosine 0.8 between any two)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"{k:064x}" for k in range(4)]
    a, b = np.array([copy, copy, copy2]), np.array([base, variant, base])
    closer_to_base = np.array([1.0, 0.9, 1.0])
    chained = cut_groups(4, Links(a, b, closer_to_base), emb, 0.5, ids)
    assert len(set(chained.tolist())) == 1
    apart = frozenset({(base, variant)})
    kept = cut_groups(4, Links(a, b, closer_to_base, apart=apart), emb, 0.5, ids)
    assert kept[base] == kept[copy] == kept[copy2] != kept[variant]
    closer_to_variant = np.array([0.9, 1.0, 1.0])
    kept = cut_groups(4, Links(a, b, closer_to_variant, apart=apart), emb, 0.5, ids)
    assert kept[variant] == kept[copy] != kept[base] == kept[copy2]


def test_twins_kept_apart_join_links_closest_first_not_by_the_test_strength():
    """A stickered copy's link to its base is judged outside the sticker (strength: the
    rest's agreement) and may read stronger than its plain link to the variant of that
    base it also resembles; where twins are kept apart, links are joined by how much of
    the two images agrees, so the copy goes with what it agrees with most."""
    from photogroup.cluster import Links, cut_groups

    base, copy, variant = 0, 1, 2
    emb = np.ones((3, 4), dtype=np.float32) / 2.0
    ids = [f"{k:064x}" for k in range(3)]
    a, b = np.array([copy, copy]), np.array([base, variant])
    strength = np.array([0.9, 1.0])  # the variant's link passed a patch test: rest 1.0
    apart = frozenset({(base, variant)})
    by_strength = cut_groups(3, Links(a, b, strength, apart=apart), emb, 0.5, ids)
    assert by_strength[copy] == by_strength[variant]
    closeness = np.array([0.97, 0.8])  # but it agrees with the base over more blocks
    kept = cut_groups(3, Links(a, b, strength, apart=apart, closeness=closeness), emb, 0.5, ids)
    assert kept[copy] == kept[base] != kept[variant]
