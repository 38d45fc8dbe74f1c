"""Real photos that installable packages ship as files (no download), for benchmarks.

Sources: scikit-image's bundled files (see :mod:`photogroup.samples`), scikit-learn's
``load_sample_image`` (two photos) and matplotlib's ``sample_data`` (one photo). The last
two are only needed by the benchmarks (the ``bench`` extra); they are imported on use.
Names are ``source:name``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from photogroup.samples import load_photo, load_stereo_pair

#: Colour photos of things (skimage's colourwheel and the clip-art in matplotlib's sample
#: data are not photos; ``lfw_subset`` is 25 px faces: left out).
COLOUR = (
    "skimage:astronaut", "skimage:coffee", "skimage:chelsea", "skimage:rocket",
    "skimage:immunohistochemistry", "skimage:hubble_deep_field", "skimage:retina",
    "sklearn:china", "sklearn:flower", "matplotlib:grace_hopper",
)  # fmt: skip
#: Grey photos (scans, a camera test shot, micrographs).
GREY = (
    "skimage:camera", "skimage:coins", "skimage:moon", "skimage:clock", "skimage:cell",
    "skimage:page", "skimage:text",
)  # fmt: skip
#: Grey textures that look alike at hash scale: the classic hard negatives.
TEXTURES = ("skimage:brick", "skimage:grass", "skimage:gravel")


def load(name: str) -> Image.Image:
    """One photo as RGB, e.g. ``load("sklearn:china")``."""
    source, _, item = name.partition(":")
    if source == "skimage":
        return load_photo(item)
    if source == "sklearn":
        from sklearn.datasets import load_sample_image  # bench extra

        return Image.fromarray(np.asarray(load_sample_image(f"{item}.jpg"))).convert("RGB")
    if source == "matplotlib":
        from matplotlib.cbook import get_sample_data  # bench extra

        with Image.open(get_sample_data(f"{item}.jpg", asfileobj=False)) as img:
            return img.convert("RGB")
    raise KeyError(f"unknown photo {name!r}")


def stereo_pair() -> tuple[Image.Image, Image.Image]:
    """The one real two-viewpoint pair available offline (skimage's motorcycle)."""
    return load_stereo_pair()
