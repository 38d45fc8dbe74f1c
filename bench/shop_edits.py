"""Near-duplicate edits that shop staff make, beyond ``transforms.py``.

Same signature as there: ``fn(img, rng) -> img`` (RGB in, RGB out, parameters drawn from
``rng``). A photo shown inside a phone app or a desktop browser and screenshotted, a price or
promotion sticker, a perspective tilt (a photo of a screen or a print), a white-balance
shift, and two edits in a row. Pillow, numpy and OpenCV only.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

try:  # imported as bench.shop_edits
    from bench import transforms
except ImportError:  # run from a bench script, bench/ on sys.path
    import transforms  # type: ignore[no-redef]

Transform = transforms.Transform

_TITLES = ("Product details", "Shop", "New arrivals", "Our range", "Item", "Bestsellers")
_STICKERS = ("€12.99", "€4.49", "SALE -30%", "NEW", "-20%", "2 for 1", "£7.50", "BIO", "TOP")
_URLS = (
    "https://shop.example/p/{n}",
    "https://www.example-store.com/item/{n}",
    "shop.example/products/{n}?ref=home",
)


_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")  # has the € sign


@functools.lru_cache(maxsize=64)
def _font(size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans Bold if installed, else Pillow's scalable default font."""
    try:
        return ImageFont.truetype(str(_FONT), max(6, round(size)))
    except OSError:
        return ImageFont.load_default(size=max(6, round(size)))


def _grey(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    v = int(rng.integers(low, high + 1))
    return (v, v, v)


def _brand_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    palette = (
        (32, 94, 200),
        (220, 60, 50),
        (20, 140, 110),
        (250, 170, 30),
        (40, 40, 48),
        (130, 60, 170),
    )
    return palette[int(rng.integers(len(palette)))]


def _text_lines(draw, x, y, width, n, size, rng, colour=(70, 70, 76)) -> float:
    """``n`` grey placeholder text lines of random length, as a page's paragraphs; the y
    below them."""
    for _ in range(n):
        length = width * rng.uniform(0.5, 1.0)
        draw.rounded_rectangle([x, y, x + length, y + size * 0.6], radius=size * 0.2, fill=colour)
        y += size * 1.1
    return y


def _phone(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A phone app's product page: status bar, header, the photo, title and price, nav bar."""
    width = round(img.width * rng.uniform(0.8, 1.1))
    margin = round(width * rng.uniform(0.0, 0.05))
    pw = width - 2 * margin
    ph = round(img.height * pw / img.width)
    unit = width / 20
    status, header, nav = round(unit * 1.2), round(unit * 2.4), round(unit * 2.6)
    info = round(unit * rng.uniform(3.0, 5.5))
    height = status + header + margin + ph + info + nav
    dark = rng.random() < 0.3
    page = (18, 18, 22) if dark else (255, 255, 255)
    ink = (235, 235, 235) if dark else (20, 20, 24)
    canvas = Image.new("RGB", (width, height), page)
    draw = ImageDraw.Draw(canvas)
    # status bar: time, signal bars, battery
    draw.text(
        (unit * 0.8, status / 2),
        f"{int(rng.integers(7, 23))}:{int(rng.integers(60)):02d}",
        font=_font(unit * 0.8),
        fill=ink,
        anchor="lm",
    )
    x = width - unit * 4.5
    for i in range(4):
        draw.rectangle(
            [
                x + i * unit * 0.35,
                status * (0.7 - 0.1 * i),
                x + i * unit * 0.35 + unit * 0.22,
                status * 0.75,
            ],
            fill=ink,
        )
    bx = width - unit * 2.5
    draw.rounded_rectangle(
        [bx, status * 0.3, bx + unit * 1.5, status * 0.75],
        radius=unit * 0.15,
        outline=ink,
        width=max(1, round(unit * 0.08)),
    )
    level = rng.uniform(0.2, 0.95)
    draw.rectangle(
        [bx + unit * 0.12, status * 0.38, bx + unit * (0.12 + 1.26 * level), status * 0.67],
        fill=ink,
    )
    # app header: back arrow, title, a cart icon
    bar = _brand_colour(rng) if rng.random() < 0.6 else page
    draw.rectangle([0, status, width, status + header], fill=bar)
    head_ink = (255, 255, 255) if sum(bar) < 400 else (20, 20, 24)
    mid = status + header / 2
    draw.line(
        [(unit * 1.4, mid - unit * 0.5), (unit * 0.9, mid), (unit * 1.4, mid + unit * 0.5)],
        fill=head_ink,
        width=max(2, round(unit * 0.15)),
    )
    title = _TITLES[int(rng.integers(len(_TITLES)))]
    draw.text((width / 2, mid), title, font=_font(unit * 1.0), fill=head_ink, anchor="mm")
    draw.rectangle(
        [width - unit * 2, mid - unit * 0.4, width - unit * 1, mid + unit * 0.4],
        outline=head_ink,
        width=max(2, round(unit * 0.12)),
    )
    # the photo
    top = status + header + margin
    canvas.paste(img.resize((pw, ph), Image.Resampling.LANCZOS), (margin, top))
    # title and price under it
    y = top + ph + unit * 0.6
    y = _text_lines(draw, unit, y, width * 0.6, 1, unit, rng, ink)
    price = f"€{rng.uniform(2, 90):.2f}"
    draw.text((unit, y + unit * 0.2), price, font=_font(unit * 1.3), fill=ink)
    button = _brand_colour(rng)
    draw.rounded_rectangle(
        [width * 0.55, y, width - unit, y + unit * 1.8], radius=unit * 0.5, fill=button
    )
    draw.text(
        (width * 0.55 + (width * 0.45 - unit) / 2, y + unit * 0.9),
        "Add to cart",
        font=_font(unit * 0.75),
        fill=(255, 255, 255),
        anchor="mm",
    )
    # bottom navigation: five icons
    ny = height - nav
    draw.line([(0, ny), (width, ny)], fill=(200, 200, 200), width=1)
    for i in range(5):
        cx, cy, r = width * (i + 0.5) / 5, ny + nav * 0.42, unit * 0.45
        shape = i % 3
        if shape == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=ink, width=2)
        elif shape == 1:
            draw.rectangle([cx - r, cy - r, cx + r, cy + r], outline=ink, width=2)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], outline=ink, width=2)
        draw.rectangle([cx - r, ny + nav * 0.75, cx + r, ny + nav * 0.82], fill=(150, 150, 150))
    return canvas


def _browser(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A desktop browser: title bar, a tab, the address bar, the photo at 50-80 % of the page
    width with a text column beside it."""
    width = round(img.width * rng.uniform(1.0, 1.4))
    share = rng.uniform(0.55, 0.8)
    pw = round(width * share)
    ph = round(img.height * pw / img.width)
    unit = width / 60
    chrome = round(unit * 4.2)
    pad = round(unit * 1.5)
    height = chrome + round(unit * 2.5) + pad + ph + pad
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    frame = _grey(rng, 205, 232)
    draw.rectangle([0, 0, width, chrome], fill=frame)
    for i, colour in enumerate(((236, 95, 86), (245, 190, 60), (98, 196, 84))):
        cx = unit * (1 + 0.9 * i)
        draw.ellipse([cx - unit * 0.3, unit * 0.7, cx + unit * 0.3, unit * 1.3], fill=colour)
    draw.rounded_rectangle(
        [unit * 4, unit * 0.35, unit * 16, unit * 2.0], radius=unit * 0.4, fill=(250, 250, 250)
    )
    draw.text(
        (unit * 4.6, unit * 1.2),
        _TITLES[int(rng.integers(len(_TITLES)))] + " - Shop",
        font=_font(unit * 0.75),
        fill=(40, 40, 40),
        anchor="lm",
    )
    draw.rectangle([0, unit * 2.0, width, chrome], fill=(250, 250, 250))
    draw.rounded_rectangle(
        [unit * 5, unit * 2.4, width - unit * 5, chrome - unit * 0.4],
        radius=unit * 0.6,
        fill=_grey(rng, 232, 242),
    )
    url = _URLS[int(rng.integers(len(_URLS)))].format(n=int(rng.integers(1000, 99999)))
    draw.text(
        (unit * 6, (unit * 2.4 + chrome - unit * 0.4) / 2),
        url,
        font=_font(unit * 0.8),
        fill=(60, 60, 60),
        anchor="lm",
    )
    # page: a navigation line, the photo, text beside it
    nav_y = chrome + unit * 0.8
    draw.text((pad, nav_y), "SHOP", font=_font(unit * 1.1), fill=_brand_colour(rng))
    for i in range(4):
        _text_lines(draw, width * (0.4 + 0.13 * i), nav_y + unit * 0.2, unit * 5, 1, unit, rng)
    top = chrome + round(unit * 2.5) + pad
    left = pad if rng.random() < 0.7 else width - pad - pw
    canvas.paste(img.resize((pw, ph), Image.Resampling.LANCZOS), (left, top))
    column = pad + pw + pad if left == pad else pad
    col_w = width - pw - 3 * pad
    if col_w > unit * 4:
        y = _text_lines(draw, column, top, col_w, 2, unit * 1.6, rng, (30, 30, 34))
        draw.text(
            (column, y + unit),
            f"€{rng.uniform(2, 90):.2f}",
            font=_font(unit * 1.8),
            fill=(200, 40, 40),
        )
        _text_lines(draw, column, y + unit * 4, col_w, int(rng.integers(4, 12)), unit, rng)
    return canvas


def screenshot(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The photo inside a phone app (portrait, full width) or a desktop browser page."""
    return _phone(img, rng) if rng.random() < 0.5 else _browser(img, rng)


def sticker(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """An opaque price or promotion sticker, a round badge or a rounded rectangle with a
    border, 4-12 % of the image area, anywhere (it may cover the product)."""
    out = img.convert("RGB").copy()
    w, h = out.size
    area = rng.uniform(0.04, 0.12) * w * h
    text = _STICKERS[int(rng.integers(len(_STICKERS)))]
    fill = ((230, 30, 40), (250, 210, 20), (255, 255, 255), (20, 120, 60), (30, 30, 36))
    colour = fill[int(rng.integers(len(fill)))]
    ink = (255, 255, 255) if sum(colour) < 500 and colour != (250, 210, 20) else (20, 20, 20)
    border = (255, 255, 255) if ink == (255, 255, 255) else (20, 20, 20)
    draw = ImageDraw.Draw(out)
    if rng.random() < 0.5:  # round badge
        r = float(np.sqrt(area / np.pi))
        sw, sh = 2 * r, 2 * r
    else:
        aspect = rng.uniform(1.4, 2.6)
        sh = float(np.sqrt(area / aspect))
        sw = sh * aspect
        r = 0.0
    sw, sh = min(sw, w * 0.95), min(sh, h * 0.95)
    x0 = float(rng.uniform(0, w - sw))
    y0 = float(rng.uniform(0, h - sh))
    edge = max(2, round(min(sw, sh) * 0.05))
    if r:
        draw.ellipse([x0, y0, x0 + sw, y0 + sh], fill=colour, outline=border, width=edge)
    else:
        draw.rounded_rectangle(
            [x0, y0, x0 + sw, y0 + sh], radius=sh * 0.25, fill=colour, outline=border, width=edge
        )
    size = sh * 0.45
    font = _font(size)
    while draw.textlength(text, font=font) > sw * 0.78 and size > 6:
        size *= 0.9
        font = _font(size)
    draw.text((x0 + sw / 2, y0 + sh / 2), text, font=font, fill=ink, anchor="mm")
    return out


def keystone(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Perspective tilt: two corners pulled in by 3-10 % of the size (the photo or print was
    shot at an angle), the others jittered; borders filled or cropped to the inner rectangle."""
    import cv2

    arr = np.asarray(img.convert("RGB"))
    h, w = arr.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    move = np.abs(rng.normal(0, 0.006, (4, 2))) * [w, h]
    amount = rng.uniform(0.03, 0.1)
    side = int(rng.integers(4))  # which edge gets shorter: top, right, bottom, left
    pull = {0: ((0, 0), (1, 0)), 1: ((1, 1), (2, 1)), 2: ((2, 0), (3, 0)), 3: ((3, 1), (0, 1))}
    for corner, axis in pull[side]:
        move[corner, axis] += amount * (w if axis == 0 else h)
    inward = np.float32([[1, 1], [-1, 1], [-1, -1], [1, -1]])
    dst = (src + inward * move).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(src, dst)
    fill = transforms._fill_colour(rng)
    warped = cv2.warpPerspective(
        arr, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
    )
    out = Image.fromarray(warped)
    if rng.random() < 0.5:
        left, top = max(dst[0, 0], dst[3, 0]), max(dst[0, 1], dst[1, 1])
        right, bottom = min(dst[1, 0], dst[2, 0]), min(dst[2, 1], dst[3, 1])
        out = out.crop((int(np.ceil(left)), int(np.ceil(top)), int(right), int(bottom)))
    return out


def colour_temperature(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """White balance moved warm or cool: red and blue scaled 8-25 % in opposite directions,
    green nearly kept."""
    shift = rng.uniform(0.08, 0.25) * (1 if rng.random() < 0.5 else -1)
    gains = np.array([1 + shift, 1 + 0.1 * shift, 1 - shift], np.float32)
    out = np.asarray(img.convert("RGB"), dtype=np.float32) * gains
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))


_SHOP: dict[str, Transform] = {
    "screenshot": screenshot,
    "sticker": sticker,
    "keystone": keystone,
    "colour_temperature": colour_temperature,
}


def shop_pair(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Two different families, from the four above and ``transforms.SINGLE``, one
    after the other."""
    pool = {**_SHOP, **transforms.SINGLE}
    first, second = rng.choice(list(pool), size=2, replace=False)
    return pool[str(second)](pool[str(first)](img.convert("RGB"), rng), rng)


FAMILIES: dict[str, Transform] = {**_SHOP, "shop_pair": shop_pair}
