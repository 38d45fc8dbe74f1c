"""photogroup.features: dihedral pHash, border trim, palette, sharpness."""

from __future__ import annotations

import io
import string

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from photogroup import compute_features, dihedral_phash
from photogroup.features import (
    dominant_colors,
    hamming_d4,
    laplacian_variance,
    trim_uniform_border,
)
from photogroup.samples import load_photo

T = Image.Transpose
FLIPS = [T.FLIP_LEFT_RIGHT, T.FLIP_TOP_BOTTOM, T.ROTATE_180]
QUARTER_TURNS = [T.ROTATE_90, T.ROTATE_270, T.TRANSPOSE, T.TRANSVERSE]
NAMES = ["astronaut", "coffee", "chelsea", "rocket", "coins"]


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: load_photo(name) for name in NAMES}


def is_hex64(value: str) -> bool:
    return len(value) == 16 and all(c in string.hexdigits for c in value)


# --- dihedral pHash ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_identity_element_equals_imagehash_phash(photos, name):
    img = photos[name]
    hashes = dihedral_phash(img)
    assert len(hashes) == 8
    assert hashes[0] == str(imagehash.phash(img))
    assert all(is_hex64(h) for h in hashes)


def test_the_eight_hashes_differ_for_a_photo(photos):
    assert len(set(dihedral_phash(photos["astronaut"]))) == 8


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("transpose", FLIPS, ids=lambda t: t.name)
def test_flipped_copy_has_the_same_eight_hashes(photos, name, transpose):
    original = dihedral_phash(photos[name])
    flipped = dihedral_phash(photos[name].transpose(transpose))
    assert set(flipped) == set(original)
    assert hamming_d4(original[0], flipped) == 0
    assert hamming_d4(flipped[0], original) == 0


@pytest.mark.parametrize("transpose", QUARTER_TURNS, ids=lambda t: t.name)
def test_quarter_turn_permutes_the_eight_hashes_at_thumbnail_size(photos, transpose):
    # At 32 x 32 no resampling happens, so turning the image only permutes the hashes.
    small = photos["astronaut"].resize((32, 32), Image.Resampling.LANCZOS)
    assert set(dihedral_phash(small.transpose(transpose))) == set(dihedral_phash(small))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("transpose", QUARTER_TURNS, ids=lambda t: t.name)
def test_quarter_turned_photo_is_a_near_zero_distance(photos, name, transpose):
    original = dihedral_phash(photos[name])
    turned = dihedral_phash(photos[name].transpose(transpose))
    assert hamming_d4(original[0], turned) <= 4
    assert hamming_d4(turned[0], original) <= 4


def test_different_photos_are_far_apart(photos):
    hashes = {name: dihedral_phash(img) for name, img in photos.items()}
    for a in NAMES:
        for b in NAMES:
            if a != b:
                assert hamming_d4(hashes[a][0], hashes[b]) > 16, (a, b)


def test_hamming_d4_is_the_minimum_over_the_eight():
    assert hamming_d4("0000000000000000", ["ffffffffffffffff", "0000000000000007"]) == 3
    assert hamming_d4("00000000000000ff", ["00000000000000ff"] * 8) == 0
    assert hamming_d4("ffffffffffffffff", ["0000000000000000"] * 8) == 64


# --- border trim ------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_trim_removes_white_padding(photos, name):
    img = photos[name]
    padded = ImageOps.expand(img, border=img.width // 8, fill=(255, 255, 255))
    trimmed = trim_uniform_border(padded)
    assert abs(trimmed.width - img.width) <= 2
    assert abs(trimmed.height - img.height) <= 2


def test_trim_tolerates_jpeg_noise_in_the_padding(photos):
    img = photos["chelsea"]
    padded = ImageOps.expand(img, border=60, fill=(255, 255, 255))
    out = io.BytesIO()
    padded.save(out, format="JPEG", quality=70)
    trimmed = trim_uniform_border(Image.open(io.BytesIO(out.getvalue())).convert("RGB"))
    assert abs(trimmed.width - img.width) <= 8
    assert abs(trimmed.height - img.height) <= 8


def test_trim_removes_black_letterbox(photos):
    img = photos["coffee"]
    boxed = ImageOps.expand(img, border=(0, 80, 0, 80), fill=(0, 0, 0))
    assert trim_uniform_border(boxed).size == img.size


@pytest.mark.parametrize("name", NAMES)
def test_trim_leaves_an_unpadded_photo_unchanged(photos, name):
    assert trim_uniform_border(photos[name]).size == photos[name].size


@pytest.mark.parametrize("box", [(48, 48, 53, 53), (48, 10, 53, 90), (10, 48, 90, 53)])
def test_trim_keeps_a_nearly_blank_image_whole(box):
    # Content narrower or lower than 20% of the image is not trusted as the subject.
    img = Image.new("RGB", (100, 100), (255, 255, 255))
    img.paste((0, 0, 0), box)
    assert trim_uniform_border(img).size == (100, 100)
    assert trim_uniform_border(Image.new("RGB", (30, 20), (7, 7, 7))).size == (30, 20)


def test_padding_does_not_change_the_dihedral_hashes_much(photos):
    img = photos["rocket"]
    padded = ImageOps.expand(img, border=img.width // 8, fill=(255, 255, 255))
    plain = dihedral_phash(trim_uniform_border(img))
    trimmed = dihedral_phash(trim_uniform_border(padded))
    assert hamming_d4(trimmed[0], plain) <= 4


# --- palette, sharpness -----------------------------------------------------------------


def test_dominant_colors_of_two_pure_colours():
    arr = np.zeros((100, 100, 3), np.uint8)
    arr[:, :50] = (255, 0, 0)
    arr[:, 50:] = (0, 0, 255)
    colours, fractions = dominant_colors(Image.fromarray(arr))
    assert set(colours) == {"#ff0000", "#0000ff"}
    assert fractions == pytest.approx((0.5, 0.5), abs=0.01)


def test_dominant_colors_are_most_frequent_first():
    arr = np.zeros((100, 100, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)
    arr[:, 30:] = (0, 128, 0)
    colours, fractions = dominant_colors(Image.fromarray(arr))
    assert colours == ("#008000", "#ff0000")
    assert fractions == pytest.approx((0.7, 0.3), abs=0.01)


def test_dominant_colors_of_a_photo_are_a_full_palette(photos):
    colours, fractions = dominant_colors(photos["chelsea"])
    assert len(colours) == len(fractions) == 5
    assert sum(fractions) == pytest.approx(1.0, abs=0.001)
    assert list(fractions) == sorted(fractions, reverse=True)


def test_laplacian_variance_pinned_values():
    assert laplacian_variance(Image.new("RGB", (50, 50), (120, 30, 40))) == 0.0
    # A linear ramp has zero second derivative everywhere.
    ramp = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (20, 1))
    assert laplacian_variance(Image.fromarray(ramp)) == 0.0
    # 10 x 10 checkerboard of 0/255: inside, the Laplacian is +-4 * 255 = +-1020 in equal
    # numbers (8 x 8 interior), so its variance is 1020 ** 2.
    board = (np.indices((10, 10)).sum(axis=0) % 2 * 255).astype(np.uint8)
    assert laplacian_variance(Image.fromarray(board)) == 1020.0**2
    assert laplacian_variance(Image.new("L", (2, 50))) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_blur_lowers_sharpness(photos, name):
    img = photos[name]
    blurred = img.filter(ImageFilter.GaussianBlur(2))
    assert laplacian_variance(img) > 2 * laplacian_variance(blurred) > 0


# --- compute_features -------------------------------------------------------------------


def test_compute_features(photos):
    img = photos["astronaut"]
    features = compute_features(img)
    for value in (features.average_hash, features.phash, features.dhash, features.whash):
        assert is_hex64(value)
    assert all(c in string.hexdigits for c in features.colorhash)
    assert len(features.phash_d4) == 8 and all(is_hex64(h) for h in features.phash_d4)
    assert features.phash == str(imagehash.phash(img))
    assert features.average_hash == str(imagehash.average_hash(img))
    assert features.phash_d4[0] == features.phash  # the photo has no border to trim
    assert (features.work_width, features.work_height) == img.size
    assert features.mean_color.startswith("#") and len(features.mean_color) == 7
    assert len(features.dominant_colors) == len(features.dominant_fractions)
    assert features.sharpness == laplacian_variance(img)


def test_compute_features_of_a_padded_image_hashes_the_trimmed_content(photos):
    img = photos["coffee"]
    padded = ImageOps.expand(img, border=75, fill=(255, 255, 255))
    features = compute_features(padded)
    assert (features.work_width, features.work_height) == padded.size
    # Hashed from a thumbnail of the trimmed image: the same hash up to a few bits.
    assert hamming_d4(features.phash_d4[0], dihedral_phash(img)) <= 4


def test_compute_features_of_a_two_colour_image():
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[:, :32] = (255, 0, 0)
    arr[:, 32:] = (0, 0, 255)
    features = compute_features(Image.fromarray(arr))
    assert features.mean_color == "#800080"  # mean 127.5 per channel, rounded
    assert set(features.dominant_colors) == {"#ff0000", "#0000ff"}
    assert features.sharpness > 0
