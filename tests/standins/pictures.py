"""What the cut-out stand-ins compute from a picture, and the picture they always refuse."""

from __future__ import annotations

import numpy as np
from PIL import Image

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
