"""Near-duplicate edits of a photo, one function per family, with randomised parameters.

Each family takes an RGB image and a ``numpy.random.Generator`` and returns a new RGB image;
parameters are drawn from ranges that shops and their tools actually produce (thumbnails,
heavy recompression, crops, exposure edits, mirrored or sideways uploads, borders, logos).
Used to build the labelled sets of ``bench/grouping.py``; Pillow and numpy only.
:mod:`photogroup.variants` keeps its fixed edits for the seeded sample batches.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

Transform = Callable[[Image.Image, np.random.Generator], Image.Image]

#: Rows (as fractions of the height) that a watermark's text stays within.
WATERMARK_BAND = (0.55, 0.95)
_WATERMARK_TEXTS = ("© Shop", "SAMPLE", "shop.example", "© 2026 Shop", "not for resale")


def _sign(rng: np.random.Generator) -> int:
    return 1 if rng.random() < 0.5 else -1


def _away_from_one(rng: np.random.Generator, low: float, high: float) -> float:
    """A factor in [low, high] or its reciprocal: as often darker as brighter."""
    factor = float(rng.uniform(low, high))
    return factor if rng.random() < 0.5 else 1.0 / factor


def _fill_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """Border colours seen on shop photos: mostly white or black, sometimes a brand colour."""
    pick = rng.random()
    if pick < 0.4:
        return (255, 255, 255)
    if pick < 0.7:
        return (0, 0, 0)
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def resize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Scale by 0.3-0.8 with one of the usual filters (a thumbnail or a web copy)."""
    scale = rng.uniform(0.3, 0.8)
    filters = (Image.Resampling.LANCZOS, Image.Resampling.BICUBIC, Image.Resampling.BILINEAR)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, filters[int(rng.integers(len(filters)))])


def jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Re-encode as JPEG at quality 15-40 (blocking, ringing, chroma loss)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(rng.integers(15, 41)))
    with Image.open(io.BytesIO(buf.getvalue())) as out:
        return out.convert("RGB")


def crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Cut 5-15 % off each side independently."""
    left, top, right, bottom = rng.uniform(0.05, 0.15, 4)
    w, h = img.size
    box = (round(w * left), round(h * top), w - round(w * right), h - round(h * bottom))
    return img.crop(box)


def tone(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast or gamma by a factor of 1.2-1.5 either way."""
    kind = int(rng.integers(3))
    if kind == 0:
        return ImageEnhance.Brightness(img).enhance(_away_from_one(rng, 1.2, 1.5))
    if kind == 1:
        return ImageEnhance.Contrast(img).enhance(_away_from_one(rng, 1.2, 1.5))
    gamma = _away_from_one(rng, 1.3, 1.8)
    lut = [round(255 * (v / 255) ** gamma) for v in range(256)]
    return img.point(lut * 3)


def saturation(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Desaturate to 0-50 % (a washed-out or nearly grey edit)."""
    return ImageEnhance.Color(img).enhance(float(rng.uniform(0.0, 0.5)))


def grayscale(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Grey (ITU-R 601 luma), stored as RGB."""
    return ImageOps.grayscale(img).convert("RGB")


def tint(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Warm or cool colour cast: red and blue gains moved 8-20 % in opposite directions."""
    shift = rng.uniform(0.08, 0.2) * _sign(rng)
    gains = np.array([1 + shift, 1.0, 1 - shift])
    out = np.asarray(img.convert("RGB"), dtype=np.float32) * gains
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


def hflip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.mirror(img)


def vflip(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.flip(img)


def rot90(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A quarter turn counter-clockwise (a sideways upload)."""
    return img.transpose(Image.Transpose.ROTATE_90)


def rot180(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.transpose(Image.Transpose.ROTATE_180)


def rot270(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.transpose(Image.Transpose.ROTATE_270)


def small_rotation(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Turn 3-7 degrees either way; the canvas grows and the corners get a fill colour."""
    angle = float(rng.uniform(3.0, 7.0)) * _sign(rng)
    return img.rotate(
        angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=_fill_colour(rng)
    )


def pad(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A uniform border 8-25 % of the long side wide on every side."""
    border = max(1, round(max(img.size) * rng.uniform(0.08, 0.25)))
    return ImageOps.expand(img, border=border, fill=_fill_colour(rng))


def letterbox(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Centre on a canvas 1.3-1.8x wider (pillarbox) or taller (letterbox) than the photo."""
    w, h = img.size
    grow = rng.uniform(1.3, 1.8)
    size = (round(w * grow), h) if rng.random() < 0.5 else (w, round(h * grow))
    canvas = Image.new("RGB", size, _fill_colour(rng))
    canvas.paste(img, ((size[0] - w) // 2, (size[1] - h) // 2))
    return canvas


def watermark(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Semi-opaque text 6-12 % of the height tall, inside :data:`WATERMARK_BAND`."""
    w, h = img.size
    text = _WATERMARK_TEXTS[int(rng.integers(len(_WATERMARK_TEXTS)))]
    size = max(8, round(h * rng.uniform(0.06, 0.12)))
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    while right - left > 0.9 * w and size > 8:  # shrink until it fits the width
        size = max(8, int(size * 0.85))
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = font.getbbox(text)
    band_top, band_bottom = round(h * WATERMARK_BAND[0]), round(h * WATERMARK_BAND[1])
    y = rng.integers(band_top - top, max(band_top - top, band_bottom - bottom) + 1)
    x = rng.integers(-left, max(-left, w - right) + 1)
    colour = (255, 255, 255) if rng.random() < 0.6 else (0, 0, 0)
    overlay = Image.new("RGBA", img.size, (*colour, 0))
    ImageDraw.Draw(overlay).text(
        (int(x), int(y)), text, font=font, fill=(*colour, int(rng.integers(140, 231)))
    )
    return Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB")


def blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur, radius 1-2.5 px per 512 px of the long side (out of focus, resampled)."""
    radius = rng.uniform(1.0, 2.5) * max(img.size) / 512
    return img.filter(ImageFilter.GaussianBlur(radius))


def noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Additive Gaussian sensor noise, sigma 6-16 grey levels, independent per channel."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    noisy = arr + rng.normal(0.0, rng.uniform(6.0, 16.0), arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8))


def stretch(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Change the aspect ratio by 0.7-0.9 or 1.1-1.4 (width only: a careless resize)."""
    factor = rng.uniform(1.1, 1.4) if rng.random() < 0.5 else rng.uniform(0.7, 0.9)
    return img.resize((max(1, round(img.width * factor)), img.height), Image.Resampling.BICUBIC)


#: The single-edit families, in the order :func:`variants` cycles through them.
SINGLE: dict[str, Transform] = {
    "resize": resize,
    "jpeg": jpeg,
    "crop": crop,
    "tone": tone,
    "saturation": saturation,
    "grayscale": grayscale,
    "tint": tint,
    "hflip": hflip,
    "vflip": vflip,
    "rot90": rot90,
    "rot180": rot180,
    "rot270": rot270,
    "small_rotation": small_rotation,
    "pad": pad,
    "letterbox": letterbox,
    "watermark": watermark,
    "blur": blur,
    "noise": noise,
    "stretch": stretch,
}


def pair(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Two different single families, applied one after the other."""
    first, second = rng.choice(list(SINGLE), size=2, replace=False)
    return SINGLE[str(second)](SINGLE[str(first)](img, rng), rng)


#: Every family by name, ``pair`` included.
FAMILIES: dict[str, Transform] = {**SINGLE, "pair": pair}


def variants(
    img: Image.Image, rng: np.random.Generator, per_photo: int = 11, start: int = 0
) -> list[tuple[str, Image.Image]]:
    """``per_photo`` edited copies, families taken round-robin from position ``start``.

    Passing ``start = k * per_photo`` for the k-th photo of a set spreads the families
    evenly over the set; ``per_photo >= len(FAMILIES)`` covers every family in one call.
    """
    names = list(FAMILIES)
    rgb = img.convert("RGB")
    chosen = (names[(start + k) % len(names)] for k in range(per_photo))
    return [(name, FAMILIES[name](rgb, rng)) for name in chosen]
