"""Real sample photos that scikit-image ships (no download), as RGB Pillow images."""

from __future__ import annotations

import numpy as np
from PIL import Image

#: skimage.data loaders that read bundled files; others fetch from the network.
PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
    "camera", "coins", "moon", "brick", "grass", "gravel", "clock", "cell", "retina",
    "colorwheel", "page", "text",
)  # fmt: skip


def load_photo(name: str) -> Image.Image:
    """One bundled photo as RGB (grey ones are expanded)."""
    import skimage.data  # deferred: only sample seeding and benchmarks need it

    array = np.asarray(getattr(skimage.data, name)())
    return Image.fromarray(array).convert("RGB")


def load_stereo_pair() -> tuple[Image.Image, Image.Image]:
    """Two views of one motorcycle: the same product, not the same photo."""
    import skimage.data

    left, right, _ = skimage.data.stereo_motorcycle()
    return Image.fromarray(left).convert("RGB"), Image.fromarray(right).convert("RGB")
