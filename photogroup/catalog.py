"""Cross-batch matching against a tenant's catalogue: ids, match kinds, the query itself.

A catalogue entry is one accepted image of one batch. Its id is derived from the batch key
and the image's SHA-256, so re-building the catalogue from history gives every entry the
id the incremental path gave it, and removing a batch removes exactly its ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from photogroup.catalog_index import HashIndex, VectorIndex
from photogroup.cluster import dihedral_distance

EXACT = "exact_bytes"
NEAR_DUPLICATE = "near_duplicate"
SIMILAR_PRODUCT = "similar_product"
#: pHash bits (of 64, dihedral) at most this: an edited copy of the same photo.
NEAR_DUPLICATE_BITS = 4
#: Embedding cosine at least this: the same product (GroupingParams.cos_product).
SIMILAR_COSINE = 0.80
#: Hash radius searched besides the embedding neighbours (exact multi-index search).
HASH_RADIUS = 7


def entry_id(batch: str, sha256: str) -> int:
    """Stable non-negative int64 id of one image of one batch."""
    digest = hashlib.sha256(f"{batch}\x00{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def entry_ids(batch: str, shas: Sequence[str]) -> np.ndarray:
    return np.array([entry_id(batch, s) for s in shas], dtype=np.int64)


@dataclass(frozen=True)
class Match:
    query: int  # row of the query
    entry: int  # catalogue id
    cosine: float  # NaN when only the hash search found it
    hash_distance: int  # -1 when only the embedding search found it
    kind: str


def kind_of(same_bytes: bool, cosine: float, hash_distance: int) -> str | None:
    """What a match means, strongest first; None for a neighbour that is no match."""
    if same_bytes:
        return EXACT
    if 0 <= hash_distance <= NEAR_DUPLICATE_BITS:
        return NEAR_DUPLICATE
    if cosine >= SIMILAR_COSINE:
        return SIMILAR_PRODUCT
    return None


def find_matches(
    vectors: np.ndarray,
    d4: np.ndarray,
    shas: Sequence[str],
    index: VectorIndex,
    hashes: HashIndex,
    entry_sha: dict[int, str],
    k: int = 10,
    exclude: np.ndarray | None = None,
) -> list[Match]:
    """The nearest catalogue entries of each query (embedding neighbours plus every entry
    within ``HASH_RADIUS`` bits), classified, best first per query, at most ``k`` each.
    Entries in ``exclude`` are never returned (nor crowd out others)."""
    found: dict[tuple[int, int], list] = {}
    if len(index) and len(vectors):
        query = np.ascontiguousarray(vectors, dtype=np.float32)
        sims, ids = index.search(query, k, exclude=exclude)
        for q in range(len(vectors)):
            for cos, entry in zip(sims[q], ids[q], strict=True):
                if entry >= 0:
                    found[(q, int(entry))] = [float(cos), -1]
    if len(hashes) and len(d4):
        rows, entries, dist = hashes.search(d4, HASH_RADIUS, exclude=exclude)
        for q, entry, d in zip(rows, entries, dist, strict=True):
            found.setdefault((int(q), int(entry)), [float("nan"), -1])[1] = int(d)
    # Embedding neighbours the hash search did not reach: their pHash distance, from the
    # hashes the index holds, tells a near-duplicate from a similar product.
    pending = [pair for pair, (_, dist) in found.items() if dist < 0]
    if pending:
        queries = np.array([q for q, _ in pending], dtype=np.int64)
        entries = np.array([e for _, e in pending], dtype=np.int64)
        stacked = np.vstack([d4, hashes.hashes(entries)])
        distances = dihedral_distance(stacked, queries, len(d4) + np.arange(len(entries)))
        for pair, d in zip(pending, distances, strict=True):
            found[pair][1] = int(d)
    matches = []
    for (q, entry), (cos, dist) in found.items():
        kind = kind_of(entry_sha.get(entry) == shas[q], cos, dist)
        if kind is not None:
            matches.append(Match(q, entry, cos, dist, kind))
    rank = {EXACT: 0, NEAR_DUPLICATE: 1, SIMILAR_PRODUCT: 2}
    matches.sort(key=lambda m: (m.query, rank[m.kind], -np.nan_to_num(m.cosine, nan=-2)))
    out, per_query = [], {}
    for m in matches:
        per_query[m.query] = per_query.get(m.query, 0) + 1
        if per_query[m.query] <= k:
            out.append(m)
    return out
