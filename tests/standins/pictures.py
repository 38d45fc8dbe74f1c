"""Pictures for the provider tests, what the cut-out stand-ins compute from a picture, and
the picture they always refuse."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

_MAGENTA = (255, 0, 255)


def magenta_corner(img: Image.Image) -> bool:
    """The default always-refused image: top-left pixel pure magenta."""
    return img.convert("RGB").getpixel((0, 0)) == _MAGENTA


def background_mask(img: Image.Image) -> Image.Image:
    """The stand-ins' "background removal": 255 where a pixel differs from the border colour.

    The border colour is the most common colour of the outermost pixels, so a flat backdrop
    with shapes on it gives exactly the shapes.
    """
    rgb = np.asarray(img.convert("RGB")).astype(np.uint32)
    packed = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]  # one int per colour
    border = np.concatenate([packed[0], packed[-1], packed[:, 0], packed[:, -1]])
    colours, counts = np.unique(border, return_counts=True)
    background = colours[np.argmax(counts)]
    return Image.fromarray(np.where(packed != background, 255, 0).astype(np.uint8))


def shapes(seed: int, size: tuple[int, int] = (48, 40)) -> tuple[Image.Image, np.ndarray]:
    """A flat backdrop with two shapes, and the mask they make (True: foreground)."""
    rng = np.random.default_rng(seed)
    w, h = size
    background = tuple(int(v) for v in rng.integers(150, 256, 3))
    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    for _ in range(2):
        x, y = int(rng.integers(w // 10, w // 2)), int(rng.integers(h // 10, h // 2))
        sw, sh = int(rng.integers(w // 8, w // 3)), int(rng.integers(h // 8, h // 3))
        colour = tuple(int(v) for v in rng.integers(0, 120, 3))
        draw.ellipse([x, y, x + sw, y + sh], fill=colour)
    expected = np.any(np.asarray(img) != np.array(background, dtype=np.uint8), axis=-1)
    return img, expected


def refused(img: Image.Image) -> Image.Image:
    """A copy the stand-ins always refuse (see :func:`magenta_corner`)."""
    img = img.copy()
    img.putpixel((0, 0), _MAGENTA)
    return img
