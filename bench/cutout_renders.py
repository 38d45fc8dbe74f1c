"""A labelled cut-out set rendered by :mod:`render_products`: product photos with exact masks.

Every cell of (backdrop, shadow, shape) gets ``per_cell`` products, each photographed from
one seeded view: boxes (cereal, tea, crackers, cartons) and cylinders (cans, bottles, jars)
on the renderer's four backdrops (white, grey sweep, coloured paper, a blurred real photo),
with its soft cast and contact shadow or without. The true mask is the renderer's coverage
of the product (2x supersampled) thresholded at one half: shadows are background. Each
image gets mild sensor-like noise and a JPEG round trip (quality 90), as an upload would.

Everything is a pure function of the seed; ``seed=0`` is the set the README reports,
``seed=1, per_cell=3`` the one u2netp was tuned on (``cutout_quality.py --seed 1
--per-cell 3``), so the reported figures were not chosen on the images they are measured on.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

try:  # imported as bench.cutout_renders
    from bench import photos
    from bench import render_products as rp
except ImportError:  # run from a bench script, bench/ on sys.path
    import photos  # type: ignore[no-redef]
    import render_products as rp  # type: ignore[no-redef]

#: Canvas of every render (width, height): a 1024 px rendition's shape at a cost the bench
#: can afford (a render is ~0.3 s here).
SIZE = (640, 480)
SHAPES = ("box", "cylinder")
#: Sigma of the Gaussian noise added before the JPEG round trip (8-bit levels).
NOISE = 1.5
JPEG_QUALITY = 90
#: Photos blurred behind the product and cropped for illustrations (all ship with packages).
SOURCES = (
    *(n for n in photos.COLOUR if n.startswith("skimage:")),
    "sklearn:china",
    "sklearn:flower",
    "matplotlib:grace_hopper",
)


@dataclass(frozen=True)
class Case:
    name: str
    background: str  # one of render_products.BACKGROUNDS
    shadow: bool
    shape: str
    image: Image.Image  # RGB
    mask: Image.Image  # "L", 255 = product, 0 = background (shadow included)


def rendered_cases(seed: int = 0, per_cell: int = 3) -> list[Case]:
    """``per_cell`` cases for every (backdrop, shadow, shape): 16 x ``per_cell`` in all."""
    return list(_iter_cases(seed, per_cell))


def _iter_cases(seed: int, per_cell: int) -> Iterator[Case]:
    rng = np.random.default_rng([seed, 2020])
    index = 0
    for background in rp.BACKGROUNDS:
        for shadow in (True, False):
            for shape in SHAPES:
                for _ in range(per_cell):
                    index += 1
                    product = rp.make_product(seed * 10_000 + index, shape, SOURCES)
                    (view,) = rp.view_sequence(rng, 1, shape)
                    backdrop = SOURCES[int(rng.integers(len(SOURCES)))]
                    rendered = rp.render(
                        product,
                        view,
                        background,
                        size=SIZE,
                        shadow=shadow,
                        rng=np.random.default_rng([seed, index, 7]),
                        backdrop=backdrop,
                    )
                    image = _as_upload(rendered.image, rng)
                    mask = Image.fromarray(np.where(rendered.mask >= 0.5, 255, 0).astype(np.uint8))
                    tag = "shadow" if shadow else "noshadow"
                    yield Case(
                        f"{background}-{tag}-{shape}-{index}",
                        background,
                        shadow,
                        shape,
                        image,
                        mask,
                    )


def _as_upload(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sensor noise and a JPEG round trip: renders are cleaner than any upload."""
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, NOISE, (*image.size[::-1], 3))
    noisy = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")
