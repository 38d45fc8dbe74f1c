"""A labelled background-removal set: a real cut-out pasted on known backgrounds.

The product is matplotlib's ``Minduka_Present_Blue_Pack.png`` (part of the ``bench``
extra): a 128 px rendered gift box (clip-art, not a photo: clean shading, a silver ribbon)
with a real alpha channel, pasted at three scales (200-300 px) and seeded positions on
plain, gradient and textured backgrounds. Its resized alpha, thresholded at 128, is the true
mask, so its faint drop shadow counts as background. Each composite gets mild sensor-like
noise. Everything is seeded: the same call gives the same images.

Kinds: ``plain`` (white, light grey, near-black, beige, and a steel blue close to the box's
colour), ``gradient`` (a studio sweep, a warm diagonal, a vignette with quadratic light
falloff, a two-colour wash), ``textured`` (blotchy noise, fabric-like stripes, and
scikit-image's brick, grass and gravel photos, tinted).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

PRODUCT = "Minduka_Present_Blue_Pack.png"
#: Canvas sizes (width, height) and product long sides in px, paired per placement.
PLACEMENTS = (((480, 360), 200), ((400, 400), 280), ((480, 360), 300))
#: Sigma of the Gaussian noise added to every composite (8-bit levels).
NOISE = 2.0
#: Smallest gap, in px, between the product's box and the frame.
MARGIN = 16
KINDS = ("plain", "gradient", "textured")

Composite = tuple[str, str, Image.Image, Image.Image]  # name, kind, RGB image, "L" mask


def product() -> Image.Image:
    """The RGBA product photo; fails loudly if its alpha channel is missing or trivial."""
    from matplotlib.cbook import get_sample_data  # bench extra

    with Image.open(get_sample_data(PRODUCT, asfileobj=False)) as img:
        rgba = img.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    if not (alpha < 128).any() or not (alpha >= 128).any():
        raise ValueError(f"{PRODUCT} has no meaningful alpha channel")
    return rgba


def composites(seed: int = 0) -> list[Composite]:
    """Every background with every placement: ``(name, kind, rgb_image, true_mask)``."""
    rng = np.random.default_rng(seed)
    item = product()
    out: list[Composite] = []
    for kind, name, make in backgrounds():
        for index, (canvas, long_side) in enumerate(PLACEMENTS):
            background = make(canvas, np.random.default_rng(rng.integers(2**32)))
            image, mask = paste(item, background, long_side, rng)
            out.append((f"{kind}-{name}-{index}", kind, image, mask))
    return out


def paste(
    item: Image.Image,
    background: Image.Image,
    long_side: int,
    rng: np.random.Generator,
    position: tuple[int, int] | None = None,
) -> tuple[Image.Image, Image.Image]:
    """``item`` resized to ``long_side`` with its top-left corner at ``position``, or at a
    random place at least ``MARGIN`` from the frame; noise added. Returns (image, mask)."""
    scale = long_side / max(item.size)
    resized = item.resize(
        (round(item.width * scale), round(item.height * scale)), Image.Resampling.LANCZOS
    )
    width, height = background.size
    if position is None:
        x = int(rng.integers(MARGIN, max(MARGIN, width - resized.width - MARGIN) + 1))
        y = int(rng.integers(MARGIN, max(MARGIN, height - resized.height - MARGIN) + 1))
    else:
        x, y = position
    layer = Image.new("RGBA", background.size, (0, 0, 0, 0))
    layer.paste(resized, (x, y))
    image = Image.alpha_composite(background.convert("RGBA"), layer).convert("RGB")
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, NOISE, (height, width, 3))
    image = Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))
    mask = Image.fromarray(
        np.where(np.asarray(layer.getchannel("A")) >= 128, 255, 0).astype(np.uint8)
    )
    return image, mask


Maker = Callable[[tuple[int, int], np.random.Generator], Image.Image]


def backgrounds() -> list[tuple[str, str, Maker]]:
    """``(kind, name, make)`` per backdrop; ``make(size, rng)`` draws an RGB backdrop."""

    def plain(colour: tuple[int, int, int]) -> Maker:
        return lambda size, _rng: Image.new("RGB", size, colour)

    return [
        ("plain", "white", plain((248, 248, 246))),
        ("plain", "grey", plain((196, 198, 200))),
        ("plain", "black", plain((24, 24, 28))),
        ("plain", "beige", plain((232, 216, 190))),
        ("plain", "steelblue", plain((112, 150, 190))),  # close-ish to the box's blue
        ("gradient", "sweep", _gradient((250, 250, 250), (170, 172, 176), "vertical")),
        ("gradient", "warm", _gradient((255, 242, 222), (176, 160, 140), "diagonal")),
        ("gradient", "vignette", _gradient((240, 240, 240), (120, 120, 125), "radial")),
        ("gradient", "wash", _gradient((250, 205, 215), (200, 225, 250), "horizontal")),
        ("textured", "noise", _noise),
        ("textured", "fabric", _fabric),
        ("textured", "brick", _skimage_texture("brick", (1.0, 0.78, 0.66))),
        ("textured", "grass", _skimage_texture("grass", (0.85, 1.0, 0.7))),
        ("textured", "gravel", _skimage_texture("gravel", (1.0, 0.97, 0.92))),
    ]


def _gradient(start: tuple[int, ...], end: tuple[int, ...], shape: str) -> Maker:
    def make(size: tuple[int, int], _rng: np.random.Generator) -> Image.Image:
        width, height = size
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        x, y = x / max(width - 1, 1), y / max(height - 1, 1)
        t = {
            "vertical": y,
            "horizontal": x,
            "diagonal": (x + y) / 2,
            "radial": np.clip(np.hypot(x - 0.5, y - 0.45) / 0.7, 0, 1) ** 2,  # light falloff
        }[shape]
        a, b = np.array(start, np.float32), np.array(end, np.float32)
        return Image.fromarray((a + (b - a) * t[..., None] + 0.5).astype(np.uint8))

    return make


def _noise(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    # Blotchy grey noise: white noise blurred a little, like a speckled paper backdrop.
    width, height = size
    base = rng.normal(0.0, 1.0, (height // 2 + 1, width // 2 + 1)).astype(np.float32)
    grey = Image.fromarray(np.clip(170 + 22 * base, 0, 255).astype(np.uint8))
    grey = grey.resize((width, height), Image.Resampling.BILINEAR)
    return Image.merge("RGB", (grey, grey, grey))


def _fabric(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    # A woven cloth: fine warp and weft sine stripes, a coarser stripe pattern, thread noise.
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    weave = 0.5 * np.sin(x * 1.3) * np.sin(y * 1.3)
    stripes = np.where(((x + 0.3 * y) // 14) % 3 == 0, 1.0, 0.0)
    level = 18 * weave - 30 * stripes + rng.normal(0.0, 6.0, (height, width))
    colour = np.array([205, 190, 165], np.float32)
    return Image.fromarray(np.clip(colour + level[..., None], 0, 255).astype(np.uint8))


def _skimage_texture(name: str, tint: tuple[float, float, float]) -> Maker:
    def make(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
        import skimage.data  # deferred: only the benchmark and tests need it

        grey = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        width, height = size
        # A random crop when the texture is big enough, else the whole texture resized.
        th, tw = grey.shape
        if tw >= width and th >= height:
            x = int(rng.integers(0, tw - width + 1))
            y = int(rng.integers(0, th - height + 1))
            grey = grey[y : y + height, x : x + width]
        else:
            grey = np.asarray(Image.fromarray(grey).resize((width, height)), dtype=np.float32)
        rgb = grey[..., None] * np.array(tint, np.float32)
        return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))

    return make
