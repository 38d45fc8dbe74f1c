"""Product level: the print of two photos of one surface from other angles, compared.

A design variant shot from another angle than its base still shares most of its pack
with it (brand, panels, back label), and SIFT matches those under one fundamental matrix
as it does two angles of one product: the checks in :mod:`photogroup.views` compare the
colours at and around the matches, which a changed illustration or flavour band, with no
matches on it, does not reach. Here the matches themselves lay one photo onto the other:
triangles between inliers (Delaunay) each map by the affine map of their corners, which
follows a turning label or a box's face where one homography cannot, and inside the
triangles the two prints are compared as :mod:`photogroup.changed_print` compares two
shots from one angle. A region enclosed by matches whose colours changed is artwork that
changed. Only triangles whose corners lie on one plane are laid (homographies fitted one
after another to the matches): a triangle across a box's edge would lay one face's print
onto another's (on the calibration renders, one view pair of a box read 0.11 of its area
changed without this, and 0 with it).
"""

from __future__ import annotations

import numpy as np

from photogroup.changed_print import PrintChange, compare_laid
from photogroup.verify import Keypoints, thumb_transform

#: Triangles whose area changes by more than this factor between the photos, or whose
#: corners flip order, are not one piece of surface (a wrong match, a fold between faces).
MAX_STRETCH = 3.0
#: Planes: homographies fitted one after another to the matches (chroma-thumbnail pixels,
#: loose: a strip of a turning label is nearly flat), each holding for this many at least.
#: A triangle is laid only when its corners lie on one plane: one spanning a box's edge
#: would lay one face's print onto the other's.
PLANE_REACH = 2.0
MIN_PLANE_POINTS = 6
MAX_PLANES = 4


def surface_print_change(
    a: Keypoints, b: Keypoints, pa: np.ndarray, pb: np.ndarray
) -> PrintChange | None:
    """The print change between ``a`` and ``b`` laid onto each other by the matched points
    ``pa`` (a's working-copy pixels) and ``pb`` (b's): both ways, the smaller areas
    (``aligned_share``: the share of the matches on one of the planes laid). None without
    colour thumbnails or enough matches to triangulate."""
    if a.chroma is None or b.chroma is None or not a.chroma.size or not b.chroma.size:
        return None
    if len(pa) < 4:
        return None
    ta, tb = _to(a, pa), _to(b, pb)
    plane = _planes(ta, tb)
    one_way = _piecewise_change(a, b, ta, tb, plane)
    other_way = _piecewise_change(b, a, tb, ta, plane)
    if one_way is None or other_way is None:
        return None
    # The smaller of the two ways: a changed print shows whichever photo is laid onto the
    # other, while a triangle over much of a curved label, laid a little wrong, shows a
    # change one way only (its triangles differ the other way). On the calibration seeds
    # the larger gave the same products but for a bottle turned on its axis kept apart.
    changed, flipped = min(one_way[0], other_way[0]), min(one_way[1], other_way[1])
    turned, on_planes = min(one_way[3], other_way[3]), float(np.mean(plane >= 0))
    return PrintChange(round(on_planes, 4), round(changed, 4), round(flipped, 4),
                       turned_area=round(turned, 4), blind=one_way[2] or other_way[2])  # fmt: skip


def _to(k: Keypoints, xy: np.ndarray) -> np.ndarray:
    assert k.chroma is not None
    m = thumb_transform(k, k.chroma)
    return xy.astype(np.float64) @ m[:2, :2].T + m[:2, 2]


def _piecewise_change(
    a: Keypoints, b: Keypoints, ta: np.ndarray, tb: np.ndarray, plane: np.ndarray
):
    """:func:`photogroup.changed_print.compare_laid` of b laid onto a by the triangles
    between the matches (``ta`` in a's chroma thumbnail, ``tb`` in b's) whose corners lie on
    one ``plane``; None when nothing can be triangulated."""
    import cv2
    from scipy.spatial import Delaunay, QhullError

    assert a.chroma is not None
    try:
        tri = Delaunay(ta)
    except (QhullError, ValueError):  # all matches on a line: nothing enclosed
        return None
    corners_a, corners_b = ta[tri.simplices], tb[tri.simplices]
    area_a, area_b = _signed_area(corners_a), _signed_area(corners_b)
    ratio = np.abs(area_b) / np.maximum(np.abs(area_a), 1e-9)
    whole = (area_a * area_b > 0) & (ratio <= MAX_STRETCH) & (ratio >= 1 / MAX_STRETCH)
    plane = plane[tri.simplices]
    whole &= (plane[:, 0] >= 0) & (plane[:, 0] == plane[:, 1]) & (plane[:, 0] == plane[:, 2])
    h, w = a.chroma.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    grid = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)
    simplex = tri.find_simplex(grid)
    inside = simplex >= 0
    inside[inside] = whole[simplex[inside]]
    s = simplex[inside]
    affine = tri.transform[s]
    lam = np.einsum("nij,nj->ni", affine[:, :2], grid[inside] - affine[:, 2])
    weights = np.column_stack([lam, 1.0 - lam.sum(axis=1)])
    mapped = np.einsum("ni,nij->nj", weights, corners_b[s])
    map_x = np.full(h * w, -10.0, np.float32)
    map_y = np.full(h * w, -10.0, np.float32)
    map_x[inside], map_y[inside] = mapped[:, 0], mapped[:, 1]
    map_x, map_y = map_x.reshape(h, w), map_y.reshape(h, w)

    def lay(img: np.ndarray, interpolation: int) -> np.ndarray:
        return cv2.remap(img, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0)  # fmt: skip

    region = inside.reshape(h, w)
    if region.sum() < 32:
        return None
    return compare_laid(a, b, lay, region)


def _signed_area(corners: np.ndarray) -> np.ndarray:
    """Twice the signed area of each triangle (``n x 3 x 2``)."""
    d1, d2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    return d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]


def _planes(ta: np.ndarray, tb: np.ndarray) -> np.ndarray:
    """The plane (0, 1, ...) each match lies on, -1 for none: homographies fitted one after
    another to the matches left by the previous ones."""
    import cv2

    label = np.full(len(ta), -1, np.int64)
    for k in range(MAX_PLANES):
        left = np.flatnonzero(label < 0)
        if len(left) < MIN_PLANE_POINTS:
            break
        found, mask = cv2.findHomography(ta[left], tb[left], cv2.USAC_MAGSAC, PLANE_REACH)
        if found is None or mask is None or int(mask.sum()) < MIN_PLANE_POINTS:
            break
        label[left[mask.ravel().astype(bool)]] = k
    return label
