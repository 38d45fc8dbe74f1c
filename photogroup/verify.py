"""Geometric verification: are two images the same photo under crop, rotation or stretch?

Hashes and embeddings see an image as a whole, so a tight crop, a small rotation or a
watermark moves them as far as a different photo of the same product does. Local features
tell the two apart: in the same photo, hundreds of ORB keypoints (Rublee et al. 2011)
match under one affine map; in another photo of the product, only a few do.

ORB is rotation-invariant but not mirror-invariant, so keypoints are also kept for the
mirrored image; a pair is verified against both. Keypoints are computed once per image
with its other features and stored compactly (float16 coordinates, 32-byte descriptors).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

#: Keypoints per orientation: enough for crops that keep 60 % of the photo, small enough
#: to store (about 10 kB an image for both orientations).
N_KEYPOINTS = 256
_LOWE_RATIO = 0.8
_REPROJECTION_FRACTION = 0.005  # RANSAC inlier radius, as a fraction of the diagonal: tight, as
# copies align within a pixel or two while parallax between viewpoints does not


@dataclass(frozen=True)
class Keypoints:
    """ORB keypoints of one image and of its mirror image, in pixels of the working copy."""

    xy: np.ndarray  # k x 2 float32
    descriptors: np.ndarray  # k x 32 uint8
    mirror_xy: np.ndarray
    mirror_descriptors: np.ndarray
    size: tuple[int, int]  # width, height of the working copy

    @property
    def diagonal(self) -> float:
        return float(np.hypot(*self.size))

    def to_bytes(self) -> bytes:
        parts = [
            np.array([len(self.xy), len(self.mirror_xy), *self.size], dtype="<u2").tobytes(),
            self.xy.astype("<f2").tobytes(),
            self.descriptors.astype(np.uint8).tobytes(),
            self.mirror_xy.astype("<f2").tobytes(),
            self.mirror_descriptors.astype(np.uint8).tobytes(),
        ]
        return b"".join(parts)

    @classmethod
    def from_base64(cls, text: str) -> Keypoints | None:
        """Inverse of the features' ``keypoints`` field; None when it is empty."""
        return cls.from_bytes(base64.b64decode(text)) if text else None

    @classmethod
    def from_bytes(cls, data: bytes) -> Keypoints:
        k, mk, width, height = (int(v) for v in np.frombuffer(data[:8], dtype="<u2"))
        offset = 8
        arrays = []
        for count, shape, dtype in ((k, 2, "<f2"), (k, 32, np.uint8), (mk, 2, "<f2"),
                                    (mk, 32, np.uint8)):  # fmt: skip
            size = int(count) * shape * np.dtype(dtype).itemsize
            arr = np.frombuffer(data[offset : offset + size], dtype=dtype).reshape(-1, shape)
            arrays.append(arr.astype(np.float32) if dtype == "<f2" else arr)
            offset += size
        return cls(*arrays, size=(width, height))


def orb_keypoints(img: Image.Image, n: int = N_KEYPOINTS) -> Keypoints:
    """ORB keypoints of a working image and of its mirror."""
    import cv2  # deferred: only feature extraction needs OpenCV

    # Working copies are normalised to one size, so near-duplicates differ in scale by
    # little (a crop, a stretch): 4 pyramid levels (1.2^3 = 1.7x) instead of 8 halve the time.
    orb = cv2.ORB_create(nfeatures=n, nlevels=4)
    grey = img.convert("L")
    out = []
    for view in (grey, ImageOps.mirror(grey)):
        found, descriptors = orb.detectAndCompute(np.asarray(view), None)
        if descriptors is None:
            out += [np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)]
        else:
            out += [np.float32([p.pt for p in found]), descriptors]
    return Keypoints(*out, size=img.size)


def inlier_count(a: Keypoints, b: Keypoints) -> int:
    """Largest number of ORB matches consistent with one affine map, b or mirrored b."""
    return max(
        _affine_inliers(a, b.xy, b.descriptors),
        _affine_inliers(a, b.mirror_xy, b.mirror_descriptors),
    )


def _affine_inliers(a: Keypoints, xy_b, desc_b) -> int:
    import cv2

    xy_a, desc_a = a.xy, a.descriptors
    if len(desc_a) < 3 or len(desc_b) < 3:
        return 0
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(desc_a, desc_b, k=2)
    good = [m[0] for m in pairs if len(m) == 2 and m[0].distance < _LOWE_RATIO * m[1].distance]
    if len(good) < 3:
        return 0
    src = np.float32([xy_a[m.queryIdx] for m in good])
    dst = np.float32([xy_b[m.trainIdx] for m in good])
    # Seeded so that the same pair always verifies the same way.
    cv2.setRNGSeed(0)
    radius = max(2.0, _REPROJECTION_FRACTION * a.diagonal)
    _, inliers = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=radius)
    return 0 if inliers is None else int(inliers.sum())
