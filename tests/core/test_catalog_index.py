"""The catalogue indexes: exact where promised, recall where approximate, incremental
adds equal to one build, removal, refusal of duplicate ids, byte round trips."""

from __future__ import annotations

import numpy as np
import pytest

from photogroup.catalog_index import HashIndex, VectorIndex
from photogroup.neighbours import MultiIndexHashTable

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def catalogue(n: int, seed: int = 0) -> np.ndarray:
    """Near-duplicate groups of four within 40 categories, plus a shared component."""
    rng = np.random.default_rng(seed)
    group = np.arange(n) // 4
    category = rng.integers(40, size=group.max() + 1)
    kinds = rng.standard_normal((40, DIM))
    centres = kinds[category] + rng.standard_normal((group.max() + 1, DIM))
    return unit(0.5 + centres[group] + 0.25 * rng.standard_normal((n, DIM)))


def with_queries(n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """A catalogue of ``n`` and ``queries`` held-out rows of the same distribution."""
    rows = catalogue(n + queries)
    held = np.zeros(n + queries, dtype=bool)
    held[np.random.default_rng(2).choice(n + queries, queries, replace=False)] = True
    return rows[~held], rows[held]


def brute_top(base: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int):
    sims = queries @ base.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return (
        sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist(), strict=True))
        / truth.size
    )


def built(vectors: np.ndarray, ids: np.ndarray, batch: int | None = None, **kw) -> VectorIndex:
    index = VectorIndex(DIM, **kw)
    step = batch or len(ids)
    for start in range(0, len(ids), step):
        index.add(ids[start : start + step], vectors[start : start + step])
    return index


def same_results(a: VectorIndex, b: VectorIndex, queries: np.ndarray, k: int = 10) -> bool:
    (sa, ia), (sb, ib) = a.search(queries, k), b.search(queries, k)
    return np.array_equal(ia, ib) and np.array_equal(sa, sb)


def spread_ids(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).choice(2**62, size=n, replace=False).astype(np.int64)


# -- VectorIndex ---------------------------------------------------------------------------


def test_small_catalogue_is_exact():
    (vectors, queries), ids = with_queries(2_000, 200), spread_ids(2_000)
    index = built(vectors, ids)
    assert index.exact and len(index) == 2_000
    scores, found = index.search(queries, 10)
    truth_scores, truth = brute_top(vectors, ids, queries, 10)
    assert np.array_equal(found, truth)
    np.testing.assert_allclose(scores, truth_scores, atol=1e-5)
    assert np.array_equal(index.ids(), np.sort(ids))


def test_fewer_entries_than_k():
    vectors, ids = catalogue(3), np.array([7, 3, 5])
    scores, found = built(vectors, ids).search(vectors[:2], 5)
    assert (found[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert found[0, 0] == 7 and found[1, 0] == 3
    assert (np.diff(scores[:, :3], axis=1) <= 0).all()
    empty_scores, empty = VectorIndex(DIM).search(vectors, 2)
    assert (empty == -1).all() and np.isneginf(empty_scores).all()


def test_above_the_limit_the_ivf_index_recalls_the_exact_neighbours():
    (vectors, queries), ids = with_queries(3_000, 300), spread_ids(3_000)
    index = built(vectors, ids, exact_limit=1_000)
    assert not index.exact and index.trained_on == 1_000 and index.nlist > 1
    _, found = index.search(queries, 10)
    assert recall(found, brute_top(vectors, ids, queries, 10)[1]) >= 0.95


def test_batches_give_the_same_index_as_one_add_below_the_limit():
    vectors, ids = catalogue(2_500), spread_ids(2_500)
    one = built(vectors, ids)
    batches = built(vectors, ids, batch=300)
    assert np.array_equal(one.ids(), batches.ids())
    assert same_results(one, batches, vectors[::23])


@pytest.mark.parametrize("batch", [7, 450])
def test_batches_give_the_same_index_as_one_add_above_the_limit(batch):
    # Crosses the limit (1,000) and then a retrain (x2): the quantiser is trained on the
    # first rows in insertion order either way, so the indexes are identical.
    vectors, ids = catalogue(2_300), spread_ids(2_300)
    kw = {"exact_limit": 1_000, "retrain_growth": 2}
    one = built(vectors, ids, **kw)
    batches = built(vectors, ids, batch=batch, **kw)
    assert one.trained_on == batches.trained_on == 2_000
    assert np.array_equal(one.ids(), batches.ids())
    assert same_results(one, batches, vectors[::23])


def test_building_twice_gives_identical_results():
    (vectors, queries), ids = with_queries(2_500, 100), spread_ids(2_500)
    assert same_results(
        built(vectors, ids, exact_limit=800), built(vectors, ids, exact_limit=800), queries
    )


@pytest.mark.parametrize("exact_limit", [20_000, 1_000])
def test_remove_drops_exactly_those_ids(exact_limit):
    vectors, ids = catalogue(2_400), spread_ids(2_400)
    index = built(vectors, ids, exact_limit=exact_limit)
    gone = ids[100:400]
    assert index.remove(np.concatenate([gone, [12345]])) == len(gone)  # unknown ignored
    assert index.remove(gone) == 0
    assert len(index) == 2_100
    assert np.array_equal(index.ids(), np.sort(np.concatenate([ids[:100], ids[400:]])))
    _, found = index.search(vectors[100:400], 10)  # the removed vectors themselves
    assert not np.isin(found, gone).any()
    assert np.isin(found[found >= 0], ids).all()


def test_removing_below_the_limit_returns_to_exact_search():
    vectors, ids = catalogue(1_500), spread_ids(1_500)
    index = built(vectors, ids, exact_limit=1_000)
    assert not index.exact
    index.remove(ids[:700])
    assert index.exact and len(index) == 800
    queries = vectors[::31]
    assert np.array_equal(
        index.search(queries, 5)[1], brute_top(vectors[700:], ids[700:], queries, 5)[1]
    )
    index.add(ids[:100], vectors[:100])  # and it grows again
    assert len(index) == 900


def test_duplicate_ids_are_refused_and_nothing_changes():
    vectors, ids = catalogue(200), spread_ids(200)
    index = built(vectors[:100], ids[:100])
    with pytest.raises(ValueError, match="already in the index"):
        index.add(ids[99:150], vectors[99:150])
    with pytest.raises(ValueError, match="duplicate ids"):
        index.add(np.array([ids[150], ids[150]]), vectors[150:152])
    with pytest.raises(ValueError, match="dimension"):
        index.add(ids[150:152], vectors[150:152, :16])
    assert len(index) == 100 and np.array_equal(index.ids(), np.sort(ids[:100]))


@pytest.mark.parametrize("exact_limit", [20_000, 1_000])
def test_vector_round_trip(exact_limit):
    vectors, ids = catalogue(2_000), spread_ids(2_000)
    index = built(vectors, ids, exact_limit=exact_limit, nprobe=4, seed=5)
    index.remove(ids[:50])
    copy = VectorIndex.from_bytes(index.to_bytes())
    assert (copy.exact, copy.trained_on, copy.nprobe, copy.seed) == (
        index.exact, index.trained_on, 4, 5
    )  # fmt: skip
    assert np.array_equal(copy.ids(), index.ids())
    assert same_results(index, copy, vectors[::23])
    np.testing.assert_array_equal(copy.vectors(ids[60:70]), vectors[60:70])
    # Both go on the same way.
    index.add(ids[:50], vectors[:50])
    copy.add(ids[:50], vectors[:50])
    assert same_results(index, copy, vectors[::23])
    with pytest.raises(ValueError, match="not a serialised"):
        VectorIndex.from_bytes(b"nonsense" * 10)


# -- HashIndex -----------------------------------------------------------------------------


def near_duplicate_d4(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=(n // 3 + 1, 8), dtype=np.uint64)
    d4 = np.repeat(base, 3, axis=0)[:n]
    for _ in range(4):  # up to four bits flipped per hash
        d4 ^= np.uint64(1) << rng.integers(0, 64, size=d4.shape, dtype=np.uint64)
    return d4


def brute_hash_search(queries: np.ndarray, entries: np.ndarray, ids: np.ndarray, radius: int):
    one = np.bitwise_count(queries[:, None, :1] ^ entries[None, :, :]).min(axis=2)
    other = np.bitwise_count(entries[None, :, :1] ^ queries[:, None, :]).min(axis=2)
    dist = np.minimum(one, other)
    rows, cols = np.nonzero(dist <= radius)
    return {(int(r), int(ids[c])): int(dist[r, c]) for r, c in zip(rows, cols, strict=True)}


def found_set(result) -> dict:
    rows, ids, dist = result
    return {(int(r), int(i)): int(d) for r, i, d in zip(rows, ids, dist, strict=True)}


def hash_catalogue():
    entries = near_duplicate_d4(600, seed=0)
    ids = spread_ids(600)
    # Queries: edited copies of entries (more flipped bits) and unrelated hashes.
    rng = np.random.default_rng(9)
    queries = entries[rng.choice(600, 150, replace=False)].copy()
    for _ in range(3):
        queries ^= np.uint64(1) << rng.integers(0, 64, size=queries.shape, dtype=np.uint64)
    queries = np.concatenate([queries, rng.integers(0, 2**63, size=(50, 8), dtype=np.uint64)])
    return entries, ids, queries


@pytest.mark.parametrize("radius", range(8))
def test_hash_search_equals_brute_force(radius):
    entries, ids, queries = hash_catalogue()
    index = HashIndex()
    for start in range(0, 600, 250):
        index.add(ids[start : start + 250], entries[start : start + 250])
    result = index.search(queries, radius)
    assert found_set(result) == brute_hash_search(queries, entries, ids, radius)
    rows, _, dist = result
    assert np.array_equal(np.lexsort((dist, rows)), np.arange(len(rows)))  # row, distance
    if radius >= 4:
        assert len(rows) > 100


def test_hash_search_sees_flips_and_turns_both_ways():
    rng = np.random.default_rng(1)
    entries = rng.integers(0, 2**63, size=(3, 8), dtype=np.uint64)
    index = HashIndex()
    index.add(np.array([10, 20, 30]), entries)
    query = rng.integers(0, 2**63, size=(2, 8), dtype=np.uint64)
    query[0, 0] = entries[1, 5] ^ np.uint64(0b101)  # query 0 is entry 20 turned, 2 bits off
    query[1, 6] = entries[2, 0] ^ np.uint64(1)  # entry 30 is query 1 turned, 1 bit off
    rows, ids, dist = index.search(query, 3)
    assert (rows.tolist(), ids.tolist(), dist.tolist()) == ([0, 1], [20, 30], [2, 1])
    # With the query's identity only, the second match is out of sight.
    rows, ids, dist = index.search(query[:, 0], 3)
    assert (rows.tolist(), ids.tolist()) == ([0], [20])


def test_hash_remove_and_round_trip():
    entries, ids, queries = hash_catalogue()
    index = HashIndex()
    index.add(ids, entries)
    assert index.search(queries, 7)[0].size  # the tables are built now
    with pytest.raises(ValueError, match="already in the index"):
        index.add(ids[:2], entries[:2])
    assert index.remove(np.concatenate([ids[:200], [1]])) == 200
    assert len(index) == 400
    expected = brute_hash_search(queries, entries[200:], ids[200:], 7)
    assert found_set(index.search(queries, 7)) == expected
    copy = HashIndex.from_bytes(index.to_bytes())
    assert np.array_equal(copy.ids(), index.ids())
    np.testing.assert_array_equal(copy.hashes(ids[300:305]), entries[300:305])
    assert found_set(copy.search(queries, 7)) == expected
    with pytest.raises(ValueError, match="too large"):
        copy.search(queries, 9)
    empty = HashIndex()
    assert all(len(part) == 0 for part in empty.search(queries, 4))


def test_multi_index_table_reports_each_pair_once_in_small_blocks():
    entries = near_duplicate_d4(300, seed=4).reshape(-1)
    queries = near_duplicate_d4(90, seed=4)[:, 0]
    table = MultiIndexHashTable(entries)
    rows, pos, dist = table.search(queries, 7, max_candidates=50)  # many query blocks
    pairs = list(zip(rows.tolist(), pos.tolist(), strict=True))
    assert len(pairs) == len(set(pairs))
    d = np.bitwise_count(queries[:, None] ^ entries[None, :])
    expected = {(int(r), int(c)) for r, c in zip(*np.nonzero(d <= 7), strict=True)}
    assert set(pairs) == expected
    assert np.array_equal(dist, d[rows, pos])


@pytest.mark.parametrize("exact_limit", [20_000, 500])  # exact search, then IVF
def test_excluded_ids_are_skipped_inside_the_search(exact_limit):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1_500, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(1_500, dtype=np.int64) * 3 + 1
    index = VectorIndex(16, exact_limit=exact_limit)
    index.add(ids, x)
    skipped = ids[:20]
    _, found = index.search(x[:20], 5, exclude=skipped)
    assert not set(found.ravel().tolist()) & set(skipped.tolist())
    assert (found >= 0).all()  # the k places are filled by the others
    _, plain = index.search(x[:20], 5)
    assert (plain[:, 0] == skipped).all()  # without exclude each finds itself first


def test_hash_search_excludes_ids():
    rng = np.random.default_rng(6)
    d4 = rng.integers(0, 2**63, size=(10, 8), dtype=np.uint64)
    index = HashIndex()
    index.add(np.arange(10, dtype=np.int64), d4)
    _, found, _ = index.search(d4[:3], 0)
    assert set(found.tolist()) == {0, 1, 2}
    _, found, _ = index.search(d4[:3], 0, exclude=np.array([1]))
    assert set(found.tolist()) == {0, 2}
