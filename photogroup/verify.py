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
2. Compare. The other image's grey thumbnail is warped onto this one's and compared block by
   block (normalised cross-correlation of 8 x 8 px blocks on a 128 px thumbnail, only blocks
   with texture). A copy agrees almost everywhere (a sticker or watermark covers a few
   blocks); another viewpoint does not, since a homography maps one plane of a scene and
   the rest (other faces, the silhouette, the background) moves differently; a shared logo
   aligns a small region and disagrees outside it.

Inlier counts alone were the old rule; they depend on how many keypoints two images have
(small images never reach 100) and are met by a shared logo, so they only gate the
alignment here.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

#: Keypoints per orientation: enough for crops that keep 60 % of the photo, small enough
#: to store (about 10 kB an image for both orientations).
N_KEYPOINTS = 256
#: Long side of the grey thumbnail compared after alignment; BLOCK px blocks on it.
THUMB = 128
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
_FORMAT = 2  # serialisation format of Keypoints.to_bytes


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
    thumb: np.ndarray | None = None  # h x w uint8, long side THUMB
    surface_xy: np.ndarray | None = None  # s x 2 float32
    surface_descriptors: np.ndarray | None = None  # s x 128 uint8 (SIFT)
    surface_lab: np.ndarray | None = None  # s x 3 uint8, CIELAB (OpenCV's 8-bit scaling)

    @property
    def diagonal(self) -> float:
        return float(np.hypot(*self.size))

    def to_bytes(self) -> bytes:
        thumb = self.thumb if self.thumb is not None else np.zeros((0, 0), np.uint8)
        s_xy = _or_empty(self.surface_xy, 2, np.float32)
        s_desc = _or_empty(self.surface_descriptors, 128, np.uint8)
        s_lab = _or_empty(self.surface_lab, 3, np.uint8)
        header = [_FORMAT, len(self.xy), len(self.mirror_xy), *self.size, *thumb.shape, len(s_xy)]
        parts = [
            np.array(header, dtype="<u2").tobytes(),
            self.xy.astype("<f2").tobytes(),
            self.descriptors.astype(np.uint8).tobytes(),
            self.mirror_xy.astype("<f2").tobytes(),
            self.mirror_descriptors.astype(np.uint8).tobytes(),
            thumb.astype(np.uint8).tobytes(),
            s_xy.astype("<f2").tobytes(),
            s_desc.astype(np.uint8).tobytes(),
            s_lab.astype(np.uint8).tobytes(),
        ]
        return zlib.compress(b"".join(parts), 6)

    def to_base64(self) -> str:
        return base64.b64encode(self.to_bytes()).decode()

    @classmethod
    def from_base64(cls, text: str) -> Keypoints | None:
        """Inverse of the features' ``keypoints`` field; None when it is empty."""
        return cls.from_bytes(base64.b64decode(text)) if text else None

    @classmethod
    def from_bytes(cls, data: bytes) -> Keypoints:
        data = zlib.decompress(data)
        fmt, k, mk, width, height, th, tw, s = (
            int(v) for v in np.frombuffer(data[:16], dtype="<u2")
        )
        if fmt != _FORMAT:
            raise ValueError(f"keypoints format {fmt}, expected {_FORMAT}: recompute features")
        reader = _Reader(data, 16)
        return cls(
            xy=reader.take(k, 2, "<f2"),
            descriptors=reader.take(k, 32, np.uint8),
            mirror_xy=reader.take(mk, 2, "<f2"),
            mirror_descriptors=reader.take(mk, 32, np.uint8),
            size=(width, height),
            thumb=reader.take(th, tw, np.uint8),
            surface_xy=reader.take(s, 2, "<f2"),
            surface_descriptors=reader.take(s, 128, np.uint8),
            surface_lab=reader.take(s, 3, np.uint8),
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
    """ORB keypoints of a working image and of its mirror, plus its grey thumbnail."""
    import cv2  # deferred: only feature extraction needs OpenCV

    # Working copies are normalised to one size, so near-duplicates differ in scale by
    # little; 5 pyramid levels (1.2^4 = 2.1x) also cover a photo shown inside a screenshot.
    orb = cv2.ORB_create(nfeatures=n, nlevels=5)
    grey = img.convert("L")
    out = []
    for view in (grey, ImageOps.mirror(grey)):
        found, descriptors = orb.detectAndCompute(np.asarray(view), None)
        if descriptors is None:
            out += [np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)]
        else:
            out += [np.float32([p.pt for p in found]), descriptors]
    return Keypoints(*out, size=img.size, thumb=grey_thumbnail(grey))


def grey_thumbnail(img: Image.Image, size: int = THUMB) -> np.ndarray:
    small = img.convert("L")
    small = small.resize(_fit(small.size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8)


def _fit(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    scale = long_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


@dataclass(frozen=True)
class PhotoMatch:
    """How two images compare as copies of one photo."""

    method: str  # "keypoints" (ORB homography) or "hash" (dihedral pHash alignment)
    inliers: int  # ORB matches under the homography (0 for "hash")
    overlap: float  # share of the smaller-content image the aligned other covers
    agreement: float  # share of textured blocks that agree after alignment, 0..1
    blocks: int  # textured blocks compared


def match_photos(a: Keypoints, b: Keypoints, orientation: int | None = None) -> PhotoMatch | None:
    """Align ``b`` onto ``a`` and compare; None when no alignment could be found.

    ``orientation`` is the hash's alignment, tried when keypoints do not give one: the index
    (as in :func:`photogroup.features.dihedral_phash`) of the flip/quarter turn that takes
    ``b`` to ``a``, or ``-1 - index`` for the one that takes ``a`` to ``b``.
    """
    homography, inliers = align(a, b)
    if homography is not None:
        return _compare(a, b, homography, "keypoints", inliers)
    if orientation is None or a.thumb is None or b.thumb is None:
        return None
    return _compare_by_hash(a.thumb, b.thumb, orientation)


def align(a: Keypoints, b: Keypoints) -> tuple[np.ndarray | None, int]:
    """Homography taking ``b``'s working-copy pixels to ``a``'s, from ORB matches of ``b``
    or of mirrored ``b``; the better supported one, with its inlier count."""
    best: tuple[np.ndarray | None, int] = (None, 0)
    width = b.size[0]
    mirror = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    for xy, desc, pre in ((b.xy, b.descriptors, None), (b.mirror_xy, b.mirror_descriptors, mirror)):
        homography, inliers = _homography(a.xy, a.descriptors, xy, desc, a.diagonal)
        if homography is not None and inliers > best[1]:
            best = (homography @ pre if pre is not None else homography, inliers)
    return best


def _homography(xy_a, desc_a, xy_b, desc_b, diagonal: float) -> tuple[np.ndarray | None, int]:
    import cv2

    if len(desc_a) < MIN_ALIGN_INLIERS or len(desc_b) < MIN_ALIGN_INLIERS:
        return None, 0
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(desc_b, desc_a, k=2)
    good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < _LOWE_RATIO * m[1].distance]
    if len(good) < MIN_ALIGN_INLIERS:
        return None, 0
    src = np.float32([xy_b[m.queryIdx] for m in good])
    dst = np.float32([xy_a[m.trainIdx] for m in good])
    cv2.setRNGSeed(0)  # the same pair always verifies the same way
    radius = max(2.0, _REPROJECTION_FRACTION * diagonal)
    homography, mask = cv2.findHomography(src, dst, cv2.USAC_MAGSAC, radius, maxIters=2000)
    if homography is None or mask is None or int(mask.sum()) < MIN_ALIGN_INLIERS:
        return None, 0
    return homography, int(mask.sum())


def _scale(size: tuple[int, int], thumb: np.ndarray) -> np.ndarray:
    return np.diag([thumb.shape[1] / size[0], thumb.shape[0] / size[1], 1.0])


def _compare(a: Keypoints, b: Keypoints, homography, method: str, inliers: int) -> PhotoMatch:
    """Warp b's thumbnail onto a's with a working-copy homography, then compare blocks."""
    import cv2

    ta, tb = a.thumb, b.thumb
    if ta is None or tb is None or not ta.size or not tb.size:
        return PhotoMatch(method, inliers, 0.0, 0.0, 0)
    h = _scale(a.size, ta) @ homography @ np.linalg.inv(_scale(b.size, tb))
    shape = (ta.shape[1], ta.shape[0])
    warped = cv2.warpPerspective(tb, h, shape, flags=cv2.INTER_LINEAR)
    covered = cv2.warpPerspective(np.full(tb.shape, 255, np.uint8), h, shape) == 255
    back = cv2.warpPerspective(np.full(ta.shape, 255, np.uint8), np.linalg.inv(h),
                               (tb.shape[1], tb.shape[0])) == 255  # fmt: skip
    overlap = max(float(covered.mean()), float(back.mean()))
    agreement, blocks = block_agreement(ta, warped, covered)
    return PhotoMatch(method, inliers, round(overlap, 4), round(agreement, 4), blocks)


def block_agreement(a: np.ndarray, b: np.ndarray, valid: np.ndarray) -> tuple[float, int]:
    """Share of textured ``BLOCK`` px blocks, wholly inside ``valid``, whose normalised
    cross-correlation is at least ``_BLOCK_NCC``; and how many blocks were textured.
    Correlation ignores gain and offset, so exposure and white-balance edits agree."""
    rows, cols = a.shape[0] // BLOCK, a.shape[1] // BLOCK
    if not rows or not cols:
        return 0.0, 0

    def blocks(x: np.ndarray) -> np.ndarray:
        x = x[: rows * BLOCK, : cols * BLOCK]
        return x.reshape(rows, BLOCK, cols, BLOCK).swapaxes(1, 2).reshape(rows * cols, -1)

    va, vb = blocks(a.astype(np.float32)), blocks(b.astype(np.float32))
    inside = blocks(valid).all(axis=1)
    va, vb = va - va.mean(axis=1, keepdims=True), vb - vb.mean(axis=1, keepdims=True)
    sa, sb = np.sqrt((va**2).mean(axis=1)), np.sqrt((vb**2).mean(axis=1))
    textured = inside & (np.maximum(sa, sb) > _TEXTURE_STD)
    if not textured.any():
        return 0.0, 0
    ncc = (va * vb).mean(axis=1) / np.maximum(sa * sb, 1e-6)
    return float((ncc[textured] >= _BLOCK_NCC).mean()), int(textured.sum())


def _compare_by_hash(ta: np.ndarray, tb: np.ndarray, orientation: int) -> PhotoMatch:
    """Compare border-trimmed thumbnails after the flip/quarter turn the hashes matched."""
    from photogroup.features import dihedral_view, trim_box

    crop_a = _crop(ta, trim_box(Image.fromarray(ta)))
    crop_b = _crop(tb, trim_box(Image.fromarray(tb)))
    if orientation < 0:  # the turn takes a to b: turn a instead
        crop_a, crop_b, orientation = crop_b, crop_a, -1 - orientation
    turned = dihedral_view(crop_b, orientation)
    resized = np.asarray(Image.fromarray(turned).resize((crop_a.shape[1], crop_a.shape[0]),
                                                        Image.Resampling.BILINEAR))  # fmt: skip
    agreement, blocks = block_agreement(crop_a, resized, np.ones(crop_a.shape, bool))
    return PhotoMatch("hash", 0, 1.0, round(agreement, 4), blocks)


def _crop(thumb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(thumb[y0:y1, x0:x1])
