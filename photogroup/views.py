"""Same-product verification: do two photos show one physical surface from other angles?

Two angles of one product share printed surface seen under another perspective; a variant
(another colour, flavour or artwork on the same pack) shares the layout but not the colour
or all of the artwork. So, for a candidate pair of photos:

1. **Geometry.** SIFT keypoints (Lowe 2004; RootSIFT descriptors, Arandjelovic and
   Zisserman 2012) are matched with Lowe's ratio test, and a fundamental matrix is fitted
   with MAGSAC++ (Barath et al. 2020). Epipolar geometry holds for any rigid motion of the
   camera around the product (a box turned 60 degrees, a bottle turned on its axis), where
   one homography or affine map holds only for a single plane. Inliers are weighed against
   the keypoints available, and must cover more than a logo-sized patch. Each photo's
   keypoints include those of its content squeezed horizontally (affine simulation, after
   ASIFT): a face turned away from the camera is narrower, and its squeezed twin in the
   other photo matches it where upright descriptors no longer do. A point and its squeezed
   copies are one location: counted once, and no rival of each other in the ratio test.
2. **Colour** of the matched surface: the median CIELAB a*b* difference of the inlier
   pairs, and the hue turn over the whole matched region once a homography fitted to the
   inliers lays one photo's colour thumbnail onto the other's. Keypoints sit on print
   (text, illustrations), which a colour variant often keeps; the pack's ground colour is
   what it changes, so the region, not the keypoints, shows it. Lighting of another face
   changes lightness more than hue.
3. **Artwork**: of the keypoints inside the matched region, the share that matched. A
   design variant leaves its changed artwork (flavour name, illustration) unmatched inside
   an otherwise matched region. And the palette around the matches: the share of each
   photo's colours near its inliers (chromaticity at 96 px) where the other photo's colours
   near its inliers are a fifth as dense or less. Another angle shows the same inks in
   other proportions; a flavour variant prints a band or fruit in a colour the other pack
   does not have. Comparing palettes, not aligned pixels, tolerates what a homography
   cannot lay right (a second face, a label turning round a bottle).

Keypoints are computed once per image with its other features (:func:`surface_keypoints`);
the checks run on candidate pairs only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from photogroup.verify import Keypoints, colour_edit_fit, thumb_transform

#: Long side of the content box SIFT runs on (it doubles it internally); bounds feature cost.
SURFACE_SIDE = 224
#: Affine simulation (ASIFT, Morel and Yu 2009) along the one axis a shop's camera moves
#: round a product: a face turned 60 degrees away is half as wide, beyond the 30-40 degrees
#: SIFT's descriptors tolerate. SIFT runs on the content box squeezed to each of these
#: widths, keeping that many keypoints (the strongest), so a frontal view also matches a
#: turned one. 0.85 rather than 1.0 for the nearly upright set: frontal shots still match
#: each other, and it costs less. Chosen on calibration (bench/grouping.py): against
#: upright SIFT alone, product F1 rose about 0.05 at the same share of variants merged;
#: features cost 2 SIFT passes on 1.35x the pixels.
SURFACE_WIDTHS: tuple[tuple[float, int], ...] = ((0.85, 300), (0.5, 150))
_LOWE_RATIO = 0.8
#: Keypoints closer than this (fraction of the diagonal) are one location: a simulated copy
#: of a point is not its rival in the ratio test, and counts once.
_SAME_PLACE = 0.006
#: Epipolar inlier distance as a fraction of the working copy's diagonal.
_EPIPOLAR_FRACTION = 0.004
#: Reprojection threshold of the homography laying one colour thumbnail onto the other
#: (fraction of the diagonal): loose, the region's colour is compared at 32 px.
_HUE_ALIGN_FRACTION = 0.01
#: Side of the box filter averaging colour around a keypoint (working-copy pixels).
_COLOUR_WINDOW = 5
#: Palette comparison: discs around the inliers with this radius, relative to the square
#: root of their hull's area; chromaticity histograms with bins this wide (x 255), blurred
#: over this many bins (a Gaussian's sigma: shading and JPEG move a colour a little); a
#: colour is lacking where the other photo has less than this fraction of its density.
#: Relative, not an absolute floor: a real photo spreads its palette thinly over many bins
#: (a stereo pair of a street scene lacked 3 % of its colours against a floor of 0.2 % a
#: bin, none against the ratio), while a flavour band is one dense colour the other lacks.
_PALETTE_DISC = 0.2
_PALETTE_BIN = 3
_PALETTE_BLUR = 3.0
_PALETTE_PRESENT = 0.2


@dataclass(frozen=True)
class SurfaceMatch:
    """How two photos' printed surfaces correspond (see the module docstring)."""

    inliers: int  # matches consistent with one fundamental matrix
    keypoints: int  # the smaller image's keypoint count
    matched_area: float  # hull of the inliers over hull of all keypoints, smaller of the two
    density: float  # share of keypoints inside the matched hull that matched, smaller of two
    colour_difference: float  # median CIELAB a*b* distance at the inliers (0..~180)
    hue_turn: float = 0.0  # degrees saturated hues turn over the matched region (0..180)
    palette_mismatch: float = 0.0  # share of colours near the inliers the other lacks (0..1)

    @property
    def inlier_share(self) -> float:
        return self.inliers / max(self.keypoints, 1)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["inlier_share"] = round(self.inlier_share, 4)
        return out


def surface_keypoints(
    img: Image.Image, box: tuple[int, int, int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SIFT keypoints of a working copy's content ``box`` (the product; see
    :func:`photogroup.verify.content_box`), at ``SURFACE_SIDE`` px whatever the box's size,
    so a small product in a wide studio shot keeps its detail. Returns xy (working-copy
    pixels, float32), descriptors (uint8, 128) and the CIELAB colour around each keypoint
    (OpenCV's 8-bit Lab)."""
    import cv2

    rgb = np.asarray(img.convert("RGB"))
    x0, y0, x1, y1 = box or (0, 0, img.width, img.height)
    grey = img.convert("L").crop((x0, y0, x1, y1))
    scale = min(2.0, SURFACE_SIDE / max(grey.size))
    found_xy, found_desc = [], []
    for squeeze, count in SURFACE_WIDTHS:
        sx, sy = scale * squeeze, scale
        size = (max(1, round(grey.width * sx)), max(1, round(grey.height * sy)))
        # Two layers an octave instead of three: a fifth less time, enough keypoints.
        sift = cv2.SIFT_create(nfeatures=count, nOctaveLayers=2)
        found, descriptors = sift.detectAndCompute(
            np.asarray(grey.resize(size, Image.Resampling.BILINEAR)), None
        )
        if descriptors is not None and found:
            found_xy.append(np.float32([p.pt for p in found]) / np.float32([sx, sy]))
            found_desc.append(descriptors)
    if not found_xy:
        empty = np.zeros((0, 2), np.float32)
        return empty, np.zeros((0, 128), np.uint8), np.zeros((0, 3), np.uint8)
    xy = np.concatenate(found_xy) + np.float32([x0, y0])
    descriptors = np.concatenate(found_desc)
    lab = cv2.cvtColor(cv2.blur(rgb, (_COLOUR_WINDOW, _COLOUR_WINDOW)), cv2.COLOR_RGB2LAB)
    cols = np.clip(np.round(xy[:, 0]).astype(int), 0, rgb.shape[1] - 1)
    rows = np.clip(np.round(xy[:, 1]).astype(int), 0, rgb.shape[0] - 1)
    # OpenCV's float descriptors are uint8-ranged already (at most 0.2 x 512).
    return xy, np.clip(np.round(descriptors), 0, 255).astype(np.uint8), lab[rows, cols]


def match_surfaces(a: Keypoints, b: Keypoints) -> SurfaceMatch:
    """Compare two photos' surface keypoints (see the module docstring)."""
    return surface_match(a, b)[0]


def surface_match(
    a: Keypoints, b: Keypoints
) -> tuple[SurfaceMatch, tuple[np.ndarray, np.ndarray] | None]:
    """:func:`match_surfaces`, and the points of its inliers (a's and b's working-copy
    pixels; None for fewer than 8), which lay one print onto the other
    (:mod:`photogroup.surface_print`)."""
    ia, ib, keypoints, place_a, place_b = _inliers(a, b)
    if ia is None or ib is None:
        return SurfaceMatch(0, keypoints, 0.0, 0.0, 0.0), None
    xy_a, xy_b = _or_empty(a.surface_xy), _or_empty(b.surface_xy)
    area = min(_hull_share(xy_a, ia), _hull_share(xy_b, ib))
    density = min(_density(xy_a, ia, place_a), _density(xy_b, ib, place_b))
    delta = a.surface_lab[ia, 1:].astype(np.float32) - b.surface_lab[ib, 1:].astype(np.float32)
    colour = float(np.median(np.hypot(delta[:, 0], delta[:, 1])))
    turn = _region_hue_turn(a, b, xy_a[ia], xy_b[ib])
    palette = palette_mismatch(a, b, xy_a[ia], xy_b[ib])
    found = SurfaceMatch(
        len(ia), keypoints, round(area, 4), round(density, 4), round(colour, 2),
        round(turn, 1), round(palette, 4),
    )  # fmt: skip
    return found, (xy_a[ia], xy_b[ib])


def _inliers(a: Keypoints, b: Keypoints):
    """Indices of the inliers in a and b (None, None when fewer than 8), the smaller
    image's count of keypoint locations, and each keypoint's location (see _places)."""
    import cv2

    xy_a, xy_b = _or_empty(a.surface_xy), _or_empty(b.surface_xy)
    cell = _SAME_PLACE * max(a.diagonal, b.diagonal)
    place_a, place_b = _places(xy_a, cell), _places(xy_b, cell)
    keypoints = min(len(np.unique(place_a)), len(np.unique(place_b)))
    none = None, None, keypoints, place_a, place_b
    if keypoints < 8:
        return none
    ia, ib = _ratio_matches(a, b, place_b)
    ia, ib = _one_per_place(ia, ib, place_a, place_b)
    if len(ia) < 8:
        return none
    cv2.setRNGSeed(0)
    threshold = max(1.0, _EPIPOLAR_FRACTION * max(a.diagonal, b.diagonal))
    try:
        _, mask = cv2.findFundamentalMat(
            xy_a[ia], xy_b[ib], cv2.USAC_MAGSAC, threshold, 0.999, 2000
        )
    except cv2.error:  # degenerate samples (all matches on a line): no geometry to find
        return none
    if mask is None or int(mask.sum()) < 8:
        return none
    keep = mask.ravel().astype(bool)
    return ia[keep], ib[keep], keypoints, place_a, place_b


def palette_mismatch(a: Keypoints, b: Keypoints, pa: np.ndarray, pb: np.ndarray) -> float:
    """The larger of the two photos' share of colours around their inliers (``pa`` in a,
    ``pb`` in b, working-copy pixels) that the other photo's surroundings lack."""
    if a.chroma is None or b.chroma is None or not a.chroma.size or not b.chroma.size:
        return 0.0
    ha, hb = _palette(a, pa), _palette(b, pb)
    if ha is None or hb is None:
        return 0.0
    return lacking(ha, hb)


def lacking(ha: np.ndarray, hb: np.ndarray) -> float:
    """The larger of the two histograms' share of colours the other lacks (less than
    ``_PALETTE_PRESENT`` of its density, both blurred: shading and JPEG move a colour)."""
    return lacking_blurred(ha, blur_palette(ha), hb, blur_palette(hb))


def blur_palette(h: np.ndarray) -> np.ndarray:
    """The histogram as :func:`lacking` compares it (computed once, compared many times)."""
    import cv2

    return cv2.GaussianBlur(h, (0, 0), _PALETTE_BLUR)


def lacking_blurred(ha: np.ndarray, da: np.ndarray, hb: np.ndarray, db: np.ndarray) -> float:
    """:func:`lacking` of histograms already blurred (``da``, ``db``)."""
    return max(float(ha[db < _PALETTE_PRESENT * da].sum()),
               float(hb[da < _PALETTE_PRESENT * db].sum()))  # fmt: skip


def chroma_histogram(rg: np.ndarray) -> np.ndarray:
    """Normalised histogram of r, g chromaticities (x 255, ``n x 2``), ``_PALETTE_BIN`` wide."""
    rg = rg.astype(np.int32)
    bins = -(-256 // _PALETTE_BIN)
    idx = np.minimum(rg // _PALETTE_BIN, bins - 1)
    hist = np.bincount(idx[:, 0] * bins + idx[:, 1], minlength=bins * bins).astype(np.float32)
    return (hist / hist.sum()).reshape(bins, bins)


def _palette(k: Keypoints, points: np.ndarray) -> np.ndarray | None:
    """Normalised chromaticity histogram of ``k.chroma`` in discs around ``points``."""
    import cv2

    assert k.chroma is not None
    to_thumb = thumb_transform(k, k.chroma)
    p = cv2.perspectiveTransform(points[None].astype(np.float64), to_thumb)[0]
    area = _hull_area(p)
    radius = max(1, round(_PALETTE_DISC * np.sqrt(area)))
    mask = np.zeros(k.chroma.shape[:2], np.uint8)
    for x, y in np.round(p).astype(int):
        cv2.circle(mask, (int(x), int(y)), radius, 1, -1)
    rg = k.chroma[mask > 0]
    rg = rg[(rg[:, 0] > 0) | (rg[:, 1] > 0)]  # dark pixels carry no colour
    if len(rg) == 0:
        return None
    return chroma_histogram(rg)


def _region_hue_turn(a: Keypoints, b: Keypoints, pa: np.ndarray, pb: np.ndarray) -> float:
    """Hue turn (see :func:`photogroup.verify.colour_edit_fit`) over the hull of the inliers,
    with b's a*b* thumbnail laid onto a's by a homography fitted to them (MAGSAC++, loose:
    a box's second face only needs to land near its colour at 32 px)."""
    import cv2

    if a.colour is None or b.colour is None or not a.colour.size or not b.colour.size:
        return 0.0
    found, _ = cv2.findHomography(pb, pa, cv2.USAC_MAGSAC, _HUE_ALIGN_FRACTION * a.diagonal)
    if found is None:
        return 0.0
    to_a, to_b = thumb_transform(a, a.colour), thumb_transform(b, b.colour)
    size = (a.colour.shape[1], a.colour.shape[0])
    h = to_a @ found @ np.linalg.inv(to_b)
    laid = cv2.warpPerspective(b.colour, h, size, flags=cv2.INTER_LINEAR)
    region = np.zeros(a.colour.shape[:2], np.uint8)
    hull = cv2.perspectiveTransform(pa[None].astype(np.float64), to_a)[0]
    cv2.fillConvexPoly(region, cv2.convexHull(np.round(hull).astype(np.int32)), 1)
    full = np.full(b.colour.shape[:2], 255, np.uint8)
    covered = cv2.warpPerspective(full, h, size, flags=cv2.INTER_NEAREST) == 255
    inside = covered & (region > 0)
    if inside.sum() < 8:
        return 0.0
    return colour_edit_fit(a.colour[inside], laid[inside])[1]


def _places(xy: np.ndarray, cell: float) -> np.ndarray:
    """A location id per keypoint: the index of the first keypoint within ``cell`` of it
    (a point and its simulated copies share one)."""
    if not len(xy):
        return np.zeros(0, np.int64)
    near = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1)) <= cell
    return np.argmax(near, axis=1).astype(np.int64)


def _ratio_matches(a: Keypoints, b: Keypoints, place_b: np.ndarray):
    """Lowe's ratio test, a's keypoints against b's, the runner-up taken among b's keypoints
    at another location than the best match (a simulated copy of one point is no rival).
    Best matches first."""
    import cv2

    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(
        _root_sift(a.surface_descriptors), _root_sift(b.surface_descriptors),
        k=1 + len(SURFACE_WIDTHS),
    )  # fmt: skip
    good = []
    for m in pairs:
        if len(m) < 2:
            continue
        rival = next((r for r in m[1:] if place_b[r.trainIdx] != place_b[m[0].trainIdx]), None)
        if rival is None or m[0].distance < _LOWE_RATIO * rival.distance:
            good.append(m[0])
    good.sort(key=lambda m: m.distance)
    return (np.array([m.queryIdx for m in good], dtype=np.int64),
            np.array([m.trainIdx for m in good], dtype=np.int64))  # fmt: skip


def _one_per_place(ia, ib, place_a: np.ndarray, place_b: np.ndarray):
    """The best match (they come best first) of each location of a and of b: a point and
    its simulated copies count once."""
    seen_a: set[int] = set()
    seen_b: set[int] = set()
    keep = []
    for k, (i, j) in enumerate(zip(ia, ib, strict=True)):
        pa, pb = int(place_a[i]), int(place_b[j])
        if pa not in seen_a and pb not in seen_b:
            seen_a.add(pa)
            seen_b.add(pb)
            keep.append(k)
    return ia[keep], ib[keep]


def _or_empty(xy: np.ndarray | None) -> np.ndarray:
    return np.zeros((0, 2), np.float32) if xy is None else xy


def _root_sift(desc: np.ndarray) -> np.ndarray:
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-6)
    return np.sqrt(d)


def _hull_area(points: np.ndarray) -> float:
    import cv2

    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))


def _hull_share(xy: np.ndarray, matched: np.ndarray) -> float:
    return _hull_area(xy[matched]) / max(_hull_area(xy), 1e-6)


def _density(xy: np.ndarray, matched: np.ndarray, places: np.ndarray) -> float:
    """Share of the keypoint locations inside the hull of the matched ones that matched."""
    import cv2

    if len(matched) < 3:
        return 0.0
    hull = cv2.convexHull(xy[matched].astype(np.float32))
    inside = {
        int(p) for (x, y), p in zip(xy, places, strict=True)
        if cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0
    }  # fmt: skip
    return len({int(p) for p in places[matched]}) / max(len(inside), 1)
