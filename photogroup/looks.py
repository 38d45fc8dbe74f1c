"""Two shots of one product that share no surface: do the whole packs look alike?

Views 60-90 degrees apart round a box or a bottle often show no printed surface in common
that local features can match, yet the pack keeps its inks. So a candidate pair without a
shared surface, whose embeddings are close, is compared by the colours of its whole content
box: the share of one photo's chromaticities that the other lacks (the same test as the
palette around matched surfaces, :func:`photogroup.views.lacking`). Neutral pixels are left
out (white, grey and black backdrops and sweeps carry no colour of the product), and a
photo with too few coloured pixels (a greyscale copy, a black-and-white pack) proves
nothing: look-alike greyscale images are not one product.

This is weaker evidence than a shared surface: it cannot tell a variant from the product
(an artwork variant's back is its base's twin), which is why
:mod:`photogroup.product_links` merges such links last and refuses one that a variant kept
apart could have claimed as well.
"""

from __future__ import annotations

import numpy as np

from photogroup.verify import Keypoints
from photogroup.views import blur_palette, chroma_histogram, lacking_blurred

#: Chromaticity distance from neutral grey (r = g = 85 of 255) below which a pixel carries
#: no colour of the product: backdrops, sweeps, shadows, white card. Chosen on calibration.
_NEUTRAL = 8.0
#: Fewer coloured pixels than this (of the 96 px chroma thumbnail) prove nothing.
_MIN_COLOURED = 20


def look_mismatch(a: Keypoints, b: Keypoints) -> float | None:
    """The larger of the two photos' share of coloured pixels (chromaticity, whole content
    box) whose colour the other photo lacks, 0..1; None when either has too few."""
    ca, cb = look_colours(a), look_colours(b)
    if ca is None or cb is None:
        return None
    return colours_lacking(ca, cb)


def look_colours(k: Keypoints) -> tuple[np.ndarray, np.ndarray] | None:
    """A photo's colours as :func:`colours_lacking` compares them (histogram, blurred), for
    comparing one photo with many; None when it has too few coloured pixels."""
    h = _colours(k)
    return None if h is None else (h, blur_palette(h))


def colours_lacking(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """:func:`look_mismatch` of two photos' :func:`look_colours`."""
    return lacking_blurred(a[0], a[1], b[0], b[1])


def _colours(k: Keypoints) -> np.ndarray | None:
    if k.chroma is None or not k.chroma.size:
        return None
    rg = k.chroma.reshape(-1, 2)
    lit = rg.max(axis=1) > 0  # dark pixels are zeroed: no chromaticity
    saturation = np.hypot(rg[:, 0].astype(np.float32) - 85, rg[:, 1].astype(np.float32) - 85)
    coloured = rg[lit & (saturation > _NEUTRAL)]
    if len(coloured) < _MIN_COLOURED:
        return None
    return chroma_histogram(coloured)
