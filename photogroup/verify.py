"""Same-photo verification: is one image an edited copy of the other?

Hashes and embeddings see an image as a whole, so a tight crop, a sticker or a screenshot
frame moves them as far as another photo does. The test here is what "the same photo"
means: once one image is aligned onto the other, the part they share looks the same.

1. Align. ORB keypoints (Rublee et al. 2011) of both images, and of the mirror image, are
   matched (Lowe's ratio test) and a homography is fitted with MAGSAC++ (Barath et al.
   2020): it covers crops, scaling, small rotations, stretches, keystone tilt and an image
   shown inside a screenshot. When too few keypoints match (heavy blur, noise, tiny images),
   the dihedral pHash supplies the alignment instead: the orientation that matched, mapped
   between the border-trimmed boxes.
2. Compare. Thumbnails of each image's *content box* (the region with detail: the product,
   not the studio background around it) are warped onto each other and compared block by
   block: normalised cross-correlation of 8 x 8 px blocks of the grey thumbnail (256 px),
   only blocks with texture, and the colours (CIELAB a*b* at 32 px) up to what a global
   colour edit can do. A copy agrees almost everywhere (a sticker or watermark covers a few
   blocks); another viewpoint does not, since a homography maps one plane of a scene and
   the rest (other faces, the silhouette) moves differently; a colour variant shot from the
   same angle agrees in grey but its colours differ in a way no tint, white balance,
   saturation or grayscale edit explains; a shared logo aligns a small region and disagrees
   outside it.

Inlier counts alone were the old rule; they depend on how many keypoints two images have
(small images never reach 100) and are met by a shared logo, so they only gate the
alignment here.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Literal, TypeAlias

import numpy as np
from PIL import Image, ImageOps

#: Keypoints of the image (a quarter as many of its mirror, the rarer case). ORB keeps the
#: strongest corners, so a sticker's or a screenshot frame's crisp text takes hundreds of
#: them: 256 left a small product in a studio shot with a dozen matches, 1,000 with hundreds.
N_KEYPOINTS = 1000
#: Long side of the grey thumbnail of the content box compared after alignment, BLOCK px
#: blocks on it. At 256 px rather than 128 the print of a product is sharp enough to tell
#: another flavour or design from a sticker on the same pack (on calibration, at agreement
#: 0.8: 10 % of near-angle variant pairs pass instead of 42 %, edits kept 0.89 vs 0.91).
THUMB = 256
BLOCK = 8
_LOWE_RATIO = 0.8
#: Homography inlier radius, as a fraction of the diagonal: copies align within a pixel or
#: two, but a screenshot's resampled photo and keystone tilt need some slack.
_REPROJECTION_FRACTION = 0.006
#: Fewest MAGSAC inliers that make an alignment worth checking (a homography needs 4).
MIN_ALIGN_INLIERS = 8
#: A block is "textured" above this grey standard deviation; below, NCC is noise.
_TEXTURE_STD = 6.0
#: A textured block agrees when its NCC with the aligned other block is at least this.
_BLOCK_NCC = 0.5
#: ... and agrees closely at this correlation: other print (a flavour name, another design)
#: in the same layout often correlates above _BLOCK_NCC, rarely above this.
_FINE_NCC = 0.8
#: Thumbnails whose scales differ by more than this factor once aligned are also compared
#: at the coarser one's resolution (``PhotoMatch.coarse_agreement``): a screenshot or a
#: thumbnail shows the photo smaller, and its blocks disagree at detail it no longer has.
COARSE_SCALE = 1.1
#: At one scale, a pair whose aligned thumbnails' gradient energies differ by more than
#: this factor is also compared with the sharper one blurred to the other's sharpness
#: (``PhotoMatch.soft_agreement``): a blurred copy disagrees at detail it no longer has,
#: and a noisy one at detail it gained. The blur is chosen among SOFT_FACTORS (down by
#: the factor and back up, as for a copy shown smaller) to match the energies.
SOFT_RATIO = 1.5
SOFT_FACTORS = (1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
#: Long side of the a*b* colour thumbnail of the content box.
COLOUR_THUMB = 32
#: Long side of the chromaticity thumbnail of the content box (product level: a flavour band
#: or another illustration must still be a few pixels wide; on calibration 96 px told
#: flavour variants from other angles better than 64 or 48).
CHROMA_THUMB = 96
#: Mean RGB below which a pixel's chromaticity is noise (stored as 0, 0: no colour).
_CHROMA_DARK = 40
#: Content box: gradient (grey levels per pixel of a 128 px copy) that counts as detail, and
#: the margin added around the detail (fraction of the image's side).
_DETAIL_SIDE = 128
_DETAIL_GRADIENT = 10.0
_CONTENT_MARGIN = 0.05
#: Padding bars: per-channel difference from the bar colour that is photo, not bar (JPEG
#: keeps a flat bar within a few levels); the share of a trimmed side's first line inside
#: that must differ (a straight edge); pixels skipped past it (JPEG ringing).
_BAR_TOLERANCE = 16
_BAR_EDGE_SHARE = 0.9
_BAR_INSET = 2
#: Chroma (a*b* distance from grey) above which a colour's hue is well defined.
_SATURATED = 15.0
_FORMAT = 4  # serialisation format of Keypoints.to_bytes (4: chroma thumbnail)


@dataclass(frozen=True)
class Keypoints:
    """Local features of one working copy, for verification at both levels.

    ORB keypoints of the image and of its mirror image (same-photo alignment), a grey
    thumbnail (same-photo comparison), and the product-level surface keypoints with the
    colour around each (see :mod:`photogroup.views`). Pixels are working-copy pixels.
    """

    xy: np.ndarray  # k x 2 float32
    descriptors: np.ndarray  # k x 32 uint8
    mirror_xy: np.ndarray
    mirror_descriptors: np.ndarray
    size: tuple[int, int]  # width, height of the working copy
    thumb: np.ndarray | None = None  # h x w uint8 grey of the content box, long side THUMB
    colour: np.ndarray | None = None  # h x w x 2 uint8 a*b* of the content box, COLOUR_THUMB
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # content box, working-copy pixels
    surface_xy: np.ndarray | None = None  # s x 2 float32
    surface_descriptors: np.ndarray | None = None  # s x 128 uint8 (SIFT)
    surface_lab: np.ndarray | None = None  # s x 3 uint8, CIELAB (OpenCV's 8-bit scaling)
    chroma: np.ndarray | None = None  # h x w x 2 uint8 r, g chromaticity x 255, CHROMA_THUMB

    @property
    def diagonal(self) -> float:
        return float(np.hypot(*self.size))

    def to_bytes(self) -> bytes:
        thumb = self.thumb if self.thumb is not None else np.zeros((0, 0), np.uint8)
        colour = self.colour if self.colour is not None else np.zeros((0, 0, 2), np.uint8)
        s_xy = _or_empty(self.surface_xy, 2, np.float32)
        s_desc = _or_empty(self.surface_descriptors, 128, np.uint8)
        s_lab = _or_empty(self.surface_lab, 3, np.uint8)
        chroma = self.chroma if self.chroma is not None else np.zeros((0, 0, 2), np.uint8)
        header = [_FORMAT, len(self.xy), len(self.mirror_xy), *self.size, *thumb.shape,
                  len(s_xy), *colour.shape[:2], *self.box, *chroma.shape[:2]]  # fmt: skip
        parts = [
            np.array(header, dtype="<u2").tobytes(),
            self.xy.astype("<f2").tobytes(),
            self.descriptors.astype(np.uint8).tobytes(),
            self.mirror_xy.astype("<f2").tobytes(),
            self.mirror_descriptors.astype(np.uint8).tobytes(),
            thumb.astype(np.uint8).tobytes(),
            colour.astype(np.uint8).tobytes(),
            s_xy.astype("<f2").tobytes(),
            s_desc.astype(np.uint8).tobytes(),
            s_lab.astype(np.uint8).tobytes(),
            chroma.astype(np.uint8).tobytes(),
        ]
        return zlib.compress(b"".join(parts), 1)  # level 1: most of the gain, a fifth the time

    def to_base64(self) -> str:
        return base64.b64encode(self.to_bytes()).decode()

    @classmethod
    def from_base64(cls, text: str) -> Keypoints | None:
        """Inverse of the features' ``keypoints`` field; None when it is empty."""
        return cls.from_bytes(base64.b64decode(text)) if text else None

    @classmethod
    def from_bytes(cls, data: bytes) -> Keypoints:
        data = zlib.decompress(data)
        fmt = int(np.frombuffer(data[:2], dtype="<u2")[0])
        if fmt != _FORMAT:
            raise ValueError(f"keypoints format {fmt}, expected {_FORMAT}: recompute features")
        k, mk, width, height, th, tw, s, ch, cw, *box, rh, rw = (
            int(v) for v in np.frombuffer(data[2:32], dtype="<u2")
        )
        reader = _Reader(data, 32)
        return cls(
            xy=reader.take(k, 2, "<f2"),
            descriptors=reader.take(k, 32, np.uint8),
            mirror_xy=reader.take(mk, 2, "<f2"),
            mirror_descriptors=reader.take(mk, 32, np.uint8),
            size=(width, height),
            thumb=reader.take(th, tw, np.uint8),
            colour=reader.take(ch, cw * 2, np.uint8).reshape(ch, cw, 2),
            surface_xy=reader.take(s, 2, "<f2"),
            surface_descriptors=reader.take(s, 128, np.uint8),
            surface_lab=reader.take(s, 3, np.uint8),
            box=tuple(box),  # type: ignore[arg-type]
            chroma=reader.take(rh, rw * 2, np.uint8).reshape(rh, rw, 2),
        )


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def take(self, rows: int, cols: int, dtype) -> np.ndarray:
        size = rows * cols * np.dtype(dtype).itemsize
        arr = np.frombuffer(self.data[self.offset : self.offset + size], dtype=dtype)
        self.offset += size
        arr = arr.reshape(rows, cols)
        return arr.astype(np.float32) if dtype == "<f2" else arr


def _or_empty(arr: np.ndarray | None, cols: int, dtype) -> np.ndarray:
    return np.zeros((0, cols), dtype) if arr is None else arr


def orb_keypoints(img: Image.Image, n: int = N_KEYPOINTS) -> Keypoints:
    """ORB keypoints of a working image and of its mirror, plus its content thumbnails."""
    import cv2  # deferred: only feature extraction needs OpenCV

    # Working copies are normalised to one size, so near-duplicates differ in scale by
    # little; 6 pyramid levels (1.2^5 = 2.5x) also cover a photo shown inside a screenshot.
    grey = img.convert("L")
    out = []
    for view, count in ((grey, n), (ImageOps.mirror(grey), n // 4)):
        orb = cv2.ORB_create(nfeatures=count, nlevels=6)
        found, descriptors = orb.detectAndCompute(np.asarray(view), None)
        if descriptors is None:
            out += [np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)]
        else:
            out += [np.float32([p.pt for p in found]), descriptors]
    box = content_box(img)
    content = img.convert("RGB").crop(box)
    lab = content.resize(_fit(content.size, COLOUR_THUMB), Image.Resampling.BOX)
    ab = cv2.cvtColor(np.asarray(lab), cv2.COLOR_RGB2LAB)[..., 1:]
    thumb = np.asarray(grey.crop(box).resize(_fit(content.size, THUMB), Image.Resampling.BOX))
    return Keypoints(*out, size=img.size, thumb=thumb, colour=np.ascontiguousarray(ab), box=box,
                     chroma=chromaticity(content))  # fmt: skip


def chromaticity(content: Image.Image) -> np.ndarray:
    """r, g chromaticity (x 255) of an RGB image at ``CHROMA_THUMB`` px: shading scales R, G
    and B alike, so another face of a pack in its own light keeps its chromaticity where
    its a*b* would shrink. Dark pixels, whose ratios are noise, are 0, 0."""
    small = content.resize(_fit(content.size, CHROMA_THUMB), Image.Resampling.BOX)
    rgb = np.asarray(small, dtype=np.float32) + 1.0
    total = rgb.sum(axis=2, keepdims=True)
    out = np.round(rgb[..., :2] / total * 255).astype(np.uint8)
    out[total[..., 0] < 3 * _CHROMA_DARK] = 0
    return np.ascontiguousarray(out)


def content_box(img: Image.Image) -> tuple[int, int, int, int]:
    """Box around the detail of an image, in its pixels: where a 128 px grey copy has strong
    gradients (print, edges), 1st to 99th percentile, plus a margin. A studio shot's smooth
    backdrop, sweep and soft shadow fall outside; a textured photo keeps its whole frame.
    Padding or letterbox bars are left out first (:func:`padding_frame`): their edge is no
    detail, and a padded copy's box is then its photo's box."""
    fx, fy, fx1, fy1 = padding_frame(img)
    if (fx, fy, fx1, fy1) == (0, 0, img.width, img.height):
        return _detail_box(img)
    x0, y0, x1, y1 = _detail_box(img.crop((fx, fy, fx1, fy1)))
    return fx + x0, fy + y0, fx + x1, fy + y1


def padding_frame(img: Image.Image) -> tuple[int, int, int, int]:
    """The photo inside padding or letterbox bars of one flat colour (the corners'), or the
    whole image. A bar is a side whose border-coloured strip ends in a straight edge: the
    first line inside it differs from the bar colour along most of its length (a studio
    backdrop of the corners' colour ends where the product does, along a few pixels of a
    line). The frame is inset by 2 px, past the JPEG ringing at the bar's edge."""
    import cv2  # deferred, as in orb_keypoints

    rgb = np.asarray(img.convert("RGB"))
    h, w = rgb.shape[:2]
    whole = (0, 0, w, h)
    corners = np.stack([rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]])
    colour = np.rint(np.median(corners, axis=0)).astype(np.uint8)

    def differs_from_bar(pixels: np.ndarray) -> np.ndarray:
        # OpenCV's saturating uint8 arithmetic: 40x faster than NumPy's on a whole image.
        diff = cv2.absdiff(pixels, np.broadcast_to(colour, pixels.shape).copy())
        return cv2.max(cv2.max(diff[..., 0], diff[..., 1]), diff[..., 2]) > _BAR_TOLERANCE

    # A bar is a whole border line of the bar colour; most photos have none (no full pass).
    borders = (rgb[:, 0], rgb[0], rgb[:, -1], rgb[-1])
    if all(differs_from_bar(line).any() for line in borders):
        return whole
    differs = differs_from_bar(rgb)
    cols, rows = np.nonzero(differs.any(axis=0))[0], np.nonzero(differs.any(axis=1))[0]
    if not len(cols):
        return whole
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    bars = (x0 > 0, y0 > 0, x1 < w, y1 < h)  # left, top, right, bottom
    if not any(bars):
        return whole
    x0, y0 = x0 + _BAR_INSET * bars[0], y0 + _BAR_INSET * bars[1]
    x1, y1 = x1 - _BAR_INSET * bars[2], y1 - _BAR_INSET * bars[3]
    if x1 - x0 < 0.2 * w or y1 - y0 < 0.2 * h:
        return whole
    # Past the ringing, each bar's edge line must be mostly not the bar colour.
    edges = (differs[y0:y1, x0], differs[y0, x0:x1], differs[y0:y1, x1 - 1], differs[y1 - 1, x0:x1])
    if any(bar and edge.mean() < _BAR_EDGE_SHARE for bar, edge in zip(bars, edges, strict=True)):
        return whole
    return x0, y0, x1, y1


def _detail_box(img: Image.Image) -> tuple[int, int, int, int]:
    grey = img.convert("L")
    small = grey.resize(_fit(grey.size, _DETAIL_SIDE), Image.Resampling.BOX)
    g = np.asarray(small, dtype=np.float32)
    gy, gx = np.gradient(g)
    ys, xs = np.nonzero(np.hypot(gx, gy) > _DETAIL_GRADIENT)
    whole = (0, 0, img.width, img.height)
    if len(xs) < 0.01 * g.size:
        return whole
    sx, sy = img.width / g.shape[1], img.height / g.shape[0]
    (x0, x1), (y0, y1) = np.percentile(xs, [1, 99]), np.percentile(ys, [1, 99])
    mx, my = _CONTENT_MARGIN * img.width, _CONTENT_MARGIN * img.height
    box = (
        max(0, int(x0 * sx - mx)),
        max(0, int(y0 * sy - my)),
        min(img.width, int((x1 + 1) * sx + mx)),
        min(img.height, int((y1 + 1) * sy + my)),
    )
    if box[2] - box[0] < 16 or box[3] - box[1] < 16:
        return whole
    return box


def _fit(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    scale = long_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


@dataclass(frozen=True)
class PhotoMatch:
    """How two images compare as copies of one photo."""

    method: str  # "keypoints" (ORB homography) or "hash" (dihedral pHash alignment)
    inliers: int  # ORB matches under the homography (0 for "hash")
    good: int  # ORB matches passing the ratio test
    second_plane: int  # inliers of a second homography on the clear outliers
    overlap: float  # share of one image (the better covered) that the aligned other covers
    agreement: float  # share of textured grey blocks that agree after alignment, 0..1
    fine_agreement: float  # the same share at a correlation of at least _FINE_NCC
    blocks: int  # textured blocks compared
    patches: int  # separate patches of disagreeing blocks (see block_agreement)
    colour_residual: float  # median a*b* error left by the best global colour edit
    hue_turn: float  # degrees that edit turns hues (a tint or white balance turns few)
    # The largest disagreeing patch as an occluder (a sticker, a price tag; see Blocks):
    rest_agreement: float = 0.0  # agreement of the blocks outside its box
    occluded: float = 0.0  # share of textured blocks inside its box
    second_patch: int = 0  # blocks in the second-largest disagreeing patch
    residual: float = 0.0  # median inlier distance from the homography, over a's diagonal
    #: ``agreement`` with the finer thumbnail brought down to the coarser one's resolution
    #: (equal to it where the two are shown at about one scale; see COARSE_SCALE)
    coarse_agreement: float = 0.0
    #: ``agreement`` with the sharper thumbnail blurred to the other's sharpness, at one
    #: scale (equal to it where their sharpness is about the same; see SOFT_RATIO)
    soft_agreement: float = 0.0
    #: The box (x0, y0, x1, y1, a's working-copy pixels) of that largest disagreeing patch,
    #: grown by a block: where a sticker may have changed the print (not evidence).
    occluder: tuple[float, float, float, float] | None = field(default=None, compare=False)

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        del out["occluder"]
        return out


class Pending(Enum):
    """What an ``alignment`` argument can say besides an alignment or None."""

    ALIGN = "align"


#: Default of every ``alignment`` argument: the pair is aligned where it is compared. A
#: caller that aligned it already passes what :func:`align` returned, None included: a
#: pair aligns the same way every time, so one without an alignment is not tried again.
ALIGN_HERE = Pending.ALIGN


def match_photos(
    a: Keypoints,
    b: Keypoints,
    orientation: int | None = None,
    *,
    alignment: AlignmentArg = ALIGN_HERE,
) -> PhotoMatch | None:
    """Align ``b`` onto ``a`` and compare; None when no alignment could be found.

    ``orientation`` is the hash's alignment, tried when keypoints do not give one: the index
    (as in :func:`photogroup.features.dihedral_phash`) of the flip/quarter turn that takes
    ``b`` to ``a``, or ``-1 - index`` for the one that takes ``a`` to ``b``. ``alignment``:
    :func:`align`'s result when the caller has it already (None: it found none).
    """
    if a.thumb is None or b.thumb is None or not a.thumb.size or not b.thumb.size:
        return None
    by_keypoints = align(a, b) if alignment is ALIGN_HERE else alignment
    candidates = [by_keypoints]
    if orientation is not None:  # also the hash's: exact for flips, turns and padding
        candidates.append(Alignment(_hash_alignment(a, b, orientation), 0, 0, 0))
    matches = []
    for found in candidates:
        if found is None:
            continue
        try:
            matches.append(_compare(a, b, found))
        except np.linalg.LinAlgError:  # a degenerate alignment aligns nothing
            continue
    best = max(matches, key=lambda m: m.agreement, default=None)
    if best is not None and best.method == "hash" and by_keypoints is not None:
        # The hash may align the pixels better, but what the keypoints say of the geometry
        # (a second plane, matches no single homography explains, how closely one plane
        # holds) still stands.
        best = replace(best, inliers=by_keypoints.inliers, good=by_keypoints.good,
                       second_plane=by_keypoints.second,
                       residual=round(by_keypoints.residual, 5))  # fmt: skip
    return best


@dataclass(frozen=True)
class Alignment:
    """A homography from b's working-copy pixels to a's, and how the ORB matches behind it
    split: ``inliers`` under it, ``good`` (ratio-test matches) in all, and ``second``, the
    inliers of a second homography fitted on the clear outliers. Edits move a photo as one
    plane, so a second consistent plane means another viewpoint (a box's other face,
    parallax); a sticker or a frame adds unmatched keypoints, not a second motion."""

    homography: np.ndarray
    inliers: int
    good: int
    second: int
    #: Median distance of the inliers from where the homography puts them, over a's
    #: diagonal: an edited copy moves as one plane to within keypoint jitter; the same pack
    #: shot from a few degrees away fits one plane only roughly (its other faces, its depth).
    residual: float = 0.0
    #: The inliers' positions in a (working-copy pixels): the region the homography holds in.
    inlier_xy: np.ndarray | None = None


#: An ``alignment`` argument: :func:`align`'s result (None: it found none) or ``ALIGN_HERE``.
AlignmentArg: TypeAlias = Alignment | Literal[Pending.ALIGN] | None


def align(a: Keypoints, b: Keypoints) -> Alignment | None:
    """The better supported alignment of ``b`` or of mirrored ``b`` onto ``a``."""
    best: Alignment | None = None
    width = b.size[0]
    mirror = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for xy, desc, pre in ((b.xy, b.descriptors, None), (b.mirror_xy, b.mirror_descriptors, mirror)):
        found = _homography(a.xy, a.descriptors, xy, desc, a.diagonal)
        if found is not None and (best is None or found.inliers > best.inliers):
            h = found.homography @ pre if pre is not None else found.homography
            best = replace(found, homography=h)
    return best


def _homography(xy_a, desc_a, xy_b, desc_b, diagonal: float) -> Alignment | None:
    import cv2

    if len(desc_a) < MIN_ALIGN_INLIERS or len(desc_b) < MIN_ALIGN_INLIERS:
        return None
    query, train = _ratio_matches(desc_b, desc_a)
    if len(query) < MIN_ALIGN_INLIERS:
        return None
    src = np.ascontiguousarray(xy_b[query], dtype=np.float32)
    dst = np.ascontiguousarray(xy_a[train], dtype=np.float32)
    cv2.setRNGSeed(0)  # the same pair always verifies the same way
    radius = max(2.0, _REPROJECTION_FRACTION * diagonal)
    homography, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, radius, maxIters=2000)
    if homography is None or mask is None or int(mask.sum()) < MIN_ALIGN_INLIERS:
        return None
    error = np.hypot(*(cv2.perspectiveTransform(src[None], homography)[0] - dst).T)
    inlying = mask.ravel().astype(bool)
    residual = float(np.median(error[inlying])) / max(diagonal, 1.0)
    clear = error > 3 * radius
    second = 0
    if clear.sum() >= MIN_ALIGN_INLIERS:
        h2, mask2 = cv2.findHomography(src[clear], dst[clear], cv2.USAC_MAGSAC, radius,
                                       maxIters=1000)  # fmt: skip
        second = int(mask2.sum()) if h2 is not None and mask2 is not None else 0
    return Alignment(homography, int(mask.sum()), len(query), second, residual, dst[inlying])


def _ratio_matches(query: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the query descriptors whose nearest train descriptor passes Lowe's ratio
    test, and of that neighbour, in query order.

    An exact brute-force Hamming search, as OpenCV's BFMatcher.knnMatch does, but through
    faiss's popcount kernels: about 4.7x less CPU for two sets of 1,000 ORB descriptors,
    the bulk of grouping's time (bench/throughput.py). Same neighbours and distances: a tie
    for first place fails the ratio test whichever index wins it.
    """
    import faiss

    distance, index = faiss.knn_hamming(
        np.ascontiguousarray(query, dtype=np.uint8), np.ascontiguousarray(train, dtype=np.uint8), 2
    )
    good = distance[:, 0] < _LOWE_RATIO * distance[:, 1]
    return np.nonzero(good)[0], index[good, 0]


def thumb_transform(k: Keypoints, thumb: np.ndarray) -> np.ndarray:
    """Working-copy pixels -> pixels of a thumbnail of the content box."""
    x0, y0, x1, y1 = k.box
    sx, sy = thumb.shape[1] / max(x1 - x0, 1), thumb.shape[0] / max(y1 - y0, 1)
    # Pixel centres sit at integers on both sides, so pixel i's area [i - 0.5, i + 0.5)
    # maps to (x + 0.5 - x0) * s - 0.5: without the halves, a flip or a quarter turn is
    # compared a third of a thumbnail pixel off.
    tx, ty = (0.5 - x0) * sx - 0.5, (0.5 - y0) * sy - 0.5
    return np.array([[sx, 0, tx], [0, sy, ty], [0, 0, 1.0]])


def _compare(a: Keypoints, b: Keypoints, found: Alignment) -> PhotoMatch:
    """Warp b's content thumbnails onto a's with a working-copy homography; compare."""
    import cv2

    homography = found.homography
    overlap = _overlap(a.size, b.size, homography)
    grey_h = thumb_transform(a, a.thumb) @ homography @ np.linalg.inv(thumb_transform(b, b.thumb))
    size = (a.thumb.shape[1], a.thumb.shape[0])
    warped = cv2.warpPerspective(b.thumb, grey_h, size, flags=cv2.INTER_LINEAR)
    covered = cv2.warpPerspective(np.full(b.thumb.shape, 255, np.uint8), grey_h, size) == 255
    compared = block_agreement(a.thumb, warped, covered)
    coarse = _coarse_agreement(a.thumb, b.thumb, grey_h, warped, covered, compared.agreement,
                               _detail(a) / _detail(b))  # fmt: skip
    soft = _soft_agreement(a.thumb, grey_h, warped, covered, compared.agreement)
    residual, turn = 0.0, 0.0
    if a.colour is not None and b.colour is not None and a.colour.size and b.colour.size:
        to_b = np.linalg.inv(thumb_transform(b, b.colour))
        colour_h = thumb_transform(a, a.colour) @ homography @ to_b
        csize = (a.colour.shape[1], a.colour.shape[0])
        wb = cv2.warpPerspective(b.colour, colour_h, csize, flags=cv2.INTER_LINEAR)
        valid = cv2.warpPerspective(np.full(b.colour.shape[:2], 255, np.uint8), colour_h,
                                    csize, flags=cv2.INTER_NEAREST) == 255  # fmt: skip
        residual, turn = colour_edit_fit(a.colour[valid], wb[valid])
    method = "keypoints" if found.good else "hash"
    occluder = None
    if compared.hidden is not None:  # thumbnail pixels -> a's working-copy pixels
        to_work = np.linalg.inv(thumb_transform(a, a.thumb))
        corners = np.array([compared.hidden[:2], compared.hidden[2:]], np.float64) - 0.5
        (x0, y0), (x1, y1) = corners @ to_work[:2, :2].T + to_work[:2, 2]
        occluder = (float(x0), float(y0), float(x1), float(y1))
    return PhotoMatch(method, found.inliers, found.good, found.second, round(overlap, 4),
                      round(compared.agreement, 4), round(compared.fine, 4), compared.blocks,
                      compared.patches, round(residual, 2), round(turn, 1),
                      round(compared.rest_agreement, 4), round(compared.occluded, 4),
                      compared.second_patch, round(found.residual, 5),
                      round(coarse, 4), round(soft, 4), occluder)  # fmt: skip


def _coarse_agreement(
    a: np.ndarray,
    b: np.ndarray,
    b_to_a: np.ndarray,
    warped: np.ndarray,
    covered: np.ndarray,
    agreement: float,
    detail_ratio: float = 1.0,
) -> float:
    """Block agreement of ``b`` warped onto ``a`` (``b_to_a``; ``warped`` is b so warped
    already) once the finer of the two is brought down to the coarser one's resolution
    (down by their scale ratio and back up), or ``agreement`` where their scales differ by
    less than ``COARSE_SCALE``. ``detail_ratio``: :func:`_detail` of a over b's, the
    resolution the thumbnails hold beside the one they are drawn at."""
    import cv2

    scale = _side_scale(b_to_a) * detail_ratio
    if not np.isfinite(scale) or scale == 0 or 1 / COARSE_SCALE <= scale <= COARSE_SCALE:
        return agreement  # one scale, or a degenerate alignment (its blocks say so already)
    if scale > 1:  # b is the coarser: a loses its finer detail
        return block_agreement(_blurred_to(a, scale), warped, covered).agreement
    # a is the coarser: b loses its finer detail before it is warped down
    size = (a.shape[1], a.shape[0])
    warped = cv2.warpPerspective(_blurred_to(b, 1 / scale), b_to_a, size, flags=cv2.INTER_LINEAR)
    return block_agreement(a, warped, covered).agreement


def _soft_agreement(
    a: np.ndarray, b_to_a: np.ndarray, warped: np.ndarray, covered: np.ndarray, agreement: float
) -> float:
    """Block agreement of ``warped`` (b laid on ``a``) once the sharper of the two is
    blurred to the other's sharpness (the ``SOFT_FACTORS`` blur whose gradient energy over
    the covered area comes closest to the softer one's), or ``agreement`` where their
    scales differ (:func:`_coarse_agreement` compares those) or their sharpness does not
    (``SOFT_RATIO``)."""
    import cv2

    scale = _side_scale(b_to_a)
    if not np.isfinite(scale) or not 1 / COARSE_SCALE <= scale <= COARSE_SCALE:
        return agreement
    inner = cv2.erode(covered.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    energy_a, energy_b = _gradient_energy(a, inner), _gradient_energy(warped, inner)
    softer = min(energy_a, energy_b)
    if softer <= 0 or max(energy_a, energy_b) < SOFT_RATIO * softer:
        return agreement
    sharp = a if energy_a > energy_b else warped
    blurred = min(
        (_blurred_to(sharp, f) for f in SOFT_FACTORS),
        key=lambda x: abs(np.log(max(_gradient_energy(x, inner), 1e-6) / softer)),
    )
    pair = (blurred, warped) if energy_a > energy_b else (a, blurred)
    return block_agreement(*pair, covered).agreement


def _detail(k: Keypoints) -> float:
    """Working-copy pixels per thumbnail pixel, at most 1: how much of its thumbnail's
    resolution holds detail. A content box under ``THUMB`` pixels is drawn larger, which
    adds none: a copy shown small (a thumbnail, a downscaled upload) has as large a
    thumbnail as its photo, and only this says it is the coarser."""
    if k.thumb is None or not k.thumb.size:
        return 1.0
    x0, y0, x1, y1 = k.box
    return min(1.0, max(x1 - x0, y1 - y0, 1) / max(k.thumb.shape))


def _side_scale(b_to_a: np.ndarray) -> float:
    """a's pixels per pixel of b along a side, under the homography ``b_to_a``."""
    linear = b_to_a[:2, :2] / b_to_a[2, 2]
    return float(np.sqrt(abs(np.linalg.det(linear))))


def _gradient_energy(x: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared grey gradient (forward differences) where ``mask`` holds."""
    x = x.astype(np.float32)
    dx, dy = np.diff(x, axis=1)[:-1], np.diff(x, axis=0)[:, :-1]
    inside = mask[:-1, :-1] & mask[1:, :-1] & mask[:-1, 1:]
    return float((dx**2 + dy**2)[inside].mean()) if inside.any() else 0.0


def _blurred_to(thumb: np.ndarray, factor: float) -> np.ndarray:
    """``thumb`` at ``factor`` times fewer pixels a side, brought back to its size."""
    import cv2

    h, w = thumb.shape[:2]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    return cv2.resize(cv2.resize(thumb, small, interpolation=cv2.INTER_AREA), (w, h),
                      interpolation=cv2.INTER_LINEAR)  # fmt: skip


def _overlap(size_a, size_b, homography) -> float:
    """Share of a covered by b's frame once aligned, or of b by a's: the larger."""
    import cv2

    def frame(size) -> np.ndarray:
        w, h = size
        return np.float32([[0, 0], [w, 0], [w, h], [0, h]])

    b_in_a = cv2.perspectiveTransform(frame(size_b)[None], homography)[0]
    a_in_b = cv2.perspectiveTransform(frame(size_a)[None], np.linalg.inv(homography))[0]
    shares = []
    for quad, size in ((b_in_a, size_a), (a_in_b, size_b)):
        if not cv2.isContourConvex(quad.astype(np.float32)):
            shares.append(0.0)
            continue
        area, _ = cv2.intersectConvexConvex(quad.astype(np.float32), frame(size))
        shares.append(float(area) / (size[0] * size[1]))
    return max(shares)


def colour_edit_fit(ab_a: np.ndarray, ab_b: np.ndarray) -> tuple[float, float]:
    """How well one global colour edit explains two aligned sets of a*b* values.

    Tint, white balance, saturation and grayscale edits move every colour the same way: an
    affine map of the a*b* plane (fitted by least squares, in the direction that fits
    better, since grayscale cannot be undone). Returns its median residual (a*b* units) and
    the median hue change (degrees) of the colours that are saturated in both images: an
    edit shifts saturated hues little, a colour variant turns its label's hue by 60 degrees
    or more.
    """
    x = ab_a.reshape(-1, 2).astype(np.float64) - 128.0
    y = ab_b.reshape(-1, 2).astype(np.float64) - 128.0
    if len(x) < 8:
        return 0.0, 0.0
    residual = np.inf
    for src, dst in ((x, y), (y, x)):
        design = np.hstack([src, np.ones((len(src), 1))])
        coef, *_ = np.linalg.lstsq(design, dst, rcond=None)
        residual = min(residual, float(np.median(np.hypot(*(design @ coef - dst).T))))
    saturated = (np.hypot(*x.T) >= _SATURATED) & (np.hypot(*y.T) >= _SATURATED)
    if saturated.sum() < 8:
        return residual, 0.0
    turn = np.arctan2(y[saturated, 1], y[saturated, 0]) - np.arctan2(
        x[saturated, 1], x[saturated, 0]
    )
    turn = np.abs((np.degrees(turn) + 180.0) % 360.0 - 180.0)
    return residual, float(np.median(turn))


@dataclass(frozen=True)
class Blocks:
    """How two aligned grey thumbnails agree, block by block (see :func:`block_agreement`)."""

    agreement: float  # share of textured blocks whose correlation is at least _BLOCK_NCC
    blocks: int  # textured blocks compared
    patches: int  # separate patches (8-connected, two blocks or more) of disagreeing blocks
    fine: float  # share of textured blocks at a correlation of at least _FINE_NCC
    rest_agreement: float = 0.0  # agreement outside the box of the largest patch
    occluded: float = 0.0  # share of textured blocks inside that box
    second_patch: int = 0  # blocks in the second-largest patch
    hidden: tuple[int, int, int, int] | None = None  # that box, thumbnail pixels (x0, y0, x1, y1)


def block_agreement(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> Blocks:
    """Compare textured ``BLOCK`` px blocks wholly inside ``valid`` by normalised
    cross-correlation, which ignores gain and offset, so exposure and white-balance edits
    agree. A sticker, a watermark or a frame differs in one patch; another flavour or design
    of a pack, or the same pack from a few degrees away, differs in several places. So the
    largest patch is also treated as an occluder: the agreement of the blocks outside its
    bounding box (grown by a block), how much of the image that box hides, and the size of
    the next patch."""
    from scipy.ndimage import label

    rows, cols = a.shape[0] // BLOCK, a.shape[1] // BLOCK
    if not rows or not cols:
        return Blocks(0.0, 0, 0, 0.0)

    def blocks(x: np.ndarray) -> np.ndarray:
        x = x[: rows * BLOCK, : cols * BLOCK]
        return x.reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2).reshape(rows * cols, -1)

    va, vb = blocks(a.astype(np.float32)), blocks(b.astype(np.float32))
    inside = blocks(valid).all(axis=1)
    va, vb = va - va.mean(axis=1, keepdims=True), vb - vb.mean(axis=1, keepdims=True)
    sa, sb = np.sqrt((va**2).mean(axis=1)), np.sqrt((vb**2).mean(axis=1))
    textured = inside & (np.maximum(sa, sb) > _TEXTURE_STD)
    if not textured.any():
        return Blocks(0.0, 0, 0, 0.0)
    ncc = (va * vb).mean(axis=1) / np.maximum(sa * sb, 1e-6)
    agree = ncc >= _BLOCK_NCC
    differ = (textured & ~agree).reshape(rows, cols)
    labels, count = label(differ, structure=np.ones((3, 3)))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    patches = int((sizes >= 2).sum())
    fine = float((ncc[textured] >= _FINE_NCC).mean())
    agreement = float(agree[textured].mean())
    if not count:
        return Blocks(agreement, int(textured.sum()), patches, fine, agreement, 0.0, 0)
    ys, xs = np.nonzero(labels == int(np.argmax(sizes)) + 1)
    top, left = max(0, ys.min() - 1), max(0, xs.min() - 1)
    bottom, right = min(rows, ys.max() + 2), min(cols, xs.max() + 2)
    hidden = np.zeros((rows, cols), bool)
    hidden[top:bottom, left:right] = True
    hidden = hidden.ravel()
    rest = textured & ~hidden
    return Blocks(
        agreement,
        int(textured.sum()),
        patches,
        fine,
        float(agree[rest].mean()) if rest.any() else 0.0,
        float((textured & hidden).sum() / textured.sum()),
        int(np.sort(sizes)[-2]) if count > 1 else 0,
        (left * BLOCK, top * BLOCK, right * BLOCK, bottom * BLOCK),
    )


def _hash_alignment(a: Keypoints, b: Keypoints, orientation: int) -> np.ndarray:
    """Working-copy homography from b to a implied by a dihedral hash match: b's content
    box, turned by the matched flip/quarter turn, onto a's content box."""
    import cv2

    from photogroup.features import dihedral_view

    def corners(box) -> np.ndarray:
        x0, y0, x1, y1 = box
        return np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])

    # Where each corner of a 2 x 2 grid lands under the dihedral element tells the order in
    # which b's corners meet a's (the element is defined on arrays, rows first).
    flip = orientation < 0
    index = -1 - orientation if flip else orientation
    grid = np.arange(4).reshape(2, 2)  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
    turned = dihedral_view(grid, index).ravel()  # which source corner ends up where
    order = [0, 1, 3, 2]  # grid positions in corner (clockwise) order
    src_idx = [order.index(int(turned[pos])) for pos in order]
    box_a, box_b = (b.box, a.box) if flip else (a.box, b.box)
    src, dst = corners(box_b)[src_idx], corners(box_a)
    h = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    return np.linalg.inv(h) if flip else h
