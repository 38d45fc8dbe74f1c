"""bench/transforms.py: each family does what its name says, deterministically."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from bench import transforms as T

W, H = 160, 120


def photo() -> Image.Image:
    """A small colourful image with structure in both directions, no symmetry."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x * 255 // W, y * 255 // H, (x * y) % 256], axis=-1).astype(np.uint8)
    rgb[10:40, 20:70] = (250, 30, 30)  # an asymmetric block
    return Image.fromarray(rgb)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_families_are_complete():
    assert set(T.FAMILIES) == {*T.SINGLE, "pair"}
    assert len(T.FAMILIES) == 20


@pytest.mark.parametrize("name", list(T.FAMILIES))
def test_every_family_is_deterministic_rgb_and_an_edit(name):
    first = T.FAMILIES[name](photo(), rng(3))
    second = T.FAMILIES[name](photo(), rng(3))
    assert first.mode == "RGB"
    assert first.size == second.size
    assert np.array_equal(pixels(first), pixels(second))
    assert first.size != photo().size or not np.array_equal(pixels(first), pixels(photo()))


def test_resize_scales_both_sides_by_the_same_factor_within_range():
    for seed in range(10):
        out = T.resize(photo(), rng(seed))
        scale = out.width / W
        assert 0.29 <= scale <= 0.81
        assert out.height == pytest.approx(H * scale, abs=1)


def test_jpeg_really_reencodes_at_quality_15_to_40():
    def encoded(quality):
        buf = io.BytesIO()
        photo().save(buf, format="JPEG", quality=quality)
        return pixels(Image.open(io.BytesIO(buf.getvalue())))

    for seed in range(3):
        out = pixels(T.jpeg(photo(), rng(seed)))
        assert np.abs(out - pixels(photo())).mean() > 1.0  # visible artefacts
        assert any(np.array_equal(out, encoded(q)) for q in range(15, 41))


def test_crop_removes_five_to_fifteen_percent_per_side():
    for seed in range(10):
        out = T.crop(photo(), rng(seed))
        assert 0.70 * W - 2 <= out.width <= 0.90 * W + 2
        assert 0.70 * H - 2 <= out.height <= 0.90 * H + 2


def test_tone_changes_levels_but_not_geometry():
    for seed in range(6):  # covers brightness, contrast and gamma
        out = T.tone(photo(), rng(seed))
        assert out.size == (W, H)
        assert np.abs(pixels(out) - pixels(photo())).mean() > 3


def test_saturation_reduces_chroma_and_grayscale_has_equal_channels():
    def chroma(img):
        p = pixels(img)
        return float((p.max(axis=2) - p.min(axis=2)).mean())

    assert chroma(T.saturation(photo(), rng(0))) < 0.55 * chroma(photo())
    grey = pixels(T.grayscale(photo(), rng(0)))
    assert np.array_equal(grey[..., 0], grey[..., 1])
    assert np.array_equal(grey[..., 1], grey[..., 2])


def test_tint_moves_red_and_blue_in_opposite_directions():
    base = pixels(photo()).mean(axis=(0, 1))
    out = pixels(T.tint(photo(), rng(0))).mean(axis=(0, 1))
    assert abs(out[1] - base[1]) < 1  # green untouched
    assert np.sign(out[0] - base[0]) == -np.sign(out[2] - base[2]) != 0


def test_flips_equal_pillow_mirror_and_flip():
    assert np.array_equal(pixels(T.hflip(photo(), rng())), pixels(ImageOps.mirror(photo())))
    assert np.array_equal(pixels(T.vflip(photo(), rng())), pixels(ImageOps.flip(photo())))


@pytest.mark.parametrize(("name", "k"), [("rot90", 1), ("rot180", 2), ("rot270", 3)])
def test_quarter_turns_are_exact(name, k):
    out = T.FAMILIES[name](photo(), rng())
    assert out.size == ((H, W) if k % 2 else (W, H))
    assert np.array_equal(pixels(out), np.rot90(pixels(photo()), k))  # counter-clockwise


def test_small_rotation_is_a_few_degrees_not_a_quarter_turn():
    for seed in range(8):
        out = T.small_rotation(photo(), rng(seed))
        # The canvas grows by about w*sin(a) and h*sin(a) for 3-7 degrees.
        assert W + 0.05 * H - 2 <= out.width <= W + 0.13 * H + 2
        assert H + 0.05 * W - 2 <= out.height <= H + 0.13 * W + 2
        centre = pixels(out)[out.height // 2 - 5 : out.height // 2 + 5, :]
        assert centre.std() > 0  # content, not all fill


def test_pad_adds_one_uniform_border_on_every_side():
    out = T.pad(photo(), rng(0))
    border = (out.width - W) // 2
    assert out.width - W == out.height - H == 2 * border
    assert 0.08 * W - 1 <= border <= 0.25 * W + 1
    p = pixels(out)
    frame = np.concatenate([p[:border].reshape(-1, 3), p[-border:].reshape(-1, 3)])
    assert (frame == frame[0]).all()
    assert np.array_equal(p[border : border + H, border : border + W], pixels(photo()))


def test_letterbox_adds_bars_on_two_opposite_sides_only():
    for seed in range(6):
        out = T.letterbox(photo(), rng(seed))
        grew_w, grew_h = out.width - W, out.height - H
        assert (grew_w == 0) != (grew_h == 0)
        assert 1.29 <= max(out.width / W, out.height / H) <= 1.81
        x0, y0 = grew_w // 2, grew_h // 2
        assert np.array_equal(pixels(out)[y0 : y0 + H, x0 : x0 + W], pixels(photo()))


def test_watermark_changes_pixels_only_in_its_band():
    big = photo().resize((W * 3, H * 3))
    for seed in range(5):
        out = T.watermark(big, rng(seed))
        changed = np.nonzero(np.abs(pixels(out) - pixels(big)).max(axis=2) > 0)[0]
        assert changed.size > 50
        assert changed.min() >= T.WATERMARK_BAND[0] * big.height - 1
        assert changed.max() <= T.WATERMARK_BAND[1] * big.height + 1


def test_blur_smooths_edges():
    def edges(img):
        return float(np.abs(np.diff(pixels(img), axis=1)).mean())

    assert edges(T.blur(photo(), rng(0))) < 0.8 * edges(photo())


def test_noise_is_zero_mean_and_visible():
    diff = pixels(T.noise(photo(), rng(0))) - pixels(photo())
    assert 4 < diff.std() < 20
    assert abs(diff.mean()) < 1.5


def test_stretch_changes_width_only_by_a_real_factor():
    for seed in range(10):
        out = T.stretch(photo(), rng(seed))
        factor = out.width / W
        assert out.height == H
        assert 0.69 <= factor <= 0.91 or 1.09 <= factor <= 1.41


def test_pair_applies_two_different_single_families_in_turn():
    for seed in range(5):
        expected_rng = rng(seed)
        first, second = expected_rng.choice(list(T.SINGLE), size=2, replace=False)
        assert first != second
        expected = T.SINGLE[second](T.SINGLE[first](photo(), expected_rng), expected_rng)
        assert np.array_equal(pixels(T.pair(photo(), rng(seed))), pixels(expected))


def test_variants_cycle_through_every_family():
    out = T.variants(photo(), rng(0), per_photo=len(T.FAMILIES))
    assert [name for name, _ in out] == list(T.FAMILIES)
    seen = set()
    for k in range(4):  # four photos of 11 variants each cover the 20 families
        seen.update(name for name, _ in T.variants(photo(), rng(k), start=11 * k))
    assert seen == set(T.FAMILIES)
    assert all(img.mode == "RGB" for _, img in out)
