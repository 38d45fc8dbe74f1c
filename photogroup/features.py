"""Perceptual features of one normalised image.

Besides imagehash's five hashes, :func:`dihedral_phash` gives the pHash of each of the
8 flips/90-degree rotations of the border-trimmed image, so that comparing an image's
identity hash with another's eight (min Hamming distance) is invariant to those edits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import imagehash
import numpy as np
import scipy.fftpack
from PIL import Image, ImageChops, ImageStat

from photogroup.chunks import worker_threads
from photogroup.verify import Keypoints, orb_keypoints
from photogroup.views import surface_keypoints

#: Per-channel difference from the corner colour below which a border pixel is "uniform".
BORDER_TOLERANCE = 16
#: Trim only if what remains keeps at least this fraction of each side (guards blank images).
MIN_TRIMMED_FRACTION = 0.2
PALETTE_SIZE = 5
#: Side of the thumbnail the hashes and colours are computed from.
THUMBNAIL = 128


@dataclass(frozen=True)
class ImageFeatures:
    """Hashes are 64-bit hex strings; colours are ``#rrggbb``; sharpness is a variance."""

    average_hash: str
    phash: str
    dhash: str
    whash: str
    colorhash: str
    phash_d4: tuple[str, ...]  # pHash of the 8 dihedral transforms; [0] is the identity
    dominant_colors: tuple[str, ...]  # most frequent first
    dominant_fractions: tuple[float, ...]  # share of pixels, same order, sums to ~1
    mean_color: str
    sharpness: float  # variance of the 4-neighbour Laplacian of the grey working copy
    work_width: int
    work_height: int
    keypoints: str = ""  # base64 of photogroup.verify.Keypoints.to_bytes(), for verification


def compute_features(img: Image.Image, keypoints: bool = True) -> ImageFeatures:
    """All features of an RGB working copy (see :mod:`photogroup.decode`).

    Hashes and colours look at a few dozen pixels a side, so they are computed from shared
    thumbnails (``THUMBNAIL`` px, half that for wavelets and colours) rather than each from
    the working copy: about 5x less time for the same hashes up to a bit or two. Sharpness
    and keypoints need detail and use the working copy. ``keypoints=False`` skips the ORB
    keypoints (then grouping falls back to hash and embedding rules).
    """
    small = thumbnail(img)
    tiny = thumbnail(small, THUMBNAIL // 2)  # wavelets and colour statistics need even less
    palette, fractions = dominant_colors(tiny)
    return ImageFeatures(
        average_hash=str(imagehash.average_hash(small)),
        phash=str(imagehash.phash(small)),
        dhash=str(imagehash.dhash(small)),
        whash=str(imagehash.whash(tiny)),
        colorhash=str(imagehash.colorhash(tiny)),
        phash_d4=dihedral_phash(thumbnail(trim_uniform_border(img))),
        dominant_colors=palette,
        dominant_fractions=fractions,
        mean_color=_hex(ImageStat.Stat(tiny).mean),
        sharpness=laplacian_variance(img),
        work_width=img.width,
        work_height=img.height,
        keypoints=local_features(img).to_base64() if keypoints else "",
    )


def local_features(img: Image.Image) -> Keypoints:
    """What verification needs of one working copy: ORB keypoints and thumbnails of the
    content box (same photo, :mod:`photogroup.verify`), SIFT keypoints of the content box
    with their colours (same product, :mod:`photogroup.views`)."""
    orb = orb_keypoints(img)
    xy, descriptors, lab = surface_keypoints(img, orb.box)
    return replace(orb, surface_xy=xy, surface_descriptors=descriptors, surface_lab=lab)


def feature_entries(images: Sequence[Image.Image], threads: int | None = None) -> list[dict]:
    """:func:`compute_features` of each image as a dict (a memo entry), on ``threads``
    (default: every core, or a pool worker's share of them).

    Pillow, NumPy and OpenCV release the GIL in resizes, DCTs and ORB: threads use the
    cores (1.7x on 2 cores). Module-level so that worker processes can run it.
    """
    threads = threads or worker_threads() or os.cpu_count() or 1
    if threads == 1:
        return [asdict(compute_features(img)) for img in images]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [asdict(features) for features in pool.map(compute_features, images)]


def thumbnail(img: Image.Image, size: int = THUMBNAIL) -> Image.Image:
    """RGB copy at most ``size`` px a side (box-filtered: averaging is what hashes want)."""
    small = img.convert("RGB")
    if max(small.size) > size:
        small = small.copy()
        small.thumbnail((size, size), Image.Resampling.BOX)
    return small


def trim_uniform_border(img: Image.Image, tolerance: int = BORDER_TOLERANCE) -> Image.Image:
    """Crop away padding or letterboxing of one uniform colour (that of the corners)."""
    rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    corners = np.stack([rgb[0, 0], rgb[0, -1], rgb[-1, 0], rgb[-1, -1]])
    colour = tuple(int(v) for v in np.median(corners, axis=0))
    diff = ImageChops.difference(img.convert("RGB"), Image.new("RGB", img.size, colour))
    mask = diff.convert("L").point(lambda v: 255 if v > tolerance else 0)
    box = mask.getbbox()
    if box is None:
        return img
    left, top, right, bottom = box
    if (right - left) < MIN_TRIMMED_FRACTION * img.width:
        return img
    if (bottom - top) < MIN_TRIMMED_FRACTION * img.height:
        return img
    return img.crop(box)


def dihedral_view(pixels: np.ndarray, index: int) -> np.ndarray:
    """Element ``index`` (0-7) of the dihedral group applied to an array: quarter turns
    0-3 (``np.rot90``), then the same followed by a left-right flip."""
    turned = np.rot90(pixels, index % 4)
    return np.ascontiguousarray(np.fliplr(turned) if index >= 4 else turned)


def dihedral_phash(img: Image.Image, hash_size: int = 8, highfreq_factor: int = 4) -> tuple:
    """pHash (Zauner 2010, as imagehash.phash) of the 8 elements of the dihedral group D4.

    The grey 32 x 32 thumbnail is computed once and permuted. Element 0 is the identity
    and equals ``imagehash.phash(img)``. For a flipped or half-turned copy the set of
    eight is identical; for a quarter-turned one, Pillow's 8-bit resampling rounds
    differently, so one or two bits may differ (well inside the grouping thresholds).
    """
    size = hash_size * highfreq_factor
    pixels = np.asarray(img.convert("L").resize((size, size), Image.Resampling.LANCZOS))
    return tuple(_phash_hex(dihedral_view(pixels, k), hash_size) for k in range(8))


def _phash_hex(pixels: np.ndarray, hash_size: int) -> str:
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels.astype(np.float64), axis=0), axis=1)
    low = dct[:hash_size, :hash_size]
    return str(imagehash.ImageHash(low > np.median(low)))


def dominant_colors(img: Image.Image, k: int = PALETTE_SIZE) -> tuple[tuple, tuple]:
    """Median-cut palette of ``k`` colours with the share of pixels each one covers."""
    small = img.convert("RGB")
    small.thumbnail((128, 128))
    quantised = small.quantize(colors=k, method=Image.Quantize.MEDIANCUT)
    palette = quantised.getpalette() or []
    counts = sorted(quantised.getcolors(k) or [], reverse=True)
    total = sum(count for count, _ in counts) or 1
    colours = tuple(_hex(palette[3 * idx : 3 * idx + 3]) for _, idx in counts)
    return colours, tuple(round(count / total, 4) for count, _ in counts)


def laplacian_variance(img: Image.Image) -> float:
    """Focus measure (Pech-Pacheco et al. 2000): higher is sharper; 0 for a flat image."""
    grey = np.asarray(img.convert("L"), dtype=np.float64)
    if min(grey.shape) < 3:
        return 0.0
    lap = (
        -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    )
    return float(lap.var())


def hamming_d4(a_identity: str, b_d4: tuple[str, ...] | list[str]) -> int:
    """Min Hamming distance between one image's identity pHash and another's eight."""
    a = int(a_identity, 16)
    return min(bin(a ^ int(h, 16)).count("1") for h in b_d4)


def _hex(rgb) -> str:
    r, g, b = (round(float(c)) for c in list(rgb)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"
