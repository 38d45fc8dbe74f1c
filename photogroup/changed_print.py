"""Product level: two shots from nearly the same angle whose print differs in one region.

A variant (another flavour, artwork or colour of a pack) is usually photographed the way
its base was: same angle, same backdrop. From nearly the same angle one homography lays
most of one photo's ORB keypoints onto the other's, and over the region those inliers
span the two packs must then show the same colours everywhere, shading apart. Another
angle of the same pack does not get here: its homography holds for a smaller share of
the keypoints (one face, a strip of a turning label). So where one homography holds for
many keypoints, a compact region whose chromaticity differs beyond what a pixel of
misalignment explains is a change of print: a fruit, a flavour band, an illustration.

Chromaticity (r, g), not grey or Lab: a face turned to or from the light changes
brightness, not chromaticity; a global colour edit (saturation, white balance) is undone
with a per-channel gain and offset first. Each pixel is compared with the range of the
other photo's colours within two thumbnail pixels (a homography strays that much at the
far side of its inliers' hull), the changed pixels are opened with a 3 x 3 square so
that thin slivers along edges and text do not count, and what is left is measured as its
largest connected region. Dark pixels have no chromaticity and are not compared there;
a dark print replaced by a lit one (a black illustration by a coloured one) is measured
apart, in grey: pixels dark in one photo where the other is clearly lit over a 3 x 3
square, the largest such region (``flipped_area``). At the darkness cut-off a shade
darker is all it takes to cross it, so "clearly lit" is half as bright again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from photogroup.verify import ALIGN_HERE, AlignmentArg, Keypoints, align, thumb_transform

#: Chromaticity distance (x 255) beyond the other photo's local range that counts as a
#: change. Shading and JPEG move chromaticity by a few units; a flavour's colour by tens.
CHANGE_CHROMA = 12.0
_SQUARE = np.ones((3, 3), np.uint8)
#: How far (thumbnail pixels, a square) a colour may have moved: the homography holds for
#: the plane its inliers lie on, and strays a pixel or two at the far side of their hull.
_REACH = np.ones((5, 5), np.uint8)
#: A hue turned by more than this (degrees, around grey in r, g), between colours at least
#: _HUED from grey, once the global colour edit is undone: a recoloured print. A tone edit
#: (brightness, contrast, gamma) moves chromaticity where it clips or curves, but along
#: its hue: on calibration renders shot from one camera position, no tone-edited copy
#: turned any region; colour and flavour variants turned 3-60 % of the compared area.
TURN_DEG = 30.0
_HUED = 6.0
_GREY = 255.0 / 3.0
#: Fewer pixels compared than this: no verdict (a sliver of overlap).
_MIN_PIXELS = 32
#: Bounds of the gain a global colour edit is allowed (saturation halved to tripled).
_GAIN = (0.5, 3.0)
#: One photo's colours spread less than this share of the other's: desaturated, not compared.
_MIN_SPREAD = 0.4
#: Grey level (of 255) beyond the other photo's local range, once a global tone edit is
#: undone, that counts as a change of shade: an illustration redrawn in the same inks (a
#: dark motif replaced by a grey one) changes no chromaticity. Resampling, blur, noise and
#: JPEG move a pixel by less against its neighbours' range; a watermark is see-through.
CHANGE_GREY = 32.0
#: Bounds of the gain a global tone edit is allowed (contrast a third to three times).
_TONE_GAIN = (0.3, 3.0)
#: A dark print (grey below this: no chromaticity) against a lit one (grey at least this
#: over a 3 x 3 square). Shading between shots from nearly the same angle moves a dark band
#: across the cut-off by a shade, not by half again.
_DARK_GREY = 40
_LIT_GREY = 60


@dataclass(frozen=True)
class PrintChange:
    """How much of the print changed between two shots one homography aligns."""

    aligned_share: float  # ORB inliers of the homography / the smaller keypoint count
    changed_area: float  # largest changed region / compared area, the larger of both ways
    flipped_area: float = 0.0  # largest region dark in one, lit in the other, likewise
    turned_area: float = 0.0  # largest region whose hue turned by TURN_DEG, likewise
    #: Largest region whose grey level changed by CHANGE_GREY, likewise (at the grey
    #: thumbnails' resolution; only measured when asked: ``print_change(shades=True)``).
    shade_area: float = 0.0
    #: A changed colour could not show: one photo grey against a coloured one (a grayscale
    #: copy), or a sliver of overlap; ``changed_area`` is then 0 by default.
    blind: bool = False

    def as_dict(self) -> dict:
        return {"aligned_share": self.aligned_share, "changed_area": self.changed_area,
                "flipped_area": self.flipped_area, "turned_area": self.turned_area,
                "shade_area": self.shade_area, "blind": self.blind}  # fmt: skip


def print_change(
    a: Keypoints,
    b: Keypoints,
    *,
    alignment: AlignmentArg = ALIGN_HERE,
    ignore: tuple[float, float, float, float] | None = None,
    shades: bool = False,
) -> PrintChange | None:
    """Compare ``a`` and ``b`` under their ORB homography (``alignment``, when the caller
    has found it already: :func:`photogroup.verify.align`, None if it found none); None
    without one. ``ignore``: a box of a's working-copy pixels (x0, y0, x1, y1) left out of
    the comparison, where a sticker is known to hide the print. ``shades``: measure
    ``shade_area`` too."""
    if a.chroma is None or b.chroma is None or not a.chroma.size or not b.chroma.size:
        return None
    found = align(a, b) if alignment is ALIGN_HERE else alignment
    if found is None or found.inlier_xy is None or len(found.inlier_xy) < 3:
        return None
    share = found.inliers / max(1, min(len(a.xy), len(b.xy)))
    try:
        back = np.linalg.inv(found.homography)
    except np.linalg.LinAlgError:
        return None
    import cv2

    in_b = cv2.perspectiveTransform(found.inlier_xy[None].astype(np.float64), back)[0]
    hidden = None if ignore is None else _box_corners(ignore)
    one_way = _changed_area(a, b, found.homography, found.inlier_xy, hidden)
    hidden_b = None if hidden is None else cv2.perspectiveTransform(hidden[None], back)[0]
    other_way = _changed_area(b, a, back, in_b, hidden_b)
    changed, flipped = max(one_way[0], other_way[0]), max(one_way[1], other_way[1])
    turned = max(one_way[3], other_way[3])
    blind = one_way[2] or other_way[2]
    shade = 0.0
    if shades:
        shade = max(_shade_area(a, b, found.homography, found.inlier_xy, hidden),
                    _shade_area(b, a, back, in_b, hidden_b))  # fmt: skip
    return PrintChange(round(share, 4), round(changed, 4), round(flipped, 4),
                       turned_area=round(turned, 4), shade_area=round(shade, 4),
                       blind=blind)  # fmt: skip


def _box_corners(box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _changed_area(
    a: Keypoints,
    b: Keypoints,
    b_to_a: np.ndarray,
    hull_xy: np.ndarray,
    hidden: np.ndarray | None = None,
) -> tuple[float, float, bool, float]:
    """Largest region of a's chroma thumbnail, inside the hull of ``hull_xy`` (a's pixels)
    and outside the polygon ``hidden`` (a's pixels), whose chromaticity lies outside b's
    local range once b is laid onto a by the homography ``b_to_a``; the largest region
    dark in one and lit in the other; each over the area compared; whether a changed
    colour could not show (see ``PrintChange.blind``); and the largest region whose hue
    turned (``TURN_DEG``)."""
    import cv2

    assert a.chroma is not None and b.chroma is not None
    to_a = thumb_transform(a, a.chroma)
    h = to_a @ b_to_a @ np.linalg.inv(thumb_transform(b, b.chroma))
    size = (a.chroma.shape[1], a.chroma.shape[0])

    def lay(img: np.ndarray, interpolation: int) -> np.ndarray:
        return cv2.warpPerspective(img, h, size, flags=interpolation)

    return compare_laid(a, b, lay, _hull_mask(a.chroma.shape[:2], to_a, hull_xy, hidden))


def _hull_mask(
    shape: tuple[int, ...], to_a: np.ndarray, hull_xy: np.ndarray, hidden: np.ndarray | None
) -> np.ndarray:
    """Pixels of a thumbnail (``shape``, ``to_a`` from a's working copy) inside the convex
    hull of ``hull_xy`` and outside the polygon ``hidden`` (both a's pixels)."""
    import cv2

    mask = np.zeros(shape, np.uint8)
    points = cv2.perspectiveTransform(hull_xy[None].astype(np.float64), to_a)[0]
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    if hidden is not None:
        corners = cv2.perspectiveTransform(hidden[None], to_a)[0]
        cv2.fillConvexPoly(mask, np.round(corners).astype(np.int32), 0)
    return mask > 0


def _shade_area(
    a: Keypoints,
    b: Keypoints,
    b_to_a: np.ndarray,
    hull_xy: np.ndarray,
    hidden: np.ndarray | None = None,
) -> float:
    """Largest region of a's grey thumbnail, inside the hull of ``hull_xy`` and outside
    ``hidden`` (a's pixels), whose grey level lies more than ``CHANGE_GREY`` outside b's
    local range once b is laid onto a and a global tone edit (gain and offset) is undone;
    over the area compared. The same test as the chromaticity one, in grey, at the grey
    thumbnails' finer resolution."""
    import cv2

    if a.thumb is None or b.thumb is None or not a.thumb.size or not b.thumb.size:
        return 0.0
    to_a = thumb_transform(a, a.thumb)
    h = to_a @ b_to_a @ np.linalg.inv(thumb_transform(b, b.thumb))
    size = (a.thumb.shape[1], a.thumb.shape[0])
    laid = cv2.warpPerspective(b.thumb, h, size, flags=cv2.INTER_LINEAR)
    covered = cv2.warpPerspective(np.full(b.thumb.shape, 255, np.uint8), h, size,
                                  flags=cv2.INTER_NEAREST)  # fmt: skip
    region = _hull_mask(a.thumb.shape, to_a, hull_xy, hidden)
    valid = (cv2.erode(covered, _SQUARE) == 255) & region
    if valid.sum() < _MIN_PIXELS:
        return 0.0
    mine = a.thumb.astype(np.float32)
    gain, offset = _gain_offset(laid[valid].astype(np.float32), mine[valid], _TONE_GAIN)
    laid = np.clip(gain * laid.astype(np.float32) + offset, 0, 255)
    high, low = cv2.dilate(laid, _REACH), cv2.erode(laid, _REACH)
    beyond = np.maximum(0, np.maximum(mine - high, low - mine))
    return _largest((beyond > CHANGE_GREY) & valid) / int(valid.sum())


def compare_laid(
    a: Keypoints, b: Keypoints, lay, region: np.ndarray
) -> tuple[float, float, bool, float]:
    """:func:`_changed_area`'s comparison, with b's thumbnails laid onto a's chroma
    thumbnail by ``lay(image, interpolation)`` (however it maps: a homography here,
    triangles in :mod:`photogroup.surface_print`) and compared within ``region`` (a's
    chroma thumbnail pixels): the changed, flipped and turned areas and blindness."""
    import cv2

    assert a.chroma is not None and b.chroma is not None
    size = (a.chroma.shape[1], a.chroma.shape[0])
    laid = lay(b.chroma, cv2.INTER_LINEAR)
    covered = lay(np.full(b.chroma.shape[:2], 255, np.uint8), cv2.INTER_NEAREST)
    covered = cv2.erode(covered, _SQUARE) == 255  # the warped border is half blank
    # Dark pixels carry no colour (stored as 0, 0): compared where both photos have some,
    # away from b's dark ones (interpolation mixes their 0, 0 into the neighbours). A dark
    # print against a lit one is not told: at the darkness cut-off a shade darker is all
    # it takes to cross it.
    lit_b = (b.chroma.max(axis=2) > 0).astype(np.uint8) * 255
    lit_b = cv2.erode(lay(lit_b, cv2.INTER_NEAREST), _SQUARE)
    lit_a = (a.chroma.max(axis=2) > 0).astype(np.uint8) * 255
    valid = covered & region & (lit_a > 0) & (lit_b > 0)
    core = valid & (cv2.erode(lit_a, _SQUARE) > 0)
    if core.sum() < _MIN_PIXELS:
        return 0.0, 0.0, True, 0.0
    spreads = [
        float(np.sqrt(x[core].astype(np.float32).var(axis=0).sum())) for x in (a.chroma, laid)
    ]
    if max(spreads) < 2.0:
        return 0.0, 0.0, False, 0.0  # two grey photos: no colours to compare, none to miss
    if min(spreads) < _MIN_SPREAD * max(spreads):
        return 0.0, 0.0, True, 0.0  # a grey or nearly grey copy of a coloured photo
    flips = _flips(a, b, lay, size) & covered & region
    laid = _undo_colour_edit(a.chroma, laid, core)
    mine = a.chroma.astype(np.int16)
    high = np.dstack([cv2.dilate(laid[..., c], _REACH) for c in range(2)]).astype(np.int16)
    low = np.dstack([cv2.erode(laid[..., c], _REACH) for c in range(2)]).astype(np.int16)
    beyond = np.maximum(0, np.maximum(mine - high, low - mine))
    distance = np.hypot(beyond[..., 0], beyond[..., 1])
    changed = (distance > CHANGE_CHROMA) & valid
    flipped = _largest(flips) / int((valid | flips).sum())
    turned = _turned(mine, laid) & valid
    return _largest(changed) / int(valid.sum()), flipped, False, _largest(turned) / int(valid.sum())


def _turned(mine: np.ndarray, laid: np.ndarray) -> np.ndarray:
    """Pixels whose hue (the angle of r, g around grey) differs by more than ``TURN_DEG``
    between two aligned chroma thumbnails, both at least ``_HUED`` from grey."""
    x, y = mine.astype(np.float32) - _GREY, laid.astype(np.float32) - _GREY
    hued = (np.hypot(x[..., 0], x[..., 1]) >= _HUED) & (np.hypot(y[..., 0], y[..., 1]) >= _HUED)
    turn = np.degrees(np.arctan2(y[..., 1], y[..., 0]) - np.arctan2(x[..., 1], x[..., 0]))
    return hued & (np.abs((turn + 180.0) % 360.0 - 180.0) > TURN_DEG)


def _largest(mask: np.ndarray) -> int:
    """Pixels of the largest region of ``mask`` once opened with a 3 x 3 square (thin
    slivers along edges and text do not count)."""
    import cv2

    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, _SQUARE)
    count, _, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    return int(stats[1:, cv2.CC_STAT_AREA].max()) if count > 1 else 0


def _flips(a: Keypoints, b: Keypoints, lay, size: tuple[int, int]) -> np.ndarray:
    """Pixels of a's chroma thumbnail dark in one photo and clearly lit in the other; the
    grey thumbnails brought to the chroma thumbnails' size, b's laid on a's by ``lay``."""
    import cv2

    assert b.chroma is not None
    if a.thumb is None or b.thumb is None or not a.thumb.size or not b.thumb.size:
        return np.zeros(size[::-1], bool)
    grey_a = cv2.resize(a.thumb, size, interpolation=cv2.INTER_AREA)
    grey_b = cv2.resize(b.thumb, (b.chroma.shape[1], b.chroma.shape[0]),
                        interpolation=cv2.INTER_AREA)  # fmt: skip
    grey_b = lay(grey_b, cv2.INTER_LINEAR)
    lit_a, lit_b = (cv2.erode(g, _SQUARE) >= _LIT_GREY for g in (grey_a, grey_b))
    return ((grey_a < _DARK_GREY) & lit_b) | ((grey_b < _DARK_GREY) & lit_a)


def _undo_colour_edit(mine: np.ndarray, laid: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``laid`` with a global per-channel gain and offset fitted to ``mine`` over ``valid``
    (least squares, refitted on the best-fitting 70 %): a saturation or white-balance edit
    moves every chromaticity alike, a changed print only its own region's. A hue turn (a
    colour variant) is no per-channel map and stays."""
    out = laid.astype(np.float32)
    for c in range(2):
        x, y = out[..., c][valid], mine[..., c][valid].astype(np.float32)
        gain, offset = _gain_offset(x, y, _GAIN)
        out[..., c] = gain * out[..., c] + offset
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _gain_offset(x: np.ndarray, y: np.ndarray, bounds: tuple[float, float]) -> tuple[float, float]:
    """``y ~ gain * x + offset`` by least squares, refitted on the best-fitting 70 %, the
    gain within ``bounds``; an edit scales by a bounded factor, and a near-flat ``x`` has
    too little spread to fit a gain on and gets an offset only."""
    keep = np.ones(len(x), bool)
    gain, offset = 1.0, 0.0
    for _ in range(2):
        xs, ys = x[keep], y[keep]
        spread = float(xs.var())
        gain = float(np.clip(np.cov(xs, ys)[0, 1] / spread, *bounds)) if spread > 4 else 1.0
        offset = float(ys.mean() - gain * xs.mean())
        error = np.abs(gain * x + offset - y)
        keep = error <= np.quantile(error, 0.7)
    return gain, offset
