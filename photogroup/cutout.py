"""Offline background removal ("cut-out") for product photos.

Method (:func:`foreground_mask`), on a working copy of at most ``WORK_SIZE`` px a side:

1. Background model from a border band (5% of the short side): a robust quadratic surface
   per Lab channel, fitted to the band, predicts the backdrop's colour everywhere, so plain
   backdrops, studio sweeps and vignettes are all "flat" for it. When the band strays far
   from any smooth surface (a textured backdrop), a pixel also counts as backdrop if it is
   near the band's k-means palette, taken per side. Spread and palette come from the band's
   sides so that a product crossing up to two of them does not become "backdrop".
2. OpenCV GrabCut seeded from that, on the pixels around the seeds only: pixels far from
   the backdrop model (beyond the band's own spread) are probable foreground, the rest
   probable background, a thin outer frame sure background except where the product
   crosses it. GrabCut's colour models and edge term settle the boundary.
3. Clean-up: specks removed, components under a tenth of the largest dropped (several
   products in one photo survive), holes under 1% of the image filled (larger ones, such as
   a handle's gap, stay), then seed pixels inside the mask's convex hull added back: GrabCut's
   colour models are global and drop product parts that share a colour with some backdrop
   pixel (a silver ribbon on a white-to-grey sweep), though unlike the backdrop right there.
4. The mask is upscaled and feathered by a guided filter on the full-size grey image, so the
   soft edge follows the photo's edges rather than the working copy's pixels.

Conventions: 255 is product, 0 background. When nothing stands out from the border's
backdrop model (a uniform image, a bare backdrop, a 1x1 image) the mask is all zero, never
all 255. Under ``MIN_SIDE`` px (working copy) the seeds are the mask, without GrabCut. Any
mode is converted to RGB first (CMYK, L, 16-bit; 16-bit is clipped by Pillow: decode it
with :mod:`photogroup.decode` first). An input with a meaningful alpha channel (some pixels
under 128 and some at or over it) is already a cut-out: its alpha is returned as the mask;
an all-opaque or all-transparent alpha is ignored. Deterministic: cv2's RNG is seeded
before k-means and GrabCut.

Where it fails (IoU on ``bench/cutout_quality.py``'s composites in parentheses, against
about 0.93-0.97 on most backdrops): product parts the colour and brightness of the backdrop
right there are lost (the silver bow on the light top of a sweep or vignette: 0.82-0.89;
white packaging on white would lose more); soft cast shadows are mostly kept as product
(the main error on plain backdrops); a product crossing two sides at a corner loses or
leaks a little (0.80 on white, 0.84 on gravel), one crossing three or four sides much more;
busy, high-contrast backdrops whose colours include the product's leak into it or swallow
it; a backdrop colour seen on only one or two sides (a strip of floor along the bottom
edge) counts as product; a large enclosed region of backdrop colour inside a product (a cup
of coffee on a brown table) is not filled; of several products, one under a tenth of the
largest one's area is dropped.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

#: Long side, in px, of the copy GrabCut runs on (cost grows with the pixel count).
WORK_SIZE = 320
#: Below this short side (working copy) GrabCut has too few pixels: the seeds are the mask.
MIN_SIDE = 16
#: Width of the band the background model is fitted to, as a fraction of the short side.
BAND = 0.05
#: Width of the sure-background frame, in working px: thin, so a product touching the
#: frame loses only that much.
FRAME = 2
GRABCUT_ITERATIONS = 5
#: Backdrop kept around the seeds' box for GrabCut, as a fraction of the long side.
CROP_MARGIN = 0.08
#: Lab distance from the background surface under which nothing counts as foreground
#: (sensor noise and JPEG blocking stay below it). Lab is OpenCV's 8-bit one: L is 0-255.
MIN_CONTRAST = 12.0
#: Foreground seeds need this many times the band's spread (see ``_spread``).
SEED_FACTOR = 1.25
#: Band spread (Lab distance from the surface) above which the backdrop is textured.
TEXTURE_SPREAD = 25.0
#: Colours in each band side's palette, for textured backdrops.
PALETTE = 8
#: Components under this fraction of the largest one are dropped.
KEEP_FRACTION = 0.1
#: Holes under this fraction of the image area are filled.
HOLE_FRACTION = 0.01


def foreground_mask(image: Image.Image) -> Image.Image:
    """An "L" mask of ``image``'s product: 255 product, 0 background, soft edges.

    Same size as ``image``. See the module docstring for the method and its conventions.
    """
    alpha = _meaningful_alpha(image)
    if alpha is not None:
        return alpha
    rgb = image.convert("RGB")
    if min(rgb.size) == 0:
        return Image.new("L", rgb.size, 0)
    work = rgb
    if max(rgb.size) > WORK_SIZE:
        work = rgb.copy()
        work.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    hard = _work_mask(np.asarray(work))
    if not hard.any():
        return Image.new("L", rgb.size, 0)
    return Image.fromarray(_feather(hard, np.asarray(rgb.convert("L"))))


def apply_mask(image: Image.Image, mask: Image.Image, *, clear: bool = False) -> Image.Image:
    """RGBA cut-out: ``image``'s colours with ``mask`` as alpha. ``clear`` blacks out the
    colour of fully transparent pixels: nobody sees it, and a PNG of the cut-out then
    compresses about 3x smaller in a quarter of the time (a 1024 px product photo)."""
    if mask.size != image.size:
        raise ValueError(f"mask size {mask.size} differs from image size {image.size}")
    alpha = mask.convert("L")
    if clear:
        black = Image.new("RGB", image.size)
        visible = alpha.point(lambda v: 255 if v else 0)
        cutout = Image.composite(image.convert("RGB"), black, visible).convert("RGBA")
    else:
        cutout = image.convert("RGB").convert("RGBA")
    cutout.putalpha(alpha)
    return cutout


#: libpng through OpenCV at zlib level 1, each row filtered by the row above: 16 real
#: cut-outs of 1024 px phone renditions took 18 ms each where Pillow's PNG (adaptive
#: filters, level 1) took 39, at the same size (763 vs 765 kB; deflating as runs instead
#: was 2 ms faster for 14 % more bytes); a mask 1.6 ms instead of 4.2.
_PNG_PARAMS = [
    *(cv2.IMWRITE_PNG_COMPRESSION, 1),
    *(cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP),
]
_TO_BGR = {"RGB": cv2.COLOR_RGB2BGR, "RGBA": cv2.COLOR_RGBA2BGRA}


def encode_png(image: Image.Image) -> bytes:
    """A cut-out ("RGBA"), a mask ("L") or an "RGB" image as a PNG, fast (see above)."""
    if image.mode not in ("L", *_TO_BGR):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    pixels = np.asarray(image)
    if image.mode in _TO_BGR:  # OpenCV writes BGR(A)
        pixels = cv2.cvtColor(pixels, _TO_BGR[image.mode])
    ok, data = cv2.imencode(".png", pixels, _PNG_PARAMS)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.mode} {image.size} image as PNG")
    return data.tobytes()


def foreground_fraction(mask: Image.Image | np.ndarray) -> float:
    """Mean of ``mask`` / 255: the product's share of the frame, 0..1."""
    values = np.asarray(mask, dtype=np.float64)
    return float(values.mean() / 255.0) if values.size else 0.0


def checkerboard_preview(cutout: Image.Image, size: int = 160) -> Image.Image:
    """``cutout`` over a grey checkerboard, RGB, long side ``size`` (transparency shows)."""
    rgba = cutout.convert("RGBA")
    scale = size / max(rgba.size)
    dims = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
    rgba = rgba.resize(dims, Image.Resampling.LANCZOS, reducing_gap=2.0)
    square = max(4, size // 20)
    y, x = np.indices((dims[1], dims[0]))
    board = np.where((x // square + y // square) % 2 == 0, 204, 153).astype(np.uint8)
    background = Image.fromarray(board).convert("RGBA")
    return Image.alpha_composite(background, rgba).convert("RGB")


def mask_iou(
    a: Image.Image | np.ndarray, b: Image.Image | np.ndarray, threshold: int = 128
) -> float:
    """Intersection over union of two masks binarised at ``threshold``; 1.0 if both empty."""
    fa, fb = np.asarray(a) >= threshold, np.asarray(b) >= threshold
    if fa.shape != fb.shape:
        raise ValueError(f"mask shapes differ: {fa.shape} and {fb.shape}")
    union = np.logical_or(fa, fb).sum()
    return float(np.logical_and(fa, fb).sum() / union) if union else 1.0


def _meaningful_alpha(image: Image.Image) -> Image.Image | None:
    """The alpha channel if it already separates product from background, else None."""
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and not (
        image.mode == "P" and "transparency" in image.info
    ):
        return None
    alpha = image.convert("RGBA").getchannel("A")
    low, high = alpha.getextrema()
    # All opaque (or all transparent) says nothing about where the product is.
    return alpha if low < 128 <= high else None


def _work_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean product mask of the working copy (``rgb`` is ``h x w x 3`` uint8)."""
    height, width = rgb.shape[:2]
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    band = max(1, round(BAND * min(height, width)))
    sides = [np.zeros((height, width), bool) for _ in range(4)]
    sides[0][:band], sides[1][-band:], sides[2][:, :band], sides[3][:, -band:] = (True,) * 4
    border = sides[0] | sides[1] | sides[2] | sides[3]
    distance = _background_distance(lab, border)
    spread = _spread(distance, sides)
    if spread > TEXTURE_SPREAD:
        # A textured backdrop: no smooth surface explains it, its palette does.
        distance = np.minimum(distance, _palette_distance(lab, sides))
        spread = _spread(distance, sides)
    limit = max(MIN_CONTRAST, SEED_FACTOR * spread)
    seeds = distance > limit
    if not seeds[~border].any():
        return np.zeros_like(seeds)  # nothing stands out from the border: all background
    if min(height, width) < MIN_SIDE:
        return seeds

    # GrabCut's cost is per pixel: run it on the seeds' box with a margin of backdrop only.
    rows, cols = np.flatnonzero(seeds.any(axis=1)), np.flatnonzero(seeds.any(axis=0))
    pad = max(FRAME + 1, round(CROP_MARGIN * max(height, width)))
    top, bottom = max(0, rows[0] - pad), min(height, rows[-1] + 1 + pad)
    left, right = max(0, cols[0] - pad), min(width, cols[-1] + 1 + pad)
    crop = np.where(seeds[top:bottom, left:right], cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    # The frame is sure background except where the product reaches it: GrabCut's
    # background model must not learn the product's colours there.
    sure = np.zeros(crop.shape, bool)
    frame = min(FRAME, band)
    sure[:frame], sure[-frame:], sure[:, :frame], sure[:, -frame:] = (True,) * 4
    crop[sure & (crop == cv2.GC_PR_BGD)] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means initialisation draws from it
    bgr = np.ascontiguousarray(rgb[top:bottom, left:right, ::-1])
    cv2.grabCut(bgr, crop, None, bgd, fgd, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    labels = np.full((height, width), cv2.GC_BGD, np.uint8)
    labels[top:bottom, left:right] = crop
    mask = _clean((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))
    # GrabCut's colour models are global: product parts the colour of some backdrop pixel
    # (a silver ribbon on a white sweep) are lost, though unlike the backdrop right there.
    # Seeds inside the product's convex hull are put back (outside it they would grow it).
    return _clean(mask | (seeds & _convex_hull(mask))) if mask.any() else mask


def _spread(distance: np.ndarray, sides: list[np.ndarray]) -> float:
    """How far backdrop pixels stray from the model: the second-lowest of the four band
    sides' 99th-percentile distances, so a product crossing up to two sides is ignored."""
    return sorted(float(np.percentile(distance[side], 99)) for side in sides)[1]


def _background_distance(lab: np.ndarray, border: np.ndarray) -> np.ndarray:
    """Lab distance of every pixel from a quadratic surface fitted to the border pixels.

    Iteratively refitted without the worst band pixels, so a product that reaches into
    the band, or a few dark bricks, do not drag the surface.
    """
    height, width = lab.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x, y = 2 * x / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1
    design = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)
    a, values = design[border], lab[border]
    keep = np.ones(len(a), bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(a[keep], values[keep], rcond=None)
        residual = np.linalg.norm(values - a @ coef, axis=1)
        keep = residual <= max(np.percentile(residual, 80), 1e-6)
    surface = design.reshape(-1, 6) @ coef
    return np.linalg.norm(lab.reshape(-1, 3) - surface, axis=1).reshape(height, width)


def _palette_distance(lab: np.ndarray, sides: list[np.ndarray]) -> np.ndarray:
    """Lab distance of every pixel from the backdrop's colours: the distance to the nearest
    of each band side's ``PALETTE`` k-means colours, third-lowest over the four sides, so a
    backdrop colour must occur on three sides (a product crossing two is not backdrop)."""
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    pixels = lab.reshape(-1, 1, 3)
    per_side = []
    for side in sides:
        samples = lab[side]
        cv2.setRNGSeed(0)
        _, _, centres = cv2.kmeans(
            samples, min(PALETTE, len(samples)), None, criteria, 2, cv2.KMEANS_PP_CENTERS
        )
        per_side.append(np.sqrt(((pixels - centres[None]) ** 2).sum(axis=2)).min(axis=1))
    return np.sort(np.stack(per_side), axis=0)[2].reshape(lab.shape[:2])


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """The filled convex hull of a boolean mask's pixels."""
    points = cv2.findNonZero(mask.astype(np.uint8))
    hull = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(points), 1)
    return hull.astype(bool)


def _clean(mask: np.ndarray) -> np.ndarray:
    """Drop specks and small components, fill small holes."""
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
    labelled, count = ndimage.label(mask)
    if count == 0:
        return mask
    areas = np.bincount(labelled.ravel())[1:]
    keep = np.flatnonzero(areas >= KEEP_FRACTION * areas.max()) + 1
    mask = np.isin(labelled, keep)
    holes, count = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)
    if count:
        hole_areas = np.bincount(holes.ravel())
        small = np.flatnonzero(hole_areas < HOLE_FRACTION * mask.size)
        mask |= np.isin(holes, small[small > 0])
    return mask


def _feather(hard: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Upscale a working-size boolean mask to ``grey``'s size with an edge-aware soft edge."""
    height, width = grey.shape
    soft = cv2.resize(hard.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    radius = max(1, round(1.5 * width / hard.shape[1]))
    soft = _guided_filter(grey.astype(np.float32) / 255.0, soft, radius, 1e-3)
    return np.clip(soft * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (grey guide): smooths ``src`` but keeps ``guide``'s edges."""
    size = (2 * radius + 1, 2 * radius + 1)

    def mean(values: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(values, cv2.CV_32F, size, borderType=cv2.BORDER_REFLECT)

    mean_g, mean_s = mean(guide), mean(src)
    var_g = mean(guide * guide) - mean_g * mean_g
    a = (mean(guide * src) - mean_g * mean_s) / (var_g + eps)
    b = mean_s - a * mean_g
    return mean(a) * guide + mean(b)
