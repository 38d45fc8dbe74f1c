"""photogroup.cutout: offline background removal on labelled composites and odd inputs.

IoU floors sit below the values measured by ``bench/cutout_quality.py`` (in comments) with
a margin for OpenCV/Pillow version drift.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photogroup.cutout import (
    apply_mask,
    checkerboard_preview,
    encode_png,
    foreground_fraction,
    foreground_mask,
    mask_iou,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cases() -> dict[str, tuple[Image.Image, Image.Image]]:
    from bench.cutout_composites import composites

    return {name: (image, mask) for name, _, image, mask in composites()}


@pytest.mark.parametrize(
    ("name", "floor"),
    [
        ("plain-white-0", 0.9),  # measured 0.934
        ("plain-black-1", 0.9),  # 0.946
        ("plain-steelblue-2", 0.9),  # 0.950, backdrop close to the box's blue
        ("gradient-warm-0", 0.9),  # 0.943
        ("gradient-sweep-1", 0.84),  # 0.873, the silver bow on the sweep's white top is lost
        ("textured-brick-0", 0.9),  # 0.945
    ],
)
def test_iou_against_the_true_mask(cases, name, floor):
    image, truth = cases[name]
    assert mask_iou(foreground_mask(image), truth) >= floor


def test_product_crossing_the_frame_is_kept_up_to_the_edge(cases):
    from bench.cutout_composites import paste, product

    rng = np.random.default_rng(0)
    image, truth = paste(
        product(), Image.new("RGB", (480, 360), (248, 248, 246)), 260, rng, (-60, 40)
    )
    assert mask_iou(foreground_mask(image), truth) >= 0.88  # measured 0.925


def test_same_input_same_mask(cases):
    image, _ = cases["textured-gravel-1"]  # the textured path: k-means and GrabCut both seeded
    first = foreground_mask(image)
    assert first.tobytes() == foreground_mask(image.copy()).tobytes()


def test_mask_is_l_mode_with_the_input_size_and_soft_edges(cases):
    image, _ = cases["plain-grey-0"]
    mask = foreground_mask(image)
    assert mask.mode == "L" and mask.size == image.size
    values = np.asarray(mask)
    assert values.min() == 0 and values.max() >= 250
    assert ((values > 0) & (values < 255)).any()  # feathered, not a hard step


def test_cut_out_alpha_is_the_mask(cases):
    image, _ = cases["plain-beige-1"]
    mask = foreground_mask(image)
    cut = apply_mask(image, mask)
    assert cut.mode == "RGBA" and cut.size == image.size
    assert cut.getchannel("A").tobytes() == mask.tobytes()
    assert cut.convert("RGB").tobytes() == image.tobytes()
    assert 0.1 < foreground_fraction(mask) < 0.6


def test_apply_mask_rejects_a_mask_of_another_size():
    with pytest.raises(ValueError, match="size"):
        apply_mask(Image.new("RGB", (10, 10)), Image.new("L", (10, 11)))


def _noisy(size: tuple[int, int], colour: tuple[int, int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.array(colour, np.float32) + rng.normal(0, 2, (size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (0, 0)),
        Image.new("RGB", (1, 1), "red"),
        Image.new("RGB", (5, 5), "white"),
        Image.new("RGB", (2, 300), "white"),
        Image.new("RGB", (640, 480), (200, 200, 200)),
        _noisy((300, 200), (240, 240, 240)),
        Image.new("L", (50, 40), 128),
        Image.new("CMYK", (64, 48), (0, 40, 80, 10)),
        Image.new("RGBA", (64, 48), (10, 20, 30, 255)),  # opaque: alpha says nothing
        Image.new("LA", (64, 48), (90, 0)),  # all transparent: alpha says nothing either
        Image.new("I;16", (64, 48), 1000),
        Image.new("P", (30, 30)),
        Image.new("1", (30, 30)),
    ],
    ids=lambda im: f"{im.mode}-{im.width}x{im.height}",
)
def test_uniform_and_odd_inputs_give_an_all_background_mask(image):
    mask = foreground_mask(image)
    assert mask.mode == "L" and mask.size == image.size
    assert foreground_fraction(mask) == 0.0


def test_small_and_tiny_images_with_an_object():
    pixels = np.full((12, 12, 3), 250, np.uint8)
    pixels[4:8, 4:8] = (20, 40, 200)
    mask = np.asarray(foreground_mask(Image.fromarray(pixels)))
    assert (mask[4:8, 4:8] >= 128).all() and (mask[:3] == 0).all() and (mask[9:] == 0).all()
    dot = np.full((5, 5, 3), 255, np.uint8)
    dot[2, 2] = 0
    assert foreground_mask(Image.fromarray(dot)).size == (5, 5)


def test_grey_and_cmyk_inputs_are_converted(cases):
    image, truth = cases["plain-white-0"]
    assert mask_iou(foreground_mask(image.convert("L")), truth) >= 0.88  # measured 0.930
    assert mask_iou(foreground_mask(image.convert("CMYK")), truth) >= 0.88  # 0.934


def test_a_meaningful_alpha_channel_is_the_mask():
    alpha = np.zeros((40, 60), np.uint8)
    alpha[10:30, 15:45] = 255
    alpha[10:30, 15] = 100  # a soft edge survives
    rgba = Image.new("RGBA", (60, 40), (255, 255, 255, 255))
    rgba.putalpha(Image.fromarray(alpha))
    assert foreground_mask(rgba).tobytes() == alpha.tobytes()
    paletted = rgba.convert("RGB").convert("P")
    paletted.info["transparency"] = 0
    assert foreground_mask(paletted).mode == "L"


def test_a_backdrop_alone_is_all_background():
    from bench.cutout_composites import backgrounds

    makers = {name: make for _, name, make in backgrounds()}
    rng = np.random.default_rng(3)
    for name in ("sweep", "vignette"):
        assert foreground_fraction(foreground_mask(makers[name]((320, 240), rng))) == 0.0


def test_checkerboard_preview_shows_transparency_as_grey_squares():
    cut = Image.new("RGBA", (400, 200), (0, 0, 0, 0))
    cut.paste((255, 0, 0, 255), (150, 50, 250, 150))
    preview = checkerboard_preview(cut, size=160)
    assert preview.mode == "RGB" and preview.size == (160, 80)
    corner = {preview.getpixel((x, y)) for x in range(12) for y in range(12)}
    assert len(corner) == 2 and all(r == g == b for r, g, b in corner)
    assert preview.getpixel((80, 40)) == (255, 0, 0)
    assert checkerboard_preview(Image.new("RGB", (30, 90), "blue"), size=60).size == (20, 60)


def test_mask_iou_and_fraction():
    a = np.zeros((10, 10), np.uint8)
    a[:5] = 255
    b = np.zeros((10, 10), np.uint8)
    b[:, :5] = 255
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, b) == pytest.approx(25 / 75)
    assert mask_iou(a, 255 - a) == 0.0
    assert mask_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0  # both empty
    assert mask_iou(Image.fromarray(a), a, threshold=256) == 1.0
    assert foreground_fraction(Image.fromarray(a)) == 0.5
    with pytest.raises(ValueError, match="shapes"):
        mask_iou(a, np.zeros((10, 11)))


def test_cutout_imports_without_dagster_boto3_or_skimage():
    code = (
        "import sys, photogroup.cutout\n"
        "print(sorted(m for m in ('dagster', 'boto3', 'skimage') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("mode", ["RGBA", "L", "RGB", "LA", "P"])
def test_encode_png_is_a_lossless_png_in_pillows_channel_order(mode):
    """Cut-outs and masks are written through OpenCV, which orders channels BGR(A)."""
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    pixels[:10, :, :3] = (250, 10, 20)  # a red band: swapped channels would turn it blue
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    data = encode_png(image)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    written = {"LA": "RGBA", "P": "RGB"}.get(mode, mode)  # other modes are converted
    back = Image.open(io.BytesIO(data))
    assert (back.mode, back.size) == (written, image.size)
    assert np.array_equal(np.asarray(back), np.asarray(image.convert(written)))
