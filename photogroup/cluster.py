"""Two-level grouping of a batch: strict duplicate groups, then looser product groups.

* Strict (``group_id``): copies and edits of one photo. Two images are linked when their
  dihedral pHash distance is small, or moderately small while their embeddings agree.
* Loose (``product_id``): groups whose embedding centroids are similar (another
  viewpoint, a re-shoot).

Both levels use star clustering (Aslam et al. 2004, greedy variant): nodes are visited
by decreasing degree and an unassigned node becomes a centre that takes its unassigned
neighbours. Every member is linked to its centre, so look-alikes cannot chain through
intermediate images as they do in single-link connected components.

Candidate pairs are scored in row blocks, so memory stays O(n x block) rather than the
O(n^2) of a full distance matrix; time is still quadratic, fine for batches of a few
thousand images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Cap on the elements of one block of pairwise scores (x 8 orientations, 1 byte each).
_BLOCK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class GroupingParams:
    """Thresholds, chosen on the seeded sample set (see ``bench/grouping.py``)."""

    hash_strict: int = 8  # dihedral pHash bits (of 64): at most this, same photo
    hash_loose: int = 18  # ... up to this, same photo if the embeddings agree too
    cos_strict: float = 0.90  # embedding cosine needed with a loose hash match
    cos_product: float = 0.86  # centroid cosine for two groups to share a product

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Assignment:
    """Where one image landed. Ids derive from centre SHA-256s, so they are stable."""

    image_id: str
    group_id: str
    product_id: str
    confidence: float  # min cosine similarity of the group's members to its centre, 0..1
    is_group_centre: bool


def group_images(
    image_ids: Sequence[str],
    phash_d4: Sequence[Sequence[str]],
    embeddings: np.ndarray,
    params: GroupingParams = GroupingParams(),
) -> list[Assignment]:
    """Group unique images (``image_ids`` are SHA-256 hex, one row each, no repeats)."""
    n = len(image_ids)
    if n == 0:
        return []
    if len(set(image_ids)) != n:
        raise ValueError("image_ids must be unique; group duplicate bytes before calling")
    emb = np.asarray(embeddings, dtype=np.float32)
    hashes = np.array([[int(h, 16) for h in row] for row in phash_d4], dtype=np.uint64)
    neighbours = _strict_neighbours(hashes, emb, params)
    centre_of = _star_clusters(image_ids, neighbours)

    centres = sorted(set(centre_of))
    members = {c: [i for i in range(n) if centre_of[i] == c] for c in centres}
    centroids = np.stack([emb[members[c]].mean(axis=0) for c in centres])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    product_neighbours = _threshold_neighbours(centroids, params.cos_product)
    product_centre = _star_clusters([image_ids[c] for c in centres], product_neighbours)

    out = []
    for k, c in enumerate(centres):
        sims = emb[members[c]] @ emb[c]
        confidence = float(np.clip(sims.min(), 0.0, 1.0))
        product_id = "p-" + image_ids[centres[product_centre[k]]][:16]
        out.extend(
            Assignment(image_ids[i], "g-" + image_ids[c][:16], product_id, confidence, i == c)
            for i in members[c]
        )
    return sorted(out, key=lambda a: a.image_id)


def dihedral_distances(rows: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """``len(rows) x n`` min Hamming distance of each row's identity hash to all eight."""
    xor = hashes[rows, 0][:, None, None] ^ hashes[None, :, :]
    return np.bitwise_count(xor).min(axis=2)


def _strict_neighbours(hashes: np.ndarray, emb: np.ndarray, p: GroupingParams) -> list[set]:
    n = len(hashes)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    block = max(1, _BLOCK_ELEMENTS // (8 * n))
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        dist = dihedral_distances(rows, hashes)
        cos = emb[rows] @ emb.T
        linked = (dist <= p.hash_strict) | ((dist <= p.hash_loose) & (cos >= p.cos_strict))
        for r, j in zip(*np.nonzero(linked), strict=True):
            i = int(rows[r])
            if i != j:
                # Distances are not symmetric (identity vs eight): link if either way holds.
                neighbours[i].add(int(j))
                neighbours[int(j)].add(i)
    return neighbours


def _threshold_neighbours(vectors: np.ndarray, threshold: float) -> list[set]:
    n = len(vectors)
    neighbours: list[set[int]] = [set() for _ in range(n)]
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, n, block):
        stop = min(n, start + block)
        for r, j in zip(*np.nonzero(vectors[start:stop] @ vectors.T >= threshold), strict=True):
            if start + r != j:
                neighbours[start + int(r)].add(int(j))
    return neighbours


def _star_clusters(ids: Sequence[str], neighbours: list[set]) -> list[int]:
    """Index of each node's centre; ties in degree are broken by id, so runs agree."""
    order = sorted(range(len(ids)), key=lambda i: (-len(neighbours[i]), ids[i]))
    centre = [-1] * len(ids)
    for i in order:
        if centre[i] != -1:
            continue
        centre[i] = i
        for j in neighbours[i]:
            if centre[j] == -1:
                centre[j] = i
    return centre
