"""Offline renderer of labelled product photos: printed boxes and labelled cylinders.

A :class:`Product` is a shape (a cuboid, or stacked cylinders: can, bottle, jar) plus a
seeded :class:`Design` (colours, brand and flavour words, an illustration that is a crop of a
real photo or procedural shapes, fine print, a barcode). :func:`render` ray-casts it with a
pinhole camera in numpy (2x supersampled), shades it with one key light, drops a soft shadow
on a studio background and returns the image and the exact coverage mask. :func:`make_variant`
makes another SKU of the same product line (colour, flavour or artwork changed), the hard
negatives of product grouping. Everything is a pure function of its seeds.

Imports only stdlib, numpy, Pillow, OpenCV and ``photos`` (beside it), so it loads both as
``bench.render_products`` and as ``render_products`` from a bench script.
"""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

try:  # imported as bench.render_products
    from bench import photos
except ImportError:  # run from a bench script, bench/ on sys.path
    import photos  # type: ignore[no-redef]

RGB = tuple[int, int, int]
BACKGROUNDS = ("white", "grey_sweep", "paper", "blurred_photo")
VARIANT_KINDS = ("colour", "flavour", "artwork")
SUPERSAMPLE = 2
FOV_DEG = 30.0  # vertical field of view
#: Key light in camera terms: from the left, above and a little in front.
LIGHT_CAMERA = (-0.55, 0.45, 0.9)  # (right, toward camera, world up)
AMBIENT, DIFFUSE = 0.42, 0.62
_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
_SYLLABLES = (
    "ka", "lo", "mi", "ra", "ven", "tor", "bel", "su", "na", "dri", "po", "ze", "lu", "mar",
    "qui", "sol", "ta", "vi", "ro", "fa", "nu", "cre", "ol", "ba", "ki", "do", "ex", "fin",
)  # fmt: skip
#: Flavour name -> fruit colour (the fruit drawn on the pack and the flavour band).
FLAVOURS: dict[str, RGB] = {
    "Mango": (252, 168, 28), "Lemon": (246, 222, 40), "Berry": (128, 36, 132),
    "Cherry": (196, 22, 44), "Lime": (118, 196, 40), "Orange": (248, 124, 20),
    "Apple": (150, 206, 58), "Plum": (104, 40, 92), "Peach": (250, 176, 128),
    "Cocoa": (112, 70, 40), "Mint": (96, 214, 166), "Blueberry": (58, 70, 168),
}  # fmt: skip
_CATEGORIES = {
    "box": ("Cereal", "Crunch", "Tea", "Cookies", "Granola", "Crackers"),
    "cylinder": ("Juice", "Soda", "Jam", "Tea", "Syrup", "Spread"),
}
_CLAIMS = ("NEW", "100% natural", "organic", "no added sugar", "family size", "gluten free")


# ---------------------------------------------------------------------------------------
# Products and designs


@dataclass(frozen=True)
class Design:
    """Everything printed on a pack. ``seed`` fixes the layout and fine print (kept by
    variants); ``art_seed`` the illustration and background pattern."""

    seed: int
    brand: str
    flavour: str
    category: str
    bg: RGB
    accent: RGB
    accent2: RGB
    illustration: str  # "photo:<photos name>", "circles", "stripes" or "blob"
    crop: tuple[float, float, float, float]  # fractions of the source photo
    art_seed: int
    pattern: str  # "stripes", "dots", "waves" or "plain"
    brand_font: str


@dataclass(frozen=True)
class Part:
    """One vertical cylinder of a round product; ``side`` is "label", "plain" or "metal"."""

    radius: float
    z0: float
    z1: float
    side: str
    top: str
    colour: RGB
    outside: str = "plain"  # material of a label part above and below its label


@dataclass(frozen=True)
class Product:
    name: str
    shape: str  # "box" or "cylinder"
    model: str  # "cereal", "tea", "cracker", "carton", "can", "bottle", "jar"
    dims: tuple[float, float, float]  # width, depth, height in cm (cylinders: 2r, 2r, h)
    design: Design
    parts: tuple[Part, ...] = ()  # cylinders, bottom to top
    label: tuple[float, float] = (0.0, 0.0)  # the label's z range on a cylinder

    @property
    def radius(self) -> float:
        """Bounding-sphere radius about the product's centre."""
        w, d, h = self.dims
        return 0.5 * math.sqrt(w * w + d * d + h * h)


@dataclass(frozen=True)
class View:
    """Camera around the product (degrees; ``distance`` in bounding radii; ``offset`` shifts
    the product in the frame as a fraction of the image size); ``spin_deg`` turns the product
    on its own vertical axis."""

    azimuth_deg: float = 0.0
    elevation_deg: float = 15.0
    distance: float = 4.3
    spin_deg: float = 0.0
    roll_deg: float = 0.0
    offset: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class Rendered:
    image: Image.Image  # RGB
    mask: np.ndarray  # float32 HxW coverage of the product in [0, 1], shadow excluded


def _hsv(h: float, s: float, v: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return (round(r * 255), round(g * 255), round(b * 255))


def _rotate_hue(colour: RGB, turn: float) -> RGB:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in colour))
    return _hsv(h + turn, s, v)


def _luma(colour: RGB) -> float:
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def _word(rng: np.random.Generator, low: int = 2, high: int = 3) -> str:
    n = int(rng.integers(low, high + 1))
    return "".join(_SYLLABLES[int(i)] for i in rng.integers(len(_SYLLABLES), size=n))


def _palette(rng: np.random.Generator) -> tuple[RGB, RGB, RGB]:
    """A saturated background, a contrasting accent and a darker second accent."""
    hue = float(rng.random())
    bg = _hsv(hue, rng.uniform(0.45, 0.9), rng.uniform(0.6, 0.95))
    accent = _hsv(hue + rng.uniform(0.35, 0.65), rng.uniform(0.55, 0.95), rng.uniform(0.5, 0.95))
    accent2 = _hsv(hue + rng.uniform(-0.08, 0.08), rng.uniform(0.6, 1.0), rng.uniform(0.2, 0.45))
    return bg, accent, accent2


def _illustration(rng: np.random.Generator, sources: Sequence[str], avoid: str = "") -> str:
    choices = [f"photo:{s}" for s in sources] + ["circles", "stripes", "blob"] * (
        1 if sources else 2
    )
    choices = [c for c in choices if c != avoid] or ["circles"]
    return choices[int(rng.integers(len(choices)))]


def _crop(rng: np.random.Generator) -> tuple[float, float, float, float]:
    side = rng.uniform(0.45, 0.8)
    x, y = rng.uniform(0, 1 - side, 2)
    return (float(x), float(y), float(x + side), float(y + side))


_MODELS: dict[str, tuple[float, float, float]] = {
    "cereal": (19.0, 6.5, 28.0),
    "tea": (13.0, 7.5, 8.0),
    "cracker": (21.0, 5.5, 13.0),
    "carton": (7.0, 7.0, 19.5),
    "can": (6.6, 6.6, 12.5),
    "bottle": (7.0, 7.0, 22.5),
    "jar": (9.4, 9.4, 12.0),
}


def _cylinder_parts(model: str, rng: np.random.Generator, design: Design):
    """Parts, label range of a can, bottle or jar (metallic or plain caps)."""
    silver = (196, 200, 206)
    metal_cap = rng.random() < 0.5
    cap = silver if metal_cap else _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.2, 0.9))
    if model == "can":
        parts = (
            Part(3.3, 0.0, 12.2, "label", "metal", silver, outside="metal"),
            Part(3.05, 12.2, 12.5, "metal", "metal", silver),
        )
        return parts, (0.45, 11.8)
    if model == "bottle":
        body = (238, 238, 232) if rng.random() < 0.5 else _rotate_hue(design.bg, 0.5)
        parts = (
            Part(3.5, 0.0, 16.5, "label", "plain", body),
            Part(2.6, 16.5, 18.0, "plain", "plain", body),
            Part(1.6, 18.0, 19.5, "plain", "plain", body),
            Part(1.75, 19.5, 22.5, "metal" if metal_cap else "plain", "plain", cap),
        )
        return parts, (2.5, 14.5)
    contents = tuple(int(c * 0.55) for c in FLAVOURS[design.flavour])
    parts = (
        Part(4.5, 0.0, 10.3, "label", "plain", contents),
        Part(
            4.7,
            10.3,
            12.0,
            "metal" if metal_cap else "plain",
            "metal" if metal_cap else "plain",
            cap,
        ),
    )
    return parts, (1.4, 8.8)


def make_product(seed: int, shape: str | None = None, sources: Sequence[str] = ()) -> Product:
    """A seeded product; ``sources`` are photos its illustration may be cropped from."""
    rng = np.random.default_rng([seed, 1931])
    shape = shape or ("box" if rng.random() < 0.5 else "cylinder")
    models = ("cereal", "tea", "cracker", "carton") if shape == "box" else ("can", "bottle", "jar")
    model = models[int(rng.integers(len(models)))]
    bg, accent, accent2 = _palette(rng)
    fonts = ("DejaVuSans-Bold.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansCondensed-Bold.ttf")
    design = Design(
        seed=int(rng.integers(1 << 31)),
        brand=_word(rng).capitalize(),
        flavour=str(rng.choice(list(FLAVOURS))),
        category=str(rng.choice(_CATEGORIES[shape])),
        bg=bg,
        accent=accent,
        accent2=accent2,
        illustration=_illustration(rng, sources),
        crop=_crop(rng),
        art_seed=int(rng.integers(1 << 31)),
        pattern=str(rng.choice(["stripes", "dots", "waves", "plain"])),
        brand_font=fonts[int(rng.integers(len(fonts)))],
    )
    name = f"{design.brand}-{design.flavour}-{model}-{seed}".lower()
    if shape == "box":
        w, d, h = _MODELS[model]
        scale = rng.uniform(0.9, 1.1)
        return Product(name, shape, model, (w * scale, d * scale, h * scale), design)
    parts, label = _cylinder_parts(model, rng, design)
    r = max(p.radius for p in parts)
    return Product(name, shape, model, (2 * r, 2 * r, parts[-1].z1), design, parts, label)


def make_variant(
    product: Product, kind: str, rng: np.random.Generator, sources: Sequence[str] = ()
) -> Product:
    """Another SKU of the same line: same shape, brand and layout, and

    * ``colour``: background and accents turned 60-180 degrees round the hue circle;
    * ``flavour``: another flavour word and fruit (a hue at least 40 degrees away);
    * ``artwork``: another illustration (photo or procedural) and background pattern.
    """
    d = product.design
    if kind == "colour":
        turn = rng.uniform(60, 180) / 360 * (1 if rng.random() < 0.5 else -1)
        new = replace(
            d,
            bg=_rotate_hue(d.bg, turn),
            accent=_rotate_hue(d.accent, turn),
            accent2=_rotate_hue(d.accent2, turn),
        )
    elif kind == "flavour":
        hue = colorsys.rgb_to_hsv(*(c / 255 for c in FLAVOURS[d.flavour]))[0]

        def far(name: str) -> bool:
            other = colorsys.rgb_to_hsv(*(c / 255 for c in FLAVOURS[name]))[0]
            return min(abs(other - hue), 1 - abs(other - hue)) >= 40 / 360

        flavours = sorted(f for f in FLAVOURS if f != d.flavour and far(f))
        new = replace(d, flavour=flavours[int(rng.integers(len(flavours)))])
    elif kind == "artwork":
        patterns = [p for p in ("stripes", "dots", "waves", "plain") if p != d.pattern]
        new = replace(
            d,
            illustration=_illustration(rng, sources, avoid=d.illustration),
            crop=_crop(rng),
            art_seed=int(rng.integers(1 << 31)),
            pattern=patterns[int(rng.integers(len(patterns)))],
        )
    else:
        raise ValueError(f"unknown variant kind {kind!r}")
    parts = product.parts
    if kind == "colour":  # a coloured bottle or cap changes too (white and silver cannot)
        parts = tuple(replace(p, colour=_rotate_hue(p.colour, turn)) for p in parts)
    if product.model == "jar" and kind == "flavour":  # the jar's contents show the flavour
        contents = tuple(int(c * 0.55) for c in FLAVOURS[new.flavour])
        parts = (replace(parts[0], colour=contents), *parts[1:])
    tag = int(rng.integers(1 << 20))
    return replace(product, name=f"{product.name}-{kind}-{tag:05x}", design=new, parts=parts)


# ---------------------------------------------------------------------------------------
# Printed faces


@functools.lru_cache(maxsize=64)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    size = max(6, int(size))
    try:
        return ImageFont.truetype(str(_FONT_DIR / name), size)
    except OSError:
        return ImageFont.load_default(size=size)


def _fit_font(draw: ImageDraw.ImageDraw, text: str, name: str, width: float, height: float):
    """The largest font of ``name`` whose ``text`` fits in width x height."""
    size = max(6, int(height))
    while size > 6:
        font = _font(name, size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        if right - left <= width and bottom - top <= height:
            return font
        size = int(size * 0.9)
    return _font(name, 6)


def _text_centre(draw, text: str, box, name: str, fill: RGB, outline: RGB | None = None) -> None:
    x0, y0, x1, y1 = box
    font = _fit_font(draw, text, name, x1 - x0, y1 - y0)
    stroke = max(1, int(font.size / 14)) if outline else 0
    draw.text(
        ((x0 + x1) / 2, (y0 + y1) / 2),
        text,
        font=font,
        fill=fill,
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=outline,
    )


def _ink(bg: RGB) -> RGB:
    """Dark or white text, whichever reads on ``bg``."""
    return (24, 22, 28) if _luma(bg) > 150 else (250, 250, 246)


@functools.lru_cache(maxsize=16)
def _photo(name: str) -> Image.Image:
    return photos.load(name)


def _pattern(size: tuple[int, int], design: Design) -> Image.Image:
    """The background colour with a faint printed pattern."""
    w, h = size
    img = Image.new("RGB", size, design.bg)
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng([design.art_seed, 1])
    tone = tuple(int(c * 0.88 + 255 * 0.12) for c in design.bg)
    step = max(8, int(min(w, h) * rng.uniform(0.05, 0.1)))
    if design.pattern == "stripes":
        for x in range(-h, w, step):
            draw.line([(x, h), (x + h, 0)], fill=tone, width=max(2, step // 3))
    elif design.pattern == "dots":
        for y in range(0, h + step, step):
            for x in range((y // step % 2) * step // 2, w + step, step):
                draw.ellipse([x - step / 5, y - step / 5, x + step / 5, y + step / 5], fill=tone)
    elif design.pattern == "waves":
        xs = np.arange(0, w + 4, 4)
        for y in range(0, h + step, step):
            ys = y + step * 0.25 * np.sin(xs / step * 1.3)
            draw.line(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=tone, width=3)
    return img


def _fruit(draw: ImageDraw.ImageDraw, box, colour: RGB, seed: int) -> None:
    """A fruit-like blob: lumpy round body, a highlight, a leaf."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2 + (y1 - y0) * 0.06, min(x1 - x0, y1 - y0) * 0.42
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    bumps = 1 + 0.06 * np.sin(angles * int(rng.integers(2, 5)) + rng.uniform(0, 6))
    pts = [
        (cx + r * b * math.cos(a), cy + r * b * math.sin(a))
        for a, b in zip(angles, bumps, strict=True)
    ]
    dark = tuple(int(c * 0.6) for c in colour)
    draw.polygon(pts, fill=colour, outline=dark, width=max(2, int(r / 18)))
    light = tuple(min(255, int(c * 0.5 + 128)) for c in colour)
    draw.ellipse([cx - r * 0.55, cy - r * 0.6, cx - r * 0.1, cy - r * 0.25], fill=light)
    draw.ellipse([cx + r * 0.05, cy - r * 1.25, cx + r * 0.65, cy - r * 0.9], fill=(60, 150, 50))
    draw.line(
        [(cx, cy - r * 0.9), (cx + r * 0.05, cy - r * 1.2)],
        fill=(90, 60, 30),
        width=max(2, int(r / 12)),
    )


def _art(size: tuple[int, int], design: Design) -> Image.Image:
    """The pack's illustration: a crop of a real photo or procedural shapes."""
    w, h = size
    rng = np.random.default_rng([design.art_seed, 2])
    if design.illustration.startswith("photo:"):
        src = _photo(design.illustration.removeprefix("photo:"))
        x0, y0, x1, y1 = design.crop
        box = (x0 * src.width, y0 * src.height, x1 * src.width, y1 * src.height)
        return src.crop(tuple(round(v) for v in box)).resize(size, Image.Resampling.LANCZOS)
    fruit = FLAVOURS[design.flavour]
    img = Image.new("RGB", size, tuple(int(c * 0.6 + 255 * 0.4) for c in design.bg))
    draw = ImageDraw.Draw(img)
    if design.illustration == "circles":
        for _ in range(14):
            r = rng.uniform(0.08, 0.3) * min(w, h)
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            c = _rotate_hue(fruit, rng.uniform(-0.12, 0.12))
            c = tuple(int(v * rng.uniform(0.6, 1.0)) for v in c)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=c, outline=design.accent2, width=3)
    elif design.illustration == "stripes":
        n = int(rng.integers(5, 10))
        for i in range(n):
            c = fruit if i % 2 else design.accent
            y = h * i / n
            draw.polygon(
                [(0, y), (w, y + h * 0.3), (w, y + h * 0.3 + h / n), (0, y + h / n)], fill=c
            )
    else:  # "blob": a heap of fruit
        for _ in range(5):
            r = rng.uniform(0.25, 0.4) * min(w, h)
            x, y = rng.uniform(r * 0.8, w - r * 0.8), rng.uniform(r * 0.8, h - r * 0.6)
            _fruit(draw, (x - r, y - r, x + r, y + r), fruit, int(rng.integers(1 << 30)))
    return img.filter(ImageFilter.SMOOTH)


def _paste_art(canvas: Image.Image, box, design: Design, round_frame: bool) -> None:
    x0, y0, x1, y1 = (round(v) for v in box)
    art = _art((x1 - x0, y1 - y0), design)
    mask = Image.new("L", art.size, 0)
    md = ImageDraw.Draw(mask)
    if round_frame:
        md.ellipse([0, 0, art.width - 1, art.height - 1], fill=255)
    else:
        md.rounded_rectangle(
            [0, 0, art.width - 1, art.height - 1], radius=art.width // 10, fill=255
        )
    canvas.paste(art, (x0, y0), mask)
    draw = ImageDraw.Draw(canvas)
    border = max(3, (x1 - x0) // 60)
    if round_frame:
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], outline=design.accent, width=border)
    else:
        draw.rounded_rectangle(
            [x0, y0, x1 - 1, y1 - 1], radius=(x1 - x0) // 10, outline=design.accent, width=border
        )


def _front(size: tuple[int, int], design: Design) -> Image.Image:
    """The front panel: bands, brand, illustration, flavour with its fruit, claims, weight."""
    w, h = size
    rng = np.random.default_rng([design.seed, 3])
    img = _pattern(size, design)
    draw = ImageDraw.Draw(img)
    fruit = FLAVOURS[design.flavour]
    band = h * rng.uniform(0.05, 0.09)
    draw.rectangle([0, 0, w, band], fill=design.accent2)
    draw.rectangle([0, h - band, w, h], fill=design.accent2)
    draw.rectangle([0, h - band * 1.35, w, h - band], fill=design.accent)
    tall = h > w * 0.9
    brand_box = (w * 0.08, band + h * 0.03, w * 0.92, band + h * (0.16 if tall else 0.24))
    draw.rounded_rectangle(
        [
            brand_box[0] - w * 0.03,
            brand_box[1] - h * 0.01,
            brand_box[2] + w * 0.03,
            brand_box[3] + h * 0.01,
        ],
        radius=int(h * 0.03),
        fill=design.accent,
    )
    _text_centre(
        draw,
        design.brand,
        brand_box,
        design.brand_font,
        _ink(design.accent),
        outline=design.accent2,
    )
    top = brand_box[3] + h * 0.03
    bottom = h - band * 1.35 - h * (0.2 if tall else 0.3)
    if tall:
        side = min(w * 0.7, bottom - top)
        art_box = ((w - side) / 2, top, (w + side) / 2, top + side)
    else:
        art_box = (w * 0.06, top, w * 0.56, bottom)
    _paste_art(img, art_box, design, round_frame=bool(rng.random() < 0.5))
    draw = ImageDraw.Draw(img)
    # flavour band: a ribbon in the fruit's colour with the flavour and the fruit
    fy0 = bottom + h * 0.02
    fy1 = h - band * 1.35 - h * 0.03
    draw.rectangle([0, fy0, w, fy1], fill=fruit)
    fruit_w = (fy1 - fy0) * 1.1
    _fruit(
        draw, (w * 0.04, fy0 - (fy1 - fy0) * 0.35, w * 0.04 + fruit_w, fy1), fruit, design.art_seed
    )
    _text_centre(
        draw,
        f"{design.flavour} {design.category}",
        (w * 0.08 + fruit_w, fy0 + (fy1 - fy0) * 0.12, w * 0.96, fy1 - (fy1 - fy0) * 0.12),
        "DejaVuSans-Bold.ttf",
        _ink(fruit),
    )
    if not tall:  # claims in the right column beside the illustration
        x0 = w * 0.6
        for i, claim in enumerate(rng.choice(_CLAIMS, size=3, replace=False)):
            y = top + (bottom - top) * (0.08 + 0.3 * i)
            _text_centre(
                draw,
                str(claim),
                (x0, y, w * 0.95, y + (bottom - top) * 0.2),
                "DejaVuSansCondensed-Bold.ttf",
                _ink(design.bg),
            )
    else:  # a round badge overlapping the illustration
        r = w * 0.12
        cx, cy = w * 0.8, top + r * 0.9
        draw.ellipse(
            [cx - r, cy - r, cx + r, cy + r],
            fill=design.accent,
            outline=(255, 255, 255),
            width=max(2, int(r / 10)),
        )
        _text_centre(
            draw,
            str(rng.choice(_CLAIMS[:3])),
            (cx - r * 0.8, cy - r * 0.4, cx + r * 0.8, cy + r * 0.4),
            "DejaVuSans-Bold.ttf",
            _ink(design.accent),
        )
    weight = f"{int(rng.choice([125, 250, 330, 375, 500, 750]))} g"
    _text_centre(
        draw,
        weight,
        (w * 0.7, h - band * 0.95, w * 0.97, h - band * 0.1),
        "DejaVuSans.ttf",
        _ink(design.accent2),
    )
    return img


def _fine_print(draw, box, design: Design, seed: int, ink: RGB) -> None:
    """Lines of small text: ingredients, an address, instructions."""
    rng = np.random.default_rng([design.seed, seed])
    x0, y0, x1, y1 = box
    size = max(7, int((y1 - y0) / 16))
    font = _font("DejaVuSansCondensed.ttf", size)
    y = y0
    while y + size < y1:
        words, line = [], ""
        while True:
            word = _word(rng, 1, 4)
            if draw.textlength(line + " " + word, font=font) > x1 - x0:
                break
            words.append(word)
            line = " ".join(words)
        if rng.random() < 0.12:
            line = line[: len(line) // 2]
        draw.text((x0, y), line, font=font, fill=ink)
        y += size * 1.35


def _nutrition(draw, box, design: Design, ink: RGB) -> None:
    """A nutrition table: a frame, a heading, rows with values."""
    rng = np.random.default_rng([design.seed, 5])
    x0, y0, x1, y1 = box
    draw.rectangle([x0, y0, x1, y1], fill=(250, 250, 246), outline=ink, width=2)
    rows = 8
    step = (y1 - y0) / (rows + 1)
    size = min(step * 0.6, (x1 - x0) / 13)  # "Carbohydrate" and a value fit on one row
    font = _font("DejaVuSansCondensed.ttf", max(7, int(size)))
    bold = _font("DejaVuSansCondensed-Bold.ttf", max(7, int(size * 1.1)))
    draw.text((x0 + 6, y0 + step * 0.15), "Nutrition per 100 g", font=bold, fill=(20, 20, 20))
    names = ("Energy", "Fat", "saturates", "Carbohydrate", "sugars", "Fibre", "Protein", "Salt")
    for i, name in enumerate(names):
        y = y0 + step * (i + 1)
        draw.line([(x0, y), (x1, y)], fill=(20, 20, 20), width=1)
        draw.text((x0 + 6, y + step * 0.15), name, font=font, fill=(20, 20, 20))
        value = f"{rng.uniform(0.1, 60):.1f} g" if i else f"{int(rng.integers(200, 1900))} kJ"
        draw.text((x1 - 6, y + step * 0.15), value, font=font, fill=(20, 20, 20), anchor="ra")


def _barcode(draw, box, seed: int) -> None:
    """An EAN-like barcode on a white patch with digits below."""
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = box
    draw.rectangle([x0, y0, x1, y1], fill=(255, 255, 255))
    pad = (x1 - x0) * 0.06
    modules = rng.integers(1, 4, size=60)
    unit = (x1 - x0 - 2 * pad) / modules.sum()
    x, bar = x0 + pad, True
    for m in modules:
        if bar:
            draw.rectangle([x, y0 + pad, x + m * unit - 0.5, y1 - (y1 - y0) * 0.22], fill=(0, 0, 0))
        x += m * unit
        bar = not bar
    digits = "".join(str(int(d)) for d in rng.integers(0, 10, 13))
    _text_centre(
        draw,
        digits,
        (x0 + pad, y1 - (y1 - y0) * 0.2, x1 - pad, y1 - 2),
        "DejaVuSansMono.ttf",
        (0, 0, 0),
    )


def _info(size: tuple[int, int], design: Design, seed: int, barcode: bool) -> Image.Image:
    """A back or side panel: brand, fine print, a nutrition table, maybe a barcode."""
    w, h = size
    img = Image.new("RGB", size, tuple(int(c * 0.55 + 255 * 0.45) for c in design.bg))
    draw = ImageDraw.Draw(img)
    ink = _ink(tuple(int(c * 0.55 + 255 * 0.45) for c in design.bg))
    band = h * 0.07
    draw.rectangle([0, 0, w, band], fill=design.accent2)
    draw.rectangle([0, band, w, band * 1.3], fill=design.accent)
    _text_centre(
        draw,
        design.brand,
        (w * 0.1, band * 0.1, w * 0.9, band * 0.9),
        design.brand_font,
        _ink(design.accent2),
    )
    fruit = FLAVOURS[design.flavour]  # the flavour is printed on every panel
    draw.rectangle([0, band * 1.3, w, band * 2.1], fill=fruit)
    _text_centre(
        draw,
        f"{design.flavour} {design.category}",
        (w * 0.1, band * 1.4, w * 0.9, band * 2.0),
        "DejaVuSans-Bold.ttf",
        _ink(fruit),
    )
    band *= 1.6
    narrow = w < h * 0.5
    if narrow:
        _fine_print(draw, (w * 0.08, band * 1.6, w * 0.92, h * 0.55), design, seed, ink)
        if barcode:
            _barcode(draw, (w * 0.1, h * 0.62, w * 0.9, h * 0.62 + w * 0.5), design.seed + seed)
        else:
            _nutrition(draw, (w * 0.08, h * 0.6, w * 0.92, h * 0.9), design, ink)
    else:
        _fine_print(draw, (w * 0.06, band * 1.6, w * 0.5, h * 0.9), design, seed, ink)
        _nutrition(draw, (w * 0.55, band * 1.6, w * 0.94, h * 0.6), design, ink)
        if barcode:
            bw = w * 0.34
            _barcode(
                draw,
                (w * 0.58, h * 0.66, w * 0.58 + bw, min(h * 0.94, h * 0.66 + bw * 0.6)),
                design.seed + seed,
            )
    draw.rectangle([0, h - band * 0.6, w, h], fill=design.accent2)
    return img


def _top(size: tuple[int, int], design: Design) -> Image.Image:
    w, h = size
    img = _pattern(size, design)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, w, h * 0.12], fill=design.accent2)
    _text_centre(
        draw,
        design.brand,
        (w * 0.15, h * 0.25, w * 0.85, h * 0.75),
        design.brand_font,
        _ink(design.bg),
    )
    return img


def _label(size: tuple[int, int], design: Design) -> Image.Image:
    """A wrap-around label: the front panel in the middle, fine print and nutrition to its
    left, a barcode to its right, colour bands all round."""
    w, h = size
    img = _pattern(size, design)
    front_w = min(int(w * 0.42), int(h * 1.0))
    front = _front((front_w, h), design)
    img.paste(front, ((w - front_w) // 2, 0))
    draw = ImageDraw.Draw(img)
    band = h * 0.06
    draw.rectangle([0, 0, w, band], fill=design.accent2)
    draw.rectangle([0, h - band, w, h], fill=design.accent2)
    side_w = (w - front_w) / 2
    _fine_print(
        draw, (side_w * 0.1, band * 1.5, side_w * 0.9, h * 0.5), design, 11, _ink(design.bg)
    )
    _nutrition(
        draw, (side_w * 0.1, h * 0.55, side_w * 0.9, h - band * 1.5), design, _ink(design.bg)
    )
    x0 = w - side_w
    bar_w = side_w * 0.6
    _barcode(
        draw,
        (
            x0 + side_w * 0.2,
            h * 0.55,
            x0 + side_w * 0.2 + bar_w,
            min(h - band * 1.5, h * 0.55 + bar_w * 0.6),
        ),
        design.seed,
    )
    _fine_print(
        draw,
        (x0 + side_w * 0.1, band * 1.5, w - side_w * 0.1, h * 0.5),
        design,
        12,
        _ink(design.bg),
    )
    return img


def _texels_per_cm(product: Product, height_px: int) -> float:
    """Texture density: the largest dimension gets about 1.6x the output height."""
    return max(1400.0, 1.6 * SUPERSAMPLE / 2 * height_px) / max(product.dims)


@functools.lru_cache(maxsize=24)
def textures(product: Product, height_px: int = 600) -> dict[str, np.ndarray]:
    """Face name -> float32 HxWx3 texture in [0, 1]: front, back, left, right, top (boxes)
    or label (cylinders)."""
    k = _texels_per_cm(product, height_px)
    d = product.design
    if product.shape == "box":
        w, dep, h = product.dims
        px = lambda a, b: (max(8, round(a * k)), max(8, round(b * k)))  # noqa: E731
        faces = {
            "front": _front(px(w, h), d),
            "back": _info(px(w, h), d, 21, barcode=True),
            "left": _info(px(dep, h), d, 22, barcode=False),
            "right": _info(px(dep, h), d, 23, barcode=True),
            "top": _top(px(w, dep), d),
        }
    else:
        r = product.parts[0].radius
        z0, z1 = product.label
        faces = {"label": _label((round(2 * math.pi * r * k), round((z1 - z0) * k)), d)}
    return {name: np.asarray(img, dtype=np.float32) / 255 for name, img in faces.items()}


# ---------------------------------------------------------------------------------------
# Camera, ray casting, shading


@dataclass(frozen=True)
class _Camera:
    eye: np.ndarray  # world position
    basis: np.ndarray  # rows: right, down, forward (world)
    focal: float  # pixels
    centre: tuple[float, float]  # principal point, pixels
    light: np.ndarray  # unit vector towards the key light (world)
    spin: np.ndarray  # 3x3: world = spin @ object

    def project(self, points: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """World points (N, 3) -> pixel coordinates (N, 2) at ``scale`` x the output size."""
        cam = (points - self.eye) @ self.basis.T
        z = np.maximum(cam[:, 2], 1e-6)
        x = self.focal * cam[:, 0] / z + self.centre[0]
        y = self.focal * cam[:, 1] / z + self.centre[1]
        return np.stack([x, y], axis=1) * scale


def _rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _camera(product: Product, view: View, size: tuple[int, int]) -> _Camera:
    width, height = size
    target = np.array([0.0, 0.0, product.dims[2] / 2])
    az, el = math.radians(view.azimuth_deg), math.radians(view.elevation_deg)
    back = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    eye = target + view.distance * product.radius * back
    forward = -back
    right = _unit(np.cross(forward, [0.0, 0.0, 1.0]))
    down = np.cross(forward, right)
    roll = math.radians(view.roll_deg)
    right, down = (
        math.cos(roll) * right + math.sin(roll) * down,
        -math.sin(roll) * right + math.cos(roll) * down,
    )
    focal = height / 2 / math.tan(math.radians(FOV_DEG) / 2)
    centre = (width / 2 + view.offset[0] * width, height / 2 + view.offset[1] * height)
    toward = _unit(np.array([back[0], back[1], 0.0]))
    side = _unit(np.array([right[0], right[1], 0.0]))
    a, b, c = LIGHT_CAMERA
    light = _unit(a * side + b * toward + np.array([0.0, 0.0, c]))
    basis = np.stack([right, down, forward])
    return _Camera(eye, basis, focal, centre, light, _rz(view.spin_deg))


def _bilinear(tex: np.ndarray, u: np.ndarray, v: np.ndarray, wrap: bool = False) -> np.ndarray:
    """Texture (H, W, 3) sampled at u, v in [0, 1] (texel centres), bilinear."""
    h, w = tex.shape[:2]
    x = u * w - 0.5
    y = np.clip(v * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    if wrap:
        x0, x1 = x0 % w, (x0 + 1) % w
    else:
        x0, x1 = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    y1 = np.minimum(y0 + 1, h - 1)
    top = tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx
    bottom = tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def _lambert(normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    return AMBIENT + DIFFUSE * np.clip(normals @ light, 0, None)


def _specular(normals, dirs, light, power: float) -> np.ndarray:
    half = _unit(light[None, :] - dirs)
    return np.clip(np.sum(normals * half, axis=1), 0, None) ** power


def _metal(colour: np.ndarray, normals, dirs, light) -> np.ndarray:
    """A brushed-metal look: a studio environment reflected (bright above, two soft
    highlights round the axis) plus a sharp highlight."""
    refl = dirs - 2 * np.sum(dirs * normals, axis=1, keepdims=True) * normals
    around = np.cos(2 * np.arctan2(refl[:, 1], refl[:, 0]) + 1.0) ** 2
    env = 0.28 + 0.45 * np.clip(refl[:, 2] * 0.5 + 0.5, 0, 1) + 0.3 * around
    spec = 0.7 * _specular(normals, dirs, light, 60.0)
    return colour * env[:, None] + spec[:, None]


def _trace_box(product, tex, origin, dirs, light):
    w, d, h = product.dims
    lo, hi = np.array([-w / 2, -d / 2, 0.0]), np.array([w / 2, d / 2, h])
    safe = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    t1, t2 = (lo - origin) / safe, (hi - origin) / safe
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    near, far = tmin.max(axis=1), tmax.min(axis=1)
    hit = (near <= far) & (near > 0)
    idx = np.nonzero(hit)[0]
    rgb = np.zeros((len(dirs), 3), np.float32)
    if not len(idx):
        return hit, rgb
    dh = dirs[idx]
    p = origin + dh * near[idx, None]
    axis = tmin[idx].argmax(axis=1)
    upper = dh[np.arange(len(idx)), axis] < 0  # entered through the face at ``hi``
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    faces = {  # name: (selector, normal, u, v)
        "front": (axis == 1) & ~upper,
        "back": (axis == 1) & upper,
        "left": (axis == 0) & ~upper,
        "right": (axis == 0) & upper,
        "top": (axis == 2) & upper,
    }
    normals = {
        "front": (0, -1, 0),
        "back": (0, 1, 0),
        "left": (-1, 0, 0),
        "right": (1, 0, 0),
        "top": (0, 0, 1),
    }
    uvs = {
        "front": ((x + w / 2) / w, (h - z) / h),
        "back": ((w / 2 - x) / w, (h - z) / h),
        "left": ((d / 2 - y) / d, (h - z) / h),
        "right": ((y + d / 2) / d, (h - z) / h),
        "top": ((x + w / 2) / w, (d / 2 - y) / d),
    }
    out = np.zeros((len(idx), 3), np.float32)
    for name, sel in faces.items():
        if not sel.any():
            continue
        u, v = uvs[name]
        colour = _bilinear(tex[name], u[sel], v[sel])
        n = np.broadcast_to(np.array(normals[name], float), (int(sel.sum()), 3))
        shade = _lambert(n, light) + 0.06 * _specular(n, dh[sel], light, 20.0)
        out[sel] = colour * shade[:, None]
    occlusion = 1 - 0.18 * np.exp(-z / (0.04 * h))  # the ground darkens the bottom edge
    rgb[idx] = out * occlusion[:, None]
    return hit, rgb


def _trace_cylinder(product, tex, origin, dirs, light):
    n_rays = len(dirs)
    best = np.full(n_rays, np.inf)
    which = np.full(n_rays, -1)  # 2 * part + (0 side, 1 top)
    a = dirs[:, 0] ** 2 + dirs[:, 1] ** 2
    b = 2 * (origin[0] * dirs[:, 0] + origin[1] * dirs[:, 1])
    for k, part in enumerate(product.parts):
        c = origin[0] ** 2 + origin[1] ** 2 - part.radius**2
        disc = b * b - 4 * a * c
        ok = disc >= 0
        t = np.where(ok, (-b - np.sqrt(np.where(ok, disc, 0))) / (2 * np.maximum(a, 1e-12)), np.inf)
        z = origin[2] + t * dirs[:, 2]
        t = np.where(ok & (z >= part.z0) & (z <= part.z1) & (t > 0), t, np.inf)
        closer = t < best
        best, which = np.where(closer, t, best), np.where(closer, 2 * k, which)
        tz = (part.z1 - origin[2]) / np.where(np.abs(dirs[:, 2]) < 1e-12, -1e-12, dirs[:, 2])
        px, py = origin[0] + tz * dirs[:, 0], origin[1] + tz * dirs[:, 1]
        inside = (px * px + py * py <= part.radius**2) & (tz > 0)
        tz = np.where(inside, tz, np.inf)
        closer = tz < best
        best, which = np.where(closer, tz, best), np.where(closer, 2 * k + 1, which)
    hit = which >= 0
    rgb = np.zeros((n_rays, 3), np.float32)
    z0, z1 = product.label
    for code in np.unique(which[hit]):
        sel = np.nonzero(which == code)[0]
        part = product.parts[code // 2]
        d = dirs[sel]
        p = origin + d * best[sel, None]
        colour = np.broadcast_to(np.array(part.colour, np.float32) / 255, (len(sel), 3)).copy()
        if code % 2:  # top disc
            normals = np.broadcast_to(np.array([0.0, 0.0, 1.0]), (len(sel), 3))
            material = part.top
            rho = np.hypot(p[:, 0], p[:, 1]) / part.radius
            colour *= (1 - 0.45 * np.exp(-(((rho - 0.86) / 0.035) ** 2)))[:, None]  # rim
        else:
            normals = np.stack([p[:, 0], p[:, 1], np.zeros(len(sel))], axis=1) / part.radius
            material = part.side
            if material == "label":
                on = (p[:, 2] >= z0) & (p[:, 2] <= z1)
                u = (np.arctan2(p[on, 0], -p[on, 1]) / (2 * np.pi) + 0.5) % 1.0
                colour[on] = _bilinear(tex["label"], u, (z1 - p[on, 2]) / (z1 - z0), wrap=True)
                if part.outside == "metal":
                    rgb[sel[~on]] = _metal(colour[~on], normals[~on], d[~on], light)
                    keep = on
                else:
                    keep = np.ones(len(sel), bool)
                shade = _lambert(normals[keep], light)[:, None]
                gloss = 0.18 * _specular(normals[keep], d[keep], light, 40.0)[:, None]
                rgb[sel[keep]] = colour[keep] * shade + gloss
                continue
        if material == "metal":
            rgb[sel] = _metal(colour, normals, d, light)
        else:
            shade = _lambert(normals, light)[:, None]
            rgb[sel] = colour * shade + 0.3 * _specular(normals, d, light, 50.0)[:, None]
    return hit, rgb


def _corners(product: Product) -> np.ndarray:
    w, d, h = product.dims
    return np.array([[x, y, z] for x in (-w / 2, w / 2) for y in (-d / 2, d / 2) for z in (0, h)])


def _trace(product: Product, cam: _Camera, size: tuple[int, int], tex) -> tuple:
    """Premultiplied colour and coverage at the output size, from SUPERSAMPLE^2 rays/pixel."""
    width, height = size
    s = SUPERSAMPLE
    big_w, big_h = width * s, height * s
    pts = cam.project(_corners(product) @ cam.spin.T, scale=s)
    x0, y0 = np.floor(pts.min(axis=0)).astype(int) - 2
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 2
    x0, y0 = max(0, x0 - x0 % s), max(0, y0 - y0 % s)  # aligned to whole output pixels
    x1, y1 = min(big_w, x1 + (-x1) % s), min(big_h, y1 + (-y1) % s)
    prem = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    if x1 <= x0 or y1 <= y0:
        return prem, alpha
    origin = cam.spin.T @ cam.eye
    light = cam.spin.T @ cam.light
    rot = cam.basis.T  # camera -> world
    trace = _trace_box if product.shape == "box" else _trace_cylinder
    xs = (np.arange(x0, x1) + 0.5 - cam.centre[0] * s) / (cam.focal * s)
    rows = max(s, (300_000 // max(1, x1 - x0)) // s * s)
    big_rgb = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    big_hit = np.zeros((y1 - y0, x1 - x0), np.float32)
    for top in range(y0, y1, rows):
        bottom = min(y1, top + rows)
        ys = (np.arange(top, bottom) + 0.5 - cam.centre[1] * s) / (cam.focal * s)
        gx, gy = np.meshgrid(xs, ys)
        cam_dirs = np.stack([gx, gy, np.ones_like(gx)], axis=-1).reshape(-1, 3)
        dirs = _unit(cam_dirs @ rot.T @ cam.spin)  # world, then object frame
        hit, rgb = trace(product, tex, origin, dirs, light)
        big_rgb[top - y0 : bottom - y0] = rgb.reshape(bottom - top, x1 - x0, 3)
        big_hit[top - y0 : bottom - y0] = hit.reshape(bottom - top, x1 - x0)
    small = ((x1 - x0) // s, (y1 - y0) // s)
    prem[y0 // s : y1 // s, x0 // s : x1 // s] = cv2.resize(
        big_rgb, small, interpolation=cv2.INTER_AREA
    )
    alpha[y0 // s : y1 // s, x0 // s : x1 // s] = cv2.resize(
        big_hit, small, interpolation=cv2.INTER_AREA
    )
    return np.clip(prem, 0, None), np.clip(alpha, 0, 1)


# ---------------------------------------------------------------------------------------
# Backgrounds and shadow


def _background(kind: str, size: tuple[int, int], rng: np.random.Generator, photo) -> np.ndarray:
    """Float32 HxWx3 backdrop in [0, 1]."""
    width, height = size
    yy = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    if kind == "white":
        tone = 0.985 - 0.03 * yy * rng.uniform(0.5, 1)
        return np.broadcast_to(tone, (height, width, 3)).copy()
    if kind == "grey_sweep":
        top, bottom = rng.uniform(0.5, 0.66), rng.uniform(0.82, 0.92)
        t = 1 / (1 + np.exp(-(yy - rng.uniform(0.45, 0.6)) * 7))
        img = top + (bottom - top) * t
        xx = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
        img = img * (1 - 0.08 * xx**2) * np.array([1.0, 1.0, 1.02], np.float32)
        return np.broadcast_to(img, (height, width, 3)).astype(np.float32)
    if kind == "paper":
        colour = np.array(_hsv(rng.random(), rng.uniform(0.12, 0.35), rng.uniform(0.82, 0.95)))
        noise = rng.normal(0, 1, (height, width)).astype(np.float32)
        fibres = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(1.0, width / 160), sigmaY=0.8)
        fibres *= 0.025 / max(1e-6, float(fibres.std()))
        grain = cv2.GaussianBlur(noise, (0, 0), 0.7) * 0.012
        shade = 1 - 0.06 * yy[..., 0]
        img = (colour / 255)[None, None, :] * (shade + fibres + grain)[..., None]
        return img.astype(np.float32)
    if kind == "blurred_photo":
        src = _photo(photo) if isinstance(photo, str) else photo.convert("RGB")
        scale = max(width / src.width, height / src.height) * rng.uniform(1.0, 1.3)
        big = src.resize((math.ceil(src.width * scale), math.ceil(src.height * scale)))
        left = int(rng.integers(0, big.width - width + 1))
        top = int(rng.integers(0, big.height - height + 1))
        arr = np.asarray(big.crop((left, top, left + width, top + height)), np.float32) / 255
        sigma = width * rng.uniform(0.015, 0.03)
        arr = cv2.GaussianBlur(arr, (0, 0), sigma)
        return (0.75 * arr + 0.25 * arr.mean()).astype(np.float32)  # a little flatter
    raise ValueError(f"unknown background {kind!r}; one of {BACKGROUNDS}")


def _shadow(product: Product, cam: _Camera, size: tuple[int, int]) -> np.ndarray:
    """Darkening in [0, 1): a blurred contact shadow under the product plus a softer one cast
    away from the key light (footprint and top outline projected onto the ground)."""
    width, height = size
    w, d, h = product.dims
    if product.shape == "box":
        base = np.array([[x, y, 0.0] for x, y in ((-w, -d), (w, -d), (w, d), (-w, d))]) / [2, 2, 1]
    else:
        a = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        r = product.parts[0].radius
        base = np.stack([r * np.cos(a), r * np.sin(a), np.zeros_like(a)], axis=1)
    base = base @ cam.spin.T
    light = cam.light
    cast = base - 0.75 * h * np.array([light[0], light[1], 0.0]) / max(light[2], 0.2)
    out = np.zeros((height, width), np.float32)
    scale = 1.0
    for points, sigma, strength in ((cast, 0.03, 0.32), (base * 1.06, 0.008, 0.4)):
        layer = np.zeros_like(out)
        hull = cv2.convexHull(cam.project(np.vstack([base * scale, points])).astype(np.float32))
        cv2.fillPoly(layer, [np.round(hull).astype(np.int32)], 1.0, lineType=cv2.LINE_AA)
        layer = cv2.GaussianBlur(layer, (0, 0), max(1.0, sigma * width))
        out = np.maximum(out, strength * layer)
    return out


# ---------------------------------------------------------------------------------------
# Rendering


def render(
    product: Product,
    view: View,
    background: str = "white",
    *,
    size: tuple[int, int] = (800, 600),
    shadow: bool = True,
    rng: np.random.Generator | None = None,
    backdrop: str | Image.Image | None = None,
) -> Rendered:
    """One photo of ``product`` from ``view`` on ``background`` (one of :data:`BACKGROUNDS`;
    ``backdrop`` is the photo blurred behind it for "blurred_photo", a photos name or an
    image). ``rng`` draws the backdrop's details (paper colour, sweep tones, blur)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if backdrop is None:
        art = product.design.illustration
        backdrop = art.removeprefix("photo:") if art.startswith("photo:") else "skimage:coffee"
    cam = _camera(product, view, size)
    bg = _background(background, size, rng, backdrop)
    if shadow:
        bg = bg * (1 - _shadow(product, cam, size))[..., None]
    prem, alpha = _trace(product, cam, size, textures(product, max(600, size[1])))
    out = bg * (1 - alpha[..., None]) + prem
    image = Image.fromarray(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8))
    return Rendered(image, alpha)


def view_sequence(rng: np.random.Generator, n: int, shape: str) -> list[View]:
    """``n`` views of one product, consecutive ones 15-90 degrees apart (azimuth for boxes;
    spin and/or azimuth for cylinders), elevation 5-30 degrees, framing changed a little.
    Every two views are at least 15 degrees apart round the product: six steps can come
    back to the first view, and a re-shoot from a few degrees away is not another angle."""
    azimuth = float(rng.uniform(-35, 35))
    spin = 0.0
    direction = 1 if rng.random() < 0.5 else -1
    turns: list[float] = []  # how far each view has turned the product to the camera
    views = []
    for i in range(n):
        if i:
            for _ in range(100):
                step = float(rng.uniform(15, 90)) * direction
                share = (
                    1.0 if shape == "box" else rng.choice([0.0, 1.0, float(rng.uniform(0.2, 0.8))])
                )
                if all(_apart(turns[-1] + step, t) >= 15 for t in turns):
                    break
            azimuth += step * share
            spin -= step * (1 - share)
        views.append(
            View(
                azimuth_deg=azimuth,
                elevation_deg=float(rng.uniform(5, 30)),
                distance=4.3 * float(rng.uniform(0.85, 1.15)),
                spin_deg=spin,
                roll_deg=float(rng.uniform(-3, 3)),
                offset=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.03, 0.03))),
            )
        )
        turns.append(azimuth - spin)
    return views


def _apart(a: float, b: float) -> float:
    """Degrees between two turns round the product (0..180)."""
    d = abs(a - b) % 360
    return min(d, 360 - d)
