"""Candidate pairs from shared ORB descriptors: copies that a global embedding misses.

A small rotation, a screenshot's app frame or heavy noise moves a photo's global embedding
far enough that its copy is not among its nearest neighbours, but most of its ORB keypoints
keep their binary descriptors within a few bits. So descriptors vote, as in multi-index
hashing (Norouzi et al. 2012): each of ``tables`` hash tables keys every descriptor by
``bits`` randomly chosen bits of its 256; two descriptors of different images that share a
key are a vote for that pair of images. Keys shared by more than ``max_bucket``
descriptors (flat texture, text strokes every image has) are ignored, as stop-words are.
Each image proposes the ``per_image`` images it shares the most votes with, if those are
clearly more than chance gives two images of their descriptor counts (``k_a x k_b x
tables / 2^bits`` keys in common); verification then decides.

Cost grows with the number of descriptors (images x ``descriptors``), not with pairs of
images: no n x n matrix is ever formed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Descriptors per image that vote (ORB keeps its strongest first), plus a quarter of that
#: of the mirror image, so flipped copies vote too.
DESCRIPTORS = 1000
TABLES = 6
BITS = 20
MAX_BUCKET = 16
#: Votes above chance (in its standard deviations, Poisson) that a pair needs.
MIN_SIGMAS = 4.0


def descriptor_pairs(
    descriptors: Sequence[np.ndarray | None],
    mirrors: Sequence[np.ndarray | None] | None = None,
    per_image: int = 5,
    *,
    per_descriptors: int = DESCRIPTORS,
    tables: int = TABLES,
    bits: int = BITS,
    max_bucket: int = MAX_BUCKET,
    min_sigmas: float = MIN_SIGMAS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(a, b, votes)`` with ``a < b``: for every image, the ``per_image`` others it
    shares the most votes with. ``descriptors[i]`` is image i's ``k x 32`` uint8 ORB
    descriptors (None: no keypoints); ``mirrors`` those of the mirrored images."""
    n = len(descriptors)
    parts, owners = [], []
    counts = np.zeros(n, np.float64)
    for i in range(n):
        own = descriptors[i]
        mirror = mirrors[i] if mirrors is not None else None
        for d, count in ((own, per_descriptors), (mirror, per_descriptors // 4)):
            if d is not None and len(d):
                parts.append(d[:count])
                owners.append(np.full(min(len(d), count), i, dtype=np.int64))
                counts[i] += min(len(d), count)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if len(parts) < 2 or n < 2:
        return empty
    packed = np.concatenate(parts)
    owner = np.concatenate(owners)
    rng = np.random.default_rng(seed)
    codes = []
    for _ in range(tables):
        key = np.zeros(len(packed), np.int64)
        for j, position in enumerate(rng.choice(256, bits, replace=False)):
            bit = (packed[:, position // 8] >> (7 - position % 8)) & 1
            key |= bit.astype(np.int64) << j
        codes.append(_bucket_pairs(key, owner, n, max_bucket))
    pair_codes, votes = np.unique(np.concatenate(codes), return_counts=True)
    a, b = pair_codes // n, pair_codes % n
    chance = counts[a] * counts[b] * tables / float(1 << bits)
    keep = votes >= chance + min_sigmas * np.sqrt(chance) + 2
    a, b, votes = a[keep], b[keep], votes[keep]
    return _top_per_image(a, b, votes, per_image)


def _bucket_pairs(key: np.ndarray, owner: np.ndarray, n: int, max_bucket: int) -> np.ndarray:
    """Image-pair codes ``a * n + b`` (a < b), once for every key of one table the two
    images share: a pair's votes count its descriptors that look alike."""
    order = np.argsort(key, kind="stable")
    key, owner = key[order], owner[order]
    starts = np.r_[0, np.nonzero(np.diff(key))[0] + 1]
    sizes = np.diff(np.r_[starts, len(key)])
    bucket = np.repeat(np.arange(len(starts)), sizes)
    size_of = np.repeat(sizes, sizes)
    shared = (size_of >= 2) & (size_of <= max_bucket)  # most keys belong to one descriptor
    key, owner, bucket = key[shared], owner[shared], bucket[shared]
    buckets, codes = [], []
    for d in range(1, max_bucket):
        same = key[:-d] == key[d:]
        x, y = owner[:-d][same], owner[d:][same]
        differ = x != y
        buckets.append(bucket[:-d][same][differ])
        codes.append(np.minimum(x, y)[differ] * n + np.maximum(x, y)[differ])
    if not codes:
        return np.zeros(0, np.int64)
    bucket_of, code = np.concatenate(buckets), np.concatenate(codes)
    order = np.lexsort((code, bucket_of))
    bucket_of, code = bucket_of[order], code[order]
    first = np.ones(len(code), bool)
    first[1:] = (code[1:] != code[:-1]) | (bucket_of[1:] != bucket_of[:-1])
    return code[first]


def _top_per_image(a: np.ndarray, b: np.ndarray, votes: np.ndarray, k: int):
    """Keep a pair if it is among the ``k`` best-voted pairs of either of its images."""
    if not len(a):
        return a, b, votes
    ends = np.concatenate([a, b])
    pair = np.concatenate([np.arange(len(a)), np.arange(len(a))])
    order = np.lexsort((-np.concatenate([votes, votes]), ends))
    ends, pair = ends[order], pair[order]
    first = np.r_[0, np.nonzero(np.diff(ends))[0] + 1]
    rank = np.arange(len(ends)) - np.repeat(first, np.diff(np.r_[first, len(ends)]))
    chosen = np.unique(pair[rank < k])
    return a[chosen], b[chosen], votes[chosen]
