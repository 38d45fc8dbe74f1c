"""Odd encodings of a photo group with the photo itself, through the pipeline's real path.

bytes -> inspect_upload (sniff, validate, normalise, lossless working copy) -> open_work_image ->
compute_features + LocalEmbedder -> group_images, exactly what the assets chain does.
Each variant's working copy is also compared with the original's pixels, because the
grouping is deliberately blind to flips and quarter turns (a wrong EXIF rotation would
still group) and tolerant of colour shifts.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image, ImageOps

from photogroup import LocalEmbedder, compute_features, group_images
from photogroup.decode import open_work_image
from photogroup.features import hamming_d4
from photogroup.manifest import ACCEPTED, Inspection, inspect_upload
from photogroup.samples import load_photo

PHOTOS = ("astronaut", "coffee", "chelsea")
#: A photo none of PHOTOS resembles: the second frame of the animations.
OTHER = "rocket"
BORDER = 40


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def sixteen_bit_grey(photo: Image.Image) -> bytes:
    """Grey photo scaled by 257 to the full 16-bit range (a plain convert would clip it)."""
    wide = Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257)
    assert wide.mode == "I;16"
    return encode(wide, "PNG")


def transparent_border(photo: Image.Image) -> bytes:
    """The photo inside a fully transparent frame whose hidden colour is random noise.

    Flattening onto white must make it the photo padded with white; keeping the hidden
    RGB (a plain convert("RGB")) would give a noisy frame that no border trim removes.
    """
    w, h = photo.size
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (h + 2 * BORDER, w + 2 * BORDER, 4), dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[BORDER : BORDER + h, BORDER : BORDER + w, :3] = np.asarray(photo)
    rgba[BORDER : BORDER + h, BORDER : BORDER + w, 3] = 255
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def cmyk_jpeg(photo: Image.Image) -> bytes:
    return encode(photo.convert("CMYK"), "JPEG", quality=95)


def exif_rotated(photo: Image.Image) -> bytes:
    """Orientation 6 ("rotate 90 degrees clockwise to display") over pixels turned the
    other way, as a phone camera held upright stores them."""
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = photo.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise
    return encode(stored, "JPEG", quality=95, exif=exif)


def animated(fmt: str) -> Callable[[Image.Image], bytes]:
    def build(photo: Image.Image) -> bytes:
        second = load_photo(OTHER).resize(photo.size)
        return encode(photo, fmt, save_all=True, append_images=[second], duration=200, loop=0)

    return build


VARIANTS: dict[str, Callable[[Image.Image], bytes]] = {
    "png16": sixteen_bit_grey,
    "transparent": transparent_border,
    "cmyk": cmyk_jpeg,
    "exif6": exif_rotated,
    "gif": animated("GIF"),
    "webp": animated("WEBP"),
}


def inspect(data: bytes) -> tuple[Inspection, Image.Image]:
    result = inspect_upload(data)
    assert result.status == ACCEPTED, result.reason
    return result, open_work_image(result.work_bytes)


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean())


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: load_photo(name) for name in PHOTOS}


@pytest.fixture(scope="module")
def batch(photos) -> dict[tuple[str, str], tuple[Inspection, Image.Image]]:
    """(photo, variant) -> inspection and working copy; variant "original" is a PNG."""
    out = {}
    for name, photo in photos.items():
        out[name, "original"] = inspect(encode(photo, "PNG"))
        for variant, build in VARIANTS.items():
            out[name, variant] = inspect(build(photo))
    return out


@pytest.fixture(scope="module")
def groups(batch) -> dict[tuple[str, str], str]:
    """group_id of every item, all grouped together in one call as the pipeline does."""
    items = list(batch)
    shas = [batch[item][0].sha256 for item in items]
    images = [batch[item][1] for item in items]
    hashes = [compute_features(img).phash_d4 for img in images]
    embeddings = LocalEmbedder().embed(images)
    by_sha = {a.image_id: a.group_id for a in group_images(shas, hashes, embeddings)}
    return {item: by_sha[sha] for item, sha in zip(items, shas, strict=True)}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", PHOTOS)
def test_variant_groups_with_its_original(groups, name, variant):
    assert groups[name, variant] == groups[name, "original"]


def test_different_photos_do_not_share_a_group(groups):
    for name in PHOTOS:
        own = {groups[name, v] for v in ("original", *VARIANTS)}
        others = {g for (n, _), g in groups.items() if n != name}
        assert own == {groups[name, "original"]}
        assert not own & others, name


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", PHOTOS)
def test_identity_phash_matches_so_orientation_is_right(batch, name, variant):
    # The identity hash of the border-trimmed copy alone (not all eight dihedral ones) is
    # close only if the working copy is upright and unmirrored like the original.
    original = compute_features(batch[name, "original"][1]).phash_d4[0]
    identity = compute_features(batch[name, variant][1]).phash_d4[0]
    assert hamming_d4(original, [identity]) <= 6


def test_sixteen_bit_png_is_the_grey_photo_scaled_not_clipped(photos, batch):
    for name, photo in photos.items():
        result, work = batch[name, "png16"]
        assert (result.content_type, result.width, result.height) == ("image/png", *photo.size)
        grey = inspect(encode(photo.convert("L"), "PNG"))[1]
        assert mean_abs_diff(work, grey) < 1.0


def test_transparent_border_flattens_to_the_photo_padded_with_white(photos, batch):
    for name, photo in photos.items():
        result, work = batch[name, "transparent"]
        assert (result.width, result.height) == (
            photo.width + 2 * BORDER,
            photo.height + 2 * BORDER,
        )
        padded = ImageOps.expand(photo, border=BORDER, fill=(255, 255, 255))
        expected = inspect(encode(padded, "PNG"))[1]
        assert mean_abs_diff(work, expected) < 0.5
        corner = np.asarray(work)[:4, :4]
        assert (corner == 255).all()  # white, not the hidden noise


def test_cmyk_jpeg_has_the_photo_colours(photos, batch):
    for name in photos:
        result, work = batch[name, "cmyk"]
        assert result.content_type == "image/jpeg"
        assert mean_abs_diff(work, batch[name, "original"][1]) < 8


def test_exif_orientation_is_applied_to_pixels_and_reported_size(photos, batch):
    for name, photo in photos.items():
        result, work = batch[name, "exif6"]
        assert (result.width, result.height) == photo.size  # after orientation
        original = batch[name, "original"][1]
        assert work.size == original.size  # axes swapped back for the non-square photos
        assert mean_abs_diff(work, original) < 8  # and upright: a wrong turn differs by ~50


@pytest.mark.parametrize("variant", ["gif", "webp"])
def test_animation_uses_its_first_frame(photos, batch, variant):
    second = load_photo(OTHER)
    for name, photo in photos.items():
        result, work = batch[name, variant]
        assert (result.frames, result.width, result.height) == (2, *photo.size)
        original = batch[name, "original"][1]
        near_first = mean_abs_diff(work, original)
        near_second = mean_abs_diff(work, second.resize(photo.size).resize(work.size))
        assert near_first < 12 < near_second
