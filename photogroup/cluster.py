"""Two-level grouping of a batch: strict duplicate groups, then looser product groups.

* Strict (``group_id``): copies and edits of one photo. Two images are linked when
  - their dihedral pHash distance is small (``hash_sure``), or
  - they are candidates (moderate hash distance, or embedding neighbours) and their ORB
    keypoints match under one affine map (``min_inliers``): crops, small rotations,
    stretches, watermarks; another viewpoint of the same product does not, or
  - without keypoints: the hash distance is moderate (``hash_loose``) and the embeddings
    agree (``cos_strict``).
* Loose (``product_id``): strict groups whose embedding centroids are similar
  (``cos_product``): another viewpoint, a re-shoot.

Candidates come from sub-quadratic searches (:mod:`photogroup.neighbours`), never from an
n x n matrix. Links are cut into groups component by component with a centre check against
chaining: a component's best-connected image becomes a centre and takes its neighbours,
plus their neighbours only if those are close to the centre too; what is left starts the
next group. Single-link components would instead merge look-alikes (textures, a gradient
of similar photos) through intermediate images.

Group and product ids derive from the SHA-256 of their centre image, which is chosen by
degree and then by id, so the same batch gets the same ids on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_array, csr_array
from scipy.sparse.csgraph import connected_components

from photogroup.colours import colour_name
from photogroup.neighbours import hash_pairs, pair_cosines, similar_pairs, unique_pairs
from photogroup.verify import Keypoints, inlier_count


@dataclass(frozen=True)
class GroupingParams:
    """Thresholds, chosen on the calibration set of ``bench/grouping.py`` (never on the
    evaluation set); the comments say what each decides."""

    hash_sure: int = 4  # dihedral pHash bits (of 64): at most this, same photo
    hash_loose: int = 14  # pairs this close by hash are verified (or, with no keypoints,
    cos_strict: float = 0.90  # linked if their embeddings agree this much)
    cos_candidate: float = 0.30  # embedding neighbours at least this close are verified
    min_inliers: int = 100  # ORB matches under one affine map: same photo
    cos_centre: float = 0.50  # second-hop members must be this close to the centre
    cos_product: float = 0.80  # centroid cosine for two groups to share a product
    neighbours: int = 20  # nearest neighbours searched per image

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Assignment:
    """Where one image landed."""

    image_id: str
    group_id: str
    product_id: str
    confidence: float  # 0..1, how tightly the group holds together (1 for a singleton)
    is_group_centre: bool
    colour: str = ""  # named dominant colour of the group's centre, for colour facets


@dataclass(frozen=True)
class Links:
    """Undirected links between images, with a strength in 0..1 for each."""

    a: np.ndarray
    b: np.ndarray
    strength: np.ndarray


def group_images(
    image_ids: Sequence[str],
    phash_d4: Sequence[Sequence[str]],
    embeddings: np.ndarray,
    params: GroupingParams = GroupingParams(),
    keypoints: Sequence[Keypoints | None] | None = None,
    colours: Sequence[str] | None = None,
) -> list[Assignment]:
    """Group unique images (``image_ids`` are SHA-256 hex, one row each, no repeats).

    ``keypoints`` (optional) enables geometric verification; ``colours`` (optional, the
    dominant colour of each image as hex) names each group's colour.
    """
    n = len(image_ids)
    if n == 0:
        return []
    if len(set(image_ids)) != n:
        raise ValueError("image_ids must be unique; group duplicate bytes before calling")
    emb = np.ascontiguousarray(embeddings, dtype=np.float32)
    d4 = parse_hashes(phash_d4)
    links = strict_links(d4, emb, params, keypoints)
    centre_of = cut_groups(n, links, emb, params.cos_centre, image_ids)
    return _assign(image_ids, emb, centre_of, params, colours)


def parse_hashes(phash_d4: Sequence[Sequence[str]]) -> np.ndarray:
    """Hex dihedral hashes to an ``n x 8`` uint64 array."""
    return np.array([[int(h, 16) for h in row] for row in phash_d4], dtype=np.uint64)


def dihedral_distance(d4: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Min Hamming distance of each pair over orientations, taken both ways round."""
    one_way = np.bitwise_count(d4[a, :1] ^ d4[b]).min(axis=1)
    other_way = np.bitwise_count(d4[b, :1] ^ d4[a]).min(axis=1)
    return np.minimum(one_way, other_way).astype(np.int64)


def strict_links(
    d4: np.ndarray,
    emb: np.ndarray,
    p: GroupingParams,
    keypoints: Sequence[Keypoints | None] | None = None,
) -> Links:
    """Same-photo links from hash neighbours and embedding neighbours."""
    ha, hb, _ = hash_pairs(d4[:, 0], d4, p.hash_sure)
    ea, eb, _ = similar_pairs(emb, p.cos_candidate, k=p.neighbours)
    a = np.concatenate([ha, ea])
    b = np.concatenate([hb, eb])
    a, b, _ = unique_pairs(a, b, np.zeros(len(a)), keep="min")
    dist = dihedral_distance(d4, a, b)
    cos = pair_cosines(emb, a, b)
    linked = dist <= p.hash_sure
    strength = np.where(linked, 1.0 - dist / 64.0, 0.0)
    has_kp = np.array([k is not None for k in keypoints]) if keypoints is not None else None
    verifiable = has_kp[a] & has_kp[b] if has_kp is not None else np.zeros(len(a), bool)
    # Without keypoints, a moderate hash distance plus agreeing embeddings is the best
    # evidence there is. With them, geometry decides: two viewpoints of one product can
    # be 4 bits apart with a 0.97 cosine, but do not match under one affine map.
    loose = ~linked & ~verifiable & (dist <= p.hash_loose) & (cos >= p.cos_strict)
    linked |= loose
    strength[loose] = 1.0 - dist[loose] / 64.0
    candidates = ~linked & verifiable & ((cos >= p.cos_candidate) | (dist <= p.hash_loose))
    for idx in np.nonzero(candidates)[0]:
        inliers = inlier_count(keypoints[a[idx]], keypoints[b[idx]])
        if inliers >= p.min_inliers:
            linked[idx] = True
            strength[idx] = min(1.0, inliers / (2.0 * p.min_inliers))
    return Links(a[linked], b[linked], strength[linked])


def cut_groups(
    n: int, links: Links, emb: np.ndarray, cos_centre: float, ids: Sequence[str]
) -> np.ndarray:
    """Index of each node's group centre (see the module docstring)."""
    centre_of = np.arange(n)
    if not len(links.a):
        return centre_of
    graph = coo_array((np.ones(len(links.a)), (links.a, links.b)), shape=(n, n)).tocsr()
    graph = graph + graph.T
    count, component = connected_components(graph, directed=False)
    sizes = np.bincount(component, minlength=count)
    order = np.argsort(component, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    indptr, indices = graph.indptr, graph.indices
    for c in np.nonzero(sizes > 1)[0]:
        members = order[starts[c] : starts[c + 1]]
        if len(members) == 2:
            centre_of[members] = min(members, key=lambda i: ids[i])
            continue
        adjacency = {int(i): set(indices[indptr[i] : indptr[i + 1]].tolist()) for i in members}
        _cut_component(adjacency, emb, cos_centre, ids, centre_of)
    return centre_of


def _cut_component(adjacency, emb, cos_centre, ids, centre_of) -> None:
    remaining = set(adjacency)
    while remaining:
        centre = min(remaining, key=lambda i: (-len(adjacency[i] & remaining), ids[i]))
        group = {centre} | (adjacency[centre] & remaining)
        second = set().union(*(adjacency[i] for i in group)) & remaining - group
        group |= {j for j in second if float(emb[j] @ emb[centre]) >= cos_centre}
        for i in group:
            centre_of[i] = centre
        remaining -= group


def _assign(ids, emb, centre_of, p: GroupingParams, colours) -> list[Assignment]:
    centres, inverse = np.unique(centre_of, return_inverse=True)
    # Sum each group's rows with a sparse membership matrix (np.add.at is ~50x slower).
    membership = csr_array(
        (np.ones(len(ids), dtype=np.float32), (inverse, np.arange(len(ids)))),
        shape=(len(centres), len(ids)),
    )
    centroids = np.asarray(membership @ emb, dtype=np.float32)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    pa, pb, pcos = similar_pairs(centroids, p.cos_product, k=p.neighbours)
    product_links = Links(pa, pb, pcos)
    centre_ids = [ids[c] for c in centres]
    product_centre = cut_groups(len(centres), product_links, centroids, p.cos_product, centre_ids)

    # Confidence: the least similar member to its centre (1.0 for a singleton).
    sims = pair_cosines(emb, np.arange(len(ids)), centre_of)
    confidence = np.ones(len(centres))
    np.minimum.at(confidence, inverse, np.clip(sims, 0.0, 1.0))
    out = []
    for i, image_id in enumerate(ids):
        g = inverse[i]
        centre = centres[g]
        out.append(
            Assignment(
                image_id=image_id,
                group_id="g-" + ids[centre][:16],
                product_id="p-" + ids[centres[product_centre[g]]][:16],
                confidence=round(float(confidence[g]), 4),
                is_group_centre=bool(i == centre),
                colour=colour_name(colours[centre]) if colours is not None else "",
            )
        )
    return sorted(out, key=lambda a: a.image_id)
