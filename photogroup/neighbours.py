"""Sub-quadratic candidate search: which pairs of a batch are worth comparing at all.

* Perceptual hashes: multi-index hashing (Norouzi et al. 2012). Each 64-bit hash is cut
  into three 21-22-bit chunks; two hashes within Hamming distance r share a chunk within
  ``r // 3`` bits (pigeonhole), so looking up each chunk's bucket (and its one- or two-bit
  neighbours for larger r) finds every pair within r exactly while touching only a few
  entries per query. Written with NumPy here: faiss's ``IndexBinaryMultiHash`` range search
  took 31 s on 100k images at r = 7.
  :class:`MultiIndexHashTable` holds the buckets, so a catalogue
  (:mod:`photogroup.catalog_index`) can keep them and search them batch after batch.
* Embeddings: the ``k`` nearest neighbours by cosine. Up to ``EXACT_LIMIT`` rows an exact,
  blocked matrix product is both faster and exact; beyond it an inverted-file index (faiss
  IVF-Flat) on a seeded random projection to 64 dimensions finds candidates, which are then
  re-scored exactly on the full vectors. Near-duplicates sit in the same or a neighbouring
  Voronoi cell, which is all a grouping needs: it never asks for far neighbours.

The pair functions return ``(i, j, value)`` with ``i < j`` and no duplicates.
"""

from __future__ import annotations

import itertools

import numpy as np

#: Below this many rows exact blocked search beats building an index.
EXACT_LIMIT = 6_000
#: Cap on the elements of one block of similarities in exact search.
_BLOCK_ELEMENTS = 8_000_000
_PROJECTED_DIM = 64
_PROJECTION_MARGIN = 0.15
#: (shift, bits) of the chunks a 64-bit hash is cut into. Three chunks of 21-22 bits rather
#: than four of 16: buckets stay near-empty up to millions of entries (four 16-bit chunks
#: made the search quadratic, 16 s for 300k images), at the price of 23 probes a chunk
#: instead of 17 for radius 3-5 and 254 for radius 6-8.
_LAYOUT = ((0, 22), (22, 21), (43, 21))
_CHUNKS = len(_LAYOUT)
#: Largest radius searched exactly: two bit flips a chunk.
MAX_HASH_RADIUS = _CHUNKS * 3 - 1
#: Tables with fewer hashes than a chunk's values over this find buckets by binary search.
_SPARSE_FACTOR = 64
#: Bucket entries examined at once by a hash search (bounds its memory, ~100 MB).
_MAX_CANDIDATES = 4_000_000


def hash_pairs(
    identity: np.ndarray, orientations: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs whose dihedral Hamming distance is at most ``radius``, found exactly.

    ``identity`` is ``n`` uint64 hashes, ``orientations`` ``n x m`` (the hashes of the m
    flips/quarter turns, identity included). Distance is the minimum over orientations,
    taken both ways round, as in :func:`photogroup.features.hamming_d4`.
    """
    n, m = orientations.shape
    if n < 2:
        return _empty_pairs(np.int64)
    check_hash_radius(radius)
    # Every identity against every orientation: both ways round, since the batch is both
    # the queries and the table.
    table = MultiIndexHashTable(orientations.reshape(-1))
    rows, entry, dist = table.search(identity, radius)
    return unique_pairs(rows, entry // m, dist, "min")


def check_hash_radius(radius: int) -> None:
    """Multi-index search is exact up to ``MAX_HASH_RADIUS`` bits (two flips a chunk)."""
    if radius > MAX_HASH_RADIUS:
        raise ValueError(
            f"hash radius {radius} too large for multi-index search (max {MAX_HASH_RADIUS})"
        )


class MultiIndexHashTable:
    """64-bit hashes bucketed by each of their three chunks: exact Hamming range search.

    Building sorts each chunk's keys once; a search then touches only the buckets of each
    query chunk and, for larger radii, those of its one- and two-bit neighbours. A large
    table finds a bucket through a start offset for every possible chunk value (2**21-22
    of them); a small one by binary search in its sorted keys, since filling those offsets
    costs ~60 ms a chunk whatever the table's size (most of a 120-image batch's lookup).
    """

    def __init__(self, hashes: np.ndarray) -> None:
        self.hashes = np.ascontiguousarray(hashes, dtype=np.uint64).reshape(-1)
        index_type = np.int32 if len(self.hashes) < 2**31 else np.int64  # halves the memory
        # (order, a start per chunk value, or the keys in order for a binary search)
        self._buckets: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        for chunk, (_, bits) in enumerate(_LAYOUT):
            keys = _chunk(self.hashes, chunk)
            order = np.argsort(keys, kind="stable").astype(index_type)
            if len(keys) < (1 << bits) // _SPARSE_FACTOR:
                self._buckets.append((order, None, keys[order]))
                continue
            starts = np.zeros((1 << bits) + 1, dtype=index_type)
            np.cumsum(np.bincount(keys, minlength=1 << bits), out=starts[1:])
            self._buckets.append((order, starts, None))

    def __len__(self) -> int:
        return len(self.hashes)

    def search(
        self, queries: np.ndarray, radius: int, max_candidates: int = _MAX_CANDIDATES
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query row, table position, distance) with distance <= ``radius``, each pair
        once, in no particular order. Queries are processed in blocks of at most about
        ``max_candidates`` bucket entries, so memory stays bounded however many there are."""
        check_hash_radius(radius)
        queries = np.ascontiguousarray(queries, dtype=np.uint64).reshape(-1)
        if radius < 0 or not len(queries) or not len(self.hashes):
            return _empty_pairs(np.int64)
        nflip = radius // _CHUNKS
        rows, cols, dist = [], [], []
        for chunk, (order, starts, keys) in enumerate(self._buckets):
            probes = _chunk(queries, chunk).astype(np.int64)[:, None] ^ _flips(
                _LAYOUT[chunk][1], nflip
            )
            if starts is not None:
                lo, hi = starts[probes].astype(np.int64), starts[probes + 1].astype(np.int64)
            else:
                lo = np.searchsorted(keys, probes, side="left").astype(np.int64)
                hi = np.searchsorted(keys, probes, side="right").astype(np.int64)
            reach = np.cumsum((hi - lo).sum(axis=1))  # bucket entries up to each query
            cuts = np.searchsorted(reach, np.arange(max_candidates, reach[-1], max_candidates))
            for q0, q1 in itertools.pairwise([0, *cuts.tolist(), len(queries)]):
                if q0 == q1:
                    continue
                q = np.repeat(np.arange(q0, q1), probes.shape[1])
                q, entry = _expand_ranges(q, lo[q0:q1].ravel(), hi[q0:q1].ravel())
                entry = order[entry].astype(np.int64)
                xor = queries[q] ^ self.hashes[entry]
                d = np.bitwise_count(xor)
                keep = np.flatnonzero(d <= radius)
                # A pair whose earlier chunk is also within nflip bits was found there.
                for earlier in range(chunk):
                    keep = keep[np.bitwise_count(_chunk(xor[keep], earlier)) > nflip]
                rows.append(q[keep])
                cols.append(entry[keep])
                dist.append(d[keep].astype(np.int64))
        if not rows:
            return _empty_pairs(np.int64)
        return np.concatenate(rows), np.concatenate(cols), np.concatenate(dist)


def _chunk(hashes: np.ndarray, chunk: int) -> np.ndarray:
    shift, bits = _LAYOUT[chunk]
    return ((hashes >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int64)


def _flips(bits: int, nflip: int) -> np.ndarray:
    """XOR masks of every way to flip at most ``nflip`` of ``bits`` bits (0 first)."""
    masks = [0]
    if nflip >= 1:
        masks += [1 << i for i in range(bits)]
    if nflip >= 2:
        masks += [(1 << i) | (1 << j) for i, j in itertools.combinations(range(bits), 2)]
    return np.array(masks, dtype=np.int64)


def _expand_ranges(owner: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """For ranges ``[lo, hi)`` of owners, every (owner, position) pair, vectorised."""
    lengths = hi - lo
    total = int(lengths.sum())
    owners = np.repeat(owner, lengths)
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owners, np.repeat(lo, lengths) + offsets


def similar_pairs(
    vectors: np.ndarray, min_cosine: float, k: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs among each row's ``k`` nearest neighbours whose cosine is at least ``min_cosine``.

    Rows must be unit length; the cosine returned is exact (from the full vectors).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < 2:
        return _empty_pairs(np.float32)
    k = min(k, n - 1)
    if n <= EXACT_LIMIT:
        rows, cols, approx = _exact_knn(vectors, k)
    else:
        rows, cols, approx = _ivf_knn(vectors, k, seed)
        # Projected cosines are within ~0.1 of the true ones: drop clear non-matches before
        # the exact re-scoring, which gathers full rows and dominates the time otherwise.
        keep = approx >= min_cosine - _PROJECTION_MARGIN
        rows, cols, approx = rows[keep], cols[keep], approx[keep]
    rows, cols, _ = unique_pairs(rows, cols, approx, keep="max")
    cosine = pair_cosines(vectors, rows, cols)
    keep = cosine >= min_cosine
    return rows[keep], cols[keep], cosine[keep]


def pair_cosines(vectors: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of each pair of rows, in blocks so no ``pairs x d`` copy is made."""
    out = np.empty(len(a), dtype=np.float32)
    block = max(1, _BLOCK_ELEMENTS // max(1, vectors.shape[1]))
    for start in range(0, len(a), block):
        stop = start + block
        out[start:stop] = np.einsum("ij,ij->i", vectors[a[start:stop]], vectors[b[start:stop]])
    return out


def _exact_knn(vectors: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    n = len(vectors)
    block = max(1, _BLOCK_ELEMENTS // n)
    rows, cols = [], []
    for start in range(0, n, block):
        sims = vectors[start : start + block] @ vectors.T
        top = np.argpartition(-sims, k, axis=1)[:, : k + 1]
        rows.append(np.repeat(np.arange(start, start + len(sims)), k + 1))
        cols.append(top.ravel())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return rows, cols, np.zeros(len(rows), dtype=np.float32)  # re-scored by the caller


def _ivf_knn(vectors: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, ...]:
    import faiss

    n, d = vectors.shape
    rng = np.random.default_rng(seed)
    if d > _PROJECTED_DIM:
        # Seeded random orthogonal projection (Johnson-Lindenstrauss): no training, so the
        # same batch gets the same candidates on every run.
        basis = np.linalg.qr(rng.standard_normal((d, _PROJECTED_DIM)))[0].astype(np.float32)
        reduced = vectors @ basis
        reduced /= np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)
    else:
        reduced = vectors
    reduced = np.ascontiguousarray(reduced, dtype=np.float32)
    nlist = int(2 * np.sqrt(n))
    quantiser = faiss.IndexFlatIP(reduced.shape[1])
    index = faiss.IndexIVFFlat(quantiser, reduced.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.niter = 10  # cells only need to be roughly balanced, not optimal
    sample = rng.choice(n, size=min(n, nlist * 30), replace=False)
    index.train(reduced[np.sort(sample)])
    index.add(reduced)
    index.nprobe = 6
    approx, found = index.search(reduced, k + 1)
    rows = np.repeat(np.arange(n), k + 1)
    cols = found.ravel()
    valid = cols >= 0
    return rows[valid], cols[valid], approx.ravel()[valid]


def unique_pairs(rows, cols, values, keep: str):
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    keep_mask = lo != hi
    lo, hi, values = lo[keep_mask], hi[keep_mask], np.asarray(values)[keep_mask]
    if not len(lo):
        return lo, hi, values
    # Sort by pair, best value first, then keep the first of each pair.
    order = np.lexsort((values if keep == "min" else -values, hi, lo))
    lo, hi, values = lo[order], hi[order], values[order]
    first = np.ones(len(lo), dtype=bool)
    first[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    return lo[first], hi[first], values[first]


def _empty_pairs(dtype):
    empty = np.zeros(0, dtype=np.int64)
    return empty, empty.copy(), np.zeros(0, dtype=dtype)
