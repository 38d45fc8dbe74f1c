"""A tenant's catalogue index: every accepted image's embedding and dihedral pHash, by id.

Both indexes are incremental: ``add`` takes one batch's rows and touches nothing earlier,
``remove`` drops a batch's ids. Both serialise to bytes for the pipeline bucket.

:class:`VectorIndex` (embeddings; cosine = inner product of unit vectors)

* Below ``EXACT_LIMIT`` (20k) vectors: exact search (faiss ``IndexFlatIP``); at 10k it
  takes 0.04 ms a query in a batch, 0.2 ms alone, and needs no training.
* From there on: faiss IVF-Flat, chosen over HNSW on ``bench/catalog.py`` (dim 291, 1,000
  held-out queries, recall@10 against exact search, ms per query in a batch of 1,000, two
  shared cores; "cos>=0.8" is the recall of the exact top-10 entries that are product
  matches, what the catalogue is searched for):

  =========================  =======  =========  =========  ====  ===================
  100k vectors               build s  recall@10  cos>=0.8   ms/q  after remove / batch
  =========================  =======  =========  =========  ====  ===================
  IVF-Flat, nprobe 16        0.7      0.9974     1.0000     0.13  in place, identical
  HNSW32, efSearch 128       5.9      0.9767     0.9814     0.11  not supported
  HNSW32, efSearch 256                0.9851     0.9874     0.17
  harder data: IVF, 16       1.1      0.7859     0.9976     0.71
  harder data: IVF, 64                0.9495     1.0000     2.01
  harder data: HNSW, 128     14.0     0.9526     0.9985     0.31
  =========================  =======  =========  =========  ====  ===================

  At 1M, IVF-Flat (1,600 cells) builds in 11.5 s and has recall@10 0.9998 at 0.58 ms a
  query (1.2 ms alone); adding a 1,000-image batch takes 9 ms against 11 s for a rebuild
  (1,186x). Why IVF: on clustered catalogue data (near-duplicates within product
  categories) it has the better recall at the same speed, HNSW never reaching 0.99 even
  at efSearch 256; it builds 8-13x faster (HNSW at 1M would take minutes on two cores, on
  every backfill); faiss HNSW cannot remove (tombstones and periodic rebuilds instead),
  IVF removes in place (5,000 ids in 4 ms); and HNSW built batch by batch is not the
  graph built at once (top-10 differs for 41% of queries, top-1 for 14%), so a backfill
  would not reproduce the incremental index. The price, on weakly structured data: IVF
  needs nprobe 64 for recall@10 0.95, where HNSW is ~6x faster per query; the product
  matches are found at the default nprobe either way (``search(..., nprobe=)`` to trade).
* The coarse quantiser is trained once, when the catalogue first reaches ``exact_limit``,
  on a seeded sample of its first ``exact_limit`` rows (insertion order), and then kept:
  a batch is assigned to the existing cells and appended. When the catalogue has grown
  ``retrain_growth`` (8) times past the rows it was trained on, the next ``add`` retrains
  on the first ``exact_limit * 8**k`` rows and re-adds everything (each row is re-added a
  bounded number of times, 1/7 extra work amortised). ``NLIST_PER_SQRT * sqrt(rows
  trained on)`` cells, ``NPROBE`` (16) probed. Vectors stay retrievable from the IVF lists
  (direct map by id), so a rebuild needs nothing but the index.
* Determinism: the rows that train the quantiser depend only on how many rows there are
  and their insertion order, never on how they were split into ``add`` calls, so adding
  batch after batch and adding the same rows at once (a backfill rebuilding from history
  in arrival order) give identical indexes and search results, below and above the limit
  (the bench checks it at 1M). What can differ: after ``remove``, the quantiser keeps the
  cells trained partly on removed rows, while a rebuild from the remaining history trains
  on other rows. The ids are the same and approximate neighbours may differ; removing the
  first five batches of 100k left the top-1 of every query unchanged. Dropping below
  ``exact_limit`` by removal returns to exact search, as a rebuild would.

:class:`HashIndex` (64-bit dihedral pHashes, ``n x 8`` orientations per entry)

* Exact Hamming range search up to 7 bits by multi-index hashing
  (:class:`photogroup.neighbours.MultiIndexHashTable`, shared with ``hash_pairs``), with
  ``hash_pairs``' distance: the minimum over orientations, taken both ways round. Only the
  ids and hashes are stored; the bucket tables are rebuilt on the first search after a
  change or a load (radix sorts of 16-bit keys: 1.2 s at 1M entries; then 0.4-0.5 ms a
  query at radius 4-7).
"""

from __future__ import annotations

import io
import json
import math
import struct

import faiss
import numpy as np

from photogroup.neighbours import MultiIndexHashTable, check_hash_radius

#: Below this many vectors search is exact (a brute-force scan).
EXACT_LIMIT = 20_000
#: Retrain the IVF quantiser once the catalogue is this many times the rows it was trained on.
RETRAIN_GROWTH = 8
#: IVF cells probed per query: recall@10 >= 0.95 on ``bench/catalog.py`` up to 1M.
NPROBE = 16
#: IVF cells: this times the square root of the rows the quantiser is trained on.
NLIST_PER_SQRT = 4
#: k-means sample per cell (faiss warns below 39) and iterations: cells only need to be
#: roughly balanced, and training time is what a rebuild costs.
_POINTS_PER_CELL = 40
_KMEANS_ITERATIONS = 10
_GATHER_BLOCK = 65_536
_MAGIC = b"photogroup.VectorIndex/1\n"
_NO_SCORE = -np.inf


class VectorIndex:
    """Nearest neighbours by cosine over unit float32 vectors with int64 ids (see module doc)."""

    def __init__(
        self,
        dim: int,
        *,
        seed: int = 0,
        exact_limit: int = EXACT_LIMIT,
        nprobe: int = NPROBE,
        retrain_growth: int = RETRAIN_GROWTH,
    ) -> None:
        if dim < 1 or exact_limit < 1 or nprobe < 1 or retrain_growth < 2:
            raise ValueError("dim, exact_limit and nprobe must be >= 1, retrain_growth >= 2")
        self.dim = dim
        self.seed = seed
        self.exact_limit = exact_limit
        self.nprobe = nprobe
        self.retrain_growth = retrain_growth
        self.trained_on = 0  # rows the IVF quantiser was trained on; 0 while exact
        self._order = np.zeros(0, dtype=np.int64)  # ids in insertion order
        self._sorted = np.zeros(0, dtype=np.int64)  # the same, sorted, for lookups
        self._index: faiss.Index = self._flat()

    # -- reading -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._order)

    def ids(self) -> np.ndarray:
        return self._sorted.copy()

    @property
    def exact(self) -> bool:
        return self.trained_on == 0

    @property
    def nlist(self) -> int:
        """IVF cells (0 while exact)."""
        return 0 if self.exact else faiss.extract_index_ivf(self._index).nlist

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        nprobe: int | None = None,
        exclude: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest entries of each row: ``n x k`` cosines (descending) and ids,
        ``-inf`` and ``-1`` where the index has fewer than ``k`` (or, approximate, the
        probed cells hold fewer). Ids in ``exclude`` are skipped inside the search (a faiss
        ID selector), so they never take the place of the k nearest others."""
        if k < 1:
            raise ValueError("k must be >= 1")
        x = self._as_matrix(vectors)
        if not len(self) or not len(x):
            return np.full((len(x), k), _NO_SCORE, np.float32), np.full((len(x), k), -1, np.int64)
        selectors = []
        if exclude is not None and len(exclude):
            skipped = faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
            selectors = [skipped, faiss.IDSelectorNot(skipped)]  # both kept alive
        if self.exact:
            params = faiss.SearchParameters(sel=selectors[-1]) if selectors else None
        else:
            params = faiss.SearchParametersIVF(nprobe=nprobe or self.nprobe)
            if selectors:
                params.sel = selectors[-1]
        scores, ids = self._index.search(x, k, params=params)
        scores[ids < 0] = _NO_SCORE
        return scores, ids

    def vectors(self, ids: np.ndarray | None = None) -> np.ndarray:
        """Stored vectors of ``ids`` (default: every entry, in insertion order)."""
        ids = self._order if ids is None else np.asarray(ids, dtype=np.int64).ravel()
        if not len(ids):
            return np.zeros((0, self.dim), dtype=np.float32)
        if not _member(ids, self._sorted).all():
            raise KeyError("unknown ids")
        return self._index.reconstruct_batch(np.ascontiguousarray(ids))

    # -- changing ------------------------------------------------------------------------

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append one batch. Raises ValueError on an id already present or repeated."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
        x = self._as_matrix(vectors)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        _check_new(ids, self._sorted)
        if not len(ids):
            return
        n = len(self) + len(ids)
        target = self._training_rows(n)
        if target > self.trained_on:
            # First crossing of the limit, or grown retrain_growth times: (re)train on the
            # first `target` rows of the insertion order and re-add everything.
            order = np.concatenate([self._order, ids])
            everything = x if not len(self) else self._gather_with(x)
            self._index = self._ivf(everything, order, target)  # the old one stays until here
            self.trained_on = target
        else:
            self._index.add_with_ids(x, ids)
        self._order = np.concatenate([self._order, ids])
        self._sorted = _insert_sorted(self._sorted, ids)

    def remove(self, ids: np.ndarray) -> int:
        """Drop these ids (unknown ones are ignored); returns how many were present."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        present = ids[_member(ids, self._sorted)]
        if not len(present):
            return 0
        keep = ~_member(self._order, present)
        if not self.exact and keep.sum() < self.exact_limit:
            # Small again: exact search, rebuilt from the remaining rows in order.
            remaining = self._order[keep]
            flat = self._flat()
            flat.add_with_ids(self.vectors(remaining), remaining)
            self._index, self.trained_on = flat, 0
            self._order, self._sorted = remaining, np.sort(remaining)
            return len(present)
        # IVF's hashtable direct map removes only by an explicit array of ids.
        self._index.remove_ids(faiss.IDSelectorArray(len(present), faiss.swig_ptr(present)))
        self._order = self._order[keep]
        self._sorted = self._sorted[~_member(self._sorted, present)]
        return len(present)

    # -- bytes ---------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        header = json.dumps(
            {
                "dim": self.dim,
                "seed": self.seed,
                "exact_limit": self.exact_limit,
                "nprobe": self.nprobe,
                "retrain_growth": self.retrain_growth,
                "trained_on": self.trained_on,
                "count": len(self),
            },
            sort_keys=True,
        ).encode()
        body = faiss.serialize_index(self._index)
        order = self._order.astype("<i8")
        return b"".join([_MAGIC, struct.pack("<Q", len(header)), header, order.data, body.data])

    @classmethod
    def from_bytes(cls, data: bytes) -> VectorIndex:
        view = memoryview(data)
        if bytes(view[: len(_MAGIC)]) != _MAGIC:
            raise ValueError("not a serialised VectorIndex")
        at = len(_MAGIC)
        (size,) = struct.unpack_from("<Q", view, at)
        at += 8
        meta = json.loads(bytes(view[at : at + size]))
        at += size
        index = cls(
            meta["dim"],
            seed=meta["seed"],
            exact_limit=meta["exact_limit"],
            nprobe=meta["nprobe"],
            retrain_growth=meta["retrain_growth"],
        )
        count = meta["count"]
        index._order = np.frombuffer(view, dtype="<i8", count=count, offset=at).astype(np.int64)
        index._sorted = np.sort(index._order)
        index.trained_on = meta["trained_on"]
        index._index = faiss.deserialize_index(np.frombuffer(view, np.uint8, offset=at + 8 * count))
        if index._index.ntotal != count or index._index.d != index.dim:
            raise ValueError("serialised VectorIndex is inconsistent")
        return index

    # -- internals -----------------------------------------------------------------------

    def _as_matrix(self, vectors: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dimension {self.dim}, got shape {x.shape}")
        return x

    def _flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))

    def _gather_with(self, x: np.ndarray) -> np.ndarray:
        """Every stored vector in insertion order, then ``x``: one array, filled in blocks
        so a rebuild holds the data once more, not twice."""
        out = np.empty((len(self) + len(x), self.dim), dtype=np.float32)
        for start in range(0, len(self), _GATHER_BLOCK):
            block = self._order[start : start + _GATHER_BLOCK]
            out[start : start + len(block)] = self._index.reconstruct_batch(block)
        out[len(self) :] = x
        return out

    def _training_rows(self, n: int) -> int:
        """Rows the quantiser of an ``n``-row catalogue is trained on: 0 (exact) below the
        limit, else the largest ``exact_limit * growth**k`` not above ``n``."""
        if n < self.exact_limit:
            return 0
        steps = int(math.log(n / self.exact_limit, self.retrain_growth) + 1e-9)
        rows = self.exact_limit * self.retrain_growth**steps
        while rows * self.retrain_growth <= n:  # guard the float logarithm both ways
            rows *= self.retrain_growth
        while rows > n:
            rows //= self.retrain_growth
        return rows

    def _ivf(self, vectors: np.ndarray, ids: np.ndarray, trained_on: int) -> faiss.Index:
        """An IVF-Flat index over ``vectors`` (rows of ``ids``, in insertion order), its
        quantiser trained on a seeded sample of the first ``trained_on`` rows."""
        nlist = max(1, round(NLIST_PER_SQRT * math.sqrt(trained_on)))
        quantiser = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantiser, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = self.seed
        index.cp.niter = _KMEANS_ITERATIONS
        index.cp.max_points_per_centroid = _POINTS_PER_CELL + 1  # no second subsampling
        index.cp.min_points_per_centroid = 1  # small samples are deliberate: no warning
        sample_size = min(trained_on, nlist * _POINTS_PER_CELL)
        rng = np.random.default_rng(self.seed)
        sample = np.sort(rng.choice(trained_on, size=sample_size, replace=False))
        index.train(vectors[sample])
        index.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct and remove by id
        index.add_with_ids(vectors, ids)
        return index


class HashIndex:
    """Exact Hamming search over dihedral pHashes (``n x 8`` uint64, identity first)."""

    def __init__(self) -> None:
        self._ids = np.zeros(0, dtype=np.int64)  # insertion order
        self._sorted = np.zeros(0, dtype=np.int64)
        self._d4 = np.zeros((0, 8), dtype=np.uint64)
        self._tables: tuple[MultiIndexHashTable, MultiIndexHashTable] | None = None

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> np.ndarray:
        return self._sorted.copy()

    def hashes(self, ids: np.ndarray | None = None) -> np.ndarray:
        """The stored ``n x 8`` hashes of ``ids`` (default: all, in insertion order)."""
        if ids is None:
            return self._d4.copy()
        ids = np.asarray(ids, dtype=np.int64).ravel()
        position = np.argsort(self._ids, kind="stable")
        rows = position[np.searchsorted(self._ids[position], ids)]
        if not np.array_equal(self._ids[rows], ids):
            raise KeyError("unknown ids")
        return self._d4[rows]

    def add(self, ids: np.ndarray, d4: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
        d4 = np.ascontiguousarray(d4, dtype=np.uint64)
        if d4.ndim != 2 or d4.shape[1] != 8 or len(d4) != len(ids):
            raise ValueError(f"expected {len(ids)} x 8 hashes, got shape {d4.shape}")
        _check_new(ids, self._sorted)
        if not len(ids):
            return
        self._ids = np.concatenate([self._ids, ids])
        self._sorted = _insert_sorted(self._sorted, ids)
        self._d4 = np.concatenate([self._d4, d4])
        self._tables = None

    def remove(self, ids: np.ndarray) -> int:
        ids = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        present = ids[_member(ids, self._sorted)]
        if len(present):
            keep = ~_member(self._ids, present)
            self._ids, self._d4 = self._ids[keep], self._d4[keep]
            self._sorted = self._sorted[~_member(self._sorted, present)]
            self._tables = None
        return len(present)

    def search(
        self, query_d4: np.ndarray, radius: int, *, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (query row, entry id, distance) within ``radius`` bits (at most 8), exact,
        leaving out the ids in ``exclude``.

        ``query_d4`` is ``m x 8`` (identity first) or ``m`` identities only; the distance is
        the minimum of the query's identity against the entry's orientations and the query's
        orientations against the entry's identity. Sorted by query row, distance, id.
        """
        check_hash_radius(radius)
        q = np.ascontiguousarray(query_d4, dtype=np.uint64)
        q = q[:, None] if q.ndim == 1 else q
        empty = np.zeros(0, dtype=np.int64)
        if not len(self) or not len(q) or radius < 0:
            return empty, empty.copy(), empty.copy()
        if self._tables is None:
            self._tables = (
                MultiIndexHashTable(self._d4.reshape(-1)),
                MultiIndexHashTable(self._d4[:, 0]),
            )
        orientations, identities = self._tables
        m = q.shape[1]
        r1, e1, d1 = orientations.search(q[:, 0], radius)
        r2, e2, d2 = identities.search(q.reshape(-1), radius)
        rows = np.concatenate([r1, r2 // m])
        entries = np.concatenate([e1 // 8, e2])
        dist = np.concatenate([d1, d2])
        order = np.lexsort((dist, entries, rows))  # best distance first within each pair
        rows, entries, dist = rows[order], entries[order], dist[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = (rows[1:] != rows[:-1]) | (entries[1:] != entries[:-1])
        rows, ids, dist = rows[first], self._ids[entries[first]], dist[first]
        if exclude is not None and len(exclude):
            kept = ~np.isin(ids, np.asarray(exclude, dtype=np.int64))
            rows, ids, dist = rows[kept], ids[kept], dist[kept]
        order = np.lexsort((ids, dist, rows))
        return rows[order], ids[order], dist[order]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, ids=self._ids, d4=self._d4)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> HashIndex:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            ids, d4 = stored["ids"].astype(np.int64), stored["d4"].astype(np.uint64)
        index = cls()
        index.add(ids, d4.reshape(-1, 8))
        return index


def _check_new(ids: np.ndarray, existing_sorted: np.ndarray) -> None:
    if len(np.unique(ids)) != len(ids):
        raise ValueError("duplicate ids within the batch")
    clash = ids[_member(ids, existing_sorted)]
    if len(clash):
        raise ValueError(f"{len(clash)} ids already in the index, e.g. {int(clash[0])}")


def _member(values: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Which ``values`` are in ``sorted_ids`` (binary search: no sort of the large side)."""
    if not len(sorted_ids):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_ids, values), len(sorted_ids) - 1)
    return sorted_ids[at] == values


def _insert_sorted(sorted_ids: np.ndarray, new: np.ndarray) -> np.ndarray:
    new = np.sort(new)
    return np.insert(sorted_ids, np.searchsorted(sorted_ids, new), new)
