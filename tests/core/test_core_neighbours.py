"""Candidate search finds what brute force finds, without comparing every pair."""

from __future__ import annotations

import numpy as np
import pytest

from photogroup.neighbours import EXACT_LIMIT, hash_pairs, similar_pairs, unique_pairs


def brute_hash_pairs(d4: np.ndarray, radius: int) -> dict[tuple[int, int], int]:
    n = len(d4)
    out = {}
    for i in range(n):
        for j in range(i + 1, n):
            d = min(
                int(np.bitwise_count(d4[i, 0] ^ d4[j]).min()),
                int(np.bitwise_count(d4[j, 0] ^ d4[i]).min()),
            )
            if d <= radius:
                out[(i, j)] = d
    return out


def near_duplicate_hashes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=(n // 3, 8), dtype=np.uint64)
    d4 = np.repeat(base, 3, axis=0)[:n]
    for _ in range(4):  # up to four bits flipped per hash: distances 0..8 between copies
        d4 ^= np.uint64(1) << rng.integers(0, 64, size=d4.shape, dtype=np.uint64)
    d4[2::3] = d4[1::3][: len(d4[2::3])]  # and some exact copies
    return d4


@pytest.mark.parametrize("buckets", ["binary search", "start offsets"])
@pytest.mark.parametrize("radius", [0, 3, 4, 7, 8])
def test_hash_pairs_equal_brute_force(radius, buckets, monkeypatch):
    """Both ways of finding a bucket (a small table's binary search, a large one's offsets
    for every chunk value) find exactly the pairs brute force finds."""
    import photogroup.neighbours

    if buckets == "start offsets":  # as a table of 2**15 hashes or more would
        monkeypatch.setattr(photogroup.neighbours, "_SPARSE_FACTOR", 2**30)
    d4 = near_duplicate_hashes(240)
    a, b, d = hash_pairs(d4[:, 0], d4, radius)
    found = {(int(i), int(j)): int(k) for i, j, k in zip(a, b, d, strict=True)}
    assert found == brute_hash_pairs(d4, radius)
    assert len(found) > 0


def test_hash_pairs_see_every_orientation():
    rng = np.random.default_rng(1)
    d4 = rng.integers(0, 2**63, size=(2, 8), dtype=np.uint64)
    d4[1, 0] = d4[0, 5] ^ np.uint64(0b11)  # image 1 is image 0 turned, two bits off
    a, b, d = hash_pairs(d4[:, 0], d4, 3)
    assert (a.tolist(), b.tolist(), d.tolist()) == ([0], [1], [2])


def test_hash_radius_beyond_exact_search_is_refused():
    d4 = near_duplicate_hashes(6)
    with pytest.raises(ValueError, match="too large"):
        hash_pairs(d4[:, 0], d4, 9)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_vectors(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.arange(n) // 4
    centres = rng.standard_normal((label.max() + 1, dim))
    return unit(centres[label] + 0.2 * rng.standard_normal((n, dim))), label


def test_similar_pairs_exact_path_finds_every_close_pair():
    vectors, _ = clustered_vectors(200, 32)
    a, b, cos = similar_pairs(vectors, 0.8, k=10)
    sims = vectors @ vectors.T
    expected = {(i, j) for i in range(200) for j in range(i + 1, 200) if sims[i, j] >= 0.8}
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == expected
    np.testing.assert_allclose(cos, sims[a, b], rtol=1e-5)


def test_similar_pairs_index_path_recalls_group_mates():
    n = EXACT_LIMIT + 2_000  # past the exact limit: the IVF index answers
    vectors, label = clustered_vectors(n, 128)
    a, b, cos = similar_pairs(vectors, 0.8, k=8)
    true_pairs = {
        (i, j) for g in range(0, n, 4) for i in range(g, g + 4) for j in range(i + 1, g + 4)
    }
    found = set(zip(a.tolist(), b.tolist(), strict=True))
    recall = len(found & true_pairs) / len(true_pairs)
    assert recall >= 0.99
    assert all(label[i] == label[j] for i, j in found)  # at 0.8 only group mates qualify
    assert (cos >= 0.8).all()
    # Same input, same seed: the same candidates.
    again = similar_pairs(vectors, 0.8, k=8)
    assert np.array_equal(again[0], a) and np.array_equal(again[1], b)


def test_unique_pairs_orders_and_keeps_the_best_value():
    a, b, v = unique_pairs(
        np.array([3, 1, 1, 2, 5]), np.array([1, 3, 3, 2, 4]), np.array([5, 2, 9, 0, 1]), "min"
    )
    assert (a.tolist(), b.tolist(), v.tolist()) == ([1, 4], [3, 5], [2, 1])
