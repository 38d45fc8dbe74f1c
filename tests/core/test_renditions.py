"""Renditions: sizes, formats, orientation, colour and stripped metadata."""

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from photogroup import Rejection
from photogroup.renditions import RenditionSpec, render
from photogroup.samples import load_photo


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def close(a: Image.Image, b: Image.Image, tolerance: float = 12.0) -> bool:
    a, b = a.convert("RGB").resize((64, 48)), b.convert("RGB").resize((64, 48))
    return float(np.abs(np.asarray(a, float) - np.asarray(b, float)).mean()) < tolerance


COFFEE = load_photo("coffee")  # 600 x 400


def test_every_size_and_format_with_the_long_side_right_and_never_upscaled():
    spec = RenditionSpec(sizes=(256, 512, 1024), formats=("webp", "jpeg"))
    out = render(encode(COFFEE, "JPEG", quality=95), spec)
    assert [(r.size, r.format) for r in out] == [
        (1024, "webp"), (1024, "jpeg"), (512, "webp"), (512, "jpeg"),
        (256, "webp"), (256, "jpeg"),
    ]  # fmt: skip
    for r in out:
        img = opened(r.data)
        assert img.format == {"webp": "WEBP", "jpeg": "JPEG"}[r.format]
        assert (img.width, img.height) == (r.width, r.height)
        assert max(img.size) == min(r.size, 600)  # 1024 is not upscaled past 600
        assert abs(img.width / img.height - 1.5) < 0.01
        assert close(img, COFFEE)


def test_exif_orientation_is_applied_and_metadata_is_stripped():
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    exif[0x010F] = "PhoneMaker"
    stored = COFFEE.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    data = encode(stored, "JPEG", exif=exif, quality=95)
    for r in render(data, RenditionSpec(sizes=(256,))):
        img = opened(r.data)
        assert img.size == (256, 171)  # landscape, like the scene
        assert close(img, COFFEE)
        assert not dict(img.getexif())
        assert "icc_profile" not in img.info and "exif" not in img.info


def test_cmyk_and_icc_profiles_end_in_srgb():
    cmyk = encode(COFFEE.convert("CMYK"), "JPEG", quality=95)
    for r in render(cmyk, RenditionSpec(sizes=(256,))):
        img = opened(r.data)
        assert img.mode == "RGB"
        assert close(img, COFFEE, tolerance=20)
    # A wide-gamut-tagged image is converted, not passed through with its profile.
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    tagged = encode(COFFEE, "PNG", icc_profile=lab)
    (r,) = render(tagged, RenditionSpec(sizes=(256,), formats=("jpeg",)))
    assert "icc_profile" not in opened(r.data).info
    assert close(opened(r.data), COFFEE)


def test_webp_keeps_transparency_and_jpeg_flattens_it_onto_white():
    rgba = COFFEE.convert("RGBA")
    rgba.putalpha(Image.new("L", COFFEE.size, 0).crop((0, 0, 600, 400)))
    rgba.paste(COFFEE.crop((200, 100, 400, 300)), (200, 100))  # opaque centre
    webp, jpeg = render(encode(rgba, "PNG"), RenditionSpec(sizes=(300,)))
    assert opened(webp.data).mode == "RGBA"
    assert opened(webp.data).getpixel((5, 5))[3] == 0
    assert opened(jpeg.data).getpixel((5, 5)) == pytest.approx((255, 255, 255), abs=3)


def test_the_settings_digest_changes_with_every_setting():
    digests = {
        RenditionSpec().digest(),
        RenditionSpec(sizes=(256,)).digest(),
        RenditionSpec(formats=("webp",)).digest(),
        RenditionSpec(jpeg_quality=70).digest(),
        RenditionSpec(webp_quality=70).digest(),
    }
    assert len(digests) == 5


@pytest.mark.parametrize(
    "kwargs",
    [{"sizes": ()}, {"sizes": (8,)}, {"formats": ("gif",)}, {"jpeg_quality": 0}],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RenditionSpec(**kwargs)


def test_damaged_bytes_and_pixel_bombs_are_rejections_not_crashes():
    with pytest.raises(Rejection, match="corrupt_image"):
        render(encode(COFFEE, "JPEG")[:300], RenditionSpec())
    with pytest.raises(Rejection, match="too_many_pixels"):
        render(encode(COFFEE, "PNG"), RenditionSpec(), max_pixels=1000)
