"""One colour pipeline: wide-gamut profiles and colour keys give the photo's own pixels, in
the working copy (so features and groups) and in renditions alike."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from photogroup import LocalEmbedder, compute_features, decode_image, group_images
from photogroup.features import hamming_d4
from photogroup.manifest import inspect_upload
from photogroup.renditions import RenditionSpec, render
from photogroup.samples import load_photo
from tests.colour_files import (
    ADOBE_RGB,
    DISPLAY_P3,
    adobe_rgb_jpeg,
    encode,
    palette_with_black_keyed,
    wide_gamut_file,
)


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return load_photo("coffee")


@pytest.fixture(scope="module")
def adobe_jpegs(photo) -> tuple[bytes, bytes]:
    """The photo's pixels converted to Adobe RGB, saved with and without its profile."""
    return adobe_rgb_jpeg(photo), adobe_rgb_jpeg(photo, tagged=False)


@pytest.mark.parametrize(
    ("space", "fmt"),
    [(ADOBE_RGB, "JPEG"), (DISPLAY_P3, "JPEG"), (DISPLAY_P3, "HEIF")],
    ids=["adobe_rgb", "display_p3", "display_p3_heic"],
)
def test_wide_gamut_file_gives_the_pixels_and_features_of_its_srgb_original(photo, space, fmt):
    """A JPEG or an iPhone's HEIC with a wide-gamut profile: converted to sRGB."""
    tagged, untagged = (wide_gamut_file(photo, space, tagged=t, fmt=fmt) for t in (True, False))
    original = decode_image(encode(photo, "JPEG", quality=95)).image
    converted = decode_image(tagged).image
    ignored = decode_image(untagged).image  # what reading the wide pixels as sRGB gives
    assert mean_abs_diff(converted, original) < 2.0
    assert mean_abs_diff(ignored, original) > 3 * mean_abs_diff(converted, original)

    f_orig, f_conv, f_ign = (compute_features(i) for i in (original, converted, ignored))
    assert hamming_d4(f_conv.phash, f_orig.phash_d4) <= 2
    assert _rgb_distance(f_conv.mean_color, f_orig.mean_color) <= 3
    assert _rgb_distance(f_ign.mean_color, f_orig.mean_color) > 6


def test_renditions_and_working_copy_share_the_conversion(photo, adobe_jpegs):
    tagged, _ = adobe_jpegs
    (rendition,) = render(tagged, RenditionSpec(sizes=(400,), formats=("jpeg",), jpeg_quality=95))
    shown = Image.open(io.BytesIO(rendition.data)).convert("RGB")
    work = decode_image(tagged).image
    for image in (shown, work):  # both the photo's sRGB pixels, at their sizes
        assert mean_abs_diff(image, photo.resize(image.size, Image.Resampling.LANCZOS)) < 3.0


def test_manifest_and_renditions_share_one_decode_and_its_colours(photo, adobe_jpegs):
    """inspect_upload with a renditions spec decodes once (large enough for the largest
    rendition): its renditions are exactly render()'s, and its working copy is the one
    decode_image makes at the working size, within resampling noise."""
    tagged, _ = adobe_jpegs
    spec = RenditionSpec(sizes=(256, 400), formats=("jpeg", "webp"))
    both = inspect_upload(tagged, renditions=spec)
    assert both.rendition_error is None
    assert [(r.size, r.format, r.data) for r in both.renditions] == [
        (r.size, r.format, r.data) for r in render(tagged, spec)
    ]
    alone = inspect_upload(tagged)
    assert alone.renditions is None and alone.row() == both.row()
    work, small = (Image.open(io.BytesIO(i.work_bytes)) for i in (both, alone))
    assert work.size == small.size and mean_abs_diff(work, small) < 1.5
    f_work, f_small = compute_features(work.convert("RGB")), compute_features(small.convert("RGB"))
    assert hamming_d4(f_work.phash, f_small.phash_d4) <= 2


def _rgb_distance(a: str, b: str) -> float:
    pa, pb = (np.array([int(h[i : i + 2], 16) for i in (1, 3, 5)]) for h in (a, b))
    return float(np.abs(pa - pb).max())


def test_a_colour_key_hiding_black_pixels_groups_with_its_photo():
    photo = load_photo("astronaut")  # large dark areas: the key hides many pixels
    blackened, keyed = palette_with_black_keyed(photo)
    assert Image.open(io.BytesIO(keyed)).info.get("transparency") == 255
    work = decode_image(keyed).image
    shown = decode_image(encode(blackened, "PNG")).image
    assert mean_abs_diff(work, shown) < 6.0  # black stayed black, not flattened to white

    keyed_rgba = Image.open(io.BytesIO(keyed)).convert("RGBA")
    on_white = Image.new("RGB", keyed_rgba.size, (255, 255, 255))
    on_white.paste(keyed_rgba, mask=keyed_rgba.getchannel("A"))  # what flattening gave
    others = [load_photo(n) for n in ("coffee", "chelsea", "rocket")]
    images = [decode_image(encode(photo, "JPEG", quality=90)).image, work]
    images.append(decode_image(encode(on_white, "PNG")).image)
    images += [decode_image(encode(o, "JPEG", quality=90)).image for o in others]
    ids = [hashlib.sha256(bytes([i])).hexdigest() for i in range(len(images))]
    groups = group_images(
        ids, [compute_features(i).phash_d4 for i in images], LocalEmbedder().embed(images)
    )
    group = {a.image_id: a.group_id for a in groups}
    assert group[ids[1]] == group[ids[0]]
    assert group[ids[2]] != group[ids[0]]  # the hidden black turned white: another photo
    assert len({group[i] for i in ids}) == 2 + len(others)


def test_a_key_covering_the_border_is_a_background_flattened_onto_white():
    photo = load_photo("chelsea").resize((120, 90))
    index = np.full((110, 140), 255, np.uint8)
    quantised = photo.quantize(255)
    index[10:100, 10:130] = np.asarray(quantised)
    cutout = Image.fromarray(index, "P")
    cutout.putpalette([*quantised.getpalette()[: 255 * 3], 0, 0, 0])
    work = decode_image(encode(cutout, "PNG", transparency=255)).image
    assert work.getpixel((2, 2)) == (255, 255, 255)
    assert mean_abs_diff(work.crop((10, 10, 130, 100)), quantised.convert("RGB")) < 1.0
